//! Fusion patterns: subtrees that einspace writes out operation by operation but that compute
//! exactly what one library kernel computes, so that the compiler (`train::compile`) and the
//! PyTorch exporter (`report::pytorch`) can run that kernel instead.
//!
//! - A convolution: `route(im2col(k, s, p), linear(d), col2im)` is a kxk convolution with
//!   stride s, padding p, d filters and a bias. `im2col` (torch's `unfold`) orders a patch's
//!   features channel-major, `c*k*k + i*k + j`, which is exactly the row-major flattening of a
//!   convolution kernel `[d, C, k, k]`: the linear's weight `[d, C*k*k]` *is* the kernel. The
//!   same holds when the linear opens a sequence inside the route
//!   (`route(im2col(..), seq(linear(d), rest...), post)`, a patch embedding): the convolution
//!   runs and its output is laid out as positions `[B, L, d]` for the rest.
//! - Attention: `branch(clone(2), seq(branch(clone(2), q, k, scaled_dot_product), softmax), v,
//!   dot_product)` is `softmax(q(x) k(x) / sqrt(d)) v(x)`, torch's
//!   `scaled_dot_product_attention` with key `k(x)` transposed (einspace's key branch ends
//!   transposed, e.g. `route(identity, linear(d), permute21)`). With `dot_product` in place of
//!   `scaled_dot_product` the scale is 1.
//!
//! The patterns only recognise; they own no parameters. Parameters keep the paths (and so the
//! names, shapes and initialisation) of the unfused tree, so weights trained either way load
//! either way.

use super::node::{Form, Node};
use super::ops::Op;
use super::shape::{Mode, Shape};

/// `want`, unless the environment variable `ARCHSMITH_FUSE` turns fusion off (`0`, `off`,
/// `false`). The variable can only switch fusion off, so a recipe's `fuse = false` holds.
pub fn from_env(want: bool) -> bool {
    let off = std::env::var("ARCHSMITH_FUSE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "off" | "false"
            )
        })
        .unwrap_or(false);
    want && !off
}

/// A convolution written as `route(im2col(k, s, p), inner, post)` whose inner module is, or
/// begins with, `linear(d)`.
#[derive(Clone, Copy, Debug)]
pub struct Conv<'a> {
    pub k: u32,
    pub s: u32,
    pub p: u32,
    /// Input channels.
    pub cin: u64,
    /// Output channels (the linear's width).
    pub d: u64,
    /// Whether the linear is the whole inner module (path `1`) or opens a sequence there
    /// (path `1.0`).
    pub in_seq: bool,
    /// The rest of the inner sequence after the linear (empty for a lone linear), applied to
    /// positions `[B, L, d]`; its children keep their paths `1.(i+1)`.
    pub rest: &'a [Node],
    /// The post-routing operation (path `2`).
    pub post: &'a Node,
}

impl Conv<'_> {
    /// Whether the whole route is one convolution (`linear(d)` then `col2im`): the output
    /// stays an image and no reshaping is needed at all.
    pub fn is_plain(&self) -> bool {
        self.rest.is_empty() && matches!(self.post, Node::Op(Op::Col2Im))
    }
}

/// The convolution pattern at `node` for input `x`, if it is one.
pub fn conv(node: &Node, x: Shape) -> Option<Conv<'_>> {
    let Node::Form(Form::Route, ch) = node else {
        return None;
    };
    let [Node::Op(Op::Im2Col { k, s, p }), inner, post] = ch.as_slice() else {
        return None;
    };
    if x.mode() != Mode::Im {
        return None;
    }
    let (d, in_seq, rest) = match inner {
        Node::Op(Op::Linear(d)) => (*d, false, &[][..]),
        Node::Form(Form::Seq, items) => match items.first() {
            Some(Node::Op(Op::Linear(d))) => (*d, true, &items[1..]),
            _ => return None,
        },
        _ => return None,
    };
    Some(Conv {
        k: *k,
        s: *s,
        p: *p,
        cin: x.dims()[0],
        d: d as u64,
        in_seq,
        rest,
        post,
    })
}

/// An attention written as einspace writes it: the three modules of the query, key and value
/// branches, and whether the scores are scaled by 1/sqrt(d).
#[derive(Clone, Copy, Debug)]
pub struct Attention<'a> {
    /// At path `1.0.1`.
    pub q: &'a Node,
    /// At path `1.0.2`; its output is the key transposed (`[.., d, S]`).
    pub k: &'a Node,
    /// At path `2`.
    pub v: &'a Node,
    pub scaled: bool,
}

