//! `resnet-layers`: the layers residual networks are made of.
//!
//! [`Conv2d`], [`BatchNorm2d`], [`ReLU`], [`MaxPool2d`], [`AdaptiveAvgPool2d`], [`Linear`] and
//! [`PixelShuffle`],
//! each built from a config struct with builder methods and filled with weights as
//! [`Tensor`]s. Every layer checks its weights' shapes when built and its input's shape when run,
//! and reports mismatches as a [`LayerError`].
//!
//! This crate is the *reference* API: every layer runs the f64-accumulating kernels of
//! `resnet_kernels::naive` on NCHW tensors, written for obviousness, like PyTorch's modules
//! and with their semantics. Use it to check a computation or to compose a small network by
//! hand. Whole networks at speed are `resnet-models`' plans, which fold batch-norms and pack
//! weights for the SIMD kernels of `resnet_kernels::fast` without going through these types.
//!
//! ```
//! use resnet_layers::{Conv2d, Conv2dConfig, ReLU};
//! use resnet_tensor::Tensor;
//!
//! // A 3x3 convolution, 1 -> 1 channel, padding 1, with every weight 1/9: a box blur.
//! let conv = Conv2d::new(
//!     Conv2dConfig::new(1, 1, 3).with_padding(1).with_bias(true),
//!     Tensor::from_vec(&[1, 1, 3, 3], vec![1.0 / 9.0; 9])?,
//!     Some(Tensor::from_vec(&[1], vec![-0.5])?),
//! )?;
//! let x = Tensor::from_vec(&[1, 1, 3, 3], vec![1.0; 9])?;
//! let y = ReLU.forward(&conv.forward(&x)?);
//! assert!((y.as_slice()[4] - 0.5).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod conv;
mod linear;
mod norm;
mod pool;

pub use conv::{Conv2d, Conv2dConfig};
pub use linear::{Linear, LinearConfig};
pub use norm::{BatchNorm2d, BatchNorm2dConfig};
pub use pool::{AdaptiveAvgPool2d, MaxPool2d, MaxPool2dConfig, PixelShuffle};

use resnet_kernels::KernelError;
pub use resnet_tensor::{Layout, Tensor, TensorError};

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

/// Rectified linear unit, `max(x, 0)`, elementwise; NaN stays NaN, as in PyTorch.
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
        resnet_kernels::naive::relu_inplace(x.as_mut_slice());
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
