//! The assembled client a run uses: provider, recording, budget and ledger, built from one
//! [`LlmConfig`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::anthropic::AnthropicProvider;
use super::config::{LlmConfig, ProviderKind};
use super::cost::{Metered, Price, PriceTable, UsageLedger, UsageTotals};
use super::error::LlmError;
use super::mock::MockProvider;
use super::openai::OpenAiProvider;
use super::provider::ChatProvider;
use super::record::{RecordWriter, Recording};
use super::replay::ReplayProvider;
use super::types::{ChatRequest, ChatResponse, Message, SamplingParams};

/// The bare provider named by `cfg.provider`, with the key read through `lookup`.
pub fn build_provider(
    cfg: &LlmConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ChatProvider>, LlmError> {
    cfg.validate()?;
    Ok(match cfg.provider {
        ProviderKind::Openai => Arc::new(OpenAiProvider::from_config(cfg, lookup)?),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::from_config(cfg, lookup)?),
        ProviderKind::Replay => {
            let path = cfg
                .replay_path
                .as_deref()
                .ok_or_else(|| LlmError::Config("`replay_path` is missing".into()))?;
            Arc::new(ReplayProvider::open(path)?)
        }
        ProviderKind::Mock => Arc::new(MockProvider::cycling(cfg.mock_replies.clone())),
    })
}

/// Default prices, the config's overrides, and free unknown models on a local server.
pub fn price_table(cfg: &LlmConfig) -> PriceTable {
    PriceTable::defaults()
        .with_overrides(&cfg.prices)
        .with_fallback(cfg.is_local().then_some(Price::FREE))
}

pub struct LlmClient {
    provider: Arc<dyn ChatProvider>,
    model: String,
    defaults: SamplingParams,
    ledger: Arc<UsageLedger>,
    prices: PriceTable,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .field("defaults", &self.defaults)
            .field("usage", &self.ledger.totals())
            .finish()
    }
}

impl LlmClient {
    /// Builds the client from a config, reading the key from the process environment, and
    /// recording to `record_to` (normally `results/<run>/llm.jsonl`) when given.
    pub fn from_config(cfg: &LlmConfig, record_to: Option<&Path>) -> Result<Self, LlmError> {
        Self::from_config_with(cfg, record_to, &|var| std::env::var(var).ok())
    }

    /// As [`LlmClient::from_config`], reading environment variables through `lookup`.
    pub fn from_config_with(
        cfg: &LlmConfig,
        record_to: Option<&Path>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        let prices = price_table(cfg);
        if cfg.budget.max_usd.is_some() && prices.lookup(&cfg.model).is_none() {
            return Err(LlmError::Config(format!(
                "`budget.max_usd` is set but model `{}` has no price; add it under `prices`",
                cfg.model
            )));
        }
        let base = build_provider(cfg, lookup)?;
        let writer = record_to.map(RecordWriter::open).transpose()?;
        Ok(Self::new(
            base,
            &cfg.model,
            cfg.sampling(),
            prices,
            cfg.budget.clone(),
            writer,
        ))
    }

    /// Assembles a client around any provider (a mock, in tests of other modules).
    pub fn new(
        base: Arc<dyn ChatProvider>,
        model: &str,
        defaults: SamplingParams,
        prices: PriceTable,
        budget: super::config::BudgetConfig,
        record: Option<RecordWriter>,
    ) -> Self {
        let recorded: Arc<dyn ChatProvider> = match record {
            Some(w) => Arc::new(Recording::new(base, w, prices.clone())),
            None => base,
        };
        let ledger = Arc::new(UsageLedger::new());
        let provider = Arc::new(Metered::new(
            recorded,
            Arc::clone(&ledger),
            budget,
            prices.clone(),
        ));
        Self {
            provider,
            model: model.to_string(),
            defaults,
            ledger,
            prices,
        }
    }

    /// One call with the configured sampling parameters.
    pub async fn complete(
        &self,
        step: &str,
        messages: Vec<Message>,
    ) -> Result<ChatResponse, LlmError> {
        self.complete_with(step, messages, self.defaults.clone())
            .await
    }

    /// One call with explicit sampling parameters.
    pub async fn complete_with(
        &self,
        step: &str,
        messages: Vec<Message>,
        params: SamplingParams,
    ) -> Result<ChatResponse, LlmError> {
        let request = ChatRequest {
            step: step.to_string(),
            model: self.model.clone(),
            messages,
            params,
        };
        self.provider.chat(&request).await
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn defaults(&self) -> &SamplingParams {
        &self.defaults
    }

    /// The full stack (budget, recording, provider) as one trait object.
    pub fn provider(&self) -> Arc<dyn ChatProvider> {
        Arc::clone(&self.provider)
    }

    pub fn ledger(&self) -> Arc<UsageLedger> {
        Arc::clone(&self.ledger)
    }

    pub fn usage(&self) -> UsageTotals {
        self.ledger.totals()
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }
}
