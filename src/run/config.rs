//! An experiment's settings: one TOML file (or the built-in default) with command-line
//! overrides on top, merged and validated into one [`Settings`] value before any work starts,
//! then resolved into an [`Experiment`] (the space loaded, the task and its recipe settled).

use crate::llm::{LlmConfig, ProviderKind};
use crate::search::bo::BoConfig;
use crate::search::evolution::EvolutionConfig;
use crate::search::llm::LlmStrategyConfig;
use crate::search::llm_evolution::LlmEvolutionConfig;
use crate::space::{CheckOptions, Limits, Shape, Space};
use crate::train::{Recipe, Task, TaskError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The built-in default experiment, used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {file}: {message}")]
    Parse { file: String, message: String },
    #[error("config {file}: `{field}`: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

/// A search strategy by name: the same names in a config file (serde) and on the command
/// line (clap), where `llm_evolution` is also taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// `llm` when the `[llm]` section is usable (its key variable is set, or the server is
    /// local), `evolution` otherwise.
    Auto,
    Random,
    Evolution,
    Bo,
    Llm,
    #[value(alias = "llm_evolution")]
    LlmEvolution,
}

impl StrategyKind {
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Auto => "auto",
            StrategyKind::Random => "random",
            StrategyKind::Evolution => "evolution",
            StrategyKind::Bo => "bo",
            StrategyKind::Llm => "llm",
            StrategyKind::LlmEvolution => "llm-evolution",
        }
    }

    pub fn uses_model(self) -> bool {
        matches!(self, StrategyKind::Llm | StrategyKind::LlmEvolution)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A name for the run folder (default: the strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seeds the strategy's draws and every candidate's training.
    #[serde(default)]
    pub seed: u64,
    /// Where run folders are made.
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Candidates trained at once (by worker processes or Ray jobs when above 1; see
    /// `[executor]`).
    #[serde(default = "one")]
    pub parallel: usize,
    /// Where candidates train: in this process, in local worker processes, or on Ray.
    #[serde(default)]
    pub executor: crate::exec::ExecutorSettings,
    #[serde(default)]
    pub space: SpaceSettings,
    #[serde(default)]
    pub task: TaskSettings,
    #[serde(default)]
    pub strategy: StrategySettings,
    #[serde(default)]
    pub budget: Budget,
    #[serde(default)]
    pub objective: Objective,
    #[serde(default)]
    pub fidelity: Fidelity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmConfig>,
}

fn default_out() -> PathBuf {
    PathBuf::from("results")
}
fn default_device() -> String {
    "cpu".into()
}
fn one() -> usize {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpaceSettings {
    /// A built-in space (einspace, nb201, mlp) or a path to a grammar file or space folder.
    pub name: String,
    pub limits: Limits,
    /// A folder of prompt templates overriding the built-in ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
}

impl Default for SpaceSettings {
    fn default() -> Self {
        SpaceSettings {
            name: "einspace".into(),
            limits: Limits::default(),
            prompts: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSettings {
    /// A built-in synthetic task or `FORMAT:DIR` (see `Task::resolve`).
    pub name: String,
    /// Split sizes of a synthetic task (its defaults when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_size: Option<usize>,
    /// Overrides of the task's default recipe, field by field (see `Recipe`).
    pub recipe: toml::Table,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings {
            name: "textures".into(),
            train_size: None,
            valid_size: None,
            test_size: None,
            recipe: toml::Table::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategySettings {
    pub kind: StrategyKindField,
    /// Candidates asked of the strategy each round.
    pub batch: usize,
    pub evolution: EvolutionConfig,
    pub bo: BoConfig,
    pub llm: LlmStrategyConfig,
    pub llm_evolution: LlmEvolutionConfig,
}

impl Default for StrategySettings {
    fn default() -> Self {
        StrategySettings {
            kind: StrategyKindField::default(),
            batch: 1,
            evolution: EvolutionConfig::default(),
            bo: BoConfig::default(),
            llm: LlmStrategyConfig::default(),
            llm_evolution: LlmEvolutionConfig::default(),
        }
    }
}

/// `StrategyKind` with `auto` as its default, for the settings field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StrategyKindField(pub StrategyKind);

impl Default for StrategyKindField {
    fn default() -> Self {
        StrategyKindField(StrategyKind::Auto)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Candidates trained (failed trainings count, invalid proposals do not).
    pub evaluations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_time_secs: Option<f64>,
    /// Model tokens, input and output, over the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Model spend in US dollars over the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// Rounds in a row without a new valid candidate before the run stops as exhausted.
    pub stall_rounds: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            evaluations: 20,
            wall_time_secs: None,
            tokens: None,
            usd: None,
            stall_rounds: 20,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Maximize,
    Minimize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreSplit {
    /// The validation split's accuracy after the last epoch trained.
    Valid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Objective {
    pub direction: Direction,
    pub split: ScoreSplit,
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            direction: Direction::Maximize,
            split: ScoreSplit::Valid,
        }
    }
}

/// Successive halving over epochs (asynchronous, as in ASHA): at rungs of `min_epochs`,
/// `min_epochs * eta`, ... a candidate goes on only if its validation score is in the top
/// `1 / eta` of the scores seen at that rung.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fidelity {
    pub successive_halving: bool,
    pub min_epochs: usize,
    pub eta: usize,
}

impl Default for Fidelity {
    fn default() -> Self {
        Fidelity {
            successive_halving: false,
            min_epochs: 1,
            eta: 3,
        }
    }
}

impl Fidelity {
    /// The rung epochs below `epochs`.
    pub fn rungs(&self, epochs: usize) -> Vec<usize> {
        let mut v = Vec::new();
        if !self.successive_halving || self.eta < 2 {
            return v;
        }
        let mut r = self.min_epochs.max(1);
        while r < epochs {
            v.push(r);
            r *= self.eta;
        }
        v
    }
}

/// Command-line values that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub space: Option<String>,
    pub task: Option<String>,
    pub strategy: Option<StrategyKind>,
    pub evaluations: Option<u64>,
    pub seed: Option<u64>,
    pub device: Option<String>,
    pub out: Option<PathBuf>,
    pub name: Option<String>,
    pub epochs: Option<usize>,
    pub parallel: Option<usize>,
    pub executor: Option<crate::exec::ExecutorKind>,
    pub ray_address: Option<String>,
}

impl Settings {
    /// Parses settings from TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Settings, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads a config file, or the built-in default experiment when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        match path {
            None => Settings::from_toml(DEFAULT_CONFIG, "(built-in default)"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.to_path_buf(),
                    source,
                })?;
                Settings::from_toml(&text, &p.display().to_string())
            }
        }
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(s) = &o.space {
            self.space.name = s.clone();
        }
        if let Some(t) = &o.task {
            self.task.name = t.clone();
        }
        if let Some(s) = o.strategy {
            self.strategy.kind = StrategyKindField(s);
        }
        if let Some(n) = o.evaluations {
            self.budget.evaluations = n;
        }
        if let Some(s) = o.seed {
            self.seed = s;
        }
        if let Some(d) = &o.device {
            self.device = d.clone();
        }
        if let Some(d) = &o.out {
            self.out = d.clone();
        }
        if let Some(n) = &o.name {
            self.name = Some(n.clone());
        }
        if let Some(p) = o.parallel {
            self.parallel = p;
        }
        if let Some(k) = o.executor {
            self.executor.kind = k;
        }
        if let Some(a) = &o.ray_address {
            self.executor.ray.address = Some(a.clone());
        }
        if let Some(e) = o.epochs {
            self.task
                .recipe
                .insert("epochs".into(), toml::Value::Integer(e as i64));
        }
    }

    /// Checks every range and companion, naming the field at fault.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                field: field.to_string(),
                message,
            })
        };
        if self.parallel == 0 {
            return bad("parallel", "must be at least 1".into());
        }
        if let Err(e) = self.executor.validate(self.parallel) {
            return bad(&e.field, e.message);
        }
        if self.budget.evaluations == 0 {
            return bad("budget.evaluations", "must be at least 1".into());
        }
        if let Some(w) = self.budget.wall_time_secs {
            if !(w.is_finite() && w > 0.0) {
                return bad("budget.wall_time_secs", format!("{w} must be positive"));
            }
        }
        if let Some(u) = self.budget.usd {
            if !(u.is_finite() && u >= 0.0) {
                return bad("budget.usd", format!("{u} must be >= 0"));
            }
        }
        if self.budget.stall_rounds == 0 {
            return bad("budget.stall_rounds", "must be at least 1".into());
        }
        if self.strategy.batch == 0 {
            return bad("strategy.batch", "must be at least 1".into());
        }
        if self.fidelity.successive_halving && self.fidelity.eta < 2 {
            return bad("fidelity.eta", "must be at least 2".into());
        }
        if let Err(e) = self.strategy.evolution.validate() {
            return bad("strategy.evolution", e.to_string());
        }
        if let Err(e) = self.strategy.bo.validate() {
            return bad("strategy.bo", e.to_string());
        }
        if let Err(e) = self.strategy.llm.validate() {
            return bad("strategy.llm", e.to_string());
        }
        if let Err(e) = self.strategy.llm_evolution.validate() {
            return bad("strategy.llm_evolution", e.to_string());
        }
        // Whether an asked-for GPU exists is for the training program to say (the workers
        // resolve the device; see `exec::local`): here, that the name is one.
        if let Err(e) = self.device.parse::<crate::train::DeviceChoice>() {
            return bad("device", e.to_string());
        }
        if let Some(l) = &self.llm {
            if let Err(e) = l.validate() {
                return bad("llm", e.to_string());
            }
        }
        let kind = self.strategy.kind.0;
        if kind.uses_model() && self.llm.is_none() {
            return bad(
                "llm",
                format!(
                    "strategy `{}` needs an [llm] section (provider and model)",
                    kind.name()
                ),
            );
        }
        if (self.budget.tokens.is_some() || self.budget.usd.is_some()) && self.llm.is_none() {
            tracing::info!("token and dollar budgets are ignored without an [llm] section");
        }
        Ok(())
    }

    /// Settles `auto` into a concrete strategy, reading environment variables through
    /// `lookup`; returns the choice and why, for the start of the run.
    pub fn settle_strategy(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let kind = self.strategy.kind.0;
        if kind != StrategyKind::Auto {
            if kind.uses_model() {
                if let Some(why) = self.settle_local(lookup) {
                    return format!("strategy {} (as configured): {why}", kind.name());
                }
            }
            return format!("strategy {} (as configured)", kind.name());
        }
        if let Some(why) = self.settle_local(lookup) {
            self.strategy.kind = StrategyKindField(StrategyKind::Llm);
            return format!("strategy llm (auto): {why}");
        }
        let (chosen, why) = match &self.llm {
            None => (
                StrategyKind::Evolution,
                "no [llm] section is configured".to_string(),
            ),
            Some(l) if l.provider == ProviderKind::Local => (
                StrategyKind::Llm,
                "the [llm] provider is the local model server".to_string(),
            ),
            Some(l) if matches!(l.provider, ProviderKind::Mock | ProviderKind::Replay) => (
                StrategyKind::Llm,
                format!("the [llm] provider is {}", l.provider.name()),
            ),
            Some(l) => match l.resolve_key(lookup) {
                Ok(Some(_)) => (
                    StrategyKind::Llm,
                    format!(
                        "{} is set, so {} ({}) proposes candidates",
                        l.key_env_name().unwrap_or_default(),
                        l.model,
                        l.provider.name()
                    ),
                ),
                Ok(None) => (
                    StrategyKind::Llm,
                    format!(
                        "the model server at {} needs no key",
                        l.resolved_base_url().unwrap_or_default()
                    ),
                ),
                Err(_) => (
                    StrategyKind::Evolution,
                    format!(
                        "{} is not set and no local model is installed, so no language model is used (set it to use {}, or install a local model with `scripts/setup.sh --llm`)",
                        l.key_env_name().unwrap_or_default(),
                        l.model
                    ),
                ),
            },
        };
        self.strategy.kind = StrategyKindField(chosen);
        format!("strategy {} (auto): {why}", chosen.name())
    }

    /// No key for the configured network provider, but the local model installed: the
    /// `[llm]` section becomes the local server's (sampling settings kept), and the reason.
    fn settle_local(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let l = self.llm.as_ref()?;
        if !matches!(l.provider, ProviderKind::Openai | ProviderKind::Anthropic)
            || l.resolve_key(lookup).is_ok()
        {
            return None;
        }
        let (_, model) = crate::llm::local::installed(lookup)?;
        let mut local = LlmConfig::new(ProviderKind::Local, "gemma-3-270m");
        local.temperature = l.temperature;
        local.top_p = l.top_p;
        local.max_tokens = l.max_tokens;
        local.samples_per_call = l.samples_per_call;
        local.constrain = l.constrain;
        local.grammar_depth = l.grammar_depth;
        // A 2-core machine answers a propose call in tens of seconds.
        local.timeout_secs = l.timeout_secs.max(600.0);
        local.local = Some(l.local_settings());
        let why = format!(
            "{} is not set, so the local model {} proposes candidates on llama.cpp's server, started for this run",
            l.key_env_name().unwrap_or_default(),
            model.display()
        );
        self.llm = Some(local);
        Some(why)
    }

    /// The settings as the run folder keeps them.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }
}

