//! [`WeightError`]: every way reading or writing weights can fail, naming the key and the values.

use std::path::PathBuf;

/// Everything that can go wrong reading weights.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is shorter than the 8-byte header length.
    #[error(
        "not a safetensors file or PyTorch checkpoint: {len} bytes is shorter than the 8-byte \
         header length"
    )]
    TooShort {
        /// File length.
        len: usize,
    },
    /// The header length exceeds the limit this loader accepts.
    #[error("safetensors header of {len} bytes exceeds the limit of {limit} bytes")]
    HeaderTooLarge {
        /// Header length the file claims.
        len: u64,
        /// [`crate::MAX_HEADER_BYTES`].
        limit: u64,
    },
    /// The header length points past the end of the file.
    #[error("safetensors header of {len} bytes runs past the end of the {file_len}-byte file")]
    HeaderPastEnd {
        /// Header length the file claims.
        len: u64,
        /// File length.
        file_len: usize,
    },
    /// The header or the data layout is invalid.
    #[error("malformed safetensors file: {reason}")]
    Malformed {
        /// What is wrong, in the `safetensors` crate's words.
        reason: String,
    },
    /// Two keys map to the same internal name.
    #[error("keys {first:?} and {second:?} both map to {canonical:?}")]
    DuplicateKey {
        /// The internal name.
        canonical: String,
        /// One file key.
        first: String,
        /// The other file key.
        second: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("missing tensor {name:?}{}", expected.as_ref().map(|s| format!(" (expected shape {s:?})")).unwrap_or_default())]
    MissingKey {
        /// Internal name asked for.
        name: String,
        /// Shape the model expected, if it said.
        expected: Option<Vec<usize>>,
    },
    /// A tensor has another shape than the model expects.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Name in the file.
        name: String,
        /// Shape the model expected.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's dtype cannot be read as floating point.
    #[error("tensor {name:?} has dtype {found}, expected one of F32, F16, BF16, F64")]
    UnsupportedDtype {
        /// Name in the file.
        name: String,
        /// Dtype in the file.
        found: String,
    },
    /// A weight is NaN or infinite (after conversion to f32).
    #[error("tensor {name:?} holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        /// Name in the file.
        name: String,
        /// Flat index of the first bad element.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Keys in the file that the model did not use (strict mode).
    #[error("{} unused tensor(s) in the weights: {}", keys.len(), keys.join(", "))]
    UnusedKeys {
        /// File names of the unused tensors.
        keys: Vec<String>,
    },
    /// The file is neither safetensors nor a PyTorch checkpoint.
    #[error("not a safetensors file or PyTorch checkpoint: {start}")]
    NotWeights {
        /// How the file starts (its first bytes, printable ones as text), or that it is empty.
        start: String,
    },
    /// A PyTorch checkpoint's pickle names a global this reader does not allow: the file asks
    /// to import (and usually call) code, which is never done.
    #[error(
        "refusing pickle global {global}: a PyTorch checkpoint may only build tensors and \
         containers (if it holds a whole model, save model.state_dict() instead)"
    )]
    RefusedGlobal {
        /// `module.name`, as the pickle spells it.
        global: String,
    },
    /// A PyTorch checkpoint's pickle is malformed, truncated, or uses what a state_dict does not.
    #[error("malformed PyTorch checkpoint: {reason}")]
    Pickle {
        /// What is wrong.
        reason: String,
    },
    /// A PyTorch checkpoint's archive (zip, or the legacy layout) is malformed or unsupported.
    #[error("malformed PyTorch checkpoint archive: {reason}")]
    Archive {
        /// What is wrong.
        reason: String,
    },
    /// A PyTorch checkpoint stores a tensor type this loader does not read.
    #[error("unsupported tensor storage type {name} in the PyTorch checkpoint")]
    UnsupportedStorage {
        /// The storage type, e.g. `torch.ComplexFloatStorage`.
        name: String,
    },
    /// A PyTorch checkpoint's tensor does not fit its storage.
    #[error("tensor {name:?} in the PyTorch checkpoint: {reason}")]
    BadTensor {
        /// Key of the tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] resnet_tensor::TensorError),
    /// A file could not be written.
    #[error("cannot write safetensors: {reason}")]
    Write {
        /// What failed.
        reason: String,
    },
}
