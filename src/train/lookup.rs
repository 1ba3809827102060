//! Tabular benchmarks: tasks whose candidates were all trained in advance, so that evaluating
//! one is a look-up. NAS-Bench-Graph (Qin et al., NeurIPS 2022) holds every cell of the
//! `nbgraph` space trained on nine node-classification data sets: tasks `nbgraph:<dataset>`.
//!
//! The tables come from the PyPI package `nas-bench-graph` (its light pickles), converted once
//! by `scripts/setup-nbgraph.sh` into CSV files under `$ARCHSMITH_NBGRAPH_DIR` (default
//! `~/.cache/archsmith/nbgraph`). Each file's header names its format, data set, row count and
//! the SHA-256 of its rows, checked on load, so a missing, truncated or edited table is refused
//! with its path and the command that installs it.
//!
//! A look-up gives the strategy the validation accuracy as the score. The test accuracy,
//! latency and parameters go to the journal ([`LookupResult`]) and to `archsmith bench`, never
//! to a strategy or a model: the search's `Observation` has no field for them.

use crate::space::gnn;
use crate::space::{Node, Shape};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The format version of the converted tables (`scripts/nbgraph_convert.py`'s `FORMAT`).
pub const FORMAT: u32 = 1;
/// The command that installs the tables.
pub const INSTALL: &str = "scripts/setup-nbgraph.sh";
/// The environment variable naming the tables' folder.
pub const DIR_ENV: &str = "ARCHSMITH_NBGRAPH_DIR";

/// A data set of NAS-Bench-Graph: its name, the space its table covers, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub name: &'static str,
    pub space: &'static str,
    pub nodes: u64,
    pub features: u64,
    pub classes: u64,
    pub about: &'static str,
}

/// The nine data sets, in the paper's order.
pub const DATASETS: &[Dataset] = &[
    Dataset { name: "cora", space: "nbgraph", nodes: 2708, features: 1433, classes: 7, about: "Cora citation graph (Planetoid split)" },
    Dataset { name: "citeseer", space: "nbgraph", nodes: 3327, features: 3703, classes: 6, about: "CiteSeer citation graph (Planetoid split)" },
    Dataset { name: "pubmed", space: "nbgraph", nodes: 19717, features: 500, classes: 3, about: "PubMed citation graph (Planetoid split)" },
    Dataset { name: "cs", space: "nbgraph", nodes: 18333, features: 6805, classes: 15, about: "Coauthor CS co-authorship graph" },
    Dataset { name: "physics", space: "nbgraph", nodes: 34493, features: 8415, classes: 5, about: "Coauthor Physics co-authorship graph" },
    Dataset { name: "photo", space: "nbgraph", nodes: 7650, features: 745, classes: 8, about: "Amazon Photo co-purchase graph" },
    Dataset { name: "computers", space: "nbgraph", nodes: 13752, features: 767, classes: 10, about: "Amazon Computers co-purchase graph" },
    Dataset { name: "arxiv", space: "nbgraph", nodes: 169343, features: 128, classes: 40, about: "ogbn-arxiv citation graph" },
    Dataset { name: "proteins", space: "nbgraph_proteins", nodes: 132534, features: 8, classes: 112, about: "ogbn-proteins protein association graph, 112 binary tasks; the table's score is ROC-AUC, and its cells use gcn, sage, arma, fc and skip only" },
];

impl Dataset {
    pub fn by_name(name: &str) -> Option<&'static Dataset> {
        DATASETS.iter().find(|d| d.name == name)
    }

    /// The task's input: the node-feature matrix (nodes x features).
    pub fn input(&self) -> Shape {
        Shape::col(self.nodes, self.features)
    }
}

/// One architecture of a table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    /// Validation accuracy (a fraction), the score strategies see.
    pub valid: f64,
    /// Test accuracy (a fraction), for reports only.
    pub test: f64,
    /// Inference latency in seconds.
    pub latency: f64,
    /// Parameters in millions.
    pub params_m: f64,
}

/// What a look-up records besides the score: in the journal, never shown to a strategy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupResult {
    /// The benchmark's key of the cell.
    pub key: u64,
    /// Test accuracy.
    pub test: f64,
    pub latency_seconds: f64,
    pub params_millions: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the NAS-Bench-Graph table {path} is missing; install it with `{INSTALL}` (or point {DIR_ENV} at a folder holding it)")]
    Missing { path: PathBuf },
    #[error("cannot read the NAS-Bench-Graph table {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the NAS-Bench-Graph table {path} is corrupt ({reason}); reinstall it: delete it and run `{INSTALL}`")]
    Corrupt { path: PathBuf, reason: Corruption },
    #[error("unknown NAS-Bench-Graph data set `{name}`; known: {known}")]
    UnknownDataset { name: String, known: String },
}

