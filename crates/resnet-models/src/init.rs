//! Seeded random weights, following torchvision's `ResNet.__init__`.
//!
//! The generator is a SplitMix64 written here rather than a `rand` RNG so that the weights of a
//! seed never change between releases of a dependency.

use crate::{ModelError, ResNetConfig};
use resnet_tensor::Tensor;
use resnet_weights::TensorMap;

struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Every tensor a network of `config` needs, initialised as torchvision does, from `seed`.
pub(crate) fn random_weights(config: &ResNetConfig, seed: u64) -> Result<TensorMap, ModelError> {
    config.validate()?;
    let mut rng = SplitMix64(seed);
    let mut map = TensorMap::new();
    let mut conv =
        |map: &mut TensorMap, name: String, shape: [usize; 4]| -> Result<(), ModelError> {
            // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (O * KH * KW))
            let std = (2.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt();
            let n: usize = shape.iter().product();
            let v = (0..n).map(|_| (rng.normal() * std) as f32).collect();
            map.insert(name, Tensor::from_vec(&shape, v)?);
            Ok(())
        };
    let bn = |map: &mut TensorMap, prefix: &str, c: usize| -> Result<(), ModelError> {
        map.insert(
            format!("{prefix}.weight"),
            Tensor::from_vec(&[c], vec![1.0; c])?,
        );
        map.insert(format!("{prefix}.bias"), Tensor::zeros(&[c])?);
        map.insert(format!("{prefix}.running_mean"), Tensor::zeros(&[c])?);
        map.insert(
            format!("{prefix}.running_var"),
            Tensor::from_vec(&[c], vec![1.0; c])?,
        );
        Ok(())
    };
    let stem = ResNetConfig::STEM_CHANNELS;
    conv(
        &mut map,
        "conv1.weight".into(),
        [stem, config.in_channels, 7, 7],
    )?;
    bn(&mut map, "bn1", stem)?;
    let exp = config.block.expansion();
    let mut in_c = stem;
    for (s, &blocks) in config.layers.iter().enumerate() {
        let planes = config.planes(s);
        let out = planes * exp;
        for b in 0..blocks {
            let p = format!("layer{}.{b}", s + 1);
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let shapes: Vec<[usize; 4]> = match config.block {
                crate::BlockKind::Basic => vec![[planes, in_c, 3, 3], [planes, planes, 3, 3]],
                crate::BlockKind::Bottleneck => {
                    let w = config.bottleneck_width(planes);
                    vec![
                        [w, in_c, 1, 1],
                        [w, w / config.groups, 3, 3],
                        [out, w, 1, 1],
                    ]
                }
            };
            for (j, shape) in shapes.into_iter().enumerate() {
                conv(&mut map, format!("{p}.conv{}.weight", j + 1), shape)?;
                bn(&mut map, &format!("{p}.bn{}", j + 1), shape[0])?;
            }
            if config.shortcuts && (stride != 1 || in_c != out) {
                conv(
                    &mut map,
                    format!("{p}.downsample.0.weight"),
                    [out, in_c, 1, 1],
                )?;
                bn(&mut map, &format!("{p}.downsample.1"), out)?;
            }
            in_c = out;
        }
    }
    // nn.Linear default: kaiming_uniform_(a=sqrt(5)) → U(-1/sqrt(in), 1/sqrt(in)); bias alike.
    let bound = 1.0 / (in_c as f64).sqrt();
    let k = config.num_classes;
    let w = (0..k * in_c)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
        .collect();
    map.insert("fc.weight", Tensor::from_vec(&[k, in_c], w)?);
    let b = (0..k)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
        .collect();
    map.insert("fc.bias", Tensor::from_vec(&[k], b)?);
    Ok(map)
}

/// Seeded random weights for `config` as a [`TensorMap`] (torchvision names): for writing test
/// files or starting from torchvision's initialisation.
pub fn random_tensor_map(config: &ResNetConfig, seed: u64) -> Result<TensorMap, ModelError> {
    random_weights(config, seed)
}
