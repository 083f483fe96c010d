//! `resnet train --data fashion-mnist:DIR | cifar10:DIR` and `resnet eval` on small generated
//! datasets: metrics and checkpoints per epoch, a run killed mid-epoch resumed bitwise, the
//! same weights on any thread count, damaged files refused in one line.

use assert_cmd::Command;
use resnet_weights::{WeightFile, WeightSource};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn resnet() -> Command {
    Command::cargo_bin("resnet").expect("the resnet binary is built")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run and expect success; stderr.
fn succeeds(args: &[&str]) -> String {
    let out = resnet().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

/// Run and expect failure: exit code 1, the error on one line, no panic.
fn fails(args: &[&str]) -> String {
    let out = resnet().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    last.to_string()
}

/// A tiny generator, so the data is the same on every machine.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

/// Images whose class shows in their brightness (so a net can learn something), labels
/// 0..classes in turn.
fn images(n: usize, per: usize, classes: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let noise = bytes(n * per, seed);
    let labels: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
    let pixels = noise
        .chunks_exact(per)
        .zip(&labels)
        .flat_map(|(img, &l)| img.iter().map(move |&v| v / 4 + l * 19))
        .collect();
    (pixels, labels)
}

fn idx_images(n: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// A Fashion-MNIST-style directory of `train` and `test` 10x10 images.
fn fashion(dir: &Path, train: usize, test: usize) -> PathBuf {
    let d = dir.join("fmnist");
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, n, seed) in [("train", train, 1), ("t10k", test, 2)] {
        let (px, lb) = images(n, 100, 10, seed);
        std::fs::write(
            d.join(format!("{prefix}-images-idx3-ubyte")),
            idx_images(n, 10, 10, &px),
        )
        .unwrap();
        std::fs::write(
            d.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_labels(&lb),
        )
        .unwrap();
    }
    d
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every tensor of two state_dict files, bitwise equal.
fn same_weights(a: &Path, b: &Path) {
    let (fa, fb) = (WeightFile::open(a).unwrap(), WeightFile::open(b).unwrap());
    let names: Vec<String> = fa.tensors().map(|(k, _)| k.to_string()).collect();
    assert!(names.len() > 10);
    assert_eq!(names.len(), fb.tensors().count());
    for k in names {
        if k.ends_with("num_batches_tracked") {
            assert_eq!(fa.load_integers(&k).unwrap(), fb.load_integers(&k).unwrap());
            continue;
        }
        let (x, y) = (fa.load(&k).unwrap(), fb.load(&k).unwrap());
        let bits = |t: &resnet_tensor::Tensor| -> Vec<u32> {
            t.as_slice().iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&x), bits(&y), "{k}");
    }
}

#[test]
fn dataset_run_writes_metrics_checkpoints_and_a_model_eval_agrees_with() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fashion(tmp.path(), 160, 50);
    let out = tmp.path().join("run");
    let spec = format!("fashion-mnist:{}", s(&data));
    let e = succeeds(&[
        "--threads",
        "1",
        "train",
        "--data",
        &spec,
        "--model",
        "cifar-resnet8",
        "--batch",
        "32",
        "--epochs",
        "2",
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("10 SGD steps (5 per epoch, batch 32), lr 0.1 (he schedule)"),
        "{e}"
    );
    assert!(e.contains("epoch 2/2  train loss"), "{e}");
    let m = metrics(&out);
    assert_eq!(m.len(), 2);
    for (i, line) in m.iter().enumerate() {
        assert_eq!(line["epoch"], i as u64 + 1);
        assert_eq!(line["step"], 5 * (i as u64 + 1));
        for k in [
            "train_loss",
            "train_error",
            "test_loss",
            "test_error",
            "lr",
            "seconds",
        ] {
            let v = line[k].as_f64().unwrap_or_else(|| panic!("{k} in {line}"));
            assert!(v.is_finite() && v >= 0.0, "{k} = {v}");
        }
        assert!(line["images_per_s"].as_f64().unwrap() > 0.0);
    }
    // He et al.'s schedule over 10 steps: /10 from step 5 (epoch 2 ends at 0.01 until step 7,
    // then 0.001).
    assert_eq!(m[0]["lr"], 0.1);
    assert!(
        (m[1]["lr"].as_f64().unwrap() - 0.001).abs() < 1e-12,
        "{}",
        m[1]
    );
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("epoch,step,train_loss,train_error,test_loss,test_error"));

    // The model file says how to feed it, and evaluates to the last epoch's test numbers.
    let model = out.join("model.safetensors");
    let meta = WeightFile::open(&model).unwrap().metadata().clone();
    assert_eq!(meta["arch"], "cifar-resnet8");
    assert!(meta["classes"].contains("Ankle boot"), "{meta:?}");
    let mean: Vec<f64> = serde_json::from_str(&meta["mean"]).unwrap();
    assert_eq!(mean.len(), 1);
    let out_eval = resnet()
        .args([
            "--threads",
            "1",
            "eval",
            "-w",
            s(&model),
            "--data",
            &spec,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out_eval.status.success());
    let ev: serde_json::Value = serde_json::from_slice(&out_eval.stdout).unwrap();
    assert_eq!(ev["examples"], 50);
    assert_eq!(ev["error"], m[1]["test_error"]);
    let confusion: u64 = ev["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion, 50);
    // The text form: one row per class, with its name.
    let text = resnet()
        .args(["eval", "-w", s(&model), "--data", &spec])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("error ") && text.contains("Ankle boot"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + 1 + 10, "{text}");
}

/// A run killed (SIGKILL) mid-epoch and resumed from its last checkpoint ends with bitwise the
/// weights, and the same per-epoch metrics, as a run that was never interrupted.
#[test]
fn killed_mid_epoch_and_resumed_gives_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fashion(tmp.path(), 300, 40);
    let spec = format!("fashion-mnist:{}", s(&data));
    let recipe = [
        "train",
        "--data",
        &spec,
        "--model",
        "cifar-resnet8",
        "--batch",
        "20",
        "--epochs",
        "3",
    ];
    let whole = tmp.path().join("whole");
    succeeds(&[&["--threads", "1"], &recipe[..], &["--out", s(&whole)]].concat());

    // The same run, checkpointing every step, killed as soon as a mid-epoch checkpoint
    // exists (15 steps an epoch).
    let cut = tmp.path().join("cut");
    let bin = assert_cmd::cargo::cargo_bin("resnet");
    let mut child = std::process::Command::new(bin)
        .args(["--threads", "1"])
        .args(recipe)
        .args(["--out", s(&cut), "--checkpoint-every", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mid = |p: &Path| {
        std::fs::read_dir(p).ok().is_some_and(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("checkpoint-step")?
                        .strip_suffix(".safetensors")?
                        .parse::<u64>()
                        .ok()
                })
                .any(|k| k > 17 && k % 15 != 0)
        })
    };
    while !mid(&cut) && t0.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().unwrap();
    eprintln!("killed mid-run: {killed}");
    // Resume (from whatever the latest checkpoint is) to the end.
    let e = succeeds(&[
        "--threads",
        "1",
        "train",
        "--resume",
        s(&cut),
        "--epochs",
        "3",
    ]);
    if killed {
        assert!(e.contains("resuming cifar-resnet8"), "{e}");
    }
    same_weights(
        &whole.join("model.safetensors"),
        &cut.join("model.safetensors"),
    );
    let (a, b) = (metrics(&whole), metrics(&cut));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3, "an epoch listed twice or lost: {b:?}");
    for (x, y) in a.iter().zip(&b) {
        for k in [
            "epoch",
            "step",
            "train_loss",
            "train_error",
            "test_loss",
            "test_error",
            "lr",
        ] {
            assert_eq!(x[k], y[k], "{k}: {x} vs {y}");
        }
    }
}

