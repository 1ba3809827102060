//! The language model as the proposer (LLAMBO-style): it sees the task, the grammar in words,
//! the history best first and the score to beat, and answers with a plan and `k` candidates
//! with predicted scores. Invalid candidates go back with the validator's message for a
//! bounded number of repairs. Options: `plans = n` first asks for n distinct plans, then
//! candidates for each; `rank_pool = m` adds m samples and mutations of the best to the
//! model's candidates and lets the model, as a surrogate, pick the most promising; a zero-shot
//! warm start (the default) lets the model write the first round with no history.

use super::{Context, Observation, Origin, Proposal, SearchError, SettingError, Strategy};
use crate::llm::prompt::{
    DifferentContext, HistoryRow, PredictContext, Prompts, ProposeContext, SystemContext,
    DEFAULT_HISTORY_BUDGET_CHARS,
};
use crate::llm::reply::parse_predictions;
use crate::llm::space_prompt::{
    check_reply, grammar_text, repair_context, CheckedCandidate, Verdict,
};
use crate::llm::{GrammarConstraint, LlmClient, Message};
use crate::space::{export_cfg, CfgFormat, CfgOptions, ReplyShape};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmStrategyConfig {
    /// Candidates asked for in each propose call.
    pub k: usize,
    /// Repair attempts for each invalid candidate.
    pub repairs: usize,
    /// Asks for another candidate in place of each valid one that repeats an evaluated or
    /// already proposed candidate; 0 is off.
    pub duplicate_retries: usize,
    /// Ask first for this many distinct plans, then for candidates following each; 0 is off.
    pub plans: usize,
    /// Let the model write the first round with no history (zero-shot). When off, `initial`
    /// random samples are evaluated first.
    pub warm_start: bool,
    /// Random samples evaluated before the model is asked, when `warm_start` is off.
    pub initial: usize,
    /// Samples and mutations of the best added to the model's candidates, all ranked by the
    /// model's predicted scores (a predict call); 0 is off.
    pub rank_pool: usize,
    /// Characters of history table a prompt may take.
    pub history_chars: usize,
    /// When a round yields no valid new candidate, fill it with random samples so that the
    /// run goes on (recorded as samples, with a note).
    pub fallback: bool,
}

impl Default for LlmStrategyConfig {
    fn default() -> Self {
        LlmStrategyConfig {
            k: 4,
            repairs: 2,
            duplicate_retries: 1,
            plans: 0,
            warm_start: true,
            initial: 4,
            rank_pool: 0,
            history_chars: DEFAULT_HISTORY_BUDGET_CHARS,
            fallback: true,
        }
    }
}

impl LlmStrategyConfig {
    fn retries(&self) -> Retries {
        Retries {
            invalid: self.repairs,
            duplicates: self.duplicate_retries,
        }
    }

    pub fn validate(&self) -> Result<(), SettingError> {
        if self.k == 0 {
            return Err(SettingError::TooSmall {
                fields: "`k`",
                min: 1,
            });
        }
        if self.history_chars < 200 {
            return Err(SettingError::TooSmall {
                fields: "`history_chars`",
                min: 200,
            });
        }
        Ok(())
    }
}

/// What the model-driven strategies share: the client, the templates, and a runtime to block
/// on model calls from the synchronous loop.
pub struct Model {
    pub client: Arc<LlmClient>,
    pub prompts: Prompts,
    rt: tokio::runtime::Runtime,
    /// Exported grammars by reply shape (`None`: the export failed, said once in a note).
    grammars: RefCell<HashMap<(usize, bool), Option<GrammarConstraint>>>,
    /// A cap on the history's characters below the configured budget, set when the server
    /// refused a prompt as longer than its context; kept for the rest of the run.
    history_cap: Cell<Option<usize>>,
}

/// Resolves once `interrupted` says the run is asked to stop (polled every 50 ms).
async fn until(interrupted: fn() -> bool) {
    while !interrupted() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The least history, in characters, worth a call: below it the prompt has lost what the
/// model searches from.
const MIN_HISTORY_CHARS: usize = 200;

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("client", &self.client)
            .finish()
    }
}

