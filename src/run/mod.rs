//! Runs: the agent loop, the run folder, the journal, resume and replay.
//!
//! A run is a folder `results/<run-id>/` holding
//! - `config.toml`: the resolved settings (a concrete strategy, never `auto`),
//! - `journal.jsonl`: typed events (see [`journal`]), each synced before the loop goes on,
//! - `llm.jsonl`: every model exchange (the llm module's `RecordWriter`),
//! - `best.arch` / `best.json` / `best.ot`: the best candidate so far and its trained weights,
//! - `run.log`: the tracing log.
//!
//! [`prepare_new`], [`prepare_resume`] and [`prepare_replay`] settle everything (settings,
//! space, task, data, strategy, model client, folder) and give a [`Prepared`] run, which
//! [`Prepared::run`] drives to the end. [`summary`] and [`list_runs`] read runs back.

pub mod config;
pub mod journal;
pub mod lock;
pub mod runner;

pub use config::{ConfigError, Experiment, Overrides, Settings, StrategyKind};
pub use journal::{read_journal, Event, Journal, JournalError, JournalRead, RunStatus};
pub use runner::{NoProgress, Outcome, Progress, Recovered, RunError, Runner, Sources, Status};

pub use lock::{LockError, RunLock};

use crate::exec::inline::{Evaluator, Inline};
use crate::exec::{Executor, ExecutorKind};
use crate::llm::prompt::Prompts;
use crate::llm::{read_records, LlmClient, LlmRecord, ProviderKind};
use crate::search::bo::Bo;
use crate::search::evolution::Evolution;
use crate::search::llm::{LlmStrategy, Model};
use crate::search::llm_evolution::LlmEvolution;
use crate::search::random::Random;
use crate::search::{Observation, Strategy};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How often a look-up run's journal is fsynced (see [`Journal::group_commit`]).
pub const LOOKUP_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A run ready to go: everything settled and the folder made.
pub struct Prepared {
    pub exp: Experiment,
    pub dir: PathBuf,
    pub run_id: String,
    /// What the run says at its start: the strategy and why, a resumed journal's state.
    pub message: String,
    pub mode: &'static str,
    state: Recovered,
    journal: Journal,
    /// Held until the run ends: this process is the folder's one writer.
    lock: RunLock,
    llm: Option<Arc<LlmClient>>,
    usage_before: (u64, f64),
    /// For a replay: the run being replayed.
    pub replay_of: Option<PathBuf>,
}

