//! `llm.jsonl`: every model exchange of a run, one JSON object a line, in the envelope
//! `{"type": "exchange", "data": {...}}`.
//!
//! A line is written, flushed and fsync'd before the reply reaches the caller, so a crash
//! never loses a reply the run already acted on. Failed exchanges are written too, with the
//! error. Nothing secret is in a record: the request holds model, messages and sampling
//! parameters, never the key or the base URL.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::cost::PriceTable;
use super::error::LlmError;
use super::provider::ChatProvider;
use super::types::{CanonicalRequest, ChatRequest, ChatResponse, Choice, TokenUsage};

/// One line of `llm.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum LlmRecord {
    Exchange(ExchangeRecord),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRecord {
    /// The caller's label, e.g. `propose.3`.
    pub step: String,
    /// `sha256:` of the canonical JSON of `request`.
    pub request_hash: String,
    pub provider: String,
    pub request: CanonicalRequest,
    /// Present when the call succeeded.
    pub response: Option<RecordedResponse>,
    /// Present when the call failed.
    pub error: Option<RecordedError>,
    pub usage: TokenUsage,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    pub attempts: u32,
    /// The grammar format the request was constrained with (`gbnf`, `lark`); absent when it
    /// was not constrained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constrained: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedResponse {
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedError {
    /// [`LlmError::kind`].
    pub kind: String,
    pub message: String,
}

/// Appends records to a JSON Lines file, durably.
#[derive(Debug)]
pub struct RecordWriter {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl RecordWriter {
    /// Opens `path` for appending, creating it (not its folder) if needed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LlmError> {
        let path = path.into();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| LlmError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line and waits until it is on disk. The blocking write and fsync run on
    /// tokio's blocking pool so they do not stall other calls in flight.
    pub async fn append(&self, record: &LlmRecord) -> Result<(), LlmError> {
        let mut line = serde_json::to_vec(record).map_err(|e| LlmError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let io_err = |source| LlmError::Io {
            path: path.clone(),
            source,
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // One lock around write+sync keeps concurrent lines whole and in order.
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            f.write_all(&line)?;
            f.flush()?;
            f.sync_data()
        })
        .await
        .map_err(|e| io_err(std::io::Error::other(e)))?
        .map_err(io_err)
    }
}

/// Reads every record of an `llm.jsonl`, failing on the first bad line with its number.
/// Blank lines are skipped; a torn last line (a crash mid-write) is an error too, since
/// replaying a partial run silently would hide it.
pub fn read_records(path: &Path) -> Result<Vec<LlmRecord>, LlmError> {
    let file = File::open(path).map_err(|source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| LlmError::RecordFormat {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(record);
    }
    Ok(out)
}

/// Records every exchange of the inner provider.
pub struct Recording {
    inner: Arc<dyn ChatProvider>,
    writer: RecordWriter,
    prices: PriceTable,
}

impl Recording {
    pub fn new(inner: Arc<dyn ChatProvider>, writer: RecordWriter, prices: PriceTable) -> Self {
        Self {
            inner,
            writer,
            prices,
        }
    }

    pub fn path(&self) -> &Path {
        self.writer.path()
    }
}

#[async_trait]
impl ChatProvider for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let result = self.inner.chat(request).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let canonical = request.canonical();
        let (response, error, usage, attempts) = match &result {
            Ok(r) => (
                Some(RecordedResponse {
                    choices: r.choices.clone(),
                    model: r.model.clone(),
                }),
                None,
                r.usage,
                r.attempts,
            ),
            Err(e) => (
                None,
                Some(RecordedError {
                    kind: e.kind().to_string(),
                    message: e.to_string(),
                }),
                TokenUsage::default(),
                e.attempts(),
            ),
        };
        let record = LlmRecord::Exchange(ExchangeRecord {
            step: request.step.clone(),
            request_hash: canonical.hash(),
            provider: self.inner.name().to_string(),
            cost_usd: response
                .as_ref()
                .and_then(|_| self.prices.cost(&request.model, usage)),
            request: canonical,
            response,
            error,
            usage,
            latency_ms,
            attempts,
            constrained: request
                .grammar
                .as_ref()
                .map(|g| g.format.name().to_string()),
        });
        // A reply that cannot be recorded is not handed out: replay would diverge from it.
        self.writer.append(&record).await?;
        result
    }
}
