//! The built-in operation library: every terminal a grammar may name, with its shape rule,
//! parameter count, FLOPs and activation size written once, here.
//!
//! Grammar files pick and weight these operations; they never define semantics. The trainer
//! compiles the same `Op` values, so the validator's counts and the compiled network agree.

use super::shape::{Mode, Shape};
use std::fmt;

/// What an operation does to the number of tensors in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One tensor in, one out: computations and routing.
    Unary,
    /// One tensor in, k out: einspace's branching functions.
    Split,
    /// k tensors in, one out: einspace's aggregation functions.
    Merge,
    /// A value in a program (activation function or update rule): a symbol such as `x`, `g`
    /// or `lr`, or a number.
    Value,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Unary => "unary operation",
            Kind::Split => "branching operation",
            Kind::Merge => "aggregation operation",
            Kind::Value => "program value",
        }
    }
}

/// A permutation of the dimensions after batch, named as einspace names them (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Perm {
    P21,
    P132,
    P213,
    P231,
    P312,
    P321,
}

impl Perm {
    pub const ALL: [Perm; 6] = [
        Perm::P21,
        Perm::P132,
        Perm::P213,
        Perm::P231,
        Perm::P312,
        Perm::P321,
    ];

    /// The new order of the dimensions after batch, 0-based.
    pub fn order(self) -> &'static [usize] {
        match self {
            Perm::P21 => &[1, 0],
            Perm::P132 => &[0, 2, 1],
            Perm::P213 => &[1, 0, 2],
            Perm::P231 => &[1, 2, 0],
            Perm::P312 => &[2, 0, 1],
            Perm::P321 => &[2, 1, 0],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Perm::P21 => "permute21",
            Perm::P132 => "permute132",
            Perm::P213 => "permute213",
            Perm::P231 => "permute231",
            Perm::P312 => "permute312",
            Perm::P321 => "permute321",
        }
    }
}

/// A symbol of a program: the activation's input, the update rule's inputs and
/// hyperparameters, and the state tensors an update rule may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sym {
    /// The activation function's input.
    X,
    /// The gradient of the loss with respect to a parameter tensor.
    G,
    /// The parameter tensor (before this step's update).
    W,
    /// The step number, 1 at the first update.
    T,
    Lr,
    Beta1,
    Beta2,
    Wd,
    Eps,
    /// State tensors an update rule may declare with `state(...)`; they start at zero and
    /// persist across steps.
    M,
    V,
    U,
    S,
}

impl Sym {
    pub const ALL: [Sym; 13] = [
        Sym::X,
        Sym::G,
        Sym::W,
        Sym::T,
        Sym::Lr,
        Sym::Beta1,
        Sym::Beta2,
        Sym::Wd,
        Sym::Eps,
        Sym::M,
        Sym::V,
        Sym::U,
        Sym::S,
    ];
    /// The state tensors, in declaration order.
    pub const STATE: [Sym; 4] = [Sym::M, Sym::V, Sym::U, Sym::S];
    /// The symbols an update rule may read besides its state.
    pub const OPTIMIZER_INPUTS: [Sym; 8] = [
        Sym::G,
        Sym::W,
        Sym::T,
        Sym::Lr,
        Sym::Beta1,
        Sym::Beta2,
        Sym::Wd,
        Sym::Eps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sym::X => "x",
            Sym::G => "g",
            Sym::W => "w",
            Sym::T => "t",
            Sym::Lr => "lr",
            Sym::Beta1 => "beta1",
            Sym::Beta2 => "beta2",
            Sym::Wd => "wd",
            Sym::Eps => "eps",
            Sym::M => "m",
            Sym::V => "v",
            Sym::U => "u",
            Sym::S => "s",
        }
    }

    /// Whether the symbol holds one number (a hyperparameter or the step) rather than a tensor.
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            Sym::T | Sym::Lr | Sym::Beta1 | Sym::Beta2 | Sym::Wd | Sym::Eps
        )
    }

    pub fn is_state(self) -> bool {
        matches!(self, Sym::M | Sym::V | Sym::U | Sym::S)
    }

    /// The symbol's bit in [`Ctx::bound`] (state symbols only).
    pub fn bit(self) -> u8 {
        match self {
            Sym::M => 1,
            Sym::V => 2,
            Sym::U => 4,
            Sym::S => 8,
            _ => 0,
        }
    }
}

/// Numbers in programs are kept in millionths, so that operations stay `Eq` and `Hash` and a
/// number prints back as written.
pub const CONST_SCALE: f64 = 1e6;

