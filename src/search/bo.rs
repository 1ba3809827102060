//! Model-based search: a Gaussian-process surrogate on [`Features::vector`] picks, by expected
//! improvement (or an upper confidence bound), the next candidates from a pool of fresh
//! samples and the neighbours of the best: every candidate one smallest edit away where the
//! space lists them (NAS-Bench-Graph cells), random mutations otherwise. On NAS-Bench-Graph a
//! pool of 64, 256 or 1,024 samples beside the neighbours gave the same regret within noise
//! (docs/benchmark.md): the surrogate, not the pool, limits what it finds there, so the
//! default is the cheapest. The GP is fitted on at most [`MAX_POINTS`] points.
//!
//! [`Features::vector`]: crate::space::Features::vector

use super::gp::{expected_improvement, Gp, MAX_POINTS};
use super::{Context, Observation, Proposal, SearchError, SettingError, Strategy};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoConfig {
    /// Random samples evaluated before the surrogate is used.
    pub initial: usize,
    /// Fresh samples in each round's pool.
    pub pool_samples: usize,
    /// Random mutations of the best candidates in each round's pool (for spaces that cannot
    /// list a candidate's neighbours; where they can, every unseen neighbour of the best is
    /// in the pool instead).
    pub pool_mutations: usize,
    /// How many of the best candidates are mutated, or have their neighbours listed, for the
    /// pool.
    pub mutate_top: usize,
    /// How the pool is ranked.
    pub acquisition: Acquisition,
    /// Exploration margin of expected improvement, in score units (in rank units, from 0
    /// for the worst to 1 for the best, when `ranks` is on).
    pub xi: f64,
    /// Weight of the standard deviation in the upper confidence bound.
    pub beta: f64,
    /// Fit the surrogate to the ranks of the scores rather than the scores: a few failed or
    /// collapsed candidates far below the rest otherwise dominate the fit, and the search
    /// needs the order at the top, not the size of the gaps.
    pub ranks: bool,
}

/// How the surrogate's prediction ranks the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acquisition {
    /// Expected improvement over the best score (with margin `xi`).
    Ei,
    /// Upper confidence bound: mean + `beta` x standard deviation.
    Ucb,
}

impl Default for BoConfig {
    fn default() -> Self {
        BoConfig {
            initial: 10,
            pool_samples: 64,
            pool_mutations: 64,
            mutate_top: 5,
            acquisition: Acquisition::Ei,
            xi: 0.0,
            beta: 2.0,
            ranks: true,
        }
    }
}

impl BoConfig {
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.pool_samples + self.pool_mutations == 0 {
            return Err(SettingError::TooSmall {
                fields: "`pool_samples` + `pool_mutations`",
                min: 1,
            });
        }
        if !self.xi.is_finite() {
            return Err(SettingError::NotFinite { field: "xi" });
        }
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(SettingError::Negative { field: "beta" });
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Bo {
    pub cfg: BoConfig,
    /// Feature vectors of evaluated candidates, by hash: derived from the history.
    features: HashMap<String, Vec<f64>>,
}

impl Bo {
    pub fn new(cfg: BoConfig) -> Self {
        Bo {
            cfg,
            features: HashMap::new(),
        }
    }

    fn features_of(&mut self, ctx: &Context<'_>, o: &Observation) -> Option<Vec<f64>> {
        if let Some(f) = self.features.get(&o.hash) {
            return Some(f.clone());
        }
        let node = crate::space::parse_one(&o.candidate).ok()?.node;
        let f = ctx
            .space
            .features(&node, ctx.input, &ctx.check)
            .ok()?
            .vector();
        self.features.insert(o.hash.clone(), f.clone());
        Some(f)
    }

    /// The surrogate on the history: the best and the most recent points, failures scored as
    /// the worst score seen (they are bad, but not infinitely so).
    fn surrogate(&mut self, ctx: &Context<'_>) -> Option<Gp> {
        let h = ctx.history;
        let worst = h
            .all()
            .iter()
            .filter_map(|o| o.score)
            .map(|s| h.utility(Some(s)))
            .fold(f64::INFINITY, f64::min);
        if !worst.is_finite() {
            return None;
        }
        let mut chosen: Vec<&Observation> = h.ranked().into_iter().take(MAX_POINTS / 2).collect();
        let taken: HashSet<&str> = chosen.iter().map(|o| o.hash.as_str()).collect();
        let recent: Vec<&Observation> = h
            .all()
            .iter()
            .rev()
            .filter(|o| !taken.contains(o.hash.as_str()))
            .take(MAX_POINTS - chosen.len())
            .collect();
        chosen.extend(recent);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for o in chosen {
            if let Some(f) = self.features_of(ctx, o) {
                xs.push(f);
                ys.push(match o.score {
                    Some(s) if s.is_finite() => h.utility(Some(s)),
                    _ => worst,
                });
            }
        }
        if self.cfg.ranks {
            ys = ranks(&ys);
        }
        Gp::fit(&xs, &ys).ok()
    }
}

/// Ranks of `ys` scaled to 0 (worst) .. 1 (best), ties sharing their mean rank.
fn ranks(ys: &[f64]) -> Vec<f64> {
    let n = ys.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| ys[a].total_cmp(&ys[b]));
    let mut out = vec![0.0; n];
    let scale = (n.max(2) - 1) as f64;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && ys[idx[j + 1]] == ys[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 / scale;
        for &k in &idx[i..=j] {
            out[k] = r;
        }
        i = j + 1;
    }
    out
}

