//! The candidate tree: operations at the leaves, forms (seq, branch, route, ...) inside.
//!
//! Trees are kept in one canonical shape by their constructors: nested sequences are flattened
//! (sequencing is associative) and a branch whose k modules are all the same is written once
//! (einspace copies one module k times). So two candidates that print alike are equal, and the
//! canonical text is what the run hashes to never train the same network twice.

use super::ops::{Kind, Op};
use sha2::{Digest, Sha256};
use std::fmt;

/// The structural forms of the notation. Their shape rules live in `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Form {
    /// `seq(m1, m2, ...)`: apply the modules in order.
    Seq,
    /// `branch(b, m..., a)`: split with b, apply one module per part (or one module copied to
    /// every part), merge with a.
    Branch,
    /// `route(p, m, r)`: rearrange with p, apply m, rearrange with r.
    Route,
    /// `residual(m)`: x + m(x); m must keep the shape.
    Residual,
    /// `nb201(e1, ..., e6)`: the NAS-Bench-201 network around one cell with these six edges.
    Nb201,
    /// `nbgraph(n1, n2, n3, n4)`: a NAS-Bench-Graph cell of four GNN nodes, each `op(input)`;
    /// kept as the benchmark's canonical cell, so isomorphic cells are one candidate.
    NbGraph,
    // Elementwise expressions of programs (activation functions, update rules).
    Neg,
    Abs,
    Square,
    Sqrt,
    Exp,
    Log,
    Sigmoid,
    Tanh,
    Erf,
    Sin,
    Sign,
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    Clip,
    Interp,
    // Statements of update rules.
    /// `prog(state(...), s1, ..., sn)`: an update rule.
    Prog,
    /// `state(m, v, ...)`: the state tensors an update rule keeps.
    State,
    /// `assign(m, e)`: sets state m to e.
    Assign,
    /// `step(e)`: the update; the parameter becomes w - e.
    Step,
}

/// What a form or operation makes: the sorts of the notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// A network module (architectures).
    Module,
    /// An elementwise expression (programs).
    Expr,
    /// `state(...)`.
    Decl,
    /// `assign(...)` or `step(...)`.
    Stmt,
    /// `prog(...)`.
    Program,
}

/// What a grammar slot of a form may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Any module: a unary operation or a form.
    Module,
    /// A unary operation only (route's p and r, NAS-Bench-201 edges).
    UnaryOp,
    /// A branching operation.
    SplitOp,
    /// An aggregation operation.
    MergeOp,
    /// An expression: a program value (symbol or number) or an expression form.
    Expr,
    /// A state declaration, `state(...)`.
    Decl,
    /// A statement: `assign(...)` or `step(...)`.
    Stmt,
    /// A whole update rule, `prog(...)`.
    Program,
}

impl Slot {
    pub fn describe(self) -> &'static str {
        match self {
            Slot::Module => "a module (operation or form)",
            Slot::UnaryOp => "a one-input operation",
            Slot::SplitOp => "a branching operation",
            Slot::MergeOp => "an aggregation operation",
            Slot::Expr => "an expression (a symbol, a number or an expression form)",
            Slot::Decl => "a state declaration state(...)",
            Slot::Stmt => "a statement (assign or step)",
            Slot::Program => "an update rule prog(...)",
        }
    }

    pub fn admits_op(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Slot::Module, Kind::Unary)
                | (Slot::UnaryOp, Kind::Unary)
                | (Slot::SplitOp, Kind::Split)
                | (Slot::MergeOp, Kind::Merge)
                | (Slot::Expr, Kind::Value)
        )
    }

    /// Whether a form of this sort may stand in the slot.
    pub fn admits_form(self, sort: Sort) -> bool {
        matches!(
            (self, sort),
            (Slot::Module, Sort::Module)
                | (Slot::Expr, Sort::Expr)
                | (Slot::Decl, Sort::Decl)
                | (Slot::Stmt, Sort::Stmt)
                | (Slot::Program, Sort::Program)
        )
    }
}

/// Static description of a form.
pub struct FormSpec {
    pub form: Form,
    pub name: &'static str,
    /// The slots a grammar production of this form names.
    pub slots: &'static [Slot],
    pub rule: &'static str,
    /// What the form makes.
    pub sort: Sort,
    /// A form whose candidates and grammar productions take any number of parts (at least
    /// `slots.len()`, each of the last slot's kind); a candidate matches a production with as
    /// many parts.
    pub variadic: bool,
}

