//! The training binary's commands (`archsmith-torch`, which `archsmith` runs for them):
//! `train` a candidate, `train-program` an activation or update rule, `export` a candidate
//! with its weights, and `worker`, the jobs of the local and Ray executors.

use crate::export::{from_run, Exportable, Format};
use crate::trainer::TrainOptions;
use crate::TaskData;
use anyhow::{bail, Context, Result};
use archsmith::exit::ExitStatus;
use archsmith::space::{CheckOptions, Limits, Shape, Space};
use archsmith::train::{DeviceChoice, Epoch, Flow, Observer, Recipe, Task};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

/// archsmith's training commands; `archsmith` runs them through this program, which links
/// libtorch.
#[derive(Parser, Debug)]
#[command(name = "archsmith", bin_name = "archsmith", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Score an activation function or an update rule by training a reference network with
    /// it; prints the result as JSON.
    TrainProgram(TrainProgramArgs),
    /// Train one candidate on a task and print the result as JSON.
    Train(TrainArgs),
    /// Export a run's best candidate (or one named), or a candidate file, as a PyTorch module
    /// with its weights (safetensors), as JSON, or as tch weights.
    Export(ExportArgs),
    /// Train jobs for an executor: one given inline (as a Ray job runs it), or a job a line on
    /// stdin (as local workers run it). Prints epoch lines and, last, the result line.
    Worker(WorkerArgs),
}

/// Runs the command line; `Ok` carries the exit status of a command that ran to its end.
pub fn run() -> Result<ExitStatus> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return Ok(ExitStatus::of_usage(&e)),
    };
    match cli.command {
        Command::TrainProgram(a) => train_program(a),
        Command::Train(a) => train(a),
        Command::Export(a) => export(a),
        Command::Worker(a) => worker(a),
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A built-in space (einspace, nb201, mlp) or a path to a .grammar file or space folder.
    #[arg(long, default_value = "einspace")]
    pub space: String,
    /// A task: textures, glyph-sum, seq-match, teacher, or real data as npy:DIR, mnist:DIR,
    /// fashion-mnist:DIR, cifar10:DIR, cifar100:DIR (see `archsmith task list`).
    #[arg(long)]
    pub task: String,
    /// The candidate: a file, or - for standard input (the default unless --seed-arch).
    #[arg(long, conflicts_with = "seed_arch")]
    pub arch: Option<String>,
    /// Train one of the space's seed candidates instead, e.g. resnet18.
    #[arg(long)]
    pub seed_arch: Option<String>,
    /// Epochs (overrides the task's recipe).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimiser steps at most (overrides the recipe).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Seed of the initialisation and the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to train: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// A JSON file with recipe fields overriding the task's default recipe.
    #[arg(long)]
    pub recipe: Option<String>,
    /// Also score the test split.
    #[arg(long)]
    pub test: bool,
    /// Largest number of parameters a candidate may have.
    #[arg(long, default_value_t = Limits::default().max_params)]
    pub max_params: u64,
}

/// Progress on a terminal: one bar over the steps, with the epoch, loss and score.
struct Progress {
    bar: ProgressBar,
    epoch: usize,
    score: Option<f64>,
}

impl Observer for Progress {
    fn step(&mut self, step: u64, total: u64, loss: f64) {
        self.bar.set_length(total);
        self.bar.set_position(step);
        let score = self
            .score
            .map(|s| format!("  valid {s:.4}"))
            .unwrap_or_default();
        self.bar
            .set_message(format!("epoch {}  loss {loss:.4}{score}", self.epoch + 1));
    }

    fn epoch(&mut self, e: &Epoch) -> Flow {
        self.epoch = e.epoch;
        self.score = Some(e.valid_score);
        self.bar.println(format!(
            "epoch {:>3}  train loss {:.4}  valid loss {:.4}  valid {:.4}",
            e.epoch, e.train_loss, e.valid_loss, e.valid_score
        ));
        Flow::Continue
    }
}

