//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions on NHWC data.
//!
//! Each 2x2 block of output pixels is computed from a 4x4 input tile with 16 multiplications
//! per (input, output) channel pair instead of 36: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin &
//! Gray's F(2,3) matrices, whose constants are 0, ±1 and ±1/2, so the transforms add almost no
//! rounding error). The weights are transformed (and packed for gemm's micro-kernels) once at
//! build time; per tile band, the input transform writes 16 `[tiles, C]` matrices, 16 matrix
//! products give 16 `[tiles, O]` matrices, and the output transform adds bias and residual and
//! applies ReLU as it writes the result. Both transforms are SIMD across channels.

use super::super::matmul::{PackedMatrix, ROW_BLOCK, with_rows_buffer};
use super::super::simd::relu_v;
use super::{Epilogue, Image};
use crate::Cpu;
use pulp::{Simd, WithSimd};

#[derive(Debug, Clone)]
pub(crate) struct Winograd {
    c: usize,
    o: usize,
    /// `U = G g Gᵀ`: 16 matrices `[O, C]`, packed for the micro-kernels.
    u: Vec<PackedMatrix>,
}

impl Winograd {
    /// Transform PyTorch-layout `[O, C, 3, 3]` weights (in f64).
    pub(crate) fn new(weight: &[f32], o: usize, c: usize) -> Self {
        let mut s = Self {
            c,
            o,
            u: (0..16).map(|_| PackedMatrix::zeros(o, c)).collect(),
        };
        s.repack(weight);
        s
    }

