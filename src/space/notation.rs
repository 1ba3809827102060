//! The candidate notation: parse text with spans, expand `let` macros, lower to a [`Node`].
//!
//! A source is a list of statements, each ended by a newline outside parentheses or by `;`:
//!
//! ```text
//! # a 3x3 convolution with d outputs and stride s
//! let conv(d, s) = route(im2col(3, s, 1), linear(d), col2im)
//! seq(conv(64, 1), norm, leakyrelu)
//! ```
//!
//! `let` statements define macros for the statements after them; every other statement is one
//! candidate. Macros expand away: the canonical form never contains them.

use super::lex::{did_you_mean, lex, Span, Tok, Token};
use super::node::{Form, Node};
use super::ops;
use std::collections::HashMap;
use std::fmt;

/// An untyped tree as written: `head(args...)`, a bare name, or a number.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Call {
        name: String,
        args: Option<Vec<Term>>,
        span: Span,
    },
    Int {
        value: u64,
        span: Span,
    },
    /// A number with a fraction or a sign: a constant of a program.
    Num {
        value: f64,
        span: Span,
    },
}

impl Term {
    pub fn span(&self) -> Span {
        match self {
            Term::Call { span, .. } | Term::Int { span, .. } | Term::Num { span, .. } => *span,
        }
    }
}

/// A syntax or expansion error in candidate text, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

impl SyntaxError {
    /// `line:col: message`, then the line with carets under the offending text.
    pub fn render(&self, src: &str) -> String {
        let (l, c) = self.span.line_col(src);
        format!("{l}:{c}: {}\n{}", self.message, self.span.snippet(src))
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A macro defined with `let`.
#[derive(Clone, Debug)]
struct Macro {
    params: Vec<String>,
    body: Term,
}

/// One candidate statement of a source, parsed and lowered, or the reasons it could not be.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The statement's text as written (trimmed).
    pub text: String,
    /// Where the statement is in the source.
    pub span: Span,
    pub result: Result<Lowered, Vec<SyntaxError>>,
}

/// A lowered candidate with the source span of every node, in pre-order.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub node: Node,
    pub spans: Vec<Span>,
}

/// How many nodes a candidate may expand to; protects against macros that double their size
/// at each level.
pub const MAX_NODES: usize = 100_000;
const MAX_NESTING: usize = 200;

