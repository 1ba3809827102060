//! The evaluator that trains in this process with libtorch: what a worker runs for each job,
//! and what tests and benchmarks use to train a run's candidates without workers.

use crate::data::Data;
use crate::program as p;
use crate::trainer::{train_saving, TrainOptions};
use archsmith::exec::inline::Evaluator;
use archsmith::space::SpaceKind;
use archsmith::space::{Analysis, Node};
use archsmith::train::program::ProgramEval;
use archsmith::train::{Epoch, Evaluation, Flow, OnEpoch};
use std::path::{Path, PathBuf};

/// Trains with libtorch on the task's data: architectures are compiled and trained; programs
/// (activation functions, update rules) are scored by training the reference network with them.
pub struct TchEvaluator {
    pub data: Data,
    pub opts: TrainOptions,
    /// Save each candidate's weights here (the loop keeps the best's as `best.ot`).
    pub weights_to: Option<PathBuf>,
    /// What the space's candidates are, which decides how they are scored.
    pub kind: SpaceKind,
    /// How programs are scored (reference network, learning-rate grid).
    pub program: ProgramEval,
}

impl Evaluator for TchEvaluator {
    fn evaluate(
        &mut self,
        node: &Node,
        analysis: &Analysis,
        on_epoch: &mut dyn FnMut(&Epoch) -> Flow,
    ) -> Evaluation {
        evaluate_with(
            self.kind,
            node,
            analysis,
            &self.data,
            &self.opts,
            &self.program,
            self.weights_to.as_deref(),
            on_epoch,
        )
    }

    fn epochs(&self) -> usize {
        self.opts.recipe.epochs
    }
}

/// Trains one candidate with libtorch: an architecture is compiled and trained (its weights
/// saved to `weights_to` when given); a program is scored by training the reference network
/// with it over its learning-rate grid.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    kind: SpaceKind,
    node: &Node,
    analysis: &Analysis,
    data: &Data,
    opts: &TrainOptions,
    program: &ProgramEval,
    weights_to: Option<&Path>,
    on_epoch: &mut dyn FnMut(&Epoch) -> Flow,
) -> Evaluation {
    let (r, saves) = match kind {
        SpaceKind::Network => (
            train_saving(
                node,
                analysis,
                data,
                opts,
                &mut OnEpoch(|e: &Epoch| on_epoch(e)),
                weights_to,
            ),
            true,
        ),
        // A program's score is the best over its learning-rate grid; the grid's trainings
        // report no per-epoch hook, so successive halving does not apply to programs.
        SpaceKind::Activation => (
            p::evaluate_activation(node, data, &opts.recipe, program, opts.device),
            false,
        ),
        SpaceKind::Optimizer => (
            p::evaluate_optimizer(node, data, &opts.recipe, program, opts.device),
            false,
        ),
    };
    let weights = weights_to
        .map(Path::to_path_buf)
        .filter(|p| saves && r.failure.is_none() && p.is_file());
    Evaluation {
        score: r.score.filter(|_| r.failure.is_none()),
        failure: r.failure,
        curve: r.curve,
        params: r.params,
        flops: r.flops,
        stopped_early: r.stopped_early,
        wall_seconds: r.wall_seconds,
        weights,
        lookup: None,
    }
}
