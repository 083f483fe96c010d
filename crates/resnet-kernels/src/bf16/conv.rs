//! Convolution in bf16: weights rounded and packed once, activations rounded at the input,
//! sums in f32 from the output step's start (bias, residual), ReLU on the f32 result.

#[cfg(target_arch = "x86_64")]
use super::NR;
use super::{Bf16Cpu, Bf16Rhs, flush, read, round, size, widen};
use crate::fast::{ConvAlgo, Ctx, Epilogue};
use crate::{Conv2dParams, ConvGeometry, KernelError, check_len};

/// A convolution whose products run in bf16 on `vdpbf16ps` ([`Bf16Conv::run`]), beside the
/// scalar twin [`Bf16Conv::run_naive`] that rounds and sums in exactly the same order (bitwise
/// the same output: `cargo xtask props`).
///
/// Any shape PyTorch's `Conv2d` takes (stride, padding, dilation, groups). Each output
/// value starts as the bias (plus the residual, when the [`Epilogue`] has one) in f32 and
/// takes the products of its im2col row, two by two (`k = (ky * KW + kx) * C/groups + c`,
/// each pair's second product first, as `vdpbf16ps` adds them): activations and weights
/// rounded to bf16 (to nearest even, denormals read as zero), products exact, every sum
/// rounded to f32, denormal sums flushed to zero; then ReLU if asked. Activations are NHWC
/// as for [`crate::fast::PackedConv`].
///
/// ```
/// use resnet_kernels::bf16::Bf16Conv;
/// use resnet_kernels::fast::Epilogue;
/// use resnet_kernels::Conv2dParams;
///
/// // One channel, a 3x3 kernel of ones, padding 1, bias -40, ReLU: small integers are
/// // exact in bf16.
/// let params = Conv2dParams::default().with_padding(1);
/// let conv = Bf16Conv::new(&[1.0; 9], [1, 1, 3, 3], Some(&[-40.0]), params)?;
/// let input: Vec<f32> = (1..=9).map(|v| v as f32).collect();
/// let mut out = vec![0.0; 9];
/// conv.run_naive(&input, [1, 1, 3, 3], &mut out, Epilogue::relu())?;
/// assert_eq!(out[4], 5.0); // 45 - 40
/// assert_eq!(out[0], 0.0); // 12 - 40, clipped
/// # Ok::<(), resnet_kernels::KernelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Bf16Conv {
    weight_dims: [usize; 4],
    params: Conv2dParams,
    bias: Vec<f32>,
    /// One matrix per group: `K = KH * KW * C/groups` deep in im2col order, `O/groups` wide.
    groups: Vec<Bf16Rhs>,
}

/// Bytes of one task's im2col rows: they stay in L2 while every weight panel passes over
/// them (each panel, `K/2 * 32` words, is read once per task from L2 or beyond).
const TASK_BYTES: usize = 384 << 10;

/// Bytes of one task's output rows (and as many of the residual's): every weight panel
/// writes a strip of them, so they too stay in L2 (with 3000 rows of 256 channels, a task
/// rewrote 3 MB from beyond L2 once per panel, at half the speed).
const TASK_OUT_BYTES: usize = 256 << 10;

/// Most output rows per task: their im2col rows (`pairs` words each) fill [`TASK_BYTES`] and
/// their outputs (`width` values each, doubled by a residual) [`TASK_OUT_BYTES`], but at
/// least one register tile.
fn rows_per_task(pairs: usize, width: usize, residual: bool) -> usize {
    let out_row = width * 4 * (1 + usize::from(residual));
    (TASK_BYTES / (pairs * 4).max(1))
        .min(TASK_OUT_BYTES / out_row.max(1))
        .max(12)
}

impl Bf16Conv {
    /// Round and pack PyTorch-layout weights `[O, C/groups, KH, KW]` (and an optional bias
    /// `[O]`, kept in f32).
    ///
    /// # Errors
    /// [`KernelError::Geometry`] for a zero dimension, stride or dilation, groups that do not
    /// divide the output channels, or sizes past memory; [`KernelError::BadLength`] when
    /// `weight` or `bias` has the wrong length.
    pub fn new(
        weight: &[f32],
        weight_dims: [usize; 4],
        bias: Option<&[f32]>,
        params: Conv2dParams,
    ) -> Result<Self, KernelError> {
        let [o, cg, kh, kw] = weight_dims;
        let g = params.groups;
        if weight_dims.contains(&0) || g == 0 || !o.is_multiple_of(g) {
            return Err(KernelError::Geometry(format!(
                "bf16 conv: weights {weight_dims:?} with {g} groups: every dimension must be \
                 positive and the groups must divide the output channels"
            )));
        }
        if params.stride.contains(&0) || params.dilation.contains(&0) {
            return Err(KernelError::Geometry(
                "bf16 conv: stride and dilation must be at least 1".into(),
            ));
        }
        check_len("conv weight", weight, size("bf16 conv", &weight_dims)?)?;
        let bias = match bias {
            Some(b) => {
                check_len("conv bias", b, o)?;
                b.to_vec()
            }
            None => vec![0.0; o],
        };
        let (og, taps) = (o / g, kh * kw);
        let groups = (0..g)
            .map(|gi| {
                Bf16Rhs::pack(taps * cg, og, |kk, j| {
                    weight[((gi * og + j) * cg + kk % cg) * taps + kk / cg]
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            weight_dims,
            params,
            bias,
            groups,
        })
    }

    /// Weight dimensions `[O, C/groups, KH, KW]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight_dims
    }

    /// The algorithm: always [`ConvAlgo::Bf16Im2col`] (for per-layer reports beside
    /// [`crate::fast::PackedConv::algorithm`]).
    pub fn algorithm(&self) -> ConvAlgo {
        ConvAlgo::Bf16Im2col
    }

    /// Hyper-parameters.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }

    /// The geometry on an input of logical dims `[N, C, H, W]`.
    pub fn geometry(&self, input: [usize; 4]) -> Result<ConvGeometry, KernelError> {
        ConvGeometry::new(input, self.weight_dims, self.params)
    }

    /// Values of [`crate::fast::Scratch`] one task uses on an input of logical dims
    /// `input` (`[N, C, H, W]`): its im2col rows (or a 1x1's rounded rows), as f32-sized
    /// words; none for a convolution that reads its rows in place from a padded map (that map
    /// comes from the scratch's buffer pool). A scratch reserved with the largest over a
    /// network means no later run grows a buffer.
    pub fn scratch_len(&self, input: [usize; 4]) -> Result<usize, KernelError> {
        let geom = self.geometry(input)?;
        let [n, c, _, _] = geom.input;
        let [_, _, oh, ow] = geom.output;
        let m = n * oh * ow;
        if m == 0 {
            return Ok(0);
        }
        let [_, _, kh, kw] = self.weight_dims;
        let direct =
            kh == 1 && kw == 1 && self.params.stride == [1, 1] && self.params.padding == [0, 0];
        if self.params.groups == 1 && c.is_multiple_of(2) && !direct {
            return Ok(0);
        }
        let pairs = self.depth().div_ceil(2);
        // The most rows a task takes: no residual, the narrowest output.
        let width = self.weight_dims[0] / self.params.groups;
        let blocks = m.div_ceil(rows_per_task(pairs, width, false));
        Ok(m.div_ceil(blocks) * pairs)
    }

    /// The products' depth per group (one im2col row).
    fn depth(&self) -> usize {
        let [_, cg, kh, kw] = self.weight_dims;
        kh * kw * cg
    }

    /// Check the buffers against the geometry; the output's dims.
    fn check_io(
        &self,
        input: &Bf16Src<'_>,
        input_dims: [usize; 4],
        out: &Bf16Dst<'_>,
        residual: Option<&Bf16Src<'_>>,
    ) -> Result<ConvGeometry, KernelError> {
        let geom = self.geometry(input_dims)?;
        let (li, _, lo) = geom.lens();
        let src = |what, s: &Bf16Src<'_>, len, dims| match s {
            Bf16Src::F32(x) => check_len(what, x, len),
            Bf16Src::Bf16 { words, pad } => check_len(what, words, map_words(dims, *pad)?),
        };
        src("conv input", input, li, geom.input)?;
        match out {
            Bf16Dst::F32(y) => check_len("conv output", y, lo)?,
            Bf16Dst::Bf16 { words, pad } => {
                check_len("conv output", words, map_words(geom.output, *pad)?)?
            }
        }
        if let Some(r) = residual {
            src("conv residual", r, lo, geom.output)?;
        }
        Ok(geom)
    }

