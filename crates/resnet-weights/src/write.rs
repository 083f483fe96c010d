//! Writing f32 tensors and string metadata as safetensors.

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

/// Serialise f32 tensors and metadata to safetensors bytes.
pub(crate) fn safetensors_bytes(
    tensors: &[(&str, &Tensor)],
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
    let views = owned
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
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
