//! Convolution as tiled matrix products on NHWC activations, with a fused epilogue.

use super::grouped::GroupedDirect;
use super::matmul::PackedMatrix;
use super::simd;
use super::winograd::Winograd;
use crate::{Conv2dParams, ConvGeometry, Cpu, KernelError, check_len};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// How a [`PackedConv`] computes, chosen from its shape when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgo {
    /// 1x1, stride 1, no padding, one group: the NHWC input *is* the left matrix; one matrix
    /// product per pixel tile, no copy.
    Pointwise,
    /// Any other shape: each tile of output pixels gathers its input patches into a small
    /// im2col buffer (sized for the L2 cache, never a whole image), then one matrix product per
    /// group, or per block of narrow groups sharing one block-diagonal product.
    Im2colTiled,
    /// 3x3, stride 1, dilation 1, one group, at least 8 channels in and out and at most
    /// 256 x 256 channel pairs: Winograd
    /// F(2x2, 3x3), 2.25x fewer multiplications (see the numerics note in the README).
    Winograd2x2,
    /// Grouped, stride 1, undilated, at most 8 output channels per group (ResNeXt): a direct
    /// convolution vectorised along output pixels, per group, on channel-major copies of the
    /// input rows.
    GroupedDirect,
}

impl std::fmt::Display for ConvAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvAlgo::Pointwise => "gemm-1x1",
            ConvAlgo::Im2colTiled => "im2col-tiled-gemm",
            ConvAlgo::Winograd2x2 => "winograd-f2x2-3x3",
            ConvAlgo::GroupedDirect => "grouped-direct",
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
    /// Per group, the `[Og, Kg]` weights packed for the micro-kernels, with
    /// `k = (ky * KW + kx) * Cg + c` (none for Winograd).
    packed: Vec<PackedMatrix>,
    bias: Vec<f32>,
    winograd: Option<Winograd>,
    grouped: Option<GroupedDirect>,
}

