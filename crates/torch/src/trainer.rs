//! The training loop, one for networks and programs: compile, check budgets, train with the
//! recipe, score on the validation split each epoch, and return a result. Failures (non-finite
//! loss, limits, out of memory, time) are results with a reason, never panics; an observer sees
//! every epoch and may stop training early (for successive halving).
//!
//! The loop ([`fit`]) is generic over what it trains, a [`Model`] giving logits for a batch,
//! and over what steps it, a [`Step`]: a compiled candidate with one of tch's optimizers
//! ([`train`]), or a reference network with an activation or an update rule under test
//! ([`crate::program`]). Both get the same precision, time limit, divergence checks and
//! failure classification.

use crate::compile::{compile_with, count_params, CompileOptions, Network};
use crate::data::{Data, Split};
use crate::device::device_name;
use archsmith::space::{Analysis, Node};
use archsmith::train::recipe::{Optimizer, Precision, Recipe};
pub use archsmith::train::{
    Epoch, Failure, FailureReason, Flow, Observer, OnEpoch, Quiet, TrainResult,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, TchError, Tensor};

/// How one candidate is trained.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub recipe: Recipe,
    /// Seeds the initialisation and the shuffling.
    pub seed: u64,
    pub device: Device,
    /// Largest parameter count (head included) a candidate may have.
    pub max_params: u64,
    /// Score the test split at the end too.
    pub test: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            recipe: Recipe::default(),
            seed: 0,
            device: Device::Cpu,
            max_params: archsmith::space::Limits::default().max_params,
            test: false,
        }
    }
}

/// What the loop trains: logits for a batch of inputs.
pub trait Model {
    /// Float32 (or float64) logits for `x`; `train` selects training behaviour (batch
    /// statistics in BatchNorm). Under mixed precision `x` is bf16.
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError>;
}

impl Model for Network {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        self.forward(x, train)
    }
}

impl<F> Model for F
where
    F: Fn(&Tensor, bool) -> Result<Tensor, TchError>,
{
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        self(x, train)
    }
}

/// What steps the parameters once their gradients are in: tch's optimizers, or an update rule
/// ([`crate::program::ProgramOptimizer`]).
pub trait Step {
    /// Clears the gradients before the backward pass.
    fn zero_grad(&mut self);
    /// Scales the gradients so that their global norm is at most `max`.
    fn clip_grad_norm(&mut self, max: f64) -> Result<(), TchError>;
    /// Updates the parameters from their gradients at learning rate `lr`.
    fn step(&mut self, lr: f64) -> Result<(), TchError>;
}

impl Step for nn::Optimizer {
    fn zero_grad(&mut self) {
        nn::Optimizer::zero_grad(self)
    }

    fn clip_grad_norm(&mut self, max: f64) -> Result<(), TchError> {
        nn::Optimizer::clip_grad_norm(self, max);
        Ok(())
    }

    fn step(&mut self, lr: f64) -> Result<(), TchError> {
        self.set_lr(lr);
        nn::Optimizer::step(self);
        Ok(())
    }
}

/// When a training loss counts as divergence, beyond not being finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// Only a loss that is not finite (networks).
    NonFinite,
    /// Also a loss above this many times the first step's (and above 1e4). The messages name
    /// the learning rate, which a program's grid varies.
    Explode(f64),
}

impl Divergence {
    /// Fails the training when the loss `l` of step `step` (1-based, at learning rate `lr`)
    /// diverged; `first` is the first step's loss.
    fn check(self, l: f64, first: f64, step: u64, lr: f64) -> Result<(), Failure> {
        let message = match self {
            Divergence::NonFinite if !l.is_finite() => {
                format!("the training loss became {l} at step {step}")
            }
            Divergence::Explode(_) if !l.is_finite() => {
                format!("the training loss became {l} at step {step}, lr {lr:.3e}")
            }
            Divergence::Explode(k) if l > (first * k).max(1e4) => format!(
                "the training loss exploded to {l:.3e} at step {step} (first step {first:.3}), lr {lr:.3e}"
            ),
            _ => return Ok(()),
        };
        Err(Failure {
            reason: FailureReason::NonFinite,
            message,
        })
    }
}

