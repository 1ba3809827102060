//! A space's grammar compiled for constrained decoding: GBNF for llama.cpp (the `grammar` field
//! of a request) and the Lark dialect that vLLM's structured outputs take
//! (`structured_outputs: {"grammar": ...}`, llguidance's Lark).
//!
//! The exported grammar accepts candidates in canonical text (one line, `, ` between a form's
//! parts, `,` between an operation's arguments, sequences flattened), optionally wrapped in the
//! reply format the prompts ask for (`PLAN:`, then k `CANDIDATE:` / `PREDICTED:` pairs). It
//! enforces what a context-free grammar can: the names, arities and argument values of the
//! space's alternatives, balanced parentheses, the branch rule "one module or k modules" and the
//! aggregations whose arity fits k, and a bound on nesting depth (the recursive rules are
//! unrolled to that depth, so a model cannot recurse until `max_tokens`). Shapes, modes, state
//! declarations and resource limits stay with the validator.

use super::grammar::{Body, Grammar, SymId};
use super::node::Form;
use super::ops::{Kind, Op};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

pub mod gbnf;

/// The text format of an exported grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfgFormat {
    /// llama.cpp's GBNF (`root ::= ...`), sent as `grammar` in a llama.cpp request body.
    Gbnf,
    /// The Lark dialect of llguidance (`start: ...`), vLLM's `structured_outputs.grammar`.
    Lark,
}

impl CfgFormat {
    pub fn name(self) -> &'static str {
        match self {
            CfgFormat::Gbnf => "gbnf",
            CfgFormat::Lark => "lark",
        }
    }

    pub fn by_name(name: &str) -> Option<CfgFormat> {
        [CfgFormat::Gbnf, CfgFormat::Lark]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// The reply around the candidates, as the prompt templates ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyShape {
    /// Number of `CANDIDATE:` lines (exactly this many), 1 to [`MAX_K`].
    pub k: usize,
    /// A `PLAN: ...` line first (propose, evolve and repair prompts all ask for one).
    pub plan: bool,
    /// A `PREDICTED: <number>` line after each candidate (propose and evolve; not repair).
    pub predicted: bool,
    /// Most characters of the plan line, so that a model cannot talk until `max_tokens`.
    pub plan_chars: usize,
}

impl ReplyShape {
    /// The propose/evolve reply: a plan, then k candidates each with a predicted score.
    pub fn propose(k: usize) -> ReplyShape {
        ReplyShape {
            k,
            plan: true,
            predicted: true,
            plan_chars: DEFAULT_PLAN_CHARS,
        }
    }

    /// The repair reply: a plan and one candidate, no prediction.
    pub fn repair() -> ReplyShape {
        ReplyShape {
            k: 1,
            plan: true,
            predicted: false,
            plan_chars: DEFAULT_PLAN_CHARS,
        }
    }
}

/// Default bound on the plan line's length (the prompts ask for two to four sentences).
pub const DEFAULT_PLAN_CHARS: usize = 600;

/// Largest k a reply grammar spells out.
pub const MAX_K: usize = 64;

/// What to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CfgOptions {
    /// Deepest nesting of forms the grammar allows; `None` is the space's `max_depth` (which
    /// accepts every candidate the space's sampler draws). Larger than `max_depth` is an error.
    pub depth: Option<usize>,
    /// The reply around the candidates; `None` exports the bare candidate grammar (one
    /// candidate, nothing else).
    pub reply: Option<ReplyShape>,
}

/// Why a grammar could not be exported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CfgError {
    #[error("depth {depth} is larger than space {space}'s max_depth {max_depth}")]
    DepthTooLarge {
        space: String,
        depth: usize,
        max_depth: usize,
    },
    #[error("k must be between 1 and {max}, not {k}")]
    BadK { k: usize, max: usize },
    #[error("the plan bound must be at least 1 character")]
    BadPlanChars,
    #[error("space {space} has no candidate of nesting depth {depth} or less; allow a larger depth (its max_depth is {max_depth})")]
    Empty {
        space: String,
        depth: usize,
        max_depth: usize,
    },
    #[error("space {space}: {message}")]
    Unsupported { space: String, message: String },
}

/// Size figures of an exported grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct CfgStats {
    pub rules: usize,
    pub bytes: usize,
}

