//! The Ray executor: one Ray job per evaluation, through the head's Jobs REST API (the
//! dashboard's http address, `http://HEAD:8265`).
//!
//! Each job's entrypoint is `exec archsmith worker --job '<job JSON>'` (the `archsmith` on the
//! cluster's PATH, or `[executor] command`, a program); it asks for `[executor.ray] cpus`, `gpus` and
//! `resources`, and trains on `cuda` when it asks for a GPU, else on the CPU with as many torch
//! threads as CPUs. The driver polls each job's status; when a job succeeds its log gives the
//! epochs and the result. Trained weights are not brought back from the cluster: a Ray run
//! keeps no `best.ot`.
//!
//! A job's submission id comes from the run and the candidate, `archsmith-RUN-HASH` (then
//! `-a2`, `-a3`... for later attempts), so a driver that crashed and resumes finds the jobs
//! its earlier session submitted instead of training them again: a job still pending or
//! running is followed, a finished one's log is read, and a failed one counts as a failed
//! attempt. A job that fails outside training (its process dies, Ray loses it, it runs past
//! `timeout_secs`) is submitted again up to `retries` times. A head that does not answer for
//! `unreachable_secs` pauses the run (`archsmith resume` continues it, following the jobs that
//! kept running meanwhile).

use super::{
    interrupted, job_failed, scan_log, ExecError, Executor, ExecutorSettings, Job, Update,
};
use crate::train::Epoch;
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Timeouts of requests to the head: connecting, reading a job's status or log, stopping a job
/// when the run ends.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest timeout of a request, however soon the head is due to count as gone.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between attempts to reach a head that does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A running job's log is read every this many polls, to pass its epochs on as they come.
const LOG_EVERY_POLLS: u32 = 8;
/// Log lines quoted in a failure's reason.
const TAIL_LINES: usize = 5;

/// A job's details as `GET /api/jobs/{id}` gives them (Ray's `JobDetails`; only what is used).
#[derive(Debug, Deserialize)]
struct JobInfo {
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    driver_exit_code: Option<i64>,
    #[serde(default)]
    metadata: Option<Value>,
    /// When the job ended, in milliseconds since the Unix epoch.
    #[serde(default)]
    end_time: Option<u64>,
}

/// What a request to the head answered, when it answered.
enum Answer {
    /// 2xx, with the body.
    Ok(String),
    NotFound,
    /// Another status, with the body.
    Status(StatusCode, String),
}

/// The head has not answered (or not sensibly) since `since`.
struct Down {
    since: Instant,
    failures: u32,
    last: String,
}

/// The head's address and the client that talks to it.
struct Head {
    addr: String,
    client: Client,
    token: Option<String>,
    poll: Duration,
    unreachable: Duration,
    unreachable_secs: f64,
    down: Option<Down>,
    /// When the last request was sent: a head that does not answer has been silent since.
    asked: Cell<Instant>,
}

