//! The bf16 product (`vdpbf16ps`) against its scalar twin, bit for bit: random shapes
//! (proptest; `RESNET_PROPS_CASES` sets the count, `cargo xtask props` runs many), values of
//! every magnitude, non-finite values, and accumulation into an existing output. Where the
//! CPU has no AVX512-BF16 the fast half is skipped, loudly; the twin's rounding is still
//! checked against f64 arithmetic.

mod common;
use common::values;
use proptest::prelude::*;
use resnet_kernels::bf16::{
    Bf16Conv, Bf16Cpu, Bf16Dst, Bf16Lhs, Bf16Rhs, Bf16Src, map_to_f32, map_words, matmul,
    matmul_naive, max_pool_map, max_pool_map_naive, pack_row, round, widen,
};
use resnet_kernels::fast::{Ctx, Epilogue, Par, Scratch};
use resnet_kernels::{Conv2dParams, ConvGeometry, Cpu, PoolGeometry, fast, naive};

fn cases() -> u32 {
    std::env::var("RESNET_PROPS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn cpu() -> Option<Bf16Cpu> {
    let cpu = Bf16Cpu::detect();
    if cpu.is_none() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no AVX512-BF16 on this CPU: the fast bf16 kernel is not tested here !!!!!!!!\n"
        );
    }
    cpu
}

/// Values in [-1, 1) scaled by 2^e, with e drawn per element from `-exp..=exp`; `special`
/// mixes in NaN, infinities, zeros of both signs and f32 denormals.
fn spread(len: usize, seed: u64, exp: i32, special: bool) -> Vec<f32> {
    let v = values(len, seed);
    let e = values(len, seed ^ 0x5555);
    v.iter()
        .zip(&e)
        .enumerate()
        .map(|(i, (&x, &r))| {
            if special {
                match (i as u64 ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 59 {
                    0 => return f32::NAN,
                    1 => return f32::INFINITY,
                    2 => return f32::NEG_INFINITY,
                    3 => return -0.0,
                    4 => return f32::from_bits(0x0000_1234),
                    _ => {}
                }
            }
            let k = ((r + 1.0) * 0.5 * (2 * exp + 1) as f32) as i32 - exp;
            x * 2f32.powi(k.clamp(-exp, exp))
        })
        .collect()
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    k: usize,
    n: usize,
    lda_extra: usize,
    ldc_extra: usize,
    exp: i32,
    special: bool,
    accumulate: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let lda = k + lda_extra;
    let ldc = n + ldc_extra;
    let a = spread(m * lda, seed, exp, special);
    let bv = spread(k * n, seed ^ 0xabcd, exp, special);
    let pa = Bf16Lhs::pack(&a, m, k, lda).unwrap();
    let pb = Bf16Rhs::pack(k, n, |kk, j| bv[kk * n + j]).unwrap();
    let c0 = spread(m * ldc, seed ^ 0x1234, 2, false);
    let mut want = c0.clone();
    matmul_naive(&pa, &pb, &mut want, ldc, accumulate).unwrap();
    // The twin against f64 arithmetic on the rounded values, where every term is finite: the
    // per-step f32 rounding is all that differs.
    if !special && exp <= 8 {
        for i in 0..m {
            for j in 0..n {
                let mut exact = if accumulate {
                    f64::from(c0[i * ldc + j])
                } else {
                    0.0
                };
                let mut mag = exact.abs();
                for kk in 0..k {
                    let t = f64::from(widen(round(a[i * lda + kk])))
                        * f64::from(widen(round(bv[kk * n + j])));
                    exact += t;
                    mag += t.abs();
                }
                let got = f64::from(want[i * ldc + j]);
                prop_assert!(
                    (got - exact).abs() <= (k + 1) as f64 * f64::from(f32::EPSILON) * mag + 1e-30,
                    "naive ({i}, {j}): {got} vs exact {exact}"
                );
            }
        }
    }
    // Columns past n in each output row are untouched.
    for i in 0..m {
        for j in n..ldc {
            prop_assert!(same(want[i * ldc + j], c0[i * ldc + j]));
        }
    }
    let Some(cpu) = Bf16Cpu::detect() else {
        return Ok(());
    };
    let mut got = c0.clone();
    // In two row ranges, as threads would split it.
    let split = m / 3;
    matmul(cpu, &pa, &pb, 0..split, &mut got, ldc, accumulate).unwrap();
    matmul(cpu, &pa, &pb, split..m, &mut got, ldc, accumulate).unwrap();
    for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
        prop_assert!(
            same(*g, *w),
            "({}, {}) of {m}x{k}x{n}: fast {g:e} ({:#010x}) vs twin {w:e} ({:#010x})",
            idx / ldc,
            idx % ldc,
            g.to_bits(),
            w.to_bits()
        );
    }
    Ok(())
}