macro_rules! expr_form {
    ($form:ident, $name:literal, $n:literal, $rule:literal) => {
        FormSpec {
            form: Form::$form,
            name: $name,
            slots: &[Slot::Expr; $n],
            rule: $rule,
            sort: Sort::Expr,
            variadic: false,
        }
    };
}

pub static FORMS: &[FormSpec] = &[
    FormSpec {
        form: Form::Seq,
        name: "seq",
        slots: &[Slot::Module, Slot::Module],
        rule: "seq(m1, m2, ...) applies its modules in order; nested seqs flatten",
        sort: Sort::Module,
        variadic: false,
    },
    FormSpec {
        form: Form::Branch,
        name: "branch",
        slots: &[Slot::SplitOp, Slot::Module, Slot::MergeOp],
        rule: "branch(b, m1, ..., mk, a): the branching operation b makes k tensors, module mi takes part i (or write one module to copy it k times, without shared weights), the aggregation a merges them",
        sort: Sort::Module,
        variadic: false,
    },
    FormSpec {
        form: Form::Route,
        name: "route",
        slots: &[Slot::UnaryOp, Slot::Module, Slot::UnaryOp],
        rule: "route(p, m, r): the routing operation p rearranges the input, m computes, r rearranges back; col2im in r folds to the size recorded by an im2col in p",
        sort: Sort::Module,
        variadic: false,
    },
    FormSpec {
        form: Form::Residual,
        name: "residual",
        slots: &[Slot::Module],
        rule: "residual(m) computes x + m(x); m must keep the shape",
        sort: Sort::Module,
        variadic: false,
    },
    FormSpec {
        form: Form::Nb201,
        name: "nb201",
        slots: &[Slot::UnaryOp; 6],
        rule: "nb201(e1, e2, e3, e4, e5, e6): the NAS-Bench-201 network (stem 3x3 conv to 16 channels, 3 stages of 5 cells at 16, 32, 64 channels joined by residual reduction blocks, BN-ReLU) whose cell has edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; input height and width divisible by 4",
        sort: Sort::Module,
        variadic: false,
    },
    FormSpec {
        form: Form::NbGraph,
        name: "nbgraph",
        slots: &[Slot::UnaryOp; 4],
        rule: "nbgraph(n1, n2, n3, n4): a NAS-Bench-Graph cell; node i is op(input), a GNN operation (gat, gcn, gin, cheb, sage, arma, graph, fc, skip) on the cell's input (0) or an earlier node (1 to i-1); nodes no other node reads feed the output; not all skips. Isomorphic cells are written one way (the benchmark's canonical cell)",
        sort: Sort::Module,
        variadic: false,
    },
    expr_form!(Neg, "neg", 1, "neg(a) = -a"),
    expr_form!(Abs, "abs", 1, "abs(a) = |a|"),
    expr_form!(Square, "square", 1, "square(a) = a*a"),
    expr_form!(Sqrt, "sqrt", 1, "sqrt(a) = square root of |a| (safe for negative a)"),
    expr_form!(Exp, "exp", 1, "exp(a) = e^a, with a clamped to at most 30"),
    expr_form!(Log, "log", 1, "log(a) = natural log of |a| + 1e-6 (safe at 0)"),
    expr_form!(Sigmoid, "sigmoid", 1, "sigmoid(a) = 1 / (1 + e^-a)"),
    expr_form!(Tanh, "tanh", 1, "tanh(a)"),
    expr_form!(Erf, "erf", 1, "erf(a), the Gauss error function"),
    expr_form!(Sin, "sin", 1, "sin(a)"),
    expr_form!(Sign, "sign", 1, "sign(a) = -1, 0 or 1"),
    expr_form!(Add, "add", 2, "add(a, b) = a + b; a tensor if either part is"),
    expr_form!(Sub, "sub", 2, "sub(a, b) = a - b"),
    expr_form!(Mul, "mul", 2, "mul(a, b) = a * b"),
    expr_form!(Div, "div", 2, "div(a, b) = a / b with a safe denominator: b is replaced by 1e-12 (keeping its sign) where |b| < 1e-12"),
    expr_form!(Max, "max", 2, "max(a, b), elementwise; max(x, 0) is ReLU"),
    expr_form!(Min, "min", 2, "min(a, b), elementwise"),
    expr_form!(Pow, "pow", 2, "pow(a, b) = a^b for scalars only (e.g. pow(beta1, t)); for tensors use square or sqrt"),
    expr_form!(Clip, "clip", 2, "clip(a, c) clamps a to [-|c|, |c|]; c must be a scalar"),
    expr_form!(Interp, "interp", 3, "interp(a, b, c) = c*a + (1-c)*b, the moving average of a towards b; c must be a scalar (e.g. interp(m, g, beta1))"),
    FormSpec {
        form: Form::Prog,
        name: "prog",
        slots: &[Slot::Decl, Slot::Stmt],
        rule: "prog(state(...), s1, ..., sn): an update rule run on every parameter tensor at every step: declares its state, then runs its statements in order; exactly one statement is a step(...)",
        sort: Sort::Program,
        variadic: true,
    },
    FormSpec {
        form: Form::State,
        name: "state",
        slots: &[],
        rule: "state(m, v, ...) declares the state tensors (m, v, u, s) the rule keeps, each zero at the first step; state() declares none; every declared state must be assigned",
        sort: Sort::Decl,
        variadic: true,
    },
    FormSpec {
        form: Form::Assign,
        name: "assign",
        slots: &[Slot::Expr, Slot::Expr],
        rule: "assign(m, e) sets the declared state m to the tensor e; later statements see the new value",
        sort: Sort::Stmt,
        variadic: false,
    },
    FormSpec {
        form: Form::Step,
        name: "step",
        slots: &[Slot::Expr],
        rule: "step(e) computes the update e, a tensor; the parameter becomes w - e after the statements have run",
        sort: Sort::Stmt,
        variadic: false,
    },
];

