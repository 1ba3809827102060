//! The inline executor: one job at a time, in this process, through an [`Evaluator`] (libtorch
//! for runs, a fake one for tests and benchmarks).

use super::{interrupted, ExecError, Executor, Job, Update};
use crate::space::{Analysis, Node};
use crate::train::lookup;
use crate::train::{Epoch, Evaluation, Failure, FailureReason, Flow};
use std::sync::Arc;

/// Scores a candidate in this process: what the inline executor runs (a look-up table, a
/// fake for tests, or libtorch in the training crate).
pub trait Evaluator {
    /// Trains `node` (valid, with `analysis`), calling `on_epoch` after each epoch; training
    /// stops when it returns [`Flow::Stop`].
    fn evaluate(
        &mut self,
        node: &Node,
        analysis: &Analysis,
        on_epoch: &mut dyn FnMut(&Epoch) -> Flow,
    ) -> Evaluation;

    /// Epochs a full evaluation trains.
    fn epochs(&self) -> usize;
}

pub struct Inline<'a> {
    pub evaluator: Box<dyn Evaluator + 'a>,
    job: Option<Job>,
}

impl<'a> Inline<'a> {
    pub fn new(evaluator: Box<dyn Evaluator + 'a>) -> Inline<'a> {
        Inline {
            evaluator,
            job: None,
        }
    }
}

impl Executor for Inline<'_> {
    fn describe(&self) -> String {
        "inline (one candidate at a time, in this process)".into()
    }

    fn slots(&self) -> usize {
        1
    }

    fn submit(&mut self, job: Job) -> Result<String, ExecError> {
        if self.job.is_some() {
            return Err(ExecError::Other(
                "the inline executor trains one job at a time".into(),
            ));
        }
        self.job = Some(job);
        Ok("inline".into())
    }

    fn next(&mut self, on_epoch: &mut dyn FnMut(u64, &Epoch)) -> Result<Update, ExecError> {
        let job = self
            .job
            .take()
            .ok_or_else(|| ExecError::Other("no job in flight".into()))?;
        let eval = job.spec.eval;
        let mut hook = |e: &Epoch| {
            on_epoch(eval, e);
            if interrupted() || !job.spec.promoted(e.epoch, e.valid_score) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let result = self.evaluator.evaluate(&job.node, &job.analysis, &mut hook);
        if interrupted() {
            // Cut short by Ctrl-C: not a result; the evaluation is redone on resume.
            return Err(ExecError::Interrupted);
        }
        Ok(Update::Done { eval, result })
    }

    fn stop_all(&mut self) -> Vec<String> {
        // Training happens inside `next`; nothing runs between calls.
        self.job
            .take()
            .map(|_| vec!["inline".into()])
            .unwrap_or_default()
    }
}

/// Evaluates by looking the candidate up: no training.
pub struct LookupEvaluator {
    pub table: Arc<lookup::Table>,
}

impl Evaluator for LookupEvaluator {
    fn evaluate(
        &mut self,
        node: &Node,
        _analysis: &Analysis,
        on_epoch: &mut dyn FnMut(&Epoch) -> Flow,
    ) -> Evaluation {
        let Some((key, e)) = self.table.get(node) else {
            return Evaluation {
                score: None,
                failure: Some(Failure {
                    reason: FailureReason::Runtime,
                    message: format!(
                        "{node} is not in the NAS-Bench-Graph table of {} (key {})",
                        self.table.dataset,
                        lookup::cell_key(node).map_or("none".into(), |k| k.to_string())
                    ),
                }),
                curve: Vec::new(),
                params: 0,
                flops: 0,
                stopped_early: false,
                wall_seconds: 0.0,
                weights: None,
                lookup: None,
            };
        };
        let epoch = Epoch {
            epoch: 1,
            steps: 0,
            train_loss: 0.0,
            valid_loss: 0.0,
            valid_score: e.valid,
            lr: 0.0,
            seconds: 0.0,
        };
        let _ = on_epoch(&epoch);
        Evaluation {
            score: Some(e.valid),
            failure: None,
            curve: vec![epoch],
            params: (e.params_m * 1e6).round() as u64,
            flops: 0,
            stopped_early: false,
            wall_seconds: 0.0,
            weights: None,
            lookup: Some(lookup::LookupResult {
                key,
                test: e.test,
                latency_seconds: e.latency,
                params_millions: e.params_m,
            }),
        }
    }

    fn epochs(&self) -> usize {
        1
    }
}