impl Head {
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let url = format!("{}{path}", self.addr);
        self.asked.set(Instant::now());
        let mut rq = self.client.request(method, &url).timeout(timeout);
        if let Some(t) = &self.token {
            rq = rq.bearer_auth(t);
        }
        if let Some(b) = body {
            rq = rq.json(b);
        }
        let resp = rq.send().map_err(|e| http_error(&e))?;
        let status = resp.status();
        let text = resp.text().map_err(|e| {
            format!(
                "HTTP {status}, and its body could not be read: {}",
                http_error(&e)
            )
        })?;
        Ok(if status.is_success() {
            Answer::Ok(text)
        } else if status == StatusCode::NOT_FOUND {
            Answer::NotFound
        } else {
            Answer::Status(status, text)
        })
    }

    /// A job's details; `None` when the head does not know the id. `Err`: the head did not
    /// answer, or not with a job's details.
    fn job(&self, id: &str) -> Result<Option<JobInfo>, String> {
        let what = format!("GET /api/jobs/{id}");
        match self.request(
            Method::GET,
            &format!("/api/jobs/{id}"),
            None,
            self.timeout(),
        ) {
            Err(e) => Err(format!("{what}: {e}")),
            Ok(Answer::NotFound) => Ok(None),
            Ok(Answer::Status(s, body)) => Err(format!("{what}: HTTP {s}: {}", excerpt(&body))),
            Ok(Answer::Ok(body)) => match serde_json::from_str::<JobInfo>(&body) {
                Ok(info) => Ok(Some(info)),
                Err(e) => Err(format!(
                    "{what} gave something other than a job's details ({e}): {}",
                    excerpt(&body)
                )),
            },
        }
    }

    /// A job's log; `None` when the head does not know the id.
    fn logs(&self, id: &str) -> Result<Option<String>, String> {
        let what = format!("GET /api/jobs/{id}/logs");
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        match self.request(
            Method::GET,
            &format!("/api/jobs/{id}/logs"),
            None,
            self.timeout(),
        ) {
            Err(e) => Err(format!("{what}: {e}")),
            Ok(Answer::NotFound) => Ok(None),
            Ok(Answer::Status(s, body)) => Err(format!("{what}: HTTP {s}: {}", excerpt(&body))),
            Ok(Answer::Ok(body)) => match serde_json::from_str::<Logs>(&body) {
                Ok(l) => Ok(Some(l.logs)),
                Err(e) => Err(format!(
                    "{what} gave something other than a log ({e}): {}",
                    excerpt(&body)
                )),
            },
        }
    }

    /// Asks the head to stop a job; best effort.
    fn stop(&self, id: &str, timeout: Duration) -> Result<(), String> {
        match self.request(Method::POST, &format!("/api/jobs/{id}/stop"), None, timeout) {
            Ok(Answer::Ok(_)) | Ok(Answer::NotFound) => Ok(()),
            Ok(Answer::Status(s, body)) => Err(format!("HTTP {s}: {}", excerpt(&body))),
            Err(e) => Err(e),
        }
    }

    /// The timeout of a request: short enough that a head that hangs counts as gone after
    /// `unreachable_secs`.
    fn timeout(&self) -> Duration {
        let left = match &self.down {
            Some(d) => self.unreachable.saturating_sub(d.since.elapsed()),
            None => self.unreachable,
        };
        REQUEST_TIMEOUT.min(left.max(MIN_REQUEST_TIMEOUT))
    }

    /// The head answered.
    fn fine(&mut self) {
        self.down = None;
    }

    /// The head did not answer (or not sensibly): how long to wait before trying again, or
    /// `Unavailable` once it has not answered for `unreachable_secs`.
    fn trouble(&mut self, error: String) -> Result<Duration, ExecError> {
        let asked = self.asked.get();
        let d = self.down.get_or_insert_with(|| Down {
            since: asked,
            failures: 0,
            last: String::new(),
        });
        d.failures += 1;
        d.last = error;
        let waited = d.since.elapsed();
        if waited >= self.unreachable {
            return Err(ExecError::Unavailable(format!(
                "the Ray head at {} has not answered for {} s (last error: {})",
                self.addr,
                secs(self.unreachable_secs),
                d.last
            )));
        }
        let backoff = self
            .poll
            .saturating_mul(1 << d.failures.min(6))
            .min(MAX_BACKOFF);
        Ok(backoff
            .min(self.unreachable - waited)
            .max(Duration::from_millis(1)))
    }

    fn is_down(&self) -> bool {
        self.down.is_some()
    }
}

/// A job in flight: one evaluation, through its successive submissions.
struct Flight {
    job: Job,
    /// The submission body without its id; see [`Ray::place`].
    body: Value,
    /// Which submission this is (the id's `-aN`), and how many submissions failed.
    attempt: u32,
    failures: u32,
    /// The current submission's id.
    id: String,
    /// When the current submission was first seen running.
    running_since: Option<Instant>,
    /// When the current submission was submitted or found.
    placed: Instant,
    /// The evaluation number the job's log speaks of (a job of an earlier session may have
    /// been given another number).
    log_eval: u64,
    /// Epochs passed on so far for the current submission.
    epochs_sent: usize,
    polls: u32,
    /// The log of the succeeded submission had no result line once already.
    reread: bool,
    /// Settled before the job ran (every attempt failed already): the failure to report.
    gave_up: Option<String>,
}

pub struct Ray {
    head: Head,
    run_id: String,
    command: String,
    parallel: usize,
    retries: u32,
    timeout: Option<Duration>,
    timeout_secs: f64,
    threads: usize,
    cpus: f64,
    gpus: f64,
    resources: std::collections::BTreeMap<String, f64>,
    env: std::collections::BTreeMap<String, String>,
    ray_version: String,
    flights: Vec<Flight>,
}

