//! The local executor: `parallel` worker processes on this machine (`archsmith worker
//! --serve`), each pinned to a device (`cuda:0`, `cuda:1`, ... round-robin, or the CPU with
//! the cores split between workers), each taking one job at a time on stdin and printing its
//! epochs and result on stdout.
//!
//! Worker processes keep the task's data loaded between jobs. A worker that dies during a job
//! (a crash in libtorch, the out-of-memory killer) or overruns the job timeout is replaced and
//! the job submitted again, up to `retries` times; then the job is recorded as failed with the
//! reason. Workers run in their own process group, so that Ctrl-C reaches the driver, which
//! stops them; each worker's stderr goes to `workers/local-N.log` in the run folder.

use super::{
    interrupted, job_failed, parse_line, ExecError, Executor, ExecutorSettings, Job, Update,
    WorkerLine,
};
use crate::train::Epoch;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

enum Msg {
    Line { slot: usize, gen: u64, line: String },
    Eof { slot: usize, gen: u64 },
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    gen: u64,
}

struct Active {
    job: Job,
    attempt: u32,
    started: Instant,
}

struct Slot {
    device: String,
    threads: usize,
    proc: Option<Proc>,
    job: Option<Active>,
}

pub struct Local {
    program: PathBuf,
    slots: Vec<Slot>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    retries: u32,
    timeout: Option<Duration>,
    logs: PathBuf,
    /// Where workers save trained weights (the run folder).
    weights: Option<PathBuf>,
    gen: u64,
}

/// The program workers run: the configured command, `ARCHSMITH_BIN`, or the training binary
/// (`archsmith-torch`, see [`super::torch_program`]).
fn worker_program(configured: Option<&str>) -> Result<PathBuf, ExecError> {
    if let Some(c) = configured {
        return Ok(PathBuf::from(c));
    }
    if let Some(b) = std::env::var_os("ARCHSMITH_BIN") {
        return Ok(PathBuf::from(b));
    }
    super::torch_program()
}

