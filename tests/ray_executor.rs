//! The Ray executor against a fake Ray head on loopback (tests/ray_support) that runs each
//! job's entrypoint, the real `archsmith worker --job`, as a child process: jobs train and give
//! what the worker gives when run directly; failed, lost and overdue jobs are retried under new
//! submission ids; a resubmitted candidate whose job exists is followed, not trained again; a
//! head that goes away pauses the run; stop_all stops jobs; bad addresses give clear errors;
//! and a whole run on Ray matches the same run on local workers.

mod common;
mod ray_support;

use archsmith::exec::ray::{submission_id, Ray};
use archsmith::exec::{
    ExecError, Executor, ExecutorKind, ExecutorSettings, Job, JobSpec, RaySettings, TaskSpec,
    Update, PROTOCOL,
};
use archsmith::space::{parse_one, CheckOptions, Limits, Space};
use archsmith::train::Epoch;
use archsmith::train::Evaluation;
use assert_cmd::Command;
use common::{finished, journal, wrapper, BIN};
use ray_support::{alive, FakeRay};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const C1: &str = "seq(seq(linear(32), relu), seq(linear(32), relu))";
const C2: &str = "seq(seq(linear(64), tanh), seq(linear(32), relu))";
const LONG: Duration = Duration::from_secs(60);

fn no_env(_: &str) -> Option<String> {
    None
}

/// A job for candidate `text` of the mlp space on a tiny teacher task, two epochs.
fn job(eval: u64, text: &str) -> Job {
    let space = Space::load("mlp").unwrap();
    let sizes = (64, 32, 16);
    let task = archsmith::run::config::task_from("teacher", Some(sizes)).unwrap();
    let node = parse_one(text).unwrap().node;
    let limits = Limits {
        max_params: 100_000,
        max_flops: 10_000_000,
        max_activation_bytes: 1 << 20,
    };
    let opts = CheckOptions {
        limits,
        classes: task.classes,
        infos: false,
        head: Default::default(),
    };
    let analysis = space
        .check(&node, None, task.input.unwrap(), &opts)
        .unwrap();
    let mut recipe = task.recipe.clone();
    recipe.epochs = 2;
    recipe.batch_size = 32;
    let spec = JobSpec {
        protocol: PROTOCOL,
        eval,
        hash: node.hash_hex(),
        candidate: node.to_string(),
        space: "mlp".into(),
        grammar: space.grammar.source.clone(),
        limits,
        task: TaskSpec {
            name: "teacher".into(),
            sizes: Some(sizes),
        },
        recipe,
        seed: 5,
        device: "auto".into(),
        program: archsmith::train::program::program_eval(5),
        rungs: Vec::new(),
        weights_to: None,
    };
    Job {
        spec,
        node,
        analysis,
        attempt: 1,
    }
}

