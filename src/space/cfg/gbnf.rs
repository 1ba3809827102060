//! A reader and recogniser for GBNF, llama.cpp's grammar format, to check exported grammars
//! where llama.cpp is not installed.
//!
//! It follows the syntax of llama.cpp's grammar parser (`grammars/README.md`): rules
//! `name ::= body`, names of letters, digits, `-` and `_`, double-quoted literals and `[...]`
//! classes with `\n`, `\t`, `\r`, `\\`, `\"`, `\]`, `\xXX` escapes, `.`, grouping, `|`, `*`,
//! `+`, `?`, `{m}`, `{m,}`, `{m,n}`, `#` comments, newlines inside parentheses or after `|`.
//! As llama.cpp does, it refuses undefined rules, a missing `root` and left recursion.
//! Recognition works on characters, memoising the end positions of each rule at each start
//! position, so ambiguous grammars stay polynomial.

use std::collections::HashMap;
use std::rc::Rc;

/// A problem in GBNF text or in recognising with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GbnfError {
    #[error("GBNF line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("GBNF rule `{rule}` refers to undefined rule `{name}`")]
    Undefined { rule: String, name: String },
    #[error("GBNF grammar has no `root` rule")]
    NoRoot,
    #[error("GBNF rule `{0}` is left-recursive (llama.cpp refuses such grammars)")]
    LeftRecursion(String),
}

#[derive(Clone, Debug)]
enum G {
    Lit(Vec<char>),
    /// Ranges, negated or not.
    Class(bool, Vec<(char, char)>),
    Any,
    Ref(usize),
    Seq(Vec<G>),
    Alt(Vec<G>),
    Rep(Box<G>, usize, Option<usize>),
}

/// A parsed GBNF grammar.
#[derive(Clone, Debug)]
pub struct Gbnf {
    names: Vec<String>,
    bodies: Vec<G>,
    root: usize,
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
    names: HashMap<String, usize>,
    order: Vec<String>,
    /// The rule being read, and for each name the first rule that used it.
    current: String,
    referrers: HashMap<usize, String>,
}

