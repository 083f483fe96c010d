//! `resnet train`: the golden training fixtures reproduced from the command line, the saved
//! file loaded for inference, and bad input refused in one line.

use assert_cmd::Command;
use resnet_models::{Backend, CifarConfig, CifarShortcut, Network, cifar_plan};
use resnet_weights::{WeightFile, WeightSource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A training fixture, or `None` (loudly) when it is absent and `RESNET_GOLDEN_DIR` is unset;
/// with the variable set, a missing file fails.
fn golden(name: &str) -> Option<PathBuf> {
    let (dir, required) = match std::env::var_os("RESNET_GOLDEN_DIR") {
        Some(d) => (PathBuf::from(d), true),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
            false,
        ),
    };
    let path = dir.join("train").join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(!required, "golden fixture {} is missing", path.display());
    eprintln!(
        "\n!!!!!!!! SKIPPED: {} not found; set RESNET_GOLDEN_DIR !!!!!!!!\n",
        path.display()
    );
    None
}

fn resnet() -> Command {
    Command::cargo_bin("resnet").expect("the resnet binary is built")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run and expect failure: exit code 1, one line on stderr starting with "error:", no panic.
fn fails(args: &[&str]) -> String {
    let out = resnet().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    last.to_string()
}

fn rel(ours: &[f32], want: &[f32]) -> f64 {
    assert_eq!(ours.len(), want.len());
    let num = ours
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    let den = want.iter().map(|b| f64::from(*b).abs()).fold(0.0, f64::max);
    if den == 0.0 { num } else { num / den }
}

/// Train from a fixture on its own batch with its recipe, then check every `after.<k>`, the
/// per-step losses of the log, the metadata, and the saved file's eval logits through the
/// inference path (fast kernels).
fn reproduce(fixture: &str, model: &str, extra: &[&str], shortcut: CifarShortcut) {
    let Some(f) = golden(&format!("{fixture}.safetensors")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("out.safetensors");
    let log = dir.path().join("log.jsonl");
    let data = format!("tensors:{}", s(&f));
    let out = resnet()
        .args(["train", "--model", model, "--init", s(&f), "--data", &data])
        .args(["--steps", "2", "--lr", "0.01", "--momentum", "0.9"])
        .args([
            "--weight-decay",
            "5e-4",
            "--save",
            s(&saved),
            "--log",
            s(&log),
        ])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("step 2/2"), "{stderr}");

    let fix = WeightFile::open(&f).unwrap();
    let tol: BTreeMap<String, f64> = serde_json::from_str(&fix.metadata()["tolerance"]).unwrap();
    let got = WeightFile::open(&saved).unwrap();
    assert_eq!(got.metadata()["arch"], model);
    assert_eq!(got.metadata()["shortcut"], shortcut.name());
    let mut checked = 0;
    for (k, info) in fix.tensors() {
        let Some(name) = k.strip_prefix("after.") else {
            continue;
        };
        if name.ends_with("num_batches_tracked") {
            assert_eq!(
                got.load_integers(name).unwrap(),
                fix.load_integers(k).unwrap(),
                "{name}"
            );
            continue;
        }
        let ours = got.tensor(name, &info.shape).unwrap();
        let e = rel(ours.as_slice(), fix.load(k).unwrap().as_slice());
        assert!(
            e <= tol[k],
            "{fixture}: {name}: {e:.3e} over {:.1e}",
            tol[k]
        );
        checked += 1;
    }
    assert!(checked > 50, "{checked}");

    // The losses logged, one JSON line per step.
    let want_loss = fix.load("loss").unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, (line, want)) in lines.iter().zip(want_loss.as_slice()).enumerate() {
        assert_eq!(line["step"], i + 1);
        assert_eq!(line["lr"], 0.01);
        assert!(line["ms"].as_f64().unwrap() > 0.0);
        let loss = line["loss"].as_f64().unwrap();
        let e = (loss - f64::from(*want)).abs() / f64::from(*want).abs();
        assert!(e <= tol["loss"], "{fixture}: loss[{i}] {loss} vs {want}");
    }

    // The saved file runs on the inference path.
    let x = fix.load("input").unwrap();
    let [_, c, _, _] = x.shape().dims4().unwrap();
    let classes = fix.info("eval_logits").unwrap().shape[1];
    let cfg = CifarConfig::new(20, classes)
        .with_in_channels(c)
        .with_shortcut(shortcut);
    let net = Network::load(cifar_plan(&cfg).unwrap(), &got, Backend::Fast).unwrap();
    let y = net.output(&x, "logits").unwrap();
    let e = rel(y.as_slice(), fix.load("eval_logits").unwrap().as_slice());
    assert!(e <= tol["eval_logits"], "{fixture}: eval_logits {e:.3e}");
}