/// Settings resolved against the space and task: what the loop needs.
#[derive(Debug)]
pub struct Experiment {
    pub settings: Settings,
    pub space: Space,
    pub task: Task,
    pub recipe: Recipe,
    pub input: Shape,
    pub classes: u64,
    pub check: CheckOptions,
}

impl Experiment {
    /// Loads the space, resolves the task and merges the recipe overrides. The task's input
    /// shape comes from the task, or from its data when only the data knows it.
    pub fn resolve(settings: Settings, file: &str) -> Result<Experiment, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            message,
        };
        let space =
            Space::load(&settings.space.name).map_err(|e| invalid("space.name", e.to_string()))?;
        let t = &settings.task;
        for (field, size) in [
            ("task.train_size", t.train_size),
            ("task.valid_size", t.valid_size),
            ("task.test_size", t.test_size),
        ] {
            if size == Some(0) {
                // No training works on no examples, and no score comes from none.
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        let sizes = if t.train_size.is_some() || t.valid_size.is_some() || t.test_size.is_some() {
            let base = Task::resolve(&t.name).map_err(|e| invalid("task.name", e.to_string()))?;
            match &base.source {
                crate::train::task::Source::Synthetic { sizes: s, .. } => Some((
                    t.train_size.unwrap_or(s.0),
                    t.valid_size.unwrap_or(s.1),
                    t.test_size.unwrap_or(s.2),
                )),
                // A look-up has no splits to size: the base config's sizes do not apply.
                crate::train::task::Source::Lookup { .. } => None,
                _ => {
                    return Err(invalid(
                        "task.train_size",
                        "split sizes apply to synthetic tasks only".into(),
                    ))
                }
            }
        } else {
            None
        };
        let task = task_from(&t.name, sizes).map_err(|e| invalid("task.name", e.to_string()))?;
        if let Some(d) = task.lookup() {
            check_lookup_settings(&settings, space.name(), d)
                .map_err(|(field, m)| invalid(field, m))?;
        }
        let recipe = merge_recipe(&task.recipe, &t.recipe)
            .map_err(|e| invalid("task.recipe", e.to_string()))?;
        recipe
            .validate()
            .map_err(|e| invalid(&format!("task.recipe.{}", e.field), e.message))?;
        let (input, classes) = match (task.input, task.classes) {
            (Some(i), Some(c)) => (i, c),
            _ => {
                let d = task
                    .load_raw()
                    .map_err(|e| invalid("task.name", e.to_string()))?;
                (d.input, d.classes)
            }
        };
        let check = CheckOptions {
            limits: settings.space.limits,
            // A look-up has no head to count: the table's cells are what they are.
            classes: task.lookup().is_none().then_some(classes),
            infos: false,
            head: recipe.head,
        };
        Ok(Experiment {
            settings,
            space,
            task,
            recipe,
            input,
            classes,
            check,
        })
    }

    pub fn maximize(&self) -> bool {
        self.settings.objective.direction == Direction::Maximize
    }
}