pub fn train(a: TrainArgs) -> Result<ExitStatus> {
    let task = Task::resolve(&a.task)?;
    let mut recipe: Recipe = task.recipe.clone();
    if let Some(p) = &a.recipe {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {p}"))?;
        // Fields in the file override the task's recipe; unknown fields are errors.
        let mut base = serde_json::to_value(&recipe)?;
        let over: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{p} is not JSON"))?;
        if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
            for (k, v) in o {
                b.insert(k.clone(), v.clone());
            }
        }
        recipe = serde_json::from_value(base).with_context(|| format!("bad recipe in {p}"))?;
    }
    if let Some(e) = a.epochs {
        recipe.epochs = e;
    }
    if a.max_steps.is_some() {
        recipe.max_steps = a.max_steps;
    }
    recipe
        .validate()
        .map_err(|e| anyhow::anyhow!("bad recipe: {e}"))?;
    let device = crate::device::resolve(a.device)?;
    let space = Space::load(&a.space)?;
    if space.grammar.kind != archsmith::space::SpaceKind::Network {
        anyhow::bail!(
            "space {} holds programs ({}s), not architectures; score one with `archsmith train-program --space {} --task {}`",
            space.name(),
            space.grammar.kind.name(),
            a.space,
            a.task
        );
    }
    let (text, origin) = match (&a.seed_arch, &a.arch) {
        (Some(name), _) => {
            let seed = space.seed(name).with_context(|| {
                format!(
                    "space {} has no seed `{name}`; its seeds are {}",
                    space.name(),
                    space
                        .seeds
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            (seed.text.clone(), format!("seed {name}"))
        }
        (None, file) => {
            let f = file.clone().unwrap_or_else(|| "-".into());
            (archsmith::text::read_input(&f)?, f)
        }
    };
    let data = task
        .load()
        .with_context(|| format!("cannot load the data of task {}", task.name))?;
    let opts = CheckOptions {
        limits: Limits {
            max_params: a.max_params,
            ..Limits::default()
        },
        classes: Some(data.classes),
        infos: false,
        head: recipe.head,
    };
    let (node, analysis) = match space.validate_text(&text, data.input, &opts) {
        Ok(v) => v,
        Err(diags) => {
            eprintln!(
                "error: the candidate ({origin}) is invalid in space {} for input {}:",
                space.name(),
                data.input
            );
            for d in &diags {
                eprintln!("  - {d}");
            }
            return Ok(ExitStatus::Invalid);
        }
    };
    if recipe.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let bar = ProgressBar::with_draw_target(
        Some(0),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = Progress {
        bar,
        epoch: 0,
        score: None,
    };
    let opts = TrainOptions {
        recipe,
        seed: a.seed,
        device,
        max_params: a.max_params,
        test: a.test,
    };
    let result = crate::trainer::train(&node, &analysis, &data, &opts, &mut progress);
    progress.bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(f) = &result.failure {
        eprintln!("training failed ({:?}): {}", f.reason, f.message);
        return Ok(ExitStatus::TrainingFailed);
    }
    Ok(ExitStatus::Success)
}

#[derive(Args, Debug)]
pub struct TrainProgramArgs {
    /// The program space: activation or optimizer (or a path to a program space).
    #[arg(long)]
    pub space: String,
    /// The task: a synthetic task (textures, glyph-sum, seq-match, teacher) or FORMAT:DIR.
    #[arg(long, default_value = "teacher")]
    pub task: String,
    /// A file holding the program, or - for stdin.
    #[arg(long, conflicts_with = "seed_program")]
    pub program: Option<String>,
    /// A seed of the space by name (e.g. adam, lion, gelu, swish).
    #[arg(long)]
    pub seed_program: Option<String>,
    /// Learning rates to try, comma-separated (default: 1e-4,1e-3,1e-2,1e-1 for update
    /// rules, the task's for activations).
    #[arg(long, value_delimiter = ',')]
    pub lr: Vec<f64>,
    /// Hidden widths of the reference MLP, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,64")]
    pub hidden: Vec<u64>,
    /// Train update rules on this architecture instead (SPACE:SEED, e.g. mlp:mlp2).
    #[arg(long)]
    pub reference: Option<String>,
    /// Epochs (default: the task's recipe).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples in the train, validation and test splits of a synthetic task.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    #[arg(long, default_value_t = 0.01)]
    pub wd: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["job", "job_file", "serve", "gpus"])))]
pub struct WorkerArgs {
    /// The job, as JSON.
    #[arg(long)]
    pub job: Option<String>,
    /// A file holding the job as JSON.
    #[arg(long)]
    pub job_file: Option<PathBuf>,
    /// Serve jobs, one JSON object a line on stdin, until stdin closes.
    #[arg(long)]
    pub serve: bool,
    /// Print the number of CUDA devices libtorch sees, and exit (the driver asks before it
    /// pins workers to GPUs).
    #[arg(long)]
    pub gpus: bool,
}

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
    /// Without a run: how the head reads a sequence (a recipe's `head`); a run's recipe says
    /// it otherwise.
    #[arg(long, value_enum, default_value_t = archsmith::space::Head::Positions, conflicts_with = "dir")]
    pub head: archsmith::space::Head,
    /// Without a run: trained weights saved from the compiled network (a tch VarStore file);
    /// without it the weights are a fresh initialisation drawn with --seed.
    #[arg(long, conflicts_with = "dir")]
    pub weights: Option<PathBuf>,
    /// Seed of a fresh initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn export(a: ExportArgs) -> Result<ExitStatus> {
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
            let text = archsmith::text::read_input(arch)?;
            let opts = CheckOptions {
                limits: Limits {
                    max_params: u64::MAX,
                    max_flops: u64::MAX,
                    max_activation_bytes: u64::MAX,
                },
                classes: Some(classes),
                infos: false,
                head: a.head,
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
                    return Ok(ExitStatus::Invalid);
                }
            };
            let item = Exportable {
                node,
                space: space.name().to_string(),
                input,
                classes,
                head: a.head,
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
    Ok(ExitStatus::Success)
}

