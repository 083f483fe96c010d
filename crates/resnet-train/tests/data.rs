//! The data module: the IDX and CIFAR readers on small files written here (plain and gzipped,
//! well formed and broken in every way a reader must refuse), the normalisation against a
//! direct float64 computation, and the loader's batches against a reference of He et al.'s
//! augmentation (the pad-crop-flip of torchvision's `RandomCrop(padding=4)` and
//! `RandomHorizontalFlip`, then `Normalize`) and against its own promises: every batch a
//! function of (seed, epoch, step), each example at most once per epoch.

use flate2::Compression;
use flate2::write::GzEncoder;
use resnet_train::data::{
    Augment, Batch, DataError, Dataset, Loader, Normalize, cifar10, cifar100, fashion_mnist,
    mix_seed, mnist, read_cifar_file, read_idx_images, read_idx_labels,
};
use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type R = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// Files.

/// An IDX image file: magic 0x00000803, `[n, rows, cols]`, then the pixels.
fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// An IDX label file: magic 0x00000801, `[n]`, then the labels.
fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `n` images of `rows x cols` pixels, no two bytes of one image alike where possible, each
/// image different.
fn pixels(n: usize, rows: usize, cols: usize, salt: usize) -> Vec<u8> {
    (0..n * rows * cols)
        .map(|i| ((i * 37 + salt * 101 + 11) % 256) as u8)
        .collect()
}

/// The error's message: one line, naming `path`.
fn names(err: &DataError, path: &Path) -> String {
    let s = err.to_string();
    assert!(!s.contains('\n'), "not one line: {s:?}");
    assert!(
        s.contains(&path.display().to_string()),
        "{s:?} does not name {}",
        path.display()
    );
    s
}

/// What a reader must refuse, as the error it gives.
fn refuse<T: std::fmt::Debug>(r: Result<T, DataError>) -> DataError {
    match r {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// IDX.

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The four files of a tiny Fashion-MNIST: 5 training and 3 test images of 3x4 pixels.
struct Idx {
    train_px: Vec<u8>,
    train_lab: Vec<u8>,
    test_px: Vec<u8>,
    test_lab: Vec<u8>,
}

impl Idx {
    fn new() -> Self {
        Self {
            train_px: pixels(5, 3, 4, 0),
            train_lab: vec![3, 0, 9, 1, 7],
            test_px: pixels(3, 3, 4, 1),
            test_lab: vec![8, 2, 5],
        }
    }

    /// `(name, bytes)` of each file.
    fn files(&self) -> [(&'static str, Vec<u8>); 4] {
        [
            (TRAIN_IMAGES, idx_images(5, 3, 4, &self.train_px)),
            (TRAIN_LABELS, idx_labels(&self.train_lab)),
            (TEST_IMAGES, idx_images(3, 3, 4, &self.test_px)),
            (TEST_LABELS, idx_labels(&self.test_lab)),
        ]
    }

    /// Write the files, the ones `gz` picks gzipped (named `.gz`).
    fn write(&self, dir: &Path, gz: impl Fn(usize) -> bool) {
        for (i, (name, bytes)) in self.files().into_iter().enumerate() {
            if gz(i) {
                put(dir, &format!("{name}.gz"), &gzip(&bytes));
            } else {
                put(dir, name, &bytes);
            }
        }
    }

    fn check(&self, train: &Dataset, test: &Dataset) {
        for (d, px, lab) in [
            (train, &self.train_px, &self.train_lab),
            (test, &self.test_px, &self.test_lab),
        ] {
            assert_eq!(d.dims(), [1, 3, 4]);
            assert_eq!(d.classes(), 10);
            assert_eq!(d.len(), lab.len());
            for i in 0..d.len() {
                assert_eq!(d.image(i), &px[i * 12..(i + 1) * 12], "image {i}");
            }
            let want: Vec<u32> = lab.iter().map(|&l| u32::from(l)).collect();
            assert_eq!(d.labels(), want.as_slice());
        }
    }
}

#[test]
fn idx_round_trip_plain_gzipped_and_mixed() -> R {
    let idx = Idx::new();
    type Choice = (&'static str, fn(usize) -> bool);
    let choices: [Choice; 4] = [
        ("plain", |_| false),
        ("gzipped", |_| true),
        ("images gzipped", |i| i % 2 == 0),
        ("labels gzipped", |i| i % 2 == 1),
    ];
    for (what, gz) in choices {
        let dir = tempfile::tempdir()?;
        idx.write(dir.path(), gz);
        let split = fashion_mnist(dir.path()).map_err(|e| format!("{what}: {e}"))?;
        idx.check(&split.train, &split.test);
        let split = mnist(dir.path())?;
        idx.check(&split.train, &split.test);
    }

    // The readers on their own, the gzipped file named without `.gz`: the content decides.
    let dir = tempfile::tempdir()?;
    let p = put(
        dir.path(),
        "images",
        &gzip(&idx_images(5, 3, 4, &idx.train_px)),
    );
    let (px, dims) = read_idx_images(&p)?;
    assert_eq!((px, dims), (idx.train_px.clone(), [3, 4]));
    let p = put(dir.path(), "labels", &idx_labels(&idx.train_lab));
    assert_eq!(read_idx_labels(&p)?, vec![3, 0, 9, 1, 7]);

    // A plain file is taken before its `.gz` (here garbage), which is then never read.
    let dir = tempfile::tempdir()?;
    idx.write(dir.path(), |_| false);
    put(dir.path(), &format!("{TRAIN_IMAGES}.gz"), b"\x1f\x8bjunk");
    let split = fashion_mnist(dir.path())?;
    idx.check(&split.train, &split.test);

    // No images at all is a valid file.
    let p = put(dir.path(), "none", &idx_images(0, 28, 28, &[]));
    assert_eq!(read_idx_images(&p)?, (vec![], [28, 28]));
    Ok(())
}

#[test]
fn idx_truncated_data() {
    let dir = tempfile::tempdir().unwrap();
    let full = idx_images(5, 3, 4, &pixels(5, 3, 4, 0));
    for (name, bytes) in [
        ("short", full[..full.len() - 1].to_vec()),
        ("short.gz", gzip(&full[..full.len() - 1])),
        ("headeronly", full[..16].to_vec()),
    ] {
        let p = put(dir.path(), name, &bytes);
        let e = refuse(read_idx_images(&p));
        let found = bytes_after_header(&bytes);
        assert!(
            matches!(&e, DataError::Truncated { path, expected: 60, found: f } if *path == p && *f == found),
            "{name}: {e:?}"
        );
        let s = names(&e, &p);
        assert!(s.contains("60") && s.contains("truncated"), "{s}");
    }
    // Labels: 5 promised, 4 there.
    let mut bytes = idx_labels(&[1, 2, 3, 4, 5]);
    bytes.pop();
    let p = put(dir.path(), "labels", &bytes);
    let e = refuse(read_idx_labels(&p));
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 5,
                found: 4,
                ..
            }
        ),
        "{e:?}"
    );
    names(&e, &p);
}

fn bytes_after_header(idx: &[u8]) -> u64 {
    let raw = if idx.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(idx), &mut out).unwrap();
        out
    } else {
        idx.to_vec()
    };
    (raw.len() - 16) as u64
}