    /// The input value index feeding output row `r` (flat over images and pixels) at tap
    /// `(ky, kx)`, or `None` in the padding.
    #[inline(always)]
    fn source(&self, geom: &ConvGeometry, r: usize, ky: usize, kx: usize) -> Option<usize> {
        let [_, _, h, w] = geom.input;
        let [_, _, oh, ow] = geom.output;
        let p = &self.params;
        let (ni, pix) = (r / (oh * ow), r % (oh * ow));
        let (oy, ox) = (pix / ow, pix % ow);
        let iy = (oy * p.stride[0] + ky * p.dilation[0]).checked_sub(p.padding[0])?;
        let ix = (ox * p.stride[1] + kx * p.dilation[1]).checked_sub(p.padding[1])?;
        (iy < h && ix < w).then(|| (ni * h + iy) * w + ix)
    }

    /// The im2col rows of output rows `r0..r0 + rows.len() / row_len` of group `gi`
    /// (`(tap, channel)` order, zero in the padding, then zero up to `row_len`) from the
    /// input's bf16 values `src` (NHWC). Runs are copied with masked vector moves: the stem's
    /// are 21 values, too short to pay for a call to `memcpy`.
    ///
    /// # Safety
    /// AVX512-F and AVX512-BW present (a [`Bf16Cpu`] proves both). `rows.len()` is
    /// a multiple of `row_len`, which is the products' depth rounded up to even; the geometry
    /// is the checked one of this convolution and `src` holds its whole input.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gather_rows(
        &self,
        geom: &ConvGeometry,
        r0: usize,
        gi: usize,
        src: &[u16],
        rows: &mut [u16],
        row_len: usize,
    ) {
        use std::arch::x86_64::*;
        // Copy `len` values from `from` (or zeros, for a null `from`) to `to`.
        macro_rules! run {
            ($to:expr, $from:expr, $len:expr) => {{
                let (to, from, len): (*mut u16, *const u16, usize) = ($to, $from, $len);
                let mut i = 0;
                while i < len {
                    let m: __mmask32 = if len - i >= 32 {
                        !0
                    } else {
                        (1u32 << (len - i)) - 1
                    };
                    // SAFETY: values i..i + 32 (masked to `len`) of `to` and `from`.
                    unsafe {
                        let v = if from.is_null() {
                            _mm512_setzero_si512()
                        } else {
                            _mm512_maskz_loadu_epi16(m, from.add(i).cast())
                        };
                        _mm512_mask_storeu_epi16(to.add(i).cast(), m, v);
                    }
                    i += 32;
                }
            }};
        }
        let [_, cg, kh, kw] = self.weight_dims;
        let [_, c, h, w] = geom.input;
        let [_, _, oh, ow] = geom.output;
        let p = &self.params;
        let k = kh * kw * cg;
        let whole_rows = p.dilation[1] == 1 && cg == c;
        let none = std::ptr::null::<u16>();
        // An interior window's run (`kw * c` values, one input row): one masked move when
        // it fits a vector (the stem: 21 values, 7 per output pixel and 88 000 per image).
        let full = kw * c;
        let full_mask: __mmask32 = if full < 32 { (1u32 << full) - 1 } else { !0 };
        let (mut ni, mut oy, mut ox) = (r0 / (oh * ow), (r0 % (oh * ow)) / ow, r0 % ow);
        for row in rows.chunks_exact_mut(row_len) {
            let (y0, x0) = (oy * p.stride[0], ox * p.stride[1]);
            let base = &src[ni * h * w * c + gi * cg..];
            let out = row.as_mut_ptr();
            let interior = x0 >= p.padding[1] && x0 + kw <= w + p.padding[1];
            if whole_rows
                && interior
                && full <= 32
                && y0 >= p.padding[0]
                && y0 + (kh - 1) * p.dilation[0] < h + p.padding[0]
            {
                // The whole window inside the image: one masked move per kernel row.
                let from = base[((y0 - p.padding[0]) * w + x0 - p.padding[1]) * c..].as_ptr();
                for ky in 0..kh {
                    // SAFETY: kernel row ky of the window, `full` values of input row
                    // `y0 - padding + ky * dilation < h`, columns `x0 - padding..+ kw <= w`
                    // (no group: `c` channels each); `full` values of the row from
                    // `ky * full`.
                    unsafe {
                        let v = _mm512_maskz_loadu_epi16(
                            full_mask,
                            from.add(ky * p.dilation[0] * w * c).cast(),
                        );
                        _mm512_mask_storeu_epi16(out.add(ky * full).cast(), full_mask, v);
                    }
                }
            } else {
                for ky in 0..kh {
                    let at = ky * kw * cg;
                    let iy = (y0 + ky * p.dilation[0]).wrapping_sub(p.padding[0]);
                    if iy >= h {
                        run!(out.wrapping_add(at), none, kw * cg);
                        continue;
                    }
                    let line = &base[iy * w * c..];
                    if whole_rows && interior {
                        let from = line[(x0 - p.padding[1]) * c..][..full].as_ptr();
                        if full <= 32 {
                            // SAFETY: `full` values of `from` and of the row from `at`.
                            unsafe {
                                let v = _mm512_maskz_loadu_epi16(full_mask, from.cast());
                                _mm512_mask_storeu_epi16(out.add(at).cast(), full_mask, v);
                            }
                        } else {
                            run!(out.wrapping_add(at), from, full);
                        }
                        continue;
                    }
                    if whole_rows {
                        // Undilated, one group, at the border: the window's run and zeros.
                        let lo = p.padding[1].saturating_sub(x0).min(kw);
                        let hi = (w + p.padding[1]).saturating_sub(x0).clamp(lo, kw);
                        run!(out.wrapping_add(at), none, lo * c);
                        run!(out.wrapping_add(at + hi * c), none, (kw - hi) * c);
                        if hi > lo {
                            let from = &line[(x0 + lo - p.padding[1]) * c..][..(hi - lo) * c];
                            run!(out.wrapping_add(at + lo * c), from.as_ptr(), from.len());
                        }
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (x0 + kx * p.dilation[1]).wrapping_sub(p.padding[1]);
                        let to = out.wrapping_add(at + kx * cg);
                        if ix >= w {
                            run!(to, none, cg);
                        } else {
                            run!(to, line[ix * c..][..cg].as_ptr(), cg);
                        }
                    }
                }
            }
            // The pair padding: at most one value.
            if let Some(last) = row.get_mut(k) {
                *last = 0;
            }
            ox += 1;
            if ox == ow {
                ox = 0;
                oy += 1;
                if oy == oh {
                    oy = 0;
                    ni += 1;
                }
            }
        }
    }

    /// The scalar twin of [`Bf16Conv::run`]: the same output, bit for bit, one value at a
    /// time (see the type's documentation for the order). Runs on every CPU.
    ///
    /// # Errors
    /// [`KernelError`] when the buffers do not fit the geometry.
    pub fn run_naive(
        &self,
        input: &[f32],
        input_dims: [usize; 4],
        out: &mut [f32],
        epilogue: Epilogue<'_>,
    ) -> Result<(), KernelError> {
        self.run_naive_io(
            Bf16Src::F32(input),
            input_dims,
            Bf16Dst::F32(out),
            epilogue.residual().map(Bf16Src::F32),
            epilogue.applies_relu(),
        )
    }

    /// The scalar twin of [`Bf16Conv::run_io`]: the same output, bit for bit (a bf16 output
    /// map's border included), one value at a time. Runs on every CPU.
    ///
    /// # Errors
    /// [`KernelError`] when the buffers do not fit the geometry, or a bf16 map has an odd
    /// channel count.
    pub fn run_naive_io(
        &self,
        input: Bf16Src<'_>,
        input_dims: [usize; 4],
        mut out: Bf16Dst<'_>,
        residual: Option<Bf16Src<'_>>,
        relu: bool,
    ) -> Result<(), KernelError> {
        let geom = self.check_io(&input, input_dims, &out, residual.as_ref())?;
        let [o, cg, kh, kw] = self.weight_dims;
        let [n, c, h, w] = input_dims;
        let [_, _, oh, ow] = geom.output;
        let og = o / self.params.groups;
        let k = self.depth();
        // The activation at unpadded pixel `s`, channel `ch`, as the kernel reads it.
        let value = |s: usize, ch: usize| match input {
            Bf16Src::F32(x) => read(round(x[s * c + ch])),
            Bf16Src::Bf16 { words, pad } => read(half(words, padded(s, h, w, pad) * c + ch)),
        };
        let res = |r: usize, ch: usize| match residual {
            None => 0.0,
            Some(Bf16Src::F32(res)) => res[r * o + ch],
            Some(Bf16Src::Bf16 { words, pad }) => {
                widen(half(words, padded(r, oh, ow, pad) * o + ch))
            }
        };
        if let Bf16Dst::Bf16 { words, .. } = &mut out {
            words.fill(0);
        }
        let mut a = vec![0.0f32; k + 1];
        for r in 0..n * oh * ow {
            for (gi, rhs) in self.groups.iter().enumerate() {
                // The row's activations as the kernel reads them (zero in the padding).
                for ky in 0..kh {
                    for kx in 0..kw {
                        let at = (ky * kw + kx) * cg;
                        let src = self.source(&geom, r, ky, kx);
                        for ci in 0..cg {
                            a[at + ci] = src.map_or(0.0, |s| value(s, gi * cg + ci));
                        }
                    }
                }
                a[k] = 0.0;
                for j in 0..og {
                    let ch = gi * og + j;
                    let mut acc = match residual {
                        Some(_) => self.bias[ch] + res(r, ch),
                        None => self.bias[ch],
                    };
                    let wt = |kk: usize| rhs.get(kk, j).unwrap_or(0.0);
                    for p in 0..k.div_ceil(2) {
                        acc = flush(acc + a[2 * p + 1] * wt(2 * p + 1));
                        acc = flush(acc + a[2 * p] * wt(2 * p));
                    }
                    if relu && acc <= 0.0 {
                        acc = 0.0;
                    }
                    match &mut out {
                        Bf16Dst::F32(y) => y[r * o + ch] = acc,
                        Bf16Dst::Bf16 { words, pad } => {
                            let i = padded(r, oh, ow, *pad) * o + ch;
                            let shift = 16 * (i % 2);
                            words[i / 2] |= u32::from(round(acc)) << shift;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Run on an NHWC input of logical dims `input_dims` (`[N, C, H, W]`), writing the NHWC
    /// output: `out = epilogue(conv(x) + bias)`, in bf16 products on `vdpbf16ps`; bitwise
    /// [`Bf16Conv::run_naive`]'s output, for any split of the work over `ctx`'s threads.
    /// [`Bf16Conv::run_io`] with f32 buffers.
    ///
    /// # Errors
    /// [`KernelError`] when the buffers do not fit the geometry.
    pub fn run(
        &self,
        cpu: Bf16Cpu,
        ctx: &Ctx<'_>,
        input: &[f32],
        input_dims: [usize; 4],
        out: &mut [f32],
        epilogue: Epilogue<'_>,
    ) -> Result<(), KernelError> {
        self.run_io(
            cpu,
            ctx,
            Bf16Src::F32(input),
            input_dims,
            Bf16Dst::F32(out),
            epilogue.residual().map(Bf16Src::F32),
            epilogue.applies_relu(),
        )
    }

    /// Run on an input of logical dims `input_dims` (`[N, C, H, W]`) held as f32 or as a bf16
    /// map, writing f32 or a bf16 map (its border zeroed):
    /// `out = relu?(conv(x) + bias + residual)`, in bf16 products on `vdpbf16ps`; bitwise
    /// [`Bf16Conv::run_naive_io`]'s output, for any split of the work over `ctx`'s threads.
    ///
    /// Bf16 maps between convolutions halve the bytes an activation costs and spare the
    /// consumer its rounding pass: a bf16 input is read where it lies when its border is at
    /// least the convolution's padding (else copied once with the padding it needs), and a
    /// bf16 output is rounded in the register tile. Values are the same as an f32 output
    /// rounded by the next convolution; only a residual read from a bf16 map differs from its
    /// f32 original (by its rounding).
    ///
    /// Three ways, one order of summation: a 1x1, stride-1, unpadded, ungrouped convolution
    /// with an even channel count reads its rows in place from an unpadded bf16 input, or
    /// rounds each task's rows (a block of output pixels, sized to stay in L2) into the
    /// thread's scratch; any other ungrouped one with an even channel count reads each tile's
    /// rows in place from a zero-padded bf16 input (one offset per kernel tap), rounding an
    /// f32 input into such a copy first; the rest (odd channel counts such as the RGB stem's,
    /// groups) gather each task's im2col rows into the thread's scratch from an unpadded bf16
    /// copy. Copies take their words from the scratch's buffer pool.
    ///
    /// # Errors
    /// [`KernelError`] when the buffers do not fit the geometry, or a bf16 map has an odd
    /// channel count.
    #[allow(clippy::too_many_arguments)]
    pub fn run_io(
        &self,
        cpu: Bf16Cpu,
        ctx: &Ctx<'_>,
        input: Bf16Src<'_>,
        input_dims: [usize; 4],
        out: Bf16Dst<'_>,
        residual: Option<Bf16Src<'_>>,
        relu: bool,
    ) -> Result<(), KernelError> {
        let geom = self.check_io(&input, input_dims, &out, residual.as_ref())?;
        let _ = cpu;
        #[cfg(target_arch = "x86_64")]
        {
            self.run_x86(ctx, &geom, input, out, residual, relu);
            Ok(())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (ctx, geom, input, out, residual, relu);
            unreachable!("Bf16Cpu::detect returns None off x86-64")
        }
    }

    /// [`Bf16Conv::run_io`] once the buffers are checked.
    #[cfg(target_arch = "x86_64")]
    fn run_x86(
        &self,
        ctx: &Ctx<'_>,
        geom: &ConvGeometry,
        input: Bf16Src<'_>,
        out: Bf16Dst<'_>,
        residual: Option<Bf16Src<'_>>,
        relu: bool,
    ) {
        let [o, _, kh, kw] = self.weight_dims;
        let [n, c, _, _] = geom.input;
        let [_, _, oh, ow] = geom.output;
        let g = self.params.groups;
        let og = o / g;
        let m = n * oh * ow;
        let dst = OutMap::new(out, geom.output);
        let res = ResMap::new(residual, geom.output);
        if m == 0 {
            return;
        }
        let k = self.depth();
        let pairs = k.div_ceil(2);
        let in_place = g == 1 && c.is_multiple_of(2);
        let direct = in_place
            && kh == 1
            && kw == 1
            && self.params.stride == [1, 1]
            && self.params.padding == [0, 0]
            && !matches!(input, Bf16Src::Bf16 { pad, .. } if pad != [0, 0]);
        if in_place && !direct {
            self.run_in_place(ctx, geom, input, dst, res, relu);
            return;
        }

        // The input in bf16 without a border (an f32 buffer of the pool, as words, unless the
        // input is such a map); a 1x1 convolution on an f32 input rounds each task's rows in
        // its own scratch instead (read once, they need no copy of the whole input).
        let held = match input {
            Bf16Src::F32(_) if direct => Held::Borrowed(&[]),
            _ => prepare(ctx, input, geom.input, [0, 0], true).0,
        };
        let words = held.words();

        // Tasks: blocks of output rows, times groups, times (on few blocks) column chunks.
        let mut blocks = m.div_ceil(rows_per_task(pairs, og, res.is_some()));
        let (chunk, chunks) = column_chunks(blocks * g, og, ctx.par.threads());
        // As in `run_in_place`: at least four tasks per thread, by rows of whole tiles.
        let want = 4 * ctx.par.threads();
        if blocks * g * chunks < want {
            blocks = want
                .div_ceil(g * chunks)
                .min(m.div_ceil(super::MR))
                .max(blocks);
        }
        let rows = m.div_ceil(blocks);
        let tasks = blocks * g * chunks;
        // When a map has a border, a tile stays within one image and jumps over the border
        // from one output row to the next.
        let split = dst.at.padded() || res.at.padded();
        let wrap = super::Wrap {
            x0: 0,
            run: ow,
            a: 0,
            c: dst.at.row_jump(),
            r: res.at.row_jump(),
        };
        let task = |t: usize| {
            let (block, rest) = (t / (g * chunks), t % (g * chunks));
            let (gi, ck) = (rest / chunks, rest % chunks);
            let r0 = block * rows;
            let nr = rows.min(m - r0);
            let (j0, j1) = (ck * chunk, ((ck + 1) * chunk).min(og));
            let product = |a: *const u32, lda: usize| {
                let rhs = &self.groups[gi];
                for panel in j0 / NR..j1.div_ceil(NR) {
                    let cols = NR.min(og - panel * NR);
                    let b = rhs.data[panel * pairs * NR..].as_ptr();
                    let mut i = 0;
                    while i < nr {
                        let mut mr = super::MR.min(nr - i);
                        if split {
                            mr = mr.min(oh * ow - (r0 + i) % (oh * ow));
                        }
                        let (r, col) = (r0 + i, gi * og + panel * NR);
                        // SAFETY: `Bf16Cpu` detected; `a` holds `nr` rows of `pairs` words
                        // `lda` apart; the panel `pairs * NR` words; the output rows
                        // r0 + i.. and columns of this panel are the task's own, one stride
                        // apart (within one image, jumping the border between output rows,
                        // when a map has one).
                        unsafe {
                            super::tile(
                                mr,
                                cols,
                                super::ARows {
                                    at: a.add(i * lda),
                                    lda,
                                    taps: &[0],
                                    pairs,
                                    wrap: match split {
                                        true => super::Wrap {
                                            x0: (r0 + i) % ow,
                                            ..wrap
                                        },
                                        false => super::Wrap::NONE,
                                    },
                                },
                                b,
                                dst.store(r, col),
                                o,
                                self.start(&res, r, col),
                                relu,
                            );
                        }
                        i += mr;
                    }
                }
            };
            if direct && !words.is_empty() {
                // An unpadded bf16 input: the rows where they lie.
                product(words[r0 * (c / 2)..].as_ptr(), c / 2);
            } else if direct {
                let Bf16Src::F32(input) = input else {
                    unreachable!("a bf16 input is held")
                };
                ctx.scratch.with(|buf| {
                    let len = nr * c / 2;
                    if buf.len() < len {
                        buf.resize(len, 0.0);
                    }
                    let rows = as_words_mut(&mut buf[..len]);
                    // SAFETY: `Bf16Cpu` was detected; `nr * c` values (even `c`) in `len` words.
                    unsafe { round_pairs(&input[r0 * c..(r0 + nr) * c], rows) };
                    product(buf.as_ptr().cast::<u32>(), c / 2);
                });
            } else {
                ctx.scratch.with(|buf| {
                    if buf.len() < nr * pairs {
                        buf.resize(nr * pairs, 0.0);
                    }
                    // SAFETY: f32 and u16 sizes divide; the buffer is this thread's. x86-64 is
                    // little-endian: value 2p of a row is the low half of its word p.
                    let col = unsafe {
                        std::slice::from_raw_parts_mut(
                            buf.as_mut_ptr().cast::<u16>(),
                            nr * pairs * 2,
                        )
                    };
                    // SAFETY: as above, the converted input read as its bf16 values.
                    let src = unsafe {
                        std::slice::from_raw_parts(words.as_ptr().cast::<u16>(), words.len() * 2)
                    };
                    // SAFETY: `Bf16Cpu` proves AVX512-F and AVX512-BW; `col` is `nr` rows of
                    // `pairs * 2 >= k` values.
                    unsafe { self.gather_rows(geom, r0, gi, src, col, pairs * 2) };
                    product(buf.as_ptr().cast::<u32>(), pairs);
                });
            }
        };
        ctx.par.for_each(tasks, task);
        held.give(ctx);
    }

    /// The sums' start for output row `r` from column `col` on: the bias and, when the output
    /// step has one, the residual (row stride: the output channels).
    #[cfg(target_arch = "x86_64")]
    fn start(&self, res: &ResMap, r: usize, col: usize) -> super::Start {
        super::Start::Bias {
            bias: self.bias[col..].as_ptr(),
            res: res.at(r, col),
            ldr: self.weight_dims[0],
        }
    }

    /// [`Bf16Conv::run_io`] for an ungrouped convolution with an even channel count (any
    /// kernel, stride, padding and dilation): each register tile reads its rows in place from
    /// a zero-padded bf16 input (the input itself when its border is wide enough, else a copy
    /// with the convolution's padding): consecutive output pixels of one output row are
    /// padded pixels a stride apart, at one word offset per kernel tap, so no im2col row is
    /// gathered. The depth is summed in the same order as an im2col row's (tap-major, channel
    /// pairs within a tap), so the result is bitwise the same.
    #[cfg(target_arch = "x86_64")]
    fn run_in_place(
        &self,
        ctx: &Ctx<'_>,
        geom: &ConvGeometry,
        input: Bf16Src<'_>,
        dst: OutMap,
        res: ResMap,
        relu: bool,
    ) {
        let [o, _, kh, kw] = self.weight_dims;
        let [n, c, h, w] = geom.input;
        let [_, _, oh, ow] = geom.output;
        let [ph, pw] = self.params.padding;
        let [sy, sx] = self.params.stride;
        let [dy, dx] = self.params.dilation;
        // The padded input in bf16: `n * hp` rows of `wp` pixels, `half` words each, with a
        // border of `bp` (at least the convolution's padding).
        let (held, bp) = prepare(ctx, input, geom.input, [ph, pw], false);
        let words = held.words();
        let (hp, wp, half) = (h + 2 * bp[0], w + 2 * bp[1], c / 2);
        let (offy, offx) = (bp[0] - ph, bp[1] - pw);
        let mut taps = [0usize; 64];
        let spill: Vec<usize>;
        let offset = |t: usize| ((t / kw) * dy * wp + (t % kw) * dx) * half;
        let taps: &[usize] = if kh * kw <= taps.len() {
            for (t, v) in taps.iter_mut().enumerate().take(kh * kw) {
                *v = offset(t);
            }
            &taps[..kh * kw]
        } else {
            spill = (0..kh * kw).map(offset).collect();
            &spill
        };

        // Tasks: blocks of output rows of one image, times (on few blocks) column chunks.
        let per_task = (TASK_OUT_BYTES / (o * 4 * (1 + usize::from(res.is_some()))))
            .div_ceil(ow)
            .max(1);
        let mut blocks_per_image = oh.div_ceil(per_task.min(oh));
        let (chunk, chunks) = column_chunks(n * blocks_per_image, o, ctx.par.threads());
        // Narrow outputs split by columns too little: at least four tasks per thread, so
        // that no thread waits long for the last one.
        let want = 4 * ctx.par.threads();
        if n * blocks_per_image * chunks < want {
            blocks_per_image = want.div_ceil(n * chunks).min(oh);
        }
        let rows = oh.div_ceil(blocks_per_image);
        let blocks = n * blocks_per_image;
        let rhs = &self.groups[0];
        let pairs = self.depth() / 2;
        // Tiles cross output rows where that saves short tiles: a tile of `r` rows costs
        // about `max(2r, 6)` cycles per pair (two products per row, and at least the
        // product's latency: its accumulators wait on each other below three rows).
        let tiles_cost = |px: usize| {
            let cost = |r: usize| if r == 0 { 0 } else { (2 * r).max(6) };
            (px / super::MR) * cost(super::MR) + cost(px % super::MR)
        };
        let cross = tiles_cost(rows * ow) < rows * tiles_cost(ow);
        // From an output row's last pixel to the next row's first: the input moves on `sy`
        // padded rows less the `ow` steps taken, the maps over their borders.
        let wrap = super::Wrap {
            x0: 0,
            run: ow,
            a: ((sy * wp) as isize - (ow * sx) as isize) * half as isize,
            c: dst.at.row_jump(),
            r: res.at.row_jump(),
        };
        let task = |t: usize| {
            let (block, ck) = (t / chunks, t % chunks);
            let (ni, bi) = (block / blocks_per_image, block % blocks_per_image);
            let y0 = bi * rows;
            let y1 = (y0 + rows).min(oh);
            let (j0, j1) = (ck * chunk, ((ck + 1) * chunk).min(o));
            for panel in j0 / NR..j1.div_ceil(NR) {
                let cols = NR.min(o - panel * NR);
                let b = rhs.data[panel * pairs * NR..].as_ptr();
                // Tiles of consecutive output pixels: across output rows when `cross`, else
                // within each row.
                let mut q = y0 * ow;
                while q < y1 * ow {
                    let mut mr = super::MR.min(y1 * ow - q);
                    if !cross {
                        mr = mr.min(ow - q % ow);
                    }
                    let (oy, ox) = (q / ow, q % ow);
                    let r = (ni * oh + oy) * ow + ox;
                    let at = ((ni * hp + oy * sy + offy) * wp + ox * sx + offx) * half;
                    // SAFETY: `Bf16Cpu` detected; the tile's rows (output pixels q.. of
                    // rows y0..y1, stepping `sx` padded pixels along an output row and to
                    // the next row's start at the wrap) read padded pixels within the
                    // image's `hp x wp` (`oy * sy + ky * dy < h + 2 * ph` and `ox * sx +
                    // kx * dx < w + 2 * pw` for every output pixel and tap, by the geometry,
                    // and the border `bp` is at least the padding); the panel holds
                    // `pairs * NR` words; output (and residual) pixels of rows y0..y1 of
                    // image ni (one stride apart along a row, the border's jump between
                    // rows) and this panel's columns are the task's own, inside their maps
                    // (checked lengths).
                    unsafe {
                        super::tile(
                            mr,
                            cols,
                            super::ARows {
                                at: words.as_ptr().add(at),
                                lda: sx * half,
                                taps,
                                pairs: half,
                                wrap: super::Wrap { x0: ox, ..wrap },
                            },
                            b,
                            dst.store(r, panel * NR),
                            o,
                            self.start(&res, r, panel * NR),
                            relu,
                        );
                    }
                    q += mr;
                }
            }
        };
        ctx.par.for_each(blocks * chunks, task);
        held.give(ctx);
    }
}

/// The pixel index, in a map with a border of `pad`, of unpadded pixel `s` (flat over images,
/// rows and columns) of an `h x w` grid.
pub(super) fn padded(s: usize, h: usize, w: usize, pad: [usize; 2]) -> usize {
    if pad == [0, 0] {
        return s;
    }
    let (ni, pix) = (s / (h * w), s % (h * w));
    (ni * (h + 2 * pad[0]) + pix / w + pad[0]) * (w + 2 * pad[1]) + pix % w + pad[1]
}

/// Value `i` of a bf16 map (low half first).
pub(super) fn half(words: &[u32], i: usize) -> u16 {
    (words[i / 2] >> (16 * (i % 2))) as u16
}

/// Words of a bf16 map of logical dims `dims` (`[N, C, H, W]`, `C` even) with a border of
/// `pad`: NHWC bf16 values, two channels per word (channel `2q` in the low half of word `q`
/// of its pixel), each image `H + 2 pad[0]` rows of `W + 2 pad[1]` pixels, the border zero.
/// This is the layout of [`Bf16Src::Bf16`] and [`Bf16Dst::Bf16`].
///
/// ```
/// use resnet_kernels::bf16::map_words;
/// assert_eq!(map_words([2, 4, 3, 3], [1, 1])?, 2 * 5 * 5 * 2);
/// assert!(map_words([1, 3, 3, 3], [0, 0]).is_err()); // odd channel count
/// # Ok::<(), resnet_kernels::KernelError>(())
/// ```
///
/// # Errors
/// [`KernelError::Geometry`] for an odd channel count or a size past memory.
pub fn map_words(dims: [usize; 4], pad: [usize; 2]) -> Result<usize, KernelError> {
    let [n, c, h, w] = dims;
    if !c.is_multiple_of(2) {
        return Err(KernelError::Geometry(format!(
            "a bf16 map holds channel pairs: {c} channels is odd"
        )));
    }
    let hp = h.checked_add(pad[0].saturating_mul(2));
    let wp = w.checked_add(pad[1].saturating_mul(2));
    match (hp, wp) {
        (Some(hp), Some(wp)) => size("bf16 map", &[n, hp, wp, c / 2]),
        _ => Err(KernelError::Geometry(format!(
            "bf16 map {dims:?} with border {pad:?} is too large"
        ))),
    }
}

/// The f32 values of a bf16 map (logical dims `dims`, border `pad`; see [`map_words`]) as an
/// unpadded NHWC tensor, exactly.
///
/// ```
/// use resnet_kernels::bf16::{map_to_f32, map_words};
/// // One pixel of two channels in a border of one: 1.0 and -2.0 in the middle word.
/// let mut words = vec![0u32; map_words([1, 2, 1, 1], [1, 1])?];
/// words[4] = 0x3f80 | (0xc000 << 16);
/// let mut out = [0.0f32; 2];
/// map_to_f32(&words, [1, 2, 1, 1], [1, 1], &mut out)?;
/// assert_eq!(out, [1.0, -2.0]);
/// # Ok::<(), resnet_kernels::KernelError>(())
/// ```
///
/// # Errors
/// [`KernelError`] when the buffers do not fit the dims.
pub fn map_to_f32(
    words: &[u32],
    dims: [usize; 4],
    pad: [usize; 2],
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("bf16 map", words, map_words(dims, pad)?)?;
    let [n, c, h, w] = dims;
    check_len("bf16 map values", out, size("bf16 map", &[n, h, w, c])?)?;
    for (s, px) in out.chunks_exact_mut(c.max(1)).enumerate() {
        let at = padded(s, h, w, pad) * c;
        for (ch, v) in px.iter_mut().enumerate() {
            *v = widen(half(words, at + ch));
        }
    }
    Ok(())
}

/// Activations a [`Bf16Conv`] reads: its input, or the residual its output step adds.
#[derive(Debug, Clone, Copy)]
pub enum Bf16Src<'a> {
    /// f32 values, NHWC (rounded to bf16 where they are multiplied; a residual is added as
    /// it is).
    F32(&'a [f32]),
    /// A bf16 map (layout: [`map_words`]) with a border of `pad` (rows, columns).
    Bf16 {
        /// The map's words.
        words: &'a [u32],
        /// Its border.
        pad: [usize; 2],
    },
}

/// Where a [`Bf16Conv`] writes its output.
#[derive(Debug)]
pub enum Bf16Dst<'a> {
    /// f32 values, NHWC.
    F32(&'a mut [f32]),
    /// A bf16 map (layout: [`map_words`]) with a border of `pad`, written whole (the border
    /// zero): each output value rounded to bf16 as the next convolution would round it.
    Bf16 {
        /// The map's words.
        words: &'a mut [u32],
        /// Its border.
        pad: [usize; 2],
    },
}

/// The rounded input a kernel reads: a bf16 map that was given, or a copy of the pool's.
#[cfg(target_arch = "x86_64")]
enum Held<'a> {
    Borrowed(&'a [u32]),
    Pooled(Vec<f32>),
}

#[cfg(target_arch = "x86_64")]
impl Held<'_> {
    fn words(&self) -> &[u32] {
        match self {
            Held::Borrowed(w) => w,
            Held::Pooled(v) => as_words(v),
        }
    }

    /// Hand a pooled copy back.
    fn give(self, ctx: &Ctx<'_>) {
        if let Held::Pooled(v) = self {
            ctx.scratch.parts().give(v);
        }
    }
}

/// The input of logical dims `dims` as a bf16 map with a border of `want` (exactly, or at
/// least when not `exact`), and the border it has: a given bf16 map that fits as it is, else
/// a copy (rounded from f32, or moved to the wanted border) in the pool's words. An f32 input
/// without a border is rounded flat, as pairs of consecutive values (any channel count).
#[cfg(target_arch = "x86_64")]
fn prepare<'a>(
    ctx: &Ctx<'_>,
    input: Bf16Src<'a>,
    dims: [usize; 4],
    want: [usize; 2],
    exact: bool,
) -> (Held<'a>, [usize; 2]) {
    let [n, c, h, w] = dims;
    if let Bf16Src::Bf16 { words, pad } = input
        && (pad == want || (!exact && pad[0] >= want[0] && pad[1] >= want[1]))
    {
        return (Held::Borrowed(words), pad);
    }
    if let (Bf16Src::F32(x), [0, 0]) = (input, want) {
        let held = pooled_words(ctx, x.len().div_ceil(2), ROUND_CHUNK, |i, words| {
            let at = i * ROUND_CHUNK * 2;
            let end = (at + words.len() * 2).min(x.len());
            // SAFETY: `Bf16Cpu` was detected (the kernels take its token).
            unsafe { round_pairs(&x[at..end], words) };
        });
        return (Held::Pooled(held), want);
    }
    // A map with the wanted border (even `c`: checked for bf16 maps, and f32 inputs come here
    // only from the in-place path).
    let (hp, wp, half) = (h + 2 * want[0], w + 2 * want[1], c / 2);
    let held = pooled_words(ctx, n * hp * wp * half, wp * half, |i, row| {
        let (ni, yp) = (i / hp, i % hp);
        if yp < want[0] || yp >= want[0] + h {
            row.fill(0);
            return;
        }
        let y = yp - want[0];
        let (left, rest) = row.split_at_mut(want[1] * half);
        let (mid, right) = rest.split_at_mut(w * half);
        left.fill(0);
        right.fill(0);
        match input {
            Bf16Src::F32(x) => {
                let from = &x[(ni * h + y) * w * c..][..w * c];
                // SAFETY: `Bf16Cpu` was detected; `w * c` values (even `c`) into
                // `w * half` words.
                unsafe { round_pairs(from, mid) };
            }
            Bf16Src::Bf16 { words, pad } => {
                let at = padded((ni * h + y) * w, h, w, pad) * half;
                mid.copy_from_slice(&words[at..at + w * half]);
            }
        }
    });
    (Held::Pooled(held), want)
}

/// Where output pixel `r` (flat) of a convolution lies in its output or residual: a map of
/// output rows and columns `grid` with a border of `pad`, `channels` values per pixel.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Layout {
    pad: [usize; 2],
    grid: [usize; 2],
    channels: usize,
}

#[cfg(target_arch = "x86_64")]
impl Layout {
    fn padded(&self) -> bool {
        self.pad != [0, 0]
    }

    /// The value index of pixel `r`, column `col`.
    fn index(&self, r: usize, col: usize) -> usize {
        padded(r, self.grid[0], self.grid[1], self.pad) * self.channels + col
    }

    /// Values skipped from an output row's last pixel to the next row's first: the border.
    fn row_jump(&self) -> isize {
        (2 * self.pad[1] * self.channels) as isize
    }
}

/// Where a convolution's tasks write: f32 values or a bf16 map, by output pixel.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct OutMap {
    ptr: super::Store,
    at: Layout,
}

// SAFETY: tasks write disjoint parts of the output only (see `Bf16Conv::run_io`).
#[cfg(target_arch = "x86_64")]
unsafe impl Send for OutMap {}
// SAFETY: as above.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for OutMap {}

#[cfg(target_arch = "x86_64")]
impl OutMap {
    /// The output of dims `dims`; a bf16 map's border is zeroed here.
    fn new(out: Bf16Dst<'_>, dims: [usize; 4]) -> Self {
        let [n, o, oh, ow] = dims;
        let (ptr, pad) = match out {
            Bf16Dst::F32(y) => (super::Store::F32(y.as_mut_ptr()), [0, 0]),
            Bf16Dst::Bf16 { words, pad } => {
                if pad != [0, 0] {
                    let (hp, wp, half) = (oh + 2 * pad[0], ow + 2 * pad[1], o / 2);
                    for (i, row) in words.chunks_exact_mut(wp * half).enumerate() {
                        let yp = i % hp;
                        if yp < pad[0] || yp >= pad[0] + oh {
                            row.fill(0);
                        } else {
                            row[..pad[1] * half].fill(0);
                            row[(pad[1] + ow) * half..].fill(0);
                        }
                    }
                    debug_assert_eq!(words.len(), n * hp * wp * half);
                }
                (super::Store::Bf16(words.as_mut_ptr().cast()), pad)
            }
        };
        let at = Layout {
            pad,
            grid: [oh, ow],
            channels: o,
        };
        Self { ptr, at }
    }

    /// Output pixel `r` (flat), column `col`.
    fn store(&self, r: usize, col: usize) -> super::Store {
        let i = self.at.index(r, col);
        match self.ptr {
            super::Store::F32(p) => super::Store::F32(p.wrapping_add(i)),
            super::Store::Bf16(p) => super::Store::Bf16(p.wrapping_add(i)),
        }
    }
}

/// The residual a convolution's tasks add, by output pixel.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct ResMap {
    ptr: super::Res,
    at: Layout,
}

