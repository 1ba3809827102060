//! The agent loop's own cost per candidate, with a history of 1,000 evaluated candidates:
//! the strategy's proposal, validation, de-duplication, five journal events written (three
//! fsyncs, committed in groups), the history update and the best-candidate files. Training is a fake evaluator (a
//! score from the candidate's size, no tensors) and there is no model latency.
//!
//! Run with `cargo bench --bench run_loop`. The journal goes to `$ARCHSMITH_BENCH_DIR` (default:
//! a temporary folder), since fsync costs what the disk makes it cost: `/dev/shm` measures the
//! loop alone, a disk folder adds its fsync latency.

use archsmith::exec::fake::FakeEvaluator;
use archsmith::exec::inline::Inline;
use archsmith::run::runner::Recovered;
use archsmith::run::{build_strategy, Experiment, Journal, Runner, Settings};
use archsmith::search::History;
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};

const HISTORY: u64 = 1_000;

fn settings(strategy: &str, out: &std::path::Path) -> Settings {
    let text = format!(
        r#"
seed = 1
out = "{}"
[space]
name = "einspace"
[space.limits]
max_params = 100000
max_flops = 20000000
max_activation_bytes = 4194304
[task]
name = "textures"
[strategy]
kind = "{strategy}"
[budget]
evaluations = 100000000
stall_rounds = 1000
"#,
        out.display()
    );
    Settings::from_toml(&text, "bench").expect("settings")
}

fn bench(c: &mut Criterion) {
    let root = std::env::var_os("ARCHSMITH_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(root).expect("temp dir");
    let mut g = c.benchmark_group("loop_overhead_per_candidate_history_1000");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    // ARCHSMITH_BENCH_STRATEGIES=bo,random picks strategies (each first runs 1,000 candidates).
    let wanted = std::env::var("ARCHSMITH_BENCH_STRATEGIES")
        .unwrap_or_else(|_| "random,evolution,bo".into());
    for strategy in ["random", "evolution", "bo"] {
        if !wanted.split(',').any(|w| w.trim() == strategy) {
            continue;
        }
        let dir = tmp.path().join(strategy);
        std::fs::create_dir_all(&dir).unwrap();
        let exp = Experiment::resolve(settings(strategy, tmp.path()), "bench").expect("resolve");
        let journal = Journal::create(&dir.join("journal.jsonl")).unwrap();
        let state = Recovered {
            history: History::new(true),
            ..Default::default()
        };
        let mut runner = Runner::new(
            &exp,
            dir.clone(),
            strategy.into(),
            journal,
            build_strategy(&exp, None).unwrap(),
            Box::new(Inline::new(Box::new(FakeEvaluator { epochs: 1 }))),
            None,
            state,
        )
        .unwrap();
        let t = Instant::now();
        while runner.evaluations() < HISTORY {
            runner.step().expect("step");
        }
        eprintln!(
            "{strategy}: first {HISTORY} candidates in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        g.bench_function(strategy, |b| {
            b.iter_custom(|iters| {
                let target = runner.evaluations() + iters;
                let t = Instant::now();
                while runner.evaluations() < target {
                    runner.step().expect("step");
                }
                t.elapsed()
            })
        });
    }
    // The journal alone: one event written, flushed and fsync'd (a candidate writes five or
    // six), to tell the disk's share from the loop's.
    let mut journal = Journal::create(&tmp.path().join("journal-only.jsonl")).unwrap();
    let event = archsmith::run::Event::Note(archsmith::run::journal::NoteEvent {
        round: 0,
        message: "x".repeat(200),
    });
    g.bench_function("journal_append_one_event_fsync", |b| {
        b.iter(|| journal.append(&event).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
