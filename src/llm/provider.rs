//! The one pluggable boundary of the language-model layer.

use async_trait::async_trait;

use super::error::LlmError;
use super::types::{ChatRequest, ChatResponse};

/// Chat completion: messages in, `request.params.n` choices plus usage out.
///
/// Implemented by the network providers ([`super::OpenAiProvider`],
/// [`super::AnthropicProvider`]), by [`super::ReplayProvider`] and [`super::MockProvider`],
/// and by the wrappers that add recording ([`super::Recording`]) and budgets
/// ([`super::Metered`]). Object safe, so a run holds an `Arc<dyn ChatProvider>`.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// Short name used in errors and records: `openai`, `anthropic`, `replay`, `mock`.
    fn name(&self) -> &str;

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
}