/// `check(threads, ctx, pool)` on one thread and on two: a context for the kernels and the
/// pool to run them on.
fn on_threads(
    mut check: impl FnMut(usize, &Ctx<'_>, &rayon::ThreadPool) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    for threads in [1, 2] {
        let scratch = Scratch::new(threads);
        let ctx = Ctx::new(Cpu::detect(), Par::with_threads(threads), &scratch);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        check(threads, &ctx, &pool)?;
    }
    Ok(())
}

#[test]
fn awkward_shapes() {
    let _ = cpu();
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 2, 32),
        (12, 64, 32),
        (13, 63, 33),
        (25, 3, 64),
        (11, 576, 64),
        (37, 147, 65),
        (24, 1, 17),
        (49, 512, 96),
    ] {
        for accumulate in [false, true] {
            check(m, k, n, 1, 3, 2, false, accumulate, (m * k * n) as u64).unwrap();
        }
    }
}

#[test]
fn extreme_magnitudes() {
    let _ = cpu();
    // Products from about 2^-120 to 2^120: still normal f32 values, bit for bit.
    for seed in 0..4 {
        check(13, 40, 35, 0, 0, 60, false, true, seed).unwrap();
    }
}

#[test]
fn row_packing_pairs_neighbours() {
    let mut out = [0u32; 2];
    pack_row(&[1.0, 2.0, 3.0], &mut out);
    assert_eq!(
        out[0],
        u32::from(round(1.0)) | (u32::from(round(2.0)) << 16)
    );
    assert_eq!(out[1], u32::from(round(3.0)));
}

/// One convolution case: `[N, C, H, W]` input, `O` outputs, a square kernel.
#[derive(Debug, Clone, Copy)]
struct ConvCase {
    n: usize,
    cg: usize,
    og: usize,
    groups: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    residual: bool,
    relu: bool,
}

