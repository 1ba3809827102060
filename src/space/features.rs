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
    /// For a NAS-Bench-Graph cell (`nbgraph(...)`): its structure, [`CELL_FEATURES`] numbers
    /// (empty otherwise). Counts alone cannot tell a chain from parallel nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cell: Vec<f64>,
}

/// Length of [`Features::cell`]: the topology (one-hot over the nine canonical ones), the
/// operation at each of the four positions (one-hot), the operations of the nodes that feed
/// the output (counts), the longest chain of non-skip nodes and the number of output nodes.
pub const CELL_FEATURES: usize = 9 + 4 * 9 + 9 + 2;

/// The structure of a canonical `nbgraph(...)` cell (see [`CELL_FEATURES`]).
pub fn cell_features(node: &Node) -> Option<Vec<f64>> {
    use super::gnn::{Gnn, LINKS, NODES};
    let mut found = None;
    node.walk(&mut |_, n| {
        if let Node::Form(Form::NbGraph, ch) = n {
            found.get_or_insert(ch);
        }
    });
    let ch = found?;
    let mut link = [0u8; NODES];
    let mut ops = [Gnn::Skip; NODES];
    for (i, c) in ch.iter().enumerate().take(NODES) {
        let Node::Op(Op::Gnn(g, l)) = c else {
            return None;
        };
        link[i] = *l;
        ops[i] = *g;
    }
    let mut v = vec![0.0; CELL_FEATURES];
    if let Some(t) = LINKS.iter().position(|l| *l == link) {
        v[t] = 1.0;
    }
    for (i, g) in ops.iter().enumerate() {
        v[9 + 9 * i + g.index() as usize] = 1.0;
    }
    let mut depth = [0.0f64; NODES + 1];
    for i in 0..NODES {
        depth[i + 1] = depth[link[i] as usize] + f64::from(u8::from(ops[i] != Gnn::Skip));
    }
    let mut longest: f64 = 0.0;
    let mut leaves = 0.0;
    for i in 0..NODES {
        if !link.contains(&(i as u8 + 1)) {
            v[45 + ops[i].index() as usize] += 1.0;
            longest = longest.max(depth[i + 1]);
            leaves += 1.0;
        }
    }
    v[54] = longest;
    v[55] = leaves;
    Some(v)
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
            cell: cell_features(node).unwrap_or_default(),
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
        v.extend((0..CELL_FEATURES).map(|i| format!("cell:{i}")));
        v
    }

    /// A fixed-length numeric vector for surrogates (sizes on a log scale).
    pub fn vector(&self) -> Vec<f64> {
        // The count entries' positions by name, built once: a model-based search computes
        // this vector for every candidate of every round's pool.
        type Index = std::collections::HashMap<&'static str, Vec<usize>>;
        static INDEX: std::sync::OnceLock<(Index, usize)> = std::sync::OnceLock::new();
        let (index, len) = INDEX.get_or_init(|| {
            let mut m = Index::new();
            let names: Vec<&str> = OPS.iter().map(|s| s.name).chain(form_names()).collect();
            for (i, n) in names.iter().enumerate() {
                m.entry(n).or_default().push(i);
            }
            (m, names.len())
        });
        let mut v = vec![0.0; *len];
        for (name, &n) in &self.counts {
            for &i in index.get(name.as_str()).into_iter().flatten() {
                v[i] = f64::from(n);
            }
        }
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
        let mut cell = self.cell.clone();
        cell.resize(CELL_FEATURES, 0.0);
        v.extend(cell);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_puts_each_count_under_its_name() {
        let f = Features {
            counts: [("gcn", 2), ("nbgraph", 1), ("linear", 3), ("not-a-name", 9)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            depth: 2,
            nodes: 5,
            params: 0,
            flops: 0,
            activation_bytes: 0,
            branches: 0,
            branch_width: 0,
            im_nodes: 0,
            col_nodes: 0,
            vec_nodes: 0,
            routing_ops: 0,
            cell: vec![],
        };
        let names = Features::names();
        let v = f.vector();
        assert_eq!(v.len(), names.len());
        for (n, x) in names.iter().zip(&v) {
            let want = match n.as_str() {
                "count:gcn" => 2.0,
                "count:nbgraph" => 1.0,
                "count:linear" => 3.0,
                "depth" => 2.0,
                "nodes" => 5.0,
                _ => 0.0,
            };
            assert_eq!(*x, want, "{n}");
        }
    }
}
