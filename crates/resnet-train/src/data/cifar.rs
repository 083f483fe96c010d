//! The CIFAR-10 and CIFAR-100 binary format: fixed-size records of the label byte(s) then
//! 3072 bytes of 32x32 red, green and blue planes.

use super::{DataError, Dataset, MAX_PIXELS, Split, read_file};
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;

/// Read one CIFAR binary file: records of `label_bytes` label bytes (1 for CIFAR-10; 2 for
/// CIFAR-100, coarse then fine, of which the fine label is kept) and 3072 pixel bytes.
pub fn read_cifar_file(
    path: impl AsRef<Path>,
    label_bytes: usize,
    classes: usize,
) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let path = path.as_ref();
    if label_bytes == 0 {
        return Err(DataError::format(
            path,
            "a CIFAR record has 1 or 2 label bytes, not 0",
        ));
    }
    let record = label_bytes + PIXELS;
    let bytes = read_file(path, MAX_PIXELS)?;
    if bytes.is_empty() {
        return Err(DataError::format(path, "is empty"));
    }
    if bytes.len() % record != 0 {
        // Not a whole number of records: most likely cut short.
        return Err(DataError::Truncated {
            path: path.to_owned(),
            expected: bytes.len().div_ceil(record) as u64 * record as u64,
            found: bytes.len() as u64,
        });
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = usize::from(r[label_bytes - 1]);
        if label >= classes {
            return Err(DataError::Label {
                path: path.to_owned(),
                index: i,
                label,
                classes,
            });
        }
        labels.push(label as u32);
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok((pixels, labels))
}

/// The directory holding the files: `dir` itself or the archive's folder inside it.
fn base(dir: &Path, inner: &str, first: &str) -> Result<PathBuf, DataError> {
    if dir.join(first).is_file() {
        return Ok(dir.to_owned());
    }
    let nested = dir.join(inner);
    if nested.join(first).is_file() {
        return Ok(nested);
    }
    Err(DataError::Io {
        path: dir.join(first),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not found (nor in {inner}/)"),
        ),
    })
}

fn split(
    dir: &Path,
    files: &[&str],
    label_bytes: usize,
    classes: usize,
) -> Result<Dataset, DataError> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for f in files {
        let (p, l) = read_cifar_file(dir.join(f), label_bytes, classes)?;
        pixels.extend_from_slice(&p);
        labels.extend_from_slice(&l);
    }
    Dataset::new(
        dir.join(files[0]).display().to_string(),
        [3, 32, 32],
        pixels,
        labels,
        classes,
    )
}

/// CIFAR-10 from `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin` in `dir` (or in
/// `dir/cifar-10-batches-bin`, as the archive unpacks).
pub fn cifar10(dir: impl AsRef<Path>) -> Result<Split, DataError> {
    let dir = base(dir.as_ref(), "cifar-10-batches-bin", "data_batch_1.bin")?;
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    let train: Vec<&str> = train.iter().map(String::as_str).collect();
    Ok(Split {
        train: split(&dir, &train, 1, 10)?,
        test: split(&dir, &["test_batch.bin"], 1, 10)?,
    })
}

/// CIFAR-100 (fine labels, 100 classes) from `train.bin` and `test.bin` in `dir` (or in
/// `dir/cifar-100-binary`).
pub fn cifar100(dir: impl AsRef<Path>) -> Result<Split, DataError> {
    let dir = base(dir.as_ref(), "cifar-100-binary", "train.bin")?;
    Ok(Split {
        train: split(&dir, &["train.bin"], 2, 100)?,
        test: split(&dir, &["test.bin"], 2, 100)?,
    })
}