/// The bf16 convolution's twin against f64 arithmetic on the rounded values, and (where the
/// CPU has AVX512-BF16) its fast path against the twin, bit for bit, on one and two threads.
fn check_conv(case: ConvCase, exp: i32, special: bool, seed: u64) -> Result<(), TestCaseError> {
    let ConvCase {
        n,
        cg,
        og,
        groups: g,
        h,
        w,
        kernel,
        ..
    } = case;
    let (c, o) = (cg * g, og * g);
    let params = Conv2dParams::default()
        .with_stride(case.stride)
        .with_padding(case.pad)
        .with_dilation(case.dilation)
        .with_groups(g);
    let wdims = [o, cg, kernel, kernel];
    let Ok(geom) = ConvGeometry::new([n, c, h, w], wdims, params) else {
        return Ok(()); // the kernel does not fit the padded input
    };
    let [_, _, oh, ow] = geom.output;
    let x = spread(n * h * w * c, seed, exp, special);
    let wt = spread(o * cg * kernel * kernel, seed ^ 0x77, exp, special);
    let bias = spread(o, seed ^ 0x99, 2, false);
    let res = spread(n * oh * ow * o, seed ^ 0x42, 2, false);
    let conv = Bf16Conv::new(&wt, wdims, Some(&bias), params).unwrap();
    let epi = || {
        let e = Epilogue::none().with_relu(case.relu);
        if case.residual {
            e.with_residual(&res)
        } else {
            e
        }
    };
    let mut want = vec![f32::NAN; n * oh * ow * o];
    conv.run_naive(&x, [n, c, h, w], &mut want, epi()).unwrap();
    if !special && exp <= 8 {
        // NCHW copies of the rounded values for the f64 reference.
        let xr: Vec<f32> = x.iter().map(|&v| widen(round(v))).collect();
        let mut nchw = vec![0.0; xr.len()];
        for (i, &v) in xr.iter().enumerate() {
            let (pix, ch) = (i / c, i % c);
            let (ni, p) = (pix / (h * w), pix % (h * w));
            nchw[(ni * c + ch) * h * w + p] = v;
        }
        let wr: Vec<f32> = wt.iter().map(|&v| widen(round(v))).collect();
        let wabs: Vec<f32> = wr.iter().map(|v| v.abs()).collect();
        let xabs: Vec<f32> = nchw.iter().map(|v| v.abs()).collect();
        let mut exact = vec![0.0; want.len()];
        let mut mag = vec![0.0; want.len()];
        naive::conv2d(&geom, &nchw, &wr, None, &mut exact).unwrap();
        naive::conv2d(&geom, &xabs, &wabs, None, &mut mag).unwrap();
        let depth = (cg * kernel * kernel) as f64;
        for (i, &got) in want.iter().enumerate() {
            let (pix, ch) = (i / o, i % o);
            let (ni, p) = (pix / (oh * ow), pix % (oh * ow));
            let at = (ni * o + ch) * oh * ow + p;
            let start = f64::from(bias[ch])
                + if case.residual {
                    f64::from(res[i])
                } else {
                    0.0
                };
            let mut e = start + f64::from(exact[at]);
            if case.relu && e <= 0.0 {
                e = 0.0;
            }
            let bound =
                (depth + 2.0) * f64::from(f32::EPSILON) * (start.abs() + f64::from(mag[at]))
                    + 1e-30;
            prop_assert!(
                (f64::from(got) - e).abs() <= bound,
                "value {i}: twin {got} vs {e}"
            );
        }
    }
    let Some(cpu) = Bf16Cpu::detect() else {
        return Ok(());
    };
    on_threads(|threads, ctx, pool| {
        let mut got = vec![f32::NAN; want.len()];
        pool.install(|| conv.run(cpu, ctx, &x, [n, c, h, w], &mut got, epi()))
            .unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert!(
                same(*g, *w),
                "{case:?} value {i}, {threads} threads: fast {g:e} ({:#010x}) vs twin {w:e} ({:#010x})",
                g.to_bits(),
                w.to_bits()
            );
        }
        Ok(())
    })
}

#[test]
fn conv_awkward_shapes() {
    let _ = cpu();
    let base = ConvCase {
        n: 1,
        cg: 3,
        og: 5,
        groups: 1,
        h: 7,
        w: 6,
        kernel: 3,
        stride: 1,
        pad: 1,
        dilation: 1,
        residual: false,
        relu: false,
    };
    for case in [
        base,
        // The stem: 7x7 stride 2 on 3 channels (an odd depth, pairs across taps).
        ConvCase {
            cg: 3,
            og: 64,
            h: 23,
            w: 21,
            kernel: 7,
            stride: 2,
            pad: 3,
            relu: true,
            ..base
        },
        // 1x1 read straight from the rounded input, with a residual and ReLU.
        ConvCase {
            n: 2,
            cg: 64,
            og: 40,
            kernel: 1,
            pad: 0,
            residual: true,
            relu: true,
            ..base
        },
        // 1x1 with an odd channel count (gathered), and a strided projection.
        ConvCase {
            cg: 5,
            og: 33,
            kernel: 1,
            pad: 0,
            ..base
        },
        ConvCase {
            n: 3,
            cg: 16,
            og: 32,
            kernel: 1,
            pad: 0,
            stride: 2,
            ..base
        },
        // Grouped (ResNeXt-like), dilated, wide and narrow outputs.
        ConvCase {
            cg: 4,
            og: 4,
            groups: 8,
            h: 9,
            w: 9,
            ..base
        },
        ConvCase {
            cg: 6,
            og: 70,
            dilation: 2,
            pad: 2,
            ..base
        },
        // Many output rows on few columns, and many columns on few rows (column chunks).
        ConvCase {
            n: 2,
            cg: 8,
            og: 8,
            h: 30,
            w: 31,
            residual: true,
            ..base
        },
        ConvCase {
            cg: 64,
            og: 512,
            h: 3,
            w: 3,
            relu: true,
            ..base
        },
    ] {
        check_conv(case, 2, false, case.og as u64).unwrap();
    }
}

