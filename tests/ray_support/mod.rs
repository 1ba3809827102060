//! A fake Ray head on loopback that speaks the Jobs REST API as Ray 2.60 does (the replies
//! recorded in tests/fixtures/ray on the ray-env branch): it runs each job's entrypoint with
//! `sh -c` as a child process (in its own process group), keeps its stdout and stderr as the
//! job's log, and reports PENDING, RUNNING, then SUCCEEDED, FAILED (a non-zero exit; a process
//! killed by a signal gives the negated signal as its exit code) or STOPPED (stopped through
//! the API).
//!
//! Routes: `GET /api/version`; `POST /api/jobs/` (a duplicate `submission_id` is refused with a
//! traceback mentioning "already exists", HTTP 500 as Ray 2.60 does, or 400 as older versions
//! do); `GET /api/jobs/`; `GET /api/jobs/{id}`; `GET /api/jobs/{id}/logs`;
//! `POST /api/jobs/{id}/stop` (`{"stopped": true|false}`). An unknown id gives 404 with the
//! text `Job {id} does not exist`.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const RAY_VERSION: &str = "2.60.0";

/// A request the head received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Clone, Debug)]
pub struct FakeJob {
    pub submission_id: String,
    pub entrypoint: String,
    pub metadata: Value,
    pub runtime_env: Value,
    pub status: String,
    pub message: String,
    pub error_type: Option<String>,
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub driver_exit_code: Option<i64>,
    /// The process group of the entrypoint's shell, while it runs.
    pub pid: Option<u32>,
    /// Every process the job started (one; kept after it exits).
    pub pids: Vec<u32>,
    pub stop_requested: bool,
    pub logs: Arc<Mutex<String>>,
}

impl FakeJob {
    fn details(&self) -> Value {
        let running = self.status != "PENDING";
        json!({
            "type": "SUBMISSION",
            "job_id": null,
            "submission_id": self.submission_id,
            "driver_info": null,
            "status": self.status,
            "entrypoint": self.entrypoint,
            "message": self.message,
            "error_type": self.error_type,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "metadata": self.metadata,
            "runtime_env": self.runtime_env,
            "driver_agent_http_address": if running { json!("http://127.0.0.1:52365") } else { Value::Null },
            "driver_node_id": if running { json!("cc04b5f7a88722e3295e77c64c14c51f06515c021e4e61d1e4ae3101") } else { Value::Null },
            "driver_exit_code": self.driver_exit_code,
        })
    }

    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED")
    }
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<String, FakeJob>,
    requests: Vec<Request>,
    spawned: usize,
    /// Status of a refused duplicate submission.
    duplicate_status: u16,
    /// How long a job stays PENDING before its process starts.
    pending: Duration,
    /// Answer every GET of a job with this instead of its details.
    garbage: Option<String>,
    /// Take requests but answer none, as a head that hangs.
    hang: bool,
}

