//! Compiles a validated candidate to a tch network: a tree of boxed layers, built by free
//! functions under a `VarStore` path, that mirrors the candidate tree node for node.
//!
//! Shapes are tracked with the same rules the validator uses (`Op::apply/split/merge`), so
//! `col2im` knows the grid of its enclosing `im2col` and every layer is built for the width it
//! will see. Parameters are exactly those `Op::params` and `nb201_counts` count (a test checks
//! it); BatchNorm running statistics are buffers, not parameters.
//!
//! Layers run with fallible tch calls and return `Result`, so that a runtime error (most
//! importantly CUDA out of memory) becomes a training failure instead of a panic. Under mixed
//! precision (bf16 inputs), weights are cast to the input's kind at use and normalisations run
//! in float32: the master weights stay float32.

use archsmith::space::check::{NB201_C, NB201_N};
use archsmith::space::fuse;
use archsmith::space::ops::{Ctx, Op};
use archsmith::space::{Form, Mode, Node, Shape};
use std::sync::Mutex;
use tch::nn::{self, Init};
use tch::{Kind, TchError, Tensor};

/// One layer of a compiled network. `train` selects batch statistics in BatchNorm.
pub trait Layer: Send {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError>;
}

/// Why a candidate could not be compiled. Validated candidates always compile; these name
/// what was wrong with an unvalidated one.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{node}: {message}")]
    Shape { node: String, message: String },
    #[error("cannot create the parameters of {node}: {source}")]
    Torch {
        node: String,
        #[source]
        source: TchError,
    },
}

/// A compiled candidate with its head: mean over positions, then a linear layer to the classes.
pub struct Network {
    backbone: Box<dyn Layer>,
    head: Linear,
    /// The dimensions the head averages over (2,3 for images, 1 or 2 for sequences as the
    /// head reads them, none for vectors).
    pool: &'static [i64],
    /// The backbone's output shape, as the validator inferred it.
    pub output: Shape,
    /// Whether images enter channels-last on CUDA (when convolutions were fused: cuDNN's
    /// NHWC kernels are the fast ones, above all with bf16 tensor cores; on the CPU oneDNN
    /// gains nothing measurable, so the layout stays).
    channels_last: bool,
}

impl Network {
    /// Logits for a batch: float32, or float64 for a float64 network.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let y = if self.channels_last && x.dim() == 4 && x.device().is_cuda() {
            self.backbone.forward(&to_channels_last(x)?, train)?
        } else {
            self.backbone.forward(x, train)?
        };
        let y = if self.pool.is_empty() {
            y
        } else {
            y.f_mean_dim(self.pool, false, None::<Kind>)?
        };
        let logits = self.head.forward(&y, train)?;
        // Mixed precision gives float32 logits; float32 and float64 networks keep theirs.
        Ok(match logits.kind() {
            Kind::Float | Kind::Double => logits,
            _ => logits.to_kind(Kind::Float),
        })
    }

    /// The backbone's output (before the head), for checking shapes.
    pub fn backbone(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        self.backbone.forward(x, train)
    }
}

/// Parameter initialisation draws from torch's global generator; holding this lock while
/// seeding and building keeps concurrent compilations (tests, parallel workers) from
/// interleaving their draws, so the same seed gives the same weights.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// How a candidate is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Run the subtrees that `space::fuse` recognises (convolutions, attention) as one library
    /// kernel each. Same function, parameters (names, shapes, initialisation) either way.
    pub fuse: bool,
    /// How the head reads a sequence (a recipe's `head`).
    pub head: archsmith::space::Head,
}

impl CompileOptions {
    /// Fused or literal, with the default head.
    pub fn with_fuse(fuse: bool) -> Self {
        CompileOptions {
            fuse,
            head: archsmith::space::Head::default(),
        }
    }
}

impl Default for CompileOptions {
    /// Fusion on, unless the environment variable `ARCHSMITH_FUSE` is `0`, `off` or `false`.
    fn default() -> Self {
        CompileOptions {
            fuse: fuse::from_env(true),
            head: archsmith::space::Head::default(),
        }
    }
}

/// Builds the network for `node` on input `input` under `p`, seeding the initialisation with
/// `seed`. `classes` sizes the head. Fuses unless `ARCHSMITH_FUSE=0`.
pub fn compile(
    p: &nn::Path,
    node: &Node,
    input: Shape,
    classes: u64,
    seed: u64,
) -> Result<Network, CompileError> {
    compile_with(p, node, input, classes, seed, CompileOptions::default())
}

