//! The training loop: compile, check budgets, train with the recipe, score on the validation
//! split each epoch, and return a result. Failures (non-finite loss, limits, out of memory,
//! time) are results with a reason, never panics; an observer sees every epoch and may stop
//! training early (for successive halving).

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

enum Stop {
    Fail(Failure),
}

fn classify(e: &TchError) -> Failure {
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
    let params =
        analysis.params + archsmith::space::check::head_params(analysis.output, data.classes);
    let mut res = TrainResult {
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
    if r.threads > 0 {
        tch::set_num_threads(r.threads as i32);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run(node, data, opts, obs, &mut res, start, save_to)
    }));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(Stop::Fail(f))) => res.failure = Some(f),
        Err(p) => res.failure = Some(panic_failure(p)),
    }
    res.wall_seconds = start.elapsed().as_secs_f64();
    res.score = res.curve.last().map(|e| e.valid_score);
    res
}

fn run(
    node: &Node,
    data: &Data,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
    res: &mut TrainResult,
    start: Instant,
    save_to: Option<&std::path::Path>,
) -> Result<(), Stop> {
    let r = &opts.recipe;
    let dev = opts.device;
    let vs = nn::VarStore::new(dev);
    let copts = CompileOptions {
        fuse: archsmith::space::fuse::from_env(r.fuse),
    };
    let net = compile_with(&vs.root(), node, data.input, data.classes, opts.seed, copts).map_err(
        |e| {
            Stop::Fail(Failure {
                reason: match &e {
                    crate::compile::CompileError::Torch { source, .. } => classify(source).reason,
                    _ => FailureReason::Compile,
                },
                message: e.to_string(),
            })
        },
    )?;
    let counted = count_params(&vs);
    debug_assert_eq!(
        counted, res.params,
        "compiled parameters differ from the validator's"
    );
    res.params = counted;
    let torch = |e: TchError| Stop::Fail(classify(&e));
    let mut opt = match r.optimizer {
        Optimizer::Sgd => nn::Sgd {
            momentum: r.momentum,
            dampening: 0.0,
            wd: r.weight_decay,
            nesterov: r.nesterov && r.momentum > 0.0,
        }
        .build(&vs, r.lr),
        Optimizer::AdamW => nn::AdamW {
            wd: r.weight_decay,
            ..Default::default()
        }
        .build(&vs, r.lr),
    }
    .map_err(torch)?;

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
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed_da7a);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut step = 0u64;
    let mut epoch = 0usize;
    let train_start = Instant::now();
    'outer: while step < total {
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
            opt.set_lr(lr);
            let idx = perm.narrow(0, (b as usize * batch) as i64, batch as i64);
            let x = train.x.f_index_select(0, &idx).map_err(torch)?;
            let x = if bf16 { x.to_kind(Kind::BFloat16) } else { x };
            let y = train.y.f_index_select(0, &idx).map_err(torch)?;
            let logits = net.forward(&x, true).map_err(torch)?;
            let loss = logits
                .f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, r.label_smoothing)
                .map_err(torch)?;
            let l = loss.f_double_value(&[]).map_err(torch)?;
            if !l.is_finite() {
                return Err(Stop::Fail(Failure {
                    reason: FailureReason::NonFinite,
                    message: format!("the training loss became {l} at step {}", step + 1),
                }));
            }
            opt.zero_grad();
            loss.f_backward().map_err(torch)?;
            if let Some(c) = r.grad_clip {
                opt.clip_grad_norm(c);
            }
            opt.step();
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
        let (valid_loss, valid_score) = evaluate(&net, &valid, r.eval_batch_size, bf16)?;
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
            return Err(Stop::Fail(Failure {
                reason: FailureReason::NonFinite,
                message: format!("the validation loss became {valid_loss} after epoch {epoch}"),
            }));
        }
        if timed_out {
            return Err(Stop::Fail(Failure {
                reason: FailureReason::TimeLimit,
                message: format!(
                    "stopped after {:.1} s (limit {:.1} s) at step {step} of {total}; the curve so far is kept",
                    start.elapsed().as_secs_f64(),
                    r.time_limit_secs.unwrap_or(0.0)
                ),
            }));
        }
        if obs.epoch(&e) == Flow::Stop {
            res.stopped_early = step < total;
            break 'outer;
        }
    }
    if let Some(p) = save_to {
        if let Err(e) = vs.save(p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot save the trained weights");
        }
    }
    if opts.test {
        let test = data.test.to_device(dev);
        res.test_score = Some(evaluate(&net, &test, r.eval_batch_size, bf16)?.1);
    }
    Ok(())
}

/// Mean loss and accuracy on a split, in evaluation mode.
fn evaluate(net: &Network, s: &Split, batch: usize, bf16: bool) -> Result<(f64, f64), Stop> {
    let torch = |e: TchError| Stop::Fail(classify(&e));
    let n = s.len();
    if n == 0 {
        return Ok((f64::NAN, 0.0));
    }
    let batch = batch.max(1);
    let (mut loss, mut correct) = (0.0, 0i64);
    tch::no_grad(|| -> Result<(), Stop> {
        let mut i = 0;
        while i < n {
            let len = batch.min(n - i);
            let x = s.x.narrow(0, i as i64, len as i64);
            let x = if bf16 { x.to_kind(Kind::BFloat16) } else { x };
            let y = s.y.narrow(0, i as i64, len as i64);
            let logits = net.forward(&x, false).map_err(torch)?;
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