struct Parser<'a> {
    src: &'a str,
    toks: &'a [Token],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn span(&self) -> Span {
        self.toks[self.pos.min(self.toks.len() - 1)].span
    }

    fn bump(&mut self) -> &Token {
        let t = &self.toks[self.pos.min(self.toks.len() - 1)];
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn skip_newlines(&mut self) {
        while *self.peek() == Tok::Newline {
            self.bump();
        }
    }

    fn err<T>(&self, message: String) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            message,
            span: self.span(),
        })
    }

    fn expect(&mut self, want: Tok, context: &str) -> Result<Span, SyntaxError> {
        if *self.peek() == want {
            Ok(self.bump().span)
        } else {
            self.err(format!("expected {want} {context}, found {}", self.peek()))
        }
    }

    fn term(&mut self) -> Result<Term, SyntaxError> {
        self.skip_newlines();
        let t = self.bump().clone();
        match t.tok {
            Tok::Int(value) => Ok(Term::Int {
                value,
                span: t.span,
            }),
            Tok::Float(value) => Ok(Term::Num {
                value,
                span: t.span,
            }),
            Tok::Ident(name) => {
                if *self.peek() != Tok::LParen {
                    return Ok(Term::Call {
                        name,
                        args: None,
                        span: t.span,
                    });
                }
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(SyntaxError {
                        message: format!("nesting deeper than {MAX_NESTING} levels"),
                        span: t.span,
                    });
                }
                self.bump();
                let mut args = Vec::new();
                self.skip_newlines();
                if *self.peek() == Tok::RParen {
                    let end = self.bump().span;
                    self.depth -= 1;
                    return Ok(Term::Call {
                        name,
                        args: Some(args),
                        span: t.span.to(end),
                    });
                }
                loop {
                    args.push(self.term()?);
                    self.skip_newlines();
                    match self.peek() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RParen => {
                            let end = self.bump().span;
                            self.depth -= 1;
                            return Ok(Term::Call {
                                name,
                                args: Some(args),
                                span: t.span.to(end),
                            });
                        }
                        other => {
                            let other = other.clone();
                            let (l, c) = t.span.line_col(self.src);
                            return self.err(format!(
                                "expected `,` or `)` in the arguments of `{name}` (opened at line {l}, column {c}), found {other}"
                            ));
                        }
                    }
                }
            }
            Tok::Eof => Err(SyntaxError {
                message: "expected an operation or form, found end of input".into(),
                span: t.span,
            }),
            other => Err(SyntaxError {
                message: format!("expected an operation or form, found {other}"),
                span: t.span,
            }),
        }
    }

    /// Skips to just after the end of the current statement, for recovery.
    fn recover(&mut self) {
        let mut depth = 0i64;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::LParen => depth += 1,
                Tok::RParen => depth -= 1,
                Tok::Semi => {
                    self.bump();
                    return;
                }
                Tok::Newline if depth <= 0 => {
                    self.bump();
                    return;
                }
                _ => {}
            }
            self.bump();
        }
    }

    fn end_statement(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            Tok::Newline | Tok::Semi => {
                self.bump();
                Ok(())
            }
            Tok::Eof => Ok(()),
            other => {
                let other = other.clone();
                self.err(format!(
                    "expected the end of the candidate (a new line or `;`), found {other}"
                ))
            }
        }
    }
}

/// Parses a whole source: every candidate statement, each with its own result, so that one
/// broken line does not stop the others from being checked.
pub fn parse_source(src: &str) -> Vec<Parsed> {
    let (toks, lex_errs) = lex(src);
    let mut p = Parser {
        src,
        toks: &toks,
        pos: 0,
        depth: 0,
    };
    let mut macros: HashMap<String, Macro> = HashMap::new();
    let mut out = Vec::new();
    loop {
        while matches!(p.peek(), Tok::Newline | Tok::Semi) {
            p.bump();
        }
        if *p.peek() == Tok::Eof {
            break;
        }
        let start = p.span();
        p.depth = 0;
        let is_let = matches!(p.peek(), Tok::Ident(s) if s == "let");
        let parsed = if is_let {
            parse_let(&mut p, &macros)
                .and_then(|(name, m)| p.end_statement().map(|_| (name, m)))
                .map(|(name, m)| {
                    macros.insert(name, m);
                    None
                })
        } else {
            p.term()
                .and_then(|t| p.end_statement().map(|_| t))
                .map(Some)
        };
        let end_pos = p.pos.saturating_sub(1);
        let end = toks[end_pos.min(toks.len() - 1)].span;
        match parsed {
            Ok(None) => {}
            Ok(Some(term)) => {
                let span = start.to(term.span());
                let errs_here: Vec<SyntaxError> = lex_errs
                    .iter()
                    .filter(|e| e.span.start >= start.start && e.span.start <= end.end)
                    .map(|e| SyntaxError {
                        message: e.message.clone(),
                        span: e.span,
                    })
                    .collect();
                let result = if errs_here.is_empty() {
                    lower(&term, &macros)
                } else {
                    Err(errs_here)
                };
                out.push(Parsed {
                    text: src[span.start..span.end.min(src.len())].trim().to_string(),
                    span,
                    result,
                });
            }
            Err(e) => {
                p.recover();
                let stop = toks[p.pos.saturating_sub(1).min(toks.len() - 1)].span;
                let span = start.to(e.span).to(Span::new(stop.start, stop.start));
                let mut errs: Vec<SyntaxError> = lex_errs
                    .iter()
                    .filter(|le| le.span.start >= start.start && le.span.start < e.span.start)
                    .map(|le| SyntaxError {
                        message: le.message.clone(),
                        span: le.span,
                    })
                    .collect();
                errs.push(e);
                if is_let {
                    // A broken macro still gets reported, as a statement of its own.
                }
                out.push(Parsed {
                    text: src[span.start.min(src.len())..span.end.min(src.len())]
                        .trim()
                        .to_string(),
                    span,
                    result: Err(errs),
                });
            }
        }
    }
    // Lexer errors outside any statement (e.g. a stray character on its own line).
    if out.is_empty() && !lex_errs.is_empty() {
        out.push(Parsed {
            text: src.trim().to_string(),
            span: Span::new(0, src.len()),
            result: Err(lex_errs
                .into_iter()
                .map(|e| SyntaxError {
                    message: e.message,
                    span: e.span,
                })
                .collect()),
        });
    }
    out
}

