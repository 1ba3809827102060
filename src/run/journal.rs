//! The run's journal, `journal.jsonl`: append-only typed events, one JSON object a line in a
//! `{"type": ..., "data": {...}}` envelope, each flushed and fsync'd before the loop goes on.
//!
//! Event types, in the order a run writes them:
//!
//! | type             | when                                                              |
//! |------------------|-------------------------------------------------------------------|
//! | `run_started`    | a session starts (the first, or a resume or replay)               |
//! | `proposal`       | a strategy proposed a candidate: text, origin, parents, plan, the |
//! |                  | model call step, predicted score                                  |
//! | `validation`     | the verdict on that proposal: valid, duplicate, or invalid + why  |
//! | `note`           | something worth knowing that is not a proposal (unusable reply)   |
//! | `train_started`  | a valid new candidate starts training                             |
//! | `epoch`          | one epoch of its learning curve                                   |
//! | `retry`          | its job failed outside training (a crash, a lost job, a timeout)  |
//! |                  | and was submitted again                                           |
//! | `train_finished` | its score, or why it failed; the elapsed run time                 |
//! | `budget`         | a budget stopped the run (evaluations, wall time, tokens, dollars,|
//! |                  | the model's own budget, or a stalled search)                      |
//! | `run_finished`   | the session ended: why, evaluations, best, usage                  |
//!
//! Every event is written and flushed to the operating system at once, so a killed or crashed
//! process loses nothing. Durability against power loss (fsync) is committed in groups, at the
//! points where the loop commits to work: a `proposal` rides on the fsync of its `validation`,
//! written right after it, and `epoch` lines on the fsync of `train_finished` (a training cut
//! short is redone anyway). Every other event is fsync'd before the loop goes on.
//!
//! A crash can leave the last line torn; [`read_journal`] reports it and drops it, and
//! [`Journal::open_append`] cuts it off before appending, so the file stays valid JSON Lines.

