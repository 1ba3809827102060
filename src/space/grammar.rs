//! The grammar language: a search space written as data.
//!
//! ```text
//! space tiny                      # the space's name
//! description "a toy space"
//! root net                        # the start symbol
//! max_depth 20                    # at this depth only non-form alternatives are drawn
//! min_depth 0                     # under this depth non-form alternatives are dropped
//!
//! net  = seq(unit, unit) @ 2      # a form with its slots' nonterminals, weight 2
//!      | unit                     # a reference to another nonterminal, weight 1
//! unit = linear({16, 32}) | leakyrelu   # operations; {a, b} expands to one per value
//! ```
//!
//! Weights are relative within a rule (default 1); a choice set gives each expansion the
//! written weight. Weight 0 makes an alternative seed-only: candidates that use it are members
//! of the space (validation and mutation accept them) but sampling never draws it, as for the
//! options einspace's hand-written seeds use beyond its sampler's (`im2col(7, 2, 3) @ 0`). Operations and forms are the built-in library (`ops`, `node`): the grammar
//! only picks and weights them. Errors point at line and column and are collected, not just the
//! first.

use super::lex::{did_you_mean, lex, Span, Tok, Token};
use super::node::{Form, Slot, Sort};
use super::ops::{self, Kind, Op};
use std::collections::{HashMap, HashSet};
use std::fmt;

pub type SymId = usize;

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Op(Op),
    Form(Form, Vec<SymId>),
    Ref(SymId),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Alt {
    pub weight: f64,
    pub body: Body,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub alts: Vec<Alt>,
    pub span: Span,
}

/// What the candidates of a space are: networks, or one of the two kinds of program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceKind {
    /// Architectures: modules checked by shape inference.
    #[default]
    Network,
    /// Activation functions: an expression in `x`.
    Activation,
    /// Optimizer update rules: `prog(state(...), statements...)`.
    Optimizer,
}

impl SpaceKind {
    pub fn name(self) -> &'static str {
        match self {
            SpaceKind::Network => "network",
            SpaceKind::Activation => "activation",
            SpaceKind::Optimizer => "optimizer",
        }
    }

    pub fn by_name(name: &str) -> Option<SpaceKind> {
        [
            SpaceKind::Network,
            SpaceKind::Activation,
            SpaceKind::Optimizer,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Whether candidates are programs (checked by type, not by shape).
    pub fn is_program(self) -> bool {
        self != SpaceKind::Network
    }

    /// The slot the root must fill.
    pub fn root_slot(self) -> Slot {
        match self {
            SpaceKind::Network => Slot::Module,
            SpaceKind::Activation => Slot::Expr,
            SpaceKind::Optimizer => Slot::Program,
        }
    }
}

/// A checked grammar, ready for sampling and membership tests.
#[derive(Clone, Debug)]
pub struct Grammar {
    pub name: String,
    pub description: String,
    /// What the candidates are (`kind` directive; networks by default).
    pub kind: SpaceKind,
    pub root: SymId,
    pub max_depth: usize,
    pub min_depth: usize,
    pub rules: Vec<Rule>,
    /// The source text, for `space show` and prompts.
    pub source: String,
}

/// A problem in a grammar file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrammarError {
    pub message: String,
    pub span: Span,
}

/// All the problems found in one grammar file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct GrammarErrors {
    pub file: String,
    pub source_text: String,
    pub errors: Vec<GrammarError>,
}

impl fmt::Display for GrammarErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "grammar {} has {} error(s):",
            self.file,
            self.errors.len()
        )?;
        for e in &self.errors {
            let (l, c) = e.span.line_col(&self.source_text);
            writeln!(f, "{}:{l}:{c}: {}", self.file, e.message)?;
            writeln!(f, "{}", e.span.snippet(&self.source_text))?;
        }
        Ok(())
    }
}

const DIRECTIVES: &[&str] = &[
    "space",
    "description",
    "kind",
    "root",
    "max_depth",
    "min_depth",
];

/// One alternative as written, before names are resolved.
enum RawBody {
    Name(String, Span),
    Call(String, Span, Vec<RawArg>),
    /// A number: a constant of a program.
    Number(f64, Span),
}

enum RawArg {
    Name(String, Span),
    Ints(Vec<u64>, Span),
}

struct RawAlt {
    body: RawBody,
    weight: f64,
    span: Span,
}

