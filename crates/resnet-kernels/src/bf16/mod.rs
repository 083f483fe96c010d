//! Reduced precision: matrix products of bfloat16 values accumulated in f32, on AVX512-BF16's
//! `vdpbf16ps`, beside a scalar twin that rounds and accumulates exactly as the hardware does.
//!
//! bfloat16 keeps f32's 8-bit exponent and 8 of its 24 significand bits, so rounding an f32 to
//! bf16 costs up to 2^-9 relative (about 0.2%) and never overflows. The product of two bf16
//! values is exact in f32; `vdpbf16ps` adds the two products of a pair of bf16 values to an
//! f32 accumulator one after the other, each addition rounded to nearest-even, denormal inputs
//! read as zero and denormal results flushed to zero. [`matmul_naive`] does exactly that, in
//! the same order, so the fast kernel and its twin agree bit for bit (`cargo xtask props`:
//! random shapes, magnitudes from 2^-120 to 2^120, NaN, infinities, signed zeros). Outside
//! that contract: sums or products beyond f32's range (the hardware's non-finite result
//! may differ from the twin's, e.g. -inf where the twin has NaN) and products below f32's
//! smallest normal value.
//!
//! Layout, for `C[i][j] = Σ_k A[i][k] B[k][j]` (activations `A` as NHWC rows: `i` a position,
//! `k` its channels, or its im2col row; weights `B` with `j` the output channel):
//! - [`Bf16Lhs`]: `A` rounded to bf16, each row padded to an even length, read as pairs
//!   (`u32`: element `2p` in the low half, `2p + 1` in the high half);
//! - [`Bf16Rhs`]: `B` packed once, in panels of [`NR`] columns, pair-major: the form the
//!   kernel loads as whole vectors.
//!
//! ```
//! use resnet_kernels::bf16::{Bf16Lhs, Bf16Rhs, matmul_naive};
//!
//! // [1 2 3] x [[1], [1], [1]]: bf16 holds small integers exactly.
//! let a = Bf16Lhs::pack(&[1.0, 2.0, 3.0], 1, 3, 3)?;
//! let b = Bf16Rhs::pack(3, 1, |_, _| 1.0)?;
//! let mut c = [0.0f32];
//! matmul_naive(&a, &b, &mut c, 1, false)?;
//! assert_eq!(c[0], 6.0);
//! # Ok::<(), resnet_kernels::KernelError>(())
//! ```
//!
//! [`Bf16Cpu::detect`] says whether this CPU has the instructions; [`matmul`] takes its token.

use crate::KernelError;

/// Columns of `B` per packed panel: two vectors of 16 f32 lanes.
pub const NR: usize = 32;
/// Rows of `A` per register tile (12 x 2 accumulators, 12 broadcasts, 2 weight vectors).
#[cfg(target_arch = "x86_64")]
const MR: usize = 12;

mod conv;
mod pool;
pub use conv::{Bf16Conv, Bf16Dst, Bf16Src, as_words, as_words_mut, map_to_f32, map_words};
pub use pool::{max_pool_map, max_pool_map_naive};

/// Rounds an f32 to bf16 as `vcvtne2ps2bf16` does: to nearest, ties to even; a denormal
/// input becomes a zero of its sign; NaN stays NaN (quiet).
///
/// ```
/// use resnet_kernels::bf16::{round, widen};
/// assert_eq!(widen(round(1.0)), 1.0);
/// assert_eq!(widen(round(1.0 + 1.0 / 256.0)), 1.0); // half a unit: a tie, to even
/// assert_eq!(widen(round(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0); // a tie, to even: up
/// assert!(widen(round(f32::NAN)).is_nan());
/// ```
pub fn round(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x0040) as u16;
    }
    if x.is_subnormal() {
        return ((b >> 16) & 0x8000) as u16;
    }
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    (rounded >> 16) as u16
}

