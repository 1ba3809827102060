//! Executors: where candidates are trained. The loop hands an [`Executor`] jobs and waits for
//! their updates; it does not know whether they run in this process ([`inline`]), in worker
//! processes on this machine ([`local`]) or as jobs on a Ray cluster ([`ray`]).
//!
//! A job is data, [`JobSpec`]: the space's grammar, the candidate's text, the task (by name;
//! synthetic tasks are regenerated from their seed, file-backed tasks name paths the worker can
//! read), the resolved recipe, the seed, the device and the successive-halving thresholds. A
//! worker (`archsmith-torch worker`, the training crate's `worker` module) validates the candidate again, trains it, and prints
//! `archsmith:epoch {..}` lines and, last, one `archsmith:result {..}` line.
//!
//! The same job gives the same result wherever it runs (on the CPU, for a given seed and
//! thread count), which is what lets a run on a cluster be compared candidate for candidate
//! with a run on one machine.

pub mod fake;
pub mod inline;
pub mod local;
pub mod ray;

use crate::space::{Analysis, Limits, Node};
use crate::train::program::ProgramEval;
use crate::train::{Epoch, Evaluation, Failure, FailureReason, Recipe};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Version of the job and result lines; a worker refuses a job of another version.
pub const PROTOCOL: u32 = 1;

/// Prefix of a worker's epoch lines.
pub const EPOCH_PREFIX: &str = "archsmith:epoch ";
/// Prefix of a worker's result line, the last line it prints for a job.
pub const RESULT_PREFIX: &str = "archsmith:result ";

/// Everything a worker needs to train one candidate, and nothing of the run's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub protocol: u32,
    /// The evaluation's number in its run.
    pub eval: u64,
    /// The candidate's canonical hash; the worker checks that the text gives it.
    pub hash: String,
    pub candidate: String,
    /// The space's name (for messages) and its grammar's text.
    pub space: String,
    pub grammar: String,
    pub limits: Limits,
    pub task: TaskSpec,
    pub recipe: Recipe,
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// How programs (activations, update rules) are scored.
    pub program: ProgramEval,
    /// Successive halving: stop after a rung epoch whose score is below its threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<Rung>,
    /// Where to save the trained weights (a path the driver can read), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_to: Option<PathBuf>,
}

/// A task as a worker resolves it: a synthetic task's name and split sizes, or `FORMAT:DIR`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<(usize, usize, usize)>,
}

/// A successive-halving rung: at `epoch`, training goes on only if the validation score is at
/// least `threshold` (no threshold: too few earlier scores to judge, so it goes on).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    pub epoch: usize,
    pub threshold: Option<f64>,
}

impl JobSpec {
    /// Whether training goes on after `epoch` scored `score`.
    pub fn promoted(&self, epoch: usize, score: f64) -> bool {
        match self
            .rungs
            .iter()
            .find(|r| r.epoch == epoch)
            .and_then(|r| r.threshold)
        {
            Some(t) => score >= t,
            None => true,
        }
    }
}

/// The score a candidate needs at a rung to be in the top `1 / eta` of `earlier` scores with
/// its own included (see `promote`, the definition, which the tests check this against): the
/// `keep`-th best earlier score, where `keep = max(1, (n + 1) / eta)`. `None` when fewer than
/// `eta` earlier scores exist.
pub fn rung_threshold(earlier: &[f64], eta: usize) -> Option<f64> {
    let mut at: Vec<f64> = earlier.iter().copied().filter(|s| s.is_finite()).collect();
    if at.len() < eta {
        return None;
    }
    at.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let keep = ((at.len() + 1) / eta).max(1);
    Some(at[keep - 1])
}

/// The definition [`rung_threshold`] implements, kept as the tests' reference: whether a score
/// at a rung epoch is in the top `1 / eta` of the scores seen there (the
/// candidate's own included). With fewer than `eta` earlier scores, everything goes on.
#[cfg(test)]
pub(crate) fn promote(curves: &[Vec<f64>], epoch: usize, score: f64, eta: usize) -> bool {
    let mut at: Vec<f64> = curves
        .iter()
        .filter_map(|c| c.get(epoch - 1).copied())
        .filter(|s| s.is_finite())
        .collect();
    if at.len() < eta {
        return true;
    }
    at.push(score);
    at.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let keep = (at.len() / eta).max(1);
    score >= at[keep - 1]
}

/// A job handed to an executor: the spec, and the parsed candidate for executors that train in
/// this process.
#[derive(Clone, Debug)]
pub struct Job {
    pub spec: JobSpec,
    pub node: Node,
    pub analysis: Analysis,
    /// 1 for the first submission; a job resubmitted after a crash of the driver counts on.
    pub attempt: u32,
}

