//! Training candidates with libtorch (tch): compile a validated candidate to a network,
//! load or generate a task's data, train it with a recipe and report a score.
//!
//! `train` sees a validated candidate, never the model or the history: the caller validates
//! (`Space::check`) and passes the `Analysis`, whose counts the compiled network matches.
//!
//! - [`compile`]: the candidate tree as a tree of boxed tch layers, plus the head.
//! - [`task`], [`data`], [`synth`], [`npy`]: tasks, datasets, loaders and synthetic data.
//! - [`recipe`]: optimiser, schedule, regularisation and budgets.
//! - [`trainer`]: the loop, the result, failures as values, the early-stopping hook.
//! - [`device`]: parsing `auto`, `cpu`, `cuda` and `cuda:N`.
//! - [`program`]: activation functions and update rules compiled to tch operations, and
//!   their evaluation on a reference network.

pub mod compile;
pub mod data;
pub mod device;
pub mod lookup;
pub mod npy;
pub mod program;
pub mod recipe;
pub mod synth;
pub mod task;
pub mod trainer;

pub use compile::{compile, CompileError, Network};
pub use data::{Data, DataError, Split};
pub use device::{parse_device, DeviceChoice, DeviceError};
pub use recipe::{Optimizer, Precision, Recipe};
pub use task::{Metric, Task, TaskError};
pub use trainer::{
    train, train_saving, Epoch, Failure, FailureReason, Flow, Observer, OnEpoch, Quiet,
    TrainOptions, TrainResult,
};
