//! Sampling candidates from a grammar's probabilities, drawing only options that fit the
//! current shape (as einspace does) and backtracking when a branch dead-ends.
//!
//! Shapes are inferred symbolically while the tree is drawn, so a dead end is found the moment
//! an option cannot apply, without building any tensor.

use super::grammar::{Body, Grammar, SymId};
use super::node::{Form, Node};
use super::ops::{no_detail, Ctx, Kind, Op};
use super::shape::{Mode, Shape};
use rand::Rng;
use smallvec::SmallVec;

/// What the caller needs from a symbol: a module on a shape, a branching of a shape, or an
/// aggregation of branch outputs.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    Unary(Shape),
    Split(Shape),
    Merge(&'a [Shape]),
}

/// What a drawn subtree produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Got {
    Shape(Shape),
    Parts(usize, Shape),
}

/// Settings of the sampler beyond the grammar's own.
#[derive(Clone, Copy, Debug)]
pub struct SampleSettings {
    /// Abandon a draw that grows past this many nodes (einspace bounds only depth; a
    /// near-critical grammar occasionally draws enormous trees that no limit would accept).
    pub max_nodes: usize,
    /// How many times a form is redrawn when an inner part dead-ends before giving up on it.
    pub retries: usize,
}

impl Default for SampleSettings {
    fn default() -> Self {
        SampleSettings {
            max_nodes: 1_000,
            retries: 3,
        }
    }
}

/// A grammar prepared for sampling.
pub struct Sampler<'g> {
    g: &'g Grammar,
    /// Symbols that can end in an operation without a form (open at the maximum depth).
    leafy: Vec<bool>,
    /// Symbols that can derive a form.
    formy: Vec<bool>,
    pub settings: SampleSettings,
}

/// The state of one draw.
struct Draw<'r, R: Rng> {
    rng: &'r mut R,
    nodes: usize,
    blown: bool,
}

impl<'g> Sampler<'g> {
    pub fn new(g: &'g Grammar, settings: SampleSettings) -> Sampler<'g> {
        let leafy = g.leafy();
        let formy = g.formy();
        Sampler {
            g,
            leafy,
            formy,
            settings,
        }
    }

    /// Draws one tree from `sym` for `want`, or `None` when every option dead-ends. Does not
    /// check resource limits; callers validate the result.
    pub fn draw<R: Rng>(
        &self,
        rng: &mut R,
        sym: SymId,
        want: Want<'_>,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Got)> {
        let mut d = Draw {
            rng,
            nodes: 0,
            blown: false,
        };
        let r = self.sym(&mut d, sym, want, ctx, depth);
        if d.blown {
            None
        } else {
            r
        }
    }

    fn sym<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        sym: SymId,
        want: Want<'_>,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Got)> {
        if d.blown {
            return None;
        }
        let g = self.g;
        let alts = &g.rules[sym].alts;
        let at_max = depth >= g.max_depth;
        let under_min = depth < g.min_depth;
        // Options open at this depth and fitting the input, with their weights.
        let mut open: SmallVec<[(usize, f64, Option<Got>); 24]> = SmallVec::new();
        let any_form_open = under_min
            && alts.iter().any(|a| match &a.body {
                Body::Form(..) => true,
                Body::Ref(t) => self.formy[*t],
                Body::Op(_) => false,
            });
        for (i, a) in alts.iter().enumerate() {
            // Seed-only alternatives (weight 0) are members of the space but never drawn.
            if a.weight <= 0.0 {
                continue;
            }
            let mut got = None;
            let ok = match &a.body {
                Body::Op(op) => {
                    got = if any_form_open {
                        None
                    } else {
                        apply(op, want, &ctx)
                    };
                    got.is_some()
                }
                Body::Ref(t) => {
                    if at_max {
                        self.leafy[*t]
                    } else if any_form_open {
                        self.formy[*t]
                    } else {
                        true
                    }
                }
                Body::Form(f, _) => {
                    !at_max && matches!(want, Want::Unary(_)) && form_may_fit(*f, want)
                }
            };
            if ok {
                open.push((i, a.weight, got));
            }
        }
        while !open.is_empty() {
            let total: f64 = open.iter().map(|o| o.1).sum();
            let mut pick = d.rng.gen::<f64>() * total;
            let mut k = open.len() - 1;
            for (j, o) in open.iter().enumerate() {
                if pick < o.1 {
                    k = j;
                    break;
                }
                pick -= o.1;
            }
            let (ai, _, op_got) = open.swap_remove(k);
            let got = match &alts[ai].body {
                Body::Op(op) => {
                    d.nodes += 1;
                    op_got.map(|g| (Node::Op(*op), g))
                }
                Body::Ref(t) => self.sym(d, *t, want, ctx, depth),
                Body::Form(f, slots) => {
                    let Want::Unary(x) = want else { continue };
                    self.form(d, *f, slots, x, ctx, depth + 1)
                }
            };
            if d.nodes > self.settings.max_nodes {
                d.blown = true;
            }
            if d.blown {
                return None;
            }
            if got.is_some() {
                return got;
            }
        }
        None
    }

