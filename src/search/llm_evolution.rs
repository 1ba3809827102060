//! Regularised evolution with the language model as the variation operator: each round a
//! tournament picks parents from the aging population, and the model, shown them with their
//! scores and plans, writes children (a mutation of one parent, or a crossover of two). A
//! round whose reply yields no valid new child falls back to a random mutation of the winner,
//! so that the search never stalls on a model that cannot write the notation.

use super::evolution::{unused_seeds, EvolutionConfig};
use super::llm::{count_new, Model, Retries};
use super::{
    population, tournament, Context, Observation, Origin, Proposal, SearchError, SettingError,
    Strategy,
};
use crate::llm::space_prompt::grammar_text;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmEvolutionConfig {
    pub population: usize,
    pub tournament: usize,
    pub seeded: bool,
    /// Parents shown to the model each round: 1 (mutation) or 2 (crossover and mutation).
    pub parents: usize,
    /// Children asked for in each call.
    pub k: usize,
    /// Repair attempts for each invalid child.
    pub repairs: usize,
    /// Asks for another child in place of each one that repeats an evaluated or already
    /// proposed candidate; 0 is off.
    pub duplicate_retries: usize,
}

impl Default for LlmEvolutionConfig {
    fn default() -> Self {
        let e = EvolutionConfig::default();
        LlmEvolutionConfig {
            population: e.population,
            tournament: e.tournament,
            seeded: e.seeded,
            parents: 2,
            k: 2,
            repairs: 1,
            duplicate_retries: 1,
        }
    }
}

impl LlmEvolutionConfig {
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.population == 0 || self.tournament == 0 || self.k == 0 {
            return Err(SettingError::TooSmall {
                fields: "`population`, `tournament` and `k`",
                min: 1,
            });
        }
        if !(1..=2).contains(&self.parents) {
            return Err(SettingError::NotOneOf {
                field: "parents",
                value: self.parents,
                allowed: "1 or 2",
            });
        }
        Ok(())
    }
}

pub struct LlmEvolution {
    pub cfg: LlmEvolutionConfig,
    pub model: Model,
}

#[derive(Serialize)]
struct ParentView {
    candidate: String,
    score: Option<f64>,
    params: u64,
    plan: Option<String>,
}

#[derive(Serialize)]
struct EvolveView<'a> {
    task: &'a str,
    space_name: &'a str,
    grammar_text: String,
    metric: &'a str,
    maximize: bool,
    parents: Vec<ParentView>,
    best: Option<f64>,
    k: usize,
}

impl Strategy for LlmEvolution {
    fn name(&self) -> &'static str {
        "llm-evolution"
    }

    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<Proposal>, SearchError> {
        let mut out = Vec::new();
        if ctx.history.len() < self.cfg.population {
            if self.cfg.seeded {
                out.extend(unused_seeds(ctx).into_iter().take(n));
            }
            while out.len() < n && ctx.history.len() + out.len() < self.cfg.population {
                out.push(ctx.fresh_sample()?);
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let pop = population(ctx.history, self.cfg.population);
        let mut parents: Vec<Observation> = Vec::new();
        for _ in 0..self.cfg.parents {
            if let Some(p) = tournament(&pop, self.cfg.tournament, ctx.history, ctx.rng) {
                if !parents.iter().any(|q| q.hash == p.hash) {
                    parents.push(p.clone());
                }
            }
        }
        let Some(winner) = parents.first().cloned() else {
            return (0..n).map(|_| ctx.fresh_sample()).collect();
        };
        let view = EvolveView {
            task: ctx.task,
            space_name: ctx.space.name(),
            grammar_text: grammar_text(ctx.space),
            metric: ctx.metric,
            maximize: ctx.history.maximize(),
            parents: parents
                .iter()
                .map(|p| ParentView {
                    candidate: p.candidate.clone(),
                    score: p.score,
                    params: p.params,
                    plan: p.plan.clone(),
                })
                .collect(),
            best: ctx.history.best().and_then(|b| b.score),
            k: self.cfg.k.max(n),
        };
        let text = self.model.prompts.render("evolve.j2", &view)?;
        let step = format!("r{}.evolve", ctx.round);
        let hashes: Vec<String> = parents.iter().map(|p| p.hash.clone()).collect();
        let origin = if parents.len() > 1 {
            Origin::Crossover
        } else {
            Origin::Mutation
        };
        let shape =
            crate::space::ReplyShape::propose(self.cfg.k.max(n).min(crate::space::cfg::MAX_K));
        for reply in self.model.ask(ctx, &step, text, Some(shape))? {
            let mut ps = self.model.check_and_repair(
                ctx,
                &reply,
                &step,
                origin,
                &hashes,
                Retries {
                    invalid: self.cfg.repairs,
                    duplicates: self.cfg.duplicate_retries,
                },
            )?;
            // A model-written child is a model proposal with parents; keep `repair` as is.
            for p in &mut ps {
                if p.origin != Origin::Repair {
                    p.origin = Origin::Model;
                }
            }
            out.extend(ps);
        }
        if count_new(ctx, &out) == 0 {
            ctx.notes.push(format!(
                "round {}: the model gave no valid new child; falling back to a random mutation of the tournament winner",
                ctx.round
            ));
            for _ in 0..n {
                out.push(ctx.mutation_of(&winner)?);
            }
        }
        Ok(out)
    }
}
