//! Searches over program spaces through the same loop as architectures: the activation and
//! optimizer spaces with the classical strategies, and prompts that show the program grammar.

use assert_cmd::Command;
use std::path::Path;

fn config(dir: &Path, space: &str, strategy: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{space}-{strategy}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"seed = 3
out = "{out}"
[space]
name = "{space}"
[task]
name = "teacher"
train_size = 256
valid_size = 128
test_size = 32
[task.recipe]
epochs = 1
batch_size = 64
threads = 1
[strategy]
kind = "{strategy}"
[strategy.bo]
initial = 2
pool_samples = 8
pool_mutations = 8
[strategy.evolution]
population = 2
tournament = 2
[budget]
evaluations = 3
[executor]
threads = 1
"#,
            out = dir.join("results").display()
        ),
    )
    .unwrap();
    path
}

fn journal_events(run_root: &Path) -> Vec<serde_json::Value> {
    let run = std::fs::read_dir(run_root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("journal.jsonl").is_file())
        .expect("a run folder");
    std::fs::read_to_string(run.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_classical_strategy_searches_both_program_spaces() {
    for space in ["activation", "optimizer"] {
        for strategy in ["random", "evolution", "bo"] {
            let dir = std::env::temp_dir().join(format!(
                "archsmith-progrun-{}-{space}-{strategy}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let cfg = config(&dir, space, strategy);
            let out = Command::cargo_bin("archsmith")
                .unwrap()
                .args(["run", "--config", cfg.to_str().unwrap()])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{space}/{strategy}: {err}");
            let events = journal_events(&dir.join("results"));
            let finished: Vec<_> = events
                .iter()
                .filter(|e| e["type"] == "train_finished")
                .collect();
            assert_eq!(finished.len(), 3, "{space}/{strategy}: {events:?}");
            // Every evaluation is a score or a failure with its reason, never a crash.
            for f in &finished {
                let d = &f["data"];
                assert!(
                    d["score"].is_number() || d["failure"].is_object(),
                    "{space}/{strategy}: {d}"
                );
            }
            assert!(
                finished.iter().any(|f| f["data"]["score"].is_number()),
                "{space}/{strategy}: no program was scored"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// `(eval, candidate, score)` of a run's finished evaluations, by evaluation.
fn scores(run_root: &Path) -> Vec<(u64, String, Option<f64>)> {
    let mut v: Vec<_> = journal_events(run_root)
        .iter()
        .filter(|e| e["type"] == "train_finished")
        .map(|e| {
            let d = &e["data"];
            (
                d["eval"].as_u64().unwrap(),
                d["candidate"].as_str().unwrap().to_string(),
                d["score"].as_f64(),
            )
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

#[test]
fn programs_score_the_same_in_local_workers_as_in_the_driver() {
    // Random proposals do not depend on the history, so both runs try the same programs.
    for space in ["activation", "optimizer"] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), space, "random");
        let mut runs = Vec::new();
        for (name, extra) in [("inline", vec![]), ("local", vec!["--parallel", "2"])] {
            let out_dir = tmp.path().join(name);
            let out = Command::cargo_bin("archsmith")
                .unwrap()
                .args(["run", "--config", cfg.to_str().unwrap(), "--out"])
                .arg(&out_dir)
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{space}/{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            runs.push(scores(&out_dir));
        }
        assert_eq!(runs[0].len(), 3);
        assert!(
            runs[0].iter().any(|r| r.2.is_some()),
            "{space}: {:?}",
            runs[0]
        );
        assert_eq!(runs[0], runs[1], "{space}");
    }
}

#[test]
fn the_propose_prompt_shows_the_program_grammar() {
    for (space, needle) in [("activation", "sigmoid"), ("optimizer", "assign")] {
        let out = Command::cargo_bin("archsmith")
            .unwrap()
            .args(["prompt", "render", "propose", "--space", space])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("space {space}")), "{text}");
        assert!(text.contains(needle), "{text}");
    }
}

#[test]
fn train_points_program_spaces_to_train_program() {
    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .args([
            "train",
            "--space",
            "activation",
            "--task",
            "teacher",
            "--seed-arch",
            "relu",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("archsmith train-program --space activation"),
        "{err}"
    );
}
