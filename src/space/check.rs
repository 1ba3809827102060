//! Validation of a candidate against a space for an input shape, in stages: grammar
//! membership of every node, then symbolic shape and mode inference (no tensors), then
//! resource limits. A failure names the node (its path and text), the rule and the shapes, in
//! words fit to paste into a repair prompt; independent failures are all reported.

use super::grammar::{Body, Grammar, SymId};
use super::lex::Span;
use super::node::{abbreviate, Form, Node};
use super::ops::{mul, Ctx, Kind, Op, RuleError};
use super::shape::{Head, Mode, Shape};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Resource limits a valid candidate must stay within. Per example, float32.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Learnable parameters, including the head when the number of classes is known.
    pub max_params: u64,
    /// Forward FLOPs for one example.
    pub max_flops: u64,
    /// Bytes of activations kept for one example (the sum of every node's output).
    pub max_activation_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_params: 50_000_000,
            max_flops: 10_000_000_000,
            max_activation_bytes: 256 << 20,
        }
    }
}

/// Which stage of validation a diagnostic comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Syntax,
    Grammar,
    Shape,
    /// Programs: value types (scalar against tensor), declared state, bound symbols.
    Type,
    Limits,
}

/// One reason a candidate is invalid.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub stage: Stage,
    /// Where the node is, e.g. `seq.1.route.2`.
    pub path: String,
    /// The node's text (shortened when long).
    pub node: String,
    pub message: String,
    /// The rule that was broken, in words.
    pub rule: Option<String>,
    /// The input shape the node received, when known.
    pub input: Option<String>,
    #[serde(skip)]
    pub span: Option<Span>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.node, self.path, self.message)?;
        match (&self.rule, &self.input) {
            (Some(r), Some(i)) => write!(f, " (rule: {r}; input {i})"),
            (Some(r), None) => write!(f, " (rule: {r})"),
            (None, Some(i)) => write!(f, " (input {i})"),
            (None, None) => Ok(()),
        }
    }
}

/// What validation learned about one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub path: Vec<usize>,
    /// The nonterminal the node was derived from (its slot's symbol).
    pub symbol: Option<SymId>,
    pub input: Shape,
    pub output: Shape,
    pub ctx: Ctx,
    pub depth: usize,
    /// In programs: the value's type (expressions only).
    pub ty: Option<super::program::Ty>,
}

/// The result of validating a candidate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Analysis {
    pub input: Shape,
    pub output: Shape,
    /// Learnable parameters of the backbone (without the head).
    pub params: u64,
    /// Parameters of the head (mean over positions, linear to the classes), when classes are
    /// known.
    pub head_params: Option<u64>,
    pub flops: u64,
    pub activation_bytes: u64,
    pub depth: usize,
    pub nodes: usize,
    /// Per-node facts in pre-order; filled only when asked for (mutation, crossover, features).
    #[serde(skip)]
    pub infos: Vec<NodeInfo>,
}

impl Analysis {
    /// Parameters of the whole network, head included when known.
    pub fn total_params(&self) -> u64 {
        self.params.saturating_add(self.head_params.unwrap_or(0))
    }
}

/// Parameters of the head for a backbone output: a mean, then a linear layer of
/// [`Shape::head_width`] inputs.
pub fn head_params(output: Shape, classes: u64, head: Head) -> u64 {
    mul(&[output.head_width(head), classes]).saturating_add(classes)
}

/// Options for one validation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    pub limits: Limits,
    /// Classes of the task, to count the head.
    pub classes: Option<u64>,
    /// Record per-node facts.
    pub infos: bool,
    /// How the head reads a sequence, for its parameters.
    pub head: Head,
}

/// Validates `node` derived from the grammar's root for `input`.
pub fn check(
    g: &Grammar,
    node: &Node,
    spans: Option<&[Span]>,
    input: Shape,
    opts: &CheckOptions,
) -> Result<Analysis, Vec<Diagnostic>> {
    check_from(g, g.root, node, spans, input, opts)
}

