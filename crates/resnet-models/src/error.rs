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

/// The arithmetic of a network's matrix products (its convolutions and its classifier) on
/// [`Backend::Fast`]; everything else (bias, residual, ReLU, pooling) stays in f32.
///
/// ```
/// use resnet_models::{CifarConfig, Precision, ResNet, Backend};
/// use resnet_tensor::Tensor;
///
/// let cfg = CifarConfig::new(20, 10);
/// match ResNet::random_with(&cfg, 3, Backend::Fast, Precision::Bf16) {
///     Ok(net) => {
///         let logits = net.forward(&Tensor::zeros(&[1, 3, 32, 32])?)?;
///         assert_eq!(logits.shape().dims(), &[1, 10]);
///     }
///     // Not every CPU has AVX512-BF16: a clear error, never a silent f32 fallback.
///     Err(e) => assert!(!Precision::Bf16.is_available(), "{e}"),
/// }
/// # Ok::<(), resnet_models::ModelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Precision {
    /// f32 throughout: the default, and the numerics contract of the README (1e-4 relative
    /// per stage against PyTorch).
    #[default]
    F32,
    /// Opt-in: convolutions and the classifier as bf16 products (weights rounded once at
    /// load, activations at each product's input) summed in f32; about 1e-2 relative against
    /// f32 (README, "Reduced precision"). Needs AVX512-BF16 (`vdpbf16ps`), detected at run
    /// time; building a network in bf16 elsewhere is a [`ModelError::Unsupported`].
    Bf16,
}

impl Precision {
    /// Whether this CPU runs this precision.
    pub fn is_available(self) -> bool {
        match self {
            Precision::F32 => true,
            Precision::Bf16 => resnet_kernels::bf16::Bf16Cpu::detect().is_some(),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
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
    /// This CPU (or kernel set) cannot run what was asked, e.g. bf16 without AVX512-BF16.
    #[error("not supported here: {0}")]
    Unsupported(String),
}