impl Form {
    pub fn spec(self) -> &'static FormSpec {
        // FORMS lists every form in declaration order.
        &FORMS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn by_name(name: &str) -> Option<Form> {
        FORMS.iter().find(|s| s.name == name).map(|s| s.form)
    }

    /// The slot kind of part `i` of a grammar production (variadic forms repeat their last
    /// slot; `state` takes expressions, its state symbols).
    pub fn grammar_slot(self, i: usize) -> Slot {
        let slots = self.spec().slots;
        match slots.get(i) {
            Some(&s) => s,
            None => slots.last().copied().unwrap_or(Slot::Expr),
        }
    }

    pub fn sort(self) -> Sort {
        self.spec().sort
    }

    /// Whether the parts of the form may be given in any order (they are kept sorted).
    pub fn commutative(self) -> bool {
        matches!(self, Form::Add | Form::Mul | Form::Max | Form::Min)
    }

    /// The slot kinds of a form node's children as written in a candidate (with `n` children).
    pub fn child_slot(self, i: usize, n: usize) -> Slot {
        match self {
            Form::Branch if i == 0 => Slot::SplitOp,
            Form::Branch if i + 1 == n => Slot::MergeOp,
            Form::Route if i != 1 => Slot::UnaryOp,
            Form::Nb201 | Form::NbGraph => Slot::UnaryOp,
            Form::Prog if i == 0 => Slot::Decl,
            Form::Prog => Slot::Stmt,
            Form::State => Slot::Expr,
            f if f.sort() != Sort::Module => Slot::Expr,
            _ => Slot::Module,
        }
    }
}

/// A candidate (or a part of one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    Op(Op),
    Form(Form, Vec<Node>),
}

