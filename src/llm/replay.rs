//! Serves replies from a recorded `llm.jsonl`, so a run re-runs without network access and
//! gets the same replies in the same order.
//!
//! Requests are matched by hash (model, messages and sampling parameters). Identical
//! requests are served in recorded order. A request with no recording fails loudly, naming
//! the step and showing what changed against the nearest recorded request.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use similar::TextDiff;

use super::error::LlmError;
use super::provider::ChatProvider;
use super::record::{read_records, ExchangeRecord, LlmRecord};
use super::types::{CanonicalRequest, ChatRequest, ChatResponse};

pub struct ReplayProvider {
    path: PathBuf,
    /// Exchanges not yet served, by request hash, in recorded order.
    queues: Mutex<HashMap<String, VecDeque<ExchangeRecord>>>,
    /// Every recorded exchange, for explaining misses.
    all: Vec<ExchangeRecord>,
}

impl ReplayProvider {
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LlmError> {
        let path = path.into();
        let records = read_records(&path)?;
        Ok(Self::from_records(path, records))
    }

    fn from_records(path: PathBuf, records: Vec<LlmRecord>) -> Self {
        let all: Vec<ExchangeRecord> = records
            .into_iter()
            .map(|LlmRecord::Exchange(x)| x)
            .collect();
        let mut queues: HashMap<String, VecDeque<ExchangeRecord>> = HashMap::new();
        for x in &all {
            // The hash is recomputed rather than trusted, so a hand-edited request is matched
            // by what it now says.
            queues
                .entry(x.request.hash())
                .or_default()
                .push_back(x.clone());
        }
        Self {
            path,
            queues: Mutex::new(queues),
            all,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Exchanges recorded but not yet served.
    pub fn remaining(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(VecDeque::len)
            .sum()
    }

    fn miss(&self, request: &ChatRequest, hash: &str) -> LlmError {
        let canonical = request.canonical();
        let same_hash = self.all.iter().filter(|x| x.request.hash() == hash).count();
        let detail = if same_hash > 0 {
            format!(
                "\n\nthe recording in {} holds {same_hash} replies for this request and all were used; \
                 the replayed run asks it more often than the recorded run did",
                self.path.display()
            )
        } else {
            let view = diff_view(&canonical);
            let nearest = self.nearest(request, &view);
            let mut d = format!("\n\nrequested:\n{}", indent(&view));
            match nearest {
                Some(x) => {
                    let recorded = diff_view(&x.request);
                    let diff = TextDiff::from_lines(recorded.as_str(), view.as_str())
                        .unified_diff()
                        .context_radius(3)
                        .header(
                            &format!("recorded (step {}, {})", x.step, x.request_hash),
                            "requested",
                        )
                        .to_string();
                    d.push_str(&format!(
                        "\nnearest recorded request, step {}; diff:\n{}",
                        x.step, diff
                    ));
                }
                None => d.push_str(&format!(
                    "\nthe recording in {} is empty",
                    self.path.display()
                )),
            }
            d
        };
        LlmError::ReplayMiss {
            step: request.step.clone(),
            hash: hash.to_string(),
            detail,
        }
    }

    /// The recorded request with the same step label, or else the one whose text is most alike.
    fn nearest(&self, request: &ChatRequest, view: &str) -> Option<&ExchangeRecord> {
        self.all
            .iter()
            .find(|x| x.step == request.step)
            .or_else(|| {
                self.all
                    .iter()
                    .map(|x| {
                        (
                            TextDiff::from_lines(diff_view(&x.request).as_str(), view).ratio(),
                            x,
                        )
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, x)| x)
            })
    }
}

/// A line-oriented view of a request: a diff of it points at the changed lines of a prompt,
/// where a JSON string would put a whole prompt on one line.
pub fn diff_view(request: &CanonicalRequest) -> String {
    let mut out = format!("model: {}\n", request.model);
    out.push_str(&format!(
        "params: {}\n",
        serde_json::to_string(&request.params).unwrap_or_default()
    ));
    for (i, m) in request.messages.iter().enumerate() {
        let role = serde_json::to_value(m.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!("--- message {} ({role}) ---\n", i + 1));
        out.push_str(&m.content);
        if !m.content.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[async_trait]
impl ChatProvider for ReplayProvider {
    fn name(&self) -> &str {
        "replay"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let hash = request.hash();
        let next = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues.get_mut(&hash).and_then(VecDeque::pop_front)
        };
        let Some(x) = next else {
            return Err(self.miss(request, &hash));
        };
        tracing::debug!(step = %request.step, recorded_step = %x.step, "replaying a recorded exchange");
        match (x.response, x.error) {
            (Some(r), _) => Ok(ChatResponse {
                choices: r.choices,
                usage: x.usage,
                attempts: x.attempts,
                model: r.model,
            }),
            (None, Some(e)) => Err(LlmError::ReplayedFailure {
                step: request.step.clone(),
                kind: e.kind,
                message: e.message,
            }),
            (None, None) => Err(LlmError::RecordFormat {
                path: self.path.clone(),
                line: 0,
                message: format!(
                    "exchange at step {} has neither a response nor an error",
                    x.step
                ),
            }),
        }
    }
}
