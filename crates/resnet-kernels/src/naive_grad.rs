//! Reference backward kernels: the gradients of the [`naive`](crate::naive) forward kernels and
//! the training losses, as plain loops with f64 accumulation, written to be obviously right.
//!
//! They are the oracle for the fast backward kernels and for `resnet-train`. All tensors are
//! flat f32 slices in NCHW (row-major) order, shaped as in the forward kernel of the same name;
//! `grad_out` is the gradient of a scalar loss with respect to the forward kernel's output.
//!
//! Conventions:
//!
//! - Every kernel **overwrites** its gradient outputs; none accumulates into what they held.
//!   Sums run in f64 and each result is rounded to f32 once.
//! - Lengths are checked first; a wrong one is a [`KernelError::BadLength`] and nothing is
//!   written. No kernel panics on user sizes.
//! - The residual add `y = a + b` ([`naive::add`](crate::naive::add)) has no kernel here: its
//!   backward is the identity, `grad_a = grad_b = grad_y`. Where one value feeds two branches
//!   (a block's input feeds `F` and the shortcut) the caller adds the two branch gradients.
//! - Non-finite values propagate as in PyTorch; each kernel says where that needs a word.

use crate::{ConvGeometry, KernelError, PoolGeometry, adaptive_bin, check_len};

/// The product of `dims`, or a [`KernelError::Geometry`] when it overflows.
fn elems(what: &str, dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| KernelError::Geometry(format!("{what}: sizes {dims:?} overflow")))
}

