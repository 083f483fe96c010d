//! Convolution as tiled matrix products on NHWC activations, with a fused epilogue.

use super::simd;
use crate::{Conv2dParams, ConvGeometry, Cpu, KernelError, check_len};
use rayon::prelude::*;
use std::cell::RefCell;

/// How a [`PackedConv`] computes, chosen from its shape when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgo {
    /// 1x1, stride 1, no padding, one group: the NHWC input *is* the left matrix; one matrix
    /// product per pixel tile, no copy.
    Pointwise,
    /// Any other shape: each tile of output pixels gathers its input patches into a small
    /// im2col buffer (sized for the L2 cache, never a whole image), then one matrix product per
    /// group.
    Im2colTiled,
}

impl std::fmt::Display for ConvAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvAlgo::Pointwise => "gemm-1x1",
            ConvAlgo::Im2colTiled => "im2col-tiled-gemm",
        })
    }
}

/// A convolution with its weights packed at build time for the fast path.
///
/// Activations are NHWC (`[N, H, W, C]` in memory). The output step adds the bias and, when
/// given, a residual tensor of the output's shape, then applies ReLU, tile by tile while the
/// tile is in cache: no separate pass over memory.
#[derive(Debug, Clone)]
pub struct PackedConv {
    weight_dims: [usize; 4],
    params: Conv2dParams,
    algo: ConvAlgo,
    /// Per group, a `[Kg, Og]` row-major matrix with `k = (ky * KW + kx) * Cg + c`.
    packed: Vec<f32>,
    bias: Vec<f32>,
}

