//! Fast backward kernels for training, on NHWC activations: the gradients of the fast forward
//! kernels, each beside its reference twin in [`crate::naive_grad`] (NCHW, f64 accumulation)
//! and checked against it by the props.
//!
//! - Convolution gradients are matrix products ([`ConvGrad`]): the weight gradient is
//!   `dY^T · im2col(X)`, the input gradient `col2im(dY · W)`, both on the `gemm` project's
//!   kernels; the input gradient of a stride-1, undilated, ungrouped convolution (padding
//!   under the kernel size) is itself a convolution (of `dY` with the flipped, transposed
//!   weights) and runs on [`PackedConv`], Winograd included.
//! - Batch-norm in training mode is fused with what follows it in a residual block (scale,
//!   residual add, ReLU) forwards, and its backward with the ReLU mask and the residual's
//!   gradient ([`batch_norm_train_nhwc`], [`batch_norm_backward_nhwc`]): two passes over
//!   memory each way.
//!
//! **Determinism.** Every reduction (per-channel sums over the batch, the weight gradient's
//! sum over pixels) is split into pieces whose boundaries depend only on the shapes, never on
//! the thread count, and the pieces' partial sums are added in a fixed order: the same inputs
//! give bitwise the same gradients with any [`Par`].

use super::simd::simd_scope;
use super::{Ctx, Epilogue, PackedConv, Par};
use crate::naive_grad::BnSaved;
use crate::{Conv2dParams, ConvGeometry, Cpu, KernelError, PoolGeometry, check_len};
use rayon::prelude::*;

/// Pixels per piece of the per-channel reductions (fixed: see the module's determinism note).
const STAT_PIXELS: usize = 256;

/// Rows (`(ky, kx, channel)` columns of im2col) per product of a weight gradient.
const WGRAD_ROWS: usize = 256;

/// Output pixels per product of an input gradient computed as `col2im(dY · W)` (whole images
/// per product, at least one).
const INPUT_GRAD_ROWS: usize = 64;

/// Values of a weight gradient per task of its final sum and reorder (whole output channels).
const REORDER_VALUES: usize = 1 << 16;

/// Output pixels per partial sum of a weight gradient (whole images per piece, at least one).
const WGRAD_PIXELS: usize = 1024;

/// Run `f` on every item, on the current rayon pool with [`Par::Rayon`], in order otherwise;
/// the results in the items' order.
///
/// Each item runs inside [`simd_scope`], but only code *inlined* there is compiled for the
/// CPU's features: pass `f` as an `#[inline(always)]` closure, or it stays a separate function
/// built for the architecture's baseline (SSE2, and `mul_add` a call to libm's `fmaf`). Every
/// caller here does; without it a ResNet-18 training step spent a sixth of its time in the
/// scalar SGD update.
fn map_items<I: Send, T: Send>(
    cpu: Cpu,
    par: Par,
    items: Vec<I>,
    f: impl Fn(I) -> T + Sync + Send,
) -> Vec<T> {
    let f = |item| {
        simd_scope(
            cpu,
            #[inline(always)]
            || f(item),
        )
    };
    if par.is_parallel() && items.len() > 1 {
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}

/// Add per-piece per-channel partial sums in the pieces' order.
fn sum_parts(c: usize, parts: &[Vec<f64>]) -> Vec<f64> {
    let mut total = vec![0.0f64; c];
    for p in parts {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// The product of `dims`, or a [`KernelError::Geometry`] when it overflows.
fn elems(what: &str, dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| KernelError::Geometry(format!("{what}: sizes {dims:?} overflow")))
}

/// A piece of a batch-norm's output, its input and its residual.
type OutPiece<'a> = ((&'a mut [f32], &'a [f32]), Option<&'a [f32]>);

/// What follows a batch-norm in a training step: `y = relu?(scale * bn(z) + residual)`.
#[derive(Debug, Clone, Copy)]
pub struct BnTrain<'a> {
    /// Per-channel scale `[C]`.
    pub gamma: &'a [f32],
    /// Per-channel shift `[C]`.
    pub beta: &'a [f32],
    /// Added to the variance (PyTorch: 1e-5).
    pub eps: f32,
    /// Multiplies the normalised value (1 but in EDSR's residual scaling).
    pub scale: f32,
    /// Added after the scale (a residual block's shortcut), NHWC like the input.
    pub residual: Option<&'a [f32]>,
    /// Whether a ReLU follows.
    pub relu: bool,
}

