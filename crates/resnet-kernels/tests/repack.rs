//! `PackedConv::repack` and `ConvGrad::repack`: new weights packed into the old storage give
//! bitwise what a convolution (or backward) built from the new weights gives, for every
//! algorithm, on every instruction set this CPU has; and a wrong length changes nothing.

mod common;
use common::values;
use resnet_kernels::fast::grad::ConvGrad;
use resnet_kernels::fast::{ConvAlgo, Ctx, Epilogue, PackedConv, Par, Scratch};
use resnet_kernels::{Conv2dParams, ConvGeometry, Cpu, KernelError};

/// `[O, C/groups, KH, KW]`, the parameters and the input `[N, C, H, W]` of one case.
type Case = ([usize; 4], Conv2dParams, [usize; 4]);

fn cases() -> Vec<Case> {
    let p = Conv2dParams::default;
    vec![
        // 1x1: pointwise.
        ([24, 16, 1, 1], p(), [2, 16, 5, 7]),
        // 1x1 stride 2 (a projection shortcut): im2col.
        ([32, 16, 1, 1], p().with_stride(2), [2, 16, 7, 6]),
        // 3x3 stride 1, enough channels: Winograd forwards (when chosen), the backward as a
        // convolution.
        ([16, 12, 3, 3], p().with_padding(1), [2, 12, 9, 8]),
        // 3x3 stride 2 and a 7x7 stem: im2col forwards, col2im backwards.
        (
            [16, 8, 3, 3],
            p().with_padding(1).with_stride(2),
            [1, 8, 9, 11],
        ),
        (
            [8, 3, 7, 7],
            p().with_padding(3).with_stride(2),
            [1, 3, 13, 12],
        ),
        // Grouped: narrow groups (direct) and wide ones (block-diagonal im2col).
        (
            [16, 2, 3, 3],
            p().with_padding(1).with_groups(8),
            [1, 16, 6, 5],
        ),
        (
            [48, 4, 3, 3],
            p().with_padding(1).with_groups(4),
            [1, 16, 6, 5],
        ),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn repacked_convolutions_match_fresh_ones_bitwise() {
    let scratch = Scratch::new(1);
    for (seed, (wd, params, input)) in cases().into_iter().enumerate() {
        let seed = seed as u64 * 10;
        let len: usize = wd.iter().product();
        let (a, b) = (values(len, seed), values(len, seed + 1));
        let bias = values(wd[0], seed + 2);
        let x = values(input.iter().product(), seed + 3);
        let geom = ConvGeometry::new(input, wd, params).unwrap();
        let (_, _, lo) = geom.lens();
        let mut algos = vec![ConvAlgo::Im2colTiled];
        algos.extend(PackedConv::new(&a, wd, None, params).map(|c| c.algorithm()));
        for algo in algos {
            for cpu in Cpu::all_levels() {
                let ctx = Ctx::new(cpu, Par::Seq, &scratch);
                let run = |c: &PackedConv| {
                    let mut out = vec![f32::NAN; lo];
                    c.run(&ctx, &x, input, &mut out, Epilogue::none()).unwrap();
                    bits(&out)
                };
                let fresh = PackedConv::with_algorithm(&b, wd, Some(&bias), params, algo).unwrap();
                let mut old = PackedConv::with_algorithm(&a, wd, None, params, algo).unwrap();
                old.repack(&b, Some(&bias)).unwrap();
                assert_eq!(run(&old), run(&fresh), "{wd:?} {algo:?} {:?}", cpu.level());
                // Back to no bias, and a wrong length refused without a change.
                let plain = PackedConv::with_algorithm(&b, wd, None, params, algo).unwrap();
                old.repack(&b, None).unwrap();
                assert_eq!(run(&old), run(&plain));
                let e = old.repack(&a[1..], None).unwrap_err();
                assert!(matches!(e, KernelError::BadLength { .. }), "{e}");
                let e = old.repack(&a, Some(&bias[1..])).unwrap_err();
                assert!(matches!(e, KernelError::BadLength { .. }), "{e}");
                assert_eq!(
                    run(&old),
                    run(&plain),
                    "a refused repack changed the weights"
                );
            }
        }
    }
}

#[test]
fn repacked_backwards_match_fresh_ones_bitwise() {
    let scratch = Scratch::new(1);
    for (seed, (wd, params, input)) in cases().into_iter().enumerate() {
        let seed = seed as u64 * 10 + 5;
        let len: usize = wd.iter().product();
        let (a, b) = (values(len, seed), values(len, seed + 1));
        let geom = ConvGeometry::new(input, wd, params).unwrap();
        let (li, _, lo) = geom.lens();
        let gy = values(lo, seed + 2);
        for cpu in Cpu::all_levels() {
            let ctx = Ctx::new(cpu, Par::Seq, &scratch);
            let run = |g: &ConvGrad| {
                let mut gx = vec![f32::NAN; li];
                g.backward_input(&ctx, input, &gy, &mut gx, None).unwrap();
                bits(&gx)
            };
            let fresh = ConvGrad::new(&b, wd, params).unwrap();
            let mut old = ConvGrad::new(&a, wd, params).unwrap();
            old.repack(&b).unwrap();
            assert_eq!(run(&old), run(&fresh), "{wd:?} {:?}", cpu.level());
            assert!(old.repack(&a[1..]).is_err());
            assert_eq!(
                run(&old),
                run(&fresh),
                "a refused repack changed the weights"
            );
        }
    }
}
