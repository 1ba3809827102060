//! archsmith's training half: validated candidates compiled to libtorch modules with `tch` and
//! trained. The search driver (`archsmith`, which never loads libtorch) runs this crate's
//! binary, `archsmith-torch`, as worker processes; tests, benchmarks and library users may
//! call it in their own process.
//!
//! - [`compile`]: the candidate tree as a tree of boxed tch layers, plus the head; fused
//!   modules (conv2d, scaled-dot-product attention) where the space's rewriting finds them.
//! - [`data`]: a task's data as tensors, normalised.
//! - [`trainer`]: the one training loop, for networks and programs alike; the result,
//!   failures as values, the early-stopping hook.
//! - [`program`]: activation functions and update rules compiled to tch operations, and
//!   their evaluation on a reference network.
//! - [`device`]: a device choice resolved to a tch device.
//! - [`evaluate`]: the in-process evaluator of a run's candidates.
//! - [`worker`]: `archsmith-torch worker`, the jobs of the local and Ray executors.
//! - [`export`]: a candidate as a PyTorch module with safetensors weights, as JSON, or as tch
//!   weights.

pub mod cli;
pub mod compile;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod export;
pub mod program;
pub mod trainer;
pub mod worker;

pub use compile::{compile, CompileError, Network};
pub use data::{Data, Split, TaskData};
pub use device::{parse_device, DeviceChoice, DeviceError};
pub use evaluate::{evaluate_with, TchEvaluator};
pub use export::{from_run, ExportError, Exportable, Format};
pub use trainer::{train, train_saving, TrainOptions};