    fn form<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        f: Form,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Got)> {
        d.nodes += 1;
        for _ in 0..self.settings.retries {
            if d.blown {
                return None;
            }
            let r = match f {
                Form::Seq => self.seq(d, slots, x, ctx, depth),
                Form::Branch => self.branch(d, slots, x, ctx, depth),
                Form::Route => self.route(d, slots, x, ctx, depth),
                Form::Residual => {
                    let (m, y) = self.unary(d, slots[0], x, ctx, depth)?;
                    (y == x).then(|| (Node::Form(Form::Residual, vec![m]), x))
                }
                Form::Nb201 => self.nb201(d, slots, x, ctx, depth),
                Form::NbGraph => self.nbgraph(d, slots, x, ctx),
                _ => self.program_form(d, f, slots, x, ctx, depth),
            };
            if let Some((n, y)) = r {
                return Some((n, Got::Shape(y)));
            }
        }
        None
    }

    fn unary<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        sym: SymId,
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Shape)> {
        match self.sym(d, sym, Want::Unary(x), ctx, depth)? {
            (n, Got::Shape(y)) => Some((n, y)),
            _ => None,
        }
    }

    fn seq<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Shape)> {
        let (a, y) = self.unary(d, slots[0], x, ctx, depth)?;
        let (b, z) = self.unary(d, slots[1], y, ctx, depth)?;
        Some((Node::seq(vec![a, b]), z))
    }

    fn branch<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Shape)> {
        let (b, got) = self.sym(d, slots[0], Want::Split(x), ctx, depth)?;
        let (Node::Op(b), Got::Parts(k, part)) = (b, got) else {
            return None;
        };
        // einspace: two branches are drawn independently; four or eight copy one module.
        let mut modules = Vec::new();
        let mut outs = Vec::with_capacity(k);
        if k == 2 {
            for _ in 0..2 {
                let (m, y) = self.unary(d, slots[1], part, ctx, depth)?;
                modules.push(m);
                outs.push(y);
            }
        } else {
            let (m, y) = self.unary(d, slots[1], part, ctx, depth)?;
            modules.push(m);
            outs.resize(k, y);
        }
        let (a, got) = self.sym(d, slots[2], Want::Merge(&outs), ctx, depth)?;
        let (Node::Op(a), Got::Shape(y)) = (a, got) else {
            return None;
        };
        Some((Node::branch(b, modules, a), y))
    }

    fn route<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Shape)> {
        let (p, y) = self.unary(d, slots[0], x, ctx, depth)?;
        let inner = match &p {
            Node::Op(op) => op.fold_size(x).map_or(ctx, |hw| Ctx {
                fold: Some(hw),
                ..ctx
            }),
            _ => ctx,
        };
        let (m, z) = self.unary(d, slots[1], y, inner, depth)?;
        let (r, out) = self.unary(d, slots[2], z, inner, depth)?;
        Some((Node::Form(Form::Route, vec![p, m, r]), out))
    }

    fn nb201<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Shape)> {
        if x.mode() != Mode::Im || !x.dims()[1].is_multiple_of(4) || !x.dims()[2].is_multiple_of(4)
        {
            return None;
        }
        let stem = Shape::im(super::check::NB201_C, x.dims()[1], x.dims()[2]);
        let mut edges = Vec::with_capacity(6);
        for &s in slots {
            edges.push(self.unary(d, s, stem, ctx, depth)?.0);
        }
        Some((
            Node::Form(Form::Nb201, edges),
            Shape::im(super::check::NB201_C * 4, x.dims()[1] / 4, x.dims()[2] / 4),
        ))
    }
}

