//! Training on CPU: seeds learn the synthetic tasks, the image task separates convolutions
//! from a plain MLP, training is deterministic per seed, failures come back as results, and
//! the early-stopping hook stops training.

use archsmith::space::{Analysis, CheckOptions, Limits, Node, Space};
use archsmith::train::synth::Synth;
use archsmith::train::task::{Metric, Source};
use archsmith::train::{FailureReason, Flow, OnEpoch, Optimizer, Quiet, Recipe, Task, TrainResult};
use archsmith_torch::{train, Data, TaskData, TrainOptions};
use std::time::Instant;

fn textures(size: u64, n: usize) -> Data {
    let mut d = Data::from_raw(&Synth::Textures { size }.data("textures", (n, 256, 256), 1));
    d.normalise();
    d
}

fn check(space: &str, text: &str, data: &Data) -> (Node, Analysis) {
    let s = Space::load(space).unwrap();
    let opts = CheckOptions {
        limits: Limits::default(),
        classes: Some(data.classes),
        infos: false,
        head: Default::default(),
    };
    s.validate_text(text, data.input, &opts)
        .unwrap_or_else(|d| panic!("{text} is invalid: {d:?}"))
}

fn recipe(epochs: usize, lr: f64) -> Recipe {
    Recipe {
        epochs,
        lr,
        batch_size: 32,
        warmup_epochs: 0.3,
        threads: 2,
        ..Recipe::default()
    }
}

fn run(space: &str, text: &str, data: &Data, recipe: Recipe, seed: u64) -> TrainResult {
    let (node, a) = check(space, text, data);
    let t = Instant::now();
    let opts = TrainOptions {
        recipe,
        seed,
        test: true,
        ..TrainOptions::default()
    };
    let r = train(&node, &a, data, &opts, &mut Quiet);
    eprintln!(
        "{space} {}: score {:?} test {:?} in {:.1}s ({:.1} steps/s) failure {:?}",
        archsmith::space::node::abbreviate(text, 60),
        r.score,
        r.test_score,
        t.elapsed().as_secs_f64(),
        r.steps_per_second,
        r.failure
    );
    r
}

fn seed_text(name: &str) -> String {
    Space::load("einspace")
        .unwrap()
        .seed(name)
        .unwrap()
        .text
        .clone()
}

fn adamw(epochs: usize, lr: f64) -> Recipe {
    Recipe {
        optimizer: Optimizer::AdamW,
        weight_decay: 0.01,
        ..recipe(epochs, lr)
    }
}

/// Each einspace seed learns the texture task (4 classes, chance 0.25) in a few dozen steps.
/// Small images keep the convolutional seeds fast; the mixer's token mixing is sized for 64
/// patches, so it gets 32x32.
fn seed_learns(name: &str, size: u64, recipe: Recipe) {
    let data = textures(size, 384);
    let r = run("einspace", &seed_text(name), &data, recipe, 0);
    assert!(r.ok(), "{name}: {:?}", r.failure);
    let score = r.score.unwrap();
    assert!(
        score > 0.4,
        "{name} scored {score}, not clearly above chance (0.25; 0.4 is over five standard errors above it on 256 examples)"
    );
}

#[test]
fn resnet18_cifar_seed_learns() {
    seed_learns("resnet18_cifar", 8, recipe(3, 0.05));
}

#[test]
fn wideresnet16_4_seed_learns() {
    seed_learns("wideresnet16_4", 8, recipe(3, 0.05));
}

#[test]
fn vit_seed_learns() {
    seed_learns("vit", 16, adamw(8, 3e-3));
}

#[test]
fn mlp_mixer_seed_learns() {
    seed_learns("mlp_mixer", 32, adamw(3, 2e-3));
}

const CONV: &str = "seq(route(im2col(3,1,1), linear(32), col2im), norm, leakyrelu, \
                    route(im2col(3,2,1), linear(64), col2im), norm, leakyrelu)";

#[test]
fn the_texture_task_separates_convolutions_from_an_mlp() {
    let data = textures(16, 1024);
    let conv = run("einspace", CONV, &data, recipe(6, 0.05), 0);
    let flat = data.flattened();
    let mlp = run(
        "mlp",
        "seq(linear(256), relu, linear(256), relu)",
        &flat,
        recipe(6, 0.05),
        0,
    );
    let (c, m) = (conv.score.unwrap(), mlp.score.unwrap());
    assert!(c > 0.8, "the convolution scored only {c}");
    assert!(c > m + 0.2, "conv {c} is not clearly above the MLP {m}");
}