fn parse_let(
    p: &mut Parser<'_>,
    macros: &HashMap<String, Macro>,
) -> Result<(String, Macro), SyntaxError> {
    p.bump(); // let
    let name_tok = p.bump().clone();
    let Tok::Ident(name) = name_tok.tok else {
        return Err(SyntaxError {
            message: format!("expected a macro name after `let`, found {}", name_tok.tok),
            span: name_tok.span,
        });
    };
    if Form::by_name(&name).is_some() || ops::spec(&name).is_some() || name == "let" {
        return Err(SyntaxError {
            message: format!("`{name}` is a built-in name and cannot be redefined with let"),
            span: name_tok.span,
        });
    }
    let mut params = Vec::new();
    if *p.peek() == Tok::LParen {
        p.bump();
        loop {
            let t = p.bump().clone();
            match t.tok {
                Tok::Ident(s) => {
                    if params.contains(&s) {
                        return Err(SyntaxError {
                            message: format!("parameter `{s}` is named twice"),
                            span: t.span,
                        });
                    }
                    params.push(s)
                }
                Tok::RParen if params.is_empty() => break,
                other => {
                    return Err(SyntaxError {
                        message: format!("expected a parameter name, found {other}"),
                        span: t.span,
                    })
                }
            }
            match p.bump().tok.clone() {
                Tok::Comma => continue,
                Tok::RParen => break,
                other => {
                    return p.err(format!(
                        "expected `,` or `)` after a parameter, found {other}"
                    ))
                }
            }
        }
    }
    p.expect(Tok::Eq, &format!("after `let {name}`"))?;
    p.skip_newlines();
    let body = p.term()?;
    // Macros may use only macros defined before them, so expansion always terminates.
    check_names(&body, &params, macros)?;
    Ok((name, Macro { params, body }))
}

fn check_names(
    t: &Term,
    params: &[String],
    macros: &HashMap<String, Macro>,
) -> Result<(), SyntaxError> {
    if let Term::Call { name, args, span } = t {
        let known = params.contains(name)
            || macros.contains_key(name)
            || Form::by_name(name).is_some()
            || ops::spec(name).is_some();
        if !known {
            return Err(SyntaxError {
                message: format!(
                    "unknown name `{name}` in a macro body{}",
                    suggest(name, params)
                ),
                span: *span,
            });
        }
        for a in args.iter().flatten() {
            check_names(a, params, macros)?;
        }
    }
    Ok(())
}

/// "; did you mean `x`?" for the closest built-in or parameter name, if one is close.
fn suggest(name: &str, extra: &[String]) -> String {
    let known = ops::OPS
        .iter()
        .map(|s| s.name)
        .chain(super::node::FORMS.iter().map(|f| f.name))
        .chain(extra.iter().map(String::as_str));
    did_you_mean(name, known)
}

/// What a macro parameter stands for: the argument as written at the call, with the
/// parameters of the caller it may itself name. Arguments are expanded where they are used, in
/// the caller's scope, so no expanded copy of a term is ever built.
#[derive(Clone, Copy)]
struct Bound<'a> {
    term: &'a Term,
    env: &'a Env<'a>,
}

