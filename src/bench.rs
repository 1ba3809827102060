//! `archsmith bench`: measured search quality on a tabular benchmark. Runs every strategy
//! for every seed on every NAS-Bench-Graph task with a budget of evaluations (each a complete
//! run with its folder and journal), in parallel threads, then reads the journals back into
//! one table: per task and strategy, the mean and standard error over seeds of the best
//! validation accuracy after N evaluations, its regret to the table's best, the test accuracy
//! of the best-validation candidate, and the median number of evaluations to reach the
//! table's top 1%.
//!
//! Next to the simulated searches stands the exact expectation of random search without
//! replacement, computed from the table itself ([`Exact`]): the `nbgraph` sampler draws
//! uniformly among the distinct cells and the loop never evaluates a cell twice, so random
//! search is a uniformly random ordering of the table, and the simulated random runs must
//! agree with the expectation within noise (a test checks it).

use crate::run::{prepare_new, read_journal, Event, NoProgress, Settings, StrategyKind};
use crate::train::lookup::{Dataset, Table};
use anyhow::{anyhow, Context as _, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    /// Data sets of NAS-Bench-Graph (`cora`, ...); each is task `nbgraph:<dataset>`.
    pub datasets: Vec<String>,
    pub strategies: Vec<StrategyKind>,
    /// Seeds `first_seed .. first_seed + seeds`.
    pub seeds: u64,
    pub first_seed: u64,
    pub evaluations: u64,
    /// Searches run at once (threads); look-ups are cheap, so one per core.
    pub threads: usize,
    /// The bench's folder: run folders go to `runs/`, the table next to them.
    pub out: PathBuf,
    /// Settings every run starts from (strategy options, an `[llm]` section); the bench sets
    /// space, task, strategy, seed, budget and folder.
    pub base: Settings,
}

/// One finished search.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub dataset: String,
    pub strategy: String,
    pub seed: u64,
    pub dir: PathBuf,
    /// Validation score of each evaluation, in evaluation order (`None`: failed).
    pub valid: Vec<Option<f64>>,
    /// Test accuracy of each evaluation (from the journal's look-up record).
    pub test: Vec<Option<f64>>,
    /// Wall time of the search loop.
    pub seconds: f64,
}

/// The exact expectation of random search without replacement over a table's distinct
/// architectures, after `n` evaluations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exact {
    pub best_valid: f64,
    /// Test accuracy of the best-validation architecture (ties broken uniformly at random).
    pub test_of_best: f64,
    /// Median number of evaluations to reach the top 1%; `None` when beyond `n`.
    pub median_to_top1: Option<u64>,
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub dataset: String,
    pub strategy: String,
    pub runs: usize,
    pub evaluations: u64,
    pub best_valid: f64,
    pub best_valid_se: f64,
    pub regret: f64,
    pub regret_se: f64,
    pub test: f64,
    pub test_se: f64,
    /// Median over seeds of the evaluations to reach the top 1% (`None`: more than half the
    /// seeds did not reach it within the budget).
    pub median_to_top1: Option<f64>,
    /// Seeds that reached the top 1%.
    pub reached_top1: usize,
}

/// A table's summary facts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableFacts {
    pub dataset: String,
    pub architectures: usize,
    pub best_valid: f64,
    /// The validation accuracy a cell needs to be in the top 1%.
    pub top1_threshold: f64,
    pub random_exact: Exact,
}

/// The bench's result.
#[derive(Clone, Debug, Serialize)]
pub struct Bench {
    pub evaluations: u64,
    pub seeds: u64,
    pub tables: Vec<TableFacts>,
    pub rows: Vec<Row>,
    /// Mean loop time of one search, in seconds.
    pub mean_run_seconds: f64,
    pub total_seconds: f64,
}

/// The validation accuracy the top 1% of `valid` reaches: the value of the ceil(M/100)-th
/// best.
fn top1_threshold(valid: &[f64]) -> f64 {
    let mut v = valid.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = v.len().div_ceil(100).max(1);
    v.get(k - 1).copied().unwrap_or(f64::NAN)
}

