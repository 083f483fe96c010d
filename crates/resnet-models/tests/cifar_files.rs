//! He et al.'s CIFAR nets from weight files: the architecture recognised from the metadata
//! `arch` (as `resnet train --save` writes it) or the keys, loaded through
//! `ResNet::from_file` on both kernel sets, and the same output as the plan run directly.

mod common;

use resnet_models::*;
use resnet_tensor::Tensor;
use resnet_weights::{Prefixed, TensorMap, WeightFile, write_safetensors_with_counters};
use std::collections::HashMap;
use std::path::Path;

/// Deterministic values in [-1, 1) (a small LCG: test data only).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The seeded weights of `cfg`, with batch-norms that do something (random affine parameters
/// and running statistics), so a mistake in loading them shows.
fn weights(cfg: &CifarConfig, seed: u64) -> TensorMap {
    let mut map = random_plan_weights(&cifar_plan(cfg).unwrap(), seed).unwrap();
    let names: Vec<String> = map.iter().map(|(k, _)| k.to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        let t = map.get(name).unwrap();
        let n = t.len();
        let v = noise(seed * 1000 + i as u64, n);
        let v: Vec<f32> = if name.ends_with("running_var") {
            v.iter().map(|x| 0.5 + x.abs()).collect()
        } else if name.ends_with("running_mean") || name.contains("bn") {
            v.iter()
                .map(|x| 0.3 * x + if name.ends_with(".weight") { 1.0 } else { 0.0 })
                .collect()
        } else {
            continue;
        };
        let dims = t.shape().dims().to_vec();
        map.insert(name.clone(), Tensor::from_vec(&dims, v).unwrap());
    }
    map
}

/// What `resnet train --save` writes: the state_dict, a `num_batches_tracked` per BN, and
/// the metadata (`arch`, `shortcut`, `num_classes`, `in_channels`), unless `meta` is `None`.
fn write(path: &Path, map: &TensorMap, meta: Option<HashMap<String, String>>) {
    let tensors: Vec<(&str, &Tensor)> = map.iter().collect();
    let counters: Vec<(String, i64)> = map
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".running_mean"))
        .map(|bn| (format!("{bn}.num_batches_tracked"), 2))
        .collect();
    let counters: Vec<(&str, i64)> = counters.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    write_safetensors_with_counters(path, &tensors, &counters, meta).unwrap();
}

fn train_metadata(cfg: &CifarConfig) -> HashMap<String, String> {
    HashMap::from([
        ("arch".to_string(), cfg.name()),
        ("shortcut".to_string(), cfg.shortcut.name().to_string()),
        ("num_classes".to_string(), cfg.num_classes.to_string()),
        ("in_channels".to_string(), cfg.in_channels.to_string()),
    ])
}

