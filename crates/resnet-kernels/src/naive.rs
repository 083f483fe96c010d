//! Reference kernels: plain loops, f64 accumulation, written to be obviously right.
//!
//! These are the oracle every fast kernel is checked against, and the `Naive` backend of
//! `resnet-layers`. All tensors are flat slices in NCHW (row-major) order.

use crate::{ConvGeometry, KernelError, PoolGeometry, adaptive_bin, check_len};

/// 2-D convolution with PyTorch semantics (zero padding, stride, dilation, groups, optional bias).
///
/// `input` is `[N, C, H, W]`, `weight` `[O, C/groups, KH, KW]`, `bias` `[O]`, `output`
/// `[N, O, OH, OW]`, all as given by `geom`.
pub fn conv2d(
    geom: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<(), KernelError> {
    let (li, lw, lo) = geom.lens();
    check_len("conv2d input", input, li)?;
    check_len("conv2d weight", weight, lw)?;
    check_len("conv2d output", output, lo)?;
    let o = geom.weight[0];
    let [_, _, oh, ow] = geom.output;
    if let Some(b) = bias {
        check_len("conv2d bias", b, o)?;
    }
    // Each output starts at its bias and adds its products in (channel, ky, kx) order.
    let mut acc = vec![0.0f64; lo];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = bias.map_or(0.0, |b| f64::from(b[i / (oh * ow) % o]));
    }
    for_each_conv_tap(geom, |out, x, w| {
        acc[out] += f64::from(input[x]) * f64::from(weight[w]);
    });
    for (y, a) in output.iter_mut().zip(&acc) {
        *y = *a as f32;
    }
    Ok(())
}

/// Call `f(output_index, input_index, weight_index)` for every product `input * weight` that
/// [`conv2d`] adds into an output element, in the same loop order.
/// Padded taps (outside the input) are skipped, exactly as the forward skips them.
pub(crate) fn for_each_conv_tap(geom: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let [n, c, h, w] = geom.input;
    let [o, cg, kh, kw] = geom.weight;
    let [_, _, oh, ow] = geom.output;
    let p = &geom.params;
    let og = o / p.groups;
    for ni in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let out_idx = ((ni * o + oc) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for ky in 0..kh {
                            let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                - p.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let in_idx = ((ni * c + ic) * h + iy as usize) * w + ix as usize;
                                let w_idx = ((oc * cg + ci) * kh + ky) * kw + kx;
                                f(out_idx, in_idx, w_idx);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The per-channel parameters of a batch-norm in evaluation mode.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormParams<'a> {
    /// Scale (PyTorch's `weight`), `[C]`.
    pub gamma: &'a [f32],
    /// Shift (PyTorch's `bias`), `[C]`.
    pub beta: &'a [f32],
    /// Running mean, `[C]`.
    pub mean: &'a [f32],
    /// Running (unbiased) variance, `[C]`.
    pub var: &'a [f32],
    /// Added to the variance.
    pub eps: f32,
}

/// Inference batch-norm over `[N, C, H*W]`: `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn batch_norm(
    dims: [usize; 4],
    input: &[f32],
    bn: &BatchNormParams<'_>,
    output: &mut [f32],
) -> Result<(), KernelError> {
    let &BatchNormParams {
        gamma,
        beta,
        mean,
        var,
        eps,
    } = bn;
    let [n, c, h, w] = dims;
    let len = n * c * h * w;
    check_len("batch_norm input", input, len)?;
    check_len("batch_norm output", output, len)?;
    for (what, v) in [
        ("gamma", gamma),
        ("beta", beta),
        ("mean", mean),
        ("var", var),
    ] {
        check_len(what, v, c)?;
    }
    let hw = h * w;
    for ni in 0..n {
        for ci in 0..c {
            let inv = 1.0 / (f64::from(var[ci]) + f64::from(eps)).sqrt();
            let base = (ni * c + ci) * hw;
            for i in base..base + hw {
                let x = f64::from(input[i]);
                output[i] = ((x - f64::from(mean[ci])) * inv * f64::from(gamma[ci])
                    + f64::from(beta[ci])) as f32;
            }
        }
    }
    Ok(())
}

/// `output[i] = max(input[i], 0)`. NaN stays NaN, as in PyTorch.
pub fn relu(input: &[f32], output: &mut [f32]) -> Result<(), KernelError> {
    check_len("relu output", output, input.len())?;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = relu_value(x);
    }
    Ok(())
}

/// [`relu`] in place.
pub fn relu_inplace(x: &mut [f32]) {
    for v in x {
        *v = relu_value(*v);
    }
}

