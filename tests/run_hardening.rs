//! A run folder survives what users and machines do to it: a second writer is refused while
//! the first is alive (and readers keep working), `kill -9` at several moments loses nothing
//! and retrains nothing after `resume`, and hostile input reaches no terminal unescaped.

mod common;

use common::{finished, journal, of_type, run_config, tiny_search, BIN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A sequential tiny search: one candidate at a time, in the driver.
fn sequential(out: &Path, evals: u64) -> String {
    tiny_search(out, 11, evals, 1, 128, "").replace("parallel = 2", "parallel = 1")
}

fn spawn_run(out: &Path, toml: &str) -> Child {
    std::fs::create_dir_all(out).unwrap();
    let cfg = out.join("x.toml");
    std::fs::write(&cfg, toml).unwrap();
    Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the run in `out` has journaled `count` events of type `t`; returns its folder.
fn wait_for(out: &Path, t: &str, count: usize, child: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        let dir = std::fs::read_dir(out).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("journal.jsonl").is_file())
                .max()
        });
        if let Some(dir) = dir {
            if of_type(&journal(&dir), t).len() >= count {
                return dir;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before {count} `{t}` events");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {count} `{t}` events after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn archsmith(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(BIN).args(args).arg(dir).output().unwrap()
}

/// Finished evaluations in order, each number once and no candidate twice.
fn assert_clean(dir: &Path, n: u64) -> Vec<(u64, String, Option<f64>)> {
    let f = finished(&journal(dir));
    let evals: Vec<u64> = f.iter().map(|x| x.0).collect();
    assert_eq!(evals, (0..n).collect::<Vec<_>>(), "evaluation numbers");
    let mut hashes: Vec<&String> = f.iter().map(|x| &x.1).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), f.len(), "a candidate was trained twice");
    f.into_iter().map(|(e, h, _, s, _)| (e, h, s)).collect()
}

#[test]
fn a_second_writer_is_refused_while_the_first_lives_and_readers_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("live");
    // Long enough that it is still running while the checks below are made.
    let evals = 30;
    let mut child = spawn_run(
        &out,
        &sequential(&out, evals).replace("train_size = 128", "train_size = 512"),
    );
    let dir = wait_for(&out, "train_finished", 1, &mut child);

    // Two more writers, as a user who types `resume` twice would start them.
    for _ in 0..2 {
        let t = Instant::now();
        let o = archsmith(&["resume"], &dir);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("pid {}", child.id())) && err.contains("on host"),
            "the refusal names the holder: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "refused at once, not after waiting"
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run was still going while it was refused"
    );
    // Readers do not take the lock.
    for args in [&["show"][..], &["report"], &["replay", "--scores-only"]] {
        let o = archsmith(args, &dir);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = Command::new(BIN).arg("runs").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Once the writer has gone (here killed), the folder is free again, and the refused
    // writers left no trace: the run finishes with every evaluation once.
    child.kill().unwrap();
    child.wait().unwrap();
    let o = archsmith(&["resume"], &dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_clean(&dir, evals);
}

/// `kill -9` at several moments of a run (just after a proposal is journaled, while a
/// candidate trains, just after a result), then `resume`: the run ends exactly where the
/// uninterrupted run ends, with nothing lost and nothing trained twice.
#[test]
fn kill_dash_nine_at_several_moments_then_resume_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let evals = 5;
    let whole = run_config(
        &tmp.path().join("whole"),
        &sequential(&tmp.path().join("whole"), evals),
    );
    let expected = assert_clean(&whole, evals);

    for (i, (t, count)) in [("proposal", 2), ("train_started", 2), ("train_finished", 3)]
        .into_iter()
        .enumerate()
    {
        let out = tmp.path().join(format!("killed-{i}"));
        let mut child = spawn_run(&out, &sequential(&out, evals));
        let dir = wait_for(&out, t, count, &mut child);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The dead process's lock went with it: resume takes the folder at once.
        let o = archsmith(&["resume"], &dir);
        assert!(
            o.status.success(),
            "resume after kill at {t} #{count}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            assert_clean(&dir, evals),
            expected,
            "killed after {t} #{count}"
        );
    }
}

#[test]
fn untrusted_text_reaches_the_terminal_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    // A candidate file with terminal controls and a bidirectional override.
    let input = tmp.path().join("c.arch");
    std::fs::write(
        &input,
        "seq(linear(8), \u{1b}]0;pwned\u{7}relu)\nlinear(8) \u{202e}# gnp.exe\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["validate", "--space", "mlp", "--input", "16"])
        .arg(&input)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown}"
    );
    assert!(!shown.contains('\u{202e}'), "{shown}");
    assert!(shown.contains("\\u{1b}"), "{shown}");

    // A megabyte-long unknown space name (from a config file) is not echoed in full.
    let cfg = tmp.path().join("long.toml");
    let toml = sequential(&tmp.path().join("r"), 1).replace(
        "name = \"einspace\"",
        &format!("name = \"{}\"", "x".repeat(1 << 20)),
    );
    std::fs::write(&cfg, toml).unwrap();
    let o = Command::new(BIN)
        .args(["run", "--dry-run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.len() < 10_000 && err.contains("more characters"),
        "{} bytes",
        err.len()
    );
}