fn meta(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn input(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Tensor {
    Tensor::from_vec(&[n, c, h, w], noise(seed, n * c * h * w)).unwrap()
}

#[test]
fn cifar_files_load_and_give_the_plans_output_on_both_backends() {
    use CifarShortcut::{A, B, None as Plain};
    let dir = tempfile::tempdir().unwrap();
    // (depth, shortcut, in_channels, classes, width, input H x W)
    let cases = [
        (20, A, 1, 10, 1, [28, 28]),
        (20, B, 3, 10, 1, [32, 32]),
        (20, Plain, 1, 10, 1, [28, 28]),
        (8, A, 3, 100, 1, [33, 33]),
        (8, B, 1, 100, 2, [33, 33]),
        (8, Plain, 3, 100, 1, [17, 21]),
        (14, A, 3, 10, 2, [9, 7]),
    ];
    for (i, (depth, shortcut, c, classes, width, [h, w])) in cases.into_iter().enumerate() {
        let cfg = CifarConfig::new(depth, classes)
            .with_shortcut(shortcut)
            .with_in_channels(c)
            .with_width(width);
        let what = format!("{} ({c} channels, {classes} classes, {h}x{w})", cfg.name());
        let map = weights(&cfg, 11 + i as u64);
        let path = dir.path().join(format!("{i}.safetensors"));
        write(&path, &map, Some(train_metadata(&cfg)));

        let fast = ResNet::from_file(&path).unwrap().with_threads(2).unwrap();
        let naive = ResNet::from_file_on(&path, Backend::Naive).unwrap();
        assert_eq!(fast.config(), &cfg, "{what}");
        assert_eq!(naive.config(), &cfg, "{what}");
        assert_eq!(fast.config().feature_dim(), 64 * width);
        assert_eq!(
            infer_arch(&WeightFile::open(&path).unwrap()).unwrap(),
            Arch::Cifar(cfg.clone())
        );

        let x = input(3, c, h, w, 100 + i as u64);
        let plan = cifar_plan(&cfg).unwrap();
        let direct_fast = Network::load(plan.clone(), &map, Backend::Fast).unwrap();
        let direct_naive = Network::load(plan, &map, Backend::Naive).unwrap();
        let logits = fast.forward(&x).unwrap();
        assert_eq!(logits.shape().dims(), &[3, classes], "{what}");
        // The file holds the same f32 values: bitwise the same output as the plan run directly.
        assert_eq!(logits, direct_fast.output(&x, "logits").unwrap(), "{what}");
        let reference = naive.forward(&x).unwrap();
        assert_eq!(
            reference,
            direct_naive.output(&x, "logits").unwrap(),
            "{what}"
        );
        let e = common::rel_err(&logits, &reference);
        assert!(e < 1e-5, "{what}: fast vs naive {e:e}");

        // Every stage, and the embedding.
        let stages = fast.forward_stages(&x).unwrap();
        assert_eq!(stages.layers.len(), 3);
        assert_eq!(stages.stem.shape().dims(), &[3, 16 * width, h, w]);
        assert_eq!(stages.pool.shape().dims(), &[3, 64 * width]);
        assert_eq!(stages.logits, logits);
        let naive_stages = naive.forward_stages(&x).unwrap();
        for ((name, a), (_, b)) in stages.named().into_iter().zip(naive_stages.named()) {
            let e = common::rel_err(a, b);
            assert!(e < 1e-5, "{what}: {name} fast vs naive {e:e}");
        }
        assert_eq!(fast.forward_features(&x).unwrap(), stages.pool);

        // The wrong channel count is an input error, not a panic.
        let bad = input(1, c + 1, h, w, 1);
        assert!(
            matches!(fast.forward(&bad), Err(ModelError::Input { .. })),
            "{what}"
        );
    }
}

#[test]
fn the_shortcut_comes_from_the_metadata_where_the_keys_cannot_tell() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let a = CifarConfig::new(20, 10).with_in_channels(1);
    let plain = a.clone().plain();
    let b = a.clone().with_shortcut(CifarShortcut::B);
    let map = weights(&a, 5);
    let map_b = weights(&b, 6);

    // Option B: the projection weights say so; no metadata needed.
    write(&path("b.safetensors"), &map_b, None);
    assert_eq!(
        ResNet::from_file(path("b.safetensors")).unwrap().config(),
        &b
    );

    // Option A and plain have the same keys: without metadata, an error that says what to add.
    write(&path("bare.safetensors"), &map, None);
    let e = ResNet::from_file(path("bare.safetensors")).unwrap_err();
    assert!(matches!(e, ModelError::Infer(_)), "{e}");
    let e = e.to_string();
    for want in [
        "metadata",
        "arch = \"cifar-resnet20\"",
        "\"cifar-plain20\"",
        "shortcut",
        "layer2.0.downsample.0.weight",
    ] {
        assert!(e.contains(want), "{want:?} not in: {e}");
    }

    // Either key of the metadata decides; the two readings are different networks.
    let x = input(2, 1, 28, 28, 9);
    let mut logits = Vec::new();
    for (name, m, want) in [
        ("arch_a", meta(&[("arch", "cifar-resnet20")]), &a),
        ("arch_a2", meta(&[("arch", "cifar-resnet20-a")]), &a),
        ("arch_plain", meta(&[("arch", "cifar-plain20")]), &plain),
        ("shortcut_a", meta(&[("shortcut", "A")]), &a),
        ("shortcut_none", meta(&[("shortcut", "none")]), &plain),
        (
            "both",
            meta(&[
                ("arch", "cifar-plain20"),
                ("shortcut", "none"),
                ("num_classes", "10"),
            ]),
            &plain,
        ),
    ] {
        let p = path(&format!("{name}.safetensors"));
        write(&p, &map, m);
        let model = ResNet::from_file(&p).unwrap();
        assert_eq!(model.config(), want, "{name}");
        logits.push(model.forward(&x).unwrap());
    }
    assert_eq!(logits[0], logits[1]);
    assert_eq!(logits[0], logits[3]);
    assert_eq!(logits[2], logits[4]);
    assert_ne!(
        logits[0], logits[2],
        "option A and plain gave the same output"
    );

    // Metadata that contradicts the tensors, or itself: an error naming what disagrees.
    // (weights, metadata, what the error must say)
    type Case<'a> = (&'a TensorMap, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 9] = [
        (
            &map,
            &[("arch", "cifar-resnet32")],
            &["depth 32", "depth 20"],
        ),
        (
            &map,
            &[("arch", "cifar-resnet20-w2")],
            &["width 2", "width 1"],
        ),
        (
            &map,
            &[("arch", "cifar-resnet20-b")],
            &["option B", "layer2.0.downsample.0.weight"],
        ),
        (
            &map_b,
            &[("arch", "cifar-resnet20")],
            &["option A", "only option B"],
        ),
        (
            &map_b,
            &[("arch", "cifar-plain20")],
            &["option none", "projection"],
        ),
        (
            &map,
            &[("arch", "cifar-banana")],
            &["cifar-banana", "cifar-resnetN-b"],
        ),
        (
            &map,
            &[("shortcut", "C")],
            &["shortcut = \"C\"", "A, B or none"],
        ),
        (
            &map,
            &[("arch", "cifar-resnet20"), ("shortcut", "none")],
            &["contradicts"],
        ),
        (
            &map,
            &[("arch", "cifar-resnet20"), ("num_classes", "100")],
            &["num_classes = 100"],
        ),
    ];
    for (i, (m, pairs, wants)) in cases.into_iter().enumerate() {
        let p = path(&format!("bad{i}.safetensors"));
        write(&p, m, meta(pairs));
        let e = ResNet::from_file(&p).unwrap_err();
        assert!(matches!(e, ModelError::Infer(_)), "{pairs:?}: {e}");
        for want in wants {
            assert!(
                e.to_string().contains(want),
                "{pairs:?}: {want:?} not in: {e}"
            );
        }
    }
}

