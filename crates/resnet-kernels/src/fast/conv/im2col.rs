//! Any convolution as matrix products over im2col tiles: each tile of output pixels gathers
//! its input patches into a small buffer (sized for the L2 cache, never a whole image), then
//! one product per block of groups.

use super::super::matmul::{OutRows, PackedMatrix, ROW_BLOCK};
use super::super::simd::simd_scope;
use super::{Image, Images};
use crate::{Conv2dParams, Cpu};

/// The packed weights of an im2col convolution: one block-diagonal matrix per block of
/// adjacent groups (see [`super_group`]).
#[derive(Debug, Clone)]
pub(crate) struct Im2col {
    dims: [usize; 4],
    params: Conv2dParams,
    /// Groups per block.
    sg: usize,
    packed: Vec<PackedMatrix>,
}

impl Im2col {
    /// From PyTorch-layout weights `[O, C/groups, KH, KW]`.
    pub(crate) fn new(weight: &[f32], dims: [usize; 4], params: Conv2dParams) -> Self {
        let [o, cg, kh, kw] = dims;
        let g = params.groups;
        let og = o / g;
        let kg = kh * kw * cg;
        let sg = super_group(g, og);
        // One block-diagonal matrix per block of `sg` adjacent groups: `[sg * Og, sg * Kg]`
        // with `k = (ky * KW + kx) * sg * Cg + cl` (the im2col order), zero where input
        // channel `cl` is not in output row `i`'s group.
        if g == 1 {
            let mut s = Self {
                dims,
                params,
                sg,
                packed: vec![PackedMatrix::zeros(o, kg)],
            };
            s.repack(weight);
            return s;
        }
        let packed = (0..g / sg)
            .map(|b| {
                PackedMatrix::new(sg * og, sg * kg, |i, kk| {
                    Self::at(weight, dims, g, sg, b, i, kk)
                })
            })
            .collect();
        Self {
            dims,
            params,
            sg,
            packed,
        }
    }

    /// Element `(i, kk)` of block `b`'s matrix: `k = (ky * KW + kx) * sg * Cg + cl` (the
    /// im2col order), zero where input channel `cl` is not in output row `i`'s group.
    #[inline(always)]
    fn at(
        weight: &[f32],
        [o, cg, kh, kw]: [usize; 4],
        g: usize,
        sg: usize,
        b: usize,
        i: usize,
        kk: usize,
    ) -> f32 {
        let og = o / g;
        let (gl, ol) = (i / og, i % og);
        let (tap, cl) = (kk / (sg * cg), kk % (sg * cg));
        if cl / cg != gl {
            return 0.0;
        }
        let c = cl % cg;
        weight[(((b * sg + gl) * og + ol) * cg + c) * kh * kw + tap]
    }

    /// New weights of the same shape, packed into the same storage (bitwise what
    /// [`Im2col::new`] would hold).
    pub(crate) fn repack(&mut self, weight: &[f32]) {
        let (dims, g, sg) = (self.dims, self.params.groups, self.sg);
        if g == 1 {
            // Row `i` is output channel `i`'s weights in im2col order `(tap, channel)`.
            let [_, cg, kh, kw] = dims;
            let taps = kh * kw;
            // Straight from the weights into the panels, a block of rows at a time: for each
            // input channel, the block's `taps` values per row (adjacent in the source) go to
            // the `taps` depths `t * C + c` (a transposition that stays in L1; through a
            // buffer of whole rows it cost two passes over memory).
            let packed = &mut self.packed[0];
            let o = dims[0];
            for i0 in (0..o).step_by(ROW_BLOCK) {
                let nr = ROW_BLOCK.min(o - i0);
                for c in 0..cg {
                    for t in 0..taps {
                        let run = packed.run_mut(i0, nr, t * cg + c);
                        for (r, d) in run.iter_mut().enumerate() {
                            *d = weight[((i0 + r) * cg + c) * taps + t];
                        }
                    }
                }
            }
            return;
        }
        for (b, p) in self.packed.iter_mut().enumerate() {
            p.refill(|i, kk| Self::at(weight, dims, g, sg, b, i, kk));
        }
    }