/// The head's address: the configured one, or `RAY_ADDRESS`, as the http(s) URL of its
/// dashboard, without a trailing slash.
fn head_address(
    s: &ExecutorSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExecError> {
    let (addr, from) = match &s.ray.address {
        Some(a) => (a.trim().to_string(), "[executor.ray] address"),
        None => match lookup("RAY_ADDRESS").filter(|a| !a.trim().is_empty()) {
            Some(a) => (a.trim().to_string(), "RAY_ADDRESS"),
            None => {
                return Err(ExecError::Other(
                    "no Ray head address: set [executor.ray] address, --ray-address or RAY_ADDRESS to the head's dashboard address (e.g. http://127.0.0.1:8265)".into(),
                ))
            }
        },
    };
    if addr.starts_with("http://") || addr.starts_with("https://") {
        return Ok(addr.trim_end_matches('/').to_string());
    }
    let what = if addr.starts_with("ray://") {
        "a Ray Client address"
    } else {
        "not an http(s) URL"
    };
    Err(ExecError::Other(format!(
        "{from} is `{addr}`, {what}; archsmith submits jobs through the Jobs REST API, which needs the dashboard's http address, e.g. http://127.0.0.1:8265 (set it in [executor.ray] address, --ray-address or RAY_ADDRESS)"
    )))
}

impl Ray {
    /// Checks that the head answers (`GET /api/version`) and returns the executor, boxed as
    /// the run's executor choice wants it.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        s: &ExecutorSettings,
        parallel: usize,
        run_id: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Box<dyn Executor>, ExecError> {
        Ok(Box::new(Ray::connect(s, parallel, run_id, lookup)?))
    }

    /// [`Ray::new`], unboxed.
    pub fn connect(
        s: &ExecutorSettings,
        parallel: usize,
        run_id: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Ray, ExecError> {
        let addr = head_address(s, lookup)?;
        let token = match &s.ray.token_env {
            None => None,
            Some(var) => match lookup(var).filter(|t| !t.is_empty()) {
                Some(t) => Some(t),
                None => {
                    return Err(ExecError::Other(format!(
                        "[executor.ray] token_env names {var}, which is not set"
                    )))
                }
            },
        };
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| {
                ExecError::Other(format!("cannot make an HTTP client: {}", error_chain(&e)))
            })?;
        let head = Head {
            addr,
            client,
            token,
            poll: Duration::from_millis(s.ray.poll_ms.max(1)),
            unreachable: Duration::from_secs_f64(s.ray.unreachable_secs.max(0.0)),
            unreachable_secs: s.ray.unreachable_secs,
            down: None,
            asked: Cell::new(Instant::now()),
        };
        let ray_version = version(&head)?;
        Ok(Ray {
            head,
            run_id: run_id.to_string(),
            command: s.command.clone().unwrap_or_else(|| "archsmith".into()),
            parallel: parallel.max(1),
            retries: s.retries,
            timeout: s.timeout_secs.map(Duration::from_secs_f64),
            timeout_secs: s.timeout_secs.unwrap_or(0.0),
            threads: if s.threads > 0 {
                s.threads
            } else {
                (s.ray.cpus.ceil() as usize).max(1)
            },
            cpus: s.ray.cpus,
            gpus: s.ray.gpus,
            resources: s.ray.resources.clone(),
            env: s.ray.env.clone(),
            ray_version,
            flights: Vec::new(),
        })
    }

    /// The submission id of attempt `attempt` of candidate `hash`.
    pub fn submission_id(&self, hash: &str, attempt: u32) -> String {
        submission_id(&self.run_id, hash, attempt)
    }

    /// The submission body of `job` (its id and attempt are set by [`Ray::place`]).
    fn body(&self, job: &Job) -> Result<Value, ExecError> {
        let spec = serde_json::to_string(&job.spec)
            .map_err(|e| ExecError::Other(format!("cannot encode the job: {e}")))?;
        let quoted = shlex::try_quote(&spec)
            .map_err(|e| ExecError::Other(format!("cannot quote the job for the shell: {e}")))?;
        let command = shlex::try_quote(&self.command).map_err(|e| {
            ExecError::Other(format!("cannot quote the command for the shell: {e}"))
        })?;
        let mut body = json!({
            // `exec`: the shell Ray runs the entrypoint with does not exec a lone command, and
            // a worker under a killed shell would go on, orphaned.
            "entrypoint": format!("exec {command} worker --job {quoted}"),
            "entrypoint_num_cpus": self.cpus,
            "entrypoint_num_gpus": self.gpus,
            "metadata": {
                "archsmith_run": self.run_id,
                "eval": job.spec.eval.to_string(),
                "hash": job.spec.hash,
            },
        });
        if !self.resources.is_empty() {
            body["entrypoint_resources"] = json!(self.resources);
        }
        if !self.env.is_empty() {
            body["runtime_env"] = json!({ "env_vars": self.env });
        }
        Ok(body)
    }

    /// Submits flight `f`'s current attempt, or finds it on the head (a job of an earlier
    /// session, or a submission whose answer was lost) and follows it. Attempts that the head
    /// shows finished without a result are skipped: a failed one counts as a failed attempt, a
    /// stopped one (a run interrupted earlier) does not. Returns the failure to report when
    /// every attempt has failed.
    fn place(
        head: &mut Head,
        run_id: &str,
        retries: u32,
        f: &mut Flight,
    ) -> Result<Option<String>, ExecError> {
        // Out of attempts: only an attempt an earlier session submitted is followed still.
        let mut gave_up: Option<String> = None;
        loop {
            if interrupted() {
                return Err(ExecError::Interrupted);
            }
            let id = submission_id(run_id, &f.job.spec.hash, f.attempt);
            if let Some(why) = &gave_up {
                match head.job(&id) {
                    Err(e) => {
                        let wait = head.trouble(e)?;
                        pause(wait)?;
                        continue;
                    }
                    Ok(None) => {
                        head.fine();
                        return Ok(Some(why.clone()));
                    }
                    Ok(Some(info)) => {
                        head.fine();
                        match Ray::existing(head, retries, f, id, info) {
                            Found::Followed => return Ok(None),
                            Found::Next => {}
                            Found::GaveUp(why) => gave_up = Some(why),
                        }
                        continue;
                    }
                }
            }
            let mut body = f.body.clone();
            body["submission_id"] = json!(id);
            body["metadata"]["attempt"] = json!(f.attempt.to_string());
            let refused =
                match head.request(Method::POST, "/api/jobs/", Some(&body), head.timeout()) {
                    Ok(Answer::Ok(_)) => {
                        head.fine();
                        f.follow(id, f.job.spec.eval);
                        return Ok(None);
                    }
                    Ok(Answer::NotFound) => Refused::NotFound,
                    Ok(Answer::Status(s, b)) => Refused::Status(s, b),
                    Err(e) => Refused::NoAnswer(e),
                };
            // Refused, or no answer: the id may exist already (Ray refuses a duplicate id, with
            // a 400 or a 500 depending on its version). Its details say.
            let existing = match head.job(&id) {
                Ok(e) => e,
                Err(e) => {
                    let wait = head.trouble(e)?;
                    pause(wait)?;
                    continue;
                }
            };
            let Some(info) = existing else {
                match refused {
                    Refused::NoAnswer(e) => {
                        let wait = head.trouble(format!("POST /api/jobs/: {e}"))?;
                        pause(wait)?;
                        continue;
                    }
                    Refused::Status(s, b) if transient(s) => {
                        let wait =
                            head.trouble(format!("POST /api/jobs/: HTTP {s}: {}", excerpt(&b)))?;
                        pause(wait)?;
                        continue;
                    }
                    Refused::Status(s, b) => {
                        return Err(ExecError::Other(format!(
                            "the Ray head at {} refused job {id} (HTTP {s}): {}",
                            head.addr,
                            tail(&b, 3)
                        )))
                    }
                    Refused::NotFound => {
                        return Err(ExecError::Other(format!(
                            "the Ray head at {} has no Jobs API (POST /api/jobs/ gave 404)",
                            head.addr
                        )))
                    }
                }
            };
            head.fine();
            match Ray::existing(head, retries, f, id, info) {
                Found::Followed => return Ok(None),
                Found::Next => {}
                Found::GaveUp(why) => gave_up = Some(why),
            }
        }
    }

    /// Submission `id` of flight `f` exists on the head with `info`: follows it when it is
    /// pending, running or succeeded; else moves `f` on to the next attempt, returning the
    /// failure to report when a failed attempt was the last one allowed.
    fn existing(head: &Head, retries: u32, f: &mut Flight, id: String, info: JobInfo) -> Found {
        let eval = f.job.spec.eval;
        match info.status.as_str() {
            "FAILED" => {
                let reason = failure_reason(head, &id, &info);
                tracing::warn!(eval, "{reason}");
                f.failures += 1;
                f.attempt += 1;
                // The last submission seen, should it be the last (the journal names it).
                f.id = id;
                if f.failures > retries {
                    Found::GaveUp(format!("{reason}; gave up after {} attempts", f.failures))
                } else {
                    Found::Next
                }
            }
            "STOPPED" => {
                tracing::info!(
                    eval,
                    "Ray job {id} was stopped earlier; trying the next attempt"
                );
                f.attempt += 1;
                Found::Next
            }
            status => {
                tracing::info!(eval, status, "Ray job {id} exists already; following it");
                let log_eval = info
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("eval"))
                    .and_then(|e| e.as_str())
                    .and_then(|e| e.parse().ok())
                    .unwrap_or(eval);
                f.follow(id, log_eval);
                Found::Followed
            }
        }
    }

    /// After flight `i`'s current submission failed: submits it again, or gives up.
    fn failed_attempt(&mut self, i: usize, reason: String) -> Result<Update, ExecError> {
        let f = &mut self.flights[i];
        let eval = f.job.spec.eval;
        f.failures += 1;
        if f.failures > self.retries {
            let attempts = f.failures;
            self.flights.remove(i);
            return Ok(Update::Done {
                eval,
                result: job_failed(format!("{reason}; gave up after {attempts} attempts")),
            });
        }
        f.attempt += 1;
        match Ray::place(&mut self.head, &self.run_id, self.retries, f) {
            Ok(None) => Ok(Update::Retry {
                eval,
                attempt: f.attempt,
                reason,
                worker: f.id.clone(),
            }),
            Ok(Some(gave_up)) => {
                self.flights.remove(i);
                Ok(Update::Done {
                    eval,
                    result: job_failed(gave_up),
                })
            }
            Err(ExecError::Other(e)) => {
                self.flights.remove(i);
                Ok(Update::Done {
                    eval,
                    result: job_failed(format!("{reason}; the retry could not be submitted: {e}")),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Polls flight `i` once: an update when it finished or failed, `Ok(None)` while it runs,
    /// `Err(message)` when the head did not answer.
    fn poll(
        &mut self,
        i: usize,
        on_epoch: &mut dyn FnMut(u64, &Epoch),
    ) -> Result<Result<Option<Update>, String>, ExecError> {
        let f = &mut self.flights[i];
        let eval = f.job.spec.eval;
        let id = f.id.clone();
        let info = match self.head.job(&id) {
            Err(e) => return Ok(Err(e)),
            Ok(None) => {
                let reason = format!(
                    "Ray lost job {id} (the head at {} does not know it; was the head restarted?)",
                    self.head.addr
                );
                return self.failed_attempt(i, reason).map(|u| Ok(Some(u)));
            }
            Ok(Some(info)) => info,
        };
        f.polls += 1;
        match info.status.as_str() {
            "SUCCEEDED" => {
                let logs = match self.head.logs(&id) {
                    Err(e) => return Ok(Err(e)),
                    Ok(None) => {
                        let reason = format!("Ray lost the log of job {id}");
                        return self.failed_attempt(i, reason).map(|u| Ok(Some(u)));
                    }
                    Ok(Some(l)) => l,
                };
                let (epochs, result) = scan_log(&logs, f.log_eval);
                for e in epochs.iter().skip(f.epochs_sent) {
                    on_epoch(eval, e);
                }
                f.epochs_sent = f.epochs_sent.max(epochs.len());
                match result {
                    Some(result) => {
                        // The overhead Ray adds, for the benchmark: submission to first seen
                        // running, and the job's end (the head's clock) to its result here.
                        let started = f.running_since.map(|r| (r - f.placed).as_millis());
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0);
                        let result_ms = info.end_time.map(|e| now_ms.saturating_sub(e));
                        tracing::info!(
                            eval,
                            submitted_to_running_ms = started.unwrap_or(0) as u64,
                            finished_to_result_ms = result_ms.unwrap_or(0),
                            "ray job timing {id}"
                        );
                        self.flights.remove(i);
                        Ok(Ok(Some(Update::Done { eval, result })))
                    }
                    None if !f.reread => {
                        // The log may lag the status by a moment: read it once more.
                        f.reread = true;
                        Ok(Ok(None))
                    }
                    None => {
                        let t = log_tail(&logs);
                        let t = if t.is_empty() { "(none)".into() } else { t };
                        let reason = format!(
                            "Ray job {id} succeeded, but the job's log has no result line; last lines: {t}"
                        );
                        self.failed_attempt(i, reason).map(|u| Ok(Some(u)))
                    }
                }
            }
            "FAILED" | "STOPPED" => {
                let reason = failure_reason(&self.head, &id, &info);
                self.failed_attempt(i, reason).map(|u| Ok(Some(u)))
            }
            status => {
                // PENDING, RUNNING, or a status of a later Ray: still going. The timeout counts
                // from the start of the job's process: a job waiting for resources is not timed
                // (Ray fails a job that waits longer than its RAY_JOB_START_TIMEOUT_SECONDS,
                // 900 s by default), and stopping a pending job does nothing until it starts.
                if status != "PENDING" && f.running_since.is_none() {
                    f.running_since = Some(Instant::now());
                }
                if let (Some(t), Some(since)) = (self.timeout, f.running_since) {
                    if since.elapsed() > t {
                        if let Err(e) = self.head.stop(&id, STOP_TIMEOUT) {
                            tracing::warn!("cannot stop Ray job {id} after its timeout: {e}");
                        }
                        let reason =
                            format!("Ray job {id} timed out after {} s", secs(self.timeout_secs));
                        return self.failed_attempt(i, reason).map(|u| Ok(Some(u)));
                    }
                }
                if status == "RUNNING" && f.polls.is_multiple_of(LOG_EVERY_POLLS) {
                    // Epochs as they come; a log that cannot be read now is read later.
                    if let Ok(Some(logs)) = self.head.logs(&id) {
                        let (epochs, _) = scan_log(&logs, f.log_eval);
                        for e in epochs.iter().skip(f.epochs_sent) {
                            on_epoch(eval, e);
                        }
                        f.epochs_sent = f.epochs_sent.max(epochs.len());
                    }
                }
                Ok(Ok(None))
            }
        }
    }
}

/// Why a submission did not go through.
enum Refused {
    NoAnswer(String),
    NotFound,
    Status(StatusCode, String),
}

/// What an existing submission means for its flight.
enum Found {
    /// It is followed.
    Followed,
    /// The next attempt is to be submitted.
    Next,
    /// Every attempt allowed failed: the failure to report.
    GaveUp(String),
}

impl Flight {
    /// Follows submission `id` from now on.
    fn follow(&mut self, id: String, log_eval: u64) {
        self.id = id;
        self.running_since = None;
        self.placed = Instant::now();
        self.log_eval = log_eval;
        self.epochs_sent = 0;
        self.polls = 0;
        self.reread = false;
    }
}

/// `archsmith-RUN-HASH`, then `-aN` for attempt N >= 2, with anything but ASCII letters,
/// digits, `_` and `-` replaced by `-`.
pub fn submission_id(run_id: &str, hash: &str, attempt: u32) -> String {
    let mut id = format!("archsmith-{run_id}-{hash}");
    if attempt >= 2 {
        id += &format!("-a{attempt}");
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The head's Ray version, checking that it answers as a Ray dashboard does.
fn version(head: &Head) -> Result<String, ExecError> {
    let addr = &head.addr;
    let bad = |m: String| Err(ExecError::Other(m));
    match head.request(Method::GET, "/api/version", None, Duration::from_secs(10)) {
        Err(e) => bad(format!(
            "the Ray head at {addr} does not answer (GET {addr}/api/version: {e}); is the cluster up, and is this its dashboard's address?"
        )),
        Ok(Answer::NotFound) => bad(format!(
            "{addr} answers, but not as a Ray dashboard does (GET /api/version: 404); is it the head's dashboard address (port 8265 by default)?"
        )),
        Ok(Answer::Status(s, body)) => bad(format!(
            "the Ray head at {addr} answered GET /api/version with HTTP {s}: {}",
            excerpt(&body)
        )),
        Ok(Answer::Ok(body)) => {
            let v: Option<Value> = serde_json::from_str(&body).ok();
            match v.as_ref().and_then(|v| v.get("ray_version")).and_then(|v| v.as_str()) {
                Some(r) => Ok(r.to_string()),
                None => bad(format!(
                    "{addr} answers, but not as a Ray dashboard does (GET /api/version gave {})",
                    excerpt(&body)
                )),
            }
        }
    }
}

/// Why a job that ended without a result ended: its status, exit code and Ray's message, and
/// the last lines of its log.
fn failure_reason(head: &Head, id: &str, info: &JobInfo) -> String {
    let mut why = Vec::new();
    if let Some(c) = info.driver_exit_code {
        why.push(format!("exit code {c}"));
    }
    if let Some(t) = info.error_type.as_deref().filter(|t| !t.is_empty()) {
        why.push(t.to_string());
    }
    let mut r = format!("Ray job {id} {}", info.status);
    if !why.is_empty() {
        r += &format!(" ({})", why.join(", "));
    }
    let message = first_line(info.message.as_deref().unwrap_or(""));
    // Ray's message goes on with the log, which is quoted below.
    let message = message
        .split(", last available logs")
        .next()
        .unwrap_or("")
        .trim();
    if !message.is_empty() {
        r += &format!(": {message}");
    }
    if let Ok(Some(logs)) = head.logs(id) {
        let t = log_tail(&logs);
        if !t.is_empty() {
            r += &format!("; last lines: {t}");
        }
    }
    r
}

/// Statuses worth trying again: the head (or a proxy before it) is busy or restarting.
fn transient(s: StatusCode) -> bool {
    matches!(s.as_u16(), 502..=504)
}

/// Waits `d`, returning early on Ctrl-C.
fn pause(d: Duration) -> Result<(), ExecError> {
    let end = Instant::now() + d;
    loop {
        if interrupted() {
            return Err(ExecError::Interrupted);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// What went wrong with a request, in short: `timed out`, `cannot connect (Connection
/// refused ...)`, or the chain of causes.
fn http_error(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    if e.is_timeout() {
        "no answer (timed out)".into()
    } else if e.is_connect() {
        format!("cannot connect ({root})")
    } else {
        error_chain(e)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s += &format!(": {m}");
        }
        src = c.source();
    }
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// At most 300 characters of a reply, on one line.
fn excerpt(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.is_empty() {
        return "(an empty body)".into();
    }
    cut(&one, 300)
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// The last lines of a job's log that the job printed: Ray's own lines (`Runtime env is setting
/// up.`, `Running entrypoint for job ID: ENTRYPOINT`, which holds the whole job) left out.
fn log_tail(log: &str) -> String {
    let own: String = log
        .lines()
        .filter(|l| {
            !(l.starts_with("Running entrypoint for job ") || l.contains("INFO job_manager.py:"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    tail(&own, TAIL_LINES)
}

/// The last `n` non-empty lines of a log, each cut to 200 characters, joined by ` | `.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| cut(l, 200))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Seconds without a fraction when there is none: `30`, `0.5`.
fn secs(s: f64) -> String {
    format!("{s}")
}

fn count(n: f64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1.0 { "" } else { "s" })
}

impl Executor for Ray {
    fn describe(&self) -> String {
        let mut asks = vec![count(self.cpus, "CPU"), count(self.gpus, "GPU")];
        asks.extend(self.resources.iter().map(|(k, v)| format!("{v} {k}")));
        let last = asks.pop().unwrap_or_default();
        let each = format!("{} and {last}", asks.join(", "));
        format!(
            "ray at {} (Ray {}): up to {} jobs at once, {each} each",
            self.head.addr, self.ray_version, self.parallel
        )
    }

    fn slots(&self) -> usize {
        self.parallel
    }

    fn submit(&mut self, mut job: Job) -> Result<String, ExecError> {
        if self.flights.len() >= self.parallel {
            return Err(ExecError::Other(format!(
                "{} Ray jobs are in flight already",
                self.flights.len()
            )));
        }
        job.spec.recipe.threads = self.threads;
        job.spec.device = if self.gpus > 0.0 { "cuda" } else { "cpu" }.into();
        // Weights stay on the cluster: a path of the driver means nothing there.
        job.spec.weights_to = None;
        let body = self.body(&job)?;
        let eval = job.spec.eval;
        let mut f = Flight {
            attempt: job.attempt.max(1),
            job,
            body,
            failures: 0,
            id: String::new(),
            running_since: None,
            placed: Instant::now(),
            log_eval: eval,
            epochs_sent: 0,
            polls: 0,
            reread: false,
            gave_up: None,
        };
        f.gave_up = Ray::place(&mut self.head, &self.run_id, self.retries, &mut f)?;
        let worker = if f.id.is_empty() {
            self.submission_id(&f.job.spec.hash, f.attempt)
        } else {
            f.id.clone()
        };
        self.flights.push(f);
        Ok(worker)
    }

    fn next(&mut self, on_epoch: &mut dyn FnMut(u64, &Epoch)) -> Result<Update, ExecError> {
        if let Some(i) = self.flights.iter().position(|f| f.gave_up.is_some()) {
            let f = self.flights.remove(i);
            return Ok(Update::Done {
                eval: f.job.spec.eval,
                result: job_failed(f.gave_up.unwrap_or_default()),
            });
        }
        loop {
            if interrupted() {
                return Err(ExecError::Interrupted);
            }
            if self.flights.is_empty() {
                return Err(ExecError::Other("no job in flight".into()));
            }
            let mut wait = self.head.poll;
            for i in 0..self.flights.len() {
                match self.poll(i, on_epoch)? {
                    Ok(Some(u)) => {
                        self.head.fine();
                        return Ok(u);
                    }
                    Ok(None) => self.head.fine(),
                    Err(e) => {
                        wait = self.head.trouble(e)?;
                        break;
                    }
                }
            }
            pause(wait)?;
        }
    }

    fn stop_all(&mut self) -> Vec<String> {
        let down = self.head.is_down();
        self.flights
            .drain(..)
            .filter(|f| !f.id.is_empty())
            .map(|f| {
                if down {
                    // A head that does not answer cannot stop anything; jobs that go on are
                    // followed again on resume.
                    return format!("{} (not stopped: the head does not answer)", f.id);
                }
                match self.head.stop(&f.id, STOP_TIMEOUT) {
                    Ok(()) => f.id,
                    Err(e) => format!("{} (could not stop it: {e})", f.id),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(address: Option<&str>) -> ExecutorSettings {
        let mut s = ExecutorSettings::default();
        s.ray.address = address.map(String::from);
        s
    }

    #[test]
    fn submission_ids_name_the_run_and_the_candidate() {
        assert_eq!(
            submission_id("2026-11-26T20:38 my run", "ab12", 1),
            "archsmith-2026-11-26T20-38-my-run-ab12"
        );
        assert_eq!(submission_id("r", "ab12", 2), "archsmith-r-ab12-a2");
    }

    #[test]
    fn the_address_comes_from_the_settings_then_ray_address() {
        let none = |_: &str| None;
        let s = settings(Some("http://h:8265/"));
        assert_eq!(head_address(&s, &none).unwrap(), "http://h:8265");
        let env = |k: &str| (k == "RAY_ADDRESS").then(|| "https://e:1".to_string());
        assert_eq!(head_address(&settings(None), &env).unwrap(), "https://e:1");
        let e = head_address(&settings(None), &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[executor.ray] address")
                && e.contains("--ray-address")
                && e.contains("RAY_ADDRESS"),
            "{e}"
        );
        for bad in ["ray://h:10001", "127.0.0.1:6379", "auto"] {
            let env = |k: &str| (k == "RAY_ADDRESS").then(|| bad.to_string());
            let e = head_address(&settings(None), &env).unwrap_err().to_string();
            assert!(
                e.contains(bad)
                    && e.contains("http://127.0.0.1:8265")
                    && e.contains("Jobs REST API"),
                "{e}"
            );
        }
    }

    #[test]
    fn reasons_quote_the_end_of_a_log_and_the_first_line_of_a_message() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "");
        let log = "2026-11-26 20:38:40,125\tINFO job_manager.py:581 -- Runtime env is setting up.\nstart\nRunning entrypoint for job x: exec archsmith worker --job '{}'\nboom\n";
        assert_eq!(log_tail(log), "start | boom");
        assert_eq!(excerpt("  x \n y "), "x y");
        assert_eq!(excerpt(""), "(an empty body)");
        assert_eq!(secs(30.0), "30");
        assert_eq!(secs(0.5), "0.5");
        assert_eq!(count(1.0, "CPU"), "1 CPU");
        assert_eq!(count(0.0, "GPU"), "0 GPUs");
    }
}
