//! Regularised (aging) evolution, as einspace runs it: an initial population of samples (or
//! the space's seeds first), then each child is a mutation of the winner of a tournament drawn
//! with replacement from the population, and the oldest member leaves when a child joins.
//! A child is never a candidate already evaluated: where the space lists a candidate's
//! smallest edits (NAS-Bench-Graph cells: one operation or one input), the child is one of
//! the parent's unseen ones; a parent with none gives way to a fresh sample.
//!
//! The population is the last `population` evaluated candidates of the history, which is
//! exactly what aging keeps, so the strategy holds no state of its own.

use super::{
    population, tournament, Context, Origin, Proposal, SearchError, SettingError, Strategy,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolutionConfig {
    /// Members of the population (einspace: 100, for budgets of a thousand and more).
    pub population: usize,
    /// Candidates drawn, with replacement, for each tournament (einspace: 10). Half the
    /// population: at budgets of a hundred or a few hundred evaluations, selection must be
    /// greedy to pay (measured on NAS-Bench-Graph, docs/benchmark.md).
    pub tournament: usize,
    /// Start the population with the space's seed candidates that fit the input.
    pub seeded: bool,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            population: 20,
            tournament: 10,
            seeded: false,
        }
    }
}

impl EvolutionConfig {
    pub fn validate(&self) -> Result<(), SettingError> {
        for (fields, n) in [
            ("`population`", self.population),
            ("`tournament`", self.tournament),
        ] {
            if n == 0 {
                return Err(SettingError::TooSmall { fields, min: 1 });
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Evolution {
    pub cfg: EvolutionConfig,
}

/// Seeds of the space valid for this input and not yet evaluated, in the space's order.
pub(crate) fn unused_seeds(ctx: &Context<'_>) -> Vec<Proposal> {
    ctx.space
        .seeds
        .iter()
        .filter_map(|s| {
            let a = ctx.space.check(&s.node, None, ctx.input, &ctx.check).ok()?;
            (!ctx.history.seen(&s.node.hash_hex()))
                .then(|| Proposal::built(s.node.clone(), a, Origin::Seed, vec![]))
        })
        .collect()
}

impl Strategy for Evolution {
    fn name(&self) -> &'static str {
        "evolution"
    }

    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<Proposal>, SearchError> {
        let mut out = Vec::with_capacity(n);
        // The initial population: seeds (when asked), then samples.
        if ctx.history.len() < self.cfg.population {
            if self.cfg.seeded {
                out.extend(unused_seeds(ctx).into_iter().take(n));
            }
            while out.len() < n && ctx.history.len() + out.len() < self.cfg.population {
                out.push(ctx.fresh_sample()?);
            }
        }
        while out.len() < n {
            let pop = population(ctx.history, self.cfg.population);
            let Some(parent) = tournament(&pop, self.cfg.tournament, ctx.history, ctx.rng) else {
                out.push(ctx.fresh_sample()?);
                continue;
            };
            let parent = parent.clone();
            let child = ctx.mutation_of(&parent)?;
            // Never spend an evaluation on a candidate already seen (the loop would drop it
            // and the round would be lost): a parent with no unseen child gives way to a
            // fresh sample.
            let fresh = child.hash().is_some_and(|h| {
                !ctx.history.seen(&h) && !out.iter().any(|p: &Proposal| p.hash() == Some(h.clone()))
            });
            out.push(if fresh { child } else { ctx.fresh_sample()? });
        }
        Ok(out)
    }
}
