//! Convolution on NHWC activations with a fused output step: one [`PackedConv`] holds the
//! weights packed for one algorithm, chosen from the shape when it is built (or forced).
//!
//! | algorithm | file | shapes |
//! | --- | --- | --- |
//! | [`ConvAlgo::Pointwise`] | `pointwise.rs` | 1x1, stride 1, no padding, one group |
//! | [`ConvAlgo::Im2colTiled`] | `im2col.rs` | any |
//! | [`ConvAlgo::Winograd2x2`], [`ConvAlgo::Winograd4x4`] | `winograd.rs` | 3x3, stride 1, undilated, one group |
//! | [`ConvAlgo::GroupedDirect`] | `grouped.rs` | grouped, stride 1, undilated |
//!
//! The output step (bias, residual, ReLU) is one [`Epilogue`] value (`epilogue.rs`).

mod epilogue;
mod grouped;
mod im2col;
mod pointwise;
mod winograd;

pub use epilogue::Epilogue;

use super::context::{Ctx, Par};
use super::matmul::{Ends, OutRows};
use crate::{Conv2dParams, ConvGeometry, KernelError, check_len};
use grouped::GroupedDirect;
use im2col::Im2col;
use pointwise::Pointwise;
use rayon::prelude::*;
use std::ops::Range;
use winograd::Winograd;

/// How a [`PackedConv`] computes, chosen from its shape when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgo {
    /// 1x1, stride 1, no padding, one group: the NHWC input *is* the left matrix; one matrix
    /// product per pixel tile, no copy.
    Pointwise,
    /// Any shape: each tile of output pixels gathers its input patches into a small im2col
    /// buffer (sized for the L2 cache, never a whole image), then one matrix product per
    /// group, or per block of narrow groups sharing one block-diagonal product.
    Im2colTiled,
    /// 3x3, stride 1, dilation 1, one group (chosen when there are at least 8 channels in and
    /// out and more than 128 x 128, at most 256 x 256 channel pairs): Winograd F(2x2, 3x3),
    /// 2.25x fewer multiplications (see the numerics note in the README).
    Winograd2x2,
    /// 3x3, stride 1, dilation 1, one group (chosen when there are at least 8 channels in and
    /// out and at most 128 x 128 channel pairs): Winograd F(4x4, 3x3), 4x fewer
    /// multiplications than direct, four times as many transformed weights, several times
    /// F(2x2)'s rounding error (see the numerics note in the README).
    Winograd4x4,
    /// Grouped, stride 1, undilated (chosen for at most 8 output channels per group, as in
    /// ResNeXt): a direct convolution vectorised along output pixels, per group, on
    /// channel-major copies of the input rows.
    GroupedDirect,
    /// Any shape, in bf16 products (f32 sums) on AVX512-BF16: [`crate::bf16::Bf16Conv`]'s
    /// algorithm (the rows of an im2col matrix, read in place from a padded bf16 copy of the
    /// input when the channel count is even, else gathered per tile). Reported by the opt-in
    /// reduced-precision path; a [`PackedConv`] never runs it.
    Bf16Im2col,
}

impl ConvAlgo {
    /// The multiply-adds the algorithm really performs in its matrix products for a
    /// convolution of `direct_macs` direct multiply-adds whose output is `[n, out_channels,
    /// out_h, out_w]` from `in_channels` channels: the direct count, but for Winograd,
    /// whose products work on transformed tiles: F(2x2, 3x3) 4x4 of them per 2x2 output pixels
    /// (16 instead of 36 multiply-adds per tile and channel pair), F(4x4, 3x3) 6x6 per 4x4
    /// (36 instead of 144); the transforms are a few additions per value.
    ///
    /// ```
    /// use resnet_kernels::fast::ConvAlgo;
    /// // 64 -> 64 channels, 56x56 output: 9 * 64 * 64 * 56 * 56 direct multiply-adds.
    /// let direct = 9 * 64 * 64 * 56 * 56;
    /// assert_eq!(ConvAlgo::Im2colTiled.product_macs(direct, 1, 64, 64, 56, 56), direct);
    /// assert_eq!(ConvAlgo::Winograd2x2.product_macs(direct, 1, 64, 64, 56, 56), direct * 16 / 36);
    /// assert_eq!(ConvAlgo::Winograd4x4.product_macs(direct, 1, 64, 64, 56, 56), direct / 4);
    /// ```
    pub fn product_macs(
        self,
        direct_macs: u64,
        n: usize,
        in_channels: usize,
        out_channels: usize,
        out_h: usize,
        out_w: usize,
    ) -> u64 {
        match self {
            ConvAlgo::Winograd2x2 | ConvAlgo::Winograd4x4 => {
                let m = if self == ConvAlgo::Winograd2x2 { 2 } else { 4 };
                let tiles = out_h.div_ceil(m) as u64 * out_w.div_ceil(m) as u64;
                let t = (m + 2) as u64;
                n as u64 * tiles * t * t * in_channels as u64 * out_channels as u64
            }
            _ => direct_macs,
        }
    }
}

