//! Regularised (aging) evolution, as einspace runs it: an initial population of samples (or
//! the space's seeds first), then each child is a mutation of the winner of a tournament drawn
//! with replacement from the population, and the oldest member leaves when a child joins.
//!
//! The population is the last `population` evaluated candidates of the history, which is
//! exactly what aging keeps, so the strategy holds no state of its own.

use super::{population, tournament, Context, Origin, Proposal, SearchError, Strategy};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolutionConfig {
    /// Members of the population (einspace: 100).
    pub population: usize,
    /// Candidates drawn, with replacement, for each tournament (einspace: 10).
    pub tournament: usize,
    /// Start the population with the space's seed candidates that fit the input.
    pub seeded: bool,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            population: 100,
            tournament: 10,
            seeded: false,
        }
    }
}

impl EvolutionConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.population == 0 {
            return Err("`population` must be at least 1".into());
        }
        if self.tournament == 0 {
            return Err("`tournament` must be at least 1".into());
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
            out.push(ctx.mutation_of(&parent)?);
        }
        Ok(out)
    }
}