fn settings(addr: &str, command: &str, retries: u32) -> ExecutorSettings {
    ExecutorSettings {
        kind: ExecutorKind::Ray,
        retries,
        command: Some(command.into()),
        ray: RaySettings {
            address: Some(addr.into()),
            poll_ms: 20,
            unreachable_secs: 1.0,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn ray(s: &ExecutorSettings, parallel: usize, run: &str) -> Box<dyn Executor> {
    Ray::new(s, parallel, run, &no_env).unwrap_or_else(|e| panic!("{e}"))
}

/// Updates until `n` evaluations are done, and the epochs passed on meanwhile.
fn drain(ex: &mut dyn Executor, n: usize) -> (Vec<Update>, Vec<(u64, Epoch)>) {
    let mut updates = Vec::new();
    let mut epochs = Vec::new();
    let mut done = 0;
    while done < n {
        let u = ex
            .next(&mut |e, ep| epochs.push((e, ep.clone())))
            .unwrap_or_else(|e| panic!("next: {e}"));
        if matches!(u, Update::Done { .. }) {
            done += 1;
        }
        updates.push(u);
    }
    (updates, epochs)
}

fn done(updates: &[Update], eval: u64) -> &Evaluation {
    updates
        .iter()
        .find_map(|u| match u {
            Update::Done { eval: e, result } if *e == eval => Some(result),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no result for evaluation {eval}: {updates:?}"))
}

fn retries(updates: &[Update]) -> Vec<(u32, String, String)> {
    updates
        .iter()
        .filter_map(|u| match u {
            Update::Retry {
                attempt,
                reason,
                worker,
                ..
            } => Some((*attempt, reason.clone(), worker.clone())),
            _ => None,
        })
        .collect()
}

/// What `archsmith worker --job` gives for `spec`, run directly.
fn direct(spec: &JobSpec) -> Evaluation {
    let out = Command::new(BIN)
        .args(["worker", "--job", &serde_json::to_string(spec).unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    archsmith::exec::scan_log(&String::from_utf8_lossy(&out.stdout), spec.eval)
        .1
        .expect("a result line")
}

/// The same training: score, sizes and curve (times aside).
fn assert_same(a: &Evaluation, b: &Evaluation) {
    assert_eq!(a.score, b.score);
    assert_eq!(a.failure, b.failure);
    assert_eq!(
        (a.params, a.flops, a.stopped_early),
        (b.params, b.flops, b.stopped_early)
    );
    let strip = |c: &[Epoch]| -> Vec<Epoch> {
        c.iter()
            .map(|e| Epoch {
                seconds: 0.0,
                ..e.clone()
            })
            .collect()
    };
    assert_eq!(strip(&a.curve), strip(&b.curve));
}

/// The job JSON in a submission's entrypoint.
fn entrypoint_spec(body: &Value) -> JobSpec {
    let words = shlex::split(body["entrypoint"].as_str().unwrap()).unwrap();
    assert_eq!(words[0], "exec");
    assert_eq!(words[2..4], ["worker", "--job"]);
    serde_json::from_str(&words[4]).unwrap()
}

#[test]
fn jobs_run_on_ray_and_give_what_the_worker_gives() {
    let fake = FakeRay::start();
    let s = settings(&fake.addr, BIN, 1);
    let mut ex = ray(&s, 2, "2026-11-26T20:00:00-run");
    assert_eq!(
        ex.describe(),
        format!(
            "ray at {} (Ray 2.60.0): up to 2 jobs at once, 1 CPU and 0 GPUs each",
            fake.addr
        )
    );
    assert_eq!(ex.slots(), 2);
    let (a, b) = (job(0, C1), job(1, C2));
    let ida = ex.submit(a.clone()).unwrap();
    assert_eq!(
        ida,
        format!("archsmith-2026-11-26T20-00-00-run-{}", a.spec.hash)
    );
    let idb = ex.submit(b.clone()).unwrap();
    assert_eq!(
        idb,
        submission_id("2026-11-26T20:00:00-run", &b.spec.hash, 1)
    );
    let (updates, epochs) = drain(ex.as_mut(), 2);
    assert!(retries(&updates).is_empty(), "{updates:?}");
    for (j, id) in [(&a, &ida), (&b, &idb)] {
        let got = done(&updates, j.spec.eval);
        assert!(got.failure.is_none() && got.score.is_some(), "{got:?}");
        let mut spec = j.spec.clone();
        spec.recipe.threads = 1;
        spec.device = "cpu".into();
        assert_same(got, &direct(&spec));
        // Every epoch passed on once, in order.
        let mine: Vec<&Epoch> = epochs
            .iter()
            .filter(|(e, _)| *e == j.spec.eval)
            .map(|(_, ep)| ep)
            .collect();
        assert_eq!(mine, got.curve.iter().collect::<Vec<_>>());
        assert_eq!(fake.job(id).unwrap().status, "SUCCEEDED");
    }
    assert_eq!(fake.spawned(), 2);
    // What was submitted: the job as the worker should run it, the resources, the metadata,
    // and no empty runtime_env or resources.
    let posts: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/jobs/")
        .map(|r| r.body)
        .collect();
    assert_eq!(posts.len(), 2);
    let p = &posts[0];
    assert_eq!(p["submission_id"], ida.as_str());
    assert_eq!(p["entrypoint_num_cpus"], 1.0);
    assert_eq!(p["entrypoint_num_gpus"], 0.0);
    assert_eq!(p["metadata"]["archsmith_run"], "2026-11-26T20:00:00-run");
    assert_eq!(p["metadata"]["eval"], "0");
    assert_eq!(p["metadata"]["hash"], a.spec.hash.as_str());
    assert!(
        p.get("runtime_env").is_none() && p.get("entrypoint_resources").is_none(),
        "{p}"
    );
    let sent = entrypoint_spec(p);
    assert_eq!((sent.recipe.threads, sent.device.as_str()), (1, "cpu"));
    assert!(fake.requests().iter().all(|r| r.authorization.is_none()));
}

#[test]
fn resources_environment_and_token_go_with_each_job() {
    let fake = FakeRay::start();
    let mut s = settings(&fake.addr, BIN, 0);
    s.ray.cpus = 2.0;
    s.ray.gpus = 1.0;
    s.ray.resources.insert("trainer".into(), 1.0);
    s.ray.env.insert("ARCHSMITH_TEST".into(), "yes".into());
    s.ray.token_env = Some("MY_RAY_TOKEN".into());
    let lookup = |k: &str| (k == "MY_RAY_TOKEN").then(|| "sekrit".to_string());
    let mut ex = Ray::new(&s, 3, "r", &lookup).unwrap();
    assert_eq!(
        ex.describe(),
        format!(
            "ray at {} (Ray 2.60.0): up to 3 jobs at once, 2 CPUs, 1 GPU and 1 trainer each",
            fake.addr
        )
    );
    let id = ex.submit(job(0, C1)).unwrap();
    assert_eq!(ex.stop_all(), vec![id]);
    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer sekrit")),
        "{reqs:?}"
    );
    let p = &reqs.iter().find(|r| r.method == "POST").unwrap().body;
    assert_eq!(p["entrypoint_num_cpus"], 2.0);
    assert_eq!(p["entrypoint_num_gpus"], 1.0);
    assert_eq!(
        p["entrypoint_resources"],
        serde_json::json!({"trainer": 1.0})
    );
    assert_eq!(
        p["runtime_env"],
        serde_json::json!({"env_vars": {"ARCHSMITH_TEST": "yes"}})
    );
    let sent = entrypoint_spec(p);
    assert_eq!((sent.recipe.threads, sent.device.as_str()), (2, "cuda"));
    assert_eq!(sent.weights_to, None);
    // [executor] threads wins over the CPUs asked for.
    s.threads = 3;
    let mut ex = Ray::new(&s, 1, "r2", &lookup).unwrap();
    ex.submit(job(0, C1)).unwrap();
    ex.stop_all();
    let p = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/jobs/")
        .nth(1)
        .unwrap()
        .body;
    assert_eq!(entrypoint_spec(&p).recipe.threads, 3);
}

#[test]
fn failed_and_lost_jobs_are_retried_under_new_ids_then_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRay::start();
    // The first attempt is killed mid-way; the second trains.
    let marker = tmp.path().join("first");
    let w = wrapper(
        tmp.path(),
        "flaky.sh",
        &format!(
            "if mkdir '{}' 2>/dev/null; then echo first attempt; sleep 30; fi\nexec \"$BIN\" \"$@\"",
            marker.display()
        ),
    );
    let mut ex = ray(&settings(&fake.addr, &w, 1), 1, "run");
    let j = job(3, C1);
    let id1 = ex.submit(j.clone()).unwrap();
    fake.wait_for(&id1, "RUNNING", LONG);
    std::thread::sleep(Duration::from_millis(200));
    fake.kill(&id1);
    let (updates, _) = drain(ex.as_mut(), 1);
    let r = retries(&updates);
    assert_eq!(r.len(), 1, "{updates:?}");
    let (attempt, reason, worker) = &r[0];
    assert_eq!(*attempt, 2);
    assert_eq!(worker, &format!("{id1}-a2"));
    assert!(
        reason.contains(&id1) && reason.contains("FAILED") && reason.contains("exit code -9"),
        "{reason}"
    );
    assert!(
        reason.contains("last lines: ") && reason.contains("first attempt"),
        "{reason}"
    );
    let got = done(&updates, 3);
    assert!(got.failure.is_none(), "{got:?}");
    assert_eq!(fake.job(&id1).unwrap().status, "FAILED");
    assert_eq!(fake.job(worker).unwrap().status, "SUCCEEDED");

    // A job the head forgets (a restarted head) is lost: retried too.
    let slow = wrapper(tmp.path(), "slow.sh", "sleep 1\nexec \"$BIN\" \"$@\"");
    let mut ex = ray(&settings(&fake.addr, &slow, 1), 1, "lost");
    let id = ex.submit(job(0, C2)).unwrap();
    fake.wait_for(&id, "RUNNING", LONG);
    fake.forget(&id);
    let (updates, _) = drain(ex.as_mut(), 1);
    let r = retries(&updates);
    assert_eq!(r.len(), 1, "{updates:?}");
    assert!(
        r[0].1.contains("Ray lost job") && r[0].1.contains(&id),
        "{}",
        r[0].1
    );
    assert!(done(&updates, 0).score.is_some());

    // With no retries, a failing job is recorded as failed with the reason.
    let bad = wrapper(tmp.path(), "bad.sh", "echo cannot import torch >&2\nexit 1");
    let mut ex = ray(&settings(&fake.addr, &bad, 0), 1, "bad");
    let id = ex.submit(job(7, C1)).unwrap();
    let (updates, _) = drain(ex.as_mut(), 1);
    assert!(retries(&updates).is_empty());
    let f = done(&updates, 7).failure.clone().expect("a failure");
    assert_eq!(f.reason, archsmith::train::FailureReason::Worker);
    assert!(
        f.message.contains(&id)
            && f.message.contains("exit code 1")
            && f.message.contains("cannot import torch")
            && f.message.contains("gave up after 1 attempts"),
        "{}",
        f.message
    );
    // A job that succeeds without a result line is a failed attempt.
    let quiet = wrapper(tmp.path(), "quiet.sh", "echo all fine");
    let mut ex = ray(&settings(&fake.addr, &quiet, 0), 1, "quiet");
    ex.submit(job(8, C1)).unwrap();
    let (updates, _) = drain(ex.as_mut(), 1);
    let m = done(&updates, 8).failure.clone().unwrap().message;
    assert!(
        m.contains("the job's log has no result line; last lines: ") && m.contains("all fine"),
        "{m}"
    );
}

#[test]
fn a_resubmitted_candidate_whose_job_exists_is_not_trained_again() {
    let tmp = tempfile::tempdir().unwrap();
    // A finished job: its log gives the result (Ray 2.60 refuses the duplicate id with a 500,
    // older versions with a 400).
    for dup in [500, 400] {
        let fake = FakeRay::start();
        fake.duplicate_status(dup);
        let s = settings(&fake.addr, BIN, 1);
        let mut first = ray(&s, 1, "run");
        let id = first.submit(job(0, C1)).unwrap();
        let (u1, _) = drain(first.as_mut(), 1);
        drop(first);
        // The driver crashed and resumes: the same candidate comes again.
        let mut second = ray(&s, 1, "run");
        assert_eq!(second.submit(job(0, C1)).unwrap(), id);
        let (u2, epochs) = drain(second.as_mut(), 1);
        assert_eq!(fake.spawned(), 1, "trained twice");
        assert_eq!(done(&u1, 0), done(&u2, 0));
        assert_eq!(epochs.len(), 2, "the epochs come from the job's log");
        assert!(retries(&u2).is_empty());
    }
    let fake = FakeRay::start();
    // A running job is followed.
    let slow = wrapper(tmp.path(), "slow.sh", "sleep 1\nexec \"$BIN\" \"$@\"");
    let s = settings(&fake.addr, &slow, 1);
    let id = ray(&s, 1, "run").submit(job(0, C1)).unwrap();
    fake.wait_for(&id, "RUNNING", LONG);
    let mut again = ray(&s, 1, "run");
    assert_eq!(again.submit(job(0, C1)).unwrap(), id);
    let (u, _) = drain(again.as_mut(), 1);
    assert!(done(&u, 0).score.is_some());
    assert_eq!(fake.spawned(), 1);

    // A failed one counts as a failed attempt: the next attempt is submitted...
    let marker = tmp.path().join("first");
    let flaky = wrapper(
        tmp.path(),
        "flaky.sh",
        &format!(
            "if mkdir '{}' 2>/dev/null; then exit 1; fi\nexec \"$BIN\" \"$@\"",
            marker.display()
        ),
    );
    let s = settings(&fake.addr, &flaky, 1);
    let id = ray(&s, 1, "run").submit(job(1, C2)).unwrap();
    fake.wait_for(&id, "FAILED", LONG);
    let mut again = ray(&s, 1, "run");
    assert_eq!(again.submit(job(1, C2)).unwrap(), format!("{id}-a2"));
    let (u, _) = drain(again.as_mut(), 1);
    assert!(done(&u, 1).score.is_some());
    assert_eq!(fake.spawned(), 3);
    // A later session allowing fewer retries still follows the attempt that exists.
    let mut again = ray(&settings(&fake.addr, &flaky, 0), 1, "run");
    assert_eq!(again.submit(job(1, C2)).unwrap(), format!("{id}-a2"));
    let (u, _) = drain(again.as_mut(), 1);
    assert!(done(&u, 1).score.is_some());
    assert_eq!(fake.spawned(), 3);
    // A failed attempt that was the last one allowed is not submitted again.
    let bad = wrapper(tmp.path(), "bad.sh", "exit 1");
    let s = settings(&fake.addr, &bad, 0);
    let id = ray(&s, 1, "bad").submit(job(4, C1)).unwrap();
    fake.wait_for(&id, "FAILED", LONG);
    let mut again = ray(&s, 1, "bad");
    assert_eq!(again.submit(job(4, C1)).unwrap(), id);
    let (u, _) = drain(again.as_mut(), 1);
    let m = done(&u, 4).failure.clone().unwrap().message;
    assert!(
        m.contains("exit code 1") && m.contains("gave up after 1 attempts"),
        "{m}"
    );
    assert_eq!(fake.spawned(), 4);

    // A job stopped by an interrupted run does not count against the retries.
    let s = settings(&fake.addr, &slow, 0);
    let mut first = ray(&s, 1, "stopped");
    let id = first.submit(job(2, C1)).unwrap();
    fake.wait_for(&id, "RUNNING", LONG);
    assert_eq!(first.stop_all(), vec![id.clone()]);
    fake.wait_for(&id, "STOPPED", LONG);
    let mut again = ray(&s, 1, "stopped");
    assert_eq!(again.submit(job(2, C1)).unwrap(), format!("{id}-a2"));
    let (u, _) = drain(again.as_mut(), 1);
    assert!(done(&u, 2).score.is_some(), "{u:?}");
}

#[test]
fn a_head_that_goes_away_pauses_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = wrapper(tmp.path(), "slow.sh", "sleep 30\nexec \"$BIN\" \"$@\"");
    let mut fake = FakeRay::start();
    let addr = fake.addr.clone();
    let mut ex = ray(&settings(&addr, &slow, 1), 1, "run");
    let id = ex.submit(job(0, C1)).unwrap();
    let pid = fake.wait_for(&id, "RUNNING", LONG).pid.unwrap();
    // Polls see it running, then the head goes.
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fake.shutdown();
        fake
    });
    let t0 = Instant::now();
    let e = ex.next(&mut |_, _| {}).unwrap_err();
    let took = t0.elapsed();
    let _fake = stopper.join().unwrap();
    let ExecError::Unavailable(m) = e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains(&format!("the Ray head at {addr} has not answered for 1 s"))
            && m.contains("last error: GET /api/jobs/"),
        "{m}"
    );
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Nothing can be stopped through a head that is gone; resume follows what goes on.
    let stopped = ex.stop_all();
    assert_eq!(
        stopped,
        vec![format!("{id} (not stopped: the head does not answer)")]
    );
    assert!(!alive(pid));

    // A head that takes requests but answers none pauses the run as soon.
    let fake = FakeRay::start();
    let mut ex = ray(&settings(&fake.addr, &slow, 1), 1, "run");
    ex.submit(job(0, C1)).unwrap();
    fake.hang(true);
    let t0 = Instant::now();
    let e = ex.next(&mut |_, _| {}).unwrap_err();
    let took = t0.elapsed();
    fake.hang(false);
    let ExecError::Unavailable(m) = e else {
        panic!("{e:?}")
    };
    assert!(m.contains("no answer (timed out)"), "{m}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // A head that answers with something that is not a job's details pauses the run too.
    let fake = FakeRay::start();
    let mut ex = ray(&settings(&fake.addr, &slow, 1), 1, "run");
    ex.submit(job(0, C1)).unwrap();
    fake.garbage(Some("<html>proxy error</html>"));
    let e = ex.next(&mut |_, _| {}).unwrap_err();
    let ExecError::Unavailable(m) = e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("something other than a job's details") && m.contains("<html>proxy error"),
        "{m}"
    );
}

#[test]
fn a_job_past_its_timeout_is_stopped_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let stuck = wrapper(tmp.path(), "stuck.sh", "exec sleep 30");
    let fake = FakeRay::start();
    let mut s = settings(&fake.addr, &stuck, 1);
    s.timeout_secs = Some(0.3);
    let mut ex = ray(&s, 1, "run");
    let id = ex.submit(job(0, C1)).unwrap();
    let (updates, _) = drain(ex.as_mut(), 1);
    let r = retries(&updates);
    assert_eq!(r.len(), 1, "{updates:?}");
    assert!(
        r[0].1
            .contains(&format!("Ray job {id} timed out after 0.3 s")),
        "{}",
        r[0].1
    );
    let m = done(&updates, 0).failure.clone().unwrap().message;
    assert!(
        m.contains(&format!("Ray job {id}-a2 timed out after 0.3 s"))
            && m.contains("gave up after 2 attempts"),
        "{m}"
    );
    for id in [id.clone(), format!("{id}-a2")] {
        let j = fake.wait_for(&id, "STOPPED", LONG);
        assert!(j.pids.iter().all(|&p| !alive(p)), "{id} still runs");
    }
    // Time spent waiting for resources (PENDING) does not count.
    fake.pending_for(Duration::from_millis(800));
    let canned = archsmith::exec::result_line(
        0,
        &Evaluation {
            score: Some(0.5),
            failure: None,
            curve: Vec::new(),
            params: 1,
            flops: 2,
            stopped_early: false,
            wall_seconds: 0.1,
            weights: None,
            lookup: None,
        },
    );
    std::fs::write(tmp.path().join("result"), format!("{canned}\n")).unwrap();
    let quick = wrapper(
        tmp.path(),
        "quick.sh",
        &format!("cat '{}'", tmp.path().join("result").display()),
    );
    let mut s = settings(&fake.addr, &quick, 0);
    s.timeout_secs = Some(0.3);
    let mut ex = ray(&s, 1, "pending");
    ex.submit(job(0, C1)).unwrap();
    let (updates, _) = drain(ex.as_mut(), 1);
    assert!(retries(&updates).is_empty(), "{updates:?}");
    assert_eq!(done(&updates, 0).score, Some(0.5), "{updates:?}");
}