/// The number of CUDA devices the worker program's libtorch sees (`worker --gpus`); 0 when
/// it cannot say, with a warning.
fn count_gpus(program: &Path) -> usize {
    let out = Command::new(program)
        .args(["worker", "--gpus"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        Ok(o) => {
            tracing::warn!(
                "{} worker --gpus failed ({}); workers use the CPU",
                program.display(),
                o.status
            );
            0
        }
        Err(e) => {
            tracing::warn!(
                "cannot run {} to count GPUs ({e}); workers use the CPU",
                program.display()
            );
            0
        }
    }
}

/// The devices `n` workers are pinned to: the configured list, every GPU when the run's device
/// asks for CUDA and GPUs exist (`gpus` counts them, asked only then), or the CPU.
fn worker_devices(
    s: &ExecutorSettings,
    run_device: &str,
    n: usize,
    gpus: &dyn Fn() -> usize,
) -> Vec<String> {
    let list: Vec<String> = if !s.devices.is_empty() {
        s.devices.clone()
    } else {
        let gpus = if run_device == "cpu" { 0 } else { gpus() };
        if gpus > 0 {
            (0..gpus).map(|i| format!("cuda:{i}")).collect()
        } else {
            vec![run_device.replace("auto", "cpu")]
        }
    };
    (0..n).map(|i| list[i % list.len()].clone()).collect()
}

/// Torch threads per worker: the configured number, or the machine's cores split between
/// `n` workers.
pub fn worker_threads(configured: usize, n: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    (cores / n.max(1)).max(1)
}

impl Local {
    /// `n` worker slots; processes start with their first job. `logs` is the folder for the
    /// workers' stderr, `weights` where they save trained weights.
    pub fn new(
        s: &ExecutorSettings,
        run_device: &str,
        n: usize,
        logs: &Path,
        weights: Option<PathBuf>,
    ) -> Result<Local, ExecError> {
        let program = worker_program(s.command.as_deref())?;
        std::fs::create_dir_all(logs)
            .map_err(|e| ExecError::Other(format!("cannot create {}: {e}", logs.display())))?;
        let threads = worker_threads(s.threads, n);
        let gpus = std::cell::OnceCell::new();
        let gpus = || *gpus.get_or_init(|| count_gpus(&program));
        if let (true, Ok(crate::train::DeviceChoice::Cuda(i))) =
            (s.devices.is_empty(), run_device.parse())
        {
            let count = gpus();
            if i >= count {
                return Err(ExecError::Other(if count == 0 {
                    format!("device {run_device} asked for, but CUDA is not available on this machine (torch sees no GPU); use device = \"cpu\" or \"auto\"")
                } else {
                    format!("device cuda:{i} asked for, but only {count} CUDA device(s) exist")
                }));
            }
        }
        let slots = worker_devices(s, run_device, n, &gpus)
            .into_iter()
            .map(|device| Slot {
                device,
                threads,
                proc: None,
                job: None,
            })
            .collect();
        let (tx, rx) = channel();
        Ok(Local {
            program,
            slots,
            tx,
            rx,
            retries: s.retries,
            timeout: s.timeout_secs.map(Duration::from_secs_f64),
            logs: logs.to_path_buf(),
            weights,
            gen: 0,
        })
    }

    fn label(&self, i: usize) -> String {
        let s = &self.slots[i];
        format!("local:{i} ({}, {} threads)", s.device, s.threads)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.logs.join(format!("local-{i}.log"))
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(|e| format!("cannot open {}: {e}", self.log_path(i).display()))?;
        let mut child = Command::new(&self.program)
            .args(["worker", "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start worker {} ({}): {e}",
                    i,
                    self.program.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("a worker process started without pipes".into());
        };
        self.gen += 1;
        let gen = self.gen;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Msg::Line { slot: i, gen, line }).is_err() {
                    return;
                }
            }
            let _ = tx.send(Msg::Eof { slot: i, gen });
        });
        self.slots[i].proc = Some(Proc { child, stdin, gen });
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Option<String> {
        let mut p = self.slots[i].proc.take()?;
        let _ = p.child.kill();
        p.child.wait().ok().map(|s| s.to_string())
    }

    /// Sends slot `i`'s job to its worker, starting one when needed.
    fn send(&mut self, i: usize) -> Result<(), String> {
        if self.slots[i].proc.is_none() {
            self.spawn(i)?;
        }
        let line = {
            let Some(a) = &self.slots[i].job else {
                return Err("no job to send".into());
            };
            serde_json::to_string(&a.job.spec).map_err(|e| e.to_string())?
        };
        let Some(p) = &mut self.slots[i].proc else {
            return Err("the worker did not start".into());
        };
        writeln!(p.stdin, "{line}")
            .and_then(|_| p.stdin.flush())
            .map_err(|e| format!("cannot hand the job to worker {i}: {e}"))
    }

    /// After slot `i`'s job failed outside training: submits it again, or gives up.
    fn retry_or_fail(&mut self, i: usize, reason: String) -> Update {
        let label = self.label(i);
        let Some(a) = &mut self.slots[i].job else {
            unreachable!("retry_or_fail is called for a slot with a job")
        };
        let eval = a.job.spec.eval;
        if a.attempt <= self.retries {
            a.attempt += 1;
            a.started = Instant::now();
            let attempt = a.attempt;
            match self.send(i) {
                Ok(()) => {
                    return Update::Retry {
                        eval,
                        attempt,
                        reason,
                        worker: label,
                    }
                }
                Err(e) => {
                    let attempts = attempt - 1;
                    self.slots[i].job = None;
                    return Update::Done {
                        eval,
                        result: job_failed(format!(
                            "{reason}; the retry could not start: {e} (after {attempts} attempts)"
                        )),
                    };
                }
            }
        }
        let attempts = a.attempt;
        self.slots[i].job = None;
        Update::Done {
            eval,
            result: job_failed(format!("{reason}; gave up after {attempts} attempts")),
        }
    }
}

