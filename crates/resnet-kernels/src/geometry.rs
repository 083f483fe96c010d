//! Validated shapes of convolutions and pools: [`Conv2dParams`], [`ConvGeometry`],
//! [`PoolGeometry`], checked once so kernels can index without re-checking.

use crate::KernelError;

/// Hyper-parameters of a 2-D convolution (PyTorch's `Conv2d` semantics), `[height, width]` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between output positions.
    pub stride: [usize; 2],
    /// Zero padding added on both sides.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels are split into this many independent groups.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Same stride in both directions.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Same padding on both axes.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// Same dilation on both axes.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Number of groups.
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

fn out_size(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dil: usize,
) -> Result<usize, KernelError> {
    if stride == 0 || dil == 0 || kernel == 0 {
        return Err(KernelError::Geometry(
            "stride, dilation and kernel size must be at least 1".into(),
        ));
    }
    let padded = input
        .checked_add(2 * pad)
        .ok_or_else(|| KernelError::Geometry("padding overflows".into()))?;
    let span = dil
        .checked_mul(kernel - 1)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| KernelError::Geometry("dilated kernel overflows".into()))?;
    if span > padded {
        return Err(KernelError::Geometry(format!(
            "kernel span {span} is larger than the padded input {padded}"
        )));
    }
    Ok((padded - span) / stride + 1)
}

/// A validated convolution: input `[N, C, H, W]`, weight `[O, C/groups, KH, KW]`, parameters,
/// and the output size they give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Input dimensions `[N, C, H, W]`.
    pub input: [usize; 4],
    /// Weight dimensions `[O, C/groups, KH, KW]`.
    pub weight: [usize; 4],
    /// Hyper-parameters.
    pub params: Conv2dParams,
    /// Output dimensions `[N, O, OH, OW]`.
    pub output: [usize; 4],
}

impl ConvGeometry {
    /// Check that the sizes fit together and compute the output size.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        params: Conv2dParams,
    ) -> Result<Self, KernelError> {
        let [n, c, h, w] = input;
        let [o, cg, kh, kw] = weight;
        let g = params.groups;
        if g == 0 || c % g != 0 || o % g != 0 {
            return Err(KernelError::Geometry(format!(
                "groups {g} must divide input channels {c} and output channels {o}"
            )));
        }
        if cg != c / g {
            return Err(KernelError::Geometry(format!(
                "weight has {cg} input channels per group, input gives {} ({c} / {g} groups)",
                c / g
            )));
        }
        let oh = out_size(
            h,
            kh,
            params.stride[0],
            params.padding[0],
            params.dilation[0],
        )?;
        let ow = out_size(
            w,
            kw,
            params.stride[1],
            params.padding[1],
            params.dilation[1],
        )?;
        let output = [n, o, oh, ow];
        for dims in [input, weight, output] {
            dims.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| KernelError::Geometry("sizes overflow".into()))?;
        }
        Ok(Self {
            input,
            weight,
            params,
            output,
        })
    }

    /// Output dimensions `[N, O, OH, OW]`.
    pub fn output_dims(&self) -> [usize; 4] {
        self.output
    }

    /// Multiply-accumulates the convolution performs.
    pub fn macs(&self) -> u64 {
        let [n, o, oh, ow] = self.output;
        let [_, cg, kh, kw] = self.weight;
        [n, o, oh, ow, cg, kh, kw]
            .iter()
            .map(|&v| v as u64)
            .product()
    }

    /// Elements of the input, weight and output buffers.
    pub fn lens(&self) -> (usize, usize, usize) {
        let p = |d: [usize; 4]| d.iter().product();
        (p(self.input), p(self.weight), p(self.output))
    }
}

/// A validated 2-D max-pool window over an input `[N, C, H, W]` (PyTorch's `MaxPool2d`,
/// `ceil_mode = false`, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    /// Input dimensions `[N, C, H, W]`.
    pub input: [usize; 4],
    /// Window size `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Padding `[PH, PW]` (padded positions never win the max).
    pub padding: [usize; 2],
    /// Output dimensions `[N, C, OH, OW]`.
    pub output: [usize; 4],
}

impl PoolGeometry {
    /// Check the window against the input and compute the output size. Like PyTorch, padding
    /// must be at most half the window, so every window holds at least one real element.
    pub fn new(
        input: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Self, KernelError> {
        for a in 0..2 {
            if padding[a] * 2 > kernel[a] {
                return Err(KernelError::Geometry(format!(
                    "pool padding {} must be at most half the kernel size {}",
                    padding[a], kernel[a]
                )));
            }
        }
        let oh = out_size(input[2], kernel[0], stride[0], padding[0], 1)?;
        let ow = out_size(input[3], kernel[1], stride[1], padding[1], 1)?;
        Ok(Self {
            input,
            kernel,
            stride,
            padding,
            output: [input[0], input[1], oh, ow],
        })
    }

    /// The input positions `(iy, ix)` of output pixel `(oy, ox)`'s window that lie inside the
    /// image (padded positions are not candidates), in row-major order: the one definition of
    /// a window every pooling kernel, forward and backward, scans.
    ///
    /// ```
    /// use resnet_kernels::PoolGeometry;
    /// let g = PoolGeometry::new([1, 1, 4, 4], [3, 3], [2, 2], [1, 1])?;
    /// let corner: Vec<_> = g.window(0, 0).collect();
    /// assert_eq!(corner, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    /// # Ok::<(), resnet_kernels::KernelError>(())
    /// ```
    pub fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let [_, _, h, w] = self.input;
        let (y0, x0) = (
            (oy * self.stride[0]) as isize - self.padding[0] as isize,
            (ox * self.stride[1]) as isize - self.padding[1] as isize,
        );
        let rows =
            (y0.max(0) as usize)..((y0 + self.kernel[0] as isize).clamp(0, h as isize) as usize);
        let cols =
            (x0.max(0) as usize)..((x0 + self.kernel[1] as isize).clamp(0, w as isize) as usize);
        rows.flat_map(move |iy| cols.clone().map(move |ix| (iy, ix)))
    }
}

/// The input range `[start, end)` that output bin `i` of `out` averages over an axis of `len`
/// elements, by torchvision's adaptive pooling formula: `floor(i*len/out) .. ceil((i+1)*len/out)`.
pub fn adaptive_bin(i: usize, len: usize, out: usize) -> (usize, usize) {
    let start = i * len / out;
    let end = ((i + 1) * len).div_ceil(out);
    (start, end)
}
