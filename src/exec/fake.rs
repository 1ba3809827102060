//! A fake executor for tests and benchmarks: `slots` jobs in flight, scored at once by a
//! [`FakeEvaluator`], their results handed back in an order of the test's choosing, so that the
//! loop's handling of results arriving out of order can be checked without training.

use super::inline::Evaluator;
use super::{ExecError, Executor, Job, Update};
use crate::space::{Analysis, Node};
use crate::train::{Epoch, Evaluation, Flow};

/// A fake evaluator for tests and benchmarks: a deterministic score from the candidate's
/// size and shape, no training.
#[derive(Debug, Default)]
pub struct FakeEvaluator {
    pub epochs: usize,
}

impl Evaluator for FakeEvaluator {
    fn evaluate(
        &mut self,
        node: &Node,
        analysis: &Analysis,
        on_epoch: &mut dyn FnMut(&Epoch) -> Flow,
    ) -> Evaluation {
        let h = u64::from_str_radix(&node.hash_hex()[..8], 16).unwrap_or(0);
        let noise = (h % 1000) as f64 / 10_000.0;
        let size = (analysis.total_params() as f64 + 1.0).log10() / 8.0;
        let target = (0.3 + 0.5 * size.min(1.0) + noise).min(1.0);
        let mut curve = Vec::new();
        let mut stopped = false;
        let epochs = self.epochs.max(1);
        for e in 1..=epochs {
            let s = target * e as f64 / epochs as f64;
            let ep = Epoch {
                epoch: e,
                steps: e as u64,
                train_loss: 1.0 - s,
                valid_loss: 1.0 - s,
                valid_score: s,
                lr: 0.0,
                seconds: 0.0,
            };
            curve.push(ep.clone());
            if on_epoch(&ep) == Flow::Stop {
                stopped = e < epochs;
                break;
            }
        }
        Evaluation {
            score: curve.last().map(|e| e.valid_score),
            failure: None,
            curve,
            params: analysis.total_params(),
            flops: analysis.flops,
            stopped_early: stopped,
            wall_seconds: 0.0,
            weights: None,
            lookup: None,
        }
    }

    fn epochs(&self) -> usize {
        self.epochs.max(1)
    }
}

/// Which job in flight finishes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The first submitted.
    Fifo,
    /// The last submitted.
    Lifo,
}

pub struct Fake {
    pub slots: usize,
    pub order: Order,
    pub evaluator: FakeEvaluator,
    /// Jobs in flight, in submission order.
    pub jobs: Vec<Job>,
}

impl Fake {
    pub fn new(slots: usize, order: Order, epochs: usize) -> Fake {
        Fake {
            slots,
            order,
            evaluator: FakeEvaluator { epochs },
            jobs: Vec::new(),
        }
    }
}

impl Executor for Fake {
    fn describe(&self) -> String {
        format!("fake ({} slots, {:?})", self.slots, self.order)
    }

    fn slots(&self) -> usize {
        self.slots
    }

    fn submit(&mut self, job: Job) -> Result<String, ExecError> {
        if self.jobs.len() >= self.slots {
            return Err(ExecError::Other("every slot is busy".into()));
        }
        self.jobs.push(job);
        Ok(format!("fake:{}", self.jobs.len() - 1))
    }

    fn next(&mut self, on_epoch: &mut dyn FnMut(u64, &Epoch)) -> Result<Update, ExecError> {
        if self.jobs.is_empty() {
            return Err(ExecError::Other("no job in flight".into()));
        }
        let job = match self.order {
            Order::Fifo => self.jobs.remove(0),
            Order::Lifo => self.jobs.pop().expect("not empty"),
        };
        let eval = job.spec.eval;
        let mut hook = |e: &Epoch| {
            on_epoch(eval, e);
            if job.spec.promoted(e.epoch, e.valid_score) {
                Flow::Continue
            } else {
                Flow::Stop
            }
        };
        let result = self.evaluator.evaluate(&job.node, &job.analysis, &mut hook);
        Ok(Update::Done { eval, result })
    }

    fn stop_all(&mut self) -> Vec<String> {
        self.jobs
            .drain(..)
            .map(|j| format!("fake eval {}", j.spec.eval))
            .collect()
    }
}