#[test]
fn stop_all_stops_running_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let stuck = wrapper(tmp.path(), "stuck.sh", "sleep 30\nexec \"$BIN\" \"$@\"");
    let fake = FakeRay::start();
    let mut ex = ray(&settings(&fake.addr, &stuck, 1), 2, "run");
    let ids = [
        ex.submit(job(0, C1)).unwrap(),
        ex.submit(job(1, C2)).unwrap(),
    ];
    let pids: Vec<u32> = ids
        .iter()
        .map(|id| fake.wait_for(id, "RUNNING", LONG).pid.unwrap())
        .collect();
    let mut stopped = ex.stop_all();
    stopped.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(stopped, want);
    for id in &ids {
        fake.wait_for(id, "STOPPED", LONG);
    }
    for p in pids {
        assert!(!alive(p), "process {p} still runs");
    }
    assert!(ex.stop_all().is_empty());
}

#[test]
fn bad_addresses_give_clear_errors() {
    let err =
        |s: &ExecutorSettings, env: &dyn Fn(&str) -> Option<String>| match Ray::new(s, 1, "r", env)
        {
            Ok(_) => panic!("no error"),
            Err(e) => e.to_string(),
        };
    let mut s = settings("http://x", BIN, 0);
    s.ray.address = None;
    let e = err(&s, &no_env);
    assert!(
        e.contains("[executor.ray] address")
            && e.contains("--ray-address")
            && e.contains("RAY_ADDRESS"),
        "{e}"
    );
    let e = err(&s, &|k| {
        (k == "RAY_ADDRESS").then(|| "ray://10.0.0.1:10001".into())
    });
    assert!(
        e.contains("ray://10.0.0.1:10001") && e.contains("http://127.0.0.1:8265"),
        "{e}"
    );
    // RAY_ADDRESS when it is an http address.
    let fake = FakeRay::start();
    let addr = fake.addr.clone();
    let ok = Ray::new(&s, 1, "r", &|k| (k == "RAY_ADDRESS").then(|| addr.clone()));
    assert!(ok.unwrap().describe().contains(&fake.addr));
    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = err(&settings(&closed, BIN, 0), &no_env);
    assert!(e.contains(&closed) && e.contains("does not answer"), "{e}");
    // Something answers, but not a Ray dashboard.
    let e = err(
        &settings(&format!("{}/elsewhere", fake.addr), BIN, 0),
        &no_env,
    );
    assert!(e.contains("not as a Ray dashboard does"), "{e}");
    // A token variable that is not set.
    let mut s = settings(&fake.addr, BIN, 0);
    s.ray.token_env = Some("NO_SUCH_TOKEN".into());
    let e = err(&s, &no_env);
    assert!(e.contains("NO_SUCH_TOKEN") && e.contains("not set"), "{e}");
}