/// Validates `node` as derived from `sym` (used for subtrees).
pub fn check_from(
    g: &Grammar,
    sym: SymId,
    node: &Node,
    spans: Option<&[Span]>,
    input: Shape,
    opts: &CheckOptions,
) -> Result<Analysis, Vec<Diagnostic>> {
    // Stage 1: grammar membership.
    let mut m = Member {
        g,
        failed: HashSet::new(),
        trail: Vec::new(),
    };
    if !m.derives(sym, node, 0) {
        let mut diags = Vec::new();
        let mut ex = Explain {
            g,
            root: node,
            spans,
            diags: &mut diags,
            m: Member {
                g,
                failed: HashSet::new(),
                trail: Vec::new(),
            },
            counter: 0,
        };
        ex.explain(sym, node, &mut Vec::new(), 0);
        if diags.is_empty() {
            diags.push(Diagnostic {
                stage: Stage::Grammar,
                path: "root".into(),
                node: abbreviate(&node.to_string(), 80),
                message: format!("is not a `{}` of space {}", g.rules[sym].name, g.name),
                rule: None,
                input: None,
                span: spans.and_then(|s| s.first().copied()),
            });
        }
        return Err(diags);
    }
    let symbols: HashMap<usize, SymId> = if opts.infos {
        m.trail.iter().map(|&(p, s)| (p, s)).collect()
    } else {
        HashMap::new()
    };
    if g.kind.is_program() {
        return super::program::check(g.kind, node, spans, input, opts, &symbols);
    }

    // Stage 2: shapes.
    let mut inf = Infer {
        root: node,
        spans,
        diags: Vec::new(),
        params: 0,
        flops: 0,
        acts: 0,
        infos: opts.infos.then(Vec::new),
        symbols: &symbols,
        preorder: 0,
    };
    let out = inf.node(node, &mut Vec::new(), input, Ctx::default(), 0);
    let (Some(output), true) = (out, inf.diags.is_empty()) else {
        return Err(inf.diags);
    };
    let head = opts.classes.map(|c| head_params(output, c, opts.head));
    let analysis = Analysis {
        input,
        output,
        params: inf.params,
        head_params: head,
        flops: inf.flops,
        activation_bytes: inf.acts.saturating_mul(4),
        depth: node.depth(),
        nodes: node.size(),
        infos: inf.infos.unwrap_or_default(),
    };

    // Stage 3: limits.
    let l = &opts.limits;
    let mut diags = Vec::new();
    let mut over = |what: &str, value: u64, max: u64, unit: &str| {
        if value > max {
            diags.push(Diagnostic {
                stage: Stage::Limits,
                path: "root".into(),
                node: abbreviate(&node.to_string(), 80),
                message: format!("{what} {value}{unit} exceeds the limit of {max}{unit}"),
                rule: Some(format!("max_{}", what.replace(' ', "_"))),
                input: Some(input.to_string()),
                span: spans.and_then(|s| s.first().copied()),
            });
        }
    };
    over("params", analysis.total_params(), l.max_params, "");
    over("flops", analysis.flops, l.max_flops, "");
    over(
        "activation bytes",
        analysis.activation_bytes,
        l.max_activation_bytes,
        "",
    );
    if diags.is_empty() {
        Ok(analysis)
    } else {
        Err(diags)
    }
}

/// Grammar membership by search over the alternatives, with a memo of failures (sequences are
/// n-ary in candidates but binary in grammars, so a sequence may be bracketed several ways).
struct Member<'g> {
    g: &'g Grammar,
    failed: HashSet<(SymId, usize, usize, usize, usize)>,
    /// (node address, symbol) for every node of the successful derivation.
    trail: Vec<(usize, SymId)>,
}

