//! Exporting a candidate: as a PyTorch module with its weights in safetensors, as JSON (the
//! candidate, its scores, the task and the recipe), or as the tch weights themselves.
//!
//! A candidate comes from a run folder (the best by default, or one named by hash or
//! evaluation number; the best's trained weights are `best.ot`) or is given directly with its
//! space, input shape and classes (weights from a tch VarStore file, or a fresh seeded
//! initialisation of the compiled network).

use crate::compile::{compile_with, CompileOptions, Network};
use archsmith::report::pytorch::{self, ModuleInfo};
use archsmith::run::journal::{Event, ProposalEvent, TrainFinished};
use archsmith::run::{read_journal, Experiment, Settings};
use archsmith::space::{Node, Shape};
use archsmith::train::Recipe;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// The name of the best candidate's trained weights in a run folder.
pub const BEST_WEIGHTS: &str = "best.ot";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Codegen(#[from] pytorch::CodegenError),
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    #[error("cannot read the weights {path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("the weights do not fit the module: {0}")]
    Mapping(String),
    #[error("{0}")]
    Run(String),
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `model.py` (an `nn.Module`) and `model.safetensors` (its `state_dict()`).
    Pytorch,
    /// `candidate.json`: the candidate, its scores, the task and the recipe.
    Json,
    /// `weights.ot`: the tch VarStore.
    Weights,
}

/// A candidate ready to export: the tree, where it runs, and where its weights are.
#[derive(Clone, Debug)]
pub struct Exportable {
    pub node: Node,
    pub space: String,
    pub input: Shape,
    pub classes: u64,
    /// How the head reads a sequence (the run's recipe's `head`).
    pub head: archsmith::space::Head,
    /// A tch VarStore file with trained weights; `None` exports a fresh initialisation.
    pub weights: Option<PathBuf>,
    /// Seeds the fresh initialisation.
    pub seed: u64,
    /// What is known from a run: scores, the task, the recipe, the plan.
    pub record: Option<Record>,
}

/// A candidate's record in a run, as `--format json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub run: String,
    pub hash: String,
    pub candidate: String,
    pub space: String,
    pub input: Shape,
    pub classes: u64,
    pub eval: u64,
    pub score: Option<f64>,
    pub outcome: String,
    pub params: u64,
    pub flops: u64,
    pub epochs: usize,
    pub stopped_early: bool,
    pub wall_seconds: f64,
    /// Valid scores by epoch.
    pub curve: Vec<f64>,
    pub is_best: bool,
    pub origin: Option<String>,
    pub parents: Vec<String>,
    pub plan: Option<String>,
    pub predicted: Option<f64>,
    pub task: archsmith::train::Task,
    pub recipe: Recipe,
    pub seed: u64,
    /// Whether trained weights were kept for this candidate (`best.ot`).
    pub has_weights: bool,
}

impl Exportable {
    /// Compiles the network on the CPU, with the saved weights or a seeded initialisation.
    pub fn build(&self) -> Result<(nn::VarStore, Network), ExportError> {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let opts = CompileOptions {
            head: self.head,
            ..CompileOptions::default()
        };
        let net = compile_with(
            &vs.root(),
            &self.node,
            self.input,
            self.classes,
            self.seed,
            opts,
        )?;
        if let Some(p) = &self.weights {
            vs.load(p).map_err(|source| ExportError::Weights {
                path: p.clone(),
                source,
            })?;
        }
        Ok((vs, net))
    }

    fn info(&self) -> ModuleInfo {
        let mut notes = Vec::new();
        if let Some(r) = &self.record {
            notes.push(format!(
                "Run {}, evaluation {}: validation score {} on task {}, {} parameters, {} epochs.",
                r.run,
                r.eval,
                r.score.map(|s| format!("{s:.4}")).unwrap_or("-".into()),
                r.task.name,
                r.params,
                r.epochs
            ));
        }
        if self.weights.is_none() {
            notes.push(format!(
                "The weights are an untrained initialisation (seed {}).",
                self.seed
            ));
        }
        ModuleInfo {
            space: self.space.clone(),
            weights_file: "model.safetensors".into(),
            notes,
            head: self.head,
        }
    }

