//! The training recipe: optimiser, schedule, regularisation and budgets, as one serde value
//! with defaults, so that a run's config can name it and a result can record it.

use serde::{Deserialize, Serialize};

/// A setting refused, naming its field (`lr`, `executor.lag`, ...) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with (Nesterov) momentum and coupled weight decay.
    Sgd,
    /// AdamW with decoupled weight decay.
    AdamW,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 everywhere.
    Fp32,
    /// bfloat16 activations and matmuls with float32 master weights, norms and loss
    /// (explicit casts; meant for CUDA, where it is fast).
    Bf16,
}

/// How a candidate is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    pub optimizer: Optimizer,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    /// SGD momentum (AdamW's beta1 stays 0.9).
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Linear warm-up from 0 to `lr`, in epochs (fractions allowed); cosine decay to 0 after.
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this value; none when absent.
    pub grad_clip: Option<f64>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub epochs: usize,
    /// Stop after this many optimiser steps (the schedule spans the smaller budget).
    pub max_steps: Option<u64>,
    /// Wall-clock limit for one candidate, in seconds; training stops with a `time_limit`
    /// failure and keeps the curve so far.
    pub time_limit_secs: Option<f64>,
    /// Estimated training memory limit, in MiB, checked before training.
    pub max_memory_mb: u64,
    pub precision: Precision,
    /// Intra-op CPU threads for torch; 0 leaves torch's default. Results on the CPU are
    /// deterministic for a given seed and thread count.
    pub threads: usize,
    /// Compile recognised subtrees (einspace's convolutions and attention) to fused library
    /// kernels: the same function and parameters, faster. `false` runs the tree literally
    /// (for comparison); the environment variable `ARCHSMITH_FUSE=0` also turns it off.
    pub fuse: bool,
    /// How the head reads a sequence: `positions` (averaged over positions, the features to
    /// the classes; the default) or `einspace` (averaged over features, the positions to the
    /// classes, as einspace's `Network`, whose transformer and MLP-Mixer seeds' parameter
    /// counts it gives). Images and vectors are read the same way under both.
    pub head: crate::space::Head,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            optimizer: Optimizer::Sgd,
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            warmup_epochs: 0.5,
            label_smoothing: 0.0,
            grad_clip: Some(5.0),
            batch_size: 128,
            eval_batch_size: 500,
            epochs: 8,
            max_steps: None,
            time_limit_secs: Some(600.0),
            max_memory_mb: 8192,
            precision: Precision::Fp32,
            threads: 0,
            fuse: true,
            head: crate::space::Head::Positions,
        }
    }
}

impl Recipe {
    /// Refuses values with which no training can work, naming the field: checked once when
    /// settings are settled, so that `--dry-run` refuses what a run would.
    pub fn validate(&self) -> Result<(), FieldError> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(FieldError::new(
                    field,
                    format!("{v} must be a positive number"),
                ))
            }
        };
        let in_unit = |field: &'static str, v: f64| {
            if v.is_finite() && (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(FieldError::new(
                    field,
                    format!("{v} must be at least 0 and below 1"),
                ))
            }
        };
        positive("lr", self.lr)?;
        in_unit("momentum", self.momentum)?;
        in_unit("label_smoothing", self.label_smoothing)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(FieldError::new(
                "weight_decay",
                format!("{} must be >= 0", self.weight_decay),
            ));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(FieldError::new(
                "warmup_epochs",
                format!("{} must be >= 0", self.warmup_epochs),
            ));
        }
        if let Some(c) = self.grad_clip {
            positive("grad_clip", c)?;
        }
        if let Some(t) = self.time_limit_secs {
            positive("time_limit_secs", t)?;
        }
        for (field, v) in [
            ("batch_size", self.batch_size as u64),
            ("eval_batch_size", self.eval_batch_size as u64),
            ("epochs", self.epochs as u64),
            ("max_memory_mb", self.max_memory_mb),
            ("max_steps", self.max_steps.unwrap_or(1)),
        ] {
            if v == 0 {
                return Err(FieldError::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The step budget of a training on `n` examples: the batch size (at most `n`), steps
    /// per epoch, total steps (the epochs or `max_steps`, whichever is fewer) and warm-up steps
    /// (at most half the total).
    pub fn steps(&self, n: usize) -> Steps {
        let batch = self.batch_size.clamp(1, n.max(1));
        let per_epoch = (n / batch).max(1) as u64;
        let mut total = per_epoch * self.epochs as u64;
        if let Some(m) = self.max_steps {
            total = total.min(m);
        }
        let warmup = ((self.warmup_epochs * per_epoch as f64) as u64).min(total / 2);
        Steps {
            batch,
            per_epoch,
            total,
            warmup,
        }
    }

    /// The learning rate at `step` of `total`: linear warm-up, then cosine decay to zero.
    pub fn lr_at(&self, step: u64, total: u64, warmup: u64) -> f64 {
        if warmup > 0 && step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let t = (step - warmup.min(step)) as f64 / span;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields_and_unknown_fields_fail() {
        let r: Recipe = serde_json::from_str(r#"{"lr": 0.1, "optimizer": "adamw"}"#).unwrap();
        assert_eq!(r.lr, 0.1);
        assert_eq!(r.optimizer, Optimizer::AdamW);
        assert_eq!(r.batch_size, Recipe::default().batch_size);
        let e = serde_json::from_str::<Recipe>(r#"{"learning_rate": 0.1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn settings_that_cannot_train_are_refused_by_name() {
        Recipe::default().validate().unwrap();
        type Spoil = fn(&mut Recipe);
        let cases: [(&str, Spoil); 6] = [
            ("batch_size", |r| r.batch_size = 0),
            ("epochs", |r| r.epochs = 0),
            ("lr", |r| r.lr = f64::NAN),
            ("momentum", |r| r.momentum = 1.5),
            ("max_steps", |r| r.max_steps = Some(0)),
            ("grad_clip", |r| r.grad_clip = Some(-1.0)),
        ];
        for (field, spoil) in cases {
            let mut r = Recipe::default();
            spoil(&mut r);
            assert_eq!(r.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let r = Recipe::default();
        assert!(r.lr_at(0, 100, 10) < r.lr_at(9, 100, 10));
        assert!((r.lr_at(9, 100, 10) - r.lr).abs() < 1e-12);
        assert!((r.lr_at(10, 100, 10) - r.lr).abs() < 1e-12);
        assert!(r.lr_at(55, 100, 10) < r.lr * 0.6);
        assert!(r.lr_at(99, 100, 10) < r.lr * 0.01);
    }
}

/// A training's step budget, from [`Recipe::steps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    pub batch: usize,
    pub per_epoch: u64,
    pub total: u64,
    pub warmup: u64,
}