/// [`compile`] with explicit options.
pub fn compile_with(
    p: &nn::Path,
    node: &Node,
    input: Shape,
    classes: u64,
    seed: u64,
    opts: CompileOptions,
) -> Result<Network, CompileError> {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    let b = Builder { fuse: opts.fuse };
    let channels_last = opts.fuse && fuse::count(node, input).0 > 0;
    let (backbone, output) = b.build(&(p / "net"), node, input, Ctx::default())?;
    let head = linear(
        &(p / "head"),
        output.head_width(opts.head) as i64,
        classes as i64,
    )
    .map_err(|source| torch_err("the head", source))?;
    let pool = output.head_pool(opts.head);
    Ok(Network {
        backbone,
        head,
        pool,
        output,
        channels_last,
    })
}

fn torch_err(node: impl ToString, source: TchError) -> CompileError {
    CompileError::Torch {
        node: node.to_string(),
        source,
    }
}

fn shape_err(node: &Node, message: String) -> CompileError {
    CompileError::Shape {
        node: archsmith::space::node::abbreviate(&node.to_string(), 80),
        message,
    }
}

/// Builds layers; with `fuse`, the subtrees `space::fuse` recognises become fused layers.
struct Builder {
    fuse: bool,
}

impl Builder {
    /// Builds one node for input `x`; returns the layer and its output shape.
    fn build(
        &self,
        p: &nn::Path,
        node: &Node,
        x: Shape,
        ctx: Ctx,
    ) -> Result<(Box<dyn Layer>, Shape), CompileError> {
        if self.fuse {
            if let Some(c) = fuse::conv(node, x) {
                return self.conv(p, node, &c, x, ctx);
            }
            if let Some(m) = fuse::multi_head(node, x) {
                return self.multi_head(p, node, &m, x);
            }
            if let Some(a) = fuse::attention(node, x) {
                return self.attention(p, node, &a, x, ctx);
            }
        }
        match node {
            Node::Op(op) => {
                let y = op.apply(x, &ctx).map_err(|e| shape_err(node, e.message))?;
                let layer = op_layer(p, *op, x, ctx).map_err(|e| torch_err(op, e))?;
                Ok((layer, y))
            }
            Node::Form(Form::Seq, ch) => {
                let mut layers = Vec::with_capacity(ch.len());
                let mut cur = x;
                for (i, c) in ch.iter().enumerate() {
                    let (l, y) = self.build(&(p / i), c, cur, ctx)?;
                    layers.push(l);
                    cur = y;
                }
                Ok((Box::new(Seq(layers)), cur))
            }
            Node::Form(Form::Route, ch) if ch.len() == 3 => {
                let (pre, y) = self.build(&(p / 0), &ch[0], x, ctx)?;
                let inner = match &ch[0] {
                    Node::Op(op) => op.fold_size(x).map(|hw| Ctx {
                        fold: Some(hw),
                        ..ctx
                    }),
                    _ => None,
                }
                .unwrap_or(ctx);
                let (m, z) = self.build(&(p / 1), &ch[1], y, inner)?;
                let (post, out) = self.build(&(p / 2), &ch[2], z, inner)?;
                Ok((Box::new(Seq(vec![pre, m, post])), out))
            }
            Node::Form(Form::Branch, ch) if ch.len() >= 3 => {
                let n = ch.len();
                let (Node::Op(split), Node::Op(merge)) = (&ch[0], &ch[n - 1]) else {
                    return Err(shape_err(
                        node,
                        "branch needs operations at both ends".into(),
                    ));
                };
                let (k, part) = split.split(x).map_err(|e| shape_err(node, e.message))?;
                let modules = &ch[1..n - 1];
                if modules.len() != 1 && modules.len() != k {
                    return Err(shape_err(
                        node,
                        format!("{k} branches but {} modules", modules.len()),
                    ));
                }
                let mut layers = Vec::with_capacity(k);
                let mut outs = Vec::with_capacity(k);
                for i in 0..k {
                    // One module written once is copied k times, without shared weights.
                    let m = &modules[if modules.len() == 1 { 0 } else { i }];
                    let (l, y) = self.build(&(p / (i + 1)), m, part, ctx)?;
                    layers.push(l);
                    outs.push(y);
                }
                let y = merge.merge(&outs).map_err(|e| shape_err(node, e.message))?;
                Ok((
                    Box::new(Branch {
                        split: *split,
                        modules: layers,
                        merge: *merge,
                    }),
                    y,
                ))
            }
            Node::Form(Form::Residual, ch) if ch.len() == 1 => {
                let (m, y) = self.build(&(p / 0), &ch[0], x, ctx)?;
                if y != x {
                    return Err(shape_err(node, format!("residual turns {x} into {y}")));
                }
                Ok((Box::new(Residual(m)), x))
            }
            Node::Form(Form::Nb201, ch) if ch.len() == 6 => {
                let mut edges = Vec::with_capacity(6);
                for c in ch {
                    match c {
                        Node::Op(op) => edges.push(*op),
                        _ => return Err(shape_err(node, "nb201 edges must be operations".into())),
                    }
                }
                if x.mode() != Mode::Im
                    || !x.dims()[1].is_multiple_of(4)
                    || !x.dims()[2].is_multiple_of(4)
                {
                    return Err(shape_err(
                        node,
                        format!("the NAS-Bench-201 network cannot take {x}"),
                    ));
                }
                let layer = nb201(p, &edges, x).map_err(|e| torch_err(node, e))?;
                let (h, w) = (x.dims()[1], x.dims()[2]);
                Ok((layer, Shape::im(NB201_C * 4, h / 4, w / 4)))
            }
            Node::Form(f, _) => Err(shape_err(
                node,
                format!("malformed {} (wrong number of parts)", f.name()),
            )),
        }
    }

