//! Every fast kernel against its naive twin: random shapes (proptest) plus a fixed list of
//! awkward ones. `RESNET_PROPS_CASES` sets the number of random cases (`cargo xtask props
//! --cases N`); plain `cargo test` runs a quick count.

mod common;
use common::values;
use proptest::prelude::*;
use resnet_kernels::fast::{self, ConvAlgo, Ctx, Epilogue, PackedConv, PackedLinear, Par, Scratch};
use resnet_kernels::{Conv2dParams, ConvGeometry, Cpu, PoolGeometry, naive};

fn cases() -> u32 {
    std::env::var("RESNET_PROPS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// [`values`] with non-finite values mixed in: about one in seven is NaN, +inf, -inf or -0.0.
fn with_non_finite(len: usize, seed: u64) -> Vec<f32> {
    let mut v = values(len, seed);
    for (i, x) in v.iter_mut().enumerate() {
        let pick = (i as u64 ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 58;
        *x = match pick % 28 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => -0.0,
            _ => *x,
        };
    }
    v
}

/// Equal values, or NaN on both sides (NaN payloads are not part of the contract).
fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn to_nhwc(d: [usize; 4], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    fast::nchw_to_nhwc(Cpu::detect(), d, x, &mut y).unwrap();
    y
}

fn to_nchw(d: [usize; 4], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    fast::nhwc_to_nchw(d, x, &mut y).unwrap();
    y
}

/// Per output value of a 3x3 stride-1 conv computed in `m x m` Winograd tiles: `Σ_c max_q
/// |w[o, c, q]| · Σ |x[c, p]|` over the `(m + 2)²` input pixels `p` of the value's tile. The
/// transforms mix every pixel of a tile into every output of it (terms that cancel exactly,
/// but not in rounding), so Winograd's rounding error scales with this, not with the value's
/// own receptive field: an output at a padded corner sees 4 taps, its tile 36 pixels.
fn winograd_tile_bound(geom: &ConvGeometry, x: &[f32], w: &[f32], m: usize) -> Vec<f32> {
    let [n, c, h, wd] = geom.input;
    let [_, o, oh, ow] = geom.output;
    let pad = geom.params.padding;
    let t = m + 2;
    let mut out = vec![0.0f32; n * o * oh * ow];
    for ni in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let (y0, x0) = (
                    (oy / m * m) as isize - pad[0] as isize,
                    (ox / m * m) as isize - pad[1] as isize,
                );
                let sums: Vec<f32> = (0..c)
                    .map(|ci| {
                        let mut s = 0.0;
                        for yy in y0..y0 + t as isize {
                            for xx in x0..x0 + t as isize {
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                    s += x[((ni * c + ci) * h + yy as usize) * wd + xx as usize]
                                        .abs();
                                }
                            }
                        }
                        s
                    })
                    .collect();
                for oc in 0..o {
                    let v: f32 = (0..c)
                        .map(|ci| {
                            let k = &w[(oc * c + ci) * 9..][..9];
                            k.iter().fold(0.0f32, |a, v| a.max(v.abs())) * sums[ci]
                        })
                        .sum();
                    out[((ni * o + oc) * oh + oy) * ow + ox] = v;
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct ConvCase {
    n: usize,
    cg: usize,
    og: usize,
    groups: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    bias: bool,
    residual: bool,
    relu: bool,
    seed: u64,
}

/// How [`check_conv`] builds the convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Build {
    /// The algorithm chosen from the shape.
    Chosen,
    /// The algorithm forced.
    Forced(ConvAlgo),
    /// As chosen, with NaN and infinities in the residual: the output step must carry them
    /// through as the naive add and ReLU do.
    NonFiniteResidual,
}

/// Compare the fast conv (NHWC, fused epilogue) with naive conv + add + relu (NCHW). The
/// tolerance is the classical bound on a K-term f32 dot product, (K + 2) u Σ|x w|, with
/// Σ|x w| computed by the naive kernel on absolute values.
fn check_conv(cpu: Cpu, c: ConvCase) -> Result<(), TestCaseError> {
    check_conv_built(cpu, c, Build::Chosen)
}

fn check_conv_built(cpu: Cpu, c: ConvCase, build: Build) -> Result<(), TestCaseError> {
    let (ci, co) = (c.cg * c.groups, c.og * c.groups);
    let params = Conv2dParams {
        stride: c.stride,
        padding: c.pad,
        dilation: c.dil,
        groups: c.groups,
    };
    let wd = [co, c.cg, c.k[0], c.k[1]];
    let Ok(geom) = ConvGeometry::new([c.n, ci, c.h, c.w], wd, params) else {
        return Ok(()); // kernel larger than the padded input: not a valid case
    };
    let (li, lw, lo) = geom.lens();
    let x = values(li, c.seed);
    let wt = values(lw, c.seed + 1);
    let b = values(co, c.seed + 2);
    let r = if build == Build::NonFiniteResidual {
        with_non_finite(lo, c.seed + 3)
    } else {
        values(lo, c.seed + 3)
    };
    let bias = c.bias.then_some(&b[..]);
    let mut want = vec![0.0; lo];
    naive::conv2d(&geom, &x, &wt, bias, &mut want).unwrap();
    let mut bound = vec![0.0; lo];
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let abs_b = abs(&b);
    naive::conv2d(
        &geom,
        &abs(&x),
        &abs(&wt),
        bias.map(|_| &abs_b[..]),
        &mut bound,
    )
    .unwrap();
    if c.residual {
        let w2 = want.clone();
        naive::add(&w2, &r, &mut want).unwrap();
        for (bv, rv) in bound.iter_mut().zip(&r) {
            *bv += rv.abs();
        }
    }
    if c.relu {
        let w2 = want.clone();
        naive::relu(&w2, &mut want).unwrap();
    }
    let packed = match build {
        Build::Forced(algo) => {
            let p = PackedConv::with_algorithm(&wt, wd, bias, params, algo).unwrap();
            prop_assert_eq!(p.algorithm(), algo);
            p
        }
        _ => PackedConv::new(&wt, wd, bias, params).unwrap(),
    };
    let od = geom.output;
    let res_nhwc = to_nhwc(od, &r);
    let mut epi = Epilogue::none().with_relu(c.relu);
    if c.residual {
        epi = epi.with_residual(&res_nhwc);
    }
    let mut sequential: Option<Vec<f32>> = None;
    // Sequential; then on the pool told it has 2 and 5 threads (different channel splits),
    // with scratch for fewer threads than the pool has (buffers shared in turn).
    for par in [Par::Seq, Par::with_threads(2), Par::with_threads(5)] {
        let scratch = Scratch::new(par.threads().min(2));
        let mut out = vec![f32::NAN; lo];
        packed
            .run(
                &Ctx::new(cpu, par, &scratch),
                &to_nhwc(geom.input, &x),
                geom.input,
                &mut out,
                epi,
            )
            .unwrap();
        // Threads change no bit (tiles, and channel blocks on small maps, are fixed sums).
        if let Some(seq) = &sequential {
            prop_assert!(
                seq.iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{:?}: the parallel run differs from the sequential one",
                c
            );
        }
        sequential.get_or_insert(out.clone());
        let tile_bound = (packed.algorithm() == ConvAlgo::Winograd4x4)
            .then(|| winograd_tile_bound(&geom, &x, &wt, 4));
        let got = to_nchw(od, &out);
        let kdim = (c.cg * c.k[0] * c.k[1] + 2) as f32;
        for i in 0..lo {
            if !want[i].is_finite() {
                prop_assert!(
                    same(got[i], want[i]),
                    "{:?} {:?} at {}: fast {} naive {}",
                    c,
                    packed.algorithm(),
                    i,
                    got[i],
                    want[i]
                );
                continue;
            }
            // F(4x4)'s transforms (constants up to 5, 8 and 1/24) add an error that scales
            // with the tile: measured at up to 10.5 eps x the tile bound over 2000 cases
            // (one input channel; examples/wino_err.rs gives the picture per channel count).
            let tol = kdim * f32::EPSILON * bound[i]
                + 32.0 * f32::EPSILON * tile_bound.as_ref().map_or(0.0, |t| t[i])
                + f32::MIN_POSITIVE;
            prop_assert!(
                (got[i] - want[i]).abs() <= tol,
                "{:?} {:?} at {}: fast {} naive {} tol {}",
                c,
                packed.algorithm(),
                i,
                got[i],
                want[i],
                tol
            );
        }
    }
    Ok(())
}

/// Any instruction set this CPU has (AVX-512, AVX2, NEON, scalar), so every code path is
/// checked on the machine that runs the tests.
fn any_level() -> impl Strategy<Value = Cpu> {
    prop::sample::select(Cpu::all_levels())
}

/// The instruction sets below the detected one (at least scalar).
fn lower_level() -> impl Strategy<Value = Cpu> {
    let mut all = Cpu::all_levels();
    if all.len() > 1 {
        all.remove(0);
    }
    prop::sample::select(all)
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (
            1usize..3,
            1usize..9,
            1usize..9,
            prop_oneof![Just(1usize), 1usize..5],
        ),
        (1usize..12, 1usize..12),
        (
            prop_oneof![Just(1usize), Just(3), 1usize..8],
            1usize..4,
            0usize..3,
            1usize..3,
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, cg, og, groups), (h, w), (k, s, p, d), (bias, residual, relu, seed))| ConvCase {
                n,
                cg,
                og,
                groups,
                h,
                w,
                k: [k, k],
                stride: [s, s],
                pad: [p.min(k / 2 + 1), p.min(k / 2 + 1)],
                dil: [d, d],
                bias,
                residual,
                relu,
                seed,
            },
        )
}