#[test]
fn thread_count_does_not_change_the_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fashion(tmp.path(), 64, 10);
    let spec = format!("fashion-mnist:{}", s(&data));
    let mut outs = Vec::new();
    for t in ["1", "2", "3"] {
        let save = tmp.path().join(format!("t{t}.safetensors"));
        succeeds(&[
            "--threads",
            t,
            "train",
            "--data",
            &spec,
            "--model",
            "cifar-resnet8",
            "--batch",
            "16",
            "--epochs",
            "2",
            "--prior",
            "identity",
            "--prior-noise",
            "0.01",
            "--save",
            s(&save),
        ]);
        outs.push(save);
    }
    same_weights(&outs[0], &outs[1]);
    same_weights(&outs[0], &outs[2]);
    // The recipe records where the prior's run started.
    let meta = WeightFile::open(&outs[0]).unwrap().metadata().clone();
    let train: serde_json::Value = serde_json::from_str(&meta["train"]).unwrap();
    assert_eq!(train["prior_init"], "centre", "{train}");
    assert_eq!(train["prior_noise"], 0.01, "{train}");
}

#[test]
fn cifar10_files_train_on_three_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let record = |n: usize, seed: u64| -> Vec<u8> {
        let (px, lb) = images(n, 3072, 10, seed);
        px.chunks_exact(3072)
            .zip(lb)
            .flat_map(|(p, l)| std::iter::once(l).chain(p.iter().copied()))
            .collect()
    };
    for i in 1..=5 {
        std::fs::write(d.join(format!("data_batch_{i}.bin")), record(8, i)).unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), record(6, 9)).unwrap();
    let save = tmp.path().join("c.safetensors");
    let spec = format!("cifar10:{}", s(tmp.path()));
    let e = succeeds(&[
        "--threads",
        "2",
        "train",
        "--data",
        &spec,
        "--model",
        "cifar-resnet8",
        "--batch",
        "10",
        "--epochs",
        "1",
        "--schedule",
        "cosine",
        "--save",
        s(&save),
    ]);
    assert!(e.contains("on 40x3x32x32"), "{e}");
    assert!(e.contains("cosine schedule"), "{e}");
    let meta = WeightFile::open(&save).unwrap().metadata().clone();
    assert_eq!(meta["in_channels"], "3");
    assert!(meta["classes"].contains("airplane"));
}

