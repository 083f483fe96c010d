//! JPEG decoding against PIL's (libjpeg-turbo), and hostile JPEG bytes.

use resnet_image::{Preprocess, decode_file};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jpeg")
        .join(name)
}

const CASES: [&str; 6] = [
    "baseline_420_q75",
    "baseline_422_q90",
    "baseline_444_q60",
    "progressive_420_q85",
    "restart_420_q70",
    "gray_q80",
];

/// With the `libjpeg` feature every pixel is PIL's: same IDCT, upsampling and colour tables.
#[cfg(feature = "libjpeg")]
#[test]
fn jpegs_decode_bit_for_bit_like_pil() {
    for name in CASES {
        let got = decode_file(&data(&format!("{name}.jpg")))
            .unwrap()
            .to_rgb8();
        let want = std::fs::read(data(&format!("{name}.rgb"))).unwrap();
        assert_eq!(got.as_raw().len(), want.len(), "{name}: size");
        let differ = got
            .as_raw()
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 0, "{name}: {differ} values differ from PIL's");
    }
}

/// Without it (pure Rust, the `image` crate), JPEGs decode within a few levels of PIL's.
#[cfg(not(feature = "libjpeg"))]
#[test]
fn jpegs_decode_close_to_pil() {
    for name in CASES {
        let got = decode_file(&data(&format!("{name}.jpg")))
            .unwrap()
            .to_rgb8();
        let want = std::fs::read(data(&format!("{name}.rgb"))).unwrap();
        let max = got
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max();
        assert!(max.unwrap_or(0) <= 4, "{name}: off by {max:?}");
    }
}

/// libjpeg cannot give RGB for CMYK files: those fall back to the `image` crate.
#[test]
fn cmyk_jpegs_still_decode() {
    let img = decode_file(&data("cmyk_q90.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (16, 12));
    let t = Preprocess::imagenet().load(data("cmyk_q90.jpg")).unwrap();
    assert_eq!(t.shape().dims(), &[1, 3, 224, 224]);
}

/// Truncated and corrupted JPEGs give an image or a typed error, never a panic or an abort
/// (libjpeg's fatal errors unwind out of C and are caught).
#[test]
fn damaged_jpegs_are_errors_or_images_never_panics() {
    let good = std::fs::read(data("progressive_420_q85.jpg")).unwrap();
    let p = Preprocess::imagenet();
    let mut errors = 0;
    for cut in [0, 1, 2, 3, 20, 100, 300, good.len() / 2, good.len() - 2] {
        errors += usize::from(p.from_bytes(&good[..cut]).is_err());
    }
    for at in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        errors += usize::from(p.from_bytes(&bad).is_err());
    }
    // Headers cut short cannot decode at all.
    assert!(errors >= 4, "only {errors} damaged inputs were refused");
    let e = p.from_bytes(&good[..3]).unwrap_err();
    assert!(e.to_string().contains("image bytes"), "{e}");
}

/// A JPEG cut short is an error, as PIL's "image file is truncated", not an image padded with
/// grey: every test file (baseline, progressive, restart markers, greyscale, CMYK) cut in half
/// or a few bytes short of its scan data's end, as a file and as bytes.
#[test]
fn truncated_jpegs_are_errors() {
    let p = Preprocess::imagenet();
    let dir = std::env::temp_dir().join(format!("resnet-image-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in CASES.iter().copied().chain(["cmyk_q90"]) {
        let good = std::fs::read(data(&format!("{name}.jpg"))).unwrap();
        assert!(p.from_bytes(&good).is_ok(), "{name} whole");
        // Cut in half (in the tables or the scan data of these small files), 16 bytes before
        // the end-of-image marker (in the scan data: the header is whole, pixels are missing),
        // and just before that marker (the decoder reads ahead for it, so this is truncated
        // too); the last two say the file is truncated.
        let cuts = [
            (good.len() / 2, false),
            (good.len() - 16, true),
            (good.len() - 2, true),
        ];
        for (cut, says_truncated) in cuts {
            let e = match p.from_bytes(&good[..cut]) {
                Ok(_) => panic!("{name} cut at {cut} of {} decoded", good.len()),
                Err(e) => e.to_string(),
            };
            assert!(
                !says_truncated || e.contains("truncated"),
                "{name} cut at {cut}: {e}"
            );
            let path = dir.join(format!("{name}_{cut}.jpg"));
            std::fs::write(&path, &good[..cut]).unwrap();
            let e = decode_file(&path).unwrap_err().to_string();
            assert!(
                (!says_truncated || e.contains("truncated")) && e.contains(name),
                "{name} file cut at {cut}: {e}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