/// A bf16 value as the f32 it denotes (exact).
pub fn widen(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// A bf16 value as `vdpbf16ps` reads it: denormals as zero.
fn read(b: u16) -> f32 {
    let x = widen(b);
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// Flush a denormal result to zero, keeping its sign.
fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn pair(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | (u32::from(hi) << 16)
}

fn size(what: &str, dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| KernelError::Geometry(format!("{what}: {dims:?} is too large")))
}

/// Activations `A` (`m` rows of `k` values) rounded to bf16, as pairs: row `i` is
/// `pairs()` words, the last one's high half zero when `k` is odd.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bf16Lhs {
    m: usize,
    k: usize,
    data: Vec<u32>,
}

impl Bf16Lhs {
    /// Round `a` (row `i` at `a[i * lda..][..k]`) to bf16.
    pub fn pack(a: &[f32], m: usize, k: usize, lda: usize) -> Result<Self, KernelError> {
        let mut out = Self::default();
        out.repack(a, m, k, lda)?;
        Ok(out)
    }

    /// [`Bf16Lhs::pack`] into this buffer, which grows only when it must (a warm call with the
    /// same or smaller sizes allocates nothing).
    pub fn repack(&mut self, a: &[f32], m: usize, k: usize, lda: usize) -> Result<(), KernelError> {
        if k == 0 || lda < k {
            return Err(KernelError::Geometry(format!(
                "bf16 activations: k = {k}, row stride {lda}: k must be positive and at most the stride"
            )));
        }
        let pairs = k.div_ceil(2);
        let len = size("bf16 activations", &[m, pairs])?;
        let need = match m {
            0 => Some(0),
            m => (m - 1).checked_mul(lda).and_then(|x| x.checked_add(k)),
        };
        let Some(need) = need else {
            return Err(KernelError::Geometry(format!(
                "bf16 activations: {m} rows of stride {lda} overflow"
            )));
        };
        if a.len() < need {
            return Err(KernelError::BadLength {
                what: "bf16 activations",
                expected: need,
                found: a.len(),
            });
        }
        self.m = m;
        self.k = k;
        self.data.clear();
        self.data.resize(len, 0);
        for i in 0..m {
            pack_row(
                &a[i * lda..i * lda + k],
                &mut self.data[i * pairs..(i + 1) * pairs],
            );
        }
        Ok(())
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Values per row (before padding to pairs).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The packed words, `rows() * k().div_ceil(2)`.
    pub fn words(&self) -> &[u32] {
        &self.data
    }
}

/// Round one row of f32 values to bf16 pairs: `out[p]` holds `row[2p]` (low half) and
/// `row[2p + 1]` (high half, zero past the end). `out.len()` must be `row.len().div_ceil(2)`.
pub fn pack_row(row: &[f32], out: &mut [u32]) {
    debug_assert_eq!(out.len(), row.len().div_ceil(2));
    let mut chunks = row.chunks_exact(2);
    for (o, c) in out.iter_mut().zip(&mut chunks) {
        *o = pair(round(c[0]), round(c[1]));
    }
    if let ([last], Some(o)) = (chunks.remainder(), out.last_mut()) {
        *o = pair(round(*last), 0);
    }
}

/// Weights `B` (`k` x `n`) rounded to bf16 and packed once: panels of [`NR`] columns, each
/// `k.div_ceil(2)` pairs deep, each pair one word per column (zero past `n` and past `k`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Rhs {
    k: usize,
    n: usize,
    data: Vec<u32>,
}

impl Bf16Rhs {
    /// Pack `B`, given as `at(k_index, column)`.
    pub fn pack(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Result<Self, KernelError> {
        if k == 0 || n == 0 {
            return Err(KernelError::Geometry(format!(
                "bf16 weights: {k} x {n}: both must be positive"
            )));
        }
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; size("bf16 weights", &[panels, pairs, NR])?];
        for panel in 0..panels {
            for p in 0..pairs {
                let words = &mut data[(panel * pairs + p) * NR..][..NR];
                for (jj, w) in words.iter_mut().enumerate() {
                    let j = panel * NR + jj;
                    if j >= n {
                        break;
                    }
                    let lo = round(at(2 * p, j));
                    let hi = if 2 * p + 1 < k {
                        round(at(2 * p + 1, j))
                    } else {
                        0
                    };
                    *w = pair(lo, hi);
                }
            }
        }
        Ok(Self { k, n, data })
    }