pub struct FakeRay {
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FakeRay {
    pub fn start() -> FakeRay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            duplicate_status: 500,
            pending: Duration::from_millis(50),
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let server = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || handle(conn, &st));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener closes here: connections are refused from now on.
        });
        FakeRay {
            addr,
            state,
            stop,
            server: Some(server),
        }
    }

    /// Refuse duplicate submissions with this status (Ray 2.60: 500; older: 400).
    pub fn duplicate_status(&self, s: u16) {
        self.state.lock().unwrap().duplicate_status = s;
    }

    pub fn pending_for(&self, d: Duration) {
        self.state.lock().unwrap().pending = d;
    }

    /// Answer GETs of jobs with a body that is not a job's details (or stop doing so).
    pub fn garbage(&self, body: Option<&str>) {
        self.state.lock().unwrap().garbage = body.map(String::from);
    }

    /// Take requests but answer none (or answer again).
    pub fn hang(&self, on: bool) {
        self.state.lock().unwrap().hang = on;
    }

    /// Processes started so far.
    pub fn spawned(&self) -> usize {
        self.state.lock().unwrap().spawned
    }

    pub fn job(&self, id: &str) -> Option<FakeJob> {
        self.state.lock().unwrap().jobs.get(id).cloned()
    }

    pub fn jobs(&self) -> Vec<FakeJob> {
        self.state.lock().unwrap().jobs.values().cloned().collect()
    }

    pub fn logs(&self, id: &str) -> String {
        self.job(id)
            .map(|j| j.logs.lock().unwrap().clone())
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until job `id` has status `status`.
    pub fn wait_for(&self, id: &str, status: &str, within: Duration) -> FakeJob {
        let t0 = Instant::now();
        loop {
            if let Some(j) = self.job(id) {
                if j.status == status {
                    return j;
                }
            }
            assert!(
                t0.elapsed() < within,
                "job {id} did not become {status} within {within:?}: {:?}",
                self.job(id).map(|j| j.status)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills job `id`'s processes, as the out-of-memory killer would: the job fails.
    pub fn kill(&self, id: &str) {
        if let Some(pid) = self.job(id).and_then(|j| j.pid) {
            kill_group(pid);
        }
    }

    /// Forgets job `id` and kills its processes, as a head that restarted would.
    pub fn forget(&self, id: &str) {
        let job = self.state.lock().unwrap().jobs.remove(id);
        if let Some(p) = job.and_then(|j| j.pid) {
            kill_group(p);
        }
    }

    /// Stops answering (connections are refused from now on) and kills every job's processes.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
        let pids: Vec<u32> = self
            .state
            .lock()
            .unwrap()
            .jobs
            .values()
            .filter_map(|j| j.pid)
            .collect();
        for p in pids {
            kill_group(p);
        }
    }
}

impl Drop for FakeRay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether process `pid` is alive (a zombie is not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Other",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

fn json_reply(conn: &mut TcpStream, status: u16, v: &Value) {
    respond(conn, status, "application/json", &v.to_string());
}

fn text_reply(conn: &mut TcpStream, status: u16, t: &str) {
    respond(conn, status, "text/plain; charset=utf-8", t);
}

fn handle(mut conn: TcpStream, state: &Arc<Mutex<State>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            } else if k == "authorization" {
                authorization = Some(v);
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let body_json: Value = serde_json::from_str(&body_text).unwrap_or(Value::Null);
    state.lock().unwrap().requests.push(Request {
        method: method.clone(),
        path: path.clone(),
        authorization,
        body: body_json.clone(),
    });
    while state.lock().unwrap().hang {
        std::thread::sleep(Duration::from_millis(20));
    }
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "version"]) => json_reply(
            &mut conn,
            200,
            &json!({"version": "4", "ray_version": RAY_VERSION,
                    "ray_commit": "b7f4259e944bf6959f721b106adc366ddfa0c356",
                    "session_name": "session_fake"}),
        ),
        ("POST", ["api", "jobs"]) => submit(&mut conn, state, &body_text, body_json),
        ("GET", ["api", "jobs"]) => {
            let list: Vec<Value> = state
                .lock()
                .unwrap()
                .jobs
                .values()
                .map(|j| j.details())
                .collect();
            json_reply(&mut conn, 200, &Value::Array(list));
        }
        ("GET", ["api", "jobs", id]) => {
            let s = state.lock().unwrap();
            if let Some(g) = &s.garbage {
                let g = g.clone();
                drop(s);
                return respond(&mut conn, 200, "application/json", &g);
            }
            match s.jobs.get(*id) {
                Some(j) => {
                    let d = j.details();
                    drop(s);
                    json_reply(&mut conn, 200, &d)
                }
                None => {
                    drop(s);
                    text_reply(&mut conn, 404, &format!("Job {id} does not exist"))
                }
            }
        }
        ("GET", ["api", "jobs", id, "logs"]) => {
            let logs = state
                .lock()
                .unwrap()
                .jobs
                .get(*id)
                .map(|j| j.logs.lock().unwrap().clone());
            match logs {
                Some(l) => json_reply(&mut conn, 200, &json!({ "logs": l })),
                None => text_reply(&mut conn, 404, &format!("Job {id} does not exist")),
            }
        }
        ("POST", ["api", "jobs", id, "stop"]) => {
            let mut s = state.lock().unwrap();
            let Some(j) = s.jobs.get_mut(*id) else {
                drop(s);
                return text_reply(&mut conn, 404, &format!("Job {id} does not exist"));
            };
            if j.finished() {
                drop(s);
                return json_reply(&mut conn, 200, &json!({"stopped": false}));
            }
            j.stop_requested = true;
            let pid = j.pid;
            drop(s);
            if let Some(p) = pid {
                kill_group(p);
            }
            json_reply(&mut conn, 200, &json!({"stopped": true}));
        }
        _ => text_reply(&mut conn, 404, "404: Not Found"),
    }
}