/// A bf16 map of the NHWC values `x` (logical dims `dims`) with a border of `pad`, each value
/// rounded; the border zero.
fn to_map(x: &[f32], dims: [usize; 4], pad: [usize; 2]) -> Vec<u32> {
    let [n, c, h, w] = dims;
    let (hp, wp) = (h + 2 * pad[0], w + 2 * pad[1]);
    let mut words = vec![0u32; map_words(dims, pad).unwrap()];
    for (s, px) in x.chunks_exact(c).enumerate() {
        let (ni, y, xx) = (s / (h * w), (s / w) % h, s % w);
        let at = ((ni * hp + y + pad[0]) * wp + xx + pad[1]) * c;
        for (ch, &v) in px.iter().enumerate() {
            words[(at + ch) / 2] |= u32::from(round(v)) << (16 * ((at + ch) % 2));
        }
    }
    assert_eq!(words.len(), n * hp * wp * c / 2);
    words
}

fn same_bf16(a: u16, b: u16) -> bool {
    let nan = |v: u16| v & 0x7f80 == 0x7f80 && v & 0x7f != 0;
    a == b || (nan(a) && nan(b))
}

/// The bf16 maps: a convolution reading its input (and residual) from bf16 maps with a border
/// of `pads[0]` (`pads[2]`) and writing one with a border of `pads[1]` (`None`: f32 there).
/// The twin must give what its f32 form gives on the rounded values, rounded (the map's border
/// zero); the fast path the twin's words, bit for bit, on one and two threads.
fn check_conv_maps(
    case: ConvCase,
    pads: [Option<[usize; 2]>; 3],
    exp: i32,
    special: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let ConvCase {
        n,
        cg,
        og,
        groups: g,
        h,
        w,
        kernel,
        ..
    } = case;
    let (c, o) = (cg * g, og * g);
    // Maps hold channel pairs: odd counts stay f32.
    let in_pad = pads[0].filter(|_| c % 2 == 0);
    let out_pad = pads[1].filter(|_| o % 2 == 0);
    let res_pad = pads[2].filter(|_| o % 2 == 0 && case.residual);
    let params = Conv2dParams::default()
        .with_stride(case.stride)
        .with_padding(case.pad)
        .with_dilation(case.dilation)
        .with_groups(g);
    let wdims = [o, cg, kernel, kernel];
    let Ok(geom) = ConvGeometry::new([n, c, h, w], wdims, params) else {
        return Ok(());
    };
    let odims = geom.output;
    let x = spread(n * h * w * c, seed, exp, special);
    let wt = spread(o * cg * kernel * kernel, seed ^ 0x77, exp, special);
    let bias = spread(o, seed ^ 0x99, 2, false);
    let mut res = spread(geom.lens().2, seed ^ 0x42, 2, false);
    let conv = Bf16Conv::new(&wt, wdims, Some(&bias), params).unwrap();
    let xmap = in_pad.map(|p| to_map(&x, [n, c, h, w], p));
    let rmap = res_pad.map(|p| to_map(&res, odims, p));
    if res_pad.is_some() {
        // What the map holds.
        res.iter_mut().for_each(|v| *v = widen(round(*v)));
    }
    let input = || match (&xmap, in_pad) {
        (Some(words), Some(pad)) => Bf16Src::Bf16 { words, pad },
        _ => Bf16Src::F32(&x),
    };
    let residual = || {
        case.residual.then(|| match (&rmap, res_pad) {
            (Some(words), Some(pad)) => Bf16Src::Bf16 { words, pad },
            _ => Bf16Src::F32(&res),
        })
    };
    // The f32 twin on the same values.
    let mut plain = vec![f32::NAN; geom.lens().2];
    let epi = Epilogue::none().with_relu(case.relu);
    let epi = if case.residual {
        epi.with_residual(&res)
    } else {
        epi
    };
    conv.run_naive(&x, [n, c, h, w], &mut plain, epi).unwrap();
    let garbage = 0xdead_beefu32;
    let (mut want_f, mut want_w) = (vec![f32::NAN; plain.len()], Vec::new());
    match out_pad {
        Some(pad) => {
            want_w = vec![garbage; map_words(odims, pad).unwrap()];
            let dst = Bf16Dst::Bf16 {
                words: &mut want_w,
                pad,
            };
            conv.run_naive_io(input(), [n, c, h, w], dst, residual(), case.relu)
                .unwrap();
            let expect = to_map(&plain, odims, pad);
            for (i, (g, e)) in want_w.iter().zip(&expect).enumerate() {
                for sh in [0, 16] {
                    prop_assert!(
                        same_bf16((g >> sh) as u16, (e >> sh) as u16),
                        "{case:?} {pads:?}: twin word {i} {g:#010x} vs rounded f32 twin {e:#010x}"
                    );
                }
            }
            let mut back = vec![0.0; plain.len()];
            map_to_f32(&want_w, odims, pad, &mut back).unwrap();
            for (b, p) in back.iter().zip(&plain) {
                prop_assert!(same(*b, widen(round(*p))));
            }
        }
        None => {
            let dst = Bf16Dst::F32(&mut want_f);
            conv.run_naive_io(input(), [n, c, h, w], dst, residual(), case.relu)
                .unwrap();
            for (i, (g, p)) in want_f.iter().zip(&plain).enumerate() {
                prop_assert!(same(*g, *p), "{case:?} {pads:?}: value {i}: {g} vs {p}");
            }
        }
    }
    let Some(cpu) = Bf16Cpu::detect() else {
        return Ok(());
    };
    on_threads(|threads, ctx, pool| {
        match out_pad {
            Some(pad) => {
                let mut got = vec![garbage; want_w.len()];
                let dst = Bf16Dst::Bf16 {
                    words: &mut got,
                    pad,
                };
                pool.install(|| {
                    conv.run_io(cpu, ctx, input(), [n, c, h, w], dst, residual(), case.relu)
                })
                .unwrap();
                for (i, (g, e)) in got.iter().zip(&want_w).enumerate() {
                    for sh in [0, 16] {
                        prop_assert!(
                            same_bf16((g >> sh) as u16, (e >> sh) as u16),
                            "{case:?} {pads:?}, {threads} threads: word {i} fast {g:#010x} vs twin {e:#010x}"
                        );
                    }
                }
            }
            None => {
                let mut got = vec![f32::NAN; want_f.len()];
                let dst = Bf16Dst::F32(&mut got);
                pool.install(|| {
                    conv.run_io(cpu, ctx, input(), [n, c, h, w], dst, residual(), case.relu)
                })
                .unwrap();
                for (i, (g, e)) in got.iter().zip(&want_f).enumerate() {
                    prop_assert!(
                        same(*g, *e),
                        "{case:?} {pads:?}, {threads} threads: value {i}: fast {g:e} vs twin {e:e}"
                    );
                }
            }
        }
        Ok(())
    })
}

