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

/// Seeded random weights for every parameter a plan names, initialised as torchvision's
/// ResNets are: convolutions Kaiming-normal (fan-out, ReLU gain), their biases and
/// classifiers uniform in ±1/sqrt(fan-in) (PyTorch's default), batch-norms weight 1, bias 0,
/// running mean 0 and variance 1. Drawn in plan order from one SplitMix64 stream, so any
/// plan (ResNet, CIFAR net, one of your own) gets reproducible weights without its topology
/// being written again.
pub fn random_plan_weights(plan: &crate::Plan, seed: u64) -> Result<TensorMap, ModelError> {
    let mut rng = SplitMix64(seed);
    let mut map = TensorMap::new();
    let mut uniform = |n: usize, bound: f64| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect()
    };
    let mut normals = Vec::new();
    for step in plan.steps() {
        match step {
            crate::Step::Conv(c) => {
                let c = &c.conv;
                let shape = c.weight_shape();
                // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (O * KH * KW))
                let std = (2.0 / (shape[0] * shape[2] * shape[3]).max(1) as f64).sqrt();
                let n: usize = shape.iter().product();
                normals.push((format!("{}.weight", c.weight), shape, n, std));
                if c.bias {
                    let fan_in = (shape[1] * shape[2] * shape[3]).max(1) as f64;
                    map.insert(
                        format!("{}.bias", c.weight),
                        Tensor::from_vec(&[shape[0]], uniform(shape[0], 1.0 / fan_in.sqrt()))?,
                    );
                }
                if let Some(bn) = &c.bn {
                    let o = c.out_channels;
                    map.insert(
                        format!("{bn}.weight"),
                        Tensor::from_vec(&[o], vec![1.0; o])?,
                    );
                    map.insert(format!("{bn}.bias"), Tensor::zeros(&[o])?);
                    map.insert(format!("{bn}.running_mean"), Tensor::zeros(&[o])?);
                    map.insert(
                        format!("{bn}.running_var"),
                        Tensor::from_vec(&[o], vec![1.0; o])?,
                    );
                }
            }
            crate::Step::Linear(l) => {
                let (i, o) = (l.in_features, l.out_features);
                let bound = 1.0 / (i.max(1) as f64).sqrt();
                map.insert(
                    format!("{}.weight", l.weight),
                    Tensor::from_vec(&[o, i], uniform(o * i, bound))?,
                );
                map.insert(
                    format!("{}.bias", l.weight),
                    Tensor::from_vec(&[o], uniform(o, bound))?,
                );
            }
            _ => {}
        }
    }
    for (name, shape, n, std) in normals {
        let v = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        map.insert(name, Tensor::from_vec(&shape, v)?);
    }
    Ok(map)
}

/// Seeded random weights for `config` as a [`TensorMap`] (torchvision names): for writing test
/// files or starting from torchvision's initialisation.
pub fn random_tensor_map(config: &ResNetConfig, seed: u64) -> Result<TensorMap, ModelError> {
    random_plan_weights(&crate::resnet_plan(config)?, seed)
}

/// Seeded random weights for an EDSR network of `config` (EDSR reference-code names): PyTorch's
/// default conv initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, and
/// the exact MeanShift convs (identity weights, bias -/+ rgb_range x rgb_mean).
pub fn random_edsr_tensor_map(
    config: &crate::EdsrConfig,
    seed: u64,
) -> Result<TensorMap, ModelError> {
    let mut rng = SplitMix64(seed);
    let mut map = TensorMap::new();
    let (c, f) = (config.channels, config.n_feats);
    let mut conv = |map: &mut TensorMap, name: &str, shape: [usize; 4]| -> Result<(), ModelError> {
        let fan_in = shape[1] * shape[2] * shape[3];
        let bound = 1.0 / (fan_in as f64).sqrt();
        let n: usize = shape.iter().product();
        let w = (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect();
        map.insert(format!("{name}.weight"), Tensor::from_vec(&shape, w)?);
        let b = (0..shape[0])
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect();
        map.insert(format!("{name}.bias"), Tensor::from_vec(&[shape[0]], b)?);
        Ok(())
    };
    conv(&mut map, "head.0", [f, c, 3, 3])?;
    for i in 0..config.n_resblocks {
        conv(&mut map, &format!("body.{i}.body.0"), [f, f, 3, 3])?;
        conv(&mut map, &format!("body.{i}.body.2"), [f, f, 3, 3])?;
    }
    conv(
        &mut map,
        &format!("body.{}", config.n_resblocks),
        [f, f, 3, 3],
    )?;
    for (i, r) in config.upsample_factors()?.into_iter().enumerate() {
        conv(&mut map, &format!("tail.0.{}", 2 * i), [r * r * f, f, 3, 3])?;
    }
    conv(&mut map, "tail.1", [c, f, 3, 3])?;
    let mut eye = vec![0.0; c * c];
    for i in 0..c {
        eye[i * c + i] = 1.0;
    }
    let mean: Vec<f32> = (0..c)
        .map(|i| config.rgb_range * config.rgb_mean.get(i).copied().unwrap_or(0.0))
        .collect();
    map.insert(
        "sub_mean.weight",
        Tensor::from_vec(&[c, c, 1, 1], eye.clone())?,
    );
    map.insert(
        "sub_mean.bias",
        Tensor::from_vec(&[c], mean.iter().map(|m| -m).collect())?,
    );
    map.insert("add_mean.weight", Tensor::from_vec(&[c, c, 1, 1], eye)?);
    map.insert("add_mean.bias", Tensor::from_vec(&[c], mean)?);
    Ok(map)
}