#[test]
fn idx_truncated_header() {
    let dir = tempfile::tempdir().unwrap();
    let full = idx_images(5, 3, 4, &pixels(5, 3, 4, 0));
    for cut in [4, 10, 15] {
        let p = put(dir.path(), &format!("cut{cut}"), &full[..cut]);
        let e = refuse(read_idx_images(&p));
        assert!(
            matches!(&e, DataError::Truncated { expected: 16, found, .. } if *found == cut as u64),
            "{cut}: {e:?}"
        );
        names(&e, &p);
    }
    // Labels need 8 bytes of header.
    let p = put(dir.path(), "lab", &[0, 0, 8, 1, 0, 0]);
    let e = refuse(read_idx_labels(&p));
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 8,
                found: 6,
                ..
            }
        ),
        "{e:?}"
    );
    names(&e, &p);
    // Not even a magic number.
    let p = put(dir.path(), "three", &[0, 0, 8]);
    let e = refuse(read_idx_images(&p));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    names(&e, &p);
}

#[test]
fn idx_wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let labels = put(dir.path(), "labels", &idx_labels(&[1, 2, 3]));
    let images = put(dir.path(), "images", &idx_images(1, 2, 2, &[1, 2, 3, 4]));
    // A label file given as images, and the other way round.
    let e = refuse(read_idx_images(&labels));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    let s = names(&e, &labels);
    assert!(
        s.contains("magic") && s.contains("0x00000801") && s.contains("0x00000803"),
        "{s}"
    );
    let e = refuse(read_idx_labels(&images));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    let s = names(&e, &images);
    assert!(s.contains("magic") && s.contains("0x00000803"), "{s}");
    // Another value type (0x0d: f32), and a text file.
    let mut floats = idx_images(1, 1, 1, &[0, 0, 0, 0]);
    floats[2] = 0x0d;
    let p = put(dir.path(), "floats", &floats);
    let e = refuse(read_idx_images(&p));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    assert!(names(&e, &p).contains("magic"));
    let p = put(dir.path(), "text", b"hello, world\n");
    let e = refuse(read_idx_images(&p));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    names(&e, &p);
    // Swapped files in a dataset directory.
    let idx = Idx::new();
    idx.write(dir.path(), |_| false);
    std::fs::rename(
        dir.path().join(TEST_IMAGES),
        dir.path().join("tmp-swap-images"),
    )
    .unwrap();
    std::fs::rename(dir.path().join(TEST_LABELS), dir.path().join(TEST_IMAGES)).unwrap();
    std::fs::rename(
        dir.path().join("tmp-swap-images"),
        dir.path().join(TEST_LABELS),
    )
    .unwrap();
    let e = refuse(fashion_mnist(dir.path()));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    assert!(names(&e, &dir.path().join(TEST_IMAGES)).contains("magic"));
}

#[test]
fn idx_trailing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_images(5, 3, 4, &pixels(5, 3, 4, 0));
    bytes.push(0);
    for (name, b) in [("plain", bytes.clone()), ("gz", gzip(&bytes))] {
        let p = put(dir.path(), name, &b);
        let e = refuse(read_idx_images(&p));
        assert!(matches!(e, DataError::Format { .. }), "{e:?}");
        let s = names(&e, &p);
        assert!(s.contains("1 bytes after"), "{s}");
    }
    let mut bytes = idx_labels(&[1, 2, 3]);
    bytes.extend_from_slice(&[4, 5]);
    let p = put(dir.path(), "labels", &bytes);
    let e = refuse(read_idx_labels(&p));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    assert!(names(&e, &p).contains("2 bytes after"));
}

#[test]
fn idx_label_out_of_range() {
    let idx = Idx {
        train_lab: vec![3, 0, 9, 10, 7],
        ..Idx::new()
    };
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        idx.write(dir.path(), |_| gz);
        let e = refuse(fashion_mnist(dir.path()));
        let lpath = dir
            .path()
            .join(format!("{TRAIN_LABELS}{}", if gz { ".gz" } else { "" }));
        assert!(
            matches!(&e, DataError::Label { path, index: 3, label: 10, classes: 10 } if *path == lpath),
            "{e:?}"
        );
        let s = names(&e, &lpath);
        assert!(s.contains("label 10") && s.contains("example 3"), "{s}");
    }
    // 255 in the test set.
    let idx = Idx {
        test_lab: vec![8, 2, 255],
        ..Idx::new()
    };
    let dir = tempfile::tempdir().unwrap();
    idx.write(dir.path(), |_| false);
    let e = refuse(mnist(dir.path()));
    assert!(
        matches!(
            e,
            DataError::Label {
                index: 2,
                label: 255,
                classes: 10,
                ..
            }
        ),
        "{e:?}"
    );
    names(&e, &dir.path().join(TEST_LABELS));
}

#[test]
fn idx_image_and_label_counts_differ() {
    for (train_lab, test_lab) in [
        (vec![3, 0, 9, 1], vec![8, 2, 5]),
        (vec![3, 0, 9, 1, 7], vec![8, 2, 5, 1]),
        (vec![], vec![8, 2, 5]),
    ] {
        let idx = Idx {
            train_lab,
            test_lab,
            ..Idx::new()
        };
        let dir = tempfile::tempdir().unwrap();
        idx.write(dir.path(), |i| i == 1);
        let e = refuse(fashion_mnist(dir.path()));
        assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
        let (images, labels) = if idx.train_lab.len() != 5 {
            (TRAIN_IMAGES, format!("{TRAIN_LABELS}.gz"))
        } else {
            (TEST_IMAGES, TEST_LABELS.to_owned())
        };
        names(&e, &dir.path().join(images));
        names(&e, &dir.path().join(labels));
    }
}

