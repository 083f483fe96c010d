//! Time each distinct convolution of ResNet-18/50 at 224x224 with every applicable algorithm.

use resnet_kernels::fast::{ConvAlgo, Ctx, Epilogue, PackedConv, Par, Scratch};
use resnet_kernels::{Conv2dParams, Cpu};
use std::time::Instant;

fn main() {
    let cpu = Cpu::detect();
    let peak = resnet_kernels::fast::measure_peak_gflops(cpu, 300);
    println!("peak {peak:.0} GFLOP/s");
    // (C, O, H, K, stride)
    let shapes = [
        (3, 64, 224, 7, 2),
        (64, 64, 56, 3, 1),
        (64, 128, 56, 3, 2),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (64, 256, 56, 1, 1),
        (256, 64, 56, 1, 1),
        (1024, 256, 14, 1, 1),
        (256, 512, 56, 1, 2),
    ];
    for (c, o, h, k, s) in shapes {
        let params = Conv2dParams::default().with_stride(s).with_padding(k / 2);
        let w: Vec<f32> = (0..o * c * k * k).map(|i| (i % 7) as f32 * 0.01).collect();
        let x: Vec<f32> = (0..c * h * h).map(|i| (i % 5) as f32 * 0.1).collect();
        for algo in [
            ConvAlgo::Pointwise,
            ConvAlgo::Im2colTiled,
            ConvAlgo::Winograd2x2,
        ] {
            let Ok(p) = PackedConv::with_algorithm(&w, [o, c, k, k], None, params, algo) else {
                continue;
            };
            let g = p.geometry([1, c, h, h]).unwrap();
            let mut out = vec![0.0; g.lens().2];
            let scratch = Scratch::new(1);
            let ctx = Ctx::new(cpu, Par::Seq, &scratch);
            let mut best = f64::MAX;
            for _ in 0..15 {
                let t0 = Instant::now();
                p.run(&ctx, &x, [1, c, h, h], &mut out, Epilogue::relu())
                    .unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let gf = 2.0 * g.macs() as f64 / best / 1e9;
            println!(
                "C{c:4} O{o:4} {h:3}x{h:<3} k{k} s{s} {algo:>20}: {:7.3} ms {gf:6.1} GFLOP/s (direct-equivalent) {:4.0}%",
                best * 1e3,
                100.0 * gf / peak
            );
        }
    }
}