/// Shapes chosen to hit edges: 1x1 pointwise, vector tails, primes, a single pixel, tiles that
/// split unevenly, ResNeXt-like groups, the ResNet stem, asymmetric kernels and strides.
fn awkward() -> Vec<ConvCase> {
    let base = ConvCase {
        n: 1,
        cg: 1,
        og: 1,
        groups: 1,
        h: 1,
        w: 1,
        k: [1, 1],
        stride: [1, 1],
        pad: [0, 0],
        dil: [1, 1],
        bias: true,
        residual: true,
        relu: true,
        seed: 7,
    };
    vec![
        base,
        ConvCase {
            cg: 17,
            og: 33,
            h: 5,
            w: 7,
            ..base
        },
        ConvCase {
            cg: 64,
            og: 64,
            h: 9,
            w: 11,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            cg: 3,
            og: 64,
            h: 23,
            w: 19,
            k: [7, 7],
            stride: [2, 2],
            pad: [3, 3],
            ..base
        },
        ConvCase {
            cg: 32,
            og: 64,
            h: 9,
            w: 9,
            stride: [2, 2],
            residual: false,
            relu: false,
            ..base
        },
        ConvCase {
            cg: 4,
            og: 4,
            groups: 32,
            h: 8,
            w: 9,
            k: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            ..base
        },
        // Small maps with many output channels: a parallel run splits the channels.
        ConvCase {
            cg: 20,
            og: 130,
            h: 3,
            w: 5,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            n: 2,
            cg: 70,
            og: 200,
            h: 2,
            w: 3,
            ..base
        },
        // The direct grouped path: asymmetric kernel and padding, a row shorter than one
        // step of two vectors, then rows of one full step and a tail, with and without the
        // residual.
        ConvCase {
            n: 2,
            cg: 3,
            og: 5,
            groups: 4,
            h: 7,
            w: 19,
            k: [3, 5],
            pad: [1, 2],
            ..base
        },
        ConvCase {
            cg: 4,
            og: 8,
            groups: 3,
            h: 4,
            w: 41,
            k: [3, 3],
            pad: [1, 1],
            residual: false,
            ..base
        },
        // Groups sharing one product (8 of 2 channels; 3 of 5 out, 7 in), stride 1 and 2.
        ConvCase {
            cg: 2,
            og: 2,
            groups: 64,
            h: 5,
            w: 7,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            cg: 7,
            og: 5,
            groups: 6,
            h: 6,
            w: 5,
            k: [3, 3],
            stride: [2, 1],
            pad: [1, 0],
            ..base
        },
        ConvCase {
            cg: 5,
            og: 3,
            groups: 3,
            h: 13,
            w: 2,
            k: [3, 3],
            pad: [1, 1],
            dil: [2, 2],
            ..base
        },
        ConvCase {
            n: 2,
            cg: 7,
            og: 15,
            h: 41,
            w: 43,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            cg: 300,
            og: 17,
            h: 40,
            w: 40,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            cg: 2,
            og: 2,
            h: 3,
            w: 9,
            k: [1, 3],
            stride: [1, 2],
            pad: [0, 1],
            ..base
        },
        ConvCase {
            n: 3,
            cg: 1,
            og: 1,
            h: 2,
            w: 2,
            k: [2, 2],
            ..base
        },
        // Tiles of several whole images (a training batch's late stages): 7 images of 6x6
        // whose im2col rows are 1800 long go 4 + 3 to a tile.
        ConvCase {
            n: 7,
            cg: 200,
            og: 70,
            h: 6,
            w: 6,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        // The same for a pointwise conv: 5 images of 7x7 with 1500 channels, 3 + 2.
        ConvCase {
            n: 5,
            cg: 1500,
            og: 16,
            h: 7,
            w: 7,
            ..base
        },
    ]
}

#[test]
fn conv_awkward_shapes() {
    for cpu in Cpu::all_levels() {
        for c in awkward() {
            check_conv(cpu, c).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn conv_matches_naive(c in conv_case()) {
        check_conv(Cpu::detect(), c)?;
    }

    #[test]
    fn winograd_shapes_match_naive(n in 1usize..3, cg in 8usize..40, og in 8usize..40, h in 1usize..20,
                                   w in 1usize..20, pad in 0usize..3, flags in any::<(bool, bool, bool)>(),
                                   seed in any::<u64>()) {
        let c = ConvCase { n, cg, og, groups: 1, h, w, k: [3, 3], stride: [1, 1], pad: [pad, pad],
                           dil: [1, 1], bias: flags.0, residual: flags.1, relu: flags.2, seed };
        check_conv(Cpu::detect(), c)?;
    }

    #[test]
    fn winograd_4x4_forced_matches_naive(n in 1usize..3, cg in 1usize..40, og in 1usize..40,
                                         h in 1usize..23, w in 1usize..23, pad in 0usize..3,
                                         flags in any::<(bool, bool, bool)>(),
                                         cpu in any_level(), seed in any::<u64>()) {
        let c = ConvCase { n, cg, og, groups: 1, h, w, k: [3, 3], stride: [1, 1], pad: [pad, pad],
                           dil: [1, 1], bias: flags.0, residual: flags.1, relu: flags.2, seed };
        check_conv_built(cpu, c, Build::Forced(ConvAlgo::Winograd4x4))?;
    }

    #[test]
    fn grouped_direct_shapes_match_naive(n in 1usize..3, groups in 2usize..40, cg in 1usize..9,
                                         og in 1usize..9, h in 1usize..12, w in 1usize..40,
                                         k in (1usize..6, 1usize..6), pad in 0usize..3,
                                         flags in any::<(bool, bool, bool)>(),
                                         cpu in any_level(), seed in any::<u64>()) {
        let k = [k.0.min(h + 2 * pad), k.1.min(w + 2 * pad)];
        let c = ConvCase { n, cg, og, groups, h, w, k, stride: [1, 1], pad: [pad, pad], dil: [1, 1],
                           bias: flags.0, residual: flags.1, relu: flags.2, seed };
        check_conv(cpu, c)?;
    }

    #[test]
    fn im2col_forced_on_any_shape_matches_naive(c in conv_case(), cpu in any_level()) {
        check_conv_built(cpu, c, Build::Forced(ConvAlgo::Im2colTiled))?;
    }

    #[test]
    fn non_finite_residuals_pass_through_the_output_step(c in conv_case(), cpu in any_level()) {
        let c = ConvCase { residual: true, ..c };
        check_conv_built(cpu, c, Build::NonFiniteResidual)?;
    }

    #[test]
    fn conv_lower_levels_match_naive(c in conv_case(), cpu in lower_level()) {
        check_conv(cpu, c)?;
    }

    #[test]
    fn max_pool_matches_naive(n in 1usize..3, c in 1usize..40, h in 1usize..14, w in 1usize..14,
                              k in 1usize..4, s in 1usize..3, seed in any::<u64>()) {
        let p = k / 2;
        let Ok(g) = PoolGeometry::new([n, c, h, w], [k, k], [s, s], [p, p]) else { return Ok(()) };
        for x in [values(n * c * h * w, seed), with_non_finite(n * c * h * w, seed)] {
            let mut want = vec![0.0; g.output.iter().product()];
            naive::max_pool2d(&g, &x, &mut want).unwrap();
            for cpu in Cpu::all_levels() {
                for par in [Par::Seq, Par::with_threads(2)] {
                    let mut out = vec![0.0; want.len()];
                    fast::max_pool2d_nhwc(cpu, par, &g, &to_nhwc(g.input, &x), &mut out).unwrap();
                    let got = to_nchw(g.output, &out);
                    prop_assert!(got.iter().zip(&want).all(|(a, b)| same(*a, *b)),
                                 "{:?}: {:?} vs {:?}", cpu.level(), got, want);
                }
            }
        }
    }

    #[test]
    fn global_pool_matches_naive(n in 0usize..3, c in 1usize..70, h in 1usize..9, w in 1usize..9, seed in any::<u64>()) {
        let d = [n, c, h, w];
        let x = values(n * c * h * w, seed);
        let mut want = vec![0.0; n * c];
        naive::adaptive_avg_pool2d(d, [1, 1], &x, &mut want).unwrap();
        let mut got = vec![0.0; n * c];
        fast::global_avg_pool_nhwc(Cpu::detect(), d, &to_nhwc(d, &x), &mut got).unwrap();
        for (a, b) in got.iter().zip(&want) {
            prop_assert!((a - b).abs() <= 1e-6 * (h * w) as f32, "{} vs {}", a, b);
        }
    }

    #[test]
    fn linear_matches_naive(n in 0usize..9, i in 1usize..300, o in 1usize..150, cpu in any_level(), seed in any::<u64>()) {
        let x = values(n * i, seed);
        let w = values(o * i, seed + 1);
        let b = values(o, seed + 2);
        let mut want = vec![0.0; n * o];
        naive::linear([n, i, o], &x, &w, Some(&b), &mut want).unwrap();
        let fc = PackedLinear::new(&w, i, o, Some(&b)).unwrap();
        let mut got = vec![0.0; n * o];
        fc.run(cpu, n, &x, &mut got).unwrap();
        for (a, bb) in got.iter().zip(&want) {
            prop_assert!((a - bb).abs() <= (i + 2) as f32 * f32::EPSILON * (i as f32 + 1.0), "{} vs {}", a, bb);
        }
        // Threads (output features split 2 and 5 ways) and the other rows change no bit.
        for par in [Par::with_threads(2), Par::with_threads(5)] {
            let mut split = vec![f32::NAN; n * o];
            fc.run_par(cpu, par, n, &x, &mut split).unwrap();
            prop_assert!(split.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{:?}", par);
        }
        for (r, row) in got.chunks_exact(o).enumerate() {
            let mut alone = vec![f32::NAN; o];
            fc.run(cpu, 1, &x[r * i..(r + 1) * i], &mut alone).unwrap();
            prop_assert!(alone.iter().zip(row).all(|(a, b)| a.to_bits() == b.to_bits()), "row {}", r);
        }
    }

    #[test]
    fn relu_and_add_match_naive(len in 0usize..100, seed in any::<u64>()) {
        let a = values(len, seed);
        let b = values(len, seed + 1);
        let mut want = vec![0.0; len];
        naive::add(&a, &b, &mut want).unwrap();
        let mut got = vec![0.0; len];
        fast::add(Cpu::detect(), &a, &b, &mut got).unwrap();
        prop_assert_eq!(&got, &want);
        // ReLU on every instruction set, non-finite values and -0.0 included: the same bits
        // but for NaN payloads (-0.0 becomes +0.0 on both paths).
        let a = with_non_finite(len, seed);
        let mut want_r = vec![0.0; len];
        naive::relu(&a, &mut want_r).unwrap();
        let mut inplace = a.clone();
        naive::relu_inplace(&mut inplace);
        for cpu in Cpu::all_levels() {
            let mut got_r = a.clone();
            fast::relu_inplace(cpu, &mut got_r);
            for ((g, w), i) in got_r.iter().zip(&want_r).zip(&inplace) {
                prop_assert!(same(*g, *w) && same(*i, *w) && (w.is_nan() || g.to_bits() == w.to_bits()),
                             "{:?}: {} vs {}", cpu.level(), g, w);
            }
        }
    }

    #[test]
    fn option_a_shortcut_matches_naive(n in 1usize..3, c in 1usize..9, extra in 0usize..9, h in 1usize..9,
                                       w in 1usize..9, s in 1usize..4, seed in any::<u64>()) {
        let d = [n, c, h, w];
        let out_c = c + extra;
        let od = [n, out_c, h.div_ceil(s), w.div_ceil(s)];
        let x = values(n * c * h * w, seed);
        let mut want = vec![f32::NAN; od.iter().product()];
        naive::subsample_pad_channels(d, s, out_c, &x, &mut want).unwrap();
        let mut got = vec![f32::NAN; want.len()];
        fast::subsample_pad_channels_nhwc(d, s, out_c, &to_nhwc(d, &x), &mut got).unwrap();
        prop_assert_eq!(to_nchw(od, &got), want.clone());
        // Zero channels: (out - in) / 2 before the input's, the rest after.
        let before = extra / 2;
        prop_assert!(want[..before * od[2] * od[3]].iter().all(|&v| v == 0.0));
        prop_assert_eq!(want[before * od[2] * od[3]], x[0]);
    }

    #[test]
    fn pixel_shuffle_matches_naive(n in 1usize..3, c in 1usize..6, r in 1usize..5, h in 1usize..7, w in 1usize..7, seed in any::<u64>()) {
        let d = [n, c * r * r, h, w];
        let x = values(n * c * r * r * h * w, seed);
        let mut want = vec![0.0; x.len()];
        naive::pixel_shuffle(d, r, &x, &mut want).unwrap();
        let mut got = vec![0.0; x.len()];
        fast::pixel_shuffle_nhwc(d, r, &to_nhwc(d, &x), &mut got).unwrap();
        prop_assert_eq!(to_nchw([n, c, h * r, w * r], &got), want);
    }

    #[test]
    fn layout_conversions_match_the_index_formula(
        n in 0usize..3, c in prop_oneof![1usize..5, 1usize..20], h in 1usize..20,
        w in 1usize..40, cpu in any_level(), seed in any::<u64>(),
    ) {
        let d = [n, c, h, w];
        let x = values(n * c * h * w, seed);
        let mut nhwc = vec![0.0; x.len()];
        fast::nchw_to_nhwc(cpu, d, &x, &mut nhwc).unwrap();
        for ni in 0..n {
            for ci in 0..c {
                for p in 0..h * w {
                    prop_assert_eq!(nhwc[(ni * h * w + p) * c + ci], x[(ni * c + ci) * h * w + p]);
                }
            }
        }
        let mut back = vec![0.0; x.len()];
        fast::nhwc_to_nchw(d, &nhwc, &mut back).unwrap();
        prop_assert_eq!(back, x);
    }
}
