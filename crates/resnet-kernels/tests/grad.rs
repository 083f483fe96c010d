//! The naive backward kernels ([`naive_grad`]) against central finite differences in f64.
//!
//! For each kernel `f`, a fixed random `g` defines the scalar objective `L(x) = sum g * f(x)`;
//! its gradient is what the backward kernel computes from `grad_out = g`. The finite
//! differences run through small f64 twins of the forward kernels written here (each first
//! checked against the crate's f32 forward kernel, so the differences are of the same
//! function), never through f32 arithmetic.
//!
//! Tolerances (see `assert_grad`): element `i` passes when
//! `|analytic_i - fd_i| <= tol * max(|fd_i|, 1e-2 * max_j |fd_j|)`.
//! - The analytic gradient is summed in f64 and rounded once to f32: a relative error of at most
//!   2^-24 ~ 6e-8 per element.
//! - Kernels linear in the perturbed value (conv, linear, pools away from ties, ReLU away from
//!   0, pixel shuffle, L1 away from 0, MSE which is quadratic): the central difference has no
//!   truncation error, only f64 rounding of `L` (~1e-16 |L| / h ~ 1e-12 at h = 1e-3).
//!   `TOL_LINEAR = 1e-6` is 16x the f32 rounding and fails on any wrong or missing term.
//! - Batch-norm and cross-entropy are curved: truncation `h^2 |f'''| / 6` plus rounding
//!   `1e-16 |L| / h ~ 1e-12` at h = 1e-4. The truncation grows with BN's `inv_std^3`, largest
//!   with few values per channel: the worst measured relative error is 2.7e-7 (BN on
//!   `[3, 2, 1, 1]`, three values per channel; `--nocapture` prints every one).
//!   `TOL_CURVED = 1e-5` keeps a 37x margin over that, while a wrong or missing term of the
//!   BN or softmax gradient is an error of order `1/n` (>= 1e-2 here).

mod common;
use common::values;
use resnet_kernels::naive_grad::{self as ng, BnSaved};
use resnet_kernels::{Conv2dParams, ConvGeometry, KernelError, PoolGeometry, adaptive_bin, naive};

const TOL_LINEAR: f64 = 1e-6;
const TOL_CURVED: f64 = 1e-5;
const H_LINEAR: f64 = 1e-3;
const H_CURVED: f64 = 1e-4;

/// Values at least 1/32 apart (a shuffled ladder), so a step of 1e-3 never changes which
/// value of a pool window is the largest.
fn distinct(len: usize, seed: u64) -> Vec<f32> {
    let keys = values(len, seed);
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut v = vec![0.0; len];
    for (rank, &i) in order.iter().enumerate() {
        v[i] = (rank as f32 - len as f32 / 2.0) / 32.0;
    }
    v
}