/// What an executor reports about a job in flight.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// The job failed outside training (its process died, it was lost, it timed out) and was
    /// submitted again.
    Retry {
        eval: u64,
        attempt: u32,
        reason: String,
        worker: String,
    },
    /// The job finished: a score, or a failure of training (recorded, not retried), or a
    /// failure of the job after its retries.
    Done { eval: u64, result: Evaluation },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executor cannot go on (the cluster's head does not answer): the run pauses and
    /// `archsmith resume` continues it.
    #[error("{0}")]
    Unavailable(String),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

/// Trains jobs; the loop's one boundary to training.
pub trait Executor {
    /// What the executor is, for the start of the run: `inline`, `local: 4 worker processes`...
    fn describe(&self) -> String;
    /// How many jobs may be in flight at once.
    fn slots(&self) -> usize;
    /// Starts a job; returns where it runs (a worker, a Ray submission id), for the journal.
    fn submit(&mut self, job: Job) -> Result<String, ExecError>;
    /// Waits for the next update of a job in flight, passing epochs to `on_epoch` as they
    /// arrive. Called only while jobs are in flight.
    fn next(&mut self, on_epoch: &mut dyn FnMut(u64, &Epoch)) -> Result<Update, ExecError>;
    /// Stops every job in flight (Ctrl-C, a failed run); returns what was stopped, in words.
    fn stop_all(&mut self) -> Vec<String>;
}

/// The name of the training binary, which links libtorch and runs what trains.
pub const TORCH_PROGRAM: &str = "archsmith-torch";

/// Where the training binary is: `ARCHSMITH_TORCH_BIN`, else next to this program (or one
/// folder up, for test binaries in `target/*/deps`), else on the `PATH`.
pub fn torch_program() -> Result<PathBuf, ExecError> {
    if let Some(p) = std::env::var_os("ARCHSMITH_TORCH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.iter().flat_map(|e| e.ancestors().skip(1).take(2));
    for dir in beside {
        let p = dir.join(TORCH_PROGRAM);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(TORCH_PROGRAM);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(ExecError::Other(format!(
        "the training program {TORCH_PROGRAM} is not next to {} nor on the PATH; build it with `cargo build --release` (scripts/setup.sh does) or set ARCHSMITH_TORCH_BIN",
        exe.as_deref()
            .map(|e| e.display().to_string())
            .unwrap_or_else(|| "this program".into())
    )))
}

/// A job that failed outside training (its worker could not load what it needed, its
/// process died, it was lost or it timed out), as a result.
pub fn job_failed(message: String) -> Evaluation {
    Evaluation {
        score: None,
        failure: Some(Failure {
            reason: FailureReason::Worker,
            message,
        }),
        curve: Vec::new(),
        params: 0,
        flops: 0,
        stopped_early: false,
        wall_seconds: 0.0,
        weights: None,
        lookup: None,
    }
}

/// Set by the first Ctrl-C; executors check it while they wait.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Records a Ctrl-C; returns whether one had been recorded before.
pub fn interrupt() -> bool {
    INTERRUPTED.swap(true, Ordering::SeqCst)
}

/// Clears the flag (tests, and a library user running several searches in one process).
pub fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Encodes an epoch line of a worker.
pub fn epoch_line(eval: u64, e: &Epoch) -> String {
    format!(
        "{EPOCH_PREFIX}{}",
        serde_json::json!({"eval": eval, "epoch": e})
    )
}

/// Encodes the result line of a worker.
pub fn result_line(eval: u64, r: &Evaluation) -> String {
    format!(
        "{RESULT_PREFIX}{}",
        serde_json::json!({"protocol": PROTOCOL, "eval": eval, "result": r})
    )
}

/// A worker's output line, decoded.
#[derive(Debug, PartialEq)]
pub enum WorkerLine {
    Epoch(u64, Epoch),
    Result(u64, Box<Evaluation>),
    /// Anything else a worker printed (a log line), or a marked line that does not decode.
    Other,
}

#[derive(Deserialize)]
struct EpochMsg {
    eval: u64,
    epoch: Epoch,
}

#[derive(Deserialize)]
struct ResultMsg {
    protocol: u32,
    eval: u64,
    result: Evaluation,
}

/// Decodes one line a worker printed.
pub fn parse_line(line: &str) -> WorkerLine {
    let line = line.trim_end();
    if let Some(j) = line.strip_prefix(EPOCH_PREFIX) {
        if let Ok(m) = serde_json::from_str::<EpochMsg>(j) {
            return WorkerLine::Epoch(m.eval, m.epoch);
        }
    } else if let Some(j) = line.strip_prefix(RESULT_PREFIX) {
        if let Ok(m) = serde_json::from_str::<ResultMsg>(j) {
            if m.protocol == PROTOCOL {
                return WorkerLine::Result(m.eval, Box::new(m.result));
            }
        }
    }
    WorkerLine::Other
}

/// The last result line in a worker's log for evaluation `eval`, with the epochs printed
/// before it.
pub fn scan_log(log: &str, eval: u64) -> (Vec<Epoch>, Option<Evaluation>) {
    let mut epochs = Vec::new();
    let mut result = None;
    for line in log.lines() {
        match parse_line(line) {
            WorkerLine::Epoch(e, ep) if e == eval => epochs.push(ep),
            WorkerLine::Result(e, r) if e == eval => result = Some(*r),
            _ => {}
        }
    }
    (epochs, result)
}

/// Which executor trains the candidates, by the same names in a config file (serde) and on
/// the command line (clap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// `inline` when `parallel` is 1, `local` otherwise.
    #[default]
    Auto,
    /// In this process, one candidate at a time.
    Inline,
    /// `parallel` worker processes on this machine, each pinned to a device.
    Local,
    /// One Ray job per candidate, through a head node's Jobs REST API.
    Ray,
}

impl ExecutorKind {
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Auto => "auto",
            ExecutorKind::Inline => "inline",
            ExecutorKind::Local => "local",
            ExecutorKind::Ray => "ray",
        }
    }
}

