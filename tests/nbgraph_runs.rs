//! Look-up tasks end to end on synthetic NAS-Bench-Graph tables written by the tests (so they
//! run without the package): every strategy finishes with a journal, the test accuracy stays
//! out of the model's sight, bad settings and corrupt tables are refused by name, and the
//! bench's table on a small case is a snapshot.
//!
//! The tables' folder is set once for this test binary (`ARCHSMITH_NBGRAPH_DIR`).

use archsmith::bench::{self, BenchSpec};
use archsmith::run::{prepare_new, read_journal, Event, NoProgress, Settings, StrategyKind};
use archsmith::space::gnn::{self, Gnn};
use archsmith::train::lookup::{write_table, Entry};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A deterministic stand-in for a table: every key of the space, a score with structure
/// (some operations and deeper cells are better) plus key-hashed noise, and a test accuracy
/// that differs from it.
fn synthetic_rows(ops: &[Gnn]) -> Vec<(u64, Entry)> {
    let mut rows = std::collections::BTreeMap::new();
    for link in gnn::all_links() {
        for &a in ops {
            for &b in ops {
                for &c in ops {
                    for &d in ops {
                        let o = [a, b, c, d];
                        if !gnn::is_cell(&link, &o) {
                            continue;
                        }
                        let k = gnn::key(link, o).unwrap();
                        let (cl, co) = gnn::decode(k).unwrap();
                        let op_score: f64 = co
                            .iter()
                            .map(|g| {
                                [0.3, 0.8, 0.5, 0.4, 0.9, 0.7, 0.2, 0.1, 0.6][g.index() as usize]
                            })
                            .sum::<f64>()
                            / 4.0;
                        let depth = cl.iter().filter(|&&l| l > 0).count() as f64 / 3.0;
                        let noise = (k.wrapping_mul(2654435761) % 1000) as f64 / 1000.0;
                        let valid = 0.4 + 0.3 * op_score + 0.1 * depth + 0.05 * noise;
                        rows.insert(
                            k,
                            Entry {
                                valid,
                                test: valid - 0.012_345 + 0.01 * noise,
                                latency: 0.001 + noise / 1000.0,
                                params_m: 0.1 + op_score,
                            },
                        );
                    }
                }
            }
        }
    }
    rows.into_iter().collect()
}

/// The synthetic tables' folder: cora and proteins good, pubmed corrupt, citeseer missing.
fn tables() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        write_table(&dir.join("cora.csv"), "cora", &synthetic_rows(&Gnn::ALL)).unwrap();
        write_table(
            &dir.join("proteins.csv"),
            "proteins",
            &synthetic_rows(&Gnn::PROTEINS),
        )
        .unwrap();
        write_table(
            &dir.join("pubmed.csv"),
            "pubmed",
            &synthetic_rows(&Gnn::ALL),
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join("pubmed.csv")).unwrap();
        std::fs::write(dir.join("pubmed.csv"), &text[..text.len() / 2]).unwrap();
        std::env::set_var(archsmith::train::lookup::DIR_ENV, &dir);
        dir
    })
}

fn toml(out: &Path, space: &str, task: &str, strategy: &str, evals: u64) -> String {
    format!(
        r#"
seed = 3
out = "{out}"

[space]
name = "{space}"

[task]
name = "{task}"

[strategy]
kind = "{strategy}"

[strategy.evolution]
population = 4
tournament = 2

[strategy.bo]
initial = 4

[strategy.llm_evolution]
population = 4
tournament = 2

[budget]
evaluations = {evals}
stall_rounds = 20

[llm]
provider = "mock"
model = "mock"
mock_replies = [
  "PLAN: deep sage.\nCANDIDATE: nbgraph(sage(0), sage(1), gcn(2), arma(3))\nPREDICTED: 0.8",
  "PLAN: wide.\nCANDIDATE: nbgraph(gcn(0), sage(0), arma(0), gcn(0))\nPREDICTED: 0.7\nCANDIDATE: nbgraph(gcn(0), relu, arma(0), gcn(0))\nPREDICTED: 0.1",
]
"#,
        out = out.display()
    )
}

fn settings(text: &str) -> Settings {
    Settings::from_toml(text, "test.toml").expect("settings")
}

fn lookup(_: &str) -> Option<String> {
    None
}

