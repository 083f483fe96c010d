//! What each 3x3 algorithm costs in accuracy: the largest error against the f64-accumulating
//! naive convolution, as a multiple of `eps x Σ|x||w|` (the magnitude bound of a direct sum)
//! and relative to the output's largest value, for input channel counts from 1 to 256
//! (random values in [-1, 1), 8 output channels, 13x11, padding 1, fixed seed):
//! `cargo run --release -p resnet-kernels --example wino_err`.

use resnet_kernels::fast::{self, ConvAlgo, Ctx, Epilogue, PackedConv, Par, Scratch};
use resnet_kernels::{Conv2dParams, ConvGeometry, Cpu, naive};

fn main() {
    let cpu = Cpu::detect();
    let mut seed = 12345u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    let algos = [
        ConvAlgo::Im2colTiled,
        ConvAlgo::Winograd2x2,
        ConvAlgo::Winograd4x4,
    ];
    println!("err / (eps |x||w|) and err / max|y| per algorithm: {algos:?}");
    for cg in [1usize, 2, 4, 8, 16, 64, 256] {
        let (mut worst, mut rel) = ([0.0f64; 3], [0.0f64; 3]);
        for _ in 0..(if cg > 64 { 2 } else { 20 }) {
            let (o, h, w) = (8usize, 13usize, 11usize);
            let params = Conv2dParams::default().with_padding(1);
            let geom = ConvGeometry::new([1, cg, h, w], [o, cg, 3, 3], params).unwrap();
            let (li, lw, lo) = geom.lens();
            let x: Vec<f32> = (0..li).map(|_| rnd()).collect();
            let wt: Vec<f32> = (0..lw).map(|_| rnd()).collect();
            let mut want = vec![0.0; lo];
            naive::conv2d(&geom, &x, &wt, None, &mut want).unwrap();
            let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
            let mut bound = vec![0.0; lo];
            naive::conv2d(&geom, &abs(&x), &abs(&wt), None, &mut bound).unwrap();
            let mut xn = vec![0.0; li];
            fast::nchw_to_nhwc(cpu, geom.input, &x, &mut xn).unwrap();
            let top = want.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
            for (ai, algo) in algos.into_iter().enumerate() {
                let p = PackedConv::with_algorithm(&wt, [o, cg, 3, 3], None, params, algo).unwrap();
                let scratch = Scratch::new(1);
                let ctx = Ctx::new(cpu, Par::Seq, &scratch);
                let mut out = vec![0.0; lo];
                p.run(&ctx, &xn, geom.input, &mut out, Epilogue::none())
                    .unwrap();
                let mut got = vec![0.0; lo];
                fast::nhwc_to_nchw(geom.output, &out, &mut got).unwrap();
                for i in 0..lo {
                    let e = f64::from((got[i] - want[i]).abs());
                    worst[ai] = worst[ai].max(e / (f64::from(f32::EPSILON) * f64::from(bound[i])));
                    rel[ai] = rel[ai].max(e / top);
                }
            }
        }
        println!(
            "C {cg:4}: {:6.2} {:6.2} {:6.2} | {:.1e} {:.1e} {:.1e}",
            worst[0], worst[1], worst[2], rel[0], rel[1], rel[2]
        );
    }
}