/// The attention pattern at `node` for input `x`, if it is one. Only sequences and images
/// (where the products are batched matrix products over the last two dimensions) qualify.
pub fn attention(node: &Node, x: Shape) -> Option<Attention<'_>> {
    if x.mode() == Mode::Vec {
        return None;
    }
    let Node::Form(Form::Branch, ch) = node else {
        return None;
    };
    let [Node::Op(Op::Clone(2)), scores, v, Node::Op(Op::DotProduct)] = ch.as_slice() else {
        return None;
    };
    let Node::Form(Form::Seq, items) = scores else {
        return None;
    };
    let [inner, Node::Op(Op::Softmax)] = items.as_slice() else {
        return None;
    };
    let Node::Form(Form::Branch, ich) = inner else {
        return None;
    };
    let [Node::Op(Op::Clone(2)), q, k, Node::Op(agg)] = ich.as_slice() else {
        return None;
    };
    let scaled = match agg {
        Op::ScaledDotProduct => true,
        Op::DotProduct => false,
        _ => return None,
    };
    Some(Attention { q, k, v, scaled })
}

/// Several einspace attention heads side by side on one sequence, concatenated:
/// `branch(clone(h), head, cat(2, h))` on `[B, S, D]`, where each head (one module, copied h
/// times with its own weights) is an [`Attention`] whose query is `linear(d)`, key
/// `route(identity, linear(d), permute21)` and value `linear(dv)`. This is multi-head
/// attention: one linear map of all 3h projections, one attention call over h heads, the
/// heads' outputs side by side as `cat` lays them.
#[derive(Clone, Copy, Debug)]
pub struct MultiHead {
    pub heads: u32,
    /// Query and key width of a head.
    pub d: u32,
    /// Value width of a head.
    pub dv: u32,
    pub scaled: bool,
}

/// The multi-head pattern at `node` for input `x`, if it is one.
pub fn multi_head(node: &Node, x: Shape) -> Option<MultiHead> {
    if x.mode() != Mode::Col {
        return None;
    }
    let Node::Form(Form::Branch, ch) = node else {
        return None;
    };
    let [Node::Op(Op::Clone(h)), head, Node::Op(Op::Cat { dim: 2, k })] = ch.as_slice() else {
        return None;
    };
    if h != k || *h < 2 {
        return None;
    }
    let a = attention(head, x)?;
    let Node::Op(Op::Linear(d)) = a.q else {
        return None;
    };
    let Node::Form(Form::Route, kr) = a.k else {
        return None;
    };
    let [Node::Op(Op::Identity), Node::Op(Op::Linear(dk)), Node::Op(Op::Permute(p))] =
        kr.as_slice()
    else {
        return None;
    };
    let Node::Op(Op::Linear(dv)) = a.v else {
        return None;
    };
    if dk != d || !matches!(p, super::ops::Perm::P21) {
        return None;
    }
    Some(MultiHead {
        heads: *h,
        d: *d,
        dv: *dv,
        scaled: a.scaled,
    })
}

/// How many subtrees of `node` (for input `x`) each pattern would fuse: (convolutions,
/// attentions). Walks the tree with the validator's shape rules; a malformed tree counts what
/// it can.
pub fn count(node: &Node, x: Shape) -> (usize, usize) {
    let mut n = (0, 0);
    walk(node, x, super::ops::Ctx::default(), &mut n);
    n
}

