//! Programs run with libtorch: the seeds written as programs do what the library does (the
//! optimizers' parameter updates over many steps, the activations' values and gradients), and
//! a short evaluation of each kind runs on the CPU, diverging programs failing with a reason,
//! and programs train under bf16 and the time limit as networks do.

use archsmith::space::{parse_one, Node, Space};
use archsmith::train::{FailureReason, Precision, Quiet, Recipe, Task, TrainResult};
use archsmith_torch::program::{
    evaluate_activation, evaluate_optimizer, Activation, Hyper, ProgramEval, ProgramOptimizer,
    Reference, Rule,
};
use archsmith_torch::{TaskData, TrainOptions};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// Torch's generator is global: tests that draw weights or batches from it run one at a time.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn seed(space: &str, name: &str) -> Node {
    let s = Space::load(space).unwrap();
    let seed = s.seed(name).unwrap();
    // Seeds are members of their space.
    s.validate_text(
        &seed.text,
        archsmith::space::Shape::vec(8),
        &Default::default(),
    )
    .unwrap_or_else(|d| panic!("{name}: {d:?}"))
    .0
}

/// A small MLP under `vs`, with weights drawn from `seed`.
fn net(vs: &nn::VarStore, seed: i64) -> impl Module {
    tch::manual_seed(seed);
    let p = vs.root();
    nn::seq()
        .add(nn::linear(&p / "a", 8, 16, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "b", 16, 3, Default::default()))
}

