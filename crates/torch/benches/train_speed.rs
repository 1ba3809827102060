//! Training throughput and compile time, printed as JSON lines. Run with
//!
//!     eval "$(scripts/setup-torch.sh)"
//!     cargo bench --bench train_speed [-- STEPS BATCH THREADS PEAK_GFLOPS]
//!
//! and compare with the PyTorch twins: `python benches/torch_twin.py STEPS BATCH THREADS
//! --einspace` (idiomatic nn.Conv2d / scaled_dot_product_attention versions of the same seeds).
//!
//! Steps per second: SGD steps (forward, backward, update) of einspace's seeds on random
//! 3x32x32 batches, 10 classes, on the default device, compiled fused and unfused
//! (`space::fuse`), with the fraction of the FP32 peak (PEAK_GFLOPS, default 157: 2 cores x
//! 2.45 GHz x 32 FLOPs a cycle) that the training FLOPs reach (3x the validator's forward
//! FLOPs: forward, and backward for inputs and weights). Then the speed-up of fused over
//! unfused on 100 sampled candidates, and compile time.

use archsmith::space::{fuse, CheckOptions, Limits, Node, Shape, Space};
use archsmith_torch::compile::{compile, compile_with, CompileOptions};
use archsmith_torch::device::device_name;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// Steps per second of SGD on `node`, after `warm` untimed steps.
fn speed(
    node: &Node,
    input: Shape,
    batch: usize,
    steps: usize,
    warm: usize,
    fuse: bool,
    device: Device,
) -> f64 {
    let vs = nn::VarStore::new(device);
    let net = compile_with(
        &vs.root(),
        node,
        input,
        10,
        0,
        CompileOptions::with_fuse(fuse),
    )
    .expect("compiles");
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.01)
    .expect("optimizer");
    let mut dims = vec![batch as i64];
    dims.extend(input.dims().iter().map(|&d| d as i64));
    let x = Tensor::randn(dims.as_slice(), (Kind::Float, device));
    let y = Tensor::randint(10, [batch as i64], (Kind::Int64, device));
    let mut step = || {
        let loss = net
            .forward(&x, true)
            .expect("forward")
            .cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
        opt.zero_grad();
        loss.backward();
        opt.step();
        loss.double_value(&[])
    };
    for _ in 0..warm {
        step();
    }
    let t = Instant::now();
    for _ in 0..steps {
        step();
    }
    steps as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let steps = args.first().copied().unwrap_or(10.0) as usize;
    let batch = args.get(1).copied().unwrap_or(32.0) as usize;
    let threads = args.get(2).copied().unwrap_or(0.0) as i32;
    let peak = args.get(3).copied().unwrap_or(157.0);
    if threads > 0 {
        tch::set_num_threads(threads);
    }
    let device = Device::cuda_if_available();
    let input = Shape::im(3, 32, 32);
    let opts = CheckOptions {
        limits: Limits::default(),
        classes: Some(10),
        infos: false,
        head: Default::default(),
    };
    let space = Space::load("einspace").expect("einspace");
    let only: Option<String> = std::env::var("SEEDS").ok();
    for name in [
        "resnet18_no_maxpool",
        "wideresnet16_4",
        "transformer",
        "mlp_mixer",
    ] {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|s| s == name))
        {
            continue;
        }
        let seed = space.seed(name).expect("seed");
        let a = space.check(&seed.node, None, input, &opts).expect("valid");
        // Training FLOPs per step: forward + backward (twice the forward), for the batch.
        let gflop = 3.0 * a.flops as f64 * batch as f64 / 1e9;
        for fused in [true, false] {
            let sps = speed(&seed.node, input, batch, steps, 2, fused, device);
            println!(
                "{}",
                serde_json::json!({
                    "impl": if fused { "archsmith-fused" } else { "archsmith-unfused" },
                    "model": name, "device": device_name(device),
                    "batch": batch, "steps": steps, "threads": tch::get_num_threads(),
                    "params": a.total_params(), "steps_per_second": sps,
                    "train_gflop_per_step": gflop,
                    "fraction_of_peak": sps * gflop / peak,
                })
            );
        }
    }

    // Fused against unfused on sampled candidates of moderate size.
    let n_sampled = std::env::var("SAMPLED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize);
    if n_sampled > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let sampler = space.sampler();
        let moderate = CheckOptions {
            limits: Limits {
                max_params: 5_000_000,
                max_flops: 100_000_000,
                max_activation_bytes: 16 << 20,
            },
            ..opts
        };
        let (mut all, mut fused_only) = (Vec::new(), Vec::new());
        for _ in 0..n_sampled {
            let (node, _) = space
                .sample_with(&sampler, input, &moderate, &mut rng)
                .expect("sample");
            let (c, att) = fuse::count(&node, input);
            let f = speed(&node, input, batch, 3, 1, true, device);
            let u = speed(&node, input, batch, 3, 1, false, device);
            all.push(f / u);
            if c + att > 0 {
                fused_only.push(f / u);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            if v.is_empty() {
                f64::NAN
            } else {
                v[v.len() / 2]
            }
        };
        let n_fused = fused_only.len();
        println!(
            "{}",
            serde_json::json!({
                "sampled": n_sampled, "limits": "<= 5M params, <= 100 MFLOPs an image",
                "batch": batch, "threads": tch::get_num_threads(),
                "median_speedup_fused_over_unfused": median(&mut all),
                "with_a_fused_subtree": n_fused,
                "median_speedup_where_fused": median(&mut fused_only),
            })
        );
    }

    // Compile time: every seed, then sampled candidates.
    let mut times = Vec::new();
    for seed in &space.seeds {
        let t = Instant::now();
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = compile(&vs.root(), &seed.node, input, 10, 0).expect("compiles");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{}",
            serde_json::json!({"compile": seed.name, "ms": ms, "nodes": seed.node.size()})
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let sampler = space.sampler();
    let small = CheckOptions {
        limits: Limits {
            max_params: 5_000_000,
            ..Limits::default()
        },
        ..opts
    };
    let mut nodes = 0;
    for _ in 0..100 {
        let (node, _) = space
            .sample_with(&sampler, input, &small, &mut rng)
            .expect("sample");
        let t = Instant::now();
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = compile(&vs.root(), &node, input, 10, 0).expect("compiles");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        nodes += node.size();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({
            "compile": "100 sampled einspace candidates (<= 5M params)",
            "median_ms": times[50], "p90_ms": times[90], "max_ms": times[99],
            "mean_nodes": nodes as f64 / 100.0,
        })
    );
}