    /// `route(im2col(k,s,p), linear(d) | seq(linear(d), rest...), post)` as a convolution. The
    /// linear's parameters are made where the unfused tree makes them (path `1` or `1.0`, shape
    /// `[d, C*k*k]`), so names, shapes and initial values are the same either way.
    fn conv(
        &self,
        p: &nn::Path,
        node: &Node,
        c: &fuse::Conv<'_>,
        x: Shape,
        ctx: Ctx,
    ) -> Result<(Box<dyn Layer>, Shape), CompileError> {
        let unfold = Op::Im2Col {
            k: c.k,
            s: c.s,
            p: c.p,
        };
        let cols = unfold
            .apply(x, &ctx)
            .map_err(|e| shape_err(node, e.message))?;
        let inner = Ctx {
            fold: unfold.fold_size(x),
            ..ctx
        };
        let lin = Op::Linear(c.d as u32);
        let mut cur = lin
            .apply(cols, &inner)
            .map_err(|e| shape_err(node, e.message))?;
        let lp = if c.in_seq { p / 1 / 0 } else { p / 1 };
        let l = linear(&lp, cols.last() as i64, c.d as i64).map_err(|e| torch_err(lin, e))?;
        let (k, cin, d) = (c.k as i64, c.cin as i64, c.d as i64);
        let conv = FusedConv {
            w: l.w,
            b: l.b,
            kernel: [d, cin, k, k],
            stride: c.s as i64,
            pad: c.p as i64,
            to_col: !c.is_plain(),
        };
        if c.is_plain() {
            let out = Op::Col2Im
                .apply(cur, &inner)
                .map_err(|e| shape_err(node, e.message))?;
            return Ok((Box::new(conv), out));
        }
        let mut layers: Vec<Box<dyn Layer>> = vec![Box::new(conv)];
        for (i, r) in c.rest.iter().enumerate() {
            let (l, y) = self.build(&(p / 1 / (i + 1)), r, cur, inner)?;
            layers.push(l);
            cur = y;
        }
        let (post, out) = self.build(&(p / 2), c.post, cur, inner)?;
        layers.push(post);
        Ok((Box::new(Seq(layers)), out))
    }

