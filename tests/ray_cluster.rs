//! The `ray` executor against a real Ray head (CI starts one on 127.0.0.1 with
//! `scripts/ray-head.sh` and sets `ARCHSMITH_RAY_ADDRESS`; without it this test says so and
//! passes, unless `ARCHSMITH_RAY_REQUIRED=1`, as in CI, makes a missing head a failure).
//!
//! A short search runs with the `ray` executor while one of its jobs is killed mid-way (its
//! worker process gets SIGKILL, so Ray reports the job FAILED); the executor submits it again
//! and the run completes. Its journal then equals, candidate for candidate, the journal of the
//! same search with the `local` executor: same candidates, same scores.

mod common;

use common::{finished, journal, BIN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn address() -> Option<String> {
    match std::env::var("ARCHSMITH_RAY_ADDRESS") {
        Ok(a) if !a.is_empty() => Some(a),
        _ => {
            assert!(
                std::env::var("ARCHSMITH_RAY_REQUIRED").as_deref() != Ok("1"),
                "ARCHSMITH_RAY_REQUIRED=1 but ARCHSMITH_RAY_ADDRESS is not set"
            );
            eprintln!(
                "skipped: no Ray head (set ARCHSMITH_RAY_ADDRESS, e.g. from scripts/ray-head.sh start)"
            );
            None
        }
    }
}

fn run(out: &Path, executor: &str) -> PathBuf {
    let extra = format!("retries = 2\ncommand = \"{BIN}\"\n{executor}");
    common::run_config(out, &common::tiny_search(out, 5, 5, 2, 512, &extra))
}

/// Pids of `archsmith worker --job` processes (what Ray jobs run; the driver binary hands the
/// command to `archsmith-torch`, which then holds the pid).
fn job_workers() -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_worker = args
            .first()
            .is_some_and(|a| a.ends_with(b"archsmith") || a.ends_with(b"archsmith-torch"))
            && args.iter().any(|a| *a == b"worker")
            && args.iter().any(|a| *a == b"--job");
        if is_worker {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_ray_run_survives_a_killed_job_and_equals_the_local_run() {
    let Some(addr) = address() else { return };
    let tmp = tempfile::tempdir().unwrap();

    // Kill the first job's worker once it has trained a little.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, killed) = (stop.clone(), killed.clone());
        std::thread::spawn(move || {
            let mut seen: Option<(u32, Instant)> = None;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                let pids = job_workers();
                match seen {
                    Some((pid, since)) if pids.contains(&pid) => {
                        if since.elapsed() > Duration::from_millis(400) {
                            let _ = std::process::Command::new("kill")
                                .args(["-KILL", &pid.to_string()])
                                .status();
                            killed.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                    _ => seen = pids.first().map(|&p| (p, Instant::now())),
                }
            }
        })
    };
    let ray_dir = run(
        &tmp.path().join("ray"),
        &format!("kind = \"ray\"\n[executor.ray]\naddress = \"{addr}\"\ncpus = 1\npoll_ms = 100"),
    );
    stop.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    assert!(killed.load(Ordering::SeqCst), "no job was caught running");

    let ev = journal(&ray_dir);
    let retries: Vec<&Value> = ev.iter().filter(|e| e["type"] == "retry").collect();
    assert_eq!(retries.len(), 1, "{retries:?}");
    let started: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "train_started")
        .map(|e| e["data"]["worker"].as_str().unwrap())
        .collect();
    assert!(
        started.iter().all(|w| w.starts_with("archsmith-")),
        "{started:?}"
    );
    let ray = finished(&ev);
    assert_eq!(ray.len(), 5);
    assert!(
        ev.iter()
            .filter(|e| e["type"] == "train_finished")
            .all(|e| e["data"]["failure"].is_null()),
        "every candidate trained"
    );

    let local_dir = run(&tmp.path().join("local"), "kind = \"local\"");
    let local = finished(&journal(&local_dir));
    assert_eq!(ray, local, "the ray run and the local run part ways");
}
