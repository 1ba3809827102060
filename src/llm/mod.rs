//! The language-model layer: chat providers (OpenAI-compatible, Anthropic), retries, costs
//! and budgets, recording to and replaying from `llm.jsonl`, prompt templates, and parsing of
//! the model's replies.
//!
//! A run builds one [`LlmClient`] from an [`LlmConfig`]. Under it sits a stack of
//! [`ChatProvider`]s: [`Metered`] (budget caps and the usage ledger) around [`Recording`]
//! (`llm.jsonl`) around the network provider, or around [`ReplayProvider`] to re-run a
//! recorded run offline. [`MockProvider`] stands in for all of it in tests of other modules.
//!
//! Only [`space_prompt`] knows about search spaces: it checks a reply's candidates against a
//! space and builds the repair prompt from the validator's diagnostics.

mod anthropic;
mod client;
mod config;
mod cost;
mod error;
mod http;
pub mod local;
mod mock;
mod openai;
pub mod prompt;
mod provider;
mod record;
mod replay;
pub mod reply;
mod retry;
mod secret;
pub mod space_prompt;
mod types;

pub use anthropic::{AnthropicProvider, ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS};
pub use client::{build_provider, build_provider_in, price_table, LlmClient};
pub use config::{
    BudgetConfig, Constrain, GrammarFormat, LlmConfig, LocalConfig, LocalEndpoint, ProviderKind,
    RetryConfig, ServerKind, RETRY_SCALE_ENV,
};
pub use cost::{Metered, Price, PriceTable, UsageLedger, UsageTotals};
pub use error::{BudgetLimit, LlmError};
pub use http::HttpSettings;
pub use local::{LocalProvider, LocalServer};
pub use mock::MockProvider;
pub use openai::OpenAiProvider;
pub use provider::ChatProvider;
pub use record::{
    read_records, ExchangeRecord, LlmRecord, RecordWriter, RecordedError, RecordedResponse,
    Recording,
};
pub use replay::{diff_view, ReplayProvider};
pub use secret::{redact_url, ApiKey};
pub use types::{
    CanonicalRequest, ChatRequest, ChatResponse, Choice, FinishReason, GrammarConstraint, Message,
    Role, SamplingParams, TokenUsage,
};
