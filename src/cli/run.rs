//! `archsmith run | resume | replay | runs | show`: start a search, continue one, replay one,
//! list runs and show one. The commands settle their inputs, call `archsmith::run`, print.

use anyhow::{bail, Context, Result};
use archsmith::exit::ExitStatus;
use archsmith::run::{
    compare_replay, list_runs, prepare_new, prepare_replay, prepare_resume, summary, trajectory,
    Listed, Outcome, Overrides, Prepared, Progress, RunError, RunSummary, Settings, Status,
    StrategyKind,
};
use archsmith::text::score as fmt_score;
use archsmith::text::{clipped, visible, visible_lines};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An experiment file (TOML); the built-in default experiment when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The search space (overrides `space.name`).
    #[arg(long)]
    pub space: Option<String>,
    /// The task (overrides `task.name`), e.g. textures, glyph-sum, cifar10:DIR.
    #[arg(long)]
    pub task: Option<String>,
    /// The search strategy (overrides `strategy.kind`).
    #[arg(long)]
    pub strategy: Option<StrategyKind>,
    /// Candidates to train (overrides `budget.evaluations`).
    #[arg(long)]
    pub evals: Option<u64>,
    /// Seed of the search and of training (overrides `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N (overrides `device`).
    #[arg(long)]
    pub device: Option<String>,
    /// Folder the run folder is made in (overrides `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the run folder, before the seed and time (overrides `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Epochs each candidate trains (overrides `task.recipe.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Candidates trained at once (overrides `parallel`); above 1, by worker processes.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Where candidates train (overrides `executor.kind`).
    #[arg(long)]
    pub executor: Option<archsmith::exec::ExecutorKind>,
    /// The Ray head's dashboard address, e.g. http://127.0.0.1:8265 (overrides
    /// `executor.ray.address`; `RAY_ADDRESS` when neither is given).
    #[arg(long)]
    pub ray_address: Option<String>,
    /// Print the resolved settings and stop.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run folder to continue.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The run folder to replay.
    pub dir: PathBuf,
    /// Re-derive the best-so-far trajectory from the journal, without training.
    #[arg(long)]
    pub scores_only: bool,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// The folder holding run folders.
    #[arg(default_value = "results")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The run folder.
    pub dir: PathBuf,
    /// How many of the best candidates to list.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// text, or json: the report's data (what `archsmith report` draws) as one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::report::SummaryFormat,
}

fn env_lookup(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

pub fn run(a: RunArgs) -> Result<ExitStatus> {
    let mut settings = Settings::load(a.config.as_deref())?;
    let file = a
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(built-in default)".into());
    settings.apply(&Overrides {
        space: a.space,
        task: a.task,
        strategy: a.strategy,
        evaluations: a.evals,
        seed: a.seed,
        device: a.device,
        out: a.out,
        name: a.name,
        epochs: a.epochs,
        parallel: a.parallel,
        executor: a.executor,
        ray_address: a.ray_address,
    });
    if a.dry_run {
        // Settled exactly as a run settles them (space, task, data, recipe), without a folder.
        let (settings, why) = archsmith::run::settle(settings, &file, &env_lookup)?;
        eprintln!("{why}");
        print!("{}", settings.to_toml());
        return Ok(ExitStatus::Success);
    }
    let prepared = prepare_new(settings, &file, &env_lookup)?;
    go(prepared)
}

pub fn resume(a: ResumeArgs) -> Result<ExitStatus> {
    check_run_dir(&a.dir)?;
    let s = summary(&a.dir)?;
    if s.status.ended() {
        eprintln!(
            "{} already finished ({}: {}); raise its budget in config.toml to go on",
            a.dir.display(),
            s.status,
            s.reason
        );
    }
    go(prepare_resume(&a.dir, &env_lookup)?)
}

pub fn replay(a: ReplayArgs) -> Result<ExitStatus> {
    check_run_dir(&a.dir)?;
    if a.scores_only {
        let s = summary(&a.dir)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "eval  score     best      candidate")?;
        for p in trajectory(&a.dir)? {
            writeln!(
                out,
                "{:<5} {:<9} {:<9} {}",
                p.eval,
                fmt_score(p.score),
                fmt_score(p.best),
                p.candidate
            )?;
        }
        writeln!(
            out,
            "\n{} evaluations; best {} ({})",
            s.evaluations,
            fmt_score(s.best.as_ref().and_then(|b| b.score)),
            s.best.as_ref().map(|b| b.hash.as_str()).unwrap_or("-")
        )?;
        return Ok(ExitStatus::Success);
    }
    let prepared = prepare_replay(&a.dir)?;
    let new_dir = prepared.dir.clone();
    let code = go(prepared)?;
    let diffs = compare_replay(&a.dir, &new_dir)?;
    if diffs.is_empty() {
        eprintln!(
            "replay matches the recorded run: same proposals and scores ({})",
            new_dir.display()
        );
        Ok(code)
    } else {
        eprintln!("replay differs from the recorded run:");
        for d in &diffs {
            eprintln!("  {d}");
        }
        Ok(ExitStatus::Invalid)
    }
}