/// A task by name, with a synthetic task's split sizes (train, valid, test) when given: what
/// the loop and its workers both resolve.
pub fn task_from(name: &str, sizes: Option<(usize, usize, usize)>) -> Result<Task, TaskError> {
    let task = Task::resolve(name)?;
    Ok(match sizes {
        Some((a, b, c)) => match &task.source {
            crate::train::task::Source::Synthetic { .. } => task.with_sizes(a, b, c),
            _ => {
                return Err(TaskError::NotSynthetic {
                    name: name.to_string(),
                })
            }
        },
        None => task,
    })
}

/// Why recipe overrides do not make a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The base recipe does not serialise (a bug, not the user's).
    #[error("{0}")]
    Base(toml::ser::Error),
    /// An override is an unknown field or a value of the wrong type.
    #[error("{}", .0.to_string().trim_end())]
    Override(toml::de::Error),
}

/// The task's recipe with `overrides` laid over it field by field; unknown fields are errors.
fn merge_recipe(base: &Recipe, overrides: &toml::Table) -> Result<Recipe, RecipeError> {
    let mut v = toml::Table::try_from(base).map_err(RecipeError::Base)?;
    for (k, val) in overrides {
        v.insert(k.clone(), val.clone());
    }
    toml::Value::Table(v)
        .try_into::<Recipe>()
        .map_err(RecipeError::Override)
}

