//! Writing f32 tensors (and i64 counters) and string metadata as safetensors.

use crate::WeightError;
use resnet_tensor::{Layout, Tensor};
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// Write f32 tensors (in their memory order, NCHW expected) and string metadata as a
/// safetensors file.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), WeightError> {
    let bytes = safetensors_bytes(tensors, metadata)?;
    std::fs::write(path.as_ref(), bytes).map_err(|source| WeightError::WriteIo {
        path: path.as_ref().to_path_buf(),
        source,
    })
}

/// Write f32 tensors, i64 scalars (`num_batches_tracked` counters, shape `[]` as PyTorch
/// stores them) and string metadata as a safetensors file, atomically: the bytes go to a
/// temporary file in the same directory, which is flushed to disk and then renamed over
/// `path`, so a crash leaves either the old file or the complete new one, never a torn one.
///
/// ```
/// use resnet_weights::{Tensor, WeightFile, write_safetensors_with_counters};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("state.safetensors");
/// let w = Tensor::from_vec(&[2], vec![1.0, 2.0])?;
/// write_safetensors_with_counters(&path, &[("bn1.weight", &w)], &[("bn1.num_batches_tracked", 7)], None)?;
/// let f = WeightFile::open(&path)?;
/// assert_eq!(f.load_integers("bn1.num_batches_tracked")?, (vec![7], vec![]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_safetensors_with_counters(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    counters: &[(&str, i64)],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), WeightError> {
    let bytes = serialize(tensors, counters, metadata)?;
    write_atomically(path.as_ref(), &bytes)
}

/// Write `bytes` to `path` through a temporary file in the same directory, flushed and then
/// renamed over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightError> {
    let io = |source| WeightError::WriteIo {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("not a file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Serialise f32 tensors and metadata to safetensors bytes.
pub(crate) fn safetensors_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, WeightError> {
    serialize(tensors, &[], metadata)
}

/// Serialise f32 tensors, i64 scalars and metadata to safetensors bytes.
fn serialize(
    tensors: &[(&str, &Tensor)],
    counters: &[(&str, i64)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, WeightError> {
    let owned: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            let t = if t.layout() == Layout::Nchw {
                std::borrow::Cow::Borrowed(*t)
            } else {
                std::borrow::Cow::Owned(t.to_layout(Layout::Nchw)?)
            };
            Ok((n.to_string(), t.to_le_bytes(), t.shape().dims().to_vec()))
        })
        .collect::<Result<_, WeightError>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for n in tensors
        .iter()
        .map(|t| t.0)
        .chain(counters.iter().map(|c| c.0))
    {
        if !seen.insert(n) {
            return Err(WeightError::Write {
                reason: format!("tensor {n:?} given twice"),
            });
        }
    }
    let ints: Vec<(String, [u8; 8])> = counters
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_le_bytes()))
        .collect();
    let views = owned
        .iter()
        .map(|(n, b, s)| (n, Dtype::F32, s.clone(), b.as_slice()))
        .chain(
            ints.iter()
                .map(|(n, b)| (n, Dtype::I64, vec![], b.as_slice())),
        )
        .map(|(n, dtype, s, b)| {
            safetensors::tensor::TensorView::new(dtype, s, b)
                .map(|v| (n.clone(), v))
                .map_err(|e| WeightError::Write {
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, metadata).map_err(|e| WeightError::Write {
        reason: e.to_string(),
    })
}