#[test]
fn idx_gzip_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let good = gzip(&idx_images(5, 3, 4, &pixels(5, 3, 4, 0)));
    let mut bad_body = good.clone();
    for b in &mut bad_body[10..good.len() - 8] {
        *b ^= 0xa5;
    }
    for (name, bytes) in [
        ("magic-only", vec![0x1f, 0x8b]),
        ("junk", b"\x1f\x8bthis is not a gzip stream at all".to_vec()),
        ("junk2", {
            let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
            v.extend(std::iter::repeat_n(0xff, 64));
            v
        }),
        ("bad-body", bad_body),
        ("cut", good[..good.len() / 2].to_vec()),
    ] {
        let p = put(dir.path(), name, &bytes);
        let e = refuse(read_idx_images(&p));
        // A stream cut short may decode to a short prefix; anything else is not gzip.
        if name == "cut" {
            assert!(
                matches!(e, DataError::Format { .. } | DataError::Truncated { .. }),
                "{name}: {e:?}"
            );
        } else {
            assert!(matches!(e, DataError::Format { .. }), "{name}: {e:?}");
            assert!(names(&e, &p).contains("gzip"), "{name}: {e}");
        }
        names(&e, &p);
        let e = refuse(read_idx_labels(&p));
        names(&e, &p);
    }
}

#[test]
fn idx_huge_header_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![];
    // 2^31 x 2^31 x 1 images in a 20-byte file; 2^32 - 1 cubed; 2^32 values (within the
    // limit on a dataset's size, but not in the file).
    for (name, dims) in [
        ("huge", [1u32 << 31, 1 << 31, 1]),
        ("max", [u32::MAX, u32::MAX, u32::MAX]),
        ("overflow64", [1 << 31, 1 << 31, 8]),
        ("big", [1 << 16, 1 << 8, 1 << 8]),
    ] {
        let p = put(
            dir.path(),
            name,
            &idx_images(dims[0], dims[1], dims[2], &[1, 2, 3, 4]),
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 20);
        cases.push((name, p));
    }
    let mut labels = vec![0, 0, 8, 1, 0xff, 0xff, 0xff, 0xff];
    labels.extend_from_slice(&[1, 2, 3]);
    cases.push(("labels", put(dir.path(), "labels", &labels)));
    for (name, p) in &cases {
        let t = Instant::now();
        let e = if *name == "labels" {
            refuse(read_idx_labels(p))
        } else {
            refuse(read_idx_images(p))
        };
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t.elapsed()
        );
        match *name {
            "big" => assert!(
                matches!(
                    e,
                    DataError::Truncated {
                        expected: 0x1_0000_0000,
                        found: 4,
                        ..
                    }
                ),
                "{e:?}"
            ),
            "labels" => assert!(
                matches!(
                    e,
                    DataError::Truncated {
                        expected: 0xffff_ffff,
                        found: 3,
                        ..
                    }
                ),
                "{e:?}"
            ),
            _ => assert!(
                matches!(e, DataError::Format { .. } | DataError::Truncated { .. }),
                "{name}: {e:?}"
            ),
        }
        names(&e, p);
    }
    // The same, gzipped.
    let p = put(
        dir.path(),
        "huge.gz",
        &gzip(&idx_images(1 << 31, 1 << 31, 1, &[1, 2, 3, 4])),
    );
    let t = Instant::now();
    let e = refuse(read_idx_images(&p));
    assert!(t.elapsed() < Duration::from_secs(2));
    names(&e, &p);
}

#[test]
fn idx_empty_file_directory_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    // Empty.
    let p = put(dir.path(), "empty", &[]);
    for e in [
        refuse(read_idx_images(&p)),
        refuse(read_idx_labels(&p).map(|_| ())),
    ] {
        assert!(matches!(e, DataError::Format { .. }), "{e:?}");
        names(&e, &p);
    }
    let p = put(dir.path(), "empty.gz", &gzip(&[]));
    let e = refuse(read_idx_images(&p));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    names(&e, &p);

    // Images of no pixels.
    let p = put(dir.path(), "zero-width", &idx_images(3, 4, 0, &[]));
    let e = refuse(read_idx_images(&p));
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");
    names(&e, &p);

    // A directory.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    for e in [
        refuse(read_idx_images(&sub)),
        refuse(read_idx_labels(&sub).map(|_| ())),
        refuse(read_cifar_file(&sub, 1, 10)),
    ] {
        assert!(
            matches!(e, DataError::Format { .. } | DataError::Io { .. }),
            "{e:?}"
        );
        names(&e, &sub);
    }

    // A missing file.
    let missing = dir.path().join("no-such-file");
    for e in [
        refuse(read_idx_images(&missing)),
        refuse(read_idx_labels(&missing).map(|_| ())),
        refuse(read_cifar_file(&missing, 1, 10)),
    ] {
        assert!(
            matches!(&e, DataError::Io { path, source } if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        names(&e, &missing);
    }

    // A dataset directory missing one file (neither plain nor gzipped), and no directory.
    let d = tempfile::tempdir().unwrap();
    Idx::new().write(d.path(), |i| i == 0);
    std::fs::remove_file(d.path().join(TEST_LABELS)).unwrap();
    let e = refuse(fashion_mnist(d.path()));
    assert!(
        matches!(&e, DataError::Io { path, .. } if *path == d.path().join(TEST_LABELS)),
        "{e:?}"
    );
    let s = names(&e, &d.path().join(TEST_LABELS));
    assert!(s.contains(".gz"), "{s}");
    let nowhere = d.path().join("nowhere");
    let e = refuse(mnist(&nowhere));
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    names(&e, &nowhere);
}

// ---------------------------------------------------------------------------------------------
// CIFAR.

const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// Record `r` of file `f`: its pixels.
fn cifar_image(f: usize, r: usize) -> Vec<u8> {
    (0..CIFAR_PIXELS)
        .map(|j| ((j * 7 + f * 31 + r * 13 + j / 1024 * 5) % 256) as u8)
        .collect()
}

/// A CIFAR file of `labels.len()` records, each its label bytes then its pixels.
fn cifar_file(f: usize, labels: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![];
    for (r, l) in labels.iter().enumerate() {
        v.extend_from_slice(l);
        v.extend_from_slice(&cifar_image(f, r));
    }
    v
}

/// CIFAR-10's six files: `(name, labels)` of each, file index is its position.
fn cifar10_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> =
        [vec![6, 9], vec![9], vec![4, 1, 0], vec![2], vec![7, 8]]
            .into_iter()
            .enumerate()
            .map(|(i, l)| (format!("data_batch_{}.bin", i + 1), l))
            .collect();
    files.push(("test_batch.bin".into(), vec![3, 5]));
    files
}

fn write_cifar10(dir: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, (name, labels)) in files.iter().enumerate() {
        let labels: Vec<[u8; 1]> = labels.iter().map(|&l| [l]).collect();
        let labels: Vec<&[u8]> = labels.iter().map(|l| l.as_slice()).collect();
        put(dir, name, &cifar_file(f, &labels));
    }
}