impl std::fmt::Display for ConvAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvAlgo::Pointwise => "gemm-1x1",
            ConvAlgo::Im2colTiled => "im2col-tiled-gemm",
            ConvAlgo::Winograd2x2 => "winograd-f2x2-3x3",
            ConvAlgo::Winograd4x4 => "winograd-f4x4-3x3",
            ConvAlgo::GroupedDirect => "grouped-direct",
            ConvAlgo::Bf16Im2col => "bf16-im2col-gemm",
        })
    }
}

/// The weights of a [`PackedConv`], in the form its algorithm reads them.
#[derive(Debug, Clone)]
enum Kernel {
    Pointwise(Pointwise),
    Im2col(Im2col),
    Winograd(Winograd),
    Grouped(GroupedDirect),
}

/// One image of a convolution's input with the output's size: what a kernel task reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Image<'a> {
    /// The image's NHWC values.
    pub(crate) x: &'a [f32],
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    /// Zero padding `[top/bottom, left/right]`.
    pub(crate) pad: [usize; 2],
}

/// A convolution with its weights packed at build time for the fast path.
///
/// Activations are NHWC (`[N, H, W, C]` in memory). The output step ([`Epilogue`]) adds the
/// bias and, when given, a residual tensor of the output's shape, then applies ReLU, tile by
/// tile while the tile is in cache: no separate pass over memory.
///
/// ```
/// use resnet_kernels::fast::{Ctx, Epilogue, PackedConv, Par, Scratch};
/// use resnet_kernels::{Conv2dParams, Cpu};
///
/// // One channel, a 3x3 kernel of ones, padding 1, bias -40, ReLU: a clipped box sum.
/// let params = Conv2dParams::default().with_padding(1);
/// let conv = PackedConv::new(&[1.0; 9], [1, 1, 3, 3], Some(&[-40.0]), params)?;
/// let input: Vec<f32> = (1..=9).map(|v| v as f32).collect();
/// let mut out = vec![0.0; 9];
/// let scratch = Scratch::new(1);
/// let ctx = Ctx::new(Cpu::detect(), Par::Seq, &scratch);
/// conv.run(&ctx, &input, [1, 1, 3, 3], &mut out, Epilogue::relu())?;
/// assert_eq!(out[4], 5.0); // 45 - 40
/// assert_eq!(out[0], 0.0); // 12 - 40, clipped
/// # Ok::<(), resnet_kernels::KernelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PackedConv {
    weight_dims: [usize; 4],
    params: Conv2dParams,
    bias: Vec<f32>,
    kernel: Kernel,
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

