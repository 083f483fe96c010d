//! [`Linear`]: PyTorch's `nn.Linear` on the naive kernel.

use crate::{LayerError, Layout, Tensor, check_param};
use resnet_kernels::naive;

/// Configuration of a [`Linear`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether the layer has a bias (default: yes, as PyTorch).
    pub bias: bool,
}

impl LinearConfig {
    /// `in_features -> out_features`, with bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Self {
            in_features,
            out_features,
            bias: true,
        }
    }
    /// Whether the layer has a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// A fully connected layer, `y = x W^T + b`, weight `[out, in]` as PyTorch stores it.
#[derive(Debug, Clone)]
pub struct Linear {
    config: LinearConfig,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A linear layer from weight `[out, in]` and, when the config says so, bias `[out]`.
    pub fn new(
        config: LinearConfig,
        weight: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Self, LayerError> {
        check_param(
            "Linear",
            "weight",
            &weight,
            &[config.out_features, config.in_features],
        )?;
        match (&bias, config.bias) {
            (Some(b), true) => check_param("Linear", "bias", b, &[config.out_features])?,
            (None, false) => {}
            _ => {
                return Err(LayerError::Config {
                    layer: "Linear",
                    reason: "bias presence differs from the config".into(),
                });
            }
        }
        Ok(Self {
            config,
            weight,
            bias,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LinearConfig {
        &self.config
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Run on `[N, in]` (or any `[N, ...]` whose trailing dimensions hold `in` elements),
    /// giving `[N, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayerError> {
        let dims = x.shape().dims();
        let n = dims.first().copied().unwrap_or(1);
        let per = x.len().checked_div(n).unwrap_or(0);
        if dims.is_empty() || (n > 0 && per != self.config.in_features) {
            return Err(LayerError::InputShape {
                layer: "Linear",
                found: dims.to_vec(),
                reason: format!("expected [N, {}]", self.config.in_features),
            });
        }
        let x = if x.layout() == Layout::Nchw {
            std::borrow::Cow::Borrowed(x)
        } else {
            std::borrow::Cow::Owned(x.to_layout(Layout::Nchw)?)
        };
        let mut y = Tensor::zeros(&[n, self.config.out_features])?;
        naive::linear(
            [n, self.config.in_features, self.config.out_features],
            x.as_slice(),
            self.weight.as_slice(),
            self.bias.as_ref().map(Tensor::as_slice),
            y.as_mut_slice(),
        )?;
        Ok(y)
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}
