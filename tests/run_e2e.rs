//! End-to-end runs on a tiny synthetic task (CPU, one epoch, tight limits): every strategy,
//! the model strategies against a loopback OpenAI-compatible server whose replies mix valid,
//! invalid and unparseable candidates, a crash mid-run and its resume, replay, and bad input.

use archsmith::exec::fake::FakeEvaluator;
use archsmith::run::{
    compare_replay, prepare_new, prepare_replay, prepare_resume, read_journal, summary, Event,
    NoProgress, Settings,
};
use assert_cmd::Command;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY_VAR: &str = "ARCHSMITH_TEST_KEY";

fn lookup(var: &str) -> Option<String> {
    (var == KEY_VAR).then(|| "sk-test-123".to_string())
}

/// A tiny experiment: textures with 64 training examples, one epoch, small candidates.
fn base_toml(out: &Path, strategy: &str, evals: u64) -> String {
    format!(
        r#"
seed = 7
out = "{out}"
device = "cpu"

[space]
name = "einspace"
[space.limits]
max_params = 30000
max_flops = 3000000
max_activation_bytes = 1048576

[task]
name = "textures"
train_size = 64
valid_size = 32
test_size = 16
[task.recipe]
epochs = 1
batch_size = 32
threads = 1

[strategy]
kind = "{strategy}"
[strategy.evolution]
population = 3
tournament = 2
[strategy.bo]
initial = 2
pool_samples = 8
pool_mutations = 8
[strategy.llm]
k = 2
repairs = 1
[strategy.llm_evolution]
population = 2
tournament = 2
k = 1

[budget]
evaluations = {evals}
stall_rounds = 5
"#,
        out = out.display()
    )
}

fn llm_toml(base_url: &str) -> String {
    format!(
        r#"
[llm]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key_env = "{KEY_VAR}"
timeout_secs = 5.0
[llm.retry]
max_attempts = 2
delay_scale = 0.0
"#
    )
}

fn settings(text: &str) -> Settings {
    Settings::from_toml(text, "test.toml").expect("settings")
}

fn events(dir: &Path) -> Vec<Event> {
    read_journal(&dir.join("journal.jsonl"))
        .expect("journal")
        .events
}

fn finished(dir: &Path) -> Vec<(u64, String, Option<f64>)> {
    events(dir)
        .into_iter()
        .filter_map(|e| match e {
            Event::TrainFinished(t) => Some((t.eval, t.hash, t.score)),
            _ => None,
        })
        .collect()
}

/// No evaluation lost or repeated: evaluation numbers 0..n once each, every hash once.
fn assert_clean(dir: &Path, n: u64) {
    let f = finished(dir);
    let evals: Vec<u64> = f.iter().map(|x| x.0).collect();
    assert_eq!(evals, (0..n).collect::<Vec<_>>(), "evaluation numbers");
    let hashes: HashSet<&String> = f.iter().map(|x| &x.1).collect();
    assert_eq!(hashes.len(), f.len(), "a candidate was trained twice");
}

fn run_dir(text: &str) -> PathBuf {
    let p = prepare_new(settings(text), "test.toml", &lookup).expect("prepare");
    let dir = p.dir.clone();
    p.run(Box::new(NoProgress)).expect("run");
    dir
}

#[test]
fn every_classical_strategy_runs_and_records() {
    let tmp = tempfile::tempdir().unwrap();
    for strategy in ["random", "evolution", "bo"] {
        let dir = run_dir(&base_toml(tmp.path(), strategy, 4));
        assert_clean(&dir, 4);
        let s = summary(&dir).unwrap();
        assert_eq!(s.strategy, strategy);
        assert_eq!(s.status, "completed");
        assert!(s.best.is_some(), "{strategy}: no best");
        assert!(dir.join("best.arch").is_file() && dir.join("config.toml").is_file());
        assert!(
            dir.join("best.ot").is_file(),
            "{strategy}: the best's weights"
        );
        assert!(!dir.join(".last.ot").exists());
        // Each training has its learning curve in the journal.
        let epochs = events(&dir)
            .iter()
            .filter(|e| matches!(e, Event::Epoch(_)))
            .count();
        assert_eq!(epochs, 4, "{strategy}");
        // The resolved config names the concrete strategy and reloads.
        let cfg = Settings::load(Some(&dir.join("config.toml"))).unwrap();
        assert_eq!(cfg.strategy.kind.0.name(), strategy);
    }
    // Evolution's children name their parents.
    let dir = run_dir(&base_toml(tmp.path(), "evolution", 6));
    let with_parents = events(&dir)
        .iter()
        .filter(|e| matches!(e, Event::Proposal(p) if !p.parents.is_empty()))
        .count();
    assert!(with_parents >= 2, "mutations record their parent");
}

