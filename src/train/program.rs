//! How programs (activation functions, update rules) are scored, as settings: the reference
//! network, the learning-rate grid, the hyperparameters an update rule reads; and the
//! constants of the programs' semantics, which the space's descriptions quote and the
//! training crate (`archsmith-torch`) computes with.

use super::recipe::Recipe;
use serde::{Deserialize, Serialize};

/// Denominators closer to zero than this are moved to it, keeping their sign.
pub const SAFE_DENOMINATOR: f64 = 1e-12;
/// `log` adds this to the absolute value.
pub const LOG_EPS: f64 = 1e-6;
/// `exp` clamps its argument to at most this.
pub const EXP_MAX: f64 = 30.0;

/// The hyperparameters an update rule reads (besides `lr`, which follows the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hyper {
    pub beta1: f64,
    pub beta2: f64,
    pub wd: f64,
    pub eps: f64,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            beta1: 0.9,
            beta2: 0.999,
            wd: 0.01,
            eps: 1e-8,
        }
    }
}

/// A hyperparameter outside the range the update rules' semantics assume.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum HyperError {
    /// A beta outside [0, 1].
    #[error("{name} must lie in [0, 1], not {value}")]
    Beta { name: &'static str, value: f64 },
    /// `wd` or `eps` negative or not finite.
    #[error("{name} must be a finite number >= 0, not {value}")]
    Negative { name: &'static str, value: f64 },
}

impl Hyper {
    /// The betas lie in [0, 1] and the rest are not negative: the sign analysis that spares
    /// `abs` and `copysign` kernels relies on it.
    pub fn check(&self) -> Result<(), HyperError> {
        for (name, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(HyperError::Beta { name, value });
            }
        }
        for (name, value) in [("wd", self.wd), ("eps", self.eps)] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(HyperError::Negative { name, value });
            }
        }
        Ok(())
    }
}

/// The network a program is scored on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Reference {
    /// A multilayer perceptron on the flattened input with these hidden widths; the
    /// activation under test (or ReLU, for update rules) follows every hidden layer.
    Mlp { hidden: Vec<u64> },
    /// A candidate architecture of a space (for update rules only), e.g. a seed.
    Candidate { space: String, text: String },
}

impl Default for Reference {
    fn default() -> Self {
        Reference::Mlp {
            hidden: vec![64, 64],
        }
    }
}

/// How programs are scored: the reference network, the learning-rate grid, the
/// hyperparameters, and the budget (the task's recipe unless given).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramEval {
    pub reference: Reference,
    /// Learning rates tried per program; the best validation score wins. Empty: for update
    /// rules [`OPTIMIZER_LRS`], for activations the recipe's learning rate.
    pub lrs: Vec<f64>,
    pub hyper: Hyper,
    /// The budget and schedule; `None` takes the task's recipe.
    pub recipe: Option<Recipe>,
    /// A training loss above this many times the first step's loss (or above 1e4) counts as
    /// divergence.
    pub explode: f64,
    pub seed: u64,
}

/// The default learning-rate grid for update rules: a decade apart, as in the Lion search's
/// per-program tuning.
pub const OPTIMIZER_LRS: &[f64] = &[1e-4, 1e-3, 1e-2, 1e-1];

impl Default for ProgramEval {
    fn default() -> Self {
        ProgramEval {
            reference: Reference::default(),
            lrs: Vec::new(),
            hyper: Hyper::default(),
            recipe: None,
            explode: 100.0,
            seed: 0,
        }
    }
}

/// The scoring of programs a run uses: the defaults, with the run's seed.
pub fn program_eval(seed: u64) -> ProgramEval {
    ProgramEval {
        seed,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Form;

    /// The text the model and the user read says what the trainer computes.
    #[test]
    fn the_forms_rules_quote_the_semantics_constants() {
        let rule = |f: Form| f.spec().rule;
        assert!(rule(Form::Div).contains(&format!("{SAFE_DENOMINATOR:e}")));
        assert!(rule(Form::Log).contains(&format!("{LOG_EPS:e}")));
        assert!(rule(Form::Exp).contains(&format!("{EXP_MAX}")));
    }
}
