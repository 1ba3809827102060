//! OpenAI-compatible chat completions: `POST {base_url}/chat/completions` with a Bearer key.
//! One wire format serves OpenAI, OpenRouter, DeepSeek, Together, vLLM, llama.cpp server and
//! Ollama; only the base URL and the key differ.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::config::{GrammarFormat, LlmConfig};
use super::error::LlmError;
use super::http::{secret_header, HttpCore, HttpSettings};
use super::provider::ChatProvider;
use super::secret::excerpt;
use super::types::{ChatRequest, ChatResponse, Choice, FinishReason, TokenUsage};

const NAME: &str = "openai";

#[derive(Debug)]
pub struct OpenAiProvider {
    core: HttpCore,
}

impl OpenAiProvider {
    pub fn new(settings: HttpSettings) -> Result<Self, LlmError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &settings.key {
            headers.insert(
                AUTHORIZATION,
                secret_header(key, "Bearer ", NAME, settings.key_env.as_deref())?,
            );
        }
        Ok(Self {
            core: HttpCore::new(NAME, settings, headers)?,
        })
    }

    /// Builds the provider from a config, reading the key through `lookup`.
    pub fn from_config(
        cfg: &LlmConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        Self::new(HttpSettings::from_config(cfg, lookup)?)
    }

    pub fn base_url(&self) -> &str {
        &self.core.base_url
    }
}

/// The request body. `n` is sent only when above 1, since some compatible servers reject it.
/// OpenAI's reasoning models (o1, o3, o4 families) take `max_completion_tokens` instead of
/// `max_tokens`.
pub(crate) fn request_body(req: &ChatRequest, n: u32) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = req.params.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.params.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(m) = req.params.max_tokens {
        let field = if is_reasoning_model(&req.model) {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(field.into(), json!(m));
    }
    if n > 1 {
        body.insert("n".into(), json!(n));
    }
    // Only set when the client knows the server takes it (`[llm] server`).
    if let Some(g) = &req.grammar {
        match g.format {
            GrammarFormat::Gbnf => {
                body.insert("grammar".into(), json!(&*g.text));
            }
            GrammarFormat::Lark => {
                body.insert("structured_outputs".into(), json!({"grammar": &*g.text}));
            }
        }
    }
    Value::Object(body)
}

fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    let mut chars = m.chars();
    chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit())
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Option<Vec<WireChoice>>,
    usage: Option<WireUsage>,
    model: Option<String>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    index: Option<u32>,
    message: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

pub(crate) struct Parsed {
    choices: Vec<Choice>,
    usage: TokenUsage,
    model: Option<String>,
}

impl Parsed {
    pub(crate) fn into_parts(self) -> (Vec<Choice>, TokenUsage) {
        (self.choices, self.usage)
    }
}

pub(crate) fn parse_body(body: &[u8]) -> Result<Parsed, LlmError> {
    let malformed = |reason: String| LlmError::Malformed {
        provider: NAME.into(),
        reason,
        excerpt: excerpt(&String::from_utf8_lossy(body), 200),
    };
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not a chat-completions JSON body ({e})")))?;
    let Some(mut choices) = wire.choices else {
        return Err(match wire.error {
            // Some gateways (OpenRouter among them) report upstream failures with status 200.
            Some(err) => malformed(format!(
                "the body holds an error instead of choices: {}",
                super::http::error_message(json!({"error": err}).to_string().as_bytes())
            )),
            None => malformed("no `choices` field".into()),
        });
    };
    if choices.is_empty() {
        return Err(LlmError::EmptyChoices {
            provider: NAME.into(),
        });
    }
    choices.sort_by_key(|c| c.index.unwrap_or(0));
    let usage = wire.usage.map_or_else(TokenUsage::default, |u| TokenUsage {
        input_tokens: u.prompt_tokens.unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
    });
    let choices = choices
        .into_iter()
        .map(|c| Choice {
            // `content` is null for refusals and tool calls: an empty reply, not a broken one.
            text: c.message.and_then(|m| m.content).unwrap_or_default(),
            finish_reason: FinishReason::from_openai(c.finish_reason.as_deref()),
        })
        .collect();
    Ok(Parsed {
        choices,
        usage,
        model: wire.model,
    })
}

#[async_trait]
impl ChatProvider for OpenAiProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// Asks for all `n` samples at once. Servers that ignore `n` (llama.cpp, Ollama and
    /// others return one choice) are asked for the rest with one request each, sent
    /// concurrently: at most `n` requests in all.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let wanted = request.params.n.max(1) as usize;
        tracing::debug!(provider = NAME, step = %request.step, model = %request.model, n = wanted, "chat request");
        let mut out = ChatResponse {
            choices: Vec::with_capacity(wanted),
            usage: TokenUsage::default(),
            attempts: 0,
            model: None,
        };
        let body = request_body(request, wanted as u32);
        let (parsed, attempts) = self
            .core
            .post("/chat/completions", &body, &request.model, parse_body)
            .await?;
        out.attempts += attempts;
        out.usage += parsed.usage;
        out.model = parsed.model;
        out.choices.extend(parsed.choices.into_iter().take(wanted));
        // The rest one by one, concurrently up to `concurrency` (the transport's limit),
        // collected in order so that the reply does not depend on which finished first.
        let missing = wanted - out.choices.len();
        if missing > 0 {
            let body = request_body(request, 1);
            let rest = futures_util::future::join_all((0..missing).map(|_| {
                self.core
                    .post("/chat/completions", &body, &request.model, parse_body)
            }))
            .await;
            for r in rest {
                let (parsed, attempts) = r?;
                out.attempts += attempts;
                out.usage += parsed.usage;
                out.model = out.model.or(parsed.model);
                out.choices.extend(parsed.choices.into_iter().take(1));
            }
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
            model: "o3-mini".into(),
            messages: vec![Message::system("sys"), Message::user("hi")],
            params: SamplingParams {
                temperature: Some(0.5),
                top_p: None,
                max_tokens: Some(9),
                n: 1,
            },
            grammar: None,
        };
        assert_eq!(
            request_body(&req, 1),
            json!({"model":"o3-mini","messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi"}],
                   "temperature":0.5,"max_completion_tokens":9})
        );
        let req = ChatRequest {
            model: "gpt-4o".into(),
            ..req
        };
        assert_eq!(request_body(&req, 3)["max_tokens"], json!(9));
        assert_eq!(request_body(&req, 3)["n"], json!(3));
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            parse_body(b"<html>"),
            Err(LlmError::Malformed { .. })
        ));
        assert!(matches!(
            parse_body(br#"{"choices":[]}"#),
            Err(LlmError::EmptyChoices { .. })
        ));
        let e = parse_body(br#"{"error":{"message":"upstream overloaded"}}"#)
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("upstream overloaded"));
        let p = parse_body(br#"{"choices":[{"index":1,"message":{"content":"b"},"finish_reason":"length"},{"index":0,"message":{"content":null},"finish_reason":"stop"}]}"#);
        let p = p.ok().map(|p| p.choices);
        assert_eq!(
            p,
            Some(vec![
                Choice {
                    text: "".into(),
                    finish_reason: FinishReason::Stop
                },
                Choice {
                    text: "b".into(),
                    finish_reason: FinishReason::Length
                }
            ])
        );
    }
}