/// Replies in a cycle: two candidates (one valid, one not in the grammar), a repair, an
/// unparseable reply, and a reply that repeats a candidate.
struct Cycle {
    replies: Vec<String>,
    n: AtomicUsize,
}

impl Respond for Cycle {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let i = self.n.fetch_add(1, Ordering::SeqCst);
        let text = &self.replies[i % self.replies.len()];
        ResponseTemplate::new(200).set_body_json(json!({
            "id": format!("chatcmpl-{i}"),
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}
        }))
    }
}

fn replies() -> Vec<String> {
    vec![
        "PLAN: patchify and mix.\nCANDIDATE: route(im2col(4,4,0), linear(16), col2im)\nPREDICTED: 0.5\nCANDIDATE: route(im2col(3,1,1), linear(99), col2im)\nPREDICTED: 0.4".into(),
        "PLAN: use a width the grammar has.\nCANDIDATE: route(im2col(8,8,0), linear(32), col2im)\nPREDICTED: 0.45".into(),
        "I am sorry, I cannot help with neural networks today.".into(),
        "PLAN: go back to patches.\nCANDIDATE: route(im2col(4,4,0), linear(16), col2im)\nPREDICTED: 0.5".into(),
    ]
}

fn mock_server(rt: &tokio::runtime::Runtime, replies: Vec<String>) -> MockServer {
    rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .respond_with(Cycle {
                replies,
                n: AtomicUsize::new(0),
            })
            .mount(&server)
            .await;
        server
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn llm_strategies_against_a_loopback_server_then_replay() {
    let rt = rt();
    let server = mock_server(&rt, replies());
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for strategy in ["llm", "llm-evolution"] {
        let text = base_toml(tmp.path(), strategy, 4) + &llm_toml(&server.uri());
        let dir = run_dir(&text);
        assert_clean(&dir, 4);
        let ev = events(&dir);
        let verdicts: Vec<String> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Validation(v) => Some(format!("{:?}", v.verdict)),
                _ => None,
            })
            .collect();
        assert!(
            verdicts.iter().any(|v| v == "Valid"),
            "{strategy}: {verdicts:?}"
        );
        if strategy == "llm" {
            // The invalid candidate was journaled with the validator's words, then repaired.
            let invalid = ev.iter().find_map(|e| match e {
                Event::Validation(v)
                    if v.message
                        .as_deref()
                        .is_some_and(|m| m.contains("linear(99)")) =>
                {
                    Some(v.clone())
                }
                _ => None,
            });
            assert!(invalid.is_some(), "no invalid verdict naming linear(99)");
            assert!(ev.iter().any(|e| matches!(e, Event::Proposal(p)
                if p.origin == archsmith::search::Origin::Repair && p.hash.is_some())));
            // The unparseable reply became a note, and the plan text travels with proposals.
            assert!(ev
                .iter()
                .any(|e| matches!(e, Event::Note(n) if n.message.contains("unusable reply"))));
            assert!(ev.iter().any(|e| matches!(e, Event::Proposal(p)
                if p.plan.as_deref() == Some("patchify and mix.") && p.llm_step.as_deref() == Some("r0.propose"))));
            assert!(ev.iter().any(|e| matches!(e, Event::Validation(v)
                if format!("{:?}", v.verdict) == "Duplicate")));
        } else {
            // Model-written children name the tournament winners they came from.
            assert!(ev.iter().any(|e| matches!(e, Event::Proposal(p)
                if p.llm_step.is_some() && !p.parents.is_empty())));
        }
        let s = summary(&dir).unwrap();
        assert!(s.tokens > 0 && dir.join("llm.jsonl").is_file());
        dirs.push(dir);
    }
    // Replay with the server gone: the same proposals and, on the CPU, the same scores.
    drop(server);
    for dir in dirs {
        let p = prepare_replay(&dir).expect("prepare replay");
        let new_dir = p.dir.clone();
        p.run(Box::new(NoProgress)).expect("replay run");
        let diffs = compare_replay(&dir, &new_dir).unwrap();
        assert!(diffs.is_empty(), "{}: {diffs:?}", dir.display());
    }
}

