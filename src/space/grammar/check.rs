//! Stage 4: static checks over the resolved grammar: the root's and every slot's kinds,
//! positive weights, productivity, reachability and reference cycles.

use super::{Body, Grammar, GrammarError, SymId};
use crate::space::kind::SpaceKind;

/// Static checks over the resolved grammar: slot kinds, productivity, reachability, reference
/// cycles.
pub(super) fn check(g: &Grammar, errs: &mut Vec<GrammarError>) {
    let kinds = g.kinds();
    let root_kinds = kinds[g.root];
    if !root_kinds.fits(g.kind.root_slot()) {
        let want = match g.kind {
            SpaceKind::Network => "a network is a module (a one-input operation or a form)",
            SpaceKind::Activation => "an activation function is an expression in x",
            SpaceKind::Optimizer => "an update rule is a prog(...)",
        };
        errs.push(GrammarError {
            message: format!(
                "root `{}` can derive {}, but {want}",
                g.rules[g.root].name,
                root_kinds.describe()
            ),
            span: g.rules[g.root].span,
        });
    }
    for r in &g.rules {
        if !r.alts.iter().any(|a| a.weight > 0.0) {
            errs.push(GrammarError {
                message: format!(
                    "no alternative of `{}` has a positive weight (weight 0 is seed-only), so sampling could never draw it",
                    r.name
                ),
                span: r.span,
            });
        }
        for a in &r.alts {
            if let Body::Form(f, slots) = &a.body {
                for (i, &s) in slots.iter().enumerate() {
                    let want = f.grammar_slot(i);
                    if !kinds[s].fits(want) {
                        errs.push(GrammarError {
                            message: format!(
                                "slot {} of `{}` needs {}, but `{}` can derive {}",
                                i + 1,
                                f.name(),
                                want.describe(),
                                g.rules[s].name,
                                kinds[s].describe()
                            ),
                            span: a.span,
                        });
                    }
                }
            }
        }
    }
    let prod = g.productive();
    for (i, r) in g.rules.iter().enumerate() {
        if !prod[i] {
            errs.push(GrammarError {
                message: format!(
                    "rule `{}` can never finish: every alternative leads back into a cycle with no operation to end it",
                    r.name
                ),
                span: r.span,
            });
        }
    }
    // Reachability from the root.
    let mut reach = vec![false; g.rules.len()];
    let mut stack = vec![g.root];
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut reach[s], true) {
            continue;
        }
        for a in &g.rules[s].alts {
            match &a.body {
                Body::Ref(t) => stack.push(*t),
                Body::Form(_, slots) => stack.extend(slots),
                Body::Op(_) => {}
            }
        }
    }
    for (i, r) in g.rules.iter().enumerate() {
        if !reach[i] {
            errs.push(GrammarError {
                message: format!(
                    "rule `{}` is unreachable from the root `{}`",
                    r.name, g.rules[g.root].name
                ),
                span: r.span,
            });
        }
    }
    // Pure reference cycles (a = b, b = a) would make membership tests loop.
    let mut state = vec![0u8; g.rules.len()];
    fn visit(g: &Grammar, s: SymId, state: &mut [u8], errs: &mut Vec<GrammarError>) {
        state[s] = 1;
        for a in &g.rules[s].alts {
            if let Body::Ref(t) = a.body {
                if state[t] == 1 {
                    errs.push(GrammarError {
                        message: format!(
                            "`{}` and `{}` refer to each other without an operation or form in between",
                            g.rules[s].name, g.rules[t].name
                        ),
                        span: a.span,
                    });
                } else if state[t] == 0 {
                    visit(g, t, state, errs);
                }
            }
        }
        state[s] = 2;
    }
    for s in 0..g.rules.len() {
        if state[s] == 0 {
            visit(g, s, &mut state, errs);
        }
    }
}
