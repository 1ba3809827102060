//! What training a candidate gives: its learning curve, its result or why it failed, and
//! the hooks that watch training. Plain data, shared by the loop, the executors and the
//! training crate (`archsmith-torch`), which produces it.

use super::recipe::Recipe;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Why training did not finish normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The loss became NaN or infinite.
    NonFinite,
    /// More parameters than allowed (checked before training).
    ParamLimit,
    /// The estimated training memory exceeds the limit (checked before training).
    MemoryLimit,
    /// The device ran out of memory.
    OutOfMemory,
    /// The wall-clock limit was reached; the curve so far is kept.
    TimeLimit,
    /// The candidate could not be compiled (it was not validated for this input).
    Compile,
    /// Any other error reported by torch.
    Runtime,
    /// The job failed outside training: its worker could not load what it needed, or its
    /// process died, was lost or timed out on every attempt.
    Worker,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: FailureReason,
    pub message: String,
}

/// One epoch of the learning curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// 1-based.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub steps: u64,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub valid_score: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// What training one candidate produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainResult {
    pub candidate: String,
    pub hash: String,
    pub task: String,
    pub metric: String,
    /// Validation score of the last epoch trained; `None` when no epoch finished.
    pub score: Option<f64>,
    pub test_score: Option<f64>,
    pub curve: Vec<Epoch>,
    pub params: u64,
    pub flops: u64,
    pub steps: u64,
    pub wall_seconds: f64,
    pub steps_per_second: f64,
    pub device: String,
    pub seed: u64,
    pub stopped_early: bool,
    pub failure: Option<Failure>,
    pub recipe: Recipe,
}

impl TrainResult {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Whether to go on after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Watches training: every step (for progress bars) and every epoch (to stop early).
pub trait Observer {
    fn step(&mut self, _step: u64, _total: u64, _loss: f64) {}
    fn epoch(&mut self, _epoch: &Epoch) -> Flow {
        Flow::Continue
    }
}

/// Observes nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// An observer from an epoch callback.
pub struct OnEpoch<F>(pub F);
impl<F: FnMut(&Epoch) -> Flow> Observer for OnEpoch<F> {
    fn epoch(&mut self, e: &Epoch) -> Flow {
        (self.0)(e)
    }
}

/// What training one candidate gave the loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub score: Option<f64>,
    pub failure: Option<Failure>,
    pub curve: Vec<Epoch>,
    pub params: u64,
    pub flops: u64,
    pub stopped_early: bool,
    pub wall_seconds: f64,
    /// Where the trained weights were saved, if they were.
    pub weights: Option<PathBuf>,
    /// A look-up task's record beyond the score (test accuracy, latency): journaled, never
    /// shown to the strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<super::lookup::LookupResult>,
}