/// The exact expectation of random search without replacement: `n` distinct architectures
/// drawn uniformly from `entries` (validation, test).
fn exact_random(entries: &[(f64, f64)], n: u64) -> Exact {
    let m = entries.len();
    let n = (n as usize).min(m).max(1);
    let mut sorted: Vec<(f64, f64)> = entries.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // P(the maximum is the k-th smallest, 1-based) = C(k-1, n-1) / C(m, n), for k >= n.
    // From k = m down: p_m = n/m and p_{k-1} = p_k (k-n)/(k-1).
    let mut p = vec![0.0; m + 1];
    p[m] = n as f64 / m as f64;
    for k in (n + 1..=m).rev() {
        p[k - 1] = p[k] * (k - n) as f64 / (k - 1) as f64;
    }
    // Ties in validation: the first-found of the tied maxima is uniform among them, so each
    // tied group contributes its mean test accuracy.
    let mut group_test = vec![0.0; m];
    let mut i = 0;
    while i < m {
        let mut j = i;
        while j < m && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mean = sorted[i..j].iter().map(|e| e.1).sum::<f64>() / (j - i) as f64;
        for g in group_test.iter_mut().take(j).skip(i) {
            *g = mean;
        }
        i = j;
    }
    let mut best = 0.0;
    let mut test = 0.0;
    for k in n..=m {
        best += p[k] * sorted[k - 1].0;
        test += p[k] * group_test[k - 1];
    }
    // Hitting time of the top 1%: P(T > t) = C(m-K, t) / C(m, t).
    let threshold = top1_threshold(&entries.iter().map(|e| e.0).collect::<Vec<_>>());
    let top = entries.iter().filter(|e| e.0 >= threshold).count();
    let mut survive = 1.0;
    let mut median = None;
    for t in 1..=n {
        // P(T > t) = P(T > t-1) * (m-K-(t-1)) / (m-(t-1)).
        let left = (m - top) as f64 - (t - 1) as f64;
        survive *= (left.max(0.0)) / (m - (t - 1)) as f64;
        if survive <= 0.5 {
            median = Some(t as u64);
            break;
        }
    }
    Exact {
        best_valid: best,
        test_of_best: test,
        median_to_top1: median,
    }
}

fn mean_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The metrics of one group of runs (one task, one strategy) on `table`.
pub fn row(dataset: &str, strategy: &str, runs: &[&RunResult], table: &Table, n: u64) -> Row {
    let best_table = table.best_valid();
    let threshold = top1_threshold(&table.entries.values().map(|e| e.valid).collect::<Vec<_>>());
    let mut bests = Vec::new();
    let mut tests = Vec::new();
    let mut hits = Vec::new();
    for r in runs {
        let mut best: Option<(f64, f64)> = None;
        let mut hit = None;
        for (i, v) in r.valid.iter().take(n as usize).enumerate() {
            let Some(v) = *v else { continue };
            if best.is_none_or(|(b, _)| v > b) {
                best = Some((v, r.test[i].unwrap_or(f64::NAN)));
            }
            if hit.is_none() && v >= threshold {
                hit = Some(i as f64 + 1.0);
            }
        }
        if let Some((b, t)) = best {
            bests.push(b);
            tests.push(t);
        }
        // A seed that never reached the top counts as beyond the budget.
        hits.push(hit.unwrap_or(f64::INFINITY));
    }
    let (bm, bse) = mean_se(&bests);
    let regrets: Vec<f64> = bests.iter().map(|b| best_table - b).collect();
    let (rm, rse) = mean_se(&regrets);
    let (tm, tse) = mean_se(&tests);
    let reached = hits.iter().filter(|h| h.is_finite()).count();
    let med = if hits.is_empty() {
        None
    } else {
        Some(median(&mut hits)).filter(|m| m.is_finite())
    };
    Row {
        dataset: dataset.to_string(),
        strategy: strategy.to_string(),
        runs: runs.len(),
        evaluations: n,
        best_valid: bm,
        best_valid_se: bse,
        regret: rm,
        regret_se: rse,
        test: tm,
        test_se: tse,
        median_to_top1: med,
        reached_top1: reached,
    }
}

