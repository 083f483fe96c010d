//! Direct grouped convolution for narrow groups (ResNeXt's 4- and 8-channel groups), stride 1.
//!
//! A matrix product per group would have only `Og` rows, far fewer than a vector register holds
//! across. Here the vectors run along output pixels instead: per group, the band's input rows
//! (with their halo) are copied to channel-major planes with zero borders, and each output
//! channel accumulates `plane[c][y + ky][x + kx .. + L] * w[o][c][ky][kx]` — one vector load
//! shared by up to four output channels, weights broadcast from memory, no padding
//! arithmetic. The output step adds bias and residual and applies ReLU as it writes the NHWC
//! result.

use super::super::simd::{relu_s, relu_v};
use super::{Epilogue, Image};
use crate::Cpu;
use pulp::{Simd, WithSimd};

/// Output channels computed together from one input vector.
const OUT_BLOCK: usize = 4;

/// Output pixels per band, the unit of parallel work (a fixed split: results do not depend on
/// the thread count).
const BAND_PIXELS: usize = 512;

#[derive(Debug, Clone)]
pub(crate) struct GroupedDirect {
    groups: usize,
    cg: usize,
    og: usize,
    kh: usize,
    kw: usize,
    /// `[G, Cg, KH, KW, Og]`: for one tap, a group's output channels are adjacent.
    w: Vec<f32>,
}

impl GroupedDirect {
    /// From PyTorch-layout weights `[O, Cg, KH, KW]` with `groups` groups.
    pub(crate) fn new(weight: &[f32], [o, cg, kh, kw]: [usize; 4], groups: usize) -> Self {
        let mut s = Self {
            groups,
            cg,
            og: o / groups,
            kh,
            kw,
            w: vec![0.0; weight.len()],
        };
        s.repack(weight);
        s
    }

    /// New weights of the same shape, into the same storage.
    pub(crate) fn repack(&mut self, weight: &[f32]) {
        let (groups, og, cg, taps) = (self.groups, self.og, self.cg, self.kh * self.kw);
        for g in 0..groups {
            for ol in 0..og {
                for c in 0..cg {
                    for t in 0..taps {
                        let src = ((g * og + ol) * cg + c) * taps + t;
                        self.w[((g * cg + c) * taps + t) * og + ol] = weight[src];
                    }
                }
            }
        }
    }

    /// Row width and size of one channel plane for `rows` output rows `ow` wide, computed
    /// `step` pixels at a time: the output row's pixels rounded up to whole steps plus the
    /// kernel's reach, over the rows plus the kernel's reach, zero outside the image; so every
    /// load is a full vector inside the plane.
    fn planes(&self, rows: usize, ow: usize, step: usize) -> (usize, usize) {
        let wp = ow.next_multiple_of(step) + self.kw - 1;
        (wp, (rows + self.kh - 1) * wp)
    }

    /// Scratch values of a band of `rows` output rows `ow` wide, at any vector width (steps
    /// of two vectors of at most 16 lanes divide 32).
    pub(crate) fn scratch_len(&self, rows: usize, ow: usize) -> usize {
        self.cg * self.planes(rows, ow, 32).1
    }

    /// Output rows per band for an output `ow` pixels wide.
    pub(crate) fn band_rows(ow: usize, oh: usize) -> usize {
        let rows = BAND_PIXELS.div_ceil(ow.max(1)).clamp(1, oh.max(1));
        // Balance the bands of an image.
        oh.div_ceil(oh.div_ceil(rows).max(1)).max(1)
    }

    /// Output rows `oy0 ..` of one image into `dst` (NHWC, whole rows); `epi` is the output
    /// step of the same rows.
    pub(crate) fn band(
        &self,
        cpu: Cpu,
        img: &Image<'_>,
        oy0: usize,
        epi: Epilogue<'_>,
        dst: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        cpu.dispatch(Band {
            conv: self,
            img: *img,
            oy0,
            epi,
            dst,
            scratch,
        });
    }
}

struct Band<'a> {
    conv: &'a GroupedDirect,
    img: Image<'a>,
    oy0: usize,
    epi: Epilogue<'a>,
    dst: &'a mut [f32],
    scratch: &'a mut Vec<f32>,
}

/// Where the output of one group's block of output channels goes, and its epilogue.
struct Out<'a> {
    dst: &'a mut [f32],
    epi: Epilogue<'a>,
    /// Total output channels (the NHWC pixel stride).
    o: usize,
}