/// Validates every setting once and resolves the experiment (space, task, recipe), as a run
/// does before it makes its folder: what `run --dry-run` prints. Returns the settled
/// settings and why the strategy was chosen.
pub fn settle(
    settings: Settings,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(Settings, String)> {
    let (exp, why) = settle_experiment(settings, file, lookup)?;
    Ok((exp.settings, why))
}

fn settle_experiment(
    mut settings: Settings,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(Experiment, String)> {
    settings.validate(file)?;
    let why = settings.settle_strategy(lookup);
    settings.validate(file)?;
    Ok((Experiment::resolve(settings, file)?, why))
}

/// Settles the settings, makes the run folder and writes `config.toml`.
pub fn prepare_new(
    settings: Settings,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Prepared> {
    let (exp, why) = settle_experiment(settings, file, lookup)?;
    let dir = new_run_dir(&exp.settings)?;
    let lock = RunLock::acquire(&dir)?;
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(dir.join("config.toml"), exp.settings.to_toml())
        .with_context(|| format!("cannot write {}", dir.join("config.toml").display()))?;
    let journal = Journal::create(&dir.join("journal.jsonl"))?;
    let llm = model_client(&exp, &dir, lookup)?;
    let message = with_started(why, llm.as_deref());
    Ok(Prepared {
        state: Recovered {
            history: crate::search::History::new(exp.maximize()),
            ..Default::default()
        },
        exp,
        dir,
        run_id,
        message,
        mode: "new",
        journal,
        lock,
        llm,
        usage_before: (0, 0.0),
        replay_of: None,
    })
}

/// Reopens a run folder to continue it from its journal.
pub fn prepare_resume(dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Prepared> {
    let cfg = dir.join("config.toml");
    let settings = Settings::load(Some(&cfg))?;
    let file = cfg.display().to_string();
    settings.validate(&file)?;
    let exp = Experiment::resolve(settings, &file)?;
    // Before the journal is read: a second writer must not even start from it.
    let lock = RunLock::acquire(dir)?;
    let jpath = dir.join("journal.jsonl");
    let read = read_journal(&jpath)?;
    let state = Recovered::from_events(&read.events, exp.maximize());
    let mut message = format!(
        "resuming {}: {} evaluations done, {} queued",
        dir.display(),
        state.evaluations,
        state.queue.len()
    );
    if read.events.is_empty() {
        message += &format!(
            "; its journal ({}) is empty, so nothing was recorded and the run starts from the beginning",
            jpath.display()
        );
    }
    if !state.in_flight.is_empty() {
        let names: Vec<String> = state
            .in_flight
            .iter()
            .map(|(e, h)| format!("evaluation {e} ({h})"))
            .collect();
        message += &format!("; in flight and redone: {}", names.join(", "));
    }
    if let Some(t) = &read.torn {
        message += &format!(
            "; the journal's last line ({}, {} bytes) was torn by the crash and is dropped",
            t.line, t.bytes
        );
    }
    let journal = Journal::open_append(&jpath, read.good_len)?;
    let llm = model_client(&exp, dir, lookup)?;
    let message = with_started(message, llm.as_deref());
    let usage_before = recorded_usage(&dir.join("llm.jsonl"));
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Prepared {
        exp,
        dir: dir.to_path_buf(),
        run_id,
        message,
        mode: "resume",
        state,
        journal,
        lock,
        llm,
        usage_before,
        replay_of: None,
    })
}

/// Sets up a replay of `dir` in a new folder next to it: the same settings, model calls
/// answered from its `llm.jsonl`, and the budget set to the evaluations it recorded.
pub fn prepare_replay(dir: &Path) -> Result<Prepared> {
    let cfg = dir.join("config.toml");
    let mut settings = Settings::load(Some(&cfg))?;
    let read = read_journal(&dir.join("journal.jsonl"))?;
    let recorded = Recovered::from_events(&read.events, true);
    if recorded.evaluations == 0 {
        bail!(
            "{} recorded no evaluation; there is nothing to replay",
            dir.display()
        );
    }
    settings.budget.evaluations = recorded.evaluations;
    settings.budget.wall_time_secs = None;
    settings.budget.tokens = None;
    settings.budget.usd = None;
    if let Some(l) = &mut settings.llm {
        l.provider = ProviderKind::Replay;
        l.replay_path = Some(dir.join("llm.jsonl"));
        l.budget = Default::default();
    }
    settings.out = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    settings.name = Some(format!("{base}-replay"));
    let file = cfg.display().to_string();
    settings.validate(&file)?;
    let exp = Experiment::resolve(settings, &file)?;
    let out = exp.settings.out.clone();
    let new_dir = unique_dir(&out, &format!("{base}-replay"))?;
    let lock = RunLock::acquire(&new_dir)?;
    std::fs::write(new_dir.join("config.toml"), exp.settings.to_toml())?;
    let journal = Journal::create(&new_dir.join("journal.jsonl"))?;
    let llm = model_client(&exp, &new_dir, &|_| None)?;
    let run_id = new_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Prepared {
        state: Recovered {
            history: crate::search::History::new(exp.maximize()),
            ..Default::default()
        },
        message: format!(
            "replaying {} ({} evaluations) into {}, model calls answered from its llm.jsonl",
            dir.display(),
            recorded.evaluations,
            new_dir.display()
        ),
        exp,
        dir: new_dir,
        run_id,
        mode: "replay",
        journal,
        lock,
        llm,
        usage_before: (0, 0.0),
        replay_of: Some(dir.to_path_buf()),
    })
}

impl Prepared {
    /// Runs the loop with the executor the settings name: local worker processes (one for
    /// `inline`) or Ray jobs; look-up tasks are evaluated in this process.
    pub fn run(self, progress: Box<dyn Progress + '_>) -> Result<Outcome, RunError> {
        let s = &self.exp.settings;
        if let Some(d) = self.exp.task.lookup() {
            // A look-up task: no training, no workers (its settings were checked on resolve).
            let table = crate::train::lookup::Table::shared(d.name)?;
            let mut this = self;
            this.journal.group_commit(LOOKUP_SYNC_EVERY);
            let evaluator = crate::exec::inline::LookupEvaluator { table };
            return this.run_on(Box::new(Inline::new(Box::new(evaluator))), progress);
        }
        let executor: Box<dyn Executor> = match s.executor.settled(s.parallel) {
            // Training runs in worker processes of the training binary (`archsmith-torch`), so
            // that this process never loads libtorch and survives a crash inside it: `inline`
            // is one worker, a candidate at a time, with the same results.
            ExecutorKind::Inline | ExecutorKind::Auto | ExecutorKind::Local => Box::new(
                crate::exec::local::Local::new(
                    &s.executor,
                    &s.device,
                    s.parallel,
                    &self.dir.join("workers"),
                    Some(self.dir.clone()),
                )
                .map_err(RunError::LocalWorkers)?,
            ),
            ExecutorKind::Ray => {
                crate::exec::ray::Ray::new(&s.executor, s.parallel, &self.run_id, &|k| {
                    std::env::var(k).ok()
                })
                .map_err(RunError::Ray)?
            }
        };
        self.run_on(executor, progress)
    }

    /// Runs the loop with an evaluator in this process (a fake one in benchmarks and tests).
    pub fn run_with<'a>(
        self,
        evaluator: Box<dyn Evaluator + 'a>,
        progress: Box<dyn Progress + 'a>,
    ) -> Result<Outcome, RunError> {
        let epochs = evaluator.epochs();
        self.run_inner(Box::new(Inline::new(evaluator)), progress, Some(epochs))
    }

    /// Runs the loop with any executor.
    pub fn run_on<'a>(
        self,
        executor: Box<dyn Executor + 'a>,
        progress: Box<dyn Progress + 'a>,
    ) -> Result<Outcome, RunError> {
        self.run_inner(executor, progress, None)
    }

    /// `epochs`: what a full evaluation trains, when the evaluator (not the recipe) says.
    fn run_inner<'a>(
        self,
        executor: Box<dyn Executor + 'a>,
        progress: Box<dyn Progress + 'a>,
        epochs: Option<usize>,
    ) -> Result<Outcome, RunError> {
        let Prepared {
            exp,
            dir,
            run_id,
            message,
            mode,
            state,
            journal,
            llm,
            usage_before,
            lock,
            ..
        } = self;
        let strategy = build_strategy(&exp, llm.clone())?;
        let mut runner = Runner::new(&exp, dir, run_id, journal, strategy, executor, llm, state)?;
        runner.usage_before = usage_before;
        runner.progress = progress;
        if let Some(e) = epochs {
            runner.epochs = e;
        }
        let outcome = runner.run(mode, &message);
        // The folder stays locked until the last event is written.
        drop(runner);
        drop(lock);
        outcome
    }
}

