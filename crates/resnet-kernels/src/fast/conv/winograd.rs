//! Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 convolutions on NHWC data.
//!
//! Each `m x m` block of output pixels (`m` = 2 or 4) is computed from a `t x t` input tile
//! (`t = m + 2`) with `t²` multiplications per (input, output) channel pair instead of
//! `9 m²`: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray's matrices). F(2x2)'s constants are
//! 0, ±1 and ±1/2, so its transforms add almost no rounding error: 16 products per 4 outputs,
//! 2.25x fewer than direct. F(4x4)'s are up to 5 in `Bᵀ` and 8 in `Aᵀ` and `1/24` in `G`: 36
//! products per 16 outputs, 4x fewer than direct, at a few times F(2x2)'s rounding error (see
//! the numerics note in the README). The weights are transformed (and packed for the
//! micro-kernels) once at build time; per tile band, the input transform writes `t²` `[tiles,
//! C]` matrices, `t²` matrix products give `t²` `[tiles, O]` matrices, and the output transform
//! adds bias and residual and applies ReLU as it writes the result. Both transforms are SIMD
//! across channels.

use super::super::matmul::{PackedMatrix, ROW_BLOCK, with_rows_buffer};
use super::super::simd::relu_v;
use super::{Epilogue, Image};
use crate::Cpu;
use core::marker::PhantomData;
use pulp::{Simd, WithSimd};

/// F(2x2, 3x3)'s weight transform `G` (4x3).
const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// F(4x4, 3x3)'s weight transform `G` (6x3).
const G4: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

#[derive(Debug, Clone)]
pub(crate) struct Winograd {
    c: usize,
    o: usize,
    /// Output pixels per tile side: 2 or 4.
    m: usize,
    /// `U = G g Gᵀ`: `(m + 2)²` matrices `[O, C]`, packed for the micro-kernels.
    u: Vec<PackedMatrix>,
}

impl Winograd {
    /// Transform PyTorch-layout `[O, C, 3, 3]` weights (in f64) for `m x m` output tiles
    /// (`m` = 2 or 4).
    pub(crate) fn new(weight: &[f32], o: usize, c: usize, m: usize) -> Self {
        assert!(m == 2 || m == 4, "Winograd tiles are 2x2 or 4x4");
        let t = m + 2;
        let mut s = Self {
            c,
            o,
            m,
            u: (0..t * t).map(|_| PackedMatrix::zeros(o, c)).collect(),
        };
        s.repack(weight);
        s
    }

    /// Output pixels per tile side.
    pub(crate) fn m(&self) -> usize {
        self.m
    }

    /// Input pixels per tile side.
    fn t(&self) -> usize {
        self.m + 2
    }

    /// New weights of the same shape, transformed into the same storage, a block of output
    /// channels at a time (`U = G g Gᵀ` of each `[3, 3]` kernel, in f64).
    pub(crate) fn repack(&mut self, weight: &[f32]) {
        let g: &[[f64; 3]] = if self.m == 2 { &G2 } else { &G4 };
        let (o, c, t) = (self.o, self.c, self.t());
        if c == 0 {
            return;
        }
        // Rows `oc0 ..` (a block of `ROW_BLOCK` output channels) of the `t²` matrices:
        // `rows[(xi * ROW_BLOCK + r) * c + ic]`.
        with_rows_buffer(t * t * ROW_BLOCK * c, |rows| {
            for oc0 in (0..o).step_by(ROW_BLOCK) {
                let nr = ROW_BLOCK.min(o - oc0);
                for r in 0..nr {
                    for ic in 0..c {
                        let k = &weight[((oc0 + r) * c + ic) * 9..][..9];
                        // G k   (t x 3)
                        let mut gk = [[0.0f64; 3]; 6];
                        for (i, row) in gk.iter_mut().take(t).enumerate() {
                            for (j, v) in row.iter_mut().enumerate() {
                                *v = (0..3).map(|q| g[i][q] * f64::from(k[q * 3 + j])).sum();
                            }
                        }
                        // U = (G k) Gᵀ  (t x t)
                        for i in 0..t {
                            for j in 0..t {
                                let v: f64 = (0..3).map(|q| gk[i][q] * g[j][q]).sum();
                                rows[((i * t + j) * ROW_BLOCK + r) * c + ic] = v as f32;
                            }
                        }
                    }
                }
                for (p, block) in self.u.iter_mut().zip(rows.chunks_exact(ROW_BLOCK * c)) {
                    p.set_rows(oc0, &block[..nr * c]);
                }
            }
        });
    }

