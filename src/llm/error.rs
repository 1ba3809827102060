//! The errors of the language-model layer.
//!
//! Every message names the provider (or the replay step) and, where one is likely, the fix.
//! None of them ever holds an API key: server text passes through [`crate::llm::ApiKey::scrub`]
//! before it gets here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which budget cap ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimit {
    Calls,
    Tokens,
    Dollars,
}

impl fmt::Display for BudgetLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Calls => "calls",
            Self::Tokens => "tokens",
            Self::Dollars => "USD",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    #[error("{provider}: environment variable {var} is not set (or is empty); it should hold the API key")]
    MissingApiKey { provider: String, var: String },

    #[error("{provider}: the server refused the credentials (HTTP {status}): {message}; {hint}")]
    Auth {
        provider: String,
        status: u16,
        message: String,
        hint: String,
    },

    #[error("{provider}: the server rejected the request (HTTP {status}): {message}; {hint}")]
    Rejected {
        provider: String,
        status: u16,
        message: String,
        hint: String,
    },

    /// The prompt does not fit the model's context window: the server said so (llama.cpp's
    /// `exceed_context_size_error`, OpenAI's `context_length_exceeded`, Anthropic's "prompt is
    /// too long"). Not worth the same request again; a shorter prompt may pass.
    #[error(
        "{provider}: the prompt does not fit the model's context window (HTTP {status}): {message}"
    )]
    ContextOverflow {
        provider: String,
        status: u16,
        message: String,
    },

    /// 408, 429 and 5xx: worth another try.
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },

    #[error("{provider}: connection to {url} failed: {message}")]
    Connection {
        provider: String,
        url: String,
        message: String,
    },

    #[error("{provider}: no complete response within the request timeout of {timeout:?}")]
    Timeout { provider: String, timeout: Duration },

    #[error("{provider}: malformed response: {reason}; the body begins: {excerpt}")]
    Malformed {
        provider: String,
        reason: String,
        excerpt: String,
    },

    #[error("{provider}: the response held no choices")]
    EmptyChoices { provider: String },

    #[error("{provider}: gave up after {attempts} attempts; the last error was: {last}")]
    RetriesExhausted {
        provider: String,
        attempts: u32,
        #[source]
        last: Box<LlmError>,
    },

    /// A cap from the budget was reached before the call; the run should end cleanly.
    #[error("budget exhausted: the {limit} cap of {cap} is reached ({used} used)")]
    BudgetExhausted {
        limit: BudgetLimit,
        used: f64,
        cap: f64,
    },

    /// Replay found no recorded reply for a request. `detail` shows the request and the
    /// nearest recorded one, as pretty JSON and a unified diff.
    #[error("replay: no recorded reply for step {step} (request {hash}){detail}")]
    ReplayMiss {
        step: String,
        hash: String,
        detail: String,
    },

    /// The recorded call failed, so replay fails it again the same way.
    #[error("replay: step {step}: the recorded call failed ({kind}): {message}")]
    ReplayedFailure {
        step: String,
        kind: String,
        message: String,
    },

    #[error("{}: line {line}: {message}", path.display())]
    RecordFormat {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("mock provider: no scripted reply left for step {step}")]
    MockExhausted { step: String },

    #[error("invalid language-model config: {0}")]
    Config(String),

    /// The model server went away (a local server that exited or stopped answering): the
    /// run pauses, to be resumed once it is back.
    #[error("{provider}: {message}")]
    Unavailable { provider: String, message: String },
}

impl LlmError {
    /// Whether another attempt might succeed. Malformed bodies and empty choice lists count,
    /// but the retry loop allows them only a few tries of their own (see `RetryConfig`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Status { .. }
                | Self::Connection { .. }
                | Self::Timeout { .. }
                | Self::Malformed { .. }
                | Self::EmptyChoices { .. }
        )
    }

    /// Whether the prompt was too long for the model's context, live or as replayed from a
    /// record, so that a caller may shorten it and ask again.
    pub fn is_context_overflow(&self) -> bool {
        match self {
            Self::ContextOverflow { .. } => true,
            Self::ReplayedFailure { kind, .. } => kind == "context_overflow",
            Self::RetriesExhausted { last, .. } => last.is_context_overflow(),
            _ => false,
        }
    }

    /// The prompt's tokens and the context's, when the server's message gives both as
    /// llama.cpp's does ("request (4476 tokens) exceeds the available context size (4096
    /// tokens)"). Read from the message text, so a replayed failure gives the same numbers.
    pub fn overflow_tokens(&self) -> Option<(u64, u64)> {
        if !self.is_context_overflow() {
            return None;
        }
        let text = self.to_string();
        let mut counts = text.match_indices(" tokens)").filter_map(|(end, _)| {
            let start = text[..end].rfind('(')? + 1;
            text[start..end].trim().parse::<u64>().ok()
        });
        let prompt = counts.next()?;
        let context = counts.next()?;
        (prompt > context).then_some((prompt, context))
    }

    /// Whether the error is about the shape of a 200 reply rather than the transport.
    pub(crate) fn is_bad_body(&self) -> bool {
        matches!(self, Self::Malformed { .. } | Self::EmptyChoices { .. })
    }

    /// HTTP attempts made before this error was returned.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::RetriesExhausted { attempts, .. } => *attempts,
            Self::BudgetExhausted { .. }
            | Self::MissingApiKey { .. }
            | Self::Config(_)
            | Self::Unavailable { .. }
            | Self::ReplayMiss { .. }
            | Self::MockExhausted { .. } => 0,
            _ => 1,
        }
    }

    /// A short stable name, written into `llm.jsonl` next to the message.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingApiKey { .. } => "missing_api_key",
            Self::Auth { .. } => "auth",
            Self::Rejected { .. } => "rejected",
            Self::ContextOverflow { .. } => "context_overflow",
            Self::Status { .. } => "status",
            Self::Connection { .. } => "connection",
            Self::Timeout { .. } => "timeout",
            Self::Malformed { .. } => "malformed",
            Self::EmptyChoices { .. } => "empty_choices",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::ReplayMiss { .. } => "replay_miss",
            Self::ReplayedFailure { .. } => "replayed_failure",
            Self::RecordFormat { .. } => "record_format",
            Self::Io { .. } => "io",
            Self::MockExhausted { .. } => "mock_exhausted",
            Self::Config(_) => "config",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LlmError;

    #[test]
    fn context_overflow_gives_its_token_counts_live_and_replayed() {
        let live = LlmError::ContextOverflow {
            provider: "local".into(),
            status: 400,
            message: "request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it".into(),
        };
        assert!(live.is_context_overflow());
        assert_eq!(live.overflow_tokens(), Some((4476, 4096)));
        let replayed = LlmError::ReplayedFailure {
            step: "r3.propose".into(),
            kind: live.kind().into(),
            message: live.to_string(),
        };
        assert!(replayed.is_context_overflow());
        assert_eq!(replayed.overflow_tokens(), Some((4476, 4096)));
        let openai = LlmError::ContextOverflow {
            provider: "openai".into(),
            status: 400,
            message: "This model's maximum context length is 8192 tokens".into(),
        };
        assert!(openai.is_context_overflow());
        assert_eq!(openai.overflow_tokens(), None);
        let other = LlmError::ReplayedFailure {
            step: "r1.propose".into(),
            kind: "rejected".into(),
            message: "(10 tokens) (5 tokens)".into(),
        };
        assert!(!other.is_context_overflow());
        assert_eq!(other.overflow_tokens(), None);
    }
}