/// Compiles `grammar` (with the reply format when asked) into a grammar for constrained
/// decoding in `format`.
pub fn export_cfg(
    grammar: &Grammar,
    format: CfgFormat,
    opts: &CfgOptions,
) -> Result<String, CfgError> {
    Ok(compile(grammar, opts)?.render(format))
}

/// Compiles a grammar once, to render it in several formats or to measure it.
pub fn compile(grammar: &Grammar, opts: &CfgOptions) -> Result<Cfg, CfgError> {
    let depth = opts.depth.unwrap_or(grammar.max_depth);
    if depth > grammar.max_depth {
        return Err(CfgError::DepthTooLarge {
            space: grammar.name.clone(),
            depth,
            max_depth: grammar.max_depth,
        });
    }
    if let Some(r) = &opts.reply {
        if r.k == 0 || r.k > MAX_K {
            return Err(CfgError::BadK { k: r.k, max: MAX_K });
        }
        if r.plan && r.plan_chars == 0 {
            return Err(CfgError::BadPlanChars);
        }
    }
    let mut b = Builder::new(grammar, depth)?;
    let cand = b.node_ref(grammar.root, Some(0));
    let root_body = match &opts.reply {
        None => Expr::Ref(cand),
        Some(r) => b.reply(r, cand),
    };
    b.set(Key::Root, root_body);
    let cfg = b.finish();
    match cfg {
        Some(mut cfg) => {
            cfg.space = grammar.name.clone();
            cfg.depth = depth;
            Ok(cfg)
        }
        None => Err(CfgError::Empty {
            space: grammar.name.clone(),
            depth,
            max_depth: grammar.max_depth,
        }),
    }
}

/// A compiled grammar, independent of the text format. Rule 0 is the start rule.
#[derive(Clone, Debug)]
pub struct Cfg {
    rules: Vec<(String, Expr)>,
    space: String,
    depth: usize,
}

impl Cfg {
    /// The grammar's text in `format`.
    pub fn render(&self, format: CfgFormat) -> String {
        let mut out = String::new();
        let (comment, define, start) = match format {
            CfgFormat::Gbnf => ("#", " ::= ", "root"),
            CfgFormat::Lark => ("//", ": ", "start"),
        };
        let _ = writeln!(
            out,
            "{comment} space {}: canonical candidates, forms nested at most {} deep (archsmith space export)",
            self.space, self.depth
        );
        for (i, (name, body)) in self.rules.iter().enumerate() {
            let name = if i == 0 {
                start.to_string()
            } else {
                self.name(name, format)
            };
            out.push_str(&name);
            out.push_str(define);
            match body {
                Expr::Alt(alts) if alts.len() > 1 => {
                    let parts: Vec<String> = alts
                        .iter()
                        .map(|a| self.expr(a, format, Prec::Alt))
                        .collect();
                    let one_line = parts.join(" | ");
                    if one_line.len() + name.len() <= 100 {
                        out.push_str(&one_line);
                    } else {
                        // GBNF continues a rule after a trailing `|`; Lark after a leading one.
                        let (joint, indent) = match format {
                            CfgFormat::Gbnf => (" |\n    ", ""),
                            CfgFormat::Lark => ("\n", "    | "),
                        };
                        for (j, p) in parts.iter().enumerate() {
                            if j > 0 {
                                out.push_str(joint);
                                out.push_str(indent);
                            }
                            out.push_str(p);
                        }
                    }
                }
                other => out.push_str(&self.expr(other, format, Prec::Alt)),
            }
            out.push('\n');
        }
        out
    }

    /// Rule count and byte size of the text in `format`.
    pub fn stats(&self, format: CfgFormat) -> CfgStats {
        CfgStats {
            rules: self.rules.len(),
            bytes: self.render(format).len(),
        }
    }

    fn name(&self, base: &str, format: CfgFormat) -> String {
        match format {
            CfgFormat::Gbnf => base.to_string(),
            // Lark names are lowercase letters, digits and underscores.
            CfgFormat::Lark => base.replace('-', "_"),
        }
    }

