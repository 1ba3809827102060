//! Search strategies: what to try next, given the space and what was tried.
//!
//! One narrow trait, [`Strategy`], with five implementations: [`random`] (samples from the
//! grammar), [`evolution`] (regularised evolution), [`bo`] (a Gaussian-process surrogate with
//! expected improvement), [`llm`] (a language model proposes, LLAMBO-style) and
//! [`llm_evolution`] (a language model as the mutation and crossover operator).
//!
//! A strategy sees candidates and scores ([`History`]), never tensors. It is stateless with
//! respect to the run: everything it needs is derived from the history and a random generator
//! seeded for the round, so that a resumed run proposes what the uninterrupted run would have.
//! The loop (in `run`) validates nothing twice: proposals come back already checked, the loop
//! drops duplicates by canonical hash and journals every proposal with its lineage and plan.

pub mod bo;
pub mod evolution;
pub mod gp;
pub mod llm;
pub mod llm_evolution;
pub mod random;

use crate::llm::space_prompt::InvalidCandidate;
use crate::space::{Analysis, CheckOptions, Node, Shape, Space};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How a proposal was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Drawn from the grammar.
    Sample,
    /// One of the space's seed candidates.
    Seed,
    /// A random mutation of a parent.
    Mutation,
    /// A random crossover of two parents.
    Crossover,
    /// Written by the language model.
    Model,
    /// Written by the language model to repair an invalid candidate.
    Repair,
}

/// A proposed candidate, checked against the space.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The text as proposed (canonical when the strategy built the tree itself).
    pub text: String,
    /// The tree and its analysis when valid; the validator's verdict when not.
    pub checked: Result<(Node, Analysis), InvalidCandidate>,
    pub origin: Origin,
    /// Hashes of the parents (mutation, crossover, model-guided evolution, repair).
    pub parents: Vec<String>,
    /// The plan the model gave with it, if any.
    pub plan: Option<String>,
    /// The model call (its `step` in `llm.jsonl`) that produced it.
    pub llm_step: Option<String>,
    /// A predicted score, by the model or the surrogate.
    pub predicted: Option<f64>,
}

impl Proposal {
    /// A valid proposal built by the strategy itself.
    pub fn built(node: Node, analysis: Analysis, origin: Origin, parents: Vec<String>) -> Self {
        Proposal {
            text: node.to_string(),
            checked: Ok((node, analysis)),
            origin,
            parents,
            plan: None,
            llm_step: None,
            predicted: None,
        }
    }

    pub fn hash(&self) -> Option<String> {
        self.checked.as_ref().ok().map(|(n, _)| n.hash_hex())
    }
}

/// One evaluated candidate, as the history keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub hash: String,
    pub candidate: String,
    /// Validation score; `None` when training failed.
    pub score: Option<f64>,
    /// Why training failed, or `ok`.
    pub outcome: String,
    pub params: u64,
    pub parents: Vec<String>,
    pub plan: Option<String>,
    /// Epochs trained (fewer than the recipe's when stopped early).
    pub epochs: usize,
}

/// Everything evaluated so far in a run, in order, with an index by hash.
#[derive(Clone, Debug, Default)]
pub struct History {
    obs: Vec<Observation>,
    by_hash: HashMap<String, usize>,
    /// Hashes proposed but not (yet) evaluated: pending, or in flight.
    pending: HashMap<String, ()>,
    maximize: bool,
    best: Option<usize>,
}

impl History {
    pub fn new(maximize: bool) -> Self {
        History {
            maximize,
            ..Default::default()
        }
    }

    pub fn maximize(&self) -> bool {
        self.maximize
    }

    pub fn len(&self) -> usize {
        self.obs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.obs.is_empty()
    }

    pub fn all(&self) -> &[Observation] {
        &self.obs
    }

