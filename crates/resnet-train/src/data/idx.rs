//! IDX files (LeCun's format for MNIST, also Fashion-MNIST's), gzipped or not.
//!
//! A file is a big-endian header: two zero bytes, a type byte (`0x08`: unsigned bytes, the only
//! type these datasets use), the number of dimensions, then each dimension as a `u32`; then the
//! values. Images are `[n, rows, cols]` (magic `0x00000803`), labels `[n]` (`0x00000801`).

use super::{DataError, Dataset, MAX_PIXELS, Split, read_file};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes of an IDX file, gunzipped if it starts with gzip's magic: at most `limit` bytes are
/// produced (a gzip bomb stops there) and memory grows only as data actually arrives.
fn idx_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_file(path, MAX_PIXELS + 64)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    GzDecoder::new(raw.as_slice())
        .take(MAX_PIXELS + 64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(path, format!("not a valid gzip stream: {e}")))?;
    if out.len() as u64 > MAX_PIXELS + 64 {
        return Err(DataError::format(
            path,
            format!("unpacks to more than {} bytes", MAX_PIXELS + 64),
        ));
    }
    Ok(out)
}

/// The dimensions of an IDX file of unsigned bytes with `rank` dimensions, and where its data
/// starts; the data must be exactly as long as the dimensions say.
fn idx_header(path: &Path, bytes: &[u8], rank: u8) -> Result<(Vec<usize>, usize), DataError> {
    let what = if rank == 1 { "labels" } else { "images" };
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes is too short for an IDX file (wrong file, or truncated)",
                bytes.len()
            ),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let want = 0x0800 | u32::from(rank);
    if magic != want {
        return Err(DataError::format(
            path,
            format!(
                "magic number {magic:#010x}, expected {want:#010x} (IDX {what}: unsigned bytes, {rank} dimension{})",
                if rank == 1 { "" } else { "s" }
            ),
        ));
    }
    let start = 4 + 4 * usize::from(rank);
    if bytes.len() < start {
        return Err(DataError::Truncated {
            path: path.to_owned(),
            expected: start as u64,
            found: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = bytes[4..start]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // Each image's size is bounded on its own too: a file of no images must not carry
    // dimensions whose product overflows later.
    let per_item = dims[1..]
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|&t| t <= MAX_PIXELS);
    let expected = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|_| per_item.is_some())
        .filter(|&t| t <= MAX_PIXELS)
        .ok_or_else(|| {
            DataError::format(
                path,
                format!("dimensions {dims:?} are more than {MAX_PIXELS} values"),
            )
        })?;
    let found = (bytes.len() - start) as u64;
    if found < expected {
        return Err(DataError::Truncated {
            path: path.to_owned(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes after the {expected} its dimensions {dims:?} hold",
                found - expected
            ),
        ));
    }
    Ok((dims, start))
}

/// Read an IDX image file (`[n, rows, cols]` bytes), gzipped or not: the images and their
/// `[rows, cols]`.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<(Vec<u8>, [usize; 2]), DataError> {
    let path = path.as_ref();
    let mut bytes = idx_bytes(path)?;
    let (dims, start) = idx_header(path, &bytes, 3)?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(DataError::format(
            path,
            format!("images of {}x{} pixels", dims[1], dims[2]),
        ));
    }
    bytes.drain(..start);
    Ok((bytes, [dims[1], dims[2]]))
}

/// Read an IDX label file (`[n]` bytes), gzipped or not.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u32>, DataError> {
    let path = path.as_ref();
    let bytes = idx_bytes(path)?;
    let (_, start) = idx_header(path, &bytes, 1)?;
    Ok(bytes[start..].iter().map(|&b| u32::from(b)).collect())
}

/// `DIR/NAME`, or `DIR/NAME.gz` when only that exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.exists() {
        // A directory of that name is reported as one by the reader.
        Ok(plain)
    } else if gz.exists() {
        Ok(gz)
    } else if !dir.is_dir() {
        Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ))
    } else {
        Err(DataError::io(
            &plain,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not found (nor {name}.gz)"),
            ),
        ))
    }
}

/// One split of an IDX dataset: images and labels that must agree in number.
fn idx_split(dir: &Path, images: &str, labels: &str, classes: usize) -> Result<Dataset, DataError> {
    let (ipath, lpath) = (find(dir, images)?, find(dir, labels)?);
    let (pixels, [h, w]) = read_idx_images(&ipath)?;
    let labs = read_idx_labels(&lpath)?;
    if labs.len().checked_mul(h * w) != Some(pixels.len()) {
        return Err(DataError::Mismatch(format!(
            "{} holds {} images, {} {} labels",
            ipath.display(),
            pixels.len() / (h * w),
            lpath.display(),
            labs.len()
        )));
    }
    if let Some((i, &l)) = labs
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= classes)
    {
        return Err(DataError::Label {
            path: lpath,
            index: i,
            label: l as usize,
            classes,
        });
    }
    Dataset::new(
        ipath.display().to_string(),
        [1, h, w],
        pixels,
        labs,
        classes,
    )
}

/// MNIST-style directory: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each possibly `.gz`; 10 classes.
fn idx_dataset(dir: &Path) -> Result<Split, DataError> {
    Ok(Split {
        train: idx_split(
            dir,
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            10,
        )?,
        test: idx_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10)?,
    })
}

/// MNIST from a directory of its four IDX files (gzipped or not).
pub fn mnist(dir: impl AsRef<Path>) -> Result<Split, DataError> {
    idx_dataset(dir.as_ref())
}

/// Fashion-MNIST from a directory of its four IDX files (gzipped or not), e.g.
/// `/usr/share/datasets/fashion-mnist` as Debian's `dataset-fashion-mnist` installs it.
pub fn fashion_mnist(dir: impl AsRef<Path>) -> Result<Split, DataError> {
    idx_dataset(dir.as_ref())
}