/// Round an f64 accumulator into an f32 slice of the same length.
fn store(acc: &[f64], out: &mut [f32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// Gradient of [`naive::conv2d`](crate::naive::conv2d) with respect to its input (PyTorch's
/// `grad_input` of `Conv2d`, i.e. a transposed convolution of `grad_out`).
///
/// `grad_in[n, ic, iy, ix] = sum grad_out[n, oc, oy, ox] * weight[oc, ic - g*C/groups, ky, kx]`
/// over every output channel `oc` of `ic`'s group `g` and every tap with
/// `oy*stride + ky*dilation - padding = iy` (and likewise along x). Any stride, padding,
/// dilation and groups; input positions no window reaches (stride larger than the kernel span)
/// get 0. `grad_out` is `[N, O, OH, OW]`, `weight` `[O, C/groups, KH, KW]`, `grad_in`
/// `[N, C, H, W]`, all as given by `geom`. The bias does not enter.
pub fn conv2d_backward_input(
    geom: &ConvGeometry,
    grad_out: &[f32],
    weight: &[f32],
    grad_in: &mut [f32],
) -> Result<(), KernelError> {
    let (li, lw, lo) = geom.lens();
    check_len("conv2d_backward_input grad_out", grad_out, lo)?;
    check_len("conv2d_backward_input weight", weight, lw)?;
    check_len("conv2d_backward_input grad_in", grad_in, li)?;
    let mut acc = vec![0.0f64; li];
    crate::naive::for_each_conv_tap(geom, |o, i, w| {
        acc[i] += f64::from(grad_out[o]) * f64::from(weight[w]);
    });
    store(&acc, grad_in);
    Ok(())
}

/// Gradients of [`naive::conv2d`](crate::naive::conv2d) with respect to its weight and bias
/// (PyTorch's `grad_weight`, `grad_bias` of `Conv2d`).
///
/// `grad_weight[oc, ci, ky, kx] = sum_{n, oy, ox} grad_out[n, oc, oy, ox] *
/// input[n, g*C/groups + ci, oy*stride + ky*dilation - padding, ...]` (padded taps count as
/// zero) and `grad_bias[oc] = sum_{n, oy, ox} grad_out[n, oc, oy, ox]`. Pass `grad_bias: None`
/// for a convolution without bias. `input` is `[N, C, H, W]`, `grad_out` `[N, O, OH, OW]`,
/// `grad_weight` `[O, C/groups, KH, KW]`, `grad_bias` `[O]`.
pub fn conv2d_backward_weight(
    geom: &ConvGeometry,
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let (li, lw, lo) = geom.lens();
    check_len("conv2d_backward_weight input", input, li)?;
    check_len("conv2d_backward_weight grad_out", grad_out, lo)?;
    check_len("conv2d_backward_weight grad_weight", grad_weight, lw)?;
    let [n, o, oh, ow] = geom.output;
    if let Some(b) = &grad_bias {
        check_len("conv2d_backward_weight grad_bias", b, o)?;
    }
    let mut acc = vec![0.0f64; lw];
    crate::naive::for_each_conv_tap(geom, |out, i, w| {
        acc[w] += f64::from(grad_out[out]) * f64::from(input[i]);
    });
    store(&acc, grad_weight);
    if let Some(b) = grad_bias {
        for (oc, bo) in b.iter_mut().enumerate() {
            let mut sum = 0.0f64;
            for ni in 0..n {
                let base = (ni * o + oc) * oh * ow;
                sum += grad_out[base..base + oh * ow]
                    .iter()
                    .map(|&g| f64::from(g))
                    .sum::<f64>();
            }
            *bo = sum as f32;
        }
    }
    Ok(())
}

/// What a training-mode batch-norm keeps for its backward and for the running statistics: per
/// channel, the batch mean, the biased batch variance, `1 / sqrt(biased var + eps)` (all f64)
/// and the number of values `N*H*W` each channel was normalised over.
///
/// Filled by [`batch_norm_train`]; start from [`BnSaved::default`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BnSaved {
    mean: Vec<f64>,
    var: Vec<f64>,
    inv_std: Vec<f64>,
    count: usize,
}

impl BnSaved {
    /// Statistics computed elsewhere (the fast kernels), in the same form.
    pub(crate) fn from_parts(
        mean: Vec<f64>,
        var: Vec<f64>,
        inv_std: Vec<f64>,
        count: usize,
    ) -> Self {
        Self {
            mean,
            var,
            inv_std,
            count,
        }
    }

    /// Per-channel batch mean `sum x / (N*H*W)`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Per-channel biased batch variance `sum (x - mean)^2 / (N*H*W)` (what normalises).
    pub fn biased_var(&self) -> &[f64] {
        &self.var
    }

    /// Per-channel `1 / sqrt(biased var + eps)` (PyTorch's `save_invstd`).
    pub fn inv_std(&self) -> &[f64] {
        &self.inv_std
    }

    /// Values per channel, `N*H*W`.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The batch mean rounded to f32, for [`batch_norm_update_running`].
    pub fn batch_mean(&self) -> Vec<f32> {
        self.mean.iter().map(|&m| m as f32).collect()
    }

    /// The unbiased batch variance `biased var * n / (n - 1)` with `n = N*H*W`, rounded to f32,
    /// for [`batch_norm_update_running`]. With `n < 2` it is undefined (PyTorch's would be
    /// `0 / 0`): a [`KernelError::Geometry`]. [`batch_norm_train`] never saves such a batch.
    pub fn unbiased_var(&self) -> Result<Vec<f32>, KernelError> {
        let n = self.count;
        if n < 2 {
            return Err(KernelError::Geometry(format!(
                "unbiased variance needs at least 2 values per channel, have {n}"
            )));
        }
        let f = n as f64 / (n - 1) as f64;
        Ok(self.var.iter().map(|&v| (v * f) as f32).collect())
    }
}

/// BatchNorm2d in training mode (PyTorch's `BatchNorm2d` with `training=True`, affine), over
/// `[N, C, H, W]`: per channel, with `n = N*H*W`, `mean = sum x / n`,
/// `var = sum (x - mean)^2 / n` (biased, as PyTorch normalises) and
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
///
/// The statistics go to `saved` (see [`BnSaved`]) for [`batch_norm_backward`] and
/// [`batch_norm_update_running`]; this kernel does not touch the running statistics.
/// Like PyTorch (`F.batch_norm` raises "Expected more than 1 value per channel when
/// training"), `n = N*H*W < 2` is refused with a [`KernelError::Geometry`]: one value per
/// channel normalises to 0 and its unbiased variance is `0 / 0`. A constant channel with
/// `eps = 0` divides by zero and gives non-finite values, as in PyTorch.
pub fn batch_norm_train(
    dims: [usize; 4],
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    output: &mut [f32],
    saved: &mut BnSaved,
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let len = elems("batch_norm_train", &dims)?;
    check_len("batch_norm_train input", input, len)?;
    check_len("batch_norm_train output", output, len)?;
    check_len("batch_norm_train gamma", gamma, c)?;
    check_len("batch_norm_train beta", beta, c)?;
    let hw = h * w;
    let count = n * hw;
    if count < 2 {
        return Err(KernelError::Geometry(format!(
            "batch norm in training needs more than 1 value per channel, N*H*W = {count}"
        )));
    }
    let values = |ci: usize| {
        (0..n).flat_map(move |ni| {
            let base = (ni * c + ci) * hw;
            (base..base + hw).map(|i| f64::from(input[i]))
        })
    };
    let mut mean = Vec::with_capacity(c);
    let mut var = Vec::with_capacity(c);
    let mut inv_std = Vec::with_capacity(c);
    for ci in 0..c {
        let m = values(ci).sum::<f64>() / count as f64;
        let v = values(ci).map(|x| (x - m) * (x - m)).sum::<f64>() / count as f64;
        mean.push(m);
        var.push(v);
        inv_std.push(1.0 / (v + f64::from(eps)).sqrt());
    }
    for ni in 0..n {
        for ci in 0..c {
            let base = (ni * c + ci) * hw;
            for i in base..base + hw {
                let xhat = (f64::from(input[i]) - mean[ci]) * inv_std[ci];
                output[i] = (xhat * f64::from(gamma[ci]) + f64::from(beta[ci])) as f32;
            }
        }
    }
    *saved = BnSaved {
        mean,
        var,
        inv_std,
        count,
    };
    Ok(())
}

/// The running-statistics update of a training-mode BatchNorm2d, exactly PyTorch's formula:
/// `running_mean = (1 - momentum) * running_mean + momentum * batch_mean` and
/// `running_var = (1 - momentum) * running_var + momentum * batch_unbiased_var`.
///
/// PyTorch's default momentum is 0.1. The variance blended in is the **unbiased** batch variance
/// (`biased * n / (n - 1)`, [`BnSaved::unbiased_var`]), while the batch itself was normalised
/// with the biased one. PyTorch's cumulative average (`momentum=None`) is not covered. All four
/// slices are `[C]`; the blend runs in f64.
pub fn batch_norm_update_running(
    running_mean: &mut [f32],
    running_var: &mut [f32],
    batch_mean: &[f32],
    batch_unbiased_var: &[f32],
    momentum: f32,
) -> Result<(), KernelError> {
    let c = running_mean.len();
    check_len("batch_norm_update_running running_var", running_var, c)?;
    check_len("batch_norm_update_running batch_mean", batch_mean, c)?;
    check_len(
        "batch_norm_update_running batch_unbiased_var",
        batch_unbiased_var,
        c,
    )?;
    let m = f64::from(momentum);
    let blend = |old: f32, new: f32| ((1.0 - m) * f64::from(old) + m * f64::from(new)) as f32;
    for (r, &b) in running_mean.iter_mut().zip(batch_mean) {
        *r = blend(*r, b);
    }
    for (r, &b) in running_var.iter_mut().zip(batch_unbiased_var) {
        *r = blend(*r, b);
    }
    Ok(())
}

/// Gradient of [`batch_norm_train`] (PyTorch's `native_batch_norm_backward` with
/// `train=True`): the batch statistics depend on the input, so every value of a channel
/// influences every output of that channel.
///
/// Per channel, with `n = N*H*W`, `xhat = (x - mean) * inv_std` from `saved`:
/// `grad_beta = sum dy`, `grad_gamma = sum dy * xhat`, and
/// `grad_in = gamma * inv_std * (dy - sum dy / n - xhat * sum (dy * xhat) / n)`.
/// `input`, `grad_out` and `grad_in` are `[N, C, H, W]`, `gamma`, `grad_gamma`, `grad_beta`
/// `[C]`. `saved` must come from [`batch_norm_train`] on the same `dims` and `input`
/// (a channel count or `N*H*W` that differs is a [`KernelError::Geometry`]).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    dims: [usize; 4],
    input: &[f32],
    gamma: &[f32],
    saved: &BnSaved,
    grad_out: &[f32],
    grad_in: &mut [f32],
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let len = elems("batch_norm_backward", &dims)?;
    check_len("batch_norm_backward input", input, len)?;
    check_len("batch_norm_backward grad_out", grad_out, len)?;
    check_len("batch_norm_backward grad_in", grad_in, len)?;
    check_len("batch_norm_backward gamma", gamma, c)?;
    check_len("batch_norm_backward grad_gamma", grad_gamma, c)?;
    check_len("batch_norm_backward grad_beta", grad_beta, c)?;
    let hw = h * w;
    let count = n * hw;
    if saved.mean.len() != c
        || saved.var.len() != c
        || saved.inv_std.len() != c
        || saved.count != count
    {
        return Err(KernelError::Geometry(format!(
            "batch norm statistics saved for {} channels of {} values, backward has {c} of {count}",
            saved.mean.len(),
            saved.count
        )));
    }
    let idx = |ci: usize| {
        (0..n).flat_map(move |ni| {
            let base = (ni * c + ci) * hw;
            base..base + hw
        })
    };
    for ci in 0..c {
        let (mean, inv_std) = (saved.mean[ci], saved.inv_std[ci]);
        let xhat = |i: usize| (f64::from(input[i]) - mean) * inv_std;
        let sum_dy: f64 = idx(ci).map(|i| f64::from(grad_out[i])).sum();
        let sum_dy_xhat: f64 = idx(ci).map(|i| f64::from(grad_out[i]) * xhat(i)).sum();
        grad_beta[ci] = sum_dy as f32;
        grad_gamma[ci] = sum_dy_xhat as f32;
        let scale = f64::from(gamma[ci]) * inv_std;
        let (mean_dy, mean_dy_xhat) = (sum_dy / count as f64, sum_dy_xhat / count as f64);
        for i in idx(ci) {
            let dy = f64::from(grad_out[i]);
            grad_in[i] = (scale * (dy - mean_dy - xhat(i) * mean_dy_xhat)) as f32;
        }
    }
    Ok(())
}