/// What is wrong with a table's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("no header line")]
    NoHeader,
    #[error("the header is not text")]
    HeaderNotText,
    #[error("the header does not start with `# archsmith-nbgraph`")]
    NotATable,
    #[error("the header has no format version")]
    NoVersion,
    #[error("format version {found}, but this archsmith reads version {FORMAT}")]
    Version { found: String },
    #[error("the header has no {0}=")]
    MissingField(&'static str),
    #[error("it holds data set {found}, not {expected}")]
    OtherDataset { found: String, expected: String },
    #[error("rows= is not a number")]
    BadRowCount,
    #[error("its rows do not match the SHA-256 in its header (truncated or edited)")]
    Digest,
    #[error("the rows are not text")]
    RowsNotText,
    #[error("the column line is not `key,valid,test,latency,params_m`")]
    Columns,
    /// A row, by its line number in the file.
    #[error("line {line}: {fault}")]
    Line { line: usize, fault: LineFault },
    #[error("{found} rows, but the header says {expected}")]
    RowCount { found: usize, expected: usize },
}

/// What is wrong with one row of a table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineFault {
    #[error("too few columns")]
    TooFewColumns,
    #[error("the key is not a number")]
    BadKey,
    /// A column, by name, that is not a number.
    #[error("{0} is not a number")]
    NotANumber(&'static str),
    #[error("{0} is not finite")]
    NotFinite(&'static str),
    #[error("{0} is not a NAS-Bench-Graph key")]
    NotAKey(u64),
    #[error("key {0} appears twice")]
    Duplicate(u64),
}

/// A benchmark table: key -> entry.
#[derive(Debug)]
pub struct Table {
    pub dataset: String,
    pub path: PathBuf,
    pub entries: HashMap<u64, Entry>,
}

/// The folder holding the converted tables.
pub fn tables_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/archsmith/nbgraph")
}

impl Table {
    /// The table of `dataset` from [`tables_dir`], read once per process and shared.
    pub fn shared(dataset: &str) -> Result<Arc<Table>, LookupError> {
        if Dataset::by_name(dataset).is_none() {
            return Err(LookupError::UnknownDataset {
                name: dataset.to_string(),
                known: DATASETS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let path = tables_dir().join(format!("{dataset}.csv"));
        type Cache = Mutex<HashMap<PathBuf, Arc<Table>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(t) = cache.lock().ok().and_then(|m| m.get(&path).cloned()) {
            return Ok(t);
        }
        let t = Arc::new(Table::load(&path, dataset)?);
        if let Ok(mut m) = cache.lock() {
            m.insert(path, t.clone());
        }
        Ok(t)
    }

    /// Reads and checks a converted table.
    pub fn load(path: &Path, dataset: &str) -> Result<Table, LookupError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LookupError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(LookupError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mut t = Table::parse(&bytes, dataset).map_err(|reason| LookupError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
        t.path = path.to_path_buf();
        Ok(t)
    }

    /// Parses a table's bytes; the error says what is wrong.
    fn parse(bytes: &[u8], dataset: &str) -> Result<Table, Corruption> {
        use Corruption as C;
        let nl = bytes.iter().position(|&b| b == b'\n').ok_or(C::NoHeader)?;
        let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| C::HeaderNotText)?;
        let body = &bytes[nl + 1..];
        let mut fields: HashMap<&str, &str> = HashMap::new();
        let mut words = header.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("archsmith-nbgraph")) {
            return Err(C::NotATable);
        }
        let version = words.next().ok_or(C::NoVersion)?;
        if version != FORMAT.to_string() {
            return Err(C::Version {
                found: version.to_string(),
            });
        }
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                fields.insert(k, v);
            }
        }
        let field = |k: &'static str| fields.get(k).copied().ok_or(C::MissingField(k));
        if field("dataset")? != dataset {
            return Err(C::OtherDataset {
                found: field("dataset")?.to_string(),
                expected: dataset.to_string(),
            });
        }
        let rows: usize = field("rows")?.parse().map_err(|_| C::BadRowCount)?;
        let digest: String = Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != field("body_sha256")? {
            return Err(C::Digest);
        }
        let text = std::str::from_utf8(body).map_err(|_| C::RowsNotText)?;
        let mut lines = text.lines();
        if lines.next() != Some("key,valid,test,latency,params_m") {
            return Err(C::Columns);
        }
        let mut entries = HashMap::with_capacity(rows);
        for (i, line) in lines.enumerate() {
            let bad = |fault: LineFault| C::Line { line: i + 3, fault };
            let mut it = line.split(',');
            let mut next = || it.next().ok_or(bad(LineFault::TooFewColumns));
            let key: u64 = next()?.parse().map_err(|_| bad(LineFault::BadKey))?;
            let mut num = |what: &'static str| -> Result<f64, Corruption> {
                let v: f64 = next()?
                    .parse()
                    .map_err(|_| bad(LineFault::NotANumber(what)))?;
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(bad(LineFault::NotFinite(what)))
                }
            };
            let e = Entry {
                valid: num("valid")?,
                test: num("test")?,
                latency: num("latency")?,
                params_m: num("params_m")?,
            };
            if gnn::decode(key).is_none() {
                return Err(bad(LineFault::NotAKey(key)));
            }
            if entries.insert(key, e).is_some() {
                return Err(bad(LineFault::Duplicate(key)));
            }
        }
        if entries.len() != rows {
            return Err(C::RowCount {
                found: entries.len(),
                expected: rows,
            });
        }
        Ok(Table {
            dataset: dataset.to_string(),
            path: PathBuf::new(),
            entries,
        })
    }

    /// The best validation accuracy in the table.
    pub fn best_valid(&self) -> f64 {
        self.entries
            .values()
            .map(|e| e.valid)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The entry of a candidate of the `nbgraph` spaces.
    pub fn get(&self, node: &Node) -> Option<(u64, Entry)> {
        let k = cell_key(node)?;
        self.entries.get(&k).map(|e| (k, *e))
    }
}