/// How [`fit`] runs, beyond the model and the optimizer.
#[derive(Clone, Copy, Debug)]
pub struct Fit<'a> {
    pub recipe: &'a Recipe,
    /// Seeds the shuffling.
    pub seed: u64,
    pub device: Device,
    pub divergence: Divergence,
}

/// Estimated bytes of training memory: weights, gradients and optimiser state, plus the
/// activations of one batch kept for the backward pass (twice, for their gradients).
pub fn memory_estimate(analysis: &Analysis, recipe: &Recipe) -> u64 {
    let states = match recipe.optimizer {
        Optimizer::Sgd => 1,
        Optimizer::AdamW => 2,
    };
    let p = analysis.total_params() * 4 * (2 + states);
    let act = analysis.activation_bytes * recipe.batch_size as u64 * 2;
    let act = match recipe.precision {
        Precision::Fp32 => act,
        Precision::Bf16 => act / 2,
    };
    p + act
}

/// A torch error as a failure: out of memory, or another runtime error, with the message's
/// first line.
pub(crate) fn classify(e: &TchError) -> Failure {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("").to_string();
    let oom = msg.contains("out of memory") || msg.contains("CUDA out of memory");
    Failure {
        reason: if oom {
            FailureReason::OutOfMemory
        } else {
            FailureReason::Runtime
        },
        message: first,
    }
}

fn panic_failure(p: Box<dyn std::any::Any + Send>) -> Failure {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic in torch".into());
    classify(&TchError::Torch(msg))
}

/// Runs a training, `body`, on `res`: sets the recipe's thread count, keeps a failure (or a
/// panic in torch, as a failure) in the result, and settles its time and score.
pub(crate) fn guarded(
    mut res: TrainResult,
    start: Instant,
    recipe: &Recipe,
    body: impl FnOnce(&mut TrainResult) -> Result<(), Failure>,
) -> TrainResult {
    if recipe.threads > 0 {
        tch::set_num_threads(recipe.threads as i32);
    }
    match catch_unwind(AssertUnwindSafe(|| body(&mut res))) {
        Ok(Ok(())) => {}
        Ok(Err(f)) => res.failure = Some(f),
        Err(p) => res.failure = Some(panic_failure(p)),
    }
    res.wall_seconds = start.elapsed().as_secs_f64();
    res.score = res.curve.last().map(|e| e.valid_score);
    res
}

/// Trains the validated candidate `node` (with its `analysis` for `data.input` and
/// `data.classes`) and scores it.
pub fn train(
    node: &Node,
    analysis: &Analysis,
    data: &Data,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
) -> TrainResult {
    train_saving(node, analysis, data, opts, obs, None)
}

/// As [`train`], and when `save_to` is given and training did not fail, saves the trained
/// weights there (tch `VarStore::save`). A failed save is logged, not a failed training.
pub fn train_saving(
    node: &Node,
    analysis: &Analysis,
    data: &Data,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
    save_to: Option<&std::path::Path>,
) -> TrainResult {
    let start = Instant::now();
    let r = &opts.recipe;
    let params = analysis.params
        + archsmith::space::check::head_params(analysis.output, data.classes, r.head);
    let res = TrainResult {
        candidate: node.to_string(),
        hash: node.hash_hex(),
        task: data.name.clone(),
        metric: "accuracy".into(),
        score: None,
        test_score: None,
        curve: Vec::new(),
        params,
        flops: analysis.flops,
        steps: 0,
        wall_seconds: 0.0,
        steps_per_second: 0.0,
        device: device_name(opts.device),
        seed: opts.seed,
        stopped_early: false,
        failure: None,
        recipe: r.clone(),
    };
    let fail = |mut res: TrainResult, reason, message: String| {
        res.failure = Some(Failure { reason, message });
        res.wall_seconds = start.elapsed().as_secs_f64();
        res
    };
    if analysis.input != data.input {
        return fail(
            res,
            FailureReason::Compile,
            format!(
                "the candidate was validated for input {}, but the data's examples are {}",
                analysis.input, data.input
            ),
        );
    }
    if params > opts.max_params {
        return fail(
            res,
            FailureReason::ParamLimit,
            format!(
                "{params} parameters exceed the limit of {}",
                opts.max_params
            ),
        );
    }
    let mem = memory_estimate(analysis, r);
    if mem > r.max_memory_mb << 20 {
        return fail(
            res,
            FailureReason::MemoryLimit,
            format!(
                "estimated training memory {} MiB (batch {}) exceeds the limit of {} MiB",
                mem >> 20,
                r.batch_size,
                r.max_memory_mb
            ),
        );
    }
    guarded(res, start, r, |res| {
        run(node, data, opts, obs, res, start, save_to)
    })
}