/// Reads a finished search's journal.
fn read_run(
    dir: &Path,
    dataset: &str,
    strategy: &str,
    seed: u64,
    seconds: f64,
) -> Result<RunResult> {
    let read = read_journal(&dir.join("journal.jsonl"))?;
    let mut fin: Vec<_> = read
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::TrainFinished(t) => Some(t),
            _ => None,
        })
        .collect();
    fin.sort_by_key(|t| t.eval);
    Ok(RunResult {
        dataset: dataset.to_string(),
        strategy: strategy.to_string(),
        seed,
        dir: dir.to_path_buf(),
        valid: fin.iter().map(|t| t.score).collect(),
        test: fin.iter().map(|t| t.lookup.map(|l| l.test)).collect(),
        seconds,
    })
}

/// Runs one search and reads it back.
fn one(
    spec: &BenchSpec,
    dataset: &str,
    strategy: StrategyKind,
    seed: u64,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<RunResult> {
    let d = Dataset::by_name(dataset)
        .ok_or_else(|| anyhow!("unknown NAS-Bench-Graph data set `{dataset}`"))?;
    let mut s = spec.base.clone();
    s.space.name = d.space.to_string();
    // Look-ups take no split sizes, recipe, workers or successive halving.
    s.task = Default::default();
    s.task.name = format!("nbgraph:{dataset}");
    s.executor = Default::default();
    s.fidelity = Default::default();
    s.strategy.kind.0 = strategy;
    s.seed = seed;
    s.budget.evaluations = spec.evaluations;
    s.budget.wall_time_secs = None;
    s.out = spec.out.join("runs");
    s.name = Some(format!("{dataset}-{}", strategy.name()));
    s.parallel = 1;
    let p = prepare_new(s, "bench", lookup)
        .with_context(|| format!("{dataset}, {}, seed {seed}", strategy.name()))?;
    let dir = p.dir.clone();
    let t = std::time::Instant::now();
    p.run(Box::new(NoProgress))
        .with_context(|| format!("{dataset}, {}, seed {seed}", strategy.name()))?;
    read_run(
        &dir,
        dataset,
        strategy.name(),
        seed,
        t.elapsed().as_secs_f64(),
    )
}

/// Runs the bench: every (dataset, strategy, seed) search, `spec.threads` at a time.
/// `done(k, total)` is called as searches finish.
pub fn run(
    spec: &BenchSpec,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    done: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Bench, Vec<RunResult>)> {
    let start = std::time::Instant::now();
    let mut tables = BTreeMap::new();
    for d in &spec.datasets {
        tables.insert(d.clone(), Table::shared(d)?);
    }
    let mut jobs = Vec::new();
    for d in &spec.datasets {
        for &s in &spec.strategies {
            for seed in spec.first_seed..spec.first_seed + spec.seeds {
                jobs.push((d.clone(), s, seed));
            }
        }
    }
    std::fs::create_dir_all(spec.out.join("runs"))
        .with_context(|| format!("cannot create {}", spec.out.join("runs").display()))?;
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<RunResult>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..spec.threads.max(1).min(jobs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((d, s, seed)) = jobs.get(i) else {
                    break;
                };
                let r = one(spec, d, *s, *seed, lookup);
                let failed = r.is_err();
                if let Ok(mut v) = results.lock() {
                    v.push(r);
                }
                done(finished.fetch_add(1, Ordering::SeqCst) + 1, jobs.len());
                if failed {
                    // Stop handing out work: the first error is the bench's.
                    next.store(jobs.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let mut runs = Vec::new();
    for r in results
        .into_inner()
        .map_err(|_| anyhow!("a bench thread panicked"))?
    {
        runs.push(r?);
    }
    runs.sort_by(|a, b| (&a.dataset, &a.strategy, a.seed).cmp(&(&b.dataset, &b.strategy, b.seed)));
    let mut facts = Vec::new();
    let mut rows = Vec::new();
    for d in &spec.datasets {
        let table = &tables[d];
        let entries: Vec<(f64, f64)> = table.entries.values().map(|e| (e.valid, e.test)).collect();
        facts.push(TableFacts {
            dataset: d.clone(),
            architectures: entries.len(),
            best_valid: table.best_valid(),
            top1_threshold: top1_threshold(&entries.iter().map(|e| e.0).collect::<Vec<_>>()),
            random_exact: exact_random(&entries, spec.evaluations),
        });
        for s in &spec.strategies {
            let group: Vec<&RunResult> = runs
                .iter()
                .filter(|r| &r.dataset == d && r.strategy == s.name())
                .collect();
            rows.push(row(d, s.name(), &group, table, spec.evaluations));
        }
    }
    let mean_run_seconds = if runs.is_empty() {
        0.0
    } else {
        runs.iter().map(|r| r.seconds).sum::<f64>() / runs.len() as f64
    };
    Ok((
        Bench {
            evaluations: spec.evaluations,
            seeds: spec.seeds,
            tables: facts,
            rows,
            mean_run_seconds,
            total_seconds: start.elapsed().as_secs_f64(),
        },
        runs,
    ))
}

/// The NAS-Bench-Graph paper's Table 1 (mean test accuracy, %, from a secondary extraction):
/// data set, then Random, EA, RL, GraphNAS, Auto-GNN.
pub const PUBLISHED: &[(&str, [f64; 5])] = &[
    ("cora", [82.09, 81.85, 82.27, 82.04, 81.80]),
    ("citeseer", [70.49, 70.48, 70.66, 70.89, 70.76]),
    ("pubmed", [77.91, 77.96, 77.96, 77.79, 77.69]),
    ("physics", [92.35, 92.22, 92.48, 92.43, 92.42]),
    ("photo", [92.44, 92.43, 92.42, 92.43, 92.38]),
    ("arxiv", [72.04, 71.91, 72.13, 72.00, 72.13]),
];
pub const PUBLISHED_METHODS: [&str; 5] = ["Random", "EA", "RL", "GraphNAS", "Auto-GNN"];

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}", 100.0 * x)
    } else {
        "-".into()
    }
}

/// The table as Markdown (timings excluded, so that it is reproducible).
pub fn markdown(b: &Bench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "NAS-Bench-Graph, {} evaluations per search, {} seeds. Accuracies in %, mean ± standard error over seeds. \
         Strategies see validation accuracy only; `test` is the test accuracy of the cell with the best validation accuracy found. \
         Regret = the table's best validation accuracy - the best found. `top 1%`: median evaluations to reach the table's top 1% by validation \
         (`>N` when more than half the seeds did not; reached/seeds in brackets). `random (exact)` is the exact expectation of random search \
         without replacement over the table's distinct cells.\n",
        b.evaluations, b.seeds
    );
    let _ = writeln!(
        s,
        "| task | strategy | best valid | regret | test of best valid | top 1% |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for f in &b.tables {
        let e = &f.random_exact;
        let _ = writeln!(
            s,
            "| {} | random (exact) | {} | {} | {} | {} |",
            f.dataset,
            pct(e.best_valid),
            pct(f.best_valid - e.best_valid),
            pct(e.test_of_best),
            e.median_to_top1
                .map_or(format!(">{}", b.evaluations), |m| m.to_string())
        );
        for r in b.rows.iter().filter(|r| r.dataset == f.dataset) {
            let _ = writeln!(
                s,
                "| {} | {} | {} ± {} | {} ± {} | {} ± {} | {} ({}/{}) |",
                r.dataset,
                r.strategy,
                pct(r.best_valid),
                pct(r.best_valid_se),
                pct(r.regret),
                pct(r.regret_se),
                pct(r.test),
                pct(r.test_se),
                r.median_to_top1
                    .map_or(format!(">{}", r.evaluations), |m| format!("{m}")),
                r.reached_top1,
                r.runs
            );
        }
    }
    let _ = writeln!(s, "\n| task | cells | best valid in table | top 1% from |");
    let _ = writeln!(s, "|---|---|---|---|");
    for f in &b.tables {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            f.dataset,
            f.architectures,
            pct(f.best_valid),
            pct(f.top1_threshold)
        );
    }
    let published: Vec<_> = PUBLISHED
        .iter()
        .filter(|(d, _)| b.tables.iter().any(|f| f.dataset == *d))
        .collect();
    if !published.is_empty() {
        let strategies: Vec<&str> = {
            let mut v: Vec<&str> = Vec::new();
            for r in &b.rows {
                if !v.contains(&r.strategy.as_str()) {
                    v.push(&r.strategy);
                }
            }
            v
        };
        let _ = writeln!(
            s,
            "\nPublished (Qin et al. 2022, Table 1, mean test accuracy %, secondary extraction, approximate) beside ours. \
             Protocols differ: their scripts appear to select by test accuracy with a few hundred evaluations; \
             ours select by validation accuracy with {} evaluations and report the selected cell's test accuracy.\n",
            b.evaluations
        );
        let mut head = String::from("| task |");
        let mut rule = String::from("|---|");
        for m in PUBLISHED_METHODS {
            head += &format!(" {m} (paper) |");
            rule += "---|";
        }
        for st in &strategies {
            head += &format!(" {st} (ours) |");
            rule += "---|";
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for (d, nums) in published {
            let mut line = format!("| {d} |");
            for n in nums {
                line += &format!(" {n:.2} |");
            }
            for st in &strategies {
                let t = b
                    .rows
                    .iter()
                    .find(|r| r.dataset == *d && r.strategy == *st)
                    .map_or("-".into(), |r| pct(r.test));
                line += &format!(" {t} |");
            }
            let _ = writeln!(s, "{line}");
        }
    }
    s
}

