//! Stage 3: fixed-point analyses over the resolved rules: what each symbol can derive, whether it
//! derives a finite tree, whether it reaches a form, and whether it can end in an operation.
//! Checking, sampling and the grammar exporters read these.

use super::{Body, Grammar};
use crate::space::node::{Form, Slot, Sort};
use crate::space::ops::Kind;

/// The kinds of things a symbol can derive, as a small bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    const UNARY: u16 = 1;
    const SPLIT: u16 = 2;
    const MERGE: u16 = 4;
    const FORM: u16 = 8;
    const VALUE: u16 = 16;
    const EXPR: u16 = 32;
    const DECL: u16 = 64;
    const STMT: u16 = 128;
    const PROG: u16 = 256;

    fn of_op(k: Kind) -> Kinds {
        Kinds(match k {
            Kind::Unary => Self::UNARY,
            Kind::Split => Self::SPLIT,
            Kind::Merge => Self::MERGE,
            Kind::Value => Self::VALUE,
        })
    }

    fn of_form(f: Form) -> Kinds {
        Kinds(match f.sort() {
            Sort::Module => Self::FORM,
            Sort::Expr => Self::EXPR,
            Sort::Decl => Self::DECL,
            Sort::Stmt => Self::STMT,
            Sort::Program => Self::PROG,
        })
    }

    pub(super) fn fits(self, slot: Slot) -> bool {
        let allowed = match slot {
            Slot::Module => Self::UNARY | Self::FORM,
            Slot::UnaryOp => Self::UNARY,
            Slot::SplitOp => Self::SPLIT,
            Slot::MergeOp => Self::MERGE,
            Slot::Expr => Self::VALUE | Self::EXPR,
            Slot::Decl => Self::DECL,
            Slot::Stmt => Self::STMT,
            Slot::Program => Self::PROG,
        };
        self.0 & !allowed == 0
    }

    pub(super) fn describe(self) -> String {
        let mut v = Vec::new();
        if self.0 & Self::UNARY != 0 {
            v.push("one-input operations");
        }
        if self.0 & Self::SPLIT != 0 {
            v.push("branching operations");
        }
        if self.0 & Self::MERGE != 0 {
            v.push("aggregation operations");
        }
        if self.0 & Self::FORM != 0 {
            v.push("forms");
        }
        if self.0 & Self::VALUE != 0 {
            v.push("program values");
        }
        if self.0 & Self::EXPR != 0 {
            v.push("expression forms");
        }
        if self.0 & Self::DECL != 0 {
            v.push("state declarations");
        }
        if self.0 & Self::STMT != 0 {
            v.push("statements");
        }
        if self.0 & Self::PROG != 0 {
            v.push("update rules");
        }
        v.join(" and ")
    }
}

impl Grammar {
    /// What each symbol can derive (through references).
    pub fn kinds(&self) -> Vec<Kinds> {
        let mut k = vec![Kinds::default(); self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                let mut acc = k[i].0;
                for a in &r.alts {
                    acc |= match &a.body {
                        Body::Op(op) => Kinds::of_op(op.kind()).0,
                        Body::Form(f, _) => Kinds::of_form(*f).0,
                        Body::Ref(s) => k[*s].0,
                    };
                }
                if acc != k[i].0 {
                    k[i].0 = acc;
                    changed = true;
                }
            }
            if !changed {
                return k;
            }
        }
    }

    /// Whether each symbol can derive a finite tree at all.
    pub fn productive(&self) -> Vec<bool> {
        let mut prod = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                if prod[i] {
                    continue;
                }
                let ok = r.alts.iter().any(|a| match &a.body {
                    Body::Op(_) => true,
                    Body::Ref(s) => prod[*s],
                    Body::Form(_, slots) => slots.iter().all(|s| prod[*s]),
                });
                if ok {
                    prod[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return prod;
            }
        }
    }

    /// Per rule: whether some derivation of it reaches a form (directly or through rules).
    pub fn formy(&self) -> Vec<bool> {
        let mut formy = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                if !formy[i]
                    && r.alts.iter().any(|a| match &a.body {
                        Body::Form(..) => true,
                        Body::Ref(t) => formy[*t],
                        Body::Op(_) => false,
                    })
                {
                    formy[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return formy;
            }
        }
    }

    /// Whether each symbol can reach an operation through references only (no forms): the
    /// alternatives still open at the maximum depth.
    pub fn leafy(&self) -> Vec<bool> {
        let mut leafy = vec![false; self.rules.len()];
        loop {
            let mut changed = false;
            for (i, r) in self.rules.iter().enumerate() {
                if leafy[i] {
                    continue;
                }
                if r.alts.iter().any(|a| match &a.body {
                    Body::Op(_) => true,
                    Body::Ref(s) => leafy[*s],
                    Body::Form(..) => false,
                }) {
                    leafy[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return leafy;
            }
        }
    }
}
