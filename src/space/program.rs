//! The checks of programs: activation functions (an expression in `x`) and optimizer update
//! rules (`prog(state(...), statements...)`). After grammar membership, a program is checked
//! by value type instead of shape: every value is a scalar (a hyperparameter, the step, a
//! number) or a tensor (the input, the gradient, the weights, state), and the rules below name
//! what each form needs. State must be declared before it is read or assigned, symbols must be
//! bound in the kind of program at hand, and programs stay within size limits.

use super::check::{Analysis, CheckOptions, Diagnostic, NodeInfo, Stage};
use super::grammar::SymId;
use super::kind::SpaceKind;
use super::lex::Span;
use super::node::{abbreviate, Form, Node, Sort};
use super::ops::{Ctx, Op, Sym};
use super::shape::Shape;
use std::collections::HashMap;
use std::fmt;

/// The type of a program value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ty {
    /// One number, the same for every element: hyperparameters, the step, constants.
    Scalar,
    /// A tensor the shape of the input (activations) or of the parameter (update rules).
    Tensor,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Scalar => "a scalar",
            Ty::Tensor => "a tensor",
        })
    }
}

/// Most nodes an activation function may have.
pub const MAX_ACTIVATION_NODES: usize = 48;
/// Most nodes an update rule may have.
pub const MAX_RULE_NODES: usize = 120;
/// Most statements of an update rule.
pub const MAX_STATEMENTS: usize = 8;

/// The cost of a form per element when it computes on tensors, in elementwise operations;
/// the program's "FLOPs" per element (scalar parts are computed once per step).
pub fn form_cost(f: Form) -> u64 {
    match f {
        Form::Neg | Form::Abs | Form::Square | Form::Sign | Form::Add | Form::Sub => 1,
        Form::Mul | Form::Max | Form::Min | Form::Step => 1,
        Form::Sqrt | Form::Log | Form::Clip => 2,
        Form::Div | Form::Interp => 3,
        Form::Exp | Form::Sigmoid | Form::Tanh | Form::Erf | Form::Sin | Form::Pow => 4,
        _ => 0,
    }
}

struct TypeCheck<'a> {
    kind: SpaceKind,
    root: &'a Node,
    spans: Option<&'a [Span]>,
    input: Shape,
    diags: Vec<Diagnostic>,
    infos: Option<Vec<NodeInfo>>,
    symbols: &'a HashMap<usize, SymId>,
    preorder: usize,
    flops: u64,
    declared: u8,
}

/// Checks a program that is a member of its grammar; `symbols` maps node addresses to the
/// nonterminals they were derived from (for per-node facts).
pub(crate) fn check(
    kind: SpaceKind,
    node: &Node,
    spans: Option<&[Span]>,
    input: Shape,
    opts: &CheckOptions,
    symbols: &HashMap<usize, SymId>,
) -> Result<Analysis, Vec<Diagnostic>> {
    let mut tc = TypeCheck {
        kind,
        root: node,
        spans,
        input,
        diags: Vec::new(),
        infos: opts.infos.then(Vec::new),
        symbols,
        preorder: 0,
        flops: 0,
        declared: 0,
    };
    match kind {
        SpaceKind::Activation => {
            if let Some(Ty::Scalar) = tc.expr(node, &mut Vec::new(), Ctx::default(), 0) {
                tc.fail(
                    node,
                    &[],
                    0,
                    "the activation does not depend on x: it computes the same number everywhere"
                        .into(),
                    "an activation function is a tensor expression in x",
                );
            }
        }
        _ => tc.rule(node),
    }
    if !tc.diags.is_empty() {
        return Err(tc.diags);
    }
    let nodes = node.size();
    let max = match kind {
        SpaceKind::Activation => MAX_ACTIVATION_NODES,
        _ => MAX_RULE_NODES,
    };
    if nodes > max {
        return Err(vec![Diagnostic {
            stage: Stage::Limits,
            path: "root".into(),
            node: abbreviate(&node.to_string(), 80),
            message: format!(
                "the program has {nodes} nodes, more than the limit of {max} for {} programs",
                kind.name()
            ),
            rule: Some("max_nodes".into()),
            input: None,
            span: spans.and_then(|s| s.first().copied()),
        }]);
    }
    Ok(Analysis {
        input,
        output: input,
        params: 0,
        head_params: None,
        flops: tc.flops,
        activation_bytes: 0,
        depth: node.depth(),
        nodes,
        infos: tc.infos.unwrap_or_default(),
    })
}

