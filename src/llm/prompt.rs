//! Prompt templates: minijinja templates from the repository's `prompts/` (embedded into the
//! binary) or from a user folder that overrides them file by file, rendered from plain
//! context structs with strict undefined behaviour, so a misspelt variable is an error that
//! names the template and the variable rather than an empty hole in a prompt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::text::score as fmt_score;
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// The default templates, compiled into the binary.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("system.j2", include_str!("../../prompts/system.j2")),
    ("history.j2", include_str!("../../prompts/history.j2")),
    ("propose.j2", include_str!("../../prompts/propose.j2")),
    ("repair.j2", include_str!("../../prompts/repair.j2")),
    ("different.j2", include_str!("../../prompts/different.j2")),
    ("predict.j2", include_str!("../../prompts/predict.j2")),
    ("plans.j2", include_str!("../../prompts/plans.j2")),
    (
        "follow_plan.j2",
        include_str!("../../prompts/follow_plan.j2"),
    ),
    ("evolve.j2", include_str!("../../prompts/evolve.j2")),
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    #[error("template {template}, line {line}: undefined variable `{variable}`")]
    Undefined {
        template: String,
        variable: String,
        line: usize,
    },
    #[error("template {template}: syntax error: {message}")]
    Syntax { template: String, message: String },
    #[error("template {template}: {message}")]
    Render { template: String, message: String },
    #[error("no template named {name}; known: {known}")]
    Unknown { name: String, known: String },
    #[error("history file {}, line {line}: {message}", path.display())]
    History {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where each template came from, for logs and run records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TemplateOrigin {
    Embedded,
    File(PathBuf),
}

pub struct Prompts {
    env: Environment<'static>,
    origins: BTreeMap<String, TemplateOrigin>,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts")
            .field("origins", &self.origins)
            .finish()
    }
}

/// A row of the history table: what was tried and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub candidate: String,
    /// `None` when the candidate failed before scoring.
    pub score: Option<f64>,
    pub params: Option<u64>,
    /// E.g. `ok`, `invalid: ...`, `diverged`, `timeout`.
    pub outcome: String,
}

/// A history line as a file writes it: stricter than [`HistoryRow`], so that a misspelt field
/// is an error rather than a silently missing score.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryLine {
    candidate: String,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    params: Option<u64>,
    outcome: String,
}

/// Characters of history table a prompt gets when the caller does not say.
pub const DEFAULT_HISTORY_BUDGET_CHARS: usize = 6_000;

/// What is wrong with one line of a history file (1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct HistoryLineError {
    pub line: usize,
    pub message: String,
}

impl HistoryLineError {
    fn new(line: usize, message: impl Into<String>) -> HistoryLineError {
        HistoryLineError {
            line,
            message: message.into(),
        }
    }
}

/// Parses a history in JSON Lines, one [`HistoryRow`] a line, e.g.
/// `{"candidate": "...", "score": 0.71, "params": 12345, "outcome": "ok"}`; `score` and
/// `params` may be missing or null for a candidate that failed. Blank lines are skipped. The
/// error is the 1-based line number and what is wrong with it.
pub fn parse_history(text: &str) -> Result<Vec<HistoryRow>, HistoryLineError> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let h: HistoryLine = serde_json::from_str(raw).map_err(|e| {
            // Each line is its own document, so serde's "at line 1" would mislead.
            let mut msg = e.to_string();
            if let Some(at) = msg.rfind(" at line ") {
                msg.truncate(at);
            }
            HistoryLineError::new(line, format!("{msg} (column {})", e.column()))
        })?;
        if h.candidate.trim().is_empty() {
            return Err(HistoryLineError::new(line, "`candidate` is empty"));
        }
        if h.outcome.trim().is_empty() {
            return Err(HistoryLineError::new(
                line,
                "`outcome` is empty (use `ok`, `invalid: <why>` or `failed: <why>`)",
            ));
        }
        if let Some(s) = h.score.filter(|s| !s.is_finite()) {
            return Err(HistoryLineError::new(
                line,
                format!("`score` {s} is not a finite number"),
            ));
        }
        rows.push(HistoryRow {
            candidate: h.candidate,
            score: h.score,
            params: h.params,
            outcome: h.outcome,
        });
    }
    Ok(rows)
}