impl Member<'_> {
    fn derives(&mut self, sym: SymId, node: &Node, depth: usize) -> bool {
        let key = (sym, node as *const Node as usize, usize::MAX, 0, depth);
        if self.failed.contains(&key) {
            return false;
        }
        let g = self.g;
        for alt in &g.rules[sym].alts {
            let mark = self.trail.len();
            let ok = match (&alt.body, node) {
                (Body::Op(o), Node::Op(n)) => o == n,
                (Body::Ref(t), _) => self.derives(*t, node, depth),
                (Body::Form(f, slots), Node::Form(nf, ch)) if f == nf => {
                    depth < g.max_depth && self.form(*f, slots, ch, depth + 1)
                }
                _ => false,
            };
            if ok {
                self.trail.push((node as *const Node as usize, sym));
                return true;
            }
            self.trail.truncate(mark);
        }
        self.failed.insert(key);
        false
    }

    fn form(&mut self, f: Form, slots: &[SymId], ch: &[Node], depth: usize) -> bool {
        match f {
            Form::Seq => self.seq(slots[0], slots[1], ch, 0, ch.len(), depth),
            Form::Branch => {
                let n = ch.len();
                n >= 3
                    && self.derives(slots[0], &ch[0], depth)
                    && ch[1..n - 1]
                        .iter()
                        .all(|c| self.derives(slots[1], c, depth))
                    && self.derives(slots[2], &ch[n - 1], depth)
            }
            // Parts kept sorted may match the production in either order.
            f if f.commutative() && ch.len() == 2 && slots.len() == 2 => {
                let mark = self.trail.len();
                if self.derives(slots[0], &ch[0], depth) && self.derives(slots[1], &ch[1], depth) {
                    return true;
                }
                self.trail.truncate(mark);
                self.derives(slots[0], &ch[1], depth) && self.derives(slots[1], &ch[0], depth)
            }
            _ => {
                ch.len() == slots.len()
                    && slots
                        .iter()
                        .zip(ch)
                        .all(|(&s, c)| self.derives(s, c, depth))
            }
        }
    }

    /// Whether `ch[i..j]` (two or more nodes) can be split into a part derived from `x` and a
    /// part derived from `y`.
    fn seq(&mut self, x: SymId, y: SymId, ch: &[Node], i: usize, j: usize, depth: usize) -> bool {
        for k in i + 1..j {
            let mark = self.trail.len();
            if self.part(x, ch, i, k, depth) && self.part(y, ch, k, j, depth) {
                return true;
            }
            self.trail.truncate(mark);
        }
        false
    }

    fn part(&mut self, sym: SymId, ch: &[Node], i: usize, j: usize, depth: usize) -> bool {
        if j - i == 1 {
            return self.derives(sym, &ch[i], depth);
        }
        // A run of several children stands for a nested seq that the flattening removed.
        let key = (sym, ch.as_ptr() as usize, i, j, depth);
        if self.failed.contains(&key) {
            return false;
        }
        let g = self.g;
        for alt in &g.rules[sym].alts {
            let mark = self.trail.len();
            let ok = match &alt.body {
                Body::Ref(t) => self.part(*t, ch, i, j, depth),
                Body::Form(Form::Seq, slots) => self.seq(slots[0], slots[1], ch, i, j, depth),
                _ => false,
            };
            if ok {
                return true;
            }
            self.trail.truncate(mark);
        }
        self.failed.insert(key);
        false
    }
}

/// Finds which nodes break membership, top-down, to name them in messages.
struct Explain<'a, 'g> {
    g: &'g Grammar,
    root: &'a Node,
    spans: Option<&'a [Span]>,
    diags: &'a mut Vec<Diagnostic>,
    m: Member<'g>,
    counter: usize,
}

impl Explain<'_, '_> {
    fn explain(&mut self, sym: SymId, node: &Node, path: &mut Vec<usize>, depth: usize) {
        let pre = self.counter;
        self.counter += node.size();
        if self.m.derives(sym, node, depth) {
            return;
        }
        let g = self.g;
        let span = self.spans.and_then(|s| s.get(pre).copied());
        let path_s = self.root.path_string(path);
        let node_s = abbreviate(&node.to_string(), 60);
        let diag = |message: String, rule: Option<String>| Diagnostic {
            stage: Stage::Grammar,
            path: path_s.clone(),
            node: node_s.clone(),
            message,
            rule,
            input: None,
            span,
        };
        let allowed = format!("`{}` allows {}", g.rules[sym].name, g.allowed(sym));
        let Node::Form(f, ch) = node else {
            let d = diag(format!("is not allowed here; {allowed}"), None);
            self.diags.push(d);
            return;
        };
        if depth >= g.max_depth {
            let d = diag(
                format!(
                    "nests deeper than the space's max_depth {}; only operations are allowed here",
                    g.max_depth
                ),
                None,
            );
            self.diags.push(d);
            return;
        }
        // The first production of this form reachable from `sym`.
        let mut slots = None;
        let mut seen = HashSet::new();
        let mut stack = vec![sym];
        while let Some(s) = stack.pop() {
            if !seen.insert(s) {
                continue;
            }
            for a in &g.rules[s].alts {
                match &a.body {
                    // A variadic form is explained by a production with as many parts.
                    Body::Form(af, sl)
                        if af == f
                            && (slots.is_none()
                                || (f.spec().variadic
                                    && sl.len() == ch.len()
                                    && slots
                                        .as_ref()
                                        .is_some_and(|x: &Vec<SymId>| x.len() != ch.len()))) =>
                    {
                        slots = Some(sl.clone())
                    }
                    Body::Ref(t) => stack.push(*t),
                    _ => {}
                }
            }
        }
        let Some(slots) = slots else {
            let d = diag(
                format!("`{}` is not allowed here; {allowed}", f.name()),
                None,
            );
            self.diags.push(d);
            return;
        };
        let before = self.diags.len();
        let n = ch.len();
        self.counter = pre + 1;
        for (i, c) in ch.iter().enumerate() {
            let s = match f {
                Form::Seq => {
                    if i == 0 {
                        slots[0]
                    } else {
                        slots[1]
                    }
                }
                Form::Branch => {
                    if i == 0 {
                        slots[0]
                    } else if i + 1 == n {
                        slots[2]
                    } else {
                        slots[1]
                    }
                }
                _ => match slots.get(i) {
                    Some(&s) => s,
                    None => {
                        self.counter += c.size();
                        continue;
                    }
                },
            };
            path.push(i);
            self.explain(s, c, path, depth + 1);
            path.pop();
        }
        self.counter = pre + node.size();
        if self.diags.len() == before {
            let d = diag(
                format!(
                    "`{}` with these {} parts is not a production of `{}`",
                    f.name(),
                    n,
                    g.rules[sym].name
                ),
                Some(f.spec().rule.to_string()),
            );
            self.diags.push(d);
        }
    }
}

