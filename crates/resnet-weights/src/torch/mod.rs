//! PyTorch checkpoints (`torch.save`): the zip format of PyTorch ≥ 1.6 and the legacy format
//! before it, read without executing anything (see [`pickle`]).
//!
//! Both formats pickle the saved object, with every tensor's storage replaced by a persistent
//! id `('storage', torch.FloatStorage, key, location, numel)`. The zip format (`PREFIX/data.pkl`
//! and one *stored*, i.e. uncompressed, entry `PREFIX/data/KEY` per storage) lets every storage
//! be used where it lies in the memory-mapped file; the legacy format is four pickles (magic
//! number, protocol version, system info, the object), a pickled list of storage keys, and then
//! each storage as an 8-byte element count followed by its bytes.
//!
//! What this module returns is the state_dict's tensors as byte ranges of the file with a
//! dtype, a shape and (where not contiguous) strides: the state_dict is the saved object
//! itself, or the dict under one of the usual wrapper keys (`state_dict`, `model`, …), with a
//! `module.` (DataParallel) or `_orig_mod.` (`torch.compile`) prefix common to every key removed.

pub(crate) mod pickle;

use crate::WeightError;
use pickle::{Obj, Pickle, StorageRef, TensorRef};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// One tensor of a checkpoint: where its elements lie in the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its key in the state_dict (wrapper prefixes removed).
    pub key: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// The bytes from its first to its last element.
    pub range: Range<usize>,
    /// Strides in elements from `range.start` where the tensor is not contiguous.
    pub strides: Option<Vec<usize>>,
}

/// Which of PyTorch's formats a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Zip,
    Legacy,
}

/// The magic number the legacy format pickles first, as its little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Whether `buf` starts like a PyTorch checkpoint, and which kind.
pub(crate) fn sniff(buf: &[u8]) -> Option<Kind> {
    if buf.starts_with(b"PK\x03\x04") || buf.starts_with(b"PK\x05\x06") {
        Some(Kind::Zip)
    } else if buf.len() >= 2 && buf[0] == 0x80 && (2..=5).contains(&buf[1]) {
        Some(Kind::Legacy)
    } else {
        None
    }
}

/// Keys under which checkpoints commonly wrap their state_dict, in the order they are tried.
const WRAPPERS: [&str; 6] = [
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "params",
];

/// Prefixes that wrappers add to every key: `nn.DataParallel`/DDP and `torch.compile`.
const KEY_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

/// The longest tensor name accepted (torchvision's are under 40 bytes).
const MAX_KEY: usize = 1024;

/// Tensors may view the same storage, but all of them together may hold at most this many
/// times the file's bytes (plus 1 MiB): tied weights view one storage twice, while a file of
/// many overlapping views would make loading or converting it allocate without bound.
const MAX_VIEWED_PER_BYTE: u64 = 4;

/// A zip's end-of-archive records (and zip64's) a file may contain: a checkpoint has one of
/// each at most, and a stored tensor holds the 4-byte signature by chance about once in 4 GiB.
/// The `zip` crate retries its search from every earlier candidate, so many of them would make
/// opening the file quadratic.
const MAX_END_RECORDS: usize = 64;

/// The largest `data.pkl` read: 256 MiB (a ResNet-152's is well under 100 KiB).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

fn archive_err(reason: impl Into<String>) -> WeightError {
    WeightError::Archive {
        reason: reason.into(),
    }
}

/// Read the tensors of a checkpoint of `kind` held in `buf`.
pub(crate) fn read(buf: &[u8], kind: Kind) -> Result<Vec<Entry>, WeightError> {
    let entries = match kind {
        Kind::Zip => read_zip(buf)?,
        Kind::Legacy => read_legacy(buf)?,
    };
    let viewed = entries
        .iter()
        .map(|e| e.shape.iter().product::<usize>() as u64 * (e.dtype.bitsize() / 8) as u64)
        .fold(0u64, u64::saturating_add);
    let limit = (buf.len() as u64)
        .saturating_mul(MAX_VIEWED_PER_BYTE)
        .saturating_add(1 << 20);
    if viewed > limit {
        return Err(archive_err(format!(
            "its tensors hold {viewed} bytes in all, more than {MAX_VIEWED_PER_BYTE} times the \
             {}-byte file: many tensors view the same storage",
            buf.len()
        )));
    }
    Ok(entries)
}

