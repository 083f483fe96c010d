//! Every distinct convolution of ResNet-18/50 at 224x224 by its real shape, the pools and the
//! classifier; throughput in FLOP, so criterion prints GFLOP/s ("elem/s" = FLOP/s).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resnet_benches::RESNET_CONVS;
use resnet_kernels::fast::{self, Ctx, Epilogue, PackedConv, PackedLinear, Par, Scratch};
use resnet_kernels::{Conv2dParams, Cpu, PoolGeometry};
use std::hint::black_box;

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn convs(c: &mut Criterion) {
    let cpu = Cpu::detect();
    let mut g = c.benchmark_group("conv");
    g.sample_size(20);
    for &(name, ci, co, h, k, s) in RESNET_CONVS {
        let params = Conv2dParams::default().with_stride(s).with_padding(k / 2);
        let conv = PackedConv::new(
            &values(co * ci * k * k),
            [co, ci, k, k],
            Some(&values(co)),
            params,
        )
        .expect("valid shape");
        let dims = [1, ci, h, h];
        let geom = conv.geometry(dims).expect("valid geometry");
        let x = values(geom.lens().0);
        let mut y = vec![0.0; geom.lens().2];
        let mut scratch = Scratch::new(1);
        scratch.reserve(conv.scratch_len(dims).expect("valid geometry"));
        let ctx = Ctx::new(cpu, Par::Seq, &scratch);
        g.throughput(Throughput::Elements(2 * geom.macs()));
        g.bench_function(format!("{name}/{}", conv.algorithm()), |b| {
            b.iter(|| conv.run(&ctx, black_box(&x), dims, &mut y, Epilogue::relu()))
        });
    }
    g.finish();
}

fn pools_and_classifier(c: &mut Criterion) {
    let cpu = Cpu::detect();
    let mut g = c.benchmark_group("head");
    let pool = PoolGeometry::new([1, 64, 112, 112], [3, 3], [2, 2], [1, 1]).expect("geometry");
    let x = values(64 * 112 * 112);
    let mut y = vec![0.0; 64 * 56 * 56];
    g.throughput(Throughput::Elements((64 * 56 * 56 * 9) as u64));
    g.bench_function("maxpool_3x3_s2_112", |b| {
        b.iter(|| fast::max_pool2d_nhwc(cpu, Par::Seq, &pool, black_box(&x), &mut y))
    });
    for (c_in, hw) in [(512usize, 7usize), (2048, 7)] {
        let x = values(c_in * hw * hw);
        let mut y = vec![0.0; c_in];
        g.throughput(Throughput::Elements((c_in * hw * hw) as u64));
        g.bench_function(format!("global_avgpool_{c_in}x{hw}x{hw}"), |b| {
            b.iter(|| fast::global_avg_pool_nhwc(cpu, [1, c_in, hw, hw], black_box(&x), &mut y))
        });
        let fc =
            PackedLinear::new(&values(1000 * c_in), c_in, 1000, Some(&values(1000))).expect("fc");
        let mut logits = vec![0.0; 1000];
        g.throughput(Throughput::Elements(2 * 1000 * c_in as u64));
        g.bench_function(format!("classifier_{c_in}x1000"), |b| {
            b.iter(|| fc.run(cpu, 1, black_box(&y), &mut logits))
        });
    }
    g.finish();
}

criterion_group!(benches, convs, pools_and_classifier);
criterion_main!(benches);
