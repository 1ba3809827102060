//! `archsmith report`, `compare` and `export`: a run's HTML report, several runs compared
//! (HTML and CSV), and a candidate exported as a PyTorch module with its weights, as JSON, or
//! as tch weights.

use anyhow::{bail, Context, Result};
use archsmith::report::{compare, data, from_run, html, Exportable, Format};
use archsmith::space::{CheckOptions, Limits, Shape, Space};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run folder (results/<run-id>). Leave it out to export a candidate given with --arch.
    pub dir: Option<PathBuf>,
    /// With a run folder: the candidate's hash (or a prefix) or evaluation number; the best by
    /// default. Only the best has trained weights (best.ot); others export untrained.
    #[arg(long, requires = "dir")]
    pub candidate: Option<String>,
    /// pytorch (model.py and model.safetensors), json (candidate.json) or weights (weights.ot).
    #[arg(long, value_enum, default_value = "pytorch")]
    pub format: Format,
    /// The folder to write into (default: <run>/export, or ./export).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Without a run: the candidate's file (- for standard input).
    #[arg(long, conflicts_with = "dir")]
    pub arch: Option<String>,
    /// Without a run: the space the candidate belongs to.
    #[arg(long, default_value = "einspace")]
    pub space: String,
    /// Without a run: the input shape after the batch dimension, e.g. 3x32x32.
    #[arg(long)]
    pub input: Option<Shape>,
    /// Without a run: number of classes of the head.
    #[arg(long)]
    pub classes: Option<u64>,
    /// Without a run: trained weights saved from the compiled network (a tch VarStore file);
    /// without it the weights are a fresh initialisation drawn with --seed.
    #[arg(long, conflicts_with = "dir")]
    pub weights: Option<PathBuf>,
    /// Seed of a fresh initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let (item, out) = match &a.dir {
        Some(dir) => {
            let item = from_run(dir, a.candidate.as_deref())?;
            let out = a.out.clone().unwrap_or_else(|| dir.join("export"));
            (item, out)
        }
        None => {
            let Some(arch) = &a.arch else {
                bail!("give a run folder, or a candidate with --arch FILE, --input and --classes");
            };
            let (Some(input), Some(classes)) = (a.input, a.classes) else {
                bail!("--arch needs --input SHAPE and --classes N");
            };
            let space = Space::load(&a.space)?;
            let text = super::read_input(arch)?;
            let opts = CheckOptions {
                limits: Limits {
                    max_params: u64::MAX,
                    max_flops: u64::MAX,
                    max_activation_bytes: u64::MAX,
                },
                classes: Some(classes),
                infos: false,
            };
            let (node, _) = match space.validate_text(&text, input, &opts) {
                Ok(v) => v,
                Err(diags) => {
                    eprintln!(
                        "error: the candidate ({arch}) is invalid in space {} for input {input}:",
                        space.name()
                    );
                    for d in &diags {
                        eprintln!("  - {d}");
                    }
                    return Ok(ExitCode::from(1));
                }
            };
            let item = Exportable {
                node,
                space: space.name().to_string(),
                input,
                classes,
                weights: a.weights.clone(),
                seed: a.seed,
                record: None,
            };
            (
                item,
                a.out.clone().unwrap_or_else(|| PathBuf::from("export")),
            )
        }
    };
    if item.weights.is_none() && a.format != Format::Json {
        eprintln!(
            "note: no trained weights for this candidate; exporting a fresh initialisation (seed {})",
            item.seed
        );
    }
    let files = item
        .write(a.format, &out)
        .with_context(|| format!("cannot export to {}", out.display()))?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

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

pub fn report(a: ReportArgs) -> Result<ExitCode> {
    let r = data::load(&a.dir)?;
    if a.format == ReportFormat::Json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let out = a.out.unwrap_or_else(|| a.dir.join("report.html"));
    std::fs::write(&out, html::render(&r))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
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

pub fn compare(a: CompareArgs) -> Result<ExitCode> {
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
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}