    fn expr(&self, e: &Expr, format: CfgFormat, prec: Prec) -> String {
        match e {
            Expr::Lit(s) => quote(s),
            Expr::Line(n) => match format {
                CfgFormat::Gbnf => format!("[^\\n]{{1,{n}}}"),
                CfgFormat::Lark => format!("/[^\\n]{{1,{n}}}/"),
            },
            Expr::Number => match format {
                CfgFormat::Gbnf => {
                    let s = "\"-\"? [0-9]{1,6} (\".\" [0-9]{1,6})?".to_string();
                    if prec == Prec::Atom {
                        format!("({s})")
                    } else {
                        s
                    }
                }
                CfgFormat::Lark => "/-?[0-9]{1,6}(\\.[0-9]{1,6})?/".to_string(),
            },
            Expr::Ref(i) => {
                if *i == 0 {
                    // Nothing refers to the start rule; kept total for safety.
                    match format {
                        CfgFormat::Gbnf => "root".into(),
                        CfgFormat::Lark => "start".into(),
                    }
                } else {
                    self.name(&self.rules[*i].0, format)
                }
            }
            Expr::Seq(v) => {
                let s = v
                    .iter()
                    .map(|x| self.expr(x, format, Prec::Seq))
                    .collect::<Vec<_>>()
                    .join(" ");
                if prec == Prec::Atom && v.len() > 1 {
                    format!("({s})")
                } else {
                    s
                }
            }
            Expr::Alt(v) => {
                let s = v
                    .iter()
                    .map(|x| self.expr(x, format, Prec::Alt))
                    .collect::<Vec<_>>()
                    .join(" | ");
                if prec != Prec::Alt && v.len() > 1 {
                    format!("({s})")
                } else {
                    s
                }
            }
            Expr::Rep(x, min, max) => {
                let mut inner = self.expr(x, format, Prec::Atom);
                if matches!(**x, Expr::Rep(..)) {
                    // `x{3}?` reads ambiguously; `(x{3})?` does not.
                    inner = format!("({inner})");
                }
                let suffix = match (min, max) {
                    (0, Some(1)) => "?".to_string(),
                    (0, None) => "*".to_string(),
                    (1, None) => "+".to_string(),
                    (m, None) => format!("{{{m},}}"),
                    (m, Some(n)) if m == n => format!("{{{m}}}"),
                    (m, Some(n)) => format!("{{{m},{n}}}"),
                };
                format!("{inner}{suffix}")
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prec {
    Alt,
    Seq,
    Atom,
}

/// A double-quoted literal; both formats take these escapes.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A piece of a rule body.
#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Lit(String),
    /// 1 to n characters other than a newline (the plan line).
    Line(usize),
    /// A decimal number: an optional minus, 1 to 6 digits, an optional fraction of 1 to 6.
    Number,
    Ref(usize),
    Seq(Vec<Expr>),
    Alt(Vec<Expr>),
    /// `x{min,max}`, `max` `None` for no bound.
    Rep(Box<Expr>, usize, Option<usize>),
}

/// What an output rule stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Root,
    /// One node derived from a symbol at a depth; `None` for symbols that derive no form
    /// (their rule is the same at every depth).
    Node(SymId, Option<usize>),
    /// The items of a flattened `seq` derived from a symbol, its items at a depth.
    List(SymId, usize),
    /// A list's first part: an item, or a seq alternative that does not begin with the symbol.
    Head(SymId, usize),
    /// A symbol's nodes other than sequences, at a depth.
    Item(SymId, usize),
    /// A branching symbol's operations that make k branches.
    Split(SymId, u32),
    /// An aggregation symbol's operations that take k branches.
    Merge(SymId, u32),
    Plan,
    Entry,
    Number,
}

struct Builder<'g> {
    g: &'g Grammar,
    depth: usize,
    /// Symbols that derive a form (through references): their rules are unrolled by depth.
    formy: Vec<bool>,
    /// The `seq` alternatives each symbol reaches through references, as slot pairs.
    seqs: Vec<Vec<(SymId, SymId)>>,
    rules: Vec<(String, Option<Expr>)>,
    keys: HashMap<Key, usize>,
    names: HashSet<String>,
}

impl<'g> Builder<'g> {
    fn new(g: &'g Grammar, depth: usize) -> Result<Builder<'g>, CfgError> {
        let n = g.rules.len();
        let formy = g.formy();
        // The grammar has no reference cycles (its checks refuse them), so this terminates.
        fn seqs_of(g: &Grammar, s: SymId, memo: &mut Vec<Option<Vec<(SymId, SymId)>>>) {
            if memo[s].is_some() {
                return;
            }
            let mut out = Vec::new();
            for a in &g.rules[s].alts {
                match &a.body {
                    Body::Form(Form::Seq, slots) => out.push((slots[0], slots[1])),
                    Body::Ref(t) => {
                        seqs_of(g, *t, memo);
                        out.extend(memo[*t].iter().flatten().copied());
                    }
                    _ => {}
                }
            }
            let mut seen = HashSet::new();
            out.retain(|p| seen.insert(*p));
            memo[s] = Some(out);
        }
        let mut memo = vec![None; n];
        for s in 0..n {
            seqs_of(g, s, &mut memo);
        }
        let seqs: Vec<Vec<(SymId, SymId)>> =
            memo.into_iter().map(Option::unwrap_or_default).collect();
        // A flattened sequence whose first part leads back to its own symbol through another
        // symbol (a = seq(b, x), b = seq(a, y)) would need left recursion, which llama.cpp
        // refuses; a symbol that begins its own sequence (a = seq(a, x)) becomes a repetition.
        let mut state = vec![0u8; n];
        fn visit(
            s: SymId,
            seqs: &[Vec<(SymId, SymId)>],
            state: &mut [u8],
            path: &mut Vec<SymId>,
        ) -> Option<Vec<SymId>> {
            state[s] = 1;
            path.push(s);
            for &(x, _) in &seqs[s] {
                if x == s || seqs[x].is_empty() {
                    continue;
                }
                if state[x] == 1 {
                    let from = path.iter().position(|&p| p == x).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(x);
                    return Some(cycle);
                }
                if state[x] == 0 {
                    if let Some(c) = visit(x, seqs, state, path) {
                        return Some(c);
                    }
                }
            }
            path.pop();
            state[s] = 2;
            None
        }
        for s in 0..n {
            if state[s] == 0 {
                if let Some(cycle) = visit(s, &seqs, &mut state, &mut Vec::new()) {
                    let names: Vec<&str> =
                        cycle.iter().map(|&c| g.rules[c].name.as_str()).collect();
                    return Err(CfgError::Unsupported {
                        space: g.name.clone(),
                        message: format!(
                            "the sequences of {} begin with each other ({}); a context-free export needs a symbol to begin only its own seq (write `{} = seq({}, ...)` instead)",
                            names[0],
                            names.join(" -> "),
                            names[0],
                            names[0]
                        ),
                    });
                }
            }
        }
        let mut b = Builder {
            g,
            depth,
            formy,
            seqs,
            rules: Vec::new(),
            keys: HashMap::new(),
            names: HashSet::new(),
        };
        b.reserve(Key::Root, "root".into());
        b.names.insert("start".into());
        Ok(b)
    }

    fn reserve(&mut self, key: Key, base: String) -> usize {
        let mut name = base.clone();
        let mut n = 2;
        while !self.names.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.rules.push((name, None));
        let id = self.rules.len() - 1;
        self.keys.insert(key, id);
        id
    }

    fn set(&mut self, key: Key, body: Expr) {
        let id = self.keys[&key];
        self.rules[id].1 = Some(body);
    }

    fn sym_name(&self, s: SymId) -> String {
        let mut out = String::new();
        for c in self.g.rules[s].name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let out = out.trim_matches('-').to_string();
        if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
            format!("r-{out}")
        } else {
            out
        }
    }