/// [`crate::naive_grad::batch_norm_train`] on NHWC data, fused with a scale, a residual add
/// and a ReLU (`y = relu?(scale * bn(z) + residual)`; the reference computes them one after
/// the other). Statistics in f64, as the reference, saved in `saved` for
/// [`batch_norm_backward_nhwc`] and the running update. `z` and `y` are NHWC of logical dims
/// `[N, C, H, W]`.
pub fn batch_norm_train_nhwc(
    cpu: Cpu,
    par: Par,
    dims: [usize; 4],
    z: &[f32],
    bn: &BnTrain<'_>,
    y: &mut [f32],
    saved: &mut BnSaved,
) -> Result<(), KernelError> {
    let c = dims[1];
    let len = elems("batch_norm_train", &dims)?;
    check_len("batch_norm_train input", z, len)?;
    check_len("batch_norm_train output", y, len)?;
    check_len("batch_norm_train gamma", bn.gamma, c)?;
    check_len("batch_norm_train beta", bn.beta, c)?;
    if let Some(r) = bn.residual {
        check_len("batch_norm_train residual", r, len)?;
    }
    let count = dims[0] * dims[2] * dims[3];
    if count < 2 {
        return Err(KernelError::Geometry(format!(
            "batch norm in training needs more than 1 value per channel, N*H*W = {count}"
        )));
    }
    if c == 0 {
        *saved = BnSaved::from_parts(Vec::new(), Vec::new(), Vec::new(), count);
        return Ok(());
    }
    let piece = STAT_PIXELS * c;
    // One pass: per piece, sums of `x - k` and `(x - k)^2` in f64 about a per-channel shift
    // `k` (the first pixel's value), which keeps the variance's subtraction well conditioned.
    let shift: Vec<f64> = z[..c].iter().map(|&v| f64::from(v)).collect();
    let parts = map_items(
        cpu,
        par,
        z.chunks(piece).collect(),
        #[inline(always)]
        |zc: &[f32]| {
            let mut s1 = vec![0.0f64; c];
            let mut s2 = vec![0.0f64; c];
            for row in zc.chunks_exact(c) {
                for (((s1, s2), &v), &k) in s1.iter_mut().zip(s2.iter_mut()).zip(row).zip(&shift) {
                    let d = f64::from(v) - k;
                    *s1 += d;
                    *s2 += d * d;
                }
            }
            (s1, s2)
        },
    );
    let (p1, p2): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    let (s1, s2) = (sum_parts(c, &p1), sum_parts(c, &p2));
    let n = count as f64;
    let mean: Vec<f64> = (0..c).map(|i| shift[i] + s1[i] / n).collect();
    let var: Vec<f64> = (0..c)
        .map(|i| (s2[i] / n - (s1[i] / n) * (s1[i] / n)).max(0.0))
        .collect();
    let inv_std: Vec<f64> = var
        .iter()
        .map(|&v| 1.0 / (v + f64::from(bn.eps)).sqrt())
        .collect();
    // y = z * a + b with a = scale * gamma * inv_std, b = scale * (beta - mean * a), in f32
    // (PyTorch's CPU form).
    let scale = f64::from(bn.scale);
    let a: Vec<f32> = (0..c)
        .map(|i| (scale * f64::from(bn.gamma[i]) * inv_std[i]) as f32)
        .collect();
    let b: Vec<f32> = (0..c)
        .map(|i| {
            (scale * (f64::from(bn.beta[i]) - mean[i] * f64::from(bn.gamma[i]) * inv_std[i])) as f32
        })
        .collect();
    let relu = bn.relu;
    let items: Vec<_> = match bn.residual {
        Some(r) => y
            .chunks_mut(piece)
            .zip(z.chunks(piece))
            .zip(r.chunks(piece).map(Some))
            .collect(),
        None => y
            .chunks_mut(piece)
            .zip(z.chunks(piece))
            .map(|p| (p, None))
            .collect(),
    };
    map_items(
        cpu,
        par,
        items,
        #[inline(always)]
        |((yc, zc), rc): OutPiece<'_>| {
            for (px, (yr, zr)) in yc.chunks_exact_mut(c).zip(zc.chunks_exact(c)).enumerate() {
                for (ch, (o, &v)) in yr.iter_mut().zip(zr).enumerate() {
                    *o = v * a[ch] + b[ch];
                }
                if let Some(r) = rc {
                    yr.iter_mut()
                        .zip(&r[px * c..(px + 1) * c])
                        .for_each(|(o, &r)| *o += r);
                }
                if relu {
                    // As PyTorch: NaN stays NaN, everything not above zero becomes +0.
                    yr.iter_mut()
                        .for_each(|o| *o = if *o <= 0.0 { 0.0 } else { *o });
                }
            }
        },
    );
    *saved = BnSaved::from_parts(mean, var, inv_std, count);
    Ok(())
}