thread_local! {
    /// Per-thread im2col scratch, grown to the largest tile seen and reused afterwards.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Target size in bytes of one tile's im2col buffer: well inside a 1-2 MiB L2 cache.
pub(crate) const TILE_BYTES: usize = 1 << 20;

/// Fewest input and output channels for which Winograd beats im2col.
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// Most `C x O` channel pairs for Winograd. Its transformed weights are 16/9 the size of the
/// direct ones and each is used once per 2x2 output tile: for wide convs, which in residual
/// networks run on small feature maps (512 channels at 7x7), streaming the weights from memory
/// costs more than the multiplications saved. Measured on ResNet-18: at 512x512 channels and
/// 7x7, Winograd took 2.4 ms against 1.1 ms for im2col.
const WINOGRAD_MAX_WEIGHTS: usize = 256 * 256;

/// Most output channels per group for the direct grouped path; wider groups fill the
/// micro-kernel's rows well enough as matrix products.
const GROUPED_DIRECT_MAX_OUT: usize = 8;

impl PackedConv {
    /// Pack PyTorch-layout weights `[O, C/groups, KH, KW]` (and an optional bias `[O]`), with
    /// the algorithm chosen from the shape.
    pub fn new(
        weight: &[f32],
        weight_dims: [usize; 4],
        bias: Option<&[f32]>,
        params: Conv2dParams,
    ) -> Result<Self, KernelError> {
        Self::build(weight, weight_dims, bias, params, None)
    }

    /// Like [`PackedConv::new`] with the algorithm forced (for benchmarks and tests); an error
    /// if the algorithm cannot compute this shape.
    pub fn with_algorithm(
        weight: &[f32],
        weight_dims: [usize; 4],
        bias: Option<&[f32]>,
        params: Conv2dParams,
        algo: ConvAlgo,
    ) -> Result<Self, KernelError> {
        Self::build(weight, weight_dims, bias, params, Some(algo))
    }

    fn build(
        weight: &[f32],
        weight_dims: [usize; 4],
        bias: Option<&[f32]>,
        params: Conv2dParams,
        force: Option<ConvAlgo>,
    ) -> Result<Self, KernelError> {
        let [o, cg, kh, kw] = weight_dims;
        let g = params.groups;
        if g == 0 || o % g != 0 {
            return Err(KernelError::Geometry(format!(
                "groups {g} must divide output channels {o}"
            )));
        }
        check_len("conv weight", weight, o * cg * kh * kw)?;
        let bias = match bias {
            Some(b) => {
                check_len("conv bias", b, o)?;
                b.to_vec()
            }
            None => vec![0.0; o],
        };
        let winograd_ok =
            kh == 3 && kw == 3 && params.stride == [1, 1] && params.dilation == [1, 1] && g == 1;
        let pointwise_ok =
            kh == 1 && kw == 1 && params.stride == [1, 1] && params.padding == [0, 0] && g == 1;
        let grouped_ok = g > 1 && params.stride == [1, 1] && params.dilation == [1, 1];
        let algo = match force {
            Some(ConvAlgo::Winograd2x2) if !winograd_ok => {
                return Err(KernelError::Geometry(
                    "Winograd F(2x2,3x3) needs a 3x3, stride-1, undilated, ungrouped conv".into(),
                ));
            }
            Some(ConvAlgo::Pointwise) if !pointwise_ok => {
                return Err(KernelError::Geometry(
                    "the pointwise path needs a 1x1, stride-1, unpadded, ungrouped conv".into(),
                ));
            }
            Some(ConvAlgo::GroupedDirect) if !grouped_ok => {
                return Err(KernelError::Geometry(
                    "the direct grouped path needs a grouped, stride-1, undilated conv".into(),
                ));
            }
            Some(a) => a,
            None if winograd_ok
                && cg >= WINOGRAD_MIN_CHANNELS
                && o >= WINOGRAD_MIN_CHANNELS
                && cg * o <= WINOGRAD_MAX_WEIGHTS =>
            {
                ConvAlgo::Winograd2x2
            }
            None if pointwise_ok => ConvAlgo::Pointwise,
            None if grouped_ok && o / g <= GROUPED_DIRECT_MAX_OUT => ConvAlgo::GroupedDirect,
            None => ConvAlgo::Im2colTiled,
        };
        if algo == ConvAlgo::Winograd2x2 {
            return Ok(Self {
                weight_dims,
                params,
                algo: ConvAlgo::Winograd2x2,
                packed: Vec::new(),
                bias,
                winograd: Some(Winograd::new(weight, o, cg)),
                grouped: None,
            });
        }
        if algo == ConvAlgo::GroupedDirect {
            return Ok(Self {
                weight_dims,
                params,
                algo,
                packed: Vec::new(),
                bias,
                winograd: None,
                grouped: Some(GroupedDirect::new(weight, weight_dims, g)),
            });
        }
        let og = o / g;
        let kg = kh * kw * cg;
        let sg = super_group(g, og);
        // One block-diagonal matrix per block of `sg` adjacent groups: `[sg * Og, sg * Kg]`
        // with `k = (ky * KW + kx) * sg * Cg + cl` (the im2col order), zero where input
        // channel `cl` is not in output row `i`'s group (see `super_group`).
        let packed = (0..g / sg)
            .map(|b| {
                PackedMatrix::new(sg * og, sg * kg, |i, kk| {
                    let (gl, ol) = (i / og, i % og);
                    let (tap, cl) = (kk / (sg * cg), kk % (sg * cg));
                    if cl / cg != gl {
                        return 0.0;
                    }
                    let c = cl % cg;
                    let (ky, kx) = (tap / kw, tap % kw);
                    weight[((((b * sg + gl) * og + ol) * cg + c) * kh + ky) * kw + kx]
                })
            })
            .collect();
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
            winograd: None,
            grouped: None,
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

    /// Values of per-thread scratch one task of this conv uses on an input of logical dims
    /// `input` (`[N, C, H, W]`): the im2col tile, Winograd's transformed band or the grouped
    /// path's channel planes. [`reserve_scratch`] with the largest over a network, on every
    /// thread of its pool, means no later run allocates.
    pub fn scratch_len(&self, input: [usize; 4]) -> Result<usize, KernelError> {
        let geom = self.geometry(input)?;
        let [_, c, _, _] = input;
        let [_, _, oh, ow] = geom.output;
        let [_, cg, kh, kw] = self.weight_dims;
        let pixels = oh * ow;
        Ok(match (&self.winograd, &self.grouped, self.algo) {
            (Some(wino), _, _) => {
                let tw = ow.div_ceil(2);
                wino.scratch_len(wino.tile_rows(tw).min(oh.div_ceil(2)) * tw)
            }
            (None, Some(grouped), _) => grouped.scratch_len(GroupedDirect::band_rows(ow, oh), ow),
            (None, None, ConvAlgo::Pointwise) => 0,
            (None, None, _) => {
                self.tile_pixels(c, pixels).min(pixels) * kh * kw * cg * self.params.groups
            }
        })
    }

    /// Output pixels per tile for this shape (independent of the thread count, so results are
    /// bitwise identical whatever the parallelism).
    fn tile_pixels(&self, c: usize, pixels: usize) -> usize {
        let [_, cg, kh, kw] = self.weight_dims;
        let row = match self.algo {
            ConvAlgo::Pointwise => c,
            ConvAlgo::Im2colTiled | ConvAlgo::Winograd2x2 | ConvAlgo::GroupedDirect => {
                kh * kw * cg * self.params.groups
            }
        };
        let pt = (TILE_BYTES / 4 / row.max(1)).clamp(16, 1024);
        // Balance the tiles of an image (49 pixels: 25 + 24, not 48 + 1).
        let pixels = pixels.max(1);
        pixels.div_ceil(pixels.div_ceil(pt))
    }

    /// Run on an NHWC input of logical dims `input` (`[N, C, H, W]`), writing the NHWC output.
    ///
    /// `out = act(conv(x) + bias + residual)`, where `residual` (NHWC, the output's shape) is
    /// optional and `act` is ReLU when `relu` is set. With `parallel`, output tiles (and, on
    /// small feature maps, blocks of output channels) are spread over the current rayon pool;
    /// every output value is summed in the same order however the work is split, so the result
    /// is bitwise the same with or without threads.
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
        let [_, c, h, w] = input_dims;
        let [_, o, oh, ow] = geom.output;
        let pixels = oh * ow;
        if lo == 0 {
            return Ok(());
        }
        let img_in = h * w * c;
        let img_out = pixels * o;
        // Winograd and the direct grouped path compute bands of whole output rows (Winograd's
        // an even number of them, whole 2x2 tiles), each task owning a contiguous run of rows.
        let band_rows = match (&self.winograd, &self.grouped) {
            (Some(wino), _) => Some(2 * wino.tile_rows(ow.div_ceil(2))),
            (None, Some(_)) => Some(GroupedDirect::band_rows(ow, oh)),
            (None, None) => None,
        };
        if let Some(rows) = band_rows {
            let run_band = |ni: usize, off: usize, band: &mut [f32]| {
                let x = &input[ni * img_in..(ni + 1) * img_in];
                let res = residual.map(|r| &r[ni * img_out + off..ni * img_out + off + band.len()]);
                let (oy0, pad, bias) = (off / (ow * o), self.params.padding, &self.bias[..]);
                SCRATCH.with(|s| {
                    let s = &mut s.borrow_mut();
                    if let Some(wino) = &self.winograd {
                        let (hw, ohw) = ([h, w], [oh, ow]);
                        wino.band(cpu, x, hw, ohw, pad, oy0 / 2, bias, res, relu, band, s);
                    } else if let Some(grouped) = &self.grouped {
                        grouped.band(cpu, x, [h, w, c], ow, pad, oy0, bias, res, relu, band, s);
                    }
                });
            };
            for_each_chunk(out, img_out, rows * ow * o, parallel, run_band);
            return Ok(());
        }
        let pt = self.tile_pixels(c, pixels);
        let n = input_dims[0];
        let tiles = pixels.div_ceil(pt);
        let blocks = if parallel {
            self.channel_blocks(n * tiles)
        } else {
            1
        };
        if blocks > 1 {
            // Tasks are (image, tile, block of output channels), each writing its own channels
            // of its tile's rows.
            let panels = o.div_ceil(self.packed[0].panel());
            let chans = |b: usize| {
                let panel = self.packed[0].panel();
                (b * panels / blocks * panel).min(o)..((b + 1) * panels / blocks * panel).min(o)
            };
            let shared = SharedOut(out.as_mut_ptr());
            (0..n * tiles * blocks).into_par_iter().for_each(|task| {
                let (ni, t, b) = (
                    task / (tiles * blocks),
                    task / blocks % tiles,
                    task % blocks,
                );
                let (p0, rows) = (t * pt, pt.min(pixels - t * pt));
                let x = &input[ni * img_in..(ni + 1) * img_in];
                let at = ni * img_out + p0 * o;
                let res = residual.map(|r| &r[at..at + rows * o]);
                let dst = shared.at(at);
                // SAFETY: `out` holds `n * img_out` values (checked above) and stays borrowed
                // for the whole parallel loop; task (image, tile, block) touches only its tile's
                // rows and its block's channels, which no other task touches.
                unsafe { self.tile_raw(cpu, x, [h, w, c], ow, p0, rows, res, relu, dst, chans(b)) };
            });
            return Ok(());
        }
        let run_tile = |ni: usize, off: usize, tile: &mut [f32]| {
            let p0 = off / o;
            let x = &input[ni * img_in..(ni + 1) * img_in];
            let res =
                residual.map(|r| &r[ni * img_out + p0 * o..ni * img_out + p0 * o + tile.len()]);
            self.tile(cpu, x, [h, w, c], ow, p0, res, relu, tile);
        };
        for_each_chunk(out, img_out, pt * o, parallel, run_tile);
        Ok(())
    }

    /// One tile of output pixels `p0 .. p0 + tile.len() / O` of one image.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        cpu: Cpu,
        x: &[f32],
        hwc: [usize; 3],
        ow: usize,
        p0: usize,
        residual: Option<&[f32]>,
        relu: bool,
        dst: &mut [f32],
    ) {
        let o = self.weight_dims[0];
        let rows = dst.len() / o;
        // SAFETY: `dst` is uniquely borrowed and holds `rows` whole output rows.
        unsafe {
            self.tile_raw(
                cpu,
                x,
                hwc,
                ow,
                p0,
                rows,
                residual,
                relu,
                dst.as_mut_ptr(),
                0..o,
            )
        }
    }

    /// Output channels `chans` of the tile of `rows` output pixels from `p0` of one image, with
    /// `dst` pointing at the tile's first output row (rows `O` apart) and `residual` holding the
    /// tile's rows of the residual. Channel ranges other than `0..O` start at a panel boundary
    /// and only come with one group.
    ///
    /// # Safety
    /// `dst + r * O + ch` must be valid for reads and writes, and used by no one else during the
    /// call, for every `r < rows` and `ch` in `chans`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_raw(
        &self,
        cpu: Cpu,
        x: &[f32],
        [h, w, c]: [usize; 3],
        ow: usize,
        p0: usize,
        rows: usize,
        residual: Option<&[f32]>,
        relu: bool,
        dst: *mut f32,
        chans: Range<usize>,
    ) {
        let [o, cg, kh, kw] = self.weight_dims;
        let g = self.params.groups;
        let og = o / g;
        let kg = kh * kw * cg;
        let k = kg * g;
        let sg = super_group(g, og);
        debug_assert!(g == 1 || chans == (0..o));
        let row = |r: usize| {
            // SAFETY: row `r < rows` of the channels `chans`: ours alone, by the contract.
            unsafe { std::slice::from_raw_parts_mut(dst.add(r * o + chans.start), chans.len()) }
        };
        // Epilogue, part 1: the output starts as bias (+ residual); the product accumulates
        // onto it.
        let bias = &self.bias[chans.clone()];
        for r in 0..rows {
            match residual {
                Some(res) => simd::add_to(cpu, row(r), bias, &res[r * o..][chans.clone()]),
                None => row(r).copy_from_slice(bias),
            }
        }
        if k > 0 {
            match self.algo {
                ConvAlgo::Pointwise => {
                    let lhs = &x[p0 * c..(p0 + rows) * c];
                    let dst = dst.wrapping_add(chans.start);
                    let chans = chans.clone();
                    // SAFETY: the contract covers these rows and channels.
                    unsafe { self.packed[0].matmul_acc_rows(cpu, rows, lhs, c, dst, o, chans) };
                }
                ConvAlgo::Im2colTiled | ConvAlgo::Winograd2x2 | ConvAlgo::GroupedDirect => SCRATCH
                    .with(|s| {
                        let mut col = s.borrow_mut();
                        if col.len() < rows * k {
                            col.resize(rows * k, 0.0);
                        }
                        let col = &mut col[..rows * k];
                        self.im2col(x, [h, w, c], ow, p0, col);
                        if g == 1 {
                            let dst = dst.wrapping_add(chans.start);
                            let chans = chans.clone();
                            // SAFETY: the contract covers these rows and channels.
                            unsafe {
                                self.packed[0].matmul_acc_rows(cpu, rows, col, k, dst, o, chans)
                            };
                            return;
                        }
                        for (b, packed) in self.packed.iter().enumerate() {
                            let (col, dst) = (&col[b * sg * kg..], dst.wrapping_add(b * sg * og));
                            // SAFETY: all channels are ours (grouped convs are not split);
                            // block `b` writes its own `sg * Og` of them.
                            unsafe {
                                packed.matmul_acc_rows(cpu, rows, col, k, dst, o, 0..sg * og)
                            };
                        }
                    }),
            }
        }
        // Epilogue, part 2: ReLU while the tile is still in cache.
        if relu {
            for r in 0..rows {
                simd::relu_inplace(cpu, row(r));
            }
        }
    }

    /// How many blocks of output channels each pixel tile is split into, so that `tiles`
    /// tiles keep every thread of the current pool busy (batch 1 on small feature maps).
    /// Splitting the channels does not change any value: each one is summed in the same order.
    fn channel_blocks(&self, tiles: usize) -> usize {
        if self.params.groups != 1 {
            return 1;
        }
        let threads = rayon::current_num_threads();
        if tiles >= 2 * threads {
            return 1;
        }
        let panels = self.weight_dims[0].div_ceil(self.packed[0].panel());
        (2 * threads).div_ceil(tiles.max(1)).min(panels).max(1)
    }

    /// Gather the patches of output pixels `p0 ..` into `col` (`[rows, K]`, K ordered
    /// `(block, ky, kx, c)` for blocks of `super_group` groups), zeros where the window hangs
    /// over the padding.
    fn im2col(&self, x: &[f32], [h, w, c]: [usize; 3], ow: usize, p0: usize, col: &mut [f32]) {
        let [o, cg, kh, kw] = self.weight_dims;
        // Blocks of `sg` adjacent groups are laid out as one group of `sg * Cg` channels.
        let sg = super_group(self.params.groups, o / self.params.groups);
        let (g, cg) = (self.params.groups / sg, cg * sg);
        let kg = kh * kw * cg;
        let k = kg * g;
        let p = &self.params;
        for (r, row) in col.chunks_exact_mut(k).enumerate() {
            let (oy, ox) = ((p0 + r) / ow, (p0 + r) % ow);
            let ix0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
            // With one group and no dilation, a kernel row's taps are one contiguous run of
            // `KW * C` values in both the NHWC input and the im2col row.
            let whole_rows = g == 1 && p.dilation[1] == 1 && ix0 >= 0 && ix0 as usize + kw <= w;
            for ky in 0..kh {
                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                let row_inside = iy >= 0 && iy < h as isize;
                if whole_rows {
                    let dst = &mut row[ky * kw * c..(ky + 1) * kw * c];
                    if row_inside {
                        let start = (iy as usize * w + ix0 as usize) * c;
                        copy_short(dst, &x[start..start + kw * c]);
                    } else {
                        dst.fill(0.0);
                    }
                    continue;
                }
                for kx in 0..kw {
                    let ix =
                        (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
                    let tap = (ky * kw + kx) * cg;
                    let inside = row_inside && ix >= 0 && ix < w as isize;
                    if inside {
                        let src = &x[(iy as usize * w + ix as usize) * c..][..c];
                        if g == 1 {
                            copy_short(&mut row[tap..tap + c], src);
                        } else {
                            for gi in 0..g {
                                copy_short(
                                    &mut row[gi * kg + tap..gi * kg + tap + cg],
                                    &src[gi * cg..(gi + 1) * cg],
                                );
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

/// How many adjacent groups of a grouped conv share one matrix product: as many as fit in 16
/// output channels (one AVX-512 vector; ResNeXt's 4- and 8-channel groups), so that the
/// micro-kernel's rows are not mostly padding. The product then multiplies zeros outside each
/// group's block — 4x the arithmetic for 4-channel groups, at many times the speed of a
/// product per group — and since the im2col row is ordered by group, the groups' columns are
/// already adjacent. (One difference from separate products: an infinite input value would
/// turn into NaN, rather than stay infinite, in the neighbouring groups' outputs.)
fn super_group(groups: usize, per_group_out: usize) -> usize {
    (1..=groups)
        .rev()
        .find(|&s| groups % s == 0 && s * per_group_out <= 16)
        .unwrap_or(1)
}

/// Grow the calling thread's convolution scratch to at least `len` values (see
/// [`PackedConv::scratch_len`]), so that runs on this thread do not allocate it later.
pub fn reserve_scratch(len: usize) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
    });
}

/// The output of a convolution shared by the tasks that fill disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// The pointer to element `i` (a method, so closures capture the whole `Sync` wrapper).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

// SAFETY: a plain pointer; the tasks that share it write disjoint elements (see its one use).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// Copy a run of values; short runs (the RGB stem, ResNeXt's 4-channel groups) by a plain loop,
/// where a call to `memcpy` would cost more than the copy.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    if dst.len() <= 16 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Call `f(image, offset, chunk)` for every `chunk`-sized piece of each `img_len`-sized image
/// of `out`, on the current rayon pool when `parallel`, without collecting the pieces. The
/// pieces do not depend on the thread count.
fn for_each_chunk(
    out: &mut [f32],
    img_len: usize,
    chunk: usize,
    parallel: bool,
    f: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) {
    if parallel {
        out.par_chunks_mut(img_len)
            .enumerate()
            .for_each(|(ni, img)| {
                img.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|(t, c)| f(ni, t * chunk, c))
            });
    } else {
        for (ni, img) in out.chunks_mut(img_len).enumerate() {
            for (t, c) in img.chunks_mut(chunk).enumerate() {
                f(ni, t * chunk, c);
            }
        }
    }
}
