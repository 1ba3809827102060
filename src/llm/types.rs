//! The vocabulary shared by every provider: messages in, choices and usage out.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Sampling parameters of one request. `None` leaves the provider's default in place, and is
/// not sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Samples wanted from this one request.
    pub n: u32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: None,
            top_p: None,
            max_tokens: None,
            n: 1,
        }
    }
}

/// A request as a provider receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The caller's label for this call (e.g. `propose.3`). Recorded and shown in errors, but
    /// not part of the request hash: it is where the call came from, not what was asked.
    pub step: String,
    pub model: String,
    pub messages: Vec<Message>,
    pub params: SamplingParams,
    /// The grammar the server is to constrain decoding to, when the client sends one. Not
    /// part of the hash: it is a function of the space and the reply shape, so a recorded run
    /// replays whether or not the replaying client would send it; `llm.jsonl` records that
    /// it was sent (`constrained`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<GrammarConstraint>,
}

/// A grammar for constrained decoding, in the format the server takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrammarConstraint {
    pub format: super::config::GrammarFormat,
    pub text: std::sync::Arc<str>,
}

/// The part of a request that determines the reply; this is what is hashed and recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub params: SamplingParams,
}

impl ChatRequest {
    pub fn canonical(&self) -> CanonicalRequest {
        CanonicalRequest {
            model: self.model.clone(),
            messages: self.messages.clone(),
            params: self.params.clone(),
        }
    }

    /// `sha256:<hex>` of the canonical JSON of model, messages and parameters.
    pub fn hash(&self) -> String {
        self.canonical().hash()
    }
}

impl CanonicalRequest {
    pub fn hash(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut text = String::new();
        write_canonical(&value, &mut text);
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// JSON with object keys sorted and no whitespace. Written by hand rather than relying on
/// serde_json's map order, which changes if any crate in the build enables `preserve_order`.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Why generation stopped, normalised across providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit cut the reply short.
    Length,
    /// The provider withheld or refused content.
    ContentFilter,
    ToolCalls,
    /// Anything else, as the provider spelled it.
    Other(String),
    /// The provider did not say.
    Unknown,
}

impl FinishReason {
    pub fn from_openai(reason: Option<&str>) -> Self {
        match reason {
            Some("stop") => Self::Stop,
            Some("length") => Self::Length,
            Some("content_filter") => Self::ContentFilter,
            Some("tool_calls") | Some("function_call") => Self::ToolCalls,
            Some(other) => Self::Other(other.to_string()),
            None => Self::Unknown,
        }
    }

    pub fn from_anthropic(reason: Option<&str>) -> Self {
        match reason {
            Some("end_turn") | Some("stop_sequence") => Self::Stop,
            Some("max_tokens") => Self::Length,
            Some("refusal") => Self::ContentFilter,
            Some("tool_use") => Self::ToolCalls,
            Some(other) => Self::Other(other.to_string()),
            None => Self::Unknown,
        }
    }
}

/// One sampled reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub text: String,
    pub finish_reason: FinishReason,
}

/// Tokens consumed by a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens += rhs.input_tokens;
        self.output_tokens += rhs.output_tokens;
    }
}

/// A provider's answer to one [`ChatRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub choices: Vec<Choice>,
    pub usage: TokenUsage,
    /// HTTP attempts it took, retries included (summed over sub-requests when a provider
    /// makes several to collect `n` samples).
    pub attempts: u32,
    /// The model the server says answered, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl ChatResponse {
    /// The texts of all choices, in order.
    pub fn texts(&self) -> Vec<&str> {
        self.choices.iter().map(|c| c.text.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(step: &str, temp: Option<f64>) -> ChatRequest {
        ChatRequest {
            step: step.into(),
            model: "m".into(),
            messages: vec![Message::user("hi")],
            params: SamplingParams {
                temperature: temp,
                ..Default::default()
            },
            grammar: None,
        }
    }

    #[test]
    fn hash_ignores_step_but_not_parameters() {
        assert_eq!(req("a", Some(0.5)).hash(), req("b", Some(0.5)).hash());
        assert_ne!(req("a", Some(0.5)).hash(), req("a", Some(0.6)).hash());
        assert_ne!(req("a", None).hash(), req("a", Some(0.6)).hash());
        assert!(req("a", None).hash().starts_with("sha256:"));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v = serde_json::json!({"b": 1, "a": [ {"d": null, "c": "x"} ]});
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":[{"c":"x","d":null}],"b":1}"#);
    }
}