fn batch(step: i64) -> (Tensor, Tensor) {
    tch::manual_seed(1000 + step);
    let x = Tensor::randn([32, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(3, [32], (Kind::Int64, Device::Cpu));
    (x, y)
}

fn loss(m: &impl Module, x: &Tensor, y: &Tensor) -> Tensor {
    m.forward(x)
        .cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
}

fn max_diff(a: &nn::VarStore, b: &nn::VarStore) -> f64 {
    let (va, vb) = (a.variables(), b.variables());
    let mut worst: f64 = 0.0;
    for (k, t) in &va {
        let d = (t - &vb[k]).abs().max().double_value(&[]);
        let scale = t.abs().max().double_value(&[]).max(1.0);
        worst = worst.max(d / scale);
    }
    worst
}

/// Runs `steps` steps of the program and of `reference` (which steps its own store) on the
/// same batches from the same weights, and returns the largest relative difference seen.
fn compare(
    program: &Node,
    hyper: Hyper,
    lr: f64,
    steps: i64,
    reference: &mut dyn FnMut(&nn::VarStore, i64),
    vs_ref: &nn::VarStore,
) -> f64 {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let m = net(&vs, 7);
    vs.copy(vs_ref).unwrap();
    assert_eq!(max_diff(&vs, vs_ref), 0.0);
    let mut opt = ProgramOptimizer::new(
        Rule::compile(program).unwrap(),
        vs.trainable_variables(),
        hyper,
    )
    .unwrap();
    let mut worst: f64 = 0.0;
    for s in 0..steps {
        let (x, y) = batch(s);
        opt.zero_grad();
        loss(&m, &x, &y).backward();
        opt.step(lr).unwrap();
        reference(vs_ref, s);
        worst = worst.max(max_diff(&vs, vs_ref));
    }
    worst
}

fn builtin(
    program: &Node,
    hyper: Hyper,
    lr: f64,
    make: impl FnOnce(&nn::VarStore) -> nn::Optimizer,
) -> f64 {
    let vs_ref = nn::VarStore::new(Device::Cpu);
    let m_ref = net(&vs_ref, 7);
    let mut o = make(&vs_ref);
    let mut step = |_: &nn::VarStore, s: i64| {
        let (x, y) = batch(s);
        o.zero_grad();
        loss(&m_ref, &x, &y).backward();
        o.step();
    };
    compare(program, hyper, lr, 200, &mut step, &vs_ref)
}

const TOL: f64 = 2e-5;

#[test]
fn adam_seed_matches_torch_adam() {
    let _serial = serial();
    let h = Hyper {
        wd: 0.0,
        ..Hyper::default()
    };
    let d = builtin(&seed("optimizer", "adam"), h, 1e-2, |vs| {
        nn::Adam {
            beta1: h.beta1,
            beta2: h.beta2,
            wd: 0.0,
            eps: h.eps,
            amsgrad: false,
        }
        .build(vs, 1e-2)
        .unwrap()
    });
    assert!(d < TOL, "Adam differs by {d}");
}

#[test]
fn adamw_seed_matches_torch_adamw() {
    let _serial = serial();
    let h = Hyper {
        wd: 0.1,
        ..Hyper::default()
    };
    let d = builtin(&seed("optimizer", "adamw"), h, 1e-2, |vs| {
        nn::AdamW {
            beta1: h.beta1,
            beta2: h.beta2,
            wd: h.wd,
            eps: h.eps,
            amsgrad: false,
        }
        .build(vs, 1e-2)
        .unwrap()
    });
    assert!(d < TOL, "AdamW differs by {d}");
}

#[test]
fn sgd_momentum_seed_matches_torch_sgd() {
    let _serial = serial();
    let h = Hyper {
        beta1: 0.9,
        wd: 0.01,
        ..Hyper::default()
    };
    let d = builtin(&seed("optimizer", "sgd_momentum"), h, 5e-2, |vs| {
        nn::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            wd: 0.01,
            nesterov: false,
        }
        .build(vs, 5e-2)
        .unwrap()
    });
    assert!(d < TOL, "SGD differs by {d}");
}

#[test]
fn lion_seed_matches_a_tensor_reference() {
    let _serial = serial();
    let h = Hyper {
        beta1: 0.9,
        beta2: 0.99,
        wd: 0.1,
        eps: 1e-8,
    };
    let lr = 1e-3;
    let vs_ref = nn::VarStore::new(Device::Cpu);
    let m_ref = net(&vs_ref, 7);
    let mut moments: Vec<Tensor> = vs_ref
        .trainable_variables()
        .iter()
        .map(|v| v.zeros_like())
        .collect();
    // Lion as in Chen et al. (2023), Algorithm 2, written with tensors.
    let mut step = |vs: &nn::VarStore, s: i64| {
        let (x, y) = batch(s);
        for mut v in vs.trainable_variables() {
            v.zero_grad();
        }
        loss(&m_ref, &x, &y).backward();
        tch::no_grad(|| {
            for (mut w, m) in vs.trainable_variables().into_iter().zip(moments.iter_mut()) {
                let g = w.grad();
                let c = (&*m * h.beta1 + &g * (1.0 - h.beta1)).sign();
                let update = (c + &w * h.wd) * lr;
                let _ = w.f_sub_(&update).unwrap();
                *m = &*m * h.beta2 + &g * (1.0 - h.beta2);
            }
        });
    };
    let d = compare(&seed("optimizer", "lion"), h, lr, 200, &mut step, &vs_ref);
    assert!(d < TOL, "Lion differs by {d}");
}

fn act_matches(name: &str, f: impl Fn(&Tensor) -> Tensor) {
    let a = Activation::compile(&seed("activation", name)).unwrap();
    tch::manual_seed(3);
    let x = (Tensor::randn([4096], (Kind::Float, Device::Cpu)) * 3.0).set_requires_grad(true);
    let ours = a.forward(&x).unwrap();
    let theirs = f(&x);
    let d = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(d < 1e-5, "{name}: values differ by {d}");
    let go = Tensor::run_backward(&[ours.sum(Kind::Float)], &[&x], false, false)
        .pop()
        .unwrap();
    let gt = Tensor::run_backward(&[theirs.sum(Kind::Float)], &[&x], false, false)
        .pop()
        .unwrap();
    let d = (&go - &gt).abs().max().double_value(&[]);
    assert!(d < 1e-4, "{name}: gradients differ by {d}");
}

#[test]
fn activation_seeds_match_the_library_functions() {
    let _serial = serial();
    act_matches("relu", |x| x.relu());
    act_matches("gelu", |x| x.gelu("none"));
    act_matches("swish", |x| x.silu());
    act_matches("tanh", |x| x.tanh());
}

fn tiny() -> (archsmith_torch::Data, Recipe) {
    let task = Task::resolve("teacher").unwrap().with_sizes(512, 256, 0);
    let data = task.load().unwrap();
    let recipe = Recipe {
        epochs: 2,
        batch_size: 32,
        time_limit_secs: Some(120.0),
        threads: 1,
        ..task.recipe.clone()
    };
    (data, recipe)
}

/// The Adam seed, as an update rule, scored on the CPU over the learning rates `lrs`.
fn adam_on_cpu(data: &archsmith_torch::Data, recipe: &Recipe, lrs: Vec<f64>) -> TrainResult {
    let cfg = ProgramEval {
        lrs,
        ..ProgramEval::default()
    };
    evaluate_optimizer(&seed("optimizer", "adam"), data, recipe, &cfg, Device::Cpu)
}

#[test]
fn short_evaluations_on_the_cpu() {
    let _serial = serial();
    let (data, recipe) = tiny();
    let r = adam_on_cpu(&data, &recipe, vec![1e-3, 1e-2]);
    assert!(r.ok(), "{:?}", r.failure);
    assert!(r.score.unwrap() > 0.4, "adam scored {:?}", r.score);
    assert!(r.recipe.lr == 1e-3 || r.recipe.lr == 1e-2);
    assert_eq!(r.curve.len(), 2);

    let cfg = ProgramEval::default();
    let r = evaluate_activation(
        &seed("activation", "swish"),
        &data,
        &recipe,
        &cfg,
        Device::Cpu,
    );
    assert!(r.ok(), "{:?}", r.failure);
    assert!(r.score.unwrap() > 0.4, "swish scored {:?}", r.score);
}

#[test]
fn diverging_programs_fail_with_their_reason() {
    let _serial = serial();
    let (data, recipe) = tiny();
    // Gradient ascent, a hundred times too fast.
    let up = parse_one("prog(state(), step(mul(-100, mul(lr, g))))")
        .unwrap()
        .node;
    let cfg = ProgramEval {
        lrs: vec![0.1],
        ..ProgramEval::default()
    };
    let r = evaluate_optimizer(&up, &data, &recipe, &cfg, Device::Cpu);
    let f = r.failure.expect("ascent should diverge");
    assert_eq!(f.reason, FailureReason::NonFinite, "{}", f.message);
    assert!(
        f.message.contains("every learning rate failed"),
        "{}",
        f.message
    );
}

/// Trains something with a recipe.
type Trains<'a> = dyn Fn(&Recipe) -> TrainResult + 'a;

/// One epoch of `tiny`'s recipe at precision `p`.
fn one_epoch(recipe: &Recipe, p: Precision) -> Recipe {
    Recipe {
        precision: p,
        max_steps: Some(16),
        ..recipe.clone()
    }
}

#[test]
fn programs_train_under_bf16_as_networks_do() {
    let _serial = serial();
    let (data, recipe) = tiny();
    let (bf16, fp32) = (
        one_epoch(&recipe, Precision::Bf16),
        one_epoch(&recipe, Precision::Fp32),
    );
    let mlp2 = Space::load("mlp")
        .unwrap()
        .seed("mlp2")
        .unwrap()
        .text
        .clone();
    let (node, analysis) = Space::load("mlp")
        .unwrap()
        .validate_text(&mlp2, data.input, &Default::default())
        .unwrap();
    let network = |r: &Recipe| {
        let opts = TrainOptions {
            recipe: r.clone(),
            ..TrainOptions::default()
        };
        archsmith_torch::train(&node, &analysis, &data, &opts, &mut Quiet)
    };
    let on_mlp = ProgramEval {
        lrs: vec![1e-2],
        ..ProgramEval::default()
    };
    let on_candidate = ProgramEval {
        reference: Reference::Candidate {
            space: "mlp".into(),
            text: mlp2.clone(),
        },
        ..on_mlp.clone()
    };
    let adam = seed("optimizer", "adam");
    let swish = seed("activation", "swish");
    let runs: [(&str, &Trains); 4] = [
        ("a network", &network),
        ("adam on the MLP", &|r| {
            evaluate_optimizer(&adam, &data, r, &on_mlp, Device::Cpu)
        }),
        ("adam on a candidate", &|r| {
            evaluate_optimizer(&adam, &data, r, &on_candidate, Device::Cpu)
        }),
        ("swish on the MLP", &|r| {
            evaluate_activation(&swish, &data, r, &on_mlp, Device::Cpu)
        }),
    ];
    for (name, run) in runs {
        let (b, f) = (run(&bf16), run(&fp32));
        assert!(b.ok(), "{name} under bf16: {:?}", b.failure);
        assert!(f.ok(), "{name} under fp32: {:?}", f.failure);
        assert_eq!((b.steps, b.curve.len()), (16, 1), "{name}");
        let (vb, vf) = (b.curve[0].valid_loss, f.curve[0].valid_loss);
        assert!(vb.is_finite(), "{name}: bf16 validation loss {vb}");
        // Rounding to bf16 moves the loss: the precision took effect.
        assert_ne!(vb, vf, "{name}: bf16 and fp32 give the same loss");
        assert!((vb - vf).abs() < 0.1, "{name}: bf16 {vb} vs fp32 {vf}");
    }
}

#[test]
fn programs_stop_within_the_epoch_at_the_time_limit() {
    let _serial = serial();
    let (data, recipe) = tiny();
    let recipe = Recipe {
        time_limit_secs: Some(0.0),
        ..recipe
    };
    let r = adam_on_cpu(&data, &recipe, vec![1e-2]);
    let f = r.failure.expect("a zero time limit should stop training");
    assert_eq!(f.reason, FailureReason::TimeLimit, "{}", f.message);
    // As for networks: the limit is checked after every step, and the partial epoch scored.
    assert_eq!(r.steps, 1);
    assert_eq!(r.curve.len(), 1);
}
