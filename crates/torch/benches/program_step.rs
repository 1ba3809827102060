//! Step time of an update rule run as a program (the Adam seed) against tch's built-in Adam on
//! the same network and gradients: the interpreter's overhead. Prints the medians and their
//! ratio; `cargo bench --bench program_step`.

use archsmith::space::Space;
use archsmith_torch::program::{Hyper, ProgramOptimizer, Rule};
use std::time::Instant;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

fn network(vs: &nn::VarStore) -> impl Module {
    let p = vs.root();
    nn::seq()
        .add(nn::linear(&p / "a", 784, 512, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&p / "b", 512, 512, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&p / "c", 512, 10, Default::default()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `f` over `reps` rounds of `inner` calls, after a warm-up.
fn time(reps: usize, inner: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..inner {
        f();
    }
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        out.push(t.elapsed().as_secs_f64() / inner as f64);
    }
    median(out)
}

fn main() {
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let space = Space::load("optimizer").unwrap();
    let adam = parse(&space.seed("adam").unwrap().text);
    let h = Hyper {
        wd: 0.0,
        ..Hyper::default()
    };
    let x = Tensor::randn([128, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [128], (Kind::Int64, Device::Cpu));

    // Built-in Adam.
    let vs_a = nn::VarStore::new(Device::Cpu);
    let net_a = network(&vs_a);
    let mut builtin = nn::Adam {
        beta1: h.beta1,
        beta2: h.beta2,
        wd: 0.0,
        eps: h.eps,
        amsgrad: false,
    }
    .build(&vs_a, 1e-3)
    .unwrap();
    // The same network and the Adam seed as a program.
    let mut vs_b = nn::VarStore::new(Device::Cpu);
    let net_b = network(&vs_b);
    vs_b.copy(&vs_a).unwrap();
    let mut prog =
        ProgramOptimizer::new(Rule::compile(&adam).unwrap(), vs_b.trainable_variables(), h)
            .unwrap();
    let params: i64 = vs_a
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();

    let loss = |m: &dyn Module| {
        m.forward(&x)
            .cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)
    };
    // Gradients once; the step alone is timed.
    loss(&net_a).backward();
    loss(&net_b).backward();
    let (reps, inner) = (15, 20);
    let t_builtin = time(reps, inner, || builtin.step());
    let t_prog = time(reps, inner, || prog.step(1e-3).unwrap());
    // A whole training step: forward, backward and update.
    let t_builtin_full = time(reps, 5, || {
        builtin.zero_grad();
        loss(&net_a).backward();
        builtin.step();
    });
    let t_prog_full = time(reps, 5, || {
        prog.zero_grad();
        loss(&net_b).backward();
        prog.step(1e-3).unwrap();
    });
    println!("network: MLP 784-512-512-10, {params} parameters, batch 128, {threads} thread(s)");
    println!(
        "optimizer step alone:  tch Adam {:8.3} ms   Adam program {:8.3} ms   ratio {:.2}x",
        t_builtin * 1e3,
        t_prog * 1e3,
        t_prog / t_builtin
    );
    println!(
        "whole training step:   tch Adam {:8.3} ms   Adam program {:8.3} ms   ratio {:.2}x",
        t_builtin_full * 1e3,
        t_prog_full * 1e3,
        t_prog_full / t_builtin_full
    );
}

fn parse(text: &str) -> archsmith::space::Node {
    archsmith::space::parse_one(text).unwrap().node
}