fn worker(a: WorkerArgs) -> Result<ExitStatus> {
    use crate::worker;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    if a.gpus {
        println!("{}", crate::device::gpu_count());
        return Ok(ExitStatus::Success);
    }
    let stdout = std::io::stdout();
    if a.serve {
        let stdin = std::io::stdin();
        worker::serve(&mut stdin.lock(), &mut stdout.lock())?;
        return Ok(ExitStatus::Success);
    }
    let text = match (&a.job, &a.job_file) {
        (Some(j), _) => j.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the job file {}", f.display()))?,
        (None, None) => bail!("give --job, --job-file or --serve"),
    };
    let spec = worker::parse_job(&text)?;
    worker::Worker::new().run(&spec, &mut stdout.lock())?;
    Ok(ExitStatus::Success)
}

fn train_program(a: TrainProgramArgs) -> Result<ExitStatus> {
    use crate::program;
    use archsmith::space::SpaceKind;
    use archsmith::train::program::{Hyper, ProgramEval, Reference};
    let space = Space::load(&a.space)?;
    let kind = space.grammar.kind;
    if !kind.is_program() {
        bail!(
            "space {} holds networks, not programs; train-program takes the activation or optimizer space",
            space.name()
        );
    }
    let text = match (&a.program, &a.seed_program) {
        (Some(f), _) => archsmith::text::read_input(f)?,
        (None, Some(name)) => match space.seed(name) {
            Some(s) => s.text.clone(),
            None => bail!(
                "space {} has no seed `{name}`; its seeds are {}",
                space.name(),
                space
                    .seeds
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        (None, None) => {
            bail!("give the program with --program FILE (or - for stdin) or --seed-program NAME")
        }
    };
    let mut task = archsmith::train::Task::resolve(&a.task)?;
    if let [tr, va, te] = a.sizes[..] {
        task = task.with_sizes(tr, va, te);
    } else if !a.sizes.is_empty() {
        bail!("--sizes takes three numbers: train,valid,test");
    }
    let data = task.load()?;
    let opts = CheckOptions::default();
    let node = match space.validate_text(&text, data.input, &opts) {
        Ok((node, _)) => node,
        Err(diags) => {
            let mut msg = String::from("the program is invalid:");
            for d in &diags {
                msg.push_str(&format!("\n  - {d}"));
            }
            bail!(msg);
        }
    };
    let reference = match &a.reference {
        Some(r) => {
            let (sp, seed) = r
                .split_once(':')
                .context("--reference takes SPACE:SEED, e.g. mlp:mlp2")?;
            let s = Space::load(sp)?;
            let text = s
                .seed(seed)
                .with_context(|| format!("space {sp} has no seed `{seed}`"))?
                .text
                .clone();
            Reference::Candidate {
                space: sp.to_string(),
                text,
            }
        }
        None => Reference::Mlp {
            hidden: a.hidden.clone(),
        },
    };
    let mut recipe = task.recipe.clone();
    if let Some(e) = a.epochs {
        recipe.epochs = e;
    }
    let cfg = ProgramEval {
        reference,
        lrs: a.lr.clone(),
        hyper: Hyper {
            beta1: a.beta1,
            beta2: a.beta2,
            wd: a.wd,
            eps: a.eps,
        },
        recipe: Some(recipe.clone()),
        seed: a.seed,
        ..ProgramEval::default()
    };
    if let Err(e) = cfg.hyper.check() {
        bail!(e);
    }
    let device = crate::device::parse_device(&a.device)?;
    let (res, grid) = match kind {
        SpaceKind::Activation => {
            program::evaluate_activation_grid(&node, &data, &recipe, &cfg, device)
        }
        _ => program::evaluate_optimizer_grid(&node, &data, &recipe, &cfg, device),
    };
    let mut v = serde_json::to_value(&res)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("space".into(), kind.name().into());
        o.insert("lr_grid".into(), serde_json::to_value(&grid)?);
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    // A training that failed with the program exits as `train` does when training fails.
    Ok(if res.ok() {
        ExitStatus::Success
    } else {
        ExitStatus::TrainingFailed
    })
}