struct RawRule {
    name: String,
    span: Span,
    alts: Vec<RawAlt>,
}

struct P<'a> {
    toks: &'a [Token],
    pos: usize,
    errs: Vec<GrammarError>,
}

impl P<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn span(&self) -> Span {
        self.toks[self.pos].span
    }
    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn error(&mut self, message: String, span: Span) {
        self.errs.push(GrammarError { message, span });
    }
    fn skip_line(&mut self) {
        while !matches!(self.peek(), Tok::Newline | Tok::Eof) {
            self.bump();
        }
    }
    fn skip_newlines(&mut self) {
        while *self.peek() == Tok::Newline {
            self.bump();
        }
    }
}

/// Parses and checks a grammar. `file` names it in messages.
pub fn parse_grammar(src: &str, file: &str) -> Result<Grammar, GrammarErrors> {
    let (toks, lex_errs) = lex(src);
    let mut p = P {
        toks: &toks,
        pos: 0,
        errs: lex_errs
            .into_iter()
            .map(|e| GrammarError {
                message: e.message,
                span: e.span,
            })
            .collect(),
    };
    let mut name = None;
    let mut description = String::new();
    let mut root: Option<(String, Span)> = None;
    let mut max_depth = 100usize;
    let mut min_depth = 0usize;
    let mut depth_span = Span::default();
    let mut kind = SpaceKind::Network;
    let mut raw_rules: Vec<RawRule> = Vec::new();

    loop {
        p.skip_newlines();
        let t = p.bump();
        let word = match t.tok {
            Tok::Eof => break,
            Tok::Ident(w) => w,
            other => {
                p.error(
                    format!(
                        "expected a directive or a rule name at the start of a line, found {other}"
                    ),
                    t.span,
                );
                p.skip_line();
                continue;
            }
        };
        if *p.peek() == Tok::Eq {
            p.bump();
            let alts = parse_alts(&mut p);
            if alts.is_empty() {
                p.error(format!("rule `{word}` has no alternatives"), t.span);
            }
            raw_rules.push(RawRule {
                name: word,
                span: t.span,
                alts,
            });
            continue;
        }
        if !DIRECTIVES.contains(&word.as_str()) {
            p.error(
                format!(
                    "`{word}` is neither a directive ({}) nor followed by `=` to define a rule",
                    DIRECTIVES.join(", ")
                ),
                t.span,
            );
            p.skip_line();
            continue;
        }
        let arg = p.bump();
        match (word.as_str(), &arg.tok) {
            ("space", Tok::Ident(n)) => name = Some(n.clone()),
            ("description", Tok::Str(s)) => description = s.clone(),
            ("kind", Tok::Ident(k)) => match SpaceKind::by_name(k) {
                Some(k) => kind = k,
                None => p.error(
                    format!("`kind` is network, activation or optimizer, not `{k}`"),
                    arg.span,
                ),
            },
            ("root", Tok::Ident(n)) => root = Some((n.clone(), arg.span)),
            ("max_depth", Tok::Int(n)) => {
                max_depth = *n as usize;
                depth_span = arg.span;
            }
            ("min_depth", Tok::Int(n)) => {
                min_depth = *n as usize;
                depth_span = arg.span;
            }
            (w, other) => {
                let want = match w {
                    "description" => "a \"quoted string\"",
                    "max_depth" | "min_depth" => "a whole number",
                    _ => "a name",
                };
                p.error(format!("`{w}` needs {want}, found {other}"), arg.span);
            }
        }
        if !matches!(p.peek(), Tok::Newline | Tok::Eof) {
            let s = p.span();
            let found = p.peek().clone();
            p.error(
                format!("unexpected {found} after the `{word}` directive"),
                s,
            );
            p.skip_line();
        }
    }

    let mut errs = p.errs;
    let name = name.unwrap_or_else(|| {
        errs.push(GrammarError {
            message: "missing `space NAME` directive".into(),
            span: Span::new(0, 0),
        });
        String::new()
    });
    if min_depth > max_depth {
        errs.push(GrammarError {
            message: format!("min_depth {min_depth} is larger than max_depth {max_depth}"),
            span: depth_span,
        });
    }
    let grammar = resolve(raw_rules, root, &mut errs).map(|(rules, root)| Grammar {
        name,
        description,
        kind,
        root,
        max_depth,
        min_depth,
        rules,
        source: src.to_string(),
    });
    if let Some(g) = &grammar {
        if errs.is_empty() {
            check(g, &mut errs);
        }
    }
    match grammar {
        Some(g) if errs.is_empty() => Ok(g),
        _ => {
            errs.sort_by_key(|e| e.span.start);
            errs.dedup();
            Err(GrammarErrors {
                file: file.to_string(),
                source_text: src.to_string(),
                errors: errs,
            })
        }
    }
}