    /// The rule for `key`, built on first use.
    fn rule(&mut self, key: Key) -> usize {
        if let Some(&id) = self.keys.get(&key) {
            return id;
        }
        let base = match key {
            Key::Root => "root".to_string(),
            Key::Node(s, None) => self.sym_name(s),
            Key::Node(s, Some(d)) => format!("{}-{d}", self.sym_name(s)),
            Key::List(s, e) => format!("{}-list-{e}", self.sym_name(s)),
            Key::Head(s, e) => format!("{}-head-{e}", self.sym_name(s)),
            Key::Item(s, e) => format!("{}-item-{e}", self.sym_name(s)),
            Key::Split(s, k) | Key::Merge(s, k) => format!("{}-k{k}", self.sym_name(s)),
            Key::Plan => "plan-line".to_string(),
            Key::Entry => "candidate-line".to_string(),
            Key::Number => "predicted-number".to_string(),
        };
        let id = self.reserve(key, base);
        let body = match key {
            Key::Root => Expr::Alt(vec![]),
            Key::Node(s, d) => self.node(s, d),
            Key::List(s, e) => self.list(s, e),
            Key::Head(s, e) => self.head(s, e),
            Key::Item(s, e) => self.item(s, e),
            Key::Split(s, k) => Expr::Alt(
                self.ops_of(s)
                    .into_iter()
                    .filter(|op| split_k(op) == Some(k))
                    .map(|op| Expr::Lit(op.to_string()))
                    .collect(),
            ),
            Key::Merge(s, k) => Expr::Alt(
                self.ops_of(s)
                    .into_iter()
                    .filter(|op| merge_fits(op, k))
                    .map(|op| Expr::Lit(op.to_string()))
                    .collect(),
            ),
            Key::Plan => Expr::Alt(vec![]),
            Key::Entry => Expr::Alt(vec![]),
            Key::Number => Expr::Number,
        };
        self.rules[id].1 = Some(body);
        id
    }

