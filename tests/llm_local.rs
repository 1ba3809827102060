//! The local model server (`provider = "local"`): its failures, each with a clear message, a
//! run that loses its server pausing and `resume` finishing it, against a stand-in server
//! (tests/fixtures/llm/fake-llama-server, Python); and one short run against the real
//! llama-server with the real model, constrained, recorded and replayed offline (skipped with
//! a message where `scripts/setup.sh --llm` has not installed it; required when
//! ARCHSMITH_LLM_REQUIRED=1, as scripts/test sets in CI).

use archsmith::exec::fake::FakeEvaluator;
use archsmith::llm::{read_records, LlmRecord};
use archsmith::run::{
    compare_replay, prepare_new, prepare_replay, prepare_resume, summary, NoProgress, Settings,
};
use std::path::{Path, PathBuf};

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn fake_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/fake-llama-server")
}

fn have_python() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A "model" file for the stand-in: GGUF magic, then its directives.
fn fake_model(dir: &Path, directives: &str) -> PathBuf {
    let p = dir.join("fake.gguf");
    std::fs::write(&p, format!("GGUF\n{directives}\n")).unwrap();
    p
}

fn toml(out: &Path, evals: u64, local: &str) -> String {
    format!(
        r#"
seed = 3
out = "{out}"
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
kind = "llm"
[strategy.llm]
k = 2
repairs = 1
[budget]
evaluations = {evals}
stall_rounds = 20
[llm]
provider = "local"
model = "gemma-3-270m"
temperature = 0.7
max_tokens = 200
timeout_secs = 300.0
[llm.retry]
delay_scale = 0.0
[llm.local]
{local}
"#,
        out = out.display()
    )
}

fn settings(text: &str) -> Settings {
    Settings::from_toml(text, "test.toml").expect("settings")
}

fn fake_local(model: &Path) -> String {
    format!(
        "server = \"{}\"\nmodel_path = \"{}\"\nstart_timeout_secs = 30.0\n",
        fake_server().display(),
        model.display()
    )
}

fn prepare_err(text: &str) -> String {
    match prepare_new(settings(text), "test.toml", &env) {
        Ok(_) => panic!("prepare should fail"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_run_that_loses_its_server_pauses_and_resume_finishes_it() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed; the stand-in llama-server needs it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The server answers 3 completions, then exits.
    let model = fake_model(tmp.path(), "die_after=3");
    let text = toml(tmp.path(), 6, &fake_local(&model));
    let p = prepare_new(settings(&text), "test.toml", &env).expect("prepare");
    assert!(
        p.message.contains("started the local model server"),
        "{}",
        p.message
    );
    let dir = p.dir.clone();
    let e = format!(
        "{:#}",
        p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
            .unwrap_err()
    );
    assert!(
        e.contains("paused") && e.contains("exited") && e.contains("archsmith resume"),
        "{e}"
    );
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "paused", "{}", s.reason);
    assert!(s.evaluations < 6);
    assert!(dir.join("llama-server.log").is_file());
    // The server is back (no more dying): resume finishes the run.
    fake_model(tmp.path(), "");
    let p = prepare_resume(&dir, &env).expect("prepare resume");
    p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
        .expect("resumed run");
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "completed", "{}", s.reason);
    assert_eq!(s.evaluations, 6);
    assert!(s.sources.by_model() > 0, "{:?}", s.sources);
}

#[test]
fn a_server_that_does_not_start_is_named_with_its_log() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed; the stand-in llama-server needs it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = fake_model(tmp.path(), "fail_at_start=1");
    let e = prepare_err(&toml(tmp.path(), 2, &fake_local(&model)));
    assert!(
        e.contains("llama-server exited") && e.contains("failed to load model (fake)"),
        "{e}"
    );
    // One that never answers /health in time.
    let model = fake_model(tmp.path(), "slow_start=30");
    let local = fake_local(&model).replace("start_timeout_secs = 30.0", "start_timeout_secs = 1.0");
    let e = prepare_err(&toml(tmp.path(), 2, &local));
    assert!(e.contains("did not answer /health"), "{e}");
}

#[test]
fn a_taken_port_a_missing_binary_and_a_bad_model_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fake_model(tmp.path(), "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let local = fake_local(&model) + &format!("port = {port}\n");
    let e = prepare_err(&toml(tmp.path(), 2, &local));
    assert!(
        e.contains(&format!("port {port}")) && e.contains("already taken"),
        "{e}"
    );

    let local = format!(
        "server = \"{}\"\nmodel_path = \"{}\"\n",
        tmp.path().join("nothing").display(),
        model.display()
    );
    let e = prepare_err(&toml(tmp.path(), 2, &local));
    assert!(
        e.contains("llama-server not found") && e.contains("setup.sh --llm"),
        "{e}"
    );

    let local = format!(
        "server = \"{}\"\nmodel_path = \"{}\"\n",
        fake_server().display(),
        tmp.path().join("missing.gguf").display()
    );
    let e = prepare_err(&toml(tmp.path(), 2, &local));
    assert!(
        e.contains("missing.gguf") && e.contains("setup.sh --llm"),
        "{e}"
    );

    let local = fake_local(&model) + &format!("sha256 = \"{}\"\n", "0".repeat(64));
    let e = prepare_err(&toml(tmp.path(), 2, &local));
    assert!(e.contains("is corrupt") && e.contains("SHA-256"), "{e}");
}