use crate::search::Origin;
use crate::train::Failure;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    RunStarted(RunStarted),
    Proposal(ProposalEvent),
    Validation(ValidationEvent),
    Note(NoteEvent),
    TrainStarted(TrainStarted),
    Epoch(EpochEvent),
    Retry(RetryEvent),
    TrainFinished(TrainFinished),
    Budget(BudgetEvent),
    RunFinished(RunFinished),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    pub run_id: String,
    pub version: String,
    pub strategy: String,
    pub space: String,
    pub task: String,
    pub seed: u64,
    /// 1 for the first session, 2 for the first resume, ...
    pub session: u32,
    /// `new`, `resume` or `replay`.
    pub mode: String,
    /// Why this strategy (auto's choice), and anything else said at the start.
    pub message: String,
    /// Unix time in seconds.
    pub unix_time: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalEvent {
    /// 0-based over the run.
    pub id: u64,
    pub round: u64,
    pub origin: Origin,
    pub text: String,
    /// Canonical hash when the text parses into a valid candidate.
    pub hash: Option<String>,
    pub parents: Vec<String>,
    pub plan: Option<String>,
    pub llm_step: Option<String>,
    pub predicted: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Valid and new: it will be trained.
    Valid,
    /// Valid, but evaluated or queued before in this run.
    Duplicate,
    Invalid,
    /// Valid and new, but the budget ran out before its turn.
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationEvent {
    pub id: u64,
    pub verdict: Verdict,
    /// The validator's message for an invalid candidate.
    pub message: Option<String>,
    pub params: Option<u64>,
    pub flops: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteEvent {
    pub round: u64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStarted {
    /// 0-based evaluation number; a redone evaluation keeps its number.
    pub eval: u64,
    pub proposal: u64,
    pub hash: String,
    pub candidate: String,
    pub epochs: usize,
    pub seed: u64,
    /// Where it runs: `inline`, a local worker, a Ray submission id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryEvent {
    pub eval: u64,
    /// The attempt that starts now (2 for the first retry).
    pub attempt: u32,
    /// Why the last attempt failed.
    pub reason: String,
    pub worker: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochEvent {
    pub eval: u64,
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub valid_score: f64,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFinished {
    pub eval: u64,
    pub proposal: u64,
    pub hash: String,
    pub candidate: String,
    /// Validation score; `None` when training failed.
    pub score: Option<f64>,
    pub failure: Option<Failure>,
    pub params: u64,
    pub flops: u64,
    pub epochs: usize,
    /// Stopped by successive halving.
    pub stopped_early: bool,
    pub wall_seconds: f64,
    /// Time from submission to result beyond the training itself: queueing, starting a
    /// worker or a Ray job, loading data, fetching the result (absent in older journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_seconds: Option<f64>,
    /// Run time so far, over all sessions.
    pub elapsed_seconds: f64,
    /// A look-up task's test accuracy, latency and parameters (never shown to the strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<crate::train::lookup::LookupResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetEvent {
    /// `evaluations`, `wall_time`, `tokens`, `usd`, `llm` (the model's own caps) or `stall`.
    pub limit: String,
    pub used: f64,
    pub max: f64,
    pub message: String,
}

/// How a run's session ended, as `run_finished` records it. A journal without `run_finished`
/// reads as [`RunStatus::Interrupted`] (a crash, a kill, or still running).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A budget ended it (evaluations, time, cost, a stall).
    Completed,
    /// The space ran out of new valid candidates.
    Exhausted,
    /// An error ended it; `resume` continues.
    Failed,
    /// Ctrl-C (or a kill) ended it; `resume` continues.
    Interrupted,
    /// It lost what it trains on (a Ray head, a model server) and waits for `resume`.
    Paused,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Exhausted => "exhausted",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Paused => "paused",
        }
    }

    /// Whether the run ended by itself (a budget, or nothing left to try), not cut short.
    pub fn ended(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Exhausted)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFinished {
    pub status: RunStatus,
    pub reason: String,
    pub evaluations: u64,
    pub best_hash: Option<String>,
    pub best_score: Option<f64>,
    pub elapsed_seconds: f64,
    pub tokens: u64,
    pub usd: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path}, line {line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A journal read back: its events, and the torn last line if a crash left one.
#[derive(Debug, Default)]
pub struct JournalRead {
    pub events: Vec<Event>,
    pub torn: Option<TornLine>,
    /// Bytes of the file up to the end of the last complete line.
    pub good_len: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TornLine {
    /// 1-based line number.
    pub line: usize,
    pub bytes: usize,
    pub message: String,
}

/// Reads a journal. A line that does not parse is an error naming it, unless it is the last
/// line, which a crash mid-write may have torn: that one is reported in `torn` and dropped.
pub fn read_journal(path: &Path) -> Result<JournalRead, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut out = JournalRead::default();
    let mut buf = Vec::new();
    let mut line_no = 0;
    let mut offset = 0u64;
    let mut pending_error: Option<(usize, String, usize)> = None;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if let Some((line, message, _)) = pending_error.take() {
            // A bad line followed by more lines is corruption, not a torn end.
            return Err(JournalError::Format {
                path: path.to_path_buf(),
                line,
                message,
            });
        }
        let complete = buf.ends_with(b"\n");
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            if complete {
                offset += n as u64;
                out.good_len = offset;
            }
            continue;
        }
        match serde_json::from_str::<Event>(text.trim_end()) {
            Ok(e) if complete => {
                out.events.push(e);
                offset += n as u64;
                out.good_len = offset;
            }
            Ok(_) => pending_error = Some((line_no, "the line has no end".into(), n)),
            Err(e) => pending_error = Some((line_no, e.to_string(), n)),
        }
    }
    if let Some((line, message, bytes)) = pending_error {
        out.torn = Some(TornLine {
            line,
            bytes,
            message,
        });
    }
    Ok(out)
}

/// The journal open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines written in this session.
    pub written: u64,
    /// Group commit: [`Journal::append`] fsyncs only when the last fsync is this old (see
    /// [`Journal::group_commit`]); `None`: every append.
    group: Option<std::time::Duration>,
    last_sync: std::time::Instant,
    dirty: bool,
}

impl Journal {
    /// Creates a new journal (the file must not exist).
    pub fn create(path: &Path) -> Result<Journal, JournalError> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|source| JournalError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            written: 0,
            group: None,
            last_sync: std::time::Instant::now(),
            dirty: false,
        })
    }

    /// Opens an existing journal for appending, first cutting it to `good_len` bytes (which
    /// drops a torn last line).
    pub fn open_append(path: &Path, good_len: u64) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() != good_len {
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            written: 0,
            group: None,
            last_sync: std::time::Instant::now(),
            dirty: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event, flushed and synced to disk before returning (in group commit, synced
    /// once the last fsync is older than the interval).
    pub fn append(&mut self, event: &Event) -> Result<(), JournalError> {
        self.write(event)?;
        match self.group {
            Some(every) if self.last_sync.elapsed() < every => {
                self.dirty = true;
                Ok(())
            }
            _ => self.sync(),
        }
    }

    /// Group commit, for runs whose evaluations are look-ups: every event is still written to
    /// the operating system at once (a crash of the process loses nothing), but fsyncs happen
    /// at most once per `every` and at the end of the session ([`Journal::sync`]). A power
    /// loss can then lose the last `every` of events; a resume redoes those evaluations, which
    /// for a look-up costs nothing, while fsyncing each of hundreds of look-ups a second would
    /// make the disk, not the search, the run's cost.
    pub fn group_commit(&mut self, every: std::time::Duration) {
        self.group = Some(every);
    }

    /// Fsyncs what was written.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.last_sync = std::time::Instant::now();
        self.dirty = false;
        Ok(())
    }

    /// Appends one event flushed to the operating system (a process crash cannot lose it),
    /// leaving the fsync to the next [`Journal::append`].
    pub fn append_unsynced(&mut self, event: &Event) -> Result<(), JournalError> {
        self.write(event)
    }

    fn write(&mut self, event: &Event) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(event).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.written += 1;
        Ok(())
    }

    /// Writes raw bytes without a newline: the crash hook's torn line, in tests.
    pub fn append_raw_for_test(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(bytes).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.dirty {
            let _ = self.file.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(i: u64) -> Event {
        Event::Note(NoteEvent {
            round: i,
            message: format!("n{i}"),
        })
    }

    #[test]
    fn envelope_is_type_and_data() {
        let s = serde_json::to_string(&note(1)).unwrap();
        assert_eq!(s, r#"{"type":"note","data":{"round":1,"message":"n1"}}"#);
    }

    #[test]
    fn torn_last_line_is_reported_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let mut j = Journal::create(&p).unwrap();
        j.append(&note(0)).unwrap();
        j.append(&note(1)).unwrap();
        j.append_raw_for_test(br#"{"type":"note","data":{"rou"#)
            .unwrap();
        let r = read_journal(&p).unwrap();
        assert_eq!(r.events, vec![note(0), note(1)]);
        let torn = r.torn.clone().unwrap();
        assert_eq!(torn.line, 3);
        let mut j = Journal::open_append(&p, r.good_len).unwrap();
        j.append(&note(2)).unwrap();
        let r = read_journal(&p).unwrap();
        assert_eq!(r.events, vec![note(0), note(1), note(2)]);
        assert!(r.torn.is_none());
    }

    #[test]
    fn a_complete_last_line_without_newline_counts_as_torn() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let mut j = Journal::create(&p).unwrap();
        j.append(&note(0)).unwrap();
        j.append_raw_for_test(serde_json::to_string(&note(1)).unwrap().as_bytes())
            .unwrap();
        let r = read_journal(&p).unwrap();
        assert_eq!(r.events, vec![note(0)]);
        assert!(r.torn.is_some());
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let good = serde_json::to_string(&note(0)).unwrap();
        std::fs::write(&p, format!("{good}\nnot json\n{good}\n")).unwrap();
        let e = read_journal(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