#[test]
fn conv_maps_awkward_shapes() {
    let _ = cpu();
    let base = ConvCase {
        n: 2,
        cg: 8,
        og: 16,
        groups: 1,
        h: 7,
        w: 6,
        kernel: 3,
        stride: 1,
        pad: 1,
        dilation: 1,
        residual: true,
        relu: true,
    };
    let one = ConvCase {
        kernel: 1,
        pad: 0,
        ..base
    };
    // Borders: none, the conv's, wider, narrower, uneven.
    let pads = [
        [Some([0, 0]), Some([0, 0]), Some([0, 0])],
        [Some([1, 1]), Some([1, 1]), Some([0, 0])],
        [Some([2, 1]), Some([0, 2]), Some([1, 0])],
        [Some([0, 0]), None, Some([2, 2])],
        [None, Some([1, 2]), None],
    ];
    for case in [
        base,
        one,
        // A 1x1 over 13 output rows of 14 (tiles split at each output row), and a strided one.
        ConvCase {
            n: 1,
            h: 14,
            w: 14,
            og: 32,
            ..one
        },
        ConvCase { stride: 2, ..one },
        // Grouped (gathered from an unpadded copy), the stem (f32 input), dilated.
        ConvCase {
            cg: 4,
            og: 6,
            groups: 4,
            ..base
        },
        ConvCase {
            cg: 3,
            og: 64,
            h: 23,
            w: 21,
            kernel: 7,
            stride: 2,
            pad: 3,
            residual: false,
            ..base
        },
        ConvCase {
            dilation: 2,
            pad: 2,
            og: 40,
            ..base
        },
    ] {
        for p in pads {
            check_conv_maps(case, p, 2, false, case.og as u64).unwrap();
        }
    }
}

