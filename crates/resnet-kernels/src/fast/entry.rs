//! The model's entry: NCHW RGB images to NHWC, interleaved in vector registers.
//!
//! Generic SIMD (pulp's `Simd`) has no cross-lane permutes, so this is written per instruction
//! set through pulp's safe intrinsic wrappers: with a `V4`/`V3` token from feature detection,
//! no `unsafe` is needed.

use crate::Cpu;

/// Output element `j` of a block (pixel `j / 3`, channel `j % 3`) as `(pixel, channel)`.
#[cfg(target_arch = "x86_64")]
const fn source(j: usize) -> (usize, usize) {
    (j / 3, j % 3)
}

/// Interleave each image's three planes of `pixels` values (`src`, NCHW) into `dst` (NHWC).
/// `false` (nothing written) when this CPU has no vector path for it.
pub(crate) fn rgb_to_pixels(cpu: Cpu, pixels: usize, src: &[f32], dst: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    match cpu.arch() {
        pulp::Arch::V4(simd) => {
            pulp::Simd::vectorize(
                simd,
                Rgb {
                    simd,
                    pixels,
                    src,
                    dst,
                },
            );
            return true;
        }
        pulp::Arch::V3(simd) => {
            pulp::Simd::vectorize(
                simd,
                Rgb {
                    simd,
                    pixels,
                    src,
                    dst,
                },
            );
            return true;
        }
        _ => {}
    }
    let _ = (cpu, pixels, src, dst);
    false
}

/// A chunk of exactly `L` values as an array reference.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_array<const L: usize>(x: &[f32]) -> &[f32; L] {
    x.try_into().expect("chunks of L values")
}

/// For each image of `src` (three planes of `pixels` values), call `block(r, g, b, out)` on
/// every run of `L` pixels (`L` values of each plane, `3 L` interleaved outputs), then
/// interleave the remaining pixels in scalar code.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_block<const L: usize>(
    pixels: usize,
    src: &[f32],
    dst: &mut [f32],
    mut block: impl FnMut([&[f32; L]; 3], &mut [f32]),
) {
    let img = 3 * pixels;
    if img == 0 {
        return;
    }
    for (s, d) in src.chunks_exact(img).zip(dst.chunks_exact_mut(img)) {
        let (r, gb) = s.split_at(pixels);
        let (g, b) = gb.split_at(pixels);
        let (rs, gs, bs) = (r.chunks_exact(L), g.chunks_exact(L), b.chunks_exact(L));
        let done = rs.len() * L;
        for (((r, g), b), out) in rs.zip(gs).zip(bs).zip(d.chunks_exact_mut(3 * L)) {
            block([as_array(r), as_array(g), as_array(b)], out);
        }
        for p in done..pixels {
            for (ch, plane) in [r, g, b].iter().enumerate() {
                d[p * 3 + ch] = plane[p];
            }
        }
    }
}

/// One conversion, with the token of the instruction set it is written for.
#[cfg(target_arch = "x86_64")]
struct Rgb<'a, T> {
    simd: T,
    pixels: usize,
    src: &'a [f32],
    dst: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Rgb<'_, pulp::x86::V4> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use core::arch::x86_64::{__m512, __m512i};
        let Self {
            simd,
            pixels,
            src,
            dst,
        } = self;
        let avx = simd.avx512f;
        // 16 pixels → three output vectors. Output vector `t`, lane `l` is element 16t + l:
        // the first permute takes red or green (index 16+ = second source), the second keeps
        // those lanes and fills in blue.
        let mut first = [[0i32; 16]; 3];
        let mut second = [[0i32; 16]; 3];
        for (t, (f, s)) in first.iter_mut().zip(&mut second).enumerate() {
            for (l, (f, s)) in f.iter_mut().zip(s).enumerate() {
                let (p, ch) = source(16 * t + l);
                *f = [p, 16 + p, 0][ch] as i32;
                *s = if ch == 2 { 16 + p } else { l } as i32;
            }
        }
        let first: [__m512i; 3] = first.map(bytemuck::cast);
        let second: [__m512i; 3] = second.map(bytemuck::cast);
        for_each_block::<16>(pixels, src, dst, |[r, g, b], out| {
            let (r, g, b): (__m512, __m512, __m512) =
                (bytemuck::cast(*r), bytemuck::cast(*g), bytemuck::cast(*b));
            for (t, o) in out.chunks_exact_mut(16).enumerate() {
                let v = avx._mm512_permutex2var_ps(r, first[t], g);
                let v = avx._mm512_permutex2var_ps(v, second[t], b);
                o.copy_from_slice(&bytemuck::cast::<__m512, [f32; 16]>(v));
            }
        });
    }
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Rgb<'_, pulp::x86::V3> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use core::arch::x86_64::{__m256, __m256i};
        let Self {
            simd,
            pixels,
            src,
            dst,
        } = self;
        let (avx, avx2) = (simd.avx, simd.avx2);
        // 8 pixels → three output vectors: each channel permuted into place, then blended.
        let mut idx = [[0i32; 8]; 3];
        for (t, row) in idx.iter_mut().enumerate() {
            for (l, v) in row.iter_mut().enumerate() {
                *v = source(8 * t + l).0 as i32;
            }
        }
        let idx: [__m256i; 3] = idx.map(bytemuck::cast);
        for_each_block::<8>(pixels, src, dst, |[r, g, b], out| {
            let (r, g, b): (__m256, __m256, __m256) =
                (bytemuck::cast(*r), bytemuck::cast(*g), bytemuck::cast(*b));
            for (t, o) in out.chunks_exact_mut(8).enumerate() {
                // Lane l of output vector t holds channel (8t + l) % 3: the blend masks
                // pick green where that is 1 and blue where it is 2.
                let (rp, gp, bp) = (
                    avx2._mm256_permutevar8x32_ps(r, idx[t]),
                    avx2._mm256_permutevar8x32_ps(g, idx[t]),
                    avx2._mm256_permutevar8x32_ps(b, idx[t]),
                );
                let v = match t {
                    0 => avx._mm256_blend_ps::<0b1001_0010>(rp, gp),
                    1 => avx._mm256_blend_ps::<0b0010_0100>(rp, gp),
                    _ => avx._mm256_blend_ps::<0b0100_1001>(rp, gp),
                };
                let v = match t {
                    0 => avx._mm256_blend_ps::<0b0010_0100>(v, bp),
                    1 => avx._mm256_blend_ps::<0b0100_1001>(v, bp),
                    _ => avx._mm256_blend_ps::<0b1001_0010>(v, bp),
                };
                o.copy_from_slice(&bytemuck::cast::<__m256, [f32; 8]>(v));
            }
        });
    }
}
