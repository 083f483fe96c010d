//! Whole networks against torchvision, every stage, from `$RESNET_GOLDEN_DIR`.

mod common;

use common::{golden, rel_err};
use resnet_models::{Backend, ResNet, infer_config, resnet18, resnet50};
use resnet_weights::{NameScheme, Strictness, TensorMap, WeightFile, WeightSource};

fn check_stages(model: &ResNet, expected: &WeightFile, label: &str) -> Vec<(String, f64)> {
    let x = expected.load("x224").unwrap();
    let out = model.forward_stages(&x).unwrap();
    let mut errs = Vec::new();
    for (name, t) in out.named() {
        let want = expected.load(&format!("x224.{name}")).unwrap();
        let e = rel_err(t, &want);
        eprintln!("{label} {name:>7}: relative error {e:.3e}");
        errs.push((name, e));
    }
    for (name, e) in &errs {
        assert!(
            *e < 1e-4,
            "{label} {name}: relative error {e:e} exceeds 1e-4"
        );
    }
    errs
}

#[test]
fn resnet18_f16_every_stage() {
    let (Some(w), Some(e)) = (
        golden("resnet18_f16.safetensors"),
        golden("resnet18_f16.expected.safetensors"),
    ) else {
        return;
    };
    let file = WeightFile::open(&w).unwrap();
    let cfg = infer_config(&file).unwrap();
    assert_eq!(cfg, resnet18(1000));
    let (model, unused) = ResNet::load_checked(&file, &cfg, Strictness::Strict).unwrap();
    assert!(unused.is_empty());
    assert_eq!(model.backend(), Backend::Fast);
    let expected = WeightFile::open(e).unwrap();
    check_stages(&model, &expected, "resnet18 fast");
    let naive = ResNet::load_on(&file, &cfg, Backend::Naive).unwrap();
    check_stages(&naive, &expected, "resnet18 naive");
}

#[test]
fn resnet50_bf16_every_stage() {
    let (Some(w), Some(e)) = (
        golden("resnet50_bf16.safetensors"),
        golden("resnet50_bf16.expected.safetensors"),
    ) else {
        return;
    };
    let model = ResNet::from_file(&w).unwrap();
    assert_eq!(model.config(), &resnet50(1000));
    let expected = WeightFile::open(e).unwrap();
    check_stages(&model, &expected, "resnet50 fast");
    // Any thread count gives the same bits.
    let x = expected.load("x224").unwrap();
    let one = model.clone().with_threads(1).unwrap().forward(&x).unwrap();
    let three = model.clone().with_threads(3).unwrap().forward(&x).unwrap();
    assert_eq!(one.as_slice(), three.as_slice());
    let naive = ResNet::from_file_on(&w, Backend::Naive).unwrap();
    check_stages(&naive, &expected, "resnet50 naive");
}

/// torchvision name → HF transformers name (the inverse of the loader's mapping), written here
/// independently so the test does not reuse the code under test.
fn to_hf(tv: &str) -> String {
    if let Some(rest) = tv.strip_prefix("conv1.") {
        return format!("resnet.embedder.embedder.convolution.{rest}");
    }
    if let Some(rest) = tv.strip_prefix("bn1.") {
        return format!("resnet.embedder.embedder.normalization.{rest}");
    }
    if let Some(rest) = tv.strip_prefix("fc.") {
        return format!("classifier.1.{rest}");
    }
    // layerS.B.(convJ|bnJ|downsample.K).param
    let parts: Vec<&str> = tv.split('.').collect();
    let stage: usize = parts[0].strip_prefix("layer").unwrap().parse().unwrap();
    let block = parts[1];
    let head = format!("resnet.encoder.stages.{}.layers.{block}", stage - 1);
    if parts[2] == "downsample" {
        let kind = if parts[3] == "0" {
            "convolution"
        } else {
            "normalization"
        };
        return format!("{head}.shortcut.{kind}.{}", parts[4..].join("."));
    }
    let (kind, j) = if let Some(j) = parts[2].strip_prefix("conv") {
        ("convolution", j)
    } else {
        ("normalization", parts[2].strip_prefix("bn").unwrap())
    };
    let j: usize = j.parse().unwrap();
    format!("{head}.layer.{}.{kind}.{}", j - 1, parts[3..].join("."))
}

#[test]
fn resnet18_with_hf_transformers_names_gives_the_same_logits() {
    let (Some(w), Some(e)) = (
        golden("resnet18_f16.safetensors"),
        golden("resnet18_f16.expected.safetensors"),
    ) else {
        return;
    };
    let file = WeightFile::open(&w).unwrap();
    let mut renamed = TensorMap::new();
    for name in file.names() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        renamed.insert(to_hf(&name), file.load(&name).unwrap());
    }
    assert!(
        renamed
            .get("resnet.encoder.stages.1.layers.0.shortcut.convolution.weight")
            .is_some()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hf.safetensors");
    std::fs::write(&path, renamed.to_safetensors_bytes(None).unwrap()).unwrap();

    let hf = WeightFile::open(&path).unwrap();
    assert_eq!(hf.scheme(), NameScheme::HfTransformers);
    let model = ResNet::from_file(&path).unwrap();
    let reference = ResNet::load(&file, &resnet18(1000)).unwrap();
    assert_eq!(model.backend(), reference.backend());
    let expected = WeightFile::open(e).unwrap();
    let x = expected.load("x224").unwrap();
    let (a, b) = (model.forward(&x).unwrap(), reference.forward(&x).unwrap());
    assert_eq!(a.as_slice(), b.as_slice(), "same weights, same logits");
    assert!(rel_err(&a, &expected.load("x224.logits").unwrap()) < 1e-4);
}

#[test]
fn a_plain_twin_loads_from_a_resnet_file_leniently() {
    let Some(w) = golden("resnet18_f16.safetensors") else {
        return;
    };
    let file = WeightFile::open(&w).unwrap();
    let plain = resnet18(1000).plain();
    let (_, unused) = ResNet::load_checked(&file, &plain, Strictness::Lenient).unwrap();
    assert_eq!(
        unused.len(),
        3 * 5,
        "three projections of conv + 4 BN tensors: {unused:?}"
    );
    assert!(ResNet::load_checked(&file, &plain, Strictness::Strict).is_err());
}