impl Model {
    pub fn new(client: Arc<LlmClient>, prompts: Prompts) -> Result<Self, SearchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SearchError::Other(format!("cannot start the async runtime: {e}")))?;
        Ok(Model {
            client,
            prompts,
            rt,
            grammars: RefCell::new(HashMap::new()),
            history_cap: Cell::new(None),
        })
    }

    /// The grammar to constrain a reply of `shape` with, when the client sends grammars: the
    /// space's grammar, depth-bounded, with the reply format around the candidates. An
    /// export that fails leaves the call unconstrained, with a note (once per shape).
    fn grammar_for(
        &self,
        ctx: &mut Context<'_>,
        shape: Option<ReplyShape>,
    ) -> Result<Option<GrammarConstraint>, SearchError> {
        let (Some(format), Some(shape)) = (self.client.grammar_format(), shape) else {
            return Ok(None);
        };
        let key = (shape.k, shape.predicted);
        if let Some(g) = self.grammars.borrow().get(&key) {
            return Ok(g.clone());
        }
        let cfg_format = CfgFormat::from(format);
        let max_depth = ctx.space.grammar.max_depth;
        let opts = CfgOptions {
            depth: self.client.grammar_depth().map(|d| d.min(max_depth)),
            reply: Some(shape),
        };
        let g = match export_cfg(&ctx.space.grammar, cfg_format, &opts) {
            Ok(text) => Some(GrammarConstraint {
                format,
                text: text.into(),
            }),
            Err(e) if self.client.grammar_required() => {
                return Err(SearchError::Other(format!(
                    "`constrain = \"grammar\"`, but the grammar of space {} cannot be exported for constrained decoding: {e}",
                    ctx.space.name()
                )))
            }
            Err(e) => {
                ctx.notes.push(format!(
                    "the grammar of space {} cannot be exported for constrained decoding ({e}); model calls go unconstrained",
                    ctx.space.name()
                ));
                None
            }
        };
        self.grammars.borrow_mut().insert(key, g.clone());
        Ok(g)
    }

    /// One call: the system prompt and `user`; the texts of the choices. `shape`: the reply
    /// format the prompt asks for, which constrains decoding when the server takes a grammar
    /// (`None` for replies that are not candidates: plans, predictions).
    pub fn ask(
        &self,
        ctx: &mut Context<'_>,
        step: &str,
        user: String,
        shape: Option<ReplyShape>,
    ) -> Result<Vec<String>, SearchError> {
        let grammar = self.grammar_for(ctx, shape)?;
        let system = self.prompts.system(&SystemContext {
            space_name: ctx.space.name().to_string(),
            metric: ctx.metric.to_string(),
            maximize: ctx.history.maximize(),
        })?;
        let messages = vec![Message::system(system), Message::user(user)];
        tracing::debug!(step, "model call");
        // A model call can take a minute; Ctrl-C must not wait for it. The call is dropped
        // unrecorded, and the round with it.
        let call = self.client.complete_constrained(step, messages, grammar);
        let interrupted = ctx.interrupted;
        let resp = self.rt.block_on(async {
            tokio::select! {
                r = call => r.map_err(SearchError::from),
                () = until(interrupted) => Err(SearchError::Interrupted),
            }
        })?;
        Ok(resp.choices.into_iter().map(|c| c.text).collect())
    }

    /// The characters of history a prompt may take: `configured`, or less once the server
    /// refused a longer prompt.
    pub fn history_budget(&self, configured: usize) -> usize {
        self.history_cap
            .get()
            .map_or(configured, |cap| cap.min(configured))
    }

    /// [`Model::ask`] for a prompt that shows the history: `render(budget)` writes the prompt
    /// with at most `budget` characters of history. When the server says the prompt does not
    /// fit its context window, the history is cut (to fit, where the server gives its token
    /// counts, or by half) and the call made again; the smaller budget stays for the rest of
    /// the run, with a note. The prompt's growth with the history thus never ends a run that
    /// a shorter history would let go on. Deterministic for replay: the cut depends only on
    /// the recorded refusal.
    pub fn ask_with_history(
        &self,
        ctx: &mut Context<'_>,
        step: &str,
        configured: usize,
        render: &dyn Fn(usize) -> Result<String, SearchError>,
        shape: Option<ReplyShape>,
    ) -> Result<Vec<String>, SearchError> {
        let mut budget = self.history_budget(configured);
        loop {
            let user = render(budget)?;
            let prompt_chars = user.chars().count();
            // The history's share of this prompt: what a cut can take away.
            let shown = prompt_chars.saturating_sub(render(0)?.chars().count());
            let err = match self.ask(ctx, step, user, shape) {
                Err(SearchError::Llm(e)) if e.is_context_overflow() => e,
                other => return other,
            };
            let reserve = u64::from(self.client.defaults().max_tokens.unwrap_or(512));
            let cut = match err.overflow_tokens() {
                // Characters a token, from this very prompt; cut the excess and the reply's
                // room, and a tenth more for the estimate's error.
                Some((prompt, context)) => {
                    let excess = (prompt + reserve).saturating_sub(context) as f64;
                    let chars_per_token = prompt_chars as f64 / prompt.max(1) as f64;
                    (excess * chars_per_token * 1.1).ceil() as usize
                }
                None => shown / 2,
            };
            let next = shown.min(budget).saturating_sub(cut.max(shown / 10));
            if next < MIN_HISTORY_CHARS {
                ctx.notes.push(format!(
                    "model call {step}: the prompt does not fit the model's context window even with {shown} characters of history; give the server a larger context (`[llm.local] ctx`) or the model a shorter one"
                ));
                return Err(SearchError::Llm(err));
            }
            ctx.notes.push(format!(
                "model call {step}: the prompt did not fit the model's context window ({err}); the history shown is cut from {shown} to {next} characters for the rest of the run"
            ));
            self.history_cap.set(Some(next));
            budget = next;
        }
    }

    /// Checks the candidates of a reply text, repairing the invalid ones; returns every
    /// proposal made (invalid ones included, with their messages).
    pub fn check_and_repair(
        &self,
        ctx: &mut Context<'_>,
        reply: &str,
        step: &str,
        origin: Origin,
        parents: &[String],
        retries: Retries,
    ) -> Result<Vec<Proposal>, SearchError> {
        let checked = match check_reply(ctx.space, reply, ctx.input, &ctx.check) {
            Ok(c) => c,
            Err(e) => {
                ctx.notes
                    .push(format!("model call {step}: unusable reply: {e}"));
                return Ok(vec![]);
            }
        };
        let mut out: Vec<Proposal> = Vec::new();
        for (i, c) in checked.candidates.into_iter().enumerate() {
            let (text, plan, predicted) =
                (c.proposal.text, checked.plan.clone(), c.proposal.predicted);
            let proposal = |text: String, checked| Proposal {
                text,
                checked,
                origin,
                parents: parents.to_vec(),
                plan: plan.clone(),
                llm_step: Some(step.to_string()),
                predicted,
            };
            let inv = match c.verdict {
                Verdict::Valid(v) => {
                    let hash = v.node.hash_hex();
                    let repeated = ctx.history.seen(&hash)
                        || out
                            .iter()
                            .any(|p| p.hash().as_deref() == Some(hash.as_str()));
                    let canonical = v.canonical.clone();
                    out.push(proposal(v.canonical, Ok((v.node, v.analysis))));
                    if repeated && retries.duplicates > 0 {
                        let score = ctx.history.get(&hash).and_then(|o| o.score);
                        let rstep = format!("{step}.different{}", i + 1);
                        out.extend(self.ask_different(
                            ctx,
                            &rstep,
                            &canonical,
                            score,
                            parents,
                            retries.duplicates,
                            &out,
                        )?);
                    }
                    continue;
                }
                Verdict::Invalid(inv) => inv,
            };
            out.push(proposal(text, Err(inv.clone())));
            let (mut candidate, mut message) = (inv.candidate, inv.message);
            for attempt in 1..=retries.invalid {
                let rstep = format!("{step}.repair{}.{attempt}", i + 1);
                let rc = repair_context(ctx.task, ctx.space, &candidate, &message);
                let text = self.prompts.repair(&rc)?;
                let (fixed_plan, first) = match self.second_try(ctx, &rstep, text)? {
                    SecondTry::Candidate(p, c) => (p, c),
                    SecondTry::Nothing => continue,
                    SecondTry::NoReply => break,
                };
                let repaired = |text: String, checked| Proposal {
                    text,
                    checked,
                    origin: Origin::Repair,
                    parents: parents.to_vec(),
                    plan: fixed_plan.clone().or(plan.clone()),
                    llm_step: Some(rstep.clone()),
                    predicted: first.proposal.predicted.or(predicted),
                };
                match first.verdict {
                    Verdict::Valid(v) => {
                        out.push(repaired(v.canonical, Ok((v.node, v.analysis))));
                        break;
                    }
                    Verdict::Invalid(inv2) => {
                        out.push(repaired(first.proposal.text.clone(), Err(inv2.clone())));
                        candidate = inv2.candidate;
                        message = inv2.message;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The model's second tries at one reply's candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retries {
    /// Repairs of each invalid candidate, with the validator's message.
    pub invalid: usize,
    /// Asks for another candidate in place of each valid one that repeats an evaluated or
    /// already proposed candidate.
    pub duplicates: usize,
}

impl Model {
    /// Asks, up to `attempts` times, for a candidate other than `candidate`, which the model
    /// repeated; returns every proposal the replies held (valid or not, new or not), stopping
    /// at the first valid new one. Each is a second try (`Origin::Repair`).
    #[allow(clippy::too_many_arguments)]
    fn ask_different(
        &self,
        ctx: &mut Context<'_>,
        step: &str,
        candidate: &str,
        score: Option<f64>,
        parents: &[String],
        attempts: usize,
        earlier: &[Proposal],
    ) -> Result<Vec<Proposal>, SearchError> {
        let dc = DifferentContext {
            task: ctx.task.to_string(),
            space_name: ctx.space.name().to_string(),
            grammar_text: grammar_text(ctx.space),
            candidate: candidate.to_string(),
            score,
            metric: ctx.metric.to_string(),
            maximize: ctx.history.maximize(),
        };
        let text = self.prompts.different(&dc)?;
        let mut out: Vec<Proposal> = Vec::new();
        for attempt in 1..=attempts {
            let astep = format!("{step}.{attempt}");
            let (plan, first) = match self.second_try(ctx, &astep, text.clone())? {
                SecondTry::Candidate(p, c) => (p, c),
                SecondTry::Nothing => continue,
                SecondTry::NoReply => break,
            };
            let proposal = |text: String, checked| Proposal {
                text,
                checked,
                origin: Origin::Repair,
                parents: parents.to_vec(),
                plan: plan.clone(),
                llm_step: Some(astep.clone()),
                predicted: first.proposal.predicted,
            };
            match first.verdict {
                Verdict::Valid(v) => {
                    let hash = v.node.hash_hex();
                    let new = !ctx.history.seen(&hash)
                        && !earlier
                            .iter()
                            .chain(&out)
                            .any(|p| p.hash().as_deref() == Some(hash.as_str()));
                    out.push(proposal(v.canonical, Ok((v.node, v.analysis))));
                    if new {
                        break;
                    }
                }
                Verdict::Invalid(inv) => {
                    out.push(proposal(first.proposal.text.clone(), Err(inv)));
                }
            }
        }
        Ok(out)
    }
}

/// What one second try (a repair, or a request for a different candidate) gave.
enum SecondTry {
    /// The reply's plan and its first candidate, checked.
    Candidate(Option<String>, Box<CheckedCandidate>),
    /// A reply without a usable candidate (noted); another attempt may do better.
    Nothing,
    /// No reply at all.
    NoReply,
}

impl Model {
    /// Sends `text` (a prompt whose reply is one plan and one candidate) and checks the
    /// reply's first candidate; an unusable reply is noted.
    fn second_try(
        &self,
        ctx: &mut Context<'_>,
        step: &str,
        text: String,
    ) -> Result<SecondTry, SearchError> {
        let texts = self.ask(ctx, step, text, Some(ReplyShape::repair()))?;
        let Some(reply) = texts.first() else {
            return Ok(SecondTry::NoReply);
        };
        let checked = match check_reply(ctx.space, reply, ctx.input, &ctx.check) {
            Ok(r) => r,
            Err(e) => {
                ctx.notes
                    .push(format!("model call {step}: unusable reply: {e}"));
                return Ok(SecondTry::Nothing);
            }
        };
        let plan = checked.plan.clone();
        Ok(match checked.candidates.into_iter().next() {
            Some(first) => SecondTry::Candidate(plan, Box::new(first)),
            None => SecondTry::Nothing,
        })
    }
}

/// The history as the templates' table rows.
pub(crate) fn history_rows(obs: &[Observation]) -> Vec<HistoryRow> {
    obs.iter()
        .map(|o| HistoryRow {
            candidate: o.candidate.clone(),
            score: o.score,
            params: Some(o.params),
            outcome: o.outcome.clone(),
        })
        .collect()
}

/// How many proposals are valid and new (not in the history, not repeated in `ps`).
pub(crate) fn count_new(ctx: &Context<'_>, ps: &[Proposal]) -> usize {
    let mut seen = HashSet::new();
    ps.iter()
        .filter_map(Proposal::hash)
        .filter(|h| !ctx.history.seen(h) && seen.insert(h.clone()))
        .count()
}

pub struct LlmStrategy {
    pub cfg: LlmStrategyConfig,
    pub model: Model,
}

impl LlmStrategy {
    fn propose_ctx(&self, ctx: &Context<'_>, k: usize) -> ProposeContext {
        ProposeContext {
            task: ctx.task.to_string(),
            space_name: ctx.space.name().to_string(),
            grammar_text: grammar_text(ctx.space),
            metric: ctx.metric.to_string(),
            maximize: ctx.history.maximize(),
            history: history_rows(ctx.history.all()),
            target: None,
            k,
            history_budget_chars: self.cfg.history_chars,
        }
    }

    /// Asks for `n` plans; returns the plan texts (at most `n`).
    fn plans(&self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<String>, SearchError> {
        #[derive(Serialize)]
        struct PlansView<'a> {
            #[serde(flatten)]
            base: &'a ProposeContext,
            history_total: usize,
            history_shown: usize,
            n: usize,
        }
        let mut pc = self.propose_ctx(ctx, n);
        let best: Vec<Observation> = ctx.history.ranked().into_iter().take(20).cloned().collect();
        pc.history = history_rows(&best);
        let target = ctx.history.best().and_then(|b| b.score);
        pc.target = target;
        let view = PlansView {
            history_total: ctx.history.len(),
            history_shown: pc.history.len(),
            n,
            base: &pc,
        };
        let text = self.model.prompts.render("plans.j2", &view)?;
        let step = format!("r{}.plans", ctx.round);
        let replies = self.model.ask(ctx, &step, text, None)?;
        let plans = parse_plans(replies.first().map(String::as_str).unwrap_or(""));
        if plans.is_empty() {
            ctx.notes
                .push(format!("model call {step}: no `PLAN n:` line in the reply"));
        }
        Ok(plans.into_iter().take(n).collect())
    }

    /// Ranks proposals by the model's predicted scores (a predict call); unpredicted last.
    fn rank(
        &self,
        ctx: &mut Context<'_>,
        mut pool: Vec<Proposal>,
    ) -> Result<Vec<Proposal>, SearchError> {
        let pc = PredictContext {
            task: ctx.task.to_string(),
            space_name: ctx.space.name().to_string(),
            grammar_text: grammar_text(ctx.space),
            metric: ctx.metric.to_string(),
            maximize: ctx.history.maximize(),
            examples: history_rows(ctx.history.all()),
            history_budget_chars: self.cfg.history_chars,
            candidates: pool.iter().map(|p| p.text.clone()).collect(),
        };
        let render = |budget: usize| -> Result<String, SearchError> {
            let pc = PredictContext {
                history_budget_chars: budget,
                ..pc.clone()
            };
            Ok(self.model.prompts.predict(&pc)?.text)
        };
        let step = format!("r{}.predict", ctx.round);
        let replies =
            self.model
                .ask_with_history(ctx, &step, self.cfg.history_chars, &render, None)?;
        match parse_predictions(
            replies.first().map(String::as_str).unwrap_or(""),
            pool.len(),
        ) {
            Ok(p) => {
                for (prop, s) in pool.iter_mut().zip(p.scores) {
                    if s.is_some() {
                        prop.predicted = s;
                    }
                }
            }
            Err(e) => ctx
                .notes
                .push(format!("model call {step}: unusable predictions: {e}")),
        }
        let h = ctx.history;
        pool.sort_by(|a, b| {
            h.utility(b.predicted)
                .partial_cmp(&h.utility(a.predicted))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(pool)
    }
}

/// The plans of a plans reply: the text after each `PLAN n:` (or `PLAN:`) tag.
fn parse_plans(reply: &str) -> Vec<String> {
    reply
        .lines()
        .filter_map(|l| {
            let t = l.trim().trim_start_matches(['*', '-', '#', ' ']);
            let rest = t.strip_prefix("PLAN").or_else(|| t.strip_prefix("Plan"))?;
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            let rest = rest.strip_prefix(':')?.trim().trim_matches('*').trim();
            (!rest.is_empty()).then(|| rest.to_string())
        })
        .collect()
}

impl Strategy for LlmStrategy {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<Proposal>, SearchError> {
        if !self.cfg.warm_start && ctx.history.len() < self.cfg.initial {
            return (0..n).map(|_| ctx.fresh_sample()).collect();
        }
        let k = self.cfg.k.max(n);
        let mut out: Vec<Proposal> = Vec::new();
        if self.cfg.plans > 0 {
            let plans = self.plans(ctx, self.cfg.plans)?;
            for (j, plan) in plans.iter().enumerate() {
                #[derive(Serialize)]
                struct Follow<'a> {
                    plan: &'a str,
                }
                let follow = self
                    .model
                    .prompts
                    .render("follow_plan.j2", &Follow { plan })?;
                let pc = self.propose_ctx(ctx, k);
                let render = |budget: usize| -> Result<String, SearchError> {
                    let pc = ProposeContext {
                        history_budget_chars: budget,
                        ..pc.clone()
                    };
                    let mut text = self.model.prompts.propose(&pc)?.text;
                    text.push_str(&follow);
                    Ok(text)
                };
                let step = format!("r{}.plan{}.propose", ctx.round, j + 1);
                for reply in self.model.ask_with_history(
                    ctx,
                    &step,
                    self.cfg.history_chars,
                    &render,
                    Some(ReplyShape::propose(k)),
                )? {
                    out.extend(self.model.check_and_repair(
                        ctx,
                        &reply,
                        &step,
                        Origin::Model,
                        &[],
                        self.cfg.retries(),
                    )?);
                }
            }
        }
        if self.cfg.plans == 0 || count_new(ctx, &out) == 0 {
            let pc = self.propose_ctx(ctx, k);
            let render = |budget: usize| -> Result<String, SearchError> {
                let pc = ProposeContext {
                    history_budget_chars: budget,
                    ..pc.clone()
                };
                Ok(self.model.prompts.propose(&pc)?.text)
            };
            let step = format!("r{}.propose", ctx.round);
            for reply in self.model.ask_with_history(
                ctx,
                &step,
                self.cfg.history_chars,
                &render,
                Some(ReplyShape::propose(k)),
            )? {
                out.extend(self.model.check_and_repair(
                    ctx,
                    &reply,
                    &step,
                    Origin::Model,
                    &[],
                    self.cfg.retries(),
                )?);
            }
        }
        if self.cfg.rank_pool > 0 {
            let mut pool: Vec<Proposal> = Vec::new();
            let mut seen = HashSet::new();
            let (valid, invalid): (Vec<Proposal>, Vec<Proposal>) =
                out.into_iter().partition(|p| p.checked.is_ok());
            for p in valid {
                if let Some(h) = p.hash() {
                    if !ctx.history.seen(&h) && seen.insert(h) {
                        pool.push(p);
                    }
                }
            }
            let best: Vec<Observation> =
                ctx.history.ranked().into_iter().take(3).cloned().collect();
            for i in 0..self.cfg.rank_pool {
                let p = if i % 2 == 0 || best.is_empty() {
                    ctx.fresh_sample()?
                } else {
                    ctx.mutation_of(&best[i / 2 % best.len()])?
                };
                if let Some(h) = p.hash() {
                    if !ctx.history.seen(&h) && seen.insert(h) {
                        pool.push(p);
                    }
                }
            }
            let ranked = self.rank(ctx, pool)?;
            // Invalid ones stay in the record; the valid are cut to the best `n`.
            out = invalid;
            out.extend(ranked.into_iter().take(n));
        }
        if count_new(ctx, &out) == 0 && self.cfg.fallback {
            ctx.notes.push(format!(
                "round {}: the model gave no valid new candidate; falling back to {n} random sample(s)",
                ctx.round
            ));
            for _ in 0..n {
                out.push(ctx.fresh_sample()?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_plans;

    #[test]
    fn plans_are_read_from_tagged_lines() {
        let r = "Here:\nPLAN 1: go deeper.\n**PLAN 2:** use attention\nPLAN: third\nPLAN 4:\nnoise";
        assert_eq!(parse_plans(r), ["go deeper.", "use attention", "third"]);
    }
}