/// Gradient of [`naive::relu`](crate::naive::relu): `grad_in = grad_out` where `value > 0`,
/// else 0 (PyTorch's `threshold_backward(grad, value, 0)`, which zeroes where `value <= 0`).
///
/// `value` may be the ReLU's input or its output: both are `> 0` at the same places. At exactly
/// 0 (either sign) the gradient is 0, as in PyTorch. A NaN value is not `<= 0`, so the
/// gradient passes through there unchanged, as in PyTorch; NaN in `grad_out` propagates.
pub fn relu_backward(
    output_or_input: &[f32],
    grad_out: &[f32],
    grad_in: &mut [f32],
) -> Result<(), KernelError> {
    let len = output_or_input.len();
    check_len("relu_backward grad_out", grad_out, len)?;
    check_len("relu_backward grad_in", grad_in, len)?;
    for ((gi, &v), &g) in grad_in.iter_mut().zip(output_or_input).zip(grad_out) {
        *gi = if v <= 0.0 { 0.0 } else { g };
    }
    Ok(())
}

/// Gradient of [`naive::max_pool2d`](crate::naive::max_pool2d): each output's gradient goes to
/// the argmax of its window and gradients of overlapping windows add up.
///
/// The argmax is PyTorch's CPU rule: scan the window's real (unpadded) positions in row-major
/// order starting from the first one, with a running maximum from `-inf`, and move to a
/// position when its value is `> max` or is NaN. So ties go to the first position, padded
/// positions never win, a window of `-inf` picks its first real position, and a window with a
/// NaN picks a NaN (the last one in scan order when there are several). `input` and `grad_in`
/// are `[N, C, H, W]`, `grad_out` `[N, C, OH, OW]`, as given by `geom`.
pub fn max_pool2d_backward(
    geom: &PoolGeometry,
    input: &[f32],
    grad_out: &[f32],
    grad_in: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = geom.input;
    let [_, _, oh, ow] = geom.output;
    let in_len = elems("max_pool2d_backward", &geom.input)?;
    let out_len = elems("max_pool2d_backward", &geom.output)?;
    check_len("max_pool2d_backward input", input, in_len)?;
    check_len("max_pool2d_backward grad_out", grad_out, out_len)?;
    check_len("max_pool2d_backward grad_in", grad_in, in_len)?;
    let mut acc = vec![0.0f64; in_len];
    for nc in 0..n * c {
        let plane = nc * h * w;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(usize, f32)> = None;
                for (iy, ix) in geom.window(oy, ox) {
                    let i = plane + iy * w + ix;
                    let v = input[i];
                    let max = best.map_or(f32::NEG_INFINITY, |(_, m)| m);
                    if best.is_none() || v > max || v.is_nan() {
                        best = Some((i, v));
                    }
                }
                // PoolGeometry keeps padding at most half the window, so every window holds at
                // least one real position.
                if let Some((i, _)) = best {
                    acc[i] += f64::from(grad_out[(nc * oh + oy) * ow + ox]);
                }
            }
        }
    }
    store(&acc, grad_in);
    Ok(())
}