#[test]
fn reproduces_cifar_resnet20_option_a() {
    // On the reference kernels: on the fast ones this fixture's state after the second step
    // misses its bound (see resnet-train's golden test), which the closing note reports.
    reproduce(
        "cifar_resnet20_a_fmnist",
        "cifar-resnet20",
        &["--kernels", "naive"],
        CifarShortcut::A,
    );
}

#[test]
fn reproduces_cifar_plain20_with_the_identity_prior() {
    reproduce(
        "cifar_plain20_identity_prior",
        "cifar-plain20",
        &["--prior", "identity", "--prior-lambda", "0.001"],
        CifarShortcut::None,
    );
}

/// A safetensors file with `input` (F32) and `labels` (I64), written by hand.
fn data_file(path: &Path, dims: [usize; 4], labels: &[i64]) {
    let n: usize = dims.iter().product();
    let input: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 7919) % 101) as f32 / 50.0 - 1.0).to_le_bytes())
        .collect();
    let lab: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let header = format!(
        r#"{{"input":{{"dtype":"F32","shape":{dims:?},"data_offsets":[0,{}]}},"labels":{{"dtype":"I64","shape":[{}],"data_offsets":[{},{}]}}}}"#,
        input.len(),
        labels.len(),
        input.len(),
        input.len() + lab.len()
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&input);
    bytes.extend_from_slice(&lab);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn trains_from_random_weights_and_saves_counters_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [4, 3, 8, 8], &[0, 2, 1, 2]);
    let saved = dir.path().join("w.safetensors");
    let data_arg = format!("tensors:{}", s(&data));
    let out = resnet()
        .args(["train", "--model", "cifar-resnet8-b", "--classes", "3"])
        .args([
            "--data",
            &data_arg,
            "--steps",
            "3",
            "--lr",
            "0.05",
            "--nesterov",
        ])
        .args(["--seed", "7", "--save", s(&saved)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("step ").count(), 3, "{stderr}");
    let got = WeightFile::open(&saved).unwrap();
    assert_eq!(got.metadata()["arch"], "cifar-resnet8-b");
    assert_eq!(got.metadata()["shortcut"], "B");
    assert_eq!(got.metadata()["num_classes"], "3");
    let recipe: serde_json::Value = serde_json::from_str(&got.metadata()["train"]).unwrap();
    assert_eq!(recipe["nesterov"], true);
    assert_eq!(recipe["seed"], 7);
    assert_eq!(
        got.load_integers("layer2.0.downsample.1.num_batches_tracked")
            .unwrap(),
        (vec![3], vec![])
    );
    assert_eq!(got.info("fc.weight").unwrap().shape, [3, 64]);
    // It loads for inference, and as --init of another run (classes from fc.weight).
    let cfg = CifarConfig::new(8, 3).with_shortcut(CifarShortcut::B);
    Network::load(cifar_plan(&cfg).unwrap(), &got, Backend::Fast).unwrap();
    let again = dir.path().join("w2.safetensors");
    resnet()
        .args(["train", "--model", "cifar-resnet8-b", "--init", s(&saved)])
        .args(["--data", &data_arg, "--steps", "1", "--save", s(&again)])
        .assert()
        .success();
    let got = WeightFile::open(&again).unwrap();
    assert_eq!(got.load_integers("bn1.num_batches_tracked").unwrap().0, [4]);
    // Only the two saved files and the data: no temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn bad_input_is_one_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [2, 1, 8, 8], &[0, 4]);
    let data_arg = format!("tensors:{}", s(&data));
    let save = dir.path().join("w.safetensors");
    let run = |extra: &[&str]| -> String {
        let mut args = vec!["train", "--steps", "1", "--save", s(&save)];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let m8 = ["--model", "cifar-resnet8", "--classes", "5"];
    let with = |head: &[&'static str], tail: &[&str]| -> Vec<String> {
        head.iter().chain(tail).map(|a| a.to_string()).collect()
    };
    // (arguments after `train --steps 1 --save FILE`, what the one-line error must say)
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            with(
                &["--model", "vgg16", "--classes", "5", "--data"],
                &[&data_arg],
            ),
            vec!["unknown --model \"vgg16\"", "cifar-resnetN"],
        ),
        (
            with(
                &["--model", "cifar-resnet21", "--classes", "5", "--data"],
                &[&data_arg],
            ),
            vec!["6n + 2"],
        ),
        (
            with(&m8, &["--data", "cifar10:/x"]),
            vec!["--data cifar10:/x", "/x/data_batch_1.bin: not found"],
        ),
        (
            with(&m8, &["--data", "/x.safetensors"]),
            vec!["names no scheme", "tensors:FILE"],
        ),
        (
            with(&m8, &["--data", "tensors:/nonexistent.st"]),
            vec!["/nonexistent.st"],
        ),
        // The class count: required, checked against the labels and --init.
        (
            with(&["--model", "cifar-resnet8", "--data"], &[&data_arg]),
            vec!["--classes", "fc.weight"],
        ),
        (
            with(
                &["--model", "cifar-resnet8", "--classes", "4", "--data"],
                &[&data_arg],
            ),
            vec!["label 4 of row 1 is out of range for 4 classes"],
        ),
        (
            with(
                &m8,
                &["--data", &data_arg, "--init", "/nonexistent/w.safetensors"],
            ),
            vec!["--init /nonexistent/w.safetensors"],
        ),
        // Optimiser settings and the prior.
        (
            with(&m8, &["--data", &data_arg, "--lr=-1"]),
            vec!["invalid optimiser settings"],
        ),
        (
            with(&m8, &["--data", &data_arg, "--prior-lambda", "0.1"]),
            vec!["--prior identity only"],
        ),
    ];
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = run(&args);
        assert!(want.iter().all(|w| e.contains(w)), "{args:?}: {e}");
    }
    // A save directory that does not exist is refused before training.
    let e = fails(&[
        "train",
        "--model",
        "cifar-resnet8",
        "--classes",
        "5",
        "--data",
        &data_arg,
        "--steps",
        "1",
        "--save",
        "/nonexistent/dir/w.safetensors",
    ]);
    assert!(e.contains("does not exist"), "{e}");
    // A diverging run stops at the step whose loss is not finite, saving nothing.
    let e = fails(&[
        "train",
        "--model",
        "cifar-resnet8",
        "--classes",
        "5",
        "--data",
        &data_arg,
        "--lr",
        "1e30",
        "--steps",
        "5",
        "--save",
        s(&save),
    ]);
    assert!(e.contains("step ") && e.contains("loss is"), "{e}");
    assert!(!save.exists());
    // A --init that does not fit the model, and a --classes that contradicts it.
    let wrong = dir.path().join("wrong.safetensors");
    resnet()
        .args([
            "train",
            "--model",
            "cifar-resnet8",
            "--classes",
            "5",
            "--data",
            &data_arg,
        ])
        .args(["--steps", "1", "--save", s(&wrong)])
        .assert()
        .success();
    let e = run(&[
        "--model",
        "cifar-resnet14",
        "--data",
        &data_arg,
        "--init",
        s(&wrong),
    ]);
    assert!(e.contains("does not fit --model cifar-resnet14"), "{e}");
    // Other --classes than --init's classifier: a new classifier (fine-tuning), and labels
    // beyond the new count are still refused.
    let e = run(&[
        "--model",
        "cifar-resnet8",
        "--classes",
        "2",
        "--data",
        &data_arg,
        "--init",
        s(&wrong),
    ]);
    assert!(e.contains("out of range for 2 classes"), "{e}");
    let ok = resnet()
        .args(["train", "--model", "cifar-resnet8", "--classes", "7"])
        .args(["--data", &data_arg, "--init", s(&wrong), "--steps", "1"])
        .args(["--save", s(&dir.path().join("seven.safetensors"))])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("a new classifier of 7 classes"), "{stderr}");
}