#[test]
fn a_failing_server_ends_the_run_clearly_and_keeps_the_record() {
    let rt = rt();
    let server = rt.block_on(async {
        let s = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
            .mount(&s)
            .await;
        s
    });
    let tmp = tempfile::tempdir().unwrap();
    let text = base_toml(tmp.path(), "llm", 3) + &llm_toml(&server.uri());
    let p = prepare_new(settings(&text), "test.toml", &lookup).unwrap();
    let dir = p.dir.clone();
    let e = format!("{:#}", p.run(Box::new(NoProgress)).unwrap_err());
    assert!(e.contains("500") && e.contains("archsmith resume"), "{e}");
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "failed");
    assert!(
        dir.join("llm.jsonl").is_file(),
        "the failed calls are recorded"
    );
}

#[test]
fn missing_key_and_bad_config_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let text = base_toml(tmp.path(), "llm", 3)
        + "[llm]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"ARCHSMITH_NO_SUCH_KEY\"\n";
    let e = format!(
        "{:#}",
        prepare_new(settings(&text), "test.toml", &lookup)
            .err()
            .expect("must fail")
    );
    assert!(e.contains("ARCHSMITH_NO_SUCH_KEY"), "{e}");

    let e = Settings::from_toml("[task]\nname = \"textures\"\nepochz = 1\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("epochz"), "{e}");

    let text = base_toml(tmp.path(), "random", 3).replace("batch_size = 32", "batch_sise = 32");
    let e = format!(
        "{:#}",
        prepare_new(settings(&text), "test.toml", &lookup)
            .err()
            .expect("must fail")
    );
    assert!(e.contains("task.recipe") && e.contains("batch_sise"), "{e}");

    // The binary says the same with a non-zero exit.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[budget]\nevaluations = 0\n").unwrap();
    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`budget.evaluations`: must be at least 1"),
        "{err}"
    );
}

#[test]
fn a_diverging_candidate_is_a_recorded_failure_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let text = base_toml(tmp.path(), "random", 3).replace("threads = 1", "threads = 1\nlr = 1e30");
    let dir = run_dir(&text);
    assert_clean(&dir, 3);
    let failures: Vec<String> = events(&dir)
        .into_iter()
        .filter_map(|e| match e {
            Event::TrainFinished(t) => t.failure.map(|f| format!("{:?}", f.reason)),
            _ => None,
        })
        .collect();
    assert!(
        failures.iter().any(|f| f == "NonFinite"),
        "expected a non-finite loss: {failures:?}"
    );
}