#[test]
fn damaged_datasets_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fashion(tmp.path(), 40, 10);
    let spec = format!("fashion-mnist:{}", s(&data));
    let save = tmp.path().join("w.safetensors");
    let train = |extra: &[&str]| -> String {
        fails(
            &[
                &[
                    "train",
                    "--data",
                    &spec,
                    "--model",
                    "cifar-resnet8",
                    "--epochs",
                    "1",
                ][..],
                &["--save", s(&save)],
                extra,
            ]
            .concat(),
        )
    };
    let images = data.join("train-images-idx3-ubyte");
    let labels = data.join("train-labels-idx1-ubyte");
    let good_images = std::fs::read(&images).unwrap();
    let good_labels = std::fs::read(&labels).unwrap();

    // Truncated images.
    std::fs::write(&images, &good_images[..good_images.len() - 7]).unwrap();
    let e = train(&[]);
    assert!(
        e.contains("truncated") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
    // A labels file where the images should be.
    std::fs::write(&images, &good_labels).unwrap();
    let e = train(&[]);
    assert!(e.contains("magic number 0x00000801"), "{e}");
    std::fs::write(&images, &good_images).unwrap();
    // A label out of range.
    let mut bad = good_labels.clone();
    bad[8 + 5] = 10;
    std::fs::write(&labels, &bad).unwrap();
    let e = train(&[]);
    assert!(
        e.contains("label 10 of example 5 is out of range for 10 classes"),
        "{e}"
    );
    std::fs::write(&labels, &good_labels).unwrap();
    // Not gzip after all.
    std::fs::remove_file(&labels).unwrap();
    std::fs::write(
        data.join("train-labels-idx1-ubyte.gz"),
        [0x1f, 0x8b, 1, 2, 3],
    )
    .unwrap();
    let e = train(&[]);
    assert!(e.contains("not a valid gzip stream"), "{e}");
    std::fs::remove_file(data.join("train-labels-idx1-ubyte.gz")).unwrap();
    let e = train(&[]);
    assert!(e.contains("train-labels-idx1-ubyte: not found"), "{e}");
    std::fs::write(&labels, &good_labels).unwrap();
    // Settings that do not fit the data.
    let e = train(&["--classes", "5"]);
    assert!(e.contains("has 10 classes; the model has 5"), "{e}");
    let e = fails(&[
        "train",
        "--data",
        "fashion-mnist:/nonexistent",
        "--model",
        "cifar-resnet8",
        "--epochs",
        "1",
        "--save",
        s(&save),
    ]);
    assert!(e.contains("/nonexistent"), "{e}");
    assert!(!save.exists());
}

/// The ResNet-18 golden weights, or `None` (loudly) when absent and `RESNET_GOLDEN_DIR` unset.
fn golden_resnet18() -> Option<PathBuf> {
    let (dir, required) = match std::env::var_os("RESNET_GOLDEN_DIR") {
        Some(d) => (PathBuf::from(d), true),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
            false,
        ),
    };
    let p = dir.join("resnet18_f16.safetensors");
    if p.is_file() {
        return Some(p);
    }
    assert!(!required, "{} is missing", p.display());
    eprintln!("\n!!!!!!!! SKIPPED: {} not found !!!!!!!!\n", p.display());
    None
}