impl Parser<'_> {
    fn line(&self) -> usize {
        1 + self.s[..self.pos.min(self.s.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count()
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, GbnfError> {
        Err(GbnfError::Syntax {
            line: self.line(),
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    /// Skips spaces, tabs, comments and, when `newlines`, line ends.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r')) {
                self.pos += 1;
            } else if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.s[start..self.pos].iter().collect())
    }

    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        self.order.push(name.to_string());
        let id = self.order.len() - 1;
        self.names.insert(name.to_string(), id);
        self.referrers.insert(id, self.current.clone());
        id
    }

    fn escaped(&mut self) -> Result<char, GbnfError> {
        let Some(c) = self.peek() else {
            return self.err("unfinished escape");
        };
        self.pos += 1;
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' | '"' | '[' | ']' | '-' | '^' => c,
            'x' | 'u' | 'U' => {
                let n = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = self.s[self.pos..(self.pos + n).min(self.s.len())]
                    .iter()
                    .collect();
                self.pos += n;
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(c) => c,
                    None => return self.err(format!("bad escape \\{c}{hex}")),
                }
            }
            other => return self.err(format!("unknown escape \\{other}")),
        })
    }

    fn alternates(&mut self, nested: bool) -> Result<G, GbnfError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(G::Seq(vec![]))
        } else {
            G::Alt(alts)
        })
    }

    fn sequence(&mut self, nested: bool) -> Result<G, GbnfError> {
        let mut items: Vec<G> = Vec::new();
        loop {
            self.space(nested);
            let Some(c) = self.peek() else { break };
            let item = match c {
                '"' => {
                    self.pos += 1;
                    let mut lit = Vec::new();
                    loop {
                        match self.peek() {
                            None | Some('\n') => return self.err("unterminated literal"),
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('\\') => {
                                self.pos += 1;
                                lit.push(self.escaped()?);
                            }
                            Some(c) => {
                                self.pos += 1;
                                lit.push(c);
                            }
                        }
                    }
                    G::Lit(lit)
                }
                '[' => {
                    self.pos += 1;
                    let neg = self.peek() == Some('^');
                    if neg {
                        self.pos += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        let lo = match self.peek() {
                            None => return self.err("unterminated character class"),
                            Some(']') => {
                                self.pos += 1;
                                break;
                            }
                            Some('\\') => {
                                self.pos += 1;
                                self.escaped()?
                            }
                            Some(c) => {
                                self.pos += 1;
                                c
                            }
                        };
                        let mut hi = lo;
                        if self.peek() == Some('-') && self.s.get(self.pos + 1) != Some(&']') {
                            self.pos += 1;
                            hi = match self.peek() {
                                Some('\\') => {
                                    self.pos += 1;
                                    self.escaped()?
                                }
                                Some(c) => {
                                    self.pos += 1;
                                    c
                                }
                                None => return self.err("unterminated character class"),
                            };
                        }
                        ranges.push((lo, hi));
                    }
                    G::Class(neg, ranges)
                }
                '.' => {
                    self.pos += 1;
                    G::Any
                }
                '(' => {
                    self.pos += 1;
                    self.space(true);
                    let inner = self.alternates(true)?;
                    self.space(true);
                    if self.peek() != Some(')') {
                        return self.err("expected `)`");
                    }
                    self.pos += 1;
                    inner
                }
                c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                    let save = self.pos;
                    let name = self.name().unwrap_or_default();
                    // The next rule's `name ::=` ends this one.
                    let mut look = self.pos;
                    while self.s.get(look).is_some_and(|c| *c == ' ' || *c == '\t') {
                        look += 1;
                    }
                    if self.s[look..].starts_with(&[':', ':', '=']) {
                        self.pos = save;
                        break;
                    }
                    G::Ref(self.id(&name))
                }
                '*' | '+' | '?' | '{' => {
                    let Some(last) = items.pop() else {
                        return self.err(format!("`{c}` with nothing before it"));
                    };
                    self.pos += 1;
                    let (min, max) = match c {
                        '*' => (0, None),
                        '+' => (1, None),
                        '?' => (0, Some(1)),
                        _ => self.braces()?,
                    };
                    G::Rep(Box::new(last), min, max)
                }
                _ => break,
            };
            items.push(item);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(G::Seq(vec![]))
        } else {
            G::Seq(items)
        })
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.s[start..self.pos]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }

    fn braces(&mut self) -> Result<(usize, Option<usize>), GbnfError> {
        self.space(false);
        let Some(min) = self.number() else {
            return self.err("expected a number after `{`");
        };
        self.space(false);
        let max = match self.peek() {
            Some('}') => Some(min),
            Some(',') => {
                self.pos += 1;
                self.space(false);
                let m = self.number();
                if m.is_some_and(|m| m < min) {
                    return self.err(format!("repetition {{{min},..}} with a smaller maximum"));
                }
                m
            }
            _ => return self.err("expected `,` or `}` in a repetition"),
        };
        self.space(false);
        if self.peek() != Some('}') {
            return self.err("expected `}`");
        }
        self.pos += 1;
        Ok((min, max))
    }
}