    /// Rows of `B` (the products' depth).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The value at `(k_index, column)` as the kernels read it (rounded to bf16), or `None`
    /// outside the matrix.
    pub fn get(&self, kk: usize, j: usize) -> Option<f32> {
        if kk >= self.k || j >= self.n {
            return None;
        }
        let pairs = self.k.div_ceil(2);
        let w = self.data[((j / NR) * pairs + kk / 2) * NR + j % NR];
        Some(widen(if kk.is_multiple_of(2) {
            w as u16
        } else {
            (w >> 16) as u16
        }))
    }
}

/// Proof that this CPU has AVX512-F, AVX512-BW and AVX512-BF16 (made only by detection; every
/// CPU with the last has the first two).
#[derive(Debug, Clone, Copy)]
pub struct Bf16Cpu {
    _private: (),
}

impl Bf16Cpu {
    /// The token, if this CPU has `vdpbf16ps` (AVX512-BF16); `None` elsewhere (any other
    /// architecture included).
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
            {
                return Some(Self { _private: () });
            }
        }
        None
    }
}

fn check(
    a: &Bf16Lhs,
    b: &Bf16Rhs,
    rows: &std::ops::Range<usize>,
    c: &[f32],
    ldc: usize,
) -> Result<(), KernelError> {
    if a.k != b.k {
        return Err(KernelError::Geometry(format!(
            "bf16 product: activations have {} values per row, weights {} rows",
            a.k, b.k
        )));
    }
    if rows.start > rows.end || rows.end > a.m {
        return Err(KernelError::Geometry(format!(
            "bf16 product: rows {rows:?} of {}",
            a.m
        )));
    }
    if ldc < b.n {
        return Err(KernelError::Geometry(format!(
            "bf16 product: output row stride {ldc} is below its {} columns",
            b.n
        )));
    }
    let need = if rows.is_empty() {
        Some(0)
    } else {
        (rows.end - 1)
            .checked_mul(ldc)
            .and_then(|x| x.checked_add(b.n))
    };
    let Some(need) = need else {
        return Err(KernelError::Geometry(format!(
            "bf16 product: output rows up to {} of stride {ldc} overflow",
            rows.end
        )));
    };
    if c.len() < need {
        return Err(KernelError::BadLength {
            what: "bf16 product output",
            expected: need,
            found: c.len(),
        });
    }
    Ok(())
}

/// The scalar twin of [`matmul`]: `C[i][j] = Σ_k A[i][k] B[k][j]` over every row of `a`
/// (`C[i][j] +=` with `accumulate`), row `i` of `C` at `c[i * ldc..]`. Each output starts
/// from zero (or its old value) and takes, pair by pair, the product of the pair's second
/// elements, then of its first, each addition rounded to f32 and a denormal result flushed:
/// `vdpbf16ps`'s order and rounding.
pub fn matmul_naive(
    a: &Bf16Lhs,
    b: &Bf16Rhs,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), KernelError> {
    let rows = 0..a.m;
    check(a, b, &rows, c, ldc)?;
    let pairs = a.k.div_ceil(2);
    for i in rows {
        let arow = &a.data[i * pairs..(i + 1) * pairs];
        for j in 0..b.n {
            let mut acc = if accumulate { c[i * ldc + j] } else { 0.0 };
            for (p, &aw) in arow.iter().enumerate() {
                let bw = b.data[((j / NR) * pairs + p) * NR + j % NR];
                let hi = read((aw >> 16) as u16) * read((bw >> 16) as u16);
                acc = flush(acc + hi);
                let lo = read(aw as u16) * read(bw as u16);
                acc = flush(acc + lo);
            }
            c[i * ldc + j] = acc;
        }
    }
    Ok(())
}

