//! The output step of a convolution: bias, residual add and ReLU, applied to each block of
//! the output while it is in registers (the matrix-product paths, through the product's
//! `Ends`) or in cache (Winograd's output transform, the grouped direct path), never in passes
//! of their own over memory.

use std::ops::Range;

/// What a convolution does to its sums before they are stored: add its bias (the
/// convolution's own), add an optional residual of the output's shape, apply ReLU.
///
/// ```
/// use resnet_kernels::fast::Epilogue;
/// let residual = vec![1.0; 8];
/// let e = Epilogue::relu().with_residual(&residual);
/// assert!(e.applies_relu() && e.residual().is_some());
/// assert!(!Epilogue::none().applies_relu());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    residual: Option<&'a [f32]>,
    relu: bool,
    /// The convolution's bias, filled in by the convolution (empty: none).
    bias: &'a [f32],
}

impl<'a> Epilogue<'a> {
    /// Bias only.
    pub fn none() -> Self {
        Self::default()
    }

    /// Bias, then ReLU.
    pub fn relu() -> Self {
        Self {
            relu: true,
            ..Self::default()
        }
    }

    /// Also add `residual` (NHWC, the output's shape) before the ReLU.
    pub fn with_residual(self, residual: &'a [f32]) -> Self {
        Self {
            residual: Some(residual),
            ..self
        }
    }

    /// Set whether ReLU is applied.
    pub fn with_relu(self, relu: bool) -> Self {
        Self { relu, ..self }
    }

    /// The residual, if any.
    pub fn residual(&self) -> Option<&'a [f32]> {
        self.residual
    }

    /// Whether ReLU is applied.
    pub fn applies_relu(&self) -> bool {
        self.relu
    }

    /// The same step with the convolution's bias.
    pub(crate) fn with_bias(self, bias: &'a [f32]) -> Self {
        Self { bias, ..self }
    }

    /// The bias of output channel `ch`.
    #[inline(always)]
    pub(crate) fn bias_at(&self, ch: usize) -> f32 {
        self.bias[ch]
    }

    /// The bias of channels `chans`.
    pub(crate) fn bias(&self, chans: Range<usize>) -> &'a [f32] {
        &self.bias[chans]
    }

    /// The step for the values `at .. at + len` of the output (the residual sliced alike).
    pub(crate) fn part(self, at: usize, len: usize) -> Self {
        Self {
            residual: self.residual.map(|r| &r[at..at + len]),
            ..self
        }
    }
}
