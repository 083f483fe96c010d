//! Fast kernels: SIMD written once over [`pulp`] and dispatched through a [`Cpu`] token,
//! matrix products through the micro-kernels of the `gemm` project (`gemm-f32`) on weights
//! packed once at build time. Activations are NHWC.
//!
//! Every kernel here has a twin in [`crate::naive`] and is tested against it (`cargo xtask
//! props`).

mod context;
mod conv;
mod entry;
pub mod grad;
mod matmul;
mod peak;
mod simd;

pub use context::{BufferPool, Ctx, Par, Scratch, with_awake_workers};
pub use conv::{ConvAlgo, Epilogue, PackedConv};
pub use peak::measure_peak_gflops;

use crate::{Cpu, KernelError, PoolGeometry, check_len};
use rayon::prelude::*;

/// Copy an NCHW tensor of logical dims `[N, C, H, W]` to NHWC.
///
/// Three-channel images (the model's entry) are interleaved in vector registers on AVX-512
/// (two-source permutes) and AVX2 (permutes and blends); other channel counts and CPUs use a
/// cache-blocked transpose.
pub fn nchw_to_nhwc(
    cpu: Cpu,
    dims: [usize; 4],
    src: &[f32],
    dst: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let len = n * c * h * w;
    check_len("nchw_to_nhwc input", src, len)?;
    check_len("nchw_to_nhwc output", dst, len)?;
    if !(c == 3 && entry::rgb_to_pixels(cpu, h * w, &src[..len], &mut dst[..len])) {
        transpose_batch(n, c, h * w, src, dst);
    }
    Ok(())
}

/// Copy an NHWC tensor of logical dims `[N, C, H, W]` to NCHW.
pub fn nhwc_to_nchw(dims: [usize; 4], src: &[f32], dst: &mut [f32]) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let len = n * c * h * w;
    check_len("nhwc_to_nchw input", src, len)?;
    check_len("nhwc_to_nchw output", dst, len)?;
    transpose_batch(n, h * w, c, src, dst);
    Ok(())
}

/// Per image, transpose a `[rows, cols]` matrix into `[cols, rows]`, in cache-sized blocks.
fn transpose_batch(n: usize, rows: usize, cols: usize, src: &[f32], dst: &mut [f32]) {
    const B: usize = 16;
    let per = rows * cols;
    if per == 0 {
        return;
    }
    for (s, d) in src.chunks_exact(per).zip(dst.chunks_exact_mut(per)).take(n) {
        for r0 in (0..rows).step_by(B) {
            for c0 in (0..cols).step_by(B) {
                for r in r0..(r0 + B).min(rows) {
                    for cc in c0..(c0 + B).min(cols) {
                        d[cc * rows + r] = s[r * cols + cc];
                    }
                }
            }
        }
    }
}