    /// Writes the export in `format` into folder `out` (made if missing); returns the files.
    pub fn write(&self, format: Format, out: &Path) -> Result<Vec<PathBuf>, ExportError> {
        std::fs::create_dir_all(out).map_err(|e| write_err(out, e))?;
        match format {
            Format::Pytorch => {
                let (vs, _net) = self.build()?;
                let m = pytorch::module(&self.node, self.input, self.classes, &self.info())?;
                let tensors = state_dict(&vs, &m)?;
                let py = out.join("model.py");
                std::fs::write(&py, &m.source).map_err(|e| write_err(&py, e))?;
                let st = out.join("model.safetensors");
                Tensor::write_safetensors(&tensors, &st).map_err(|e| write_err(&st, e))?;
                Ok(vec![py, st])
            }
            Format::Json => {
                let p = out.join("candidate.json");
                let value = match &self.record {
                    Some(r) => serde_json::to_value(r),
                    None => serde_json::to_value(serde_json::json!({
                        "candidate": self.node.to_string(),
                        "hash": self.node.hash_hex(),
                        "space": self.space,
                        "input": self.input,
                        "classes": self.classes,
                    })),
                }
                .map_err(|e| write_err(&p, e))?;
                let text = serde_json::to_string_pretty(&value).map_err(|e| write_err(&p, e))?;
                std::fs::write(&p, text + "\n").map_err(|e| write_err(&p, e))?;
                Ok(vec![p])
            }
            Format::Weights => {
                let p = out.join("weights.ot");
                match &self.weights {
                    Some(w) => {
                        std::fs::copy(w, &p).map_err(|e| write_err(&p, e))?;
                    }
                    None => {
                        let (vs, _) = self.build()?;
                        vs.save(&p).map_err(|e| write_err(&p, e))?;
                    }
                }
                Ok(vec![p])
            }
        }
    }
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The VarStore's tensors under the module's `state_dict()` keys, plus the BatchNorm counters,
/// sorted by key. Every variable must map and every mapped name must exist.
pub fn state_dict(
    vs: &nn::VarStore,
    m: &pytorch::Module,
) -> Result<Vec<(String, Tensor)>, ExportError> {
    let vars = vs.variables();
    if vars.len() != m.names.len() {
        let mapped: std::collections::HashSet<&str> =
            m.names.iter().map(|(t, _)| t.as_str()).collect();
        let mut extra: Vec<&String> = vars
            .keys()
            .filter(|k| !mapped.contains(k.as_str()))
            .collect();
        extra.sort();
        return Err(ExportError::Mapping(format!(
            "{} variables in the network, {} in the module; unmapped: {:?}",
            vars.len(),
            m.names.len(),
            extra
        )));
    }
    let mut out = Vec::with_capacity(m.names.len() + m.counters.len());
    for (t, py) in &m.names {
        let v = vars
            .get(t)
            .ok_or_else(|| ExportError::Mapping(format!("the network has no variable {t}")))?;
        let mut v = v
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        if let Some((_, shape)) = m.reshape.iter().find(|(k, _)| k == py) {
            v = v.f_reshape(shape.as_slice()).map_err(|e| {
                ExportError::Mapping(format!("cannot reshape {t} to {shape:?} for {py}: {e}"))
            })?;
        }
        out.push((py.clone(), v));
    }
    for c in &m.counters {
        out.push((c.clone(), Tensor::from(0i64)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The candidate of a run folder to export: `which` is a hash (or a prefix of one), an
/// evaluation number, or `None` for the run's best.
pub fn from_run(dir: &Path, which: Option<&str>) -> Result<Exportable, ExportError> {
    let run_err = |m: String| ExportError::Run(m);
    let cfg = dir.join("config.toml");
    let settings = Settings::load(Some(&cfg)).map_err(|e| run_err(format!("{e:#}")))?;
    let exp = Experiment::resolve(settings, &cfg.display().to_string())
        .map_err(|e| run_err(format!("{e:#}")))?;
    let events = read_journal(&dir.join("journal.jsonl"))
        .map_err(|e| run_err(e.to_string()))?
        .events;
    let finished: Vec<&TrainFinished> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrainFinished(t) => Some(t),
            _ => None,
        })
        .collect();
    let best = best_hash(dir, &events, exp.maximize());
    let chosen: &TrainFinished = match which {
        None => {
            let Some(h) = &best else {
                return Err(run_err(format!(
                    "{} has no successfully trained candidate yet",
                    dir.display()
                )));
            };
            finished
                .iter()
                .rev()
                .find(|t| &t.hash == h)
                .copied()
                .ok_or_else(|| run_err(format!("the best candidate {h} is not in the journal")))?
        }
        Some(w) => {
            let by_eval = w.parse::<u64>().ok();
            let hits: Vec<&TrainFinished> = finished
                .iter()
                .rev()
                .filter(|t| Some(t.eval) == by_eval || t.hash.starts_with(w))
                .copied()
                .collect();
            let mut hashes: Vec<&str> = hits.iter().map(|t| t.hash.as_str()).collect();
            hashes.dedup();
            match hashes.len() {
                0 => {
                    return Err(run_err(format!(
                        "no evaluated candidate of {} has hash or evaluation number `{w}`",
                        dir.display()
                    )))
                }
                1 => hits[0],
                _ => {
                    return Err(run_err(format!(
                        "`{w}` matches several candidates: {}",
                        hashes.join(", ")
                    )))
                }
            }
        }
    };
    let node = archsmith::space::parse_one(&chosen.candidate)
        .map_err(|e| {
            let why: Vec<String> = e.iter().map(|s| s.message.clone()).collect();
            run_err(format!(
                "cannot parse candidate {}: {}",
                chosen.hash,
                why.join("; ")
            ))
        })?
        .node;
    let is_best = best.as_deref() == Some(chosen.hash.as_str());
    let weights = dir.join(BEST_WEIGHTS);
    let weights = (is_best && weights.is_file()).then_some(weights);
    let proposal: Option<&ProposalEvent> = events.iter().find_map(|e| match e {
        Event::Proposal(p) if p.id == chosen.proposal => Some(p),
        _ => None,
    });
    let curve = events
        .iter()
        .filter_map(|e| match e {
            Event::Epoch(ep) if ep.eval == chosen.eval => Some(ep.valid_score),
            _ => None,
        })
        .collect();
    let record = Record {
        run: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hash: chosen.hash.clone(),
        candidate: chosen.candidate.clone(),
        space: exp.space.name().to_string(),
        input: exp.input,
        classes: exp.classes,
        eval: chosen.eval,
        score: chosen.score,
        outcome: chosen
            .failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_else(|| "ok".into()),
        params: chosen.params,
        flops: chosen.flops,
        epochs: chosen.epochs,
        stopped_early: chosen.stopped_early,
        wall_seconds: chosen.wall_seconds,
        curve,
        is_best,
        origin: proposal.map(|p| {
            serde_json::to_value(p.origin)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }),
        parents: proposal.map(|p| p.parents.clone()).unwrap_or_default(),
        plan: proposal.and_then(|p| p.plan.clone()),
        predicted: proposal.and_then(|p| p.predicted),
        task: exp.task.clone(),
        recipe: exp.recipe.clone(),
        seed: exp.settings.seed,
        has_weights: weights.is_some(),
    };
    Ok(Exportable {
        node,
        space: exp.space.name().to_string(),
        input: exp.input,
        classes: exp.classes,
        head: exp.recipe.head,
        weights,
        seed: exp.settings.seed,
        record: Some(record),
    })
}

/// The run's best hash: `best.json` when present (it goes with `best.ot`), else the best score
/// in the journal.
fn best_hash(dir: &Path, events: &[Event], maximize: bool) -> Option<String> {
    let from_file = std::fs::read_to_string(dir.join("best.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("hash").and_then(|h| h.as_str()).map(str::to_string));
    if from_file.is_some() {
        return from_file;
    }
    let mut best: Option<(f64, &str)> = None;
    for e in events {
        if let Event::TrainFinished(t) = e {
            if let Some(s) = t.score.filter(|s| s.is_finite()) {
                let better = match best {
                    None => true,
                    Some((b, _)) => (maximize && s > b) || (!maximize && s < b),
                };
                if better {
                    best = Some((s, &t.hash));
                }
            }
        }
    }
    best.map(|(_, h)| h.to_string())
}