    /// Whether a candidate was evaluated or is queued for evaluation in this run.
    pub fn seen(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash) || self.pending.contains_key(hash)
    }

    pub fn get(&self, hash: &str) -> Option<&Observation> {
        self.by_hash.get(hash).map(|&i| &self.obs[i])
    }

    /// Marks a candidate as queued, so that a second proposal of it is a duplicate.
    pub fn reserve(&mut self, hash: &str) {
        self.pending.insert(hash.to_string(), ());
    }

    /// Whether `a` is a better score than `b` under the objective.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.maximize {
            a > b
        } else {
            a < b
        }
    }

    /// A score where larger is better whatever the objective, failures lowest.
    pub fn utility(&self, score: Option<f64>) -> f64 {
        match score {
            Some(s) if s.is_finite() => {
                if self.maximize {
                    s
                } else {
                    -s
                }
            }
            _ => f64::NEG_INFINITY,
        }
    }

    pub fn push(&mut self, o: Observation) {
        self.pending.remove(&o.hash);
        let i = self.obs.len();
        if let Some(s) = o.score.filter(|s| s.is_finite()) {
            let better = match self.best.and_then(|b| self.obs[b].score) {
                Some(b) => self.better(s, b),
                None => true,
            };
            if better {
                self.best = Some(i);
            }
        }
        self.by_hash.insert(o.hash.clone(), i);
        self.obs.push(o);
    }

    pub fn best(&self) -> Option<&Observation> {
        self.best.map(|i| &self.obs[i])
    }

    /// Observations with a score, best first.
    pub fn ranked(&self) -> Vec<&Observation> {
        let mut v: Vec<&Observation> = self.obs.iter().filter(|o| o.score.is_some()).collect();
        v.sort_by(|a, b| {
            self.utility(b.score)
                .partial_cmp(&self.utility(a.score))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        v
    }
}

/// What a strategy may use to propose: the space, the input it is checked for, the history,
/// and a random generator seeded for this round.
pub struct Context<'a> {
    pub space: &'a Space,
    pub input: Shape,
    pub check: CheckOptions,
    pub history: &'a History,
    pub rng: &'a mut ChaCha8Rng,
    /// The 0-based proposal round (one call of [`Strategy::propose`]).
    pub round: u64,
    /// The task in words, for prompts.
    pub task: &'a str,
    /// What the score measures, for prompts.
    pub metric: &'a str,
    /// Things worth journaling that are not proposals (an unreadable model reply, a
    /// fallback to sampling), pushed by the strategy.
    pub notes: Vec<String>,
    /// Whether the run was asked to stop (Ctrl-C): a strategy waiting on a model call gives
    /// it up ([`SearchError::Interrupted`]). The run layer passes its flag in.
    pub interrupted: fn() -> bool,
}

impl Context<'_> {
    /// Parses and checks a candidate text against the space.
    pub fn check_text(&self, text: &str) -> Result<(Node, Analysis), InvalidCandidate> {
        match crate::llm::space_prompt::check_candidate(self.space, text, self.input, &self.check) {
            crate::llm::space_prompt::Verdict::Valid(v) => Ok((v.node, v.analysis)),
            crate::llm::space_prompt::Verdict::Invalid(i) => Err(i),
        }
    }

    /// A fresh sample the history has not seen, within a few tries (the last draw otherwise).
    pub fn fresh_sample(&mut self) -> Result<Proposal, SearchError> {
        let sampler = self.space.sampler();
        let mut last = None;
        for _ in 0..FRESH_TRIES {
            let (node, a) = self
                .space
                .sample_with(&sampler, self.input, &self.check, self.rng)?;
            let unseen = !self.history.seen(&node.hash_hex());
            last = Some(Proposal::built(node, a, Origin::Sample, vec![]));
            if unseen {
                break;
            }
        }
        last.ok_or(SearchError::Exhausted)
    }

    /// The valid candidates one smallest edit away from `node` that the history has not
    /// seen, when the space can list them (an `nbgraph` cell: one operation or one input
    /// changed); `None` for spaces whose mutations can only be drawn.
    pub fn neighbours_of(&self, node: &Node, parent: &str) -> Option<Vec<Proposal>> {
        use crate::space::gnn;
        let (link, ops) = gnn::cell_of(node)?;
        Some(
            gnn::neighbours(link, ops, &gnn::Gnn::ALL)
                .into_iter()
                .filter_map(|(l, o)| {
                    let child = gnn::cell_node(l, o);
                    if self.history.seen(&child.hash_hex()) {
                        return None;
                    }
                    // The space may hold fewer operations than the benchmark's nine.
                    let a = self
                        .space
                        .check(&child, None, self.input, &self.check)
                        .ok()?;
                    Some(Proposal::built(
                        child,
                        a,
                        Origin::Mutation,
                        vec![parent.to_string()],
                    ))
                })
                .collect(),
        )
    }

    /// A valid mutation of `parent` (a candidate text from the history): where the space
    /// lists its smallest edits, one of those the history has not seen, drawn uniformly;
    /// otherwise the space's random mutation, redrawn until unseen within a few tries.
    pub fn mutation_of(&mut self, parent: &Observation) -> Result<Proposal, SearchError> {
        let node = crate::space::parse_one(&parent.candidate)
            .map_err(|_| SearchError::Other(format!("cannot parse {}", parent.candidate)))?
            .node;
        if let Some(mut near) = self.neighbours_of(&node, &parent.hash) {
            if !near.is_empty() {
                let i = rand::Rng::gen_range(self.rng, 0..near.len());
                return Ok(near.swap_remove(i));
            }
        }
        let mut last = None;
        for _ in 0..FRESH_TRIES {
            let child = self
                .space
                .mutate(&node, self.input, &self.check, self.rng)?;
            let a = self
                .space
                .check(&child, None, self.input, &self.check)
                .map_err(|d| {
                    SearchError::Other(format!("mutation gave an invalid child: {d:?}"))
                })?;
            let unseen = !self.history.seen(&child.hash_hex());
            last = Some(Proposal::built(
                child,
                a,
                Origin::Mutation,
                vec![parent.hash.clone()],
            ));
            if unseen {
                break;
            }
        }
        last.ok_or(SearchError::Exhausted)
    }
}

