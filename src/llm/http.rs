//! The HTTP transport shared by the network providers: one reqwest client, a concurrency
//! limit, the retry loop, and the mapping of HTTP failures to [`LlmError`]s with hints.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use tokio::sync::Semaphore;

use super::config::{LlmConfig, RetryConfig};
use super::error::LlmError;
use super::retry::{parse_retry_after, Backoff};
use super::secret::{excerpt, redact_url, scrub, ApiKey};

/// Everything a network provider needs besides its wire format.
#[derive(Clone)]
pub struct HttpSettings {
    /// Without trailing slash; may not hold credentials worth hiding, but is shown redacted.
    pub base_url: String,
    /// `None` sends no key (local servers).
    pub key: Option<ApiKey>,
    /// The variable the key came from, named in the hint of a 401/403.
    pub key_env: Option<String>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub retry: RetryConfig,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("base_url", &redact_url(&self.base_url))
            .field("key", &self.key)
            .field("key_env", &self.key_env)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .finish()
    }
}

impl HttpSettings {
    /// Settings from a config, reading the key through `lookup` (normally the environment).
    pub fn from_config(
        cfg: &LlmConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        cfg.validate()?;
        let base_url = cfg.resolved_base_url().ok_or_else(|| {
            LlmError::Config(format!("provider {} has no base URL", cfg.provider.name()))
        })?;
        Ok(Self {
            base_url,
            key: cfg.resolve_key(lookup)?,
            key_env: cfg.key_env_name(),
            timeout: cfg.timeout(),
            concurrency: cfg.concurrency,
            retry: cfg.retry.clone(),
        })
    }
}

