//! [`BatchNorm2d`] in evaluation mode (running statistics), on the naive kernel.

use crate::{LayerError, Tensor, check_param, nchw_input};
use resnet_kernels::naive;

/// Configuration of a [`BatchNorm2d`]: channel count and epsilon (default 1e-5, as PyTorch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm2dConfig {
    /// Channels.
    pub channels: usize,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl BatchNorm2dConfig {
    /// `channels` channels, eps 1e-5.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            eps: 1e-5,
        }
    }
    /// Another epsilon.
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
}

/// Inference batch normalisation with running statistics:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, per channel.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    config: BatchNorm2dConfig,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm2d {
    /// A batch-norm layer from its four `[C]` parameter tensors (PyTorch's names).
    pub fn new(
        config: BatchNorm2dConfig,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
    ) -> Result<Self, LayerError> {
        let c = [config.channels];
        check_param("BatchNorm2d", "weight", &weight, &c)?;
        check_param("BatchNorm2d", "bias", &bias, &c)?;
        check_param("BatchNorm2d", "running_mean", &running_mean, &c)?;
        check_param("BatchNorm2d", "running_var", &running_var, &c)?;
        if config.eps.is_nan() || config.eps < 0.0 {
            return Err(LayerError::Config {
                layer: "BatchNorm2d",
                reason: format!("eps must be a non-negative number, got {}", config.eps),
            });
        }
        Ok(Self {
            config,
            weight,
            bias,
            running_mean,
            running_var,
        })
    }

    /// The identity normalisation (weight 1, bias 0, mean 0, var 1) on `channels` channels.
    pub fn identity(config: BatchNorm2dConfig) -> Result<Self, LayerError> {
        let c = config.channels;
        let ones = Tensor::from_vec(&[c], vec![1.0; c])?;
        let zeros = Tensor::zeros(&[c])?;
        Self::new(config, ones.clone(), zeros.clone(), zeros, ones)
    }

    /// The configuration.
    pub fn config(&self) -> &BatchNorm2dConfig {
        &self.config
    }

    /// Per-channel `(scale, shift)` in f64 such that `y = x * scale + shift`: what folding
    /// this layer into a preceding convolution multiplies and adds.
    pub fn scale_shift(&self) -> Vec<(f64, f64)> {
        let g = self.weight.as_slice();
        let b = self.bias.as_slice();
        let m = self.running_mean.as_slice();
        let v = self.running_var.as_slice();
        (0..self.config.channels)
            .map(|c| {
                let s = f64::from(g[c]) / (f64::from(v[c]) + f64::from(self.config.eps)).sqrt();
                (s, f64::from(b[c]) - f64::from(m[c]) * s)
            })
            .collect()
    }

    /// Run on an `[N, C, H, W]` input (either layout), giving NCHW.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayerError> {
        let (x, dims) = nchw_input("BatchNorm2d", x)?;
        if dims[1] != self.config.channels {
            return Err(LayerError::InputShape {
                layer: "BatchNorm2d",
                found: dims.to_vec(),
                reason: format!("expected {} channels", self.config.channels),
            });
        }
        let mut y = Tensor::zeros(&dims)?;
        let bn = naive::BatchNormParams {
            gamma: self.weight.as_slice(),
            beta: self.bias.as_slice(),
            mean: self.running_mean.as_slice(),
            var: self.running_var.as_slice(),
            eps: self.config.eps,
        };
        naive::batch_norm(dims, x.as_slice(), &bn, y.as_mut_slice())?;
        Ok(y)
    }
}