/// Where the gradient that reaches a residual block's shortcut goes.
#[derive(Debug)]
pub enum ResidualGrad<'a> {
    /// No residual add in the forward.
    None,
    /// Overwrite this NHWC buffer with the shortcut's gradient.
    Set(&'a mut [f32]),
    /// Add the shortcut's gradient to this NHWC buffer.
    Add(&'a mut [f32]),
}

/// The backward of [`batch_norm_train_nhwc`] with its scale, residual add and ReLU:
/// `grad` holds `dL/dy` and becomes the gradient after the ReLU mask (`dL/dy` where `y > 0`,
/// else 0, when `relu_out` is given: the forward's output); that is also the shortcut's
/// gradient, written or added to `residual`; `grad_z` receives `dL/dz` (the batch-norm's
/// input gradient, through the batch statistics), `grad_gamma`/`grad_beta` the parameters'
/// gradients. Two passes over memory; sums in f64 in fixed pieces.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_nhwc(
    cpu: Cpu,
    par: Par,
    dims: [usize; 4],
    z: &[f32],
    gamma: &[f32],
    saved: &BnSaved,
    scale: f32,
    relu_out: Option<&[f32]>,
    grad: &mut [f32],
    residual: ResidualGrad<'_>,
    grad_z: &mut [f32],
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
) -> Result<(), KernelError> {
    let c = dims[1];
    let len = elems("batch_norm_backward", &dims)?;
    check_len("batch_norm_backward input", z, len)?;
    check_len("batch_norm_backward grad_out", grad, len)?;
    check_len("batch_norm_backward grad_in", grad_z, len)?;
    check_len("batch_norm_backward gamma", gamma, c)?;
    check_len("batch_norm_backward grad_gamma", grad_gamma, c)?;
    check_len("batch_norm_backward grad_beta", grad_beta, c)?;
    if let Some(y) = relu_out {
        check_len("batch_norm_backward output", y, len)?;
    }
    let count = dims[0] * dims[2] * dims[3];
    if saved.mean().len() != c || saved.inv_std().len() != c || saved.count() != count {
        return Err(KernelError::Geometry(format!(
            "batch norm statistics saved for {} channels of {} values, backward has {c} of {count}",
            saved.mean().len(),
            saved.count()
        )));
    }
    if c == 0 {
        return Ok(());
    }
    let (mean, inv_std) = (saved.mean(), saved.inv_std());
    let piece = STAT_PIXELS * c;
    let pieces = len.div_ceil(piece);
    let (res, add) = match residual {
        ResidualGrad::None => (None, false),
        ResidualGrad::Set(r) => (Some(r), false),
        ResidualGrad::Add(r) => (Some(r), true),
    };
    if let Some(r) = &res {
        check_len("batch_norm_backward residual", r, len)?;
    }
    let res_pieces: Vec<Option<&mut [f32]>> = match res {
        Some(r) => r.chunks_mut(piece).map(Some).collect(),
        None => (0..pieces).map(|_| None).collect(),
    };
    let y_pieces: Vec<Option<&[f32]>> = match relu_out {
        Some(y) => y.chunks(piece).map(Some).collect(),
        None => (0..pieces).map(|_| None).collect(),
    };
    let items: Vec<_> = grad
        .chunks_mut(piece)
        .zip(z.chunks(piece))
        .zip(res_pieces)
        .zip(y_pieces)
        .collect();
    // Pass 1: the mask, the shortcut's gradient, and per channel sum(g) and sum(g * xhat).
    let sums = map_items(
        cpu,
        par,
        items,
        #[inline(always)]
        |(((gc, zc), rc), yc)| {
            let mut s1 = vec![0.0f64; c];
            let mut s2 = vec![0.0f64; c];
            if let Some(y) = yc {
                gc.iter_mut()
                    .zip(y)
                    .for_each(|(g, &y)| *g = if y <= 0.0 { 0.0 } else { *g });
            }
            match rc {
                Some(r) if add => r.iter_mut().zip(gc.iter()).for_each(|(r, &g)| *r += g),
                Some(r) => r.copy_from_slice(gc),
                None => {}
            }
            for (gr, zr) in gc.chunks_exact(c).zip(zc.chunks_exact(c)) {
                for (((s1, s2), (&g, &z)), &m) in s1
                    .iter_mut()
                    .zip(s2.iter_mut())
                    .zip(gr.iter().zip(zr))
                    .zip(mean)
                {
                    let g = f64::from(g);
                    *s1 += g;
                    *s2 += g * (f64::from(z) - m);
                }
            }
            (s1, s2)
        },
    );
    let (p1, p2): (Vec<_>, Vec<_>) = sums.into_iter().unzip();
    let scale = f64::from(scale);
    let s1: Vec<f64> = sum_parts(c, &p1).into_iter().map(|s| s * scale).collect();
    let s2: Vec<f64> = sum_parts(c, &p2)
        .into_iter()
        .zip(inv_std)
        .map(|(s, &is)| s * is * scale)
        .collect();
    for i in 0..c {
        grad_beta[i] = s1[i] as f32;
        grad_gamma[i] = s2[i] as f32;
    }
    // Pass 2: dz = gamma * inv_std * (scale * g - s1 / n - xhat * s2 / n)
    //            = k1 * g - k2 - (z - mean) * k3.
    let n = count as f64;
    let k1: Vec<f32> = (0..c)
        .map(|i| (f64::from(gamma[i]) * inv_std[i] * scale) as f32)
        .collect();
    let k2: Vec<f32> = (0..c)
        .map(|i| (f64::from(gamma[i]) * inv_std[i] * s1[i] / n) as f32)
        .collect();
    let k3: Vec<f32> = (0..c)
        .map(|i| (f64::from(gamma[i]) * inv_std[i] * inv_std[i] * s2[i] / n) as f32)
        .collect();
    let m32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let items: Vec<_> = grad_z
        .chunks_mut(piece)
        .zip(grad.chunks(piece))
        .zip(z.chunks(piece))
        .collect();
    map_items(
        cpu,
        par,
        items,
        #[inline(always)]
        |((dz, gc), zc)| {
            for ((dr, gr), zr) in dz
                .chunks_exact_mut(c)
                .zip(gc.chunks_exact(c))
                .zip(zc.chunks_exact(c))
            {
                for ((d, (&g, &z)), ((&k1, &k2), (&k3, &m))) in dr
                    .iter_mut()
                    .zip(gr.iter().zip(zr))
                    .zip(k1.iter().zip(&k2).zip(k3.iter().zip(&m32)))
                {
                    *d = k1 * g - k2 - (z - m) * k3;
                }
            }
        },
    );
    Ok(())
}

/// `dst[i, j] = (accumulate ? dst[i, j] : 0) + Σ_k lhs[i, k] * rhs[k, j]` on strided
/// matrices (element `(r, c)` of a matrix at `r * rs + c * cs`), on the `gemm` project's
/// kernels, single-threaded (callers split the work so that sums keep their order).
///
/// # Panics
/// If a matrix's last element lies outside its slice (an internal invariant of the callers).
#[allow(clippy::too_many_arguments)]
fn gemm(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    [drs, dcs]: [usize; 2],
    accumulate: bool,
    lhs: &[f32],
    [lrs, lcs]: [usize; 2],
    rhs: &[f32],
    [rrs, rcs]: [usize; 2],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * drs + j * dcs] = 0.0;
                }
            }
        }
        return;
    }
    // The last element of each strided matrix, computed without overflow.
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| {
        (rows - 1)
            .checked_mul(rs)
            .zip((cols - 1).checked_mul(cs))
            .and_then(|(a, b)| a.checked_add(b))
    };
    assert!(
        last(m, drs, n, dcs).is_some_and(|l| l < dst.len()),
        "gemm dst too short"
    );
    assert!(
        last(m, lrs, k, lcs).is_some_and(|l| l < lhs.len()),
        "gemm lhs too short"
    );
    assert!(
        last(k, rrs, n, rcs).is_some_and(|l| l < rhs.len()),
        "gemm rhs too short"
    );
    let f = gemm_f32::gemm::f32::get_gemm_fn();
    // SAFETY: every element the product reads or writes lies inside its slice (asserted
    // above: the largest index of each strided matrix), `dst` is uniquely borrowed and does
    // not overlap the shared `lhs` and `rhs`; the function pointer is gemm's own dispatch for
    // the running CPU.
    unsafe {
        f(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dcs as isize,
            drs as isize,
            accumulate,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_common::Parallelism::None,
        );
    }
}

