//! Every fast backward kernel ([`fast::grad`], NHWC) against its reference twin in
//! [`naive_grad`](resnet_kernels::naive_grad) (NCHW, f64 accumulation): random shapes
//! (proptest) plus fixed lists of awkward ones, on every instruction set this CPU has, each run
//! sequentially and on a 3-thread rayon pool, which must give bitwise the same result.
//! `RESNET_PROPS_CASES` sets the number of random cases, as for `props.rs`; plain `cargo test`
//! runs a quick count.
//!
//! Tolerances, relative to the largest reference value of each compared output:
//! - [`CONV_REL`], [`BN_REL`] = 1e-4 for the convolution and batch-norm gradients (f32 products
//!   and partial sums against f64 sums rounded once).
//!
//!   Batch-norm's `y` and `grad_z` are each one short f32 expression per value (PyTorch's CPU
//!   form): `y = z * a + b (+ r)`, then the ReLU, and `grad_z = k1 * g - k2 - (z - mean) * k3`.
//!   Their scale is the larger of the largest reference value and the largest sum of the
//!   magnitudes of those terms (the classical bound on the expression's rounding, as
//!   `props.rs` bounds a conv by `Σ|x w|`). The two differ only where the terms cancel:
//!   - `|mean| * inv_std` large (few values per channel close together, or an offset large
//!     against the spread): `z * a` and `b` are much larger than `y`;
//!   - a ReLU that zeroes nearly everything: the largest output is tiny, the values before it
//!     (which carried the rounding) were not;
//!   - two values per channel: the exact `grad_z` is an O(eps / var) remainder (5e-6 against
//!     terms of ~1), and the fast one is off by ~1e-7 of the terms, 0.5% of the reference.
//! - [`MOVE_REL`] = 1e-6 for the pools' backward, where the fast path adds in f32 (overlapping
//!   max-pool windows) or multiplies by the rounded `1 / (H*W)`; exact where each input gets one
//!   value (max pool with stride >= window).
//! - Exact for the pure permutations (option-A shortcut, pixel shuffle), for the ReLU mask and
//!   for the shortcut's gradient of the batch-norm backward.
//!
//! Outputs are filled with NaN before a kernel that overwrites them, so a position it forgets
//! fails the test.

mod common;
use common::values;
use proptest::prelude::*;
use resnet_kernels::fast::grad::{self, BnTrain, ConvGrad, ResidualGrad};
use resnet_kernels::fast::{self, Ctx, Par, Scratch};
use resnet_kernels::naive_grad::{self as ng, BnSaved};
use resnet_kernels::{Conv2dParams, ConvGeometry, Cpu, KernelError, PoolGeometry};
use std::sync::OnceLock;

fn cases() -> u32 {
    std::env::var("RESNET_PROPS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// Convolution gradients: relative to the largest reference value.
const CONV_REL: f64 = 1e-4;
/// Batch-norm outputs and gradients: relative to the largest reference value.
const BN_REL: f64 = 1e-4;
/// Data movements that round differently (pool backward): relative to the largest value.
const MOVE_REL: f64 = 1e-6;
/// Threads of the pool for the parallel runs, and buffers of the scratch.
const THREADS: usize = 3;

/// The 3-thread pool the parallel runs are installed on.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(THREADS)
            .build()
            .expect("a 3-thread rayon pool")
    })
}

/// The two runs of every kernel: on the calling thread, and on [`pool`].
fn pars() -> [Par; 2] {
    [Par::Seq, Par::with_threads(THREADS)]
}

/// Run `f` where `par` says: on the calling thread, or inside [`pool`].
fn run_on<R: Send>(par: Par, f: impl FnOnce() -> R + Send) -> R {
    if par.is_parallel() {
        pool().install(f)
    } else {
        f()
    }
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

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn kernel_err(what: &str, e: KernelError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: unexpected error {e}"))
}

/// Row-major coordinates of flat index `i` in `dims`.
fn coords(dims: &[usize], mut i: usize) -> Vec<usize> {
    let mut c = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        let d = d.max(1);
        c[k] = i % d;
        i /= d;
    }
    c
}

/// `got` against `want` within `rel` times the largest finite `|want|` (exact for `rel = 0`,
/// where `-0.0` equals `0.0`); a NaN or infinity must be met by the same. `dims` (the layout of
/// both) names the worst element in the failure message.
fn check_close(
    what: &str,
    dims: &[usize],
    got: &[f32],
    want: &[f64],
    rel: f64,
) -> Result<(), TestCaseError> {
    check_scaled(what, dims, got, want, rel, 0.0)
}

/// [`check_close`] with the scale at least `floor`.
fn check_scaled(
    what: &str,
    dims: &[usize],
    got: &[f32],
    want: &[f64],
    rel: f64,
    floor: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: lengths", what);
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(floor, |m, v| m.max(v.abs()));
    let tol = rel * scale;
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        let err = if w.is_finite() && g.is_finite() {
            (g - w).abs()
        } else if g == w || (g.is_nan() && w.is_nan()) {
            0.0
        } else {
            f64::INFINITY
        };
        if err > tol {
            bad += 1;
            if worst.is_none_or(|(_, e)| err > e) {
                worst = Some((i, err));
            }
        }
    }
    if let Some((i, err)) = worst {
        return Err(TestCaseError::fail(format!(
            "{what}: {bad} of {} values out of tolerance; worst at {:?} of {dims:?}: fast {} \
             reference {} (error {err:e}, tolerance {tol:e} = {rel:e} x {scale:e})",
            got.len(),
            coords(dims, i),
            got[i],
            want[i],
        )));
    }
    Ok(())
}