/// Values at least 0.05 away from zero, so a step of 1e-3 never crosses a kink at 0.
fn away_from_zero(len: usize, seed: u64) -> Vec<f32> {
    values(len, seed)
        .into_iter()
        .map(|v| if v < 0.0 { v - 0.05 } else { v + 0.05 })
        .collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// d loss / d x_i by central differences with step `h`, all in f64.
fn central_diff(x: &[f64], h: f64, loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + h;
            let up = loss(&xp);
            xp[i] = x0 - h;
            let down = loss(&xp);
            xp[i] = x0;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Check an analytic gradient against finite differences (criterion in the module doc);
/// returns the worst `|got - want| / scale` so callers can report it.
fn assert_grad(what: &str, got: &[f32], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(max > 0.0, "{what}: the objective does not depend on this");
    let mut worst = 0.0f64;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let scale = b.abs().max(1e-2 * max);
        let err = (f64::from(a) - b).abs() / scale;
        assert!(
            err <= tol,
            "{what}[{i}]: analytic {a}, finite difference {b}, relative error {err:e} > {tol:e}"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: worst relative error {worst:.2e} (tolerance {tol:e})");
    worst
}

/// The f64 twin must compute what the crate's f32 forward kernel computes.
fn assert_mirror(what: &str, f32_out: &[f32], f64_out: &[f64]) {
    assert_eq!(f32_out.len(), f64_out.len(), "{what}: lengths");
    for (i, (&a, &b)) in f32_out.iter().zip(f64_out).enumerate() {
        assert!(
            (f64::from(a) - b).abs() <= 1e-6 * b.abs().max(1.0),
            "{what}[{i}]: f32 kernel {a}, f64 twin {b}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// f64 twins of the forward kernels (for the finite differences only)

fn conv_f64(geom: &ConvGeometry, x: &[f64], wt: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let [n, c, h, w] = geom.input;
    let [o, cg, kh, kw] = geom.weight;
    let [_, _, oh, ow] = geom.output;
    let p = geom.params;
    let og = o / p.groups;
    let mut out = vec![0.0; n * o * oh * ow];
    for ni in 0..n {
        for oc in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[oc]);
                    for ci in 0..cg {
                        let ic = (oc / og) * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.padding[0] as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    acc += x[((ni * c + ic) * h + iy as usize) * w + ix as usize]
                                        * wt[((oc * cg + ci) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                    out[((ni * o + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    out
}

fn bn_train_f64(dims: [usize; 4], x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let [n, c, h, w] = dims;
    let hw = h * w;
    let m = (n * hw) as f64;
    let mut out = vec![0.0; x.len()];
    for ci in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|ni| (ni * c + ci) * hw..(ni * c + ci + 1) * hw)
            .collect();
        let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
        for &i in &idx {
            out[i] = (x[i] - mean) / (var + eps).sqrt() * gamma[ci] + beta[ci];
        }
    }
    out
}

fn max_pool_f64(geom: &PoolGeometry, x: &[f64]) -> Vec<f64> {
    let [n, c, h, w] = geom.input;
    let [_, _, oh, ow] = geom.output;
    let mut out = vec![f64::NEG_INFINITY; n * c * oh * ow];
    for nc in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..geom.kernel[0] {
                    for kx in 0..geom.kernel[1] {
                        let iy = (oy * geom.stride[0] + ky) as isize - geom.padding[0] as isize;
                        let ix = (ox * geom.stride[1] + kx) as isize - geom.padding[1] as isize;
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            let o = &mut out[(nc * oh + oy) * ow + ox];
                            *o = o.max(x[nc * h * w + iy as usize * w + ix as usize]);
                        }
                    }
                }
            }
        }
    }
    out
}

fn adaptive_avg_f64(dims: [usize; 4], out_hw: [usize; 2], x: &[f64]) -> Vec<f64> {
    let [n, c, h, w] = dims;
    let [oh, ow] = out_hw;
    let mut out = vec![0.0; n * c * oh * ow];
    for nc in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (y0, y1) = adaptive_bin(oy, h, oh);
                let (x0, x1) = adaptive_bin(ox, w, ow);
                let mut s = 0.0;
                for y in y0..y1 {
                    for xx in x0..x1 {
                        s += x[nc * h * w + y * w + xx];
                    }
                }
                out[(nc * oh + oy) * ow + ox] = s / ((y1 - y0) * (x1 - x0)) as f64;
            }
        }
    }
    out
}

fn linear_f64(dims: [usize; 3], x: &[f64], wt: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let [n, i, o] = dims;
    let mut out = vec![0.0; n * o];
    for ni in 0..n {
        for oi in 0..o {
            out[ni * o + oi] = b.map_or(0.0, |b| b[oi])
                + (0..i)
                    .map(|ii| x[ni * i + ii] * wt[oi * i + ii])
                    .sum::<f64>();
        }
    }
    out
}

/// `F.cross_entropy` with label smoothing, straight from the definition (no stabilisation
/// needed for the small logits used here).
fn cross_entropy_f64(dims: [usize; 2], z: &[f64], labels: &[usize], eps: f64) -> f64 {
    let [n, k] = dims;
    let mut total = 0.0;
    for r in 0..n {
        let row = &z[r * k..(r + 1) * k];
        let log_sum = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        for (j, &v) in row.iter().enumerate() {
            let q = if j == labels[r] { 1.0 - eps } else { 0.0 } + eps / k as f64;
            total -= q * (v - log_sum);
        }
    }
    total / n as f64
}

fn pixel_shuffle_f64(dims: [usize; 4], r: usize, x: &[f64]) -> Vec<f64> {
    let [n, crr, h, w] = dims;
    let c = crr / (r * r);
    let mut out = vec![0.0; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            for i in 0..r {
                for j in 0..r {
                    for y in 0..h {
                        for xx in 0..w {
                            out[((ni * c + ci) * h * r + y * r + i) * w * r + xx * r + j] =
                                x[((ni * crr + ci * r * r + i * r + j) * h + y) * w + xx];
                        }
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Convolution

fn conv_case(input: [usize; 4], weight: [usize; 4], params: Conv2dParams, seed: u64) {
    let geom = ConvGeometry::new(input, weight, params).unwrap();
    let (li, lw, lo) = geom.lens();
    let o = weight[0];
    let x = values(li, seed);
    let wt = values(lw, seed + 1);
    let b = values(o, seed + 2);
    let g = values(lo, seed + 3);
    let (x64, w64, b64, g64) = (f64s(&x), f64s(&wt), f64s(&b), f64s(&g));

    let mut y = vec![0.0; lo];
    naive::conv2d(&geom, &x, &wt, Some(&b), &mut y).unwrap();
    assert_mirror("conv2d", &y, &conv_f64(&geom, &x64, &w64, Some(&b64)));

    let mut gx = vec![f32::NAN; li];
    let mut gw = vec![f32::NAN; lw];
    let mut gb = vec![f32::NAN; o];
    ng::conv2d_backward_input(&geom, &g, &wt, &mut gx).unwrap();
    ng::conv2d_backward_weight(&geom, &x, &g, &mut gw, Some(&mut gb)).unwrap();

    let tag = format!("conv {input:?} {weight:?} {params:?}");
    let fd_x = central_diff(&x64, H_LINEAR, |x| {
        dot(&g64, &conv_f64(&geom, x, &w64, Some(&b64)))
    });
    let fd_w = central_diff(&w64, H_LINEAR, |w| {
        dot(&g64, &conv_f64(&geom, &x64, w, Some(&b64)))
    });
    let fd_b = central_diff(&b64, H_LINEAR, |b| {
        dot(&g64, &conv_f64(&geom, &x64, &w64, Some(b)))
    });
    assert_grad(&format!("{tag} grad_in"), &gx, &fd_x, TOL_LINEAR);
    assert_grad(&format!("{tag} grad_weight"), &gw, &fd_w, TOL_LINEAR);
    assert_grad(&format!("{tag} grad_bias"), &gb, &fd_b, TOL_LINEAR);

    // Without bias the weight gradient is the same.
    let mut gw2 = vec![0.0; lw];
    ng::conv2d_backward_weight(&geom, &x, &g, &mut gw2, None).unwrap();
    assert_eq!(gw, gw2);
}

#[test]
fn conv_backward_matches_finite_differences() {
    let d = Conv2dParams::default();
    // 1x1 kernel, batch 1.
    conv_case([1, 1, 5, 5], [1, 1, 1, 1], d, 1);
    // Batch 3, odd sizes, stride 2, padding 1.
    conv_case(
        [3, 2, 5, 7],
        [4, 2, 3, 3],
        d.with_stride(2).with_padding(1),
        10,
    );
    // Groups 2, dilation 2, asymmetric stride and padding.
    let p = Conv2dParams {
        stride: [2, 1],
        padding: [1, 2],
        dilation: [2, 1],
        groups: 2,
    };
    conv_case([1, 4, 6, 5], [6, 2, 3, 2], p, 20);
    // A 1x1 spatial map under a padded 3x3 kernel, batch 3.
    conv_case([3, 2, 1, 1], [3, 2, 3, 3], d.with_padding(1), 30);
    // Depthwise (groups = channels), stride 3, dilation 2.
    conv_case(
        [2, 3, 7, 7],
        [3, 1, 3, 3],
        d.with_groups(3)
            .with_stride(3)
            .with_dilation(2)
            .with_padding(2),
        40,
    );
    // Stride larger than the kernel: some inputs feed no output (their gradient is 0).
    conv_case([1, 2, 4, 5], [2, 2, 1, 1], d.with_stride(3), 50);
}

#[test]
fn conv_backward_by_hand() {
    // 1x1 conv of 2 channels of 2x2 to 1 channel: y[p] = w0 x0[p] + w1 x1[p] + b.
    let geom = ConvGeometry::new([1, 2, 2, 2], [1, 2, 1, 1], Conv2dParams::default()).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
    let w = [2.0, -1.0];
    let g = [1.0, 0.0, 0.5, -1.0];
    let mut gx = [0.0; 8];
    ng::conv2d_backward_input(&geom, &g, &w, &mut gx).unwrap();
    assert_eq!(gx, [2.0, 0.0, 1.0, -2.0, -1.0, 0.0, -0.5, 1.0]);
    let (mut gw, mut gb) = ([0.0; 2], [0.0]);
    ng::conv2d_backward_weight(&geom, &x, &g, &mut gw, Some(&mut gb)).unwrap();
    // sum g*x0 = 1 + 1.5 - 4, sum g*x1 = 10 + 15 - 40, sum g = 0.5
    assert_eq!(gw, [-1.5, -15.0]);
    assert_eq!(gb, [0.5]);

    // Stride 2 over 3x3 with a 1x1 kernel reads only the four corners: the other inputs get
    // exactly 0.
    let geom = ConvGeometry::new(
        [1, 1, 3, 3],
        [1, 1, 1, 1],
        Conv2dParams::default().with_stride(2),
    )
    .unwrap();
    let mut gx = [f32::NAN; 9];
    ng::conv2d_backward_input(&geom, &[1.0, 2.0, 3.0, 4.0], &[0.5], &mut gx).unwrap();
    assert_eq!(gx, [0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 1.5, 0.0, 2.0]);
}

#[test]
fn conv_backward_rejects_bad_lengths() {
    let geom = ConvGeometry::new([1, 1, 2, 2], [1, 1, 1, 1], Conv2dParams::default()).unwrap();
    let e = ng::conv2d_backward_input(&geom, &[0.0; 3], &[1.0], &mut [0.0; 4]).unwrap_err();
    assert_eq!(
        e,
        KernelError::BadLength {
            what: "conv2d_backward_input grad_out",
            expected: 4,
            found: 3
        }
    );
    assert!(ng::conv2d_backward_input(&geom, &[0.0; 4], &[1.0; 2], &mut [0.0; 4]).is_err());
    assert!(ng::conv2d_backward_input(&geom, &[0.0; 4], &[1.0], &mut [0.0; 5]).is_err());
    let mut gw = [0.0];
    assert!(ng::conv2d_backward_weight(&geom, &[0.0; 4], &[0.0; 4], &mut [0.0; 2], None).is_err());
    let e = ng::conv2d_backward_weight(&geom, &[0.0; 4], &[0.0; 4], &mut gw, Some(&mut [0.0; 2]))
        .unwrap_err();
    assert!(matches!(e, KernelError::BadLength { expected: 1, .. }));
    // Nothing was written on error.
    let mut gx = [7.0; 4];
    assert!(ng::conv2d_backward_input(&geom, &[0.0; 4], &[], &mut gx).is_err());
    assert_eq!(gx, [7.0; 4]);
}

// ---------------------------------------------------------------------------------------------
// Batch norm

fn bn_case(dims: [usize; 4], eps: f32, seed: u64) {
    let [n, c, h, w] = dims;
    let len = n * c * h * w;
    let x = values(len, seed);
    let gamma: Vec<f32> = values(c, seed + 1).iter().map(|v| v + 1.5).collect();
    let beta = values(c, seed + 2);
    let g = values(len, seed + 3);
    let (x64, ga64, be64, g64) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&g));
    let e64 = f64::from(eps);

    let mut y = vec![0.0; len];
    let mut saved = BnSaved::default();
    ng::batch_norm_train(dims, &x, &gamma, &beta, eps, &mut y, &mut saved).unwrap();
    assert_mirror(
        "batch_norm_train",
        &y,
        &bn_train_f64(dims, &x64, &ga64, &be64, e64),
    );
    assert_eq!(saved.count(), n * h * w);

    let mut gx = vec![f32::NAN; len];
    let mut gg = vec![f32::NAN; c];
    let mut gb = vec![f32::NAN; c];
    ng::batch_norm_backward(dims, &x, &gamma, &saved, &g, &mut gx, &mut gg, &mut gb).unwrap();

    let tag = format!("batch_norm {dims:?} eps {eps}");
    let fd_x = central_diff(&x64, H_CURVED, |x| {
        dot(&g64, &bn_train_f64(dims, x, &ga64, &be64, e64))
    });
    let fd_g = central_diff(&ga64, H_CURVED, |ga| {
        dot(&g64, &bn_train_f64(dims, &x64, ga, &be64, e64))
    });
    let fd_b = central_diff(&be64, H_CURVED, |be| {
        dot(&g64, &bn_train_f64(dims, &x64, &ga64, be, e64))
    });
    assert_grad(&format!("{tag} grad_in"), &gx, &fd_x, TOL_CURVED);
    assert_grad(&format!("{tag} grad_gamma"), &gg, &fd_g, TOL_CURVED);
    assert_grad(&format!("{tag} grad_beta"), &gb, &fd_b, TOL_CURVED);
}

#[test]
fn batch_norm_backward_matches_finite_differences() {
    bn_case([3, 2, 1, 1], 1e-5, 100); // batch 3, 1x1 spatial map: 3 values per channel
    bn_case([1, 3, 3, 5], 1e-5, 110); // batch 1, odd map
    bn_case([2, 1, 2, 3], 1e-5, 120);
    bn_case([3, 4, 3, 1], 0.1, 130); // a large eps changes the gradient visibly
}

#[test]
fn batch_norm_by_hand() {
    // Two values per channel. With eps = 0 they normalise to +1 and -1 whatever they are, so
    // the input gradient vanishes; grad_gamma = g0 - g1, grad_beta = g0 + g1.
    let x = [3.0, 1.0];
    let mut y = [0.0; 2];
    let mut saved = BnSaved::default();
    ng::batch_norm_train([2, 1, 1, 1], &x, &[2.0], &[0.5], 0.0, &mut y, &mut saved).unwrap();
    assert_eq!(y, [2.5, -1.5]);
    assert_eq!(saved.mean(), [2.0]);
    assert_eq!(saved.biased_var(), [1.0]);
    assert_eq!(saved.inv_std(), [1.0]);
    assert_eq!(saved.unbiased_var().unwrap(), [2.0]);
    let (mut gx, mut gg, mut gb) = ([f32::NAN; 2], [0.0], [0.0]);
    let g = [0.5, 2.0];
    ng::batch_norm_backward(
        [2, 1, 1, 1],
        &x,
        &[2.0],
        &saved,
        &g,
        &mut gx,
        &mut gg,
        &mut gb,
    )
    .unwrap();
    assert_eq!(gx, [0.0, 0.0]);
    assert_eq!(gg, [-1.5]);
    assert_eq!(gb, [2.5]);

    // x = [1, -1], eps = 3: mean 0, var 1, inv_std 1/2, xhat = [1/2, -1/2]. With u = x0 - mean,
    // y0 = u / sqrt(u^2 + 3) and d mean / d x0 = 1/2, so d y0 / d x0 = 3 / 8 * 1/2 = 3/16.
    let x = [1.0, -1.0];
    ng::batch_norm_train([1, 1, 1, 2], &x, &[1.0], &[0.0], 3.0, &mut y, &mut saved).unwrap();
    assert_eq!(y, [0.5, -0.5]);
    ng::batch_norm_backward(
        [1, 1, 1, 2],
        &x,
        &[1.0],
        &saved,
        &[1.0, 0.0],
        &mut gx,
        &mut gg,
        &mut gb,
    )
    .unwrap();
    assert_eq!(gx, [0.1875, -0.1875]);
    assert_eq!(gg, [0.5]);
    assert_eq!(gb, [1.0]);
}

#[test]
fn batch_norm_running_statistics_as_pytorch() {
    // torch: bn = BatchNorm2d(2) (momentum 0.1, running mean 0 and var 1), bn.running_mean =
    // [0, 1]; bn(x) on channel 0 = [1, 2, 3, 4], channel 1 = [5, 5, 5, 9] gives
    // running_mean = 0.9 * old + 0.1 * batch mean, running_var = 0.9 * old + 0.1 * unbiased var.
    let x = [1.0, 2.0, 5.0, 5.0, 3.0, 4.0, 5.0, 9.0]; // [N=2, C=2, H=1, W=2]
    let mut y = [0.0; 8];
    let mut saved = BnSaved::default();
    ng::batch_norm_train(
        [2, 2, 1, 2],
        &x,
        &[1.0; 2],
        &[0.0; 2],
        1e-5,
        &mut y,
        &mut saved,
    )
    .unwrap();
    assert_eq!(saved.mean(), [2.5, 6.0]);
    assert_eq!(saved.biased_var(), [1.25, 3.0]);
    let unbiased = saved.unbiased_var().unwrap();
    assert_eq!(unbiased, [5.0 / 3.0, 4.0]);
    let mut running_mean = [0.0, 1.0];
    let mut running_var = [1.0, 1.0];
    ng::batch_norm_update_running(
        &mut running_mean,
        &mut running_var,
        &saved.batch_mean(),
        &unbiased,
        0.1,
    )
    .unwrap();
    // 0.9 * 0 + 0.1 * 2.5, 0.9 * 1 + 0.1 * 6; 0.9 + 0.1 * 5/3, 0.9 + 0.4
    assert_eq!(running_mean, [0.25, 1.5]);
    assert_eq!(running_var, [(0.9 + 0.5 / 3.0) as f32, 1.3]);
    // Normalised with the biased variance: (1 - 2.5) / sqrt(1.25 + 1e-5).
    assert_eq!(y[0], (-1.5 / (1.25f64 + 1e-5).sqrt()) as f32);
}

#[test]
fn batch_norm_errors() {
    let mut saved = BnSaved::default();
    let mut y = [0.0; 3];
    // One value per channel (N*H*W = 1) is refused, like F.batch_norm in training.
    let e = ng::batch_norm_train(
        [1, 3, 1, 1],
        &[1.0; 3],
        &[1.0; 3],
        &[0.0; 3],
        1e-5,
        &mut y,
        &mut saved,
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::Geometry(_)), "{e}");
    assert!(saved.unbiased_var().is_err());
    // Bad lengths.
    assert!(
        ng::batch_norm_train(
            [1, 1, 1, 3],
            &[1.0; 3],
            &[1.0; 2],
            &[0.0],
            1e-5,
            &mut y,
            &mut saved
        )
        .is_err()
    );
    assert!(
        ng::batch_norm_train(
            [1, 1, 1, 3],
            &[1.0; 2],
            &[1.0],
            &[0.0],
            1e-5,
            &mut y,
            &mut saved
        )
        .is_err()
    );
    // Statistics that do not belong to these dims.
    let (mut gx, mut gg, mut gb) = ([0.0; 3], [0.0], [0.0]);
    let e = ng::batch_norm_backward(
        [1, 1, 1, 3],
        &[1.0; 3],
        &[1.0],
        &BnSaved::default(),
        &[0.0; 3],
        &mut gx,
        &mut gg,
        &mut gb,
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::Geometry(_)), "{e}");
    ng::batch_norm_train(
        [1, 1, 1, 3],
        &[1.0, 2.0, 4.0],
        &[1.0],
        &[0.0],
        1e-5,
        &mut y,
        &mut saved,
    )
    .unwrap();
    assert!(
        ng::batch_norm_backward(
            [1, 1, 3, 1],
            &[1.0; 3],
            &[1.0],
            &saved,
            &[0.0; 2],
            &mut gx,
            &mut gg,
            &mut gb
        )
        .is_err()
    );
    assert!(
        ng::batch_norm_backward(
            [3, 1, 1, 1],
            &[1.0; 3],
            &[1.0],
            &saved,
            &[0.0; 3],
            &mut gx,
            &mut gg,
            &mut [0.0; 2]
        )
        .is_err()
    );
    assert!(
        ng::batch_norm_update_running(&mut [0.0; 2], &mut [0.0; 2], &[0.0; 2], &[0.0; 1], 0.1)
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// ReLU

#[test]
fn relu_backward_matches_finite_differences() {
    for (len, seed) in [(1, 200), (7, 210), (64, 220)] {
        let x = away_from_zero(len, seed);
        let g = values(len, seed + 1);
        let g64 = f64s(&g);
        let mut y = vec![0.0; len];
        naive::relu(&x, &mut y).unwrap();
        let relu64 = |x: &[f64]| x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>();
        assert_mirror("relu", &y, &relu64(&f64s(&x)));
        let fd = central_diff(&f64s(&x), H_LINEAR, |x| dot(&g64, &relu64(x)));
        if fd.iter().all(|&v| v == 0.0) {
            continue; // all inputs negative: nothing to compare relatively
        }
        // From the input and from the output alike.
        let mut gx = vec![f32::NAN; len];
        ng::relu_backward(&x, &g, &mut gx).unwrap();
        assert_grad(&format!("relu {len} (input)"), &gx, &fd, TOL_LINEAR);
        ng::relu_backward(&y, &g, &mut gx).unwrap();
        assert_grad(&format!("relu {len} (output)"), &gx, &fd, TOL_LINEAR);
    }
}

#[test]
fn relu_backward_at_zero_and_nan() {
    let v = [
        -1.0,
        -0.0,
        0.0,
        1e-30,
        2.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let g = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let mut gx = [f32::NAN; 8];
    ng::relu_backward(&v, &g, &mut gx).unwrap();
    // Zero at <= 0 (both zeros), passed where > 0 and where NaN (PyTorch's threshold_backward).
    assert_eq!(gx, [0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0, 0.0]);
    let mut gx = [0.0; 1];
    ng::relu_backward(&[1.0], &[f32::NAN], &mut gx).unwrap();
    assert!(gx[0].is_nan());
    assert!(ng::relu_backward(&[1.0; 2], &[1.0; 3], &mut [0.0; 2]).is_err());
    assert!(ng::relu_backward(&[1.0; 2], &[1.0; 2], &mut [0.0; 3]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Max pool

fn max_pool_case(input: [usize; 4], k: usize, s: usize, p: usize, seed: u64) {
    let geom = PoolGeometry::new(input, [k, k], [s, s], [p, p]).unwrap();
    let li: usize = input.iter().product();
    let lo: usize = geom.output.iter().product();
    let x = distinct(li, seed);
    let g = values(lo, seed + 1);
    let g64 = f64s(&g);
    let mut y = vec![0.0; lo];
    naive::max_pool2d(&geom, &x, &mut y).unwrap();
    assert_mirror("max_pool2d", &y, &max_pool_f64(&geom, &f64s(&x)));
    let mut gx = vec![f32::NAN; li];
    ng::max_pool2d_backward(&geom, &x, &g, &mut gx).unwrap();
    let fd = central_diff(&f64s(&x), H_LINEAR, |x| dot(&g64, &max_pool_f64(&geom, x)));
    assert_grad(
        &format!("max_pool {input:?} k{k} s{s} p{p}"),
        &gx,
        &fd,
        TOL_LINEAR,
    );
}

#[test]
fn max_pool_backward_matches_finite_differences() {
    max_pool_case([1, 1, 5, 5], 3, 2, 1, 300); // the ResNet stem pool on an odd map
    max_pool_case([3, 2, 4, 5], 2, 2, 0, 310); // batch 3, odd width
    max_pool_case([2, 3, 7, 6], 3, 1, 1, 320); // overlapping windows: gradients add up
    max_pool_case([1, 2, 1, 1], 1, 1, 0, 330); // 1x1 map
    max_pool_case([3, 1, 3, 3], 3, 2, 1, 340);
}

#[test]
fn max_pool_backward_ties_nan_and_padding() {
    let geom = PoolGeometry::new([1, 1, 2, 2], [2, 2], [1, 1], [0, 0]).unwrap();
    let mut gx = [f32::NAN; 4];
    // A tie goes to the first in row-major order.
    ng::max_pool2d_backward(&geom, &[1.0, 3.0, 3.0, 3.0], &[1.0], &mut gx).unwrap();
    assert_eq!(gx, [0.0, 1.0, 0.0, 0.0]);
    // A NaN wins over larger values; with several, the last NaN in scan order (PyTorch CPU).
    ng::max_pool2d_backward(&geom, &[1.0, f32::NAN, 9.0, 2.0], &[1.0], &mut gx).unwrap();
    assert_eq!(gx, [0.0, 1.0, 0.0, 0.0]);
    ng::max_pool2d_backward(&geom, &[f32::NAN, 1.0, f32::NAN, 2.0], &[1.0], &mut gx).unwrap();
    assert_eq!(gx, [0.0, 0.0, 1.0, 0.0]);
    // A window of -inf: the first real position.
    ng::max_pool2d_backward(&geom, &[f32::NEG_INFINITY; 4], &[2.0], &mut gx).unwrap();
    assert_eq!(gx, [2.0, 0.0, 0.0, 0.0]);
    // Padding never wins, even over negative values; padded corners are skipped.
    let geom = PoolGeometry::new([1, 1, 2, 2], [3, 3], [2, 2], [1, 1]).unwrap();
    let mut gx = [f32::NAN; 4];
    ng::max_pool2d_backward(&geom, &[-5.0, -4.0, -3.0, -2.0], &[1.5], &mut gx).unwrap();
    assert_eq!(gx, [0.0, 0.0, 0.0, 1.5]);
    // Overlapping windows send the same argmax two gradients.
    let geom = PoolGeometry::new([1, 1, 1, 3], [1, 2], [1, 1], [0, 0]).unwrap();
    let mut gx = [f32::NAN; 3];
    ng::max_pool2d_backward(&geom, &[0.0, 5.0, 1.0], &[1.0, 2.0], &mut gx).unwrap();
    assert_eq!(gx, [0.0, 3.0, 0.0]);
    assert!(ng::max_pool2d_backward(&geom, &[0.0; 3], &[1.0; 3], &mut gx).is_err());
    assert!(ng::max_pool2d_backward(&geom, &[0.0; 2], &[1.0; 2], &mut gx).is_err());
    assert!(ng::max_pool2d_backward(&geom, &[0.0; 3], &[1.0; 2], &mut [0.0; 4]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Adaptive average pool

fn adaptive_case(dims: [usize; 4], out_hw: [usize; 2], seed: u64) {
    let [n, c, _, _] = dims;
    let li: usize = dims.iter().product();
    let lo = n * c * out_hw[0] * out_hw[1];
    let x = values(li, seed);
    let g = values(lo, seed + 1);
    let g64 = f64s(&g);
    let mut y = vec![0.0; lo];
    naive::adaptive_avg_pool2d(dims, out_hw, &x, &mut y).unwrap();
    assert_mirror(
        "adaptive_avg_pool2d",
        &y,
        &adaptive_avg_f64(dims, out_hw, &f64s(&x)),
    );
    let mut gx = vec![f32::NAN; li];
    ng::adaptive_avg_pool2d_backward(dims, out_hw, &g, &mut gx).unwrap();
    let fd = central_diff(&f64s(&x), H_LINEAR, |x| {
        dot(&g64, &adaptive_avg_f64(dims, out_hw, x))
    });
    assert_grad(
        &format!("adaptive_avg_pool {dims:?} -> {out_hw:?}"),
        &gx,
        &fd,
        TOL_LINEAR,
    );
}

#[test]
fn adaptive_avg_pool_backward_matches_finite_differences() {
    adaptive_case([3, 2, 5, 7], [1, 1], 400); // global pool, batch 3, odd map
    adaptive_case([1, 4, 1, 1], [1, 1], 410); // global pool of a 1x1 map: identity
    adaptive_case([1, 2, 5, 3], [3, 2], 420); // overlapping bins
    adaptive_case([2, 1, 2, 3], [3, 4], 430); // upsampling
}

#[test]
fn adaptive_avg_pool_backward_by_hand() {
    // Global pool of 2x3: every input gets grad / 6.
    let mut gx = [0.0; 12];
    ng::adaptive_avg_pool2d_backward([1, 2, 2, 3], [1, 1], &[6.0, -3.0], &mut gx).unwrap();
    assert_eq!(
        gx,
        [
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5
        ]
    );
    // 5 -> 3 bins [0,2), [1,4), [3,5): input 1 is in two bins, input 3 too.
    let mut gx = [0.0; 5];
    ng::adaptive_avg_pool2d_backward([1, 1, 1, 5], [1, 3], &[2.0, 3.0, 4.0], &mut gx).unwrap();
    assert_eq!(gx, [1.0, 2.0, 1.0, 3.0, 2.0]);
    assert!(ng::adaptive_avg_pool2d_backward([1, 1, 2, 2], [1, 1], &[1.0; 2], &mut gx).is_err());
    assert!(ng::adaptive_avg_pool2d_backward([1, 1, 2, 2], [1, 1], &[1.0], &mut [0.0; 3]).is_err());
    assert!(ng::adaptive_avg_pool2d_backward([1, 1, 2, 2], [0, 1], &[], &mut [0.0; 4]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Linear

fn linear_case(dims: [usize; 3], seed: u64) {
    let [n, i, o] = dims;
    let x = values(n * i, seed);
    let wt = values(o * i, seed + 1);
    let b = values(o, seed + 2);
    let g = values(n * o, seed + 3);
    let (x64, w64, b64, g64) = (f64s(&x), f64s(&wt), f64s(&b), f64s(&g));
    let mut y = vec![0.0; n * o];
    naive::linear(dims, &x, &wt, Some(&b), &mut y).unwrap();
    assert_mirror("linear", &y, &linear_f64(dims, &x64, &w64, Some(&b64)));
    let mut gx = vec![f32::NAN; n * i];
    let mut gw = vec![f32::NAN; o * i];
    let mut gb = vec![f32::NAN; o];
    ng::linear_backward(dims, &x, &wt, &g, Some(&mut gx), &mut gw, Some(&mut gb)).unwrap();
    let fd_x = central_diff(&x64, H_LINEAR, |x| {
        dot(&g64, &linear_f64(dims, x, &w64, Some(&b64)))
    });
    let fd_w = central_diff(&w64, H_LINEAR, |w| {
        dot(&g64, &linear_f64(dims, &x64, w, Some(&b64)))
    });
    let fd_b = central_diff(&b64, H_LINEAR, |b| {
        dot(&g64, &linear_f64(dims, &x64, &w64, Some(b)))
    });
    assert_grad(&format!("linear {dims:?} grad_in"), &gx, &fd_x, TOL_LINEAR);
    assert_grad(
        &format!("linear {dims:?} grad_weight"),
        &gw,
        &fd_w,
        TOL_LINEAR,
    );
    assert_grad(
        &format!("linear {dims:?} grad_bias"),
        &gb,
        &fd_b,
        TOL_LINEAR,
    );
    // Skipping grad_in and grad_bias leaves the weight gradient unchanged.
    let mut gw2 = vec![0.0; o * i];
    ng::linear_backward(dims, &x, &wt, &g, None, &mut gw2, None).unwrap();
    assert_eq!(gw, gw2);
}

#[test]
fn linear_backward_matches_finite_differences() {
    linear_case([1, 5, 3], 500);
    linear_case([3, 4, 7], 510);
    linear_case([2, 1, 1], 520);
}

#[test]
fn linear_backward_by_hand_and_errors() {
    // y = W x with W = [[1, 2], [3, 4]], x = [5, 6]; g = [1, -1].
    let (mut gx, mut gw, mut gb) = ([0.0; 2], [0.0; 4], [0.0; 2]);
    ng::linear_backward(
        [1, 2, 2],
        &[5.0, 6.0],
        &[1.0, 2.0, 3.0, 4.0],
        &[1.0, -1.0],
        Some(&mut gx),
        &mut gw,
        Some(&mut gb),
    )
    .unwrap();
    assert_eq!(gx, [-2.0, -2.0]); // W^T g
    assert_eq!(gw, [5.0, 6.0, -5.0, -6.0]); // g x^T
    assert_eq!(gb, [1.0, -1.0]);
    let x = [0.0; 2];
    let w = [0.0; 4];
    assert!(ng::linear_backward([1, 2, 2], &x, &w, &[0.0; 3], None, &mut gw, None).is_err());
    assert!(ng::linear_backward([1, 2, 2], &x, &w[..3], &[0.0; 2], None, &mut gw, None).is_err());
    assert!(ng::linear_backward([1, 2, 2], &x, &w, &[0.0; 2], None, &mut [0.0; 3], None).is_err());
    assert!(
        ng::linear_backward(
            [1, 2, 2],
            &x,
            &w,
            &[0.0; 2],
            Some(&mut [0.0; 3]),
            &mut gw,
            None
        )
        .is_err()
    );
    assert!(
        ng::linear_backward(
            [1, 2, 2],
            &x,
            &w,
            &[0.0; 2],
            None,
            &mut gw,
            Some(&mut [0.0; 1])
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

fn cross_entropy_case(dims: [usize; 2], smoothing: f32, seed: u64) {
    let [n, k] = dims;
    let z: Vec<f32> = values(n * k, seed).iter().map(|v| v * 3.0).collect();
    let labels: Vec<usize> = values(n, seed + 1)
        .iter()
        .map(|v| (((v + 1.0) / 2.0 * k as f32) as usize).min(k - 1))
        .collect();
    let z64 = f64s(&z);
    let eps = f64::from(smoothing);
    let mut gz = vec![f32::NAN; n * k];
    let loss = ng::softmax_cross_entropy(dims, &z, &labels, smoothing, Some(&mut gz)).unwrap();
    let want = cross_entropy_f64(dims, &z64, &labels, eps);
    assert!(
        (loss - want).abs() <= 1e-12 * want.abs().max(1.0),
        "loss {loss} vs {want}"
    );
    assert_eq!(
        ng::softmax_cross_entropy(dims, &z, &labels, smoothing, None).unwrap(),
        loss
    );
    let fd = central_diff(&z64, H_CURVED, |z| cross_entropy_f64(dims, z, &labels, eps));
    assert_grad(
        &format!("cross_entropy {dims:?} smoothing {smoothing}"),
        &gz,
        &fd,
        TOL_CURVED,
    );
}

#[test]
fn cross_entropy_matches_finite_differences() {
    cross_entropy_case([1, 5], 0.0, 600);
    cross_entropy_case([3, 4], 0.0, 610);
    cross_entropy_case([3, 4], 0.1, 620);
    cross_entropy_case([2, 7], 1.0, 630);
    cross_entropy_case([5, 2], 0.3, 640);
}

#[test]
fn cross_entropy_by_hand() {
    // Uniform logits: loss ln k, gradient (softmax - onehot) / n = (1/k - onehot) / n.
    let (n, k) = (3usize, 5usize);
    let labels = [0, 4, 2];
    let mut gz = vec![0.0; n * k];
    let loss = ng::softmax_cross_entropy([n, k], &[0.7; 15], &labels, 0.0, Some(&mut gz)).unwrap();
    assert!((loss - (k as f64).ln()).abs() < 1e-15);
    for r in 0..n {
        for j in 0..k {
            let onehot = if j == labels[r] { 1.0 } else { 0.0 };
            let want = ((0.2 - onehot) / 3.0) as f32;
            assert_eq!(gz[r * k + j], want, "row {r} class {j}");
        }
    }
    // With smoothing 0.1 the loss of uniform logits is still ln k; the target is
    // 0.9 * onehot + 0.02.
    let loss = ng::softmax_cross_entropy([n, k], &[0.0; 15], &labels, 0.1, Some(&mut gz)).unwrap();
    assert!((loss - (k as f64).ln()).abs() < 1e-15);
    assert_eq!(gz[0], ((0.2 - 0.9 - 0.02) / 3.0) as f32);
    assert_eq!(gz[1], ((0.2 - 0.02) / 3.0) as f32);
    // p = [1/4, 3/4], label 1, smoothing 0.2: 0.8 * -ln(3/4) + 0.2 * -(ln(1/4) + ln(3/4)) / 2.
    let z = [0.0, 3f32.ln()];
    let loss = ng::softmax_cross_entropy([1, 2], &z, &[1], 0.2, None).unwrap();
    let p0 = 1.0 / (1.0 + f64::from(z[1]).exp());
    let p1 = 1.0 - p0;
    let eps = f64::from(0.2f32); // not exactly 0.2
    let want = -(1.0 - eps) * p1.ln() - eps / 2.0 * (p0.ln() + p1.ln());
    assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    // Large logits do not overflow.
    let mut g2 = [0.0; 2];
    let loss = ng::softmax_cross_entropy([1, 2], &[1000.0, 0.0], &[1], 0.0, Some(&mut g2)).unwrap();
    assert_eq!(loss, 1000.0);
    assert_eq!(g2, [1.0, -1.0]);
    // One class: nothing to learn.
    let loss =
        ng::softmax_cross_entropy([2, 1], &[3.0, -2.0], &[0, 0], 0.0, Some(&mut g2)).unwrap();
    assert_eq!(loss, 0.0);
    assert_eq!(g2, [0.0, 0.0]);
}

#[test]
fn cross_entropy_errors() {
    let z = [0.0; 6];
    let e = ng::softmax_cross_entropy([2, 3], &z, &[0, 3], 0.0, None).unwrap_err();
    assert_eq!(
        e,
        KernelError::Label {
            row: 1,
            label: 3,
            classes: 3
        }
    );
    assert!(matches!(
        ng::softmax_cross_entropy([2, 3], &z, &[0], 0.0, None),
        Err(KernelError::BadLength { .. })
    ));
    assert!(ng::softmax_cross_entropy([2, 3], &z[..5], &[0, 1], 0.0, None).is_err());
    assert!(ng::softmax_cross_entropy([2, 3], &z, &[0, 1], 0.0, Some(&mut [0.0; 5])).is_err());
    for bad in [-0.1, 1.5, f32::NAN] {
        assert!(ng::softmax_cross_entropy([2, 3], &z, &[0, 1], bad, None).is_err());
    }
    assert!(ng::softmax_cross_entropy([0, 3], &[], &[], 0.0, None).is_err());
    assert!(ng::softmax_cross_entropy([2, 0], &[], &[0, 0], 0.0, None).is_err());
}

// ---------------------------------------------------------------------------------------------
// L1 and MSE

#[test]
fn l1_and_mse_match_finite_differences() {
    for (len, seed) in [(1, 700), (7, 710), (30, 720)] {
        let t = values(len, seed);
        let d = away_from_zero(len, seed + 1);
        let p: Vec<f32> = t.iter().zip(&d).map(|(t, d)| t + d).collect();
        let (p64, t64) = (f64s(&p), f64s(&t));
        let m = len as f64;
        let l1 = |p: &[f64]| p.iter().zip(&t64).map(|(a, b)| (a - b).abs()).sum::<f64>() / m;
        let mse = |p: &[f64]| {
            p.iter()
                .zip(&t64)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / m
        };

        let mut g = vec![f32::NAN; len];
        let loss = ng::l1_loss(&p, &t, Some(&mut g)).unwrap();
        assert!((loss - l1(&p64)).abs() < 1e-12);
        let fd = central_diff(&p64, H_LINEAR, l1);
        assert_grad(&format!("l1_loss {len}"), &g, &fd, TOL_LINEAR);

        let loss = ng::mse_loss(&p, &t, Some(&mut g)).unwrap();
        assert!((loss - mse(&p64)).abs() < 1e-12);
        // Central differences are exact on a quadratic.
        let fd = central_diff(&p64, H_LINEAR, mse);
        assert_grad(&format!("mse_loss {len}"), &g, &fd, TOL_LINEAR);
    }
}

#[test]
fn l1_and_mse_by_hand_and_errors() {
    let mut g = [f32::NAN; 3];
    let loss = ng::l1_loss(&[1.0, 2.0, 3.0], &[1.0, 0.0, 4.0], Some(&mut g)).unwrap();
    assert_eq!(loss, 1.0);
    assert_eq!(g, [0.0, 1.0 / 3.0, -1.0 / 3.0]); // 0 at a zero difference, as PyTorch
    let mut g = [f32::NAN; 2];
    let loss = ng::mse_loss(&[1.0, 2.0], &[0.0, 0.0], Some(&mut g)).unwrap();
    assert_eq!(loss, 2.5);
    assert_eq!(g, [1.0, 2.0]);
    assert!(ng::l1_loss(&[1.0; 2], &[1.0; 3], None).is_err());
    assert!(ng::mse_loss(&[1.0; 2], &[1.0; 2], Some(&mut [0.0; 1])).is_err());
    assert!(matches!(
        ng::mse_loss(&[], &[], None),
        Err(KernelError::Geometry(_))
    ));
    assert!(ng::l1_loss(&[], &[], None).is_err());
}

// ---------------------------------------------------------------------------------------------
// Pixel shuffle

fn pixel_shuffle_case(dims: [usize; 4], r: usize, seed: u64) {
    let len: usize = dims.iter().product();
    let x = values(len, seed);
    let g = values(len, seed + 1);
    let g64 = f64s(&g);
    let mut y = vec![0.0; len];
    naive::pixel_shuffle(dims, r, &x, &mut y).unwrap();
    assert_mirror("pixel_shuffle", &y, &pixel_shuffle_f64(dims, r, &f64s(&x)));
    let mut gx = vec![f32::NAN; len];
    ng::pixel_shuffle_backward(dims, r, &g, &mut gx).unwrap();
    let fd = central_diff(&f64s(&x), H_LINEAR, |x| {
        dot(&g64, &pixel_shuffle_f64(dims, r, x))
    });
    assert_grad(
        &format!("pixel_shuffle {dims:?} r{r}"),
        &gx,
        &fd,
        TOL_LINEAR,
    );
    // A permutation moves values without arithmetic: the gradient holds exactly g's values.
    let (mut a, mut b) = (gx.clone(), g.clone());
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    assert_eq!(a, b);
}

#[test]
fn pixel_shuffle_backward_matches_finite_differences() {
    pixel_shuffle_case([1, 4, 1, 1], 2, 800);
    pixel_shuffle_case([3, 8, 2, 3], 2, 810);
    pixel_shuffle_case([2, 9, 3, 1], 3, 820);
    pixel_shuffle_case([1, 3, 2, 2], 1, 830);
}

#[test]
fn pixel_shuffle_backward_by_hand_and_errors() {
    // Forward: [1, 4, 1, 2] -> [1, 1, 2, 4]; backward undoes it.
    let input = [10.0, 20.0, 11.0, 21.0, 12.0, 22.0, 13.0, 23.0];
    let mut out = [0.0; 8];
    naive::pixel_shuffle([1, 4, 1, 2], 2, &input, &mut out).unwrap();
    let mut back = [0.0; 8];
    ng::pixel_shuffle_backward([1, 4, 1, 2], 2, &out, &mut back).unwrap();
    assert_eq!(back, input);
    for r in [0, 2, usize::MAX] {
        assert!(matches!(
            ng::pixel_shuffle_backward([1, 3, 1, 1], r, &[0.0; 3], &mut [0.0; 3]),
            Err(KernelError::Geometry(_))
        ));
    }
    assert!(ng::pixel_shuffle_backward([1, 4, 1, 1], 2, &[0.0; 3], &mut [0.0; 4]).is_err());
    assert!(ng::pixel_shuffle_backward([1, 4, 1, 1], 2, &[0.0; 4], &mut [0.0; 5]).is_err());
}

#[test]
fn option_a_shortcut_backward_routes_kept_pixels_and_drops_padding() {
    // [1, 1, 3, 3] -> stride 2 -> [1, 4, 2, 2]: one zero channel before, two after.
    let d = [1, 1, 3, 3];
    let mut y = vec![0.0; 16];
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    naive::subsample_pad_channels(d, 2, 4, &x, &mut y).unwrap();
    assert_eq!(&y[4..8], &[1.0, 3.0, 7.0, 9.0]);
    assert!(y[..4].iter().chain(&y[8..]).all(|&v| v == 0.0));
    let g: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let mut gx = vec![f32::NAN; 9];
    ng::subsample_pad_channels_backward(d, 2, 4, &g, &mut gx).unwrap();
    assert_eq!(gx, [4.0, 0.0, 5.0, 0.0, 0.0, 0.0, 6.0, 0.0, 7.0]);
    assert!(ng::subsample_pad_channels_backward(d, 2, 0, &g, &mut gx).is_err());
    assert!(naive::subsample_pad_channels(d, 0, 4, &x, &mut y).is_err());
}
