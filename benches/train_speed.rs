//! Training throughput and compile time, printed as JSON lines. Run with
//!
//!     eval "$(scripts/setup-torch.sh)"
//!     cargo bench --bench train_speed [-- STEPS BATCH]
//!
//! and compare with the PyTorch twin: `python benches/torch_twin.py STEPS BATCH`.
//!
//! Steps per second: SGD steps (forward, backward, update) of the einspace ResNet-18 and ViT
//! seeds on random 3x32x32 batches, 10 classes, on the default device. Compile time: building
//! the layer tree and initialising parameters, for each seed and for sampled candidates.

use archsmith::space::{CheckOptions, Limits, Shape, Space};
use archsmith::train::compile::compile;
use archsmith::train::device::device_name;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let steps = args.first().copied().unwrap_or(10);
    let batch = args.get(1).copied().unwrap_or(64);
    let device = Device::cuda_if_available();
    let input = Shape::im(3, 32, 32);
    let opts = CheckOptions {
        limits: Limits::default(),
        classes: Some(10),
        infos: false,
    };
    let space = Space::load("einspace").expect("einspace");
    for name in ["resnet18", "vit"] {
        let seed = space.seed(name).expect("seed");
        let a = space.check(&seed.node, None, input, &opts).expect("valid");
        let vs = nn::VarStore::new(device);
        let net = compile(&vs.root(), &seed.node, input, 10, 0).expect("compiles");
        let mut opt = nn::Sgd {
            momentum: 0.9,
            ..Default::default()
        }
        .build(&vs, 0.01)
        .expect("optimizer");
        let x = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, device));
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
        for _ in 0..2 {
            step();
        }
        let t = Instant::now();
        for _ in 0..steps {
            step();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "impl": "archsmith", "model": name, "device": device_name(device),
                "batch": batch, "steps": steps, "threads": tch::get_num_threads(),
                "params": a.total_params(), "steps_per_second": steps as f64 / secs,
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
