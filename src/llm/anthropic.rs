//! Anthropic Messages API: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`; system text as a top-level field, content as blocks.
//!
//! The API returns one sample per request, so `n` samples are `n` sequential requests; their
//! usage and attempts are summed into one response.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::config::LlmConfig;
use super::error::LlmError;
use super::http::{secret_header, HttpCore, HttpSettings};
use super::provider::ChatProvider;
use super::secret::excerpt;
use super::types::{ChatRequest, ChatResponse, Choice, FinishReason, Role, TokenUsage};

const NAME: &str = "anthropic";
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The API requires `max_tokens`; this is sent when the config gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug)]
pub struct AnthropicProvider {
    core: HttpCore,
}

impl AnthropicProvider {
    pub fn new(settings: HttpSettings) -> Result<Self, LlmError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        if let Some(key) = &settings.key {
            headers.insert(
                "x-api-key",
                secret_header(key, "", NAME, settings.key_env.as_deref())?,
            );
        }
        Ok(Self {
            core: HttpCore::new(NAME, settings, headers)?,
        })
    }

    pub fn from_config(
        cfg: &LlmConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        Self::new(HttpSettings::from_config(cfg, lookup)?)
    }
}

pub(crate) fn request_body(req: &ChatRequest) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<Value> = req
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| json!({"role": m.role, "content": [{"type": "text", "text": m.content}]}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert(
        "max_tokens".into(),
        json!(req.params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = req.params.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.params.top_p {
        body.insert("top_p".into(), json!(p));
    }
    Value::Object(body)
}

#[derive(Deserialize)]
struct WireResponse {
    content: Option<Vec<WireBlock>>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
    model: Option<String>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

pub(crate) fn parse_body(body: &[u8]) -> Result<(Choice, TokenUsage, Option<String>), LlmError> {
    let malformed = |reason: String| LlmError::Malformed {
        provider: NAME.into(),
        reason,
        excerpt: excerpt(&String::from_utf8_lossy(body), 200),
    };
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not a Messages API JSON body ({e})")))?;
    let Some(blocks) = wire.content else {
        return Err(match wire.error {
            Some(err) => malformed(format!(
                "the body holds an error instead of content: {}",
                super::http::error_message(json!({"error": err}).to_string().as_bytes())
            )),
            None => malformed("no `content` field".into()),
        });
    };
    // Thinking and tool blocks are not part of the reply text.
    let text: String = blocks
        .into_iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text)
        .collect();
    let usage = wire.usage.map_or_else(TokenUsage::default, |u| TokenUsage {
        input_tokens: u.input_tokens.unwrap_or(0),
        output_tokens: u.output_tokens.unwrap_or(0),
    });
    Ok((
        Choice {
            text,
            finish_reason: FinishReason::from_anthropic(wire.stop_reason.as_deref()),
        },
        usage,
        wire.model,
    ))
}

#[async_trait]
impl ChatProvider for AnthropicProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let n = request.params.n.max(1);
        tracing::debug!(provider = NAME, step = %request.step, model = %request.model, n, "chat request");
        let body = request_body(request);
        let mut out = ChatResponse {
            choices: Vec::with_capacity(n as usize),
            usage: TokenUsage::default(),
            attempts: 0,
            model: None,
        };
        for _ in 0..n {
            let ((choice, usage, model), attempts) = self
                .core
                .post("/v1/messages", &body, &request.model, parse_body)
                .await?;
            out.choices.push(choice);
            out.usage += usage;
            out.attempts += attempts;
            out.model = out.model.or(model);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::types::{Message, SamplingParams};

    #[test]
    fn body_shape() {
        let req = ChatRequest {
            step: "s".into(),
            model: "claude-sonnet-4".into(),
            messages: vec![Message::system("be brief"), Message::user("hi")],
            params: SamplingParams::default(),
            grammar: None,
        };
        assert_eq!(
            request_body(&req),
            json!({"model":"claude-sonnet-4","max_tokens":4096,"system":"be brief",
                   "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]})
        );
    }

    #[test]
    fn parses_blocks() {
        let (c, u, _) = parse_body(
            br#"{"content":[{"type":"thinking","thinking":"x"},{"type":"text","text":"a"},{"type":"text","text":"b"}],
                 "stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":4}}"#,
        )
        .map_err(|e| e.to_string())
        .unwrap();
        assert_eq!(
            (c.text.as_str(), c.finish_reason, u.total()),
            ("ab", FinishReason::Length, 7)
        );
        assert!(matches!(parse_body(b"{}"), Err(LlmError::Malformed { .. })));
    }
}
