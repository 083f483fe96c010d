//! The real `resnet` binary on the sample images and the golden weights.

use assert_cmd::Command;
use resnet_models::{ResNet, top_k};
use resnet_weights::{TensorMap, WeightFile, WeightSource};
use std::path::{Path, PathBuf};

fn golden_dir() -> Option<PathBuf> {
    let (dir, required) = match std::env::var_os("RESNET_GOLDEN_DIR") {
        Some(d) => (PathBuf::from(d), true),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
            false,
        ),
    };
    if dir.join("resnet18_f16.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        !required,
        "golden fixtures missing from RESNET_GOLDEN_DIR={}",
        dir.display()
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED: no golden fixtures at {}; set RESNET_GOLDEN_DIR !!!!!!!!\n",
        dir.display()
    );
    None
}

fn resnet() -> Command {
    Command::cargo_bin("resnet").expect("the resnet binary is built")
}

/// Run and expect failure: exit code 1, one line on stderr starting with "error:", no panic.
fn fails(args: &[&str]) -> String {
    let out = resnet().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Run and expect success with one JSON value on stdout (`bench --json`).
fn json_out(args: &[&str]) -> serde_json::Value {
    let out = resnet().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `max|a - b| / max|b|` (the shapes must agree).
fn rel_err(a: &resnet_tensor::Tensor, b: &resnet_tensor::Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let num = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    let den = b.as_slice().iter().fold(0.0f32, |m, y| m.max(y.abs()));
    num / den
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SAMPLES: [(&str, &str); 3] = [
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"),
];

#[test]
fn classify_matches_the_model_on_torchvision_tensors() {
    let Some(g) = golden_dir() else { return };
    let weights = g.join("resnet18_f16.safetensors");
    let images = g.join("../data/images");
    let out = resnet()
        .args([
            "classify",
            "--json",
            "--top",
            "5",
            "--batch",
            "2",
            "--weights",
            s(&weights),
        ])
        .args(SAMPLES.iter().map(|(_, f)| images.join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let model = ResNet::from_file(&weights).unwrap();
    let pre = WeightFile::open(g.join("preprocess.safetensors")).unwrap();
    for ((key, file), line) in SAMPLES.iter().zip(&lines) {
        assert!(line["path"].as_str().unwrap().ends_with(file));
        let want = &top_k(&model.forward(&pre.load(key).unwrap()).unwrap(), 5).unwrap()[0];
        let idx: Vec<usize> = line["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(idx, want.iter().map(|w| w.0).collect::<Vec<_>>(), "{key}");
        for (p, w) in line["probabilities"].as_array().unwrap().iter().zip(want) {
            assert!(
                (p.as_f64().unwrap() - f64::from(w.1)).abs() < 1e-3,
                "{key}: {p} vs {}",
                w.1
            );
        }
        assert_eq!(line["names"].as_array().unwrap().len(), 5);
    }
    // Text output and a directory argument work too.
    let text = resnet()
        .args(["classify", "--weights", s(&weights), s(&images)])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("chelsea.png") && text.contains("rocket.jpg") && text.contains(" 1. "));
}

#[test]
fn embed_writes_one_row_per_image_with_paths() {
    let Some(g) = golden_dir() else { return };
    let weights = g.join("resnet18_f16.safetensors");
    let images = g.join("../data/images");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.safetensors");
    resnet()
        .args([
            "embed",
            "--weights",
            s(&weights),
            "--output",
            s(&out),
            s(&images.join("chelsea.png")),
            s(&images.join("coffee.png")),
        ])
        .assert()
        .success();
    let f = WeightFile::open(&out).unwrap();
    let e = f.tensor("embeddings", &[2, 512]).unwrap();
    let paths: Vec<String> = serde_json::from_str(&f.metadata()["paths"]).unwrap();
    assert!(paths[0].ends_with("chelsea.png") && paths[1].ends_with("coffee.png"));
    let model = ResNet::from_file(&weights).unwrap();
    let x = resnet_image::Preprocess::imagenet()
        .load(images.join("coffee.png"))
        .unwrap();
    let want = model.forward_features(&x).unwrap();
    assert_eq!(&e.as_slice()[512..], want.as_slice());
}

#[test]
fn forward_matches_the_golden_logits_and_stages() {
    let Some(g) = golden_dir() else { return };
    let weights = g.join("resnet18_f16.safetensors");
    let expected = g.join("resnet18_f16.expected.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.safetensors");
    resnet()
        .args([
            "--threads",
            "2",
            "forward",
            "--weights",
            s(&weights),
            "--input",
            s(&expected),
            "--key",
            "x224",
        ])
        .args(["--output", s(&out), "--stages"])
        .assert()
        .success();
    let got = WeightFile::open(&out).unwrap();
    let want = WeightFile::open(&expected).unwrap();
    for name in [
        "stem", "layer1", "layer2", "layer3", "layer4", "pool", "logits",
    ] {
        let (a, b) = (
            got.load(name).unwrap(),
            want.load(&format!("x224.{name}")).unwrap(),
        );
        let e = rel_err(&a, &b);
        assert!(e < 1e-4, "{name}: {e}");
    }
    // Ambiguous input key: a clear error.
    let e = fails(&[
        "forward",
        "--weights",
        s(&weights),
        "--input",
        s(&expected),
        "--output",
        s(&out),
    ]);
    assert!(e.contains("--key"), "{e}");
}

#[test]
fn inspect_describes_the_file() {
    let Some(g) = golden_dir() else { return };
    let out = resnet()
        .args(["inspect", s(&g.join("resnet18_f16.safetensors"))])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("architecture: resnet18"), "{text}");
    assert!(text.contains("torchvision"), "{text}");
    assert!(text.contains("unmapped:     none"), "{text}");
    assert!(text.contains("11.7 M"), "{text}");
    assert!(!text.contains("plan ("), "{text}");
    // The plan: every step with the dims it produces, at the size asked for.
    let out = resnet()
        .args(["inspect", "--plan", "--size", "64"])
        .arg(g.join("resnet18_f16.safetensors"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("plan (step, then the dims it produces):"),
        "{text}"
    );
    assert!(text.contains("[layer4.1.conv2]"), "{text}");
    assert!(text.contains("output logits"), "{text}");
    assert!(text.contains("[1, 512, 2, 2]"), "{text}");
    let out = resnet()
        .args(["inspect", "--plan", "--json", "--size", "16"])
        .arg(g.join("edsr_tiny_x3.safetensors"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = v["plan"].as_array().unwrap();
    assert!(
        plan.iter()
            .any(|l| l.as_str().unwrap().contains("pixel_shuffle"))
    );
    assert!(
        plan.last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("[1, 3, 48, 48]")
    );
    // JSON, and a file with extra and HF-named tensors.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hf.safetensors");
    let mut m = TensorMap::new();
    m.insert(
        "resnet.embedder.embedder.convolution.weight",
        resnet_tensor::Tensor::zeros(&[64, 3, 7, 7]).unwrap(),
    );
    m.insert("extra.weight", resnet_tensor::Tensor::zeros(&[2]).unwrap());
    std::fs::write(&p, m.to_safetensors_bytes(None).unwrap()).unwrap();
    let out = resnet()
        .args(["inspect", "--json", s(&p)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["scheme"], "HF transformers");
    assert!(v["architecture"].is_null());
    assert_eq!(v["unmapped"].as_array().unwrap().len(), 2);
}

#[test]
fn bench_prints_one_json_line() {
    let v = json_out(&[
        "bench",
        "--arch",
        "resnet18",
        "--size",
        "64",
        "--iters",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    for k in [
        "arch",
        "batch",
        "threads",
        "size",
        "median_ms",
        "min_ms",
        "images_per_s",
        "gflops",
    ] {
        assert!(!v[k].is_null(), "{k} missing: {v}");
    }
    assert_eq!(v["threads"], 1);
}

#[test]
fn errors_are_one_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("broken.png");
    std::fs::write(&garbage, b"definitely not a png").unwrap();
    let tiny = dir.path().join("tiny.safetensors");
    let cfg = resnet_models::ResNetConfig::new(resnet_models::BlockKind::Basic, vec![1])
        .with_num_classes(3);
    std::fs::write(
        &tiny,
        resnet_models::random_tensor_map(&cfg, 1)
            .unwrap()
            .to_safetensors_bytes(None)
            .unwrap(),
    )
    .unwrap();
    let not_resnet = dir.path().join("other.safetensors");
    let mut m = TensorMap::new();
    m.insert(
        "encoder.weight",
        resnet_tensor::Tensor::zeros(&[2, 2]).unwrap(),
    );
    std::fs::write(&not_resnet, m.to_safetensors_bytes(None).unwrap()).unwrap();
    let out = dir.path().join("o.safetensors");
    let good_img = dir.path().join("ok.png");
    image::RgbImage::new(8, 8).save(&good_img).unwrap();

    let e = fails(&[
        "classify",
        "--weights",
        "/nonexistent.safetensors",
        s(&good_img),
    ]);
    assert!(e.contains("/nonexistent.safetensors"), "{e}");
    let e = fails(&[
        "classify",
        "--weights",
        s(&tiny),
        s(&dir.path().join("missing.jpg")),
    ]);
    assert!(e.contains("missing.jpg"), "{e}");
    let e = fails(&[
        "classify",
        "--weights",
        s(&tiny),
        "--labels",
        s(&tiny),
        s(&good_img),
    ]);
    assert!(e.contains("labels"), "{e}");
    let e = fails(&[
        "embed",
        "--weights",
        s(&tiny),
        "--output",
        s(&out),
        s(&garbage),
    ]);
    assert!(e.contains("broken.png"), "{e}");
    let e = fails(&["classify", "--weights", s(&not_resnet), s(&good_img)]);
    assert!(e.contains("conv1.weight"), "{e}");
    let e = fails(&["inspect", s(&garbage)]);
    assert!(e.contains("broken.png"), "{e}");
    let e = fails(&[
        "forward",
        "--weights",
        s(&tiny),
        "--input",
        s(&not_resnet),
        "--output",
        s(&out),
    ]);
    assert!(e.contains("input"), "{e}");
    let e = fails(&["bench", "--arch", "vgg16"]);
    assert!(e.contains("resnet18"), "{e}");
    // Offline (or a repository that does not exist): a clear error pointing to local files.
    let e = fails(&["inspect", "hf:resnet-rs-tests/no-such-repository"]);
    assert!(e.contains("--weights PATH"), "{e}");
    // Usage errors are clap's: exit code 2.
    resnet().args(["classify"]).assert().code(2);
    resnet().args(["--threads", "0", "bench"]).assert().code(2);
}

#[test]
fn malformed_weights_are_one_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let with_header = |h: &[u8], data: &[u8]| {
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v.extend_from_slice(data);
        v
    };
    let mut huge = with_header(b"{}", &[]);
    huge[..8].copy_from_slice(&(64u64 << 20).to_le_bytes());
    let header_level = [
        ("empty.safetensors", vec![], "shorter than the 8-byte header"),
        ("huge.safetensors", huge, "exceeds the limit of 16777216 bytes"),
        ("json.safetensors", with_header(b"{nope", &[]), "malformed safetensors file"),
        (
            "overlap.safetensors",
            with_header(
                br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
            "malformed safetensors file",
        ),
    ];
    let x = dir.path().join("x.safetensors");
    let mut m = TensorMap::new();
    m.insert("x", resnet_tensor::Tensor::zeros(&[1, 3, 16, 16]).unwrap());
    std::fs::write(&x, m.to_safetensors_bytes(None).unwrap()).unwrap();
    let out = dir.path().join("y.safetensors");
    for (name, bytes, msg) in header_level {
        let p = write(name, bytes);
        let e = fails(&["inspect", s(&p)]);
        assert!(e.contains(msg), "inspect {name}: {e}");
        let e = fails(&[
            "forward",
            "--weights",
            s(&p),
            "--input",
            s(&x),
            "--output",
            s(&out),
        ]);
        assert!(e.contains(msg), "forward {name}: {e}");
    }
    // Content errors: a NaN weight and a wrong shape, named.
    let cfg = resnet_models::ResNetConfig::new(resnet_models::BlockKind::Basic, vec![1])
        .with_num_classes(3);
    let mut map = resnet_models::random_tensor_map(&cfg, 2).unwrap();
    let mut w = map.get("layer1.0.conv2.weight").unwrap().clone();
    w.as_mut_slice()[5] = f32::NAN;
    map.insert("layer1.0.conv2.weight", w);
    let nan = write("nan.safetensors", map.to_safetensors_bytes(None).unwrap());
    let e = fails(&[
        "forward",
        "--weights",
        s(&nan),
        "--input",
        s(&x),
        "--output",
        s(&out),
    ]);
    assert!(
        e.contains("layer1.0.conv2.weight") && e.contains("non-finite"),
        "{e}"
    );
    let mut map = resnet_models::random_tensor_map(&cfg, 2).unwrap();
    map.insert(
        "bn1.running_var",
        resnet_tensor::Tensor::zeros(&[65]).unwrap(),
    );
    let shape = write("shape.safetensors", map.to_safetensors_bytes(None).unwrap());
    let e = fails(&[
        "forward",
        "--weights",
        s(&shape),
        "--input",
        s(&x),
        "--output",
        s(&out),
    ]);
    assert!(
        e.contains("bn1.running_var") && e.contains("[65]") && e.contains("[64]"),
        "{e}"
    );
}

#[test]
fn enhance_and_forward_with_edsr_weights() {
    let Some(g) = golden_dir() else { return };
    let weights = g.join("edsr_tiny_x3.safetensors");
    let expected = g.join("edsr_tiny_x3.expected.safetensors");
    let dir = tempfile::tempdir().unwrap();
    // forward: the key `output`, matching the reference at 1e-3, tiled.
    let out = dir.path().join("y.safetensors");
    resnet()
        .args([
            "forward",
            "--weights",
            s(&weights),
            "--input",
            s(&expected),
            "--key",
            "input",
            "--output",
            s(&out),
            "--tile",
            "4",
        ])
        .assert()
        .success();
    let (got, want) = (
        WeightFile::open(&out).unwrap(),
        WeightFile::open(&expected).unwrap(),
    );
    let (a, b) = (got.load("output").unwrap(), want.load("output").unwrap());
    assert_eq!(a.shape(), b.shape());
    let err = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-3, "{err}");
    // inspect recognises the family.
    let text = resnet().args(["inspect", s(&weights)]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("edsr x3") && text.contains("EDSR reference code"),
        "{text}"
    );
    // enhance: PNG in, PNG out, three times the size, rounded and clamped 8-bit.
    let input = dir.path().join("in.png");
    image::RgbImage::from_fn(13, 9, |x, y| {
        image::Rgb([(x * 19) as u8, (y * 27) as u8, 200])
    })
    .save(&input)
    .unwrap();
    let output = dir.path().join("out.png");
    resnet()
        .args([
            "enhance",
            s(&input),
            s(&output),
            "--weights",
            s(&weights),
            "--tile",
            "4",
            "--threads",
            "1",
        ])
        .assert()
        .success();
    let img = image::open(&output).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (39, 27));
    // The same pixels as the model on the same tensor, rounded.
    let model = resnet_models::Edsr::from_file(&weights).unwrap();
    let src = image::open(&input).unwrap().to_rgb8();
    let mut x = vec![0.0f32; 3 * 13 * 9];
    for (i, p) in src.pixels().enumerate() {
        for c in 0..3 {
            x[c * 13 * 9 + i] = f32::from(p.0[c]);
        }
    }
    let y = model
        .forward(&resnet_tensor::Tensor::from_vec(&[1, 3, 9, 13], x).unwrap())
        .unwrap();
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            assert_eq!(
                p.0[c],
                y.as_slice()[c * 39 * 27 + i].round().clamp(0.0, 255.0) as u8
            );
        }
    }
    // Errors: ResNet weights for enhance, a missing input image.
    let e = fails(&[
        "enhance",
        s(&input),
        s(&output),
        "--weights",
        s(&g.join("resnet18_f16.safetensors")),
    ]);
    assert!(e.contains("head.0.weight"), "{e}");
    let e = fails(&[
        "enhance",
        s(&dir.path().join("nope.png")),
        s(&output),
        "--weights",
        s(&weights),
    ]);
    assert!(e.contains("nope.png"), "{e}");
}

/// A CIFAR net saved as `resnet train --save` saves one: the state_dict, `num_batches_tracked`
/// counters, and the metadata `arch`, `shortcut`, `num_classes`, `in_channels` (unless
/// `with_arch` is false), plus `extra`.
fn cifar_file(
    path: &Path,
    cfg: &resnet_models::CifarConfig,
    seed: u64,
    with_arch: bool,
    extra: &[(&str, &str)],
) {
    let plan = resnet_models::cifar_plan(cfg).unwrap();
    let map = resnet_models::random_plan_weights(&plan, seed).unwrap();
    let tensors: Vec<(&str, &resnet_tensor::Tensor)> = map.iter().collect();
    let counters: Vec<String> = map
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".running_mean"))
        .map(|bn| format!("{bn}.num_batches_tracked"))
        .collect();
    let counters: Vec<(&str, i64)> = counters.iter().map(|k| (k.as_str(), 1)).collect();
    let mut meta: std::collections::HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if with_arch {
        meta.insert("arch".into(), cfg.name());
        meta.insert("shortcut".into(), cfg.shortcut.name().into());
        meta.insert("num_classes".into(), cfg.num_classes.to_string());
        meta.insert("in_channels".into(), cfg.in_channels.to_string());
    }
    resnet_weights::write_safetensors_with_counters(path, &tensors, &counters, Some(meta)).unwrap();
}

/// `classify --json` on `args`: (stdout lines as JSON, stderr).
fn classify_json(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let out = resnet()
        .arg("classify")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {stderr}");
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr)
}

/// The top classes of one classify JSON line against the model on `x`.
fn assert_top(line: &serde_json::Value, model: &ResNet, x: &resnet_tensor::Tensor, k: usize) {
    let want = &top_k(&model.forward(x).unwrap(), k).unwrap()[0];
    let idx: Vec<usize> = line["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(idx, want.iter().map(|w| w.0).collect::<Vec<_>>(), "{line}");
    for (p, w) in line["probabilities"].as_array().unwrap().iter().zip(want) {
        assert!(
            (p.as_f64().unwrap() - f64::from(w.1)).abs() < 1e-6,
            "{line}"
        );
    }
}

#[test]
fn classify_and_forward_a_cifar_net() {
    use resnet_image::Preprocess;
    use resnet_models::{CifarConfig, CifarShortcut};
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // A 1-channel option-A net, 10 classes, as `resnet train` saves it.
    let gray_cfg = CifarConfig::new(8, 10).with_in_channels(1);
    cifar_file(&p("gray.safetensors"), &gray_cfg, 1, true, &[]);
    let gray = ResNet::from_file(p("gray.safetensors")).unwrap();
    let digit = p("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]))
        .save(&digit)
        .unwrap();
    let photo = p("photo.png");
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
    })
    .save(&photo)
    .unwrap();

    // Greyscale in, 28x28 (the PNG's own size), pixels in [0, 1], no normalisation (said).
    let (lines, stderr) = classify_json(&[
        "--top",
        "3",
        "--weights",
        s(&p("gray.safetensors")),
        s(&digit),
        s(&photo),
    ]);
    assert!(
        stderr.contains("note:") && stderr.contains("no input normalisation"),
        "{stderr}"
    );
    assert_eq!(lines.len(), 2);
    let mut x = vec![0.0f32; 28 * 28];
    for (i, v) in image::open(&digit).unwrap().to_luma8().pixels().enumerate() {
        x[i] = f32::from(v.0[0]) / 255.0;
    }
    let x = resnet_tensor::Tensor::from_vec(&[1, 1, 28, 28], x).unwrap();
    assert_top(&lines[0], &gray, &x, 3);
    assert!(lines[0]["names"].is_null(), "{}", lines[0]);
    // A colour photo of another size: luma, resized and cropped to 28.
    let pre = Preprocess::imagenet()
        .with_resize(Some(28))
        .with_crop(Some(28))
        .with_mean_std([0.0; 3], [1.0; 3])
        .with_grayscale(true);
    assert_top(&lines[1], &gray, &pre.load(&photo).unwrap(), 3);
    // --size and --mean/--std on the command line.
    let (lines, stderr) = classify_json(&[
        "--size",
        "33",
        "--top",
        "2",
        "--weights",
        s(&p("gray.safetensors")),
        "--mean",
        "0.5",
        "--std",
        "0.25",
        s(&photo),
    ]);
    assert!(!stderr.contains("note:"), "{stderr}");
    let pre = pre
        .with_resize(Some(33))
        .with_crop(Some(33))
        .with_mean_std([0.5; 3], [0.25; 3]);
    assert_top(&lines[0], &gray, &pre.load(&photo).unwrap(), 2);
    // Text: class indices without names.
    let out = resnet()
        .args([
            "classify",
            "--top",
            "2",
            "--weights",
            s(&p("gray.safetensors")),
            s(&digit),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && text.contains("  1. ") && text.contains("  class "),
        "{text}"
    );

    // A 3-channel option-B net, 100 classes, normalisation and class names in the metadata.
    let rgb_cfg = CifarConfig::new(8, 100).with_shortcut(CifarShortcut::B);
    let names: Vec<String> = (0..100).map(|i| format!("thing{i}")).collect();
    let names_json = serde_json::to_string(&names).unwrap();
    cifar_file(
        &p("rgb.safetensors"),
        &rgb_cfg,
        2,
        true,
        &[
            ("mean", "[0.49, 0.48, 0.45]"),
            ("std", "[0.25, 0.24, 0.26]"),
            ("classes", &names_json),
        ],
    );
    let rgb = ResNet::from_file(p("rgb.safetensors")).unwrap();
    let (lines, stderr) = classify_json(&["--weights", s(&p("rgb.safetensors")), s(&photo)]);
    assert!(!stderr.contains("note:"), "{stderr}");
    let pre = Preprocess::imagenet()
        .with_resize(Some(32))
        .with_crop(Some(32))
        .with_mean_std([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]);
    assert_top(&lines[0], &rgb, &pre.load(&photo).unwrap(), 5);
    let top = lines[0]["indices"][0].as_u64().unwrap();
    assert_eq!(lines[0]["names"][0], format!("thing{top}"));

    // forward: logits, and with --stages every stage of the three.
    let xs = p("x.safetensors");
    let x = resnet_tensor::Tensor::from_vec(
        &[2, 1, 13, 11],
        (0..286)
            .map(|i| ((i * 37) % 23) as f32 / 11.0 - 1.0)
            .collect(),
    )
    .unwrap();
    resnet_weights::write_safetensors(&xs, &[("x", &x)], None).unwrap();
    let y = p("y.safetensors");
    let fwd = |extra: &[&str]| {
        resnet()
            .args(["forward", "--weights", s(&p("gray.safetensors"))])
            .args(["--input", s(&xs), "--output", s(&y)])
            .args(extra)
            .assert()
            .success();
        WeightFile::open(&y).unwrap()
    };
    let got = fwd(&[]);
    assert_eq!(got.names(), ["logits"]);
    assert_eq!(got.load("logits").unwrap(), gray.forward(&x).unwrap());
    let got = fwd(&["--stages", "--threads", "1"]);
    let want = gray.forward_stages(&x).unwrap();
    for (name, t) in want.named() {
        assert_eq!(&got.load(&name).unwrap(), t, "{name}");
    }
    assert!(!got.contains("layer4"));

    // inspect describes it, and prints its plan.
    let out = resnet()
        .args(["inspect", s(&p("gray.safetensors"))])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    for want in [
        "architecture: cifar-resnet8 (He et al.'s CIFAR net: 1 blocks per stage, widths 16/32/64, shortcut option A",
        "10 classes, 1 input channels",
        "unmapped:     none",
        "metadata:     arch = cifar-resnet8",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    let out = resnet()
        .args([
            "inspect",
            "--json",
            "--plan",
            "--size",
            "28",
            s(&p("rgb.safetensors")),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["architecture"]
            .as_str()
            .unwrap()
            .starts_with("cifar-resnet8-b"),
        "{v}"
    );
    let plan: Vec<&str> = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("[layer3.0.downsample]")),
        "{plan:?}"
    );
    assert!(plan.last().unwrap().contains("[1, 100, 1, 1]"), "{plan:?}");

    // Option A without metadata: not guessed; the error says what to record.
    cifar_file(&p("bare.safetensors"), &gray_cfg, 1, false, &[]);
    let e = fails(&[
        "classify",
        "--weights",
        s(&p("bare.safetensors")),
        s(&digit),
    ]);
    assert!(e.contains("cifar-resnet8") && e.contains("metadata"), "{e}");
    let out = resnet()
        .args(["inspect", s(&p("bare.safetensors"))])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("architecture: not recognised") && text.contains("cifar-plain8"),
        "{text}"
    );
    // Bad options and metadata: one-line errors.
    let e = fails(&[
        "classify",
        "--mean",
        "0.1,0.2,0.3",
        "--weights",
        s(&p("gray.safetensors")),
        s(&digit),
    ]);
    assert!(
        e.contains("--mean has 3 values") && e.contains("1 input channel"),
        "{e}"
    );
    cifar_file(
        &p("badmeta.safetensors"),
        &gray_cfg,
        1,
        true,
        &[("std", "0.3")],
    );
    let e = fails(&[
        "classify",
        "--weights",
        s(&p("badmeta.safetensors")),
        s(&digit),
    ]);
    assert!(
        e.contains("metadata std") && e.contains("JSON array"),
        "{e}"
    );
    cifar_file(
        &p("badnames.safetensors"),
        &gray_cfg,
        1,
        true,
        &[("classes", "[\"a\", \"b\"]")],
    );
    let e = fails(&[
        "classify",
        "--weights",
        s(&p("badnames.safetensors")),
        s(&digit),
    ]);
    assert!(e.contains("2 names") && e.contains("10 classes"), "{e}");

    // bench runs CIFAR nets by name.
    let v = json_out(&[
        "bench",
        "--arch",
        "cifar-resnet20",
        "--size",
        "32",
        "--iters",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(v["arch"], "cifar-resnet20");
}

/// `resnet train --save`, then `classify` and `forward` on the file: the metadata train writes
/// is what the inference path reads.
#[test]
fn a_net_saved_by_train_classifies_and_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // `input` [4, 1, 12, 12] F32 and `labels` [4] I64, by hand.
    let input: Vec<u8> = (0..4 * 144)
        .flat_map(|i| (((i * 7919) % 101) as f32 / 50.0 - 1.0).to_le_bytes())
        .collect();
    let labels: Vec<u8> = [0i64, 2, 1, 2]
        .iter()
        .flat_map(|l| l.to_le_bytes())
        .collect();
    let header = format!(
        r#"{{"input":{{"dtype":"F32","shape":[4,1,12,12],"data_offsets":[0,{}]}},"labels":{{"dtype":"I64","shape":[4],"data_offsets":[{},{}]}}}}"#,
        input.len(),
        input.len(),
        input.len() + labels.len()
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&input);
    bytes.extend_from_slice(&labels);
    std::fs::write(p("data.safetensors"), bytes).unwrap();
    let data = format!("tensors:{}", s(&p("data.safetensors")));
    for model in ["cifar-resnet8", "cifar-plain8", "cifar-resnet8-b"] {
        let w = p(&format!("{model}.safetensors"));
        resnet()
            .args(["train", "--model", model, "--classes", "3", "--data", &data])
            .args(["--steps", "1", "--lr", "0.05", "--save", s(&w)])
            .assert()
            .success();
        let net = ResNet::from_file(&w).unwrap();
        assert_eq!(net.config().name(), model);
        assert_eq!(net.config().in_channels(), 1);
        assert_eq!(net.config().num_classes(), 3);
        let y = p("y.safetensors");
        resnet()
            .args([
                "forward",
                "--weights",
                s(&w),
                "--input",
                s(&p("data.safetensors")),
            ])
            .args(["--key", "input", "--output", s(&y)])
            .assert()
            .success();
        let x = WeightFile::open(p("data.safetensors"))
            .unwrap()
            .load("input")
            .unwrap();
        let got = WeightFile::open(&y).unwrap().load("logits").unwrap();
        assert_eq!(got, net.forward(&x).unwrap(), "{model}");
        let img = p("img.png");
        image::GrayImage::from_fn(12, 12, |x, y| image::Luma([(x * 20 + y) as u8]))
            .save(&img)
            .unwrap();
        let (lines, _) = classify_json(&["--top", "3", "--weights", s(&w), s(&img)]);
        assert_eq!(lines[0]["indices"].as_array().unwrap().len(), 3);
    }
}

/// `--precision bf16`: the golden ResNet-18's logits through `forward` within the documented
/// bound of f32's, `bench` reports it, training refuses it; on a CPU without AVX512-BF16 a
/// one-line error (said loudly: the numeric half is skipped).
#[test]
fn precision_bf16_on_the_cli() {
    let e = fails(&[
        "train",
        "--precision",
        "bf16",
        "--data",
        "tensors:x",
        "--model",
        "cifar-resnet20",
        "--steps",
        "1",
        "--save",
        "x.safetensors",
    ]);
    assert!(e.contains("training runs in f32"), "{e}");
    let e = fails(&[
        "bench",
        "--train",
        "--precision",
        "bf16",
        "--arch",
        "cifar-resnet20",
    ]);
    assert!(e.contains("training runs in f32"), "{e}");
    let Some(g) = golden_dir() else { return };
    let weights = g.join("resnet18_f16.safetensors");
    let expected = g.join("resnet18_f16.expected.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.safetensors");
    let args = [
        "forward",
        "--precision",
        "bf16",
        "--weights",
        s(&weights),
        "--input",
        s(&expected),
        "--key",
        "x224",
        "--output",
        s(&out),
    ];
    if !resnet_models::Precision::Bf16.is_available() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no AVX512-BF16 on this CPU: --precision bf16 only checked to fail !!!!!!!!\n"
        );
        let e = fails(&args);
        assert!(e.contains("AVX512-BF16"), "{e}");
        return;
    }
    resnet().args(args).assert().success();
    let got = WeightFile::open(&out).unwrap().load("logits").unwrap();
    let want = WeightFile::open(&expected)
        .unwrap()
        .load("x224.logits")
        .unwrap();
    // bf16, not f32: above f32's error, within bf16's documented bound.
    let e = rel_err(&got, &want);
    assert!(e < 1e-2 && e > 1e-5, "{e}");
    let v = json_out(&[
        "bench",
        "--precision",
        "bf16",
        "--size",
        "64",
        "--iters",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(v["precision"], "bf16");
}
