//! The assembled client a run uses: provider, recording, budget and ledger, built from one
//! [`LlmConfig`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::anthropic::AnthropicProvider;
use super::config::GrammarFormat;
use super::config::{LlmConfig, ProviderKind};
use super::cost::{Metered, Price, PriceTable, UsageLedger, UsageTotals};
use super::error::LlmError;
use super::local::LocalProvider;
use super::mock::MockProvider;
use super::openai::OpenAiProvider;
use super::provider::ChatProvider;
use super::record::{RecordWriter, Recording};
use super::replay::ReplayProvider;
use super::types::{ChatRequest, ChatResponse, GrammarConstraint, Message, SamplingParams};

/// The bare provider named by `cfg.provider`, with the key read through `lookup`.
pub fn build_provider(
    cfg: &LlmConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ChatProvider>, LlmError> {
    build_provider_in(cfg, lookup, &std::env::temp_dir())
}

/// As [`build_provider`]; a local server started for `provider = "local"` logs into `dir`.
pub fn build_provider_in(
    cfg: &LlmConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
    dir: &Path,
) -> Result<Arc<dyn ChatProvider>, LlmError> {
    cfg.validate()?;
    Ok(match cfg.provider {
        ProviderKind::Local => Arc::new(LocalProvider::from_config(cfg, dir, lookup)?),
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
    let local = cfg.is_local() || cfg.provider == ProviderKind::Local;
    PriceTable::defaults()
        .with_overrides(&cfg.prices)
        .with_fallback(local.then_some(Price::FREE))
}

pub struct LlmClient {
    provider: Arc<dyn ChatProvider>,
    model: String,
    defaults: SamplingParams,
    ledger: Arc<UsageLedger>,
    prices: PriceTable,
    grammar_format: Option<GrammarFormat>,
    grammar_depth: Option<usize>,
    grammar_required: bool,
    started: Option<String>,
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
        let dir = record_to
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let local: Option<Arc<LocalProvider>> = match cfg.provider {
            ProviderKind::Local => Some(Arc::new(LocalProvider::from_config(cfg, &dir, lookup)?)),
            _ => None,
        };
        let started = local.as_ref().map(|l| match l.server() {
            Some(s) => format!(
                "started the local model server (llama-server) at {}, log {}; it is stopped when the run ends",
                s.base_url(),
                s.log_path().display()
            ),
            None => format!("using the local model server already running at {}", l.base_url()),
        });
        let base: Arc<dyn ChatProvider> = match local {
            Some(l) => l,
            None => build_provider_in(cfg, lookup, &dir)?,
        };
        let writer = record_to.map(RecordWriter::open).transpose()?;
        let mut client = Self::new(
            base,
            &cfg.model,
            cfg.sampling(),
            prices,
            cfg.budget.clone(),
            writer,
        );
        client.grammar_format = cfg.grammar_format();
        client.grammar_depth = cfg.grammar_depth;
        client.grammar_required =
            cfg.constrain == super::config::Constrain::Grammar && client.grammar_format.is_some();
        client.started = started;
        Ok(client)
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
            grammar_format: None,
            grammar_depth: None,
            grammar_required: false,
            started: None,
        }
    }

    /// Sends the space's grammar in this format with propose and repair calls (`None`: no
    /// grammar), and bounds its nesting depth.
    pub fn with_grammar(mut self, format: Option<GrammarFormat>, depth: Option<usize>) -> Self {
        self.grammar_format = format;
        self.grammar_depth = depth;
        self
    }

    /// The grammar format this client's requests carry, if any.
    pub fn grammar_format(&self) -> Option<GrammarFormat> {
        self.grammar_format
    }

    /// Whether calls must be constrained (`constrain = "grammar"`): a grammar that cannot be
    /// exported is then an error, not a note.
    pub fn grammar_required(&self) -> bool {
        self.grammar_required
    }

    /// The configured depth bound of the constraining grammar.
    pub fn grammar_depth(&self) -> Option<usize> {
        self.grammar_depth
    }

    /// What the client started (a local model server), to say at the run's start.
    pub fn started(&self) -> Option<&str> {
        self.started.as_deref()
    }

    /// One call with the configured sampling parameters, constrained by `grammar` when given.
    pub async fn complete_constrained(
        &self,
        step: &str,
        messages: Vec<Message>,
        grammar: Option<GrammarConstraint>,
    ) -> Result<ChatResponse, LlmError> {
        let request = ChatRequest {
            step: step.to_string(),
            model: self.model.clone(),
            messages,
            params: self.defaults.clone(),
            grammar,
        };
        self.provider.chat(&request).await
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
            grammar: None,
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