/// The shape of one image's im2col matrix for one group: rows are output pixels, columns
/// `(ky, kx, channel of the group)`.
#[derive(Debug, Clone, Copy)]
struct Cols {
    geom: ConvGeometry,
}

impl Cols {
    fn cg(&self) -> usize {
        self.geom.weight[1]
    }
    fn width(&self) -> usize {
        self.geom.weight[1] * self.geom.weight[2] * self.geom.weight[3]
    }
    fn pixels(&self) -> usize {
        self.geom.output[2] * self.geom.output[3]
    }

    /// The input position tap `(ky, kx)` of output pixel `(oy, ox)` reads, if inside.
    #[inline]
    fn at(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let p: Conv2dParams = self.geom.params;
        let [_, _, h, w] = self.geom.input;
        let iy = (oy * p.stride[0] + ky * p.dilation[0]).checked_sub(p.padding[0])?;
        let ix = (ox * p.stride[1] + kx * p.dilation[1]).checked_sub(p.padding[1])?;
        (iy < h && ix < w).then_some((iy, ix))
    }

    /// Fill `col` (`pixels x width`) from one NHWC image, channels `g*cg..(g+1)*cg`.
    fn im2col(&self, x: &[f32], g: usize, col: &mut [f32]) {
        let [_, c, h, w] = self.geom.input;
        let [_, _, kh, kw] = self.geom.weight;
        let [_, _, oh, ow] = self.geom.output;
        let p = self.geom.params;
        let cg = self.cg();
        let copy = |d: &mut [f32], s: &[f32]| d.iter_mut().zip(s).for_each(|(d, &s)| *d = s);
        let mut rows = col.chunks_exact_mut(self.width());
        for oy in 0..oh {
            for ox in 0..ow {
                let Some(row) = rows.next() else { return };
                let ix0 = (ox * p.stride[1]).checked_sub(p.padding[1]);
                // With one group and no dilation, a kernel row's taps are one run of `KW * C`
                // values in both the input and the im2col row.
                let whole = match ix0 {
                    Some(ix0) => cg == c && p.dilation[1] == 1 && ix0 + kw <= w,
                    None => false,
                };
                for ky in 0..kh {
                    let iy = (oy * p.stride[0] + ky * p.dilation[0])
                        .checked_sub(p.padding[0])
                        .filter(|&iy| iy < h);
                    let d = &mut row[ky * kw * cg..(ky + 1) * kw * cg];
                    match (iy, whole, ix0) {
                        (None, _, _) => d.iter_mut().for_each(|d| *d = 0.0),
                        (Some(iy), true, Some(ix0)) => {
                            copy(d, &x[(iy * w + ix0) * c..][..kw * c]);
                        }
                        (Some(iy), _, _) => {
                            for (kx, d) in d.chunks_exact_mut(cg).enumerate() {
                                match (ox * p.stride[1] + kx * p.dilation[1])
                                    .checked_sub(p.padding[1])
                                    .filter(|&ix| ix < w)
                                {
                                    // A loop, not `copy_from_slice`: the runs are short (a
                                    // group's channels) and a `memcpy` call costs more.
                                    Some(ix) => copy(d, &x[(iy * w + ix) * c + g * cg..][..cg]),
                                    None => d.iter_mut().for_each(|d| *d = 0.0),
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Add `col` (`pixels x width`) back onto one NHWC image's channels `g*cg..(g+1)*cg`.
    fn col2im(&self, col: &[f32], g: usize, x: &mut [f32]) {
        let [_, c, _, w] = self.geom.input;
        let [_, _, kh, kw] = self.geom.weight;
        let [_, _, oh, ow] = self.geom.output;
        let cg = self.cg();
        let mut rows = col.chunks_exact(self.width());
        for oy in 0..oh {
            for ox in 0..ow {
                let Some(row) = rows.next() else { return };
                for ky in 0..kh {
                    for kx in 0..kw {
                        if let Some((iy, ix)) = self.at(oy, ox, ky, kx) {
                            let d = &mut x[(iy * w + ix) * c + g * cg..][..cg];
                            let s = &row[(ky * kw + kx) * cg..][..cg];
                            d.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
                        }
                    }
                }
            }
        }
    }
}

/// A convolution's weights in the forms its backward needs, for one training step: the
/// input gradient of a stride-1 conv as a [`PackedConv`] on flipped, transposed weights
/// (Winograd where it pays), otherwise as `col2im(dY · W)`; the weight gradient as
/// `dY^T · im2col(X)`. Build it from the step's weights (they change every step).
#[derive(Debug, Clone)]
pub struct ConvGrad {
    weight_dims: [usize; 4],
    params: Conv2dParams,
    /// `[O, KH, KW, C/groups]`: the weights in im2col column order (empty when the input
    /// gradient runs as a convolution).
    taps_last: Vec<f32>,
    /// The input gradient as a convolution, where the conv is stride-1 and ungrouped.
    transposed: Option<PackedConv>,
    /// The flipped, transposed weights `[C, O, KH, KW]` of `transposed` (kept for
    /// [`ConvGrad::repack`]; empty without it).
    flipped: Vec<f32>,
}

impl ConvGrad {
    /// Prepare the backward of the convolution with PyTorch-layout weights
    /// `[O, C/groups, KH, KW]` and parameters `params`.
    pub fn new(
        weight: &[f32],
        weight_dims: [usize; 4],
        params: Conv2dParams,
    ) -> Result<Self, KernelError> {
        let [o, cg, kh, kw] = weight_dims;
        let len = elems("conv weight", &weight_dims)?;
        check_len("conv weight", weight, len)?;
        let g = params.groups;
        if g == 0 || o % g != 0 {
            return Err(KernelError::Geometry(format!(
                "groups {g} must divide output channels {o}"
            )));
        }
        if params.stride.contains(&0) || params.dilation.contains(&0) {
            return Err(KernelError::Geometry(
                "stride and dilation must be at least 1".into(),
            ));
        }
        let unit = params.stride == [1, 1] && params.dilation == [1, 1];
        let mut flipped = Vec::new();
        let transposed = if unit && g == 1 && params.padding[0] < kh && params.padding[1] < kw {
            // dX = conv(dY, W'), W'[c, o, ky, kx] = W[o, c, KH-1-ky, KW-1-kx], padding K-1-P.
            flipped = vec![0.0; len];
            flip(weight_dims, weight, &mut flipped);
            let p = Conv2dParams {
                padding: [kh - 1 - params.padding[0], kw - 1 - params.padding[1]],
                ..Conv2dParams::default()
            };
            // Winograd F(2x2) at most: F(4x4)'s rounding (several times F(2x2)'s, see the
            // README's numerics note) would reach the gradients, which the golden training
            // runs hold to 1e-4 of float64.
            let dims = [cg, o, kh, kw];
            let algo = PackedConv::algorithm_within(dims, p, 2)?;
            Some(PackedConv::with_algorithm(&flipped, dims, None, p, algo)?)
        } else {
            None
        };
        // The weights in im2col column order, for `col2im(dY · W)`: only where the input
        // gradient does not run as a convolution.
        let mut taps_last = Vec::new();
        if transposed.is_none() {
            taps_last = vec![0.0; len];
            taps_to_last(weight_dims, weight, &mut taps_last);
        }
        Ok(Self {
            weight_dims,
            params,
            taps_last,
            transposed,
            flipped,
        })
    }

    /// Replace the weights by new ones of the same shape, in the storage this backward already
    /// holds (what a training step does after each update, without allocating): bitwise the
    /// same gradients as a [`ConvGrad::new`] of the new weights.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `weight` does not have this convolution's length;
    /// nothing changes then.
    pub fn repack(&mut self, weight: &[f32]) -> Result<(), KernelError> {
        let len = self.weight_dims.iter().product();
        check_len("conv weight", weight, len)?;
        match &mut self.transposed {
            Some(t) => {
                flip(self.weight_dims, weight, &mut self.flipped);
                t.repack(&self.flipped, None)?;
            }
            None => taps_to_last(self.weight_dims, weight, &mut self.taps_last),
        }
        Ok(())
    }

    /// Weight dimensions `[O, C/groups, KH, KW]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight_dims
    }

    /// The forward convolution's hyper-parameters.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }

    /// The geometry of the forward convolution on an input of logical dims `input`.
    pub fn geometry(&self, input: [usize; 4]) -> Result<ConvGeometry, KernelError> {
        ConvGeometry::new(input, self.weight_dims, self.params)
    }

    /// Scratch values one task of [`ConvGrad::backward_input`] uses on an input of logical
    /// dims `input` ([`ConvGrad::backward_weight`] grows the buffer to a piece of several
    /// images as it needs).
    pub fn scratch_len(&self, input: [usize; 4]) -> Result<usize, KernelError> {
        let cols = Cols {
            geom: self.geometry(input)?,
        };
        let own = cols.pixels() * cols.width();
        let packed = match &self.transposed {
            Some(t) => t.scratch_len(cols.geom.output)?,
            None => 0,
        };
        Ok(own.max(packed))
    }

    /// The input gradient: `grad_in = conv^T(grad_out) + add` (`add` the gradient already
    /// there from another reader of the input, or none). NHWC; `input` is the forward's
    /// input dims `[N, C, H, W]`, `grad_out` `[N, O, OH, OW]`.
    pub fn backward_input(
        &self,
        ctx: &Ctx<'_>,
        input: [usize; 4],
        grad_out: &[f32],
        grad_in: &mut [f32],
        add: Option<&[f32]>,
    ) -> Result<(), KernelError> {
        let geom = self.geometry(input)?;
        let (li, _, lo) = geom.lens();
        check_len("conv grad_out", grad_out, lo)?;
        check_len("conv grad_in", grad_in, li)?;
        if let Some(a) = add {
            check_len("conv grad_in addend", a, li)?;
        }
        if let Some(t) = &self.transposed {
            let epi = match add {
                Some(a) => Epilogue::none().with_residual(a),
                None => Epilogue::none(),
            };
            return t.run(ctx, grad_out, geom.output, grad_in, epi);
        }
        match add {
            Some(a) => grad_in.copy_from_slice(a),
            None => grad_in.fill(0.0),
        }
        if li == 0 || lo == 0 {
            return Ok(());
        }
        let cols = Cols { geom };
        let [n, c, h, w] = input;
        let o = self.weight_dims[0];
        let g = self.params.groups;
        let og = o / g;
        let (px, width) = (cols.pixels(), cols.width());
        // Images in groups of about INPUT_GRAD_ROWS output pixels: one product per group
        // (strided convs on small maps have a handful of pixels per image, and the weights
        // would otherwise stream once per image), then col2im image by image. The grouping
        // depends on the shapes only.
        let per = (INPUT_GRAD_ROWS / px.max(1)).max(1);
        let items: Vec<_> = grad_in
            .chunks_mut(per * h * w * c)
            .zip(grad_out.chunks(per * px * o))
            .take(n.div_ceil(per))
            .collect();
        map_items(
            ctx.cpu,
            ctx.par,
            items,
            #[inline(always)]
            |(gx, gy)| {
                let imgs = gy.len() / (px * o).max(1);
                let rows = imgs * px;
                ctx.scratch.with(|col| {
                    if col.len() < rows * width {
                        col.resize(rows * width, 0.0);
                    }
                    let col = &mut col[..rows * width];
                    for gi in 0..g {
                        // col[p, j] = Σ_o dY[p, o] W[o, j] over the group's output channels.
                        gemm(
                            [rows, width, og],
                            col,
                            [width, 1],
                            false,
                            &gy[gi * og..],
                            [o, 1],
                            &self.taps_last[gi * og * width..],
                            [width, 1],
                        );
                        for (colj, gxj) in col
                            .chunks_exact(px * width)
                            .zip(gx.chunks_exact_mut(h * w * c))
                        {
                            cols.col2im(colj, gi, gxj);
                        }
                    }
                })
            },
        );
        Ok(())
    }

    /// The weight gradient `[O, C/groups, KH, KW]` (overwritten) and, when asked, the bias
    /// gradient `[O]`: sums over every output pixel of the batch. NHWC `input` of logical dims
    /// `input_dims` (the forward's input), `grad_out` the gradient of its output.
    pub fn backward_weight(
        &self,
        ctx: &Ctx<'_>,
        input: &[f32],
        input_dims: [usize; 4],
        grad_out: &[f32],
        grad_weight: &mut [f32],
        grad_bias: Option<&mut [f32]>,
    ) -> Result<(), KernelError> {
        let geom = self.geometry(input_dims)?;
        let (li, lw, lo) = geom.lens();
        check_len("conv input", input, li)?;
        check_len("conv grad_out", grad_out, lo)?;
        check_len("conv grad_weight", grad_weight, lw)?;
        let [n, c, h, w] = input_dims;
        let [o, cg, kh, kw] = self.weight_dims;
        if let Some(gb) = grad_bias {
            check_len("conv grad_bias", gb, o)?;
            let sums = map_items(
                ctx.cpu,
                ctx.par,
                grad_out.chunks(STAT_PIXELS * o.max(1)).collect(),
                #[inline(always)]
                |gc: &[f32]| {
                    let mut s = vec![0.0f64; o];
                    for row in gc.chunks_exact(o.max(1)) {
                        s.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
                    }
                    s
                },
            );
            gb.iter_mut()
                .zip(sum_parts(o, &sums))
                .for_each(|(b, s)| *b = s as f32);
        }
        if lw == 0 {
            return Ok(());
        }
        let cols = Cols { geom };
        let g = self.params.groups;
        let og = o / g;
        let (px, width) = (cols.pixels(), cols.width());
        let direct =
            kh == 1 && kw == 1 && self.params.stride == [1, 1] && self.params.padding == [0, 0];
        // Pieces of whole images, about WGRAD_PIXELS output pixels each: one product per
        // piece and group (deep enough to keep the kernels busy), partial sums in f32, added
        // over the pieces in f64 and in order.
        let per_piece = (WGRAD_PIXELS / px.max(1)).max(1);
        let images: Vec<usize> = (0..n).collect();
        let pieces: Vec<&[usize]> = images.chunks(per_piece).collect();
        let parts = map_items(
            ctx.cpu,
            ctx.par,
            pieces,
            #[inline(always)]
            |imgs: &[usize]| {
                // Every value is written below (each group's block of rows, every column).
                let mut part = ctx.scratch.parts().take(lw);
                let rows = imgs.len() * px;
                let first = imgs[0];
                // The thread's scratch buffer is taken out, not held locked: the row blocks below
                // run in parallel, and a thread waiting for them may start another piece.
                let mut col = ctx.scratch.with(std::mem::take);
                {
                    let col = &mut col;
                    if !direct && col.len() < rows * width {
                        col.resize(rows * width, 0.0);
                    }
                    let gy = &grad_out[first * px * o..(first + imgs.len()) * px * o];
                    for gi in 0..g {
                        let (rhs, rrs): (&[f32], usize) = if direct {
                            (&input[first * h * w * c + gi * cg..], c)
                        } else {
                            for (t, &ni) in imgs.iter().enumerate() {
                                let x = &input[ni * h * w * c..(ni + 1) * h * w * c];
                                cols.im2col(x, gi, &mut col[t * px * width..(t + 1) * px * width]);
                            }
                            (&col[..rows * width], width)
                        };
                        // dW[o, j] = Σ_p col[p, j] dY[p, o] over the group's channels,
                        // computed as its transpose (`j` rows: the kernels' long side), in
                        // blocks of rows of a fixed size (so the same products run whatever the
                        // threads), spread over the threads: wide convs on small maps have few
                        // pieces but many rows.
                        // Each block's product lands in its own run of the group's part
                        // (column-major `[jb, og]`, as the kernels store it).
                        let gyg = &gy[gi * og..];
                        let dst = &mut part[gi * og * width..(gi + 1) * og * width];
                        let blocks: Vec<(usize, &mut [f32])> = dst
                            .chunks_mut(WGRAD_ROWS * og)
                            .enumerate()
                            .map(|(b, d)| (b * WGRAD_ROWS, d))
                            .collect();
                        map_items(
                            ctx.cpu,
                            ctx.par,
                            blocks,
                            #[inline(always)]
                            |(j0, out): (usize, &mut [f32])| {
                                let jb = WGRAD_ROWS.min(width - j0);
                                gemm(
                                    [jb, og, rows],
                                    out,
                                    [1, jb],
                                    false,
                                    &rhs[j0..],
                                    [1, rrs],
                                    gyg,
                                    [o, 1],
                                );
                            },
                        );
                    }
                }
                ctx.scratch.with(|b| {
                    if b.len() < col.len() {
                        *b = col;
                    }
                });
                part
            },
        );
        // Sum the pieces in order (in f64), reordered to [O, C/g, KH, KW], output channels
        // spread over the threads. A part holds, per group, blocks of `WGRAD_ROWS` taps-last
        // columns `j = (ky, kx, c)`, each column-major `[jb, og]`. One piece needs no sum (its
        // f32 values pass through f64 unchanged).
        let per_o = cg * kh * kw;
        let chunk = (REORDER_VALUES / per_o.max(1)).max(1) * per_o;
        let items: Vec<(usize, &mut [f32])> = grad_weight
            .chunks_mut(chunk)
            .enumerate()
            .map(|(i, gw)| (i * chunk / per_o, gw))
            .collect();
        let all = &parts;
        map_items(
            ctx.cpu,
            ctx.par,
            items,
            #[inline(always)]
            |(o0, gws): (usize, &mut [f32])| {
                let taps = kh * kw;
                for (d, gw) in gws.chunks_exact_mut(per_o).enumerate() {
                    let oi = o0 + d;
                    let (gi, ol) = (oi / og, oi % og);
                    // Column `j = (tap, ci)` of the block from `j0` (`jb` columns) holds
                    // output channel `ol`'s values at `ol * jb + j - j0`: a contiguous run
                    // per block, read in order while `(tap, ci)` steps through the columns.
                    let (mut tap, mut ci) = (0, 0);
                    for j0 in (0..width).step_by(WGRAD_ROWS) {
                        let jb = WGRAD_ROWS.min(width - j0);
                        let run = gi * og * width + j0 * og + ol * jb;
                        for at in run..run + jb {
                            gw[ci * taps + tap] = match &all[..] {
                                [one] => one[at],
                                all => all.iter().fold(0.0f64, |s, p| s + f64::from(p[at])) as f32,
                            };
                            ci += 1;
                            if ci == cg {
                                (ci, tap) = (0, tap + 1);
                            }
                        }
                    }
                }
            },
        );
        // Kept for the next call: a wide net's partial sums are tens of megabytes, fresh
        // pages every step otherwise.
        ctx.scratch.parts().give_all(parts);
        Ok(())
    }
}

/// `W'[c, o, ky, kx] = W[o, c, KH-1-ky, KW-1-kx]`: the weights of the input gradient as a
/// convolution (lengths equal).
fn flip([o, cg, kh, kw]: [usize; 4], weight: &[f32], out: &mut [f32]) {
    // In blocks of 16 x 16 channel pairs: each block reads 16 runs of the source and writes
    // 16 runs of the destination, all in cache (one output channel after the other wrote a
    // run of `KH * KW` values every `O * KH * KW`, a cache miss per kernel on wide layers).
    const B: usize = 16;
    let taps = kh * kw;
    for oi0 in (0..o).step_by(B) {
        for ci0 in (0..cg).step_by(B) {
            for ci in ci0..(ci0 + B).min(cg) {
                for oi in oi0..(oi0 + B).min(o) {
                    let src = &weight[(oi * cg + ci) * taps..][..taps];
                    let dst = &mut out[(ci * o + oi) * taps..][..taps];
                    // Reversing the taps reverses both `ky` and `kx`.
                    dst.iter_mut()
                        .zip(src.iter().rev())
                        .for_each(|(d, &v)| *d = v);
                }
            }
        }
    }
}

/// `[O, C/g, KH, KW]` to `[O, KH, KW, C/g]`, the im2col column order (lengths equal).
fn taps_to_last([o, cg, kh, kw]: [usize; 4], weight: &[f32], out: &mut [f32]) {
    for oi in 0..o {
        for ci in 0..cg {
            for t in 0..kh * kw {
                out[(oi * kh * kw + t) * cg + ci] = weight[(oi * cg + ci) * kh * kw + t];
            }
        }
    }
}

/// [`crate::naive_grad::max_pool2d_backward`] on NHWC data (same argmax rule), written or
/// added (`accumulate`) to `grad_in`.
pub fn max_pool2d_backward_nhwc(
    cpu: Cpu,
    par: Par,
    geom: &PoolGeometry,
    input: &[f32],
    grad_out: &[f32],
    grad_in: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    let [n, c, h, w] = geom.input;
    let [_, _, oh, ow] = geom.output;
    let li = elems("max_pool2d_backward", &geom.input)?;
    let lo = elems("max_pool2d_backward", &geom.output)?;
    check_len("max_pool2d_backward input", input, li)?;
    check_len("max_pool2d_backward grad_out", grad_out, lo)?;
    check_len("max_pool2d_backward grad_in", grad_in, li)?;
    if !accumulate {
        grad_in.fill(0.0);
    }
    if li == 0 || lo == 0 {
        return Ok(());
    }
    let items: Vec<_> = grad_in
        .chunks_mut(h * w * c)
        .zip(input.chunks(h * w * c))
        .zip(grad_out.chunks(oh * ow * c))
        .take(n)
        .collect();
    map_items(
        cpu,
        par,
        items,
        #[inline(always)]
        |((gx, x), gy)| {
            // Per output pixel, the window's pixels in order, all channels at once: the
            // running maximum and the pixel it came from, per channel (the first maximum
            // wins; a NaN wins over anything, the last NaN over an earlier one).
            let mut best = vec![0.0f32; c];
            let mut from = vec![0usize; c];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut any = false;
                    for (iy, ix) in geom.window(oy, ox) {
                        let at = (iy * w + ix) * c;
                        let xs = &x[at..at + c];
                        if !any {
                            best.copy_from_slice(xs);
                            from.fill(at);
                            any = true;
                            continue;
                        }
                        for ((b, f), &v) in best.iter_mut().zip(from.iter_mut()).zip(xs) {
                            if v > *b || v.is_nan() {
                                *b = v;
                                *f = at;
                            }
                        }
                    }
                    if any {
                        let gyr = &gy[(oy * ow + ox) * c..][..c];
                        for (ci, (&f, &g)) in from.iter().zip(gyr).enumerate() {
                            gx[f + ci] += g;
                        }
                    }
                }
            }
        },
    );
    Ok(())
}

/// The backward of a global average pool over NHWC `[N, H, W, C]`: every pixel of image `n`
/// gets `grad_out[n, c] / (H*W)`, written or added (`accumulate`).
pub fn global_avg_pool_backward_nhwc(
    dims: [usize; 4],
    grad_out: &[f32],
    grad_in: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let li = elems("global_avg_pool_backward", &dims)?;
    check_len("global_avg_pool_backward grad_out", grad_out, n * c)?;
    check_len("global_avg_pool_backward grad_in", grad_in, li)?;
    if li == 0 {
        return Ok(());
    }
    let inv = 1.0 / (h * w) as f32;
    for (gx, gy) in grad_in
        .chunks_exact_mut(h * w * c)
        .zip(grad_out.chunks_exact(c))
    {
        let g: Vec<f32> = gy.iter().map(|&v| v * inv).collect();
        for row in gx.chunks_exact_mut(c) {
            if accumulate {
                row.iter_mut().zip(&g).for_each(|(r, &g)| *r += g);
            } else {
                row.copy_from_slice(&g);
            }
        }
    }
    Ok(())
}

/// [`crate::naive_grad::subsample_pad_channels_backward`] on NHWC data, written or added
/// (`accumulate`).
pub fn subsample_pad_channels_backward_nhwc(
    dims: [usize; 4],
    stride: usize,
    out_c: usize,
    grad_out: &[f32],
    grad_in: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let (oh, ow, before) = crate::naive::subsample_pad_dims(dims, stride, out_c)?;
    let li = elems("subsample_pad_backward", &dims)?;
    check_len(
        "subsample_pad_backward grad_out",
        grad_out,
        n * out_c * oh * ow,
    )?;
    check_len("subsample_pad_backward grad_in", grad_in, li)?;
    if !accumulate {
        grad_in.fill(0.0);
    }
    if c == 0 || out_c == 0 {
        return Ok(());
    }
    for (p, px) in grad_out.chunks_exact(out_c).enumerate() {
        let (ni, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
        let d = &mut grad_in[((ni * h + oy * stride) * w + ox * stride) * c..][..c];
        d.iter_mut()
            .zip(&px[before..before + c])
            .for_each(|(d, &g)| *d += g);
    }
    Ok(())
}

/// The backward of [`super::pixel_shuffle_nhwc`]: the inverse permutation of the gradient,
/// written or added (`accumulate`). `dims` is the forward's input `[N, C*r*r, H, W]`.
pub fn pixel_shuffle_backward_nhwc(
    dims: [usize; 4],
    r: usize,
    grad_out: &[f32],
    grad_in: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    let [n, cin, h, w] = dims;
    let co = crate::pixel_shuffle_check(dims, r, grad_in, grad_out)?;
    let (oh, ow) = (h * r, w * r);
    for ni in 0..n {
        for y in 0..h {
            for x in 0..w {
                let gi = &mut grad_in[((ni * h + y) * w + x) * cin..][..cin];
                for (ci, gi) in gi.iter_mut().enumerate() {
                    // Input channel ci = c*r*r + dy*r + dx goes to output (c, y*r+dy, x*r+dx).
                    let (cc, dy, dx) = (ci / (r * r), ci / r % r, ci % r);
                    let v = grad_out[((ni * oh + y * r + dy) * ow + x * r + dx) * co + cc];
                    if accumulate {
                        *gi += v;
                    } else {
                        *gi = v;
                    }
                }
            }
        }
    }
    Ok(())
}

/// [`crate::naive_grad::sgd_step`] compiled for the CPU's vector instructions (the same fused
/// multiply-adds, so bitwise the same result), split over the threads with [`Par::Rayon`] in
/// fixed pieces (elementwise: any split gives the same bits).
pub fn sgd_step(
    cpu: Cpu,
    par: Par,
    param: &mut [f32],
    grad: &[f32],
    buffer: crate::naive_grad::MomentumBuffer<'_>,
    step: &crate::naive_grad::SgdStep,
) -> Result<(), KernelError> {
    use crate::naive_grad::{MomentumBuffer, check_sgd, sgd_step_unchecked};
    check_sgd(param, grad, &buffer)?;
    /// Elements per piece: enough to amortise a task, small enough to share among threads.
    const PIECE: usize = 1 << 16;
    let (first, buf) = match buffer {
        MomentumBuffer::None => (false, None),
        MomentumBuffer::First(b) => (true, Some(b)),
        MomentumBuffer::Running(b) => (false, Some(b)),
    };
    let bufs: Vec<Option<&mut [f32]>> = match buf {
        Some(b) => b.chunks_mut(PIECE).map(Some).collect(),
        None => param.chunks(PIECE).map(|_| None).collect(),
    };
    let items: Vec<_> = param
        .chunks_mut(PIECE)
        .zip(grad.chunks(PIECE))
        .zip(bufs)
        .collect();
    map_items(
        cpu,
        par,
        items,
        #[inline(always)]
        |((w, g), b)| {
            let b = match b {
                None => MomentumBuffer::None,
                Some(b) if first => MomentumBuffer::First(b),
                Some(b) => MomentumBuffer::Running(b),
            };
            sgd_step_unchecked(w, g, b, step);
        },
    );
    Ok(())
}
