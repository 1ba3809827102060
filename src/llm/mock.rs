//! An in-memory provider with scripted replies, for unit tests of the modules that call a
//! model. It keeps every request it was sent, so a test can assert on the prompts.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use super::error::LlmError;
use super::provider::ChatProvider;
use super::types::{ChatRequest, ChatResponse, Choice, FinishReason, TokenUsage};

/// Either a queue of scripted outcomes served once each, or (from config) a list of texts
/// served in a cycle.
pub struct MockProvider {
    script: Mutex<VecDeque<Result<ChatResponse, LlmError>>>,
    cycle: Vec<String>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Default for MockProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl MockProvider {
    /// An empty script: every call fails with `MockExhausted` until something is pushed.
    pub fn new() -> Self {
        Self {
            script: Mutex::new(VecDeque::new()),
            cycle: Vec::new(),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Serves `texts` in order, starting over after the last; `n` samples take the next `n`.
    pub fn cycling(texts: Vec<String>) -> Self {
        Self {
            cycle: texts,
            ..Self::new()
        }
    }

    /// Queues one reply with one choice per text.
    pub fn push_texts<S: Into<String>>(&self, texts: impl IntoIterator<Item = S>) -> &Self {
        let choices: Vec<Choice> = texts
            .into_iter()
            .map(|t| Choice {
                text: t.into(),
                finish_reason: FinishReason::Stop,
            })
            .collect();
        let usage = mock_usage(&choices);
        self.push(Ok(ChatResponse {
            choices,
            usage,
            attempts: 1,
            model: None,
        }))
    }

    pub fn push_text(&self, text: impl Into<String>) -> &Self {
        self.push_texts([text.into()])
    }

    pub fn push_error(&self, error: LlmError) -> &Self {
        self.push(Err(error))
    }

    pub fn push(&self, outcome: Result<ChatResponse, LlmError>) -> &Self {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(outcome);
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A stand-in token count (four characters a token) so that budgets can be exercised.
fn mock_usage(choices: &[Choice]) -> TokenUsage {
    let out: usize = choices.iter().map(|c| c.text.len().div_ceil(4)).sum();
    TokenUsage {
        input_tokens: 0,
        output_tokens: out as u64,
    }
}

#[async_trait]
impl ChatProvider for MockProvider {
    fn name(&self) -> &str {
        "mock"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let served = {
            let mut reqs = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            reqs.push(request.clone());
            reqs.len() - 1
        };
        if let Some(outcome) = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return outcome;
        }
        if self.cycle.is_empty() {
            return Err(LlmError::MockExhausted {
                step: request.step.clone(),
            });
        }
        let n = request.params.n.max(1) as usize;
        let choices: Vec<Choice> = (0..n)
            .map(|i| Choice {
                text: self.cycle[(served * n + i) % self.cycle.len()].clone(),
                finish_reason: FinishReason::Stop,
            })
            .collect();
        let input: usize = request
            .messages
            .iter()
            .map(|m| m.content.len().div_ceil(4))
            .sum();
        let mut usage = mock_usage(&choices);
        usage.input_tokens = input as u64;
        Ok(ChatResponse {
            choices,
            usage,
            attempts: 1,
            model: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::types::{Message, SamplingParams};

    fn req(n: u32) -> ChatRequest {
        ChatRequest {
            step: "t.1".into(),
            model: "m".into(),
            messages: vec![Message::user("hi")],
            params: SamplingParams {
                n,
                ..Default::default()
            },
            grammar: None,
        }
    }

    #[tokio::test]
    async fn script_then_exhausted() {
        let m = MockProvider::new();
        m.push_texts(["a", "b"])
            .push_error(LlmError::Config("boom".into()));
        assert_eq!(
            m.chat(&req(2)).await.map(|r| r.texts().join(",")).ok(),
            Some("a,b".into())
        );
        assert!(matches!(m.chat(&req(1)).await, Err(LlmError::Config(_))));
        let e = m
            .chat(&req(1))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, "mock provider: no scripted reply left for step t.1");
        assert_eq!(m.requests().len(), 3);
    }

    #[tokio::test]
    async fn cycling() {
        let m = MockProvider::cycling(vec!["x".into(), "y".into(), "z".into()]);
        let a = m.chat(&req(2)).await.map(|r| r.texts().join(",")).ok();
        let b = m.chat(&req(2)).await.map(|r| r.texts().join(",")).ok();
        assert_eq!((a.as_deref(), b.as_deref()), (Some("x,y"), Some("z,x")));
    }
}
