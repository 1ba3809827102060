//! archsmith: synthesise neural architectures and small tensor programs with a language model
//! in the loop.
//!
//! The library is organised as the loop's data flows: [`space`] (what a candidate may be:
//! grammars, the candidate notation, validation, sampling, mutation).

pub mod space;