    /// Tile rows (of `m` output rows each) per task: enough tiles to feed the matrix
    /// products, few enough that the transformed tiles stay in L2. Independent of the thread
    /// count.
    pub(crate) fn tile_rows(&self, tiles_w: usize) -> usize {
        let t = self.t();
        let per_tile_bytes = t * t * (self.c + self.o) * 4;
        let tiles = (super::TILE_BYTES / per_tile_bytes).clamp(8, 512);
        (tiles / tiles_w.max(1)).max(1)
    }

    /// Scratch values for a band of `tiles` tiles: their `t²` transformed `[tiles, C]`
    /// inputs and `t²` `[tiles, O]` products.
    pub(crate) fn scratch_len(&self, tiles: usize) -> usize {
        let t = self.t();
        t * t * tiles * (self.c + self.o)
    }

    /// One band of tile rows `ty0 ..` of one image; `dst` holds output rows `m * ty0 ..`
    /// (NHWC, whole rows), `epi` the output step of the same rows.
    pub(crate) fn band(
        &self,
        cpu: Cpu,
        img: &Image<'_>,
        ty0: usize,
        epi: Epilogue<'_>,
        dst: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let &Image {
            x, h, w, ow, pad, ..
        } = img;
        let (c, o, m, t) = (self.c, self.o, self.m, self.t());
        let tw = ow.div_ceil(m);
        let out_rows = dst.len() / (ow * o);
        let rows = out_rows.div_ceil(m);
        let tiles = rows * tw;
        let (vlen, mlen) = (t * t * tiles * c, t * t * tiles * o);
        if scratch.len() < self.scratch_len(tiles) {
            scratch.resize(self.scratch_len(tiles), 0.0);
        }
        let (v, prod) = scratch.split_at_mut(vlen);
        let prod = &mut prod[..mlen];
        for r in 0..rows {
            for tx in 0..tw {
                let tile = r * tw + tx;
                let y0 = (m * (ty0 + r)) as isize - pad[0] as isize;
                let x0 = (m * tx) as isize - pad[1] as isize;
                let input = Input {
                    x,
                    h,
                    w,
                    c,
                    y0,
                    x0,
                    v: &mut v[tile * c..],
                    stride: tiles * c,
                };
                if m == 2 {
                    cpu.dispatch(InputTransform::<F2, 4, 2, 16>(input, PhantomData));
                } else {
                    cpu.dispatch(InputTransform::<F4, 6, 4, 36>(input, PhantomData));
                }
            }
        }
        prod.fill(0.0);
        for (xi, u) in self.u.iter().enumerate() {
            u.matmul_acc(
                cpu,
                tiles,
                &v[xi * tiles * c..(xi + 1) * tiles * c],
                c,
                &mut prod[xi * tiles * o..(xi + 1) * tiles * o],
                o,
            );
        }
        for r in 0..rows {
            for tx in 0..tw {
                let tile = r * tw + tx;
                let output = Output {
                    m: &prod[tile * o..],
                    stride: tiles * o,
                    o,
                    epi,
                    dst: &mut *dst,
                    row0: m * r,
                    col0: m * tx,
                    rows: out_rows,
                    ow,
                };
                if m == 2 {
                    cpu.dispatch(OutputTransform::<F2, 4, 2, 8>(output, PhantomData));
                } else {
                    cpu.dispatch(OutputTransform::<F4, 6, 4, 24>(output, PhantomData));
                }
            }
        }
    }
}

#[inline(always)]
fn lanes<S: Simd>() -> usize {
    core::mem::size_of::<S::f32s>() / 4
}

/// A vector from `x` (at most a vector's worth): a plain load when `x` fills it (pulp's
/// partial load is an out-of-line masked load, even with every lane set), else the partial
/// one.
#[inline(always)]
fn load<S: Simd>(simd: S, x: &[f32]) -> S::f32s {
    match S::as_simd_f32s(x) {
        ([v], []) => *v,
        _ => simd.partial_load_f32s(x),
    }
}

/// Store `v` into `x` (at most a vector's worth), as [`load`] reads.
#[inline(always)]
fn store<S: Simd>(simd: S, x: &mut [f32], v: S::f32s) {
    match S::as_mut_simd_f32s(x) {
        ([d], []) => *d = v,
        _ => simd.partial_store_f32s(x, v),
    }
}

