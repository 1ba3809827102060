//! Seeing and using results.
//!
//! - [`data`]: a run folder read into a [`Report`] (a serde value): best so far, every
//!   candidate's score and size with the Pareto fronts, learning curves, the model's proposals,
//!   predictions and costs, the lineage of the best, the top candidates.
//! - [`html`] and [`svg`]: the report as one self-contained HTML file with inline SVG charts.
//! - [`compare`]: several runs grouped by strategy, mean and standard error of best-so-far,
//!   improvement over random sampling; HTML and CSV.
//! - [`pytorch`]: a candidate as the text of a PyTorch module (`model.py`); exporting it with
//!   its weights is the training crate's (`archsmith_torch::export`).

pub mod compare;
pub mod data;
pub mod html;
pub mod pytorch;
pub mod svg;

pub use compare::{Comparison, Group, RunRow};
pub use data::{Report, ReportError};