fn parse_alts(p: &mut P<'_>) -> Vec<RawAlt> {
    let mut alts = Vec::new();
    loop {
        p.skip_newlines();
        let start = p.span();
        let t = p.bump();
        let body = match t.tok {
            Tok::Ident(n) => {
                if *p.peek() == Tok::LParen {
                    p.bump();
                    match parse_args(p) {
                        Some(args) => RawBody::Call(n, t.span, args),
                        None => {
                            p.skip_line();
                            return alts;
                        }
                    }
                } else {
                    RawBody::Name(n, t.span)
                }
            }
            Tok::Int(n) => RawBody::Number(n as f64, t.span),
            Tok::Float(x) => RawBody::Number(x, t.span),
            other => {
                p.error(
                    format!("expected an alternative (a name, operation or form), found {other}"),
                    t.span,
                );
                p.skip_line();
                return alts;
            }
        };
        let mut weight = 1.0;
        if *p.peek() == Tok::At {
            p.bump();
            let w = p.bump();
            match w.tok {
                Tok::Int(n) => weight = n as f64,
                Tok::Float(x) => weight = x,
                other => {
                    p.error(
                        format!("expected a weight after `@`, found {other}"),
                        w.span,
                    );
                }
            }
            if !weight.is_finite() {
                p.error(format!("weight {weight} is not a finite number"), w.span);
            } else if weight < 0.0 {
                p.error(
                    format!("weight {weight} must be positive, or 0 for a seed-only alternative"),
                    w.span,
                );
            }
        }
        let end = p.toks[p.pos.saturating_sub(1)].span;
        alts.push(RawAlt {
            body,
            weight,
            span: start.to(end),
        });
        // A rule continues on the next line only when that line starts with `|`.
        let save = p.pos;
        p.skip_newlines();
        if *p.peek() == Tok::Pipe {
            let pipe = p.bump();
            let save = p.pos;
            p.skip_newlines();
            let next_is_rule = matches!(p.peek(), Tok::Ident(_))
                && p.toks.get(p.pos + 1).is_some_and(|t| t.tok == Tok::Eq);
            p.pos = save;
            if next_is_rule || matches!(p.peek(), Tok::Eof) {
                p.error(
                    "`|` ends the rule with nothing after it; add an alternative or remove the `|`"
                        .into(),
                    pipe.span,
                );
                return alts;
            }
            continue;
        }
        p.pos = save;
        if !matches!(p.peek(), Tok::Newline | Tok::Eof) {
            let s = p.span();
            let found = p.peek().clone();
            p.error(
                format!(
                    "expected `|`, `@` or the end of the line after an alternative, found {found}"
                ),
                s,
            );
            p.skip_line();
        }
        return alts;
    }
}

fn parse_args(p: &mut P<'_>) -> Option<Vec<RawArg>> {
    let mut args = Vec::new();
    if *p.peek() == Tok::RParen {
        p.bump();
        return Some(args);
    }
    loop {
        let t = p.bump();
        match t.tok {
            Tok::Ident(n) => args.push(RawArg::Name(n, t.span)),
            Tok::Int(n) => args.push(RawArg::Ints(vec![n], t.span)),
            Tok::LBrace => {
                let mut vals = Vec::new();
                let mut end = t.span;
                loop {
                    let v = p.bump();
                    match v.tok {
                        Tok::Int(n) => vals.push(n),
                        other => {
                            p.error(
                                format!("expected a whole number in a choice set, found {other}"),
                                v.span,
                            );
                            return None;
                        }
                    }
                    let sep = p.bump();
                    match sep.tok {
                        Tok::Comma => {}
                        Tok::RBrace => {
                            end = end.to(sep.span);
                            break;
                        }
                        other => {
                            p.error(
                                format!("expected `,` or `}}` in a choice set, found {other}"),
                                sep.span,
                            );
                            return None;
                        }
                    }
                }
                args.push(RawArg::Ints(vals, t.span.to(end)));
            }
            other => {
                p.error(
                    format!("expected a nonterminal name, a number or a choice set {{a, b}}, found {other}"),
                    t.span,
                );
                return None;
            }
        }
        let sep = p.bump();
        match sep.tok {
            Tok::Comma => continue,
            Tok::RParen => return Some(args),
            other => {
                p.error(
                    format!("expected `,` or `)` between arguments, found {other}"),
                    sep.span,
                );
                return None;
            }
        }
    }
}

