//! Stage 2: names to rules, operations and forms; choice sets expanded into one alternative per
//! value; operations' arguments checked.

use super::parse::{RawArg, RawBody, RawRule};
use super::{Alt, Body, GrammarError, Rule, SymId};
use crate::space::lex::{did_you_mean, Span};
use crate::space::node::Form;
use crate::space::ops::{self, Op};
use std::collections::HashMap;

/// Resolves names to rules, operations and forms, expanding choice sets.
pub(super) fn resolve(
    raw: Vec<RawRule>,
    root: Option<(String, Span)>,
    errs: &mut Vec<GrammarError>,
) -> Option<(Vec<Rule>, SymId)> {
    let mut ids: HashMap<String, SymId> = HashMap::new();
    let mut rules: Vec<Rule> = Vec::new();
    for r in &raw {
        if ids.contains_key(&r.name) {
            errs.push(GrammarError {
                message: format!(
                    "rule `{}` is defined twice (merge the alternatives into one rule)",
                    r.name
                ),
                span: r.span,
            });
            continue;
        }
        if ops::spec(&r.name).is_some() || Form::by_name(&r.name).is_some() {
            errs.push(GrammarError {
                message: format!(
                    "`{}` is a built-in operation or form and cannot name a rule",
                    r.name
                ),
                span: r.span,
            });
        }
        ids.insert(r.name.clone(), rules.len());
        rules.push(Rule {
            name: r.name.clone(),
            alts: Vec::new(),
            span: r.span,
        });
    }
    let mut resolved = vec![false; rules.len()];
    for r in raw {
        let id = ids[&r.name];
        if resolved[id] {
            continue;
        }
        resolved[id] = true;
        for a in r.alts {
            match a.body {
                RawBody::Number(x, span) => match ops::const_micros(x) {
                    Ok(c) => rules[id].alts.push(Alt {
                        weight: a.weight,
                        body: Body::Op(Op::Const(c)),
                        span: a.span,
                    }),
                    Err(e) => errs.push(GrammarError {
                        message: e.to_string(),
                        span,
                    }),
                },
                RawBody::Name(n, span) => {
                    if let Some(&sid) = ids.get(&n) {
                        rules[id].alts.push(Alt {
                            weight: a.weight,
                            body: Body::Ref(sid),
                            span: a.span,
                        });
                    } else if let Some(spec) = ops::spec(&n) {
                        match spec.build(&[]) {
                            Ok(op) => rules[id].alts.push(Alt {
                                weight: a.weight,
                                body: Body::Op(op),
                                span: a.span,
                            }),
                            Err(e) => errs.push(GrammarError {
                                message: e.to_string(),
                                span,
                            }),
                        }
                    } else if Form::by_name(&n).is_some() {
                        errs.push(GrammarError {
                            message: format!("form `{n}` needs its slots in parentheses"),
                            span,
                        });
                    } else {
                        errs.push(GrammarError {
                            message: format!(
                                "`{n}` is not a rule of this grammar nor a known operation{}",
                                close_name(&n, ids.keys())
                            ),
                            span,
                        });
                    }
                }
                RawBody::Call(n, span, args) => {
                    if let Some(form) = Form::by_name(&n) {
                        let slots = form.spec().slots;
                        if form.spec().variadic && args.len() < slots.len() {
                            errs.push(GrammarError {
                                message: format!(
                                    "form `{n}` needs at least {} slot(s) in a grammar, but {} were given",
                                    slots.len(),
                                    args.len()
                                ),
                                span,
                            });
                            continue;
                        }
                        if !form.spec().variadic && args.len() != slots.len() {
                            errs.push(GrammarError {
                                message: format!(
                                    "form `{n}` has {} slot(s) in a grammar, but {} were given",
                                    slots.len(),
                                    args.len()
                                ),
                                span,
                            });
                            continue;
                        }
                        let mut syms = Vec::new();
                        for arg in args {
                            match arg {
                                RawArg::Name(s, sp) => match ids.get(&s) {
                                    Some(&sid) => syms.push(sid),
                                    None => errs.push(GrammarError {
                                        message: format!(
                                            "slot `{s}` of `{n}` is not a rule of this grammar (slots name nonterminals; define `{s} = ...`){}",
                                            close_name(&s, ids.keys())
                                        ),
                                        span: sp,
                                    }),
                                },
                                RawArg::Ints(_, sp) => errs.push(GrammarError {
                                    message: format!(
                                        "slots of `{n}` name nonterminals, not numbers"
                                    ),
                                    span: sp,
                                }),
                            }
                        }
                        if syms.len() >= slots.len() {
                            rules[id].alts.push(Alt {
                                weight: a.weight,
                                body: Body::Form(form, syms),
                                span: a.span,
                            });
                        }
                    } else if let Some(spec) = ops::spec(&n) {
                        let mut sets = Vec::new();
                        let mut ok = true;
                        for arg in args {
                            match arg {
                                RawArg::Ints(v, sp) => {
                                    let mut vals = Vec::new();
                                    for x in v {
                                        match u32::try_from(x) {
                                            Ok(x) => vals.push(x),
                                            Err(_) => {
                                                errs.push(GrammarError {
                                                    message: format!("argument {x} is too large"),
                                                    span: sp,
                                                });
                                                ok = false;
                                            }
                                        }
                                    }
                                    sets.push((vals, sp));
                                }
                                RawArg::Name(s, sp) => {
                                    errs.push(GrammarError {
                                        message: format!(
                                            "arguments of operation `{n}` are numbers or choice sets, found `{s}`"
                                        ),
                                        span: sp,
                                    });
                                    ok = false;
                                }
                            }
                        }
                        if !ok {
                            continue;
                        }
                        if sets.len() != spec.params.len() {
                            errs.push(GrammarError {
                                message: spec.build(&vec![0; sets.len()]).err().map_or_else(
                                    || format!("wrong arguments for `{n}`"),
                                    |e| e.to_string(),
                                ),
                                span,
                            });
                            continue;
                        }
                        for combo in product(&sets) {
                            match spec.build(&combo) {
                                Ok(op) => rules[id].alts.push(Alt {
                                    weight: a.weight,
                                    body: Body::Op(op),
                                    span: a.span,
                                }),
                                Err(m) => {
                                    errs.push(GrammarError {
                                        message: format!("{n}: {m}"),
                                        span,
                                    });
                                    break;
                                }
                            }
                        }
                    } else if ids.contains_key(&n) {
                        errs.push(GrammarError {
                            message: format!("`{n}` is a rule and takes no arguments"),
                            span,
                        });
                    } else {
                        errs.push(GrammarError {
                            message: format!(
                                "unknown operation or form `{n}`{}",
                                did_you_mean(
                                    &n,
                                    ops::OPS
                                        .iter()
                                        .map(|s| s.name)
                                        .chain(crate::space::node::FORMS.iter().map(|f| f.name))
                                )
                            ),
                            span,
                        });
                    }
                }
            }
        }
    }
    let Some((root_name, root_span)) = root else {
        errs.push(GrammarError {
            message: "missing `root NAME` directive".into(),
            span: Span::new(0, 0),
        });
        return None;
    };
    let Some(&root) = ids.get(&root_name) else {
        errs.push(GrammarError {
            message: format!("root `{root_name}` is not a rule of this grammar"),
            span: root_span,
        });
        return None;
    };
    Some((rules, root))
}

fn close_name<'a>(n: &str, known: impl Iterator<Item = &'a String>) -> String {
    did_you_mean(n, known.map(String::as_str))
}

fn product(sets: &[(Vec<u32>, Span)]) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new()];
    for (vals, _) in sets {
        let mut next = Vec::new();
        for prefix in &out {
            for v in vals {
                let mut p = prefix.clone();
                p.push(*v);
                next.push(p);
            }
        }
        out = next;
    }
    out
}