    /// New weights of the same shape, transformed into the same storage, a block of output
    /// channels at a time (`U = G g Gᵀ` of each `[3, 3]` kernel, in f64).
    pub(crate) fn repack(&mut self, weight: &[f32]) {
        const G: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let (o, c) = (self.o, self.c);
        if c == 0 {
            return;
        }
        // Rows `oc0 ..` (a block of `ROW_BLOCK` output channels) of the 16 matrices:
        // `rows[(xi * ROW_BLOCK + r) * c + ic]`.
        with_rows_buffer(16 * ROW_BLOCK * c, |rows| {
            for oc0 in (0..o).step_by(ROW_BLOCK) {
                let nr = ROW_BLOCK.min(o - oc0);
                for r in 0..nr {
                    for ic in 0..c {
                        let g = &weight[((oc0 + r) * c + ic) * 9..][..9];
                        // t = G g   (4x3)
                        let mut t = [[0.0f64; 3]; 4];
                        for (i, row) in t.iter_mut().enumerate() {
                            for (j, v) in row.iter_mut().enumerate() {
                                *v = (0..3).map(|k| G[i][k] * f64::from(g[k * 3 + j])).sum();
                            }
                        }
                        // U = t Gᵀ  (4x4)
                        for i in 0..4 {
                            for j in 0..4 {
                                let v: f64 = (0..3).map(|k| t[i][k] * G[j][k]).sum();
                                rows[((i * 4 + j) * ROW_BLOCK + r) * c + ic] = v as f32;
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

    /// Tile rows (of 2 output rows each) per task: enough tiles to feed the matrix products,
    /// few enough that the transformed tiles stay in L2. Independent of the thread count.
    pub(crate) fn tile_rows(&self, tiles_w: usize) -> usize {
        let per_tile_bytes = 16 * (self.c + self.o) * 4;
        let tiles = (super::TILE_BYTES / per_tile_bytes).clamp(8, 512);
        (tiles / tiles_w.max(1)).max(1)
    }

    /// Scratch values for a band of `tiles` 2x2 tiles: their 16 transformed `[tiles, C]`
    /// inputs and 16 `[tiles, O]` products.
    pub(crate) fn scratch_len(&self, tiles: usize) -> usize {
        16 * tiles * (self.c + self.o)
    }

    /// One band of tile rows `ty0 ..` of one image; `dst` holds output rows `2 * ty0 ..`
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
        let (c, o) = (self.c, self.o);
        let tw = ow.div_ceil(2);
        let out_rows = dst.len() / (ow * o);
        let rows = out_rows.div_ceil(2);
        let tiles = rows * tw;
        let (vlen, mlen) = (16 * tiles * c, 16 * tiles * o);
        if scratch.len() < self.scratch_len(tiles) {
            scratch.resize(self.scratch_len(tiles), 0.0);
        }
        let (v, m) = scratch.split_at_mut(vlen);
        let m = &mut m[..mlen];
        for r in 0..rows {
            for tx in 0..tw {
                let t = r * tw + tx;
                let y0 = (2 * (ty0 + r)) as isize - pad[0] as isize;
                let x0 = (2 * tx) as isize - pad[1] as isize;
                cpu.dispatch(InputTransform {
                    x,
                    h,
                    w,
                    c,
                    y0,
                    x0,
                    v: &mut v[t * c..],
                    stride: tiles * c,
                });
            }
        }
        m.fill(0.0);
        for (xi, u) in self.u.iter().enumerate() {
            u.matmul_acc(
                cpu,
                tiles,
                &v[xi * tiles * c..(xi + 1) * tiles * c],
                c,
                &mut m[xi * tiles * o..(xi + 1) * tiles * o],
                o,
            );
        }
        for r in 0..rows {
            for tx in 0..tw {
                let t = r * tw + tx;
                cpu.dispatch(OutputTransform {
                    m: &m[t * o..],
                    stride: tiles * o,
                    o,
                    epi,
                    dst: &mut *dst,
                    row0: 2 * r,
                    col0: 2 * tx,
                    rows: out_rows,
                    ow,
                });
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

struct InputTransform<'a> {
    x: &'a [f32],
    h: usize,
    w: usize,
    c: usize,
    y0: isize,
    x0: isize,
    v: &'a mut [f32],
    stride: usize,
}

impl WithSimd for InputTransform<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            h,
            w,
            c,
            y0,
            x0,
            v,
            stride,
        } = self;
        let l = lanes::<S>();
        let zero = simd.splat_f32s(0.0);
        // Offsets of the 16 input pixels, None where the tile hangs over the padding.
        let mut at = [None; 16];
        for i in 0..4 {
            for j in 0..4 {
                let (yy, xx) = (y0 + i as isize, x0 + j as isize);
                if yy >= 0 && yy < h as isize && xx >= 0 && xx < w as isize {
                    at[i * 4 + j] = Some((yy as usize * w + xx as usize) * c);
                }
            }
        }
        let mut c0 = 0;
        while c0 < c {
            let n = l.min(c - c0);
            let mut d = [zero; 16];
            for k in 0..16 {
                if let Some(off) = at[k] {
                    d[k] = load(simd, &x[off + c0..off + c0 + n]);
                }
            }
            // Bᵀ d: combine rows.
            let mut r = [zero; 16];
            for j in 0..4 {
                let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
                r[j] = simd.sub_f32s(d0, d2);
                r[4 + j] = simd.add_f32s(d1, d2);
                r[8 + j] = simd.sub_f32s(d2, d1);
                r[12 + j] = simd.sub_f32s(d1, d3);
            }
            // (Bᵀ d) B: combine columns.
            for i in 0..4 {
                let (a0, a1, a2, a3) = (r[i * 4], r[i * 4 + 1], r[i * 4 + 2], r[i * 4 + 3]);
                let out = [
                    simd.sub_f32s(a0, a2),
                    simd.add_f32s(a1, a2),
                    simd.sub_f32s(a2, a1),
                    simd.sub_f32s(a1, a3),
                ];
                for (j, val) in out.into_iter().enumerate() {
                    let base = (i * 4 + j) * stride + c0;
                    store(simd, &mut v[base..base + n], val);
                }
            }
            c0 += n;
        }
    }
}

struct OutputTransform<'a> {
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

impl WithSimd for OutputTransform<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            m,
            stride,
            o,
            epi,
            dst,
            row0,
            col0,
            rows,
            ow,
        } = self;
        let l = lanes::<S>();
        let zero = simd.splat_f32s(0.0);
        let mut o0 = 0;
        while o0 < o {
            let n = l.min(o - o0);
            let mut mm = [zero; 16];
            for (k, v) in mm.iter_mut().enumerate() {
                *v = load(simd, &m[k * stride + o0..k * stride + o0 + n]);
            }
            // Aᵀ m: 2 rows.
            let mut s = [zero; 8];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mm[j], mm[4 + j], mm[8 + j], mm[12 + j]);
                s[j] = simd.add_f32s(simd.add_f32s(m0, m1), m2);
                s[4 + j] = simd.sub_f32s(simd.sub_f32s(m1, m2), m3);
            }
            let b = load(simd, epi.bias(o0..o0 + n));
            for a in 0..2 {
                let (s0, s1, s2, s3) = (s[a * 4], s[a * 4 + 1], s[a * 4 + 2], s[a * 4 + 3]);
                let y = [
                    simd.add_f32s(simd.add_f32s(s0, s1), s2),
                    simd.sub_f32s(simd.sub_f32s(s1, s2), s3),
                ];
                let oy = row0 + a;
                if oy >= rows {
                    continue;
                }
                for (bx, yv) in y.into_iter().enumerate() {
                    let ox = col0 + bx;
                    if ox >= ow {
                        continue;
                    }
                    let base = (oy * ow + ox) * o + o0;
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