// SAFETY: the residual is only read.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for ResMap {}
// SAFETY: as above.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for ResMap {}

#[cfg(target_arch = "x86_64")]
impl ResMap {
    fn new(res: Option<Bf16Src<'_>>, dims: [usize; 4]) -> Self {
        let (ptr, pad) = match res {
            None => (super::Res::None, [0, 0]),
            Some(Bf16Src::F32(r)) => (super::Res::F32(r.as_ptr()), [0, 0]),
            Some(Bf16Src::Bf16 { words, pad }) => (super::Res::Bf16(words.as_ptr().cast()), pad),
        };
        let at = Layout {
            pad,
            grid: [dims[2], dims[3]],
            channels: dims[1],
        };
        Self { ptr, at }
    }

    fn is_some(&self) -> bool {
        !matches!(self.ptr, super::Res::None)
    }

    /// The residual at output pixel `r` (flat), column `col`.
    fn at(&self, r: usize, col: usize) -> super::Res {
        let i = self.at.index(r, col);
        match self.ptr {
            super::Res::None => super::Res::None,
            super::Res::F32(p) => super::Res::F32(p.wrapping_add(i)),
            super::Res::Bf16(p) => super::Res::Bf16(p.wrapping_add(i)),
        }
    }
}

/// A buffer of `len` words (an f32 buffer of the scratch's pool; hand it back with
/// `give`), filled `chunk` words at a time by `fill(chunk index, words)`, on the pool's
/// threads when the context is parallel and there is more than one chunk.
#[cfg(target_arch = "x86_64")]
fn pooled_words(
    ctx: &Ctx<'_>,
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [u32]) + Send + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut held = ctx.scratch.parts().take(len);
    let words = as_words_mut(&mut held);
    let chunk = chunk.max(1);
    if ctx.par.is_parallel() && words.len() > chunk {
        words
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, w)| fill(i, w));
    } else {
        words
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, w)| fill(i, w));
    }
    held
}