/// Checks that a run's settings suit a look-up task on `d`, and that its table is installed.
/// Returns the offending field and why.
fn check_lookup_settings(
    s: &Settings,
    space: &str,
    d: &crate::train::lookup::Dataset,
) -> Result<(), (&'static str, String)> {
    if space != d.space {
        return Err((
            "space.name",
            format!(
                "task nbgraph:{} looks cells up in a table of space {}, not {space}; set space.name = \"{}\"",
                d.name, d.space, d.space
            ),
        ));
    }
    if s.fidelity.successive_halving {
        return Err((
            "fidelity.successive_halving",
            format!("task nbgraph:{} is a look-up with no learning curve to stop early on; successive halving does not apply (set it to false)", d.name),
        ));
    }
    let kind = s.executor.settled(s.parallel);
    if s.parallel > 1 || !matches!(kind, crate::exec::ExecutorKind::Inline) {
        return Err((
            "parallel",
            format!("task nbgraph:{} is evaluated by look-ups in this process, one at a time; use parallel = 1 and the inline executor (archsmith bench runs many searches in parallel)", d.name),
        ));
    }
    crate::train::lookup::Table::shared(d.name).map_err(|e| ("task.name", e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_experiment_parses_and_validates() {
        let s = Settings::load(None).unwrap();
        s.validate("default").unwrap();
        assert_eq!(s.strategy.kind.0, StrategyKind::Auto);
        let round = Settings::from_toml(&s.to_toml(), "round").unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let e = Settings::from_toml("[budget]\nevaluation = 3\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `evaluation`"), "{e}");
        assert!(e.to_string().starts_with("config x.toml"), "{e}");
        let s = Settings::from_toml("[budget]\nevaluations = 0\n", "x.toml").unwrap();
        let e = s.validate("x.toml").unwrap_err().to_string();
        assert_eq!(e, "config x.toml: `budget.evaluations`: must be at least 1");
        let s = Settings::from_toml("[strategy]\nkind = \"llm\"\n", "x.toml").unwrap();
        assert!(s
            .validate("x.toml")
            .unwrap_err()
            .to_string()
            .contains("[llm]"));
        let e = Settings::from_toml("[strategy]\nkind = \"annealing\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("unknown variant `annealing`"), "{e}");
    }

    #[test]
    fn recipe_overrides_merge_over_the_task() {
        let base = Recipe::default();
        let mut t = toml::Table::new();
        t.insert("epochs".into(), toml::Value::Integer(1));
        let r = merge_recipe(&base, &t).unwrap();
        assert_eq!(r.epochs, 1);
        assert_eq!(r.lr, base.lr);
        t.insert("epoch".into(), toml::Value::Integer(1));
        assert!(merge_recipe(&base, &t)
            .unwrap_err()
            .to_string()
            .contains("epoch"));
    }

    #[test]
    fn auto_picks_by_key() {
        let mut s = Settings::load(None).unwrap();
        let why = s.settle_strategy(&|_| None);
        assert_eq!(s.strategy.kind.0, StrategyKind::Evolution);
        assert!(why.contains("OPENAI_API_KEY is not set"), "{why}");
        assert!(why.contains("scripts/setup.sh --llm"), "{why}");
        // With the local model installed (here: two files where ARCHSMITH_LLM_HOME says).
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("bin")).unwrap();
        std::fs::create_dir_all(home.path().join("models")).unwrap();
        std::fs::write(home.path().join("bin/llama-server"), "").unwrap();
        std::fs::write(
            home.path()
                .join("models")
                .join(crate::llm::local::DEFAULT_MODEL_FILE),
            "",
        )
        .unwrap();
        let h = home.path().to_string_lossy().into_owned();
        let mut s = Settings::load(None).unwrap();
        let why = s.settle_strategy(&|v| (v == "ARCHSMITH_LLM_HOME").then(|| h.clone()));
        assert_eq!(s.strategy.kind.0, StrategyKind::Llm);
        assert_eq!(
            s.llm.as_ref().map(|l| l.provider),
            Some(ProviderKind::Local)
        );
        assert!(why.contains("local model"), "{why}");
        let mut s = Settings::load(None).unwrap();
        let why = s.settle_strategy(&|v| (v == "OPENAI_API_KEY").then(|| "sk-x".into()));
        assert_eq!(s.strategy.kind.0, StrategyKind::Llm);
        assert!(why.contains("OPENAI_API_KEY is set"), "{why}");
    }

    #[test]
    fn strategy_names_agree_in_toml_on_the_command_line_and_in_messages() {
        use clap::ValueEnum;
        for k in StrategyKind::value_variants() {
            let clap_name = k.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(clap_name.as_deref(), Some(k.name()));
            assert_eq!(toml::Value::try_from(k).unwrap().as_str(), Some(k.name()));
        }
        assert_eq!(
            StrategyKind::from_str("llm_evolution", false),
            Ok(StrategyKind::LlmEvolution)
        );
    }

    #[test]
    fn rungs() {
        let f = Fidelity {
            successive_halving: true,
            min_epochs: 1,
            eta: 2,
        };
        assert_eq!(f.rungs(8), [1, 2, 4]);
        assert!(Fidelity::default().rungs(8).is_empty());
    }
}
