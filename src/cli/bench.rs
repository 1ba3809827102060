//! `archsmith bench`: strategies x seeds x NAS-Bench-Graph tasks x a budget, in parallel, into
//! one table.

use anyhow::{bail, Context, Result};
use archsmith::bench::{self, BenchSpec};
use archsmith::exit::ExitStatus;
use archsmith::report::compare;
use archsmith::run::{Settings, StrategyKind};
use archsmith::train::lookup::DATASETS;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// NAS-Bench-Graph data sets, comma-separated, or `all` (cora, citeseer, pubmed, cs,
    /// physics, photo, computers, arxiv, proteins).
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Strategies, comma-separated (llm and llm-evolution need an [llm] section in --config).
    #[arg(long, default_value = "random,evolution,bo")]
    pub strategies: String,
    /// Seeds per task and strategy.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Evaluations per search.
    #[arg(long, default_value_t = 100)]
    pub evals: u64,
    /// Searches at once (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The bench's folder (default: results/bench-<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Settings every search starts from: strategy options, an [llm] section (without it,
    /// the strategies' own defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Skip the HTML comparison of the runs (it reads every journal again).
    #[arg(long)]
    pub no_html: bool,
}

pub fn run(a: BenchArgs) -> Result<ExitStatus> {
    let datasets: Vec<String> = if a.tasks == "all" {
        DATASETS.iter().map(|d| d.name.to_string()).collect()
    } else {
        a.tasks
            .split(',')
            .map(|t| t.trim().trim_start_matches("nbgraph:").to_string())
            .collect()
    };
    for d in &datasets {
        if archsmith::train::lookup::Dataset::by_name(d).is_none() {
            bail!(
                "unknown NAS-Bench-Graph data set `{d}`; known: {}",
                DATASETS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let strategies = a
        .strategies
        .split(',')
        .map(|s| {
            let s = s.trim();
            StrategyKind::from_str(s, false).map_err(|_| {
                anyhow::anyhow!(
                    "unknown strategy `{s}`; known: {}",
                    StrategyKind::value_variants()
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if strategies.contains(&StrategyKind::Auto) {
        bail!("name the strategies to compare; `auto` is not one");
    }
    if a.seeds == 0 || a.evals == 0 {
        bail!("--seeds and --evals must be at least 1");
    }
    let mut base = Settings::load(a.config.as_deref())?;
    if a.config.is_none() {
        // The built-in experiment sizes its strategies for 20 evaluations of einspace; the
        // bench measures the strategies' own defaults.
        base.strategy.evolution = Default::default();
        base.strategy.bo = Default::default();
    }
    let out = a.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("results").join(format!("bench-{}", archsmith::run::utc_stamp(secs)))
    });
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let spec = BenchSpec {
        datasets,
        strategies,
        seeds: a.seeds,
        first_seed: a.first_seed,
        evaluations: a.evals,
        threads,
        out: out.clone(),
        base,
    };
    let total = spec.datasets.len() * spec.strategies.len() * spec.seeds as usize;
    eprintln!(
        "bench: {total} searches of {} evaluations on {} threads into {}",
        spec.evaluations,
        threads,
        out.display()
    );
    let lookup = |k: &str| std::env::var(k).ok();
    // As for `run`: the first Ctrl-C (SIGTERM, SIGHUP) stops the searches in flight, each
    // recording its end and stopping its local model server; the second quits at once.
    super::run::install_ctrl_c();
    let result = bench::run(&spec, &lookup, &|k, n| {
        if k == n || k % 50 == 0 {
            eprintln!("bench: {k}/{n} searches done");
        }
    });
    if archsmith::exec::interrupted() {
        eprintln!(
            "bench interrupted: no table was written; the searches' runs are kept in {}",
            spec.out.join("runs").display()
        );
        return Ok(ExitStatus::Interrupted);
    }
    let (b, runs) = result?;
    let md = bench::markdown(&b);
    let write = |name: &str, text: &str| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("{}", p.display());
        Ok(())
    };
    write("bench.md", &md)?;
    write("bench.csv", &bench::csv(&b))?;
    write("bench.json", &serde_json::to_string_pretty(&b)?)?;
    if !a.no_html {
        let dirs: Vec<PathBuf> = runs.iter().map(|r| r.dir.clone()).collect();
        let c = compare::load(&dirs)?;
        write("compare.html", &compare::render(&c))?;
    }
    println!("{md}");
    println!(
        "{total} searches in {:.1} s on {threads} threads; one search's loop: {:.3} s on average",
        b.total_seconds, b.mean_run_seconds
    );
    Ok(ExitStatus::Success)
}