impl Gbnf {
    /// Parses GBNF text.
    pub fn parse(text: &str) -> Result<Gbnf, GbnfError> {
        let chars: Vec<char> = text.chars().collect();
        let mut p = Parser {
            s: &chars,
            pos: 0,
            names: HashMap::new(),
            order: Vec::new(),
            current: String::new(),
            referrers: HashMap::new(),
        };
        let mut bodies: HashMap<usize, G> = HashMap::new();
        loop {
            p.space(true);
            if p.peek().is_none() {
                break;
            }
            let Some(name) = p.name() else {
                return p.err(format!(
                    "expected a rule name, found `{}`",
                    p.peek().unwrap_or(' ')
                ));
            };
            p.space(false);
            if !p.s[p.pos..].starts_with(&[':', ':', '=']) {
                return p.err(format!("expected `::=` after `{name}`"));
            }
            p.pos += 3;
            let id = p.id(&name);
            p.current = name.clone();
            let body = p.alternates(false)?;
            p.space(false);
            match p.peek() {
                None | Some('\n') | Some('\r') => {}
                Some(c) => return p.err(format!("unexpected `{c}` in rule `{name}`")),
            }
            if bodies.insert(id, body).is_some() {
                return p.err(format!("rule `{name}` is defined twice"));
            }
        }
        let names = p.order;
        let root = *p.names.get("root").ok_or(GbnfError::NoRoot)?;
        let mut out = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            match bodies.remove(&i) {
                Some(b) => out.push(b),
                None => {
                    // Name the first rule that refers to it.
                    return Err(GbnfError::Undefined {
                        rule: p.referrers.get(&i).cloned().unwrap_or_default(),
                        name: name.clone(),
                    });
                }
            }
        }
        let g = Gbnf {
            names,
            bodies: out,
            root,
        };
        g.check_left_recursion()?;
        Ok(g)
    }

    /// Number of rules.
    pub fn rules(&self) -> usize {
        self.bodies.len()
    }

    fn nullable(&self) -> Vec<bool> {
        fn null(g: &G, n: &[bool]) -> bool {
            match g {
                G::Lit(l) => l.is_empty(),
                G::Class(..) | G::Any => false,
                G::Ref(r) => n[*r],
                G::Seq(v) => v.iter().all(|x| null(x, n)),
                G::Alt(v) => v.iter().any(|x| null(x, n)),
                G::Rep(x, min, _) => *min == 0 || null(x, n),
            }
        }
        let mut n = vec![false; self.bodies.len()];
        loop {
            let mut changed = false;
            for i in 0..n.len() {
                if !n[i] && null(&self.bodies[i], &n) {
                    n[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return n;
            }
        }
    }

    fn check_left_recursion(&self) -> Result<(), GbnfError> {
        let nullable = self.nullable();
        // The rules each rule may begin with.
        fn firsts(g: &G, nullable: &[bool], out: &mut Vec<usize>) -> bool {
            // Returns whether g may derive the empty string.
            match g {
                G::Lit(l) => l.is_empty(),
                G::Class(..) | G::Any => false,
                G::Ref(r) => {
                    out.push(*r);
                    nullable[*r]
                }
                G::Seq(v) => {
                    for x in v {
                        if !firsts(x, nullable, out) {
                            return false;
                        }
                    }
                    true
                }
                G::Alt(v) => {
                    let mut any = false;
                    for x in v {
                        any |= firsts(x, nullable, out);
                    }
                    any
                }
                G::Rep(x, min, _) => firsts(x, nullable, out) || *min == 0,
            }
        }
        let edges: Vec<Vec<usize>> = self
            .bodies
            .iter()
            .map(|b| {
                let mut v = Vec::new();
                firsts(b, &nullable, &mut v);
                v
            })
            .collect();
        let mut state = vec![0u8; edges.len()];
        fn visit(i: usize, edges: &[Vec<usize>], state: &mut [u8]) -> Option<usize> {
            state[i] = 1;
            for &j in &edges[i] {
                if state[j] == 1 {
                    return Some(j);
                }
                if state[j] == 0 {
                    if let Some(r) = visit(j, edges, state) {
                        return Some(r);
                    }
                }
            }
            state[i] = 2;
            None
        }
        for i in 0..edges.len() {
            if state[i] == 0 {
                if let Some(r) = visit(i, &edges, &mut state) {
                    return Err(GbnfError::LeftRecursion(self.names[r].clone()));
                }
            }
        }
        Ok(())
    }

    /// Whether the whole of `text` derives from `root`.
    pub fn accepts(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut r = Recogniser {
            g: self,
            s: &chars,
            memo: HashMap::new(),
        };
        r.rule(self.root, 0).contains(&chars.len())
    }
}

struct Recogniser<'a> {
    g: &'a Gbnf,
    s: &'a [char],
    memo: HashMap<(usize, usize), Rc<Vec<usize>>>,
}