pub fn runs(a: RunsArgs) -> Result<ExitStatus> {
    let all = list_runs(&a.dir)?;
    let mut out = std::io::stdout().lock();
    if all.is_empty() {
        writeln!(out, "no runs in {}", a.dir.display())?;
        return Ok(ExitStatus::Success);
    }
    writeln!(
        out,
        "{:<44} {:<14} {:>6} {:>6} {:>8} {:>9} {:<12}",
        "run", "strategy", "evals", "model", "best", "cost", "status"
    )?;
    let mut damaged = 0;
    for listed in all {
        let s = match listed {
            Listed::Run(s) => s,
            Listed::Damaged { dir, reason } => {
                damaged += 1;
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let line = format!("{name:<44} DAMAGED: {}", clipped(&reason, 300));
                writeln!(out, "{}", visible(&line))?;
                continue;
            }
        };
        let line = format!(
            "{:<44} {:<14} {:>6} {:>6} {:>8} {:>9} {:<12}",
            s.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            s.strategy,
            s.evaluations,
            // Valid new candidates the model wrote; `-` when no model was asked.
            if s.strategy.starts_with("llm") {
                s.sources.by_model().to_string()
            } else {
                "-".to_string()
            },
            fmt_score(s.best.as_ref().and_then(|b| b.score)),
            format!("${:.4}", s.usd),
            s.status
        );
        writeln!(out, "{}", visible(&line))?;
    }
    if damaged > 0 {
        eprintln!(
            "warning: {damaged} run folder(s) in {} cannot be read (marked DAMAGED above)",
            a.dir.display()
        );
    }
    Ok(ExitStatus::Success)
}

pub fn show(a: ShowArgs) -> Result<ExitStatus> {
    check_run_dir(&a.dir)?;
    if a.format == super::report::SummaryFormat::Json {
        let r = archsmith::report::data::load(&a.dir)?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitStatus::Success);
    }
    let s = summary(&a.dir)?;
    let r = archsmith::report::data::load(&a.dir)?;
    // Plans and candidates are a model's text: shown with their control characters visible.
    print!(
        "{}",
        visible_lines(&(render_summary(&s, a.top) + &archsmith::report::data::text_extras(&r)))
    );
    Ok(ExitStatus::Success)
}

fn render_summary(s: &RunSummary, top: usize) -> String {
    let mut t = String::new();
    t += &format!("run       {}\n", s.dir.display());
    t += &format!(
        "strategy  {}    space {}    task {}    seed {}\n",
        s.strategy, s.space, s.task, s.seed
    );
    t += &format!(
        "status    {} ({}), {} session(s){}\n",
        s.status,
        s.reason,
        s.sessions,
        if s.torn {
            "; the journal's last line is torn"
        } else {
            ""
        }
    );
    let rate = if s.proposals > 0 {
        100.0 * (s.proposals - s.invalid) as f64 / s.proposals as f64
    } else {
        100.0
    };
    t += &format!(
        "work      {} evaluations, {} proposals ({rate:.0}% valid), {:.0} s, {} tokens, ${:.4}\n",
        s.evaluations, s.proposals, s.elapsed_seconds, s.tokens, s.usd
    );
    t += &format!("sources   {}\n", s.sources.describe());
    if s.strategy.starts_with("llm") && s.sources.by_model() == 0 && s.proposals > 0 {
        t += "          the model proposed no valid candidate: this run was in truth a random search\n";
    }
    t += &format!("\ntop {top}:\n");
    for (i, o) in s.ranked.iter().take(top).enumerate() {
        t += &format!(
            "{:>3}. {}  {:>9} params  {}  {}\n",
            i + 1,
            fmt_score(o.score),
            o.params,
            o.hash,
            o.candidate
        );
        if let Some(p) = &o.plan {
            t += &format!("       plan: {p}\n");
        }
    }
    t
}