    /// h einspace heads on one sequence, concatenated, as multi-head attention: one linear map
    /// for every head's query, key and value, one attention call. Each head's parameters are
    /// made at its unfused paths, head by head in the unfused order (query, key, value).
    fn multi_head(
        &self,
        p: &nn::Path,
        node: &Node,
        m: &fuse::MultiHead,
        x: Shape,
    ) -> Result<(Box<dyn Layer>, Shape), CompileError> {
        let [s, dm] = x.dims()[..] else {
            return Err(shape_err(
                node,
                format!("multi-head attention cannot take {x}"),
            ));
        };
        let (d, dv) = (m.d as i64, m.dv as i64);
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..m.heads as usize {
            let hp = p / (i + 1);
            let make = |path: nn::Path, out: i64| {
                linear(&path, dm as i64, out).map_err(|e| torch_err(Op::Linear(out as u32), e))
            };
            q.push(make(&hp / 1 / 0 / 1, d)?);
            k.push(make(&hp / 1 / 0 / 2 / 1, d)?);
            v.push(make(&hp / 2, dv)?);
        }
        let (w, b): (Vec<Tensor>, Vec<Tensor>) =
            q.into_iter().chain(k).chain(v).map(|l| (l.w, l.b)).unzip();
        Ok((
            Box::new(MultiHeadAttention {
                w,
                b,
                heads: m.heads as i64,
                d,
                dv,
                scaled: m.scaled,
            }),
            Shape::col(s, m.heads as u64 * m.dv as u64),
        ))
    }

    /// einspace's attention as one `scaled_dot_product_attention`. The query, key and value
    /// modules are built at their unfused paths and in the unfused order.
    fn attention(
        &self,
        p: &nn::Path,
        node: &Node,
        a: &fuse::Attention<'_>,
        x: Shape,
        ctx: Ctx,
    ) -> Result<(Box<dyn Layer>, Shape), CompileError> {
        let (q, qs) = self.build(&(p / 1 / 0 / 1), a.q, x, ctx)?;
        let (k, ks) = self.build(&(p / 1 / 0 / 2), a.k, x, ctx)?;
        let (v, vs) = self.build(&(p / 2), a.v, x, ctx)?;
        let agg = if a.scaled {
            Op::ScaledDotProduct
        } else {
            Op::DotProduct
        };
        let scores = agg
            .merge(&[qs, ks])
            .map_err(|e| shape_err(node, e.message))?;
        let out = Op::DotProduct
            .merge(&[scores, vs])
            .map_err(|e| shape_err(node, e.message))?;
        Ok((
            Box::new(FusedAttention {
                q,
                k,
                v,
                scaled: a.scaled,
            }),
            out,
        ))
    }
}

/// The layer for one unary operation on input `x`.
fn op_layer(p: &nn::Path, op: Op, x: Shape, ctx: Ctx) -> Result<Box<dyn Layer>, TchError> {
    Ok(match op {
        Op::Linear(d) => Box::new(linear(p, x.last() as i64, d as i64)?),
        Op::Norm => match x.mode() {
            Mode::Im => Box::new(batch_norm(p, x.dims()[0] as i64)?),
            _ => Box::new(layer_norm(p, x.last() as i64)?),
        },
        Op::BatchNorm => Box::new(batch_norm(p, x.features() as i64)?),
        Op::PosEnc => {
            let dims: Vec<i64> = x.dims().iter().map(|&d| d as i64).collect();
            let t = p.f_var(
                "pos",
                &dims,
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?;
            Box::new(PosEnc(t))
        }
        Op::NorConv(k) => {
            let c = x.dims()[0] as i64;
            let k = k as i64;
            Box::new(Seq(vec![
                Box::new(Stateless(Op::Relu)),
                Box::new(conv(&(p / "conv"), c, c, k, 1, k / 2)?),
                Box::new(batch_norm(&(p / "bn"), c)?),
            ]))
        }
        Op::Col2Im => {
            let (h, w) = ctx.fold.unwrap_or((0, 0));
            Box::new(Col2Im {
                h: h as i64,
                w: w as i64,
            })
        }
        other => Box::new(Stateless(other)),
    })
}

/// The same [B, C, H, W] tensor stored channels-last (NHWC strides), the memory format torch
/// detects from the strides and convolutions then keep (tch has no memory-format argument).
pub fn to_channels_last(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// Casts a parameter to the kind of the activations it meets (bf16 under mixed precision).
fn like(w: &Tensor, x: &Tensor) -> Tensor {
    if w.kind() == x.kind() {
        w.shallow_clone()
    } else {
        w.to_kind(x.kind())
    }
}

/// Runs `f` in float32 and casts back, for normalisations under mixed precision (float32 and
/// float64 networks run as they are).
fn in_f32(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> Result<Tensor, TchError>,
) -> Result<Tensor, TchError> {
    if matches!(x.kind(), Kind::Float | Kind::Double) {
        f(x)
    } else {
        Ok(f(&x.to_kind(Kind::Float))?.to_kind(x.kind()))
    }
}

/// A learned affine map of the last dimension, initialised as torch's `nn.Linear`.
pub struct Linear {
    w: Tensor,
    b: Tensor,
}

/// `Linear(inp, out)` with weight and bias drawn from U(-1/sqrt(inp), 1/sqrt(inp)).
pub fn linear(p: &nn::Path, inp: i64, out: i64) -> Result<Linear, TchError> {
    let bound = 1.0 / (inp as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok(Linear {
        w: p.f_var("weight", &[out, inp], init)?,
        b: p.f_var("bias", &[out], init)?,
    })
}

impl Layer for Linear {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        x.f_linear(&like(&self.w, x), Some(&like(&self.b, x)))
    }
}

/// LayerNorm over the last dimension, with elementwise affine.
pub struct LayerNorm {
    d: i64,
    w: Tensor,
    b: Tensor,
}

pub fn layer_norm(p: &nn::Path, d: i64) -> Result<LayerNorm, TchError> {
    Ok(LayerNorm {
        d,
        w: p.f_var("weight", &[d], Init::Const(1.0))?,
        b: p.f_var("bias", &[d], Init::Const(0.0))?,
    })
}

impl Layer for LayerNorm {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        in_f32(x, |x| {
            x.f_layer_norm([self.d], Some(&self.w), Some(&self.b), 1e-5, true)
        })
    }
}

/// BatchNorm over dimension 1 (channels of [B, C, H, W], features of [B, D]), with affine
/// parameters and running statistics kept as buffers.
pub struct BatchNorm {
    w: Tensor,
    b: Tensor,
    mean: Tensor,
    var: Tensor,
}

pub fn batch_norm(p: &nn::Path, c: i64) -> Result<BatchNorm, TchError> {
    Ok(BatchNorm {
        w: p.f_var("weight", &[c], Init::Const(1.0))?,
        b: p.f_var("bias", &[c], Init::Const(0.0))?,
        mean: p.f_zeros_no_train("running_mean", &[c])?,
        var: p.f_ones_no_train("running_var", &[c])?,
    })
}

impl Layer for BatchNorm {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        in_f32(x, |x| {
            x.f_batch_norm(
                Some(&self.w),
                Some(&self.b),
                Some(&self.mean),
                Some(&self.var),
                train,
                0.1,
                1e-5,
                true,
            )
        })
    }
}

