//! The fused network is the unfused one, computed faster: over the seeds and hundreds of
//! sampled einspace candidates, compiling with and without fusion from the same seed gives the
//! same variables (names, shapes, initial values), the same logits and the same gradients, and
//! weights saved from one load into the other. The comparison runs in float64, where the two
//! summation orders agree to about 1e-12, so a tolerance of 1e-6 would catch any mapping error
//! (a transposed kernel, a wrong scale) however small its effect; float32 is checked too.

use archsmith::space::{fuse, CheckOptions, Limits, Node, Shape, Space};
use archsmith_torch::compile::{compile_with, count_params, CompileOptions, Network};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

const CLASSES: u64 = 10;

fn build(node: &Node, input: Shape, fuse: bool) -> (nn::VarStore, Network) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = compile_with(
        &vs.root(),
        node,
        input,
        CLASSES,
        7,
        CompileOptions::with_fuse(fuse),
    )
    .unwrap_or_else(|e| panic!("cannot compile {node} (fuse {fuse}): {e}"));
    (vs, net)
}

/// The difference's norm relative to the reference's (absolute below a norm of 1e-6, where
/// a gradient is numerically zero).
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).norm().double_value(&[]);
    let scale = b.norm().double_value(&[]).max(1e-6);
    d / scale
}

/// Initialisation and the test inputs draw from torch's one global generator; a draw in
/// another test thread between two compilations would shift it. Each check holds this lock.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Forward (train mode, so BatchNorm uses batch statistics) and backward of a fixed random
/// projection of the logits; returns the logits and every trainable variable's gradient.
fn run(
    vs: &nn::VarStore,
    net: &Network,
    x: &Tensor,
    proj: &Tensor,
) -> (Tensor, BTreeMap<String, Tensor>) {
    let y = net.forward(x, true).unwrap();
    let loss = (&y * proj).sum(Kind::Double);
    loss.backward();
    let grads = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(k, t)| (k, t.grad().copy()))
        .collect();
    (y.detach(), grads)
}

/// Checks that `node` computes the same fused and unfused; returns how many subtrees fused.
fn equivalent(node: &Node, input: Shape, tol: f64) -> (usize, usize) {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (vs_a, net_a) = build(node, input, false);
    let (vs_b, net_b) = build(node, input, true);
    assert_eq!(count_params(&vs_a), count_params(&vs_b), "{node}");
    let va = vs_a.variables();
    let vb = vs_b.variables();
    let names_a: Vec<_> = va
        .keys()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let names_b: Vec<_> = vb
        .keys()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names_a, names_b, "variable names differ for {node}");
    for (k, a) in &va {
        let b = &vb[k];
        assert_eq!(a.size(), b.size(), "{k} of {node}");
        // The same seed and the same creation order give the same initial values.
        assert!(a.equal(b), "{k} initialised differently in {node}");
    }
    let mut dims = vec![4i64];
    dims.extend(input.dims().iter().map(|&d| d as i64));
    tch::manual_seed(3);
    let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu));
    let proj = Tensor::randn([4, CLASSES as i64], (Kind::Float, Device::Cpu));
    // float32: the logits agree to rounding.
    let ya = tch::no_grad(|| net_a.forward(&x, true)).unwrap();
    let yb = tch::no_grad(|| net_b.forward(&x, true)).unwrap();
    let d = rel_diff(&yb, &ya);
    assert!(d < 1e-3, "float32 logits differ by {d:e} for {node}");
    // float64: logits and every gradient agree to `tol`.
    let (mut vs_a, mut vs_b) = (vs_a, vs_b);
    vs_a.double();
    vs_b.double();
    let (x, proj) = (x.to_kind(Kind::Double), proj.to_kind(Kind::Double));
    let (ya, ga) = run(&vs_a, &net_a, &x, &proj);
    let (yb, gb) = run(&vs_b, &net_b, &x, &proj);
    let d = rel_diff(&yb, &ya);
    assert!(d < tol, "logits differ by {d:e} for {node}");
    // Some gradients are zero up to rounding (a bias before BatchNorm, a key's bias under the
    // softmax): compare each against its own norm or a millionth of the whole gradient's.
    let global = ga
        .values()
        .map(|g| g.norm().double_value(&[]).powi(2))
        .sum::<f64>()
        .sqrt();
    for (k, a) in &ga {
        let d = (&gb[k] - a).norm().double_value(&[]);
        let scale = a.norm().double_value(&[]).max(1e-6 * global).max(1e-12);
        assert!(
            d / scale < tol,
            "gradient of {k} differs by {:e} for {node}",
            d / scale
        );
    }
    fuse::count(node, input)
}