/// Most `C x O` channel pairs for Winograd F(4x4, 3x3) (wider ones up to
/// [`WINOGRAD_MAX_WEIGHTS`] take F(2x2, 3x3)). Its transformed weights are 4x the direct ones
/// (F(2x2): 16/9), each used once per 4x4 tile, and a 14x14 map has only 16 tiles: measured on
/// an AVX-512 EPYC at batch 1, ResNet-18's 256x256 convs at 14x14 took 1.64-1.71 ms in F(4x4)
/// against 1.29-1.36 ms in F(2x2), while its 64x64 convs at 56x56 took 0.88-0.98 ms against
/// 1.49-1.65 and its 128x128 ones at 28x28 0.87-0.90 against 1.28-1.36. Whole ResNet-50 at
/// batch 1: 72.8 ms with this limit, 77.6 ms with F(4x4) up to 256x256 (at batch 8 the wider
/// F(4x4) was 5% faster on ResNet-18: the choice is made for batch-1 latency).
const WINOGRAD4_MAX_WEIGHTS: usize = 128 * 128;

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
    /// if the algorithm cannot compute this shape. Any shape can be forced to
    /// [`ConvAlgo::Im2colTiled`], 1x1 convolutions included.
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
        if params.stride.contains(&0) || params.dilation.contains(&0) {
            return Err(KernelError::Geometry(
                "stride and dilation must be at least 1".into(),
            ));
        }
        check_len("conv weight", weight, o * cg * kh * kw)?;
        let bias = match bias {
            Some(b) => {
                check_len("conv bias", b, o)?;
                b.to_vec()
            }
            None => vec![0.0; o],
        };
        let algo = Self::choose(weight_dims, params, force)?;
        let kernel = match algo {
            ConvAlgo::Pointwise => Kernel::Pointwise(Pointwise::new(weight, o, cg)),
            ConvAlgo::Im2colTiled => Kernel::Im2col(Im2col::new(weight, weight_dims, params)),
            ConvAlgo::Winograd2x2 => Kernel::Winograd(Winograd::new(weight, o, cg, 2)),
            ConvAlgo::Winograd4x4 => Kernel::Winograd(Winograd::new(weight, o, cg, 4)),
            ConvAlgo::GroupedDirect => Kernel::Grouped(GroupedDirect::new(weight, weight_dims, g)),
            ConvAlgo::Bf16Im2col => unreachable!("`choose` refuses bf16"),
        };
        Ok(Self {
            weight_dims,
            params,
            bias,
            kernel,
        })
    }

    /// The algorithm for this shape: `force` if it can compute it (else an error), otherwise
    /// the fastest that can.
    fn choose(
        [o, cg, kh, kw]: [usize; 4],
        params: Conv2dParams,
        force: Option<ConvAlgo>,
    ) -> Result<ConvAlgo, KernelError> {
        let g = params.groups;
        let unit = params.stride == [1, 1] && params.dilation == [1, 1];
        let winograd_ok = kh == 3 && kw == 3 && unit && g == 1;
        let pointwise_ok = kh == 1 && kw == 1 && unit && params.padding == [0, 0] && g == 1;
        let grouped_ok = g > 1 && unit;
        let refuse = |what: &str| Err(KernelError::Geometry(what.into()));
        Ok(match force {
            Some(ConvAlgo::Winograd2x2 | ConvAlgo::Winograd4x4) if !winograd_ok => {
                return refuse("Winograd needs a 3x3, stride-1, undilated, ungrouped conv");
            }
            Some(ConvAlgo::Pointwise) if !pointwise_ok => {
                return refuse(
                    "the pointwise path needs a 1x1, stride-1, unpadded, ungrouped conv",
                );
            }
            Some(ConvAlgo::GroupedDirect) if !grouped_ok => {
                return refuse("the direct grouped path needs a grouped, stride-1, undilated conv");
            }
            Some(ConvAlgo::Bf16Im2col) => {
                return refuse("bf16 products run in `bf16::Bf16Conv`, not in a PackedConv");
            }
            Some(a) => a,
            None if winograd_ok
                && cg >= WINOGRAD_MIN_CHANNELS
                && o >= WINOGRAD_MIN_CHANNELS
                && cg * o <= WINOGRAD4_MAX_WEIGHTS =>
            {
                ConvAlgo::Winograd4x4
            }
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
        })
    }

    /// The algorithm [`PackedConv::new`] would choose for weights `[O, C/groups, KH, KW]` and
    /// `params`, without packing anything.
    pub fn algorithm_for(
        weight_dims: [usize; 4],
        params: Conv2dParams,
    ) -> Result<ConvAlgo, KernelError> {
        Self::choose(weight_dims, params, None)
    }

    /// [`PackedConv::algorithm_for`] with Winograd output tiles of at most `winograd_tile`
    /// pixels a side: 4 or more allows F(4x4, 3x3), 2 or 3 F(2x2, 3x3) only (F(4x4)'s choices
    /// fall back to it), less no Winograd (its choices fall back to im2col). For callers whose
    /// numerics cannot take F(4x4)'s larger rounding (gradients) or its wider reach (exact
    /// tiles), or Winograd's at all.
    ///
    /// ```
    /// use resnet_kernels::fast::{ConvAlgo, PackedConv};
    /// use resnet_kernels::Conv2dParams;
    ///
    /// let p = Conv2dParams::default().with_padding(1);
    /// let algo = |tile| PackedConv::algorithm_within([64, 64, 3, 3], p, tile).unwrap();
    /// assert_eq!(algo(4), ConvAlgo::Winograd4x4);
    /// assert_eq!(algo(2), ConvAlgo::Winograd2x2);
    /// assert_eq!(algo(0), ConvAlgo::Im2colTiled);
    /// ```
    pub fn algorithm_within(
        weight_dims: [usize; 4],
        params: Conv2dParams,
        winograd_tile: usize,
    ) -> Result<ConvAlgo, KernelError> {
        Ok(match Self::choose(weight_dims, params, None)? {
            ConvAlgo::Winograd2x2 | ConvAlgo::Winograd4x4 if winograd_tile < 2 => {
                ConvAlgo::Im2colTiled
            }
            ConvAlgo::Winograd4x4 if winograd_tile < 4 => ConvAlgo::Winograd2x2,
            a => a,
        })
    }

    /// Replace the weights (and bias; `None`: zero) by new ones of the same shape, packed into
    /// the storage this convolution already holds: what a training step does after each
    /// update, without allocating. The result is bitwise that of a convolution built with
    /// [`PackedConv::with_algorithm`] from the new weights and this one's algorithm.
    ///
    /// ```
    /// use resnet_kernels::fast::{Ctx, Epilogue, PackedConv, Par, Scratch};
    /// use resnet_kernels::{Conv2dParams, Cpu};
    ///
    /// let params = Conv2dParams::default().with_padding(1);
    /// let mut conv = PackedConv::new(&[1.0; 9], [1, 1, 3, 3], None, params)?;
    /// conv.repack(&[2.0; 9], Some(&[1.0]))?;
    /// let (scratch, mut out) = (Scratch::new(1), vec![0.0; 9]);
    /// let ctx = Ctx::new(Cpu::detect(), Par::Seq, &scratch);
    /// conv.run(&ctx, &[1.0; 9], [1, 1, 3, 3], &mut out, Epilogue::none())?;
    /// assert_eq!(out[4], 19.0); // 9 taps of 2, plus the bias
    /// assert!(conv.repack(&[1.0; 8], None).is_err()); // another shape
    /// # Ok::<(), resnet_kernels::KernelError>(())
    /// ```
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `weight` or `bias` does not have this convolution's
    /// length; nothing changes then.
    pub fn repack(&mut self, weight: &[f32], bias: Option<&[f32]>) -> Result<(), KernelError> {
        let [o, cg, kh, kw] = self.weight_dims;
        check_len("conv weight", weight, o * cg * kh * kw)?;
        match bias {
            Some(b) => {
                check_len("conv bias", b, o)?;
                self.bias.copy_from_slice(b);
            }
            None => self.bias.fill(0.0),
        }
        match &mut self.kernel {
            Kernel::Pointwise(p) => p.repack(weight),
            Kernel::Im2col(i) => i.repack(weight),
            Kernel::Winograd(w) => w.repack(weight),
            Kernel::Grouped(g) => g.repack(weight),
        }
        Ok(())
    }

    /// The algorithm this convolution runs.
    pub fn algorithm(&self) -> ConvAlgo {
        match &self.kernel {
            Kernel::Pointwise(_) => ConvAlgo::Pointwise,
            Kernel::Im2col(_) => ConvAlgo::Im2colTiled,
            Kernel::Winograd(w) if w.m() == 2 => ConvAlgo::Winograd2x2,
            Kernel::Winograd(_) => ConvAlgo::Winograd4x4,
            Kernel::Grouped(_) => ConvAlgo::GroupedDirect,
        }
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

    /// Values of scratch one task of this conv uses on an input of logical dims `input`
    /// (`[N, C, H, W]`): the im2col tile, Winograd's transformed band or the grouped path's
    /// channel planes. A [`crate::fast::Scratch`] reserved with the largest over a network
    /// means no later run allocates.
    pub fn scratch_len(&self, input: [usize; 4]) -> Result<usize, KernelError> {
        let geom = self.geometry(input)?;
        let [_, _, oh, ow] = geom.output;
        Ok(match &self.kernel {
            Kernel::Winograd(wino) => {
                let m = wino.m();
                let tw = ow.div_ceil(m);
                wino.scratch_len(wino.tile_rows(tw).min(oh.div_ceil(m)) * tw)
            }
            Kernel::Grouped(grouped) => grouped.scratch_len(GroupedDirect::band_rows(ow, oh), ow),
            Kernel::Pointwise(_) => 0,
            Kernel::Im2col(i) => match self.images_per_tile(input[0], oh * ow) {
                Some(per) => per * oh * ow * i.row_len(),
                None => self.tile_pixels(oh * ow).min(oh * ow) * i.row_len(),
            },
        })
    }

    /// Most output pixels per tile: their im2col rows fill about [`TILE_BYTES`].
    fn tile_cap(&self) -> usize {
        let row = match &self.kernel {
            Kernel::Im2col(i) => i.row_len(),
            _ => self.weight_dims[1] * self.params.groups,
        };
        (TILE_BYTES / 4 / row.max(1)).clamp(16, 1024)
    }

    /// Images per tile when a tile of the matrix-product paths holds several whole images
    /// (`n` images of `pixels` output pixels each, small maps, one group), else `None`.
    /// Depends on the shapes only.
    fn images_per_tile(&self, n: usize, pixels: usize) -> Option<usize> {
        let per_tile = self.tile_cap() / pixels.max(1);
        (self.params.groups == 1 && per_tile >= 2 && n >= 2)
            .then(|| n.div_ceil(n.div_ceil(per_tile)))
    }

    /// Output pixels per tile of the matrix-product paths (independent of the thread count,
    /// so results are bitwise identical whatever the parallelism).
    fn tile_pixels(&self, pixels: usize) -> usize {
        let pt = self.tile_cap();
        // Balance the tiles of an image (49 pixels: 25 + 24, not 48 + 1), and make their
        // count even when there are several, so that two threads share them evenly (the
        // 7x7 stem's 12544 pixels: 14 tiles of 896, not 13 of 965, 7 against 6).
        let pixels = pixels.max(1);
        let mut tiles = pixels.div_ceil(pt);
        if tiles > 1 {
            tiles = tiles.next_multiple_of(2);
        }
        pixels.div_ceil(tiles)
    }

    /// Run on an NHWC input of logical dims `input_dims` (`[N, C, H, W]`), writing the NHWC
    /// output: `out = epilogue(conv(x) + bias)`.
    ///
    /// With [`crate::fast::Par::Rayon`], output tiles (and, on small feature maps, blocks of
    /// output channels) are spread over the current rayon pool; every output value is summed
    /// in the same order however the work is split, so the result is bitwise the same with
    /// or without threads.
    pub fn run(
        &self,
        ctx: &Ctx<'_>,
        input: &[f32],
        input_dims: [usize; 4],
        out: &mut [f32],
        epilogue: Epilogue<'_>,
    ) -> Result<(), KernelError> {
        let geom = self.geometry(input_dims)?;
        let (li, _, lo) = geom.lens();
        check_len("conv input", input, li)?;
        check_len("conv output", out, lo)?;
        if let Some(r) = epilogue.residual() {
            check_len("conv residual", r, lo)?;
        }
        if lo == 0 {
            return Ok(());
        }
        let epi = epilogue.with_bias(&self.bias);
        let [_, c, h, w] = input_dims;
        let [_, _, oh, ow] = geom.output;
        let image = |ni: usize| Image {
            x: &input[ni * h * w * c..(ni + 1) * h * w * c],
            h,
            w,
            c,
            oh,
            ow,
            pad: self.params.padding,
        };
        let o = self.weight_dims[0];
        let img_out = oh * ow * o;
        // Winograd and the direct grouped path compute bands of whole output rows (Winograd's
        // whole rows of tiles: units of `unit` rows), at most `most` units each, each task
        // owning a contiguous run of rows.
        let mut band = |unit: usize, most: usize, f: &BandFn<'_>| {
            let units = oh.div_ceil(unit);
            let bands = Bands {
                unit: unit * ow * o,
                units,
                count: units.div_ceil(most.max(1)),
                img_len: img_out,
            };
            bands.for_each(out, ctx.par, |ni, off, band| {
                let epi = epi.part(ni * img_out + off, band.len());
                ctx.scratch
                    .with(|s| f(image(ni), off / (ow * o), epi, band, s));
            });
        };
        match &self.kernel {
            Kernel::Winograd(wino) => {
                let m = wino.m();
                band(
                    m,
                    wino.tile_rows(ow.div_ceil(m)),
                    &|img, oy0, epi, dst, s| wino.band(ctx.cpu, &img, oy0 / m, epi, dst, s),
                );
            }
            Kernel::Grouped(grouped) => {
                band(
                    1,
                    GroupedDirect::band_rows(ow, oh),
                    &|img, oy0, epi, dst, s| grouped.band(ctx.cpu, &img, oy0, epi, dst, s),
                );
            }
            Kernel::Pointwise(_) | Kernel::Im2col(_) => {
                self.run_tiles(ctx, input_dims[0], &image, input, out, epi)
            }
        }
        Ok(())
    }

    /// The matrix-product paths: tiles of output pixels, each one product (or one per block
    /// of groups); on small feature maps each tile's output channels are split too.
    fn run_tiles<'a>(
        &self,
        ctx: &Ctx<'_>,
        n: usize,
        image: &(dyn Fn(usize) -> Image<'a> + Sync),
        input: &'a [f32],
        out: &mut [f32],
        epi: Epilogue<'_>,
    ) {
        let img0 = image(0);
        let pixels = img0.oh * img0.ow;
        let img_in = img0.h * img0.w * img0.c;
        let o = self.weight_dims[0];
        let img_out = pixels * o;
        let (panel, groups) = match &self.kernel {
            Kernel::Pointwise(p) => (p.panel(), 1),
            Kernel::Im2col(i) => (i.panel(), self.params.groups),
            _ => unreachable!("only the matrix-product paths run in tiles"),
        };
        // A tile is a run of one image's output pixels or, on small maps (a training
        // batch's late stages), several whole images, so that each block of weights meets as
        // many pixels as a tile holds, not one image's few (ResNet-18 at 64x64 has 4 pixels
        // per image in its last stage). Tiles depend on the shapes only; each value's sum is
        // the same either way.
        let (per, pt) = match self.images_per_tile(n, pixels) {
            Some(per) => (per, pixels),
            None => (1, self.tile_pixels(pixels)),
        };
        let per_image = pixels.div_ceil(pt);
        let tiles = n.div_ceil(per) * per_image;
        // With threads and few tiles (batch 1 on small maps), each tile's output channels are
        // split into blocks of panels too.
        let panels = o.div_ceil(panel);
        let blocks = match ctx.par {
            Par::Rayon(threads) if groups == 1 => channel_blocks(threads.get(), tiles, panels),
            _ => 1,
        };
        let chans = |b: usize| {
            (b * panels / blocks * panel).min(o)..((b + 1) * panels / blocks * panel).min(o)
        };
        let shared = SharedOut(out.as_mut_ptr());
        let run = |task: usize| {
            let (t, b) = (task / blocks, task % blocks);
            let (first, p0) = (t / per_image * per, t % per_image * pt);
            let imgs = first..(first + per).min(n);
            let rows = imgs.len() * pt.min(pixels - p0);
            let at = imgs.start * img_out + p0 * o;
            let src = Images {
                image,
                all: &input[imgs.start * img_in..imgs.end * img_in],
                range: imgs,
            };
            let task = Task {
                p0,
                rows,
                chans: chans(b),
            };
            // SAFETY: `out` holds `n * img_out` values (checked by `run`) and stays borrowed
            // for the whole loop; task (tile, block) touches only its tile's rows and its
            // block's channels, which no other task touches.
            unsafe { self.tile(ctx, &src, task, shared.at(at), epi.part(at, rows * o)) };
        };
        ctx.par.for_each(tiles * blocks, run);
    }

    /// One task of the matrix-product paths (on one image or several whole ones), with `dst`
    /// pointing at the tile's first output row (rows `O` apart) and `epi` holding the tile's
    /// part of the output step.
    ///
    /// # Safety
    /// `dst + r * O + ch` must be valid for reads and writes, and used by no one else during the
    /// call, for every `r < task.rows` and `ch` in `task.chans`.
    unsafe fn tile(
        &self,
        ctx: &Ctx<'_>,
        src: &Images<'_, '_>,
        Task { p0, rows, chans }: Task,
        dst: *mut f32,
        epi: Epilogue<'_>,
    ) {
        let cpu = ctx.cpu;
        // The output step goes with the product, block by block.
        let ends = Ends::output(
            epi.bias(chans.clone()),
            epi.residual().map(|r| &r[chans.start..]),
            epi.applies_relu(),
        );
        let rows_out = OutRows {
            ptr: dst.wrapping_add(chans.start),
            ld: self.weight_dims[0],
            chans,
            ends,
        };
        match &self.kernel {
            // SAFETY: the contract covers these rows and channels.
            Kernel::Pointwise(p) => unsafe { p.tile(cpu, src.all, p0, rows, rows_out) },
            Kernel::Im2col(i) => ctx.scratch.with(|col| {
                // SAFETY: the contract covers these rows and channels.
                unsafe { i.tile(cpu, src, p0, rows, rows_out, col) }
            }),
            _ => unreachable!("only the matrix-product paths run in tiles"),
        }
    }
}