#[test]
fn cifar10_round_trip_flat_and_nested() -> R {
    let files = cifar10_files();
    let flat = tempfile::tempdir()?;
    write_cifar10(flat.path(), &files);
    let nested = tempfile::tempdir()?;
    write_cifar10(&nested.path().join("cifar-10-batches-bin"), &files);
    for dir in [flat.path(), nested.path()] {
        let split = cifar10(dir)?;
        // Training examples: the five files in order, each file's records in order.
        let mut want_images = vec![];
        let mut want_labels = vec![];
        for (f, (_, labels)) in files[..5].iter().enumerate() {
            for (r, &l) in labels.iter().enumerate() {
                want_images.push(cifar_image(f, r));
                want_labels.push(u32::from(l));
            }
        }
        for (d, images, labels) in [
            (&split.train, want_images, want_labels),
            (
                &split.test,
                vec![cifar_image(5, 0), cifar_image(5, 1)],
                vec![3, 5],
            ),
        ] {
            assert_eq!(d.dims(), [3, 32, 32]);
            assert_eq!(d.classes(), 10);
            assert_eq!(d.len(), labels.len());
            assert_eq!(d.labels(), labels.as_slice());
            for (i, im) in images.iter().enumerate() {
                assert!(d.image(i) == im.as_slice(), "example {i} differs");
            }
        }
        assert_eq!(split.train.len(), 9);
    }
    // One file on its own.
    let (px, labels) = read_cifar_file(flat.path().join("data_batch_3.bin"), 1, 10)?;
    assert_eq!(labels, vec![4, 1, 0]);
    assert_eq!(px.len(), 3 * CIFAR_PIXELS);
    assert!(px[CIFAR_PIXELS..2 * CIFAR_PIXELS] == cifar_image(2, 1)[..]);
    Ok(())
}

#[test]
fn cifar10_broken_files() {
    let files = cifar10_files();
    let bad = |f: usize, bytes: &dyn Fn(&[u8]) -> Vec<u8>| {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), &files);
        let p = dir.path().join(&files[f].0);
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, bytes(&b)).unwrap();
        let e = refuse(cifar10(dir.path()));
        names(&e, &p);
        (dir, p, e)
    };
    // A record short by one byte: 3 records' worth expected.
    let (_d, p, e) = bad(2, &|b| b[..b.len() - 1].to_vec());
    assert!(
        matches!(&e, DataError::Truncated { path, expected: 9219, found: 9218 } if *path == p),
        "{e:?}"
    );
    // One byte too many.
    let (_d, _, e) = bad(4, &|b| [b, &[0]].concat());
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 9219,
                found: 6147,
                ..
            }
        ),
        "{e:?}"
    );
    // Label 10 in the third record of data_batch_3, and in the test set.
    let (_d, p, e) = bad(2, &|b| {
        let mut b = b.to_vec();
        b[2 * 3073] = 10;
        b
    });
    assert!(
        matches!(&e, DataError::Label { path, index: 2, label: 10, classes: 10 } if *path == p),
        "{e:?}"
    );
    assert!(e.to_string().contains("label 10"));
    let (_d, _, e) = bad(5, &|b| {
        let mut b = b.to_vec();
        b[0] = 200;
        b
    });
    assert!(
        matches!(
            e,
            DataError::Label {
                index: 0,
                label: 200,
                ..
            }
        ),
        "{e:?}"
    );
    // Empty.
    let (_d, _, e) = bad(3, &|_| vec![]);
    assert!(matches!(e, DataError::Format { .. }), "{e:?}");

    // A missing file, and a directory with none of them.
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), &files);
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    let e = refuse(cifar10(dir.path()));
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    names(&e, &dir.path().join("data_batch_4.bin"));
    let empty = tempfile::tempdir().unwrap();
    let e = refuse(cifar10(empty.path()));
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    names(&e, &empty.path().join("data_batch_1.bin"));
}

#[test]
fn cifar100_keeps_the_fine_label() -> R {
    for nested in [false, true] {
        let root = tempfile::tempdir()?;
        let dir = if nested {
            root.path().join("cifar-100-binary")
        } else {
            root.path().to_owned()
        };
        std::fs::create_dir_all(&dir)?;
        // (coarse, fine): coarse labels that differ from the fine ones.
        put(
            &dir,
            "train.bin",
            &cifar_file(0, &[&[19, 99], &[3, 0], &[0, 42]]),
        );
        put(&dir, "test.bin", &cifar_file(1, &[&[7, 64]]));
        let split = cifar100(root.path())?;
        assert_eq!(split.train.labels(), &[99, 0, 42]);
        assert_eq!(split.test.labels(), &[64]);
        assert_eq!(split.train.classes(), 100);
        assert_eq!(split.train.dims(), [3, 32, 32]);
        for r in 0..3 {
            assert!(split.train.image(r) == cifar_image(0, r).as_slice());
        }
        assert!(split.test.image(0) == cifar_image(1, 0).as_slice());

        // A fine label of 100 (its coarse label fine).
        let p = put(&dir, "test.bin", &cifar_file(1, &[&[7, 64], &[5, 100]]));
        let e = refuse(cifar100(root.path()));
        assert!(
            matches!(&e, DataError::Label { path, index: 1, label: 100, classes: 100 } if *path == p),
            "{e:?}"
        );
        names(&e, &p);
        // A CIFAR-10 sized record in a CIFAR-100 file.
        let p = put(&dir, "test.bin", &cifar_file(1, &[&[7]]));
        let e = refuse(cifar100(root.path()));
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 3074,
                    found: 3073,
                    ..
                }
            ),
            "{e:?}"
        );
        names(&e, &p);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Normalisation.

/// A small generator for test data (not the module's).
struct Lcg(u64);

impl Lcg {
    fn byte(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 56) as u8
    }
}

/// Each channel's mean and population standard deviation, on the [0, 1] scale.
fn direct_stats(d: &Dataset) -> (Vec<f64>, Vec<f64>) {
    let [c, h, w] = d.dims();
    let (mut mean, mut std) = (vec![], vec![]);
    for ch in 0..c {
        let vals: Vec<f64> = (0..d.len())
            .flat_map(|i| d.image(i)[ch * h * w..(ch + 1) * h * w].to_vec())
            .map(|v| f64::from(v) / 255.0)
            .collect();
        let n = vals.len() as f64;
        let m = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        mean.push(m);
        std.push(var.sqrt());
    }
    (mean, std)
}