/// Bitwise equality (the parallel run against the sequential one).
fn check_bits(what: &str, a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len(), "{}: lengths", what);
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        return Err(TestCaseError::fail(format!(
            "{what}: the parallel run differs from the sequential one at {i}: {} vs {}",
            b[i], a[i]
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Convolution

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
    /// Ask for the bias gradient.
    bias: bool,
    /// Pass an addend to the input gradient.
    add: bool,
    seed: u64,
}

impl ConvCase {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.stride,
            padding: self.pad,
            dilation: self.dil,
            groups: self.groups,
        }
    }

    /// Grow H and W to the dilated kernel's span where the padding does not make up for it.
    fn fitted(mut self) -> Self {
        let span = [0, 1].map(|a| self.dil[a] * (self.k[a] - 1) + 1);
        self.h = self.h.max(span[0].saturating_sub(2 * self.pad[0]));
        self.w = self.w.max(span[1].saturating_sub(2 * self.pad[1]));
        self
    }
}

/// [`ConvGrad::backward_weight`] (with the bias gradient when `c.bias`) and
/// [`ConvGrad::backward_input`] (with an addend when `c.add`) against
/// [`ng::conv2d_backward_weight`] and [`ng::conv2d_backward_input`] (+ the addend), on every
/// instruction set, sequential and parallel (bitwise equal).
fn check_conv(c: ConvCase) -> Result<(), TestCaseError> {
    let (ci, co) = (c.cg * c.groups, c.og * c.groups);
    let wd = [co, c.cg, c.k[0], c.k[1]];
    let params = c.params();
    let geom = ConvGeometry::new([c.n, ci, c.h, c.w], wd, params)
        .map_err(|e| kernel_err(&format!("{c:?}: geometry"), e))?;
    let (id, od) = (geom.input, geom.output);
    let (li, lw, lo) = geom.lens();
    let x = values(li, c.seed);
    let wt = values(lw, c.seed + 1);
    let gy = values(lo, c.seed + 2);
    let addend = values(li, c.seed + 3);

    let mut want_gw = vec![0.0; lw];
    let mut want_gb = vec![0.0; co];
    ng::conv2d_backward_weight(&geom, &x, &gy, &mut want_gw, Some(&mut want_gb)).unwrap();
    let mut want_gx = vec![0.0; li];
    ng::conv2d_backward_input(&geom, &gy, &wt, &mut want_gx).unwrap();
    let want_gx: Vec<f64> = if c.add {
        want_gx
            .iter()
            .zip(&addend)
            .map(|(&g, &a)| f64::from(g) + f64::from(a))
            .collect()
    } else {
        f64s(&want_gx)
    };
    let (want_gw, want_gb) = (f64s(&want_gw), f64s(&want_gb));

    let x_nhwc = to_nhwc(id, &x);
    let gy_nhwc = to_nhwc(od, &gy);
    let add_nhwc = to_nhwc(id, &addend);
    let add = c.add.then_some(&add_nhwc[..]);
    let grad = ConvGrad::new(&wt, wd, params).map_err(|e| kernel_err(&format!("{c:?}"), e))?;
    prop_assert_eq!(grad.geometry(id).unwrap(), geom);
    // One scratch for every run: its buffers hold stale values from the previous ones.
    let scratch = Scratch::new(THREADS);
    for cpu in Cpu::all_levels() {
        let mut sequential: Option<[Vec<f32>; 3]> = None;
        for par in pars() {
            let what = format!("{c:?} on {} with {par:?}", cpu.level());
            let ctx = Ctx::new(cpu, par, &scratch);
            let mut gw = vec![f32::NAN; lw];
            let mut gb = vec![f32::NAN; co];
            let mut gx = vec![f32::NAN; li];
            run_on(par, || {
                let gbias = c.bias.then_some(&mut gb[..]);
                grad.backward_weight(&ctx, &x_nhwc, id, &gy_nhwc, &mut gw, gbias)?;
                grad.backward_input(&ctx, id, &gy_nhwc, &mut gx, add)
            })
            .map_err(|e| kernel_err(&what, e))?;
            check_close(
                &format!("{what}: grad_weight"),
                &wd,
                &gw,
                &want_gw,
                CONV_REL,
            )?;
            if c.bias {
                check_close(
                    &format!("{what}: grad_bias"),
                    &[co],
                    &gb,
                    &want_gb,
                    CONV_REL,
                )?;
            } else {
                prop_assert!(gb.iter().all(|v| v.is_nan()), "{}: grad_bias written", what);
            }
            let gx_nchw = to_nchw(id, &gx);
            check_close(
                &format!("{what}: grad_input"),
                &id,
                &gx_nchw,
                &want_gx,
                CONV_REL,
            )?;
            if let Some([w0, b0, x0]) = &sequential {
                check_bits(&format!("{what}: grad_weight"), w0, &gw)?;
                check_bits(&format!("{what}: grad_bias"), b0, &gb)?;
                check_bits(&format!("{what}: grad_input"), x0, &gx)?;
            } else {
                sequential = Some([gw, gb, gx]);
            }
        }
    }
    Ok(())
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (
            1usize..5,
            // Groups; 0 is depthwise (one input channel per group).
            prop_oneof![Just(1usize), Just(2), Just(4), Just(0)],
            1usize..21,
            1usize..21,
        ),
        (1usize..13, 1usize..13),
        (
            prop_oneof![
                Just([1usize, 1]),
                Just([3, 3]),
                Just([7, 7]),
                Just([1, 3]),
                Just([5, 2]),
                (1usize..6, 1usize..6).prop_map(|(a, b)| [a, b]),
            ],
            (1usize..4, 1usize..4, any::<bool>()),
            any::<(u8, u8)>(),
            1usize..3,
        ),
        any::<(bool, bool, u64)>(),
    )
        .prop_map(
            |(
                (n, g, c_raw, o_raw),
                (h, w),
                (k, (s0, s1, square), (p0, p1), d),
                (bias, add, seed),
            )| {
                let (groups, cg, og) = if g == 0 {
                    (c_raw, 1, 1 + o_raw % 2)
                } else {
                    (g, 1 + (c_raw - 1) % (20 / g), 1 + (o_raw - 1) % (20 / g))
                };
                ConvCase {
                    n,
                    cg,
                    og,
                    groups,
                    h,
                    w,
                    k,
                    stride: if square { [s0, s0] } else { [s0, s1] },
                    // 0..=k-1: from none to more than half the kernel.
                    pad: [usize::from(p0) % k[0], usize::from(p1) % k[1]],
                    dil: [d, d],
                    bias,
                    add,
                    seed,
                }
                .fitted()
            },
        )
}