/// Compiles the candidate, builds the recipe's optimizer, trains, then saves the weights and
/// scores the test split when asked.
fn run(
    node: &Node,
    data: &Data,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
    res: &mut TrainResult,
    start: Instant,
    save_to: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let r = &opts.recipe;
    let dev = opts.device;
    let vs = nn::VarStore::new(dev);
    let copts = CompileOptions {
        fuse: archsmith::space::fuse::from_env(r.fuse),
        head: r.head,
    };
    let net = compile_with(&vs.root(), node, data.input, data.classes, opts.seed, copts).map_err(
        |e| Failure {
            reason: match &e {
                crate::compile::CompileError::Torch { source, .. } => classify(source).reason,
                _ => FailureReason::Compile,
            },
            message: e.to_string(),
        },
    )?;
    let counted = count_params(&vs);
    debug_assert_eq!(
        counted, res.params,
        "compiled parameters differ from the validator's"
    );
    res.params = counted;
    let mut opt = optimizer(&vs, r).map_err(|e| classify(&e))?;
    let fit_opts = Fit {
        recipe: r,
        seed: opts.seed,
        device: dev,
        divergence: Divergence::NonFinite,
    };
    fit(&net, &mut opt, data, &fit_opts, obs, res, start)?;
    if let Some(p) = save_to {
        if let Err(e) = vs.save(p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot save the trained weights");
        }
    }
    if opts.test {
        let test = data.test.to_device(dev);
        let bf16 = r.precision == Precision::Bf16;
        res.test_score = Some(evaluate(&net, &test, r.eval_batch_size, bf16)?.1);
    }
    Ok(())
}

/// The recipe's optimizer over the trainable variables of `vs`.
pub(crate) fn optimizer(vs: &nn::VarStore, r: &Recipe) -> Result<nn::Optimizer, TchError> {
    match r.optimizer {
        Optimizer::Sgd => nn::Sgd {
            momentum: r.momentum,
            dampening: 0.0,
            wd: r.weight_decay,
            nesterov: r.nesterov && r.momentum > 0.0,
        }
        .build(vs, r.lr),
        Optimizer::AdamW => nn::AdamW {
            wd: r.weight_decay,
            ..Default::default()
        }
        .build(vs, r.lr),
    }
}