/// A small run with two evaluations at once, one epoch (enough examples that candidates
/// score differently).
fn run_toml(out: &Path, executor: &str) -> String {
    common::tiny_search(out, 11, 4, 1, 512, executor)
}

fn run(out: &Path, executor: &str) -> PathBuf {
    common::run_config(out, &run_toml(out, executor))
}

#[test]
fn a_run_on_ray_matches_the_same_run_on_local_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRay::start();
    let on_ray = run(
        &tmp.path().join("ray"),
        &format!(
            "kind = \"ray\"\ncommand = \"{BIN}\"\n[executor.ray]\naddress = \"{}\"\ncpus = 1\npoll_ms = 20",
            fake.addr
        ),
    );
    let local = run(&tmp.path().join("local"), "kind = \"local\"");
    let (ev_ray, ev_local) = (journal(&on_ray), journal(&local));
    let (fr, fl) = (finished(&ev_ray), finished(&ev_local));
    assert_eq!(fr.len(), 4);
    assert!(fr.iter().all(|f| f.3.is_some()), "{fr:?}");
    assert!(
        fr.iter().any(|f| f.3 != fr[0].3),
        "scores that tell runs apart: {fr:?}"
    );
    assert_eq!(fr, fl);
    let started = &ev_ray.iter().find(|e| e["type"] == "run_started").unwrap()["data"];
    assert!(
        started["message"]
            .as_str()
            .unwrap()
            .contains("ray at http://127.0.0.1"),
        "{started}"
    );
    // One Ray job per evaluation, named in the journal.
    assert_eq!(fake.spawned(), 4);
    let workers: Vec<String> = ev_ray
        .iter()
        .filter(|e| e["type"] == "train_started")
        .map(|e| e["data"]["worker"].as_str().unwrap().to_string())
        .collect();
    for w in &workers {
        assert_eq!(
            fake.job(w).map(|j| j.status).as_deref(),
            Some("SUCCEEDED"),
            "{w}"
        );
    }
    // Epochs came back from the jobs' logs.
    assert_eq!(ev_ray.iter().filter(|e| e["type"] == "epoch").count(), 4);
}

