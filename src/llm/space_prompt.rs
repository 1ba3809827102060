//! Where the language-model layer meets a search space: a model's reply turned into candidates
//! checked against the space, and the repair prompt's context built from the validator's
//! diagnostics.
//!
//! This is the one module of `llm` that knows about `space`, and it uses only the space's
//! public surface (`Space::validate_text`, `Space::describe`, `Diagnostic`, and `parse_one` /
//! `notation::one_line` to put a candidate on one line), so the rest of the layer (providers,
//! templates, reply parsing) stays independent of any grammar.

use crate::space::notation::one_line;
use crate::space::{parse_one, Analysis, CheckOptions, Diagnostic, Node, Shape, Space};

use super::prompt::RepairContext;
use super::reply::{parse_reply, ParsedReply, Proposal, ReplyError, ReplyFormat};

/// The space's grammar compiles into the format a request carries.
impl From<super::GrammarFormat> for crate::space::CfgFormat {
    fn from(f: super::GrammarFormat) -> Self {
        match f {
            super::GrammarFormat::Gbnf => crate::space::CfgFormat::Gbnf,
            super::GrammarFormat::Lark => crate::space::CfgFormat::Lark,
        }
    }
}

/// A candidate that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCandidate {
    pub node: Node,
    /// The canonical text: what the history records and what is hashed for de-duplication.
    pub canonical: String,
    /// `Node::hash_hex` of the canonical form.
    pub hash: String,
    pub analysis: Analysis,
}

/// A candidate that did not: the validator's diagnostics, and the same as the text a repair
/// prompt shows the model. As an error, it reads as that text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidCandidate {
    /// The candidate as the diagnostics see it: [`prompt_form`] of the text, so that a
    /// position such as `1:37` points into what the repair prompt shows.
    pub candidate: String,
    pub diagnostics: Vec<Diagnostic>,
    /// [`repair_message`] of the diagnostics.
    pub message: String,
}

/// The verdict on one candidate text.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Valid(ValidCandidate),
    Invalid(InvalidCandidate),
}

impl Verdict {
    pub fn valid(&self) -> Option<&ValidCandidate> {
        match self {
            Verdict::Valid(v) => Some(v),
            Verdict::Invalid(_) => None,
        }
    }

    pub fn invalid(&self) -> Option<&InvalidCandidate> {
        match self {
            Verdict::Valid(_) => None,
            Verdict::Invalid(i) => Some(i),
        }
    }
}

/// One proposal of a reply with its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedCandidate {
    /// The candidate as the reply wrote it, with its predicted score and line.
    pub proposal: Proposal,
    pub verdict: Verdict,
}

impl CheckedCandidate {
    /// The context of a repair prompt for this candidate, or `None` when it is valid.
    pub fn repair_context(&self, task: &str, space: &Space) -> Option<RepairContext> {
        let invalid = self.verdict.invalid()?;
        Some(repair_context(
            task,
            space,
            &invalid.candidate,
            &invalid.message,
        ))
    }
}

/// A propose or repair reply, its candidates checked, in the order the reply gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedReply {
    pub plan: Option<String>,
    pub format: ReplyFormat,
    /// What the reply parser noticed and let pass.
    pub notes: Vec<String>,
    pub candidates: Vec<CheckedCandidate>,
}

impl CheckedReply {
    pub fn valid(&self) -> impl Iterator<Item = (&Proposal, &ValidCandidate)> {
        self.candidates
            .iter()
            .filter_map(|c| c.verdict.valid().map(|v| (&c.proposal, v)))
    }

    pub fn invalid(&self) -> impl Iterator<Item = (&Proposal, &InvalidCandidate)> {
        self.candidates
            .iter()
            .filter_map(|c| c.verdict.invalid().map(|i| (&c.proposal, i)))
    }
}

/// A candidate as a prompt shows it, on one line: its canonical form when it parses (macros
/// expanded), else [`one_line`] of the text (comments dropped, statements joined by `; `).
pub fn prompt_form(text: &str) -> String {
    match parse_one(text) {
        Ok(l) => l.node.to_string(),
        Err(_) => one_line(text),
    }
}

/// Validates one candidate text against `space` for `input`. The text is validated in its
/// [`prompt_form`], which has the same meaning, so that the diagnostics describe the text a
/// repair prompt shows.
pub fn check_candidate(space: &Space, text: &str, input: Shape, opts: &CheckOptions) -> Verdict {
    let text = prompt_form(text);
    match space.validate_text(&text, input, opts) {
        Ok((node, analysis)) => Verdict::Valid(ValidCandidate {
            canonical: node.to_string(),
            hash: node.hash_hex(),
            node,
            analysis,
        }),
        Err(diagnostics) => Verdict::Invalid(InvalidCandidate {
            candidate: text,
            message: repair_message(&diagnostics),
            diagnostics,
        }),
    }
}

/// Checks every proposal of an already parsed reply.
fn check_parsed(
    space: &Space,
    parsed: ParsedReply,
    input: Shape,
    opts: &CheckOptions,
) -> CheckedReply {
    let candidates = parsed
        .proposals
        .into_iter()
        .map(|proposal| CheckedCandidate {
            verdict: check_candidate(space, &proposal.text, input, opts),
            proposal,
        })
        .collect();
    CheckedReply {
        plan: parsed.plan,
        format: parsed.format,
        notes: parsed.notes,
        candidates,
    }
}

/// Parses a propose or repair reply and checks each candidate in it. A reply with no
/// candidate at all is the parser's error; a candidate the notation cannot parse is an
/// invalid candidate with syntax diagnostics, to be sent back for repair like any other.
pub fn check_reply(
    space: &Space,
    reply: &str,
    input: Shape,
    opts: &CheckOptions,
) -> Result<CheckedReply, ReplyError> {
    Ok(check_parsed(space, parse_reply(reply)?, input, opts))
}

/// The validator's diagnostics as the text a repair prompt shows: one line each, in the order
/// found, each naming the node, where it is, the rule and the shapes involved.
pub fn repair_message(diagnostics: &[Diagnostic]) -> String {
    if diagnostics.is_empty() {
        // Validation never fails without a reason; this keeps the prompt honest if it does.
        return "- the candidate was rejected without a reason".to_string();
    }
    diagnostics
        .iter()
        .map(|d| format!("- {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The space in words as the templates get it: [`Space::describe`] without its trailing
/// newline, which the templates place themselves.
pub fn grammar_text(space: &Space) -> String {
    space.describe().trim_end().to_string()
}

/// The repair prompt's context for `candidate` (normally [`InvalidCandidate::candidate`]),
/// rejected with `error` (normally a [`repair_message`]), with the space's grammar in words.
pub fn repair_context(task: &str, space: &Space, candidate: &str, error: &str) -> RepairContext {
    RepairContext {
        task: task.to_string(),
        space_name: space.name().to_string(),
        grammar_text: grammar_text(space),
        candidate: candidate.to_string(),
        error: error.to_string(),
    }
}
