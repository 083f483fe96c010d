//! PyTorch checkpoints on the command line: every command that takes `--weights` reads
//! `torch.save` files (the fixtures of `crates/resnet-weights/tests/data/torch/`) as it reads
//! safetensors, and a hostile pickle is a one-line error that runs nothing.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn resnet() -> Command {
    Command::cargo_bin("resnet").expect("the resnet binary is built")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resnet-weights/tests/data/torch")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/images")
        .join(name)
}

/// Stdout of a successful run.
fn ok(args: &[&str]) -> Vec<u8> {
    let out = resnet().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn classify_embed_and_inspect_read_checkpoints_as_their_safetensors_twins() {
    let img = image("chelsea.png");
    let dir = tempfile::tempdir().unwrap();
    let run = |weights: &str, cmd: &str| -> Vec<u8> {
        match cmd {
            "classify" => ok(&["classify", "--json", "-w", weights, img.to_str().unwrap()]),
            "embed" => {
                let out = dir.path().join(format!(
                    "{}.safetensors",
                    Path::new(weights).file_name().unwrap().to_string_lossy()
                ));
                ok(&[
                    "embed",
                    "-w",
                    weights,
                    img.to_str().unwrap(),
                    "--output",
                    out.to_str().unwrap(),
                ]);
                let f = resnet_weights::WeightFile::open(&out).unwrap();
                let name = f.tensors().next().unwrap().0.to_string();
                f.load(&name)
                    .unwrap()
                    .as_slice()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            _ => unreachable!(),
        }
    };
    let twin = fixture("basic.safetensors");
    for cmd in ["classify", "embed"] {
        let want = run(&twin, cmd);
        assert!(!want.is_empty());
        for pth in ["basic.pth", "basic_legacy.pth", "basic_wrapped.pth"] {
            assert_eq!(run(&fixture(pth), cmd), want, "{cmd} {pth}");
        }
    }
    let info = String::from_utf8(ok(&["inspect", &fixture("basic_legacy.pth")])).unwrap();
    assert!(info.contains("torchvision"), "{info}");
    assert!(
        info.contains("format:       PyTorch checkpoint (legacy)"),
        "{info}"
    );
    assert!(info.contains("layer1.0.conv1.weight"), "{info}");
}

#[test]
fn enhance_reads_an_edsr_reference_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    image::RgbImage::from_fn(9, 7, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, 128])
    })
    .save(&input)
    .unwrap();
    let output = dir.path().join("out.png");
    ok(&[
        "enhance",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "-w",
        &fixture("edsr_tiny_x3.pt"),
    ]);
    let img = image::open(&output).unwrap();
    assert_eq!((img.width(), img.height()), (27, 21));
}

#[test]
fn a_hostile_checkpoint_is_a_one_line_error_and_runs_nothing() {
    let marker = Path::new("/tmp/resnet-rs-hostile-marker");
    let _ = std::fs::remove_file(marker);
    let img = image("chelsea.png");
    for (file, global) in [
        ("hostile_system.pth", "posix.system"),
        ("hostile_legacy.pth", "posix.system"),
        ("hostile_eval.pth", "__builtin__.eval"),
    ] {
        let w = fixture(file);
        for args in [
            vec!["inspect", w.as_str()],
            vec!["classify", "-w", w.as_str(), img.to_str().unwrap()],
        ] {
            let out = resnet().args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("refusing pickle global {global}")),
                "{args:?}: {stderr}"
            );
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        }
    }
    assert!(!marker.exists(), "a payload ran");
}