/// The strategy the settings name (never `auto`: settle it first).
pub fn build_strategy<'a>(
    exp: &'a Experiment,
    llm: Option<Arc<LlmClient>>,
) -> Result<Box<dyn Strategy + 'a>, RunError> {
    let s = &exp.settings.strategy;
    let model = || -> Result<Model, RunError> {
        let client = llm.clone().ok_or(RunError::NoModel {
            strategy: s.kind.0.name(),
        })?;
        let prompts = match &exp.settings.space.prompts {
            Some(d) => Prompts::with_overrides(d)?,
            None => Prompts::embedded(),
        };
        Model::new(client, prompts).map_err(RunError::Strategy)
    };
    Ok(match s.kind.0 {
        StrategyKind::Auto => return Err(RunError::Unsettled),
        StrategyKind::Random => Box::new(Random),
        StrategyKind::Evolution => Box::new(Evolution {
            cfg: s.evolution.clone(),
        }),
        StrategyKind::Bo => Box::new(Bo::new(s.bo.clone())),
        StrategyKind::Llm => Box::new(LlmStrategy {
            cfg: s.llm.clone(),
            model: model()?,
        }),
        StrategyKind::LlmEvolution => Box::new(LlmEvolution {
            cfg: s.llm_evolution.clone(),
            model: model()?,
        }),
    })
}

/// The run's opening message, with what the model client started (a local server).
fn with_started(message: String, llm: Option<&LlmClient>) -> String {
    match llm.and_then(LlmClient::started) {
        Some(s) => format!("{message}\n{s}"),
        None => message,
    }
}