/// The `[executor]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSettings {
    pub kind: ExecutorKind,
    /// Times a job that fails outside training (a crash, a lost job, a timeout) is submitted
    /// again before it is recorded as failed.
    pub retries: u32,
    /// A job running longer than this is stopped and counts as failed (then retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// Torch threads per job; 0: the machine's cores split between local workers, or the
    /// CPUs a Ray job asks for.
    pub threads: usize,
    /// Devices local workers are pinned to, round-robin (`cpu`, `cuda:0`, ...); empty: every
    /// GPU when the run's device is `cuda` or `auto` and GPUs exist, else the CPU.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The archsmith program workers run (local: this program; Ray: `archsmith` on the
    /// cluster's PATH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Proposals see results in evaluation order, lagging by `lag`, so that a run is the same
    /// whatever order results arrive in. `false`: every result is used as soon as it arrives
    /// (runs that depend on timing).
    pub deterministic: bool,
    /// In a deterministic run, evaluation k is proposed (and judged by successive halving)
    /// with the results of evaluations up to k - lag, and starts once those have finished.
    /// 0: 1 with one slot (the sequential loop), else twice `parallel`, so that a worker
    /// waits only for a job that is far behind the others.
    pub lag: usize,
    pub ray: RaySettings,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            kind: ExecutorKind::Auto,
            retries: 2,
            timeout_secs: None,
            threads: 0,
            devices: Vec::new(),
            command: None,
            deterministic: true,
            lag: 0,
            ray: RaySettings::default(),
        }
    }
}

/// The `[executor.ray]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaySettings {
    /// The head's dashboard address, e.g. `http://127.0.0.1:8265`; `RAY_ADDRESS` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// CPUs and GPUs each job asks for (its entrypoint is scheduled on a node that has them).
    pub cpus: f64,
    pub gpus: f64,
    /// Custom resources each job asks for.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub resources: std::collections::BTreeMap<String, f64>,
    /// Environment variables set for each job (`runtime_env.env_vars`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// The environment variable holding a bearer token for the head, if it needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How often a job's status is polled, in milliseconds.
    pub poll_ms: u64,
    /// How long the head may stay unreachable before the run pauses, in seconds.
    pub unreachable_secs: f64,
}

impl Default for RaySettings {
    fn default() -> Self {
        RaySettings {
            address: None,
            cpus: 1.0,
            gpus: 0.0,
            resources: Default::default(),
            env: Default::default(),
            token_env: None,
            poll_ms: 250,
            unreachable_secs: 30.0,
        }
    }
}

impl ExecutorSettings {
    /// The executor `kind` settles to for `parallel` concurrent evaluations.
    pub fn settled(&self, parallel: usize) -> ExecutorKind {
        match self.kind {
            ExecutorKind::Auto if parallel > 1 => ExecutorKind::Local,
            ExecutorKind::Auto => ExecutorKind::Inline,
            k => k,
        }
    }