/// Stride 1, undilated, ungrouped, padding below the kernel: the input gradient as a packed
/// convolution (Winograd for 3x3 with at least 8 channels each way).
fn transposed_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..4, 1usize..21, 1usize..21),
        (1usize..14, 1usize..14),
        prop_oneof![
            Just([3usize, 3]),
            Just([1, 1]),
            Just([5, 2]),
            (1usize..6, 1usize..6).prop_map(|(a, b)| [a, b]),
        ],
        any::<(u8, u8)>(),
        any::<(bool, bool, u64)>(),
    )
        .prop_map(|((n, cg, og), (h, w), k, (p0, p1), (bias, add, seed))| {
            ConvCase {
                n,
                cg,
                og,
                groups: 1,
                h,
                w,
                k,
                stride: [1, 1],
                pad: [usize::from(p0) % k[0], usize::from(p1) % k[1]],
                dil: [1, 1],
                bias,
                add,
                seed,
            }
            .fitted()
        })
}

/// Shapes chosen to hit edges: single pixels, the ResNet stem, downsampling 1x1, depthwise and
/// grouped with asymmetric kernels, strides and paddings, padding at and beyond the kernel,
/// strides that skip input positions, Winograd on the transposed path, and weight gradients
/// split into several pieces of images (more than 4096 output pixels in all).
fn awkward_convs() -> Vec<ConvCase> {
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
        add: false,
        seed: 11,
    };
    vec![
        base,
        // A 7x7 kernel on a single pixel padded by 6: a 7x7 output.
        ConvCase {
            k: [7, 7],
            pad: [6, 6],
            cg: 2,
            og: 3,
            ..base
        },
        // The ResNet stem.
        ConvCase {
            n: 2,
            cg: 3,
            og: 8,
            h: 15,
            w: 13,
            k: [7, 7],
            stride: [2, 2],
            pad: [3, 3],
            ..base
        },
        // 7x7 on a 7x7 image: one output pixel.
        ConvCase {
            cg: 5,
            og: 4,
            h: 7,
            w: 7,
            k: [7, 7],
            ..base
        },
        // Winograd on the transposed path, padding 1 and 2 (= k - 1: transposed padding 0).
        ConvCase {
            n: 2,
            cg: 16,
            og: 16,
            h: 13,
            w: 11,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            cg: 9,
            og: 10,
            h: 6,
            w: 9,
            k: [3, 3],
            pad: [2, 2],
            ..base
        },
        // Stride-2 3x3 and the downsampling 1x1.
        ConvCase {
            cg: 8,
            og: 12,
            h: 9,
            w: 9,
            k: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            n: 3,
            cg: 6,
            og: 10,
            h: 9,
            w: 7,
            stride: [2, 2],
            ..base
        },
        // 1x1 stride 3: most input positions get no gradient (0, or the addend).
        ConvCase {
            cg: 3,
            og: 2,
            h: 7,
            w: 8,
            stride: [3, 3],
            ..base
        },
        // Depthwise, stride 1 and 2 with a channel multiplier.
        ConvCase {
            n: 2,
            groups: 8,
            h: 7,
            w: 7,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            groups: 5,
            og: 2,
            h: 8,
            w: 5,
            k: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            ..base
        },
        // Grouped, 5x2 kernel, asymmetric stride, padding and dilation.
        ConvCase {
            n: 2,
            cg: 3,
            og: 2,
            groups: 4,
            h: 9,
            w: 6,
            k: [5, 2],
            stride: [2, 3],
            pad: [4, 1],
            dil: [1, 2],
            ..base
        },
        ConvCase {
            cg: 5,
            og: 5,
            groups: 4,
            h: 6,
            w: 6,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        // 1x3 on a single row, padding 2 (> k/2) along x; 5x2 with padding 4 along y.
        ConvCase {
            cg: 2,
            og: 3,
            h: 1,
            w: 7,
            k: [1, 3],
            pad: [0, 2],
            ..base
        },
        ConvCase {
            n: 2,
            cg: 4,
            og: 3,
            h: 3,
            w: 4,
            k: [5, 2],
            pad: [4, 1],
            ..base
        },
        // Dilation 2 (not the transposed path), padding 2.
        ConvCase {
            cg: 4,
            og: 5,
            h: 5,
            w: 5,
            k: [3, 3],
            pad: [2, 2],
            dil: [2, 2],
            ..base
        },
        // Padding at and beyond the kernel (output pixels that only see padding).
        ConvCase {
            cg: 3,
            og: 4,
            h: 4,
            w: 3,
            k: [3, 3],
            pad: [3, 3],
            ..base
        },
        ConvCase {
            cg: 2,
            og: 2,
            h: 2,
            w: 2,
            k: [3, 3],
            stride: [2, 1],
            pad: [5, 4],
            ..base
        },
        // Weight gradients in several pieces: 1024 output pixels (4 images a piece) and 4225
        // (one image a piece).
        ConvCase {
            n: 5,
            cg: 3,
            og: 4,
            h: 32,
            w: 32,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            n: 2,
            cg: 2,
            og: 3,
            h: 65,
            w: 65,
            ..base
        },
        // Twenty channels in four groups, and a 3x3 with twenty each way.
        ConvCase {
            n: 2,
            cg: 5,
            og: 5,
            groups: 4,
            h: 7,
            w: 9,
            k: [3, 3],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            n: 4,
            cg: 20,
            og: 20,
            h: 5,
            w: 3,
            k: [3, 3],
            stride: [3, 3],
            pad: [2, 2],
            bias: false,
            ..base
        },
        // Strided on small maps (4 output pixels per image): the input gradient's products
        // take 16 images each, here 16 + 3; with groups too.
        ConvCase {
            n: 19,
            cg: 3,
            og: 5,
            h: 4,
            w: 4,
            k: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            ..base
        },
        ConvCase {
            n: 19,
            cg: 2,
            og: 3,
            groups: 2,
            h: 3,
            w: 3,
            k: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            ..base
        },
    ]
}