    /// The rule of a node derived from `t` at depth `d`.
    fn node_ref(&mut self, t: SymId, d: Option<usize>) -> usize {
        if self.formy[t] {
            self.rule(Key::Node(t, d))
        } else {
            self.rule(Key::Node(t, None))
        }
    }

    fn node(&mut self, s: SymId, d: Option<usize>) -> Expr {
        let g = self.g;
        let mut alts = Vec::new();
        if let (Some(d), false) = (d, self.seqs[s].is_empty()) {
            // The sequences, then the other nodes shared with the items of flattened lists.
            if d < self.depth {
                for (x, y) in self.seqs[s].clone() {
                    alts.push(self.form(Form::Seq, &[x, y], d + 1));
                }
            }
            alts.push(Expr::Ref(self.rule(Key::Item(s, d))));
            return Expr::Alt(alts);
        }
        for a in &g.rules[s].alts {
            match &a.body {
                Body::Op(op) => alts.push(Expr::Lit(op.to_string())),
                Body::Ref(t) => alts.push(Expr::Ref(self.node_ref(*t, d))),
                Body::Form(f, slots) => {
                    if let Some(d) = d.filter(|&d| d < self.depth) {
                        alts.push(self.form(*f, slots, d + 1));
                    }
                }
            }
        }
        Expr::Alt(alts)
    }

    /// A symbol's alternatives other than sequences, for the items of a flattened sequence.
    fn item(&mut self, s: SymId, e: usize) -> Expr {
        let g = self.g;
        let mut alts = Vec::new();
        for a in &g.rules[s].alts {
            match &a.body {
                Body::Op(op) => alts.push(Expr::Lit(op.to_string())),
                Body::Ref(t) if self.seqs[*t].is_empty() => {
                    alts.push(Expr::Ref(self.node_ref(*t, Some(e))))
                }
                Body::Ref(t) => alts.push(Expr::Ref(self.rule(Key::Item(*t, e)))),
                Body::Form(Form::Seq, _) => {}
                Body::Form(f, slots) => {
                    if e < self.depth {
                        alts.push(self.form(*f, slots, e + 1));
                    }
                }
            }
        }
        Expr::Alt(alts)
    }

    /// The items of a sequence part derived from `x`: its node when it derives no sequence.
    fn list_ref(&mut self, x: SymId, e: usize) -> usize {
        if self.seqs[x].is_empty() {
            self.node_ref(x, Some(e))
        } else {
            self.rule(Key::List(x, e))
        }
    }

    /// The sequence alternatives of `s` that do not begin with `s` itself.
    fn head(&mut self, s: SymId, e: usize) -> Expr {
        let mut alts = vec![Expr::Ref(self.rule(Key::Item(s, e)))];
        for (x, y) in self.seqs[s].clone() {
            if x != s {
                let (lx, ly) = (self.list_ref(x, e), self.list_ref(y, e));
                alts.push(Expr::Seq(vec![Expr::Ref(lx), sep(), Expr::Ref(ly)]));
            }
        }
        Expr::Alt(alts)
    }