thread_local! {
    /// Per-thread im2col scratch, grown to the largest tile seen and reused afterwards.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Target size in bytes of one tile's im2col buffer: well inside a 1-2 MiB L2 cache.
const TILE_BYTES: usize = 1 << 20;

impl PackedConv {
    /// Pack PyTorch-layout weights `[O, C/groups, KH, KW]` (and an optional bias `[O]`).
    pub fn new(
        weight: &[f32],
        weight_dims: [usize; 4],
        bias: Option<&[f32]>,
        params: Conv2dParams,
    ) -> Result<Self, KernelError> {
        let [o, cg, kh, kw] = weight_dims;
        let g = params.groups;
        if g == 0 || o % g != 0 {
            return Err(KernelError::Geometry(format!(
                "groups {g} must divide output channels {o}"
            )));
        }
        check_len("conv weight", weight, o * cg * kh * kw)?;
        let og = o / g;
        let kg = kh * kw * cg;
        let mut packed = vec![0.0; o * kg];
        for gi in 0..g {
            let dst = &mut packed[gi * kg * og..(gi + 1) * kg * og];
            for ol in 0..og {
                let oc = gi * og + ol;
                for c in 0..cg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let k = (ky * kw + kx) * cg + c;
                            dst[k * og + ol] = weight[((oc * cg + c) * kh + ky) * kw + kx];
                        }
                    }
                }
            }
        }
        let bias = match bias {
            Some(b) => {
                check_len("conv bias", b, o)?;
                b.to_vec()
            }
            None => vec![0.0; o],
        };
        let pointwise =
            kh == 1 && kw == 1 && params.stride == [1, 1] && params.padding == [0, 0] && g == 1;
        Ok(Self {
            weight_dims,
            params,
            algo: if pointwise {
                ConvAlgo::Pointwise
            } else {
                ConvAlgo::Im2colTiled
            },
            packed,
            bias,
        })
    }

    /// The algorithm chosen for this shape.
    pub fn algorithm(&self) -> ConvAlgo {
        self.algo
    }

    /// Weight dimensions `[O, C/groups, KH, KW]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight_dims
    }

    /// Hyper-parameters.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }

    /// The geometry on an input of logical dims `[N, C, H, W]`.
    pub fn geometry(&self, input: [usize; 4]) -> Result<ConvGeometry, KernelError> {
        ConvGeometry::new(input, self.weight_dims, self.params)
    }

    /// Output pixels per tile for this shape (independent of the thread count, so results are
    /// bitwise identical whatever the parallelism).
    fn tile_pixels(&self, c: usize, pixels: usize) -> usize {
        let [_, cg, kh, kw] = self.weight_dims;
        let row = match self.algo {
            ConvAlgo::Pointwise => c,
            ConvAlgo::Im2colTiled => kh * kw * cg * self.params.groups,
        };
        (TILE_BYTES / 4 / row.max(1))
            .clamp(16, 1024)
            .min(pixels.max(1))
    }

    /// Run on an NHWC input of logical dims `input` (`[N, C, H, W]`), writing the NHWC output.
    ///
    /// `out = act(conv(x) + bias + residual)`, where `residual` (NHWC, the output's shape) is
    /// optional and `act` is ReLU when `relu` is set. With `parallel`, output tiles are spread
    /// over the current rayon pool; the tiling does not depend on it.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        cpu: Cpu,
        input: &[f32],
        input_dims: [usize; 4],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        parallel: bool,
    ) -> Result<(), KernelError> {
        let geom = self.geometry(input_dims)?;
        let (li, _, lo) = geom.lens();
        check_len("conv input", input, li)?;
        check_len("conv output", out, lo)?;
        if let Some(r) = residual {
            check_len("conv residual", r, lo)?;
        }
        let [n, c, h, w] = input_dims;
        let [_, o, oh, ow] = geom.output;
        let pixels = oh * ow;
        if lo == 0 {
            return Ok(());
        }
        let pt = self.tile_pixels(c, pixels);
        let img_in = h * w * c;
        let img_out = pixels * o;
        let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
        for (ni, out_img) in out.chunks_mut(img_out).enumerate().take(n) {
            for (t, tile) in out_img.chunks_mut(pt * o).enumerate() {
                tasks.push((ni, t * pt, tile));
            }
        }
        let run_tile = |(ni, p0, tile): (usize, usize, &mut [f32])| {
            let x = &input[ni * img_in..(ni + 1) * img_in];
            let res =
                residual.map(|r| &r[ni * img_out + p0 * o..ni * img_out + p0 * o + tile.len()]);
            self.tile(cpu, x, [h, w, c], [oh, ow], p0, res, relu, tile);
        };
        if parallel && tasks.len() > 1 {
            tasks.into_par_iter().for_each(run_tile);
        } else {
            tasks.into_iter().for_each(run_tile);
        }
        Ok(())
    }

    /// One tile of output pixels `p0 .. p0 + tile.len() / O` of one image.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        cpu: Cpu,
        x: &[f32],
        [h, w, c]: [usize; 3],
        [_oh, ow]: [usize; 2],
        p0: usize,
        residual: Option<&[f32]>,
        relu: bool,
        dst: &mut [f32],
    ) {
        let [o, cg, kh, kw] = self.weight_dims;
        let g = self.params.groups;
        let og = o / g;
        let kg = kh * kw * cg;
        let k = kg * g;
        let rows = dst.len() / o;
        // Epilogue, part 1: the output starts as bias (+ residual); the product accumulates
        // onto it.
        for (r, row) in dst.chunks_exact_mut(o).enumerate() {
            match residual {
                Some(res) => simd::add_to(cpu, row, &self.bias, &res[r * o..(r + 1) * o]),
                None => row.copy_from_slice(&self.bias),
            }
        }
        if k > 0 {
            match self.algo {
                ConvAlgo::Pointwise => {
                    let lhs = &x[p0 * c..(p0 + rows) * c];
                    gemm_acc(rows, o, c, dst, o, lhs, c, &self.packed, o);
                }
                ConvAlgo::Im2colTiled => SCRATCH.with(|s| {
                    let mut col = s.borrow_mut();
                    if col.len() < rows * k {
                        col.resize(rows * k, 0.0);
                    }
                    let col = &mut col[..rows * k];
                    self.im2col(x, [h, w, c], ow, p0, col);
                    for gi in 0..g {
                        gemm_acc(
                            rows,
                            og,
                            kg,
                            &mut dst[gi * og..],
                            o,
                            &col[gi * kg..],
                            k,
                            &self.packed[gi * kg * og..(gi + 1) * kg * og],
                            og,
                        );
                    }
                }),
            }
        }
        // Epilogue, part 2: ReLU while the tile is still in cache.
        if relu {
            simd::relu_inplace(cpu, dst);
        }
    }

    /// Gather the patches of output pixels `p0 ..` into `col` (`[rows, K]`, K ordered
    /// `(group, ky, kx, c)`), zeros where the window hangs over the padding.
    fn im2col(&self, x: &[f32], [h, w, c]: [usize; 3], ow: usize, p0: usize, col: &mut [f32]) {
        let [_, cg, kh, kw] = self.weight_dims;
        let g = self.params.groups;
        let kg = kh * kw * cg;
        let k = kg * g;
        let p = &self.params;
        for (r, row) in col.chunks_exact_mut(k).enumerate() {
            let (oy, ox) = ((p0 + r) / ow, (p0 + r) % ow);
            for ky in 0..kh {
                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                for kx in 0..kw {
                    let ix =
                        (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
                    let tap = (ky * kw + kx) * cg;
                    let inside = iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize;
                    if inside {
                        let src = &x[(iy as usize * w + ix as usize) * c..][..c];
                        if g == 1 {
                            row[tap..tap + c].copy_from_slice(src);
                        } else {
                            for gi in 0..g {
                                row[gi * kg + tap..gi * kg + tap + cg]
                                    .copy_from_slice(&src[gi * cg..(gi + 1) * cg]);
                            }
                        }
                    } else {
                        for gi in 0..g {
                            row[gi * kg + tap..gi * kg + tap + cg].fill(0.0);
                        }
                    }
                }
            }
        }
    }
}

/// `dst[m x n] += lhs[m x k] * rhs[k x n]`, all row-major with the given row strides, on one
/// thread (parallelism is decided one level up).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_acc(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // The last element each matrix reaches must be inside its slice.
    assert!(dst.len() >= (m - 1) * dst_rs + n, "gemm dst too short");
    assert!(lhs.len() >= (m - 1) * lhs_rs + k, "gemm lhs too short");
    assert!(rhs.len() >= (k - 1) * rhs_rs + n, "gemm rhs too short");
    // SAFETY: the asserts above prove every (row, col) the strides reach lies inside the
    // slices, `dst` is uniquely borrowed and does not alias `lhs`/`rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            true,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
