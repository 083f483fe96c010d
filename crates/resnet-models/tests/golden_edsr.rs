//! EDSR super-resolution against the reference code (`edsr_*` fixtures), tiled and untiled.

mod common;

use common::golden;
use resnet_models::{Edsr, EdsrConfig};
use resnet_weights::WeightFile;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// How far a tiled result may lie from the untiled one, relative to the output's largest
/// value: rounding only (Winograd F(4x4) rounds pixels beyond an output's receptive field
/// into it; measured up to 3e-6).
const TILED: f32 = 2e-5;

/// `max |tiled - untiled| / max |untiled|`.
fn tiled_rel(tiled: &[f32], untiled: &[f32]) -> f32 {
    max_abs(tiled, untiled) / untiled.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn check(name: &str, scale: usize, blocks: usize, feats: usize, res_scale: f32) {
    let (Some(w), Some(e)) = (
        golden(&format!("{name}.safetensors")),
        golden(&format!("{name}.expected.safetensors")),
    ) else {
        return;
    };
    let model = Edsr::from_file(&w).unwrap();
    let cfg: &EdsrConfig = model.config();
    assert_eq!(
        (cfg.scale, cfg.n_resblocks, cfg.n_feats, cfg.res_scale),
        (scale, blocks, feats, res_scale)
    );
    let expected = WeightFile::open(e).unwrap();
    let x = expected.load("input").unwrap();
    let want = expected.load("output").unwrap();
    let y = model.forward(&x).unwrap();
    assert_eq!(y.shape(), want.shape());
    let err = max_abs(y.as_slice(), want.as_slice());
    eprintln!("{name}: untiled max abs error {err:.2e}");
    assert!(err < 1e-3, "{name}: {err}");
    // Tiled, with tiles smaller than the image: the same numbers up to rounding.
    let [_, _, h, w] = x.shape().dims4().unwrap();
    for tile in [2, 4, h.max(w) / 2 + 1] {
        let t = model.forward_tiled(&x, tile).unwrap();
        let d = tiled_rel(t.as_slice(), y.as_slice());
        eprintln!("{name}: tile {tile}: relative difference to untiled {d:.2e}");
        assert!(
            d <= TILED,
            "{name}: tile {tile} differs from untiled by {d}"
        );
    }
    // Single-threaded gives the same bits.
    let one = model.clone().with_threads(1).unwrap().forward(&x).unwrap();
    assert_eq!(one.as_slice(), y.as_slice());
}

#[test]
fn edsr_baseline_x2() {
    check("edsr_baseline_x2", 2, 16, 64, 1.0);
}

#[test]
fn edsr_tiny_x3() {
    check("edsr_tiny_x3", 3, 2, 16, 0.1);
}

#[test]
fn edsr_tiny_x4() {
    check("edsr_tiny_x4", 4, 2, 16, 0.1);
}

/// Random weights in the EDSR layout for `cfg`.
fn random_edsr(cfg: &EdsrConfig) -> resnet_weights::TensorMap {
    let mut m = resnet_weights::TensorMap::new();
    let mut k = 0u32;
    let mut put = |m: &mut resnet_weights::TensorMap, name: &str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let fan_in = (shape[1..].iter().product::<usize>()) as f32;
        let v = (0..n)
            .map(|i| {
                k = k
                    .wrapping_mul(1_664_525)
                    .wrapping_add(1_013_904_223 ^ i as u32);
                ((k >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0 / fan_in.sqrt()
            })
            .collect();
        m.insert(
            format!("{name}.weight"),
            resnet_tensor::Tensor::from_vec(shape, v).unwrap(),
        );
        m.insert(
            format!("{name}.bias"),
            resnet_tensor::Tensor::from_vec(&[shape[0]], vec![0.01; shape[0]]).unwrap(),
        );
    };
    let (c, f) = (cfg.channels, cfg.n_feats);
    put(&mut m, "sub_mean", &[c, c, 1, 1]);
    put(&mut m, "head.0", &[f, c, 3, 3]);
    for i in 0..cfg.n_resblocks {
        put(&mut m, &format!("body.{i}.body.0"), &[f, f, 3, 3]);
        put(&mut m, &format!("body.{i}.body.2"), &[f, f, 3, 3]);
    }
    put(&mut m, &format!("body.{}", cfg.n_resblocks), &[f, f, 3, 3]);
    for (i, r) in cfg.upsample_factors().unwrap().into_iter().enumerate() {
        put(&mut m, &format!("tail.0.{}", 2 * i), &[r * r * f, f, 3, 3]);
    }
    put(&mut m, "tail.1", &[c, f, 3, 3]);
    put(&mut m, "add_mean", &[c, c, 1, 1]);
    m
}

#[test]
fn tiles_smaller_than_the_image_give_the_untiled_result() {
    for scale in [2, 3, 4] {
        let cfg = EdsrConfig {
            n_resblocks: 2,
            n_feats: 12,
            res_scale: 0.5,
            ..EdsrConfig::baseline(scale)
        };
        let map = random_edsr(&cfg);
        assert_eq!(Edsr::infer_config(&map).unwrap().scale, scale);
        let model = Edsr::load(&map, &cfg).unwrap();
        let (h, w) = (37, 53);
        let x = resnet_tensor::Tensor::from_vec(
            &[2, 3, h, w],
            (0..2 * 3 * h * w)
                .map(|i| ((i * 7919) % 256) as f32)
                .collect(),
        )
        .unwrap();
        let y = model.forward(&x).unwrap();
        assert_eq!(y.shape().dims(), &[2, 3, h * scale, w * scale]);
        assert!(model.halo() < 12);
        let mut seen = 0;
        for tile in [6, 16, 25] {
            let t = model
                .forward_tiled_with_progress(&x, tile, None, |done, total| {
                    seen = total;
                    assert!(done <= total);
                })
                .unwrap();
            assert!(seen > 1);
            let d = tiled_rel(t.as_slice(), y.as_slice());
            assert!(d <= TILED, "scale {scale}, tile {tile}: {d}");
        }
        // An explicit overlap at least the receptive field: still the same; too small: it
        // shows, far beyond rounding.
        let big = model
            .forward_tiled_with_progress(&x, 16, Some(model.halo() + 4), |_, _| {})
            .unwrap();
        assert!(tiled_rel(big.as_slice(), y.as_slice()) <= TILED);
        let small = model
            .forward_tiled_with_progress(&x, 16, Some(0), |_, _| {})
            .unwrap();
        let d = tiled_rel(small.as_slice(), y.as_slice());
        assert!(d > 100.0 * TILED, "scale {scale}: no overlap, {d}");
    }
}

/// EDSR-baseline's 64-channel convs run Winograd F(4x4): tiles (grown by its 34-pixel halo)
/// give the untiled result up to rounding.
#[test]
fn baseline_tiles_give_the_untiled_result_up_to_rounding() {
    let cfg = EdsrConfig::baseline(2);
    let model = Edsr::load(&random_edsr(&cfg), &cfg).unwrap();
    let algos = model.network().conv_algorithms().unwrap();
    assert!(
        algos
            .iter()
            .any(|(_, a)| *a == resnet_models::ConvAlgo::Winograd4x4)
    );
    let (h, w) = (150, 110);
    let x = resnet_tensor::Tensor::from_vec(
        &[1, 3, h, w],
        (0..3 * h * w).map(|i| ((i * 7919) % 256) as f32).collect(),
    )
    .unwrap();
    let y = model.forward(&x).unwrap();
    let t = model.forward_tiled(&x, 64).unwrap();
    let d = tiled_rel(t.as_slice(), y.as_slice());
    eprintln!("edsr baseline x2, tile 64: relative difference to untiled {d:.2e}");
    assert!(d <= TILED, "{d}");
}

#[test]
fn a_residual_block_on_its_own_matches_the_reference_layers() {
    use resnet_layers::{Conv2d, Conv2dConfig, ReLU};
    use resnet_models::{Backend, Network, edsr_block_plan};
    use resnet_tensor::Tensor;
    // x + res_scale * conv2(relu(conv1(x))), against resnet-layers' reference convolutions.
    let c = 8;
    let w = |seed: usize| {
        Tensor::from_vec(
            &[c, c, 3, 3],
            (0..c * c * 9)
                .map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 500.0)
                .collect(),
        )
        .unwrap()
    };
    let b = Tensor::from_vec(&[c], vec![0.1; c]).unwrap();
    let cfg = Conv2dConfig::new(c, c, 3).with_padding(1).with_bias(true);
    let (c1, c2) = (
        Conv2d::new(cfg, w(1), Some(b.clone())).unwrap(),
        Conv2d::new(cfg, w(2), Some(b.clone())).unwrap(),
    );
    let mut map = resnet_weights::TensorMap::new();
    map.insert("body.0.weight".to_string(), w(1));
    map.insert("body.0.bias".to_string(), b.clone());
    map.insert("body.2.weight".to_string(), w(2));
    map.insert("body.2.bias".to_string(), b);
    let x = Tensor::from_vec(
        &[2, c, 5, 7],
        (0..2 * c * 35).map(|i| (i % 13) as f32 - 6.0).collect(),
    )
    .unwrap();
    let h = ReLU.forward(&c1.forward(&x).unwrap());
    let r = c2.forward(&h).unwrap();
    for backend in [Backend::Naive, Backend::Fast] {
        let net = Network::load(edsr_block_plan(c, 0.1).unwrap(), &map, backend).unwrap();
        let got = net.output(&x, "output").unwrap();
        for ((g, xv), rv) in got.as_slice().iter().zip(x.as_slice()).zip(r.as_slice()) {
            assert!(
                (g - (xv + 0.1 * rv)).abs() < 1e-4,
                "{backend}: {g} vs {}",
                xv + 0.1 * rv
            );
        }
    }
    // A block keeps its shape: weights of another shape are refused, naming the tensor.
    map.insert(
        "body.2.weight".to_string(),
        Tensor::zeros(&[4, c, 3, 3]).unwrap(),
    );
    let e = Network::load(edsr_block_plan(c, 1.0).unwrap(), &map, Backend::Fast).unwrap_err();
    assert!(e.to_string().contains("body.2.weight"), "{e}");
}

#[test]
fn the_naive_backend_gives_the_same_super_resolution() {
    use resnet_models::Backend;
    let cfg = EdsrConfig {
        n_resblocks: 2,
        n_feats: 12,
        res_scale: 0.5,
        ..EdsrConfig::baseline(2)
    };
    let map = random_edsr(&cfg);
    let fast = Edsr::load(&map, &cfg).unwrap();
    let naive = Edsr::load_on(&map, &cfg, Backend::Naive).unwrap();
    let x = resnet_tensor::Tensor::from_vec(
        &[1, 3, 9, 11],
        (0..3 * 99).map(|i| ((i * 7919) % 256) as f32).collect(),
    )
    .unwrap();
    let (a, b) = (fast.forward(&x).unwrap(), naive.forward(&x).unwrap());
    assert_eq!(a.shape().dims(), &[1, 3, 18, 22]);
    let err = max_abs(a.as_slice(), b.as_slice());
    assert!(err < 1e-3, "fast vs naive: {err}");
}
