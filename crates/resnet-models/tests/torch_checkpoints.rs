//! Networks loaded from PyTorch checkpoints (`torch.save` files, see
//! `crates/resnet-weights/tests/data/torch/make_fixtures.py`) compute exactly what the same
//! networks loaded from the safetensors files they were made from compute.

mod common;

use common::golden;
use resnet_models::{Edsr, ResNet};
use resnet_weights::{Tensor, WeightFile};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resnet-weights/tests/data/torch")
        .join(name)
}

/// A seeded input in [-1, 1), of an odd size.
fn input(dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(dims, v).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_slice().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn torchvision_checkpoints_give_the_outputs_of_their_safetensors_twins() {
    let x = input(&[2, 3, 45, 37]);
    for (twin, files) in [
        (
            "basic.safetensors",
            &["basic.pth", "basic_legacy.pth", "basic_wrapped.pth"][..],
        ),
        ("bottleneck_f16.safetensors", &["bottleneck_f16.pth"][..]),
    ] {
        let reference = ResNet::from_file(fixture(twin)).unwrap();
        let want = reference.forward(&x).unwrap();
        assert_eq!(want.shape().dims(), &[2, 10]);
        for file in files {
            let model = ResNet::from_file(fixture(file)).unwrap();
            assert_eq!(model.config(), reference.config(), "{file}");
            assert_eq!(bits(&model.forward(&x).unwrap()), bits(&want), "{file}");
        }
    }
}

#[test]
fn edsr_reference_checkpoint_gives_the_golden_output() {
    let (Some(w), Some(e)) = (
        golden("edsr_tiny_x3.safetensors"),
        golden("edsr_tiny_x3.expected.safetensors"),
    ) else {
        return;
    };
    let expected = WeightFile::open(e).unwrap();
    let x = expected.load("input").unwrap();
    let golden_model = Edsr::from_file(w).unwrap();
    let want = golden_model.forward(&x).unwrap();
    // A `.pt` carries no metadata: the shapes give blocks, features and scale, and the
    // residual scaling is the reference code's default for this size (1), not the 0.1 this
    // tiny net was made with (its safetensors file says so in its metadata).
    let pt = WeightFile::open(fixture("edsr_tiny_x3.pt")).unwrap();
    let inferred = Edsr::infer_config(&pt).unwrap();
    let cfg = golden_model.config();
    assert_eq!(
        (
            inferred.n_resblocks,
            inferred.n_feats,
            inferred.scale,
            inferred.res_scale
        ),
        (cfg.n_resblocks, cfg.n_feats, cfg.scale, 1.0)
    );
    let got = Edsr::load(&pt, cfg).unwrap().forward(&x).unwrap();
    assert_eq!(bits(&got), bits(&want));
    let reference = expected.load("output").unwrap();
    let err = got
        .as_slice()
        .iter()
        .zip(reference.as_slice())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 1e-3, "{err}");
}

/// Shapes without data: enough for `Edsr::infer_config`, whatever the network's size.
struct Shapes(Vec<(String, Vec<usize>)>);

impl resnet_weights::WeightSource for Shapes {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }
    fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }
    fn tensor(&self, name: &str, _: &[usize]) -> Result<Tensor, resnet_weights::WeightError> {
        Err(resnet_weights::WeightError::MissingKey {
            name: name.into(),
            expected: None,
        })
    }
}

#[test]
fn edsr_res_scale_defaults_to_the_reference_configurations() {
    let net = |blocks: usize, feats: usize| {
        let mut v = vec![
            ("head.0.weight".to_string(), vec![feats, 3, 3, 3]),
            ("tail.0.0.weight".to_string(), vec![4 * feats, feats, 3, 3]),
            ("tail.1.weight".to_string(), vec![3, feats, 3, 3]),
        ];
        for b in 0..blocks {
            v.push((format!("body.{b}.body.0.weight"), vec![feats, feats, 3, 3]));
        }
        Edsr::infer_config(&Shapes(v)).unwrap().res_scale
    };
    assert_eq!(net(32, 256), 0.1); // EDSR (the paper's)
    assert_eq!(net(16, 64), 1.0); // EDSR-baseline
    assert_eq!(net(32, 64), 1.0);
}