#[test]
fn bad_maps_are_errors() {
    let conv = Bf16Conv::new(
        &[1.0; 72],
        [4, 2, 3, 3],
        None,
        Conv2dParams::default().with_padding(1),
    )
    .unwrap();
    let x = vec![0u32; map_words([1, 2, 5, 5], [1, 1]).unwrap()];
    let mut y = vec![0u32; map_words([1, 4, 5, 5], [0, 0]).unwrap()];
    // A map one word short, a border that does not match its length, odd channels.
    let short = Bf16Src::Bf16 {
        words: &x[1..],
        pad: [1, 1],
    };
    let dst = Bf16Dst::Bf16 {
        words: &mut y,
        pad: [0, 0],
    };
    assert!(
        conv.run_naive_io(short, [1, 2, 5, 5], dst, None, false)
            .is_err()
    );
    let wrong = Bf16Src::Bf16 {
        words: &x,
        pad: [0, 0],
    };
    let dst = Bf16Dst::Bf16 {
        words: &mut y,
        pad: [0, 0],
    };
    assert!(
        conv.run_naive_io(wrong, [1, 2, 5, 5], dst, None, false)
            .is_err()
    );
    assert!(map_words([1, 3, 5, 5], [0, 0]).is_err());
    assert!(map_words([usize::MAX, 2, 5, 5], [0, 0]).is_err());
    assert!(map_words([1, 2, 5, 5], [usize::MAX, 0]).is_err());
    let mut out = vec![0.0; 10];
    assert!(map_to_f32(&x, [1, 2, 5, 5], [1, 1], &mut out).is_err());
}

/// Max-pooling a bf16 map: the twin against the f32 max-pool of the widened values, and the
/// fast path against the twin, bit for bit (NaN included), on one and two threads.
#[allow(clippy::too_many_arguments)]
fn check_pool(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    pad: [usize; 2],
    special: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let c = 2 * c;
    let Ok(geom) = PoolGeometry::new([n, c, h, w], [kernel; 2], [stride; 2], [padding; 2]) else {
        return Ok(());
    };
    let x = spread(n * h * w * c, seed, 6, special);
    let words = to_map(&x, [n, c, h, w], pad);
    let [_, _, oh, ow] = geom.output;
    let mut want = vec![0.0; n * c * oh * ow];
    max_pool_map_naive(&geom, &words, pad, &mut want).unwrap();
    let mut wide = vec![0.0; x.len()];
    map_to_f32(&words, [n, c, h, w], pad, &mut wide).unwrap();
    let mut reference = vec![0.0; want.len()];
    fast::max_pool2d_nhwc(Cpu::detect(), Par::Seq, &geom, &wide, &mut reference).unwrap();
    for (i, (a, b)) in want.iter().zip(&reference).enumerate() {
        prop_assert!(same(*a, *b), "value {i}: twin {a} vs f32 max-pool {b}");
    }
    let Some(cpu) = Bf16Cpu::detect() else {
        return Ok(());
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut got = vec![f32::NAN; want.len()];
        pool.install(|| {
            max_pool_map(
                cpu,
                Par::with_threads(threads),
                &geom,
                &words,
                pad,
                &mut got,
            )
        })
        .unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            prop_assert!(
                same(*a, *b),
                "value {i}, {threads} threads: fast {a} vs twin {b}"
            );
        }
    }
    Ok(())
}