/// Gradient of [`naive::adaptive_avg_pool2d`](crate::naive::adaptive_avg_pool2d) (PyTorch's
/// `AdaptiveAvgPool2d` backward): each output's gradient, divided by its bin's size, goes to
/// every input of the bin (see [`adaptive_bin`]); overlapping bins add up.
///
/// The global pool of a ResNet head is `out_hw = [1, 1]`: `grad_in[n, c, y, x] =
/// grad_out[n, c] / (H*W)`. `dims` is the input's `[N, C, H, W]`, `grad_out` is
/// `[N, C, OH, OW]`, `grad_in` `[N, C, H, W]`.
pub fn adaptive_avg_pool2d_backward(
    dims: [usize; 4],
    out_hw: [usize; 2],
    grad_out: &[f32],
    grad_in: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let [oh, ow] = out_hw;
    let out_len = elems("adaptive_avg_pool2d_backward", &[n, c, oh, ow])?;
    let in_len = elems("adaptive_avg_pool2d_backward", &dims)?;
    if (oh == 0 || ow == 0) && n * c > 0 || (h == 0 || w == 0) && out_len > 0 {
        return Err(KernelError::Geometry(format!(
            "adaptive pool from {h}x{w} to {oh}x{ow}: sizes must be non-zero"
        )));
    }
    check_len("adaptive_avg_pool2d_backward grad_out", grad_out, out_len)?;
    check_len("adaptive_avg_pool2d_backward grad_in", grad_in, in_len)?;
    let mut acc = vec![0.0f64; in_len];
    for nc in 0..n * c {
        let plane = nc * h * w;
        for oy in 0..oh {
            let (y0, y1) = adaptive_bin(oy, h, oh);
            for ox in 0..ow {
                let (x0, x1) = adaptive_bin(ox, w, ow);
                let share =
                    f64::from(grad_out[(nc * oh + oy) * ow + ox]) / ((y1 - y0) * (x1 - x0)) as f64;
                for y in y0..y1 {
                    for x in x0..x1 {
                        acc[plane + y * w + x] += share;
                    }
                }
            }
        }
    }
    store(&acc, grad_in);
    Ok(())
}