/// A 2-d convolution without bias (the NAS-Bench-201 skeleton and cell edges).
pub struct Conv {
    w: Tensor,
    stride: i64,
    pad: i64,
}

pub fn conv(
    p: &nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    pad: i64,
) -> Result<Conv, TchError> {
    let bound = 1.0 / ((cin * k * k) as f64).sqrt();
    Ok(Conv {
        w: p.f_var(
            "weight",
            &[cout, cin, k, k],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?,
        stride,
        pad,
    })
}

impl Layer for Conv {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        x.f_conv2d(
            &like(&self.w, x),
            None::<Tensor>,
            [self.stride, self.stride],
            [self.pad, self.pad],
            [1, 1],
            1,
        )
    }
}

/// A convolution fused from `im2col` + `linear`: the linear's `[d, C*k*k]` weight viewed as
/// the kernel `[d, C, k, k]`, its bias as the convolution's. With `to_col`, the output is laid
/// out as positions `[B, H'*W', d]`, as the linear's would be.
struct FusedConv {
    w: Tensor,
    b: Tensor,
    kernel: [i64; 4],
    stride: i64,
    pad: i64,
    to_col: bool,
}

impl Layer for FusedConv {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        let w = like(&self.w, x).f_view(self.kernel)?;
        let y = x.f_conv2d(
            &w,
            Some(&like(&self.b, x)),
            [self.stride, self.stride],
            [self.pad, self.pad],
            [1, 1],
            1,
        )?;
        if self.to_col {
            // Contiguous, as the linear's output would be: the ops that follow in col mode
            // (norms, linears, permutations) are slower on a transposed view.
            y.f_flatten(2, 3)?.f_transpose(1, 2)?.f_contiguous()
        } else {
            Ok(y)
        }
    }
}

/// h heads' `softmax(q_i k_i^T * scale) v_i`, side by side on the last dimension: the heads'
/// query, key and value weights (`w`, `b`: all queries, then keys, then values) joined into
/// one linear map, then one attention call with a heads dimension.
struct MultiHeadAttention {
    w: Vec<Tensor>,
    b: Vec<Tensor>,
    heads: i64,
    d: i64,
    dv: i64,
    scaled: bool,
}

