//! The `[llm]` section of an experiment config: which provider, which model, how to sample,
//! how hard to retry, what it costs and how much may be spent.
//!
//! The API key is never part of the config: `api_key_env` names the environment variable that
//! holds it, and the key is read into an [`ApiKey`] when the provider is built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cost::Price;
use super::error::LlmError;
use super::secret::{redact_url, ApiKey};
use super::types::SamplingParams;

/// Environment variable that scales every retry delay (e.g. `0` in tests). It overrides
/// `retry.delay_scale` when set to a number.
pub const RETRY_SCALE_ENV: &str = "ARCHSMITH_RETRY_SCALE";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat-completions server: OpenAI, OpenRouter, DeepSeek, Together,
    /// vLLM, llama.cpp server, Ollama.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Serve replies from a recorded `llm.jsonl`, without network access.
    Replay,
    /// Canned replies from `mock_replies`, for demos and tests.
    Mock,
    /// llama.cpp's `llama-server` on 127.0.0.1, started by the run itself when
    /// `[llm.local] autostart` is on (the default) and stopped at its end.
    Local,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Replay => "replay",
            Self::Mock => "mock",
            Self::Local => "local",
        }
    }
}

/// Whether the space's grammar goes with each propose and repair request, to constrain what
/// the model may write while it writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Constrain {
    /// Send it to servers known to take one (llama.cpp, vLLM), not to others.
    #[default]
    Auto,
    /// Always send it; a config whose server takes no grammar is an error.
    Grammar,
    /// Never send it.
    None,
}

/// What an OpenAI-compatible `base_url` is, where that matters: which grammar field it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// OpenAI itself, or a gateway: no arbitrary grammar.
    Openai,
    /// llama.cpp's server: GBNF in the request's `grammar` field.
    Llamacpp,
    /// vLLM 0.12 or later: Lark in `structured_outputs.grammar`.
    Vllm,
    /// Ollama: JSON schemas at most, no grammar.
    Ollama,
}

/// The grammar format a request carries, when it carries one; also what `space export
/// --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GrammarFormat {
    Gbnf,
    Lark,
}

impl GrammarFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gbnf => "gbnf",
            Self::Lark => "lark",
        }
    }
}

/// `[llm.local]`: the llama.cpp server a `provider = "local"` run talks to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Any GGUF model file; default: the model `scripts/setup.sh --llm` installs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_path: Option<PathBuf>,
    /// SHA-256 the model file must have, checked before the server starts; the installed
    /// default model's is checked without this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The `llama-server` binary; default: `ARCHSMITH_LLAMA_SERVER`, else the one
    /// `scripts/setup.sh --llm` builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<PathBuf>,
    /// Port on 127.0.0.1; default: a free one when the run starts the server. Needed when
    /// `autostart` is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// CPU threads of the server.
    pub threads: usize,
    /// Context size in tokens.
    pub ctx: usize,
    /// Start the server when the run starts and stop it at its end; off: use one already
    /// running on `port` (e.g. `scripts/llm-server.sh start`).
    pub autostart: bool,
    /// Seconds to wait for the server to load the model and answer `/health`.
    pub start_timeout_secs: f64,
    /// `completion`: llama.cpp's `/completion` with a plain-text prompt (the default, chosen
    /// by measurement for a base model with no chat template); `chat`: `/v1/chat/completions`
    /// with `chat_template` passed to the server.
    pub endpoint: LocalEndpoint,
    /// The server's built-in chat template for `endpoint = "chat"` (e.g. `gemma`).
    pub chat_template: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalEndpoint {
    Completion,
    Chat,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            model_path: None,
            sha256: None,
            server: None,
            port: None,
            threads: 2,
            ctx: 8192,
            autostart: true,
            start_timeout_secs: 120.0,
            endpoint: LocalEndpoint::Completion,
            chat_template: "gemma".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    pub model: String,
    /// Defaults to `https://api.openai.com/v1` (requests go to `{base_url}/chat/completions`)
    /// or `https://api.anthropic.com` (requests go to `{base_url}/v1/messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the key. When absent: `OPENAI_API_KEY` or
    /// `ANTHROPIC_API_KEY`; for an OpenAI-compatible server at a non-default `base_url` a
    /// missing default variable means "send no key" (local servers need none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Anthropic requires a limit; 4096 is sent when this is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Samples asked for in one call (`n`).
    #[serde(default = "default_samples")]
    pub samples_per_call: u32,
    /// Whole-request timeout, body included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// HTTP requests in flight at once. One strategy step is one model call; a call that
    /// wants several samples (`samples_per_call` above 1) from a server that ignores `n`
    /// sends its requests concurrently up to this bound.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whether propose and repair requests carry the space's grammar (GBNF for llama.cpp,
    /// Lark for vLLM): `auto`, `grammar` or `none`.
    #[serde(default)]
    pub constrain: Constrain,
    /// For `provider = "openai"` at a custom `base_url`: which server it is (`llamacpp`,
    /// `vllm`, `ollama`, `openai`), so that `constrain = "auto"` knows its grammar field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerKind>,
    /// Deepest nesting the constraining grammar allows (default: the space's `max_depth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar_depth: Option<usize>,
    /// For `provider = "local"`: the llama.cpp server and model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Price overrides and additions, by model name (prefix match, longest wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
    #[serde(default)]
    pub budget: BudgetConfig,
    /// For `provider = "replay"`: the `llm.jsonl` to serve replies from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_path: Option<PathBuf>,
    /// For `provider = "mock"`: replies served in a cycle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mock_replies: Vec<String>,
}