/// Gradients of [`naive::linear`](crate::naive::linear) (PyTorch's `Linear` backward), with
/// `dims = [N, I, O]`, `input` `[N, I]`, `weight` `[O, I]`, `grad_out` `[N, O]`:
/// `grad_in[n, i] = sum_o grad_out[n, o] * weight[o, i]` (`[N, I]`, skipped when `None`, e.g.
/// for the first layer), `grad_weight[o, i] = sum_n grad_out[n, o] * input[n, i]` (`[O, I]`)
/// and `grad_bias[o] = sum_n grad_out[n, o]` (`[O]`, `None` without bias).
pub fn linear_backward(
    dims: [usize; 3],
    input: &[f32],
    weight: &[f32],
    grad_out: &[f32],
    grad_in: Option<&mut [f32]>,
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let [n, i, o] = dims;
    for pair in [[n, i], [o, i], [n, o]] {
        elems("linear_backward", &pair)?;
    }
    check_len("linear_backward input", input, n * i)?;
    check_len("linear_backward weight", weight, o * i)?;
    check_len("linear_backward grad_out", grad_out, n * o)?;
    check_len("linear_backward grad_weight", grad_weight, o * i)?;
    if let Some(gi) = &grad_in {
        check_len("linear_backward grad_in", gi, n * i)?;
    }
    if let Some(gb) = &grad_bias {
        check_len("linear_backward grad_bias", gb, o)?;
    }
    let g = |ni: usize, oi: usize| f64::from(grad_out[ni * o + oi]);
    if let Some(gi) = grad_in {
        for ni in 0..n {
            for ii in 0..i {
                let acc: f64 = (0..o)
                    .map(|oi| g(ni, oi) * f64::from(weight[oi * i + ii]))
                    .sum();
                gi[ni * i + ii] = acc as f32;
            }
        }
    }
    for oi in 0..o {
        for ii in 0..i {
            let acc: f64 = (0..n)
                .map(|ni| g(ni, oi) * f64::from(input[ni * i + ii]))
                .sum();
            grad_weight[oi * i + ii] = acc as f32;
        }
    }
    if let Some(gb) = grad_bias {
        for (oi, b) in gb.iter_mut().enumerate() {
            *b = (0..n).map(|ni| g(ni, oi)).sum::<f64>() as f32;
        }
    }
    Ok(())
}