    fn head_ref(&mut self, s: SymId, e: usize) -> usize {
        if self.seqs[s].iter().all(|&(x, _)| x == s) {
            self.rule(Key::Item(s, e))
        } else {
            self.rule(Key::Head(s, e))
        }
    }

    /// `L(s) = head (", " tail)*`, where the tails are what follows `s` in `s = seq(s, y)`:
    /// the left recursion of flattened sequences written as a repetition.
    fn list(&mut self, s: SymId, e: usize) -> Expr {
        let tails: Vec<SymId> = self.seqs[s]
            .iter()
            .filter(|&&(x, _)| x == s)
            .map(|&(_, y)| y)
            .collect();
        if tails.is_empty() {
            return self.head(s, e);
        }
        let head = self.head_ref(s, e);
        let mut alts = Vec::new();
        for y in tails {
            // (", " L(s))* = (", " head)* because L(s) is itself head (", " tail)*.
            let r = if y == s { head } else { self.list_ref(y, e) };
            if !alts.contains(&Expr::Ref(r)) {
                alts.push(Expr::Ref(r));
            }
        }
        Expr::Seq(vec![
            Expr::Ref(head),
            Expr::Rep(Box::new(Expr::Seq(vec![sep(), alt_or_one(alts)])), 0, None),
        ])
    }

    /// A form's text with its parts at depth `e`.
    fn form(&mut self, f: Form, slots: &[SymId], e: usize) -> Expr {
        match f {
            Form::Seq => {
                let (x, y) = (slots[0], slots[1]);
                if x == y && self.seqs[x] == [(x, x)] {
                    // seq(m, m) with m = seq(m, m) | ...: two or more items of m.
                    let h = self.head_ref(x, e);
                    return Expr::Seq(vec![
                        Expr::Lit("seq(".into()),
                        Expr::Ref(h),
                        Expr::Rep(Box::new(Expr::Seq(vec![sep(), Expr::Ref(h)])), 1, None),
                        Expr::Lit(")".into()),
                    ]);
                }
                let (lx, ly) = (self.list_ref(x, e), self.list_ref(y, e));
                Expr::Seq(vec![
                    Expr::Lit("seq(".into()),
                    Expr::Ref(lx),
                    sep(),
                    Expr::Ref(ly),
                    Expr::Lit(")".into()),
                ])
            }
            Form::Branch => {
                let (b, m, a) = (slots[0], slots[1], slots[2]);
                let mut ks: Vec<u32> = self.ops_of(b).iter().filter_map(split_k).collect();
                ks.sort_unstable();
                ks.dedup();
                let module = self.node_ref(m, Some(e));
                let mut alts = Vec::new();
                for k in ks {
                    let split = self.rule(Key::Split(b, k));
                    let merge = self.rule(Key::Merge(a, k));
                    // One module (copied to every branch) or exactly k.
                    let mut modules = vec![Expr::Ref(module)];
                    if k > 1 {
                        // Spelt out rather than `(x{3})?`, which some GBNF readers misparse.
                        let mut rest = Vec::new();
                        for _ in 1..k {
                            rest.extend([sep(), Expr::Ref(module)]);
                        }
                        modules.push(Expr::Rep(Box::new(Expr::Seq(rest)), 0, Some(1)));
                    }
                    let mut seq = vec![Expr::Lit("branch(".into()), Expr::Ref(split), sep()];
                    seq.extend(modules);
                    seq.extend([sep(), Expr::Ref(merge), Expr::Lit(")".into())]);
                    alts.push(Expr::Seq(seq));
                }
                alt_or_one(alts)
            }
            f if f.commutative() && slots.len() == 2 && slots[0] != slots[1] => {
                // The canonical text sorts the parts: either order may come out.
                let one = self.call(f, slots, e);
                let other = self.call(f, &[slots[1], slots[0]], e);
                Expr::Alt(vec![one, other])
            }
            f => self.call(f, slots, e),
        }
    }

    fn call(&mut self, f: Form, slots: &[SymId], e: usize) -> Expr {
        let mut seq = vec![Expr::Lit(format!("{}(", f.name()))];
        for (i, &s) in slots.iter().enumerate() {
            if i > 0 {
                seq.push(sep());
            }
            let r = self.node_ref(s, Some(e));
            seq.push(Expr::Ref(r));
        }
        seq.push(Expr::Lit(")".into()));
        Expr::Seq(seq)
    }