impl Sampler<'_> {
    /// A NAS-Bench-Graph cell, drawn uniformly among the distinct cells (isomorphic cells
    /// counted once) that the slots' operations make, not by the slots' weights: so that
    /// random search is uniform over what the benchmark tells apart, and its expected result
    /// can be computed exactly from a table.
    fn nbgraph<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
    ) -> Option<(Node, Shape)> {
        use super::gnn;
        if slots.len() != gnn::NODES {
            return None;
        }
        let choices: [Vec<(gnn::Gnn, u8)>; gnn::NODES] = std::array::from_fn(|i| {
            let mut v: Vec<(gnn::Gnn, u8)> = self
                .ops_of(slots[i])
                .into_iter()
                .filter_map(|op| match op {
                    Op::Gnn(g, input) if (input as usize) <= i => Some((g, input)),
                    _ => None,
                })
                .collect();
            v.sort();
            v.dedup();
            v
        });
        let cells = gnn::distinct_cells(choices);
        let &(link, ops) = cells.get(d.rng.gen_range(0..cells.len().max(1)))?;
        let _ = ctx;
        Some((
            Node::Form(
                Form::NbGraph,
                link.iter()
                    .zip(ops)
                    .map(|(&l, g)| Node::Op(Op::Gnn(g, l)))
                    .collect(),
            ),
            x,
        ))
    }

    /// The operations a symbol derives directly (through references, not forms).
    fn ops_of(&self, sym: SymId) -> Vec<Op> {
        let mut out = Vec::new();
        let mut seen = vec![false; self.g.rules.len()];
        let mut stack = vec![sym];
        while let Some(s) = stack.pop() {
            if std::mem::replace(&mut seen[s], true) {
                continue;
            }
            for a in &self.g.rules[s].alts {
                match &a.body {
                    Body::Op(op) => out.push(*op),
                    Body::Ref(t) => stack.push(*t),
                    Body::Form(..) => {}
                }
            }
        }
        out
    }

    /// Expression and statement forms: each part drawn in order from its slot. Programs take
    /// no shape, so every part sees the input unchanged; what flows is the set of declared
    /// state, so that statements read and assign only state that exists.
    fn program_form<R: Rng>(
        &self,
        d: &mut Draw<'_, R>,
        f: Form,
        slots: &[SymId],
        x: Shape,
        ctx: Ctx,
        depth: usize,
    ) -> Option<(Node, Shape)> {
        let mut ctx = ctx;
        if f == Form::State {
            ctx.bound = Ctx::DECLARING;
        }
        let mut parts = Vec::with_capacity(slots.len());
        for (i, &s) in slots.iter().enumerate() {
            let (n, _) = self.unary(d, s, x, ctx, depth)?;
            if f == Form::Prog && i == 0 {
                ctx.bound = declared(&n);
            }
            parts.push(n);
        }
        if f == Form::State {
            // Declaring a state twice is an error; redraw instead.
            let mut seen = 0u8;
            for p in &parts {
                if let Node::Op(Op::Sym(s)) = p {
                    if seen & s.bit() != 0 {
                        return None;
                    }
                    seen |= s.bit();
                }
            }
        }
        Some((Node::form(f, parts), x))
    }
}

/// The state a `state(...)` node declares, as [`Ctx::bound`] bits.
pub fn declared(decl: &Node) -> u8 {
    decl.children().iter().fold(0, |acc, c| match c {
        Node::Op(Op::Sym(s)) => acc | s.bit(),
        _ => acc,
    })
}

fn form_may_fit(f: Form, want: Want<'_>) -> bool {
    match (f, want) {
        (Form::Nb201, Want::Unary(x)) => {
            x.mode() == Mode::Im && x.dims()[1] % 4 == 0 && x.dims()[2] % 4 == 0
        }
        _ => true,
    }
}

/// What an operation gives for `want`, if its rule holds; never formats a message.
fn apply(op: &Op, want: Want<'_>, ctx: &Ctx) -> Option<Got> {
    match (op.kind(), want) {
        (Kind::Unary, Want::Unary(x)) => op
            .apply_with(x, ctx, no_detail)
            .ok()
            .filter(|y| !y.too_large())
            .map(Got::Shape),
        (Kind::Split, Want::Split(x)) => op
            .split_with(x, no_detail)
            .ok()
            .map(|(k, s)| Got::Parts(k, s)),
        (Kind::Merge, Want::Merge(xs)) => op
            .merge_with(xs, no_detail)
            .ok()
            .filter(|y| !y.too_large())
            .map(Got::Shape),
        (Kind::Value, Want::Unary(x)) => match op {
            Op::Sym(s) if !ctx.binds(*s) => None,
            _ => Some(Got::Shape(x)),
        },
        _ => None,
    }
}
