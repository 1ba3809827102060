//! The agent loop: ask the strategy for candidates, journal each proposal and its verdict,
//! train the valid new ones (stopping early by successive halving when asked), journal the
//! curve and the score, keep the best, and stop when a budget is spent.
//!
//! State lives in the journal: [`Recovered::from_events`] rebuilds the history, the queue of
//! proposed-but-untrained candidates and the counters from it, so that a resumed run neither
//! loses nor repeats a completed evaluation (one in flight is redone).

use super::config::Experiment;
use super::journal::{
    BudgetEvent, EpochEvent, Event, Journal, JournalError, NoteEvent, ProposalEvent, RetryEvent,
    RunFinished, RunStarted, RunStatus, TrainFinished, TrainStarted, ValidationEvent, Verdict,
};
use crate::exec::{rung_threshold, ExecError, Executor, Job, JobSpec, Rung, TaskSpec, Update};
use crate::llm::LlmClient;
use crate::search::{Context, History, Observation, Proposal, SearchError, Strategy};
use crate::space::{parse_one, Analysis, Node};
use crate::train::{Epoch, Evaluation, Failure, FailureReason};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A candidate proposed, valid and new, waiting for training.
#[derive(Clone, Debug)]
pub struct Queued {
    pub proposal: u64,
    pub hash: String,
    pub node: Node,
    pub analysis: Analysis,
    pub parents: Vec<String>,
    pub plan: Option<String>,
    /// The evaluation number of a training that was in flight when the run stopped: redone
    /// under the same number.
    pub eval: Option<u64>,
}

/// Where a run's proposals came from, so that a model run that was in truth a random search
/// says so: the model's first tries and repairs apart from random samples (a strategy's own,
/// or a model strategy's fallback), other operators, and duplicates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sources {
    /// Candidates the model wrote at the first try, and how many of them were valid and new.
    pub model: u64,
    pub model_valid: u64,
    /// Candidates the model wrote when asked to repair one, and how many were valid and new.
    pub repair: u64,
    pub repair_valid: u64,
    /// Valid new candidates drawn from the grammar at random (for a model strategy: its
    /// fallback when the model gave nothing usable, or its ranking pool).
    pub samples: u64,
    /// Valid new candidates of other operators (mutation, crossover, seeds) with no model.
    pub other: u64,
    /// Valid candidates proposed before in the run.
    pub duplicates: u64,
}

impl Sources {
    /// Counts one proposal with its verdict.
    pub fn add(&mut self, p: &ProposalEvent, verdict: Verdict) {
        let valid = verdict == Verdict::Valid;
        if verdict == Verdict::Duplicate {
            self.duplicates += 1;
        }
        match (p.origin, p.llm_step.is_some()) {
            (crate::search::Origin::Repair, _) => {
                self.repair += 1;
                self.repair_valid += valid as u64;
            }
            (_, true) => {
                self.model += 1;
                self.model_valid += valid as u64;
            }
            (crate::search::Origin::Sample, false) => self.samples += valid as u64,
            (_, false) => self.other += valid as u64,
        }
    }

    /// Valid new candidates the model wrote, first try or repaired.
    pub fn by_model(&self) -> u64 {
        self.model_valid + self.repair_valid
    }

    /// One line: `model 3 valid of 8 first tries, 1 of 4 repairs; 5 random samples; ...`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.model + self.repair > 0 {
            parts.push(format!(
                "model {} valid of {} first tries, {} valid of {} repairs",
                self.model_valid, self.model, self.repair_valid, self.repair
            ));
        }
        parts.push(format!("{} random samples", self.samples));
        if self.other > 0 {
            parts.push(format!("{} by mutation, crossover or seeds", self.other));
        }
        parts.push(format!("{} duplicates", self.duplicates));
        parts.join("; ")
    }
}

/// The loop's state as the journal has it.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Finished evaluations, in evaluation order.
    pub history: History,
    /// Valid new proposals not trained yet, in order: those in flight first, with their
    /// evaluation numbers, then those never started.
    pub queue: Vec<(ProposalEvent, Option<u64>)>,
    pub next_proposal: u64,
    pub next_round: u64,
    /// Finished evaluations.
    pub evaluations: u64,
    /// One past the highest evaluation number given out.
    pub next_eval: u64,
    pub elapsed_seconds: f64,
    pub sessions: u32,
    /// Validation scores at each epoch of finished evaluations, for successive halving.
    pub curves: Vec<Vec<f64>>,
    /// Trainings that started and never finished: evaluation number and hash.
    pub in_flight: Vec<(u64, String)>,
    pub proposals: u64,
    pub invalid: u64,
    /// Where the proposals came from.
    pub sources: Sources,
    /// Whether the last session finished normally, and how.
    pub finished: Option<RunFinished>,
}

