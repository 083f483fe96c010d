//! `resnet-layers`: the layers residual networks are made of.
//!
//! [`Conv2d`], [`BatchNorm2d`], [`ReLU`], [`MaxPool2d`], [`AdaptiveAvgPool2d`], [`Linear`] and
//! [`PixelShuffle`],
//! each built from a config struct with builder methods and filled with weights as
//! [`Tensor`]s. Every layer checks its weights' shapes when built and its input's shape when run,
//! and reports mismatches as a [`LayerError`].
//!
//! Layers run on a [`Backend`]: [`Backend::Fast`] (SIMD kernels and gemm micro-kernels, the
//! default) or [`Backend::Naive`] (the f64 reference kernels of `resnet_kernels::naive`, for
//! checking).
//! [`FusedConv`] is what networks run: a convolution with its batch-norm folded in at build
//! time, weights packed once, and bias, residual add and ReLU applied in its output step.
//!
//! ```
//! use resnet_layers::{Backend, Conv2d, Conv2dConfig, ReLU};
//! use resnet_tensor::Tensor;
//!
//! // A 3x3 convolution, 1 -> 1 channel, padding 1, with every weight 1/9: a box blur.
//! let conv = Conv2d::new(
//!     Conv2dConfig::new(1, 1, 3).with_padding(1).with_bias(true),
//!     Tensor::from_vec(&[1, 1, 3, 3], vec![1.0 / 9.0; 9])?,
//!     Some(Tensor::from_vec(&[1], vec![-0.5])?),
//! )?;
//! let x = Tensor::from_vec(&[1, 1, 3, 3], vec![1.0; 9])?;
//! let y = ReLU.forward(&conv.forward(&x, Backend::Naive)?);
//! assert!((y.as_slice()[4] - 0.5).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conv;
mod fused;
mod linear;
mod norm;
mod pool;

pub use conv::{Conv2d, Conv2dConfig};
pub use fused::FusedConv;
pub use linear::{Linear, LinearConfig};
pub use norm::{BatchNorm2d, BatchNorm2dConfig};
pub use pool::{AdaptiveAvgPool2d, MaxPool2d, MaxPool2dConfig, PixelShuffle};
pub use resnet_kernels::fast::ConvAlgo;
pub use resnet_kernels::{Cpu, SimdLevel};

use resnet_kernels::KernelError;
pub use resnet_tensor::{Layout, Tensor, TensorError};

/// Which implementation of the kernels a layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// The f64-accumulating reference kernels: slow, obviously right, for checking and debugging.
    Naive,
    /// SIMD kernels dispatched for this CPU, matrix products through gemm's micro-kernels on
    /// weights packed at build time.
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

/// Errors from building or running a layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A parameter tensor has the wrong shape.
    #[error("{layer}: {param} has shape {found:?}, expected {expected:?}")]
    ParamShape {
        /// Layer kind.
        layer: &'static str,
        /// Parameter name.
        param: &'static str,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape given.
        found: Vec<usize>,
    },
    /// The input does not fit the layer.
    #[error("{layer}: input of shape {found:?} does not fit: {reason}")]
    InputShape {
        /// Layer kind.
        layer: &'static str,
        /// Shape given.
        found: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// An invalid configuration.
    #[error("{layer}: invalid configuration: {reason}")]
    Config {
        /// Layer kind.
        layer: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A kernel refused its arguments.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

pub(crate) fn check_param(
    layer: &'static str,
    param: &'static str,
    t: &Tensor,
    expected: &[usize],
) -> Result<(), LayerError> {
    if t.shape().dims() == expected {
        Ok(())
    } else {
        Err(LayerError::ParamShape {
            layer,
            param,
            expected: expected.to_vec(),
            found: t.shape().dims().to_vec(),
        })
    }
}

/// The input as an NCHW tensor of rank 4 (converting an NHWC one), or an `InputShape` error.
pub(crate) fn nchw_input<'a>(
    layer: &'static str,
    x: &'a Tensor,
) -> Result<(std::borrow::Cow<'a, Tensor>, [usize; 4]), LayerError> {
    let dims = x.shape().dims4().ok_or_else(|| LayerError::InputShape {
        layer,
        found: x.shape().dims().to_vec(),
        reason: "expected a rank-4 [N, C, H, W] tensor".into(),
    })?;
    let t = if x.layout() == Layout::Nchw {
        std::borrow::Cow::Borrowed(x)
    } else {
        std::borrow::Cow::Owned(x.to_layout(Layout::Nchw)?)
    };
    Ok((t, dims))
}

/// The NHWC data of a rank-4 tensor (converted from NCHW when needed).
pub(crate) fn nhwc_data(
    x: &Tensor,
    dims: [usize; 4],
) -> Result<std::borrow::Cow<'_, [f32]>, LayerError> {
    if x.layout() == Layout::Nhwc {
        return Ok(std::borrow::Cow::Borrowed(x.as_slice()));
    }
    let mut v = vec![0.0; x.len()];
    resnet_kernels::fast::nchw_to_nhwc(Cpu::detect(), dims, x.as_slice(), &mut v)?;
    Ok(std::borrow::Cow::Owned(v))
}

/// An NCHW tensor of logical dims `dims` from NHWC data.
pub(crate) fn nchw_from_nhwc(dims: [usize; 4], data: &[f32]) -> Result<Tensor, LayerError> {
    let mut y = Tensor::zeros(&dims)?;
    resnet_kernels::fast::nhwc_to_nchw(dims, data, y.as_mut_slice())?;
    Ok(y)
}

/// Rectified linear unit, `max(x, 0)`, elementwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReLU;

impl ReLU {
    /// A new tensor `max(x, 0)` (any shape and layout).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = x.clone();
        self.forward_inplace(&mut y);
        y
    }

    /// `x = max(x, 0)` in place.
    pub fn forward_inplace(&self, x: &mut Tensor) {
        resnet_kernels::fast::relu_inplace(Cpu::detect(), x.as_mut_slice());
    }
}

/// Elementwise sum of two tensors of equal shape: the residual connection.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor, LayerError> {
    if a.shape() != b.shape() {
        return Err(LayerError::InputShape {
            layer: "add",
            found: b.shape().dims().to_vec(),
            reason: format!(
                "expected the shape of the other operand, {:?}",
                a.shape().dims()
            ),
        });
    }
    let b = if b.layout() == a.layout() {
        std::borrow::Cow::Borrowed(b)
    } else {
        std::borrow::Cow::Owned(b.to_layout(a.layout())?)
    };
    let mut y = a.clone();
    resnet_kernels::naive::add(a.as_slice(), b.as_slice(), y.as_mut_slice())?;
    Ok(y)
}

/// Softmax over the last dimension of a tensor.
pub fn softmax(x: &Tensor) -> Result<Tensor, LayerError> {
    let last = x.shape().dims().last().copied().unwrap_or(1);
    let x = if x.layout() == Layout::Nchw {
        std::borrow::Cow::Borrowed(x)
    } else {
        std::borrow::Cow::Owned(x.to_layout(Layout::Nchw)?)
    };
    let mut y = Tensor::zeros(x.shape().dims())?;
    resnet_kernels::naive::softmax(last, x.as_slice(), y.as_mut_slice())?;
    Ok(y)
}