fn check_run_dir(dir: &Path) -> Result<()> {
    if !dir.join("journal.jsonl").is_file() {
        bail!(
            "{} is not a run folder (it has no journal.jsonl)",
            dir.display()
        );
    }
    Ok(())
}

/// Starts logging into the run folder, says what the run does, runs it and prints the end.
fn go(p: Prepared) -> Result<ExitStatus> {
    init_log(&p.dir.join("run.log"))?;
    eprintln!("{}", p.message);
    eprintln!("run folder: {}", p.dir.display());
    tracing::info!(dir = %p.dir.display(), message = %p.message, "run starting");
    let dir = p.dir.clone();
    let model_run = p.exp.settings.strategy.kind.0.uses_model();
    let progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(Bar::new(p.exp.settings.budget.evaluations))
    } else {
        Box::new(archsmith::run::NoProgress)
    };
    install_ctrl_c();
    let outcome: Outcome = match p.run(progress) {
        Ok(o) => o,
        Err(e @ RunError::Interrupted { .. }) => {
            eprintln!("{e}");
            return Ok(ExitStatus::Interrupted);
        }
        // Not an error: the run waits for its executor or model server to come back.
        Err(e @ RunError::Paused { .. }) => {
            eprintln!("{}", archsmith::text::for_terminal(&e.to_string(), 2000));
            return Ok(ExitStatus::Paused);
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "{}: {} after {} evaluations; best {}{}",
        outcome.status,
        outcome.reason,
        outcome.evaluations,
        fmt_score(outcome.best.as_ref().and_then(|b| b.score)),
        outcome
            .best
            .as_ref()
            .map(|b| format!(" ({})", b.candidate))
            .unwrap_or_default()
    );
    if outcome.sources.model + outcome.sources.repair > 0 || model_run {
        eprintln!("proposals: {}", outcome.sources.describe());
        if outcome.sources.by_model() == 0 {
            eprintln!(
                "the model proposed no valid candidate: this run was in truth a random search"
            );
        }
    }
    eprintln!("see `archsmith show {}`", dir.display());
    Ok(ExitStatus::Success)
}

/// The first Ctrl-C (or SIGTERM, or SIGHUP) asks the loop to stop (it stops the jobs in
/// flight and the local model server, and records the session's end); the second quits at
/// once.
pub(crate) fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if archsmith::exec::interrupt() {
            ExitStatus::Interrupted.exit();
        }
        eprintln!("\nstopping: the jobs in flight are stopped and the run is recorded; press Ctrl-C again to quit at once");
    });
}

fn init_log(path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    Ok(())
}

/// The progress bar: evaluations, best so far, validity rate, tokens, cost.
struct Bar(ProgressBar);

impl Bar {
    fn new(total: u64) -> Bar {
        let b = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} evals  {msg}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        Bar(b)
    }
}

impl Progress for Bar {
    fn update(&mut self, s: &Status) {
        self.0.set_position(s.evaluations);
        let valid = if s.proposals > 0 {
            100.0 * (s.proposals - s.invalid) as f64 / s.proposals as f64
        } else {
            100.0
        };
        let running = if s.running > 1 {
            format!("{} training  ", s.running)
        } else {
            String::new()
        };
        self.0.set_message(format!(
            "{running}best {}  valid {valid:.0}%  {} tok  ${:.4}",
            fmt_score(s.best),
            s.tokens,
            s.usd
        ));
    }

    fn message(&mut self, m: &str) {
        self.0.println(m);
    }

    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
}
