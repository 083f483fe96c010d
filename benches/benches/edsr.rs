//! EDSR-baseline x2 super-resolution of a 480x270 image (seeded random weights), one thread.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resnet_models::{Edsr, EdsrConfig};
use resnet_tensor::Tensor;
use std::hint::black_box;

fn edsr(c: &mut Criterion) {
    let model = Edsr::random(&EdsrConfig::baseline(2), 0)
        .and_then(|m| m.with_threads(1))
        .expect("valid config");
    let (h, w) = (270, 480);
    let x = Tensor::from_vec(
        &[1, 3, h, w],
        (0..3 * h * w).map(|i| (i % 256) as f32).collect(),
    )
    .expect("input");
    let mut g = c.benchmark_group("edsr_baseline_x2");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * model.macs(h, w)));
    g.bench_function("480x270_tiled192", |b| {
        b.iter(|| model.forward_tiled(black_box(&x), 192))
    });
    g.finish();
}

criterion_group!(benches, edsr);
criterion_main!(benches);
