//! Shared helpers of the golden tests.
#![allow(dead_code)]

use resnet_tensor::Tensor;
use std::path::PathBuf;

/// `max|a - b| / max|b|`, the numerics contract's relative error.
pub fn rel_err(ours: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(ours.shape(), expected.shape(), "shapes differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in ours.as_slice().iter().zip(expected.as_slice()) {
        num = num.max((f64::from(a) - f64::from(b)).abs());
        den = den.max(f64::from(b).abs());
    }
    num / den
}

/// A file of the golden directory: `$RESNET_GOLDEN_DIR` (CI sets it; a missing file then fails
/// the test), else `../shared/golden` beside the workspace (a missing file there skips the test
/// with a loud message on stderr).
pub fn golden(name: &str) -> Option<PathBuf> {
    let (dir, required) = match std::env::var_os("RESNET_GOLDEN_DIR") {
        Some(d) => (PathBuf::from(d), true),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
            false,
        ),
    };
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    if required {
        panic!(
            "golden fixture {} is missing (RESNET_GOLDEN_DIR is set)",
            path.display()
        );
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: golden fixture {} not found; set RESNET_GOLDEN_DIR to run this test !!!!!!!!\n",
        path.display()
    );
    None
}

/// The repository's copy of `blocks.safetensors`.
pub fn blocks_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/blocks.safetensors")
}
