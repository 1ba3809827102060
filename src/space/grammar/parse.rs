//! Stage 1: the grammar file's text to rules as written (names not yet resolved), with the
//! directives. Syntax errors are collected and parsing goes on at the next line.

use super::GrammarError;
use crate::space::kind::SpaceKind;
use crate::space::lex::{lex, Span, Tok, Token};

pub(super) const DIRECTIVES: &[&str] = &[
    "space",
    "description",
    "kind",
    "root",
    "max_depth",
    "min_depth",
];

/// One alternative as written, before names are resolved.
pub(super) enum RawBody {
    Name(String, Span),
    Call(String, Span, Vec<RawArg>),
    /// A number: a constant of a program.
    Number(f64, Span),
}

pub(super) enum RawArg {
    Name(String, Span),
    Ints(Vec<u64>, Span),
}

pub(super) struct RawAlt {
    pub(super) body: RawBody,
    pub(super) weight: f64,
    pub(super) span: Span,
}

pub(super) struct RawRule {
    pub(super) name: String,
    pub(super) span: Span,
    pub(super) alts: Vec<RawAlt>,
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

/// A grammar file as written: its directives and its rules, names unresolved.
pub(super) struct Raw {
    pub(super) name: Option<String>,
    pub(super) description: String,
    pub(super) kind: SpaceKind,
    pub(super) root: Option<(String, Span)>,
    pub(super) max_depth: usize,
    pub(super) min_depth: usize,
    /// Where the depth directives were, for the message when they disagree.
    pub(super) depth_span: Span,
    pub(super) rules: Vec<RawRule>,
}

/// Parses a grammar file into its directives and rules, collecting every syntax error.
pub(super) fn parse(src: &str) -> (Raw, Vec<GrammarError>) {
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
    (
        Raw {
            name,
            description,
            kind,
            root,
            max_depth,
            min_depth,
            depth_span,
            rules: raw_rules,
        },
        p.errs,
    )
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
