//! NAS-Bench-Graph's cells (Qin et al., NeurIPS 2022): four computing nodes, each taking its
//! input from the raw input (0) or an earlier node and applying one GNN operation; every node
//! that no other node reads feeds the output.
//!
//! The benchmark identifies isomorphic cells by a key, `Arch(link, ops).valid_hash()` in the
//! package's `architecture.py`. [`key`] is that function, step for step (`regularize`,
//! `move_skip_op`, `equalpart_sort`, `hash_arch`), and [`canonical`] decodes the key back to
//! the one cell archsmith writes for the class, so that the candidate's canonical text (and
//! so its hash) identifies exactly what the benchmark identifies. A test compares [`key`] with
//! the package's own function over every cell where the package is installed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// A GNN operation of the benchmark, in the package's `gnn_list` order (the key uses the
/// index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gnn {
    Gat,
    Gcn,
    Gin,
    Cheb,
    Sage,
    Arma,
    Graph,
    Fc,
    Skip,
}

impl Gnn {
    pub const ALL: [Gnn; 9] = [
        Gnn::Gat,
        Gnn::Gcn,
        Gnn::Gin,
        Gnn::Cheb,
        Gnn::Sage,
        Gnn::Arma,
        Gnn::Graph,
        Gnn::Fc,
        Gnn::Skip,
    ];
    /// The operations of the proteins table (`gnn_list_proteins`).
    pub const PROTEINS: [Gnn; 5] = [Gnn::Gcn, Gnn::Sage, Gnn::Arma, Gnn::Fc, Gnn::Skip];

    pub fn name(self) -> &'static str {
        match self {
            Gnn::Gat => "gat",
            Gnn::Gcn => "gcn",
            Gnn::Gin => "gin",
            Gnn::Cheb => "cheb",
            Gnn::Sage => "sage",
            Gnn::Arma => "arma",
            Gnn::Graph => "graph",
            Gnn::Fc => "fc",
            Gnn::Skip => "skip",
        }
    }

    pub fn by_name(name: &str) -> Option<Gnn> {
        Gnn::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The index in `gnn_list`.
    pub fn index(self) -> u64 {
        self as u64
    }
}

impl fmt::Display for Gnn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Nodes in a cell.
pub const NODES: usize = 4;

/// `link[i]`: the input of node i+1 (0 the raw input, j the output of node j <= i).
pub type Link = [u8; NODES];
pub type Ops = [Gnn; NODES];

/// The nine canonical topologies (`link_list`); a key starts from the index here.
pub const LINKS: [Link; 9] = [
    [0, 0, 0, 0],
    [0, 0, 0, 1],
    [0, 0, 1, 1],
    [0, 0, 1, 2],
    [0, 0, 1, 3],
    [0, 1, 1, 1],
    [0, 1, 1, 2],
    [0, 1, 2, 2],
    [0, 1, 2, 3],
];

/// Whether `link` is a cell's (every node reads the input or an earlier node) and `ops` is
/// not all skips (which the benchmark does not hold).
pub fn is_cell(link: &Link, ops: &Ops) -> bool {
    link.iter().enumerate().all(|(i, &l)| (l as usize) <= i) && ops.iter().any(|&o| o != Gnn::Skip)
}

/// `Arch.regularize`: the other 15 link lists mapped onto the canonical 9, ops permuted.
fn regularize(link: Link, o: Ops) -> (Link, Ops) {
    match link {
        [0, 0, 0, 2] => ([0, 0, 0, 1], [o[1], o[0], o[2], o[3]]),
        [0, 0, 0, 3] => ([0, 0, 0, 1], [o[2], o[0], o[1], o[3]]),
        [0, 0, 1, 0] => ([0, 0, 0, 1], [o[0], o[1], o[3], o[2]]),
        [0, 0, 2, 0] => ([0, 0, 0, 1], [o[1], o[0], o[3], o[2]]),
        [0, 0, 2, 1] => ([0, 0, 1, 2], [o[1], o[0], o[2], o[3]]),
        [0, 0, 2, 2] => ([0, 0, 1, 1], [o[1], o[0], o[2], o[3]]),
        [0, 0, 2, 3] => ([0, 0, 1, 3], [o[1], o[0], o[2], o[3]]),
        [0, 1, 0, 0] => ([0, 0, 0, 1], [o[0], o[2], o[3], o[1]]),
        [0, 1, 0, 1] => ([0, 0, 1, 1], [o[0], o[2], o[1], o[3]]),
        [0, 1, 0, 2] => ([0, 0, 1, 3], [o[0], o[2], o[1], o[3]]),
        [0, 1, 0, 3] => ([0, 0, 1, 2], [o[0], o[2], o[1], o[3]]),
        [0, 1, 1, 0] => ([0, 0, 1, 1], [o[0], o[3], o[1], o[2]]),
        [0, 1, 1, 3] => ([0, 1, 1, 2], [o[0], o[2], o[1], o[3]]),
        [0, 1, 2, 0] => ([0, 0, 1, 3], [o[0], o[3], o[1], o[2]]),
        [0, 1, 2, 1] => ([0, 1, 1, 2], [o[0], o[1], o[3], o[2]]),
        _ => (link, o),
    }
}

