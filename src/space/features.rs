//! Features of a candidate for surrogate models: counts of each operation and form, depth,
//! size, parameters, FLOPs, branching and modes.

use super::check::Analysis;
use super::node::{Form, Node, FORMS};
use super::ops::{Op, OPS};
use super::shape::Mode;
use std::collections::BTreeMap;

/// Features of one valid candidate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Features {
    /// How often each operation family and form appears (by name).
    pub counts: BTreeMap<String, u32>,
    pub depth: usize,
    pub nodes: usize,
    pub params: u64,
    pub flops: u64,
    pub activation_bytes: u64,
    /// Number of branch nodes, and the total number of branches they open.
    pub branches: u32,
    pub branch_width: u32,
    /// How many nodes produce each mode.
    pub im_nodes: u32,
    pub col_nodes: u32,
    pub vec_nodes: u32,
    /// Operations that only move data (identity, permutations, im2col, col2im).
    pub routing_ops: u32,
}

/// Form names not already counted as operations (`add`, `tanh` and `sigmoid` name both an
/// operation and an expression form, counted once by name).
fn form_names() -> impl Iterator<Item = &'static str> {
    FORMS
        .iter()
        .map(|f| f.name)
        .filter(|n| !OPS.iter().any(|o| o.name == *n))
}

impl Features {
    /// Computes features from a candidate and its analysis (with per-node infos for modes).
    pub fn of(node: &Node, analysis: &Analysis) -> Features {
        let mut counts = BTreeMap::new();
        let mut branches = 0;
        let mut branch_width = 0;
        let mut routing_ops = 0;
        node.walk(&mut |_, n| {
            *counts.entry(n.head().to_string()).or_insert(0) += 1;
            match n {
                Node::Op(op) if op.is_routing() => routing_ops += 1,
                Node::Form(Form::Branch, ch) => {
                    branches += 1;
                    if let Some(Node::Op(Op::Clone(k) | Op::Group { k, .. })) = ch.first() {
                        branch_width += *k;
                    }
                }
                _ => {}
            }
        });
        let (mut im, mut col, mut vec) = (0, 0, 0);
        for i in &analysis.infos {
            match i.output.mode() {
                Mode::Im => im += 1,
                Mode::Col => col += 1,
                Mode::Vec => vec += 1,
            }
        }
        Features {
            counts,
            depth: analysis.depth,
            nodes: analysis.nodes,
            params: analysis.total_params(),
            flops: analysis.flops,
            activation_bytes: analysis.activation_bytes,
            branches,
            branch_width,
            im_nodes: im,
            col_nodes: col,
            vec_nodes: vec,
            routing_ops,
        }
    }

    /// The names of [`Features::vector`]'s entries, in order.
    pub fn names() -> Vec<String> {
        let mut v: Vec<String> = OPS.iter().map(|s| format!("count:{}", s.name)).collect();
        v.extend(form_names().map(|f| format!("count:{f}")));
        v.extend(
            [
                "depth",
                "nodes",
                "log10_params",
                "log10_flops",
                "log10_activation_bytes",
                "branches",
                "branch_width",
                "im_nodes",
                "col_nodes",
                "vec_nodes",
                "routing_ops",
            ]
            .map(String::from),
        );
        v
    }

    /// A fixed-length numeric vector for surrogates (sizes on a log scale).
    pub fn vector(&self) -> Vec<f64> {
        let c = |n: &str| self.counts.get(n).copied().unwrap_or(0) as f64;
        let mut v: Vec<f64> = OPS.iter().map(|s| c(s.name)).collect();
        v.extend(form_names().map(c));
        let lg = |x: u64| (x as f64 + 1.0).log10();
        v.extend([
            self.depth as f64,
            self.nodes as f64,
            lg(self.params),
            lg(self.flops),
            lg(self.activation_bytes),
            self.branches as f64,
            self.branch_width as f64,
            self.im_nodes as f64,
            self.col_nodes as f64,
            self.vec_nodes as f64,
            self.routing_ops as f64,
        ]);
        v
    }
}