#[test]
fn keys_that_are_not_a_cifar_net_are_refused_with_the_reason() {
    let cfg = CifarConfig::new(20, 10).with_shortcut(CifarShortcut::B);
    let full = weights(&cfg, 3);
    let without = |drop: &str| {
        let mut m = TensorMap::new();
        for (k, t) in full.iter().filter(|(k, _)| !k.starts_with(drop)) {
            m.insert(k, t.clone());
        }
        m
    };
    // A missing block of layer3: stages of unequal length.
    let e = infer_arch(&without("layer3.2.")).unwrap_err().to_string();
    assert!(e.contains("[3, 3, 2]"), "{e}");
    // A stem of 24 filters is not 16 x width.
    let mut m = without("conv1.");
    m.insert("conv1.weight", Tensor::zeros(&[24, 3, 3, 3]).unwrap());
    let e = infer_arch(&m).unwrap_err().to_string();
    assert!(
        e.contains("conv1.weight") && e.contains("16 x width"),
        "{e}"
    );
    // No classifier.
    let e = infer_arch(&without("fc.")).unwrap_err().to_string();
    assert!(e.contains("fc.weight"), "{e}");
    // A file with an extra tensor is refused by the strict load, naming it.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("extra.safetensors");
    let mut m = full.clone();
    m.insert("layer9.weight", Tensor::zeros(&[2]).unwrap());
    write(&p, &m, None);
    let e = ResNet::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("layer9.weight"), "{e}");
    // A wrong shape is named by the load.
    let p = dir.path().join("shape.safetensors");
    let mut m = full.clone();
    m.insert("layer2.1.bn1.running_var", Tensor::zeros(&[33]).unwrap());
    write(&p, &m, None);
    let e = ResNet::from_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("layer2.1.bn1.running_var") && e.contains("[33]"),
        "{e}"
    );
}