#[test]
fn dry_run_refuses_what_a_run_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let base = sequential(&tmp.path().join("r"), 2);
    // (what, the line as written, the line spoiled, the field the refusal must name)
    let cases = [
        (
            "unknown task",
            "name = \"textures\"",
            "name = \"no-such-task\"",
            "task.name",
        ),
        (
            "unknown space",
            "name = \"einspace\"",
            "name = \"no-such-space\"",
            "space.name",
        ),
        (
            "misspelt recipe key",
            "batch_size = 32",
            "batch_sise = 32",
            "batch_sise",
        ),
        (
            "negative batch size",
            "batch_size = 32",
            "batch_size = -4",
            "batch_size",
        ),
        (
            "zero batch size",
            "batch_size = 32",
            "batch_size = 0",
            "batch_size",
        ),
        ("zero epochs", "epochs = 1", "epochs = 0", "epochs"),
        (
            "no training data",
            "train_size = 128",
            "train_size = 0",
            "train_size",
        ),
        (
            "no validation data",
            "valid_size = 64",
            "valid_size = 0",
            "valid_size",
        ),
    ]
    .map(|(what, from, to, field)| (what, base.replace(from, to), field));
    for (what, toml, field) in cases {
        let cfg = tmp.path().join("bad.toml");
        std::fs::write(&cfg, &toml).unwrap();
        for dry in [true, false] {
            let mut c = Command::new(BIN);
            c.args(["run", "--config", cfg.to_str().unwrap()]);
            if dry {
                c.arg("--dry-run");
            }
            let o = c.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{what} (dry run {dry}): {err}");
            assert!(
                err.contains(field),
                "{what} (dry run {dry}) names {field}: {err}"
            );
        }
    }
    // No run folder was made for any of them.
    assert!(
        !tmp.path().join("r").exists()
            || std::fs::read_dir(tmp.path().join("r"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_damaged_run_among_many_is_flagged_and_the_others_still_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let good = run_config(&out, &sequential(&out, 2));
    let bad = out.join("broken-run");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("journal.jsonl"),
        "{\"type\": \"run_started\", \"data\": 7}\nnot json\n",
    )
    .unwrap();
    let o = Command::new(BIN).arg("runs").arg(&out).output().unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        listed.contains("broken-run") && listed.contains("DAMAGED"),
        "{listed}"
    );
    let name = good.file_name().unwrap().to_string_lossy().to_string();
    assert!(listed.contains(&name), "{listed}");
    let o = Command::new(BIN)
        .arg("compare")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["runs"].as_array().unwrap().len(), 1);
    assert!(c["skipped"][0]["run"]
        .as_str()
        .unwrap()
        .contains("broken-run"));

    // An empty journal: resume says it starts from the beginning.
    let empty = out.join("empty-run");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(good.join("config.toml"), empty.join("config.toml")).unwrap();
    std::fs::write(empty.join("journal.jsonl"), "").unwrap();
    let o = archsmith(&["resume"], &empty);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("is empty") && err.contains("starts from the beginning"),
        "{err}"
    );
}

/// A model's plan with terminal escapes, an OSC title and a bidirectional override: `show`
/// prints it with those characters visible, and the run records it as it was.
#[test]
fn show_prints_a_hostile_plan_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("llm");
    let plan = "widen \\u001b]0;owned\\u0007 the \\u001b[2J layer \\u202e";
    let toml = sequential(&out, 2).replace("kind = \"evolution\"", "kind = \"llm\"")
        + &format!(
            r#"
[llm]
provider = "mock"
model = "mock"
mock_replies = [
  "PLAN: {plan}\nCANDIDATE: seq(route(im2col(3,1,1), linear(16), col2im), leakyrelu)\nPREDICTED: 0.5\nCANDIDATE: seq(route(im2col(3,1,1), linear(32), col2im), norm)\nPREDICTED: 0.4",
]
"#
        );
    let dir = run_config(&out, &toml);
    let plans: Vec<String> = of_type(&journal(&dir), "proposal")
        .iter()
        .filter_map(|p| p["plan"].as_str().map(str::to_string))
        .collect();
    assert!(
        plans.iter().any(|p| p.contains('\u{1b}')),
        "recorded as written: {plans:?}"
    );
    let o = Command::new(BIN).arg("show").arg(&dir).output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(shown.contains("widen \\u{1b}]0;owned\\u{7}"), "{shown}");
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\u{202e}'),
        "{shown}"
    );
}

#[test]
fn an_io_error_says_the_os_message_once() {
    let o = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/exp.toml", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/exp.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
