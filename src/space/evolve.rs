//! Mutation and crossover of valid candidates; both return only valid candidates.
//!
//! Mutation is einspace's: pick a node uniformly, redraw its subtree from the same nonterminal
//! with the same input shape (and the same enclosing im2col), excluding its current choice, and
//! keep the child only if the whole candidate still validates. Crossover swaps a subtree of one
//! parent for a subtree of the other whose input and output shapes agree.

use super::check::{Analysis, NodeInfo};
use super::node::Node;
use super::sample::{Got, Want};
use super::Space;
use super::{CheckOptions, SpaceError};
use crate::space::shape::Shape;
use rand::seq::SliceRandom;
use rand::Rng;

/// How many children are drawn before mutation or crossover gives up.
pub const ATTEMPTS: usize = 200;

/// Positions that mutation and crossover may replace: nodes in module or one-input-operation
/// slots (replacing a branching or aggregation operation alone would change the number of
/// branches under it).
fn replaceable<'a>(node: &Node, infos: &'a [NodeInfo]) -> Vec<&'a NodeInfo> {
    infos
        .iter()
        .filter(|i| i.symbol.is_some())
        .filter(|i| match i.path.split_last() {
            None => true,
            Some((&last, parent)) => match node.get(parent) {
                Some(Node::Form(f, ch)) => {
                    let slot = f.child_slot(last, ch.len());
                    !matches!(
                        slot,
                        super::node::Slot::SplitOp | super::node::Slot::MergeOp
                    )
                }
                _ => false,
            },
        })
        .collect()
}

fn same_choice(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Op(x), Node::Op(y)) => x == y,
        (Node::Form(f, _), Node::Form(g, _)) => f == g,
        _ => false,
    }
}

impl Space {
    fn analyse_for_edit(
        &self,
        node: &Node,
        input: Shape,
        opts: &CheckOptions,
    ) -> Result<Analysis, SpaceError> {
        let mut o = *opts;
        o.infos = true;
        self.check(node, None, input, &o)
            .map_err(|diags| SpaceError::InvalidParent {
                candidate: node.to_string(),
                reasons: diags.iter().map(|d| d.to_string()).collect(),
            })
    }

    /// A valid child of `node` differing from it in one redrawn subtree.
    pub fn mutate<R: Rng>(
        &self,
        node: &Node,
        input: Shape,
        opts: &CheckOptions,
        rng: &mut R,
    ) -> Result<Node, SpaceError> {
        let analysis = self.analyse_for_edit(node, input, opts)?;
        let spots = replaceable(node, &analysis.infos);
        let sampler = self.sampler();
        for _ in 0..ATTEMPTS {
            let Some(spot) = spots.choose(rng) else { break };
            let Some(sym) = spot.symbol else { continue };
            let Some(old) = node.get(&spot.path) else {
                continue;
            };
            let Some((new, Got::Shape(_))) =
                sampler.draw(rng, sym, Want::Unary(spot.input), spot.ctx, spot.depth)
            else {
                continue;
            };
            if same_choice(old, &new) {
                continue;
            }
            let child = node.replace(&spot.path, new);
            if child != *node && self.check(&child, None, input, opts).is_ok() {
                return Ok(child);
            }
        }
        Err(SpaceError::NoChild {
            what: "mutation",
            candidate: node.to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// A valid child made of `a` with one subtree replaced by a subtree of `b` that takes and
    /// gives the same shapes.
    pub fn crossover<R: Rng>(
        &self,
        a: &Node,
        b: &Node,
        input: Shape,
        opts: &CheckOptions,
        rng: &mut R,
    ) -> Result<Node, SpaceError> {
        let ia = self.analyse_for_edit(a, input, opts)?;
        let ib = self.analyse_for_edit(b, input, opts)?;
        let sa = replaceable(a, &ia.infos);
        let sb = replaceable(b, &ib.infos);
        let mut pairs = Vec::new();
        for x in &sa {
            for y in &sb {
                if x.input == y.input && x.output == y.output && x.ctx == y.ctx && x.ty == y.ty {
                    if let (Some(nx), Some(ny)) = (a.get(&x.path), b.get(&y.path)) {
                        if nx != ny && !(x.path.is_empty() && y.path.is_empty()) {
                            pairs.push((x.path.clone(), ny));
                        }
                    }
                }
            }
        }
        pairs.shuffle(rng);
        for (path, donor) in pairs.into_iter().take(ATTEMPTS) {
            let child = a.replace(&path, donor.clone());
            if child != *a && child != *b && self.check(&child, None, input, opts).is_ok() {
                return Ok(child);
            }
        }
        Err(SpaceError::NoChild {
            what: "crossover",
            candidate: format!("{a} x {b}"),
            attempts: ATTEMPTS,
        })
    }
}