/// `Arch.move_skip_op`: skip nodes that only copy their input are moved to the front, so that
/// cells that compute the same thing coincide.
fn move_skip_op(mut link: Link, mut ops: Ops) -> (Link, Ops) {
    fn move_one(k: usize, link: Link, ops: Ops) -> (Link, Ops) {
        let mut new_ops = [ops[k]; NODES];
        let mut j = 1;
        for (i, &o) in ops.iter().enumerate() {
            if i != k {
                new_ops[j] = o;
                j += 1;
            }
        }
        let mut l = link;
        for i in 0..NODES {
            let father = link[i] as usize;
            if father == k + 1 {
                // Python reads link[k] after the loop has already updated it (k < i).
                l[i] = l[k];
            }
            if father <= k {
                l[i] += 1;
            }
        }
        let mut new_link = [0u8; NODES];
        let mut j = 1;
        for (i, &x) in l.iter().enumerate() {
            if i != k {
                new_link[j] = x;
                j += 1;
            }
        }
        (new_link, new_ops)
    }
    fn check_dim(k: usize, link: &Link, ops: &Ops) -> bool {
        let mut k = k as i64;
        while k > -1 {
            if ops[k as usize] != Gnn::Skip {
                return false;
            }
            k = link[k as usize] as i64 - 1;
        }
        true
    }
    for i in 0..NODES {
        if ops[i] != Gnn::Skip {
            continue;
        }
        let mut son = false;
        let mut brother = false;
        for (j, &fa) in link.iter().enumerate() {
            if fa as usize == i + 1 {
                son = true;
            } else if j != i && fa == link[i] {
                brother = true;
            }
        }
        // The package's `son or not brother or check_dim(...) and not son`, simplified.
        if son || !brother || check_dim(i, &link, &ops) {
            (link, ops) = move_one(i, link, ops);
        }
    }
    match link {
        [0, 1, 2, 1] => ([0, 1, 1, 2], [ops[0], ops[1], ops[3], ops[2]]),
        [0, 1, 1, 3] => ([0, 1, 1, 2], [ops[0], ops[2], ops[1], ops[3]]),
        _ => (link, ops),
    }
}

/// `Arch.equalpart_sort`: the ops of interchangeable nodes sorted by their index.
fn equalpart_sort(link: Link, mut ops: Ops) -> Ops {
    let ids: &[usize] = match link {
        [0, 0, 0, 0] => &[0, 1, 2, 3],
        [0, 0, 0, 1] => &[1, 2],
        [0, 0, 1, 1] => &[2, 3],
        [0, 0, 1, 2] => {
            let o = ops;
            if o[0] > o[1] || (o[0] == o[1] && o[2] > o[3]) {
                ops = [o[1], o[0], o[3], o[2]];
            }
            &[]
        }
        [0, 1, 1, 1] => &[1, 2, 3],
        [0, 1, 2, 2] => &[2, 3],
        _ => &[],
    };
    let mut sorted: Vec<Gnn> = ids.iter().map(|&i| ops[i]).collect();
    sorted.sort();
    for (&i, o) in ids.iter().zip(sorted) {
        ops[i] = o;
    }
    ops
}

/// The benchmark's key of a cell (`Arch(link, ops).valid_hash()`), or `None` when the
/// canonicalised topology is not one of the nine (which no cell reaches; a test checks it).
pub fn key(link: Link, ops: Ops) -> Option<u64> {
    let (l, o) = regularize(link, ops);
    let (l, o) = move_skip_op(l, o);
    let o = equalpart_sort(l, o);
    let t = LINKS.iter().position(|x| *x == l)? as u64;
    Some(
        o.iter()
            .fold(t, |h, g| h * (Gnn::ALL.len() as u64 + 1) + g.index()),
    )
}

