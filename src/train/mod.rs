//! Tasks and training as data: what a task is and where its examples come from, recipes,
//! and what training a candidate gives. Nothing here touches libtorch: compiling candidates
//! and training them is the training crate's (`archsmith-torch`), which the search driver
//! runs in worker processes, so that commands which do not train start at once and a crash
//! in libtorch cannot take a search down.
//!
//! - [`task`], [`data`], [`synth`], [`npy`]: tasks, datasets as plain vectors, loaders and
//!   synthetic data.
//! - [`recipe`]: optimiser, schedule, regularisation and budgets.
//! - [`outcome`]: the learning curve, results and failures as values, the early-stopping hook.
//! - [`device`]: parsing `auto`, `cpu`, `cuda` and `cuda:N`.
//! - [`program`]: how programs (activation functions, update rules) are scored, and the
//!   constants of their semantics.
//! - [`lookup`]: tabular benchmarks, where an evaluation is a look-up.

pub mod data;
pub mod device;
pub mod lookup;
pub mod npy;
pub mod outcome;
pub mod program;
pub mod recipe;
pub mod synth;
pub mod task;

pub use data::{Data, DataError, Split};
pub use device::{DeviceChoice, DeviceError};
pub use outcome::{
    Epoch, Evaluation, Failure, FailureReason, Flow, Observer, OnEpoch, Quiet, TrainResult,
};
pub use recipe::{Optimizer, Precision, Recipe};
pub use task::{Metric, Task, TaskError};