/// Reads a history file (see [`parse_history`]).
pub fn read_history(path: &Path) -> Result<Vec<HistoryRow>, PromptError> {
    let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_history(&text).map_err(|e| PromptError::History {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemContext {
    pub space_name: String,
    /// What the score measures, e.g. `validation accuracy`.
    pub metric: String,
    pub maximize: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposeContext {
    pub task: String,
    pub space_name: String,
    /// The space's grammar and terminals in words, filled by the space module.
    pub grammar_text: String,
    pub metric: String,
    pub maximize: bool,
    /// Every evaluated candidate, in any order; sorted and capped when rendered.
    pub history: Vec<HistoryRow>,
    /// The score to beat; the best in `history` when `None`.
    pub target: Option<f64>,
    /// Candidates wanted.
    pub k: usize,
    /// Characters the rendered history table may take; the worst rows are dropped to fit.
    pub history_budget_chars: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairContext {
    pub task: String,
    pub space_name: String,
    pub grammar_text: String,
    pub candidate: String,
    /// The validator's message, in the words it gives a model to act on.
    pub error: String,
}

/// A valid candidate the model wrote again: already evaluated (with its score) or already
/// proposed this round (no score); the model is asked for a different one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DifferentContext {
    pub task: String,
    pub space_name: String,
    pub grammar_text: String,
    pub candidate: String,
    pub score: Option<f64>,
    pub metric: String,
    pub maximize: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictContext {
    pub task: String,
    pub space_name: String,
    pub grammar_text: String,
    pub metric: String,
    pub maximize: bool,
    /// Measured candidates, shown as few-shot examples; capped like the propose history.
    pub examples: Vec<HistoryRow>,
    pub history_budget_chars: usize,
    /// Candidates whose score is wanted, in the order the predictions should come back.
    pub candidates: Vec<String>,
}

/// A rendered prompt and how much of the history made it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub history_shown: usize,
    pub history_total: usize,
}

/// What the propose and predict templates see besides the history.
#[derive(Serialize)]
struct ViewBase<'a> {
    task: &'a str,
    space_name: &'a str,
    grammar_text: &'a str,
    metric: &'a str,
    maximize: bool,
    target: Option<f64>,
    k: usize,
    candidates: &'a [String],
    history_total: usize,
}

/// The base with the history sorted and capped.
#[derive(Serialize)]
struct HistoryView<'a> {
    #[serde(flatten)]
    base: &'a ViewBase<'a>,
    history: &'a [HistoryRow],
    history_shown: usize,
}

impl Default for Prompts {
    fn default() -> Self {
        Self::embedded()
    }
}

impl Prompts {
    /// The templates compiled into the binary.
    pub fn embedded() -> Self {
        let mut env = base_env();
        let mut origins = BTreeMap::new();
        for (name, source) in EMBEDDED {
            // The embedded set is checked by the tests; a syntax error there is a build bug,
            // reported at render time like any other template error.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "embedded template does not compile");
            }
            origins.insert(name.to_string(), TemplateOrigin::Embedded);
        }
        Self { env, origins }
    }

    /// The embedded templates, with every `*.j2` file of `dir` replacing (or adding to) them.
    pub fn with_overrides(dir: &Path) -> Result<Self, PromptError> {
        let mut prompts = Self::embedded();
        let io = |source| PromptError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "j2"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let source = std::fs::read_to_string(&path).map_err(|source| PromptError::Io {
                path: path.clone(),
                source,
            })?;
            prompts
                .env
                .add_template_owned(name.clone(), source)
                .map_err(|e| PromptError::Syntax {
                    template: name.clone(),
                    message: describe(&e),
                })?;
            tracing::info!(template = %name, path = %path.display(), "prompt template overridden");
            prompts.origins.insert(name, TemplateOrigin::File(path));
        }
        Ok(prompts)
    }

    pub fn origins(&self) -> &BTreeMap<String, TemplateOrigin> {
        &self.origins
    }

    /// Renders template `name` with any serialisable context.
    pub fn render<S: Serialize>(&self, name: &str, ctx: &S) -> Result<String, PromptError> {
        let tmpl = self.env.get_template(name).map_err(|e| match e.kind() {
            ErrorKind::TemplateNotFound => PromptError::Unknown {
                name: name.to_string(),
                known: self.origins.keys().cloned().collect::<Vec<_>>().join(", "),
            },
            _ => PromptError::Syntax {
                template: name.to_string(),
                message: describe(&e),
            },
        })?;
        tmpl.render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| self.render_error(name, &e))
    }

    pub fn system(&self, ctx: &SystemContext) -> Result<String, PromptError> {
        self.render("system.j2", ctx)
    }

    /// The proposal prompt, with the history sorted best first and cut to its budget.
    pub fn propose(&self, ctx: &ProposeContext) -> Result<Rendered, PromptError> {
        let sorted = sort_best_first(&ctx.history, ctx.maximize);
        let target = ctx.target.or_else(|| sorted.first().and_then(|r| r.score));
        let base = ViewBase {
            task: &ctx.task,
            space_name: &ctx.space_name,
            grammar_text: &ctx.grammar_text,
            metric: &ctx.metric,
            maximize: ctx.maximize,
            target,
            k: ctx.k,
            candidates: &[],
            history_total: sorted.len(),
        };
        let shown = self.fit_history(&base, &sorted, ctx.history_budget_chars)?;
        let view = HistoryView {
            base: &base,
            history: &sorted[..shown],
            history_shown: shown,
        };
        let text = self.render("propose.j2", &view)?;
        Ok(Rendered {
            text,
            history_shown: shown,
            history_total: sorted.len(),
        })
    }

    pub fn repair(&self, ctx: &RepairContext) -> Result<String, PromptError> {
        self.render("repair.j2", ctx)
    }

    /// The prompt asking for a candidate other than one the model repeated.
    pub fn different(&self, ctx: &DifferentContext) -> Result<String, PromptError> {
        self.render("different.j2", ctx)
    }

    /// The surrogate prompt (LLAMBO-style): measured examples, then the candidates to score.
    pub fn predict(&self, ctx: &PredictContext) -> Result<Rendered, PromptError> {
        let sorted = sort_best_first(&ctx.examples, ctx.maximize);
        let base = ViewBase {
            task: &ctx.task,
            space_name: &ctx.space_name,
            grammar_text: &ctx.grammar_text,
            metric: &ctx.metric,
            maximize: ctx.maximize,
            target: None,
            k: ctx.candidates.len(),
            candidates: &ctx.candidates,
            history_total: sorted.len(),
        };
        let shown = self.fit_history(&base, &sorted, ctx.history_budget_chars)?;
        let view = HistoryView {
            base: &base,
            history: &sorted[..shown],
            history_shown: shown,
        };
        let text = self.render("predict.j2", &view)?;
        Ok(Rendered {
            text,
            history_shown: shown,
            history_total: sorted.len(),
        })
    }

    /// The largest number of best rows whose rendered table fits in `budget` characters.
    /// The table grows with every row, so a binary search over the count finds it with
    /// log2(n) renders.
    fn fit_history(
        &self,
        base: &ViewBase<'_>,
        sorted: &[HistoryRow],
        budget: usize,
    ) -> Result<usize, PromptError> {
        let len = |m: usize| {
            let view = HistoryView {
                base,
                history: &sorted[..m],
                history_shown: m,
            };
            self.render("history.j2", &view).map(|t| t.chars().count())
        };
        if len(sorted.len())? <= budget {
            return Ok(sorted.len());
        }
        let (mut lo, mut hi) = (0usize, sorted.len()); // len(lo) fits or lo == 0; len(hi) does not
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if len(mid)? <= budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    fn render_error(&self, name: &str, e: &minijinja::Error) -> PromptError {
        let template = e.name().unwrap_or(name).to_string();
        if e.kind() == ErrorKind::UndefinedError {
            // The error's span covers the expression that was undefined, e.g. `row.nme`.
            let source = e.template_source().map(str::to_string).or_else(|| {
                self.env
                    .get_template(&template)
                    .ok()
                    .map(|t| t.source().to_string())
            });
            let variable = e
                .range()
                .zip(source)
                .and_then(|(r, s)| s.get(r).map(|v| v.trim().to_string()))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "(unknown)".to_string());
            return PromptError::Undefined {
                template,
                variable,
                line: e.line().unwrap_or(0),
            };
        }
        PromptError::Render {
            template,
            message: describe(e),
        }
    }
}

