//! What a run's report shows, computed from its folder: the journal (through the `run`
//! module's typed events), `config.toml` (the objective's direction) and `llm.jsonl` (tokens
//! and cost). The HTML report, `archsmith show` and `--format json` all render this one value.

use crate::llm::{read_records, LlmRecord};
use crate::run::config::Direction;
use crate::run::journal::{Event, RunStatus, Verdict};
use crate::run::{read_journal, Settings};
use crate::search::Origin;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// How many candidates the top table and the learning curves show.
pub const TOP: usize = 10;
pub const CURVES: usize = 5;
/// How far back the lineage of the best goes.
const LINEAGE_MAX: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0} is not a run folder (it has no journal.jsonl)")]
    NotARun(String),
    #[error(transparent)]
    Journal(#[from] crate::run::JournalError),
}

/// Everything the report shows about one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run: RunInfo,
    /// Every finished evaluation, in order.
    pub evaluations: Vec<Evaluated>,
    /// The best score after each evaluation, with the run time then.
    pub best_so_far: Vec<BestPoint>,
    /// Hashes on the Pareto front of score against parameters, fewest parameters first.
    pub front_params: Vec<String>,
    /// Hashes on the Pareto front of score against FLOPs.
    pub front_flops: Vec<String>,
    /// The best candidates, best first.
    pub top: Vec<Evaluated>,
    /// Proposals per round by outcome (model-driven runs say most here).
    pub rounds: Vec<RoundShare>,
    /// Predicted against achieved scores, for proposals that came with a prediction.
    pub predictions: Vec<Prediction>,
    /// Cumulative tokens and dollars after each model call.
    pub usage: Vec<UsagePoint>,
    /// The best candidate and its ancestors, the best first.
    pub lineage: Vec<Ancestor>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub strategy: String,
    pub space: String,
    pub task: String,
    pub seed: u64,
    pub maximize: bool,
    pub status: RunStatus,
    pub reason: String,
    pub sessions: u32,
    pub proposals: u64,
    pub invalid: u64,
    pub evaluations: u64,
    pub failed: u64,
    pub elapsed_seconds: f64,
    pub model_calls: u64,
    pub tokens: u64,
    pub usd: f64,
    /// Whether the strategy asks a language model (whether or not it proposed anything).
    pub model_driven: bool,
    /// Where the proposals came from: the model (first try, repair), random samples,
    /// other operators, duplicates.
    pub sources: crate::run::Sources,
    pub best_hash: Option<String>,
    pub best_score: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluated {
    pub eval: u64,
    pub hash: String,
    pub candidate: String,
    pub score: Option<f64>,
    /// `ok`, or why training failed.
    pub outcome: String,
    pub params: u64,
    pub flops: u64,
    pub epochs: usize,
    pub stopped_early: bool,
    pub wall_seconds: f64,
    /// Run time when it finished.
    pub elapsed_seconds: f64,
    pub origin: Option<Origin>,
    pub parents: Vec<String>,
    pub plan: Option<String>,
    pub predicted: Option<f64>,
    /// Validation score by epoch.
    pub curve: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BestPoint {
    /// Evaluations so far (1-based).
    pub evaluations: u64,
    pub elapsed_seconds: f64,
    pub best: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RoundShare {
    pub round: u64,
    /// Valid and new, as first proposed.
    pub valid: u64,
    /// Valid after the model repaired an invalid proposal.
    pub repaired: u64,
    /// Valid and new, drawn at random (a model strategy's fallback or ranking pool).
    pub sampled: u64,
    /// Valid but already evaluated or queued.
    pub duplicate: u64,
    /// Rejected by the validator.
    pub invalid: u64,
    /// Valid, but the budget ended first.
    pub skipped: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Prediction {
    pub hash: String,
    pub predicted: f64,
    pub achieved: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UsagePoint {
    pub call: u64,
    pub step: String,
    pub tokens: u64,
    pub usd: f64,
    /// Cumulative model latency, seconds.
    pub latency_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ancestor {
    /// 0 for the best, 1 for its parents, ...
    pub generation: usize,
    pub hash: String,
    pub candidate: String,
    pub score: Option<f64>,
    pub origin: Option<Origin>,
    pub parents: Vec<String>,
    pub plan: Option<String>,
}

/// Reads a run folder into its report.
pub fn load(dir: &Path) -> Result<Report, ReportError> {
    let jpath = dir.join("journal.jsonl");
    if !jpath.is_file() {
        return Err(ReportError::NotARun(dir.display().to_string()));
    }
    let events = read_journal(&jpath)?.events;
    let maximize = Settings::load(Some(&dir.join("config.toml")))
        .map(|s| s.objective.direction == Direction::Maximize)
        .unwrap_or(true);
    let records = read_records(&dir.join("llm.jsonl")).unwrap_or_default();
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(build(&id, &events, &records, maximize))
}

/// Whether `a` beats `b` under the objective.
fn better(maximize: bool, a: f64, b: f64) -> bool {
    if maximize {
        a > b
    } else {
        a < b
    }
}

/// The report of a run from its events and model records.
pub fn build(id: &str, events: &[Event], records: &[LlmRecord], maximize: bool) -> Report {
    let mut info = RunInfo {
        id: id.to_string(),
        strategy: String::new(),
        space: String::new(),
        task: String::new(),
        seed: 0,
        maximize,
        status: RunStatus::Interrupted,
        reason: "the journal ends without run_finished (a crash, a kill, or still running)".into(),
        sessions: 0,
        proposals: 0,
        invalid: 0,
        evaluations: 0,
        failed: 0,
        elapsed_seconds: 0.0,
        model_calls: 0,
        tokens: 0,
        usd: 0.0,
        model_driven: false,
        sources: Default::default(),
        best_hash: None,
        best_score: None,
    };
    let mut proposals = HashMap::new();
    let mut rounds: BTreeMap<u64, RoundShare> = BTreeMap::new();
    let mut curves: HashMap<u64, Vec<f64>> = HashMap::new();
    // The last finish of each evaluation number (a resumed run redoes one in flight).
    let mut finished: BTreeMap<u64, Evaluated> = BTreeMap::new();
    for e in events {
        match e {
            Event::RunStarted(r) => {
                if info.sessions == 0 {
                    info.strategy = r.strategy.clone();
                    info.space = r.space.clone();
                    info.task = r.task.clone();
                    info.seed = r.seed;
                }
                if r.strategy.starts_with("llm") {
                    info.model_driven = true;
                }
                info.sessions = info.sessions.max(r.session);
            }
            Event::Proposal(p) => {
                info.proposals += 1;
                if matches!(p.origin, Origin::Model | Origin::Repair) {
                    info.model_driven = true;
                }
                proposals.insert(p.id, p);
            }
            Event::Validation(v) => {
                let Some(p) = proposals.get(&v.id) else {
                    continue;
                };
                info.sources.add(p, v.verdict);
                let r = rounds.entry(p.round).or_insert_with(|| RoundShare {
                    round: p.round,
                    ..Default::default()
                });
                match v.verdict {
                    Verdict::Valid if p.origin == Origin::Repair => r.repaired += 1,
                    Verdict::Valid if p.origin == Origin::Sample && p.llm_step.is_none() => {
                        r.sampled += 1
                    }
                    Verdict::Valid => r.valid += 1,
                    Verdict::Duplicate => r.duplicate += 1,
                    Verdict::Invalid => {
                        r.invalid += 1;
                        info.invalid += 1;
                    }
                    Verdict::Skipped => r.skipped += 1,
                }
            }
            Event::TrainStarted(t) => {
                curves.insert(t.eval, Vec::new());
            }
            Event::Epoch(ep) => {
                let c = curves.entry(ep.eval).or_default();
                c.truncate(ep.epoch.saturating_sub(1));
                c.push(ep.valid_score);
            }
            Event::TrainFinished(t) => {
                let p = proposals.get(&t.proposal);
                finished.insert(
                    t.eval,
                    Evaluated {
                        eval: t.eval,
                        hash: t.hash.clone(),
                        candidate: t.candidate.clone(),
                        score: t.score.filter(|s| s.is_finite()),
                        outcome: t
                            .failure
                            .as_ref()
                            .map(|f| f.message.clone())
                            .unwrap_or_else(|| "ok".into()),
                        params: t.params,
                        flops: t.flops,
                        epochs: t.epochs,
                        stopped_early: t.stopped_early,
                        wall_seconds: t.wall_seconds,
                        elapsed_seconds: t.elapsed_seconds,
                        origin: p.map(|p| p.origin),
                        parents: p.map(|p| p.parents.clone()).unwrap_or_default(),
                        plan: p.and_then(|p| p.plan.clone()),
                        predicted: p.and_then(|p| p.predicted),
                        curve: curves.get(&t.eval).cloned().unwrap_or_default(),
                    },
                );
                info.elapsed_seconds = info.elapsed_seconds.max(t.elapsed_seconds);
            }
            Event::RunFinished(f) => {
                info.status = f.status;
                info.reason = f.reason.clone();
                info.elapsed_seconds = info.elapsed_seconds.max(f.elapsed_seconds);
            }
            Event::Note(_) | Event::Budget(_) | Event::Retry(_) => {}
        }
    }
    let evaluations: Vec<Evaluated> = finished.into_values().collect();
    info.evaluations = evaluations.len() as u64;
    info.failed = evaluations.iter().filter(|e| e.score.is_none()).count() as u64;

    let mut best: Option<&Evaluated> = None;
    let mut best_so_far = Vec::with_capacity(evaluations.len());
    for (i, e) in evaluations.iter().enumerate() {
        if let Some(s) = e.score {
            if best
                .and_then(|b| b.score)
                .is_none_or(|b| better(maximize, s, b))
            {
                best = Some(e);
            }
        }
        best_so_far.push(BestPoint {
            evaluations: i as u64 + 1,
            elapsed_seconds: e.elapsed_seconds,
            best: best.and_then(|b| b.score),
        });
    }
    info.best_hash = best.map(|b| b.hash.clone());
    info.best_score = best.and_then(|b| b.score);

    let mut ranked: Vec<&Evaluated> = evaluations.iter().filter(|e| e.score.is_some()).collect();
    ranked.sort_by(|a, b| {
        let (x, y) = (a.score.unwrap_or(0.0), b.score.unwrap_or(0.0));
        let o = y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal);
        let o = if maximize { o } else { o.reverse() };
        o.then(a.params.cmp(&b.params)).then(a.eval.cmp(&b.eval))
    });
    let top: Vec<Evaluated> = ranked.iter().take(TOP).map(|e| (*e).clone()).collect();

    let predictions = evaluations
        .iter()
        .filter_map(|e| {
            Some(Prediction {
                hash: e.hash.clone(),
                predicted: e.predicted?,
                achieved: e.score?,
            })
        })
        .collect();

    let mut usage = Vec::with_capacity(records.len());
    let (mut tokens, mut usd, mut latency) = (0u64, 0.0f64, 0.0f64);
    for (i, LlmRecord::Exchange(x)) in records.iter().enumerate() {
        tokens += x.usage.total();
        usd += x.cost_usd.unwrap_or(0.0);
        latency += x.latency_ms as f64 / 1000.0;
        usage.push(UsagePoint {
            call: i as u64 + 1,
            step: x.step.clone(),
            tokens,
            usd,
            latency_seconds: latency,
        });
    }
    info.model_calls = usage.len() as u64;
    info.tokens = tokens;
    info.usd = usd;

    let lineage = best
        .map(|b| lineage(b, &evaluations, &proposals))
        .unwrap_or_default();
    Report {
        front_params: front(&evaluations, maximize, |e| e.params),
        front_flops: front(&evaluations, maximize, |e| e.flops),
        run: info,
        best_so_far,
        top,
        rounds: rounds.into_values().collect(),
        predictions,
        usage,
        lineage,
        evaluations,
    }
}

/// The Pareto front of score against a cost: candidates no other beats on both.
fn front(evals: &[Evaluated], maximize: bool, cost: impl Fn(&Evaluated) -> u64) -> Vec<String> {
    let mut scored: Vec<&Evaluated> = evals.iter().filter(|e| e.score.is_some()).collect();
    scored.sort_by(|a, b| {
        cost(a).cmp(&cost(b)).then_with(|| {
            let (x, y) = (a.score.unwrap_or(0.0), b.score.unwrap_or(0.0));
            let o = y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal);
            if maximize {
                o
            } else {
                o.reverse()
            }
        })
    });
    let mut out = Vec::new();
    let mut best: Option<f64> = None;
    for e in scored {
        let s = e.score.unwrap_or(0.0);
        if best.is_none_or(|b| better(maximize, s, b)) {
            best = Some(s);
            out.push(e.hash.clone());
        }
    }
    out
}

/// The best candidate and its ancestors through the proposals' parents, breadth first.
fn lineage(
    best: &Evaluated,
    evals: &[Evaluated],
    proposals: &HashMap<u64, &crate::run::journal::ProposalEvent>,
) -> Vec<Ancestor> {
    let by_hash: HashMap<&str, &Evaluated> = evals.iter().map(|e| (e.hash.as_str(), e)).collect();
    // Parents may have been proposed but never trained (a seed that was skipped): fall back to
    // their proposal.
    let mut prop_by_hash: HashMap<&str, &crate::run::journal::ProposalEvent> = HashMap::new();
    let mut ids: Vec<&u64> = proposals.keys().collect();
    ids.sort();
    for id in ids {
        let p = proposals[id];
        if let Some(h) = &p.hash {
            prop_by_hash.entry(h.as_str()).or_insert(p);
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue = std::collections::VecDeque::from([(best.hash.clone(), 0usize)]);
    while let Some((h, generation)) = queue.pop_front() {
        if out.len() >= LINEAGE_MAX || !seen.insert(h.clone()) {
            continue;
        }
        let (candidate, score, origin, parents, plan) = match by_hash.get(h.as_str()) {
            Some(e) => (
                e.candidate.clone(),
                e.score,
                e.origin,
                e.parents.clone(),
                e.plan.clone(),
            ),
            None => match prop_by_hash.get(h.as_str()) {
                Some(p) => (
                    p.text.clone(),
                    None,
                    Some(p.origin),
                    p.parents.clone(),
                    p.plan.clone(),
                ),
                None => continue,
            },
        };
        for p in &parents {
            queue.push_back((p.clone(), generation + 1));
        }
        out.push(Ancestor {
            generation,
            hash: h,
            candidate,
            score,
            origin,
            parents,
            plan,
        });
    }
    out
}

/// What the report adds to `archsmith show`'s summary, as text: the Pareto front, the share of
/// valid proposals, the model's predictions and the lineage of the best.
pub fn text_extras(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let by_hash: HashMap<&str, &Evaluated> =
        r.evaluations.iter().map(|e| (e.hash.as_str(), e)).collect();
    if !r.front_params.is_empty() {
        let _ = writeln!(t, "\nPareto front (score against parameters):");
        for h in &r.front_params {
            if let Some(e) = by_hash.get(h.as_str()) {
                let _ = writeln!(
                    t,
                    "  {:>10} params  {}  {h}",
                    e.params,
                    super::html::score(e.score)
                );
            }
        }
    }
    if r.run.model_driven && !r.rounds.is_empty() {
        let (mut v, mut rep, mut sm, mut d, mut inv) = (0, 0, 0, 0, 0);
        for x in &r.rounds {
            v += x.valid;
            rep += x.repaired;
            sm += x.sampled;
            d += x.duplicate;
            inv += x.invalid;
        }
        let _ = writeln!(
            t,
            "\nproposals over {} steps: {v} valid, {rep} repaired, {sm} random samples, {d} duplicate, {inv} rejected",
            r.rounds.len()
        );
    }
    if !r.predictions.is_empty() {
        let n = r.predictions.len() as f64;
        let mae = r
            .predictions
            .iter()
            .map(|p| (p.predicted - p.achieved).abs())
            .sum::<f64>()
            / n;
        let _ = writeln!(
            t,
            "predictions: {} with a score, mean absolute error {mae:.4}",
            r.predictions.len()
        );
    }
    if r.lineage.len() > 1 {
        let _ = writeln!(t, "\nlineage of the best:");
        for a in &r.lineage {
            let origin = a.origin.map(super::html::origin_name).unwrap_or("-");
            let _ = writeln!(
                t,
                "  {}{} {} ({origin})",
                "  ".repeat(a.generation.min(8)),
                a.hash,
                super::html::score(a.score)
            );
            if let Some(p) = &a.plan {
                let _ = writeln!(t, "  {}  plan: {p}", "  ".repeat(a.generation.min(8)));
            }
        }
    }
    t
}
