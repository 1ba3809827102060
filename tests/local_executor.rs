//! The local executor as a user runs it: `archsmith run --parallel N` trains candidates in
//! worker processes on a tiny task; a worker that dies mid-job is replaced and the job
//! retried; a job that overruns its timeout is given up with the reason; Ctrl-C stops the
//! workers and records the session's end, and `resume` finishes the run; `archsmith worker`
//! answers bad jobs with a clear failure.

mod common;

use assert_cmd::Command;
use common::{journal as events, of_type, run_dir, wrapper, BIN};
use std::path::Path;
use std::time::{Duration, Instant};

/// A tiny search of `evals` evaluations, two at a time in local workers, two epochs.
fn toml(out: &Path, evals: u64, executor: &str) -> String {
    common::tiny_search(
        out,
        11,
        evals,
        2,
        64,
        &format!("kind = \"local\"\n{executor}"),
    )
}

#[test]
fn parallel_workers_train_and_keep_the_best_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("x.toml");
    std::fs::write(&cfg, toml(tmp.path(), 5, "")).unwrap();
    Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .assert()
        .success();
    let dir = run_dir(tmp.path());
    let ev = events(&dir);
    let started = of_type(&ev, "train_started");
    let finished = of_type(&ev, "train_finished");
    assert_eq!(finished.len(), 5);
    let workers: std::collections::BTreeSet<String> = started
        .iter()
        .map(|s| s["worker"].as_str().unwrap().to_string())
        .collect();
    assert!(
        workers
            .iter()
            .any(|w| w.starts_with("local:0 (cpu, 1 threads)"))
            && workers.iter().any(|w| w.starts_with("local:1")),
        "{workers:?}"
    );
    for f in &finished {
        assert!(f["failure"].is_null(), "{f}");
        assert!(f["score"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s)));
        assert_eq!(f["epochs"], 2);
    }
    // Epoch lines came back from the workers.
    assert_eq!(of_type(&ev, "epoch").len(), 10);
    // The best's weights were saved by its worker and kept; no other weights are left.
    assert!(dir.join("best.ot").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".eval-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(dir.join("workers/local-0.log").is_file());
    let start = of_type(&ev, "run_started");
    assert!(start[0]["message"]
        .as_str()
        .unwrap()
        .contains("local: 2 worker processes"));
}

#[test]
fn a_worker_that_dies_is_replaced_and_its_job_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("died");
    // The first worker takes a job and dies without answering; later ones work (mkdir is
    // atomic, so only one of the two workers starting together dies).
    let w = wrapper(
        tmp.path(),
        "flaky.sh",
        &format!(
            "if mkdir '{m}' 2>/dev/null; then read job; exit 3; fi\nexec \"$BIN\" worker --serve",
            m = marker.display()
        ),
    );
    let cfg = tmp.path().join("x.toml");
    std::fs::write(
        &cfg,
        toml(tmp.path(), 3, &format!("command = \"{w}\"\nretries = 1")),
    )
    .unwrap();
    Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .assert()
        .success();
    let ev = events(&run_dir(tmp.path()));
    let retries = of_type(&ev, "retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    let reason = retries[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("exited") && reason.contains("during training"),
        "{reason}"
    );
    assert_eq!(retries[0]["attempt"], 2);
    let finished = of_type(&ev, "train_finished");
    assert_eq!(finished.len(), 3);
    assert!(
        finished.iter().all(|f| f["failure"].is_null()),
        "{finished:?}"
    );
}

#[test]
fn a_job_past_its_timeout_is_given_up_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // A worker that takes jobs and never answers (its stdout stays open).
    let w = wrapper(tmp.path(), "stuck.sh", "exec sleep 1000");
    let cfg = tmp.path().join("x.toml");
    std::fs::write(
        &cfg,
        toml(
            tmp.path(),
            2,
            &format!("command = \"{w}\"\nretries = 1\ntimeout_secs = 0.5"),
        ),
    )
    .unwrap();
    Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .assert()
        .success();
    let ev = events(&run_dir(tmp.path()));
    let finished = of_type(&ev, "train_finished");
    assert_eq!(finished.len(), 2);
    for f in finished {
        assert_eq!(f["failure"]["reason"], "worker");
        let m = f["failure"]["message"].as_str().unwrap();
        assert!(
            m.contains("timed out after") && m.contains("gave up after 2 attempts"),
            "{m}"
        );
    }
    assert_eq!(of_type(&ev, "retry").len(), 2);
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn ctrl_c_stops_the_workers_and_resume_finishes_the_run() {
    interrupt_stops_the_workers_and_resume_finishes_the_run("-INT");
}