/// Fine-tuning a pretrained ResNet-18 on a folder of images: a new two-class head, the
/// backbone frozen (its weights and batch-norm statistics bitwise unchanged), the loss going
/// down, and the result classifying with `resnet classify` by the folders' names.
#[test]
fn fine_tunes_a_frozen_resnet18_on_an_image_folder() {
    let Some(weights) = golden_resnet18() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let noise = bytes(1 << 20, 5);
    let mut k = 0;
    for (split, n) in [("train", 8), ("val", 4)] {
        for (class, colour) in [("blues", [30u8, 30, 200]), ("reds", [200, 30, 30])] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(80 + i as u32, 70, |_, _| {
                    k += 3;
                    image::Rgb(std::array::from_fn(|c| {
                        colour[c].saturating_add(noise[(k + c) % noise.len()] / 4)
                    }))
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/notes.txt"), "not an image").unwrap();
    let out = tmp.path().join("ft");
    let spec = format!("folder:{}", s(&root));
    let e = succeeds(&[
        "--threads",
        "2",
        "train",
        "--data",
        &spec,
        "--model",
        "resnet18",
        "--weights",
        s(&weights),
        "--freeze-backbone",
        "--epochs",
        "5",
        "--batch",
        "4",
        "--crop",
        "64",
        "--lr",
        "0.001",
        "--schedule",
        "constant",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("a new classifier of 2 classes"), "{e}");
    assert!(e.contains("on 16x3x64x64"), "{e}");
    let m = metrics(&out);
    assert_eq!(m.len(), 5);
    let loss = |i: usize| m[i]["test_loss"].as_f64().unwrap();
    assert!(loss(4) < loss(0), "{m:?}");

    // Only the classifier changed.
    let model = out.join("model.safetensors");
    let (a, b) = (
        WeightFile::open(&weights).unwrap(),
        WeightFile::open(&model).unwrap(),
    );
    let mut compared = 0;
    for (k, _) in b.tensors() {
        if k.starts_with("fc.") || !a.contains(k) {
            continue;
        }
        if k.ends_with("num_batches_tracked") {
            assert_eq!(
                a.load_integers(k).unwrap(),
                b.load_integers(k).unwrap(),
                "{k}"
            );
        } else {
            let (x, y) = (a.load(k).unwrap(), b.load(k).unwrap());
            assert_eq!(x.as_slice(), y.as_slice(), "{k} changed");
        }
        compared += 1;
    }
    assert!(compared > 100, "{compared}");
    assert_eq!(b.load("fc.weight").unwrap().shape().dims(), &[2, 512]);
    assert_eq!(b.metadata()["classes"], r#"["blues","reds"]"#);

    // `resnet classify` names the folders (its crop as training's evaluation: 73 then 64).
    let c = resnet()
        .args([
            "classify",
            "-w",
            s(&model),
            "--resize",
            "73",
            "--crop",
            "64",
            "--top",
            "1",
        ])
        .arg(root.join("val/reds/0.png"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(text.contains("reds") || text.contains("blues"), "{text}");
    let ev = resnet()
        .args(["eval", "-w", s(&model), "--data", &spec, "--json"])
        .output()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["examples"], 8);
    assert_eq!(ev["error"], m[4]["test_error"]);

    // Without a val/ folder there is no test split: training says so, eval refuses.
    std::fs::rename(root.join("val"), tmp.path().join("held-out")).unwrap();
    let e = succeeds(&[
        "--threads",
        "1",
        "train",
        "--data",
        &spec,
        "--model",
        "resnet18",
        "--weights",
        s(&weights),
        "--freeze-backbone",
        "--epochs",
        "1",
        "--batch",
        "8",
        "--crop",
        "64",
        "--save",
        s(&tmp.path().join("no-val.safetensors")),
    ]);
    assert!(e.contains("no test split"), "{e}");
    let e = fails(&["eval", "-w", s(&model), "--data", &spec]);
    assert!(e.contains("has no examples"), "{e}");
}

/// A schedule that spans the run keeps its length on resume; an empty training split and a
/// --crop on data that is not a folder are refused.
#[test]
fn resume_keeps_the_schedule_length_and_odd_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fashion(tmp.path(), 40, 10);
    let spec = format!("fashion-mnist:{}", s(&data));
    let out = tmp.path().join("run");
    let base = [
        "train",
        "--data",
        &spec,
        "--model",
        "cifar-resnet8",
        "--batch",
        "20",
    ];
    succeeds(&[&base[..], &["--steps", "2", "--out", s(&out)]].concat());
    let e = fails(&["train", "--resume", s(&out), "--steps", "4"]);
    assert!(
        e.contains("schedule of the checkpoint being resumed spans 2 steps"),
        "{e}"
    );
    let e = fails(
        &[
            &base[..],
            &["--epochs", "1", "--crop", "8", "--save", "x.safetensors"],
        ]
        .concat(),
    );
    assert!(e.contains("--crop applies to folder:DIR"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx_images(0, 10, 10, &[])),
        ("train-labels-idx1-ubyte", idx_labels(&[])),
        ("t10k-images-idx3-ubyte", idx_images(1, 10, 10, &[0; 100])),
        ("t10k-labels-idx1-ubyte", idx_labels(&[0])),
    ] {
        std::fs::write(empty.join(name), bytes).unwrap();
    }
    let e = fails(&[
        "train",
        "--data",
        &format!("fashion-mnist:{}", s(&empty)),
        "--model",
        "cifar-resnet8",
        "--epochs",
        "1",
        "--save",
        "x.safetensors",
    ]);
    assert!(e.contains("no training examples"), "{e}");
}