/// ReLU of one value as PyTorch computes it: `x` where `x > 0`, NaN where `x` is NaN, `+0.0`
/// elsewhere (`-0.0` included).
fn relu_value(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() { x } else { 0.0 }
}

/// `output[i] = a[i] + b[i]`.
pub fn add(a: &[f32], b: &[f32], output: &mut [f32]) -> Result<(), KernelError> {
    check_len("add rhs", b, a.len())?;
    check_len("add output", output, a.len())?;
    for ((o, &x), &y) in output.iter_mut().zip(a).zip(b) {
        *o = (f64::from(x) + f64::from(y)) as f32;
    }
    Ok(())
}

/// 2-D max pooling; padded positions never win (they are not candidates at all).
pub fn max_pool2d(
    geom: &PoolGeometry,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = geom.input;
    let [_, _, oh, ow] = geom.output;
    check_len("max_pool2d input", input, n * c * h * w)?;
    check_len("max_pool2d output", output, n * c * oh * ow)?;
    for nc in 0..n * c {
        let plane = &input[nc * h * w..(nc + 1) * h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut nan = false;
                for (iy, ix) in geom.window(oy, ox) {
                    let v = plane[iy * w + ix];
                    nan |= v.is_nan();
                    if v > best {
                        best = v;
                    }
                }
                output[(nc * oh + oy) * ow + ox] = if nan { f32::NAN } else { best };
            }
        }
    }
    Ok(())
}

/// Adaptive average pooling of `[N, C, H, W]` to `[N, C, OH, OW]` with torchvision's bins
/// (see [`adaptive_bin`]). Global average pooling is `out_hw = [1, 1]`.
pub fn adaptive_avg_pool2d(
    dims: [usize; 4],
    out_hw: [usize; 2],
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let [oh, ow] = out_hw;
    if (oh == 0 || ow == 0) && n * c > 0 || (h == 0 || w == 0) && n * c * oh * ow > 0 {
        return Err(KernelError::Geometry(format!(
            "adaptive pool from {h}x{w} to {oh}x{ow}: sizes must be non-zero"
        )));
    }
    check_len("adaptive_avg_pool2d input", input, n * c * h * w)?;
    check_len("adaptive_avg_pool2d output", output, n * c * oh * ow)?;
    for nc in 0..n * c {
        let plane = &input[nc * h * w..(nc + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1) = adaptive_bin(oy, h, oh);
            for ox in 0..ow {
                let (x0, x1) = adaptive_bin(ox, w, ow);
                let mut acc = 0.0f64;
                for y in y0..y1 {
                    for x in x0..x1 {
                        acc += f64::from(plane[y * w + x]);
                    }
                }
                output[(nc * oh + oy) * ow + ox] = (acc / ((y1 - y0) * (x1 - x0)) as f64) as f32;
            }
        }
    }
    Ok(())
}

/// Fully connected layer: `output[n, o] = bias[o] + sum_i input[n, i] * weight[o, i]`.
///
/// `input` is `[N, I]`, `weight` `[O, I]` (PyTorch's `Linear` layout), `output` `[N, O]`.
pub fn linear(
    dims: [usize; 3],
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, i, o] = dims;
    check_len("linear input", input, n * i)?;
    check_len("linear weight", weight, o * i)?;
    check_len("linear output", output, n * o)?;
    if let Some(b) = bias {
        check_len("linear bias", b, o)?;
    }
    for ni in 0..n {
        let x = &input[ni * i..(ni + 1) * i];
        for oi in 0..o {
            let wr = &weight[oi * i..(oi + 1) * i];
            let mut acc = bias.map_or(0.0, |b| f64::from(b[oi]));
            for (&a, &b) in x.iter().zip(wr) {
                acc += f64::from(a) * f64::from(b);
            }
            output[ni * o + oi] = acc as f32;
        }
    }
    Ok(())
}

/// PixelShuffle (depth-to-space) on NCHW: `[N, C*r*r, H, W]` to `[N, C, H*r, W*r]` with
/// `out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w]` (PyTorch's `PixelShuffle(r)`).
pub fn pixel_shuffle(
    dims: [usize; 4],
    r: usize,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, crr, h, w] = dims;
    let c = crate::pixel_shuffle_check(dims, r, input, output)?;
    for ni in 0..n {
        for ci in 0..c {
            for y in 0..h * r {
                for x in 0..w * r {
                    let src = ci * r * r + (y % r) * r + x % r;
                    output[((ni * c + ci) * h * r + y) * w * r + x] =
                        input[((ni * crr + src) * h + y / r) * w + x / r];
                }
            }
        }
    }
    Ok(())
}