type Env<'a> = HashMap<String, Bound<'a>>;

/// How deep expansion may go: forms, macro calls and parameters together. The written text
/// nests at most [`MAX_NESTING`] levels, but a chain of macros each applying the one before
/// twice doubles the depth at every level; without a bound a candidate of a few hundred bytes
/// would overflow the stack of whatever expands it.
pub const MAX_EXPANSION_DEPTH: usize = 5 * MAX_NESTING;

/// The state of one expansion: every error found, the span of every node in pre-order, what is
/// left of the node budget, and the current depth.
struct Expander<'m> {
    macros: &'m HashMap<String, Macro>,
    errs: Vec<SyntaxError>,
    spans: Vec<(String, Span)>,
    budget: usize,
    depth: usize,
    /// Forms around the current term: the depth of the tree being built, which every later
    /// stage (validation, printing, compilation) walks recursively.
    forms: usize,
}

impl Expander<'_> {
    /// Records a limit's error once per candidate.
    fn limit(&mut self, message: String, span: Span) {
        let key = message.split(" (").next().unwrap_or_default().to_string();
        if !self.errs.iter().any(|e| e.message.starts_with(&key)) {
            self.errs.push(SyntaxError { message, span });
        }
    }
}

/// Expands macros and turns a term into a node, collecting every error it finds.
fn lower(term: &Term, macros: &HashMap<String, Macro>) -> Result<Lowered, Vec<SyntaxError>> {
    let mut x = Expander {
        macros,
        errs: Vec::new(),
        spans: Vec::new(),
        budget: MAX_NODES,
        depth: 0,
        forms: 0,
    };
    let node = x.lower_term(term, &Env::new(), false);
    let Expander {
        mut errs, spans, ..
    } = x;
    match node {
        Some(node) if errs.is_empty() => {
            // Canonicalisation (flattening seqs, collapsing equal branches) changes the
            // pre-order, so spans are recomputed against the final tree.
            let spans = respan(&node, &spans);
            Ok(Lowered { node, spans })
        }
        _ => {
            if errs.is_empty() {
                errs.push(SyntaxError {
                    message: "could not read this candidate".into(),
                    span: term.span(),
                });
            }
            Err(errs)
        }
    }
}

