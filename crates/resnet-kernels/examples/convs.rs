//! Time each distinct convolution of ResNet-18/50 at 224x224 with every applicable algorithm:
//! `cargo run --release -p resnet-kernels --example convs [-- BATCH THREADS]` (default 1 1);
//! medians of 40 runs (`MIN=1`: the fastest, steadier on a shared machine); the output step is
//! bias and ReLU (`RESIDUAL=1`: and a residual add).

use resnet_kernels::fast::{ConvAlgo, Ctx, Epilogue, PackedConv, Par, Scratch};
use resnet_kernels::{Conv2dParams, Cpu};
use std::time::Instant;

fn main() {
    let cpu = Cpu::detect();
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let (n, threads) = (args.next().unwrap_or(1), args.next().unwrap_or(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let par = Par::with_threads(threads);
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
        (64, 64, 96, 3, 1),
        (64, 256, 56, 1, 1),
        (256, 64, 56, 1, 1),
        (1024, 256, 14, 1, 1),
        (256, 512, 56, 1, 2),
    ];
    for (c, o, h, k, s) in shapes {
        let params = Conv2dParams::default().with_stride(s).with_padding(k / 2);
        let w: Vec<f32> = (0..o * c * k * k).map(|i| (i % 7) as f32 * 0.01).collect();
        let x: Vec<f32> = (0..n * c * h * h).map(|i| (i % 5) as f32 * 0.1).collect();
        for algo in [
            ConvAlgo::Pointwise,
            ConvAlgo::Im2colTiled,
            ConvAlgo::Winograd2x2,
            ConvAlgo::Winograd4x4,
        ] {
            let Ok(p) = PackedConv::with_algorithm(&w, [o, c, k, k], None, params, algo) else {
                continue;
            };
            let g = p.geometry([n, c, h, h]).unwrap();
            let mut out = vec![0.0; g.lens().2];
            let res = vec![0.5f32; g.lens().2];
            let with_res = std::env::var_os("RESIDUAL").is_some();
            let mut scratch = Scratch::new(threads);
            scratch.reserve(p.scratch_len([n, c, h, h]).unwrap());
            let ctx = Ctx::new(cpu, par, &scratch);
            let mut times: Vec<f64> = (0..41)
                .map(|_| {
                    let t0 = Instant::now();
                    pool.install(|| {
                        let e = if with_res {
                            Epilogue::relu().with_residual(&res)
                        } else {
                            Epilogue::relu()
                        };
                        p.run(&ctx, &x, [n, c, h, h], &mut out, e)
                    })
                    .unwrap();
                    t0.elapsed().as_secs_f64()
                })
                .skip(1)
                .collect();
            times.sort_by(f64::total_cmp);
            let best = if std::env::var_os("MIN").is_some() {
                times[0]
            } else {
                times[times.len() / 2]
            };
            let gf = 2.0 * g.macs() as f64 / best / 1e9 / threads as f64;
            println!(
                "C{c:4} O{o:4} {h:3}x{h:<3} k{k} s{s} {algo:>20}: {:7.3} ms {gf:6.1} GFLOP/s (direct-equivalent) {:4.0}% of a core's peak",
                best * 1e3,
                100.0 * gf / peak
            );
        }
    }
}