#[test]
fn a_crash_mid_run_resumes_without_losing_or_repeating_work() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(&cfg, base_toml(&tmp.path().join("crashed"), "evolution", 5)).unwrap();
    // The crash hook aborts the process during the third training, after writing half a line.
    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("ARCHSMITH_TEST_CRASH_AFTER_STARTS", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let dir = std::fs::read_dir(tmp.path().join("crashed"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(finished(&dir).len(), 2);
    assert!(read_journal(&dir.join("journal.jsonl"))
        .unwrap()
        .torn
        .is_some());

    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .arg("resume")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("in flight and redone: evaluation 2") && err.contains("torn"),
        "{err}"
    );
    assert_clean(&dir, 5);

    // The resumed run went exactly where the uninterrupted one goes.
    let p = prepare_new(
        settings(&base_toml(&tmp.path().join("whole"), "evolution", 5)),
        "test.toml",
        &lookup,
    )
    .unwrap();
    let whole = p.dir.clone();
    p.run(Box::new(NoProgress)).unwrap();
    assert_eq!(finished(&dir), finished(&whole));
    assert_eq!(summary(&dir).unwrap().sessions, 2);

    // Resuming a finished run with a raised budget goes on from where it stopped.
    let cfg_path = dir.join("config.toml");
    let t = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("evaluations = 5", "evaluations = 6");
    std::fs::write(&cfg_path, t).unwrap();
    prepare_resume(&dir, &lookup)
        .unwrap()
        .run(Box::new(NoProgress))
        .unwrap();
    assert_clean(&dir, 6);
}

#[test]
fn a_classical_run_replays_to_the_same_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_dir(&base_toml(tmp.path(), "bo", 4));
    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .arg("replay")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("replay matches the recorded run"), "{err}");
    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .args(["replay", "--scores-only"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 evaluations; best"), "{text}");
    let runs = Command::cargo_bin("archsmith")
        .unwrap()
        .arg("runs")
        .arg(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&runs.stdout);
    assert_eq!(
        text.lines().count(),
        3,
        "a header, the run and its replay:\n{text}"
    );
}

#[test]
fn successive_halving_stops_weak_candidates_early() {
    let tmp = tempfile::tempdir().unwrap();
    let text = base_toml(tmp.path(), "random", 12)
        + "[fidelity]\nsuccessive_halving = true\nmin_epochs = 1\neta = 2\n";
    let p = prepare_new(settings(&text), "test.toml", &lookup).unwrap();
    let dir = p.dir.clone();
    p.run_with(Box::new(FakeEvaluator { epochs: 4 }), Box::new(NoProgress))
        .unwrap();
    assert_clean(&dir, 12);
    let (stopped, full): (Vec<Value>, Vec<Value>) = events(&dir)
        .into_iter()
        .filter_map(|e| match e {
            Event::TrainFinished(t) => {
                Some(json!({"stopped": t.stopped_early, "epochs": t.epochs}))
            }
            _ => None,
        })
        .partition(|v| v["stopped"] == json!(true));
    assert!(
        !stopped.is_empty() && !full.is_empty(),
        "{stopped:?} {full:?}"
    );
    assert!(stopped.iter().all(|v| v["epochs"].as_u64().unwrap() < 4));
}

#[test]
fn the_model_budget_ends_the_run_as_completed() {
    let rt = rt();
    let server = mock_server(&rt, replies());
    let tmp = tempfile::tempdir().unwrap();
    let text = base_toml(tmp.path(), "llm", 10)
        .replace("stall_rounds = 5", "stall_rounds = 5\ntokens = 2000")
        + &llm_toml(&server.uri());
    let dir = run_dir(&text);
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "completed", "{}", s.reason);
    assert!(s.reason.contains("token budget"), "{}", s.reason);
    assert!(s.evaluations < 10);
}

#[test]
fn llm_plans_then_candidates_and_model_ranking_of_a_pool() {
    let rt = rt();
    let server = rt.block_on(async {
        let s = MockServer::start().await;
        // Plans requests, predict requests, then everything else (propose and repair).
        Mock::given(method("POST"))
            .and(body_string_contains("distinct strategies"))
            .respond_with(Cycle {
                replies: vec!["PLAN 1: patches then a linear map.\nPLAN 2: normalise then mix channels.".into()],
                n: AtomicUsize::new(0),
            })
            .with_priority(1)
            .mount(&s)
            .await;
        Mock::given(method("POST"))
            .and(body_string_contains("PREDICTION 1"))
            .respond_with(Cycle {
                replies: vec!["PREDICTION 1: 0.9\nPREDICTION 2: 0.1\nPREDICTION 3: 0.5\nPREDICTION 4: 0.2\nPREDICTION 5: 0.3\nPREDICTION 6: 0.4".into()],
                n: AtomicUsize::new(0),
            })
            .with_priority(2)
            .mount(&s)
            .await;
        Mock::given(method("POST"))
            .respond_with(Cycle {
                replies: replies(),
                n: AtomicUsize::new(0),
            })
            .with_priority(3)
            .mount(&s)
            .await;
        s
    });
    let tmp = tempfile::tempdir().unwrap();
    let text = base_toml(tmp.path(), "llm", 3)
        .replace("repairs = 1", "repairs = 1\nplans = 2\nrank_pool = 2")
        + &llm_toml(&server.uri());
    let dir = run_dir(&text);
    assert_clean(&dir, 3);
    let ev = events(&dir);
    // Both plans were followed by a propose call; the journaled proposals name their call.
    let records = std::fs::read_to_string(dir.join("llm.jsonl")).unwrap();
    for step in [
        "r0.plans",
        "r0.plan1.propose",
        "r0.plan2.propose",
        "r0.predict",
    ] {
        assert!(
            records.contains(&format!("\"step\":\"{step}\"")),
            "no call {step}"
        );
    }
    assert!(ev.iter().any(|e| matches!(e, Event::Proposal(p)
        if p.llm_step.as_deref().is_some_and(|s| s.contains(".plan")))));
    // The pool (model candidates, a sample and a mutation) was ranked by the model's
    // predictions, and the top one carries the predicted score.
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Proposal(p) if p.predicted == Some(0.9))));
}