impl Recovered {
    pub fn from_events(events: &[Event], maximize: bool) -> Recovered {
        let mut r = Recovered {
            history: History::new(maximize),
            ..Default::default()
        };
        let mut proposals: BTreeMap<u64, ProposalEvent> = BTreeMap::new();
        let mut valid: Vec<u64> = Vec::new();
        let mut finished: HashMap<String, ()> = HashMap::new();
        let mut started: BTreeMap<u64, TrainStarted> = BTreeMap::new();
        let mut done: BTreeMap<u64, (TrainFinished, Vec<f64>)> = BTreeMap::new();
        let mut epochs: HashMap<u64, Vec<f64>> = HashMap::new();
        for e in events {
            match e {
                Event::RunStarted(_) => {
                    r.sessions += 1;
                    r.finished = None;
                }
                Event::Proposal(p) => {
                    r.next_proposal = r.next_proposal.max(p.id + 1);
                    r.next_round = r.next_round.max(p.round + 1);
                    r.proposals += 1;
                    proposals.insert(p.id, p.clone());
                }
                Event::Validation(v) => {
                    if let Some(p) = proposals.get(&v.id) {
                        r.sources.add(p, v.verdict);
                    }
                    match v.verdict {
                        Verdict::Valid => valid.push(v.id),
                        Verdict::Invalid => r.invalid += 1,
                        Verdict::Duplicate | Verdict::Skipped => {}
                    }
                }
                Event::Note(n) => r.next_round = r.next_round.max(n.round + 1),
                Event::TrainStarted(t) => {
                    epochs.remove(&t.eval);
                    r.next_eval = r.next_eval.max(t.eval + 1);
                    started.insert(t.eval, t.clone());
                }
                Event::Epoch(e) => epochs.entry(e.eval).or_default().push(e.valid_score),
                // A retried job's curve starts again.
                Event::Retry(t) => {
                    epochs.remove(&t.eval);
                }
                Event::TrainFinished(t) => {
                    started.remove(&t.eval);
                    r.next_eval = r.next_eval.max(t.eval + 1);
                    r.elapsed_seconds = r.elapsed_seconds.max(t.elapsed_seconds);
                    finished.insert(t.hash.clone(), ());
                    let curve = epochs.remove(&t.eval).unwrap_or_default();
                    done.insert(t.eval, (t.clone(), curve));
                }
                Event::Budget(_) => {}
                Event::RunFinished(f) => {
                    r.elapsed_seconds = r.elapsed_seconds.max(f.elapsed_seconds);
                    r.finished = Some(f.clone());
                }
            }
        }
        // Results may arrive out of order; the history is in evaluation order.
        for (t, curve) in done.into_values() {
            let p = proposals.get(&t.proposal);
            r.history.push(Observation {
                hash: t.hash.clone(),
                candidate: t.candidate.clone(),
                score: t.score,
                outcome: outcome(&t.failure, t.stopped_early),
                params: t.params,
                parents: p.map(|p| p.parents.clone()).unwrap_or_default(),
                plan: p.and_then(|p| p.plan.clone()),
                epochs: t.epochs,
            });
            r.curves.push(curve);
            r.evaluations += 1;
        }
        r.in_flight = started
            .values()
            .filter(|s| !finished.contains_key(&s.hash))
            .map(|s| (s.eval, s.hash.clone()))
            .collect();
        let mut redo = Vec::new();
        for id in valid {
            let Some(p) = proposals.get(&id) else {
                continue;
            };
            let Some(h) = &p.hash else { continue };
            if finished.contains_key(h)
                || r.queue
                    .iter()
                    .chain(&redo)
                    .any(|(q, _)| q.hash.as_ref() == Some(h))
            {
                continue;
            }
            r.history.reserve(h);
            match r.in_flight.iter().find(|(_, f)| f == h) {
                Some((eval, _)) => redo.push((p.clone(), Some(*eval))),
                None => r.queue.push((p.clone(), None)),
            }
        }
        // Those in flight go first, as they were first in line when the run stopped.
        redo.sort_by_key(|(_, e)| *e);
        redo.append(&mut r.queue);
        r.queue = redo;
        r
    }
}

/// The outcome column of a history row.
pub fn outcome(failure: &Option<Failure>, stopped_early: bool) -> String {
    match failure {
        Some(f) => format!("failed: {}", f.message),
        None if stopped_early => "stopped early (successive halving)".into(),
        None => "ok".into(),
    }
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: RunStatus,
    pub reason: String,
    pub evaluations: u64,
    pub best: Option<Observation>,
    /// Where this run's proposals came from (all sessions).
    pub sources: Sources,
}

