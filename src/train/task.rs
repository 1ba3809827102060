//! Tasks: what a candidate is scored on. A task names its data, input shape, classes, metric
//! and default recipe. Built-in synthetic tasks need no files; real datasets are named
//! `FORMAT:DIR` (or `FORMAT` alone for `$ARCHSMITH_DATA/FORMAT`, default `data/FORMAT`).

use super::data::{self, Data, DataError};
use super::recipe::{Optimizer, Recipe};
use super::synth::Synth;
use crate::space::Shape;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Fraction of examples whose highest logit is the label.
    Accuracy,
}

/// Where a task's examples come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    Synthetic {
        synth: Synth,
        /// Examples in the train, validation and test splits.
        sizes: (usize, usize, usize),
        seed: u64,
    },
    /// An Unseen NAS folder of `.npy` files.
    Npy { dir: PathBuf },
    /// MNIST-style IDX files (MNIST, Fashion-MNIST).
    Idx { dir: PathBuf },
    /// CIFAR-10 or CIFAR-100 binary batches.
    Cifar { dir: PathBuf, classes: u64 },
    /// A tabular benchmark: every candidate was trained in advance and is looked up
    /// (NAS-Bench-Graph, `nbgraph:<dataset>`; see [`super::lookup`]).
    Lookup { dataset: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Task {
    pub name: String,
    pub description: String,
    /// One example's shape; for `.npy` folders it is known once loaded.
    pub input: Option<Shape>,
    pub classes: Option<u64>,
    pub metric: Metric,
    pub recipe: Recipe,
    pub source: Source,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task `{name}`; the built-in tasks are {known}, and real data is named npy:DIR, mnist[:DIR], fashion-mnist[:DIR], cifar10[:DIR] or cifar100[:DIR]")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("unknown NAS-Bench-Graph data set in `{name}`; the look-up tasks are {known}")]
    UnknownLookup { name: String, known: String },
    /// Split sizes given for a task whose splits are its data's.
    #[error("split sizes apply to synthetic tasks only, not {name}")]
    NotSynthetic { name: String },
}

/// Names of the built-in synthetic tasks.
pub const SYNTHETIC: &[&str] = &["textures", "glyph-sum", "seq-match", "teacher"];
/// Real dataset formats, usable as `FORMAT:DIR`.
pub const FORMATS: &[&str] = &["npy", "mnist", "fashion-mnist", "cifar10", "cifar100"];

fn synthetic(name: &str) -> Option<Task> {
    let sizes = (2000, 500, 500);
    let image_recipe = Recipe {
        epochs: 10,
        batch_size: 64,
        lr: 0.05,
        ..Recipe::default()
    };
    let adam = Recipe {
        optimizer: Optimizer::AdamW,
        lr: 2e-3,
        weight_decay: 0.01,
        epochs: 15,
        batch_size: 64,
        ..Recipe::default()
    };
    let (synth, description, recipe) = match name {
        "textures" => (
            Synth::Textures { size: 32 },
            "3x32x32 images: a striped or checked patch of random colour at a random place; 4 classes (horizontal, vertical, checks, diagonal). Locality matters: convolutions beat a plain MLP",
            image_recipe,
        ),
        "glyph-sum" => (
            Synth::GlyphSum,
            "3x16x16 images: each channel holds one of four digit-like glyphs (values 0-3) at a jittered place; the label is their sum (10 classes), as in Unseen NAS's AddNIST",
            image_recipe,
        ),
        "seq-match" => (
            Synth::SeqMatch { len: 32 },
            "32x8 sequences (col mode) of one-hot symbols: is the first position's symbol frequent in the rest? 2 classes; a distractor symbol is always frequent, so positions must mix before the head averages them",
            adam.clone(),
        ),
        "teacher" => (
            Synth::Teacher { dim: 32 },
            "32-feature vectors labelled by a random two-layer tanh network; 4 classes",
            adam,
        ),
        _ => return None,
    };
    Some(Task {
        name: name.to_string(),
        description: description.to_string(),
        input: Some(synth.input()),
        classes: Some(synth.classes()),
        metric: Metric::Accuracy,
        recipe,
        source: Source::Synthetic {
            synth,
            sizes,
            seed: 0,
        },
    })
}

impl Task {
    /// Every built-in task (real-data formats with their default folders).
    pub fn list() -> Vec<Task> {
        let mut out: Vec<Task> = SYNTHETIC.iter().filter_map(|n| synthetic(n)).collect();
        for f in FORMATS {
            if let Ok(t) = Task::resolve(f) {
                out.push(t);
            }
        }
        for d in super::lookup::DATASETS {
            if let Ok(t) = Task::resolve(&format!("nbgraph:{}", d.name)) {
                out.push(t);
            }
        }
        out
    }

    /// The data set of a look-up task.
    pub fn lookup(&self) -> Option<&'static super::lookup::Dataset> {
        match &self.source {
            Source::Lookup { dataset } => super::lookup::Dataset::by_name(dataset),
            _ => None,
        }
    }

    fn nbgraph(name: &str, dataset: &str) -> Result<Task, TaskError> {
        let known = || {
            super::lookup::DATASETS
                .iter()
                .map(|d| format!("nbgraph:{}", d.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let d =
            super::lookup::Dataset::by_name(dataset).ok_or_else(|| TaskError::UnknownLookup {
                name: name.to_string(),
                known: known(),
            })?;
        Ok(Task {
            name: format!("nbgraph:{}", d.name),
            description: format!(
                "NAS-Bench-Graph look-up on {}: {} nodes, {} features, {} classes. Every cell of space {} was trained in advance; evaluating one is a look-up in the table, no training. The score is the table's validation accuracy{}; the table's other figures are recorded for reports only",
                d.about,
                d.nodes,
                d.features,
                d.classes,
                d.space,
                if d.name == "proteins" { " (ROC-AUC for proteins)" } else { "" }
            ),
            input: Some(d.input()),
            classes: Some(d.classes),
            metric: Metric::Accuracy,
            recipe: Recipe {
                epochs: 1,
                ..Recipe::default()
            },
            source: Source::Lookup {
                dataset: d.name.to_string(),
            },
        })
    }

    /// A task by name: a synthetic task, `FORMAT:DIR`, or `FORMAT` for the default folder.
    pub fn resolve(name: &str) -> Result<Task, TaskError> {
        if let Some(t) = synthetic(name) {
            return Ok(t);
        }
        if let Some(dataset) = name.strip_prefix("nbgraph:") {
            return Task::nbgraph(name, dataset);
        }
        let (format, dir) = match name.split_once(':') {
            Some((f, d)) => (f, PathBuf::from(d)),
            None => {
                let root = std::env::var_os("ARCHSMITH_DATA")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("data"));
                (name, root.join(name))
            }
        };
        let image_recipe = Recipe {
            epochs: 8,
            batch_size: 128,
            lr: 0.05,
            ..Recipe::default()
        };
        let (description, input, classes, source) = match format {
            "npy" => (
                "an Unseen NAS folder: train/valid/test _x.npy [N, C, H, W] floats and _y.npy integer labels".to_string(),
                None,
                None,
                Source::Npy { dir },
            ),
            "mnist" | "fashion-mnist" => (
                format!("{format} IDX files (raw or .gz): 1x28x28, 10 classes; the last tenth of the training set validates"),
                Some(Shape::im(1, 28, 28)),
                Some(10),
                Source::Idx { dir },
            ),
            "cifar10" | "cifar100" => {
                let classes = if format == "cifar10" { 10 } else { 100 };
                (
                    format!("CIFAR-{classes} binary batches: 3x32x32, {classes} classes; the last tenth of the training set validates"),
                    Some(Shape::im(3, 32, 32)),
                    Some(classes),
                    Source::Cifar { dir, classes },
                )
            }
            _ => {
                return Err(TaskError::Unknown {
                    name: name.to_string(),
                    known: SYNTHETIC.join(", "),
                })
            }
        };
        let shown = match &source {
            Source::Npy { dir } | Source::Idx { dir } | Source::Cifar { dir, .. } => {
                format!("{format}:{}", dir.display())
            }
            Source::Synthetic { .. } | Source::Lookup { .. } => name.to_string(),
        };
        Ok(Task {
            name: shown,
            description,
            input,
            classes,
            metric: Metric::Accuracy,
            recipe: image_recipe,
            source,
        })
    }

    /// Loads (or generates) the data as plain vectors, not normalised (the training crate
    /// normalises it with the training split's statistics when it makes tensors of it).
    pub fn load_raw(&self) -> Result<Data, DataError> {
        let d = match &self.source {
            Source::Synthetic { synth, sizes, seed } => synth.data(&self.name, *sizes, *seed),
            Source::Npy { dir } => data::load_npy_dir(dir, self.classes)?,
            Source::Idx { dir } => data::load_idx(dir, &self.name)?,
            Source::Cifar { dir, classes } => data::load_cifar(dir, *classes)?,
            Source::Lookup { dataset } => {
                return Err(DataError::Format {
                    path: super::lookup::tables_dir().join(format!("{dataset}.csv")),
                    why: format!(
                        "nbgraph:{dataset} is a look-up task: it has no examples to train on"
                    ),
                })
            }
        };
        Ok(d)
    }

    /// A copy whose synthetic data has these split sizes (for quick tests and benchmarks).
    pub fn with_sizes(mut self, train: usize, valid: usize, test: usize) -> Task {
        if let Source::Synthetic { sizes, .. } = &mut self.source {
            *sizes = (train, valid, test);
        }
        self
    }

    /// The task in words, for `task show`.
    pub fn describe(&self) -> String {
        let mut s = format!("task {}\n{}\n", self.name, self.description);
        let input = self
            .input
            .map(|i| format!("{i} ({})", i.mode().name()))
            .unwrap_or_else(|| "read from the data".into());
        let classes = self
            .classes
            .map(|c| c.to_string())
            .unwrap_or_else(|| "read from the data".into());
        s += &format!("\ninput:   {input}\nclasses: {classes}\nmetric:  accuracy (validation; test on request)\n");
        match &self.source {
            Source::Synthetic { sizes, seed, .. } => {
                s += &format!(
                "data:    synthetic, {} train / {} valid / {} test examples, data seed {seed}\n",
                sizes.0, sizes.1, sizes.2
            )
            }
            Source::Npy { dir } | Source::Idx { dir } | Source::Cifar { dir, .. } => {
                s += &format!("data:    {}\n", dir.display())
            }
            Source::Lookup { dataset } => {
                let d = super::lookup::Dataset::by_name(dataset);
                s += &format!(
                    "data:    look-up table {} (install: {})\nspace:   {}\n",
                    super::lookup::tables_dir()
                        .join(format!("{dataset}.csv"))
                        .display(),
                    super::lookup::INSTALL,
                    d.map_or("nbgraph", |d| d.space)
                );
                return s;
            }
        }
        s += &format!(
            "\ndefault recipe:\n{}\n",
            serde_json::to_string_pretty(&self.recipe).unwrap_or_default()
        );
        s
    }
}