/// The benchmark key of an `nbgraph(...)` candidate.
pub fn cell_key(node: &Node) -> Option<u64> {
    let (link, ops) = gnn::cell_of(node)?;
    if !gnn::is_cell(&link, &ops) {
        return None;
    }
    gnn::key(link, ops)
}

/// Writes a table in the converted format (for tests and synthetic benchmarks).
pub fn write_table(path: &Path, dataset: &str, rows: &[(u64, Entry)]) -> std::io::Result<()> {
    let mut body = String::from("key,valid,test,latency,params_m\n");
    for (k, e) in rows {
        body += &format!(
            "{k},{:?},{:?},{:?},{:?}\n",
            e.valid, e.test, e.latency, e.params_m
        );
    }
    let digest: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let header = format!(
        "# archsmith-nbgraph {FORMAT} dataset={dataset} rows={} source=synthetic source_sha256=- body_sha256={digest}\n",
        rows.len()
    );
    std::fs::write(path, header + &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: f64) -> Entry {
        Entry {
            valid: v,
            test: v - 0.01,
            latency: 0.001,
            params_m: 0.5,
        }
    }

    #[test]
    fn a_written_table_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cora.csv");
        write_table(&p, "cora", &[(0, entry(0.5)), (12, entry(0.25))]).unwrap();
        let t = Table::load(&p, "cora").unwrap();
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[&12], entry(0.25));
        assert_eq!(t.best_valid(), 0.5);
    }

    #[test]
    fn missing_and_corrupt_tables_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cora.csv");
        let e = Table::load(&p, "cora").unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains(INSTALL),
            "{e}"
        );
        write_table(&p, "cora", &[(0, entry(0.5)), (12, entry(0.25))]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        // One digit changed: the checksum no longer matches.
        std::fs::write(&p, text.replace("0.25", "0.35")).unwrap();
        let e = Table::load(&p, "cora").unwrap_err().to_string();
        assert!(
            e.contains("corrupt") && e.contains(&p.display().to_string()),
            "{e}"
        );
        assert!(e.contains(INSTALL), "{e}");
        // Truncated.
        std::fs::write(&p, &text[..text.len() - 5]).unwrap();
        let e = Table::load(&p, "cora").unwrap_err().to_string();
        assert!(e.contains("truncated or edited"), "{e}");
        // Another data set's table.
        std::fs::write(&p, &text).unwrap();
        let e = Table::load(&p, "citeseer").unwrap_err().to_string();
        assert!(e.contains("not citeseer"), "{e}");
        // Not a table at all.
        std::fs::write(&p, b"\x80\x04\x95 pickle").unwrap();
        let e = Table::load(&p, "cora").unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
    }
}
