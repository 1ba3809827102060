//! `archsmith prompt render STEP`: the exact messages a step of the agent loop would send to
//! the model, rendered from the same templates and space text, without sending anything. For
//! checking a prompt edit, or pasting a prompt into a chat by hand.

use archsmith::exit::ExitStatus;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use archsmith::llm::prompt::{
    read_history, HistoryRow, PredictContext, PromptError, Prompts, ProposeContext, SystemContext,
    TemplateOrigin, DEFAULT_HISTORY_BUDGET_CHARS,
};
use archsmith::llm::space_prompt::{check_candidate, grammar_text, repair_context, Verdict};
use archsmith::space::{Shape, Space};
use clap::{Args, Subcommand};

use super::{text_arg, SpaceArgs};

/// What the score measures until tasks name their own metric.
const METRIC: &str = "validation accuracy";
const MAXIMIZE: bool = true;

#[derive(Subcommand, Debug)]
pub enum PromptCmd {
    /// Print the messages a step would send (system, then user), without sending anything.
    #[command(subcommand)]
    Render(RenderStep),
}

#[derive(Subcommand, Debug)]
pub enum RenderStep {
    /// The system message every step starts with.
    System(CommonArgs),
    /// Ask for new candidates, given what was tried and how it scored.
    Propose(ProposeArgs),
    /// Ask to fix an invalid candidate, showing the validator's diagnostics.
    Repair(RepairArgs),
    /// Ask for the scores candidates would reach (the model as a surrogate).
    Predict(PredictArgs),
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    #[command(flatten)]
    pub space: SpaceArgs,
    /// The task in words. Default: a synthetic 10-class classification task on the input
    /// shape.
    #[arg(long)]
    pub task: Option<String>,
    /// A folder of *.j2 templates that replace the built-in ones file by file.
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// What was tried, in JSON Lines: one
    /// {"candidate": "...", "score": 0.71, "params": 12345, "outcome": "ok"} a line; outcome is
    /// `ok`, `invalid: <why>` or `failed: <why>`, and score and params may be null.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Characters the history table may take; the worst rows are left out to fit.
    #[arg(long, value_name = "CHARS", default_value_t = DEFAULT_HISTORY_BUDGET_CHARS)]
    pub history_budget: usize,
}

#[derive(Args, Debug)]
pub struct ProposeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// The score to beat. Default: the best score in the history.
    #[arg(long, value_name = "SCORE")]
    pub target: Option<f64>,
    /// Candidates to ask for.
    #[arg(short = 'k', value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The invalid candidate's text, or @FILE. It is validated against the space and input,
    /// and the diagnostics become the prompt's error.
    #[arg(long, value_name = "TEXT|@FILE")]
    pub candidate: String,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// A candidate to predict the score of (text or @FILE); repeat for several. Each must be
    /// valid, and is shown in its canonical form.
    #[arg(long = "candidate", value_name = "TEXT|@FILE", required = true)]
    pub candidates: Vec<String>,
}