#[test]
fn epochs_are_passed_on_while_the_job_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // The job stays RUNNING a while after its worker printed everything.
    let lingering = wrapper(tmp.path(), "linger.sh", "\"$BIN\" \"$@\"\nsleep 1");
    let fake = FakeRay::start();
    let mut ex = ray(&settings(&fake.addr, &lingering, 0), 1, "live");
    let id = ex.submit(job(0, C1)).unwrap();
    let mut seen = Vec::new();
    let result = loop {
        let u = ex
            .next(&mut |e, ep| {
                let status = fake.job(&id).unwrap().status;
                seen.push((e, ep.clone(), status));
            })
            .unwrap();
        if let Update::Done { result, .. } = u {
            break result;
        }
    };
    assert_eq!(result.curve.len(), 2);
    let epochs: Vec<Epoch> = seen.iter().map(|s| s.1.clone()).collect();
    assert_eq!(epochs, result.curve, "each epoch once, in order");
    assert!(
        seen.iter().all(|s| s.0 == 0 && s.2 == "RUNNING"),
        "{seen:?}"
    );
}

#[test]
fn a_driver_that_crashes_and_resumes_follows_its_jobs_instead_of_training_them_again() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRay::start();
    let out = tmp.path().join("runs");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = out.join("x.toml");
    std::fs::write(
        &cfg,
        run_toml(
            &out,
            &format!(
                "kind = \"ray\"\ncommand = \"{BIN}\"\n[executor.ray]\naddress = \"{}\"\npoll_ms = 20",
                fake.addr
            ),
        ),
    )
    .unwrap();
    // The driver dies right after submitting (and journaling) its second job.
    let o = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("ARCHSMITH_TEST_CRASH_AFTER_STARTS", "2")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let dir = common::run_dir(&out);
    assert_eq!(fake.jobs().len(), 2);
    let o = Command::new(BIN)
        .args(["resume", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ev = journal(&dir);
    let f = finished(&ev);
    assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert!(f.iter().all(|x| x.3.is_some()), "{f:?}");
    // The two jobs of the first session were followed, not submitted again.
    assert_eq!(fake.spawned(), 4);
    assert!(fake.jobs().iter().all(|j| j.status == "SUCCEEDED"));
    assert!(ev.iter().all(|e| e["type"] != "retry"));
}

#[test]
fn a_run_whose_head_goes_away_pauses_and_resume_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    // Jobs that take a while, so that the head goes while they run.
    let slow = wrapper(tmp.path(), "slow.sh", "sleep 1\nexec \"$BIN\" \"$@\"");
    let mut fake = FakeRay::start();
    let out = tmp.path().join("runs");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = out.join("x.toml");
    // The address comes from RAY_ADDRESS, so that the resume can name another head.
    std::fs::write(
        &cfg,
        run_toml(
            &out,
            &format!(
                "kind = \"ray\"\ncommand = \"{slow}\"\n[executor.ray]\npoll_ms = 20\nunreachable_secs = 1.0"
            ),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RAY_ADDRESS", &fake.addr)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !fake.jobs().iter().any(|j| j.status == "RUNNING") {
        assert!(t0.elapsed() < LONG, "no job started");
        std::thread::sleep(Duration::from_millis(20));
    }
    fake.shutdown();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // A paused run has its own exit code (README's table): not an error, a wait.
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("the run is paused") && err.contains("archsmith resume"),
        "{err}"
    );
    let dir = common::run_dir(&out);
    let ev = journal(&dir);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["data"]["status"], "paused");

    // The head is back (here: another one); resume redoes what was in flight and finishes.
    let fake = FakeRay::start();
    let o = Command::new(BIN)
        .args(["resume", dir.to_str().unwrap()])
        .env("RAY_ADDRESS", &fake.addr)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ev = journal(&dir);
    let f = finished(&ev);
    assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert!(f.iter().all(|x| x.3.is_some()), "{f:?}");
    assert_eq!(ev.last().unwrap()["data"]["status"], "completed");
}