    /// The lag of a deterministic run with `slots` jobs in flight (see `lag`).
    pub fn lag(&self, slots: usize) -> usize {
        match (self.lag, slots) {
            (0, 0 | 1) => 1,
            (0, n) => 2 * n,
            (l, _) => l,
        }
    }

    pub fn validate(&self, parallel: usize) -> Result<(), crate::train::recipe::FieldError> {
        let bad = |f: &str, m: String| {
            Err(crate::train::recipe::FieldError::new(
                format!("executor.{f}"),
                m,
            ))
        };
        if self.lag != 0 && self.lag < parallel {
            return bad(
                "lag",
                format!("{} is below parallel = {parallel}: the workers could never all be busy; use 0 (auto) or at least {parallel}", self.lag),
            );
        }
        if let Some(t) = self.timeout_secs {
            if !(t.is_finite() && t > 0.0) {
                return bad("timeout_secs", format!("{t} must be positive"));
            }
        }
        if self.settled(parallel) == ExecutorKind::Inline && parallel > 1 {
            return bad(
                "kind",
                format!("`inline` trains one candidate at a time, but parallel = {parallel}; use `local` or `ray`"),
            );
        }
        for d in &self.devices {
            if let Err(e) = d.parse::<crate::train::DeviceChoice>() {
                return bad("devices", e.to_string());
            }
        }
        let r = &self.ray;
        if !(r.cpus.is_finite() && r.cpus >= 0.0 && r.gpus.is_finite() && r.gpus >= 0.0) {
            return bad("ray.cpus", "CPUs and GPUs per job must be >= 0".into());
        }
        if r.poll_ms == 0 {
            return bad("ray.poll_ms", "must be at least 1".into());
        }
        if !(r.unreachable_secs.is_finite() && r.unreachable_secs >= 0.0) {
            return bad("ray.unreachable_secs", "must be >= 0".into());
        }
        if let Some(a) = &r.address {
            if !(a.starts_with("http://") || a.starts_with("https://")) {
                return bad(
                    "ray.address",
                    format!("`{a}` is not an http(s) URL of the head's dashboard (e.g. http://127.0.0.1:8265)"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn promotion_keeps_the_top_fraction() {
        let curves: Vec<Vec<f64>> = [0.1, 0.2, 0.3, 0.4, 0.5].iter().map(|&s| vec![s]).collect();
        assert!(promote(&curves, 1, 0.6, 3));
        assert!(promote(&curves, 1, 0.45, 3));
        assert!(!promote(&curves, 1, 0.35, 3));
        assert!(promote(&curves[..1], 1, 0.0, 3), "too few to judge");
    }

    #[test]
    fn thresholds_decide_as_promote_does() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..2000 {
            let n = rng.gen_range(0..12);
            let eta = rng.gen_range(2..5);
            // Few distinct values, so that ties happen.
            let earlier: Vec<f64> = (0..n).map(|_| rng.gen_range(0..6) as f64 / 5.0).collect();
            let score = rng.gen_range(0..6) as f64 / 5.0;
            let curves: Vec<Vec<f64>> = earlier.iter().map(|&s| vec![s]).collect();
            let spec_says = match rung_threshold(&earlier, eta) {
                Some(t) => score >= t,
                None => true,
            };
            assert_eq!(
                spec_says,
                promote(&curves, 1, score, eta),
                "{earlier:?} {score} {eta}"
            );
        }
    }

    #[test]
    fn worker_lines_round_trip() {
        let e = Epoch {
            epoch: 2,
            steps: 10,
            train_loss: 0.5,
            valid_loss: 0.6,
            valid_score: 0.7,
            lr: 0.1,
            seconds: 1.5,
        };
        assert_eq!(
            parse_line(&epoch_line(3, &e)),
            WorkerLine::Epoch(3, e.clone())
        );
        let r = Evaluation {
            score: Some(0.7),
            failure: None,
            curve: vec![e.clone()],
            params: 12,
            flops: 34,
            stopped_early: false,
            wall_seconds: 2.0,
            weights: None,
            lookup: None,
        };
        let line = result_line(3, &r);
        assert_eq!(
            parse_line(&line),
            WorkerLine::Result(3, Box::new(r.clone()))
        );
        let log = format!("hello\n{}\nnoise\n{line}\n", epoch_line(3, &e));
        assert_eq!(scan_log(&log, 3), (vec![e], Some(r)));
        assert_eq!(scan_log(&log, 4).1, None);
        assert_eq!(parse_line("archsmith:result {broken"), WorkerLine::Other);
    }
}
