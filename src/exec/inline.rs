//! The inline executor: one job at a time, in this process, through an [`Evaluator`] (libtorch
//! for runs, a fake one for tests and benchmarks).

use super::{interrupted, ExecError, Executor, Job, Update};
use crate::run::Evaluator;
use crate::train::{Epoch, Flow};

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
