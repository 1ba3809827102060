//! A fake executor for tests and benchmarks: `slots` jobs in flight, scored at once by a
//! [`FakeEvaluator`], their results handed back in an order of the test's choosing, so that the
//! loop's handling of results arriving out of order can be checked without training.

use super::{ExecError, Executor, Job, Update};
use crate::run::{Evaluator, FakeEvaluator};
use crate::train::{Epoch, Flow};

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