/// Softmax over each row of `[rows, len]`, with the maximum subtracted first for stability.
pub fn softmax(len: usize, input: &[f32], output: &mut [f32]) -> Result<(), KernelError> {
    check_len("softmax output", output, input.len())?;
    if len == 0 {
        return if input.is_empty() {
            Ok(())
        } else {
            Err(KernelError::Geometry("softmax row length 0".into()))
        };
    }
    if !input.len().is_multiple_of(len) {
        return Err(KernelError::Geometry(format!(
            "softmax input of {} elements is not a whole number of rows of {len}",
            input.len()
        )));
    }
    for (row, out) in input.chunks_exact(len).zip(output.chunks_exact_mut(len)) {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        for (o, &v) in out.iter_mut().zip(row) {
            *o = ((f64::from(v) - m).exp() / sum) as f32;
        }
    }
    Ok(())
}

/// He et al.'s parameter-free shortcut (option A) on NCHW data: every `stride`-th pixel
/// (`x[:, :, ::stride, ::stride]`), then zero channels padded to `out_c`, `(out_c - c) / 2`
/// before the input's channels and the rest after them. Output `[N, out_c, ⌈H/s⌉, ⌈W/s⌉]`.
pub fn subsample_pad_channels(
    [n, c, h, w]: [usize; 4],
    stride: usize,
    out_c: usize,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let (oh, ow, before) = subsample_pad_dims([n, c, h, w], stride, out_c)?;
    check_len("subsample_pad input", input, n * c * h * w)?;
    check_len("subsample_pad output", output, n * out_c * oh * ow)?;
    output.fill(0.0);
    for ni in 0..n {
        for ci in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    output[((ni * out_c + before + ci) * oh + oy) * ow + ox] =
                        input[((ni * c + ci) * h + oy * stride) * w + ox * stride];
                }
            }
        }
    }
    Ok(())
}