#[test]
fn pool_maps_awkward_shapes() {
    let _ = cpu();
    // The stem's pooling (3x3, stride 2, padding 1) on 64 channels; 34 channels (a masked
    // tail); a window wider than the stride on a border of 2.
    check_pool(2, 32, 15, 13, 3, 2, 1, [1, 1], true, 1).unwrap();
    check_pool(1, 17, 9, 8, 3, 2, 1, [0, 0], false, 2).unwrap();
    check_pool(1, 8, 7, 7, 4, 1, 2, [2, 0], true, 3).unwrap();
    let geom = PoolGeometry::new([1, 2, 2, 2], [2, 2], [2, 2], [0, 0]).unwrap();
    let mut out = [0.0; 2];
    assert!(max_pool_map_naive(&geom, &[0; 3], [0, 0], &mut out).is_err());
    assert!(max_pool_map_naive(&geom, &[0; 4], [0, 0], &mut out[..1]).is_err());
    let odd = PoolGeometry::new([1, 3, 2, 2], [2, 2], [2, 2], [0, 0]).unwrap();
    assert!(max_pool_map_naive(&odd, &[0; 6], [0, 0], &mut [0.0; 3]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn bf16_conv_matches_its_twin(n in 1usize..3, cg in 1usize..10, og in 1usize..40,
        groups in 1usize..4, h in 1usize..12, w in 1usize..12, kernel in 1usize..6,
        stride in 1usize..4, pad in 0usize..3, dilation in 1usize..3, residual in any::<bool>(),
        relu in any::<bool>(), exp in 0i32..12, special in any::<bool>(), seed in any::<u64>()) {
        let case = ConvCase { n, cg, og, groups, h, w, kernel, stride, pad, dilation, residual, relu };
        check_conv(case, exp, special, seed)?;
    }

    #[test]
    fn bf16_product_matches_its_twin(m in 1usize..40, k in 1usize..140, n in 1usize..100,
        lda_extra in 0usize..3, ldc_extra in 0usize..3, exp in 0i32..20, special in any::<bool>(),
        accumulate in any::<bool>(), seed in any::<u64>()) {
        check(m, k, n, lda_extra, ldc_extra, exp, special, accumulate, seed)?;
    }

    #[test]
    fn bf16_conv_maps_match_their_twin(n in 1usize..3, cg in 1usize..10, og in 1usize..24,
        groups in 1usize..3, h in 1usize..10, w in 1usize..10, kernel in 1usize..5,
        stride in 1usize..3, pad in 0usize..3, residual in any::<bool>(), relu in any::<bool>(),
        pads in proptest::array::uniform3(proptest::option::of(proptest::array::uniform2(0usize..3))),
        special in any::<bool>(), seed in any::<u64>()) {
        let case = ConvCase { n, cg, og, groups, h, w, kernel, stride, pad, dilation: 1, residual, relu };
        check_conv_maps(case, pads, 4, special, seed)?;
    }

    #[test]
    fn bf16_pool_maps_match_their_twin(n in 1usize..3, c in 1usize..40, h in 1usize..12,
        w in 1usize..12, kernel in 1usize..5, stride in 1usize..4, padding in 0usize..3,
        pad in proptest::array::uniform2(0usize..3), special in any::<bool>(), seed in any::<u64>()) {
        check_pool(n, c, h, w, kernel, stride, padding, pad, special, seed)?;
    }
}

#[test]
fn scratch_only_where_rows_are_copied() {
    let conv = |o: usize, c: usize, k: usize, params: Conv2dParams| {
        let w = vec![0.5; o * c / params.groups * k * k];
        Bf16Conv::new(&w, [o, c / params.groups, k, k], None, params).unwrap()
    };
    let p1 = Conv2dParams::default().with_padding(1);
    // Read in place from a padded map: no scratch.
    assert_eq!(conv(64, 64, 3, p1).scratch_len([1, 64, 56, 56]).unwrap(), 0);
    let s2 = Conv2dParams::default().with_stride(2);
    assert_eq!(
        conv(128, 64, 1, s2).scratch_len([1, 64, 56, 56]).unwrap(),
        0
    );
    // A 1x1's rounded rows, the stem's and a grouped conv's im2col rows.
    assert!(
        conv(256, 64, 1, Conv2dParams::default())
            .scratch_len([1, 64, 56, 56])
            .unwrap()
            > 0
    );
    let stem = Conv2dParams::default().with_stride(2).with_padding(3);
    assert!(conv(64, 3, 7, stem).scratch_len([1, 3, 224, 224]).unwrap() > 0);
    let grouped = p1.with_groups(32);
    assert!(
        conv(128, 128, 3, grouped)
            .scratch_len([1, 128, 28, 28])
            .unwrap()
            > 0
    );
}
