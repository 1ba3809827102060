//! Every example experiment in `configs/` parses, validates and resolves against its space and
//! task, and `run --dry-run` prints the settled settings.

use archsmith::run::{Experiment, Settings};
use assert_cmd::Command;

#[test]
fn every_example_config_resolves() {
    let mut n = 0;
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let file = path.display().to_string();
        let s = Settings::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
        s.validate(&file).unwrap_or_else(|e| panic!("{e}"));
        let exp = Experiment::resolve(s, &file).unwrap_or_else(|e| panic!("{e}"));
        assert!(exp.recipe.epochs >= 1, "{file}");
        n += 1;
    }
    assert!(n >= 9, "found {n} configs");
}

#[test]
fn dry_run_settles_auto_and_applies_flags() {
    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .args([
            "run",
            "--dry-run",
            "--evals",
            "7",
            "--seed",
            "3",
            "--task",
            "glyph-sum",
        ])
        .env_remove("OPENAI_API_KEY")
        // No local model either (it may be installed on this machine): then evolution.
        .env("ARCHSMITH_LLM_HOME", "/nonexistent/archsmith-llm")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strategy evolution (auto): OPENAI_API_KEY is not set"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let s = Settings::from_toml(&text, "stdout").unwrap();
    assert_eq!(s.budget.evaluations, 7);
    assert_eq!(s.seed, 3);
    assert_eq!(s.task.name, "glyph-sum");
    assert_eq!(s.strategy.kind.0.name(), "evolution");

    let out = Command::cargo_bin("archsmith")
        .unwrap()
        .args(["run", "--dry-run"])
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strategy llm (auto): OPENAI_API_KEY is set"),
        "{err}"
    );
}
