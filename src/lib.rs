//! archsmith: synthesise neural architectures and small tensor programs with a language model
//! in the loop.
//!
//! The library is organised as the loop's data flows: [`space`] (what a candidate may be:
//! grammars, the candidate notation, validation, sampling, mutation) -> [`train`] (compile a
//! candidate to tch, datasets and tasks, the training recipe); [`llm`] (model providers,
//! prompts, reply parsing, recorded exchanges that replay).

pub mod llm;
pub mod space;
pub mod train;
