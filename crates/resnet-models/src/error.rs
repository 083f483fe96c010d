//! The crate's error type, [`ModelError`], and the choice of kernel set, [`Backend`].

use resnet_weights::WeightError;

/// Which kernel set a network runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// The f64-accumulating reference kernels on the parameters as stored (convolution,
    /// batch-norm, add and ReLU one after another, NCHW): slow, obviously right, for checking.
    Naive,
    /// SIMD kernels dispatched for this CPU on NHWC activations, batch-norms folded and weights
    /// packed when the network is built, bias, residual and ReLU fused into each convolution.
    #[default]
    Fast,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Naive => "naive",
            Backend::Fast => "fast",
        })
    }
}

/// Errors from building or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The weights could not be read, or do not fit the architecture.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The configuration is invalid.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The input does not fit the model.
    #[error("input of shape {found:?} does not fit the model: {reason}")]
    Input {
        /// Shape given.
        found: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The architecture could not be inferred from the weights.
    #[error("cannot infer the architecture from the weights: {0}")]
    Infer(String),
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] resnet_tensor::TensorError),
    /// A kernel refused its arguments.
    #[error(transparent)]
    Kernel(#[from] resnet_kernels::KernelError),
}