impl Recogniser<'_> {
    /// The end positions of the rule's derivations starting at `pos`, sorted.
    fn rule(&mut self, r: usize, pos: usize) -> Rc<Vec<usize>> {
        if let Some(v) = self.memo.get(&(r, pos)) {
            return v.clone();
        }
        // Left recursion was refused when parsing, so this cannot loop.
        let g = self.g;
        let mut v = self.ends(&g.bodies[r], pos);
        v.sort_unstable();
        v.dedup();
        let v = Rc::new(v);
        self.memo.insert((r, pos), v.clone());
        v
    }

    fn ends(&mut self, g: &G, pos: usize) -> Vec<usize> {
        match g {
            G::Lit(l) => {
                if self.s.len() >= pos + l.len() && self.s[pos..pos + l.len()] == l[..] {
                    vec![pos + l.len()]
                } else {
                    vec![]
                }
            }
            G::Class(neg, ranges) => match self.s.get(pos) {
                Some(&c) if ranges.iter().any(|&(a, b)| a <= c && c <= b) != *neg => {
                    vec![pos + 1]
                }
                _ => vec![],
            },
            G::Any => {
                if pos < self.s.len() {
                    vec![pos + 1]
                } else {
                    vec![]
                }
            }
            G::Ref(r) => self.rule(*r, pos).to_vec(),
            G::Seq(items) => {
                let mut at = vec![pos];
                for x in items {
                    let mut next = Vec::new();
                    for p in at {
                        next.extend(self.ends(x, p));
                    }
                    next.sort_unstable();
                    next.dedup();
                    if next.is_empty() {
                        return next;
                    }
                    at = next;
                }
                at
            }
            G::Alt(alts) => {
                let mut out = Vec::new();
                for x in alts {
                    out.extend(self.ends(x, pos));
                }
                out.sort_unstable();
                out.dedup();
                out
            }
            G::Rep(x, min, max) => {
                let mut out = Vec::new();
                let mut frontier = vec![pos];
                let mut seen = std::collections::HashSet::new();
                let mut n = 0;
                loop {
                    if n >= *min {
                        out.extend(frontier.iter().copied());
                    }
                    if max.is_some_and(|m| n >= m) || frontier.is_empty() {
                        break;
                    }
                    let mut next = Vec::new();
                    for p in &frontier {
                        for e in self.ends(x, *p) {
                            // Past the minimum, an empty step or a repeated position adds
                            // nothing new.
                            if n + 1 > *min && (e == *p || !seen.insert(e)) {
                                continue;
                            }
                            next.push(e);
                        }
                    }
                    next.sort_unstable();
                    next.dedup();
                    frontier = next;
                    n += 1;
                }
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_small_grammar() {
        let g = Gbnf::parse(
            "# lists\nroot ::= \"[\" item (\", \" item)* \"]\"\nitem ::= [a-c]+ |\n  \"x\" [0-9]{1,2}\n",
        )
        .unwrap();
        assert!(g.accepts("[a, bc, x12]"));
        assert!(!g.accepts("[a, x123]"));
        assert!(!g.accepts("[a,b]"));
        assert!(!g.accepts("[]"));
    }

    #[test]
    fn refuses_bad_grammars() {
        assert!(matches!(
            Gbnf::parse("root ::= a \"x\"\na ::= root | \"y\"\n"),
            Err(GbnfError::LeftRecursion(_))
        ));
        assert!(matches!(
            Gbnf::parse("root ::= missing\n"),
            Err(GbnfError::Undefined { .. })
        ));
        assert!(matches!(
            Gbnf::parse("a ::= \"x\"\n"),
            Err(GbnfError::NoRoot)
        ));
        assert!(matches!(
            Gbnf::parse("root ::= \"x\nroot2 ::= \"y\"\n"),
            Err(GbnfError::Syntax { line: 1, .. })
        ));
        assert!(Gbnf::parse("root ::= \"a\"\n| \"b\"\n").is_err());
    }
}