    /// Length of one im2col row (the reduction depth over all groups).
    pub(crate) fn row_len(&self) -> usize {
        let [_, cg, kh, kw] = self.dims;
        kh * kw * cg * self.params.groups
    }

    /// Width of the weight panels (channel ranges of a split start at a multiple of it).
    pub(crate) fn panel(&self) -> usize {
        self.packed[0].panel()
    }

    /// The sums of output pixels `p0 .. p0 + rows` of the task's image (or of all pixels of
    /// its several images: `p0` 0, `rows` all of theirs) into `dst`, started and ended as
    /// `dst.ends` says, with `col` as the im2col buffer (grown if short). Channel ranges
    /// other than all of them only come with one group.
    ///
    /// # Safety
    /// As [`PackedMatrix::matmul_acc_rows`]: `dst` covers `rows` rows of its channels, used by
    /// no one else during the call.
    pub(crate) unsafe fn tile(
        &self,
        cpu: Cpu,
        src: &Images<'_, '_>,
        p0: usize,
        rows: usize,
        dst: OutRows<'_>,
        col: &mut Vec<f32>,
    ) {
        let k = self.row_len();
        if k == 0 {
            return;
        }
        if col.len() < rows * k {
            col.resize(rows * k, 0.0);
        }
        let col = &mut col[..rows * k];
        // Compiled for the CPU's instruction set, so that the copies are its widest moves.
        simd_scope(
            cpu,
            #[inline(always)]
            || {
                let per = rows / src.range.len().max(1);
                for (ni, col) in src.range.clone().zip(col.chunks_mut(per * k)) {
                    self.gather(&(src.image)(ni), p0, col);
                }
            },
        );
        if self.packed.len() == 1 {
            // SAFETY: passed on from the caller.
            unsafe { self.packed[0].matmul_acc_rows(cpu, rows, col, k, dst) };
            return;
        }
        let o = self.dims[0];
        debug_assert!(dst.chans == (0..o));
        let [_, cg, kh, kw] = self.dims;
        let og = o / self.params.groups;
        let (kb, ob) = (self.sg * kh * kw * cg, self.sg * og);
        for (b, packed) in self.packed.iter().enumerate() {
            let part = OutRows {
                ptr: dst.ptr.wrapping_add(b * ob),
                ld: dst.ld,
                chans: 0..ob,
                ends: dst.ends.channels_from(b * ob),
            };
            // SAFETY: all channels are the caller's (grouped convs are not split); block `b`
            // writes its own `ob` of them.
            unsafe { packed.matmul_acc_rows(cpu, rows, &col[b * kb..], k, part) };
        }
    }

    /// Gather the patches of output pixels `p0 ..` into `col` (`[rows, K]`, K ordered
    /// `(block, ky, kx, c)` for blocks of `super_group` groups), zeros where the window hangs
    /// over the padding.
    #[inline(always)]
    fn gather(&self, img: &Image<'_>, p0: usize, col: &mut [f32]) {
        let &Image { x, h, w, c, ow, .. } = img;
        let [_, cg, kh, kw] = self.dims;
        // Blocks of `sg` adjacent groups are laid out as one group of `sg * Cg` channels.
        let (g, cg) = (self.params.groups / self.sg, cg * self.sg);
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
        .find(|&s| groups.is_multiple_of(s) && s * per_group_out <= 16)
        .unwrap_or(1)
}

/// Copy a run of values. Runs of a few vectors (a kernel row of a 16-channel conv: 48 values)
/// are copied in fixed blocks of 16, each one vector move in place where the caller runs in the
/// CPU's dispatch (as [`Im2col::gather`] does): a call to `memcpy` for them was a twentieth of a
/// CIFAR ResNet's training step. Long runs go to `memcpy`.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    if dst.len() > 256 {
        dst.copy_from_slice(src);
        return;
    }
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        // Fixed-size blocks: a move of 64 bytes, never a call.
        let d: &mut [f32; 16] = d.try_into().expect("a block of 16");
        *d = *<&[f32; 16]>::try_from(s).expect("a block of 16");
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}