pub fn run(cmd: PromptCmd) -> Result<ExitStatus> {
    let PromptCmd::Render(step) = cmd;
    let (system, user) = match step {
        RenderStep::System(a) => {
            let (prompts, space) = load(&a)?;
            (system(&prompts, &space)?, None)
        }
        RenderStep::Propose(a) => propose(a)?,
        RenderStep::Repair(a) => repair(a)?,
        RenderStep::Predict(a) => predict(a)?,
    };
    let mut out = std::io::stdout().lock();
    write_message(&mut out, "system", &system)?;
    if let Some(user) = user {
        write_message(&mut out, "user", &user)?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// `=== role ===`, then the text exactly as it would be sent, ending in one newline.
fn write_message(out: &mut impl Write, role: &str, text: &str) -> std::io::Result<()> {
    writeln!(out, "=== {role} ===")?;
    write!(out, "{text}")?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// The task used until a later issue adds named tasks.
fn default_task(input: Shape) -> String {
    let what = if input.rank() == 3 {
        format!("images of shape {input} (channels x height x width)")
    } else {
        format!("inputs of shape {input}")
    };
    format!(
        "Classify synthetic {what} into 10 classes. Each candidate is trained briefly from \
         scratch and scored by its accuracy on held-out validation examples."
    )
}

fn load(a: &CommonArgs) -> Result<(Prompts, Space)> {
    let prompts = match &a.prompts {
        Some(dir) => {
            let p = Prompts::with_overrides(dir)
                .with_context(|| format!("cannot load the prompt folder {}", dir.display()))?;
            for (name, origin) in p.origins() {
                if let TemplateOrigin::File(path) = origin {
                    eprintln!("{name}: using {}", path.display());
                }
            }
            p
        }
        None => Prompts::embedded(),
    };
    Ok((prompts, a.space.load()?))
}

fn task(a: &CommonArgs) -> String {
    a.task
        .clone()
        .unwrap_or_else(|| default_task(a.space.input))
}

fn system(prompts: &Prompts, space: &Space) -> Result<String> {
    let ctx = SystemContext {
        space_name: space.name().to_string(),
        metric: METRIC.into(),
        maximize: MAXIMIZE,
    };
    prompts
        .system(&ctx)
        .context("cannot render the system prompt")
}

fn history(a: &HistoryArgs) -> Result<Vec<HistoryRow>> {
    match &a.history {
        Some(path) => read_history(path).map_err(|e| match e {
            // The error names the path; say what the path was for.
            PromptError::Io { .. } => anyhow::Error::new(e).context("cannot read the history"),
            e => e.into(),
        }),
        None => Ok(Vec::new()),
    }
}

/// Says on stderr when the budget left rows out, since the prompt itself only says "the best
/// N are shown".
fn report_history(shown: usize, total: usize, budget: usize) {
    if shown < total {
        eprintln!(
            "history: {shown} of {total} rows fit in {budget} characters; the rest are left out"
        );
    }
}

fn propose(a: ProposeArgs) -> Result<(String, Option<String>)> {
    let (prompts, space) = load(&a.common)?;
    let ctx = ProposeContext {
        task: task(&a.common),
        space_name: space.name().to_string(),
        grammar_text: grammar_text(&space),
        metric: METRIC.into(),
        maximize: MAXIMIZE,
        history: history(&a.history)?,
        target: a.target,
        k: a.k as usize,
        history_budget_chars: a.history.history_budget,
    };
    let r = prompts
        .propose(&ctx)
        .context("cannot render the propose prompt")?;
    report_history(r.history_shown, r.history_total, a.history.history_budget);
    Ok((system(&prompts, &space)?, Some(r.text)))
}

fn repair(a: RepairArgs) -> Result<(String, Option<String>)> {
    let (prompts, space) = load(&a.common)?;
    let text = text_arg(&a.candidate)?;
    let input = a.common.space.input;
    let invalid = match check_candidate(&space, &text, input, &a.common.space.options()) {
        Verdict::Valid(v) => bail!(
            "the candidate is valid in space {} for input {input}, so there is nothing to \
             repair; its canonical form is\n  {}",
            space.name(),
            v.canonical
        ),
        Verdict::Invalid(i) => i,
    };
    let ctx = repair_context(
        &task(&a.common),
        &space,
        &invalid.candidate,
        &invalid.message,
    );
    let user = prompts
        .repair(&ctx)
        .context("cannot render the repair prompt")?;
    Ok((system(&prompts, &space)?, Some(user)))
}

fn predict(a: PredictArgs) -> Result<(String, Option<String>)> {
    let (prompts, space) = load(&a.common)?;
    let input = a.common.space.input;
    let opts = a.common.space.options();
    let mut candidates = Vec::new();
    for (i, c) in a.candidates.iter().enumerate() {
        match check_candidate(&space, &text_arg(c)?, input, &opts) {
            Verdict::Valid(v) => candidates.push(v.canonical),
            Verdict::Invalid(bad) => bail!(
                "candidate {} is invalid in space {} for input {input}, so it has no score to \
                 predict:\n{}",
                i + 1,
                space.name(),
                bad.message
            ),
        }
    }
    let ctx = PredictContext {
        task: task(&a.common),
        space_name: space.name().to_string(),
        grammar_text: grammar_text(&space),
        metric: METRIC.into(),
        maximize: MAXIMIZE,
        examples: history(&a.history)?,
        history_budget_chars: a.history.history_budget,
        candidates,
    };
    let r = prompts
        .predict(&ctx)
        .context("cannot render the predict prompt")?;
    report_history(r.history_shown, r.history_total, a.history.history_budget);
    Ok((system(&prompts, &space)?, Some(r.text)))
}