/// The output size `(⌈H/s⌉, ⌈W/s⌉)` and the zero channels before the input's of
/// [`subsample_pad_channels`], or an error for a zero stride or fewer output channels.
pub(crate) fn subsample_pad_dims(
    [_, c, h, w]: [usize; 4],
    stride: usize,
    out_c: usize,
) -> Result<(usize, usize, usize), KernelError> {
    if stride == 0 || out_c < c {
        return Err(KernelError::Geometry(format!(
            "option-A shortcut from {c} to {out_c} channels with stride {stride}: needs a stride \
             of at least 1 and no fewer output channels"
        )));
    }
    Ok((h.div_ceil(stride), w.div_ceil(stride), (out_c - c) / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conv2dParams;

    #[test]
    fn conv_stride_dilation_groups_bias_by_hand() {
        // 1 image, 2 channels of 4x4, groups 2, one 2x2 dilated-by-2 kernel per group, stride 2.
        let input: Vec<f32> = (0..32).map(|v| v as f32).collect();
        let p = Conv2dParams::default()
            .with_groups(2)
            .with_dilation(2)
            .with_stride(2);
        let g = ConvGeometry::new([1, 2, 4, 4], [2, 1, 2, 2], p).unwrap();
        assert_eq!(g.output, [1, 2, 1, 1]);
        let w = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let mut out = [0.0; 2];
        conv2d(&g, &input, &w, Some(&[0.5, -1.0]), &mut out).unwrap();
        // group 0: x[0,0] + x[2,2] = 0 + 10; group 1: x[0,2] + x[2,0] of channel 1 = 18 + 24
        assert_eq!(out, [10.5, 41.0]);
    }

    #[test]
    fn conv_padding_reads_zeros() {
        let g = ConvGeometry::new(
            [1, 1, 1, 1],
            [1, 1, 3, 3],
            Conv2dParams::default().with_padding(1),
        )
        .unwrap();
        let mut out = [0.0];
        conv2d(
            &g,
            &[2.0],
            &[1., 1., 1., 1., 3., 1., 1., 1., 1.],
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [6.0]);
    }

    #[test]
    fn conv_rejects_bad_geometry_and_lengths() {
        let p = Conv2dParams::default().with_groups(3);
        assert!(ConvGeometry::new([1, 4, 3, 3], [3, 1, 1, 1], p).is_err());
        assert!(ConvGeometry::new([1, 2, 2, 2], [1, 2, 3, 3], Conv2dParams::default()).is_err());
        let g = ConvGeometry::new([1, 1, 2, 2], [1, 1, 1, 1], Conv2dParams::default()).unwrap();
        let e = conv2d(&g, &[0.0; 3], &[1.0], None, &mut [0.0; 4]).unwrap_err();
        assert_eq!(
            e,
            KernelError::BadLength {
                what: "conv2d input",
                expected: 4,
                found: 3
            }
        );
    }

    #[test]
    fn batch_norm_by_hand() {
        let mut out = [0.0; 2];
        let bn = BatchNormParams {
            gamma: &[2.0, 1.0],
            beta: &[1.0, 0.0],
            mean: &[1.0, 1.0],
            var: &[4.0, 0.25],
            eps: 0.0,
        };
        batch_norm([1, 2, 1, 1], &[3.0, 2.0], &bn, &mut out).unwrap();
        assert_eq!(out, [3.0, 2.0]);
    }

    #[test]
    fn relu_and_add() {
        let mut out = [0.0; 3];
        relu(&[-1.0, 0.0, 2.5], &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0, 2.5]);
        add(&[1.0, 2.0, 3.0], &[0.5, -2.0, 1.0], &mut out).unwrap();
        assert_eq!(out, [1.5, 0.0, 4.0]);
    }

    #[test]
    fn max_pool_padding_never_wins() {
        // All-negative input: a padded zero would win if padding were a candidate.
        let input = [-5.0, -4.0, -3.0, -2.0];
        let g = PoolGeometry::new([1, 1, 2, 2], [3, 3], [2, 2], [1, 1]).unwrap();
        assert_eq!(g.output, [1, 1, 1, 1]);
        let mut out = [0.0];
        max_pool2d(&g, &input, &mut out).unwrap();
        assert_eq!(out, [-2.0]);
        // torchvision stem pool: 112 -> 56, odd 7 -> 4
        assert_eq!(
            PoolGeometry::new([1, 1, 112, 112], [3, 3], [2, 2], [1, 1])
                .unwrap()
                .output,
            [1, 1, 56, 56]
        );
        assert_eq!(
            PoolGeometry::new([1, 1, 7, 7], [3, 3], [2, 2], [1, 1])
                .unwrap()
                .output,
            [1, 1, 4, 4]
        );
        assert!(PoolGeometry::new([1, 1, 7, 7], [3, 3], [2, 2], [2, 2]).is_err());
    }

    #[test]
    fn adaptive_bins_match_torch() {
        // torch: AdaptiveAvgPool1d(3) over 5 → bins [0,2), [1,4), [3,5)
        assert_eq!(adaptive_bin(0, 5, 3), (0, 2));
        assert_eq!(adaptive_bin(1, 5, 3), (1, 4));
        assert_eq!(adaptive_bin(2, 5, 3), (3, 5));
        let input: Vec<f32> = (0..5).map(|v| v as f32).collect();
        let mut out = [0.0; 3];
        adaptive_avg_pool2d([1, 1, 1, 5], [1, 3], &input, &mut out).unwrap();
        assert_eq!(out, [0.5, 2.0, 3.5]);
        let mut g = [0.0];
        adaptive_avg_pool2d([1, 1, 1, 5], [1, 1], &input, &mut g).unwrap();
        assert_eq!(g, [2.0]);
        // Upsampling (output larger than input) repeats values.
        let mut up = [0.0; 4];
        adaptive_avg_pool2d([1, 1, 1, 2], [1, 4], &[1.0, 3.0], &mut up).unwrap();
        assert_eq!(up, [1.0, 1.0, 3.0, 3.0]);
    }

    #[test]
    fn pixel_shuffle_by_hand() {
        // Four channels of one pixel become a 2x2 block of one channel.
        let mut out = [0.0; 4];
        pixel_shuffle([1, 4, 1, 1], 2, &[0.0, 1.0, 2.0, 3.0], &mut out).unwrap();
        assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);
        // Two pixels side by side: [a0 a1 a2 a3][b0 b1 b2 b3] -> rows [a0 a1 b0 b1], [a2 a3 b2 b3].
        let input = [10.0, 20.0, 11.0, 21.0, 12.0, 22.0, 13.0, 23.0]; // NCHW [1, 4, 1, 2]
        let mut out = [0.0; 8];
        pixel_shuffle([1, 4, 1, 2], 2, &input, &mut out).unwrap();
        assert_eq!(out, [10.0, 11.0, 20.0, 21.0, 12.0, 13.0, 22.0, 23.0]);
        assert!(pixel_shuffle([1, 3, 1, 1], 2, &[0.0; 3], &mut [0.0; 3]).is_err());
    }

    #[test]
    fn linear_and_softmax() {
        let mut out = [0.0; 2];
        linear(
            [1, 3, 2],
            &[1.0, 2.0, 3.0],
            &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0],
            Some(&[0.5, 0.0]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [1.5, 5.0]);
        let mut s = [0.0; 2];
        softmax(2, &[1000.0, 1000.0], &mut s).unwrap();
        assert_eq!(s, [0.5, 0.5]);
        assert!(softmax(3, &[0.0; 4], &mut [0.0; 4]).is_err());
    }
}
