//! End-to-end forward passes of seeded random networks.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resnet_models::{ResNet, resnet18};
use resnet_tensor::Tensor;
use std::hint::black_box;

fn forward(c: &mut Criterion) {
    let model = ResNet::random(&resnet18(1000), 0).expect("valid config");
    let x = Tensor::zeros(&[1, 3, 64, 64]).expect("small tensor");
    let mut g = c.benchmark_group("resnet18_naive");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("batch1_64x64", |b| b.iter(|| model.forward(black_box(&x))));
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
