//! Throughput of the space layer on one core: einspace samples drawn and validated per second
//! for a 3x32x32 input, and the time to parse and validate the ResNet-18 seed.
//!
//! Run with `cargo bench --bench space`; docs/figures.md reports the figures.

use archsmith::space::{CheckOptions, Shape, Space};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn bench(c: &mut Criterion) {
    let space = Space::load("einspace").unwrap();
    let input = Shape::im(3, 32, 32);
    let opts = CheckOptions::default();

    let mut g = c.benchmark_group("einspace");
    g.throughput(Throughput::Elements(1));
    let sampler = space.sampler();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    g.bench_function("sample_and_validate_3x32x32", |b| {
        b.iter(|| space.sample_with(&sampler, input, &opts, &mut rng).unwrap())
    });

    let seed = space.seed("resnet18_no_maxpool").unwrap();
    let resnet = seed.node.clone();
    g.bench_function("validate_resnet18", |b| {
        b.iter(|| space.check(&resnet, None, input, &opts).unwrap())
    });
    let text = seed.text.clone();
    g.bench_function("parse_and_validate_resnet18_text", |b| {
        b.iter(|| space.validate_text(&text, input, &opts).unwrap())
    });

    let mut rng = ChaCha8Rng::seed_from_u64(9);
    g.bench_function("mutate_resnet18", |b| {
        b.iter_batched(
            || resnet.clone(),
            |n| space.mutate(&n, input, &opts, &mut rng).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