    /// The operations a symbol derives through references.
    fn ops_of(&self, s: SymId) -> Vec<Op> {
        let mut out = Vec::new();
        let mut stack = vec![s];
        let mut seen = HashSet::new();
        while let Some(s) = stack.pop() {
            if !seen.insert(s) {
                continue;
            }
            for a in &self.g.rules[s].alts {
                match &a.body {
                    Body::Op(op) if !out.contains(op) => out.push(*op),
                    Body::Ref(t) => stack.push(*t),
                    _ => {}
                }
            }
        }
        out
    }

    fn reply(&mut self, r: &ReplyShape, cand: usize) -> Expr {
        let mut entry = vec![Expr::Lit("CANDIDATE: ".into()), Expr::Ref(cand)];
        if r.predicted {
            let number = self.rule(Key::Number);
            entry.push(Expr::Lit("\nPREDICTED: ".into()));
            entry.push(Expr::Ref(number));
        }
        let entry_id = self.rule(Key::Entry);
        self.set(Key::Entry, Expr::Seq(entry));
        let mut root = Vec::new();
        if r.plan {
            let plan = self.rule(Key::Plan);
            self.set(
                Key::Plan,
                Expr::Seq(vec![
                    Expr::Lit("PLAN: ".into()),
                    Expr::Line(r.plan_chars),
                    Expr::Lit("\n".into()),
                ]),
            );
            root.push(Expr::Ref(plan));
        }
        root.push(Expr::Ref(entry_id));
        if r.k > 1 {
            let more = Expr::Seq(vec![Expr::Lit("\n".into()), Expr::Ref(entry_id)]);
            root.push(if r.k == 2 {
                more
            } else {
                Expr::Rep(Box::new(more), r.k - 1, Some(r.k - 1))
            });
        }
        root.push(Expr::Rep(Box::new(Expr::Lit("\n".into())), 0, Some(1)));
        Expr::Seq(root)
    }