impl WithSimd for Band<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            conv,
            img:
                Image {
                    x,
                    h,
                    w,
                    c,
                    ow,
                    pad: [ph, pw],
                    ..
                },
            oy0,
            epi,
            dst,
            scratch,
        } = self;
        let GroupedDirect {
            groups,
            cg,
            og,
            kh,
            kw,
            ..
        } = *conv;
        let o = groups * og;
        let lanes = core::mem::size_of::<S::f32s>() / 4;
        let step = 2 * lanes;
        let rows = dst.len() / (ow * o);
        let (wp, plane) = conv.planes(rows, ow, step);
        let rin = rows + kh - 1;
        if scratch.len() < cg * plane {
            scratch.resize(cg * plane, 0.0);
        }
        let planes = &mut scratch[..cg * plane];
        let mut out = Out { dst, epi, o };
        // Borders (padding rows and columns, the round-up) are zero once: every group copies
        // into the same interior positions.
        planes.fill(0.0);
        for g in 0..groups {
            for r in 0..rin {
                let iy = (oy0 + r) as isize - ph as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let src_row = &x[iy as usize * w * c..(iy as usize + 1) * w * c];
                for cc in 0..cg {
                    let dst_row = &mut planes[cc * plane + r * wp + pw..][..w];
                    let src = src_row[g * cg + cc..].iter().step_by(c);
                    for (d, v) in dst_row.iter_mut().zip(src) {
                        *d = *v;
                    }
                }
            }
            let wg = &conv.w[g * cg * kh * kw * og..(g + 1) * cg * kh * kw * og];
            for r in 0..rows {
                for ox0 in (0..ow).step_by(step) {
                    let mut ob = 0;
                    while ob < og {
                        let job = Job {
                            planes,
                            plane,
                            wp,
                            wg,
                            cg,
                            og,
                            kh,
                            kw,
                            r,
                            ox0,
                            ob,
                        };
                        let ch0 = g * og + ob;
                        let pix = (r * ow + ox0, ow - ox0);
                        match og - ob {
                            1 => job.run::<S, 1>(simd, &mut out, ch0, pix),
                            2 => job.run::<S, 2>(simd, &mut out, ch0, pix),
                            3 => job.run::<S, 3>(simd, &mut out, ch0, pix),
                            _ => job.run::<S, OUT_BLOCK>(simd, &mut out, ch0, pix),
                        }
                        ob += OUT_BLOCK;
                    }
                }
            }
        }
    }
}

/// One step: `2 * lanes` output pixels of one row times `NB` output channels of one group.
struct Job<'a> {
    planes: &'a [f32],
    plane: usize,
    wp: usize,
    wg: &'a [f32],
    cg: usize,
    og: usize,
    kh: usize,
    kw: usize,
    r: usize,
    ox0: usize,
    ob: usize,
}

impl Job<'_> {
    /// Accumulate and write output channels `ch0 .. ch0 + NB` of pixels `p0 .. p0 + left`
    /// (at most one step) of the band, `pix = (p0, left)`.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // `vals` is read transposed, `[q][i]`
    fn run<S: Simd, const NB: usize>(
        &self,
        simd: S,
        out: &mut Out<'_>,
        ch0: usize,
        (p0, left): (usize, usize),
    ) {
        let lanes = core::mem::size_of::<S::f32s>() / 4;
        let zero = simd.splat_f32s(0.0);
        // The output step, part 1: accumulate onto the bias.
        let mut acc = [[zero; 2]; NB];
        for (q, a) in acc.iter_mut().enumerate() {
            *a = [simd.splat_f32s(out.epi.bias_at(ch0 + q)); 2];
        }
        for cc in 0..self.cg {
            for ky in 0..self.kh {
                let row = &self.planes[cc * self.plane + (self.r + ky) * self.wp..][..self.wp];
                for kx in 0..self.kw {
                    let (v, _) = S::as_simd_f32s(&row[self.ox0 + kx..self.ox0 + kx + 2 * lanes]);
                    let (v0, v1) = (v[0], v[1]);
                    let t = (cc * self.kh + ky) * self.kw + kx;
                    let wv = &self.wg[t * self.og + self.ob..][..NB];
                    for q in 0..NB {
                        let s = simd.splat_f32s(wv[q]);
                        acc[q][0] = simd.mul_add_f32s(s, v0, acc[q][0]);
                        acc[q][1] = simd.mul_add_f32s(s, v1, acc[q][1]);
                    }
                }
            }
        }
        // Part 2: ReLU in registers when there is no residual to add first (ResNeXt's grouped
        // convs), then the scatter to the NHWC pixels.
        let relu_now = out.epi.applies_relu() && out.epi.residual().is_none();
        // Two vectors of at most 16 lanes (AVX-512) per output channel.
        debug_assert!(lanes <= 16);
        let mut vals = [[0.0f32; 32]; NB];
        for q in 0..NB {
            let (head, _) = S::as_mut_simd_f32s(&mut vals[q][..2 * lanes]);
            for (h, a) in head.iter_mut().zip(acc[q]) {
                *h = if relu_now { relu_v(simd, a) } else { a };
            }
        }
        let o = out.o;
        for i in 0..left.min(2 * lanes) {
            let base = (p0 + i) * o + ch0;
            let px = &mut out.dst[base..base + NB];
            match out.epi.residual() {
                None => {
                    for q in 0..NB {
                        px[q] = vals[q][i];
                    }
                }
                Some(res) => {
                    let res = &res[base..base + NB];
                    for q in 0..NB {
                        let v = vals[q][i] + res[q];
                        px[q] = if out.epi.applies_relu() { relu_s(v) } else { v };
                    }
                }
            }
        }
    }
}