fn default_samples() -> u32 {
    1
}
fn default_timeout_secs() -> f64 {
    120.0
}
fn default_concurrency() -> usize {
    4
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time up to `max_delay_ms`.
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Fraction of each delay drawn at random, so that parallel callers spread out.
    pub jitter: f64,
    /// A longer `Retry-After` is cut to this.
    pub max_retry_after_secs: u64,
    /// Retries allowed for a 200 reply with malformed JSON or no choices. A proxy hiccup is
    /// worth another try, a server that always answers garbage is not worth the whole budget.
    pub bad_body_retries: u32,
    /// Multiplies every delay; `0` makes retries immediate. `ARCHSMITH_RETRY_SCALE` overrides.
    pub delay_scale: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay_ms: 500,
            max_delay_ms: 30_000,
            jitter: 0.5,
            max_retry_after_secs: 120,
            bad_body_retries: 2,
            delay_scale: 1.0,
        }
    }
}

impl RetryConfig {
    /// `delay_scale`, unless `ARCHSMITH_RETRY_SCALE` holds a non-negative number.
    pub fn effective_scale(&self) -> f64 {
        std::env::var(RETRY_SCALE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(self.delay_scale)
    }
}

/// Hard caps, checked before each call. `None` is no cap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    pub max_calls: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_usd: Option<f64>,
}