/// `C[i][j] = Σ_k A[i][k] B[k][j]` for the rows `rows` of `a` (`+=` with `accumulate`), row
/// `i` of `C` at `c[i * ldc..]`, on `vdpbf16ps`: bitwise the result of [`matmul_naive`].
/// Disjoint row ranges may run on different threads (each writes only its rows of `C`).
pub fn matmul(
    cpu: Bf16Cpu,
    a: &Bf16Lhs,
    b: &Bf16Rhs,
    rows: std::ops::Range<usize>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), KernelError> {
    check(a, b, &rows, c, ldc)?;
    let _ = cpu;
    #[cfg(target_arch = "x86_64")]
    {
        let pairs = a.k.div_ceil(2);
        let panels = b.n.div_ceil(NR);
        let mut i = rows.start;
        while i < rows.end {
            let mr = MR.min(rows.end - i);
            for panel in 0..panels {
                let cols = NR.min(b.n - panel * NR);
                // SAFETY: `Bf16Cpu` exists only where AVX512-F and AVX512-BF16 were detected;
                // `check` proved rows `i..i + mr` of `a` and `c` (columns up to `b.n`) in bounds,
                // the panel holds `pairs * NR` words, and the tile reads and writes only rows
                // below `mr` and (masked) columns below `cols`.
                unsafe {
                    tile(
                        mr,
                        cols,
                        ARows {
                            at: a.data.as_ptr().add(i * pairs),
                            lda: pairs,
                            taps: &[0],
                            pairs,
                            wrap: Wrap::NONE,
                        },
                        b.data.as_ptr().add(panel * pairs * NR),
                        Store::F32(c.as_mut_ptr().add(i * ldc + panel * NR)),
                        ldc,
                        if accumulate {
                            Start::Output
                        } else {
                            Start::Zero
                        },
                        false,
                    );
                }
            }
            i += mr;
        }
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, rows, c, ldc, accumulate);
        unreachable!("Bf16Cpu::detect returns None off x86-64")
    }
}

/// Where a register tile's sums start.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) enum Start {
    /// From zero.
    Zero,
    /// From the output's values (an f32 [`Store`] only).
    Output,
    /// From `bias[j]` (the panel's columns at `bias`), plus the residual's value at row `r`,
    /// column `j` (`r * ldr + j` from its pointer) when there is one: a convolution's output
    /// step, as `bias + res` in f32.
    Bias {
        bias: *const f32,
        res: Res,
        ldr: usize,
    },
}

/// A register tile's residual: none, f32 values, or bf16 values widened exactly to f32.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) enum Res {
    None,
    F32(*const f32),
    Bf16(*const u16),
}

/// Where a register tile stores its sums: row `r`, column `j` at `r * ldc + j` from the
/// pointer, as f32 values or rounded to bf16 (to nearest even, as [`round`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) enum Store {
    F32(*mut f32),
    Bf16(*mut u16),
}

/// The rows of `A` a register tile reads: row `r`'s depth is the segments at word offsets
/// `taps` from `at + r * lda`, `pairs` words each, in order (one segment for an im2col row;
/// one per kernel tap when the rows are read in place from a padded input).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct ARows<'t> {
    /// Row 0's start.
    pub(crate) at: *const u32,
    /// Words from one row's start to the next.
    pub(crate) lda: usize,
    /// Word offsets of the segments from a row's start.
    pub(crate) taps: &'t [usize],
    /// Words (pairs) per segment.
    pub(crate) pairs: usize,
    /// Where the rows pass from one output row to the next.
    pub(crate) wrap: Wrap,
}

/// Where a register tile's rows wrap: they are consecutive pixels of output rows `run` wide,
/// the first at column `x0`; from the last pixel of one output row to the first of the next,
/// the activations' step (`lda` words), the output's (`ldc` values) and the residual's
/// (`ldr` values) each grow by their jump.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Wrap {
    pub(crate) x0: usize,
    pub(crate) run: usize,
    pub(crate) a: isize,
    pub(crate) c: isize,
    pub(crate) r: isize,
}

#[cfg(target_arch = "x86_64")]
impl Wrap {
    /// Rows that never wrap (every row one stride from the last).
    pub(crate) const NONE: Wrap = Wrap {
        x0: 0,
        run: usize::MAX,
        a: 0,
        c: 0,
        r: 0,
    };
}