/// The cell a key stands for: the topology and ops it encodes.
pub fn decode(key: u64) -> Option<(Link, Ops)> {
    let b = Gnn::ALL.len() as u64 + 1;
    let mut h = key;
    let mut ops = [Gnn::Gat; NODES];
    for i in (0..NODES).rev() {
        ops[i] = *Gnn::ALL.get((h % b) as usize)?;
        h /= b;
    }
    Some((*LINKS.get(h as usize)?, ops))
}

/// The one cell archsmith writes for the class of `(link, ops)`: the benchmark's key decoded.
/// Isomorphic cells give the same canonical cell.
pub fn canonical(link: Link, ops: Ops) -> Option<(Link, Ops)> {
    if !is_cell(&link, &ops) {
        return None;
    }
    decode(key(link, ops)?)
}

/// Every cell (link list and ops) whose node i draws its operation from `choices[i]`, in a
/// fixed order; the all-skip cell is left out.
pub fn all_cells(choices: &[Vec<(Gnn, u8)>; NODES]) -> Vec<(Link, Ops)> {
    let mut out = Vec::new();
    for &(a, la) in &choices[0] {
        for &(b, lb) in &choices[1] {
            for &(c, lc) in &choices[2] {
                for &(d, ld) in &choices[3] {
                    let link = [la, lb, lc, ld];
                    let ops = [a, b, c, d];
                    if is_cell(&link, &ops) {
                        out.push((link, ops));
                    }
                }
            }
        }
    }
    out
}

