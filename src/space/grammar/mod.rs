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
//!
//! The stages, one file each: `parse` (text to rules as written), `resolve` (names to rules,
//! operations and forms), `analyse` (what symbols derive) and `check` (static errors).

mod analyse;
mod check;
mod parse;
mod resolve;

use crate::space::kind::SpaceKind;
pub use analyse::Kinds;

use crate::space::lex::Span;
use crate::space::node::Form;
use crate::space::ops::{Kind, Op};
use std::collections::HashSet;
use std::fmt;

/// A rule's index in [`Grammar::rules`].
pub type SymId = usize;

/// What one alternative derives: an operation, a form with the rules of its slots, or another
/// rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Op(Op),
    Form(Form, Vec<SymId>),
    Ref(SymId),
}

/// One alternative of a rule, with its sampling weight and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Alt {
    pub weight: f64,
    pub body: Body,
    pub span: Span,
}

/// A rule: a nonterminal and its alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub alts: Vec<Alt>,
    pub span: Span,
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

/// Parses and checks a grammar. `file` names it in messages.
pub fn parse_grammar(src: &str, file: &str) -> Result<Grammar, GrammarErrors> {
    let (raw, mut errs) = parse::parse(src);
    let name = raw.name.unwrap_or_else(|| {
        errs.push(GrammarError {
            message: "missing `space NAME` directive".into(),
            span: Span::new(0, 0),
        });
        String::new()
    });
    let (min_depth, max_depth) = (raw.min_depth, raw.max_depth);
    if min_depth > max_depth {
        errs.push(GrammarError {
            message: format!("min_depth {min_depth} is larger than max_depth {max_depth}"),
            span: raw.depth_span,
        });
    }
    let grammar = resolve::resolve(raw.rules, raw.root, &mut errs).map(|(rules, root)| Grammar {
        name,
        description: raw.description,
        kind: raw.kind,
        root,
        max_depth,
        min_depth,
        rules,
        source: src.to_string(),
    });
    if let Some(g) = &grammar {
        if errs.is_empty() {
            check::check(g, &mut errs);
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

impl Grammar {
    /// The index of the rule called `name`.
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