/// A strategy setting with which no search can work; the texts name the fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A count below its least useful value; `fields` names the setting (or the settings,
    /// each or their sum) in backquotes.
    #[error("{fields} must be at least {min}")]
    TooSmall { fields: &'static str, min: usize },
    /// Not a finite number.
    #[error("`{field}` must be a number")]
    NotFinite { field: &'static str },
    /// Not a finite number at least 0.
    #[error("`{field}` must be a number at least 0")]
    Negative { field: &'static str },
    /// A value outside the few a setting takes.
    #[error("`{field}` = {value} must be {allowed}")]
    NotOneOf {
        field: &'static str,
        value: usize,
        allowed: &'static str,
    },
}

/// Draws a strategy makes to find a candidate the history has not seen.
pub const FRESH_TRIES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Space(#[from] crate::space::SpaceError),
    #[error("language model: {0}")]
    Llm(#[from] crate::llm::LlmError),
    #[error("prompt: {0}")]
    Prompt(#[from] crate::llm::prompt::PromptError),
    #[error("the strategy has nothing new to propose")]
    Exhausted,
    /// Ctrl-C (or SIGTERM, SIGHUP) came while the strategy waited on a model call.
    #[error("interrupted while waiting for the model")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

impl SearchError {
    /// Whether the error ends the run (a spent model budget) rather than one round.
    pub fn is_budget(&self) -> bool {
        matches!(
            self,
            SearchError::Llm(crate::llm::LlmError::BudgetExhausted { .. })
        )
    }
}

/// A search strategy: proposes candidates for the next round of evaluations.
pub trait Strategy {
    /// The strategy's name, as configs write it.
    fn name(&self) -> &'static str;

    /// Proposes up to `n` candidates (usually exactly `n`; a model may give fewer or more).
    /// Invalid proposals are returned too, with the validator's message, so that the loop
    /// journals them; only valid, unseen ones are trained.
    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<Proposal>, SearchError>;
}

/// Utility of a history row for ranking (a failed candidate ranks below any score).
pub(crate) fn tournament<'a>(
    pop: &[&'a Observation],
    size: usize,
    history: &History,
    rng: &mut ChaCha8Rng,
) -> Option<&'a Observation> {
    use rand::Rng;
    if pop.is_empty() {
        return None;
    }
    let mut best: Option<&Observation> = None;
    for _ in 0..size.max(1) {
        let o = pop[rng.gen_range(0..pop.len())];
        if best.is_none_or(|b| history.utility(o.score) > history.utility(b.score)) {
            best = Some(o);
        }
    }
    best
}

/// The aging population: the last `size` evaluated candidates.
pub(crate) fn population(history: &History, size: usize) -> Vec<&Observation> {
    let all = history.all();
    all[all.len().saturating_sub(size)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(h: &str, s: Option<f64>) -> Observation {
        Observation {
            hash: h.into(),
            candidate: h.into(),
            score: s,
            outcome: "ok".into(),
            params: 0,
            parents: vec![],
            plan: None,
            epochs: 1,
        }
    }

    #[test]
    fn history_dedups_and_tracks_best() {
        let mut h = History::new(true);
        h.reserve("a");
        assert!(h.seen("a"));
        h.push(obs("a", Some(0.5)));
        h.push(obs("b", None));
        h.push(obs("c", Some(0.7)));
        h.push(obs("d", Some(0.6)));
        assert!(h.seen("a") && h.seen("b") && !h.seen("e"));
        assert_eq!(h.best().unwrap().hash, "c");
        let r: Vec<_> = h.ranked().iter().map(|o| o.hash.clone()).collect();
        assert_eq!(r, ["c", "d", "a"]);
        let mut m = History::new(false);
        m.push(obs("a", Some(0.5)));
        m.push(obs("b", Some(0.2)));
        assert_eq!(m.best().unwrap().hash, "b");
    }

    #[test]
    fn population_is_the_most_recent() {
        let mut h = History::new(true);
        for i in 0..10 {
            h.push(obs(&i.to_string(), Some(i as f64)));
        }
        let p = population(&h, 3);
        assert_eq!(
            p.iter().map(|o| o.hash.as_str()).collect::<Vec<_>>(),
            ["7", "8", "9"]
        );
    }
}
