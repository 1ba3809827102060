//! archsmith: synthesise neural architectures and small tensor programs with a language model
//! in the loop.
//!
//! The library is organised as the loop's data flows: [`space`] (what a candidate may be:
//! grammars, the candidate notation, validation, sampling, mutation), [`llm`] (model
//! providers, prompts, reply parsing, recorded exchanges that replay), [`train`] (compile a
//! candidate to tch, datasets and tasks, the training recipe), [`search`] (strategies that
//! propose candidates from the history), [`run`] (the agent loop, the run folder, its
//! journal, resume and replay), [`exec`] (where candidates train: in this process, in local
//! worker processes, or as Ray jobs) and [`report`] (reports, comparisons of runs, export of a
//! candidate to PyTorch). [`exit`] holds the exit statuses both binaries end with.

#![warn(unreachable_pub)]

pub mod bench;
pub mod exec;
pub mod exit;
pub mod llm;
pub mod report;
pub mod run;
pub mod search;
pub mod space;
pub mod text;
pub mod train;
