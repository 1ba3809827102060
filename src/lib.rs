//! archsmith

pub mod llm;