/// A header value that `Debug` output of reqwest and http will show as `Sensitive`.
pub(crate) fn secret_header(
    key: &ApiKey,
    prefix: &str,
    provider: &str,
    var: Option<&str>,
) -> Result<HeaderValue, LlmError> {
    let mut v = HeaderValue::from_str(&format!("{prefix}{}", key.expose())).map_err(|_| {
        LlmError::Config(format!(
            "{provider}: the key in environment variable {} holds characters not allowed in an HTTP header",
            var.unwrap_or("(unnamed)")
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

#[derive(Debug)]
pub(crate) struct HttpCore {
    pub(crate) provider: &'static str,
    client: reqwest::Client,
    pub(crate) base_url: String,
    key: Option<ApiKey>,
    key_env: Option<String>,
    headers: HeaderMap,
    retry: RetryConfig,
    semaphore: Arc<Semaphore>,
    timeout: Duration,
}

impl HttpCore {
    pub(crate) fn new(
        provider: &'static str,
        settings: HttpSettings,
        headers: HeaderMap,
    ) -> Result<Self, LlmError> {
        if redact_url(&settings.base_url) != settings.base_url {
            // Credentials in the URL would travel into logs and error messages with it.
            return Err(LlmError::Config(format!(
                "{provider}: the base URL {} holds credentials; pass the key through an environment variable instead",
                redact_url(&settings.base_url)
            )));
        }
        if settings.concurrency == 0 {
            return Err(LlmError::Config("`concurrency` must be at least 1".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("archsmith/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                LlmError::Config(format!("{provider}: cannot build the HTTP client: {e}"))
            })?;
        Ok(Self {
            provider,
            client,
            base_url: settings.base_url.trim_end_matches('/').to_string(),
            key: settings.key,
            key_env: settings.key_env,
            headers,
            retry: settings.retry,
            semaphore: Arc::new(Semaphore::new(settings.concurrency)),
            timeout: settings.timeout,
        })
    }

    pub(crate) fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    /// POSTs `body` to `{base_url}{path}` until `parse` accepts a 2xx body, a non-retryable
    /// error comes back, or the retry budget is spent. Returns the parsed value and the number
    /// of attempts. The concurrency permit is held across back-off sleeps: when the server is
    /// shedding load, the other callers should wait too.
    pub(crate) async fn post<T>(
        &self,
        path: &str,
        body: &serde_json::Value,
        model: &str,
        parse: impl Fn(&[u8]) -> Result<T, LlmError>,
    ) -> Result<(T, u32), LlmError> {
        let _permit = self
            .semaphore
            .acquire()
            .await
            .map_err(|_| LlmError::Config("the concurrency limiter was closed".into()))?;
        let url = format!("{}{}", self.base_url, path);
        let backoff = Backoff::new(&self.retry);
        let mut attempt = 0u32;
        let mut bad_bodies = 0u32;
        loop {
            attempt += 1;
            let err = match self.attempt(&url, body, model, &parse).await {
                Ok(v) => return Ok((v, attempt)),
                Err(e) => e,
            };
            let bad_body = err.is_bad_body();
            let may_retry = err.is_retryable()
                && attempt < self.retry.max_attempts
                && !(bad_body && bad_bodies >= self.retry.bad_body_retries);
            if bad_body {
                bad_bodies += 1;
            }
            if !may_retry {
                if err.is_retryable() {
                    tracing::warn!(provider = self.provider, attempts = attempt, error = %err, "giving up");
                    return Err(LlmError::RetriesExhausted {
                        provider: self.provider.to_string(),
                        attempts: attempt,
                        last: Box::new(err),
                    });
                }
                return Err(err);
            }
            let retry_after = match &err {
                LlmError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = backoff.delay(attempt, retry_after, &mut rand::thread_rng());
            tracing::warn!(
                provider = self.provider,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "model call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T>(
        &self,
        url: &str,
        body: &serde_json::Value,
        model: &str,
        parse: &impl Fn(&[u8]) -> Result<T, LlmError>,
    ) -> Result<T, LlmError> {
        let resp = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let retry_after = parse_retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            // A server may echo the key inside a successful reply (in the text of a choice,
            // say); it is taken out before anything reads the reply, so it reaches no record,
            // journal or prompt.
            let scrubbed;
            let bytes: &[u8] = match (self.key(), std::str::from_utf8(&bytes)) {
                (Some(k), Ok(text)) if !k.expose().is_empty() && text.contains(k.expose()) => {
                    scrubbed = k.scrub(text);
                    scrubbed.as_bytes()
                }
                _ => &bytes,
            };
            // Parse errors quote the body, which may echo what was sent.
            return parse(bytes).map_err(|e| match e {
                LlmError::Malformed {
                    provider,
                    reason,
                    excerpt,
                } => LlmError::Malformed {
                    provider,
                    reason: scrub(self.key(), &reason),
                    excerpt: scrub(self.key(), &excerpt),
                },
                other => other,
            });
        }
        let message = scrub(self.key(), &error_message(&bytes));
        Err(self.classify(status, message, retry_after, model))
    }

    fn classify(
        &self,
        status: StatusCode,
        message: String,
        retry_after: Option<Duration>,
        model: &str,
    ) -> LlmError {
        let provider = self.provider.to_string();
        let code = status.as_u16();
        match code {
            401 | 403 => {
                let hint = match (&self.key, &self.key_env) {
                    (Some(_), Some(var)) => format!("check the key in environment variable {var}"),
                    (Some(_), None) => "check the API key".to_string(),
                    (None, Some(var)) => format!(
                        "no key was sent; put the key in environment variable {var} (or name another in `api_key_env`)"
                    ),
                    (None, None) => "no key was sent; set `api_key_env` to the variable holding the key".to_string(),
                };
                LlmError::Auth {
                    provider,
                    status: code,
                    message,
                    hint,
                }
            }
            408 | 409 | 425 | 429 | 500..=599 => LlmError::Status {
                provider,
                status: code,
                message,
                retry_after,
            },
            404 => LlmError::Rejected {
                provider,
                status: code,
                message,
                hint: format!(
                    "check the model name `{model}` and the base URL {}",
                    redact_url(&self.base_url)
                ),
            },
            400 | 413 if is_overflow_message(&message) => LlmError::ContextOverflow {
                provider,
                status: code,
                message,
            },
            _ => {
                let hint = if message.to_lowercase().contains("model") {
                    format!("check the model name `{model}`")
                } else {
                    "check the request parameters (temperature, top_p, max_tokens, n) against what this server accepts"
                        .to_string()
                };
                LlmError::Rejected {
                    provider,
                    status: code,
                    message,
                    hint,
                }
            }
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            return LlmError::Timeout {
                provider: self.provider.to_string(),
                timeout: self.timeout,
            };
        }
        // The source chain holds the useful part ("connection reset by peer", "connection
        // closed before message completed"); the URL is shown redacted instead.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        LlmError::Connection {
            provider: self.provider.to_string(),
            url: redact_url(&self.base_url),
            message: scrub(self.key(), &message),
        }
    }
}

/// Whether a refusal's message says that the prompt is longer than the model's context, in
/// the words of llama.cpp, vLLM, OpenAI or Anthropic.
fn is_overflow_message(message: &str) -> bool {
    const PHRASES: [&str; 6] = [
        "exceeds the available context size",
        "exceed_context_size",
        "maximum context length",
        "context_length_exceeded",
        "prompt is too long",
        "longer than the model's context",
    ];
    let m = message.to_lowercase();
    PHRASES.iter().any(|p| m.contains(p))
}

/// Pulls a human message out of an error body in any of the usual shapes: OpenAI and
/// Anthropic `{"error": {"message"}}`, Ollama `{"error": "..."}`, FastAPI/vLLM
/// `{"detail": ...}`, or `{"message"}`; otherwise the start of the raw body.
pub(crate) fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = v
            .pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("message"));
        if let Some(found) = found {
            return match found.as_str() {
                Some(s) => excerpt(s, 500),
                None => excerpt(&found.to_string(), 500),
            };
        }
    }
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        excerpt(&text, 300)
    }
}