/// Why arguments do not make an operation (or a number a constant). The text is what
/// validation and grammar errors show after the location.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ArgError {
    #[error("the number {0} is too large for a constant")]
    ConstTooLarge(f64),
    #[error("the number {0} has more than 6 decimal places; constants are written to millionths")]
    ConstPrecision(f64),
    #[error("{what} must be one of {allowed:?}, not {value}")]
    NotOneOf {
        what: &'static str,
        value: u32,
        allowed: &'static [u32],
    },
    #[error("{what} must be between 1 and {max}, not {value}")]
    OutOfRange {
        what: &'static str,
        value: u32,
        max: u32,
    },
    #[error("input must be 0 (the cell's input) or an earlier node 1 to {last}, not {value}")]
    GnnInput { value: u32, last: usize },
    #[error("padding must be smaller than the kernel ({kernel}), not {padding}")]
    Padding { kernel: u32, padding: u32 },
    #[error("`{name}` takes no arguments, but {given} were given")]
    NoArguments { name: &'static str, given: usize },
    #[error("`{name}` takes {} argument(s) ({}), but {given} were given", params.len(), params.join(", "))]
    Arity {
        name: &'static str,
        params: &'static [&'static str],
        given: usize,
    },
}

/// The constant `x` in millionths, or why it cannot be one.
pub fn const_micros(x: f64) -> Result<i64, ArgError> {
    let scaled = x * CONST_SCALE;
    if !scaled.is_finite() || scaled.abs() > 1e15 {
        return Err(ArgError::ConstTooLarge(x));
    }
    let r = scaled.round();
    if (scaled - r).abs() > 1e-3 {
        return Err(ArgError::ConstPrecision(x));
    }
    Ok(r as i64)
}

/// One instance of a built-in operation, with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    // einspace computations
    Identity,
    Linear(u32),
    Norm,
    LeakyRelu,
    Softmax,
    PosEnc,
    // einspace routing
    Permute(Perm),
    Im2Col {
        k: u32,
        s: u32,
        p: u32,
    },
    Col2Im,
    // einspace branching
    Clone(u32),
    Group {
        k: u32,
        dim: u32,
    },
    // einspace aggregation
    DotProduct,
    ScaledDotProduct,
    Add,
    Cat {
        dim: u32,
        k: u32,
    },
    // NAS-Bench-201 cell edges
    Zero,
    SkipConnect,
    NorConv(u32),
    AvgPool3,
    // vector (MLP) computations
    Relu,
    Gelu,
    Tanh,
    Silu,
    Sigmoid,
    BatchNorm,
    /// A NAS-Bench-Graph node: a GNN operation and its input (0 the cell's input, j node j).
    Gnn(super::gnn::Gnn, u8),
    // program values
    Sym(Sym),
    /// A number, in millionths (see [`CONST_SCALE`]).
    Const(i64),
}

/// The static description of an operation family: its name, parameters and rule in words.
pub struct OpSpec {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub kind: Kind,
    /// The shape rule and meaning, in words a person or a language model can act on.
    pub rule: &'static str,
    build: fn(&[u32]) -> Result<Op, ArgError>,
}

fn one_of(what: &'static str, v: u32, allowed: &'static [u32]) -> Result<u32, ArgError> {
    if allowed.contains(&v) {
        Ok(v)
    } else {
        Err(ArgError::NotOneOf {
            what,
            value: v,
            allowed,
        })
    }
}

fn positive(what: &'static str, v: u32, max: u32) -> Result<u32, ArgError> {
    if v == 0 || v > max {
        Err(ArgError::OutOfRange {
            what,
            value: v,
            max,
        })
    } else {
        Ok(v)
    }
}

fn gnn_input(v: u32) -> Result<u8, ArgError> {
    if v < super::gnn::NODES as u32 {
        Ok(v as u8)
    } else {
        Err(ArgError::GnnInput {
            value: v,
            last: super::gnn::NODES - 1,
        })
    }
}

macro_rules! spec {
    ($name:literal, [$($p:literal),*], $kind:ident, $rule:literal, $build:expr) => {
        OpSpec { name: $name, params: &[$($p),*], kind: Kind::$kind, rule: $rule, build: $build }
    };
}