#[test]
fn ctrl_c_stops_the_runs_ray_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = wrapper(tmp.path(), "slow.sh", "sleep 30\nexec \"$BIN\" \"$@\"");
    let fake = FakeRay::start();
    let out = tmp.path().join("runs");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = out.join("x.toml");
    std::fs::write(
        &cfg,
        run_toml(
            &out,
            &format!(
                "kind = \"ray\"\ncommand = \"{slow}\"\n[executor.ray]\naddress = \"{}\"\npoll_ms = 20",
                fake.addr
            ),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while fake.jobs().iter().filter(|j| j.status == "RUNNING").count() < 2 {
        assert!(t0.elapsed() < LONG, "the jobs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    // The driver asks for the stops before it exits; the fake head marks a job STOPPED once
    // its process has gone, which may come a moment later.
    let t0 = Instant::now();
    while !fake.jobs().iter().all(|j| j.status == "STOPPED") && t0.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(20));
    }
    let jobs = fake.jobs();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.status == "STOPPED"), "{jobs:?}");
    assert!(jobs.iter().all(|j| j.stop_requested), "{jobs:?}");
    let ev = journal(&common::run_dir(&out));
    let last = &ev.last().unwrap()["data"];
    assert_eq!(last["status"], "interrupted");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("stopped 2 evaluation(s) in flight"),
        "{last}"
    );
}