/// Resolves names to rules, operations and forms, expanding choice sets.
fn resolve(
    raw: Vec<RawRule>,
    root: Option<(String, Span)>,
    errs: &mut Vec<GrammarError>,
) -> Option<(Vec<Rule>, SymId)> {
    let mut ids: HashMap<String, SymId> = HashMap::new();
    let mut rules: Vec<Rule> = Vec::new();
    for r in &raw {
        if let Some(&first) = ids.get(&r.name) {
            let (l, _) = rules[first].span.line_col("");
            let _ = l;
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
                    Err(m) => errs.push(GrammarError { message: m, span }),
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
                            Err(m) => errs.push(GrammarError { message: m, span }),
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
                                message: spec
                                    .build(&vec![0; sets.len()])
                                    .err()
                                    .unwrap_or_else(|| format!("wrong arguments for `{n}`")),
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
                                        .chain(super::node::FORMS.iter().map(|f| f.name))
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

/// The kinds of things a symbol can derive, as a small bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    const UNARY: u16 = 1;
    const SPLIT: u16 = 2;
    const MERGE: u16 = 4;
    const FORM: u16 = 8;
    const VALUE: u16 = 16;
    const EXPR: u16 = 32;
    const DECL: u16 = 64;
    const STMT: u16 = 128;
    const PROG: u16 = 256;

    fn of_op(k: Kind) -> Kinds {
        Kinds(match k {
            Kind::Unary => Self::UNARY,
            Kind::Split => Self::SPLIT,
            Kind::Merge => Self::MERGE,
            Kind::Value => Self::VALUE,
        })
    }

    fn of_form(f: Form) -> Kinds {
        Kinds(match f.sort() {
            Sort::Module => Self::FORM,
            Sort::Expr => Self::EXPR,
            Sort::Decl => Self::DECL,
            Sort::Stmt => Self::STMT,
            Sort::Program => Self::PROG,
        })
    }

    fn fits(self, slot: Slot) -> bool {
        let allowed = match slot {
            Slot::Module => Self::UNARY | Self::FORM,
            Slot::UnaryOp => Self::UNARY,
            Slot::SplitOp => Self::SPLIT,
            Slot::MergeOp => Self::MERGE,
            Slot::Expr => Self::VALUE | Self::EXPR,
            Slot::Decl => Self::DECL,
            Slot::Stmt => Self::STMT,
            Slot::Program => Self::PROG,
        };
        self.0 & !allowed == 0
    }

    fn describe(self) -> String {
        let mut v = Vec::new();
        if self.0 & Self::UNARY != 0 {
            v.push("one-input operations");
        }
        if self.0 & Self::SPLIT != 0 {
            v.push("branching operations");
        }
        if self.0 & Self::MERGE != 0 {
            v.push("aggregation operations");
        }
        if self.0 & Self::FORM != 0 {
            v.push("forms");
        }
        if self.0 & Self::VALUE != 0 {
            v.push("program values");
        }
        if self.0 & Self::EXPR != 0 {
            v.push("expression forms");
        }
        if self.0 & Self::DECL != 0 {
            v.push("state declarations");
        }
        if self.0 & Self::STMT != 0 {
            v.push("statements");
        }
        if self.0 & Self::PROG != 0 {
            v.push("update rules");
        }
        v.join(" and ")
    }
}

impl Grammar {
    /// What each symbol can derive (through references).
    pub fn kinds(&self) -> Vec<Kinds> {
        let mut k = vec![Kinds::default(); self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                let mut acc = k[i].0;
                for a in &r.alts {
                    acc |= match &a.body {
                        Body::Op(op) => Kinds::of_op(op.kind()).0,
                        Body::Form(f, _) => Kinds::of_form(*f).0,
                        Body::Ref(s) => k[*s].0,
                    };
                }
                if acc != k[i].0 {
                    k[i].0 = acc;
                    changed = true;
                }
            }
            if !changed {
                return k;
            }
        }
    }

    /// Whether each symbol can derive a finite tree at all.
    pub fn productive(&self) -> Vec<bool> {
        let mut prod = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                if prod[i] {
                    continue;
                }
                let ok = r.alts.iter().any(|a| match &a.body {
                    Body::Op(_) => true,
                    Body::Ref(s) => prod[*s],
                    Body::Form(_, slots) => slots.iter().all(|s| prod[*s]),
                });
                if ok {
                    prod[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return prod;
            }
        }
    }

    /// Per rule: whether some derivation of it reaches a form (directly or through rules).
    pub fn formy(&self) -> Vec<bool> {
        let mut formy = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                if !formy[i]
                    && r.alts.iter().any(|a| match &a.body {
                        Body::Form(..) => true,
                        Body::Ref(t) => formy[*t],
                        Body::Op(_) => false,
                    })
                {
                    formy[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return formy;
            }
        }
    }

    /// Whether each symbol can reach an operation through references only (no forms): the
    /// alternatives still open at the maximum depth.
    pub fn leafy(&self) -> Vec<bool> {
        let mut leafy = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                if leafy[i] {
                    continue;
                }
                if r.alts.iter().any(|a| match &a.body {
                    Body::Op(_) => true,
                    Body::Ref(s) => leafy[*s],
                    Body::Form(..) => false,
                }) {
                    leafy[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return leafy;
            }
        }
    }

    pub fn rule_id(&self, name: &str) -> Option<SymId> {
        self.rules.iter().position(|r| r.name == name)
    }

    /// The operations and forms a symbol allows, in words, for messages: e.g.
    /// `seq, branch, route, identity, linear(16|32|64), norm`.
    pub fn allowed(&self, sym: SymId) -> String {
        let mut forms: Vec<&str> = Vec::new();
        let mut ops: Vec<(&str, Vec<String>)> = Vec::new();
        let mut values: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![sym];
        while let Some(s) = stack.pop() {
            if !seen.insert(s) {
                continue;
            }
            for a in &self.rules[s].alts {
                match &a.body {
                    Body::Form(f, _) => {
                        if !forms.contains(&f.name()) {
                            forms.push(f.name())
                        }
                    }
                    Body::Ref(r) => stack.push(*r),
                    Body::Op(op) if op.kind() == Kind::Value => {
                        let text = op.to_string();
                        if !values.contains(&text) {
                            values.push(text);
                        }
                    }
                    Body::Op(op) => {
                        let args = op
                            .args()
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(",");
                        match ops.iter_mut().find(|(n, _)| *n == op.name()) {
                            Some((_, v)) => {
                                if !args.is_empty() {
                                    v.push(args)
                                }
                            }
                            None => ops.push((
                                op.name(),
                                if args.is_empty() { vec![] } else { vec![args] },
                            )),
                        }
                    }
                }
            }
        }
        let mut parts: Vec<String> = forms.iter().map(|f| format!("{f}(...)")).collect();
        for (n, args) in ops {
            if args.is_empty() {
                parts.push(n.to_string());
            } else {
                parts.push(format!("{n}({})", args.join("|")));
            }
        }
        parts.extend(values);
        parts.join(", ")
    }
}

/// Static checks over the resolved grammar: slot kinds, productivity, reachability, reference
/// cycles.
fn check(g: &Grammar, errs: &mut Vec<GrammarError>) {
    let kinds = g.kinds();
    let root_kinds = kinds[g.root];
    if !root_kinds.fits(g.kind.root_slot()) {
        let want = match g.kind {
            SpaceKind::Network => "a network is a module (a one-input operation or a form)",
            SpaceKind::Activation => "an activation function is an expression in x",
            SpaceKind::Optimizer => "an update rule is a prog(...)",
        };
        errs.push(GrammarError {
            message: format!(
                "root `{}` can derive {}, but {want}",
                g.rules[g.root].name,
                root_kinds.describe()
            ),
            span: g.rules[g.root].span,
        });
    }
    for r in &g.rules {
        if !r.alts.iter().any(|a| a.weight > 0.0) {
            errs.push(GrammarError {
                message: format!(
                    "no alternative of `{}` has a positive weight (weight 0 is seed-only), so sampling could never draw it",
                    r.name
                ),
                span: r.span,
            });
        }
        for a in &r.alts {
            if let Body::Form(f, slots) = &a.body {
                for (i, &s) in slots.iter().enumerate() {
                    let want = f.grammar_slot(i);
                    if !kinds[s].fits(want) {
                        errs.push(GrammarError {
                            message: format!(
                                "slot {} of `{}` needs {}, but `{}` can derive {}",
                                i + 1,
                                f.name(),
                                want.describe(),
                                g.rules[s].name,
                                kinds[s].describe()
                            ),
                            span: a.span,
                        });
                    }
                }
            }
        }
    }
    let prod = g.productive();
    for (i, r) in g.rules.iter().enumerate() {
        if !prod[i] {
            errs.push(GrammarError {
                message: format!(
                    "rule `{}` can never finish: every alternative leads back into a cycle with no operation to end it",
                    r.name
                ),
                span: r.span,
            });
        }
    }
    // Reachability from the root.
    let mut reach = vec![false; g.rules.len()];
    let mut stack = vec![g.root];
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut reach[s], true) {
            continue;
        }
        for a in &g.rules[s].alts {
            match &a.body {
                Body::Ref(t) => stack.push(*t),
                Body::Form(_, slots) => stack.extend(slots),
                Body::Op(_) => {}
            }
        }
    }
    for (i, r) in g.rules.iter().enumerate() {
        if !reach[i] {
            errs.push(GrammarError {
                message: format!(
                    "rule `{}` is unreachable from the root `{}`",
                    r.name, g.rules[g.root].name
                ),
                span: r.span,
            });
        }
    }
    // Pure reference cycles (a = b, b = a) would make membership tests loop.
    let mut state = vec![0u8; g.rules.len()];
    fn visit(g: &Grammar, s: SymId, state: &mut [u8], errs: &mut Vec<GrammarError>) {
        state[s] = 1;
        for a in &g.rules[s].alts {
            if let Body::Ref(t) = a.body {
                if state[t] == 1 {
                    errs.push(GrammarError {
                        message: format!(
                            "`{}` and `{}` refer to each other without an operation or form in between",
                            g.rules[s].name, g.rules[t].name
                        ),
                        span: a.span,
                    });
                } else if state[t] == 0 {
                    visit(g, t, state, errs);
                }
            }
        }
        state[s] = 2;
    }
    for s in 0..g.rules.len() {
        if state[s] == 0 {
            visit(g, s, &mut state, errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "space tiny\nroot net\nnet = seq(unit, unit) @ 2\n    | unit\nunit = linear({16, 32}) | leakyrelu\n";

    #[test]
    fn parses_a_small_grammar() {
        let g = parse_grammar(TINY, "tiny.grammar").unwrap();
        assert_eq!(g.rules.len(), 2);
        assert_eq!(g.rules[0].alts.len(), 2);
        assert_eq!(g.rules[1].alts.len(), 3);
        assert_eq!(g.allowed(0), "seq(...), linear(16|32), leakyrelu");
    }

    #[test]
    fn collects_errors_with_positions() {
        let src = "space bad\nroot net\nnet = seq(unit, nothing) | conv2d(3) @ -1\nunit = linear(64)\norphan = norm\n";
        let e = parse_grammar(src, "bad.grammar").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bad.grammar:3:17: slot `nothing`"), "{text}");
        assert!(
            text.contains("bad.grammar:3:28: unknown operation or form `conv2d`"),
            "{text}"
        );
        assert!(text.contains("weight -1 must be positive"), "{text}");
    }

    #[test]
    fn weight_zero_is_seed_only_but_not_for_a_whole_rule() {
        let src = "space s\nroot net\nnet = seq(unit, unit)\nunit = linear(16) | linear(7) @ 0\n";
        let g = parse_grammar(src, "s").unwrap();
        assert_eq!(g.rules[1].alts[1].weight, 0.0);
        let src =
            "space s\nroot net\nnet = seq(unit, unit)\nunit = linear(16) @ 0 | linear(7) @ 0\n";
        let e = parse_grammar(src, "s").unwrap_err().to_string();
        assert!(
            e.contains("s:4:1: no alternative of `unit` has a positive weight"),
            "{e}"
        );
    }

    #[test]
    fn refuses_cycles_without_exit() {
        let src = "space c\nroot a\na = seq(a, a)\n";
        let e = parse_grammar(src, "c").unwrap_err();
        assert!(e.to_string().contains("can never finish"), "{e}");
    }
}