/// Every operation family, in the order `archsmith space show` lists them.
pub static OPS: &[OpSpec] = &[
    spec!("identity", [], Unary, "returns its input unchanged", |_| Ok(Op::Identity)),
    spec!("linear", ["d"], Unary,
        "a learned affine map of the last dimension to d features (weights and bias); any mode",
        |a| Ok(Op::Linear(positive("d", a[0], 1 << 16)?))),
    spec!("norm", [], Unary,
        "LayerNorm over the last dimension for vec and col tensors, BatchNorm over channels for im tensors",
        |_| Ok(Op::Norm)),
    spec!("leakyrelu", [], Unary, "elementwise leaky ReLU (slope 0.01); any mode", |_| Ok(Op::LeakyRelu)),
    spec!("softmax", [], Unary, "softmax over the last dimension; any mode", |_| Ok(Op::Softmax)),
    spec!("pos_enc", [], Unary,
        "adds a learned tensor of the input's shape (without batch); col or im tensors",
        |_| Ok(Op::PosEnc)),
    spec!("permute21", [], Unary, "swaps the two dimensions of a col tensor: SxD -> DxS", |_| Ok(Op::Permute(Perm::P21))),
    spec!("permute132", [], Unary, "im tensors only: CxHxW -> CxWxH", |_| Ok(Op::Permute(Perm::P132))),
    spec!("permute213", [], Unary, "im tensors only: CxHxW -> HxCxW", |_| Ok(Op::Permute(Perm::P213))),
    spec!("permute231", [], Unary, "im tensors only: CxHxW -> HxWxC", |_| Ok(Op::Permute(Perm::P231))),
    spec!("permute312", [], Unary, "im tensors only: CxHxW -> WxCxH", |_| Ok(Op::Permute(Perm::P312))),
    spec!("permute321", [], Unary, "im tensors only: CxHxW -> WxHxC", |_| Ok(Op::Permute(Perm::P321))),
    spec!("im2col", ["kernel", "stride", "padding"], Unary,
        "im -> col: unfolds kxk patches, CxHxW -> LxD with L = H'*W', D = C*k*k, H' = floor((H + 2p - k)/s) + 1; the kernel must fit the padded image; records H'xW' for col2im",
        |a| {
            let k = positive("kernel", a[0], 64)?;
            let s = positive("stride", a[1], 64)?;
            if a[2] >= k {
                return Err(ArgError::Padding { kernel: k, padding: a[2] });
            }
            Ok(Op::Im2Col { k, s, p: a[2] })
        }),
    spec!("col2im", [], Unary,
        "col -> im: folds LxD back to DxH'xW' using H'xW' recorded by the nearest enclosing im2col; needs L = H'*W'",
        |_| Ok(Op::Col2Im)),
    spec!("clone", ["k"], Split, "k copies of the input", |a| Ok(Op::Clone(one_of("k", a[0], &[2, 4, 8])?))),
    spec!("group", ["k", "dim"], Split,
        "splits dimension dim (1-based after batch) into k equal parts; dim must exist and be divisible by k",
        |a| Ok(Op::Group { k: one_of("k", a[0], &[2, 4, 8])?, dim: one_of("dim", a[1], &[1, 2, 3])? })),
    spec!("dot_product", [], Merge,
        "matrix product of exactly two tensors a @ b over the last two dimensions: needs a's last dimension = b's second-to-last (and equal leading dimensions); col tensors SxD @ DxE -> SxE",
        |_| Ok(Op::DotProduct)),
    spec!("scaled_dot_product", [], Merge,
        "like dot_product, times 1/sqrt(a's last dimension)",
        |_| Ok(Op::ScaledDotProduct)),
    spec!("add", [], Merge, "elementwise sum; all inputs must have identical shapes", |_| Ok(Op::Add)),
    spec!("cat", ["dim", "k"], Merge,
        "concatenates exactly k tensors along dim (1-based after batch); the other dimensions must be equal",
        |a| Ok(Op::Cat { dim: one_of("dim", a[0], &[1, 2, 3])?, k: one_of("k", a[1], &[2, 4, 8])? })),
    spec!("none", [], Unary, "NAS-Bench-201 edge: outputs zeros of the input's shape (drops the edge); im tensors", |_| Ok(Op::Zero)),
    spec!("skip_connect", [], Unary, "NAS-Bench-201 edge: identity; im tensors", |_| Ok(Op::SkipConnect)),
    spec!("nor_conv_1x1", [], Unary, "NAS-Bench-201 edge: ReLU, 1x1 convolution C->C without bias, BatchNorm; im tensors", |_| Ok(Op::NorConv(1))),
    spec!("nor_conv_3x3", [], Unary, "NAS-Bench-201 edge: ReLU, 3x3 convolution C->C (padding 1) without bias, BatchNorm; im tensors", |_| Ok(Op::NorConv(3))),
    spec!("avg_pool_3x3", [], Unary, "NAS-Bench-201 edge: 3x3 average pooling, stride 1, padding 1 (padding not counted); im tensors", |_| Ok(Op::AvgPool3)),
    spec!("relu", [], Unary, "elementwise ReLU; any mode", |_| Ok(Op::Relu)),
    spec!("gelu", [], Unary, "elementwise GELU (exact, erf form); any mode", |_| Ok(Op::Gelu)),
    spec!("tanh", [], Unary, "elementwise tanh; any mode", |_| Ok(Op::Tanh)),
    spec!("silu", [], Unary, "elementwise SiLU (x * sigmoid(x)); any mode", |_| Ok(Op::Silu)),
    spec!("sigmoid", [], Unary, "elementwise logistic sigmoid; any mode", |_| Ok(Op::Sigmoid)),
    spec!("batchnorm", [], Unary,
        "BatchNorm over the last dimension of a vec tensor (features), over channels of an im tensor",
        |_| Ok(Op::BatchNorm)),
    spec!("gat", ["input"], Unary,
        "NAS-Bench-Graph node: graph attention (2 heads) applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Gat, gnn_input(a[0])?))),
    spec!("gcn", ["input"], Unary,
        "NAS-Bench-Graph node: graph convolution (Kipf & Welling) applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Gcn, gnn_input(a[0])?))),
    spec!("gin", ["input"], Unary,
        "NAS-Bench-Graph node: graph isomorphism network layer applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Gin, gnn_input(a[0])?))),
    spec!("cheb", ["input"], Unary,
        "NAS-Bench-Graph node: Chebyshev spectral convolution applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Cheb, gnn_input(a[0])?))),
    spec!("sage", ["input"], Unary,
        "NAS-Bench-Graph node: GraphSAGE applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Sage, gnn_input(a[0])?))),
    spec!("arma", ["input"], Unary,
        "NAS-Bench-Graph node: ARMA graph convolution applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Arma, gnn_input(a[0])?))),
    spec!("graph", ["input"], Unary,
        "NAS-Bench-Graph node: k-GNN graph convolution applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Graph, gnn_input(a[0])?))),
    spec!("fc", ["input"], Unary,
        "NAS-Bench-Graph node: fully connected layer (ignores the edges) applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Fc, gnn_input(a[0])?))),
    spec!("skip", ["input"], Unary,
        "NAS-Bench-Graph node: skip connection (identity) applied to its input (0 the cell's input, j the output of node j, earlier than this node); only inside nbgraph(...)",
        |a| Ok(Op::Gnn(super::gnn::Gnn::Skip, gnn_input(a[0])?))),
    spec!("x", [], Value, "tensor: the activation function's input", |_| Ok(Op::Sym(Sym::X))),
    spec!("g", [], Value, "tensor: the gradient of the loss for this parameter tensor", |_| Ok(Op::Sym(Sym::G))),
    spec!("w", [], Value, "tensor: the parameter tensor before this step", |_| Ok(Op::Sym(Sym::W))),
    spec!("t", [], Value, "scalar: the step number, 1 at the first update", |_| Ok(Op::Sym(Sym::T))),
    spec!("lr", [], Value, "scalar: the learning rate (tuned over a grid per program)", |_| Ok(Op::Sym(Sym::Lr))),
    spec!("beta1", [], Value, "scalar hyperparameter, 0.9 by default", |_| Ok(Op::Sym(Sym::Beta1))),
    spec!("beta2", [], Value, "scalar hyperparameter, 0.999 by default", |_| Ok(Op::Sym(Sym::Beta2))),
    spec!("wd", [], Value, "scalar: the weight decay, 0.01 by default", |_| Ok(Op::Sym(Sym::Wd))),
    spec!("eps", [], Value, "scalar: a small number, 1e-8 by default", |_| Ok(Op::Sym(Sym::Eps))),
    spec!("m", [], Value, "tensor: state declared with state(...), zero at the first step, kept across steps", |_| Ok(Op::Sym(Sym::M))),
    spec!("v", [], Value, "tensor: state declared with state(...), zero at the first step, kept across steps", |_| Ok(Op::Sym(Sym::V))),
    spec!("u", [], Value, "tensor: state declared with state(...), zero at the first step, kept across steps", |_| Ok(Op::Sym(Sym::U))),
    spec!("s", [], Value, "tensor: state declared with state(...), zero at the first step, kept across steps", |_| Ok(Op::Sym(Sym::S))),
];

/// The spec of the family called `name`, if there is one.
pub fn spec(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|s| s.name == name)
}

impl OpSpec {
    /// Builds an instance from arguments, checking their number and values.
    pub fn build(&self, args: &[u32]) -> Result<Op, ArgError> {
        if args.len() != self.params.len() {
            return Err(if self.params.is_empty() {
                ArgError::NoArguments {
                    name: self.name,
                    given: args.len(),
                }
            } else {
                ArgError::Arity {
                    name: self.name,
                    params: self.params,
                    given: args.len(),
                }
            });
        }
        (self.build)(args)
    }
}

/// A saturating product, for counts.
pub fn mul(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// Context an operation sees besides its input: state that flows from enclosing nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ctx {
    /// The H'xW' recorded by the nearest enclosing `im2col`, for `col2im`.
    pub fold: Option<(u64, u64)>,
    /// Inside `nbgraph(...)`: the position (1 to 4) of the node being checked, whose input
    /// must be an earlier node; 0 elsewhere, where GNN operations do not apply.
    pub cell: u8,
    /// In programs: the state tensors declared so far ([`Sym::bit`]), so that the sampler
    /// draws only state that exists; [`Ctx::DECLARING`] inside `state(...)`.
    pub bound: u8,
}

impl Ctx {
    /// Inside `state(...)`, where any state symbol may be named.
    pub const DECLARING: u8 = 0x80;

    /// Whether a program may read or name `s` here.
    pub fn binds(&self, s: Sym) -> bool {
        !s.is_state() || self.bound & (s.bit() | Ctx::DECLARING) != 0
    }
}

/// A shape rule that did not hold: what was wrong, in words, plus the rule that was broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub message: String,
    pub rule: &'static str,
}

/// Builds the error of a broken rule. Rules report through a function taking lazy
/// `fmt::Arguments`, so that callers that only ask "does it fit?" (the sampler) never format.
pub fn rule_error(rule: &'static str, message: fmt::Arguments<'_>) -> RuleError {
    RuleError {
        message: message.to_string(),
        rule,
    }
}

/// Discards a broken rule's details (for fit checks).
pub fn no_detail(_: &'static str, _: fmt::Arguments<'_>) {}

/// Shapes listed for messages, formatted only when shown.
struct ShapeList<'a>(&'a [Shape]);

impl fmt::Display for ShapeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Identity => "identity",
            Op::Linear(_) => "linear",
            Op::Norm => "norm",
            Op::LeakyRelu => "leakyrelu",
            Op::Softmax => "softmax",
            Op::PosEnc => "pos_enc",
            Op::Permute(p) => p.name(),
            Op::Im2Col { .. } => "im2col",
            Op::Col2Im => "col2im",
            Op::Clone(_) => "clone",
            Op::Group { .. } => "group",
            Op::DotProduct => "dot_product",
            Op::ScaledDotProduct => "scaled_dot_product",
            Op::Add => "add",
            Op::Cat { .. } => "cat",
            Op::Zero => "none",
            Op::SkipConnect => "skip_connect",
            Op::NorConv(1) => "nor_conv_1x1",
            Op::NorConv(_) => "nor_conv_3x3",
            Op::AvgPool3 => "avg_pool_3x3",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::Tanh => "tanh",
            Op::Silu => "silu",
            Op::Sigmoid => "sigmoid",
            Op::BatchNorm => "batchnorm",
            Op::Gnn(g, _) => g.name(),
            Op::Sym(s) => s.name(),
            Op::Const(_) => "const",
        }
    }

    /// The value of a constant.
    pub fn const_value(&self) -> Option<f64> {
        match *self {
            Op::Const(c) => Some(c as f64 / CONST_SCALE),
            _ => None,
        }
    }

    pub fn args(&self) -> Vec<u32> {
        match *self {
            Op::Linear(d) => vec![d],
            Op::Im2Col { k, s, p } => vec![k, s, p],
            Op::Clone(k) => vec![k],
            Op::Group { k, dim } => vec![k, dim],
            Op::Cat { dim, k } => vec![dim, k],
            Op::Gnn(_, input) => vec![input as u32],
            _ => vec![],
        }
    }

    pub fn spec(&self) -> &'static OpSpec {
        // Every Op's name is in OPS; a test checks it.
        spec(self.name()).unwrap_or(&OPS[0])
    }

    pub fn kind(&self) -> Kind {
        match self {
            Op::Clone(_) | Op::Group { .. } => Kind::Split,
            Op::DotProduct | Op::ScaledDotProduct | Op::Add | Op::Cat { .. } => Kind::Merge,
            Op::Sym(_) | Op::Const(_) => Kind::Value,
            _ => Kind::Unary,
        }
    }

    /// The shape a unary operation produces from `x`.
    pub fn apply(&self, x: Shape, ctx: &Ctx) -> Result<Shape, RuleError> {
        self.apply_with(x, ctx, rule_error)
    }

    /// [`Op::apply`] reporting a broken rule through `fail`.
    pub fn apply_with<E>(
        &self,
        x: Shape,
        ctx: &Ctx,
        fail: impl FnOnce(&'static str, fmt::Arguments<'_>) -> E,
    ) -> Result<Shape, E> {
        let mode = x.mode();
        match *self {
            Op::Identity | Op::LeakyRelu | Op::Softmax | Op::Relu | Op::Gelu | Op::Tanh => Ok(x),
            Op::Silu | Op::Sigmoid | Op::Norm => Ok(x),
            Op::Linear(d) => Ok(x.with_last(d as u64)),
            Op::PosEnc => match mode {
                Mode::Vec => Err(fail(
                    "pos_enc needs positions: a col or im tensor",
                    format_args!("cannot add a positional encoding to a plain vector of {x}"),
                )),
                _ => Ok(x),
            },
            Op::BatchNorm => match mode {
                Mode::Col => Err(fail(
                    "batchnorm applies to vec or im tensors",
                    format_args!("batchnorm got a col tensor {x}; use norm for sequences"),
                )),
                _ => Ok(x),
            },
            Op::Permute(p) => {
                let want = p.order().len();
                if x.rank() != want {
                    let rule = if want == 2 {
                        "permute21 applies to col tensors (SxD) only"
                    } else {
                        "4-d permutations apply to im tensors (CxHxW) only"
                    };
                    return Err(fail(
                        rule,
                        format_args!("got {x}, a tensor in {} mode", mode.name()),
                    ));
                }
                let d = x.dims();
                let v: Vec<u64> = p.order().iter().map(|&i| d[i]).collect();
                Ok(Shape::new(&v).unwrap_or(x))
            }
            Op::Im2Col { k, s, p } => {
                if mode != Mode::Im {
                    return Err(fail(
                        "im2col needs an im tensor (CxHxW)",
                        format_args!("got {x}, a tensor in {} mode", mode.name()),
                    ));
                }
                let (c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2]);
                let (k, s, p) = (k as u64, s as u64, p as u64);
                if h.saturating_add(2 * p) < k || w.saturating_add(2 * p) < k {
                    return Err(fail(
                        "im2col's kernel must fit the padded image",
                        format_args!("a {k}x{k} kernel does not fit {h}x{w} with padding {p}"),
                    ));
                }
                let ho = (h + 2 * p - k) / s + 1;
                let wo = (w + 2 * p - k) / s + 1;
                Ok(Shape::col(mul(&[ho, wo]), mul(&[c, k, k])))
            }
            Op::Col2Im => {
                if mode != Mode::Col {
                    return Err(fail(
                        "col2im needs a col tensor (LxD)",
                        format_args!("got {x}, a tensor in {} mode", mode.name()),
                    ));
                }
                let Some((h, w)) = ctx.fold else {
                    return Err(fail(
                        "col2im folds to the H'xW' of the nearest enclosing im2col",
                        format_args!("there is no enclosing im2col to take the image size from"),
                    ));
                };
                let (l, d) = (x.dims()[0], x.dims()[1]);
                if l != mul(&[h, w]) {
                    return Err(fail(
                        "col2im needs L = H'*W' of the enclosing im2col",
                        format_args!("{l} positions cannot fold to {h}x{w}"),
                    ));
                }
                Ok(Shape::im(d, h, w))
            }
            Op::Zero | Op::SkipConnect | Op::NorConv(_) | Op::AvgPool3 => {
                if mode != Mode::Im {
                    return Err(fail(
                        "NAS-Bench-201 edge operations apply to im tensors",
                        format_args!("got {x}, a tensor in {} mode", mode.name()),
                    ));
                }
                Ok(x)
            }
            Op::Gnn(_, input) => {
                if ctx.cell == 0 {
                    return Err(fail(
                        "GNN operations (gat, gcn, ..., skip) stand only as the nodes of nbgraph(...)",
                        format_args!("{self} is outside an nbgraph cell"),
                    ));
                }
                if input >= ctx.cell {
                    return Err(fail(
                        "node i of an nbgraph cell reads the cell's input (0) or an earlier node (1 to i-1)",
                        format_args!("node {} cannot read {input}", ctx.cell),
                    ));
                }
                Ok(x)
            }
            Op::Sym(_) | Op::Const(_) => Err(fail(
                "program values (symbols such as x, g, lr and numbers) stand only in activation functions and update rules",
                format_args!("{self} is not an operation on tensors"),
            )),
            Op::Clone(_)
            | Op::Group { .. }
            | Op::DotProduct
            | Op::ScaledDotProduct
            | Op::Add
            | Op::Cat { .. } => Err(fail(
                "branching and aggregation operations stand only in branch(...)",
                format_args!("{} is not a one-input operation", self.name()),
            )),
        }
    }

    /// How many tensors a branching operation makes from `x`, and their shape.
    pub fn split(&self, x: Shape) -> Result<(usize, Shape), RuleError> {
        self.split_with(x, rule_error)
    }

    /// [`Op::split`] reporting a broken rule through `fail`.
    pub fn split_with<E>(
        &self,
        x: Shape,
        fail: impl FnOnce(&'static str, fmt::Arguments<'_>) -> E,
    ) -> Result<(usize, Shape), E> {
        match *self {
            Op::Clone(k) => Ok((k as usize, x)),
            Op::Group { k, dim } => {
                let Some(n) = x.dim(dim as usize) else {
                    return Err(fail(
                        "group's dim must exist: 1..2 for col tensors, 1..3 for im tensors",
                        format_args!("{x} ({} mode) has no dimension {dim}", x.mode().name()),
                    ));
                };
                if n % k as u64 != 0 {
                    return Err(fail(
                        "group(k, dim) needs that dimension divisible by k",
                        format_args!("dimension {dim} of {x} is {n}, not divisible by {k}"),
                    ));
                }
                Ok((k as usize, x.with_dim(dim as usize, n / k as u64)))
            }
            _ => Err(fail(
                "the first part of branch(...) must be a branching operation",
                format_args!("{} does not branch", self.name()),
            )),
        }
    }

    /// The shape an aggregation operation makes from the branch outputs `xs`.
    pub fn merge(&self, xs: &[Shape]) -> Result<Shape, RuleError> {
        self.merge_with(xs, rule_error)
    }

    /// [`Op::merge`] reporting a broken rule through `fail`.
    pub fn merge_with<E>(
        &self,
        xs: &[Shape],
        fail: impl FnOnce(&'static str, fmt::Arguments<'_>) -> E,
    ) -> Result<Shape, E> {
        let shapes = ShapeList(xs);
        match *self {
            Op::DotProduct | Op::ScaledDotProduct => {
                if xs.len() != 2 {
                    return Err(fail(
                        "dot_product multiplies exactly two tensors",
                        format_args!("got {} branches", xs.len()),
                    ));
                }
                let (a, b) = (xs[0], xs[1]);
                if a.rank() != b.rank() || a.rank() < 2 {
                    return Err(fail(
                        "dot_product needs two col or two im tensors",
                        format_args!("cannot multiply {a} by {b}"),
                    ));
                }
                let r = a.rank();
                let (ad, bd) = (a.dims(), b.dims());
                if ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
                    return Err(fail(
                        "dot_product needs a's last dimension = b's second-to-last, leading dimensions equal",
                        format_args!("cannot multiply {a} by {b}"),
                    ));
                }
                Ok(a.with_last(bd[r - 1]))
            }
            Op::Add => {
                if xs.windows(2).any(|w| w[0] != w[1]) {
                    return Err(fail(
                        "add needs identical shapes",
                        format_args!("cannot add {shapes}"),
                    ));
                }
                Ok(xs[0])
            }
            Op::Cat { dim, k } => {
                if xs.len() != k as usize {
                    return Err(fail(
                        "cat(dim, k) joins exactly k branches",
                        format_args!("cat(.., {k}) got {} branches", xs.len()),
                    ));
                }
                let d = dim as usize;
                let first = xs[0];
                if first.dim(d).is_none() {
                    return Err(fail(
                        "cat's dim must exist in its inputs",
                        format_args!("{first} has no dimension {dim}"),
                    ));
                }
                let mut total = 0;
                for s in xs {
                    if s.rank() != first.rank() || s.with_dim(d, 1) != first.with_dim(d, 1) {
                        return Err(fail(
                            "cat needs all dimensions but dim equal",
                            format_args!("cannot concatenate {shapes} along dimension {dim}"),
                        ));
                    }
                    total = s.dims()[d - 1].saturating_add(total);
                }
                Ok(first.with_dim(d, total))
            }
            _ => Err(fail(
                "the last part of branch(...) must be an aggregation operation",
                format_args!("{} does not aggregate", self.name()),
            )),
        }
    }

    /// Learnable parameters for input `x` (not buffers such as BatchNorm running statistics).
    /// Shapes are bounded by the checker, so these counts fit in u64; they saturate anyway.
    pub fn params(&self, x: Shape) -> u64 {
        match *self {
            Op::Linear(d) => mul(&[x.last(), d as u64]).saturating_add(d as u64),
            Op::Norm => match x.mode() {
                Mode::Im => 2 * x.dims()[0],
                _ => 2 * x.last(),
            },
            Op::BatchNorm => 2 * x.features(),
            Op::PosEnc => x.numel(),
            Op::NorConv(k) => {
                let c = x.dims()[0];
                mul(&[c, c, (k * k) as u64]).saturating_add(2 * c)
            }
            _ => 0,
        }
    }

    /// Forward FLOPs for one example (a multiply-add counts two), from input and output shapes.
    pub fn flops(&self, x: Shape, y: Shape) -> u64 {
        match *self {
            Op::Linear(d) => mul(&[2, x.numel(), d as u64]),
            Op::Norm | Op::BatchNorm => mul(&[5, x.numel()]),
            Op::Softmax => mul(&[3, x.numel()]),
            Op::LeakyRelu | Op::Relu | Op::PosEnc => x.numel(),
            Op::Gelu | Op::Tanh | Op::Silu | Op::Sigmoid => mul(&[4, x.numel()]),
            Op::NorConv(k) => {
                let c = x.dims()[0];
                mul(&[2, c, (k * k) as u64, y.numel()]).saturating_add(mul(&[6, y.numel()]))
            }
            Op::AvgPool3 => mul(&[9, y.numel()]),
            _ => 0,
        }
    }

    /// FLOPs of an aggregation for one example.
    pub fn merge_flops(&self, xs: &[Shape], y: Shape) -> u64 {
        match *self {
            Op::DotProduct => mul(&[2, y.numel(), xs[0].last()]),
            Op::ScaledDotProduct => mul(&[2, y.numel(), xs[0].last()]).saturating_add(y.numel()),
            Op::Add => mul(&[xs.len() as u64 - 1, y.numel()]),
            _ => 0,
        }
    }

    /// Whether the operation is a pure view or copy of data (routing, identity): used by
    /// features to tell computation from routing.
    pub fn is_routing(&self) -> bool {
        matches!(
            self,
            Op::Identity | Op::Permute(_) | Op::Im2Col { .. } | Op::Col2Im | Op::SkipConnect
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(x) = self.const_value() {
            return write!(f, "{x}");
        }
        f.write_str(self.name())?;
        let args = self.args();
        if !args.is_empty() {
            f.write_str("(")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_spec_that_builds_it_back() {
        let samples = [
            Op::Identity,
            Op::Linear(64),
            Op::Norm,
            Op::LeakyRelu,
            Op::Softmax,
            Op::PosEnc,
            Op::Permute(Perm::P21),
            Op::Permute(Perm::P321),
            Op::Im2Col { k: 3, s: 1, p: 1 },
            Op::Col2Im,
            Op::Clone(4),
            Op::Group { k: 2, dim: 3 },
            Op::DotProduct,
            Op::ScaledDotProduct,
            Op::Add,
            Op::Cat { dim: 1, k: 2 },
            Op::Zero,
            Op::SkipConnect,
            Op::NorConv(1),
            Op::NorConv(3),
            Op::AvgPool3,
            Op::Relu,
            Op::Gelu,
            Op::Tanh,
            Op::Silu,
            Op::Sigmoid,
            Op::BatchNorm,
            Op::Gnn(crate::space::gnn::Gnn::Sage, 2),
            Op::Gnn(crate::space::gnn::Gnn::Skip, 0),
        ];
        for op in samples {
            let s = spec(op.name()).unwrap();
            assert_eq!(s.build(&op.args()).unwrap(), op);
            assert_eq!(s.kind, op.kind());
        }
    }

    #[test]
    fn convolution_shapes() {
        let x = Shape::im(3, 32, 32);
        let y = Op::Im2Col { k: 3, s: 2, p: 1 }
            .apply(x, &Ctx::default())
            .unwrap();
        assert_eq!(y, Shape::col(256, 27));
        let ctx = Ctx {
            fold: Some((16, 16)),
            ..Ctx::default()
        };
        let z = Op::Col2Im.apply(Shape::col(256, 64), &ctx).unwrap();
        assert_eq!(z, Shape::im(64, 16, 16));
        let e = Op::Col2Im
            .apply(
                Shape::col(64, 8),
                &Ctx {
                    fold: Some((7, 7)),
                    ..Ctx::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.message, "64 positions cannot fold to 7x7");
    }

    #[test]
    fn attention_product() {
        let a = Shape::col(64, 32);
        let bt = Shape::col(32, 64);
        assert_eq!(Op::DotProduct.merge(&[a, bt]).unwrap(), Shape::col(64, 64));
        assert!(Op::DotProduct.merge(&[a, a]).is_err());
    }
}
