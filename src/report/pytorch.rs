//! A candidate as a standalone PyTorch module: readable Python source (one `nn.Module` whose
//! submodules are named after the candidate tree, its `forward` written out line by line) and
//! the mapping from the compiled tch network's VarStore names to the module's `state_dict()`
//! keys, so that trained weights can be written for it.
//!
//! The generator walks the tree with the same shape rules as `train::compile`, and emits for
//! every operation exactly what the compiled layer computes (same torch kernels, same defaults),
//! so that the module reproduces archsmith's forward pass; a test runs both on the same inputs.

use crate::space::check::NB201_C;
use crate::space::check::NB201_N;
use crate::space::fuse;
use crate::space::ops::{Ctx, Op};
use crate::space::{Form, Head, Mode, Node, Shape};
use std::fmt::Write as _;

/// Why a candidate could not be written as a module (only unvalidated candidates fail).
#[derive(Debug, thiserror::Error)]
#[error("cannot export {node}: {message}")]
pub struct CodegenError {
    pub node: String,
    pub message: String,
}

/// What the module file says about where it came from.
#[derive(Clone, Debug, Default)]
pub struct ModuleInfo {
    /// The space's name, for the docstring.
    pub space: String,
    /// The weights file the module's `load()` reads by default (next to the module file).
    pub weights_file: String,
    /// Extra lines for the docstring (task, score, ...).
    pub notes: Vec<String>,
    /// How the head reads a sequence, as the network was compiled.
    pub head: Head,
}

/// A generated module: its source and how the tch weights map onto its `state_dict()`.
#[derive(Clone, Debug)]
pub struct Module {
    pub source: String,
    /// (tch VarStore name, `state_dict()` key), for every parameter and buffer of the network.
    pub names: Vec<(String, String)>,
    /// `state_dict()` keys of the BatchNorm `num_batches_tracked` counters, which tch does not
    /// keep; the exporter writes them as 0 (they only matter for momentum-free BatchNorm).
    pub counters: Vec<String>,
    /// `state_dict()` keys whose tensor has another shape in the module than in tch, with the
    /// module's shape: a fused convolution's kernel `[d, C, k, k]` is tch's linear weight
    /// `[d, C*k*k]` (the same numbers in the same order).
    pub reshape: Vec<(String, Vec<i64>)>,
}

/// Writes `node` (for inputs of shape `input`, with a head of `classes` outputs) as a module
/// class `Candidate` in a standalone Python file, with the patterns of `space::fuse` written
/// as `nn.Conv2d` and `F.scaled_dot_product_attention` (unless `ARCHSMITH_FUSE=0`).
pub fn module(
    node: &Node,
    input: Shape,
    classes: u64,
    info: &ModuleInfo,
) -> Result<Module, CodegenError> {
    module_with(node, input, classes, info, fuse::from_env(true))
}