/// Why a run stopped before its end, or could not start: what failed, and for a run that
/// started, where what was recorded is kept and how to go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The journal cannot be written or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A file of the run folder (the best candidate, its weights) cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A proposal the journal queued for training does not parse.
    #[error("journal: cannot parse proposal {proposal}")]
    UnparsableProposal { proposal: u64 },
    /// A proposal the journal queued for training is no longer valid in the space (the
    /// space changed since).
    #[error("journal: proposal {proposal} no longer validates against the space")]
    StaleProposal { proposal: u64 },
    /// The loop has nothing to start and nothing to wait for, yet no reason to stop.
    #[error("the loop can neither start nor wait for an evaluation")]
    Stuck,
    /// A look-up task's table cannot be read.
    #[error(transparent)]
    Lookup(#[from] crate::train::lookup::LookupError),
    /// The strategy uses a model, but the settings configure none.
    #[error("strategy {strategy} needs an [llm] section")]
    NoModel { strategy: &'static str },
    /// The strategy is `auto`, which the settings settle before a run starts.
    #[error("the strategy is still `auto`; settle it first")]
    Unsettled,
    /// The prompt templates cannot be loaded.
    #[error(transparent)]
    Prompts(#[from] crate::llm::prompt::PromptError),
    /// The strategy cannot be set up.
    #[error(transparent)]
    Strategy(SearchError),
    /// The local worker processes cannot start.
    #[error("cannot start local workers: {0}")]
    LocalWorkers(ExecError),
    /// The Ray cluster cannot be used.
    #[error("cannot use the Ray cluster: {0}")]
    Ray(ExecError),
    /// The search failed (a model call, say); the run can be resumed.
    #[error("the search failed: {source}; what was recorded is kept in {dir}, continue with `archsmith resume {dir}`")]
    Search {
        dir: String,
        #[source]
        source: SearchError,
    },
    /// The executor or the model server stopped answering; the run waits to be resumed.
    #[error("the run is paused: {reason}; what was recorded is kept in {dir}, continue with `archsmith resume {dir}` once it is back")]
    Paused { dir: String, reason: String },
    /// Ctrl-C.
    #[error("interrupted (Ctrl-C or a termination signal){stopped}; what was recorded is kept in {dir}, continue with `archsmith resume {dir}`")]
    Interrupted { dir: String, stopped: String },
    /// The executor failed otherwise.
    #[error("the executor failed: {message}; what was recorded is kept in {dir}, continue with `archsmith resume {dir}`")]
    Executor { dir: String, message: String },
}

/// Observes the loop: a progress bar on a terminal, nothing in tests.
pub trait Progress {
    fn update(&mut self, _s: &Status) {}
    fn message(&mut self, _m: &str) {}
    fn finish(&mut self) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// What a progress display shows.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub evaluations: u64,
    pub max_evaluations: u64,
    pub best: Option<f64>,
    pub proposals: u64,
    pub invalid: u64,
    pub tokens: u64,
    pub usd: f64,
    /// Evaluations in flight.
    pub running: usize,
}

/// A test hook: after this many `train_started` events in a session, write a torn line and
/// abort the process, as a crash mid-write would.
pub const CRASH_ENV: &str = "ARCHSMITH_TEST_CRASH_AFTER_STARTS";

/// An evaluation in flight.
struct Running {
    q: Queued,
    since: Instant,
}

/// A finished evaluation not yet shown to the strategy (results are shown in evaluation order,
/// see [`Runner::release`]).
struct Finished {
    obs: Observation,
    curve: Vec<f64>,
}

/// Why the loop stops starting new work; it ends once what is in flight has finished.
enum Stop {
    End { status: RunStatus, reason: String },
    Fail(RunError),
}

pub struct Runner<'a> {
    pub exp: &'a Experiment,
    pub dir: PathBuf,
    pub run_id: String,
    pub journal: Journal,
    pub strategy: Box<dyn Strategy + 'a>,
    pub executor: Box<dyn Executor + 'a>,
    pub llm: Option<Arc<LlmClient>>,
    pub state: Recovered,
    /// Model usage recorded before this session (from `llm.jsonl`).
    pub usage_before: (u64, f64),
    pub progress: Box<dyn Progress + 'a>,
    /// Epochs a full evaluation trains (the recipe's).
    pub epochs: usize,
    queue: VecDeque<Queued>,
    running: BTreeMap<u64, Running>,
    unreleased: BTreeMap<u64, Finished>,
    stop: Option<Stop>,
    started: Instant,
    stall: u64,
    /// Rounds in a row in which a model strategy fell back to random samples.
    fell_back: u64,
    starts: u64,
}

impl<'a> Runner<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        exp: &'a Experiment,
        dir: PathBuf,
        run_id: String,
        journal: Journal,
        strategy: Box<dyn Strategy + 'a>,
        executor: Box<dyn Executor + 'a>,
        llm: Option<Arc<LlmClient>>,
        state: Recovered,
    ) -> Result<Runner<'a>, RunError> {
        let mut queue = VecDeque::new();
        for (p, eval) in &state.queue {
            let Some(h) = &p.hash else { continue };
            let node = parse_one(&p.text)
                .map_err(|_| RunError::UnparsableProposal { proposal: p.id })?
                .node;
            let analysis = exp
                .space
                .check(&node, None, exp.input, &exp.check)
                .map_err(|_| RunError::StaleProposal { proposal: p.id })?;
            queue.push_back(Queued {
                proposal: p.id,
                hash: h.clone(),
                node,
                analysis,
                parents: p.parents.clone(),
                plan: p.plan.clone(),
                eval: *eval,
            });
        }
        Ok(Runner {
            exp,
            dir,
            run_id,
            journal,
            strategy,
            executor,
            llm,
            state,
            usage_before: (0, 0.0),
            progress: Box::new(NoProgress),
            epochs: exp.recipe.epochs,
            queue,
            running: BTreeMap::new(),
            unreleased: BTreeMap::new(),
            stop: None,
            started: Instant::now(),
            stall: 0,
            fell_back: 0,
            starts: 0,
        })
    }

    fn elapsed(&self) -> f64 {
        self.state.elapsed_seconds + self.started.elapsed().as_secs_f64()
    }

    fn usage(&self) -> (u64, f64) {
        let (t0, u0) = self.usage_before;
        match &self.llm {
            Some(c) => {
                let u = c.usage();
                (t0 + u.input_tokens + u.output_tokens, u0 + u.cost_usd)
            }
            None => (t0, u0),
        }
    }

    fn status(&self) -> Status {
        let (tokens, usd) = self.usage();
        Status {
            evaluations: self.state.evaluations,
            max_evaluations: self.exp.settings.budget.evaluations,
            best: self.best().and_then(|b| b.score),
            proposals: self.state.proposals,
            invalid: self.state.invalid,
            tokens,
            usd,
            running: self.running.len(),
        }
    }

    /// The best finished evaluation, whether or not the strategy has seen it yet.
    fn best(&self) -> Option<&Observation> {
        let h = &self.state.history;
        let mut best = h.best();
        for f in self.unreleased.values() {
            let Some(s) = f.obs.score else { continue };
            if best.and_then(|b| b.score).is_none_or(|b| h.better(s, b)) {
                best = Some(&f.obs);
            }
        }
        best
    }

    /// The first budget that is spent, as an event. Evaluations count when they start.
    fn budget_spent(&self) -> Option<BudgetEvent> {
        let b = &self.exp.settings.budget;
        let ev = |limit: &str, used: f64, max: f64, what: &str| BudgetEvent {
            limit: limit.into(),
            used,
            max,
            message: format!("{what} budget spent: {used} of {max}"),
        };
        if self.state.next_eval >= b.evaluations {
            return Some(ev(
                "evaluations",
                self.state.next_eval as f64,
                b.evaluations as f64,
                "evaluation",
            ));
        }
        if let Some(w) = b.wall_time_secs {
            let e = self.elapsed();
            if e >= w {
                return Some(ev("wall_time", (e * 10.0).round() / 10.0, w, "wall-time"));
            }
        }
        let (tokens, usd) = self.usage();
        if self.llm.is_some() {
            if let Some(t) = b.tokens {
                if tokens >= t {
                    return Some(ev("tokens", tokens as f64, t as f64, "token"));
                }
            }
            if let Some(u) = b.usd {
                if usd >= u {
                    return Some(ev("usd", usd, u, "dollar"));
                }
            }
        }
        None
    }

    fn log(&mut self, e: Event) -> Result<(), RunError> {
        self.journal.append(&e)?;
        Ok(())
    }

    /// Runs until a budget is spent or the search gives out. `mode` is `new`, `resume` or
    /// `replay`; `message` says why this strategy.
    pub fn run(&mut self, mode: &str, message: &str) -> Result<Outcome, RunError> {
        let s = &self.exp.settings;
        let message = format!("{message}; training: {}", self.executor.describe());
        self.log(Event::RunStarted(RunStarted {
            run_id: self.run_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            strategy: self.strategy.name().into(),
            space: self.exp.space.name().into(),
            task: self.exp.task.name.clone(),
            seed: s.seed,
            session: self.state.sessions + 1,
            mode: mode.into(),
            message,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }))?;
        let mut result = self.run_loop();
        // A paused run leaves its jobs alone: they may finish while the head is away, and a
        // resume finds them (Ray, by submission id).
        let paused = matches!(result, Err(RunError::Paused { .. }));
        if result.is_err() && !paused && !self.running.is_empty() {
            let stopped = self.executor.stop_all();
            if let Err(RunError::Interrupted { stopped: s, .. }) = &mut result {
                *s = format!(
                    "; stopped {} evaluation(s) in flight ({}), which a resume redoes",
                    stopped.len(),
                    stopped.join(", ")
                );
            }
            self.running.clear();
        }
        self.release(u64::MAX);
        let (status, reason) = match &result {
            Ok((st, r)) => (*st, r.clone()),
            Err(e @ RunError::Interrupted { .. }) => (RunStatus::Interrupted, e.to_string()),
            Err(e @ RunError::Paused { .. }) => (RunStatus::Paused, e.to_string()),
            Err(e) => (RunStatus::Failed, e.to_string()),
        };
        let best = self.state.history.best().cloned();
        let (tokens, usd) = self.usage();
        self.log(Event::RunFinished(RunFinished {
            status,
            reason: reason.clone(),
            evaluations: self.state.evaluations,
            best_hash: best.as_ref().map(|b| b.hash.clone()),
            best_score: best.as_ref().and_then(|b| b.score),
            elapsed_seconds: self.elapsed(),
            tokens,
            usd,
        }))?;
        // Group commit (look-up runs) leaves the session's tail to this fsync.
        self.journal.sync()?;
        self.progress.finish();
        result?;
        Ok(Outcome {
            status,
            reason,
            evaluations: self.state.evaluations,
            best,
            sources: self.state.sources,
        })
    }

    fn run_loop(&mut self) -> Result<(RunStatus, String), RunError> {
        loop {
            if let Some(end) = self.step()? {
                return Ok(end);
            }
        }
    }

    /// How many evaluations a proposal is behind: the proposal for evaluation `k` sees the
    /// results of evaluations up to `k - lag` (1 for the sequential loop).
    fn lag(&self) -> u64 {
        self.exp.settings.executor.lag(self.executor.slots()) as u64
    }

    /// Whether evaluation `k` may start: in a deterministic run, every evaluation it is meant
    /// to see (numbers up to `k - lag`) has finished.
    fn may_start(&self, k: u64) -> bool {
        if !self.exp.settings.executor.deterministic {
            return true;
        }
        let lag = self.lag();
        let waiting = |e: u64| e + lag <= k;
        !self.running.keys().any(|&e| waiting(e))
            && !self.queue.iter().any(|q| q.eval.is_some_and(waiting))
    }

    /// Shows finished results to the strategy and to successive halving, in evaluation
    /// order: those evaluation `k` is meant to see (all of them when the run does not need to
    /// be deterministic).
    fn release(&mut self, k: u64) {
        let lag = self.lag();
        let all = !self.exp.settings.executor.deterministic || k == u64::MAX;
        while let Some(entry) = self.unreleased.first_entry() {
            if !all && *entry.key() + lag > k {
                break;
            }
            let f = entry.remove();
            self.state.history.push(f.obs);
            self.state.curves.push(f.curve);
        }
    }

    /// One turn of the loop: start the next queued candidate when a slot is free, ask the
    /// strategy for a round of proposals when none is queued, or wait for a result. Returns
    /// the status and reason when the run ends.
    pub fn step(&mut self) -> Result<Option<(RunStatus, String)>, RunError> {
        self.progress.update(&self.status());
        if crate::exec::interrupted() {
            return Err(RunError::Interrupted {
                dir: self.dir.display().to_string(),
                stopped: String::new(),
            });
        }
        if self.stop.is_none() {
            if let Some(b) = self.budget_spent() {
                let msg = b.message.clone();
                self.skip_queue()?;
                self.log(Event::Budget(b))?;
                self.stop = Some(Stop::End {
                    status: RunStatus::Completed,
                    reason: msg,
                });
            }
        }
        if self.running.len() < self.executor.slots() {
            // A redone evaluation keeps its number and goes first.
            if let Some(eval) = self.queue.front().and_then(|q| q.eval) {
                if self.may_start(eval) {
                    let q = self.queue.pop_front().expect("the queue has a front");
                    self.start(q, eval)?;
                    return Ok(None);
                }
            } else if self.stop.is_none() && self.may_start(self.state.next_eval) {
                let k = self.state.next_eval;
                if let Some(q) = self.queue.pop_front() {
                    self.state.next_eval += 1;
                    self.start(q, k)?;
                    return Ok(None);
                }
                self.release(k);
                self.propose()?;
                return Ok(None);
            }
        }
        if self.running.is_empty() {
            return match self.stop.take() {
                Some(Stop::End { status, reason }) => Ok(Some((status, reason))),
                Some(Stop::Fail(e)) => Err(e),
                None => Err(RunError::Stuck),
            };
        }
        self.wait()?;
        Ok(None)
    }

    /// Asks for a round of proposals; a search that gives out or fails stops new work.
    fn propose(&mut self) -> Result<(), RunError> {
        let end = match self.propose_round() {
            Ok(0) => {
                self.stall += 1;
                if self.stall >= self.exp.settings.budget.stall_rounds {
                    let msg = format!("{} rounds in a row gave no new valid candidate", self.stall);
                    self.log(Event::Budget(BudgetEvent {
                        limit: "stall".into(),
                        used: self.stall as f64,
                        max: self.exp.settings.budget.stall_rounds as f64,
                        message: msg.clone(),
                    }))?;
                    Some(Stop::End {
                        status: RunStatus::Exhausted,
                        reason: msg,
                    })
                } else {
                    None
                }
            }
            Ok(_) => {
                self.stall = 0;
                None
            }
            Err(e) if e.is_budget() => {
                let msg = e.to_string();
                let (tokens, _) = self.usage();
                self.log(Event::Budget(BudgetEvent {
                    limit: "llm".into(),
                    used: tokens as f64,
                    max: 0.0,
                    message: msg.clone(),
                }))?;
                Some(Stop::End {
                    status: RunStatus::Completed,
                    reason: msg,
                })
            }
            // The model server went away: pause like a run whose Ray head went away, keeping
            // the queue, so that `resume` goes on once it is back.
            Err(SearchError::Llm(e @ crate::llm::LlmError::Unavailable { .. })) => {
                self.stop = Some(Stop::Fail(RunError::Paused {
                    dir: self.dir.display().to_string(),
                    reason: e.to_string(),
                }));
                return Ok(());
            }
            Err(SearchError::Interrupted) => {
                return Err(RunError::Interrupted {
                    dir: self.dir.display().to_string(),
                    stopped: String::new(),
                })
            }
            Err(SearchError::Exhausted) => Some(Stop::End {
                status: RunStatus::Exhausted,
                reason: SearchError::Exhausted.to_string(),
            }),
            Err(e) => Some(Stop::Fail(RunError::Search {
                dir: self.dir.display().to_string(),
                source: e,
            })),
        };
        if let Some(s) = end {
            self.skip_queue()?;
            self.stop = Some(s);
        }
        Ok(())
    }

    /// Evaluations done so far.
    pub fn evaluations(&self) -> u64 {
        self.state.evaluations
    }

    /// Valid new proposals left when the run stops starting work are journaled as skipped, so
    /// that a reader of the journal sees why they were never trained. Redone evaluations stay.
    fn skip_queue(&mut self) -> Result<(), RunError> {
        let queue = std::mem::take(&mut self.queue);
        for q in queue {
            if q.eval.is_some() {
                self.queue.push_back(q);
                continue;
            }
            self.log(Event::Validation(ValidationEvent {
                id: q.proposal,
                verdict: Verdict::Skipped,
                message: Some("the budget ran out before its turn".into()),
                params: None,
                flops: None,
            }))?;
        }
        Ok(())
    }

    /// One round of proposals; returns how many valid new candidates it queued.
    fn propose_round(&mut self) -> Result<usize, SearchError> {
        let round = self.state.next_round;
        self.state.next_round += 1;
        // A generator per round, from the run's seed and the round: a resumed run draws what
        // the uninterrupted run would have drawn.
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.exp.settings.seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let task = format!("{}\n{}", self.exp.task.name, self.exp.task.description);
        let mut ctx = Context {
            space: &self.exp.space,
            input: self.exp.input,
            check: self.exp.check,
            history: &self.state.history,
            rng: &mut rng,
            round,
            task: &task,
            metric: "validation accuracy",
            notes: Vec::new(),
            interrupted: crate::exec::interrupted,
        };
        let batch = self.exp.settings.strategy.batch;
        let result = self.strategy.propose(&mut ctx, batch);
        let notes = std::mem::take(&mut ctx.notes);
        for n in notes {
            tracing::warn!("{n}");
            self.progress.message(&n);
            self.log(Event::Note(NoteEvent { round, message: n }))
                .map_err(|e| SearchError::Other(e.to_string()))?;
        }
        let proposals = result?;
        self.watch_fallback(round, &proposals)
            .map_err(|e| SearchError::Other(e.to_string()))?;
        let mut queued = 0;
        for p in proposals {
            queued += self
                .record_proposal(round, p)
                .map_err(|e| SearchError::Other(e.to_string()))?;
        }
        Ok(queued)
    }

    /// Counts rounds in a row in which a model strategy's model gave nothing valid and the
    /// round was filled with random samples, and warns at 3 in a row (and every 3 after): a
    /// run that says `llm` but is in truth a random search should say so while it runs.
    fn watch_fallback(&mut self, round: u64, proposals: &[Proposal]) -> Result<(), RunError> {
        use crate::search::Origin;
        if self.llm.is_none() || proposals.is_empty() {
            return Ok(());
        }
        let l = &self.exp.settings.strategy.llm;
        if !l.warm_start && self.state.history.len() < l.initial {
            // The initial random samples before the model is first asked.
            return Ok(());
        }
        let model_valid = proposals
            .iter()
            .any(|p| matches!(p.origin, Origin::Model | Origin::Repair) && p.checked.is_ok());
        let sampled = proposals.iter().any(|p| p.origin == Origin::Sample);
        if model_valid || !sampled {
            self.fell_back = 0;
            return Ok(());
        }
        self.fell_back += 1;
        if self.fell_back.is_multiple_of(3) {
            let n = format!(
                "warning: {} rounds in a row fell back to random samples: the model proposed no valid candidate (see the notes in journal.jsonl and the replies in llm.jsonl); this part of the run is a random search",
                self.fell_back
            );
            tracing::warn!("{n}");
            self.progress.message(&n);
            self.log(Event::Note(NoteEvent { round, message: n }))?;
        }
        Ok(())
    }

    fn record_proposal(&mut self, round: u64, p: Proposal) -> Result<usize, RunError> {
        let id = self.state.next_proposal;
        self.state.next_proposal += 1;
        self.state.proposals += 1;
        let hash = p.hash();
        // Synced together with the validation event that follows at once.
        self.journal
            .append_unsynced(&Event::Proposal(ProposalEvent {
                id,
                round,
                origin: p.origin,
                text: p.text.clone(),
                hash: hash.clone(),
                parents: p.parents.clone(),
                plan: p.plan.clone(),
                llm_step: p.llm_step.clone(),
                predicted: p.predicted.filter(|x| x.is_finite()),
            }))?;
        let (verdict, message, queued) = match (&p.checked, &hash) {
            (Err(invalid), _) => {
                self.state.invalid += 1;
                (Verdict::Invalid, Some(invalid.message.clone()), None)
            }
            (Ok(_), Some(h)) if self.state.history.seen(h) => (
                Verdict::Duplicate,
                Some(format!("candidate {h} was proposed before in this run")),
                None,
            ),
            (Ok((node, a)), Some(h)) => (
                Verdict::Valid,
                None,
                Some(Queued {
                    proposal: id,
                    hash: h.clone(),
                    node: node.clone(),
                    analysis: a.clone(),
                    parents: p.parents.clone(),
                    plan: p.plan.clone(),
                    eval: None,
                }),
            ),
            (Ok(_), None) => unreachable!("a valid proposal has a hash"),
        };
        self.state.sources.add(
            &ProposalEvent {
                id,
                round,
                origin: p.origin,
                text: String::new(),
                hash: None,
                parents: Vec::new(),
                plan: None,
                llm_step: p.llm_step.clone(),
                predicted: None,
            },
            verdict,
        );
        let a = p.checked.as_ref().ok().map(|(_, a)| a);
        self.log(Event::Validation(ValidationEvent {
            id,
            verdict,
            message,
            params: a.map(|a| a.total_params()),
            flops: a.map(|a| a.flops),
        }))?;
        Ok(match queued {
            Some(q) => {
                self.state.history.reserve(&q.hash);
                self.queue.push_back(q);
                1
            }
            None => 0,
        })
    }

    /// The job for evaluation `eval` of `q`: the candidate with everything a worker needs.
    fn job_spec(&self, q: &Queued, eval: u64) -> JobSpec {
        let exp = self.exp;
        let sizes = match &exp.task.source {
            crate::train::task::Source::Synthetic { sizes, .. } => Some(*sizes),
            _ => None,
        };
        let eta = exp.settings.fidelity.eta.max(2);
        let rungs = exp
            .settings
            .fidelity
            .rungs(self.epochs)
            .into_iter()
            .map(|epoch| {
                let earlier: Vec<f64> = self
                    .state
                    .curves
                    .iter()
                    .filter_map(|c| c.get(epoch - 1).copied())
                    .collect();
                Rung {
                    epoch,
                    threshold: rung_threshold(&earlier, eta),
                }
            })
            .collect();
        JobSpec {
            protocol: crate::exec::PROTOCOL,
            eval,
            hash: q.hash.clone(),
            candidate: q.node.to_string(),
            space: exp.space.name().to_string(),
            grammar: exp.space.grammar.source.clone(),
            limits: exp.check.limits,
            task: TaskSpec {
                name: absolute_task(
                    &exp.task.name,
                    sizes.is_some() || exp.task.lookup().is_some(),
                ),
                sizes,
            },
            recipe: exp.recipe.clone(),
            seed: exp.settings.seed,
            device: exp.settings.device.clone(),
            program: crate::train::program::program_eval(exp.settings.seed),
            rungs,
            weights_to: None,
        }
    }

    /// Starts evaluation `eval` of `q`.
    fn start(&mut self, q: Queued, eval: u64) -> Result<(), RunError> {
        self.release(eval);
        let job = Job {
            spec: self.job_spec(&q, eval),
            node: q.node.clone(),
            analysis: q.analysis.clone(),
            attempt: 1,
        };
        // Submitted before it is journaled: a driver that crashes in between finds the job
        // again by its candidate (Ray), rather than a journal naming a job never submitted.
        let worker = self.executor.submit(job).map_err(|e| self.exec_error(e))?;
        self.log(Event::TrainStarted(TrainStarted {
            eval,
            proposal: q.proposal,
            hash: q.hash.clone(),
            candidate: q.node.to_string(),
            epochs: self.epochs,
            seed: self.exp.settings.seed,
            worker: Some(worker.clone()),
        }))?;
        self.starts += 1;
        if let Some(n) = std::env::var(CRASH_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            if self.starts >= n {
                let _ = self
                    .journal
                    .append_raw_for_test(br#"{"type":"epoch","data":{"eval":"#);
                std::process::abort();
            }
        }
        tracing::info!(eval, hash = %q.hash, candidate = %q.node, worker, "training");
        self.running.insert(
            eval,
            Running {
                q,
                since: Instant::now(),
            },
        );
        Ok(())
    }

    fn exec_error(&self, e: ExecError) -> RunError {
        let dir = self.dir.display().to_string();
        match e {
            ExecError::Unavailable(reason) => RunError::Paused { dir, reason },
            ExecError::Interrupted => RunError::Interrupted {
                dir,
                stopped: String::new(),
            },
            ExecError::Other(message) => RunError::Executor { dir, message },
        }
    }

    /// Waits for the next update from the executor and records it.
    fn wait(&mut self) -> Result<(), RunError> {
        let journal = &mut self.journal;
        let mut io_error: Option<JournalError> = None;
        let mut on_epoch = |eval: u64, e: &Epoch| {
            // Synced with train_finished; a training cut short is redone on resume.
            if io_error.is_some() {
                return;
            }
            if let Err(err) = journal.append_unsynced(&Event::Epoch(EpochEvent {
                eval,
                epoch: e.epoch,
                train_loss: e.train_loss,
                valid_loss: e.valid_loss,
                valid_score: e.valid_score,
                seconds: e.seconds,
            })) {
                io_error = Some(err);
            }
        };
        let update = self.executor.next(&mut on_epoch);
        if let Some(e) = io_error {
            return Err(e.into());
        }
        match update.map_err(|e| self.exec_error(e))? {
            Update::Retry {
                eval,
                attempt,
                reason,
                worker,
            } => {
                let m = format!("evaluation {eval}: {reason}; attempt {attempt} on {worker}");
                tracing::warn!("{m}");
                self.progress.message(&m);
                self.log(Event::Retry(RetryEvent {
                    eval,
                    attempt,
                    reason,
                    worker,
                }))
            }
            Update::Done { eval, result } => self.finish(eval, result),
        }
    }

    /// Records a finished evaluation and keeps the best.
    fn finish(&mut self, eval: u64, r: Evaluation) -> Result<(), RunError> {
        let Some(Running { q, since }) = self.running.remove(&eval) else {
            tracing::warn!(eval, "a result for an evaluation not in flight is ignored");
            return Ok(());
        };
        let mut failure = r.failure.clone();
        let score = match r.score {
            Some(s) if s.is_finite() => Some(s),
            Some(s) => {
                failure.get_or_insert(Failure {
                    reason: FailureReason::NonFinite,
                    message: format!("the score is {s}"),
                });
                None
            }
            None => None,
        };
        let score = if failure.is_some() { None } else { score };
        let elapsed = self.elapsed();
        self.log(Event::TrainFinished(TrainFinished {
            eval,
            proposal: q.proposal,
            hash: q.hash.clone(),
            candidate: q.node.to_string(),
            score,
            failure: failure.clone(),
            params: r.params,
            flops: r.flops,
            epochs: r.curve.len(),
            stopped_early: r.stopped_early,
            wall_seconds: r.wall_seconds,
            overhead_seconds: Some((since.elapsed().as_secs_f64() - r.wall_seconds).max(0.0)),
            elapsed_seconds: elapsed,
            lookup: r.lookup,
        }))?;
        self.state.evaluations += 1;
        let before = self.best().map(|b| b.hash.clone());
        self.unreleased.insert(
            eval,
            Finished {
                obs: Observation {
                    hash: q.hash.clone(),
                    candidate: q.node.to_string(),
                    score,
                    outcome: outcome(&failure, r.stopped_early),
                    params: r.params,
                    parents: q.parents.clone(),
                    plan: q.plan.clone(),
                    epochs: r.curve.len(),
                },
                curve: r.curve.iter().map(|e| e.valid_score).collect(),
            },
        );
        if !self.exp.settings.executor.deterministic {
            self.release(u64::MAX);
        }
        let after = self.best().cloned();
        if let Some(b) = after.filter(|b| Some(&b.hash) != before.as_ref()) {
            write_best(&self.dir, &b)?;
            if let Some(w) = &r.weights {
                let to = self.dir.join("best.ot");
                std::fs::rename(w, &to).map_err(|source| RunError::Write { path: to, source })?;
            } else {
                // Stale weights of an earlier best must not pass for this one's.
                let _ = std::fs::remove_file(self.dir.join("best.ot"));
            }
        } else if let Some(w) = &r.weights {
            let _ = std::fs::remove_file(w);
        }
        Ok(())
    }
}