/// Where one tile's input transform reads and writes: the `t x t` input pixels from
/// `(y0, x0)` (zero outside the image), written to `v` at `k * stride` for transformed value
/// `k`.
struct Input<'a> {
    x: &'a [f32],
    h: usize,
    w: usize,
    c: usize,
    y0: isize,
    x0: isize,
    v: &'a mut [f32],
    stride: usize,
}

/// Where one tile's output transform reads and writes: transformed product `k` at
/// `m[k * stride ..]`, output rows `row0 ..` and columns `col0 ..` of `dst` (whole rows of
/// `ow` pixels, `rows` of them: what lies beyond is not written).
struct Output<'a> {
    m: &'a [f32],
    stride: usize,
    o: usize,
    epi: Epilogue<'a>,
    dst: &'a mut [f32],
    row0: usize,
    col0: usize,
    rows: usize,
    ow: usize,
}

/// Offsets in the image of a tile's `t x t = TT` input pixels from `(y0, x0)`, row by row,
/// `None` where the tile hangs over the padding.
#[inline(always)]
fn offsets<const TT: usize>(
    t: usize,
    x0: isize,
    y0: isize,
    w: usize,
    h: usize,
    c: usize,
) -> [Option<usize>; TT] {
    core::array::from_fn(|k| {
        let (yy, xx) = (y0 + (k / t) as isize, x0 + (k % t) as isize);
        (yy >= 0 && yy < h as isize && xx >= 0 && xx < w as isize)
            .then(|| (yy as usize * w + xx as usize) * c)
    })
}

/// A Winograd algorithm F(M x M, 3x3) on `T x T` tiles (`T = M + 2`), by its 1-D transforms,
/// applied to the columns and then to the rows of a tile.
trait Transforms<const T: usize, const M: usize> {
    /// `Bᵀ` applied to `T` values of an input tile.
    fn bt<S: Simd>(simd: S, d: [S::f32s; T]) -> [S::f32s; T];
    /// `Aᵀ` applied to `T` values of a product tile.
    fn at<S: Simd>(simd: S, m: [S::f32s; T]) -> [S::f32s; M];
}

/// F(2x2, 3x3): constants 0 and ±1 only.
struct F2;

impl Transforms<4, 2> for F2 {
    #[inline(always)]
    fn bt<S: Simd>(simd: S, [d0, d1, d2, d3]: [S::f32s; 4]) -> [S::f32s; 4] {
        [
            simd.sub_f32s(d0, d2),
            simd.add_f32s(d1, d2),
            simd.sub_f32s(d2, d1),
            simd.sub_f32s(d1, d3),
        ]
    }

    #[inline(always)]
    fn at<S: Simd>(simd: S, [m0, m1, m2, m3]: [S::f32s; 4]) -> [S::f32s; 2] {
        [
            simd.add_f32s(simd.add_f32s(m0, m1), m2),
            simd.sub_f32s(simd.sub_f32s(m1, m2), m3),
        ]
    }
}

/// F(4x4, 3x3): constants up to 5 in `Bᵀ` and 8 in `Aᵀ`, in FMAs.
struct F4;

impl Transforms<6, 4> for F4 {
    #[inline(always)]
    fn bt<S: Simd>(simd: S, [d0, d1, d2, d3, d4, d5]: [S::f32s; 6]) -> [S::f32s; 6] {
        let (two, four) = (simd.splat_f32s(2.0), simd.splat_f32s(4.0));
        let (m2, m4, m5) = (
            simd.splat_f32s(-2.0),
            simd.splat_f32s(-4.0),
            simd.splat_f32s(-5.0),
        );
        let (d13, d42) = (simd.sub_f32s(d3, d1), simd.sub_f32s(d4, d2));
        [
            simd.mul_add_f32s(four, d0, simd.mul_add_f32s(m5, d2, d4)),
            simd.mul_add_f32s(m4, simd.add_f32s(d1, d2), simd.add_f32s(d3, d4)),
            simd.mul_add_f32s(four, simd.sub_f32s(d1, d2), simd.sub_f32s(d4, d3)),
            simd.mul_add_f32s(two, d13, d42),
            simd.mul_add_f32s(m2, d13, d42),
            simd.mul_add_f32s(four, d1, simd.mul_add_f32s(m5, d3, d5)),
        ]
    }

