//! Seeing and using results: export of a candidate (PyTorch module and weights, JSON, tch
//! weights).

pub mod export;
pub mod pytorch;

pub use export::{from_run, ExportError, Exportable, Format};