fn submit(conn: &mut TcpStream, state: &Arc<Mutex<State>>, text: &str, body: Value) {
    let Some(entrypoint) = body.get("entrypoint").and_then(|e| e.as_str()) else {
        let _ = text;
        return text_reply(
            conn,
            500,
            "500 Internal Server Error\n\nServer got itself in trouble",
        );
    };
    let mut s = state.lock().unwrap();
    let id = body
        .get("submission_id")
        .and_then(|i| i.as_str())
        .map(String::from)
        .unwrap_or_else(|| format!("raysubmit_{}", s.jobs.len()));
    if s.jobs.contains_key(&id) {
        let status = s.duplicate_status;
        drop(s);
        return text_reply(
            conn,
            status,
            &format!(
                "Traceback (most recent call last):\n  File \"job_manager.py\", line 553, in submit_job\n    raise ValueError(\nValueError: Job with submission_id {id} already exists. Please use a different submission_id.\n.\n"
            ),
        );
    }
    let env: BTreeMap<String, String> = body
        .pointer("/runtime_env/env_vars")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    let logs = Arc::new(Mutex::new(format!(
        "2026-11-26 20:38:30,515\tINFO job_manager.py:581 -- Runtime env is setting up.\nRunning entrypoint for job {id}: {entrypoint}\n"
    )));
    let job = FakeJob {
        submission_id: id.clone(),
        entrypoint: entrypoint.to_string(),
        metadata: body.get("metadata").cloned().unwrap_or(Value::Null),
        runtime_env: body.get("runtime_env").cloned().unwrap_or(Value::Null),
        status: "PENDING".into(),
        message: "Job has not started yet.".into(),
        error_type: None,
        start_time: now_ms(),
        end_time: None,
        driver_exit_code: None,
        pid: None,
        pids: Vec::new(),
        stop_requested: false,
        logs: logs.clone(),
    };
    s.jobs.insert(id.clone(), job);
    let pending = s.pending;
    drop(s);
    let (st, jid, ep) = (state.clone(), id.clone(), entrypoint.to_string());
    std::thread::spawn(move || supervise(&st, &jid, &ep, env, logs, pending));
    json_reply(conn, 200, &json!({"job_id": id, "submission_id": id}));
}

/// Runs a job's entrypoint and records how it ends.
fn supervise(
    state: &Arc<Mutex<State>>,
    id: &str,
    entrypoint: &str,
    env: BTreeMap<String, String>,
    logs: Arc<Mutex<String>>,
    pending: Duration,
) {
    std::thread::sleep(pending);
    let set = |f: &dyn Fn(&mut FakeJob)| {
        if let Some(j) = state.lock().unwrap().jobs.get_mut(id) {
            f(j)
        }
    };
    let stopped_before = state
        .lock()
        .unwrap()
        .jobs
        .get(id)
        .is_some_and(|j| j.stop_requested);
    if stopped_before {
        return set(&|j| {
            j.status = "STOPPED".into();
            j.message = "Job was intentionally stopped.".into();
            j.end_time = Some(now_ms());
        });
    }
    let child = Command::new("sh")
        .args(["-c", entrypoint])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return set(&|j| {
                j.status = "FAILED".into();
                j.message = format!("cannot start the entrypoint: {e}");
            })
        }
    };
    let pid = child.id();
    {
        let mut s = state.lock().unwrap();
        s.spawned += 1;
        if let Some(j) = s.jobs.get_mut(id) {
            j.status = "RUNNING".into();
            j.message = "Job is currently running.".into();
            j.pid = Some(pid);
            j.pids.push(pid);
        }
    }
    let readers: Vec<JoinHandle<()>> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    })
    .collect();
    let status = child.wait();
    for r in readers {
        let _ = r.join();
    }
    let code: i64 = match &status {
        Ok(s) => s
            .code()
            .map(i64::from)
            .or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                s.signal().map(|g| -i64::from(g))
            })
            .unwrap_or(-1),
        Err(_) => -1,
    };
    let tail = logs.lock().unwrap().clone();
    set(&|j| {
        j.pid = None;
        j.end_time = Some(now_ms());
        if j.stop_requested {
            j.status = "STOPPED".into();
            j.message = "Job was intentionally stopped.".into();
        } else if code == 0 {
            j.status = "SUCCEEDED".into();
            j.message = "Job finished successfully.".into();
            j.driver_exit_code = Some(0);
        } else {
            j.status = "FAILED".into();
            j.message = format!(
                "Job entrypoint command failed with exit code {code}, last available logs (truncated to 20,000 chars):\n{tail}"
            );
            j.error_type = Some("JOB_ENTRYPOINT_COMMAND_ERROR".into());
            j.driver_exit_code = Some(code);
        }
    });
}