    #[inline(always)]
    fn at<S: Simd>(simd: S, [m0, m1, m2, m3, m4, m5]: [S::f32s; 6]) -> [S::f32s; 4] {
        let (a, b) = (simd.add_f32s(m1, m2), simd.sub_f32s(m1, m2));
        let (c, d) = (simd.add_f32s(m3, m4), simd.sub_f32s(m3, m4));
        [
            simd.add_f32s(simd.add_f32s(m0, a), c),
            simd.mul_add_f32s(simd.splat_f32s(2.0), d, b),
            simd.mul_add_f32s(simd.splat_f32s(4.0), c, a),
            simd.add_f32s(simd.mul_add_f32s(simd.splat_f32s(8.0), d, b), m5),
        ]
    }
}

/// One tile's input transform `Bᵀ d B`, a vector of channels at a time (`TT = T * T`: the
/// tile's values, sized exactly so that they stay in registers).
struct InputTransform<'a, F, const T: usize, const M: usize, const TT: usize>(
    Input<'a>,
    PhantomData<F>,
);

impl<F: Transforms<T, M>, const T: usize, const M: usize, const TT: usize> WithSimd
    for InputTransform<'_, F, T, M, TT>
{
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Input {
            x,
            h,
            w,
            c,
            y0,
            x0,
            v,
            stride,
        } = self.0;
        const { assert!(TT == T * T) };
        let l = lanes::<S>();
        let zero = simd.splat_f32s(0.0);
        let at = offsets::<TT>(T, x0, y0, w, h, c);
        let mut c0 = 0;
        while c0 < c {
            let n = l.min(c - c0);
            // Bᵀ d, column by column.
            let mut r = [zero; TT];
            for j in 0..T {
                let col = core::array::from_fn(|i| {
                    at[i * T + j].map_or(zero, |off| load(simd, &x[off + c0..off + c0 + n]))
                });
                for (i, val) in F::bt(simd, col).into_iter().enumerate() {
                    r[i * T + j] = val;
                }
            }
            // (Bᵀ d) B, row by row.
            for i in 0..T {
                let row = core::array::from_fn(|j| r[i * T + j]);
                for (j, val) in F::bt(simd, row).into_iter().enumerate() {
                    let base = (i * T + j) * stride + c0;
                    store(simd, &mut v[base..base + n], val);
                }
            }
            c0 += n;
        }
    }
}

/// One tile's output transform `Aᵀ m A`, then bias, residual and ReLU, a vector of output
/// channels at a time (`MT = M * T`: the values between the two passes, sized exactly).
struct OutputTransform<'a, F, const T: usize, const M: usize, const MT: usize>(
    Output<'a>,
    PhantomData<F>,
);

impl<F: Transforms<T, M>, const T: usize, const M: usize, const MT: usize> WithSimd
    for OutputTransform<'_, F, T, M, MT>
{
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Output {
            m,
            stride,
            o,
            epi,
            dst,
            row0,
            col0,
            rows,
            ow,
        } = self.0;
        const { assert!(MT == M * T) };
        let l = lanes::<S>();
        let zero = simd.splat_f32s(0.0);
        let out_rows = rows.saturating_sub(row0).min(M);
        let out_cols = ow.saturating_sub(col0).min(M);
        let mut o0 = 0;
        while o0 < o {
            let n = l.min(o - o0);
            // Aᵀ m, column by column: M rows of T.
            let mut s = [zero; MT];
            for j in 0..T {
                let col = core::array::from_fn(|i| {
                    let k = (i * T + j) * stride + o0;
                    load(simd, &m[k..k + n])
                });
                for (a, val) in F::at(simd, col).into_iter().enumerate() {
                    s[a * T + j] = val;
                }
            }
            let b = load(simd, epi.bias(o0..o0 + n));
            for a in 0..out_rows {
                let y = F::at(simd, core::array::from_fn(|j| s[a * T + j]));
                for (bx, yv) in y.into_iter().take(out_cols).enumerate() {
                    let base = ((row0 + a) * ow + col0 + bx) * o + o0;
                    let mut val = simd.add_f32s(yv, b);
                    if let Some(r) = epi.residual() {
                        val = simd.add_f32s(val, load(simd, &r[base..base + n]));
                    }
                    if epi.applies_relu() {
                        val = relu_v(simd, val);
                    }
                    store(simd, &mut dst[base..base + n], val);
                }
            }
            o0 += n;
        }
    }
}