impl Executor for Local {
    fn describe(&self) -> String {
        let devices: Vec<&str> = self.slots.iter().map(|s| s.device.as_str()).collect();
        format!(
            "local: {} worker processes ({}), {} torch threads each",
            self.slots.len(),
            devices.join(", "),
            self.slots.first().map(|s| s.threads).unwrap_or(1)
        )
    }

    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn submit(&mut self, mut job: Job) -> Result<String, ExecError> {
        let i = self
            .slots
            .iter()
            .position(|s| s.job.is_none())
            .ok_or_else(|| ExecError::Other("every local worker is busy".into()))?;
        job.spec.device = self.slots[i].device.clone();
        job.spec.recipe.threads = self.slots[i].threads;
        job.spec.weights_to = self
            .weights
            .as_ref()
            .map(|d| d.join(format!(".eval-{}.ot", job.spec.eval)));
        let attempt = job.attempt;
        self.slots[i].job = Some(Active {
            job,
            attempt,
            started: Instant::now(),
        });
        if let Err(first) = self.send(i) {
            // A worker that died between jobs: start a fresh one and hand it the job.
            self.kill(i);
            if let Err(e) = self.send(i) {
                self.slots[i].job = None;
                return Err(ExecError::Other(format!("{first}; then {e}")));
            }
        }
        Ok(self.label(i))
    }

    fn next(&mut self, on_epoch: &mut dyn FnMut(u64, &Epoch)) -> Result<Update, ExecError> {
        loop {
            if interrupted() {
                return Err(ExecError::Interrupted);
            }
            if self.slots.iter().all(|s| s.job.is_none()) {
                return Err(ExecError::Other("no job in flight".into()));
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Line { slot, gen, line }) => {
                    let s = &mut self.slots[slot];
                    if s.proc.as_ref().map(|p| p.gen) != Some(gen) {
                        continue;
                    }
                    let Some(eval) = s.job.as_ref().map(|a| a.job.spec.eval) else {
                        continue;
                    };
                    match parse_line(&line) {
                        WorkerLine::Epoch(e, ep) if e == eval => on_epoch(eval, &ep),
                        WorkerLine::Result(e, r) if e == eval => {
                            s.job = None;
                            return Ok(Update::Done { eval, result: *r });
                        }
                        _ => {}
                    }
                }
                Ok(Msg::Eof { slot, gen }) => {
                    if self.slots[slot].proc.as_ref().map(|p| p.gen) != Some(gen) {
                        continue;
                    }
                    let status = self
                        .kill(slot)
                        .unwrap_or_else(|| "an unknown status".into());
                    if self.slots[slot].job.is_some() && !interrupted() {
                        let reason = format!(
                            "worker {slot} exited ({status}) during training; its log is {}",
                            self.log_path(slot).display()
                        );
                        return Ok(self.retry_or_fail(slot, reason));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let Some(t) = self.timeout else { continue };
                    let late = self
                        .slots
                        .iter()
                        .position(|s| s.job.as_ref().is_some_and(|a| a.started.elapsed() > t));
                    if let Some(i) = late {
                        self.kill(i);
                        let reason = format!("timed out after {:.0} s", t.as_secs_f64());
                        return Ok(self.retry_or_fail(i, reason));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ExecError::Other(
                        "the workers' output channel closed".into(),
                    ))
                }
            }
        }
    }

    fn stop_all(&mut self) -> Vec<String> {
        let mut stopped = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].job.take().is_some() {
                stopped.push(self.label(i));
            }
            self.kill(i);
        }
        stopped
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            // Closing stdin lets an idle worker exit; one still training is stopped.
            if let Some(mut p) = self.slots[i].proc.take() {
                if self.slots[i].job.is_some() {
                    let _ = p.child.kill();
                }
                drop(p.stdin);
                let _ = p.child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_pinned_round_robin_and_share_the_cores() {
        let mut s = ExecutorSettings {
            devices: vec!["cuda:0".into(), "cuda:1".into()],
            ..Default::default()
        };
        let never = || -> usize { panic!("the GPUs are counted only when needed") };
        assert_eq!(
            worker_devices(&s, "cuda", 3, &never),
            vec!["cuda:0", "cuda:1", "cuda:0"]
        );
        s.devices.clear();
        assert_eq!(worker_devices(&s, "cpu", 2, &never), vec!["cpu", "cpu"]);
        assert_eq!(worker_devices(&s, "auto", 4, &|| 0), vec!["cpu"; 4]);
        // GPU machines: every GPU in turn.
        assert_eq!(
            worker_devices(&s, "auto", 3, &|| 2),
            vec!["cuda:0", "cuda:1", "cuda:0"]
        );
        assert_eq!(worker_threads(3, 8), 3);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(worker_threads(0, 1), cores);
        assert_eq!(worker_threads(0, cores * 4), 1);
    }
}
