//! What the executor tests share: a tiny search on einspace and `textures`, running it with
//! the archsmith binary, and reading its journal back.
#![allow(dead_code)]

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const BIN: &str = env!("CARGO_BIN_EXE_archsmith");

/// A tiny search: two evaluations at once, evolution, small einspace candidates on `textures`
/// with `train` training examples. `executor` goes into the `[executor]` table.
pub fn tiny_search(
    out: &Path,
    seed: u64,
    evals: u64,
    epochs: usize,
    train: usize,
    executor: &str,
) -> String {
    format!(
        r#"
seed = {seed}
out = "{out}"
device = "cpu"
parallel = 2

[executor]
threads = 1
{executor}

[space]
name = "einspace"
[space.limits]
max_params = 30000
max_flops = 3000000
max_activation_bytes = 1048576

[task]
name = "textures"
train_size = {train}
valid_size = 64
test_size = 16
[task.recipe]
epochs = {epochs}
batch_size = 32

[strategy]
kind = "evolution"
[strategy.evolution]
population = 3
tournament = 2

[budget]
evaluations = {evals}
stall_rounds = 5
"#,
        out = out.display()
    )
}

/// Writes `toml` to `out/x.toml`, runs `archsmith run` on it (which must succeed) and returns
/// the run folder.
pub fn run_config(out: &Path, toml: &str) -> PathBuf {
    std::fs::create_dir_all(out).unwrap();
    let cfg = out.join("x.toml");
    std::fs::write(&cfg, toml).unwrap();
    let o = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run_dir(out)
}

/// The (latest) run folder in `out`.
pub fn run_dir(out: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("journal.jsonl").is_file())
        .collect();
    dirs.sort();
    dirs.pop().expect("a run folder")
}

/// The journal's events (a torn last line is skipped).
pub fn journal(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `data` of the events of type `t`.
pub fn of_type<'a>(ev: &'a [Value], t: &str) -> Vec<&'a Value> {
    ev.iter()
        .filter(|e| e["type"] == t)
        .map(|e| &e["data"])
        .collect()
}

/// `(eval, hash, candidate, score, epochs)` of every finished evaluation, by evaluation.
pub fn finished(ev: &[Value]) -> Vec<(u64, String, String, Option<f64>, u64)> {
    let mut v: Vec<_> = of_type(ev, "train_finished")
        .into_iter()
        .map(|d| {
            (
                d["eval"].as_u64().unwrap(),
                d["hash"].as_str().unwrap().to_string(),
                d["candidate"].as_str().unwrap().to_string(),
                d["score"].as_f64(),
                d["epochs"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

/// A wrapper script for `archsmith` in `dir`: runs `body`, a shell snippet, with `$BIN` set to
/// archsmith; returns its path.
pub fn wrapper(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\nBIN='{BIN}'\n{body}\n")).unwrap();
    std::process::Command::new("chmod")
        .args(["+x", p.to_str().unwrap()])
        .status()
        .unwrap();
    p.display().to_string()
}