#[test]
fn normalize_matches_a_direct_computation() {
    let mut rng = Lcg(3);
    // Channel 0 uniform over 0..256, channel 1 squeezed into 100..164.
    let (n, h, w) = (13, 5, 7);
    let mut images = vec![];
    for _ in 0..n {
        images.extend((0..h * w).map(|_| rng.byte()));
        images.extend((0..h * w).map(|_| 100 + rng.byte() / 4));
    }
    let d = Dataset::new("random", [2, h, w], images, vec![0; n], 1).unwrap();
    let norm = Normalize::from_dataset(&d);
    let (mean, std) = direct_stats(&d);
    assert_eq!((norm.mean.len(), norm.std.len()), (2, 2));
    for ch in 0..2 {
        assert!(
            (norm.mean[ch] - mean[ch]).abs() < 1e-12,
            "mean {ch}: {} vs {}",
            norm.mean[ch],
            mean[ch]
        );
        assert!(
            (norm.std[ch] - std[ch]).abs() < 1e-12,
            "std {ch}: {} vs {}",
            norm.std[ch],
            std[ch]
        );
    }
    assert!(norm.std[1] < norm.std[0] / 2.0);

    // Population, not sample: two pixels 0 and 255 have std 0.5 exactly.
    let d = Dataset::new("two", [1, 1, 2], vec![0, 255], vec![0], 1).unwrap();
    let norm = Normalize::from_dataset(&d);
    assert_eq!((norm.mean[0], norm.std[0]), (0.5, 0.5));

    // A constant channel: std 1, and the mean its value.
    let mut images = vec![];
    for _ in 0..4 {
        images.extend((0..6).map(|_| rng.byte()));
        images.extend([77; 6]);
    }
    let d = Dataset::new("const", [2, 2, 3], images, vec![0; 4], 1).unwrap();
    let norm = Normalize::from_dataset(&d);
    assert_eq!(norm.std[1], 1.0);
    assert!((norm.mean[1] - 77.0 / 255.0).abs() < 1e-15);
    assert_ne!(norm.std[0], 1.0);
}

// ---------------------------------------------------------------------------------------------
// The loader.

/// `n` grey `h x w` images whose first pixel is their index (so an output identifies its
/// example), labels `i % classes`.
fn numbered(n: usize, h: usize, w: usize, classes: usize) -> Dataset {
    let mut rng = Lcg(n as u64);
    let mut images = vec![];
    for i in 0..n {
        images.push(i as u8);
        images.extend((1..h * w).map(|_| rng.byte()));
    }
    let labels = (0..n).map(|i| (i % classes) as u32).collect();
    Dataset::new("numbered", [1, h, w], images, labels, classes).unwrap()
}

/// The torch reference of one normalised byte: `Normalize(mean, std)(ToTensor(v))`, f32
/// pixels, the arithmetic in f64.
fn norm_ref(norm: &Normalize, ch: usize, v: u8) -> f32 {
    ((f64::from(v as f32 / 255.0) - norm.mean[ch]) / norm.std[ch]) as f32
}

/// Example `src` (`[c, h, w]` bytes) padded by `pad` zeros, cropped at `(dy, dx)`, flipped if
/// `flip`, normalised.
fn augment_ref(
    src: &[u8],
    [c, h, w]: [usize; 3],
    norm: &Normalize,
    pad: usize,
    dy: usize,
    dx: usize,
    flip: bool,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let xx = if flip { w - 1 - x } else { x };
                let (sy, sx) = (
                    (y + dy) as isize - pad as isize,
                    (xx + dx) as isize - pad as isize,
                );
                let v = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                    src[ch * h * w + sy as usize * w + sx as usize]
                } else {
                    0
                };
                out.push(norm_ref(norm, ch, v));
            }
        }
    }
    out
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn same(a: &Batch, b: &Batch) -> bool {
    a.step == b.step
        && a.labels == b.labels
        && a.input.shape().dims() == b.input.shape().dims()
        && bits(a.input.as_slice()) == bits(b.input.as_slice())
}

/// The examples of a batch of [`numbered`] images not augmented, by their first pixel.
fn ids(b: &Batch, d: &Dataset, norm: &Normalize) -> Vec<usize> {
    let per = b.input.len() / b.labels.len();
    b.input
        .as_slice()
        .chunks_exact(per)
        .map(|im| {
            let hits: Vec<usize> = (0..d.len())
                .filter(|&i| im[0].to_bits() == norm_ref(norm, 0, d.image(i)[0]).to_bits())
                .collect();
            assert_eq!(hits.len(), 1, "first pixel {} is no one example's", im[0]);
            hits[0]
        })
        .collect()
}