/// Symbolic shape inference with parameter, FLOP and activation counting.
struct Infer<'a> {
    root: &'a Node,
    spans: Option<&'a [Span]>,
    diags: Vec<Diagnostic>,
    params: u64,
    flops: u64,
    /// Activation elements per example.
    acts: u64,
    infos: Option<Vec<NodeInfo>>,
    symbols: &'a HashMap<usize, SymId>,
    /// Pre-order index of the node being visited (for spans).
    preorder: usize,
}

impl Infer<'_> {
    fn fail(&mut self, node: &Node, path: &[usize], pre: usize, x: Shape, e: RuleError) {
        self.diags.push(Diagnostic {
            stage: Stage::Shape,
            path: self.root.path_string(path),
            node: abbreviate(&node.to_string(), 60),
            message: e.message,
            rule: Some(e.rule.to_string()),
            input: Some(format!("{x} ({})", x.mode().name())),
            span: self.spans.and_then(|s| s.get(pre).copied()),
        });
    }

    fn record(&mut self, node: &Node, path: &[usize], x: Shape, y: Shape, ctx: Ctx, depth: usize) {
        if let Some(infos) = &mut self.infos {
            infos.push(NodeInfo {
                path: path.to_vec(),
                symbol: self.symbols.get(&(node as *const Node as usize)).copied(),
                input: x,
                output: y,
                ctx,
                depth,
                ty: None,
            });
        }
    }

    /// Infers the output of `node` on `x`; `None` after reporting a failure.
    fn node(
        &mut self,
        node: &Node,
        path: &mut Vec<usize>,
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<Shape> {
        let pre = self.preorder;
        self.preorder += 1;
        let info_at = self.infos.as_ref().map(|v| v.len());
        if let Some(infos) = &mut self.infos {
            // Placeholder, filled once the output is known, to keep pre-order.
            infos.push(NodeInfo {
                path: path.clone(),
                symbol: self.symbols.get(&(node as *const Node as usize)).copied(),
                input: x,
                output: x,
                ctx,
                depth,
                ty: None,
            });
        }
        let y = match node {
            Node::Op(op) => match op.apply(x, &ctx).and_then(size_ok) {
                Ok(y) => {
                    self.params = self.params.saturating_add(op.params(x));
                    self.flops = self.flops.saturating_add(op.flops(x, y));
                    self.acts = self.acts.saturating_add(y.numel());
                    Some(y)
                }
                Err(e) => {
                    self.fail(node, path, pre, x, e);
                    None
                }
            },
            Node::Form(f, ch) => self.form(node, *f, ch, path, x, ctx, depth, pre),
        };
        if let (Some(i), Some(y), Some(infos)) = (info_at, y, &mut self.infos) {
            infos[i].output = y;
        }
        y
    }

    #[allow(clippy::too_many_arguments)]
    fn form(
        &mut self,
        node: &Node,
        f: Form,
        ch: &[Node],
        path: &mut Vec<usize>,
        x: Shape,
        ctx: Ctx,
        depth: usize,
        pre: usize,
    ) -> Option<Shape> {
        let d = depth + 1;
        match f {
            Form::Seq => {
                let mut cur = Some(x);
                for (i, c) in ch.iter().enumerate() {
                    match cur {
                        Some(s) => {
                            path.push(i);
                            cur = self.node(c, path, s, ctx, d);
                            path.pop();
                        }
                        None => self.preorder += c.size(),
                    }
                }
                cur
            }
            Form::Route => {
                let (Node::Op(p), Node::Op(r)) = (&ch[0], &ch[2]) else {
                    self.preorder += node.size() - 1;
                    self.fail(
                        node,
                        path,
                        pre,
                        x,
                        RuleError {
                            message: "route's first and last parts must be routing operations"
                                .into(),
                            rule: "route(p, m, r) with p and r operations",
                        },
                    );
                    return None;
                };
                path.push(0);
                let y = self.node(&ch[0], path, x, ctx, d);
                path.pop();
                let Some(y) = y else {
                    self.preorder += ch[1].size() + ch[2].size();
                    return None;
                };
                let inner = match p.fold_size(x) {
                    Some(hw) => Ctx {
                        fold: Some(hw),
                        ..ctx
                    },
                    None => ctx,
                };
                path.push(1);
                let z = self.node(&ch[1], path, y, inner, d);
                path.pop();
                let Some(z) = z else {
                    self.preorder += ch[2].size();
                    return None;
                };
                let _ = r;
                path.push(2);
                let out = self.node(&ch[2], path, z, inner, d);
                path.pop();
                out
            }
            Form::Branch => self.branch(node, ch, path, x, ctx, d, pre),
            Form::Residual => {
                path.push(0);
                let y = self.node(&ch[0], path, x, ctx, d);
                path.pop();
                let y = y?;
                if y != x {
                    self.fail(
                        node,
                        path,
                        pre,
                        x,
                        RuleError {
                            message: format!(
                                "the inner module turns {x} into {y}; it must keep the shape"
                            ),
                            rule: "residual(m) adds m(x) to x, so m must keep the shape",
                        },
                    );
                    return None;
                }
                self.flops = self.flops.saturating_add(x.numel());
                self.acts = self.acts.saturating_add(x.numel());
                Some(x)
            }
            Form::Nb201 => self.nb201(node, ch, path, x, ctx, d, pre),
            Form::NbGraph => self.nbgraph(node, ch, path, x, ctx, d, pre),
            _ => {
                self.preorder += node.size() - 1;
                self.fail(
                    node,
                    path,
                    pre,
                    x,
                    RuleError {
                        message: format!("`{}` is a program form, not a network module", f.name()),
                        rule: "expression and statement forms stand only in activation functions and update rules",
                    },
                );
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn branch(
        &mut self,
        node: &Node,
        ch: &[Node],
        path: &mut Vec<usize>,
        x: Shape,
        ctx: Ctx,
        d: usize,
        pre: usize,
    ) -> Option<Shape> {
        let n = ch.len();
        let (Node::Op(b), Node::Op(a)) = (&ch[0], &ch[n - 1]) else {
            self.preorder += node.size() - 1;
            self.fail(node, path, pre, x, RuleError {
                message: "branch's first part must be a branching operation and its last an aggregation".into(),
                rule: "branch(b, m..., a)",
            });
            return None;
        };
        let b_pre = self.preorder;
        self.preorder += 1;
        path.push(0);
        let split = b.split(x);
        let (k, part) = match split {
            Ok(v) => v,
            Err(e) => {
                self.fail(&ch[0], path, b_pre, x, e);
                path.pop();
                self.preorder += node.size() - 2;
                return None;
            }
        };
        self.record(&ch[0], path, x, part, ctx, d);
        if b.kind() == Kind::Split {
            // clone copies, group's split makes views; count clones as memory.
            if let Op::Clone(_) = b {
                self.acts = self.acts.saturating_add(mul(&[x.numel(), k as u64]));
            }
        }
        path.pop();
        let modules = &ch[1..n - 1];
        if modules.len() != 1 && modules.len() != k {
            self.preorder += node.size() - 2;
            self.fail(
                node,
                path,
                pre,
                x,
                RuleError {
                    message: format!(
                        "{b} makes {k} branches, but {} modules were given",
                        modules.len()
                    ),
                    rule:
                        "branch needs one module per branch, or one module to copy to every branch",
                },
            );
            return None;
        }
        let mut outs = Vec::with_capacity(k);
        let mut ok = true;
        if modules.len() == 1 && k > 1 {
            let (p0, f0, a0) = (self.params, self.flops, self.acts);
            path.push(1);
            let y = self.node(&modules[0], path, part, ctx, d);
            path.pop();
            match y {
                Some(y) => {
                    let extra = k as u64 - 1;
                    let grow = |now: u64, before: u64| {
                        now.saturating_add((now - before).saturating_mul(extra))
                    };
                    self.params = grow(self.params, p0);
                    self.flops = grow(self.flops, f0);
                    self.acts = grow(self.acts, a0);
                    outs.resize(k, y);
                }
                None => ok = false,
            }
        } else {
            for (i, m) in modules.iter().enumerate() {
                path.push(i + 1);
                match self.node(m, path, part, ctx, d) {
                    Some(y) => outs.push(y),
                    None => ok = false,
                }
                path.pop();
            }
        }
        let a_pre = self.preorder;
        self.preorder += 1;
        if !ok {
            return None;
        }
        path.push(n - 1);
        let r = a.merge(&outs).and_then(size_ok);
        let out = match r {
            Ok(y) => {
                self.flops = self.flops.saturating_add(a.merge_flops(&outs, y));
                self.acts = self.acts.saturating_add(y.numel());
                self.record(&ch[n - 1], path, outs[0], y, ctx, d);
                Some(y)
            }
            Err(e) => {
                self.fail(&ch[n - 1], path, a_pre, outs[0], e);
                None
            }
        };
        path.pop();
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn nb201(
        &mut self,
        node: &Node,
        ch: &[Node],
        path: &mut Vec<usize>,
        x: Shape,
        ctx: Ctx,
        d: usize,
        pre: usize,
    ) -> Option<Shape> {
        if x.mode() != Mode::Im || !x.dims()[1].is_multiple_of(4) || !x.dims()[2].is_multiple_of(4)
        {
            self.preorder += node.size() - 1;
            self.fail(
                node,
                path,
                pre,
                x,
                RuleError {
                    message: format!("the NAS-Bench-201 network cannot take {x}"),
                    rule: "nb201 needs an image CxHxW with H and W divisible by 4",
                },
            );
            return None;
        }
        let (c_in, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let edges: Vec<Op> = ch
            .iter()
            .filter_map(|c| match c {
                Node::Op(o) => Some(*o),
                _ => None,
            })
            .collect();
        let stem = Shape::im(NB201_C, h, w);
        let mut ok = edges.len() == 6;
        for (i, c) in ch.iter().enumerate() {
            path.push(i);
            ok &= self.node(c, path, stem, ctx, d).is_some();
            path.pop();
        }
        if !ok {
            return None;
        }
        // The edge ops were counted once at the stem's shape above; the network's true counts
        // replace them.
        let (p, fl, a) = nb201_counts(&edges, c_in, h, w);
        let edge_once: (u64, u64) = edges.iter().fold((0, 0), |acc, e| {
            (acc.0 + e.params(stem), acc.1 + e.flops(stem, stem))
        });
        self.params = self.params.saturating_sub(edge_once.0).saturating_add(p);
        self.flops = self.flops.saturating_sub(edge_once.1).saturating_add(fl);
        self.acts = self.acts.saturating_sub(6 * stem.numel()).saturating_add(a);
        Some(Shape::im(NB201_C * 4, h / 4, w / 4))
    }
}

impl Infer<'_> {
    /// A NAS-Bench-Graph cell: four GNN nodes, each reading the cell's input or an earlier
    /// node (checked by the operation with the node's position in `ctx.cell`), not all skips.
    /// The cell keeps the shape of its input (node features); its parameters are the table's.
    #[allow(clippy::too_many_arguments)]
    fn nbgraph(
        &mut self,
        node: &Node,
        ch: &[Node],
        path: &mut Vec<usize>,
        x: Shape,
        ctx: Ctx,
        d: usize,
        pre: usize,
    ) -> Option<Shape> {
        // The nodes' costs are the benchmark's (its table has them), not estimates from
        // the input's shape: the cell counts nothing against the limits.
        let counts = (self.params, self.flops, self.acts);
        let mut ok = ch.len() == super::gnn::NODES;
        for (i, c) in ch.iter().enumerate() {
            path.push(i);
            if !matches!(c, Node::Op(Op::Gnn(..))) {
                self.preorder += c.size();
                self.fail(
                    c,
                    path,
                    pre,
                    x,
                    RuleError {
                        message: format!("`{c}` is not a GNN node"),
                        rule: "the nodes of nbgraph(...) are GNN operations with their input: gat, gcn, gin, cheb, sage, arma, graph, fc or skip, e.g. gcn(0)",
                    },
                );
                ok = false;
            } else {
                let inner = Ctx {
                    cell: i as u8 + 1,
                    ..ctx
                };
                ok &= self.node(c, path, x, inner, d).is_some();
            }
            path.pop();
        }
        (self.params, self.flops, self.acts) = counts;
        if !ok {
            return None;
        }
        if ch
            .iter()
            .all(|c| matches!(c, Node::Op(Op::Gnn(super::gnn::Gnn::Skip, _))))
        {
            self.fail(
                node,
                path,
                pre,
                x,
                RuleError {
                    message: "every node is a skip".into(),
                    rule: "an nbgraph cell computes something: at least one node is not skip",
                },
            );
            return None;
        }
        Some(x)
    }
}

/// Refuses shapes past what counts can hold (deeply nested concatenations or patch
/// extractions can grow a dimension without bound).
fn size_ok(y: Shape) -> Result<Shape, RuleError> {
    if y.too_large() {
        Err(RuleError {
            message: format!("the result {y} is too large"),
            rule: "a tensor may have at most 2^24 in a dimension and 2^40 elements per example",
        })
    } else {
        Ok(y)
    }
}

/// Channels of the NAS-Bench-201 stem; stages use 1x, 2x, 4x.
pub const NB201_C: u64 = 16;
/// Cells per NAS-Bench-201 stage.
pub const NB201_N: usize = 5;

/// Parameters, FLOPs and activation elements of the NAS-Bench-201 network (without the
/// classifier) for these cell edges and an input of `c_in` x `h` x `w`.
pub fn nb201_counts(edges: &[Op], c_in: u64, h: u64, w: u64) -> (u64, u64, u64) {
    let mut params = 0;
    let mut flops = 0;
    let mut acts = 0;
    let c0 = NB201_C;
    // Stem: 3x3 conv without bias, BatchNorm.
    params += c_in * c0 * 9 + 2 * c0;
    flops += 2 * c_in * 9 * c0 * h * w;
    acts += 2 * c0 * h * w;
    let (mut hh, mut ww) = (h, w);
    for stage in 0..3 {
        let c = c0 << stage;
        if stage > 0 {
            let cp = c / 2;
            let (ho, wo) = (hh / 2, ww / 2);
            // ResNet basic block: ReLU-conv3x3(s2)-BN, ReLU-conv3x3-BN, shortcut avgpool+1x1.
            params += cp * c * 9 + 2 * c + c * c * 9 + 2 * c + cp * c;
            flops += 2 * cp * 9 * c * ho * wo + 2 * c * 9 * c * ho * wo + 2 * cp * c * ho * wo;
            acts += 4 * c * ho * wo;
            hh = ho;
            ww = wo;
        }
        let s = Shape::im(c, hh, ww);
        for _ in 0..NB201_N {
            for e in edges {
                params += e.params(s);
                flops += e.flops(s, s);
                acts += s.numel();
            }
            // node sums
            flops += 3 * s.numel();
            acts += 3 * s.numel();
        }
    }
    // Final BN + ReLU.
    params += 2 * (c0 * 4);
    acts += c0 * 4 * hh * ww;
    (params, flops, acts)
}

impl Op {
    /// The H'xW' grid an `im2col` records for `col2im`, for input `x`.
    pub fn fold_size(&self, x: Shape) -> Option<(u64, u64)> {
        match *self {
            Op::Im2Col { k, s, p } if x.mode() == Mode::Im => {
                let (h, w) = (x.dims()[1], x.dims()[2]);
                let (k, s, p) = (k as u64, s as u64, p as u64);
                if h + 2 * p < k || w + 2 * p < k {
                    return None;
                }
                Some(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
            }
            _ => None,
        }
    }
}