#[test]
fn training_is_deterministic_on_the_cpu() {
    let data = textures(16, 256);
    let a = run("einspace", CONV, &data, recipe(2, 0.05), 7);
    let b = run("einspace", CONV, &data, recipe(2, 0.05), 7);
    assert_eq!(a.curve.len(), 2);
    for (x, y) in a.curve.iter().zip(&b.curve) {
        assert_eq!(x.train_loss, y.train_loss);
        assert_eq!(x.valid_loss, y.valid_loss);
        assert_eq!(x.valid_score, y.valid_score);
    }
    assert_eq!(a.test_score, b.test_score);
    let c = run("einspace", CONV, &data, recipe(2, 0.05), 8);
    assert_ne!(a.curve[0].train_loss, c.curve[0].train_loss);
}

fn teacher() -> Data {
    let mut d = Data::from_raw(&Synth::Teacher { dim: 32 }.data("teacher", (256, 64, 64), 3));
    d.normalise();
    d
}

const MLP: &str = "seq(linear(64), relu, linear(64), relu)";

#[test]
fn a_huge_learning_rate_fails_with_a_non_finite_loss() {
    let r = run(
        "mlp",
        MLP,
        &teacher(),
        Recipe {
            lr: 1e12,
            grad_clip: None,
            ..recipe(5, 0.0)
        },
        0,
    );
    let f = r.failure.expect("training should fail");
    assert_eq!(f.reason, FailureReason::NonFinite, "{}", f.message);
    assert!(f.message.contains("loss"), "{}", f.message);
}

#[test]
fn limits_fail_before_training() {
    let data = teacher();
    let (node, a) = check("mlp", MLP, &data);
    let opts = TrainOptions {
        recipe: recipe(1, 0.05),
        max_params: 100,
        ..TrainOptions::default()
    };
    let r = train(&node, &a, &data, &opts, &mut Quiet);
    assert_eq!(r.failure.unwrap().reason, FailureReason::ParamLimit);
    assert_eq!(r.steps, 0);
    let opts = TrainOptions {
        recipe: Recipe {
            max_memory_mb: 0,
            ..recipe(1, 0.05)
        },
        ..TrainOptions::default()
    };
    let r = train(&node, &a, &data, &opts, &mut Quiet);
    assert_eq!(r.failure.unwrap().reason, FailureReason::MemoryLimit);
}

#[test]
fn the_time_limit_keeps_the_partial_curve() {
    let r = run(
        "mlp",
        MLP,
        &teacher(),
        Recipe {
            time_limit_secs: Some(0.0),
            ..recipe(5, 0.05)
        },
        0,
    );
    assert_eq!(r.failure.unwrap().reason, FailureReason::TimeLimit);
    assert_eq!(r.steps, 1);
    assert_eq!(r.curve.len(), 1);
    assert!(r.score.is_some());
}

#[test]
fn the_epoch_hook_stops_training_early() {
    let data = teacher();
    let (node, a) = check("mlp", MLP, &data);
    let opts = TrainOptions {
        recipe: adamw(6, 2e-3),
        ..TrainOptions::default()
    };
    let mut seen = Vec::new();
    let mut hook = OnEpoch(|e: &archsmith::train::Epoch| {
        seen.push(e.valid_score);
        if e.epoch == 2 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    let r = train(&node, &a, &data, &opts, &mut hook);
    assert!(r.ok());
    assert!(r.stopped_early);
    assert_eq!(r.curve.len(), 2);
    assert_eq!(seen.len(), 2);
    assert_eq!(r.steps, 2 * (256 / 32));
}

#[test]
fn step_budget_and_bf16_precision() {
    let r = run(
        "mlp",
        MLP,
        &teacher(),
        Recipe {
            max_steps: Some(5),
            precision: archsmith::train::Precision::Bf16,
            ..adamw(10, 2e-3)
        },
        0,
    );
    assert!(r.ok(), "{:?}", r.failure);
    assert_eq!(r.steps, 5);
    assert_eq!(r.curve.len(), 1);
    assert!(r.curve[0].valid_loss.is_finite());
}

#[test]
fn the_vector_and_sequence_tasks_are_learnable() {
    let t = Task::resolve("teacher").unwrap().with_sizes(1024, 256, 256);
    assert_eq!(t.metric, Metric::Accuracy);
    assert!(matches!(t.source, Source::Synthetic { .. }));
    let data = t.load().unwrap();
    let r = run(
        "mlp",
        "seq(linear(128), relu, linear(128), relu)",
        &data,
        adamw(8, 3e-3),
        0,
    );
    assert!(r.score.unwrap() > 0.6, "{:?}", r.score);
}

#[test]
fn cuda_trains_when_present() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: CUDA is not available");
        return;
    }
    let data = teacher();
    let (node, a) = check("mlp", MLP, &data);
    let opts = TrainOptions {
        recipe: Recipe {
            precision: archsmith::train::Precision::Bf16,
            ..adamw(2, 2e-3)
        },
        device: tch::Device::Cuda(0),
        ..TrainOptions::default()
    };
    let r = train(&node, &a, &data, &opts, &mut Quiet);
    assert!(r.ok(), "{:?}", r.failure);
    assert_eq!(r.device, "cuda:0");
}
