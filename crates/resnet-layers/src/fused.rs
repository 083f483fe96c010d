use crate::{BatchNorm2d, Conv2d, LayerError};
use resnet_kernels::fast::{ConvAlgo, PackedConv};
use resnet_kernels::{ConvGeometry, Cpu};

/// A convolution with its batch-norm folded in and its weights packed, ready for the fast path.
///
/// Folding: with `s = gamma / sqrt(var + eps)` per output channel,
/// `bn(conv(x)) = conv_{w * s}(x) + (b - mean) * s + beta`, computed in f64 once at build time.
/// Running it applies bias, the optional residual add and ReLU in the convolution's output step.
///
/// Activations are NHWC slices with logical dims `[N, C, H, W]`.
#[derive(Debug, Clone)]
pub struct FusedConv {
    packed: PackedConv,
}

impl FusedConv {
    /// Fold `bn` (if any) into `conv` and pack the result.
    pub fn new(conv: &Conv2d, bn: Option<&BatchNorm2d>) -> Result<Self, LayerError> {
        let cfg = conv.config();
        let o = cfg.out_channels;
        let w = conv.weight().as_slice();
        let per = w.len() / o.max(1);
        let bias: Vec<f64> = match conv.bias() {
            Some(b) => b.as_slice().iter().map(|&v| f64::from(v)).collect(),
            None => vec![0.0; o],
        };
        let (weight, bias): (Vec<f32>, Vec<f32>) = match bn {
            Some(bn) => {
                if bn.config().channels != o {
                    return Err(LayerError::Config {
                        layer: "FusedConv",
                        reason: format!(
                            "batch-norm has {} channels, the convolution {o} outputs",
                            bn.config().channels
                        ),
                    });
                }
                let ss = bn.scale_shift();
                let weight = w
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (f64::from(v) * ss[i / per].0) as f32)
                    .collect();
                let bias = ss
                    .iter()
                    .zip(&bias)
                    .map(|(&(s, t), &b)| (b * s + t) as f32)
                    .collect();
                (weight, bias)
            }
            None => (w.to_vec(), bias.iter().map(|&b| b as f32).collect()),
        };
        let packed = PackedConv::new(&weight, cfg.weight_shape(), Some(&bias), cfg.params)?;
        Ok(Self { packed })
    }

    /// The algorithm chosen for this convolution's shape.
    pub fn algorithm(&self) -> ConvAlgo {
        self.packed.algorithm()
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.packed.weight_dims()[0]
    }

    /// The geometry on an input of logical dims `[N, C, H, W]`, or an input-shape error.
    pub fn geometry(&self, input: [usize; 4]) -> Result<ConvGeometry, LayerError> {
        self.packed
            .geometry(input)
            .map_err(|e| LayerError::InputShape {
                layer: "FusedConv",
                found: input.to_vec(),
                reason: e.to_string(),
            })
    }

    /// Per-thread scratch (values) one task of this conv uses on an input of `input` dims; see
    /// [`resnet_kernels::fast::PackedConv::scratch_len`].
    pub fn scratch_len(&self, input: [usize; 4]) -> Result<usize, LayerError> {
        self.packed
            .scratch_len(input)
            .map_err(|e| LayerError::InputShape {
                layer: "FusedConv",
                found: input.to_vec(),
                reason: e.to_string(),
            })
    }

    /// `out = act(conv(x) + bias + residual)` on NHWC slices; returns the output dims.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        cpu: Cpu,
        input: &[f32],
        input_dims: [usize; 4],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        parallel: bool,
    ) -> Result<[usize; 4], LayerError> {
        let geom = self.geometry(input_dims)?;
        self.packed
            .run(cpu, input, input_dims, residual, relu, out, parallel)?;
        Ok(geom.output)
    }
}