/// Softmax cross-entropy of `logits` `[N, K]` (`dims = [N, K]`) against class `labels` `[N]`,
/// averaged over the batch: PyTorch's `F.cross_entropy(logits, labels,
/// label_smoothing=eps)` with `reduction='mean'`, no class weights, no ignored index.
///
/// With `log p = logits - logsumexp(logits)` per row (the row maximum subtracted first, so
/// large logits do not overflow), the target distribution is
/// `q = (1 - eps) * onehot(label) + eps / K` and the loss is
/// `(1/N) sum_rows -sum_k q_k log p_k`, returned as f64. When `grad_logits` (`[N, K]`) is
/// given it receives `(softmax(logits) - q) / N`.
///
/// Typed errors: a label `>= K` ([`KernelError::Label`]); `eps` outside `[0, 1]` (PyTorch
/// raises too); `N = 0` or `K = 0` (PyTorch returns NaN for an empty batch; we refuse).
/// Non-finite logits give a NaN loss, as in PyTorch.
pub fn softmax_cross_entropy(
    dims: [usize; 2],
    logits: &[f32],
    labels: &[usize],
    label_smoothing: f32,
    grad_logits: Option<&mut [f32]>,
) -> Result<f64, KernelError> {
    let [n, k] = dims;
    check_len(
        "softmax_cross_entropy logits",
        logits,
        elems("softmax_cross_entropy", &dims)?,
    )?;
    if labels.len() != n {
        return Err(KernelError::BadLength {
            what: "softmax_cross_entropy labels",
            expected: n,
            found: labels.len(),
        });
    }
    if let Some(g) = &grad_logits {
        check_len("softmax_cross_entropy grad_logits", g, n * k)?;
    }
    if n == 0 || k == 0 {
        return Err(KernelError::Geometry(format!(
            "cross-entropy of an empty batch or with no classes ({n} x {k})"
        )));
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(KernelError::Geometry(format!(
            "label smoothing {label_smoothing} is not in [0, 1]"
        )));
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= k) {
        return Err(KernelError::Label {
            row,
            label,
            classes: k,
        });
    }
    let eps = f64::from(label_smoothing);
    let target = |label: usize, j: usize| {
        let one = if j == label { 1.0 } else { 0.0 };
        (1.0 - eps) * one + eps / k as f64
    };
    let mut total = 0.0f64;
    let mut grad = grad_logits;
    for (r, (row, &label)) in logits.chunks_exact(k).zip(labels).enumerate() {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let lse = m + row
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln();
        for (j, &v) in row.iter().enumerate() {
            let log_p = f64::from(v) - lse;
            total -= target(label, j) * log_p;
            if let Some(g) = grad.as_deref_mut() {
                g[r * k + j] = ((log_p.exp() - target(label, j)) / n as f64) as f32;
            }
        }
    }
    Ok(total / n as f64)
}

/// Check a loss's prediction, target and gradient lengths; an empty prediction is refused
/// (PyTorch's mean over zero elements is NaN).
fn loss_check(
    name: &'static str,
    pred: &[f32],
    target: &[f32],
    grad: Option<&[f32]>,
) -> Result<(), KernelError> {
    check_len(name, target, pred.len())?;
    if let Some(g) = grad {
        check_len(name, g, pred.len())?;
    }
    if pred.is_empty() {
        return Err(KernelError::Geometry(format!("{name} of zero elements")));
    }
    Ok(())
}