/// Run and expect success; returns stderr.
fn succeeds(args: &[&str]) -> String {
    let out = resnet().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

/// Two safetensors files hold the same tensors, bit for bit (floats by their bits, counters
/// by value), and the same metadata.
fn assert_same_tensors(a: &Path, b: &Path) {
    let (fa, fb) = (WeightFile::open(a).unwrap(), WeightFile::open(b).unwrap());
    let names = |f: &WeightFile| f.tensors().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb));
    for (k, info) in fa.tensors() {
        if info.dtype.is_float() {
            let bits = |f: &WeightFile| -> Vec<u32> {
                f.load(k)
                    .unwrap()
                    .as_slice()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(bits(&fa), bits(&fb), "{k} differs");
            assert_eq!(info.shape, fb.info(k).unwrap().shape, "{k}");
        } else {
            assert_eq!(
                fa.load_integers(k).unwrap(),
                fb.load_integers(k).unwrap(),
                "{k}"
            );
        }
    }
    assert_eq!(fa.metadata(), fb.metadata());
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

const RECIPE: [&str; 10] = [
    "--model",
    "cifar-resnet8",
    "--classes",
    "3",
    "--lr",
    "0.05",
    "--seed",
    "3",
    "--prior",
    "identity",
];

#[test]
fn resumed_run_gives_bitwise_the_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [6, 3, 8, 8], &[0, 2, 1, 2, 1, 0]);
    let data_arg = format!("tensors:{}", s(&data));
    let (whole, split) = (dir.path().join("whole.st"), dir.path().join("split.st"));
    let ckpts = dir.path().join("run");
    let log = dir.path().join("log.jsonl");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", &data_arg];
        args.extend_from_slice(extra);
        succeeds(&args)
    };
    train(&[&RECIPE[..], &["--steps", "4", "--save", s(&whole)]].concat());
    let e = train(
        &[
            &RECIPE[..],
            &["--steps", "2", "--out", s(&ckpts), "--log", s(&log)],
        ]
        .concat(),
    );
    assert!(e.contains("checkpoint-step2.safetensors"), "{e}");
    // The whole file is one batch: every step ends an epoch and writes a checkpoint.
    assert_eq!(
        files_in(&ckpts),
        [
            "checkpoint-step1.safetensors",
            "checkpoint-step2.safetensors",
            "model.safetensors"
        ]
    );
    // The recipe comes from the checkpoint: --resume needs neither --model nor --data.
    let e = succeeds(&[
        "train",
        "--resume",
        s(&ckpts),
        "--steps",
        "4",
        "--save",
        s(&split),
        "--log",
        s(&log),
    ]);
    assert!(
        e.contains("resuming cifar-resnet8") && e.contains("(step 2)"),
        "{e}"
    );
    assert_eq!(
        e.matches("step 3/4").count() + e.matches("step 4/4").count(),
        2,
        "{e}"
    );
    assert!(!e.contains("step 2/4"), "{e}");
    assert_same_tensors(&whole, &split);
    // The log went on where it stopped.
    let steps: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);

    // A checkpoint: the state_dict, the momentum buffers in their parameters' shapes, recipe
    // and progress in the metadata.
    let ck = WeightFile::open(ckpts.join("checkpoint-step4.safetensors")).unwrap();
    let meta = ck.metadata();
    assert_eq!(meta["format"], "resnet-rs-checkpoint");
    assert_eq!(meta["arch"], "cifar-resnet8");
    assert_eq!(meta["shortcut"], "A");
    let progress: serde_json::Value = serde_json::from_str(&meta["progress"]).unwrap();
    assert_eq!(progress["step"], 4);
    assert_eq!(progress["epoch"], 4);
    // At an epoch's end the running totals are empty.
    assert_eq!(progress["tally"]["seen"], 0);
    let r: serde_json::Value = serde_json::from_str(&meta["recipe"]).unwrap();
    assert_eq!(r["model"], "cifar-resnet8");
    assert_eq!(r["classes"], 3);
    assert_eq!(r["in_channels"], 3);
    assert_eq!(r["lr"], 0.05);
    assert_eq!(r["momentum"], 0.9);
    assert_eq!(r["weight_decay"], 1e-4);
    assert_eq!(r["prior"], "identity");
    assert_eq!(r["prior_lambda"], 1e-3);
    assert_eq!(r["seed"], 3);
    assert!(r["data"].as_str().unwrap().ends_with("batch.safetensors"));
    assert_eq!(r["batch"], serde_json::Value::Null);
    assert_eq!(
        ck.info("optim.momentum_buffer.conv1.weight").unwrap().shape,
        ck.info("conv1.weight").unwrap().shape
    );
    assert_eq!(ck.load_integers("bn1.num_batches_tracked").unwrap().0, [4]);
    // model.safetensors is the latest state_dict alone: it loads strictly, as --save's file
    // does; the checkpoint's optimiser tensors make strict loading refuse it, and lenient
    // loading takes it.
    let model = WeightFile::open(ckpts.join("model.safetensors")).unwrap();
    let plan = || cifar_plan(&CifarConfig::new(8, 3)).unwrap();
    let strict = |f: &WeightFile| {
        let tracked = resnet_weights::Tracked::new(f);
        Network::load(plan(), &tracked, Backend::Fast).unwrap();
        tracked.finish(resnet_weights::Strictness::Strict)
    };
    strict(&model).unwrap();
    let e = strict(&ck).unwrap_err().to_string();
    assert!(e.contains("optim.momentum_buffer."), "{e}");
    Network::load(plan(), &ck, Backend::Fast).unwrap();
    let x = WeightFile::open(&data).unwrap().load("input").unwrap();
    let logits = |f: &WeightFile| -> Vec<u32> {
        let net = Network::load(plan(), f, Backend::Fast).unwrap();
        let y = net.output(&x, "logits").unwrap();
        y.as_slice().iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(logits(&model), logits(&WeightFile::open(&whole).unwrap()));
    assert_eq!(logits(&ck), logits(&model));

    // Resuming a finished run trains nothing; --steps below the checkpoint is refused.
    let e = succeeds(&["train", "--resume", s(&ckpts), "--steps", "4"]);
    assert!(e.contains("nothing to train"), "{e}");
    let e = fails(&["train", "--resume", s(&ckpts), "--steps", "3"]);
    assert!(e.contains("at step 4, past the 3 steps"), "{e}");
}

