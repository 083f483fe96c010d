//! [`WeightFile`]: a safetensors file (memory-mapped, read or in memory), its header validated,
//! its tensors converted to f32 on request; and [`write_safetensors`].

use crate::names::{NameScheme, to_canonical};
use crate::{WeightError, WeightSource};
use resnet_mmap::MappedFile;
use resnet_tensor::{Layout, Shape, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The largest safetensors header this loader parses: 16 MiB. A ResNet header is a few KiB;
/// the largest real checkpoints have headers of a few MiB.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// A tensor's element type in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightDtype(Dtype);

impl WeightDtype {
    /// Whether [`WeightFile`] can convert it to f32 (F32, F16, BF16, F64).
    pub fn is_float(self) -> bool {
        matches!(self.0, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
    }
    /// Bytes per element (elements of fewer than 8 bits report 0).
    pub fn size(self) -> usize {
        self.0.bitsize() / 8
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What the header says of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The key in the file.
    pub file_name: String,
    /// Element type.
    pub dtype: WeightDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// The bytes from the first element to the last.
    range: std::ops::Range<usize>,
    /// Element strides from `range.start`, for a PyTorch tensor that is not contiguous.
    strides: Option<Vec<usize>>,
}

impl TensorInfo {
    /// The tensor's bytes in row-major order: borrowed from `file` where contiguous, gathered
    /// otherwise (never more than the tensor's own size, which the reader bounded by its
    /// storage's).
    fn bytes<'a>(&self, file: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let raw = &file[self.range.clone()];
        let Some(strides) = &self.strides else {
            return std::borrow::Cow::Borrowed(raw);
        };
        let elem = self.dtype.size();
        let numel: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(numel * elem);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..numel {
            let at: usize = index.iter().zip(strides).map(|(i, s)| i * s).sum();
            out.extend_from_slice(&raw[at * elem..(at + 1) * elem]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// The format a [`WeightFile`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightFormat {
    /// A safetensors file.
    Safetensors,
    /// A PyTorch checkpoint in the zip format of `torch.save` (PyTorch 1.6 and later).
    TorchZip,
    /// A PyTorch checkpoint in the legacy format (`_use_new_zipfile_serialization=False`).
    TorchLegacy,
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Safetensors => "safetensors",
            Self::TorchZip => "PyTorch checkpoint (zip)",
            Self::TorchLegacy => "PyTorch checkpoint (legacy)",
        })
    }
}

/// How a file that is no weights file starts, for [`WeightError::NotWeights`]: what it
/// probably is where its first bytes say so, else those bytes.
fn describe_start(buf: &[u8]) -> String {
    if buf.is_empty() {
        return "the file is empty".into();
    }
    let head = &buf[..buf.len().min(16)];
    let what = if buf.starts_with(b"\x89PNG") || buf.starts_with(b"\xff\xd8\xff") {
        " (an image)"
    } else if buf.starts_with(b"\x1f\x8b") {
        " (a gzip file: decompress it first)"
    } else if head.iter().take(15).any(|&b| b == b'<') {
        " (HTML or XML: an error page saved instead of the file?)"
    } else {
        ""
    };
    if head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        format!("starts with {:?}{what}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("starts with bytes {}{what}", hex.join(" "))
    }
}

enum Bytes {
    Mapped(MappedFile),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A validated weights file, safetensors or a PyTorch checkpoint (`.pth`/`.pt`/`.bin` written
/// by `torch.save`, read without executing its pickle: see [`WeightError::RefusedGlobal`]):
/// header parsed, names mapped, data left in place until asked for.
pub struct WeightFile {
    bytes: Bytes,
    format: WeightFormat,
    scheme: NameScheme,
    /// Internal name → info, sorted.
    tensors: BTreeMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("scheme", &self.scheme)
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl WeightFile {
    /// Open a file memory-mapped and validate its header.
    ///
    /// As with every memory map, the file must not be truncated or modified by any process
    /// while the returned value exists (see [`resnet_mmap::MappedFile`]); use
    /// [`WeightFile::read`] where that cannot be ruled out.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        // An empty file is not mapped (it gives an empty slice), so it reports the format error.
        let map = MappedFile::open(path).map_err(|source| WeightError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_backing(Bytes::Mapped(map))
    }

    /// Read a file fully into memory (no memory map) and validate its header.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WeightError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    /// Validate an in-memory safetensors buffer.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, WeightError> {
        Self::from_backing(Bytes::Owned(bytes))
    }

    fn from_backing(bytes: Bytes) -> Result<Self, WeightError> {
        let buf: &[u8] = &bytes;
        if let Some(kind) = crate::torch::sniff(buf) {
            return Self::from_torch(bytes, kind);
        }
        if buf.len() > 8 && buf[8] != b'{' {
            return Err(WeightError::NotWeights {
                start: describe_start(buf),
            });
        }
        let Some(len_bytes) = buf.get(..8) else {
            return Err(WeightError::TooShort { len: buf.len() });
        };
        let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES {
            return Err(WeightError::HeaderTooLarge {
                len: header_len,
                limit: MAX_HEADER_BYTES,
            });
        }
        if header_len > (buf.len() - 8) as u64 {
            return Err(WeightError::HeaderPastEnd {
                len: header_len,
                file_len: buf.len(),
            });
        }
        let (n, meta) = SafeTensors::read_metadata(buf).map_err(|e| WeightError::Malformed {
            reason: e.to_string(),
        })?;
        let data_start = 8 + n;
        let keys: Vec<String> = meta.offset_keys();
        let scheme = NameScheme::detect(keys.iter().map(String::as_str));
        let mut tensors = BTreeMap::new();
        for key in keys {
            let info = meta.info(&key).expect("key from the header");
            let (s, e) = info.data_offsets;
            let canonical = to_canonical(scheme, &key);
            let entry = TensorInfo {
                file_name: key.clone(),
                dtype: WeightDtype(info.dtype),
                shape: info.shape.clone(),
                range: data_start + s..data_start + e,
                strides: None,
            };
            if let Some(prev) = tensors.insert(canonical.clone(), entry) {
                return Err(WeightError::DuplicateKey {
                    canonical,
                    first: prev.file_name,
                    second: key,
                });
            }
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self {
            bytes,
            format: WeightFormat::Safetensors,
            scheme,
            tensors,
            metadata,
        })
    }

    fn from_torch(bytes: Bytes, kind: crate::torch::Kind) -> Result<Self, WeightError> {
        let entries = crate::torch::read(&bytes, kind)?;
        let scheme = NameScheme::detect(entries.iter().map(|e| e.key.as_str()));
        let mut tensors = BTreeMap::new();
        for e in entries {
            let canonical = to_canonical(scheme, &e.key);
            let info = TensorInfo {
                file_name: e.key.clone(),
                dtype: WeightDtype(e.dtype),
                shape: e.shape,
                range: e.range,
                strides: e.strides,
            };
            if let Some(prev) = tensors.insert(canonical.clone(), info) {
                return Err(WeightError::DuplicateKey {
                    canonical,
                    first: prev.file_name,
                    second: e.key,
                });
            }
        }
        let format = match kind {
            crate::torch::Kind::Zip => WeightFormat::TorchZip,
            crate::torch::Kind::Legacy => WeightFormat::TorchLegacy,
        };
        Ok(Self {
            bytes,
            format,
            scheme,
            tensors,
            metadata: HashMap::new(),
        })
    }

    /// The format the file is in.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Write every tensor as a safetensors file at `path`, under its key in this file, with its
    /// element type (F32, F16, BF16, F64 and the integer types as they are), contiguous, and
    /// this file's metadata: what `resnet convert` does to a PyTorch checkpoint. The file is
    /// written atomically (a temporary file renamed over `path`).
    ///
    /// ```no_run
    /// use resnet_weights::WeightFile;
    /// WeightFile::open("resnet18-f37072fd.pth")?.to_safetensors("resnet18.safetensors")?;
    /// # Ok::<(), resnet_weights::WeightError>(())
    /// ```
    pub fn to_safetensors(&self, path: impl AsRef<Path>) -> Result<(), WeightError> {
        let data: Vec<(&TensorInfo, std::borrow::Cow<'_, [u8]>)> = self
            .tensors
            .values()
            .map(|info| (info, info.bytes(&self.bytes)))
            .collect();
        let views = data
            .iter()
            .map(|(info, b)| {
                safetensors::tensor::TensorView::new(info.dtype.0, info.shape.clone(), b)
                    .map(|v| (info.file_name.clone(), v))
                    .map_err(|e| WeightError::Write {
                        reason: format!("tensor {:?}: {e}", info.file_name),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        let bytes = safetensors::serialize(views, metadata).map_err(|e| WeightError::Write {
            reason: e.to_string(),
        })?;
        crate::write::write_atomically(path.as_ref(), &bytes)
    }

    /// The naming scheme the file's keys are written in.
    pub fn scheme(&self) -> NameScheme {
        self.scheme
    }

    /// The `__metadata__` string map of the header (empty when absent).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Internal names and header info of every tensor, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorInfo)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Header info of one tensor by internal name.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Header info of one tensor, or the error a missing key gives.
    fn info_or_missing(&self, name: &str) -> Result<&TensorInfo, WeightError> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightError::MissingKey {
                name: name.to_string(),
                expected: None,
            })
    }

    /// A tensor by internal name, converted to f32, whatever its shape.
    pub fn load(&self, name: &str) -> Result<Tensor, WeightError> {
        let info = self.info_or_missing(name)?;
        convert(info, &info.bytes(&self.bytes))
    }

    /// An integer tensor (class labels, counters) by internal name, as `i64` values with its
    /// shape: I64, I32, I16, I8, U8 and BOOL are accepted; anything else is
    /// [`WeightError::UnsupportedDtype`].
    pub fn load_integers(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>), WeightError> {
        let info = self.info_or_missing(name)?;
        let raw: &[u8] = &info.bytes(&self.bytes);
        let values: Vec<i64> = match info.dtype.0 {
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => raw
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
                .collect(),
            Dtype::I16 => raw
                .chunks_exact(2)
                .map(|b| i64::from(i16::from_le_bytes(b.try_into().expect("2 bytes"))))
                .collect(),
            Dtype::I8 => raw.iter().map(|&b| i64::from(b as i8)).collect(),
            Dtype::U8 | Dtype::BOOL => raw.iter().map(|&b| i64::from(b)).collect(),
            other => {
                return Err(WeightError::UnsupportedDtype {
                    name: info.file_name.clone(),
                    found: format!("{other:?}"),
                });
            }
        };
        Ok((values, info.shape.clone()))
    }
}

fn convert(info: &TensorInfo, raw: &[u8]) -> Result<Tensor, WeightError> {
    let shape = Shape::new(&info.shape)?;
    let n = shape.numel();
    if !info.dtype.is_float() {
        return Err(WeightError::UnsupportedDtype {
            name: info.file_name.clone(),
            found: info.dtype.to_string(),
        });
    };
    // The header was validated: the byte count is exactly numel * dtype size, so the output
    // is never larger than the file.
    debug_assert_eq!(raw.len(), n * info.dtype.size());
    let mut t = Tensor::zeros_with_layout(&info.shape, Layout::Nchw)?;
    let out = t.as_mut_slice();
    match info.dtype.0 {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(raw.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(raw.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(raw.chunks_exact(8)) {
                *o = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
            }
        }
    }
    if let Some((index, &value)) = out.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(WeightError::NonFinite {
            name: info.file_name.clone(),
            index,
            value,
        });
    }
    Ok(t)
}

impl WeightSource for WeightFile {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|i| i.shape.clone())
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn file_name(&self, name: &str) -> String {
        self.tensors
            .get(name)
            .map_or_else(|| name.to_string(), |i| i.file_name.clone())
    }

    fn tensor(&self, name: &str, expected: &[usize]) -> Result<Tensor, WeightError> {
        let info = self.tensors.get(name);
        let file_name = info.map_or(name, |i| i.file_name.as_str());
        crate::source::check_found(name, file_name, expected, info.map(|i| i.shape.as_slice()))?;
        let info = info.expect("checked above");
        convert(info, &info.bytes(&self.bytes))
    }

    fn metadata_value(&self, key: &str) -> Option<String> {
        self.metadata.get(key).cloned()
    }
}