/// Replays the run in `dir` offline and checks that it recorded the same run.
fn replays_the_same(dir: &Path) {
    let p = prepare_replay(dir).expect("prepare replay");
    let new_dir = p.dir.clone();
    p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
        .expect("replay");
    let diffs = compare_replay(dir, &new_dir).unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[test]
fn a_prompt_longer_than_the_context_cuts_the_history_and_the_run_goes_on() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed; the stand-in llama-server needs it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Room for 400 tokens beyond the first prompt (200 of them the reply's): a few history
    // rows, which 20 evaluations outgrow.
    let model = fake_model(tmp.path(), "history_room=1200");
    let text = toml(tmp.path(), 20, &fake_local(&model));
    let p = prepare_new(settings(&text), "test.toml", &env).expect("prepare");
    let dir = p.dir.clone();
    p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
        .expect("a run whose prompts outgrow the context");
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "completed", "{}", s.reason);
    assert_eq!(s.evaluations, 20);
    let records = read_records(&dir.join("llm.jsonl")).unwrap();
    let refused: Vec<_> = records
        .iter()
        .filter_map(|LlmRecord::Exchange(x)| x.error.as_ref())
        .collect();
    assert!(
        refused.iter().any(|e| e.kind == "context_overflow"),
        "{refused:?}"
    );
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(
        journal.contains("did not fit the model's context window")
            && journal.contains("the history shown is cut from"),
        "no note of the cut in the journal"
    );
    // After the cut, the calls go through: more answered than refused, and the run's later
    // prompts (each bounded by the cut) were accepted.
    let answered = records
        .iter()
        .filter(|LlmRecord::Exchange(x)| x.response.is_some())
        .count();
    assert!(answered > refused.len(), "{answered} answered, {refused:?}");
    replays_the_same(&dir);
}

#[test]
fn a_repeated_candidate_is_asked_again_for_a_different_one() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed; the stand-in llama-server needs it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Every proposal is the same candidate; asked for a different one, the server gives one.
    let model = fake_model(tmp.path(), "repeat=1");
    let text = toml(tmp.path(), 5, &fake_local(&model));
    let p = prepare_new(settings(&text), "test.toml", &env).expect("prepare");
    let dir = p.dir.clone();
    p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
        .expect("run");
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "completed", "{}", s.reason);
    assert_eq!(s.evaluations, 5);
    // The first proposal is new; every later one repeats it and is replaced by a second try,
    // so no round falls back to a random sample.
    assert!(s.sources.duplicates >= 4, "{:?}", s.sources);
    assert!(s.sources.repair_valid >= 4, "{:?}", s.sources);
    assert_eq!(s.sources.samples, 0, "{:?}", s.sources);
    let records = read_records(&dir.join("llm.jsonl")).unwrap();
    assert!(records
        .iter()
        .any(|LlmRecord::Exchange(x)| x.step.contains(".different")));
    replays_the_same(&dir);
    // Off, the same server's repeats end in random samples.
    let tmp2 = tempfile::tempdir().unwrap();
    let model = fake_model(tmp2.path(), "repeat=1");
    let text = toml(tmp2.path(), 5, &fake_local(&model))
        .replace("repairs = 1\n", "repairs = 1\nduplicate_retries = 0\n");
    let p = prepare_new(settings(&text), "test.toml", &env).expect("prepare");
    let dir = p.dir.clone();
    p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
        .expect("run");
    let s = summary(&dir).unwrap();
    assert_eq!(s.sources.repair_valid, 0, "{:?}", s.sources);
    assert!(s.sources.samples >= 4, "{:?}", s.sources);
}

/// The real llama-server with the real model: whether it is installed, or why not.
fn real() -> Option<(PathBuf, PathBuf)> {
    let found = archsmith::llm::local::installed(&env);
    if found.is_none() {
        let msg = "the local model is not installed (scripts/setup.sh --llm)";
        if env("ARCHSMITH_LLM_REQUIRED").as_deref() == Some("1") {
            panic!("ARCHSMITH_LLM_REQUIRED=1 but {msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

#[test]
fn a_short_llm_run_on_the_real_model_constrained_recorded_and_replayed() {
    let Some((server, model)) = real() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let local = format!(
        "server = \"{}\"\nmodel_path = \"{}\"\n",
        server.display(),
        model.display()
    );
    let text = toml(tmp.path(), 2, &local) + "\n";
    let mut s = settings(&text);
    if let Some(l) = &mut s.llm {
        l.constrain = archsmith::llm::Constrain::Grammar;
    }
    let p = prepare_new(s, "test.toml", &env).expect("prepare");
    let dir = p.dir.clone();
    p.run_with(Box::new(FakeEvaluator { epochs: 1 }), Box::new(NoProgress))
        .expect("run on the local model");
    let s = summary(&dir).unwrap();
    assert_eq!(s.status, "completed", "{}", s.reason);
    let records = read_records(&dir.join("llm.jsonl")).unwrap();
    assert!(!records.is_empty());
    let constrained = records
        .iter()
        .filter(|LlmRecord::Exchange(x)| x.constrained.as_deref() == Some("gbnf"))
        .count();
    assert!(
        constrained > 0,
        "no request was constrained: {:?}",
        records
            .iter()
            .map(|LlmRecord::Exchange(x)| (&x.step, &x.constrained, &x.error))
            .collect::<Vec<_>>()
    );
    // Offline: the replay needs no server.
    replays_the_same(&dir);
}