/// PixelShuffle (depth-to-space) on NHWC data of logical dims `[N, C*r*r, H, W]`, giving
/// `[N, C, H*r, W*r]` (NHWC): each input pixel's channels `c*r*r + i*r + j` become channel `c`
/// of output pixel `(h*r + i, w*r + j)`.
pub fn pixel_shuffle_nhwc(
    dims: [usize; 4],
    r: usize,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, crr, h, w] = dims;
    let c = crate::pixel_shuffle_check(dims, r, input, output)?;
    let (ow, rr) = (w * r, r * r);
    for ni in 0..n {
        let x = &input[ni * h * w * crr..(ni + 1) * h * w * crr];
        let y = &mut output[ni * h * w * crr..(ni + 1) * h * w * crr];
        for hy in 0..h {
            for wx in 0..w {
                let src = &x[(hy * w + wx) * crr..][..crr];
                for i in 0..r {
                    for j in 0..r {
                        let dst = &mut y[((hy * r + i) * ow + wx * r + j) * c..][..c];
                        for (ci, d) in dst.iter_mut().enumerate() {
                            *d = src[ci * rr + i * r + j];
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// [`crate::naive::subsample_pad_channels`] (He et al.'s option-A shortcut) on NHWC data.
pub fn subsample_pad_channels_nhwc(
    dims: [usize; 4],
    stride: usize,
    out_c: usize,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    let (oh, ow, before) = crate::naive::subsample_pad_dims(dims, stride, out_c)?;
    check_len("subsample_pad input", input, n * c * h * w)?;
    check_len("subsample_pad output", output, n * out_c * oh * ow)?;
    for (p, px) in output.chunks_exact_mut(out_c.max(1)).enumerate() {
        let (ni, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
        let src = &input[((ni * h + oy * stride) * w + ox * stride) * c..][..c];
        px[..before].fill(0.0);
        px[before..before + c].copy_from_slice(src);
        px[before + c..].fill(0.0);
    }
    Ok(())
}

/// Max pooling on NHWC data; padded positions never win, and a NaN in a window gives NaN
/// (as PyTorch).
pub fn max_pool2d_nhwc(
    cpu: Cpu,
    par: Par,
    geom: &PoolGeometry,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = geom.input;
    let [_, _, oh, ow] = geom.output;
    check_len("max_pool2d input", input, n * c * h * w)?;
    check_len("max_pool2d output", output, n * c * oh * ow)?;
    if output.is_empty() {
        return Ok(());
    }
    let row_task = |(idx, out_row): (usize, &mut [f32])| {
        let (ni, oy) = (idx / oh, idx % oh);
        let x = &input[ni * h * w * c..(ni + 1) * h * w * c];
        for (ox, d) in out_row.chunks_exact_mut(c).enumerate() {
            d.fill(f32::NEG_INFINITY);
            for (iy, ix) in geom.window(oy, ox) {
                simd::max_inplace(cpu, d, &x[(iy * w + ix) * c..][..c]);
            }
        }
    };
    if par.is_parallel() {
        output.par_chunks_mut(ow * c).enumerate().for_each(row_task);
    } else {
        output.chunks_mut(ow * c).enumerate().for_each(row_task);
    }
    Ok(())
}

/// Global average pooling of NHWC `[N, H, W, C]` into `[N, C]`.
pub fn global_avg_pool_nhwc(
    cpu: Cpu,
    dims: [usize; 4],
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    let [n, c, h, w] = dims;
    check_len("global_avg_pool input", input, n * c * h * w)?;
    check_len("global_avg_pool output", output, n * c)?;
    if h * w == 0 {
        return Err(KernelError::Geometry(
            "global pool of an empty image".into(),
        ));
    }
    for (x, d) in input
        .chunks_exact(h * w * c)
        .zip(output.chunks_exact_mut(c.max(1)))
    {
        d.fill(0.0);
        for row in x.chunks_exact(c) {
            simd::add_inplace(cpu, d, row);
        }
        simd::scale_inplace(cpu, d, 1.0 / (h * w) as f32);
    }
    Ok(())
}

/// `x = relu(x)` in SIMD, as PyTorch: NaN stays NaN, everything else not above zero becomes
/// `+0.0`.
pub fn relu_inplace(cpu: Cpu, x: &mut [f32]) {
    simd::relu_inplace(cpu, x);
}

/// `dst = a + b` in SIMD.
pub fn add(cpu: Cpu, a: &[f32], b: &[f32], dst: &mut [f32]) -> Result<(), KernelError> {
    check_len("add rhs", b, a.len())?;
    check_len("add output", dst, a.len())?;
    simd::add_to(cpu, dst, a, b);
    Ok(())
}

/// A fully connected layer with its weight packed once at build time.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    in_features: usize,
    out_features: usize,
    /// `[out, in]`, packed for the micro-kernels.
    weight: matmul::PackedMatrix,
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Pack a PyTorch `[out, in]` weight and optional `[out]` bias.
    pub fn new(
        weight: &[f32],
        in_features: usize,
        out_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, KernelError> {
        check_len("linear weight", weight, in_features * out_features)?;
        let weight = matmul::PackedMatrix::new(out_features, in_features, |o, i| {
            weight[o * in_features + i]
        });
        let bias = match bias {
            Some(b) => {
                check_len("linear bias", b, out_features)?;
                b.to_vec()
            }
            None => vec![0.0; out_features],
        };
        Ok(Self {
            in_features,
            out_features,
            weight,
            bias,
        })
    }

    /// `output[n, :] = bias + input[n, :] W^T` for `n` rows: `[n, in]` → `[n, out]`, on the
    /// calling thread.
    pub fn run(
        &self,
        cpu: Cpu,
        n: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), KernelError> {
        self.run_par(cpu, Par::Seq, n, input, output)
    }

    /// [`PackedLinear::run`] with the output features split over the threads of `par`
    /// (a classifier at batch 1 streams its whole weight for one row: two cores pull it
    /// faster than one). Bitwise the same result for any parallelism, and each row's result
    /// does not depend on the other rows.
    ///
    /// ```
    /// use resnet_kernels::{Cpu, fast::{PackedLinear, Par}};
    /// // out = bias + x W^T with W = [[1, 2], [3, 4], [5, 6]].
    /// let fc = PackedLinear::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3, Some(&[0.5; 3]))?;
    /// let mut out = [0.0; 3];
    /// fc.run_par(Cpu::detect(), Par::with_threads(2), 1, &[1.0, 1.0], &mut out)?;
    /// assert_eq!(out, [3.5, 7.5, 11.5]);
    /// # Ok::<(), resnet_kernels::KernelError>(())
    /// ```
    pub fn run_par(
        &self,
        cpu: Cpu,
        par: Par,
        n: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), KernelError> {
        let (i, o) = (self.in_features, self.out_features);
        check_len("linear input", input, n * i)?;
        check_len("linear output", output, n * o)?;
        if o == 0 || n == 0 {
            return Ok(());
        }
        // Blocks of whole panels, one per thread; each value is summed the same way whatever
        // the blocks, and each row's the same way whatever the other rows.
        let panel = self.weight.panel();
        let panels = o.div_ceil(panel);
        let blocks = par.threads().min(panels);
        let chans = |b: usize| {
            (b * panels / blocks * panel).min(o)..((b + 1) * panels / blocks * panel).min(o)
        };
        let out = conv::SharedOut(output.as_mut_ptr());
        par.for_each(blocks, |b| {
            let chans = chans(b);
            let dst = matmul::OutRows {
                ptr: out.at(chans.start),
                ld: o,
                ends: matmul::Ends::output(&self.bias[chans.clone()], None, false),
                chans,
            };
            // SAFETY: `output` holds `n` rows of `o` values (checked above) and stays
            // borrowed for the whole loop; block `b` writes only its own channels of them.
            unsafe { self.weight.matmul_acc_rows(cpu, n, input, i, dst) };
        });
        Ok(())
    }
}