fn epoch_batches(l: &Loader, epoch: u64, from: usize) -> Vec<Batch> {
    l.epoch(epoch, from).collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn loader_batches_are_a_function_of_seed_epoch_and_step() {
    let d = numbered(37, 6, 5, 4);
    let norm = Normalize::from_dataset(&d);
    let loader = Loader::new(d.clone(), norm.clone(), Augment::he_et_al(), 5, 42).unwrap();
    assert_eq!((loader.steps_per_epoch(), loader.batch_size()), (7, 5));
    let again = Loader::new(d.clone(), norm.clone(), Augment::he_et_al(), 5, 42).unwrap();
    for epoch in [0, 1, 5] {
        let all = epoch_batches(&loader, epoch, 0);
        assert_eq!(all.len(), 7);
        for (k, b) in all.iter().enumerate() {
            assert_eq!(b.step, k);
            assert_eq!(b.input.shape().dims(), &[5, 1, 6, 5]);
            assert_eq!(b.labels.len(), 5);
            assert!(
                same(b, &loader.batch(epoch, k).unwrap()),
                "epoch {epoch} step {k}"
            );
            assert!(
                same(b, &again.batch(epoch, k).unwrap()),
                "epoch {epoch} step {k}"
            );
        }
        // Resuming at any step gives the rest of the same epoch.
        for from in 0..=7 {
            let rest = epoch_batches(&loader, epoch, from);
            assert_eq!(rest.len(), 7 - from);
            for (b, a) in rest.iter().zip(&all[from..]) {
                assert!(same(b, a), "epoch {epoch} from {from} step {}", a.step);
            }
        }
        let rest = epoch_batches(&again, epoch, 3);
        assert!(rest.iter().zip(&all[3..]).all(|(b, a)| same(b, a)));
        // Past the end: nothing, or an error for one step.
        assert_eq!(loader.epoch(epoch, 9).count(), 0);
        assert!(matches!(
            loader.batch(epoch, 7),
            Err(DataError::Mismatch(_))
        ));
    }
    // A clone is the same loader.
    assert!(same(
        &loader.clone().batch(2, 3).unwrap(),
        &loader.batch(2, 3).unwrap()
    ));

    // Another seed, or another epoch: another order (seen through unaugmented batches).
    let plain = |seed| Loader::new(d.clone(), norm.clone(), Augment::none(), 5, seed).unwrap();
    let order = |l: &Loader, e| -> Vec<usize> {
        epoch_batches(l, e, 0)
            .iter()
            .flat_map(|b| ids(b, &d, &norm))
            .collect()
    };
    let (a, b) = (plain(42), plain(43));
    assert_eq!(order(&a, 0), order(&plain(42), 0));
    assert_ne!(order(&a, 0), order(&b, 0));
    assert_ne!(order(&a, 0), order(&a, 1));
    assert_ne!(order(&b, 0), order(&b, 1));
    // And the augmentation differs with the seed too.
    let other = Loader::new(d.clone(), norm.clone(), Augment::he_et_al(), 5, 43).unwrap();
    assert!(!same(
        &loader.batch(0, 0).unwrap(),
        &other.batch(0, 0).unwrap()
    ));

    // mix_seed: a function of every part of its input.
    let base = mix_seed(42, &[1, 0, 3]);
    assert_eq!(base, mix_seed(42, &[1, 0, 3]));
    for other in [
        mix_seed(43, &[1, 0, 3]),
        mix_seed(42, &[0, 0, 3]),
        mix_seed(42, &[1, 1, 3]),
        mix_seed(42, &[1, 0, 4]),
        mix_seed(42, &[1, 0]),
        mix_seed(42, &[1, 0, 3, 0]),
    ] {
        assert_ne!(base, other);
    }
}

#[test]
fn loader_epoch_visits_each_example_at_most_once() {
    let d = numbered(37, 3, 3, 5);
    let norm = Normalize::from_dataset(&d);
    for (batch, seed) in [(5, 1), (4, 2), (37, 3), (1, 4), (36, 5)] {
        let loader = Loader::new(d.clone(), norm.clone(), Augment::none(), batch, seed).unwrap();
        let steps = 37 / batch;
        assert_eq!(loader.steps_per_epoch(), steps);
        let mut ever = HashSet::new();
        for epoch in 0..12 {
            let batches = epoch_batches(&loader, epoch, 0);
            assert_eq!(batches.len(), steps);
            let mut seen = HashSet::new();
            let mut order = vec![];
            for b in &batches {
                assert_eq!(b.labels.len(), batch);
                let ids = ids(b, &d, &norm);
                for (&i, &l) in ids.iter().zip(&b.labels) {
                    assert!(
                        seen.insert(i),
                        "batch {batch} epoch {epoch}: example {i} twice"
                    );
                    assert_eq!(l, d.labels()[i] as usize, "example {i}'s label");
                }
                order.extend(ids);
            }
            assert_eq!(seen.len(), steps * batch);
            if steps * batch > 1 {
                let sorted: Vec<usize> = (0..order.len()).collect();
                assert_ne!(order, sorted, "batch {batch} epoch {epoch}: not shuffled");
            }
            ever.extend(seen);
        }
        // What one epoch drops, another takes.
        assert_eq!(ever.len(), 37, "batch {batch}: some example never seen");
    }
}

#[test]
fn loader_without_augmentation_only_normalises() {
    let d = numbered(23, 4, 6, 3);
    // A second channel, so that each channel's own statistics are used.
    let mut images = vec![];
    for i in 0..d.len() {
        images.extend_from_slice(d.image(i));
        images.extend(d.image(i).iter().map(|&v| v / 3 + 40));
    }
    let d = Dataset::new("two channels", [2, 4, 6], images, d.labels().to_vec(), 3).unwrap();
    let norm = Normalize::from_dataset(&d);
    assert!(norm.mean[0] != norm.mean[1] && norm.std[0] != norm.std[1]);
    let loader = Loader::new(d.clone(), norm.clone(), Augment::none(), 4, 9).unwrap();
    let per = 2 * 4 * 6;
    let expected: Vec<Vec<u32>> = (0..d.len())
        .map(|i| bits(&augment_ref(d.image(i), d.dims(), &norm, 0, 0, 0, false)))
        .collect();
    // Spot-check the reference: it is the formula in the brief, element by element.
    for (j, &v) in d.image(5).iter().enumerate() {
        let ch = j / 24;
        let want = ((f64::from(v as f32 / 255.0) - norm.mean[ch]) / norm.std[ch]) as f32;
        assert_eq!(expected[5][j], want.to_bits());
    }
    for epoch in 0..3 {
        for b in epoch_batches(&loader, epoch, 0) {
            for (im, &l) in b.input.as_slice().chunks_exact(per).zip(&b.labels) {
                let hits: Vec<usize> = (0..d.len()).filter(|&i| bits(im) == expected[i]).collect();
                assert_eq!(hits.len(), 1, "epoch {epoch} step {}: no example's", b.step);
                assert_eq!(l, d.labels()[hits[0]] as usize);
            }
        }
    }
}

/// Which `(example, dy, dx, flip)` an augmented output is, searching every candidate.
fn find_augmentation(
    out: &[f32],
    d: &Dataset,
    norm: &Normalize,
    pad: usize,
) -> Vec<(usize, usize, usize, bool)> {
    let out = bits(out);
    let mut hits = vec![];
    for i in 0..d.len() {
        for dy in 0..=2 * pad {
            for dx in 0..=2 * pad {
                for flip in [false, true] {
                    if bits(&augment_ref(d.image(i), d.dims(), norm, pad, dy, dx, flip)) == out {
                        hits.push((i, dy, dx, flip));
                    }
                }
            }
        }
    }
    hits
}

#[test]
fn loader_augmentation_is_pad_crop_flip() {
    // Eight 6x5 grey images, no two pixels of the whole set alike and none zero (the padding),
    // so an output shows which example, which crop and which flip it is.
    let (n, h, w) = (8, 6, 5);
    let images: Vec<u8> = (0..n * h * w).map(|i| (i + 1) as u8).collect();
    let labels = (0..n as u32).collect();
    let d = Dataset::new("distinct", [1, h, w], images, labels, n).unwrap();
    let norm = Normalize::from_dataset(&d);
    for (aug, seed) in [
        (Augment::he_et_al(), 11),
        (Augment { pad: 0, flip: true }, 12),
        (
            Augment {
                pad: 2,
                flip: false,
            },
            13,
        ),
    ] {
        let loader = Loader::new(d.clone(), norm.clone(), aug, 4, seed).unwrap();
        let mut flips = BTreeSet::new();
        let (mut dys, mut dxs, mut offsets) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut flipped = 0;
        let mut total = 0;
        for epoch in 0..50 {
            for b in epoch_batches(&loader, epoch, 0) {
                for (im, &l) in b.input.as_slice().chunks_exact(h * w).zip(&b.labels) {
                    let hits = find_augmentation(im, &d, &norm, aug.pad);
                    assert_eq!(
                        hits.len(),
                        1,
                        "{aug:?} epoch {epoch} step {}: candidates {hits:?}",
                        b.step
                    );
                    let (i, dy, dx, flip) = hits[0];
                    assert_eq!(l, i, "the label is the example's");
                    flips.insert(flip);
                    dys.insert(dy);
                    dxs.insert(dx);
                    offsets.insert((dy, dx));
                    flipped += usize::from(flip);
                    total += 1;
                }
            }
        }
        assert_eq!(total, 400);
        let range: BTreeSet<usize> = (0..=2 * aug.pad).collect();
        assert_eq!(dys, range, "{aug:?}: vertical offsets seen");
        assert_eq!(dxs, range, "{aug:?}: horizontal offsets seen");
        if aug.pad > 0 {
            assert!(
                offsets.len() >= 20,
                "{aug:?}: only {} offsets",
                offsets.len()
            );
        }
        if aug.flip {
            assert_eq!(flips.len(), 2, "{aug:?}: one flip only");
            assert!(
                (120..=280).contains(&flipped),
                "{aug:?}: {flipped} of 400 flipped"
            );
        } else {
            assert_eq!(flipped, 0, "{aug:?}: flipped");
        }
    }
    // Each example of a batch draws its own crop and flip: four identical images in one batch
    // do not all come out alike.
    let d = Dataset::new(
        "twins",
        [1, h, w],
        (0..4 * h * w).map(|i| (i % 30 + 1) as u8).collect(),
        vec![0; 4],
        1,
    )
    .unwrap();
    let loader = Loader::new(d, norm, Augment::he_et_al(), 4, 5).unwrap();
    let b = loader.batch(0, 0).unwrap();
    let ims: HashSet<Vec<u32>> = b.input.as_slice().chunks_exact(h * w).map(bits).collect();
    assert!(ims.len() > 1, "four identical crops");
}

#[test]
fn eval_batches_cover_everything_in_order() {
    let d = numbered(11, 3, 4, 3);
    let norm = Normalize {
        mean: vec![0.25],
        std: vec![0.5],
    };
    for batch in [4, 1, 5, 10, 11, 20] {
        let batches: Vec<Batch> = Loader::eval_batches(&d, &norm, batch)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(batches.len(), 11usize.div_ceil(batch));
        let mut next = 0;
        for (k, b) in batches.iter().enumerate() {
            assert_eq!(b.step, k);
            let size = batch.min(11 - next);
            assert_eq!(b.input.shape().dims(), &[size, 1, 3, 4]);
            for (j, im) in b.input.as_slice().chunks_exact(12).enumerate() {
                let want = augment_ref(d.image(next + j), d.dims(), &norm, 0, 0, 0, false);
                assert_eq!(bits(im), bits(&want), "batch {batch}: example {}", next + j);
                assert_eq!(b.labels[j], d.labels()[next + j] as usize);
            }
            next += size;
        }
        assert_eq!(next, 11);
    }
    let sizes: Vec<usize> = Loader::eval_batches(&d, &norm, 4)
        .map(|b| b.unwrap().labels.len())
        .collect();
    assert_eq!(sizes, vec![4, 4, 3]);
}

#[test]
fn loader_refuses_bad_arguments() {
    let d = numbered(6, 2, 2, 2);
    let norm = Normalize::from_dataset(&d);
    for batch in [0, 7, 100] {
        let e = refuse(Loader::new(
            d.clone(),
            norm.clone(),
            Augment::none(),
            batch,
            0,
        ));
        assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
        assert!(!e.to_string().contains('\n'));
    }
    let l = Loader::new(d.clone(), norm.clone(), Augment::none(), 6, 0).unwrap();
    assert_eq!(l.steps_per_epoch(), 1);
    assert_eq!(epoch_batches(&l, 0, 0).len(), 1);
    // Normalisation for another number of channels.
    let three = Normalize {
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
    };
    let e = refuse(Loader::new(d.clone(), three, Augment::none(), 2, 0));
    assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
    let e = refuse(Loader::new(
        d.clone(),
        Normalize {
            mean: vec![0.5],
            std: vec![],
        },
        Augment::none(),
        2,
        0,
    ));
    assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
    // An empty dataset has no batch at all.
    let empty = d.subset(0);
    assert!(empty.is_empty());
    let e = refuse(Loader::new(empty, norm, Augment::none(), 1, 0));
    assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
}

#[test]
fn dropping_an_epoch_early_returns_promptly() {
    // Many steps, so the producer is blocked on a full channel when the consumer leaves.
    let d = numbered(200, 8, 8, 10);
    let norm = Normalize::from_dataset(&d);
    let loader = Loader::new(d, norm, Augment::he_et_al(), 1, 3).unwrap();
    for taken in [0, 1, 3] {
        let (tx, rx) = std::sync::mpsc::channel();
        let l = loader.clone();
        std::thread::spawn(move || {
            let mut it = l.epoch(0, 0);
            for _ in 0..taken {
                it.next().unwrap().unwrap();
            }
            // Let the producer fill the channel and block.
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            drop(it);
            let _ = tx.send(t.elapsed());
        });
        // A hang fails here instead of hanging the test.
        let elapsed = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("dropping the epoch after {taken} batches hangs"));
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
    // And an epoch read to its end finishes.
    assert_eq!(loader.epoch(1, 195).count(), 5);
}

// ---------------------------------------------------------------------------------------------
// Datasets.

#[test]
fn dataset_subset_and_fingerprint() {
    let d = numbered(5, 2, 3, 4);
    let first = d.clone().subset(3);
    assert_eq!(first.len(), 3);
    assert_eq!(first.dims(), d.dims());
    assert_eq!(first.classes(), 4);
    assert_eq!(first.labels(), &d.labels()[..3]);
    for i in 0..3 {
        assert_eq!(first.image(i), d.image(i));
    }
    assert!(first.name().contains("first 3"), "{}", first.name());
    let all = d.clone().subset(5);
    assert_eq!(all, d);
    let all = d.clone().subset(100);
    assert_eq!(all, d);

    // Equal data, equal digest (the name aside); any change, another.
    let fp = d.fingerprint();
    assert!(fp.starts_with("fnv1a64:") && fp.len() == 8 + 16, "{fp}");
    assert_eq!(d.clone().fingerprint(), fp);
    let images: Vec<u8> = (0..5).flat_map(|i| d.image(i).to_vec()).collect();
    let renamed = Dataset::new(
        "other name",
        d.dims(),
        images.clone(),
        d.labels().to_vec(),
        4,
    )
    .unwrap();
    assert_eq!(renamed.fingerprint(), fp);
    assert_ne!(first.fingerprint(), fp);
    let mut fps = HashSet::from([fp.clone()]);
    for j in [0, 7, images.len() - 1] {
        let mut px = images.clone();
        px[j] ^= 1;
        let changed = Dataset::new("x", d.dims(), px, d.labels().to_vec(), 4).unwrap();
        assert!(
            fps.insert(changed.fingerprint()),
            "pixel {j} changed, digest not"
        );
    }
    for j in [0, 4] {
        let mut labels = d.labels().to_vec();
        labels[j] = (labels[j] + 1) % 4;
        let changed = Dataset::new("x", d.dims(), images.clone(), labels, 4).unwrap();
        assert!(
            fps.insert(changed.fingerprint()),
            "label {j} changed, digest not"
        );
    }
    // The same bytes as other shapes.
    let reshaped = Dataset::new("x", [1, 3, 2], images.clone(), d.labels().to_vec(), 4).unwrap();
    assert!(fps.insert(reshaped.fingerprint()));

    // What a dataset refuses.
    let e = refuse(Dataset::new("x", [1, 2, 3], vec![0; 11], vec![0, 1], 2));
    assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
    let e = refuse(Dataset::new("x", [1, 0, 3], vec![], vec![0, 1], 2));
    assert!(matches!(e, DataError::Mismatch(_)), "{e:?}");
    let e = refuse(Dataset::new(
        "x",
        [1, 1, 1],
        vec![0, 0, 0],
        vec![0, 2, 1],
        2,
    ));
    assert!(
        matches!(
            e,
            DataError::Label {
                index: 1,
                label: 2,
                classes: 2,
                ..
            }
        ),
        "{e:?}"
    );
}

/// Sizes that overflow when multiplied are refused, not wrapped: a file of no images with huge
/// dimensions, a dataset built with them, a CIFAR record without a label byte, a normalisation
/// that divides by zero.
#[test]
fn overflowing_sizes_and_degenerate_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        idx_images(0, 1 << 31, 1 << 31, &[]),
    )
    .unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx_labels(&[0, 1, 2, 3])).unwrap();
    std::fs::write(
        d.join("t10k-images-idx3-ubyte"),
        idx_images(1, 2, 2, &[0; 4]),
    )
    .unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx_labels(&[0])).unwrap();
    let e = fashion_mnist(d).unwrap_err();
    assert!(matches!(e, DataError::Format { .. }), "{e}");

    let e = Dataset::new("x", [1, 1 << 31, 1 << 31], vec![], vec![0; 4], 1).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");

    let f = d.join("one.bin");
    std::fs::write(&f, vec![0u8; 3072]).unwrap();
    let e = read_cifar_file(&f, 0, 10).unwrap_err();
    assert!(e.to_string().contains("label bytes"), "{e}");

    let data = Dataset::new("x", [1, 2, 2], vec![7; 8], vec![0, 1], 2).unwrap();
    for (mean, std) in [
        (0.5, 0.0),
        (0.5, -1.0),
        (f64::NAN, 1.0),
        (0.5, f64::INFINITY),
    ] {
        let norm = Normalize {
            mean: vec![mean],
            std: vec![std],
        };
        let e = Loader::new(data.clone(), norm, Augment::none(), 1, 0).unwrap_err();
        assert!(e.to_string().contains("normalisation"), "{e}");
    }
}

