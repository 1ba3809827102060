//! `archsmith report` and `compare`: a run's HTML report, several runs compared (HTML and
//! CSV), and a run's summary.

use anyhow::{Context, Result};
use archsmith::exit::ExitStatus;
use archsmith::report::{compare, data, html};
use clap::Args;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run folder.
    pub dir: PathBuf,
    /// Where to write the HTML (default: <run>/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// html (the default), or json: the report's data on standard output.
    #[arg(long, value_enum, default_value = "html")]
    pub format: ReportFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
}

pub fn report(a: ReportArgs) -> Result<ExitStatus> {
    let r = data::load(&a.dir)?;
    if a.format == ReportFormat::Json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitStatus::Success);
    }
    let out = a.out.unwrap_or_else(|| a.dir.join("report.html"));
    std::fs::write(&out, html::render(&r))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    Ok(ExitStatus::Success)
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders, or folders of runs (every run inside is taken).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write the HTML comparison (default: compare.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the table of runs as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Print the comparison as JSON on standard output instead of writing HTML.
    #[arg(long)]
    pub json: bool,
}

pub fn compare(a: CompareArgs) -> Result<ExitStatus> {
    let dirs = compare::expand(&a.dirs);
    let c = compare::load(&dirs)?;
    for sk in &c.skipped {
        eprintln!(
            "warning: left out {}: {}",
            archsmith::text::visible(&sk.run),
            archsmith::text::clipped(&sk.reason, 300)
        );
    }
    if let Some(p) = &a.csv {
        std::fs::write(p, compare::csv(&c))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("{}", p.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(ExitStatus::Success);
    }
    let out = a.out.unwrap_or_else(|| PathBuf::from("compare.html"));
    std::fs::write(&out, compare::render(&c))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    for g in &c.groups {
        println!(
            "{:<14} {:<10} {:<12} {:>3} runs  best {} +- {}  vs random {}",
            g.strategy,
            g.space,
            g.task,
            g.runs,
            html::score(g.final_mean),
            html::score(g.final_stderr),
            g.mean_relative_improvement
                .map(|v| format!("{:+.1}%", 100.0 * v))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitStatus::Success)
}