/// The rows as CSV.
pub fn csv(b: &Bench) -> String {
    let mut s = String::from("task,strategy,runs,evaluations,best_valid,best_valid_se,regret,regret_se,test,test_se,median_to_top1,reached_top1\n");
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
    for f in &b.tables {
        let e = &f.random_exact;
        let _ = writeln!(
            s,
            "{},random-exact,,{},{},0,{},0,{},0,{},",
            f.dataset,
            b.evaluations,
            e.best_valid,
            f.best_valid - e.best_valid,
            e.test_of_best,
            opt(e.median_to_top1.map(|m| m as f64))
        );
    }
    for r in &b.rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            r.dataset,
            r.strategy,
            r.runs,
            r.evaluations,
            r.best_valid,
            r.best_valid_se,
            r.regret,
            r.regret_se,
            r.test,
            r.test_se,
            opt(r.median_to_top1),
            r.reached_top1
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    #[test]
    fn the_exact_expectation_matches_brute_force_and_simulation() {
        // Small enough to enumerate every subset of 3 of 7.
        let entries: Vec<(f64, f64)> = [0.1, 0.5, 0.5, 0.3, 0.9, 0.2, 0.7]
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as f64))
            .collect();
        let e = exact_random(&entries, 3);
        let mut total = 0.0;
        let mut count = 0.0;
        for a in 0..7 {
            for b in a + 1..7 {
                for c in b + 1..7 {
                    total += [a, b, c]
                        .iter()
                        .map(|&i| entries[i].0)
                        .fold(f64::MIN, f64::max);
                    count += 1.0;
                }
            }
        }
        assert!((e.best_valid - total / count).abs() < 1e-12);
        // Simulated draws agree with the expected test accuracy of the best (ties included).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (mut sb, mut st) = (0.0, 0.0);
        let trials = 200_000;
        let mut idx: Vec<usize> = (0..7).collect();
        for _ in 0..trials {
            idx.shuffle(&mut rng);
            let mut best = (f64::MIN, 0.0);
            for &i in &idx[..3] {
                if entries[i].0 > best.0 {
                    best = entries[i];
                }
            }
            sb += best.0;
            st += best.1;
        }
        assert!((sb / trials as f64 - e.best_valid).abs() < 0.003);
        assert!((st / trials as f64 - e.test_of_best).abs() < 0.02);
    }

    #[test]
    fn the_top_one_percent_and_its_median_hitting_time() {
        let entries: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 0.0)).collect();
        assert_eq!(
            top1_threshold(&entries.iter().map(|e| e.0).collect::<Vec<_>>()),
            990.0
        );
        // 10 of 1000 cells: P(T > t) = C(990, t)/C(1000, t) crosses 1/2 at t = 67.
        assert_eq!(exact_random(&entries, 100).median_to_top1, Some(67));
        assert_eq!(exact_random(&entries, 50).median_to_top1, None);
    }
}
