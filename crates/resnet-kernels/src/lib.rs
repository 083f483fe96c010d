//! `resnet-kernels`: the arithmetic of resnet-rs.
//!
//! Every kernel exists as a plain scalar twin in [`naive`], written for obviousness and
//! accumulating in f64: the oracle the fast paths are tested against (`cargo xtask props`).
//! [`naive_grad`] holds their backward twins (and the losses), the reference for training,
//! checked against central finite differences in f64.
//! [`bf16`] holds the reduced-precision kernels (bf16 values, f32 sums, on AVX512-BF16): the
//! matrix product and any convolution ([`bf16::Bf16Conv`]), each with a bit-exact scalar twin.
//! The [`fast`] kernels work on NHWC activations: convolution as a matrix product on the
//! activations (1x1), im2col in L2-sized tiles, Winograd F(4x4,3x3) or F(2x2,3x3) or a direct
//! grouped kernel, chosen from the shape, with bias, residual add and ReLU in the output step
//! ([`fast::Epilogue`]); the CPU token, the parallelism ([`fast::Par`]) and scratch memory
//! ([`fast::Scratch`]) are passed in as values; every matrix product runs register-blocked
//! micro-kernels on weights packed once at build time (`gemm-f32`'s; on AVX-512 for whole vectors
//! of output channels our own, which sum alike and apply the output step in registers); SIMD
//! written once over `pulp` and run through a [`Cpu`] token, which only feature detection makes.
//! This crate holds every `unsafe` block of the workspace's kernels. Kernels take flat slices and a
//! validated geometry ([`ConvGeometry`], [`PoolGeometry`]), so they can serve any model, not only
//! resnet-rs's.
//!
//! ```
//! use resnet_kernels::{naive, Conv2dParams, ConvGeometry};
//!
//! // One 1-channel 3x3 image, one 3x3 kernel of ones, padding 1: a box sum.
//! let geom = ConvGeometry::new([1, 1, 3, 3], [1, 1, 3, 3], Conv2dParams::default().with_padding(1))?;
//! assert_eq!(geom.output_dims(), [1, 1, 3, 3]);
//! let input: Vec<f32> = (1..=9).map(|v| v as f32).collect();
//! let mut out = vec![0.0; 9];
//! naive::conv2d(&geom, &input, &[1.0; 9], None, &mut out)?;
//! assert_eq!(out[4], 45.0); // the centre sees all nine values
//! assert_eq!(out[0], 1.0 + 2.0 + 4.0 + 5.0);
//!
//! // The same convolution on the fast path (one channel, so NCHW and NHWC coincide), with a
//! // bias of -40 and ReLU fused into the output step.
//! // The context says which instruction set, how many threads and which scratch memory.
//! use resnet_kernels::fast::{Ctx, Epilogue, PackedConv, Par, Scratch};
//! use resnet_kernels::Cpu;
//! let conv = PackedConv::new(&[1.0; 9], [1, 1, 3, 3], Some(&[-40.0]), geom.params)?;
//! let mut fast_out = vec![0.0; 9];
//! let scratch = Scratch::new(1);
//! let ctx = Ctx::new(Cpu::detect(), Par::Seq, &scratch);
//! conv.run(&ctx, &input, geom.input, &mut fast_out, Epilogue::relu())?;
//! assert_eq!(fast_out[4], 5.0);
//! assert_eq!(fast_out[0], 0.0); // 12 - 40, clipped by ReLU
//! # Ok::<(), resnet_kernels::KernelError>(())
//! ```

pub mod bf16;
mod cpu;
pub mod fast;
mod geometry;
pub mod naive;
pub mod naive_grad;

pub use cpu::{Cpu, SimdLevel};
pub use geometry::{Conv2dParams, ConvGeometry, PoolGeometry, adaptive_bin};

/// Errors from kernel entry points: sizes that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A buffer's length differs from what the geometry needs.
    #[error("{what}: expected {expected} elements, found {found}")]
    BadLength {
        /// Which buffer.
        what: &'static str,
        /// Elements the geometry needs.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// An invalid combination of sizes or parameters.
    #[error("invalid geometry: {0}")]
    Geometry(String),
    /// A class label outside `0..classes` (a loss's target).
    #[error("label {label} of row {row} is not a class index below {classes}")]
    Label {
        /// Which row of the batch.
        row: usize,
        /// The label given.
        label: usize,
        /// Number of classes.
        classes: usize,
    },
}

pub(crate) fn check_len<T>(
    what: &'static str,
    buf: &[T],
    expected: usize,
) -> Result<(), KernelError> {
    if buf.len() == expected {
        Ok(())
    } else {
        Err(KernelError::BadLength {
            what,
            expected,
            found: buf.len(),
        })
    }
}

/// Check a PixelShuffle's arguments (shared by the naive and fast kernels); returns the output
/// channel count.
pub(crate) fn pixel_shuffle_check(
    [n, crr, h, w]: [usize; 4],
    r: usize,
    input: &[f32],
    output: &[f32],
) -> Result<usize, KernelError> {
    if r == 0 || crr % (r * r) != 0 {
        return Err(KernelError::Geometry(format!(
            "pixel shuffle by {r} needs channels divisible by {}, got {crr}",
            r * r
        )));
    }
    check_len("pixel_shuffle input", input, n * crr * h * w)?;
    check_len("pixel_shuffle output", output, n * crr * h * w)?;
    Ok(crr / (r * r))
}