impl Node {
    /// `seq(a, b)`, flattening nested sequences.
    pub fn seq(children: Vec<Node>) -> Node {
        let mut flat = Vec::with_capacity(children.len());
        for c in children {
            match c {
                Node::Form(Form::Seq, inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if flat.len() == 1 {
            return flat.pop().unwrap_or(Node::Op(Op::Identity));
        }
        Node::Form(Form::Seq, flat)
    }

    /// `branch(b, modules..., a)`, writing k equal modules once.
    pub fn branch(b: Op, mut modules: Vec<Node>, a: Op) -> Node {
        if modules.len() > 1 && modules.iter().all(|m| *m == modules[0]) {
            modules.truncate(1);
        }
        let mut ch = Vec::with_capacity(modules.len() + 2);
        ch.push(Node::Op(b));
        ch.extend(modules);
        ch.push(Node::Op(a));
        Node::Form(Form::Branch, ch)
    }

    /// Builds a form node in canonical shape.
    pub fn form(form: Form, children: Vec<Node>) -> Node {
        match form {
            Form::Seq => Node::seq(children),
            Form::Branch if children.len() >= 3 => {
                if let (Some(Node::Op(b)), Some(Node::Op(a))) = (children.first(), children.last())
                {
                    let (b, a) = (*b, *a);
                    let n = children.len();
                    let modules = children.into_iter().skip(1).take(n - 2).collect();
                    return Node::branch(b, modules, a);
                }
                Node::Form(form, children)
            }
            f if f.commutative() => {
                let mut children = children;
                children.sort();
                Node::Form(f, children)
            }
            Form::State => {
                let mut children = children;
                children.sort();
                Node::Form(form, children)
            }
            Form::NbGraph => Node::nbgraph(children),
            _ => Node::Form(form, children),
        }
    }

    /// `nbgraph(...)` as the benchmark's canonical cell when the children are a cell (four
    /// GNN nodes reading earlier nodes, not all skips); as written otherwise, for the checker
    /// to explain.
    pub fn nbgraph(children: Vec<Node>) -> Node {
        use super::gnn;
        let cell = (children.len() == gnn::NODES).then(|| {
            let mut link = [0u8; gnn::NODES];
            let mut ops = [gnn::Gnn::Skip; gnn::NODES];
            for (i, c) in children.iter().enumerate() {
                match c {
                    Node::Op(Op::Gnn(g, input)) => {
                        link[i] = *input;
                        ops[i] = *g;
                    }
                    _ => return None,
                }
            }
            gnn::canonical(link, ops)
        });
        match cell.flatten() {
            Some((link, ops)) => Node::Form(
                Form::NbGraph,
                link.iter()
                    .zip(ops)
                    .map(|(&l, g)| Node::Op(Op::Gnn(g, l)))
                    .collect(),
            ),
            None => Node::Form(Form::NbGraph, children),
        }
    }

    pub fn children(&self) -> &[Node] {
        match self {
            Node::Op(_) => &[],
            Node::Form(_, ch) => ch,
        }
    }

    /// The name of the node's head: the operation or form name.
    pub fn head(&self) -> &'static str {
        match self {
            Node::Op(op) => op.name(),
            Node::Form(f, _) => f.name(),
        }
    }

    /// Number of nodes in the tree.
    pub fn size(&self) -> usize {
        1 + self.children().iter().map(Node::size).sum::<usize>()
    }

    /// Nesting depth: 0 for a lone operation.
    pub fn depth(&self) -> usize {
        match self {
            Node::Op(_) => 0,
            Node::Form(_, ch) => 1 + ch.iter().map(Node::depth).max().unwrap_or(0),
        }
    }

    /// The subtree at `path` (child indices from the root).
    pub fn get(&self, path: &[usize]) -> Option<&Node> {
        let mut n = self;
        for &i in path {
            n = n.children().get(i)?;
        }
        Some(n)
    }

    /// A copy with the subtree at `path` replaced, re-canonicalised on the way up.
    pub fn replace(&self, path: &[usize], new: Node) -> Node {
        match path.split_first() {
            None => new,
            Some((&i, rest)) => match self {
                Node::Form(f, ch) if i < ch.len() => {
                    let mut ch = ch.clone();
                    ch[i] = ch[i].replace(rest, new);
                    Node::form(*f, ch)
                }
                _ => self.clone(),
            },
        }
    }

    /// Visits every node in pre-order with its path.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&[usize], &'a Node)) {
        fn go<'a>(n: &'a Node, path: &mut Vec<usize>, f: &mut impl FnMut(&[usize], &'a Node)) {
            f(path, n);
            for (i, c) in n.children().iter().enumerate() {
                path.push(i);
                go(c, path, f);
                path.pop();
            }
        }
        go(self, &mut Vec::new(), f)
    }

    /// The canonical text (one line).
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// A short, stable hash of the canonical text: the candidate's identity in a run.
    pub fn hash_hex(&self) -> String {
        let digest = Sha256::digest(self.canonical().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A human-readable path for messages, e.g. `seq.1.route.2` (names of the ancestors and the
    /// child index taken at each), or `root`.
    pub fn path_string(&self, path: &[usize]) -> String {
        if path.is_empty() {
            return "root".to_string();
        }
        let mut s = String::new();
        let mut n = self;
        for (k, &i) in path.iter().enumerate() {
            if k > 0 {
                s.push('.');
            }
            s.push_str(n.head());
            s.push('.');
            s.push_str(&i.to_string());
            match n.children().get(i) {
                Some(c) => n = c,
                None => break,
            }
        }
        s
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Op(op) => write!(f, "{op}"),
            Node::Form(form, ch) => {
                write!(f, "{}(", form.name())?;
                for (i, c) in ch.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Shortens a node's text for messages: long subtrees are cut in the middle.
pub fn abbreviate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max * 2 / 3).collect();
    let tail_len = max / 3;
    let tail: String = text
        .chars()
        .rev()
        .take(tail_len)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head} ... {tail}")
}