/// What computes one band of whole output rows: `(image, first output row, output step,
/// destination rows, scratch)`.
type BandFn<'a> = dyn Fn(Image<'_>, usize, Epilogue<'_>, &mut [f32], &mut Vec<f32>) + Sync + 'a;

/// The input of a task of the matrix-product paths: one image, or several whole ones in a
/// row.
pub(crate) struct Images<'a, 'f> {
    /// Image `i` of the batch.
    pub(crate) image: &'f (dyn Fn(usize) -> Image<'a> + Sync),
    /// The images of the task.
    pub(crate) range: Range<usize>,
    /// Their NHWC values, one after the other (they are adjacent in the batch).
    pub(crate) all: &'a [f32],
}

/// A task of the matrix-product paths: output channels `chans` of the `rows` output pixels
/// from `p0` of one image (or of several whole images: `p0` 0 and `rows` all their pixels).
/// Channel ranges other than `0..O` start at a panel boundary and only come with one group.
struct Task {
    p0: usize,
    rows: usize,
    chans: Range<usize>,
}

/// How many blocks of output channels each pixel tile is split into, so that `tiles` tiles
/// keep every one of `threads` threads busy (batch 1 on small feature maps). Splitting the
/// channels does not change any value: each one is summed in the same order.
fn channel_blocks(threads: usize, tiles: usize, panels: usize) -> usize {
    if tiles >= 2 * threads {
        return 1;
    }
    (2 * threads).div_ceil(tiles.max(1)).min(panels).max(1)
}