/// Mean absolute error, PyTorch's `F.l1_loss(pred, target)` (`reduction='mean'`):
/// `(1/M) sum |pred - target|` over all `M` elements, returned as f64. When `grad_pred` is
/// given it receives `sign(pred - target) / M`, with sign 0 where the difference is 0 (as
/// PyTorch's `sgn`); a NaN difference gives a NaN gradient there. An empty `pred` is a
/// [`KernelError::Geometry`] (PyTorch returns NaN).
pub fn l1_loss(
    pred: &[f32],
    target: &[f32],
    grad_pred: Option<&mut [f32]>,
) -> Result<f64, KernelError> {
    loss_check("l1_loss", pred, target, grad_pred.as_deref())?;
    let m = pred.len() as f64;
    let diff = |i: usize| f64::from(pred[i]) - f64::from(target[i]);
    let loss = (0..pred.len()).map(|i| diff(i).abs()).sum::<f64>() / m;
    if let Some(g) = grad_pred {
        for (i, gi) in g.iter_mut().enumerate() {
            let d = diff(i);
            let sign = if d > 0.0 {
                1.0
            } else if d < 0.0 {
                -1.0
            } else if d == 0.0 {
                0.0
            } else {
                f64::NAN
            };
            *gi = (sign / m) as f32;
        }
    }
    Ok(loss)
}

/// Mean squared error, PyTorch's `F.mse_loss(pred, target)` (`reduction='mean'`):
/// `(1/M) sum (pred - target)^2` over all `M` elements, returned as f64. When `grad_pred` is
/// given it receives `2 (pred - target) / M`. An empty `pred` is a [`KernelError::Geometry`]
/// (PyTorch returns NaN).
pub fn mse_loss(
    pred: &[f32],
    target: &[f32],
    grad_pred: Option<&mut [f32]>,
) -> Result<f64, KernelError> {
    loss_check("mse_loss", pred, target, grad_pred.as_deref())?;
    let m = pred.len() as f64;
    let diff = |i: usize| f64::from(pred[i]) - f64::from(target[i]);
    let loss = (0..pred.len()).map(|i| diff(i) * diff(i)).sum::<f64>() / m;
    if let Some(g) = grad_pred {
        for (i, gi) in g.iter_mut().enumerate() {
            *gi = (2.0 * diff(i) / m) as f32;
        }
    }
    Ok(loss)
}

/// Gradient of [`naive::pixel_shuffle`](crate::naive::pixel_shuffle) (PyTorch's
/// `PixelShuffle(r)` backward, which is `PixelUnshuffle(r)` of the gradient): the inverse
/// permutation, `grad_in[n, c*r*r + i*r + j, h, w] = grad_out[n, c, h*r + i, w*r + j]`.
///
/// `dims` is the forward input's `[N, C*r*r, H, W]`; `grad_out` is `[N, C, H*r, W*r]` and
/// `grad_in` `[N, C*r*r, H, W]`. Channels not divisible by `r*r` (or `r = 0`) are a
/// [`KernelError::Geometry`].
pub fn pixel_shuffle_backward(
    dims: [usize; 4],
    r: usize,
    grad_out: &[f32],
    grad_in: &mut [f32],
) -> Result<(), KernelError> {
    let [n, crr, h, w] = dims;
    let rr = r.checked_mul(r).filter(|&rr| rr > 0 && crr % rr == 0);
    let Some(rr) = rr else {
        return Err(KernelError::Geometry(format!(
            "pixel shuffle by {r} needs channels divisible by r*r, got {crr}"
        )));
    };
    let len = elems("pixel_shuffle_backward", &dims)?;
    check_len("pixel_shuffle_backward grad_out", grad_out, len)?;
    check_len("pixel_shuffle_backward grad_in", grad_in, len)?;
    let c = crr / rr;
    for ni in 0..n {
        for ci in 0..c {
            for y in 0..h * r {
                for x in 0..w * r {
                    let src = ci * r * r + (y % r) * r + x % r;
                    grad_in[((ni * crr + src) * h + y / r) * w + x / r] =
                        grad_out[((ni * c + ci) * h * r + y) * w * r + x];
                }
            }
        }
    }
    Ok(())
}

/// Gradient of [`naive::subsample_pad_channels`](crate::naive::subsample_pad_channels): each
/// kept pixel's gradient is the output gradient of its channel; every other input gradient
/// (skipped pixels) is zero, and the padded channels' gradients are dropped.
pub fn subsample_pad_channels_backward(
    dims: [usize; 4],
    stride: usize,
    out_c: usize,
    grad_out: &[f32],
    grad_in: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let (oh, ow, before) = crate::naive::subsample_pad_dims(dims, stride, out_c)?;
    let in_len = elems("subsample_pad_backward", &dims)?;
    check_len(
        "subsample_pad_backward grad_out",
        grad_out,
        n * out_c * oh * ow,
    )?;
    check_len("subsample_pad_backward grad_in", grad_in, in_len)?;
    grad_in.fill(0.0);
    for ni in 0..n {
        for ci in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    grad_in[((ni * c + ci) * h + oy * stride) * w + ox * stride] =
                        grad_out[((ni * out_c + before + ci) * oh + oy) * ow + ox];
                }
            }
        }
    }
    Ok(())
}