/// The score at a rank fraction `r` (0 worst, 1 best) of the observed `sorted` scores,
/// interpolated, and extrapolated past the ends by the last step.
fn score_at_rank(sorted: &[f64], r: f64) -> f64 {
    match sorted.len() {
        0 => r,
        1 => sorted[0],
        n => {
            let x = r * (n - 1) as f64;
            let i = (x.floor().max(0.0) as usize).min(n - 2);
            sorted[i] + (x - i as f64) * (sorted[i + 1] - sorted[i])
        }
    }
}

impl Strategy for Bo {
    fn name(&self) -> &'static str {
        "bo"
    }

    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<Proposal>, SearchError> {
        if ctx.history.len() < self.cfg.initial {
            return (0..n).map(|_| ctx.fresh_sample()).collect();
        }
        let Some(gp) = self.surrogate(ctx) else {
            return (0..n).map(|_| ctx.fresh_sample()).collect();
        };
        let best = if self.cfg.ranks {
            1.0
        } else {
            ctx.history
                .best()
                .map(|b| ctx.history.utility(b.score))
                .unwrap_or(0.0)
        };
        // Observed utilities in order, to turn a predicted rank back into a score.
        let mut sorted: Vec<f64> = ctx
            .history
            .all()
            .iter()
            .filter_map(|o| o.score)
            .map(|s| ctx.history.utility(Some(s)))
            .collect();
        sorted.sort_by(f64::total_cmp);
        let ranked = self.cfg.ranks;
        let to_score = move |m: f64| if ranked { score_at_rank(&sorted, m) } else { m };
        // The pool: fresh samples and mutations of the best, unseen and distinct.
        let mut pool: Vec<Proposal> = Vec::new();
        let mut in_pool: HashSet<String> = HashSet::new();
        let history = ctx.history;
        let mut add = |p: Proposal, pool: &mut Vec<Proposal>| {
            if let Some(h) = p.hash() {
                if !history.seen(&h) && in_pool.insert(h) {
                    pool.push(p);
                }
            }
        };
        let sampler = ctx.space.sampler();
        for _ in 0..self.cfg.pool_samples {
            let (node, a) = ctx
                .space
                .sample_with(&sampler, ctx.input, &ctx.check, ctx.rng)?;
            add(
                Proposal::built(node, a, super::Origin::Sample, vec![]),
                &mut pool,
            );
        }
        let top: Vec<Observation> = ctx
            .history
            .ranked()
            .into_iter()
            .take(self.cfg.mutate_top.max(1))
            .cloned()
            .collect();
        // The best candidates' unseen neighbours, all of them where the space lists them.
        let mut drawn = Vec::new();
        for o in &top {
            let listed = crate::space::parse_one(&o.candidate)
                .ok()
                .and_then(|p| ctx.neighbours_of(&p.node, &o.hash));
            match listed {
                Some(near) => near.into_iter().for_each(|p| add(p, &mut pool)),
                None => drawn.push(o),
            }
        }
        for i in 0..if drawn.is_empty() {
            0
        } else {
            self.cfg.pool_mutations
        } {
            if let Ok(p) = ctx.mutation_of(drawn[i % drawn.len()]) {
                add(p, &mut pool);
            }
        }
        let mut scored: Vec<(f64, f64, Proposal)> = pool
            .into_iter()
            .filter_map(|mut p| {
                let (node, _) = p.checked.as_ref().ok()?;
                let f = ctx.space.features(node, ctx.input, &ctx.check).ok()?;
                let (m, s) = gp.predict(&f.vector());
                let u = to_score(m);
                p.predicted = Some(if ctx.history.maximize() { u } else { -u });
                let a = match self.cfg.acquisition {
                    Acquisition::Ei => expected_improvement(m, s, best, self.cfg.xi),
                    Acquisition::Ucb => m + self.cfg.beta * s,
                };
                Some((a, m, p))
            })
            .collect();
        // Highest expected improvement first; ties (EI underflows to 0 far from the best) by mean.
        scored.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal))
        });
        let mut out: Vec<Proposal> = scored.into_iter().take(n).map(|x| x.2).collect();
        while out.len() < n {
            out.push(ctx.fresh_sample()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties_and_map_back_to_scores() {
        assert_eq!(ranks(&[0.5, 0.1, 0.5, 0.9]), vec![0.5, 0.0, 0.5, 1.0]);
        let sorted = [0.1, 0.5, 0.5, 0.9];
        assert_eq!(score_at_rank(&sorted, 1.0), 0.9);
        assert_eq!(score_at_rank(&sorted, 0.0), 0.1);
        assert!((score_at_rank(&sorted, 1.0 / 6.0) - 0.3).abs() < 1e-12);
    }
}