#[test]
fn torchvision_files_are_still_recognised_by_their_keys() {
    let cfg = ResNetConfig::new(BlockKind::Basic, vec![1, 1, 1]).with_num_classes(5);
    let map = random_tensor_map(&cfg, 4).unwrap();
    assert_eq!(infer_arch(&map).unwrap(), Arch::ResNet(cfg.clone()));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tv.safetensors");
    let tensors: Vec<(&str, &Tensor)> = map.iter().collect();
    resnet_weights::write_safetensors(&p, &tensors, meta(&[("arch", "resnet18")])).unwrap();
    let m = ResNet::from_file(&p).unwrap();
    assert_eq!(m.config(), &cfg);
    assert_eq!(m.config().resnet(), Some(&cfg));
    assert_eq!(m.config().cifar(), None);
    // ResNet::random and load take either family.
    let c = CifarConfig::new(8, 3);
    let r = ResNet::random_on(&c, 1, Backend::Naive).unwrap();
    assert_eq!(r.config().cifar(), Some(&c));
    assert_eq!(r.backend(), Backend::Naive);
}

/// The golden training fixtures: the state after PyTorch's SGD steps (`after.*`), saved with
/// the metadata `resnet train` writes and loaded through `ResNet::from_file`, gives PyTorch's
/// eval-mode logits (float64) within the fixture's tolerance on both kernel sets.
#[test]
fn trained_golden_states_give_the_eval_logits() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in [
        "cifar_resnet20_a_fmnist",
        "cifar_plain20_fmnist",
        "cifar_resnet20_b_rgb",
        "cifar_plain20_identity_prior",
    ] {
        let Some(path) = common::golden(&format!("train/{fixture}.safetensors")) else {
            return;
        };
        let file = WeightFile::open(&path).unwrap();
        let recipe: serde_json::Value = serde_json::from_str(&file.metadata()["recipe"]).unwrap();
        let tolerance: serde_json::Value =
            serde_json::from_str(&file.metadata()["tolerance"]).unwrap();
        let depth = recipe["depth"].as_u64().unwrap() as usize;
        let shortcut = match recipe["shortcut"].as_str() {
            Some(s) => CifarShortcut::from_name(s).unwrap(),
            None => CifarShortcut::None,
        };
        let x = file.load("input").unwrap();
        let want = file.load("eval_logits").unwrap();
        let (n, c) = (x.shape().dims()[0], x.shape().dims()[1]);
        let classes = want.shape().dims()[1];
        let cfg = CifarConfig::new(depth, classes)
            .with_shortcut(shortcut)
            .with_in_channels(c);
        // The trained state as `resnet train --save` writes it.
        let after = Prefixed::new(&file, "after.");
        let mut map = TensorMap::new();
        for name in after.names() {
            if resnet_weights::is_ignorable(&name) {
                continue;
            }
            let shape = after.shape_of(&name).unwrap();
            map.insert(name.clone(), after.tensor(&name, &shape).unwrap());
        }
        let p = dir.path().join(format!("{fixture}.safetensors"));
        write(&p, &map, Some(train_metadata(&cfg)));
        let bound = tolerance["eval_logits"].as_f64().unwrap();
        for backend in [Backend::Fast, Backend::Naive] {
            let model = ResNet::from_file_on(&p, backend).unwrap();
            assert_eq!(model.config(), &cfg, "{fixture}");
            let got = model.forward(&x).unwrap();
            assert_eq!(got.shape().dims(), &[n, classes]);
            let e = common::rel_err(&got, &want);
            eprintln!("{fixture} {backend}: eval_logits rel err {e:.2e} (bound {bound:.0e})");
            // The issue asks for 1e-5 relative; the fixture allows its own bound.
            assert!(
                e <= bound.min(1e-5),
                "{fixture} {backend}: {e:e} > {bound:e}"
            );
        }
        // Option B needs no metadata at all: the fixture's own keys under `after.` suffice.
        if shortcut == CifarShortcut::B {
            assert_eq!(infer_cifar_config(&after).unwrap(), cfg);
            let (m, _) =
                ResNet::load_checked(&after, &infer_arch(&after).unwrap(), Strictness::Strict)
                    .unwrap();
            assert_eq!(
                m.forward(&x).unwrap(),
                ResNet::from_file(&p).unwrap().forward(&x).unwrap()
            );
        }
    }
}