/// The output of a convolution shared by the tasks that fill disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);

impl SharedOut {
    /// The pointer to element `i` (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

// SAFETY: a plain pointer; the tasks that share it write disjoint elements (see its uses).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// The bands an image's output is cut into: `count` runs of whole units (`units` of `unit`
/// values per image, the last one short where the image ends), of balanced sizes (they differ
/// by one unit at most) laid out so that every halving of the list halves the work too (14
/// units in 4 bands: 3, 4, 3, 4; equal chunks of 4 would give two threads 8 and 6). They
/// depend on the shapes only.
#[derive(Debug, Clone, Copy)]
struct Bands {
    unit: usize,
    units: usize,
    count: usize,
    img_len: usize,
}

impl Bands {
    /// Where band `i` (`0..=count`) starts in an image.
    fn start(&self, i: usize) -> usize {
        (i * self.units / self.count * self.unit).min(self.img_len)
    }

    /// Call `f(image, offset, band)` for every band of every image of `out`, on the current
    /// rayon pool with [`Par::Rayon`] (splitting the bands in halves, without collecting them).
    fn for_each(
        &self,
        out: &mut [f32],
        par: Par,
        f: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
    ) {
        if self.img_len == 0 || self.count == 0 {
            return;
        }
        if par.is_parallel() {
            out.par_chunks_mut(self.img_len)
                .enumerate()
                .for_each(|(ni, img)| self.split(ni, img, 0..self.count, true, &f));
        } else {
            for (ni, img) in out.chunks_mut(self.img_len).enumerate() {
                self.split(ni, img, 0..self.count, false, &f);
            }
        }
    }

    /// Bands `range` of image `ni`, whose values are `img`.
    fn split(
        &self,
        ni: usize,
        img: &mut [f32],
        range: Range<usize>,
        par: bool,
        f: &(impl Fn(usize, usize, &mut [f32]) + Sync + Send),
    ) {
        if range.len() == 1 {
            f(ni, self.start(range.start), img);
            return;
        }
        let mid = (range.start + range.end) / 2;
        let (a, b) = img.split_at_mut(self.start(mid) - self.start(range.start));
        if par {
            rayon::join(
                || self.split(ni, a, range.start..mid, par, f),
                || self.split(ni, b, mid..range.end, par, f),
            );
        } else {
            self.split(ni, a, range.start..mid, par, f);
            self.split(ni, b, mid..range.end, par, f);
        }
    }
}