#[test]
fn epochs_and_batches_resume_mid_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [5, 1, 8, 8], &[0, 2, 1, 2, 1]);
    let data_arg = format!("tensors:{}", s(&data));
    let (whole, split) = (dir.path().join("whole.st"), dir.path().join("split.st"));
    let ckpts = dir.path().join("run");
    let base = [
        "train",
        "--model",
        "cifar-resnet8-b",
        "--classes",
        "3",
        "--data",
        &data_arg,
        "--lr",
        "0.02",
        "--nesterov",
        "--batch",
        "2",
    ];
    // Five rows in batches of 2: three steps an epoch (2, 2, 1 rows).
    let e = succeeds(&[&base[..], &["--epochs", "2", "--save", s(&whole)]].concat());
    assert!(e.contains("step 6/6  epoch 2 batch 3/3"), "{e}");
    assert!(!e.contains("step 7"), "{e}");
    // Four steps: a checkpoint at the end of epoch 1 (step 3) and at the end (step 4).
    succeeds(&[&base[..], &["--steps", "4", "--out", s(&ckpts)]].concat());
    assert_eq!(
        files_in(&ckpts),
        [
            "checkpoint-step3.safetensors",
            "checkpoint-step4.safetensors",
            "model.safetensors"
        ]
    );
    let meta = WeightFile::open(ckpts.join("checkpoint-step4.safetensors"))
        .unwrap()
        .metadata()
        .clone();
    let progress: serde_json::Value = serde_json::from_str(&meta["progress"]).unwrap();
    assert_eq!(progress["step"], 4);
    assert_eq!(progress["epoch"], 1);
    // Mid-epoch: the epoch's running totals (one batch of two rows so far).
    assert_eq!(progress["tally"]["seen"], 2);
    // --epochs counts the whole run; the batch size comes from the checkpoint.
    let e = succeeds(&[
        "train",
        "--resume",
        s(&ckpts),
        "--epochs",
        "2",
        "--save",
        s(&split),
    ]);
    assert!(e.contains("step 5/6  epoch 2 batch 2/3"), "{e}");
    assert_same_tensors(&whole, &split);
    assert!(files_in(&ckpts).contains(&"checkpoint-step6.safetensors".to_string()));
    // --steps and --epochs exclude each other (a usage error), and one of them is needed.
    for extra in [&["--steps", "1", "--epochs", "1"][..], &[]] {
        let out = resnet()
            .args(base)
            .args(extra)
            .args(["--save", s(&whole)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
    }
}

#[test]
fn resume_refuses_missing_empty_and_corrupt_checkpoints_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [3, 3, 8, 8], &[0, 2, 1]);
    let data_arg = format!("tensors:{}", s(&data));
    let save = dir.path().join("w.st");
    let resume = |d: &Path| {
        fails(&[
            "train",
            "--resume",
            s(d),
            "--steps",
            "3",
            "--save",
            s(&save),
        ])
    };

    let e = resume(&dir.path().join("nonexistent"));
    assert!(
        e.contains("does not exist") && e.contains("nonexistent"),
        "{e}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = resume(&empty);
    assert!(
        e.contains("no checkpoint in") && e.contains("checkpoint-step<N>"),
        "{e}"
    );

    let ckpts = dir.path().join("run");
    let mut first = vec![
        "train",
        "--data",
        &data_arg,
        "--steps",
        "2",
        "--out",
        s(&ckpts),
    ];
    first.extend_from_slice(&RECIPE);
    succeeds(&first);
    // A crash mid-write leaves a hidden temporary file: never taken for a checkpoint.
    std::fs::write(ckpts.join(".checkpoint-step3.safetensors.tmp-99"), b"torn").unwrap();
    // A corrupt latest checkpoint: a clear error naming it and the one before, nothing changed.
    let latest = ckpts.join("checkpoint-step2.safetensors");
    let bytes = std::fs::read(&latest).unwrap();
    std::fs::write(&latest, &bytes[..bytes.len() / 2]).unwrap();
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
        files_in(d)
            .into_iter()
            .map(|f| (f.clone(), std::fs::read(d.join(&f)).unwrap()))
            .collect()
    };
    let before = snapshot(&ckpts);
    let e = resume(&ckpts);
    assert!(
        e.contains("cannot read checkpoint") && e.contains("checkpoint-step2.safetensors"),
        "{e}"
    );
    assert!(
        e.contains("checkpoint-step1.safetensors") && e.contains("move the broken file away"),
        "{e}"
    );
    assert_eq!(snapshot(&ckpts), before);
    assert!(!save.exists());
    // A plain state_dict in a checkpoint's place is not a checkpoint.
    std::fs::copy(ckpts.join("model.safetensors"), &latest).unwrap();
    let e = resume(&ckpts);
    assert!(
        e.contains("not a usable checkpoint") && e.contains("format"),
        "{e}"
    );
    // With the broken file moved away, the run resumes from the one before.
    std::fs::remove_file(&latest).unwrap();
    let e = succeeds(&[
        "train",
        "--resume",
        s(&ckpts),
        "--steps",
        "3",
        "--save",
        s(&save),
    ]);
    assert!(e.contains("(step 1)"), "{e}");
    assert!(save.exists());
}

