//! Max pooling of a bf16 map into f32: the stem's output, kept in bf16, is pooled without
//! being widened into memory first.

use super::conv::{half, map_words, padded};
use super::{Bf16Cpu, widen};
use crate::fast::Par;
use crate::{KernelError, PoolGeometry, check_len};

/// Max pooling (as [`crate::fast::max_pool2d_nhwc`]: padded positions never win, NaN wins)
/// of a bf16 map (layout: [`map_words`]; logical dims `geom.input`, border `pad`, which the
/// windows never read) into NHWC f32 values, on AVX-512: each value is the f32 max-pool of
/// the map's values widened exactly, bit for bit [`max_pool_map_naive`]'s. Rounding to bf16
/// is monotone, so this is the max-pool of the unrounded values, rounded.
///
/// ```
/// use resnet_kernels::bf16::{Bf16Cpu, max_pool_map, map_words};
/// use resnet_kernels::{PoolGeometry, fast::Par};
///
/// // Two channels, 2x2 pixels, a 2x2 window: the max of each channel. A pixel is one word,
/// // channel 0 in its low half (bf16 bits: 1.0 is 0x3f80, 2.0 0x4000, 4.0 0x4080).
/// let geom = PoolGeometry::new([1, 2, 2, 2], [2, 2], [2, 2], [0, 0])?;
/// let words = [0x3f80_4000, 0x4040_3f80, 0x4080_3f00, 0x3f80_3f80];
/// assert_eq!(words.len(), map_words([1, 2, 2, 2], [0, 0])?);
/// let mut out = [0.0f32; 2];
/// if let Some(cpu) = Bf16Cpu::detect() {
///     max_pool_map(cpu, Par::Seq, &geom, &words, [0, 0], &mut out)?;
///     assert_eq!(out, [2.0, 4.0]);
/// }
/// # Ok::<(), resnet_kernels::KernelError>(())
/// ```
///
/// # Errors
/// [`KernelError`] when the buffers do not fit the geometry, or the channel count is odd.
pub fn max_pool_map(
    cpu: Bf16Cpu,
    par: Par,
    geom: &PoolGeometry,
    words: &[u32],
    pad: [usize; 2],
    out: &mut [f32],
) -> Result<(), KernelError> {
    check(geom, words, pad, out)?;
    let _ = cpu;
    #[cfg(target_arch = "x86_64")]
    {
        let c = geom.input[1];
        let [_, _, oh, ow] = geom.output;
        if out.is_empty() {
            return Ok(());
        }
        let row_task = |(idx, out_row): (usize, &mut [f32])| {
            // SAFETY: `Bf16Cpu` proves AVX512-F and AVX512-BW; `check` proved the map holds
            // the geometry's whole input and the row `ow * c` values.
            unsafe { pool_row(geom, words, pad, idx / oh, idx % oh, out_row) }
        };
        if par.is_parallel() {
            use rayon::prelude::*;
            out.par_chunks_mut(ow * c).enumerate().for_each(row_task);
        } else {
            out.chunks_mut(ow * c).enumerate().for_each(row_task);
        }
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = par;
        unreachable!("Bf16Cpu::detect returns None off x86-64")
    }
}

/// The scalar twin of [`max_pool_map`]: the same values, bit for bit, on every CPU.
///
/// # Errors
/// As [`max_pool_map`].
pub fn max_pool_map_naive(
    geom: &PoolGeometry,
    words: &[u32],
    pad: [usize; 2],
    out: &mut [f32],
) -> Result<(), KernelError> {
    check(geom, words, pad, out)?;
    let [_, c, h, w] = geom.input;
    let [_, _, oh, ow] = geom.output;
    for (pix, d) in out.chunks_exact_mut(c.max(1)).enumerate() {
        let (ni, oy, ox) = (pix / (oh * ow), (pix / ow) % oh, pix % ow);
        for (ch, v) in d.iter_mut().enumerate() {
            let mut m = f32::NEG_INFINITY;
            for (iy, ix) in geom.window(oy, ox) {
                let b = widen(half(
                    words,
                    padded((ni * h + iy) * w + ix, h, w, pad) * c + ch,
                ));
                if b > m || b.is_nan() {
                    m = b;
                }
            }
            *v = m;
        }
    }
    Ok(())
}

fn check(
    geom: &PoolGeometry,
    words: &[u32],
    pad: [usize; 2],
    out: &[f32],
) -> Result<(), KernelError> {
    check_len("max_pool input map", words, map_words(geom.input, pad)?)?;
    let [n, c, oh, ow] = geom.output;
    check_len("max_pool output", out, n * c * oh * ow)
}

/// Output row `oy` of image `ni` (`ow * c` values).
///
/// # Safety
/// AVX512-F and AVX512-BW present; `words` holds the map of the geometry's input with a
/// border of `pad` (an even channel count), `out` is `ow * c` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pool_row(
    geom: &PoolGeometry,
    words: &[u32],
    pad: [usize; 2],
    ni: usize,
    oy: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [_, c, h, w] = geom.input;
    let (wp, half) = (w + 2 * pad[1], c / 2);
    // The window's rows (clipped to the image).
    let y0 = (oy * geom.stride[0]).saturating_sub(geom.padding[0]);
    let y1 = (oy * geom.stride[0] + geom.kernel[0] - geom.padding[0]).min(h);
    // Pixel (iy, ix)'s first word.
    let base = words.as_ptr();
    let at =
        |iy: usize, ix: usize| ((ni * (h + 2 * pad[0]) + iy + pad[0]) * wp + ix + pad[1]) * half;
    for (ox, d) in out.chunks_exact_mut(c).enumerate() {
        let x0 = (ox * geom.stride[1]).saturating_sub(geom.padding[1]);
        let x1 = (ox * geom.stride[1] + geom.kernel[1] - geom.padding[1]).min(w);
        for (i, chunk) in d.chunks_mut(16).enumerate() {
            let m: __mmask16 = if chunk.len() == 16 {
                !0
            } else {
                (1u16 << chunk.len()) - 1
            };
            let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
            for iy in y0..y1 {
                for ix in x0..x1 {
                    // SAFETY: pixel (iy, ix) is inside the image, so inside the map; values
                    // 16i.. of its `c` (masked to the chunk).
                    let b = unsafe {
                        let v = _mm512_castsi512_si256(_mm512_maskz_loadu_epi16(
                            u32::from(m),
                            base.add(at(iy, ix) + 8 * i).cast(),
                        ));
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
                    };
                    // The larger, NaN winning in either operand (as the f32 pooling).
                    let larger =
                        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(acc, b), acc, b);
                    acc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(b, b), larger, b);
                }
            }
            // SAFETY: the chunk's values, masked.
            unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), m, acc) };
        }
    }
}
