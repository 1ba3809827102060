//! The compiled network agrees with the validator: parameter counts (head included) and the
//! backbone's output shape, over sampled candidates of every shipped space and every seed.

use archsmith::space::{Analysis, CheckOptions, Head, Limits, Node, Shape, Space};
use archsmith_torch::compile::{compile_with, count_params, CompileOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};

const CLASSES: u64 = 10;

fn opts(limits: Limits) -> CheckOptions {
    opts_with(limits, Head::Positions)
}

fn opts_with(limits: Limits, head: Head) -> CheckOptions {
    CheckOptions {
        limits,
        classes: Some(CLASSES),
        infos: false,
        head,
    }
}

fn small() -> Limits {
    Limits {
        max_params: 2_000_000,
        max_flops: 60_000_000,
        max_activation_bytes: 6 << 20,
    }
}

/// Compiles `node`, checks its parameter count and output shape; returns nothing on success.
fn agree(node: &Node, a: &Analysis, input: Shape) {
    agree_with(node, a, input, Head::Positions)
}

fn agree_with(node: &Node, a: &Analysis, input: Shape, head: Head) {
    let vs = nn::VarStore::new(Device::Cpu);
    let copts = CompileOptions {
        head,
        ..CompileOptions::default()
    };
    let net = compile_with(&vs.root(), node, input, CLASSES, 0, copts)
        .unwrap_or_else(|e| panic!("cannot compile {node}: {e}"));
    assert_eq!(
        count_params(&vs),
        a.total_params(),
        "parameter count differs for {node}"
    );
    let mut dims = vec![2i64];
    dims.extend(input.dims().iter().map(|&d| d as i64));
    let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| net.backbone(&x, true))
        .unwrap_or_else(|e| panic!("forward failed for {node}: {e}"));
    let mut want = vec![2i64];
    want.extend(a.output.dims().iter().map(|&d| d as i64));
    assert_eq!(y.size(), want, "output shape differs for {node}");
    let logits = tch::no_grad(|| net.forward(&x, false)).unwrap();
    assert_eq!(logits.size(), vec![2, CLASSES as i64]);
}

fn sampled(space: &str, input: Shape, n: usize, limits: Limits) {
    sampled_with(space, input, n, limits, Head::Positions)
}

fn sampled_with(space: &str, input: Shape, n: usize, limits: Limits, head: Head) {
    let s = Space::load(space).unwrap();
    let sampler = s.sampler();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for _ in 0..n {
        let (node, a) = s
            .sample_with(&sampler, input, &opts_with(limits, head), &mut rng)
            .unwrap();
        agree_with(&node, &a, input, head);
    }
}

#[test]
fn einspace_samples_match_the_validator() {
    sampled("einspace", Shape::im(3, 32, 32), 200, small());
}

#[test]
fn einspace_samples_on_sequences_match_the_validator() {
    sampled("einspace", Shape::col(32, 8), 100, small());
}

#[test]
fn einspace_samples_match_the_validator_under_einspaces_head() {
    sampled_with("einspace", Shape::col(32, 8), 60, small(), Head::Einspace);
    sampled_with(
        "einspace",
        Shape::im(3, 32, 32),
        20,
        small(),
        Head::Einspace,
    );
}

#[test]
fn nb201_samples_match_the_validator() {
    sampled("nb201", Shape::im(3, 32, 32), 40, Limits::default());
}

#[test]
fn mlp_samples_match_the_validator() {
    sampled("mlp", Shape::vec(32), 200, Limits::default());
}

#[test]
fn every_seed_matches_the_validator() {
    for (space, input) in [
        ("einspace", Shape::im(3, 32, 32)),
        ("nb201", Shape::im(3, 32, 32)),
        ("mlp", Shape::vec(784)),
    ] {
        let s = Space::load(space).unwrap();
        for seed in &s.seeds {
            let a = s
                .check(&seed.node, None, input, &opts(Limits::default()))
                .unwrap_or_else(|d| panic!("seed {} invalid: {d:?}", seed.name));
            agree(&seed.node, &a, input);
        }
    }
    // einspace's head on its sequence seeds: einspace's own parameter counts.
    let s = Space::load("einspace").unwrap();
    let input = Shape::im(3, 32, 32);
    for (name, total) in [("transformer", 4_270_218), ("mlp_mixer", 2_434_698)] {
        let node = &s.seed(name).unwrap().node;
        let a = s
            .check(
                node,
                None,
                input,
                &opts_with(Limits::default(), Head::Einspace),
            )
            .unwrap();
        assert_eq!(a.total_params(), total, "{name}");
        agree_with(node, &a, input, Head::Einspace);
    }
}
