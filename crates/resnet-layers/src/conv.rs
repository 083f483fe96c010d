//! [`Conv2d`]: PyTorch's `nn.Conv2d` on the naive kernel.

use crate::{LayerError, Tensor, check_param, nchw_input};
use resnet_kernels::{Conv2dParams, ConvGeometry, naive};

/// Configuration of a [`Conv2d`]: channels, square kernel size, and builder methods for the rest.
///
/// ```
/// use resnet_layers::Conv2dConfig;
/// let c = Conv2dConfig::new(64, 128, 3).with_stride(2).with_padding(1);
/// assert_eq!(c.weight_shape(), [128, 64, 3, 3]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride, padding, dilation, groups.
    pub params: Conv2dParams,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Conv2dConfig {
    /// A `kernel x kernel` convolution, stride 1, no padding, no bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel: [kernel, kernel],
            params: Conv2dParams::default(),
            bias: false,
        }
    }
    /// Stride on both axes.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.params.stride = [s, s];
        self
    }
    /// Zero padding on both axes.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.params.padding = [p, p];
        self
    }
    /// Dilation on both axes.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.params.dilation = [d, d];
        self
    }
    /// Channel groups.
    pub fn with_groups(mut self, g: usize) -> Self {
        self.params.groups = g;
        self
    }
    /// Whether the layer has a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// The weight shape `[O, I/groups, KH, KW]` (for a valid config).
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.params.groups.max(1),
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn validate(&self) -> Result<(), LayerError> {
        let g = self.params.groups;
        let bad = |reason: String| {
            Err(LayerError::Config {
                layer: "Conv2d",
                reason,
            })
        };
        if g == 0 || !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return bad(format!(
                "groups {g} must divide in_channels {} and out_channels {}",
                self.in_channels, self.out_channels
            ));
        }
        if self.kernel.contains(&0)
            || self.params.stride.contains(&0)
            || self.params.dilation.contains(&0)
        {
            return bad("kernel, stride and dilation must be at least 1".into());
        }
        Ok(())
    }
}

/// A 2-D convolution layer (PyTorch's `nn.Conv2d` semantics).
#[derive(Debug, Clone)]
pub struct Conv2d {
    config: Conv2dConfig,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Conv2d {
    /// A convolution with the given weight `[O, I/groups, KH, KW]` and, when the config says
    /// so, bias `[O]`.
    pub fn new(
        config: Conv2dConfig,
        weight: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Self, LayerError> {
        config.validate()?;
        check_param("Conv2d", "weight", &weight, &config.weight_shape())?;
        match (&bias, config.bias) {
            (Some(b), true) => check_param("Conv2d", "bias", b, &[config.out_channels])?,
            (None, false) => {}
            (Some(b), false) => {
                return Err(LayerError::ParamShape {
                    layer: "Conv2d",
                    param: "bias",
                    expected: vec![],
                    found: b.shape().dims().to_vec(),
                });
            }
            (None, true) => {
                return Err(LayerError::Config {
                    layer: "Conv2d",
                    reason: "the config asks for a bias but none was given".into(),
                });
            }
        }
        Ok(Self {
            config,
            weight: weight.reshape(&config.weight_shape())?,
            bias,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// The weight `[O, I/groups, KH, KW]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[O]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The validated geometry of this convolution on an input of `dims` `[N, C, H, W]`.
    pub fn geometry(&self, dims: [usize; 4]) -> Result<ConvGeometry, LayerError> {
        if dims[1] != self.config.in_channels {
            return Err(LayerError::InputShape {
                layer: "Conv2d",
                found: dims.to_vec(),
                reason: format!("expected {} channels", self.config.in_channels),
            });
        }
        ConvGeometry::new(dims, self.config.weight_shape(), self.config.params).map_err(|e| {
            LayerError::InputShape {
                layer: "Conv2d",
                found: dims.to_vec(),
                reason: e.to_string(),
            }
        })
    }

    /// Run on an `[N, C, H, W]` input (either layout), giving `[N, O, OH, OW]` in NCHW.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayerError> {
        let (x, dims) = nchw_input("Conv2d", x)?;
        let geom = self.geometry(dims)?;
        let mut y = Tensor::zeros(&geom.output)?;
        naive::conv2d(
            &geom,
            x.as_slice(),
            self.weight.as_slice(),
            self.bias.as_ref().map(Tensor::as_slice),
            y.as_mut_slice(),
        )?;
        Ok(y)
    }
}