/// Trains `model` with `opt` on `data`'s training split for the recipe's steps, scoring the
/// validation split after every epoch. Fills in `res`'s curve, steps and speed; `start` is
/// when the training began, for the time limit.
pub fn fit(
    model: &dyn Model,
    opt: &mut dyn Step,
    data: &Data,
    f: &Fit<'_>,
    obs: &mut dyn Observer,
    res: &mut TrainResult,
    start: Instant,
) -> Result<(), Failure> {
    let r = f.recipe;
    let dev = f.device;
    let torch = |e: TchError| classify(&e);
    let train = data.train.to_device(dev);
    let valid = data.valid.to_device(dev);
    let n = train.len();
    let archsmith::train::recipe::Steps {
        batch,
        per_epoch,
        total,
        warmup,
    } = r.steps(n);
    let bf16 = r.precision == Precision::Bf16;
    let mut rng = ChaCha8Rng::seed_from_u64(f.seed ^ 0x5eed_da7a);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut step = 0u64;
    let mut epoch = 0usize;
    let mut first_loss = None;
    let train_start = Instant::now();
    while step < total {
        epoch += 1;
        order.shuffle(&mut rng);
        let perm = Tensor::from_slice(&order).to_device(dev);
        let (mut loss_sum, mut loss_n) = (0.0, 0usize);
        let mut lr = r.lr;
        let mut timed_out = false;
        for b in 0..per_epoch {
            if step >= total {
                break;
            }
            lr = r.lr_at(step, total, warmup);
            let idx = perm.narrow(0, (b as usize * batch) as i64, batch as i64);
            let x = train.x.f_index_select(0, &idx).map_err(torch)?;
            let x = if bf16 {
                x.f_to_kind(Kind::BFloat16).map_err(torch)?
            } else {
                x
            };
            let y = train.y.f_index_select(0, &idx).map_err(torch)?;
            let logits = model.logits(&x, true).map_err(torch)?;
            let loss = logits
                .f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, r.label_smoothing)
                .map_err(torch)?;
            let l = loss.f_double_value(&[]).map_err(torch)?;
            let first = *first_loss.get_or_insert(l);
            f.divergence.check(l, first, step + 1, lr)?;
            opt.zero_grad();
            loss.f_backward().map_err(torch)?;
            if let Some(c) = r.grad_clip {
                opt.clip_grad_norm(c).map_err(torch)?;
            }
            opt.step(lr).map_err(torch)?;
            step += 1;
            res.steps = step;
            loss_sum += l;
            loss_n += 1;
            obs.step(step, total, l);
            if let Some(limit) = r.time_limit_secs {
                if start.elapsed().as_secs_f64() > limit {
                    timed_out = true;
                    break;
                }
            }
        }
        let (valid_loss, valid_score) = evaluate(model, &valid, r.eval_batch_size, bf16)?;
        let e = Epoch {
            epoch,
            steps: step,
            train_loss: loss_sum / loss_n.max(1) as f64,
            valid_loss,
            valid_score,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        };
        res.curve.push(e.clone());
        res.steps_per_second = step as f64 / train_start.elapsed().as_secs_f64().max(1e-9);
        if !valid_loss.is_finite() {
            return Err(Failure {
                reason: FailureReason::NonFinite,
                message: format!("the validation loss became {valid_loss} after epoch {epoch}"),
            });
        }
        if timed_out {
            return Err(Failure {
                reason: FailureReason::TimeLimit,
                message: format!(
                    "stopped after {:.1} s (limit {:.1} s) at step {step} of {total}; the curve so far is kept",
                    start.elapsed().as_secs_f64(),
                    r.time_limit_secs.unwrap_or(0.0)
                ),
            });
        }
        if obs.epoch(&e) == Flow::Stop {
            res.stopped_early = step < total;
            break;
        }
    }
    Ok(())
}

/// Mean loss and accuracy of `model` on a split, in evaluation mode, in batches of `batch`.
pub fn evaluate(
    model: &dyn Model,
    s: &Split,
    batch: usize,
    bf16: bool,
) -> Result<(f64, f64), Failure> {
    let torch = |e: TchError| classify(&e);
    let n = s.len();
    if n == 0 {
        return Ok((f64::NAN, 0.0));
    }
    let batch = batch.max(1);
    let (mut loss, mut correct) = (0.0, 0i64);
    tch::no_grad(|| -> Result<(), Failure> {
        let mut i = 0;
        while i < n {
            let len = batch.min(n - i);
            let x = s.x.narrow(0, i as i64, len as i64);
            let x = if bf16 {
                x.f_to_kind(Kind::BFloat16).map_err(torch)?
            } else {
                x
            };
            let y = s.y.narrow(0, i as i64, len as i64);
            let logits = model.logits(&x, false).map_err(torch)?;
            let l = logits
                .f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0)
                .map_err(torch)?;
            loss += l.f_double_value(&[]).map_err(torch)?;
            let hit = logits
                .f_argmax(-1, false)
                .and_then(|p| p.f_eq_tensor(&y))
                .and_then(|h| h.f_sum(Kind::Int64))
                .map_err(torch)?;
            correct += hit.f_int64_value(&[]).map_err(torch)?;
            i += len;
        }
        Ok(())
    })?;
    Ok((loss / n as f64, correct as f64 / n as f64))
}
