//! A space's grammar compiled for constrained decoding: GBNF for llama.cpp (the `grammar` field
//! of a request) and the Lark dialect that vLLM's structured outputs take
//! (`structured_outputs: {"grammar": ...}`, llguidance's Lark).
//!
//! The exported grammar accepts candidates in canonical text (one line, `, ` between a form's
//! parts, `,` between an operation's arguments, sequences flattened), optionally wrapped in the
//! reply format the prompts ask for (`PLAN:`, then k `CANDIDATE:` / `PREDICTED:` pairs). It
//! enforces what a context-free grammar can: the names, arities and argument values of the
//! space's alternatives, balanced parentheses, the branch rule "one module or k modules" and the
//! aggregations whose arity fits k, and a bound on nesting depth (the recursive rules are
//! unrolled to that depth, so a model cannot recurse until `max_tokens`). Shapes, modes, state
//! declarations and resource limits stay with the validator.

use super::grammar::Grammar;

/// The text format of an exported grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfgFormat {
    /// llama.cpp's GBNF (`root ::= ...`), sent as `grammar` in a llama.cpp request body.
    Gbnf,
    /// The Lark dialect of llguidance (`start: ...`), vLLM's `structured_outputs.grammar`.
    Lark,
}

impl CfgFormat {
    pub fn name(self) -> &'static str {
        match self {
            CfgFormat::Gbnf => "gbnf",
            CfgFormat::Lark => "lark",
        }
    }

    pub fn by_name(name: &str) -> Option<CfgFormat> {
        [CfgFormat::Gbnf, CfgFormat::Lark]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// The reply around the candidates, as the prompt templates ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyShape {
    /// Number of `CANDIDATE:` lines (exactly this many), 1 to [`MAX_K`].
    pub k: usize,
    /// A `PLAN: ...` line first (propose, evolve and repair prompts all ask for one).
    pub plan: bool,
    /// A `PREDICTED: <number>` line after each candidate (propose and evolve; not repair).
    pub predicted: bool,
    /// Most characters of the plan line, so that a model cannot talk until `max_tokens`.
    pub plan_chars: usize,
}

impl ReplyShape {
    /// The propose/evolve reply: a plan, then k candidates each with a predicted score.
    pub fn propose(k: usize) -> ReplyShape {
        ReplyShape {
            k,
            plan: true,
            predicted: true,
            plan_chars: DEFAULT_PLAN_CHARS,
        }
    }

    /// The repair reply: a plan and one candidate, no prediction.
    pub fn repair() -> ReplyShape {
        ReplyShape {
            k: 1,
            plan: true,
            predicted: false,
            plan_chars: DEFAULT_PLAN_CHARS,
        }
    }
}

/// Default bound on the plan line's length (the prompts ask for two to four sentences).
pub const DEFAULT_PLAN_CHARS: usize = 600;

/// Largest k a reply grammar spells out.
pub const MAX_K: usize = 64;

/// What to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CfgOptions {
    /// Deepest nesting of forms the grammar allows; `None` is the space's `max_depth` (which
    /// accepts every candidate the space's sampler draws). Larger than `max_depth` is an error.
    pub depth: Option<usize>,
    /// The reply around the candidates; `None` exports the bare candidate grammar (one
    /// candidate, nothing else).
    pub reply: Option<ReplyShape>,
}

/// Why a grammar could not be exported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CfgError {
    #[error("depth {depth} is larger than space {space}'s max_depth {max_depth}")]
    DepthTooLarge {
        space: String,
        depth: usize,
        max_depth: usize,
    },
    #[error("k must be between 1 and {max}, not {k}")]
    BadK { k: usize, max: usize },
    #[error("the plan bound must be at least 1 character")]
    BadPlanChars,
    #[error("space {space} has no candidate of nesting depth {depth} or less; allow a larger depth (its max_depth is {max_depth})")]
    Empty {
        space: String,
        depth: usize,
        max_depth: usize,
    },
    #[error("space {space}: {message}")]
    Unsupported { space: String, message: String },
}

/// Size figures of an exported grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct CfgStats {
    pub rules: usize,
    pub bytes: usize,
}

/// Compiles `grammar` (with the reply format when asked) into a grammar for constrained
/// decoding in `format`.
pub fn export_cfg(
    grammar: &Grammar,
    format: CfgFormat,
    opts: &CfgOptions,
) -> Result<String, CfgError> {
    Ok(compile(grammar, opts)?.render(format))
}

/// A compiled grammar, independent of the text format.
#[derive(Clone, Debug)]
pub struct Cfg {
    rules: Vec<()>,
}

/// Compiles a grammar once, to render it in several formats or measure it.
pub fn compile(grammar: &Grammar, opts: &CfgOptions) -> Result<Cfg, CfgError> {
    let _ = (grammar, opts);
    Err(CfgError::Unsupported {
        space: grammar.name.clone(),
        message: "not implemented yet".into(),
    })
}

impl Cfg {
    /// The grammar's text in `format`.
    pub fn render(&self, format: CfgFormat) -> String {
        let _ = format;
        String::new()
    }

    /// Rule count and byte size of the text in `format`.
    pub fn stats(&self, format: CfgFormat) -> CfgStats {
        CfgStats {
            rules: self.rules.len(),
            bytes: self.render(format).len(),
        }
    }
}
