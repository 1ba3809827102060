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
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Replay => "replay",
            Self::Mock => "mock",
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
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
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
            retry: RetryConfig::default(),
            prices: BTreeMap::new(),
            budget: BudgetConfig::default(),
            replay_path: None,
            mock_replies: Vec::new(),
        }
    }

    pub fn default_base_url(provider: ProviderKind) -> Option<&'static str> {
        match provider {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Replay | ProviderKind::Mock => None,
        }
    }

    pub fn default_key_env(provider: ProviderKind) -> Option<&'static str> {
        match provider {
            ProviderKind::Openai => Some("OPENAI_API_KEY"),
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Replay | ProviderKind::Mock => None,
        }
    }

    /// The base URL in use, without a trailing slash.
    pub fn resolved_base_url(&self) -> Option<String> {
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
        match self.provider {
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