impl TypeCheck<'_> {
    fn fail(&mut self, node: &Node, path: &[usize], pre: usize, message: String, rule: &str) {
        self.diags.push(Diagnostic {
            stage: Stage::Type,
            path: self.root.path_string(path),
            node: abbreviate(&node.to_string(), 60),
            message,
            rule: Some(rule.to_string()),
            input: None,
            span: self.spans.and_then(|s| s.get(pre).copied()),
        });
    }

    /// Records a node's facts in pre-order; returns its index for filling in the type.
    fn enter(&mut self, node: &Node, path: &[usize], ctx: Ctx, depth: usize) -> usize {
        let pre = self.preorder;
        self.preorder += 1;
        if let Some(infos) = &mut self.infos {
            infos.push(NodeInfo {
                path: path.to_vec(),
                symbol: self.symbols.get(&(node as *const Node as usize)).copied(),
                input: self.input,
                output: self.input,
                ctx,
                depth,
                ty: None,
            });
        }
        pre
    }

    fn set_ty(&mut self, pre: usize, ty: Option<Ty>) {
        if let Some(i) = self.infos.as_mut().and_then(|v| v.get_mut(pre)) {
            i.ty = ty;
        }
    }

    /// The type of an expression, or `None` after reporting why it has none.
    fn expr(&mut self, node: &Node, path: &mut Vec<usize>, ctx: Ctx, depth: usize) -> Option<Ty> {
        let pre = self.enter(node, path, ctx, depth);
        let ty = match node {
            Node::Op(Op::Const(_)) => Some(Ty::Scalar),
            Node::Op(Op::Sym(s)) => self.symbol(node, path, pre, *s),
            Node::Op(op) => {
                self.fail(
                    node,
                    path,
                    pre,
                    format!("`{op}` is a network operation; programs compute with expression forms such as add(...), mul(...), tanh(...)"),
                    "a program is made of symbols, numbers and expression forms",
                );
                None
            }
            Node::Form(f, ch) if f.sort() == Sort::Expr => {
                self.form(node, *f, ch, path, pre, ctx, depth)
            }
            Node::Form(f, _) => {
                self.preorder += node.size() - 1;
                self.fail(
                    node,
                    path,
                    pre,
                    format!("`{}` cannot stand inside an expression", f.name()),
                    "expressions are made of symbols, numbers and expression forms",
                );
                None
            }
        };
        self.set_ty(pre, ty);
        ty
    }

    fn symbol(&mut self, node: &Node, path: &[usize], pre: usize, s: Sym) -> Option<Ty> {
        let ok = match self.kind {
            SpaceKind::Activation => s == Sym::X,
            _ => s != Sym::X && (!s.is_state() || self.declared & s.bit() != 0),
        };
        if ok {
            return Some(if s.is_scalar() {
                Ty::Scalar
            } else {
                Ty::Tensor
            });
        }
        let (message, rule) = match self.kind {
            SpaceKind::Activation => (
                format!("`{s}` is not bound in an activation function", s = s.name()),
                "an activation function reads only its input x",
            ),
            _ if s == Sym::X => (
                "`x` is the input of activation functions, not bound in an update rule".into(),
                "an update rule reads g, w, t, lr, beta1, beta2, wd, eps and its declared state",
            ),
            _ => (
                format!(
                    "state `{s}` is used but not declared; add it to state(...)",
                    s = s.name()
                ),
                "state tensors (m, v, u, s) must be declared in state(...) before use",
            ),
        };
        self.fail(node, path, pre, message, rule);
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn form(
        &mut self,
        node: &Node,
        f: Form,
        ch: &[Node],
        path: &mut Vec<usize>,
        pre: usize,
        ctx: Ctx,
        depth: usize,
    ) -> Option<Ty> {
        let want = f.spec().slots.len();
        if ch.len() != want {
            self.preorder += node.size() - 1;
            self.fail(
                node,
                path,
                pre,
                format!(
                    "`{}` takes {want} part(s), but {} were given",
                    f.name(),
                    ch.len()
                ),
                f.spec().rule,
            );
            return None;
        }
        let mut tys = Vec::with_capacity(ch.len());
        for (i, c) in ch.iter().enumerate() {
            path.push(i);
            tys.push(self.expr(c, path, ctx, depth + 1));
            path.pop();
        }
        let tys: Vec<Ty> = tys.into_iter().collect::<Option<_>>()?;
        let scalar_at = |i: usize| -> Option<usize> { (tys[i] != Ty::Scalar).then_some(i) };
        let bad = match f {
            Form::Pow => scalar_at(0).or_else(|| scalar_at(1)),
            Form::Clip => scalar_at(1),
            Form::Interp => scalar_at(2),
            _ => None,
        };
        if let Some(i) = bad {
            let what = match (f, i) {
                (Form::Pow, _) => "pow takes scalars only; for tensors use square or sqrt",
                (Form::Clip, _) => "clip's bound (its second part) must be a scalar",
                _ => "interp's weight (its third part) must be a scalar",
            };
            self.fail(
                node,
                path,
                pre,
                format!("{what}, but part {} is a tensor", i + 1),
                f.spec().rule,
            );
            return None;
        }
        let ty = if tys.contains(&Ty::Tensor) {
            self.flops += form_cost(f);
            Ty::Tensor
        } else {
            Ty::Scalar
        };
        Some(ty)
    }

    /// Checks an update rule: `prog(state(...), statements...)`.
    fn rule(&mut self, node: &Node) {
        let rule = Form::Prog.spec().rule;
        let pre = self.enter(node, &[], Ctx::default(), 0);
        let Node::Form(Form::Prog, ch) = node else {
            self.fail(
                node,
                &[],
                pre,
                "an update rule must be a prog(...)".into(),
                rule,
            );
            return;
        };
        let mut path = vec![0];
        let decl = &ch[0];
        let dpre = self.enter(decl, &path, Ctx::default(), 1);
        match decl {
            Node::Form(Form::State, vars) => {
                let declaring = Ctx {
                    bound: Ctx::DECLARING,
                    ..Ctx::default()
                };
                for (i, v) in vars.iter().enumerate() {
                    path.push(i);
                    let vpre = self.enter(v, &path, declaring, 2);
                    match v {
                        Node::Op(Op::Sym(s)) if s.is_state() => {
                            if self.declared & s.bit() != 0 {
                                self.fail(
                                    v,
                                    &path,
                                    vpre,
                                    format!("state `{}` is declared twice", s.name()),
                                    Form::State.spec().rule,
                                );
                            }
                            self.declared |= s.bit();
                            self.set_ty(vpre, Some(Ty::Tensor));
                        }
                        other => {
                            self.preorder += other.size() - 1;
                            self.fail(
                                v,
                                &path,
                                vpre,
                                format!("`{other}` cannot be declared as state; the state tensors are m, v, u and s"),
                                Form::State.spec().rule,
                            );
                        }
                    }
                    path.pop();
                }
            }
            other => {
                self.preorder += other.size() - 1;
                self.fail(
                    other,
                    &path,
                    dpre,
                    "the first part of prog(...) must declare the state: state(m, v) or state()"
                        .into(),
                    rule,
                );
            }
        }
        path.pop();
        let ctx = Ctx {
            bound: self.declared,
            ..Ctx::default()
        };
        let statements = &ch[1..];
        let mut steps = 0;
        let mut assigned = 0u8;
        for (i, st) in statements.iter().enumerate() {
            path.push(i + 1);
            let spre = self.enter(st, &path, ctx, 1);
            match st {
                Node::Form(Form::Assign, parts) if parts.len() == 2 => {
                    path.push(0);
                    let tpre = self.enter(&parts[0], &path, ctx, 2);
                    let target = match &parts[0] {
                        Node::Op(Op::Sym(s)) if s.is_state() => {
                            if self.declared & s.bit() == 0 {
                                self.fail(
                                    &parts[0],
                                    &path,
                                    tpre,
                                    format!("state `{}` is assigned but not declared; add it to state(...)", s.name()),
                                    "state tensors (m, v, u, s) must be declared in state(...) before use",
                                );
                                None
                            } else {
                                self.set_ty(tpre, Some(Ty::Tensor));
                                Some(*s)
                            }
                        }
                        other => {
                            self.preorder += other.size() - 1;
                            self.fail(
                                other,
                                &path,
                                tpre,
                                format!("cannot assign to `{other}`: only declared state (m, v, u, s) can be assigned; the weights change through step(...)"),
                                Form::Assign.spec().rule,
                            );
                            None
                        }
                    };
                    path.pop();
                    path.push(1);
                    let ty = self.expr(&parts[1], &mut path, ctx, 2);
                    path.pop();
                    if ty == Some(Ty::Scalar) {
                        self.fail(
                            st,
                            &path,
                            spre,
                            "the value assigned is a scalar, but state is a tensor; combine it with a tensor (g, w or state)".into(),
                            Form::Assign.spec().rule,
                        );
                    }
                    if let Some(s) = target {
                        assigned |= s.bit();
                    }
                }
                Node::Form(Form::Step, parts) if parts.len() == 1 => {
                    steps += 1;
                    path.push(0);
                    let ty = self.expr(&parts[0], &mut path, ctx, 2);
                    path.pop();
                    if ty == Some(Ty::Scalar) {
                        self.fail(
                            st,
                            &path,
                            spre,
                            "the step is a scalar, so every weight would move by the same amount; it must be a tensor (use g, m or another tensor)".into(),
                            Form::Step.spec().rule,
                        );
                    }
                }
                other => {
                    self.preorder += other.size() - 1;
                    self.fail(
                        other,
                        &path,
                        spre,
                        format!(
                            "`{}` is not a statement; the statements are assign(m, e) and step(e)",
                            other.head()
                        ),
                        rule,
                    );
                }
            }
            path.pop();
        }
        if steps != 1 {
            let message = if steps == 0 {
                "the update rule has no step(...): it would never change the weights".to_string()
            } else {
                format!(
                    "the update rule has {steps} step(...) statements; it must have exactly one"
                )
            };
            self.fail(node, &[], 0, message, rule);
        }
        if statements.len() > MAX_STATEMENTS {
            self.fail(
                node,
                &[],
                0,
                format!(
                    "the update rule has {} statements, more than the limit of {MAX_STATEMENTS}",
                    statements.len()
                ),
                rule,
            );
        }
        let unused = self.declared & !assigned;
        for s in Sym::STATE {
            if unused & s.bit() != 0 {
                self.fail(
                    decl,
                    &[0],
                    dpre,
                    format!(
                        "state `{}` is declared but never assigned, so it would stay zero; assign it or drop it from state(...)",
                        s.name()
                    ),
                    Form::State.spec().rule,
                );
            }
        }
    }
}