#[test]
fn every_strategy_finishes_on_a_lookup_task_and_never_sees_the_test_score() {
    tables();
    let tmp = tempfile::tempdir().unwrap();
    for strategy in ["random", "evolution", "bo", "llm", "llm-evolution"] {
        let p = prepare_new(
            settings(&toml(tmp.path(), "nbgraph", "nbgraph:cora", strategy, 12)),
            "test.toml",
            &lookup,
        )
        .unwrap_or_else(|e| panic!("{strategy}: {e:#}"));
        let dir = p.dir.clone();
        let out = p
            .run(Box::new(NoProgress))
            .unwrap_or_else(|e| panic!("{strategy}: {e:#}"));
        assert_eq!(out.status, "completed", "{strategy}: {}", out.reason);
        let events = read_journal(&dir.join("journal.jsonl")).unwrap().events;
        let fin: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::TrainFinished(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(fin.len(), 12, "{strategy}");
        let mut keys = std::collections::HashSet::new();
        for t in &fin {
            let l = t.lookup.expect("a look-up record");
            assert!(t.score.is_some(), "{strategy}: {t:?}");
            assert!(l.test != t.score.unwrap());
            assert!(
                keys.insert(l.key),
                "{strategy}: an isomorphic cell evaluated twice"
            );
            assert!(t.params > 0);
        }
        if strategy.starts_with("llm") {
            // The model saw validation scores, never a test accuracy.
            let llm = std::fs::read_to_string(dir.join("llm.jsonl")).unwrap();
            assert!(
                !llm.contains("test"),
                "{strategy}: the prompt mentions test"
            );
            for t in &fin {
                let test = t.lookup.unwrap().test;
                for digits in [format!("{test:.4}"), format!("{test}")] {
                    assert!(
                        !llm.contains(&digits),
                        "{strategy}: {digits} reached the model"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_settings_and_broken_tables_are_refused_by_name() {
    let dir = tables();
    let tmp = tempfile::tempdir().unwrap();
    let err = |space: &str, task: &str, extra: &str| {
        // Top-level keys go before the tables, tables after.
        let text = if extra.starts_with('[') || extra.starts_with('\n') {
            toml(tmp.path(), space, task, "random", 5) + extra
        } else {
            format!("{extra}{}", toml(tmp.path(), space, task, "random", 5))
        };
        match prepare_new(settings(&text), "test.toml", &lookup) {
            Ok(_) => panic!("{task} on {space} was accepted"),
            Err(e) => format!("{e:#}"),
        }
    };
    let e = err("nbgraph", "nbgraph:pubmed", "");
    assert!(
        e.contains(&dir.join("pubmed.csv").display().to_string()),
        "{e}"
    );
    assert!(
        e.contains("corrupt") && e.contains("scripts/setup-nbgraph.sh"),
        "{e}"
    );
    let e = err("nbgraph", "nbgraph:citeseer", "");
    assert!(
        e.contains(&dir.join("citeseer.csv").display().to_string()),
        "{e}"
    );
    assert!(
        e.contains("missing") && e.contains("scripts/setup-nbgraph.sh"),
        "{e}"
    );
    let e = err("nbgraph", "nbgraph:proteins", "");
    assert!(e.contains("nbgraph_proteins"), "{e}");
    let e = err("nbgraph", "nbgraph:nowhere", "");
    assert!(e.contains("nbgraph:cora"), "{e}");
    let e = err(
        "nbgraph",
        "nbgraph:cora",
        "\n[fidelity]\nsuccessive_halving = true\n",
    );
    assert!(e.contains("successive halving does not apply"), "{e}");
    let e = err("nbgraph", "nbgraph:cora", "parallel = 2\n");
    assert!(e.contains("one at a time"), "{e}");
}

#[test]
fn proteins_runs_in_its_own_space() {
    tables();
    let tmp = tempfile::tempdir().unwrap();
    let p = prepare_new(
        settings(&toml(
            tmp.path(),
            "nbgraph_proteins",
            "nbgraph:proteins",
            "evolution",
            15,
        )),
        "test.toml",
        &lookup,
    )
    .unwrap();
    let out = p.run(Box::new(NoProgress)).unwrap();
    assert_eq!(out.evaluations, 15);
    assert!(out.best.unwrap().candidate.starts_with("nbgraph("));
}

fn spec(
    out: &Path,
    datasets: &[&str],
    strategies: &[StrategyKind],
    seeds: u64,
    evals: u64,
) -> BenchSpec {
    let base = settings(&toml(out, "nbgraph", "nbgraph:cora", "random", 1));
    BenchSpec {
        datasets: datasets.iter().map(|d| d.to_string()).collect(),
        strategies: strategies.to_vec(),
        seeds,
        first_seed: 0,
        evaluations: evals,
        threads: 2,
        out: out.to_path_buf(),
        base,
    }
}

#[test]
fn the_bench_table_on_a_small_case() {
    tables();
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(
        tmp.path(),
        &["cora", "proteins"],
        &[
            StrategyKind::Random,
            StrategyKind::Evolution,
            StrategyKind::Bo,
        ],
        3,
        20,
    );
    let (b, runs) = bench::run(&s, &lookup, &|_, _| {}).unwrap();
    assert_eq!(runs.len(), 18);
    assert!(runs.iter().all(|r| r.valid.len() == 20));
    insta::assert_snapshot!(bench::markdown(&b));
}

#[test]
fn simulated_random_search_agrees_with_the_exact_expectation() {
    tables();
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(tmp.path(), &["proteins"], &[StrategyKind::Random], 60, 25);
    let (b, _) = bench::run(&s, &lookup, &|_, _| {}).unwrap();
    let exact = &b.tables[0].random_exact;
    let r = &b.rows[0];
    let z = (r.best_valid - exact.best_valid) / r.best_valid_se;
    assert!(
        z.abs() < 3.0,
        "simulated {} +- {} against exact {} (z = {z})",
        r.best_valid,
        r.best_valid_se,
        exact.best_valid
    );
    let zt = (r.test - exact.test_of_best) / r.test_se;
    assert!(
        zt.abs() < 3.0,
        "test {} +- {} against {}",
        r.test,
        r.test_se,
        exact.test_of_best
    );
}

/// SIGTERM (as Ctrl-C) stops `archsmith bench`: the searches in flight record their end, the
/// local model server each started is stopped, and the bench exits 130 saying where the runs
/// are, instead of leaving the server running. A model call in flight (here one that would
/// take a minute) is abandoned, not waited for.
#[test]
fn a_terminated_bench_stops_its_searches_and_their_model_servers() {
    let have_python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_python {
        eprintln!("SKIPPED: python3 is not installed; the stand-in llama-server needs it");
        return;
    }
    let tables = tables();
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("server.pid");
    let model = tmp.path().join("fake.gguf");
    std::fs::write(
        &model,
        format!(
            "GGUF\nreply_delay=0.2\nslow_after=3\nslow_delay=60\npid_file={}\n",
            pid_file.display()
        ),
    )
    .unwrap();
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/fake-llama-server");
    let cfg = tmp.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[strategy.llm]\nk = 2\nrepairs = 0\n[llm]\nprovider = \"local\"\nmodel = \"fake\"\n\
             max_tokens = 50\n[llm.retry]\ndelay_scale = 0.0\n[llm.local]\nserver = \"{}\"\n\
             model_path = \"{}\"\nstart_timeout_secs = 30.0\n",
            server.display(),
            model.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("bench");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_archsmith"))
        .args([
            "bench",
            "--tasks",
            "cora",
            "--strategies",
            "llm",
            "--seeds",
            "1",
        ])
        .args(["--evals", "500", "--threads", "1", "--no-html"])
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .env(archsmith::train::lookup::DIR_ENV, tables)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the search has looked up a few cells with the server answering.
    let t0 = std::time::Instant::now();
    let journal = loop {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the search did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let found = std::fs::read_dir(out.join("runs")).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("journal.jsonl")))
                .find(|j| j.is_file())
        });
        if let Some(j) = found {
            let text = std::fs::read_to_string(&j).unwrap_or_default();
            if text.matches("\"train_finished\"").count() >= 3 && pid_file.is_file() {
                break j;
            }
        }
    };
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    // The fourth call, now in flight, takes a minute.
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let killed = std::time::Instant::now();
    let done = child.wait_with_output().unwrap();
    assert!(
        killed.elapsed() < std::time::Duration::from_secs(30),
        "the bench waited {:?} for the model call in flight",
        killed.elapsed()
    );
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{err}");
    assert!(err.contains("bench interrupted"), "{err}");
    let last = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .last()
        .map(str::to_string)
        .unwrap();
    assert!(
        last.contains("\"run_finished\"") && last.contains("\"interrupted\""),
        "{last}"
    );
    let alive = std::process::Command::new("kill")
        .args(["-0", pid.trim()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "the model server {pid} still runs");
}