/// The model client, recording to the run's `llm.jsonl`, when the strategy uses a model.
fn model_client(
    exp: &Experiment,
    dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<LlmClient>>> {
    if !exp.settings.strategy.kind.0.uses_model() {
        return Ok(None);
    }
    let Some(cfg) = &exp.settings.llm else {
        bail!("the strategy needs an [llm] section");
    };
    let client = LlmClient::from_config_with(cfg, Some(&dir.join("llm.jsonl")), lookup)
        .context("cannot set up the language model")?;
    Ok(Some(Arc::new(client)))
}

/// Tokens and dollars recorded in an `llm.jsonl` (zero when there is none).
fn recorded_usage(path: &Path) -> (u64, f64) {
    let Ok(records) = read_records(path) else {
        return (0, 0.0);
    };
    records
        .iter()
        .fold((0, 0.0), |(t, u), LlmRecord::Exchange(x)| {
            (t + x.usage.total(), u + x.cost_usd.unwrap_or(0.0))
        })
}

/// `<out>/<name or strategy>-s<seed>-<UTC date and time>`, made unique.
fn new_run_dir(s: &Settings) -> Result<PathBuf> {
    let stamp = utc_stamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let name = s
        .name
        .clone()
        .unwrap_or_else(|| s.strategy.kind.0.name().to_string());
    unique_dir(&s.out, &format!("{stamp}-{name}-s{}", s.seed))
}

fn unique_dir(out: &Path, base: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for i in 1..1000 {
        let name = if i == 1 {
            base.to_string()
        } else {
            format!("{base}-{i}")
        };
        let p = out.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
        }
    }
    bail!(
        "cannot find a free run folder name for {base} in {}",
        out.display()
    )
}

/// `YYYYMMDD-HHMMSS` in UTC (days to civil date after Howard Hinnant's algorithm).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A run read back from its folder.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub strategy: String,
    pub space: String,
    pub task: String,
    pub seed: u64,
    pub sessions: u32,
    pub status: RunStatus,
    pub reason: String,
    pub evaluations: u64,
    pub proposals: u64,
    pub invalid: u64,
    /// Where the proposals came from.
    pub sources: Sources,
    pub best: Option<Observation>,
    pub tokens: u64,
    pub usd: f64,
    pub elapsed_seconds: f64,
    pub torn: bool,
    /// Evaluated candidates, best first.
    pub ranked: Vec<Observation>,
    /// Best score after each evaluation (the trajectory).
    pub trajectory: Vec<Option<f64>>,
}

/// Reads a run folder's journal into a summary.
pub fn summary(dir: &Path) -> Result<RunSummary> {
    let read = read_journal(&dir.join("journal.jsonl"))?;
    let maximize = Settings::load(Some(&dir.join("config.toml")))
        .map(|s| s.objective.direction == config::Direction::Maximize)
        .unwrap_or(true);
    let state = Recovered::from_events(&read.events, maximize);
    let first = read.events.iter().find_map(|e| match e {
        Event::RunStarted(r) => Some(r.clone()),
        _ => None,
    });
    let (status, reason) = match &state.finished {
        Some(f) => (f.status, f.reason.clone()),
        None => (
            RunStatus::Interrupted,
            "the journal ends without run_finished (a crash, a kill, or still running)".into(),
        ),
    };
    let (tokens, usd) = recorded_usage(&dir.join("llm.jsonl"));
    let mut best: Option<f64> = None;
    let h = &state.history;
    let trajectory = h
        .all()
        .iter()
        .map(|o| {
            if let Some(s) = o.score {
                if best.is_none_or(|b| h.better(s, b)) {
                    best = Some(s);
                }
            }
            best
        })
        .collect();
    Ok(RunSummary {
        dir: dir.to_path_buf(),
        strategy: first
            .as_ref()
            .map(|r| r.strategy.clone())
            .unwrap_or_default(),
        space: first.as_ref().map(|r| r.space.clone()).unwrap_or_default(),
        task: first.as_ref().map(|r| r.task.clone()).unwrap_or_default(),
        seed: first.as_ref().map(|r| r.seed).unwrap_or(0),
        sessions: state.sessions,
        status,
        reason,
        evaluations: state.evaluations,
        proposals: state.proposals,
        invalid: state.invalid,
        sources: state.sources,
        best: h.best().cloned(),
        tokens,
        usd,
        elapsed_seconds: state.elapsed_seconds,
        torn: read.torn.is_some(),
        ranked: h.ranked().into_iter().cloned().collect(),
        trajectory,
    })
}