fn read_zip(buf: &[u8]) -> Result<Vec<Entry>, WeightError> {
    let ends = buf
        .windows(4)
        .filter(|w| w[..2] == *b"PK" && matches!((w[2], w[3]), (5, 6) | (6, 6) | (6, 7)))
        .take(MAX_END_RECORDS + 1)
        .count();
    if ends > MAX_END_RECORDS {
        return Err(archive_err(format!(
            "more than {MAX_END_RECORDS} end-of-archive records: not a checkpoint torch.save wrote"
        )));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(buf))
        .map_err(|e| archive_err(format!("not a readable zip archive: {e}")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    if names.iter().any(|n| n.ends_with("constants.pkl"))
        && names.iter().any(|n| n.contains("/code/"))
    {
        return Err(archive_err(
            "a TorchScript archive (torch.jit.save), which holds code: load it in PyTorch and \
             save its state_dict() with torch.save",
        ));
    }
    let pkl: Vec<&String> = names
        .iter()
        .filter(|n| {
            *n == "data.pkl"
                || n.strip_suffix("/data.pkl")
                    .is_some_and(|p| !p.contains('/'))
        })
        .collect();
    let prefix = match pkl.as_slice() {
        [one] => one
            .strip_suffix("data.pkl")
            .expect("filtered above")
            .to_string(),
        [] => {
            return Err(archive_err(
                "no data.pkl: a zip file, but not a PyTorch checkpoint",
            ));
        }
        _ => return Err(archive_err("more than one data.pkl")),
    };
    if let Some(order) = entry_range(&mut zip, buf, &format!("{prefix}byteorder"))? {
        let order = &buf[order];
        if order != b"little" {
            return Err(archive_err(format!(
                "byte order {:?}: only little-endian checkpoints are read",
                String::from_utf8_lossy(&order[..order.len().min(16)])
            )));
        }
    }
    let pkl_range = entry_range(&mut zip, buf, &format!("{prefix}data.pkl"))?
        .ok_or_else(|| archive_err("data.pkl vanished"))?;
    if pkl_range.len() as u64 > MAX_PICKLE_BYTES {
        return Err(archive_err(format!(
            "data.pkl of {} bytes exceeds the limit of {MAX_PICKLE_BYTES}",
            pkl_range.len()
        )));
    }
    let p = pickle::parse(&buf[pkl_range])?;
    let tensors = state_dict(&p)?;
    let mut storages: HashMap<String, Range<usize>> = HashMap::new();
    let mut entries = Vec::with_capacity(tensors.len());
    for (key, t) in tensors {
        let range = match storages.get(&t.storage.key) {
            Some(r) => r.clone(),
            None => {
                let name = format!("{prefix}data/{}", t.storage.key);
                let r = entry_range(&mut zip, buf, &name)?.ok_or_else(|| {
                    archive_err(format!(
                        "tensor {key:?}: its storage {name} is not in the archive"
                    ))
                })?;
                storages.insert(t.storage.key.clone(), r.clone());
                r
            }
        };
        entries.push(entry(key, &t, range)?);
    }
    Ok(entries)
}

/// The bytes of a stored (uncompressed) zip entry inside `buf`, or `None` when absent.
fn entry_range(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    buf: &[u8],
    name: &str,
) -> Result<Option<Range<usize>>, WeightError> {
    let Some(index) = zip.index_for_name(name) else {
        return Ok(None);
    };
    let f = zip
        .by_index_raw(index)
        .map_err(|e| archive_err(format!("entry {name}: {e}")))?;
    if f.compression() != zip::CompressionMethod::Stored {
        return Err(archive_err(format!(
            "entry {name} is compressed ({}); torch.save stores entries uncompressed so that \
             they can be memory-mapped: re-save the file with torch.save",
            f.compression()
        )));
    }
    let start = f
        .data_start()
        .ok_or_else(|| archive_err(format!("entry {name} has no data offset")))?;
    let end = start.checked_add(f.compressed_size());
    match end {
        Some(end) if end <= buf.len() as u64 => Ok(Some(start as usize..end as usize)),
        _ => Err(archive_err(format!(
            "entry {name}: {} bytes at offset {start} run past the end of the {}-byte file",
            f.compressed_size(),
            buf.len()
        ))),
    }
}

fn read_legacy(buf: &[u8]) -> Result<Vec<Entry>, WeightError> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Pickle, WeightError> {
        let p = pickle::parse(&buf[pos..]).map_err(|e| match e {
            WeightError::Pickle { reason } => WeightError::Pickle {
                reason: format!("{what}: {reason}"),
            },
            other => other,
        })?;
        pos += p.consumed;
        Ok(p)
    };
    let magic = next("the magic number")?;
    if !matches!(magic.get(magic.root), Obj::BigInt(b) if b.as_slice() == LEGACY_MAGIC) {
        return Err(WeightError::Pickle {
            reason: "a pickle, but not a PyTorch checkpoint (no magic number)".into(),
        });
    }
    let version = next("the protocol version")?;
    if !matches!(version.get(version.root), Obj::Int(1001)) {
        return Err(WeightError::Pickle {
            reason: format!(
                "legacy checkpoint protocol {}, expected 1001",
                version.describe(version.root)
            ),
        });
    }
    let sys = next("the system info")?;
    if let Some(items) = sys.dict(sys.root) {
        for &(k, v) in items {
            if sys.str(k) == Some("little_endian") && matches!(sys.get(v), Obj::Bool(false)) {
                return Err(archive_err(
                    "a big-endian checkpoint: only little-endian ones are read",
                ));
            }
        }
    }
    let main = next("the saved object")?;
    let tensors = state_dict(&main)?;
    // Every storage the pickle named, by key, with its element type (the data is written as
    // element count + raw elements, so the type is needed to skip over it).
    // Every storage of the pickle counts, not only the state_dict's: the data of storages
    // outside it (optimiser state, stray tensors) lies between them and must be stepped over.
    let mut dtypes: HashMap<String, Dtype> = HashMap::new();
    for s in main.storages() {
        dtypes.insert(s.key.clone(), s.dtype);
    }
    let keys = next("the storage keys")?;
    let key_ids: Vec<usize> = match keys.get(keys.root) {
        Obj::List(v) => v.clone(),
        _ => return Err(archive_err("the storage key list is not a list")),
    };
    let mut storages: HashMap<String, Range<usize>> = HashMap::new();
    for id in key_ids {
        let key = keys
            .str(id)
            .ok_or_else(|| archive_err("a storage key that is not a str"))?
            .to_string();
        let Some(b) = buf.get(pos..pos + 8) else {
            return Err(WeightError::Pickle {
                reason: format!("the file ends before storage {key}"),
            });
        };
        let numel = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        pos += 8;
        // A storage no tensor of the state_dict uses still has to be skipped: its element
        // size is then unknown unless the pickle named it. Stop there; what follows is unused.
        let Some(dtype) = dtypes.get(&key) else {
            break;
        };
        let len = numel
            .checked_mul((dtype.bitsize() / 8) as u64)
            .filter(|&l| l <= (buf.len() - pos) as u64)
            .ok_or_else(|| WeightError::Pickle {
                reason: format!(
                    "storage {key} of {numel} elements runs past the end of the {}-byte file",
                    buf.len()
                ),
            })?;
        storages.insert(key, pos..pos + len as usize);
        pos += len as usize;
    }
    tensors
        .into_iter()
        .map(|(key, t)| {
            let range =
                storages
                    .get(&t.storage.key)
                    .cloned()
                    .ok_or_else(|| WeightError::Pickle {
                        reason: format!(
                            "tensor {key:?}: its storage {} is not in the file",
                            t.storage.key
                        ),
                    })?;
            entry(key, &t, range)
        })
        .collect()
}

/// The state_dict's tensors, by key: the root dict, or the dict under a wrapper key.
fn state_dict(p: &Pickle) -> Result<Vec<(String, TensorRef)>, WeightError> {
    let root = p.dict(p.root).ok_or_else(|| WeightError::Pickle {
        reason: format!(
            "the checkpoint holds {}, not a dict of tensors",
            p.describe(p.root)
        ),
    })?;
    // The tensors of a dict, by reference: a key given twice keeps its last value, as in
    // Python, so a memoised key or tensor repeated in many entries costs nothing.
    let tensors_of = |items: &[(usize, usize)]| -> BTreeMap<&str, &TensorRef> {
        items
            .iter()
            .filter_map(|&(k, v)| match (p.str(k), p.get(v)) {
                (Some(k), Obj::Tensor(t)) => Some((k, &**t)),
                _ => None,
            })
            .collect()
    };
    // A wrapper first: a state_dict never maps a bare `model` key to a dict, while a training
    // checkpoint may keep a stray tensor (a best accuracy, say) beside its wrapped state_dict.
    let mut chosen = BTreeMap::new();
    for w in WRAPPERS {
        let inner = root
            .iter()
            .find(|&&(k, _)| p.str(k) == Some(w))
            .and_then(|&(_, v)| p.dict(v));
        if let Some(inner) = inner {
            chosen = tensors_of(inner);
            if !chosen.is_empty() {
                break;
            }
        }
    }
    if chosen.is_empty() {
        chosen = tensors_of(root);
    }
    if chosen.is_empty() {
        let keys: Vec<String> = root
            .iter()
            .take(12)
            .map(|&(k, _)| p.str(k).map_or_else(|| p.describe(k), |s| format!("{s:?}")))
            .collect();
        return Err(WeightError::Pickle {
            reason: format!(
                "no tensors in the checkpoint, nor under {} (its keys: {}{})",
                WRAPPERS.join(", "),
                keys.join(", "),
                if root.len() > 12 { ", …" } else { "" }
            ),
        });
    }
    if let Some(k) = chosen.keys().find(|k| k.len() > MAX_KEY) {
        return Err(WeightError::Pickle {
            reason: format!(
                "a tensor name of {} bytes (at most {MAX_KEY} are accepted)",
                k.len()
            ),
        });
    }
    let mut chosen: Vec<(String, TensorRef)> = chosen
        .into_iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    for prefix in KEY_PREFIXES {
        if chosen.iter().all(|(k, _)| k.starts_with(prefix)) {
            for (k, _) in &mut chosen {
                k.drain(..prefix.len());
            }
        }
    }
    Ok(chosen)
}

/// Where tensor `t` lies in the file, given its storage's bytes `storage`: checked against
/// the storage, so every element read later is inside it.
fn entry(key: String, t: &TensorRef, storage: Range<usize>) -> Result<Entry, WeightError> {
    let StorageRef {
        dtype,
        numel: storage_numel,
        view_offset,
        ..
    } = t.storage;
    let elem = (dtype.bitsize() / 8) as u64;
    let bad = |reason: String| WeightError::BadTensor {
        name: key.clone(),
        reason,
    };
    let storage_bytes = storage.len() as u64;
    if storage_numel
        .checked_add(view_offset)
        .and_then(|n| n.checked_mul(elem))
        .is_none_or(|b| b > storage_bytes)
    {
        return Err(bad(format!(
            "its storage claims {storage_numel} elements of {elem} bytes but holds {storage_bytes} bytes"
        )));
    }
    let numel = t
        .size
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("size {:?} overflows", t.size)))?;
    let shape: Vec<usize> = t.size.iter().map(|&d| d as usize).collect();
    if numel == 0 {
        return Ok(Entry {
            key,
            dtype,
            shape,
            range: storage.start..storage.start,
            strides: None,
        });
    }
    // The last element's index: offset + Σ (size - 1) * stride, all inside the storage. A
    // tensor may not have more elements than its storage (no stride-0 broadcasts), so what is
    // allocated for it is bounded by the file's size.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            a.checked_add((d - 1).checked_mul(s)?)
        })
        .ok_or_else(|| {
            bad(format!(
                "size {:?} and stride {:?} overflow",
                t.size, t.stride
            ))
        })?;
    if last >= storage_numel {
        return Err(bad(format!(
            "size {:?}, stride {:?} and offset {} reach element {last} of a storage of {storage_numel}",
            t.size, t.stride, t.offset
        )));
    }
    if numel > storage_numel {
        return Err(bad(format!(
            "{numel} elements viewing a storage of {storage_numel} (a broadcast view)"
        )));
    }
    let mut contiguous = true;
    let mut expect = 1u64;
    for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
        if d != 1 && s != expect {
            contiguous = false;
        }
        expect *= d;
    }
    let first = storage.start as u64 + (view_offset + t.offset) * elem;
    let end = storage.start as u64 + (view_offset + last + 1) * elem;
    Ok(Entry {
        key,
        dtype,
        shape,
        range: first as usize..end as usize,
        strides: (!contiguous).then(|| t.stride.iter().map(|&s| s as usize).collect()),
    })
}
