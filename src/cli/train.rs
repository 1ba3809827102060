//! `archsmith train` and `archsmith task list|show`: read a candidate, validate it for the
//! task's input, train it, print the result as JSON.

use anyhow::{bail, Context, Result};
use archsmith::space::{CheckOptions, Limits, Space};
use archsmith::train::{train, DeviceChoice, Epoch, Flow, Observer, Recipe, Task, TrainOptions};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;

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

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// The built-in tasks and the real-data formats.
    List,
    /// A task's data, input, classes, metric and default recipe.
    Show { name: String },
}

pub fn task(cmd: TaskCmd) -> Result<ExitCode> {
    match cmd {
        TaskCmd::List => {
            for t in Task::list() {
                let input = t
                    .input
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "from data".into());
                let classes = t
                    .classes
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into());
                let short = t.description.split(':').next().unwrap_or("");
                println!("{:<32} {input:<9} {classes:>3} classes  {short}", t.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCmd::Show { name } => {
            print!("{}", Task::resolve(&name)?.describe());
            Ok(ExitCode::SUCCESS)
        }
    }
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

pub fn run(a: TrainArgs) -> Result<ExitCode> {
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
        .map_err(|(field, m)| anyhow::anyhow!("bad recipe: {field} {m}"))?;
    let device = a.device.resolve()?;
    let space = Space::load(&a.space)?;
    if space.grammar.kind != archsmith::space::grammar::SpaceKind::Network {
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
            (super::read_input(&f)?, f)
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
            return Ok(ExitCode::from(1));
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
    let result = train(&node, &analysis, &data, &opts, &mut progress);
    progress.bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(f) = &result.failure {
        eprintln!("training failed ({:?}): {}", f.reason, f.message);
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