impl Layer for MultiHeadAttention {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        let w = like(&Tensor::f_cat(&self.w, 0)?, x);
        let b = like(&Tensor::f_cat(&self.b, 0)?, x);
        let y = x.f_linear(&w, Some(&b))?;
        let size = x.size();
        let (n, s) = (size[0], size[1]);
        let (h, d, dv) = (self.heads, self.d, self.dv);
        let part = |start: i64, width: i64| -> Result<Tensor, TchError> {
            y.f_narrow(2, start, h * width)?
                .f_view([n, s, h, width])?
                .f_transpose(1, 2)
        };
        let scale = if self.scaled { None } else { Some(1.0) };
        let out = Tensor::f_scaled_dot_product_attention(
            &part(0, d)?,
            &part(h * d, d)?,
            &part(2 * h * d, dv)?,
            None::<Tensor>,
            0.0,
            false,
            scale,
            false,
        )?;
        out.f_transpose(1, 2)?.f_reshape([n, s, h * dv])
    }
}

/// `softmax(q(x) k(x) * scale) v(x)` in one kernel; `k(x)` is the key already transposed.
/// Sequences get a heads dimension of 1 so that torch picks its fused (flash) kernels, which
/// want 4-d inputs.
struct FusedAttention {
    q: Box<dyn Layer>,
    k: Box<dyn Layer>,
    v: Box<dyn Layer>,
    scaled: bool,
}

impl Layer for FusedAttention {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let q = self.q.forward(x, train)?;
        let k = self.k.forward(x, train)?.f_transpose(-1, -2)?;
        let v = self.v.forward(x, train)?;
        // scaled_dot_product's scale is 1/sqrt(q's last dimension), the kernel's default.
        let scale = if self.scaled { None } else { Some(1.0) };
        if q.dim() == 3 {
            let y = Tensor::f_scaled_dot_product_attention(
                &q.f_unsqueeze(1)?,
                &k.f_unsqueeze(1)?,
                &v.f_unsqueeze(1)?,
                None::<Tensor>,
                0.0,
                false,
                scale,
                false,
            )?;
            y.f_squeeze_dim(1)
        } else {
            Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                scale,
                false,
            )
        }
    }
}

/// A learned tensor of the input's shape (without batch), added.
struct PosEnc(Tensor);

impl Layer for PosEnc {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        x.f_add(&like(&self.0, x))
    }
}

/// `col2im`: [B, L, D] -> [B, D, H', W'] with H'xW' from the enclosing `im2col`.
struct Col2Im {
    h: i64,
    w: i64,
}

impl Layer for Col2Im {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        let size = x.size();
        x.f_permute([0, 2, 1])?
            .f_reshape([size[0], size[2], self.h, self.w])
    }
}

/// Operations without parameters.
struct Stateless(Op);

impl Layer for Stateless {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, TchError> {
        match self.0 {
            Op::LeakyRelu => x.f_leaky_relu(),
            Op::Softmax => x.f_softmax(-1, None::<Kind>),
            Op::Relu => x.f_relu(),
            Op::Gelu => x.f_gelu("none"),
            Op::Tanh => x.f_tanh(),
            Op::Silu => x.f_silu(),
            Op::Sigmoid => x.f_sigmoid(),
            Op::Permute(perm) => {
                let mut dims = vec![0i64];
                dims.extend(perm.order().iter().map(|&i| i as i64 + 1));
                x.f_permute(dims.as_slice())
            }
            Op::Im2Col { k, s, p } => {
                let (k, s, p) = (k as i64, s as i64, p as i64);
                x.f_im2col([k, k], [1, 1], [p, p], [s, s])?
                    .f_permute([0, 2, 1])
            }
            Op::Zero => x.f_zeros_like(),
            Op::AvgPool3 => x.f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>),
            // identity, skip_connect; split and merge operations never stand alone
            _ => Ok(x.shallow_clone()),
        }
    }
}

/// Applies layers in order.
pub struct Seq(pub Vec<Box<dyn Layer>>);

impl Layer for Seq {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut cur = x.shallow_clone();
        for l in &self.0 {
            cur = l.forward(&cur, train)?;
        }
        Ok(cur)
    }
}

/// einspace branching: split (clone or group), one module per part, aggregate.
struct Branch {
    split: Op,
    modules: Vec<Box<dyn Layer>>,
    merge: Op,
}