/// One register tile: rows `0..mr` (at most [`MR`]) of `A` (as `a` says) against one panel of
/// `B` (at `b`, `a.taps.len() * a.pairs` pairs deep), columns `0..cols` (at most [`NR`])
/// of `C` (as `c` says, row stride `ldc` values), the sums starting as `start` says; ReLU on
/// them before they are stored when `relu`. A kernel compiled for exactly `mr` rows runs it: a short
/// tile (49 output pixels are 4 x 12 + 1) costs its rows, not a full tile's.
///
/// # Safety
/// As [`tile_rows`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    mr: usize,
    cols: usize,
    a: ARows<'_>,
    b: *const u32,
    c: Store,
    ldc: usize,
    start: Start,
    relu: bool,
) {
    // Rows that wrap within the tile take a kernel that steps them one by one; the others
    // keep the plain strides (the stepping costs short products a few percent).
    let wraps = a.wrap.run < mr + a.wrap.x0;
    macro_rules! rows {
        ($($r:literal)*) => {
            match mr {
                // SAFETY: the caller's, for `mr` rows.
                $($r if wraps => unsafe { tile_rows::<$r, true>(cols, a, b, c, ldc, start, relu) },)*
                // SAFETY: as above.
                $($r => unsafe { tile_rows::<$r, false>(cols, a, b, c, ldc, start, relu) },)*
                _ => debug_assert!(mr == 0, "a tile of {mr} rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12);
}

/// [`tile`] for exactly `R` rows (at most [`MR`]); `WRAP` when they pass to another output
/// row.
///
/// # Safety
/// AVX512-F and AVX512-BF16 present; `a` readable for `R` rows (`a.pairs` words at each of
/// `a.taps` from row r's start: `a.at` plus `r` strides `a.lda` and the wrap's jumps), `b`
/// for `a.taps.len() * a.pairs * NR` words, `c` writable (and, for [`Start::Output`],
/// readable) at row r's offset (strides `ldc`, jumps) plus `j` for `r < R`, `j < cols`; for
/// [`Start::Bias`], `bias` readable for `cols` values and the residual at row r's offset
/// (strides `ldr`, jumps) plus `j` alike.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
// Indexed loops of fixed trip counts: they unroll, so that `acc` stays in registers (with
// loops over a run-time row count it went to the stack, and the kernel ran at half speed).
#[allow(clippy::needless_range_loop)]
unsafe fn tile_rows<const R: usize, const WRAP: bool>(
    cols: usize,
    a: ARows<'_>,
    b: *const u32,
    c: Store,
    ldc: usize,
    start: Start,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let m0: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as u16
    };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as u16
    } else {
        0
    };
    let m32: __mmask32 = u32::from(m0) | (u32::from(m1) << 16);
    // 32 bf16 values at `p` (masked to `cols`), widened exactly to two f32 vectors.
    let widen2 = |p: *const u16| {
        // SAFETY: the caller's pointer, `cols` values (masked).
        let v = unsafe { _mm512_maskz_loadu_epi16(m32, p.cast()) };
        let lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(v));
        let hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(v));
        [
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lo)),
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(hi)),
        ]
    };
    // Each row's activations, and its output and residual offsets (in values), stepping by
    // the strides and, where the rows pass to the next output row, by the wrap's jumps.
    let ldr = match start {
        Start::Bias { ldr, .. } => ldr,
        _ => 0,
    };
    let mut arow = [a.at; R];
    let (mut coff, mut roff) = ([0isize; R], [0isize; R]);
    if WRAP {
        let (mut x, mut pa, mut pc, mut pr) = (a.wrap.x0, 0isize, 0isize, 0isize);
        for r in 0..R {
            arow[r] = a.at.wrapping_offset(pa);
            coff[r] = pc;
            roff[r] = pr;
            pa += a.lda as isize;
            pc += ldc as isize;
            pr += ldr as isize;
            x += 1;
            if x == a.wrap.run {
                x = 0;
                pa += a.wrap.a;
                pc += a.wrap.c;
                pr += a.wrap.r;
            }
        }
    }
    // Without a wrap the rows are plain strides (no arrays to keep across the products).
    let a_row = |r: usize| {
        if WRAP {
            arow[r]
        } else {
            a.at.wrapping_add(r * a.lda)
        }
    };
    let c_off = |r: usize| if WRAP { coff[r] } else { (r * ldc) as isize };
    let r_off = |r: usize| if WRAP { roff[r] } else { (r * ldr) as isize };
    // A tile with an output step meets its output and residual rows for the first time, from
    // beyond L2 on wide maps: ask for the next tile's (the next `R` rows, same columns, when
    // no row wraps) now, so that they arrive while this one sums.
    if !WRAP && let Start::Bias { res, .. } = start {
        for r in R..2 * R {
            // A prefetch is only a hint and never faults, wherever it points.
            match c {
                Store::F32(c) => {
                    let c = c.wrapping_add(r * ldc);
                    _mm_prefetch::<_MM_HINT_ET0>(c.cast());
                    _mm_prefetch::<_MM_HINT_ET0>(c.wrapping_add(16).cast());
                }
                Store::Bf16(c) => _mm_prefetch::<_MM_HINT_ET0>(c.wrapping_add(r * ldc).cast()),
            }
            match res {
                Res::None => {}
                Res::F32(p) => {
                    let p = p.wrapping_add(r * ldr);
                    _mm_prefetch::<_MM_HINT_T0>(p.cast());
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16).cast());
                }
                Res::Bf16(p) => _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(r * ldr).cast()),
            }
        }
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    match start {
        Start::Zero => {}
        Start::Output => {
            let Store::F32(c) = c else {
                unreachable!("sums start from the output's values in f32 only")
            };
            for r in 0..R {
                // SAFETY: row r < R of `c`, columns masked below `cols`.
                unsafe {
                    let c = c.wrapping_offset(c_off(r));
                    acc[r][0] = _mm512_maskz_loadu_ps(m0, c);
                    acc[r][1] = _mm512_maskz_loadu_ps(m1, c.wrapping_add(16));
                }
            }
        }
        Start::Bias { bias, res, .. } => {
            // SAFETY: `cols` values of `bias`, masked.
            let b = unsafe {
                [
                    _mm512_maskz_loadu_ps(m0, bias),
                    _mm512_maskz_loadu_ps(m1, bias.wrapping_add(16)),
                ]
            };
            for r in 0..R {
                let add = match res {
                    Res::None => None,
                    // SAFETY: row r < R of `res`, columns masked below `cols`.
                    Res::F32(res) => Some(unsafe {
                        let res = res.wrapping_offset(r_off(r));
                        [
                            _mm512_maskz_loadu_ps(m0, res),
                            _mm512_maskz_loadu_ps(m1, res.wrapping_add(16)),
                        ]
                    }),
                    Res::Bf16(res) => Some(widen2(res.wrapping_offset(r_off(r)))),
                };
                acc[r] = match add {
                    None => b,
                    Some([r0, r1]) => [_mm512_add_ps(b[0], r0), _mm512_add_ps(b[1], r1)],
                };
            }
        }
    }
    let mut b = b;
    for &off in a.taps {
        let mut rows = [a.at; R];
        for (r, p) in rows.iter_mut().enumerate() {
            // SAFETY: segment `off` of row r < R of `a`.
            *p = unsafe { a_row(r).add(off) };
        }
        for p in 0..a.pairs {
            // SAFETY: word p of the segment's pairs in the panel, 32 columns (zero-padded
            // past `n`).
            let (w0, w1): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b.add(p * NR).cast::<__m512i>(),
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b.add(p * NR + 16).cast::<__m512i>(),
                    )),
                )
            };
            for r in 0..R {
                // SAFETY: word p of the segment of row r < R.
                let x: __m512bh = unsafe {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        *rows[r].add(p) as i32
                    ))
                };
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, w0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, w1);
            }
        }
        // SAFETY: the next segment's pairs in the panel (or one past the end).
        b = unsafe { b.add(a.pairs * NR) };
    }
    if relu {
        // ReLU as the f32 path's: a compare and a select (NaN passes through).
        let zero = _mm512_setzero_ps();
        for row in &mut acc {
            for h in 0..2 {
                let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(row[h], zero);
                row[h] = _mm512_mask_blend_ps(le, row[h], zero);
            }
        }
    }
    match c {
        Store::F32(c) => {
            for (r, row) in acc.iter().enumerate() {
                // SAFETY: row r < R of `c`, columns masked below `cols`.
                unsafe {
                    let c = c.wrapping_offset(c_off(r));
                    _mm512_mask_storeu_ps(c, m0, row[0]);
                    _mm512_mask_storeu_ps(c.wrapping_add(16), m1, row[1]);
                }
            }
        }
        Store::Bf16(c) => {
            for (r, row) in acc.iter().enumerate() {
                // Columns 0..16 in the low half, 16..32 in the high half.
                let v: __m512i =
                    // SAFETY: same-size reinterpretation of a bf16 vector as integers.
                    unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(row[1], row[0])) };
                // SAFETY: row r < R of `c`, columns masked below `cols`.
                unsafe { _mm512_mask_storeu_epi16(c.wrapping_offset(c_off(r)).cast(), m32, v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_as_the_hardware_documents() {
        // Ties to even, both directions; carries into the exponent.
        assert_eq!(round(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(round(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(round(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(round(f32::from_bits(0x3fff_ffff)), 0x4000);
        // Large values round to infinity only past bf16's largest finite value.
        assert_eq!(widen(round(f32::MAX)), f32::INFINITY);
        assert_eq!(round(f32::INFINITY), 0x7f80);
        assert_eq!(round(f32::NEG_INFINITY), 0xff80);
        assert!(widen(round(f32::NAN)).is_nan());
        assert!(widen(round(f32::from_bits(0x7f80_0001))).is_nan()); // no NaN becomes infinity
        // Denormals read as zero, sign kept.
        assert_eq!(round(f32::from_bits(1)), 0x0000);
        assert_eq!(round(-f32::from_bits(0x007f_ffff)), 0x8000);
        assert_eq!(round(f32::MIN_POSITIVE), 0x0080);
    }

    #[test]
    fn naive_sums_small_integers_exactly() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let bt = |kk: usize, j: usize| ((kk * 3 + j) % 7) as f32 - 3.0;
        let pa = Bf16Lhs::pack(&a, m, k, k).unwrap();
        let pb = Bf16Rhs::pack(k, n, bt).unwrap();
        let mut c = vec![1.0f32; m * n];
        matmul_naive(&pa, &pb, &mut c, n, true).unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|kk| a[i * k + kk] * bt(kk, j)).sum::<f32>();
                assert_eq!(c[i * n + j], want);
            }
        }
        assert_eq!(pb.get(6, 2), Some(bt(6, 2)));
        assert_eq!(pb.get(7, 2), None);
        assert_eq!(pb.get(6, 3), None);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(Bf16Lhs::pack(&[1.0; 3], 1, 0, 3).is_err());
        assert!(Bf16Lhs::pack(&[1.0; 3], 2, 3, 3).is_err());
        assert!(Bf16Rhs::pack(0, 3, |_, _| 1.0).is_err());
        assert!(Bf16Rhs::pack(usize::MAX / 2, 64, |_, _| 1.0).is_err());
        let a = Bf16Lhs::pack(&[1.0; 6], 2, 3, 3).unwrap();
        let b = Bf16Rhs::pack(2, 2, |_, _| 1.0).unwrap();
        assert!(matmul_naive(&a, &b, &mut [0.0; 4], 2, false).is_err());
        let b = Bf16Rhs::pack(3, 2, |_, _| 1.0).unwrap();
        assert!(matmul_naive(&a, &b, &mut [0.0; 3], 2, false).is_err());
        assert!(matmul_naive(&a, &b, &mut [0.0; 4], 1, false).is_err());
        assert!(matmul_naive(&a, &b, &mut [0.0; 4], usize::MAX, false).is_err());
        assert!(Bf16Lhs::pack(&[1.0; 6], usize::MAX, 3, usize::MAX).is_err());
        if let Some(cpu) = Bf16Cpu::detect() {
            assert!(matmul(cpu, &a, &b, 1..3, &mut [0.0; 4], 2, false).is_err());
        }
    }
}
