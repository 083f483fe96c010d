//! End-to-end forward passes of seeded random ResNet-18/50 at 224x224, batch 1 and 8.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resnet_models::{ResNet, resnet18, resnet50};
use resnet_tensor::Tensor;
use std::hint::black_box;

fn forward(c: &mut Criterion) {
    for (name, cfg) in [("resnet18", resnet18(1000)), ("resnet50", resnet50(1000))] {
        let model = ResNet::random(&cfg, 0)
            .expect("valid config")
            .with_threads(1)
            .expect("one thread");
        let mut g = c.benchmark_group(format!("{name}_1thread"));
        g.sample_size(10);
        for batch in [1usize, 8] {
            let x = Tensor::zeros(&[batch, 3, 224, 224]).expect("input");
            let macs: u64 = model
                .profile(&x)
                .expect("profile")
                .iter()
                .map(|l| l.macs)
                .sum();
            g.throughput(Throughput::Elements(2 * macs));
            g.bench_function(format!("batch{batch}"), |b| {
                b.iter(|| model.forward(black_box(&x)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
