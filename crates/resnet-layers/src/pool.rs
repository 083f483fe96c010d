//! Pooling and PixelShuffle on the naive kernels: [`MaxPool2d`], [`AdaptiveAvgPool2d`],
//! [`PixelShuffle`].

use crate::{LayerError, Tensor, nchw_input};
use resnet_kernels::{PoolGeometry, naive};

/// Configuration of a [`MaxPool2d`]: square window, stride (default: the window), padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPool2dConfig {
    /// Window `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Padding `[PH, PW]`.
    pub padding: [usize; 2],
}

impl MaxPool2dConfig {
    /// A `kernel x kernel` window with stride `kernel` and no padding (PyTorch's defaults).
    pub fn new(kernel: usize) -> Self {
        Self {
            kernel: [kernel, kernel],
            stride: [kernel, kernel],
            padding: [0, 0],
        }
    }
    /// Stride on both axes.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Padding on both axes.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
}

/// 2-D max pooling (`ceil_mode = false`); padded positions never win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPool2d {
    config: MaxPool2dConfig,
}

impl MaxPool2d {
    /// A max-pool layer.
    pub fn new(config: MaxPool2dConfig) -> Result<Self, LayerError> {
        PoolGeometry::new(
            [1, 1, usize::MAX / 4, usize::MAX / 4],
            config.kernel,
            config.stride,
            config.padding,
        )
        .map_err(|e| LayerError::Config {
            layer: "MaxPool2d",
            reason: e.to_string(),
        })?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &MaxPool2dConfig {
        &self.config
    }

    /// The validated geometry on an input of `dims`.
    pub fn geometry(&self, dims: [usize; 4]) -> Result<PoolGeometry, LayerError> {
        PoolGeometry::new(
            dims,
            self.config.kernel,
            self.config.stride,
            self.config.padding,
        )
        .map_err(|e| LayerError::InputShape {
            layer: "MaxPool2d",
            found: dims.to_vec(),
            reason: e.to_string(),
        })
    }

    /// Run on an `[N, C, H, W]` input.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayerError> {
        let (x, dims) = nchw_input("MaxPool2d", x)?;
        let geom = self.geometry(dims)?;
        let mut y = Tensor::zeros(&geom.output)?;
        naive::max_pool2d(&geom, x.as_slice(), y.as_mut_slice())?;
        Ok(y)
    }
}

/// Adaptive average pooling to a fixed output size with torchvision's bins; `[1, 1]` is the
/// global average pool of ResNet's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdaptiveAvgPool2d {
    output: [usize; 2],
}

impl AdaptiveAvgPool2d {
    /// Pool to `[OH, OW]`; both must be at least 1.
    pub fn new(output: [usize; 2]) -> Result<Self, LayerError> {
        if output.contains(&0) {
            return Err(LayerError::Config {
                layer: "AdaptiveAvgPool2d",
                reason: "output size must be at least 1x1".into(),
            });
        }
        Ok(Self { output })
    }

    /// The output size `[OH, OW]`.
    pub fn output_size(&self) -> [usize; 2] {
        self.output
    }

    /// Run on an `[N, C, H, W]` input (H, W at least 1), giving `[N, C, OH, OW]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayerError> {
        let (x, dims) = nchw_input("AdaptiveAvgPool2d", x)?;
        if dims[2] == 0 || dims[3] == 0 {
            return Err(LayerError::InputShape {
                layer: "AdaptiveAvgPool2d",
                found: dims.to_vec(),
                reason: "spatial size must be at least 1x1".into(),
            });
        }
        let mut y = Tensor::zeros(&[dims[0], dims[1], self.output[0], self.output[1]])?;
        naive::adaptive_avg_pool2d(dims, self.output, x.as_slice(), y.as_mut_slice())?;
        Ok(y)
    }
}

/// PixelShuffle (depth-to-space), PyTorch's `nn.PixelShuffle(r)`: `[N, C*r*r, H, W]` to
/// `[N, C, H*r, W*r]`. The upsampling step of super-resolution networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelShuffle {
    factor: usize,
}

impl PixelShuffle {
    /// Upscale by `factor` (at least 1).
    pub fn new(factor: usize) -> Result<Self, LayerError> {
        if factor == 0 {
            return Err(LayerError::Config {
                layer: "PixelShuffle",
                reason: "the factor must be at least 1".into(),
            });
        }
        Ok(Self { factor })
    }

    /// The upscaling factor.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Run on `[N, C*r*r, H, W]` (either layout), giving `[N, C, H*r, W*r]` in NCHW.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, LayerError> {
        let r = self.factor;
        let dims = x
            .shape()
            .dims4()
            .filter(|d| d[1] % (r * r) == 0)
            .ok_or_else(|| LayerError::InputShape {
                layer: "PixelShuffle",
                found: x.shape().dims().to_vec(),
                reason: format!("expected [N, C*{}, H, W]", r * r),
            })?;
        let out = [dims[0], dims[1] / (r * r), dims[2] * r, dims[3] * r];
        let (x, _) = nchw_input("PixelShuffle", x)?;
        let mut y = Tensor::zeros(&out)?;
        naive::pixel_shuffle(dims, r, x.as_slice(), y.as_mut_slice())?;
        Ok(y)
    }
}