    /// Drops what derives nothing (forms past the depth bound leave some rules empty) and
    /// what the start rule no longer reaches; `None` when the start rule itself is empty.
    fn finish(self) -> Option<Cfg> {
        let bodies: Vec<Expr> = self
            .rules
            .iter()
            .map(|(_, b)| b.clone().unwrap_or(Expr::Alt(vec![])))
            .collect();
        let n = bodies.len();
        let mut prod = vec![false; n];
        loop {
            let mut changed = false;
            for i in 0..n {
                if !prod[i] && productive(&bodies[i], &prod) {
                    prod[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if !prod[0] {
            return None;
        }
        let bodies: Vec<Option<Expr>> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| if prod[i] { prune(b, &prod) } else { None })
            .collect();
        let bodies = merge_equal(bodies);
        // Keep rules in the order the start rule reaches them (breadth first).
        let mut order = vec![0usize];
        let mut index = vec![usize::MAX; n];
        index[0] = 0;
        let mut at = 0;
        while at < order.len() {
            let mut refs = Vec::new();
            if let Some(b) = &bodies[order[at]] {
                collect_refs(b, &mut refs);
            }
            for r in refs {
                if index[r] == usize::MAX {
                    index[r] = order.len();
                    order.push(r);
                }
            }
            at += 1;
        }
        let rules = order
            .iter()
            .map(|&i| {
                let body = bodies[i].clone().unwrap_or(Expr::Alt(vec![]));
                (self.rules[i].0.clone(), renumber(body, &index))
            })
            .collect();
        Some(Cfg {
            rules,
            space: String::new(),
            depth: 0,
        })
    }
}

fn sep() -> Expr {
    Expr::Lit(", ".into())
}

fn alt_or_one(mut alts: Vec<Expr>) -> Expr {
    if alts.len() == 1 {
        alts.pop().unwrap_or(Expr::Alt(vec![]))
    } else {
        Expr::Alt(alts)
    }
}

/// How many branches a branching operation makes.
fn split_k(op: &Op) -> Option<u32> {
    match *op {
        Op::Clone(k) | Op::Group { k, .. } => Some(k),
        _ => None,
    }
}

/// Whether an aggregation takes k branches: the dot products take two, `cat(dim, k)` its k.
fn merge_fits(op: &Op, k: u32) -> bool {
    match *op {
        Op::DotProduct | Op::ScaledDotProduct => k == 2,
        Op::Cat { k: c, .. } => c == k,
        _ => op.kind() == Kind::Merge,
    }
}

fn productive(e: &Expr, prod: &[bool]) -> bool {
    match e {
        Expr::Lit(_) | Expr::Line(_) | Expr::Number => true,
        Expr::Ref(r) => prod[*r],
        Expr::Seq(v) => v.iter().all(|x| productive(x, prod)),
        Expr::Alt(v) => v.iter().any(|x| productive(x, prod)),
        Expr::Rep(x, min, _) => *min == 0 || productive(x, prod),
    }
}

/// The expression without its empty parts, or `None` if nothing is left.
fn prune(e: Expr, prod: &[bool]) -> Option<Expr> {
    if !productive(&e, prod) {
        return None;
    }
    Some(match e {
        Expr::Seq(v) => {
            let v: Vec<Expr> = v.into_iter().filter_map(|x| prune(x, prod)).collect();
            if v.len() == 1 {
                v.into_iter().next()?
            } else {
                Expr::Seq(v)
            }
        }
        Expr::Alt(v) => {
            let mut out: Vec<Expr> = Vec::new();
            for x in v.into_iter().filter_map(|x| prune(x, prod)) {
                // Alternatives of alternatives are alternatives.
                let parts = match x {
                    Expr::Alt(inner) => inner,
                    x => vec![x],
                };
                for x in parts {
                    if !out.contains(&x) {
                        out.push(x);
                    }
                }
            }
            alt_or_one(out)
        }
        // An optional part that derives nothing is left out altogether.
        Expr::Rep(x, min, max) => Expr::Rep(Box::new(prune(*x, prod)?), min, max),
        other => other,
    })
}

/// Merges rules that say the same thing: a rule that is only a reference to another is
/// replaced by that one, and rules with equal bodies by the first of them (the same rule at
/// several depths once nothing inside it depends on depth). The start rule stays.
fn merge_equal(mut bodies: Vec<Option<Expr>>) -> Vec<Option<Expr>> {
    let n = bodies.len();
    loop {
        let mut map: Vec<usize> = (0..n).collect();
        for i in 1..n {
            if let Some(Expr::Ref(t)) = &bodies[i] {
                map[i] = *t;
            }
        }
        // Follow alias chains; a cycle of aliases derives nothing and was pruned already,
        // but the walk is bounded anyway.
        for i in 0..n {
            let mut t = map[i];
            for _ in 0..n {
                if map[t] == t {
                    break;
                }
                t = map[t];
            }
            map[i] = t;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..n {
            if map[i] != i {
                continue;
            }
            if let Some(b) = &bodies[i] {
                let key = format!("{:?}", renumber(b.clone(), &map));
                match seen.get(&key) {
                    Some(&j) if i != 0 => map[i] = j,
                    Some(_) => {}
                    None => {
                        seen.insert(key, i);
                    }
                }
            }
        }
        if map.iter().enumerate().all(|(i, &m)| i == m) {
            return bodies;
        }
        bodies = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                if map[i] != i {
                    None
                } else {
                    b.map(|b| renumber(b, &map))
                }
            })
            .collect();
    }
}

fn collect_refs(e: &Expr, out: &mut Vec<usize>) {
    match e {
        Expr::Ref(r) => out.push(*r),
        Expr::Seq(v) | Expr::Alt(v) => v.iter().for_each(|x| collect_refs(x, out)),
        Expr::Rep(x, ..) => collect_refs(x, out),
        _ => {}
    }
}

fn renumber(e: Expr, index: &[usize]) -> Expr {
    match e {
        Expr::Ref(r) => Expr::Ref(index[r]),
        Expr::Seq(v) => Expr::Seq(v.into_iter().map(|x| renumber(x, index)).collect()),
        Expr::Alt(v) => Expr::Alt(v.into_iter().map(|x| renumber(x, index)).collect()),
        Expr::Rep(x, a, b) => Expr::Rep(Box::new(renumber(*x, index)), a, b),
        other => other,
    }
}
