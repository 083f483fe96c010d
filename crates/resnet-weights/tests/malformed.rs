//! Malformed and malicious weights files: each gives its exact typed error, and none makes the
//! loader allocate more than the file's size.

use resnet_weights::{
    MAX_HEADER_BYTES, Strictness, Tracked, WeightError, WeightFile, WeightSource,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the bytes live on this thread's behalf... approximately: all threads, but the tests
/// here run their measured sections one at a time under `MEASURE`.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static MEASURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated while `f` runs, above what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn with_header(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(data);
    v
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A file built from a raw JSON header and data bytes.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    with_header(header.as_bytes(), data)
}

/// One case: its bytes, and what the error's Display must contain (variant checked separately).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    check: fn(&WeightError) -> bool,
    message: &'static str,
}

fn cases() -> Vec<Case> {
    let mut huge_len = raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    huge_len[..8].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
    let mut past_end = raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    past_end[..8].copy_from_slice(&1000u64.to_le_bytes());
    // A header of 64 MiB: refused from its length alone, before it is read.
    let big = 64usize << 20;
    let mut big_header = vec![b' '; big];
    big_header[0] = b'{';
    big_header[big - 1] = b'}';
    vec![
        Case {
            name: "empty file",
            bytes: vec![],
            check: |e| matches!(e, WeightError::TooShort { len: 0 }),
            message: "not a safetensors file or PyTorch checkpoint: 0 bytes is shorter than the 8-byte header length",
        },
        Case {
            name: "header length larger than the file",
            bytes: past_end,
            check: |e| matches!(e, WeightError::HeaderPastEnd { len: 1000, .. }),
            message: "safetensors header of 1000 bytes runs past the end of the",
        },
        Case {
            name: "header length near u64::MAX",
            bytes: huge_len,
            check: |e| {
                matches!(
                    e,
                    WeightError::HeaderTooLarge {
                        limit: MAX_HEADER_BYTES,
                        ..
                    }
                )
            },
            message: "exceeds the limit of 16777216 bytes",
        },
        Case {
            name: "64 MiB header",
            bytes: with_header(&big_header, &[]),
            check: |e| matches!(e, WeightError::HeaderTooLarge { len, limit: MAX_HEADER_BYTES } if *len == (64 << 20)),
            message: "safetensors header of 67108864 bytes exceeds the limit of 16777216 bytes",
        },
        Case {
            name: "header not JSON",
            bytes: raw("{this is not json}", &[]),
            check: |e| matches!(e, WeightError::Malformed { .. }),
            message: "malformed safetensors file",
        },
        Case {
            name: "header not UTF-8",
            bytes: with_header(&[b'{', 0xc3, 0x28, b'}'], &[]),
            check: |e| matches!(e, WeightError::Malformed { .. }),
            message: "malformed safetensors file",
        },
        Case {
            name: "offsets out of range",
            bytes: raw(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 4],
            ),
            check: |e| matches!(e, WeightError::Malformed { .. }),
            message: "malformed safetensors file",
        },
        Case {
            name: "overlapping offsets",
            bytes: raw(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
            check: |e| matches!(e, WeightError::Malformed { reason } if reason.contains("offset")),
            message: "malformed safetensors file",
        },
        Case {
            name: "offsets not covering the data",
            bytes: raw(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 12],
            ),
            check: |e| matches!(e, WeightError::Malformed { .. }),
            message: "malformed safetensors file",
        },
        Case {
            name: "byte count not dtype size times shape",
            bytes: raw(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            check: |e| matches!(e, WeightError::Malformed { .. }),
            message: "malformed safetensors file",
        },
        Case {
            name: "unknown dtype",
            bytes: raw(
                r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            check: |e| matches!(e, WeightError::Malformed { reason } if reason.contains("F12")),
            message: "malformed safetensors file",
        },
        Case {
            name: "shape product overflows",
            bytes: raw(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#,
                &[],
            ),
            check: |e| matches!(e, WeightError::Malformed { .. }),
            message: "malformed safetensors file",
        },
    ]
}

#[test]
fn every_malformed_file_gives_its_error_without_allocating_more_than_its_size() {
    let _g = MEASURE.lock().unwrap();
    for case in cases() {
        let size = case.bytes.len();
        let (result, peak) = peak_during(|| WeightFile::from_bytes(case.bytes));
        let e = result.expect_err(case.name);
        assert!((case.check)(&e), "{}: wrong error {e:?}", case.name);
        assert!(e.to_string().contains(case.message), "{}: {e}", case.name);
        // The buffer itself is the caller's; what the loader allocates on top must stay below
        // the file's size (plus a small constant for the error message and header structures).
        assert!(
            peak <= size + 64 * 1024,
            "{}: allocated {peak} bytes for a {size}-byte file",
            case.name
        );
    }
}

fn valid(entries: &[(&str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, shape, bytes)) in entries.iter().enumerate() {
        let start = data.len();
        data.extend_from_slice(bytes);
        header += &format!(
            "{}\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            if i > 0 { "," } else { "" },
            data.len()
        );
    }
    header.push('}');
    raw(&header, &data)
}

#[test]
fn content_errors_name_the_tensor() {
    let bytes = valid(&[
        ("fc.weight", &[2, 3], f32s(&[0.0; 6])),
        ("bad", &[3], f32s(&[1.0, f32::INFINITY, 2.0])),
        ("nan", &[1], f32s(&[f32::NAN])),
        ("extra", &[1], f32s(&[1.0])),
    ]);
    let w = WeightFile::from_bytes(bytes).unwrap();
    // Right name, wrong shape.
    let e = w.tensor("fc.weight", &[3, 2]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor \"fc.weight\" has shape [2, 3], expected [3, 2]"
    );
    // Missing.
    let e = w.tensor("fc.bias", &[3]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing tensor \"fc.bias\" (expected shape [3])"
    );
    // Non-finite weights, named, with the first bad element.
    let e = w.tensor("bad", &[3]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor \"bad\" holds a non-finite value (inf) at element 1"
    );
    let e = w.tensor("nan", &[1]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor \"nan\" holds a non-finite value (NaN) at element 0"
    );
    // Unexpected tensors: an error when strict, a list to warn about when lenient.
    let t = Tracked::new(&w);
    t.tensor("fc.weight", &[2, 3]).unwrap();
    let _ = t.tensor("bad", &[3]);
    let _ = t.tensor("nan", &[1]);
    let e = t.finish(Strictness::Strict).unwrap_err();
    assert_eq!(e.to_string(), "1 unused tensor(s) in the weights: extra");
    assert_eq!(t.finish(Strictness::Lenient).unwrap(), ["extra"]);
}

#[test]
fn loading_a_tensor_allocates_only_its_f32_size() {
    let _g = MEASURE.lock().unwrap();
    let n = 1 << 16;
    let w = WeightFile::from_bytes(valid(&[("x", &[n], f32s(&vec![0.5; n]))])).unwrap();
    let (t, peak) = peak_during(|| w.tensor("x", &[n]).unwrap());
    assert_eq!(t.len(), n);
    // The counter sees the tensor itself (so it does count), and nothing much beyond it.
    assert!(peak >= 4 * n && peak <= 4 * n + 4096, "{peak}");
}

// ---- PyTorch checkpoints -------------------------------------------------------------------

/// A pickle int: `LONG1` with 8 bytes, any value below 2^63.
fn pint(v: u64) -> Vec<u8> {
    let mut b = vec![0x8a, 8];
    b.extend_from_slice(&v.to_le_bytes());
    b
}

/// A pickle str.
fn pstr(s: &str) -> Vec<u8> {
    let mut b = vec![b'X'];
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    b
}

/// The opening of a persistent id `('storage', torch.<storage_type>, key, 'cpu'`, before its
/// element count (and the tuple's end).
fn storage_pid(storage_type: &str, key: &str) -> Vec<u8> {
    let mut b = pstr("storage");
    b.extend_from_slice(format!("ctorch\n{storage_type}\n").as_bytes());
    b.extend(pstr(key));
    b.extend(pstr("cpu"));
    b
}

/// A pickle tuple of ints.
fn pints(v: &[u64]) -> Vec<u8> {
    let mut b = vec![b'('];
    for &x in v {
        b.extend(pint(x));
    }
    b.push(b't');
    b
}

/// The pickle of `{name: tensor}` as `torch.save` writes it: a storage of `storage_type`
/// (`FloatStorage`, …) with key "0" and `numel` elements, viewed at `offset` with `size` and
/// `stride`.
fn tensor_pickle(
    name: &str,
    storage_type: &str,
    numel: u64,
    offset: u64,
    size: &[u64],
    stride: &[u64],
) -> Vec<u8> {
    let mut b = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    b.extend(pstr(name));
    b.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    b.extend(storage_pid(storage_type, "0"));
    b.extend(pint(numel));
    b.extend_from_slice(b"tQ");
    b.extend(pint(offset));
    b.extend(pints(size));
    b.extend(pints(stride));
    b.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtRu.");
    b
}

/// A zip checkpoint: `archive/data.pkl`, `archive/byteorder`, and the given entries under
/// `archive/` (all stored, as torch.save writes them).
fn checkpoint(pkl: &[u8], entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let all = [("data.pkl", pkl), ("byteorder", &b"little"[..])];
    for (name, bytes) in all.iter().chain(entries) {
        z.start_file(format!("archive/{name}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn torch_fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name);
    std::fs::read(p).unwrap()
}

/// Point the central directory's record of the last entry at an offset past the file's end.
fn with_bad_offset(mut zip: Vec<u8>) -> Vec<u8> {
    let at = zip
        .windows(4)
        .rposition(|w| w == b"PK\x01\x02")
        .expect("a central directory record");
    zip[at + 42..at + 46].copy_from_slice(&u32::MAX.to_le_bytes()[..]);
    zip
}

/// Mark every entry as deflated (method 8) in its local and central headers.
fn with_deflate_method(mut zip: Vec<u8>) -> Vec<u8> {
    for (sig, off) in [(&b"PK\x03\x04"[..], 8), (&b"PK\x01\x02"[..], 10)] {
        let hits: Vec<usize> = zip
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == sig)
            .map(|(i, _)| i)
            .collect();
        for at in hits {
            zip[at + off] = 8;
        }
    }
    zip
}

fn torch_cases() -> Vec<Case> {
    let f32_data = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let good = tensor_pickle("w", "FloatStorage", 6, 0, &[2, 3], &[3, 1]);
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 200_000));
    deep.extend(std::iter::repeat_n(b'a', 199_999));
    deep.push(b'.');
    let basic = torch_fixture("basic.pth");
    let legacy = torch_fixture("basic_legacy.pth");
    let mut system = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    system.extend(pstr("w"));
    system.extend_from_slice(b"cposix\nsystem\n(");
    system.extend(pstr("touch /tmp/resnet-rs-hostile-marker"));
    system.extend_from_slice(b"tRu.");
    vec![
        Case {
            name: "a valid checkpoint cut in half",
            bytes: basic[..basic.len() / 2].to_vec(),
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "not a readable zip archive",
        },
        Case {
            name: "a legacy checkpoint cut short",
            bytes: legacy[..legacy.len() * 2 / 3].to_vec(),
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "runs past the end of the",
        },
        Case {
            name: "an entry's offset past the end",
            bytes: with_bad_offset(checkpoint(&good, &[("data/0", &f32_data)])),
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "malformed PyTorch checkpoint archive",
        },
        Case {
            name: "compressed entries",
            bytes: with_deflate_method(checkpoint(&good, &[("data/0", &f32_data)])),
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "compressed",
        },
        Case {
            name: "storage smaller than it claims",
            bytes: checkpoint(&good, &[("data/0", &f32_data[..8])]),
            check: |e| matches!(e, WeightError::BadTensor { name, .. } if name == "w"),
            message: "its storage claims 6 elements of 4 bytes but holds 8 bytes",
        },
        Case {
            name: "tensor reaching past its storage",
            bytes: checkpoint(
                &tensor_pickle("w", "FloatStorage", 6, 2, &[2, 3], &[3, 1]),
                &[("data/0", &f32_data)],
            ),
            check: |e| matches!(e, WeightError::BadTensor { .. }),
            message: "reach element 7 of a storage of 6",
        },
        Case {
            name: "broadcast view of a huge size",
            bytes: checkpoint(
                &tensor_pickle("w", "FloatStorage", 6, 0, &[1 << 40], &[0]),
                &[("data/0", &f32_data)],
            ),
            check: |e| matches!(e, WeightError::BadTensor { .. }),
            message: "a broadcast view",
        },
        Case {
            name: "sizes whose product overflows",
            bytes: checkpoint(
                &tensor_pickle("w", "FloatStorage", 6, 0, &[1 << 40, 1 << 40], &[1, 1]),
                &[("data/0", &f32_data)],
            ),
            check: |e| matches!(e, WeightError::BadTensor { .. }),
            message: "overflows",
        },
        Case {
            name: "unknown storage type",
            bytes: checkpoint(
                &tensor_pickle("w", "ComplexFloatStorage", 3, 0, &[3], &[1]),
                &[("data/0", &f32_data)],
            ),
            check: |e| matches!(e, WeightError::UnsupportedStorage { name } if name == "torch.ComplexFloatStorage"),
            message: "unsupported tensor storage type torch.ComplexFloatStorage",
        },
        Case {
            name: "a storage entry missing",
            bytes: checkpoint(&good, &[]),
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "its storage archive/data/0 is not in the archive",
        },
        Case {
            name: "os.system in the state_dict",
            bytes: checkpoint(&system, &[]),
            check: |e| matches!(e, WeightError::RefusedGlobal { global } if global == "posix.system"),
            message: "refusing pickle global posix.system",
        },
        Case {
            name: "200 000 nested lists",
            bytes: checkpoint(&deep, &[]),
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "holds a list, not a dict of tensors",
        },
        Case {
            name: "a dict without tensors",
            bytes: checkpoint(b"\x80\x02}(X\x05\x00\x00\x00epochK\x07u.", &[]),
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "no tensors in the checkpoint",
        },
        Case {
            name: "a pickle without STOP",
            bytes: checkpoint(&good[..good.len() - 1], &[("data/0", &f32_data)]),
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "without STOP",
        },
        Case {
            name: "big-endian",
            bytes: {
                let mut z = checkpoint(&good, &[("data/0", &f32_data)]);
                let at = z.windows(6).position(|w| w == b"little").unwrap();
                z[at..at + 6].copy_from_slice(b"bigxxx");
                z
            },
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "only little-endian",
        },
        Case {
            name: "a zip that is no checkpoint",
            bytes: {
                use std::io::Write;
                let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
                z.start_file("readme.txt", zip::write::SimpleFileOptions::default())
                    .unwrap();
                z.write_all(b"hello").unwrap();
                z.finish().unwrap().into_inner()
            },
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "no data.pkl",
        },
        Case {
            name: "a plain pickle (no magic number)",
            bytes: b"\x80\x02}q\x00.".to_vec(),
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "no magic number",
        },
        // Found by review: inputs that made the machine copy what the pickle built once.
        Case {
            name: "torch.Size of 100 000 dimensions, called 400 times",
            bytes: {
                let mut b = b"\x80\x02ctorch\nSize\nq\x000(N".to_vec();
                b.extend(std::iter::repeat_n(b'2', 100_000));
                b.extend_from_slice(b"t\x85q\x010");
                for _ in 0..400 {
                    b.extend_from_slice(b"h\x00h\x01R0");
                }
                b.extend_from_slice(b"N.");
                checkpoint(&b, &[])
            },
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "torch.Size of 100001 dimensions (at most 8 are accepted)",
        },
        Case {
            name: "a 100 000-byte storage key named 4000 times",
            bytes: {
                let key = "k".repeat(100_000);
                let mut b = b"\x80\x02(".to_vec();
                b.extend(storage_pid("FloatStorage", &key));
                b.extend_from_slice(b"K\x01tq\x000");
                for _ in 0..4000 {
                    b.extend_from_slice(b"h\x00Q0");
                }
                b.extend_from_slice(b"N.");
                checkpoint(&b, &[])
            },
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "a storage key of 100000 bytes",
        },
        Case {
            name: "a rebuild called with 100 000 arguments",
            bytes: {
                let mut b = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x000(N".to_vec();
                b.extend(std::iter::repeat_n(b'2', 100_000));
                b.extend_from_slice(b"tq\x010");
                for _ in 0..4000 {
                    b.extend_from_slice(b"h\x00h\x01R0");
                }
                b.extend_from_slice(b"N.");
                checkpoint(&b, &[])
            },
            check: |e| matches!(e, WeightError::Pickle { .. }),
            message: "called with 100001 arguments (at most 8)",
        },
        Case {
            name: "20 000 end-of-archive records",
            bytes: {
                let mut b = b"PK\x05\x06".to_vec();
                b.extend([0u8; 18]);
                for _ in 0..20_000 {
                    b.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0\0\0\0\0\0\0\0\0\0\0");
                }
                b
            },
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "more than 64 end-of-archive records",
        },
        Case {
            name: "1000 names for transposed views of one storage",
            bytes: {
                let n = 64 * 1024;
                let mut b = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
                b.extend(storage_pid("FloatStorage", "0"));
                b.extend(pint(n));
                b.extend_from_slice(b"tQ");
                b.extend(pint(0));
                b.extend(pints(&[256, 256]));
                b.extend(pints(&[1, 256]));
                b.extend_from_slice(b"\x89NtRq\x000}(");
                for i in 0..1000 {
                    b.extend(pstr(&format!("t{i}")));
                    b.extend_from_slice(b"h\x00");
                }
                b.extend_from_slice(b"u.");
                checkpoint(&b, &[("data/0", &vec![0u8; 4 * n as usize])])
            },
            check: |e| matches!(e, WeightError::Archive { .. }),
            message: "many tensors view the same storage",
        },
        Case {
            name: "an HTML page",
            bytes: b"<!DOCTYPE html>\n<html><body>Not Found</body></html>".to_vec(),
            check: |e| matches!(e, WeightError::NotWeights { .. }),
            message: "not a safetensors file or PyTorch checkpoint: starts with \"<!DOCTYPE html>\\n\"",
        },
        Case {
            name: "a JPEG image",
            bytes: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01".to_vec(),
            check: |e| matches!(e, WeightError::NotWeights { .. }),
            message: "starts with bytes ff d8 ff e0 00 10 4a 46 49 46 00 01 01 00 00 01 (an image)",
        },
    ]
}

#[test]
fn every_malformed_checkpoint_gives_its_error_with_memory_linear_in_its_size() {
    let _g = MEASURE.lock().unwrap();
    for case in torch_cases() {
        let size = case.bytes.len();
        let (result, peak) = peak_during(|| WeightFile::from_bytes(case.bytes));
        let e = result.expect_err(case.name);
        assert!((case.check)(&e), "{}: wrong error {e:?}", case.name);
        assert!(e.to_string().contains(case.message), "{}: {e}", case.name);
        // The pickle machine holds at most one 32-byte object and two references per input
        // byte (see `torch/pickle.rs`): a bound linear in the size, never from a size read.
        assert!(
            peak <= 64 * size + 256 * 1024,
            "{}: allocated {peak} bytes for a {size}-byte file",
            case.name
        );
    }
}

/// A legacy-format checkpoint (`_use_new_zipfile_serialization=False`) built by hand:
/// `{"state_dict": {"w": <F32 storage "2">}, "extra": <F64 storage "1">}`, the storages written in
/// key order ("1" first), so the state_dict's data lies after a storage it does not use.
#[test]
fn a_legacy_checkpoint_with_storages_outside_its_state_dict_loads() {
    let tensor = |key: &str, storage: &str, numel: u64| {
        let mut b = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
        b.extend(storage_pid(storage, key));
        b.extend(pint(numel));
        b.extend_from_slice(b"NtQ");
        b.extend(pint(0));
        b.extend(pints(&[numel]));
        b.extend(pints(&[1]));
        b.extend_from_slice(b"\x89NtR");
        b
    };
    let mut f = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    f.extend_from_slice(b"\x80\x02M\xe9\x03.");
    f.extend_from_slice(b"\x80\x02}.");
    f.extend_from_slice(b"\x80\x02}(");
    f.extend(pstr("state_dict"));
    f.extend_from_slice(b"}(");
    f.extend(pstr("w"));
    f.extend(tensor("2", "FloatStorage", 3));
    f.extend_from_slice(b"u");
    f.extend(pstr("extra"));
    f.extend(tensor("1", "DoubleStorage", 5));
    f.extend_from_slice(b"u.");
    f.extend_from_slice(b"\x80\x02](");
    f.extend(pstr("1"));
    f.extend(pstr("2"));
    f.extend_from_slice(b"e.");
    f.extend_from_slice(&5u64.to_le_bytes());
    for v in [9.0f64; 5] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&3u64.to_le_bytes());
    f.extend(f32s(&[1.5, -2.0, 0.25]));
    let w = WeightFile::from_bytes(f).unwrap();
    assert_eq!(w.names(), ["w"]);
    assert_eq!(w.load("w").unwrap().as_slice(), &[1.5, -2.0, 0.25]);
}