impl Expander<'_> {
    /// `num_ok` says whether a number may stand here as a program constant (in an expression
    /// slot); elsewhere numbers are only arguments of operations.
    fn lower_term<'a>(&mut self, t: &'a Term, env: &'a Env<'a>, num_ok: bool) -> Option<Node> {
        if self.budget == 0 {
            self.limit(
                format!("the candidate expands to more than {MAX_NODES} nodes"),
                t.span(),
            );
            return None;
        }
        if self.depth >= MAX_EXPANSION_DEPTH {
            self.limit(
                format!(
                    "the candidate nests more than {MAX_EXPANSION_DEPTH} levels deep once its macros are expanded (a chain of macros that apply each other grows with every level; write fewer levels)"
                ),
                t.span(),
            );
            return None;
        }
        self.budget -= 1;
        self.depth += 1;
        // Debug builds spend kilobytes of stack a level; grow it rather than overflow a
        // worker thread's (the bound above keeps the total finite).
        let node = stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.lower_inner(t, env, num_ok));
        self.depth -= 1;
        node
    }

    fn lower_inner<'a>(&mut self, t: &'a Term, env: &'a Env<'a>, num_ok: bool) -> Option<Node> {
        let (name, args, span) = match t {
            Term::Int { .. } | Term::Num { .. } if num_ok => {
                let (value, span) = match *t {
                    Term::Int { value, span } => (value as f64, span),
                    Term::Num { value, span } => (value, span),
                    Term::Call { span, .. } => (0.0, span),
                };
                return match ops::const_micros(value) {
                    Ok(c) => {
                        self.spans.push(("const".into(), span));
                        Some(Node::Op(ops::Op::Const(c)))
                    }
                    Err(e) => {
                        self.errs.push(SyntaxError {
                            message: e.to_string(),
                            span,
                        });
                        None
                    }
                };
            }
            Term::Num { value, span } => {
                self.errs.push(SyntaxError {
                    message: format!(
                        "expected an operation or form, found the number {value} (numbers stand as constants only inside expressions of programs)"
                    ),
                    span: *span,
                });
                return None;
            }
            Term::Int { value, span } => {
                self.errs.push(SyntaxError {
                    message: format!(
                        "expected an operation or form, found the number {value} (numbers are arguments, as in linear(64))"
                    ),
                    span: *span,
                });
                return None;
            }
            Term::Call { name, args, span } => (name, args, *span),
        };
        if let Some(bound) = env.get(name) {
            if args.is_some() {
                self.errs.push(SyntaxError {
                    message: format!("macro parameter `{name}` cannot take arguments"),
                    span,
                });
                return None;
            }
            return self.lower_term(bound.term, bound.env, num_ok);
        }
        let macros = self.macros;
        if let Some(m) = macros.get(name) {
            let given = args.as_deref().unwrap_or(&[]);
            if given.len() != m.params.len() {
                self.errs.push(SyntaxError {
                    message: format!(
                        "macro `{name}` takes {} argument(s) ({}), but {} were given",
                        m.params.len(),
                        m.params.join(", "),
                        given.len()
                    ),
                    span,
                });
                return None;
            }
            let inner: Env<'_> = m
                .params
                .iter()
                .cloned()
                .zip(given.iter().map(|term| Bound { term, env }))
                .collect();
            return self.lower_term(&m.body, &inner, num_ok);
        }
        // Some names are both an operation and an expression form (`tanh`, `sigmoid`, `add`):
        // with parts it is the form, alone the operation.
        if let Some(form) =
            Form::by_name(name).filter(|_| args.is_some() || ops::spec(name).is_none())
        {
            let Some(args) = args else {
                self.errs.push(SyntaxError {
                    message: format!(
                        "`{name}` is a form and needs its parts in parentheses: {}",
                        form.spec().rule
                    ),
                    span,
                });
                return None;
            };
            let min = match form {
                Form::Seq => 2,
                Form::Branch => 3,
                Form::Route => 3,
                Form::Residual => 1,
                Form::Nb201 => 6,
                Form::NbGraph => 4,
                f => f.spec().slots.len(),
            };
            let exact = !matches!(form, Form::Seq | Form::Branch) && !form.spec().variadic;
            if args.len() < min || (exact && args.len() != min) {
                self.errs.push(SyntaxError {
                    message: format!(
                        "`{name}` takes {}{min} parts, but {} were given: {}",
                        if exact { "" } else { "at least " },
                        args.len(),
                        form.spec().rule
                    ),
                    span,
                });
                return None;
            }
            if self.forms >= MAX_NESTING {
                self.limit(
                    format!(
                        "the candidate nests forms more than {MAX_NESTING} deep once its macros are expanded"
                    ),
                    span,
                );
                return None;
            }
            self.spans.push((name.clone(), span));
            let mut children = Vec::with_capacity(args.len());
            let mut ok = true;
            let n = args.len();
            self.forms += 1;
            for (i, a) in args.iter().enumerate() {
                let num_ok = form.child_slot(i, n) == super::node::Slot::Expr;
                match self.lower_term(a, env, num_ok) {
                    Some(c) => children.push(c),
                    None => ok = false,
                }
            }
            self.forms -= 1;
            return ok.then(|| Node::form(form, children));
        }
        if let Some(spec) = ops::spec(name) {
            let mut ints = Vec::new();
            for a in args.iter().flatten() {
                // A parameter may name a parameter of its caller: follow the chain to the
                // number written at the call (each step leaves a scope, so it ends).
                let (mut a, mut scope) = (a, env);
                while let Term::Call {
                    name: p,
                    args: None,
                    ..
                } = a
                {
                    let Some(b) = scope.get(p) else { break };
                    (a, scope) = (b.term, b.env);
                }
                match *a {
                    Term::Int { value, span } => match u32::try_from(value) {
                        Ok(v) => ints.push(v),
                        Err(_) => {
                            self.errs.push(SyntaxError {
                                message: format!("argument {value} of `{name}` is too large"),
                                span,
                            });
                            return None;
                        }
                    },
                    ref other => {
                        self.errs.push(SyntaxError {
                            message: format!(
                                "arguments of `{name}` are whole numbers ({}), found `{}`",
                                spec.params.join(", "),
                                term_text(other)
                            ),
                            span: other.span(),
                        });
                        return None;
                    }
                }
            }
            return match spec.build(&ints) {
                Ok(op) => {
                    self.spans.push((name.clone(), span));
                    Some(Node::Op(op))
                }
                Err(e) => {
                    self.errs.push(SyntaxError {
                        message: e.to_string(),
                        span,
                    });
                    None
                }
            };
        }
        let params: Vec<String> = env.keys().cloned().collect();
        self.errs.push(SyntaxError {
            message: format!(
                "unknown operation or form `{name}`{}",
                suggest(name, &params)
            ),
            span,
        });
        None
    }
}