/// [`module`], fused or written literally.
fn module_with(
    node: &Node,
    input: Shape,
    classes: u64,
    info: &ModuleInfo,
    fuse: bool,
) -> Result<Module, CodegenError> {
    let mut g = Gen {
        fuse,
        ..Gen::default()
    };
    let (out, shape) = g.node(node, &[], "net", "x", input, Ctx::default())?;
    let width = shape.head_width(info.head);
    g.init(format!("self.head = nn.Linear({width}, {classes})"));
    g.map("head", "head", &["weight", "bias"]);
    let pooled = match shape.head_pool(info.head) {
        [] => out,
        [d] => format!("{out}.mean({d})"),
        dims => format!(
            "{out}.mean(({}))",
            dims.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    g.fwd(format!("return self.head({pooled})"));
    let source = g.render(node, input, classes, info);
    Ok(Module {
        source,
        names: g.names,
        counters: g.counters,
        reshape: g.reshape,
    })
}

#[derive(Default)]
struct Gen {
    init: Vec<String>,
    forward: Vec<String>,
    names: Vec<(String, String)>,
    counters: Vec<String>,
    reshape: Vec<(String, Vec<i64>)>,
    next_var: usize,
    uses: Uses,
    fuse: bool,
}

/// Which helpers the file needs, so that it defines only those.
#[derive(Default)]
struct Uses {
    im2col: bool,
    col2im: bool,
    permute: bool,
    group: bool,
    dot: bool,
    scaled_dot: bool,
    nb201: bool,
}

fn err(node: &Node, message: impl Into<String>) -> CodegenError {
    CodegenError {
        node: crate::space::node::abbreviate(&node.to_string(), 80),
        message: message.into(),
    }
}

/// A Python attribute name for the layer at tch path `tch` (`net.0.1.2` -> `linear_0_1_2`).
fn attr(op: &str, tch: &str) -> String {
    let rest = tch.strip_prefix("net").unwrap_or(tch);
    let rest = rest.trim_start_matches('.').replace('.', "_");
    if rest.is_empty() {
        op.to_string()
    } else {
        format!("{op}_{rest}")
    }
}

impl Gen {
    fn init(&mut self, line: String) {
        self.init.push(line);
    }

    fn fwd(&mut self, line: String) {
        self.forward.push(line);
    }

    fn var(&mut self) -> String {
        self.next_var += 1;
        format!("x{}", self.next_var)
    }

    fn assign(&mut self, expr: String) -> String {
        let v = self.var();
        self.fwd(format!("{v} = {expr}"));
        v
    }

    fn map(&mut self, tch: &str, py: &str, leaves: &[&str]) {
        for l in leaves {
            self.names.push((format!("{tch}.{l}"), format!("{py}.{l}")));
        }
    }

    fn bn_names(&mut self, tch: &str, py: &str) {
        self.map(tch, py, &["weight", "bias", "running_mean", "running_var"]);
        self.counters.push(format!("{py}.num_batches_tracked"));
    }

    /// Emits `node` applied to variable `x` of shape `xs`; returns the output variable and shape.
    fn node(
        &mut self,
        node: &Node,
        path: &[usize],
        tch: &str,
        x: &str,
        xs: Shape,
        ctx: Ctx,
    ) -> Result<(String, Shape), CodegenError> {
        if self.fuse {
            if let Some(c) = fuse::conv(node, xs) {
                return self.conv(node, &c, path, tch, x, xs, ctx);
            }
            if let Some(m) = fuse::multi_head(node, xs) {
                return self.multi_head(node, &m, tch, x, xs);
            }
            if let Some(a) = fuse::attention(node, xs) {
                return self.attention(node, &a, path, tch, x, xs, ctx);
            }
        }
        match node {
            Node::Op(op) => {
                let y = op.apply(xs, &ctx).map_err(|e| err(node, e.message))?;
                let v = self.op(*op, tch, x, xs, ctx);
                Ok((v, y))
            }
            Node::Form(Form::Seq, ch) => {
                let mut cur = (x.to_string(), xs);
                for (i, c) in ch.iter().enumerate() {
                    cur = self.child(c, path, i, tch, &cur.0, cur.1, ctx)?;
                }
                Ok(cur)
            }
            Node::Form(Form::Route, ch) if ch.len() == 3 => {
                self.comment(node);
                let (a, ys) = self.child(&ch[0], path, 0, tch, x, xs, ctx)?;
                let inner = match &ch[0] {
                    Node::Op(op) => op.fold_size(xs).map(|hw| Ctx {
                        fold: Some(hw),
                        ..ctx
                    }),
                    _ => None,
                }
                .unwrap_or(ctx);
                let (b, zs) = self.child(&ch[1], path, 1, tch, &a, ys, inner)?;
                self.child(&ch[2], path, 2, tch, &b, zs, inner)
            }
            Node::Form(Form::Branch, ch) if ch.len() >= 3 => {
                self.comment(node);
                let n = ch.len();
                let (Node::Op(split), Node::Op(merge)) = (&ch[0], &ch[n - 1]) else {
                    return Err(err(node, "branch needs operations at both ends"));
                };
                let (k, part) = split.split(xs).map_err(|e| err(node, e.message))?;
                let modules = &ch[1..n - 1];
                if modules.len() != 1 && modules.len() != k {
                    return Err(err(
                        node,
                        format!("{k} branches but {} modules", modules.len()),
                    ));
                }
                let parts: Vec<String> = match split {
                    Op::Group { k, dim } => {
                        self.uses.group = true;
                        let vs: Vec<String> = (0..*k).map(|_| self.var()).collect();
                        self.fwd(format!("{} = group({x}, {k}, {dim})", vs.join(", ")));
                        vs
                    }
                    _ => vec![x.to_string(); k],
                };
                let mut outs = Vec::with_capacity(k);
                let mut shapes = Vec::with_capacity(k);
                for (i, p) in parts.iter().enumerate() {
                    // One module written once is copied k times, without shared weights.
                    let m = &modules[if modules.len() == 1 { 0 } else { i }];
                    let (o, s) = self.child(m, path, i + 1, tch, p, part, ctx)?;
                    outs.push(o);
                    shapes.push(s);
                }
                let y = merge.merge(&shapes).map_err(|e| err(node, e.message))?;
                let expr = match merge {
                    Op::DotProduct => {
                        self.uses.dot = true;
                        format!("dot_product({}, {})", outs[0], outs[1])
                    }
                    Op::ScaledDotProduct => {
                        self.uses.scaled_dot = true;
                        format!("scaled_dot_product({}, {})", outs[0], outs[1])
                    }
                    Op::Cat { dim, .. } => format!("torch.cat([{}], {dim})", outs.join(", ")),
                    _ => outs.join(" + "),
                };
                Ok((self.assign(expr), y))
            }
            Node::Form(Form::Residual, ch) if ch.len() == 1 => {
                self.comment(node);
                let (m, y) = self.child(&ch[0], path, 0, tch, x, xs, ctx)?;
                if y != xs {
                    return Err(err(node, format!("residual turns {xs} into {y}")));
                }
                Ok((self.assign(format!("{x} + {m}")), xs))
            }
            Node::Form(Form::Nb201, ch) if ch.len() == 6 => {
                let mut edges = Vec::with_capacity(6);
                for c in ch {
                    match c {
                        Node::Op(op) => edges.push(*op),
                        _ => return Err(err(node, "nb201 edges must be operations")),
                    }
                }
                if xs.mode() != Mode::Im
                    || !xs.dims()[1].is_multiple_of(4)
                    || !xs.dims()[2].is_multiple_of(4)
                {
                    return Err(err(
                        node,
                        format!("the NAS-Bench-201 network cannot take {xs}"),
                    ));
                }
                let y = self.nb201(&edges, tch, x, xs);
                let (h, w) = (xs.dims()[1], xs.dims()[2]);
                Ok((y, Shape::im(NB201_C * 4, h / 4, w / 4)))
            }
            Node::Form(f, _) => Err(err(
                node,
                format!("malformed {} (wrong number of parts)", f.name()),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn child(
        &mut self,
        c: &Node,
        path: &[usize],
        i: usize,
        tch: &str,
        x: &str,
        xs: Shape,
        ctx: Ctx,
    ) -> Result<(String, Shape), CodegenError> {
        let mut p = path.to_vec();
        p.push(i);
        self.node(c, &p, &format!("{tch}.{i}"), x, xs, ctx)
    }

    /// A fused convolution: `nn.Conv2d` whose weight is the linear's (at tch path `.1` or
    /// `.1.0`), reshaped to a kernel; then the rest of the route as written.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        node: &Node,
        c: &fuse::Conv<'_>,
        path: &[usize],
        tch: &str,
        x: &str,
        xs: Shape,
        ctx: Ctx,
    ) -> Result<(String, Shape), CodegenError> {
        self.comment(node);
        let unfold = Op::Im2Col {
            k: c.k,
            s: c.s,
            p: c.p,
        };
        let cols = unfold.apply(xs, &ctx).map_err(|e| err(node, e.message))?;
        let inner = Ctx {
            fold: unfold.fold_size(xs),
            ..ctx
        };
        let mut cur = Op::Linear(c.d as u32)
            .apply(cols, &inner)
            .map_err(|e| err(node, e.message))?;
        let lt = if c.in_seq {
            format!("{tch}.1.0")
        } else {
            format!("{tch}.1")
        };
        let a = attr("conv", &lt);
        self.init(format!(
            "self.{a} = nn.Conv2d({}, {}, {}, stride={}, padding={})",
            c.cin, c.d, c.k, c.s, c.p
        ));
        self.map(&lt, &a, &["weight", "bias"]);
        self.reshape.push((
            format!("{a}.weight"),
            vec![c.d as i64, c.cin as i64, c.k as i64, c.k as i64],
        ));
        if c.is_plain() {
            let v = self.assign(format!("self.{a}({x})"));
            let y = Op::Col2Im
                .apply(cur, &inner)
                .map_err(|e| err(node, e.message))?;
            return Ok((v, y));
        }
        let mut v = self.assign(format!("self.{a}({x}).flatten(2).transpose(1, 2)"));
        let mut p1 = path.to_vec();
        p1.push(1);
        for (i, r) in c.rest.iter().enumerate() {
            (v, cur) = self.child(r, &p1, i + 1, &format!("{tch}.1"), &v, cur, inner)?;
        }
        self.child(c.post, path, 2, tch, &v, cur, inner)
    }

    /// einspace's attention as `F.scaled_dot_product_attention`, with the query, key and
    /// value modules at their unfused tch paths.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        node: &Node,
        a: &fuse::Attention<'_>,
        path: &[usize],
        tch: &str,
        x: &str,
        xs: Shape,
        ctx: Ctx,
    ) -> Result<(String, Shape), CodegenError> {
        self.comment(node);
        let mut p10 = path.to_vec();
        p10.extend([1, 0]);
        let t10 = format!("{tch}.1.0");
        let (q, qs) = self.child(a.q, &p10, 1, &t10, x, xs, ctx)?;
        let (k, ks) = self.child(a.k, &p10, 2, &t10, x, xs, ctx)?;
        let (v, vs) = self.child(a.v, path, 2, tch, x, xs, ctx)?;
        let agg = if a.scaled {
            Op::ScaledDotProduct
        } else {
            Op::DotProduct
        };
        let scores = agg.merge(&[qs, ks]).map_err(|e| err(node, e.message))?;
        let y = Op::DotProduct
            .merge(&[scores, vs])
            .map_err(|e| err(node, e.message))?;
        let scale = if a.scaled { "" } else { ", scale=1.0" };
        let out = self.assign(format!(
            "F.scaled_dot_product_attention({q}, {k}.transpose(-1, -2), {v}{scale})"
        ));
        Ok((out, y))
    }

    /// h einspace heads side by side as one multi-head attention, as the compiler fuses them:
    /// every head's query, key and value keep their own `nn.Linear` at their unfused paths (so
    /// weights load one to one), joined in the forward pass into one linear map, then one
    /// `F.scaled_dot_product_attention` over a heads dimension.
    fn multi_head(
        &mut self,
        node: &Node,
        m: &fuse::MultiHead,
        tch: &str,
        x: &str,
        xs: Shape,
    ) -> Result<(String, Shape), CodegenError> {
        let [s, dm] = xs.dims()[..] else {
            return Err(err(node, format!("multi-head attention cannot take {xs}")));
        };
        self.comment(node);
        // Queries of every head, then keys, then values: the order of the joined map.
        let mut parts: [Vec<String>; 3] = Default::default();
        for i in 1..=m.heads {
            for (j, (sub, width)) in [("1.0.1", m.d), ("1.0.2.1", m.d), ("2", m.dv)]
                .into_iter()
                .enumerate()
            {
                let t = format!("{tch}.{i}.{sub}");
                let a = attr("linear", &t);
                self.init(format!("self.{a} = nn.Linear({dm}, {width})"));
                self.map(&t, &a, &["weight", "bias"]);
                parts[j].push(a);
            }
        }
        let joined = |leaf: &str| {
            let all: Vec<String> = parts
                .iter()
                .flatten()
                .map(|a| format!("self.{a}.{leaf}"))
                .collect();
            format!("torch.cat([{}])", all.join(", "))
        };
        let (w, b) = (joined("weight"), joined("bias"));
        let y = self.assign(format!("F.linear({x}, {w}, {b})"));
        let (h, d, dv) = (m.heads, m.d, m.dv);
        let heads = |gen: &mut Gen, start: u32, width: u32| {
            gen.assign(format!(
                "{y}[..., {start}:{}].unflatten(-1, ({h}, {width})).transpose(1, 2)",
                start + h * width
            ))
        };
        let q = heads(self, 0, d);
        let k = heads(self, h * d, d);
        let v = heads(self, 2 * h * d, dv);
        let scale = if m.scaled { "" } else { ", scale=1.0" };
        let out = self.assign(format!(
            "F.scaled_dot_product_attention({q}, {k}, {v}{scale}).transpose(1, 2).flatten(2)"
        ));
        Ok((out, Shape::col(s, u64::from(h * dv))))
    }

    fn comment(&mut self, node: &Node) {
        let text = crate::space::node::abbreviate(&node.to_string(), 90);
        self.fwd(format!("# {text}"));
    }

    /// One operation; returns the variable holding its output.
    fn op(&mut self, op: Op, tch: &str, x: &str, xs: Shape, ctx: Ctx) -> String {
        match op {
            Op::Linear(d) => {
                let a = attr("linear", tch);
                self.init(format!("self.{a} = nn.Linear({}, {d})", xs.last()));
                self.map(tch, &a, &["weight", "bias"]);
                self.assign(format!("self.{a}({x})"))
            }
            Op::Norm if xs.mode() == Mode::Im => {
                let a = attr("norm", tch);
                self.init(format!("self.{a} = nn.BatchNorm2d({})", xs.dims()[0]));
                self.bn_names(tch, &a);
                self.assign(format!("self.{a}({x})"))
            }
            Op::Norm => {
                let a = attr("norm", tch);
                self.init(format!("self.{a} = nn.LayerNorm({})", xs.last()));
                self.map(tch, &a, &["weight", "bias"]);
                self.assign(format!("self.{a}({x})"))
            }
            Op::BatchNorm => {
                let a = attr("batchnorm", tch);
                let class = if xs.mode() == Mode::Im {
                    "BatchNorm2d"
                } else {
                    "BatchNorm1d"
                };
                self.init(format!("self.{a} = nn.{class}({})", xs.features()));
                self.bn_names(tch, &a);
                self.assign(format!("self.{a}({x})"))
            }
            Op::PosEnc => {
                let a = attr("pos_enc", tch);
                let dims: Vec<String> = xs.dims().iter().map(u64::to_string).collect();
                self.init(format!(
                    "self.{a} = nn.Parameter(torch.zeros({}))",
                    dims.join(", ")
                ));
                self.names.push((format!("{tch}.pos"), a.clone()));
                self.assign(format!("{x} + self.{a}"))
            }
            Op::NorConv(k) => {
                self.uses.nb201 = true;
                let a = attr(op.name(), tch);
                self.init(format!("self.{a} = ReLUConvBN({}, {k})", xs.dims()[0]));
                self.relu_conv_bn_names(tch, &a);
                self.assign(format!("self.{a}({x})"))
            }
            Op::Col2Im => {
                self.uses.col2im = true;
                let (h, w) = ctx.fold.unwrap_or((0, 0));
                self.assign(format!("col2im({x}, {h}, {w})"))
            }
            Op::Im2Col { k, s, p } => {
                self.uses.im2col = true;
                self.assign(format!("im2col({x}, {k}, {s}, {p})"))
            }
            Op::Permute(perm) => {
                self.uses.permute = true;
                let order: Vec<String> = perm.order().iter().map(|i| (i + 1).to_string()).collect();
                self.assign(format!("permute({x}, {})", order.join(", ")))
            }
            Op::LeakyRelu => self.assign(format!("F.leaky_relu({x}, 0.01)")),
            Op::Softmax => self.assign(format!("torch.softmax({x}, -1)")),
            Op::Relu => self.assign(format!("torch.relu({x})")),
            Op::Gelu => self.assign(format!("F.gelu({x})")),
            Op::Tanh => self.assign(format!("torch.tanh({x})")),
            Op::Silu => self.assign(format!("F.silu({x})")),
            Op::Sigmoid => self.assign(format!("torch.sigmoid({x})")),
            Op::Zero => self.assign(format!("torch.zeros_like({x})")),
            Op::AvgPool3 => self.assign(format!(
                "F.avg_pool2d({x}, 3, stride=1, padding=1, count_include_pad=False)"
            )),
            // identity, skip_connect (split and merge operations never stand alone)
            _ => x.to_string(),
        }
    }

    fn relu_conv_bn_names(&mut self, tch: &str, py: &str) {
        self.map(&format!("{tch}.conv"), &format!("{py}.conv"), &["weight"]);
        self.bn_names(&format!("{tch}.bn"), &format!("{py}.bn"));
    }

    /// The NAS-Bench-201 network around one cell, written out stage by stage.
    fn nb201(&mut self, edges: &[Op], tch: &str, x: &str, xs: Shape) -> String {
        self.uses.nb201 = true;
        let pre = {
            let a = attr("nb201", tch);
            if a == "nb201" {
                String::new()
            } else {
                format!("{a}_")
            }
        };
        let ops: Vec<String> = edges.iter().map(|e| format!("\"{}\"", e.name())).collect();
        let ops = format!("({})", ops.join(", "));
        let c_in = xs.dims()[0];
        let c0 = NB201_C;
        self.comment(&Node::Form(
            Form::Nb201,
            edges.iter().map(|e| Node::Op(*e)).collect(),
        ));
        self.init(format!(
            "self.{pre}stem = nn.Conv2d({c_in}, {c0}, 3, padding=1, bias=False)"
        ));
        self.map(&format!("{tch}.stem"), &format!("{pre}stem"), &["weight"]);
        self.init(format!("self.{pre}stem_bn = nn.BatchNorm2d({c0})"));
        self.bn_names(&format!("{tch}.stem_bn"), &format!("{pre}stem_bn"));
        let mut cur = self.assign(format!("self.{pre}stem_bn(self.{pre}stem({x}))"));
        for stage in 0..3u32 {
            let c = c0 << stage;
            if stage > 0 {
                let a = format!("{pre}reduce{stage}");
                let t = format!("{tch}.reduce{stage}");
                self.init(format!("self.{a} = Reduction({}, {c})", c / 2));
                for (conv, bn) in [("conv_a", "bn_a"), ("conv_b", "bn_b")] {
                    self.map(&format!("{t}.{conv}"), &format!("{a}.{conv}"), &["weight"]);
                    self.bn_names(&format!("{t}.{bn}"), &format!("{a}.{bn}"));
                }
                self.map(
                    &format!("{t}.shortcut"),
                    &format!("{a}.shortcut"),
                    &["weight"],
                );
                cur = self.assign(format!("self.{a}({cur})"));
            }
            for cell in 0..NB201_N {
                let a = format!("{pre}s{stage}c{cell}");
                let t = format!("{tch}.s{stage}c{cell}");
                self.init(format!("self.{a} = Cell({c}, {ops})"));
                for (i, e) in edges.iter().enumerate() {
                    if let Op::NorConv(_) = e {
                        self.relu_conv_bn_names(&format!("{t}.{i}"), &format!("{a}.edges.{i}"));
                    }
                }
                cur = self.assign(format!("self.{a}({cur})"));
            }
        }
        self.init(format!("self.{pre}last_bn = nn.BatchNorm2d({})", c0 * 4));
        self.bn_names(&format!("{tch}.last_bn"), &format!("{pre}last_bn"));
        self.assign(format!("torch.relu(self.{pre}last_bn({cur}))"))
    }

    fn render(&self, node: &Node, input: Shape, classes: u64, info: &ModuleInfo) -> String {
        let mut s = String::new();
        let text = node.to_string();
        let dims: Vec<String> = input.dims().iter().map(u64::to_string).collect();
        let _ = writeln!(
            s,
            "\"\"\"A candidate found by archsmith, as a PyTorch module.\n"
        );
        // Everything written into the docstring is escaped: a run's name or a note may hold
        // `"""` followed by Python statements.
        for line in wrap(&text, 96) {
            let _ = writeln!(s, "    {}", py_escape(&line));
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Space {}, input {} ([batch, {}]), {classes} classes.",
            if info.space.is_empty() {
                "?".to_string()
            } else {
                py_escape(&info.space)
            },
            input,
            dims.join(", ")
        );
        for n in &info.notes {
            let _ = writeln!(s, "{}", py_escape(n));
        }
        let _ = writeln!(
            s,
            "\nUse: `model = load()` builds the module and loads {} from this file's folder;\n\
             `model.eval()` before inference (BatchNorm uses its running statistics then).\n\
             Generated code: edit freely. Needs torch (and safetensors to load the weights).\n\"\"\"",
            py_escape(&info.weights_file)
        );
        s.push_str(
            "\nimport math\nimport os\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n",
        );
        let _ = writeln!(s, "CANDIDATE = {}", py_str(&text));
        let tuple = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let _ = writeln!(s, "INPUT_SHAPE = {tuple}");
        let _ = writeln!(s, "NUM_CLASSES = {classes}");
        let _ = writeln!(s, "WEIGHTS = {}\n", py_str(&info.weights_file));
        s.push_str(&self.helpers());
        s.push_str("\nclass Candidate(nn.Module):\n");
        let _ = writeln!(
            s,
            "    \"\"\"The candidate network: layers named after their place in the tree\n    \
             (`linear_0_2` is the linear at child 2 of child 0 of the root), then the head.\"\"\"\n"
        );
        s.push_str("    def __init__(self):\n        super().__init__()\n");
        for l in &self.init {
            let _ = writeln!(s, "        {l}");
        }
        s.push_str("\n    def forward(self, x):\n");
        for l in &self.forward {
            let _ = writeln!(s, "        {l}");
        }
        s.push_str(
            "\n\ndef load(path=None, device=\"cpu\"):\n    \
             \"\"\"The module with the exported weights (WEIGHTS next to this file by default).\"\"\"\n    \
             from safetensors.torch import load_file\n\n    \
             if path is None:\n        \
             path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS)\n    \
             model = Candidate()\n    \
             model.load_state_dict(load_file(path, device=str(device)))\n    \
             return model.to(device)\n\n\n\
             if __name__ == \"__main__\":\n    \
             model = load().eval()\n    \
             with torch.no_grad():\n        \
             y = model(torch.randn(2, *INPUT_SHAPE))\n    \
             print(CANDIDATE)\n    \
             print(\"parameters:\", sum(p.numel() for p in model.parameters()))\n    \
             print(\"logits:\", tuple(y.shape))\n",
        );
        s
    }

    fn helpers(&self) -> String {
        let u = &self.uses;
        let mut s = String::new();
        if u.im2col {
            s.push_str(
                "\ndef im2col(x, k, s, p):\n    \
                 \"\"\"[B, C, H, W] -> [B, L, C*k*k]: kxk patches (stride s, padding p) as positions.\"\"\"\n    \
                 return F.unfold(x, k, dilation=1, padding=p, stride=s).permute(0, 2, 1)\n\n",
            );
        }
        if u.col2im {
            s.push_str(
                "\ndef col2im(x, h, w):\n    \
                 \"\"\"[B, L, D] -> [B, D, h, w]: positions back to an image (L = h*w).\"\"\"\n    \
                 return x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], h, w)\n\n",
            );
        }
        if u.permute {
            s.push_str(
                "\ndef permute(x, *order):\n    \
                 \"\"\"Permutes the dimensions after the batch (1-based, as einspace names them).\"\"\"\n    \
                 return x.permute(0, *order)\n\n",
            );
        }
        if u.group {
            s.push_str(
                "\ndef group(x, k, dim):\n    \
                 \"\"\"Branching: k equal parts along dimension dim (1-based after the batch).\"\"\"\n    \
                 return torch.chunk(x, k, dim)\n\n",
            );
        }
        if u.dot {
            s.push_str(
                "\ndef dot_product(a, b):\n    \
                 \"\"\"Aggregation: the matrix product over the last two dimensions.\"\"\"\n    \
                 return torch.matmul(a, b)\n\n",
            );
        }
        if u.scaled_dot {
            s.push_str(
                "\ndef scaled_dot_product(a, b):\n    \
                 \"\"\"Aggregation: a @ b / sqrt(a's last dimension).\"\"\"\n    \
                 return torch.matmul(a, b) * (1.0 / math.sqrt(a.shape[-1]))\n\n",
            );
        }
        if u.nb201 {
            s.push_str(NB201_HELPERS);
        }
        s
    }
}

const NB201_HELPERS: &str = r#"
class ReLUConvBN(nn.Module):
    """NAS-Bench-201's convolution edge: ReLU, kxk convolution C->C without bias, BatchNorm."""

    def __init__(self, c, k):
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn(self.conv(torch.relu(x)))


def edge(op, x, module):
    """One NAS-Bench-201 edge applied to x."""
    if op == "none":
        return torch.zeros_like(x)
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return module(x)


class Cell(nn.Module):
    """A NAS-Bench-201 cell: node j is the sum of edge ij over i < j; the output is node 3.
    Edges in the order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""

    def __init__(self, c, ops):
        super().__init__()
        self.ops = ops
        k = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
        self.edges = nn.ModuleList(
            ReLUConvBN(c, k[op]) if op in k else nn.Identity() for op in ops
        )

    def forward(self, x):
        e = [lambda t, i=i: edge(self.ops[i], t, self.edges[i]) for i in range(6)]
        n1 = e[0](x)
        n2 = e[1](x) + e[2](n1)
        return e[3](x) + e[4](n1) + e[5](n2)


class Reduction(nn.Module):
    """The residual block between NAS-Bench-201 stages: ReLU-conv3x3(stride 2)-BN,
    ReLU-conv3x3-BN, plus 2x2 average pooling and a 1x1 convolution as the shortcut."""

    def __init__(self, c_in, c):
        super().__init__()
        self.conv_a = nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(c)
        self.conv_b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(c)
        self.shortcut = nn.Conv2d(c_in, c, 1, bias=False)

    def forward(self, x):
        a = self.bn_a(self.conv_a(torch.relu(x)))
        a = self.bn_b(self.conv_b(torch.relu(a)))
        return a + self.shortcut(F.avg_pool2d(x, 2, stride=2))

"#;

/// A Python string literal.
fn py_str(s: &str) -> String {
    format!("\"{}\"", py_escape(s))
}

/// `s` escaped for the inside of a Python string literal, `"..."` or a `"""` docstring alike:
/// backslashes and quotes escaped (so no text can close the literal and run as code), and
/// every control, bidirectional or other invisible character written as a Python escape.
fn py_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if crate::text::is_hidden(c) => {
                let _ = match c as u32 {
                    n if n < 0x100 => write!(out, "\\x{n:02x}"),
                    n if n < 0x10000 => write!(out, "\\u{n:04x}"),
                    n => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out
}

/// Breaks a long candidate text at ", " into lines of at most about `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for (i, part) in text.split(", ").enumerate() {
        let piece = if i == 0 {
            part.to_string()
        } else {
            format!(", {part}")
        };
        if cur.len() + piece.len() > width && !cur.is_empty() {
            lines.push(
                std::mem::take(&mut cur)
                    .trim_start_matches(", ")
                    .to_string(),
            );
            cur = piece.trim_start_matches(", ").to_string();
            if let Some(l) = lines.last_mut() {
                l.push(',');
            }
        } else {
            cur.push_str(&piece);
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::parse_one;

    /// A run name or note holding `"""` and Python statements stays text in the docstring:
    /// Python's own parser reads the file back with the hostile text as the docstring's data
    /// and no statement but the generated ones.
    #[test]
    fn hostile_names_stay_inside_the_docstring() {
        let hostile =
            "x\"\"\"\nimport os; os.system('touch /tmp/pwned')\n\"\"\"\\\x1b]0;t\x07\u{202e}";
        let node = parse_one("seq(linear(8), leakyrelu)").unwrap().node;
        let info = ModuleInfo {
            space: hostile.into(),
            weights_file: format!("{hostile}.safetensors"),
            notes: vec![format!("Run {hostile}, evaluation 1")],
            head: Head::Positions,
        };
        let m = module(&node, Shape::vec(4), 3, &info).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.py");
        std::fs::write(&file, &m.source).unwrap();
        let check = r#"
import ast, sys
tree = ast.parse(open(sys.argv[1], encoding="utf-8").read())
doc = ast.get_docstring(tree)
want = sys.argv[2]
assert doc.count(want) >= 2, doc
calls = [n for n in tree.body if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant)]
assert not calls, ast.dump(calls[0])
imports = sorted(a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names)
weights = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "WEIGHTS"][0]
assert weights.value.value == want + ".safetensors"
print("ok", imports)
"#;
        match std::process::Command::new("python3")
            .args(["-c", check])
            .arg(&file)
            .arg(hostile)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                m.source
            ),
            Err(e) => println!("skipped the Python parse check: no python3 ({e})"),
        }
        assert!(!m.source.contains('\x1b') && !m.source.contains('\u{202e}'));
    }

    #[test]
    fn attribute_names_follow_the_tree() {
        assert_eq!(attr("linear", "net"), "linear");
        assert_eq!(attr("linear", "net.0.2"), "linear_0_2");
    }

    #[test]
    fn a_convolution_reads_as_im2col_linear_col2im() {
        let node = parse_one("seq(route(im2col(3,1,1), linear(8), col2im), norm, leakyrelu)")
            .unwrap()
            .node;
        let m = module_with(&node, Shape::im(3, 8, 8), 10, &ModuleInfo::default(), false).unwrap();
        assert!(m.source.contains("self.linear_0_1 = nn.Linear(27, 8)"));
        assert!(m.source.contains("x1 = im2col(x, 3, 1, 1)"));
        assert!(m.source.contains("col2im(x2, 8, 8)"));
        assert!(m.source.contains("self.norm_1 = nn.BatchNorm2d(8)"));
        assert!(m.source.contains("return self.head(x5.mean((2, 3)))"));
        let names: Vec<&str> = m.names.iter().map(|(t, _)| t.as_str()).collect();
        assert!(names.contains(&"net.0.1.weight"));
        assert!(names.contains(&"net.1.running_var"));
        assert!(names.contains(&"head.bias"));
        assert_eq!(m.counters, vec!["norm_1.num_batches_tracked"]);
    }

    #[test]
    fn a_convolution_fuses_to_conv2d_with_the_linears_names() {
        let node = parse_one("seq(route(im2col(3,2,1), linear(8), col2im), norm, leakyrelu)")
            .unwrap()
            .node;
        let m = module_with(&node, Shape::im(3, 8, 8), 10, &ModuleInfo::default(), true).unwrap();
        assert!(
            m.source
                .contains("self.conv_0_1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)"),
            "{}",
            m.source
        );
        assert!(m.source.contains("x1 = self.conv_0_1(x)"));
        assert!(!m.source.contains("def im2col"));
        let names: Vec<(&str, &str)> = m
            .names
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_str()))
            .collect();
        assert!(names.contains(&("net.0.1.weight", "conv_0_1.weight")));
        assert_eq!(
            m.reshape,
            vec![("conv_0_1.weight".to_string(), vec![8, 3, 3, 3])]
        );
    }

    #[test]
    fn attention_fuses_to_scaled_dot_product_attention() {
        let node = parse_one("route(identity, branch(clone(2), seq(branch(clone(2), linear(8), route(identity, linear(8), permute21), dot_product), softmax), linear(4), dot_product), identity)")
            .unwrap()
            .node;
        let m = module_with(&node, Shape::col(6, 8), 10, &ModuleInfo::default(), true).unwrap();
        assert!(
            m.source.contains(
                "F.scaled_dot_product_attention(x1, x3.transpose(-1, -2), x4, scale=1.0)"
            ),
            "{}",
            m.source
        );
        assert!(m.source.contains("self.linear_1_1_0_1 = nn.Linear(8, 8)"));
        assert!(m.source.contains("self.linear_1_2 = nn.Linear(8, 4)"));
    }

    #[test]
    fn heads_side_by_side_fuse_to_one_attention_call() {
        let head = "branch(clone(2), seq(branch(clone(2), linear(8), route(identity, linear(8), permute21), scaled_dot_product), softmax), linear(4), dot_product)";
        let node = parse_one(&format!("branch(clone(2), {head}, cat(2, 2))"))
            .unwrap()
            .node;
        let m = module_with(&node, Shape::col(6, 8), 10, &ModuleInfo::default(), true).unwrap();
        let src = &m.source;
        assert_eq!(
            src.matches("F.scaled_dot_product_attention(").count(),
            1,
            "{src}"
        );
        assert!(src.contains(".unflatten(-1, (2, 8))"), "{src}");
        assert!(src.contains(".unflatten(-1, (2, 4))"), "{src}");
        // Each head keeps its own layers, named by their unfused paths, for the weights.
        for head in [1, 2] {
            for (sub, width) in [("1_0_1", 8), ("1_0_2_1", 8), ("2", 4)] {
                let line = format!("self.linear_{head}_{sub} = nn.Linear(8, {width})");
                assert!(src.contains(&line), "{line} missing from\n{src}");
            }
        }
        assert!(src.contains("self.head = nn.Linear(8, 10)"), "{src}");
    }

    #[test]
    fn wrapping_keeps_every_part() {
        let t = "seq(linear(8), relu, linear(8), relu, linear(8), relu)";
        let lines = wrap(t, 20);
        assert!(lines.len() > 1);
        assert_eq!(lines.join(" "), t);
    }
}