#[test]
fn every_einspace_seed_is_the_same_fused() {
    let s = Space::load("einspace").unwrap();
    for seed in &s.seeds {
        let n = equivalent(&seed.node, Shape::im(3, 32, 32), 1e-6);
        assert!(n.0 + n.1 > 0, "nothing fused in seed {}", seed.name);
    }
}

fn sampled(input: Shape, n: usize, rng_seed: u64) -> (usize, usize, usize) {
    let s = Space::load("einspace").unwrap();
    let sampler = s.sampler();
    let opts = CheckOptions {
        limits: Limits {
            max_params: 1_000_000,
            max_flops: 40_000_000,
            max_activation_bytes: 4 << 20,
        },
        classes: Some(CLASSES),
        infos: false,
        head: Default::default(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let (mut with_fusion, mut convs, mut attns) = (0, 0, 0);
    for _ in 0..n {
        let (node, _) = s.sample_with(&sampler, input, &opts, &mut rng).unwrap();
        let (c, a) = equivalent(&node, input, 1e-6);
        with_fusion += usize::from(c + a > 0);
        convs += c;
        attns += a;
    }
    (with_fusion, convs, attns)
}

#[test]
fn sampled_images_are_the_same_fused() {
    let (with, convs, attns) = sampled(Shape::im(3, 32, 32), 300, 5);
    println!("{with} of 300 samples fused: {convs} convolutions, {attns} attentions");
    // The test must exercise the patterns, not only pass through unfused trees.
    assert!(with > 20 && convs > 50, "{with} {convs}");
}

#[test]
fn sampled_sequences_are_the_same_fused() {
    let (with, _, attns) = sampled(Shape::col(32, 16), 200, 9);
    println!("{with} of 200 samples fused: {attns} attentions");
}

/// einspace's attention (the scaled and unscaled forms, on sequences and on images) and
/// convolutions with every im2col option of the grammar, seed-only ones included.
#[test]
fn each_pattern_is_the_same_fused() {
    let head = |agg: &str, d: u32| {
        format!(
            "branch(clone(2), seq(branch(clone(2), linear({d}), route(identity, linear({d}), permute21), {agg}), softmax), linear({d}), dot_product)"
        )
    };
    for agg in ["scaled_dot_product", "dot_product"] {
        let t = format!(
            "route(im2col(4, 4, 0), seq(linear(32), {}, norm), identity)",
            head(agg, 16)
        );
        let node = archsmith::space::parse_one(&t).unwrap().node;
        assert_eq!(equivalent(&node, Shape::im(3, 32, 32), 1e-6), (1, 1));
        // Heads side by side: multi-head attention, one projection for all heads.
        let t = format!(
            "route(im2col(4, 4, 0), seq(linear(32), branch(clone(4), {}, cat(2, 4)), norm), identity)",
            head(agg, 8)
        );
        let node = archsmith::space::parse_one(&t).unwrap().node;
        assert_eq!(equivalent(&node, Shape::im(3, 32, 32), 1e-6), (1, 1));
        // On images the products batch over channels: [B, C, H, W] @ [B, C, W, H].
        let t = format!(
            "branch(clone(2), seq(branch(clone(2), identity, permute132, {agg}), softmax), norm, dot_product)"
        );
        let node = archsmith::space::parse_one(&t).unwrap().node;
        assert_eq!(equivalent(&node, Shape::im(3, 16, 16), 1e-6), (0, 1));
    }
    for (k, s, p) in [
        (1, 1, 0),
        (1, 2, 0),
        (3, 1, 1),
        (3, 2, 1),
        (4, 4, 0),
        (8, 8, 0),
        (16, 16, 0),
        (7, 2, 3),
    ] {
        let t = format!("seq(route(im2col({k}, {s}, {p}), linear(16), col2im), norm, leakyrelu)");
        let node = archsmith::space::parse_one(&t).unwrap().node;
        assert_eq!(equivalent(&node, Shape::im(3, 32, 32), 1e-6), (1, 0), "{t}");
        // A convolution whose positions go on through more computation before col2im.
        let t = format!(
            "route(im2col({k}, {s}, {p}), seq(linear(16), leakyrelu, norm, linear(8)), col2im)"
        );
        let node = archsmith::space::parse_one(&t).unwrap().node;
        assert_eq!(equivalent(&node, Shape::im(3, 32, 32), 1e-6), (1, 0), "{t}");
    }
}

#[test]
fn weights_trained_either_way_load_either_way() {
    let s = Space::load("einspace").unwrap();
    let node = &s.seed("transformer").unwrap().node;
    let input = Shape::im(3, 32, 32);
    let dir = tempfile::tempdir().unwrap();
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    for (from, to) in [(false, true), (true, false)] {
        let (mut vs_a, net_a) = build(node, input, from);
        // Move the weights off their initial values, as training would.
        tch::no_grad(|| {
            for (_, mut t) in vs_a.variables() {
                let noise = t.randn_like() * 0.01;
                let _ = t.g_add_(&noise);
            }
        });
        let path = dir.path().join(format!("w{from}.ot"));
        vs_a.save(&path).unwrap();
        let (mut vs_b, net_b) = build(node, input, to);
        vs_b.load(&path).unwrap();
        vs_a.freeze();
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let ya = tch::no_grad(|| net_a.forward(&x, false)).unwrap();
        let yb = tch::no_grad(|| net_b.forward(&x, false)).unwrap();
        let d = rel_diff(&yb, &ya);
        assert!(d < 1e-3, "{d:e}");
    }
}

#[test]
fn channels_last_is_the_same_tensor() {
    // No random draw here: it would shift the generator under the other tests' compilations.
    let x = Tensor::arange(120, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
    let y = archsmith_torch::compile::to_channels_last(&x).unwrap();
    assert_eq!(y.size(), x.size());
    assert_eq!(y.stride(), vec![60, 1, 15, 3]);
    assert!(y.equal(&x));
}

#[test]
fn cuda_paths_match_when_a_gpu_exists() {
    if !tch::Cuda::is_available() {
        println!(
            "skipped: no CUDA device (the fused CUDA paths, channels-last and bf16, need one)"
        );
        return;
    }
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let s = Space::load("einspace").unwrap();
    let node = &s.seed("resnet18_no_maxpool").unwrap().node;
    let input = Shape::im(3, 32, 32);
    let dev = Device::Cuda(0);
    let mk = |fuse| {
        let vs = nn::VarStore::new(dev);
        let net = compile_with(
            &vs.root(),
            node,
            input,
            CLASSES,
            7,
            CompileOptions::with_fuse(fuse),
        )
        .unwrap();
        (vs, net)
    };
    let (_va, a) = mk(false);
    let (_vb, b) = mk(true);
    let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, dev));
    let ya = tch::no_grad(|| a.forward(&x, true)).unwrap();
    let yb = tch::no_grad(|| b.forward(&x, true)).unwrap();
    // cuDNN may use TF32 for convolutions: a looser tolerance than on the CPU.
    assert!(rel_diff(&yb, &ya) < 2e-2);
    let xb = x.to_kind(Kind::BFloat16);
    let yb16 = tch::no_grad(|| b.forward(&xb, true)).unwrap();
    assert_eq!(yb16.kind(), Kind::Float);
    assert!(rel_diff(&yb16, &ya) < 1e-1);
}