fn term_text(t: &Term) -> String {
    match t {
        Term::Int { value, .. } => value.to_string(),
        Term::Num { value, .. } => value.to_string(),
        Term::Call {
            name, args: None, ..
        } => name.clone(),
        Term::Call {
            name,
            args: Some(a),
            ..
        } => format!(
            "{name}({})",
            a.iter().map(term_text).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Matches the pre-order of the written terms to the canonical tree. Where canonicalisation
/// removed nodes (a collapsed branch), the remaining nodes keep the span of the first match by
/// head name in order; good enough to point at the right place in the text.
fn respan(node: &Node, written: &[(String, Span)]) -> Vec<Span> {
    let mut out = Vec::with_capacity(node.size());
    let mut used = vec![false; written.len()];
    let mut cursor = 0;
    node.walk(&mut |_, n| {
        let head = n.head();
        let found = (cursor..written.len())
            .find(|&k| !used[k] && written[k].0 == head)
            // Sorted parts (commutative forms) move nodes back: look from the start too.
            .or_else(|| (0..written.len()).find(|&k| !used[k] && written[k].0 == head));
        if let Some(k) = found {
            used[k] = true;
            out.push(written[k].1);
            cursor = k + 1;
        } else {
            out.push(written.get(cursor).map(|w| w.1).unwrap_or_default());
        }
    });
    out
}

/// Parses text holding exactly one candidate (macros allowed before it).
pub fn parse_one(src: &str) -> Result<Lowered, Vec<SyntaxError>> {
    let mut items = parse_source(src);
    match items.len() {
        0 => Err(vec![SyntaxError {
            message:
                "no candidate found (the text is empty or holds only comments and let definitions)"
                    .into(),
            span: Span::new(0, src.len()),
        }]),
        1 => items.remove(0).result,
        n => Err(vec![SyntaxError {
            message: format!("expected one candidate, found {n} (the second starts here)"),
            span: items[1].span,
        }]),
    }
}

/// A source on one line, for a prompt: comments dropped, every run of whitespace (line breaks
/// inside parentheses included) as one space, and line breaks that end a statement as `; `.
/// It holds the same statements as `src`, so it parses to the same candidates, and positions
/// in errors about it point into the line a reader sees. Characters the lexer cannot read are
/// kept as written, so that their errors survive.
pub fn one_line(src: &str) -> String {
    let (toks, errs) = lex(src);
    // (start, end, token), lexer errors as raw text, in source order.
    let mut items: Vec<(usize, usize, Option<&Tok>)> = toks
        .iter()
        .filter(|t| t.tok != Tok::Eof)
        .map(|t| (t.span.start, t.span.end, Some(&t.tok)))
        .chain(errs.iter().map(|e| (e.span.start, e.span.end, None)))
        .collect();
    items.sort_by_key(|&(start, end, _)| (start, end));
    let mut out = String::new();
    let mut depth = 0i32;
    let mut prev_end: Option<usize> = None;
    let mut end_statement = false;
    for (start, end, tok) in items {
        match tok {
            Some(Tok::Newline) if depth > 0 => continue,
            Some(Tok::Newline | Tok::Semi) => {
                end_statement = !out.is_empty();
                continue;
            }
            Some(Tok::LParen) => depth += 1,
            Some(Tok::RParen) => depth -= 1,
            _ => {}
        }
        if end_statement {
            out.push_str("; ");
            end_statement = false;
        } else if prev_end.is_some_and(|e| start > e) {
            out.push(' ');
        }
        out.push_str(src.get(start..end).unwrap_or_default());
        prev_end = Some(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_convolution_example() {
        let l = parse_one("route(im2col(3,1,1), linear(64), col2im)").unwrap();
        assert_eq!(
            l.node.canonical(),
            "route(im2col(3,1,1), linear(64), col2im)"
        );
        assert_eq!(l.spans.len(), 4);
    }

    #[test]
    fn macros_expand_and_seqs_flatten() {
        let src = "let conv(d, s) = route(im2col(3, s, 1), linear(d), col2im)\n\
                   let block(d) = seq(conv(d, 1), norm)\n\
                   seq(block(16), seq(block(32), leakyrelu))";
        let l = parse_one(src).unwrap();
        assert_eq!(
            l.node.canonical(),
            "seq(route(im2col(3,1,1), linear(16), col2im), norm, route(im2col(3,1,1), linear(32), col2im), norm, leakyrelu)"
        );
        assert_eq!(l.spans.len(), l.node.size());
    }

    #[test]
    fn equal_branches_collapse() {
        let a = parse_one("branch(clone(2), linear(8), linear(8), add)").unwrap();
        let b = parse_one("branch(clone(2), linear(8), add)").unwrap();
        assert_eq!(a.node, b.node);
        assert_eq!(a.node.hash_hex(), b.node.hash_hex());
    }

    #[test]
    fn reports_several_errors_and_suggests() {
        let errs = parse_one("seq(lineer(64), norm(3), route(im2col(3,1), identity, col2im))")
            .unwrap_err();
        let msgs: Vec<_> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("did you mean `linear`"));
        assert!(msgs[1].contains("takes no arguments"));
        assert!(msgs[2].contains("takes 3 argument(s)"));
    }

    #[test]
    fn one_candidate_per_line_with_recovery() {
        let items = parse_source("linear(64)\nseq(norm,, leakyrelu)\n\nsoftmax # done\n");
        assert_eq!(items.len(), 3);
        assert!(items[0].result.is_ok());
        let e = items[1].result.as_ref().unwrap_err();
        assert_eq!(
            e[0].span.line_col("linear(64)\nseq(norm,, leakyrelu)"),
            (2, 10)
        );
        assert!(items[2].result.is_ok());
    }

    #[test]
    fn macro_bombs_are_refused() {
        let mut src = String::from("let a0 = seq(identity, identity)\n");
        for i in 1..30 {
            src.push_str(&format!("let a{i} = seq(a{}, a{})\n", i - 1, i - 1));
        }
        src.push_str("a29\n");
        let errs = parse_one(&src).unwrap_err();
        assert!(errs[0].message.contains("expands to more than"));
    }

    /// Hostile macro chains: each level applying the one before twice (the depth doubles), a
    /// long linear chain, and a chain of bare aliases. Each is an ordinary error, on a thread
    /// with a small stack like a worker's, where unbounded expansion used to overflow it.
    #[test]
    fn deep_macro_chains_are_errors_not_stack_overflows() {
        let doubling = {
            let mut s = String::from("let a0(x) = seq(x, identity)\n");
            for i in 1..14 {
                s.push_str(&format!("let a{i}(x) = a{}(a{}(x))\n", i - 1, i - 1));
            }
            s + "a13(identity)\n"
        };
        let linear = {
            let mut s = String::from("let b0 = identity\n");
            for i in 1..5000 {
                s.push_str(&format!("let b{i} = seq(b{}, identity)\n", i - 1));
            }
            s + "b4999\n"
        };
        let aliases = {
            let mut s = String::from("let c0(d) = linear(d)\n");
            for i in 1..20_000 {
                s.push_str(&format!("let c{i}(d) = c{}(d)\n", i - 1));
            }
            s + "c19999(8)\n"
        };
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                [doubling, linear, aliases]
                    .iter()
                    .map(|src| parse_one(src).unwrap_err())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        for errs in handle.join().expect("expansion overflowed the stack") {
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0]
                    .message
                    .contains("deep once its macros are expanded"),
                "{}",
                errs[0].message
            );
        }
        // Within the bound, parameters passed through several macros still reach operations.
        let ok = "let f(d) = linear(d)\nlet p(e) = f(e)\nlet q(y, e) = seq(y, p(e))\nq(norm, 8)";
        assert_eq!(
            parse_one(ok).unwrap().node,
            parse_one("seq(norm, linear(8))").unwrap().node
        );
    }

    /// The deepest tree expansion lets through is walked safely by every later stage on a
    /// thread with tokio's 2 MiB stack: validation, printing, hashing and mutation.
    #[test]
    fn the_deepest_allowed_candidate_is_safe_downstream() {
        let deep = format!(
            "let r(x) = residual(x)\n{}linear(16){}",
            "r(".repeat(MAX_NESTING - 1),
            ")".repeat(MAX_NESTING - 1)
        );
        // Written 101 levels deep, expanded 202.
        let too_deep = format!(
            "let r(x) = residual(x)\nlet r2(x) = r(r(x))\n{}linear(16){}",
            "r2(".repeat(MAX_NESTING / 2 + 1),
            ")".repeat(MAX_NESTING / 2 + 1)
        );
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                use rand::SeedableRng;
                let space = crate::space::Space::load("mlp").unwrap();
                let opts = crate::space::CheckOptions::default();
                let input = crate::space::Shape::vec(16);
                let node = parse_one(&deep).unwrap().node;
                let text = node.to_string();
                assert_eq!(parse_one(&text).unwrap().node, node);
                let _ = node.hash_hex();
                let _ = space.check(&node, None, input, &opts);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
                let _ = space.mutate(&node, input, &opts, &mut rng);
                let errs = parse_one(&too_deep).unwrap_err();
                assert!(errs[0]
                    .message
                    .contains("deep once its macros are expanded"));
            })
            .unwrap()
            .join()
            .expect("a stage overflowed the stack");
    }

    #[test]
    fn one_line_keeps_the_statements() {
        let src = "# a conv\nlet conv(d) = route(im2col(3, 1, 1),\n    linear(d), # the map\n    col2im)\n\nseq(conv(16),\n    leakyrelu)  \n";
        let line = one_line(src);
        assert_eq!(
            line,
            "let conv(d) = route(im2col(3, 1, 1), linear(d), col2im); seq(conv(16), leakyrelu)"
        );
        assert_eq!(parse_one(&line).unwrap().node, parse_one(src).unwrap().node);
        assert_eq!(
            one_line("seq(norm,,  leakyrelu);; "),
            "seq(norm,, leakyrelu)"
        );
        // An unreadable character stays, so its error is still reported.
        let bad = one_line("seq(norm,\n  [leakyrelu)");
        assert_eq!(bad, "seq(norm, [leakyrelu)");
        assert!(parse_one(&bad).is_err());
    }
}