impl Layer for Branch {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let k = self.modules.len();
        let parts = match self.split {
            Op::Group { k, dim } => x.f_chunk(k as i64, dim as i64)?,
            _ => (0..k).map(|_| x.shallow_clone()).collect(),
        };
        let outs = parts
            .iter()
            .zip(&self.modules)
            .map(|(t, m)| m.forward(t, train))
            .collect::<Result<Vec<_>, _>>()?;
        match self.merge {
            Op::DotProduct => outs[0].f_matmul(&outs[1]),
            Op::ScaledDotProduct => {
                let d = *outs[0].size().last().unwrap_or(&1) as f64;
                outs[0].f_matmul(&outs[1])?.f_mul_scalar(1.0 / d.sqrt())
            }
            Op::Cat { dim, .. } => Tensor::f_cat(&outs, dim as i64),
            // add
            _ => {
                let mut acc = outs[0].shallow_clone();
                for o in &outs[1..] {
                    acc = acc.f_add(o)?;
                }
                Ok(acc)
            }
        }
    }
}

/// x + m(x).
struct Residual(Box<dyn Layer>);

impl Layer for Residual {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        x.f_add(&self.0.forward(x, train)?)
    }
}

/// A NAS-Bench-201 cell: node_j = sum over i < j of edge_ij(node_i); the output is node 3.
/// Edges in the candidate's order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
struct Cell(Vec<Box<dyn Layer>>);

impl Layer for Cell {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let e = &self.0;
        let n1 = e[0].forward(x, train)?;
        let n2 = e[1].forward(x, train)?.f_add(&e[2].forward(&n1, train)?)?;
        e[3].forward(x, train)?
            .f_add(&e[4].forward(&n1, train)?)?
            .f_add(&e[5].forward(&n2, train)?)
    }
}

/// The ResNet basic block between NAS-Bench-201 stages: ReLU-conv3x3(stride 2)-BN,
/// ReLU-conv3x3-BN, plus a shortcut of 2x2 average pooling and a 1x1 convolution.
struct Reduction {
    a: Seq,
    shortcut: Conv,
}

impl Layer for Reduction {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let s = x.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?;
        let s = self.shortcut.forward(&s, train)?;
        self.a.forward(x, train)?.f_add(&s)
    }
}

fn nb201(p: &nn::Path, edges: &[Op], x: Shape) -> Result<Box<dyn Layer>, TchError> {
    let c_in = x.dims()[0] as i64;
    let c0 = NB201_C as i64;
    let mut layers: Vec<Box<dyn Layer>> = vec![
        Box::new(conv(&(p / "stem"), c_in, c0, 3, 1, 1)?),
        Box::new(batch_norm(&(p / "stem_bn"), c0)?),
    ];
    let (mut h, mut w) = (x.dims()[1], x.dims()[2]);
    for stage in 0..3i64 {
        let c = c0 << stage;
        if stage > 0 {
            let q = p / format!("reduce{stage}");
            let cp = c / 2;
            let a = Seq(vec![
                Box::new(Stateless(Op::Relu)),
                Box::new(conv(&(&q / "conv_a"), cp, c, 3, 2, 1)?),
                Box::new(batch_norm(&(&q / "bn_a"), c)?),
                Box::new(Stateless(Op::Relu)),
                Box::new(conv(&(&q / "conv_b"), c, c, 3, 1, 1)?),
                Box::new(batch_norm(&(&q / "bn_b"), c)?),
            ]);
            let shortcut = conv(&(&q / "shortcut"), cp, c, 1, 1, 0)?;
            layers.push(Box::new(Reduction { a, shortcut }));
            h /= 2;
            w /= 2;
        }
        let s = Shape::im(c as u64, h, w);
        for cell in 0..NB201_N {
            let q = p / format!("s{stage}c{cell}");
            let mut es = Vec::with_capacity(6);
            for (i, e) in edges.iter().enumerate() {
                es.push(op_layer(&(&q / i), *e, s, Ctx::default())?);
            }
            layers.push(Box::new(Cell(es)));
        }
    }
    layers.push(Box::new(batch_norm(&(p / "last_bn"), c0 * 4)?));
    layers.push(Box::new(Stateless(Op::Relu)));
    Ok(Box::new(Seq(layers)))
}

/// Number of learnable parameters in a VarStore (buffers excluded).
pub fn count_params(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}
