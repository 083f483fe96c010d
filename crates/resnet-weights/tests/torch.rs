//! PyTorch checkpoints: files written by `torch.save` (see `data/torch/make_fixtures.py`) load
//! to the same tensors as the safetensors files written beside them, and hostile pickles are
//! refused without running anything.

use resnet_weights::{WeightError, WeightFile, WeightFormat, WeightSource};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name)
}

fn golden_dir() -> PathBuf {
    std::env::var_os("RESNET_GOLDEN_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        PathBuf::from,
    )
}

/// Every tensor of `a` equals the one of the same name in `b`, with the same dtype and file
/// key, and both have the same names.
fn assert_same_tensors(a: &WeightFile, b: &WeightFile) {
    assert_eq!(a.names(), b.names());
    for name in a.names() {
        let (ia, ib) = (a.info(&name).unwrap(), b.info(&name).unwrap());
        assert_eq!(ia.dtype, ib.dtype, "{name}");
        assert_eq!(ia.shape, ib.shape, "{name}");
        assert_eq!(ia.file_name, ib.file_name, "{name}");
        if ia.dtype.is_float() {
            let (ta, tb) = (a.load(&name).unwrap(), b.load(&name).unwrap());
            let bits = |t: &resnet_weights::Tensor| -> Vec<u32> {
                t.as_slice().iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(&ta), bits(&tb), "{name}");
        } else {
            assert_eq!(
                a.load_integers(&name).unwrap(),
                b.load_integers(&name).unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn zip_legacy_and_wrapped_checkpoints_equal_their_safetensors_twins() {
    let twin = WeightFile::open(fixture("basic.safetensors")).unwrap();
    for (file, format) in [
        ("basic.pth", WeightFormat::TorchZip),
        ("basic_legacy.pth", WeightFormat::TorchLegacy),
        ("basic_wrapped.pth", WeightFormat::TorchZip),
    ] {
        let pth = WeightFile::open(fixture(file)).unwrap();
        assert_eq!(pth.format(), format, "{file}");
        assert_eq!(pth.scheme(), twin.scheme(), "{file}");
        assert_same_tensors(&pth, &twin);
        // `read` (no memory map) gives the same.
        assert_same_tensors(&WeightFile::read(fixture(file)).unwrap(), &twin);
    }
    // The wrapper's stray tensor and DataParallel's prefix are gone.
    let wrapped = WeightFile::open(fixture("basic_wrapped.pth")).unwrap();
    assert!(!wrapped.contains("best_acc1"));
    assert!(wrapped.contains("layer1.0.conv1.weight"));
}

#[test]
fn half_precision_and_strided_tensors_keep_their_values_and_types() {
    let pth = WeightFile::open(fixture("bottleneck_f16.pth")).unwrap();
    let twin = WeightFile::open(fixture("bottleneck_f16.safetensors")).unwrap();
    assert_eq!(pth.info("conv1.weight").unwrap().dtype.to_string(), "F16");
    assert_same_tensors(&pth, &twin);

    let twin = WeightFile::open(fixture("strided.safetensors")).unwrap();
    for file in ["strided.pth", "strided_legacy.pth"] {
        let pth = WeightFile::open(fixture(file)).unwrap();
        assert_same_tensors(&pth, &twin);
    }
    // Spot values against the formula the script used: base = arange(24)/8 - 1, shape
    // (2, 3, 4); permuted = base.permute(2, 0, 1); column = base[:, :, 2].
    let pth = WeightFile::open(fixture("strided.pth")).unwrap();
    let base = |i: usize, j: usize, k: usize| (i * 12 + j * 4 + k) as f32 / 8.0 - 1.0;
    let permuted = pth.load("permuted").unwrap();
    assert_eq!(permuted.shape().dims(), &[4, 2, 3]);
    assert_eq!(permuted.as_slice()[3 * 6 + 6 - 1], base(1, 2, 3));
    let column = pth.load("column").unwrap();
    assert_eq!(
        column.as_slice(),
        &[
            base(0, 0, 2),
            base(0, 1, 2),
            base(0, 2, 2),
            base(1, 0, 2),
            base(1, 1, 2),
            base(1, 2, 2)
        ]
    );
    assert_eq!(pth.load_integers("counter").unwrap(), (vec![42], vec![]));
    assert_eq!(pth.load("empty").unwrap().shape().dims(), &[0, 3]);
}

#[test]
fn edsr_reference_checkpoint_equals_the_golden_file() {
    let pt = WeightFile::open(fixture("edsr_tiny_x3.pt")).unwrap();
    let golden = WeightFile::open(golden_dir().join("edsr_tiny_x3.safetensors")).unwrap();
    assert_same_tensors(&pt, &golden);
}

#[test]
fn convert_writes_a_safetensors_file_with_the_same_tensors_and_types() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["strided.pth", "strided_legacy.pth", "bottleneck_f16.pth"] {
        let out = dir.path().join(format!("{file}.safetensors"));
        WeightFile::open(fixture(file))
            .unwrap()
            .to_safetensors(&out)
            .unwrap();
        let converted = WeightFile::open(&out).unwrap();
        assert_eq!(converted.format(), WeightFormat::Safetensors);
        let twin = fixture(&file.replace("_legacy", "").replace(".pth", ".safetensors"));
        assert_same_tensors(&converted, &WeightFile::open(twin).unwrap());
    }
    // A directory that does not exist: a write error naming the path, nothing left behind.
    let bad = dir.path().join("missing/out.safetensors");
    let e = WeightFile::open(fixture("strided.pth"))
        .unwrap()
        .to_safetensors(&bad)
        .unwrap_err();
    assert!(matches!(e, WeightError::WriteIo { .. }), "{e}");
    assert!(e.to_string().contains("missing/out.safetensors"), "{e}");
}

/// The marker the hostile fixtures' payload creates (`touch /tmp/resnet-rs-hostile-marker`).
const MARKER: &str = "/tmp/resnet-rs-hostile-marker";

#[test]
fn hostile_pickles_are_refused_and_nothing_runs() {
    let _ = std::fs::remove_file(MARKER);
    for (file, global) in [
        ("hostile_system.pth", "posix.system"),
        ("hostile_inside.pth", "posix.system"),
        ("hostile_eval.pth", "__builtin__.eval"), // protocol 2 spells builtins so
        ("hostile_legacy.pth", "posix.system"),
        ("hostile_plain.pkl", "posix.system"),
    ] {
        for open in [WeightFile::open, WeightFile::read] {
            let e = open(fixture(file)).unwrap_err();
            assert!(
                matches!(&e, WeightError::RefusedGlobal { global: g } if g == global),
                "{file}: {e:?}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("refusing pickle global {global}")),
                "{e}"
            );
        }
        assert!(
            !Path::new(MARKER).exists(),
            "{file}: the payload ran ({MARKER} exists)"
        );
    }
}