/// A SIGTERM (a scheduler's, or `kill`'s default) stops a run as Ctrl-C does, instead of
/// killing the driver and leaving its workers running.
#[test]
fn sigterm_stops_the_workers_as_ctrl_c_does() {
    interrupt_stops_the_workers_and_resume_finishes_the_run("-TERM");
}

fn interrupt_stops_the_workers_and_resume_finishes_the_run(signal: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    // Workers note their pid, then train slowly enough to be caught mid-job.
    let w = wrapper(
        tmp.path(),
        "noted.sh",
        &format!(
            "echo $$ >> '{}'\nexec \"$BIN\" worker --serve",
            pids.display()
        ),
    );
    let cfg = tmp.path().join("x.toml");
    let text = toml(tmp.path(), 4, &format!("command = \"{w}\""))
        .replace("train_size = 64", "train_size = 2048");
    std::fs::write(&cfg, text).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let dir = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no training started"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Ok(rd) = std::fs::read_dir(tmp.path()) else {
            continue;
        };
        let d = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.join("journal.jsonl").is_file());
        if let Some(d) = d {
            if of_type(&events(&d), "train_started").len() >= 2 {
                break d;
            }
        }
    };
    std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("archsmith resume"), "{err}");
    let ev = events(&dir);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["data"]["status"], "interrupted");
    // Whatever was in flight when Ctrl-C came (the slots refill as jobs end, so something
    // is) was stopped, and the reason says how many.
    let unfinished = of_type(&ev, "train_started").len() - of_type(&ev, "train_finished").len();
    assert!(unfinished >= 1);
    let reason = last["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("stopped {unfinished} evaluation(s) in flight")),
        "{reason}"
    );
    let pids = std::fs::read_to_string(&pids).unwrap();
    for pid in pids.split_whitespace() {
        assert!(!alive(pid), "worker {pid} still runs");
    }
    // Resume redoes what was in flight under the same numbers and finishes the budget.
    Command::new(BIN)
        .args(["resume", dir.to_str().unwrap()])
        .assert()
        .success();
    let ev = events(&dir);
    let mut evals: Vec<u64> = of_type(&ev, "train_finished")
        .iter()
        .map(|f| f["eval"].as_u64().unwrap())
        .collect();
    evals.sort();
    assert_eq!(evals, vec![0, 1, 2, 3]);
    assert_eq!(ev.last().unwrap()["data"]["status"], "completed");
}

#[test]
fn the_worker_answers_bad_jobs_with_a_clear_failure() {
    // Not JSON at all: a clear error and a non-zero exit.
    let out = Command::new(BIN)
        .args(["worker", "--job", "{not json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid job description"));
    // A job whose candidate does not validate: a result line with a worker failure.
    let job = serde_json::json!({
        "protocol": 1, "eval": 4, "hash": "0", "candidate": "linear(",
        "space": "mlp", "grammar": archsmith::space::Space::load("mlp").unwrap().grammar.source,
        "limits": {"max_params": 1000, "max_flops": 100000, "max_activation_bytes": 100000},
        "task": {"name": "teacher"}, "recipe": {}, "seed": 0, "device": "cpu", "program": {}
    });
    let out = Command::new(BIN)
        .args(["worker", "--job", &job.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    match archsmith::exec::parse_line(last) {
        archsmith::exec::WorkerLine::Result(4, r) => {
            let f = r.failure.unwrap();
            assert!(f.message.contains("does not parse"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    // --serve: a bad line and a good one, answered in order.
    let mut spec = job.clone();
    spec["candidate"] = "linear(8)".into();
    let mut cmd = Command::new(BIN);
    cmd.args(["worker", "--serve"])
        .write_stdin(format!("garbage\n{spec}\n"));
    let out = cmd.output().unwrap();
    let results: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(archsmith::exec::parse_line)
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        matches!(&results[1], archsmith::exec::WorkerLine::Result(4, r)
        if r.failure.as_ref().unwrap().message.contains("hashes to"))
    );
}