impl LlmConfig {
    /// A config with every optional field at its default.
    pub fn new(provider: ProviderKind, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            base_url: None,
            api_key_env: None,
            temperature: None,
            top_p: None,
            max_tokens: None,
            samples_per_call: default_samples(),
            timeout_secs: default_timeout_secs(),
            concurrency: default_concurrency(),
            constrain: Constrain::Auto,
            server: None,
            grammar_depth: None,
            local: None,
            retry: RetryConfig::default(),
            prices: BTreeMap::new(),
            budget: BudgetConfig::default(),
            replay_path: None,
            mock_replies: Vec::new(),
        }
    }

    fn default_base_url(provider: ProviderKind) -> Option<&'static str> {
        match provider {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Replay | ProviderKind::Mock | ProviderKind::Local => None,
        }
    }

    /// `[llm.local]`, or its defaults.
    pub fn local_settings(&self) -> LocalConfig {
        self.local.clone().unwrap_or_default()
    }

    /// The grammar format requests carry, by `constrain`, the provider and `server`: `None`
    /// sends no grammar.
    pub fn grammar_format(&self) -> Option<GrammarFormat> {
        let takes = match (self.provider, self.server) {
            (ProviderKind::Local, _) => Some(GrammarFormat::Gbnf),
            (ProviderKind::Openai, Some(ServerKind::Llamacpp)) => Some(GrammarFormat::Gbnf),
            (ProviderKind::Openai, Some(ServerKind::Vllm)) => Some(GrammarFormat::Lark),
            _ => None,
        };
        match self.constrain {
            Constrain::None => None,
            Constrain::Auto | Constrain::Grammar => takes,
        }
    }

    fn default_key_env(provider: ProviderKind) -> Option<&'static str> {
        match provider {
            ProviderKind::Openai => Some("OPENAI_API_KEY"),
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Replay | ProviderKind::Mock | ProviderKind::Local => None,
        }
    }

    /// The base URL in use, without a trailing slash. For `provider = "local"` it is known
    /// only once the server has a port (a configured one, or a free one at start).
    pub fn resolved_base_url(&self) -> Option<String> {
        if self.provider == ProviderKind::Local {
            let port = self.local.as_ref().and_then(|l| l.port);
            return Some(match port {
                Some(p) => format!("http://127.0.0.1:{p}"),
                None => "http://127.0.0.1".into(),
            });
        }
        self.base_url
            .as_deref()
            .or(Self::default_base_url(self.provider))
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// Whether the server is on this machine, which makes unknown models free.
    pub fn is_local(&self) -> bool {
        let Some(url) = self.resolved_base_url() else {
            return false;
        };
        let host = url.split("://").nth(1).unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        ["localhost", "127.", "[::1]", "0.0.0.0"]
            .iter()
            .any(|p| host.starts_with(p))
    }

    /// Sampling parameters every call starts from.
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            n: self.samples_per_call,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    /// Checks ranges and required companions, naming the field at fault.
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |m: String| Err(LlmError::Config(m));
        if self.model.trim().is_empty() {
            return bad("`model` is empty".into());
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return bad(format!("`temperature` = {t} is outside 0..=2"));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("`top_p` = {p} is outside (0, 1]"));
            }
        }
        if self.max_tokens == Some(0) {
            return bad("`max_tokens` must be at least 1".into());
        }
        if self.samples_per_call == 0 {
            return bad("`samples_per_call` must be at least 1".into());
        }
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return bad(format!(
                "`timeout_secs` = {} must be a positive number",
                self.timeout_secs
            ));
        }
        if self.concurrency == 0 {
            return bad("`concurrency` must be at least 1".into());
        }
        let r = &self.retry;
        if r.max_attempts == 0 {
            return bad("`retry.max_attempts` must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return bad(format!("`retry.jitter` = {} is outside 0..=1", r.jitter));
        }
        if !(r.delay_scale.is_finite() && r.delay_scale >= 0.0) {
            return bad(format!(
                "`retry.delay_scale` = {} must be >= 0",
                r.delay_scale
            ));
        }
        for (model, price) in &self.prices {
            price
                .validate()
                .map_err(|m| LlmError::Config(format!("`prices.\"{model}\"`: {m}")))?;
        }
        if let Some(usd) = self.budget.max_usd {
            if !(usd.is_finite() && usd >= 0.0) {
                return bad(format!("`budget.max_usd` = {usd} must be >= 0"));
            }
        }
        if let Some(url) = &self.base_url {
            if redact_url(url) != *url {
                return bad(format!(
                    "`base_url` = {} holds credentials; put the key in the environment variable named by `api_key_env` instead",
                    redact_url(url)
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad(format!(
                    "`base_url` = {} must start with http:// or https://",
                    redact_url(url)
                ));
            }
        }
        if self.grammar_depth == Some(0) {
            return bad("`grammar_depth` must be at least 1".into());
        }
        if self.constrain == Constrain::Grammar
            && self.grammar_format().is_none()
            && !matches!(self.provider, ProviderKind::Replay | ProviderKind::Mock)
        {
            return bad(format!(
                "`constrain = \"grammar\"` needs a server that takes a grammar: provider \"local\", or provider \"openai\" with `server = \"llamacpp\"` or `server = \"vllm\"` (provider is {}{})",
                self.provider.name(),
                self.server.map(|s| format!(", server {s:?}")).unwrap_or_default()
            ));
        }
        if let Some(l) = &self.local {
            if l.threads == 0 {
                return bad("`local.threads` must be at least 1".into());
            }
            if l.ctx < 512 {
                return bad(format!("`local.ctx` = {} must be at least 512", l.ctx));
            }
            if !(l.start_timeout_secs.is_finite() && l.start_timeout_secs > 0.0) {
                return bad("`local.start_timeout_secs` must be a positive number".into());
            }
            if l.port == Some(0) {
                return bad("`local.port` must not be 0; leave it out for a free port".into());
            }
            if let Some(h) = &l.sha256 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad(format!("`local.sha256` = {h:?} is not 64 hex digits"));
                }
            }
        }
        match self.provider {
            ProviderKind::Local
                if !self.local_settings().autostart && self.local_settings().port.is_none() =>
            {
                bad(
                    "`local.autostart = false` needs `local.port`, the port of the running server"
                        .into(),
                )
            }
            ProviderKind::Replay if self.replay_path.is_none() => {
                bad("`provider = \"replay\"` needs `replay_path`, the llm.jsonl to replay".into())
            }
            ProviderKind::Mock if self.mock_replies.is_empty() => {
                bad("`provider = \"mock\"` needs at least one entry in `mock_replies`".into())
            }
            _ => Ok(()),
        }
    }

    /// Reads the API key through `lookup` (normally `std::env::var`), following the rules
    /// documented on `api_key_env`. `Ok(None)` means no key is sent.
    pub fn resolve_key(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ApiKey>, LlmError> {
        let Some(default_var) = Self::default_key_env(self.provider) else {
            return Ok(None);
        };
        let explicit = self.api_key_env.as_deref();
        let var = explicit.unwrap_or(default_var);
        match lookup(var).filter(|k| !k.trim().is_empty()) {
            Some(key) => Ok(Some(ApiKey::new(key.trim()))),
            None if explicit.is_none()
                && self.provider == ProviderKind::Openai
                && self.base_url.is_some() =>
            {
                tracing::info!(
                    var,
                    "no API key variable set for a custom base_url; sending requests without a key"
                );
                Ok(None)
            }
            None => Err(LlmError::MissingApiKey {
                provider: self.provider.name().to_string(),
                var: var.to_string(),
            }),
        }
    }

    /// The variable the key comes from, for hints in error messages.
    pub fn key_env_name(&self) -> Option<String> {
        self.api_key_env
            .clone()
            .or_else(|| Self::default_key_env(self.provider).map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<LlmConfig>(
            r#"{"provider":"openai","model":"gpt-4o","api_key":"sk-x"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `api_key`"), "{err}");
    }

    #[test]
    fn defaults_fill_in() {
        let c: LlmConfig =
            serde_json::from_str(r#"{"provider":"anthropic","model":"claude-sonnet-4"}"#).unwrap();
        assert_eq!(
            c,
            LlmConfig::new(ProviderKind::Anthropic, "claude-sonnet-4")
        );
        assert_eq!(
            c.resolved_base_url().as_deref(),
            Some("https://api.anthropic.com")
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn key_resolution_rules() {
        let none = |_: &str| None;
        let mut c = LlmConfig::new(ProviderKind::Openai, "gpt-4o");
        let e = c.resolve_key(&none).unwrap_err().to_string();
        assert!(e.contains("OPENAI_API_KEY"), "{e}");

        c.base_url = Some("http://localhost:11434/v1".into());
        assert!(c.resolve_key(&none).unwrap().is_none());
        assert!(c.is_local());

        c.api_key_env = Some("MY_KEY".into());
        let e = c.resolve_key(&none).unwrap_err().to_string();
        assert!(e.contains("MY_KEY"), "{e}");
        let some = |v: &str| (v == "MY_KEY").then(|| "k".to_string());
        assert_eq!(
            c.resolve_key(&some)
                .unwrap()
                .map(|k| k.expose().to_string()),
            Some("k".into())
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = LlmConfig::new(ProviderKind::Replay, "m");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("replay_path"));
        c.provider = ProviderKind::Openai;
        c.temperature = Some(3.0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("temperature"));
    }
}