#[test]
fn resume_refuses_flags_that_contradict_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [3, 3, 8, 8], &[0, 2, 1]);
    let other = dir.path().join("other.safetensors");
    data_file(&other, [3, 3, 8, 8], &[0, 1, 1]);
    let data_arg = format!("tensors:{}", s(&data));
    let other_arg = format!("tensors:{}", s(&other));
    let ckpts = dir.path().join("run");
    let mut first = vec![
        "train",
        "--data",
        &data_arg,
        "--steps",
        "1",
        "--out",
        s(&ckpts),
    ];
    first.extend_from_slice(&RECIPE);
    succeeds(&first);
    let resume = |extra: &[&str]| -> String {
        let mut args = vec!["train", "--resume", s(&ckpts), "--steps", "2"];
        args.extend_from_slice(extra);
        fails(&args)
    };
    for (extra, want) in [
        (
            &["--lr", "0.1"][..],
            "--lr 0.1 conflicts with the checkpoint being resumed",
        ),
        (&["--momentum", "0"], "--momentum 0 conflicts"),
        (
            &["--weight-decay", "0.001"],
            "--weight-decay 0.001 conflicts",
        ),
        (&["--nesterov"], "--nesterov true conflicts"),
        (&["--prior", "zero"], "--prior zero conflicts"),
        (&["--prior-lambda", "0.5"], "--prior-lambda 0.5 conflicts"),
        (
            &["--model", "cifar-resnet14"],
            "--model cifar-resnet14 conflicts",
        ),
        (&["--classes", "4"], "--classes 4 conflicts"),
        (&["--batch", "2"], "--batch 2 conflicts"),
        (&["--seed", "4"], "--seed 4 conflicts"),
        (&["--data", &other_arg], "is not the data the checkpoint"),
    ] {
        let e = resume(extra);
        assert!(e.contains(want), "{extra:?}: {e}");
        assert!(e.contains("checkpoint-step1.safetensors"), "{extra:?}: {e}");
    }
    // --init and --resume exclude each other (a usage error).
    let out = resnet()
        .args([
            "train",
            "--resume",
            s(&ckpts),
            "--steps",
            "2",
            "--init",
            s(&data),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Flags that agree with the checkpoint are fine (the data may have moved).
    let moved = dir.path().join("moved.safetensors");
    std::fs::copy(&data, &moved).unwrap();
    let moved_arg = format!("tensors:{}", s(&moved));
    let mut agree = vec![
        "train",
        "--resume",
        s(&ckpts),
        "--steps",
        "2",
        "--data",
        &moved_arg,
    ];
    agree.extend_from_slice(&RECIPE);
    succeeds(&agree);
    // A new run may not write into another run's checkpoints.
    let e = fails(&first);
    assert!(
        e.contains("already holds checkpoints (up to step 2)") && e.contains("--resume"),
        "{e}"
    );
}

#[test]
fn adamw_with_warmup_resumes_bitwise_and_its_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.safetensors");
    data_file(&data, [6, 1, 8, 8], &[0, 2, 1, 2, 1, 0]);
    let data_arg = format!("tensors:{}", s(&data));
    let (whole, split, sgd) = (
        dir.path().join("whole.st"),
        dir.path().join("split.st"),
        dir.path().join("sgd.st"),
    );
    let ckpts = dir.path().join("run");
    let base = [
        "train",
        "--model",
        "cifar-resnet8",
        "--classes",
        "3",
        "--data",
        &data_arg,
        "--batch",
        "2",
    ];
    let adamw = ["--optimizer", "adamw", "--lr", "0.01", "--warmup", "3"];
    let e = succeeds(&[&base[..], &adamw, &["--steps", "6", "--save", s(&whole)]].concat());
    assert!(
        e.contains("6 AdamW steps (3 per epoch, batch 2), lr 0.01 (constant schedule after 3 warm-up steps)"),
        "{e}"
    );
    // Stopped after 2 steps (mid warm-up), resumed to 6: bitwise the same weights.
    succeeds(&[&base[..], &adamw, &["--steps", "2", "--out", s(&ckpts)]].concat());
    let meta = WeightFile::open(ckpts.join("checkpoint-step2.safetensors"))
        .unwrap()
        .metadata()
        .clone();
    let recipe: serde_json::Value = serde_json::from_str(&meta["recipe"]).unwrap();
    assert_eq!(recipe["optimizer"], "adamw");
    assert_eq!(recipe["warmup"], 3);
    assert_eq!(recipe["weight_decay"], 0.01);
    succeeds(&[
        "train",
        "--resume",
        s(&ckpts),
        "--steps",
        "6",
        "--save",
        s(&split),
    ]);
    assert_same_tensors(&whole, &split);
    // The same run with SGD is another run.
    succeeds(
        &[
            &base[..],
            &[
                "--lr",
                "0.01",
                "--warmup",
                "3",
                "--steps",
                "6",
                "--save",
                s(&sgd),
            ],
        ]
        .concat(),
    );
    // ... as is the same run without the warm-up.
    let cold = dir.path().join("cold.st");
    succeeds(
        &[
            &base[..],
            &adamw[..4],
            &["--steps", "6", "--save", s(&cold)],
        ]
        .concat(),
    );
    let a = WeightFile::open(&whole).unwrap().load("fc.weight").unwrap();
    for other in [&sgd, &cold] {
        let b = WeightFile::open(other).unwrap().load("fc.weight").unwrap();
        assert_ne!(a.as_slice(), b.as_slice(), "{}", other.display());
    }
    // Flags that contradict the checkpoint, or the optimiser, are refused.
    for (extra, want) in [
        (&["--optimizer", "sgd"][..], "--optimizer sgd conflicts"),
        (&["--warmup", "2"], "--warmup 2 conflicts"),
        (&["--betas", "0.8,0.9"], "--betas (0.8, 0.9) conflicts"),
    ] {
        let mut args = vec!["train", "--resume", s(&ckpts), "--steps", "6"];
        args.extend_from_slice(extra);
        let e = fails(&args);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let out = dir.path().join("x.st");
    for (extra, want) in [
        (
            &["--momentum", "0.5"][..],
            "--momentum and --nesterov are SGD's",
        ),
        (
            &["--schedule", "cosine", "--warmup", "6"],
            "--warmup 6 leaves nothing of the cosine schedule",
        ),
        (&["--warmup", "0"], "--warmup 0: give at least 1 step"),
    ] {
        let mut args = [&base[..], &adamw[..2], &["--steps", "6", "--save", s(&out)]].concat();
        args.extend_from_slice(extra);
        let e = fails(&args);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let e = fails(
        &[
            &base[..],
            &["--betas", "0.9,0.99", "--steps", "6", "--save", s(&out)],
        ]
        .concat(),
    );
    assert!(e.contains("--betas is AdamW's"), "{e}");
}