/// A file-backed task's folder made absolute (`npy:data/x` -> `npy:/here/data/x`), so that a
/// worker started elsewhere (a Ray job's working directory is the head's) reads the same one.
fn absolute_task(name: &str, synthetic: bool) -> String {
    if synthetic {
        return name.to_string();
    }
    match name.split_once(':') {
        Some((format, dir)) if Path::new(dir).is_relative() => match std::env::current_dir() {
            Ok(cwd) => format!("{format}:{}", cwd.join(dir).display()),
            Err(_) => name.to_string(),
        },
        _ => name.to_string(),
    }
}

/// Writes `best.arch` and `best.json` atomically (a temporary file, then a rename).
fn write_best(dir: &Path, b: &Observation) -> Result<(), RunError> {
    let arch = format!(
        "# best candidate: score {} ({}), {} parameters, hash {}\n{}\n",
        b.score.map(|s| format!("{s:.4}")).unwrap_or("-".into()),
        b.outcome,
        b.params,
        b.hash,
        b.candidate
    );
    let json = serde_json::json!({
        "hash": b.hash,
        "candidate": b.candidate,
        "score": b.score,
        "params": b.params,
        "epochs": b.epochs,
        "outcome": b.outcome,
    });
    for (name, text) in [("best.arch", arch), ("best.json", format!("{json:#}\n"))] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, dir.join(name)))
            .map_err(|source| RunError::Write {
                path: dir.join(name),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::{Fake, Order};
    use crate::run::config::Settings;
    use crate::run::journal::read_journal;
    use crate::search::{Origin, Proposal};

    /// Top-level lines before the first `[`, the rest in the `[strategy]` table onwards.
    fn experiment(extra: &str) -> Experiment {
        let (top, extra) = match extra.find('[') {
            Some(i) if !extra.starts_with('[') && !extra.starts_with("batch") => extra.split_at(i),
            _ => ("", extra),
        };
        let text = format!(
            "seed = 3\n{top}[space.limits]\nmax_params = 30000\nmax_flops = 3000000\n[strategy]\nkind = \"random\"\n{extra}"
        );
        let s = Settings::from_toml(&text, "t").unwrap();
        s.validate("t").unwrap();
        Experiment::resolve(s, "t").unwrap()
    }

    fn runner<'a>(exp: &'a Experiment, dir: &Path, strategy: Box<dyn Strategy + 'a>) -> Runner<'a> {
        Runner::new(
            exp,
            dir.to_path_buf(),
            "t".into(),
            Journal::create(&dir.join("journal.jsonl")).unwrap(),
            strategy,
            Box::new(crate::exec::inline::Inline::new(Box::new(
                crate::exec::fake::FakeEvaluator { epochs: 2 },
            ))),
            None,
            Recovered {
                history: History::new(true),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Proposes the same candidate every round.
    struct Parrot;
    impl Strategy for Parrot {
        fn name(&self) -> &'static str {
            "parrot"
        }
        fn propose(
            &mut self,
            ctx: &mut Context<'_>,
            _n: usize,
        ) -> Result<Vec<Proposal>, SearchError> {
            let mut p = ctx.fresh_sample()?;
            let (node, a) =
                ctx.space
                    .sample(ctx.input, &ctx.check, &mut ChaCha8Rng::seed_from_u64(1))?;
            p.text = node.to_string();
            p.checked = Ok((node, a));
            p.origin = Origin::Sample;
            Ok(vec![p.clone(), p])
        }
    }

    #[test]
    fn duplicates_are_never_trained_and_a_stalled_search_ends() {
        let exp = experiment("[budget]\nevaluations = 10\nstall_rounds = 3\n");
        let dir = tempfile::tempdir().unwrap();
        let mut r = runner(&exp, dir.path(), Box::new(Parrot));
        let out = r.run("new", "").unwrap();
        assert_eq!(out.status, "exhausted");
        assert_eq!(out.evaluations, 1);
        let ev = read_journal(&dir.path().join("journal.jsonl"))
            .unwrap()
            .events;
        let dups = ev
            .iter()
            .filter(|e| matches!(e, Event::Validation(v) if v.verdict == Verdict::Duplicate))
            .count();
        // Round 0: one valid, one duplicate; rounds 1-3: two duplicates each.
        assert_eq!(dups, 7);
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::Budget(b) if b.limit == "stall")));
    }

    #[test]
    fn budgets_stop_the_run_and_are_journaled() {
        let exp = experiment("[budget]\nevaluations = 4\n");
        let dir = tempfile::tempdir().unwrap();
        let mut r = runner(&exp, dir.path(), Box::new(crate::search::random::Random));
        let out = r.run("new", "").unwrap();
        assert_eq!((out.status.name(), out.evaluations), ("completed", 4));
        let ev = read_journal(&dir.path().join("journal.jsonl"))
            .unwrap()
            .events;
        assert!(ev.iter().any(|e| matches!(e, Event::Budget(b)
            if b.limit == "evaluations" && b.used == 4.0 && b.max == 4.0)));
        assert!(matches!(ev.last(), Some(Event::RunFinished(f)) if f.evaluations == 4));

        // Wall time: a budget already spent by earlier sessions stops the run at once.
        let exp = experiment("[budget]\nevaluations = 4\nwall_time_secs = 5.0\n");
        let dir = tempfile::tempdir().unwrap();
        let mut r = runner(&exp, dir.path(), Box::new(crate::search::random::Random));
        r.state.elapsed_seconds = 6.0;
        let out = r.run("new", "").unwrap();
        assert_eq!(out.evaluations, 0);
        assert!(out.reason.contains("wall-time"), "{}", out.reason);
    }

    #[test]
    fn recovery_rebuilds_history_and_queue() {
        // `batch` lands in the [strategy] table the helper opens.
        let exp = experiment("batch = 3\n[budget]\nevaluations = 4\n");
        let dir = tempfile::tempdir().unwrap();
        let mut r = runner(&exp, dir.path(), Box::new(crate::search::random::Random));
        r.run("new", "").unwrap();
        let ev = read_journal(&dir.path().join("journal.jsonl"))
            .unwrap()
            .events;
        let rec = Recovered::from_events(&ev, true);
        assert_eq!(rec.evaluations, 4);
        assert_eq!(rec.history.len(), 4);
        assert_eq!(rec.sessions, 1);
        // Batches of 3 for 4 evaluations: the last two proposals were skipped, and a resume
        // with a larger budget trains them first.
        assert_eq!(rec.queue.len(), 2);
        assert!(rec.in_flight.is_empty());
        // Cut the journal just after the third training started: two done, one in flight.
        let cut = ev
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::TrainStarted(_)))
            .nth(2)
            .map(|(i, _)| i + 1)
            .unwrap();
        let rec = Recovered::from_events(&ev[..cut], true);
        assert_eq!(rec.evaluations, 2);
        assert_eq!(rec.in_flight.len(), 1);
        let (eval, hash) = &rec.in_flight[0];
        assert_eq!(*eval, 2);
        assert_eq!(rec.queue[0].0.hash.as_ref(), Some(hash));
        assert_eq!(rec.queue[0].1, Some(2), "redone under its own number");
        assert!(rec.history.seen(hash));
    }

    /// The finished evaluations of a journal in evaluation order: number, candidate, score,
    /// epochs trained.
    fn finished(dir: &Path) -> Vec<(u64, String, Option<f64>, usize)> {
        let mut v: Vec<_> = read_journal(&dir.join("journal.jsonl"))
            .unwrap()
            .events
            .into_iter()
            .filter_map(|e| match e {
                Event::TrainFinished(t) => Some((t.eval, t.candidate, t.score, t.epochs)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn run_on(exp: &Experiment, dir: &Path, strategy: Box<dyn Strategy + '_>, ex: Fake) -> Outcome {
        let mut r = runner(exp, dir, strategy);
        r.executor = Box::new(ex);
        r.epochs = 4;
        r.run("new", "").unwrap()
    }

    #[test]
    fn results_arriving_out_of_order_give_the_same_run() {
        // Evolution with successive halving: proposals and halving both depend on earlier
        // results, so any dependence on arrival order would show.
        let exp = experiment(
            "parallel = 3\n[strategy.evolution]\npopulation = 4\ntournament = 2\n[budget]\nevaluations = 14\n[fidelity]\nsuccessive_halving = true\nmin_epochs = 1\neta = 2\n",
        );
        let evo = || -> Box<dyn Strategy> {
            Box::new(crate::search::evolution::Evolution {
                cfg: exp.settings.strategy.evolution.clone(),
            })
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let oa = run_on(&exp, a.path(), evo(), Fake::new(3, Order::Fifo, 4));
        let ob = run_on(&exp, b.path(), evo(), Fake::new(3, Order::Lifo, 4));
        assert_eq!(oa.evaluations, 14);
        assert_eq!(ob.evaluations, 14);
        let (fa, fb) = (finished(a.path()), finished(b.path()));
        assert_eq!(fa, fb);
        assert!(fa.iter().any(|f| f.3 < 4), "halving stopped some: {fa:?}");
        // The journal really saw results out of order.
        let order: Vec<u64> = read_journal(&b.path().join("journal.jsonl"))
            .unwrap()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::TrainFinished(t) => Some(t.eval),
                _ => None,
            })
            .collect();
        assert!(order.windows(2).any(|w| w[0] > w[1]), "{order:?}");
        // Resume rebuilds the history in evaluation order.
        let ev = read_journal(&b.path().join("journal.jsonl"))
            .unwrap()
            .events;
        let rec = Recovered::from_events(&ev, true);
        assert_eq!(rec.evaluations, 14);
        let cands: Vec<&str> = rec
            .history
            .all()
            .iter()
            .map(|o| o.candidate.as_str())
            .collect();
        let want: Vec<&str> = fa.iter().map(|f| f.1.as_str()).collect();
        assert_eq!(cands, want);

        // Without the ordering, the same two runs part ways: the check above can fail.
        let exp = experiment(
            "parallel = 3\n[executor]\ndeterministic = false\n[strategy.evolution]\npopulation = 4\ntournament = 2\n[budget]\nevaluations = 14\n[fidelity]\nsuccessive_halving = true\nmin_epochs = 1\neta = 2\n",
        );
        let evo = || -> Box<dyn Strategy> {
            Box::new(crate::search::evolution::Evolution {
                cfg: exp.settings.strategy.evolution.clone(),
            })
        };
        let (c, d) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        run_on(&exp, c.path(), evo(), Fake::new(3, Order::Fifo, 4));
        run_on(&exp, d.path(), evo(), Fake::new(3, Order::Lifo, 4));
        assert_ne!(finished(c.path()), finished(d.path()));
    }

    #[test]
    fn workers_stay_busy_and_a_lag_of_one_is_the_sequential_loop() {
        let exp = experiment("[budget]\nevaluations = 6\n");
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut r = runner(&exp, a.path(), Box::new(crate::search::random::Random));
        r.run("new", "").unwrap();
        run_on(
            &exp,
            b.path(),
            Box::new(crate::search::random::Random),
            Fake::new(1, Order::Lifo, 2),
        );
        let strip = |v: Vec<(u64, String, Option<f64>, usize)>| -> Vec<(u64, String)> {
            v.into_iter().map(|x| (x.0, x.1)).collect()
        };
        assert_eq!(strip(finished(a.path())), strip(finished(b.path())));

        // With three slots and batches of one, three evaluations are in flight at once.
        let exp = experiment("parallel = 3\n[budget]\nevaluations = 7\n");
        let c = tempfile::tempdir().unwrap();
        run_on(
            &exp,
            c.path(),
            Box::new(crate::search::random::Random),
            Fake::new(3, Order::Fifo, 2),
        );
        let mut in_flight = 0i32;
        let mut most = 0;
        for e in read_journal(&c.path().join("journal.jsonl"))
            .unwrap()
            .events
        {
            match e {
                Event::TrainStarted(_) => in_flight += 1,
                Event::TrainFinished(_) => in_flight -= 1,
                _ => {}
            }
            most = most.max(in_flight);
        }
        assert_eq!(most, 3);
        assert_eq!(finished(c.path()).len(), 7);
    }

    #[test]
    fn file_backed_tasks_reach_workers_as_absolute_paths() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_task("npy:data/x", false),
            format!("npy:{}", cwd.join("data/x").display())
        );
        assert_eq!(absolute_task("npy:/srv/x", false), "npy:/srv/x");
        assert_eq!(absolute_task("textures", true), "textures");
    }
}