/// An image folder: classes sorted by folder name, non-images ignored, `train`/`val` split,
/// images kept as squares and cut to the input size (centre for evaluation, random resized
/// crops for training), a class unknown to training refused.
#[test]
fn image_folders_read_crop_and_refuse_strays() {
    use resnet_train::data::image_folder;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (split, n) in [("train", 3), ("val", 2)] {
        for (class, v) in [("zebra", 200u8), ("ant", 50)] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(20 + i, 16, |x, _| {
                    image::Rgb([v, v / 2, (x * 10) as u8])
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/ant/readme.txt"), "x").unwrap();
    let split = image_folder(root, 16).unwrap();
    let (train, test) = (
        split.train.with_input_size(8),
        split.test.with_input_size(8),
    );
    assert_eq!(train.class_names().unwrap(), ["ant", "zebra"]);
    assert_eq!(train.len(), 6);
    assert_eq!(test.len(), 4);
    assert_eq!(train.labels(), &[0, 0, 0, 1, 1, 1]);
    assert_eq!(train.dims(), [3, 16, 16]);
    assert_eq!(train.input_dims(), [3, 8, 8]);
    // The red channel is the class's constant everywhere.
    assert!(train.image(0)[..256].iter().all(|&p| p == 50));
    let norm = Normalize {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    // Evaluation: the centre 8x8, exactly the stored bytes / 255.
    let b = Loader::eval_batches(&test, &norm, 10)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(b.input.shape().dims(), &[4, 3, 8, 8]);
    let img = test.image(0);
    for y in 0..8 {
        for x in 0..8 {
            let want = f32::from(img[2 * 256 + (y + 4) * 16 + x + 4]) / 255.0;
            let got = b.input.as_slice()[2 * 64 + y * 8 + x];
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
    // Training: random resized crops of the right size, values within the image's range,
    // seeded (the same twice) and not all the same crop.
    let loader = Loader::new(train.clone(), norm, Augment::he_et_al(), 2, 3).unwrap();
    let a = loader.batch(0, 0).unwrap();
    assert_eq!(a.input.shape().dims(), &[2, 3, 8, 8]);
    assert_eq!(
        a.input.as_slice(),
        loader.batch(0, 0).unwrap().input.as_slice()
    );
    assert!(a.input.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
    let crops: HashSet<Vec<u32>> = (0..3)
        .flat_map(|k| {
            let b = loader.batch(1, k).unwrap();
            b.input
                .as_slice()
                .chunks_exact(192)
                .map(|c| c[128..].iter().map(|v| v.to_bits()).collect())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(crops.len() > 1);

    // A class in val that training does not have.
    std::fs::create_dir_all(root.join("val/moth")).unwrap();
    let e = image_folder(root, 16).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"moth\" is not among the training classes"),
        "{e}"
    );
    std::fs::remove_dir(root.join("val/moth")).unwrap();
    // No class folders at all.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = image_folder(&empty, 16).unwrap_err();
    assert!(e.to_string().contains("no class subfolders"), "{e}");
    // A broken image names itself.
    std::fs::write(root.join("train/ant/9.png"), b"\x89PNG broken").unwrap();
    let e = image_folder(root, 16).unwrap_err();
    assert!(e.to_string().contains("9.png"), "{e}");
}