/// The distinct cells (one canonical cell per key, in key order) that `choices` make,
/// computed once per set of choices and kept for the process.
pub fn distinct_cells(choices: [Vec<(Gnn, u8)>; NODES]) -> Arc<Vec<(Link, Ops)>> {
    type Cache = Mutex<HashMap<[Vec<(Gnn, u8)>; NODES], Arc<Vec<(Link, Ops)>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().ok().and_then(|m| m.get(&choices).cloned()) {
        return c;
    }
    let mut keyed: Vec<(u64, (Link, Ops))> = all_cells(&choices)
        .into_iter()
        .filter_map(|(l, o)| {
            let k = key(l, o)?;
            Some((k, decode(k)?))
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.dedup_by_key(|(k, _)| *k);
    let cells = Arc::new(keyed.into_iter().map(|(_, c)| c).collect::<Vec<_>>());
    if let Ok(mut m) = cache.lock() {
        m.insert(choices, cells.clone());
    }
    cells
}

/// The cells one step from `(link, ops)`: one node's operation changed, or one node's input
/// moved to another earlier node, each canonicalised, distinct, without the cell itself (and
/// without the all-skip non-cell). `ops` limits the operations tried (a table may hold fewer
/// than nine). The smallest moves a search can make in this space, and all of them: local
/// search and evolution take one of these, the model-based strategy scores them all.
pub fn neighbours(link: Link, ops: Ops, choices: &[Gnn]) -> Vec<(Link, Ops)> {
    let own = key(link, ops);
    let mut out: Vec<(u64, (Link, Ops))> = Vec::new();
    let mut push = |l: Link, o: Ops| {
        if !is_cell(&l, &o) {
            return;
        }
        if let Some(k) = key(l, o).filter(|k| Some(*k) != own) {
            if let Some(c) = decode(k) {
                out.push((k, c));
            }
        }
    };
    for i in 0..NODES {
        for &g in choices {
            if g != ops[i] {
                let mut o = ops;
                o[i] = g;
                push(link, o);
            }
        }
        for input in 0..=i as u8 {
            if input != link[i] {
                let mut l = link;
                l[i] = input;
                push(l, ops);
            }
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out.dedup_by_key(|(k, _)| *k);
    out.into_iter().map(|(_, c)| c).collect()
}

/// The link list and operations of a candidate that is an `nbgraph(...)` cell.
pub fn cell_of(node: &super::Node) -> Option<(Link, Ops)> {
    use super::{Form, Node, Op};
    let Node::Form(Form::NbGraph, ch) = node else {
        return None;
    };
    if ch.len() != NODES {
        return None;
    }
    let mut link = [0u8; NODES];
    let mut ops = [Gnn::Skip; NODES];
    for (i, c) in ch.iter().enumerate() {
        let Node::Op(Op::Gnn(g, l)) = c else {
            return None;
        };
        link[i] = *l;
        ops[i] = *g;
    }
    Some((link, ops))
}

/// The candidate for a cell, as written (callers pass canonical cells).
pub fn cell_node(link: Link, ops: Ops) -> super::Node {
    use super::{Form, Node, Op};
    Node::Form(
        Form::NbGraph,
        link.iter()
            .zip(ops)
            .map(|(&l, g)| Node::Op(Op::Gnn(g, l)))
            .collect(),
    )
}

/// Every link list of a cell: node i reads 0..=i.
pub fn all_links() -> Vec<Link> {
    let mut v = Vec::new();
    for a in 0..=1u8 {
        for b in 0..=2u8 {
            for c in 0..=3u8 {
                v.push([0, a, b, c]);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn every_cell(ops: &[Gnn]) -> Vec<(Link, Ops)> {
        let mut v = Vec::new();
        for link in all_links() {
            for &a in ops {
                for &b in ops {
                    for &c in ops {
                        for &d in ops {
                            if is_cell(&link, &[a, b, c, d]) {
                                v.push((link, [a, b, c, d]));
                            }
                        }
                    }
                }
            }
        }
        v
    }

    #[test]
    fn the_space_has_the_benchmarks_number_of_classes() {
        // 26,206 keys for nine operations and 2,021 for the proteins five, as in the tables.
        for (ops, want) in [(&Gnn::ALL[..], 26_206), (&Gnn::PROTEINS[..], 2_021)] {
            let cells = every_cell(ops);
            let keys: HashSet<u64> = cells
                .iter()
                .map(|(l, o)| key(*l, *o).expect("every cell has a key"))
                .collect();
            assert_eq!(keys.len(), want);
        }
    }

    #[test]
    fn neighbours_are_one_edit_away_canonical_and_distinct() {
        let cells = distinct_cells(std::array::from_fn(|i| {
            Gnn::ALL
                .iter()
                .flat_map(|&g| (0..=i as u8).map(move |l| (g, l)))
                .collect()
        }));
        let classes: HashSet<u64> = cells.iter().map(|(l, o)| key(*l, *o).unwrap()).collect();
        let mut sizes = Vec::new();
        for &(l, o) in cells.iter().step_by(97) {
            let n = neighbours(l, o, &Gnn::ALL);
            let keys: HashSet<u64> = n.iter().map(|(a, b)| key(*a, *b).unwrap()).collect();
            assert_eq!(keys.len(), n.len(), "distinct");
            assert!(!keys.contains(&key(l, o).unwrap()), "not itself");
            for (a, b) in &n {
                assert_eq!(canonical(*a, *b), Some((*a, *b)), "canonical");
                assert!(classes.contains(&key(*a, *b).unwrap()));
            }
            // At most 4 x 8 operation changes and 0 + 1 + 2 + 3 input moves.
            assert!(!n.is_empty() && n.len() <= 38, "{} neighbours", n.len());
            sizes.push(n.len());
        }
        assert!(sizes.iter().sum::<usize>() / sizes.len() >= 20);
        // Limited to the proteins table's operations, no other operation appears.
        let (l, o) = ([0, 1, 2, 3], [Gnn::Gcn, Gnn::Sage, Gnn::Arma, Gnn::Fc]);
        for (_, b) in neighbours(l, o, &Gnn::PROTEINS) {
            assert!(b.iter().all(|g| Gnn::PROTEINS.contains(g)));
        }
    }

    #[test]
    fn canonical_cells_are_fixed_points_and_classes_agree() {
        let mut by_key: HashMap<u64, (Link, Ops)> = HashMap::new();
        for (l, o) in every_cell(&Gnn::ALL) {
            let k = key(l, o).unwrap();
            let c = canonical(l, o).unwrap();
            assert_eq!(key(c.0, c.1), Some(k), "{l:?} {o:?}");
            assert_eq!(canonical(c.0, c.1), Some(c));
            by_key.entry(k).or_insert(c);
        }
        // Known pairs from the package: a chain of two skips then two GCNs is the anchor.
        let a = key([0, 1, 2, 3], [Gnn::Skip, Gnn::Skip, Gnn::Gcn, Gnn::Gcn]).unwrap();
        // Skips in front of a chain do not change what it computes.
        let b = key([0, 0, 2, 3], [Gnn::Skip, Gnn::Skip, Gnn::Gcn, Gnn::Gcn]).unwrap();
        assert_eq!(a, b);
        // Parallel nodes commute.
        assert_eq!(
            key([0, 0, 0, 0], [Gnn::Gcn, Gnn::Gat, Gnn::Sage, Gnn::Fc]),
            key([0, 0, 0, 0], [Gnn::Fc, Gnn::Sage, Gnn::Gat, Gnn::Gcn])
        );
        assert_eq!(key([0, 0, 0, 0], [Gnn::Gat; 4]), Some(0));
        assert_eq!(decode(0), Some(([0, 0, 0, 0], [Gnn::Gat; 4])));
    }
}