/// One evaluation of a run's trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryPoint {
    pub eval: u64,
    pub hash: String,
    pub candidate: String,
    pub score: Option<f64>,
    /// Best score up to and including this evaluation.
    pub best: Option<f64>,
}

/// The run's trajectory re-derived from its journal, without training anything.
pub fn trajectory(dir: &Path) -> Result<Vec<TrajectoryPoint>> {
    let s = summary(dir)?;
    let read = read_journal(&dir.join("journal.jsonl"))?;
    let mut finished: Vec<_> = read
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TrainFinished(t) => Some(t),
            _ => None,
        })
        .collect();
    finished.sort_by_key(|t| t.eval);
    Ok(finished
        .into_iter()
        .zip(s.trajectory)
        .map(|(t, best)| TrajectoryPoint {
            eval: t.eval,
            hash: t.hash.clone(),
            candidate: t.candidate.clone(),
            score: t.score,
            best,
        })
        .collect())
}

/// The runs in `root` (folders holding a journal), oldest first.
pub fn list_runs(root: &Path) -> Result<Vec<Listed>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("journal.jsonl").is_file())
        .collect();
    dirs.sort();
    // One damaged run must not hide the others: it is listed with what is wrong with it.
    Ok(dirs
        .into_iter()
        .map(|d| match summary(&d) {
            Ok(s) => Listed::Run(Box::new(s)),
            Err(e) => Listed::Damaged {
                reason: crate::text::error_chain(&e),
                dir: d,
            },
        })
        .collect())
}

/// One folder of [`list_runs`]: a run, or a run folder that cannot be read and why.
#[derive(Debug)]
pub enum Listed {
    Run(Box<RunSummary>),
    Damaged { dir: PathBuf, reason: String },
}

/// Compares a replay's journal with the recorded run's: proposals (hash and text, in order)
/// and scores. Returns the differences, first to last; empty when the replay matches.
pub fn compare_replay(recorded: &Path, replayed: &Path) -> Result<Vec<String>> {
    let a = read_journal(&recorded.join("journal.jsonl"))?.events;
    let b = read_journal(&replayed.join("journal.jsonl"))?.events;
    let props = |ev: &[Event]| -> Vec<(Option<String>, String)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Proposal(p) => Some((p.hash.clone(), p.text.clone())),
                _ => None,
            })
            .collect()
    };
    // Results arrive in any order when candidates train concurrently; compare by number.
    let scores = |ev: &[Event]| -> Vec<(String, Option<f64>)> {
        let mut v: Vec<(u64, String, Option<f64>)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::TrainFinished(t) => Some((t.eval, t.hash.clone(), t.score)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|(_, h, s)| (h, s)).collect()
    };
    let mut diffs = Vec::new();
    let (pa, pb) = (props(&a), props(&b));
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        if x != y {
            diffs.push(format!(
                "proposal {i}: recorded `{}`, replayed `{}`",
                x.1, y.1
            ));
            break;
        }
    }
    if pb.len() < pa.len() && diffs.is_empty() {
        // The budget cut the replay where the recorded run went on proposing (queued
        // proposals it never trained); only a shortfall of trained candidates matters.
        tracing::debug!(
            recorded = pa.len(),
            replayed = pb.len(),
            "fewer proposals in the replay"
        );
    }
    let (sa, sb) = (scores(&a), scores(&b));
    if sa.len() != sb.len() {
        diffs.push(format!(
            "{} evaluations recorded, {} replayed",
            sa.len(),
            sb.len()
        ));
    }
    for (i, (x, y)) in sa.iter().zip(&sb).enumerate() {
        if x.0 != y.0 {
            diffs.push(format!(
                "evaluation {i}: recorded {}, replayed {}",
                x.0, y.0
            ));
            break;
        }
        let same = match (x.1, y.1) {
            (Some(p), Some(q)) => (p - q).abs() <= 1e-9,
            (None, None) => true,
            _ => false,
        };
        if !same {
            diffs.push(format!(
                "evaluation {i} ({}): recorded score {:?}, replayed {:?}",
                x.0, x.1, y.1
            ));
        }
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_709_251_199), "20240229-235959");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }
}