#[test]
fn conv_backward_awkward_shapes() {
    for c in awkward_convs() {
        for add in [false, true] {
            check_conv(ConvCase { add, ..c }).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batch norm

/// What the backward gets as `relu_out`.
#[derive(Debug, Clone, Copy)]
enum Mask {
    /// No ReLU.
    None,
    /// The forward's output.
    Forward,
    /// Any values: positives, negatives, `0.0`, `-0.0` and NaN (where the gradient passes).
    Synthetic,
}

/// Where the backward sends the shortcut's gradient.
#[derive(Debug, Clone, Copy)]
enum Shortcut {
    None,
    Set,
    Add,
}

#[derive(Debug, Clone, Copy)]
struct BnCase {
    dims: [usize; 4],
    /// `z = offset + spread * values`.
    offset: f32,
    spread: f32,
    eps: f32,
    scale: f32,
    residual: bool,
    relu: bool,
    mask: Mask,
    shortcut: Shortcut,
    /// Channel 0 constant (zero variance).
    constant: bool,
    seed: u64,
}

fn synthetic_mask(len: usize, seed: u64) -> Vec<f32> {
    values(len, seed)
        .into_iter()
        .enumerate()
        .map(
            |(i, v)| match (i as u64 ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 60 {
                0 | 1 => 0.0,
                2 => -0.0,
                3 => f32::NAN,
                _ => v,
            },
        )
        .collect()
}

/// The saved statistics against the reference's (both f64, summed in another order).
fn check_stats(what: &str, got: &BnSaved, want: &BnSaved, zmax: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.count(), want.count(), "{}: count", what);
    prop_assert_eq!(got.mean().len(), want.mean().len(), "{}: channels", what);
    for ch in 0..want.mean().len() {
        let (m, wm) = (got.mean()[ch], want.mean()[ch]);
        let (v, wv) = (got.biased_var()[ch], want.biased_var()[ch]);
        let (s, ws) = (got.inv_std()[ch], want.inv_std()[ch]);
        prop_assert!(
            (m - wm).abs() <= 1e-12 * zmax
                && (v - wv).abs() <= 1e-10 * wv + 1e-20 * zmax * zmax
                && (s - ws).abs() <= 1e-10 * ws,
            "{}: channel {}: mean {} vs {}, biased var {} vs {}, inv_std {} vs {}",
            what,
            ch,
            m,
            wm,
            v,
            wv,
            s,
            ws
        );
    }
    Ok(())
}

/// [`grad::batch_norm_train_nhwc`] against [`ng::batch_norm_train`] followed by the scale, the
/// residual add and the ReLU in f64 (outputs and saved statistics), then
/// [`grad::batch_norm_backward_nhwc`] against [`ng::relu_backward`] and
/// [`ng::batch_norm_backward`] of the masked gradient times `scale` (the backward is linear in
/// its gradient): the masked gradient (in place and in the shortcut's buffer) exactly,
/// `grad_z`, `grad_gamma`, `grad_beta` within [`BN_REL`]. Every instruction set, sequential and
/// parallel (bitwise equal), each level's backward on its own forward's statistics.
fn check_bn(c: BnCase) -> Result<(), TestCaseError> {
    let d = c.dims;
    let [n, ch, h, w] = d;
    let len = n * ch * h * w;
    let mut z: Vec<f32> = values(len, c.seed)
        .into_iter()
        .map(|v| c.offset + c.spread * v)
        .collect();
    if c.constant && ch > 0 {
        for ni in 0..n {
            z[ni * ch * h * w..][..h * w].fill(c.offset + 0.25 * c.spread);
        }
    }
    let gamma = values(ch, c.seed + 1);
    let beta = values(ch, c.seed + 2);
    let residual = values(len, c.seed + 3);
    let dy = values(len, c.seed + 4);
    let base = values(len, c.seed + 5);
    let zmax = z.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));

    // Forward reference.
    let mut y0 = vec![0.0; len];
    let mut saved_ref = BnSaved::default();
    ng::batch_norm_train(d, &z, &gamma, &beta, c.eps, &mut y0, &mut saved_ref).unwrap();
    let before_relu: Vec<f64> = (0..len)
        .map(|i| {
            let v = f64::from(c.scale) * f64::from(y0[i]);
            if c.residual {
                v + f64::from(residual[i])
            } else {
                v
            }
        })
        .collect();
    let want_y: Vec<f64> = before_relu
        .iter()
        .map(|&v| if c.relu && v <= 0.0 { 0.0 } else { v })
        .collect();
    // The fast path computes `z * a + b + r` in f32 (then the ReLU, which cannot enlarge an
    // error), `a = scale * gamma * inv_std`, `b = scale * (beta - mean * gamma * inv_std)`:
    // the scale is at least its terms' largest sum of magnitudes.
    let chan = |i: usize| i / (h * w) % ch;
    let scale = f64::from(c.scale);
    let y_floor = (0..len).fold(0.0f64, |m, i| {
        let k = chan(i);
        let (mean, inv_std) = (saved_ref.mean()[k], saved_ref.inv_std()[k]);
        let a = scale * f64::from(gamma[k]) * inv_std;
        let b = scale * (f64::from(beta[k]) - mean * f64::from(gamma[k]) * inv_std);
        let r = if c.residual { residual[i].abs() } else { 0.0 };
        m.max((a * f64::from(z[i])).abs() + b.abs() + f64::from(r))
    });

    let z_nhwc = to_nhwc(d, &z);
    let res_nhwc = to_nhwc(d, &residual);
    let dy_nhwc = to_nhwc(d, &dy);
    let base_nhwc = to_nhwc(d, &base);
    let bn = BnTrain {
        gamma: &gamma,
        beta: &beta,
        eps: c.eps,
        scale: c.scale,
        residual: c.residual.then_some(&res_nhwc[..]),
        relu: c.relu,
    };

    // Forward, every level and both runs; the statistics of each level for its backward.
    let mut saved_of = Vec::new();
    let mut first_y: Option<Vec<f32>> = None;
    for cpu in Cpu::all_levels() {
        let mut sequential: Option<(Vec<f32>, BnSaved)> = None;
        for par in pars() {
            let what = format!("{c:?} forward on {} with {par:?}", cpu.level());
            let mut y = vec![f32::NAN; len];
            let mut saved = BnSaved::default();
            run_on(par, || {
                grad::batch_norm_train_nhwc(cpu, par, d, &z_nhwc, &bn, &mut y, &mut saved)
            })
            .map_err(|e| kernel_err(&what, e))?;
            let y_nchw = to_nchw(d, &y);
            check_scaled(&format!("{what}: y"), &d, &y_nchw, &want_y, BN_REL, y_floor)?;
            check_stats(&what, &saved, &saved_ref, zmax)?;
            if let Some((y0, s0)) = &sequential {
                check_bits(&format!("{what}: y"), y0, &y)?;
                prop_assert!(
                    s0 == &saved,
                    "{}: the statistics differ from Par::Seq's",
                    what
                );
            } else {
                first_y.get_or_insert_with(|| y.clone());
                sequential = Some((y, saved));
            }
        }
        saved_of.push((cpu, sequential.map(|s| s.1).unwrap_or_default()));
    }

    // Backward reference.
    let mask_nhwc: Option<Vec<f32>> = match c.mask {
        Mask::None => None,
        Mask::Forward => first_y,
        Mask::Synthetic => Some(synthetic_mask(len, c.seed + 6)),
    };
    let masked = match &mask_nhwc {
        Some(m) => {
            let mut g = vec![f32::NAN; len];
            ng::relu_backward(&to_nchw(d, m), &dy, &mut g).unwrap();
            g
        }
        None => dy.clone(),
    };
    // The backward is linear in its gradient: the reference runs on the masked gradient and
    // its results are scaled in f64 (no rounding of `scale * g` on the reference's side).
    let (mut gz_ref, mut gg_ref, mut gb_ref) = (vec![0.0; len], vec![0.0; ch], vec![0.0; ch]);
    ng::batch_norm_backward(
        d,
        &z,
        &gamma,
        &saved_ref,
        &masked,
        &mut gz_ref,
        &mut gg_ref,
        &mut gb_ref,
    )
    .unwrap();
    let scaled = |v: &[f32]| v.iter().map(|&x| scale * f64::from(x)).collect::<Vec<_>>();
    let (gz_ref, gg_ref, gb_ref) = (scaled(&gz_ref), scaled(&gg_ref), scaled(&gb_ref));
    let want_shortcut: Vec<f64> = match c.shortcut {
        Shortcut::Add => base
            .iter()
            .zip(&masked)
            .map(|(&b, &g)| f64::from(b + g))
            .collect(),
        _ => f64s(&masked),
    };
    // The fast path computes `grad_z = k1 * g - k2 - (z - mean) * k3` in f32, with
    // `k1 = gamma * inv_std * scale`, `k2 = gamma * inv_std * grad_beta / n` and
    // `k3 = gamma * inv_std^2 * grad_gamma / n` (the mean rounded to f32 too): the scale is at
    // least its terms' largest sum of magnitudes.
    let n_values = (n * h * w) as f64;
    let gz_floor = (0..len).fold(0.0f64, |m, i| {
        let k = chan(i);
        let (mean, inv_std) = (saved_ref.mean()[k], saved_ref.inv_std()[k]);
        let gi = f64::from(gamma[k]) * inv_std;
        let k1 = gi * scale;
        let k2 = gi * gb_ref[k] / n_values;
        let k3 = gi * inv_std * gg_ref[k] / n_values;
        let zi = f64::from(z[i]);
        m.max((k1 * f64::from(masked[i])).abs() + k2.abs() + (zi.abs() + mean.abs()) * k3.abs())
    });
    let masked = f64s(&masked);

    for (cpu, saved) in &saved_of {
        let mut sequential: Option<[Vec<f32>; 5]> = None;
        for par in pars() {
            let what = format!("{c:?} backward on {} with {par:?}", cpu.level());
            let mut g = dy_nhwc.clone();
            let mut sc = match c.shortcut {
                Shortcut::Add => base_nhwc.clone(),
                _ => vec![f32::NAN; len],
            };
            let mut gz = vec![f32::NAN; len];
            let (mut gg, mut gb) = (vec![f32::NAN; ch], vec![f32::NAN; ch]);
            run_on(par, || {
                let shortcut = match c.shortcut {
                    Shortcut::None => ResidualGrad::None,
                    Shortcut::Set => ResidualGrad::Set(&mut sc),
                    Shortcut::Add => ResidualGrad::Add(&mut sc),
                };
                grad::batch_norm_backward_nhwc(
                    *cpu,
                    par,
                    d,
                    &z_nhwc,
                    &gamma,
                    saved,
                    c.scale,
                    mask_nhwc.as_deref(),
                    &mut g,
                    shortcut,
                    &mut gz,
                    &mut gg,
                    &mut gb,
                )
            })
            .map_err(|e| kernel_err(&what, e))?;
            check_close(
                &format!("{what}: masked grad"),
                &d,
                &to_nchw(d, &g),
                &masked,
                0.0,
            )?;
            match c.shortcut {
                Shortcut::None => {
                    prop_assert!(sc.iter().all(|v| v.is_nan()), "{}: shortcut written", what);
                }
                _ => check_close(
                    &format!("{what}: shortcut grad"),
                    &d,
                    &to_nchw(d, &sc),
                    &want_shortcut,
                    0.0,
                )?,
            }
            let gz_nchw = to_nchw(d, &gz);
            check_scaled(
                &format!("{what}: grad_z"),
                &d,
                &gz_nchw,
                &gz_ref,
                BN_REL,
                gz_floor,
            )?;
            check_close(&format!("{what}: grad_gamma"), &[ch], &gg, &gg_ref, BN_REL)?;
            check_close(&format!("{what}: grad_beta"), &[ch], &gb, &gb_ref, BN_REL)?;
            if let Some(s) = &sequential {
                for (name, a, b) in [
                    ("masked grad", &s[0], &g),
                    ("shortcut grad", &s[1], &sc),
                    ("grad_z", &s[2], &gz),
                    ("grad_gamma", &s[3], &gg),
                    ("grad_beta", &s[4], &gb),
                ] {
                    check_bits(&format!("{what}: {name}"), a, b)?;
                }
            } else {
                sequential = Some([g, sc, gz, gg, gb]);
            }
        }
    }
    Ok(())
}

fn bn_case() -> impl Strategy<Value = BnCase> {
    (
        (1usize..5, 1usize..21, 1usize..13, 1usize..13),
        (
            prop_oneof![
                Just((0.0f32, 1.0f32)),
                Just((1.0, 0.25)),
                Just((-3.0, 4.0)),
                Just((2.5, 0.1)),
                Just((-20.0, 0.05))
            ],
            prop_oneof![Just(1e-5f32), Just(1e-3), Just(0.5)],
            prop_oneof![Just(1.0f32), Just(0.1), -2.0f32..2.0],
        ),
        (
            any::<(bool, bool)>(),
            prop_oneof![Just(Mask::None), Just(Mask::Forward), Just(Mask::Synthetic)],
            prop_oneof![
                Just(Shortcut::None),
                Just(Shortcut::Set),
                Just(Shortcut::Add)
            ],
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (n, c, h, w),
                ((offset, spread), eps, scale),
                ((residual, relu), mask, shortcut, seed),
            )| {
                BnCase {
                    // At least 2 values per channel.
                    dims: [n, c, h, if n * h * w < 2 { 2 } else { w }],
                    offset,
                    spread,
                    eps,
                    scale,
                    residual,
                    relu,
                    mask,
                    shortcut,
                    constant: false,
                    seed,
                }
            },
        )
}

/// Two values per channel, one pixel per image, exactly one piece of 256 pixels and one more,
/// several pieces of 256 split across images, a constant channel (zero variance).
#[test]
fn batch_norm_awkward_shapes() {
    let base = BnCase {
        dims: [1, 1, 1, 2],
        offset: 0.0,
        spread: 1.0,
        eps: 1e-5,
        scale: 1.0,
        residual: true,
        relu: true,
        mask: Mask::Forward,
        shortcut: Shortcut::Add,
        constant: false,
        seed: 5,
    };
    let cases = [
        base,
        BnCase {
            dims: [3, 2, 1, 1],
            shortcut: Shortcut::Set,
            ..base
        },
        BnCase {
            dims: [1, 5, 16, 16],
            mask: Mask::Synthetic,
            ..base
        },
        BnCase {
            dims: [1, 3, 257, 1],
            scale: 0.1,
            ..base
        },
        BnCase {
            dims: [3, 17, 13, 13],
            offset: -3.0,
            spread: 4.0,
            relu: false,
            mask: Mask::None,
            shortcut: Shortcut::None,
            ..base
        },
        BnCase {
            dims: [4, 16, 15, 17],
            residual: false,
            ..base
        },
        BnCase {
            dims: [2, 4, 3, 1],
            constant: true,
            ..base
        },
        // A ReLU that lets through only values below 2e-4 (of values up to 0.55 before it).
        BnCase {
            dims: [4, 2, 12, 9],
            offset: 1.0,
            spread: 0.25,
            eps: 0.5,
            residual: false,
            mask: Mask::None,
            shortcut: Shortcut::None,
            seed: 3_627_700_549_742_480_926,
            ..base
        },
        BnCase {
            dims: [4, 3, 9, 9],
            offset: 1.0,
            spread: 0.25,
            constant: true,
            eps: 1e-3,
            scale: -0.7,
            ..base
        },
    ];
    for c in cases {
        check_bn(c).unwrap();
    }
}

/// One value per channel: refused by both, as by PyTorch.
#[test]
fn batch_norm_refuses_one_value_per_channel_like_the_reference() {
    let d = [1, 4, 1, 1];
    let z = values(4, 1);
    let gamma = values(4, 2);
    let mut y = vec![0.0; 4];
    let mut saved = BnSaved::default();
    assert!(ng::batch_norm_train(d, &z, &gamma, &gamma, 1e-5, &mut y, &mut saved).is_err());
    let bn = BnTrain {
        gamma: &gamma,
        beta: &gamma,
        eps: 1e-5,
        scale: 1.0,
        residual: None,
        relu: false,
    };
    for cpu in Cpu::all_levels() {
        assert!(
            grad::batch_norm_train_nhwc(cpu, Par::Seq, d, &z, &bn, &mut y, &mut saved).is_err()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Max pool

#[derive(Debug, Clone, Copy)]
struct PoolCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    /// 0: spread values; 1: ties (multiples of 1/2, `0.0` and `-0.0`); 2: ties and a third
    /// `-inf`; 3: mostly `-inf` (windows of nothing but `-inf`); 4: ties, `-inf` and NaN.
    flavour: u8,
    accumulate: bool,
    seed: u64,
}

fn pool_input(len: usize, flavour: u8, seed: u64) -> Vec<f32> {
    values(len, seed)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let pick = (i as u64 ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 59;
            let tie = (v * 2.0).round() / 2.0;
            match flavour {
                0 => v,
                1 => tie,
                2 if pick.is_multiple_of(3) => f32::NEG_INFINITY,
                3 if !pick.is_multiple_of(8) => f32::NEG_INFINITY,
                4 if pick.is_multiple_of(5) => f32::NAN,
                4 if pick % 5 == 1 => f32::NEG_INFINITY,
                _ => tie,
            }
        })
        .collect()
}

/// [`grad::max_pool2d_backward_nhwc`] against [`ng::max_pool2d_backward`] (plus what was there
/// when accumulating): exact where windows do not overlap, else within [`MOVE_REL`] (the fast
/// path adds overlapping contributions in f32). Every level, sequential and parallel.
fn check_max_pool(c: PoolCase) -> Result<(), TestCaseError> {
    let geom = PoolGeometry::new([c.n, c.c, c.h, c.w], c.k, c.stride, c.pad)
        .map_err(|e| kernel_err(&format!("{c:?}: geometry"), e))?;
    let (id, od) = (geom.input, geom.output);
    let (li, lo) = (id.iter().product(), od.iter().product());
    let x = pool_input(li, c.flavour, c.seed);
    let gy = values(lo, c.seed + 1);
    let base = values(li, c.seed + 2);
    let mut want = vec![f32::NAN; li];
    ng::max_pool2d_backward(&geom, &x, &gy, &mut want).unwrap();
    if c.accumulate {
        want.iter_mut().zip(&base).for_each(|(w, &b)| *w += b);
    }
    let want = f64s(&want);
    let overlap = c.stride[0] < c.k[0] || c.stride[1] < c.k[1];
    let rel = if overlap { MOVE_REL } else { 0.0 };
    let (x_nhwc, gy_nhwc, base_nhwc) = (to_nhwc(id, &x), to_nhwc(od, &gy), to_nhwc(id, &base));
    for cpu in Cpu::all_levels() {
        let mut sequential: Option<Vec<f32>> = None;
        for par in pars() {
            let what = format!("{c:?} on {} with {par:?}", cpu.level());
            let mut gx = if c.accumulate {
                base_nhwc.clone()
            } else {
                vec![f32::NAN; li]
            };
            run_on(par, || {
                grad::max_pool2d_backward_nhwc(
                    cpu,
                    par,
                    &geom,
                    &x_nhwc,
                    &gy_nhwc,
                    &mut gx,
                    c.accumulate,
                )
            })
            .map_err(|e| kernel_err(&what, e))?;
            check_close(&what, &id, &to_nchw(id, &gx), &want, rel)?;
            if let Some(s) = &sequential {
                check_bits(&what, s, &gx)?;
            } else {
                sequential = Some(gx);
            }
        }
    }
    Ok(())
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        (1usize..4, 1usize..21, 1usize..13, 1usize..13),
        (1usize..5, 1usize..5, any::<bool>()),
        (1usize..4, 1usize..4, any::<bool>()),
        any::<(u8, u8)>(),
        (0u8..5, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (n, c, h, w),
                (k0, k1, ksq),
                (s0, s1, ssq),
                (p0, p1),
                (flavour, accumulate, seed),
            )| {
                let k = if ksq { [k0, k0] } else { [k0, k1] };
                // At most half the window, as PyTorch.
                let pad = [
                    usize::from(p0) % (k[0] / 2 + 1),
                    usize::from(p1) % (k[1] / 2 + 1),
                ];
                PoolCase {
                    n,
                    c,
                    // The window must fit the padded input.
                    h: h.max(k[0].saturating_sub(2 * pad[0])),
                    w: w.max(k[1].saturating_sub(2 * pad[1])),
                    k,
                    stride: if ssq { [s0, s0] } else { [s0, s1] },
                    pad,
                    flavour,
                    accumulate,
                    seed,
                }
            },
        )
}

/// The ResNet stem's pool (3x3, stride 2, padding 1) on every input flavour, a 1x1 image, and a
/// window as large as the padded image.
#[test]
fn max_pool_backward_awkward_shapes() {
    let base = PoolCase {
        n: 2,
        c: 17,
        h: 13,
        w: 11,
        k: [3, 3],
        stride: [2, 2],
        pad: [1, 1],
        flavour: 0,
        accumulate: false,
        seed: 3,
    };
    for flavour in 0..5 {
        for accumulate in [false, true] {
            for c in [
                base,
                PoolCase { h: 1, w: 1, ..base },
                PoolCase {
                    n: 1,
                    c: 3,
                    h: 2,
                    w: 3,
                    k: [4, 4],
                    stride: [1, 1],
                    pad: [1, 2],
                    ..base
                },
            ] {
                check_max_pool(PoolCase {
                    flavour,
                    accumulate,
                    ..c
                })
                .unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn conv_backward_matches_naive(c in conv_case()) {
        check_conv(c)?;
    }

    #[test]
    fn conv_backward_stride_one_matches_naive(c in transposed_case()) {
        check_conv(c)?;
    }

    #[test]
    fn batch_norm_train_and_backward_match_naive(c in bn_case()) {
        check_bn(c)?;
    }

    #[test]
    fn max_pool_backward_matches_naive(c in pool_case()) {
        check_max_pool(c)?;
    }

    #[test]
    fn global_avg_pool_backward_matches_naive(n in 0usize..4, c in 1usize..40, h in 1usize..10,
                                              w in 1usize..10, accumulate in any::<bool>(),
                                              seed in any::<u64>()) {
        let d = [n, c, h, w];
        let li = n * c * h * w;
        let gy = values(n * c, seed);
        let base = values(li, seed + 1);
        let mut want = vec![f32::NAN; li];
        ng::adaptive_avg_pool2d_backward(d, [1, 1], &gy, &mut want).unwrap();
        let want: Vec<f64> = if accumulate {
            want.iter().zip(&base).map(|(&g, &b)| f64::from(g) + f64::from(b)).collect()
        } else {
            f64s(&want)
        };
        // [N, C, 1, 1] is the same in both layouts.
        let mut gx = if accumulate { to_nhwc(d, &base) } else { vec![f32::NAN; li] };
        grad::global_avg_pool_backward_nhwc(d, &gy, &mut gx, accumulate).unwrap();
        check_close(&format!("{d:?} accumulate {accumulate}"), &d, &to_nchw(d, &gx), &want, MOVE_REL)?;
    }

    #[test]
    fn option_a_shortcut_backward_matches_naive(n in 0usize..3, c in 1usize..12, extra in 0usize..9,
                                                h in 1usize..10, w in 1usize..10, s in 1usize..4,
                                                accumulate in any::<bool>(), seed in any::<u64>()) {
        let d = [n, c, h, w];
        let out_c = c + extra;
        let od = [n, out_c, h.div_ceil(s), w.div_ceil(s)];
        let li = n * c * h * w;
        let gy = values(od.iter().product(), seed);
        let base = values(li, seed + 1);
        let mut want = vec![f32::NAN; li];
        ng::subsample_pad_channels_backward(d, s, out_c, &gy, &mut want).unwrap();
        if accumulate {
            want.iter_mut().zip(&base).for_each(|(w, &b)| *w += b);
        }
        let mut gx = if accumulate { to_nhwc(d, &base) } else { vec![f32::NAN; li] };
        grad::subsample_pad_channels_backward_nhwc(d, s, out_c, &to_nhwc(od, &gy), &mut gx, accumulate)
            .unwrap();
        check_close(&format!("{d:?} stride {s} to {out_c} accumulate {accumulate}"), &d,
                    &to_nchw(d, &gx), &f64s(&want), 0.0)?;
    }

    #[test]
    fn pixel_shuffle_backward_matches_naive(n in 0usize..3, c in 1usize..6, r in 1usize..5,
                                            h in 1usize..7, w in 1usize..7,
                                            accumulate in any::<bool>(), seed in any::<u64>()) {
        let d = [n, c * r * r, h, w];
        let od = [n, c, h * r, w * r];
        let len = n * c * r * r * h * w;
        let gy = values(len, seed);
        let base = values(len, seed + 1);
        let mut want = vec![f32::NAN; len];
        ng::pixel_shuffle_backward(d, r, &gy, &mut want).unwrap();
        if accumulate {
            want.iter_mut().zip(&base).for_each(|(w, &b)| *w += b);
        }
        let mut gx = if accumulate { to_nhwc(d, &base) } else { vec![f32::NAN; len] };
        grad::pixel_shuffle_backward_nhwc(d, r, &to_nhwc(od, &gy), &mut gx, accumulate).unwrap();
        let got = to_nchw(d, &gx);
        prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                     "{:?} r {} accumulate {}: {:?} vs {:?}", d, r, accumulate, got, want);
    }

    /// The SGD step: the fast kernel gives bitwise the reference's weights and buffer, on
    /// every instruction set and any split (`len` spans several of its pieces).
    #[test]
    fn sgd_step_matches_naive_bitwise(len in 0usize..200_000, kind in 0u8..3, nesterov in any::<bool>(),
                                      decay in any::<bool>(), lr in 1e-4f32..1.0,
                                      momentum in 0.0f32..0.99, dampening in 0.0f32..1.0,
                                      seed in any::<u64>()) {
        let w0 = values(len, seed);
        let g = values(len, seed + 1);
        let b0 = values(len, seed + 2);
        let step = ng::SgdStep {
            neg_lr: -lr,
            weight_decay: decay.then_some(lr * 1e-2),
            momentum,
            keep: 1.0 - dampening,
            nesterov,
        };
        fn buffer_of(kind: u8, b: &mut [f32]) -> ng::MomentumBuffer<'_> {
            match kind {
                0 => ng::MomentumBuffer::None,
                1 => ng::MomentumBuffer::First(b),
                _ => ng::MomentumBuffer::Running(b),
            }
        }
        let (mut w_ref, mut b_ref) = (w0.clone(), b0.clone());
        ng::sgd_step(&mut w_ref, &g, buffer_of(kind, &mut b_ref), &step).unwrap();
        for cpu in Cpu::all_levels() {
            for par in pars() {
                let (mut w, mut b) = (w0.clone(), b0.clone());
                run_on(par, || grad::sgd_step(cpu, par, &mut w, &g, buffer_of(kind, &mut b), &step)).unwrap();
                let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same(&w, &w_ref), "weights differ: {:?} {:?}", cpu.level(), par);
                prop_assert!(same(&b, &b_ref), "buffer differs: {:?} {:?}", cpu.level(), par);
            }
        }
        // A wrong length is an error, and nothing is written.
        if len > 0 {
            let mut w = w0.clone();
            let err = grad::sgd_step(Cpu::detect(), Par::Seq, &mut w, &g[1..], ng::MomentumBuffer::None, &step);
            let bad_length = matches!(err, Err(KernelError::BadLength { .. }));
            prop_assert!(bad_length, "{:?}", err);
            prop_assert!(w.iter().zip(&w0).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