/// An f32 buffer as words, so that a workspace of f32 buffers can hold bf16 maps
/// ([`map_words`] of them) too: the same bits, read as `u32`.
///
/// ```
/// use resnet_kernels::bf16::as_words;
/// assert_eq!(as_words(&[1.0f32]), &[0x3f80_0000]);
/// ```
pub fn as_words(buf: &[f32]) -> &[u32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is a u32.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u32>(), buf.len()) }
}

/// [`as_words`], to write (every bit pattern is an f32 too).
pub fn as_words_mut(buf: &mut [f32]) -> &mut [u32] {
    // SAFETY: as `as_words`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u32>(), buf.len()) }
}

/// Output columns per task (a multiple of [`NR`]) and the chunks of a group's `og`: all of
/// them, unless `tasks` blocks give fewer than 4 tasks per thread, when they are halved (down
/// to two panels) to spread small maps over the threads.
#[cfg(target_arch = "x86_64")]
fn column_chunks(tasks: usize, og: usize, threads: usize) -> (usize, usize) {
    let mut chunk = og.div_ceil(NR) * NR;
    while tasks * og.div_ceil(chunk) < 4 * threads && chunk >= 4 * NR {
        chunk = (chunk / 2).div_ceil(NR) * NR;
    }
    (chunk, og.div_ceil(chunk))
}

/// Words per chunk of the input's rounding (a unit of parallel work).
#[cfg(target_arch = "x86_64")]
const ROUND_CHUNK: usize = 1 << 14;

/// Round `x` to bf16 pairs: `out[p]` holds `x[2p]` (low half) and `x[2p + 1]` (high half,
/// zero past the end), as [`super::pack_row`] does, on `vcvtneps2bf16`.
///
/// # Safety
/// AVX512-F and AVX512-BF16 present. `out.len() == x.len().div_ceil(2)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_pairs(x: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(out.len(), x.len().div_ceil(2));
    let full = x.len() / 16;
    for v in 0..full {
        // SAFETY: values 16v..16v + 16 of `x`, words 8v..8v + 8 of `out`.
        unsafe {
            let f = _mm512_loadu_ps(x.as_ptr().add(16 * v));
            let h: __m256i = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(f));
            _mm256_storeu_si256(out.as_mut_ptr().add(8 * v).cast::<__m256i>(), h);
        }
    }
    super::pack_row(&x[16 * full..], &mut out[8 * full..]);
}