/// The arithmetic of one SGD step on one tensor, in `torch.optim.SGD`'s order, with the
/// hyperparameters as f32 (as PyTorch's kernels see the Python scalars).
///
/// Per element, with `g` the gradient and `w` the weight: `g += wd * w` (with weight decay);
/// then with a momentum buffer `b`: `b = g` on the first step, `b = momentum * b + keep * g`
/// after it (`keep = 1 - dampening`); the direction is `d = g + momentum * b` (Nesterov), `b`
/// (momentum) or `g` (no buffer); and `w += neg_lr * d`. Every `x * y + z` is one fused
/// multiply-add, so the fast twin ([`crate::fast::grad::sgd_step`]) gives the same bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// The negated learning rate.
    pub neg_lr: f32,
    /// Weight decay added to the gradient, if any.
    pub weight_decay: Option<f32>,
    /// The momentum factor (used with a buffer only).
    pub momentum: f32,
    /// `1 - dampening` (used with a running buffer only).
    pub keep: f32,
    /// Nesterov momentum (used with a buffer only).
    pub nesterov: bool,
}

/// The momentum buffer's part in an [`SgdStep`].
#[derive(Debug)]
pub enum MomentumBuffer<'a> {
    /// Plain SGD: no buffer.
    None,
    /// The first step: the buffer (any contents) becomes the decayed gradient.
    First(&'a mut [f32]),
    /// A later step: the buffer is updated in place.
    Running(&'a mut [f32]),
}

/// One SGD step on `param` from `grad` ([`SgdStep`] says how); the reference for
/// [`crate::fast::grad::sgd_step`]. Lengths are checked first, and nothing is written when one
/// is wrong.
pub fn sgd_step(
    param: &mut [f32],
    grad: &[f32],
    buffer: MomentumBuffer<'_>,
    step: &SgdStep,
) -> Result<(), KernelError> {
    check_sgd(param, grad, &buffer)?;
    sgd_step_unchecked(param, grad, buffer, step);
    Ok(())
}

/// The lengths of an SGD step's operands.
pub(crate) fn check_sgd(
    param: &[f32],
    grad: &[f32],
    buffer: &MomentumBuffer<'_>,
) -> Result<(), KernelError> {
    check_len("sgd gradient", grad, param.len())?;
    match buffer {
        MomentumBuffer::None => Ok(()),
        MomentumBuffer::First(b) | MomentumBuffer::Running(b) => {
            check_len("sgd momentum buffer", b, param.len())
        }
    }
}

/// [`sgd_step`] without the checks (lengths equal): plain loops of fused multiply-adds, which
/// the fast twin compiles for the CPU's vector instructions.
#[inline(always)]
pub(crate) fn sgd_step_unchecked(
    param: &mut [f32],
    grad: &[f32],
    buffer: MomentumBuffer<'_>,
    s: &SgdStep,
) {
    let decayed = |g: f32, w: f32| match s.weight_decay {
        Some(wd) => w.mul_add(wd, g),
        None => g,
    };
    let (neg_lr, momentum, keep) = (s.neg_lr, s.momentum, s.keep);
    match buffer {
        MomentumBuffer::None => {
            for (w, &g) in param.iter_mut().zip(grad) {
                let g = decayed(g, *w);
                *w = g.mul_add(neg_lr, *w);
            }
        }
        MomentumBuffer::First(buf) => {
            for ((w, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
                let g = decayed(g, *w);
                *b = g;
                let d = if s.nesterov {
                    g.mul_add(momentum, g)
                } else {
                    g
                };
                *w = d.mul_add(neg_lr, *w);
            }
        }
        MomentumBuffer::Running(buf) => {
            for ((w, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
                let g = decayed(g, *w);
                *b = g.mul_add(keep, *b * momentum);
                let d = if s.nesterov {
                    b.mul_add(momentum, g)
                } else {
                    *b
                };
                *w = d.mul_add(neg_lr, *w);
            }
        }
    }
}