fn walk(node: &Node, x: Shape, ctx: super::ops::Ctx, n: &mut (usize, usize)) -> Option<Shape> {
    match node {
        Node::Op(op) => op.apply(x, &ctx).ok(),
        Node::Form(Form::Seq, ch) => {
            let mut cur = x;
            for c in ch {
                cur = walk(c, cur, ctx, n)?;
            }
            Some(cur)
        }
        Node::Form(Form::Route, ch) if ch.len() == 3 => {
            if conv(node, x).is_some() {
                n.0 += 1;
            }
            let y = walk(&ch[0], x, ctx, n)?;
            let inner = match &ch[0] {
                Node::Op(op) => op.fold_size(x).map(|hw| super::ops::Ctx {
                    fold: Some(hw),
                    ..ctx
                }),
                _ => None,
            }
            .unwrap_or(ctx);
            let z = walk(&ch[1], y, inner, n)?;
            walk(&ch[2], z, inner, n)
        }
        Node::Form(Form::Branch, ch) if ch.len() >= 3 => {
            if let Some(m) = multi_head(node, x) {
                // One fused call for all the heads; their inner patterns are not walked.
                n.1 += 1;
                let [s, _] = x.dims()[..] else { return None };
                return Some(Shape::col(s, (m.heads * m.dv) as u64));
            }
            if attention(node, x).is_some() {
                n.1 += 1;
            }
            let len = ch.len();
            let (Node::Op(split), Node::Op(merge)) = (&ch[0], &ch[len - 1]) else {
                return None;
            };
            let (k, part) = split.split(x).ok()?;
            let modules = &ch[1..len - 1];
            let mut outs = Vec::with_capacity(k);
            for i in 0..k {
                let m = modules.get(if modules.len() == 1 { 0 } else { i })?;
                outs.push(walk(m, part, ctx, n)?);
            }
            merge.merge(&outs).ok()
        }
        Node::Form(Form::Residual, ch) if ch.len() == 1 => walk(&ch[0], x, ctx, n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::parse_one;

    fn node(s: &str) -> Node {
        parse_one(s).unwrap().node
    }

    #[test]
    fn finds_convolutions_and_patch_embeddings() {
        let x = Shape::im(3, 32, 32);
        let n = node("route(im2col(3, 2, 1), linear(16), col2im)");
        let c = conv(&n, x).unwrap();
        assert_eq!((c.k, c.s, c.p, c.cin, c.d), (3, 2, 1, 3, 16));
        assert!(c.is_plain() && !c.in_seq);
        let n = node("route(im2col(4, 4, 0), seq(linear(32), leakyrelu), identity)");
        let c = conv(&n, x).unwrap();
        assert!(c.in_seq && !c.is_plain());
        assert_eq!(c.rest.len(), 1);
        // A linear that does not open the inner module is not a convolution.
        let n = node("route(im2col(4, 4, 0), seq(norm, linear(32)), identity)");
        assert!(conv(&n, x).is_none());
        // Not on sequences.
        let n = node("route(identity, linear(16), identity)");
        assert!(conv(&n, Shape::col(8, 8)).is_none());
    }

    #[test]
    fn finds_einspace_attention() {
        let text = "branch(clone(2), seq(branch(clone(2), linear(8), route(identity, linear(8), permute21), scaled_dot_product), softmax), linear(8), dot_product)";
        let n = node(text);
        let a = attention(&n, Shape::col(16, 8)).unwrap();
        assert!(a.scaled);
        assert_eq!(a.q.to_string(), "linear(8)");
        assert_eq!(a.v.to_string(), "linear(8)");
        let unscaled = text.replace("scaled_dot_product", "dot_product");
        assert!(
            !attention(&node(&unscaled), Shape::col(16, 8))
                .unwrap()
                .scaled
        );
        // Without the softmax it is two products, not attention.
        let plain = text.replace(", softmax)", ", identity)");
        assert!(attention(&node(&plain), Shape::col(16, 8)).is_none());
    }

    #[test]
    fn counts_over_a_tree() {
        let s = crate::space::Space::load("einspace").unwrap();
        let r = &s.seed("resnet18_no_maxpool").unwrap().node;
        assert_eq!(count(r, Shape::im(3, 32, 32)), (21, 0));
        let t = &s.seed("transformer").unwrap().node;
        // The patch embedding and one multi-head attention in each of four layers.
        assert_eq!(count(t, Shape::im(3, 32, 32)), (1, 4));
        let text = "branch(clone(4), branch(clone(2), seq(branch(clone(2), linear(8), route(identity, linear(8), permute21), scaled_dot_product), softmax), linear(16), dot_product), cat(2, 4))";
        let m = multi_head(&node(text), Shape::col(10, 32)).unwrap();
        assert_eq!((m.heads, m.d, m.dv, m.scaled), (4, 8, 16, true));
        // Heads on groups of the features are not one projection of the whole input.
        let grouped = text.replace("clone(4)", "group(4, 2)");
        assert!(multi_head(&node(&grouped), Shape::col(10, 32)).is_none());
    }
}