fn base_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug info makes errors carry the template source, which names undefined variables.
    env.set_debug(true);
    match SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        Ok(syntax) => env.set_syntax(syntax),
        Err(e) => tracing::error!(error = %e, "template syntax config rejected"),
    }
    env.add_filter("oneline", oneline);
    env.add_filter("score", fmt_score);
    env.add_filter("si", fmt_si);
    env
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

/// Collapses whitespace to single spaces and escapes `|`, so a value stays in its table cell.
fn oneline(s: String) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// 1234 -> `1.2k`, 2_500_000 -> `2.5M`: short enough for a table, exact enough to compare.
fn fmt_si(v: Option<u64>) -> String {
    let Some(n) = v else { return "-".to_string() };
    let f = n as f64;
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", f / 1e6),
        _ => format!("{:.1}G", f / 1e9),
    }
}

/// Scored rows best first (ties keep their order), then unscored rows in their order.
fn sort_best_first(rows: &[HistoryRow], maximize: bool) -> Vec<HistoryRow> {
    let mut scored: Vec<HistoryRow> = rows
        .iter()
        .filter(|r| r.score.is_some_and(f64::is_finite))
        .cloned()
        .collect();
    scored.sort_by(|a, b| {
        let (x, y) = (a.score.unwrap_or(0.0), b.score.unwrap_or(0.0));
        if maximize {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        }
    });
    scored.extend(
        rows.iter()
            .filter(|r| !r.score.is_some_and(f64::is_finite))
            .cloned(),
    );
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(oneline("a\n  b | c".into()), "a b \\| c");
        assert_eq!(fmt_score(Some(0.5)), "0.5000");
        assert_eq!(fmt_score(None), "-");
        assert_eq!(
            (
                fmt_si(Some(999)),
                fmt_si(Some(1234)),
                fmt_si(Some(2_500_000))
            ),
            ("999".into(), "1.2k".into(), "2.5M".into())
        );
    }

    #[test]
    fn history_lines() {
        let text = concat!(
            r#"{"candidate": "a", "score": 0.71, "params": 12345, "outcome": "ok"}"#,
            "\n\n",
            r#"{"candidate": "b", "score": null, "outcome": "invalid: no"}"#,
            "\n",
        );
        let rows = parse_history(text).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].score, rows[0].params), (Some(0.71), Some(12345)));
        assert_eq!((rows[1].score, rows[1].params), (None, None));

        let bad = |t: &str| {
            let e = parse_history(t).expect_err("must fail");
            (e.line, e.message)
        };
        let (line, msg) = bad("{\"candidate\": \"a\", \"outcome\": \"ok\"}\n{\"candidate\": \"b\"");
        assert_eq!(line, 2);
        assert!(
            msg.starts_with("EOF while parsing") && msg.ends_with(")"),
            "{msg}"
        );
        assert!(!msg.contains("at line"), "{msg}");
        let (_, msg) = bad(r#"{"candidate": "a", "scroe": 0.5, "outcome": "ok"}"#);
        assert!(msg.contains("unknown field `scroe`"), "{msg}");
        let (_, msg) = bad(r#"{"candidate": "a", "score": 0.5}"#);
        assert!(msg.contains("missing field `outcome`"), "{msg}");
        let (_, msg) = bad(r#"{"candidate": " ", "outcome": "ok"}"#);
        assert_eq!(msg, "`candidate` is empty");
    }

    #[test]
    fn sorting_puts_failures_last() {
        let row = |c: &str, s: Option<f64>| HistoryRow {
            candidate: c.into(),
            score: s,
            params: None,
            outcome: "ok".into(),
        };
        let rows = vec![
            row("a", Some(0.1)),
            row("b", None),
            row("c", Some(0.9)),
            row("d", Some(f64::NAN)),
        ];
        let names = |v: Vec<HistoryRow>| v.into_iter().map(|r| r.candidate).collect::<String>();
        assert_eq!(names(sort_best_first(&rows, true)), "cabd");
        assert_eq!(names(sort_best_first(&rows, false)), "acbd");
    }
}
