//! The loader on hand-made files: every dtype, both name schemes, and every error.

use resnet_weights::{
    MAX_HEADER_BYTES, NameScheme, Strictness, Tracked, WeightError, WeightFile, WeightSource,
};

/// A safetensors file from `(name, dtype, shape, bytes)` entries and an optional metadata map.
fn file(entries: &[(&str, &str, &[usize], Vec<u8>)], metadata: Option<&str>) -> Vec<u8> {
    let mut header = String::from("{");
    if let Some(m) = metadata {
        header += &format!("\"__metadata__\":{m},");
    }
    let mut data = Vec::new();
    for (i, (name, dtype, shape, bytes)) in entries.iter().enumerate() {
        let start = data.len();
        data.extend_from_slice(bytes);
        header += &format!(
            "{}\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            if i > 0 { "," } else { "" },
            data.len()
        );
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn converts_every_float_dtype() {
    let vals = [1.5f32, -2.0, 0.25, 1024.0];
    let f16: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let f64s: Vec<u8> = vals
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();
    let bytes = file(
        &[
            ("a", "F32", &[2, 2], f32s(&vals)),
            ("b", "F16", &[2, 2], f16),
            ("c", "BF16", &[4], bf16),
            ("d", "F64", &[4, 1], f64s),
            (
                "bn.num_batches_tracked",
                "I64",
                &[],
                7i64.to_le_bytes().to_vec(),
            ),
        ],
        None,
    );
    let w = WeightFile::from_bytes(bytes).unwrap();
    assert_eq!(w.tensor("a", &[2, 2]).unwrap().as_slice(), &vals);
    assert_eq!(w.tensor("b", &[2, 2]).unwrap().as_slice(), &vals);
    assert_eq!(w.tensor("c", &[4]).unwrap().as_slice(), &vals);
    assert_eq!(w.tensor("d", &[4, 1]).unwrap().as_slice(), &vals);
    // Integer tensors are accepted in the file, never required, and cannot be read as f32.
    let e = w.tensor("bn.num_batches_tracked", &[]).unwrap_err();
    assert!(
        matches!(&e, WeightError::UnsupportedDtype { name, found } if name == "bn.num_batches_tracked" && found == "I64"),
        "{e}"
    );
    let t = Tracked::new(&w);
    for (n, s) in [
        ("a", &[2, 2][..]),
        ("b", &[2, 2]),
        ("c", &[4]),
        ("d", &[4, 1]),
    ] {
        t.tensor(n, s).unwrap();
    }
    assert_eq!(t.finish(Strictness::Strict).unwrap(), Vec::<String>::new());
}

#[test]
fn missing_key_names_key_and_shape() {
    let w = WeightFile::from_bytes(file(&[("a", "F32", &[1], f32s(&[1.0]))], None)).unwrap();
    let e = w.tensor("fc.weight", &[10, 512]).unwrap_err();
    assert!(
        matches!(&e, WeightError::MissingKey { name, expected: Some(s) } if name == "fc.weight" && s == &[10, 512])
    );
    assert_eq!(
        e.to_string(),
        "missing tensor \"fc.weight\" (expected shape [10, 512])"
    );
}

#[test]
fn shape_mismatch_names_both_shapes() {
    let w =
        WeightFile::from_bytes(file(&[("fc.bias", "F32", &[3], f32s(&[1.0; 3]))], None)).unwrap();
    let e = w.tensor("fc.bias", &[1000]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor \"fc.bias\" has shape [3], expected [1000]"
    );
}

#[test]
fn unused_keys_strict_and_lenient() {
    let w = WeightFile::from_bytes(file(
        &[
            ("used", "F32", &[1], f32s(&[1.0])),
            ("extra", "F32", &[1], f32s(&[2.0])),
            ("x.num_batches_tracked", "I64", &[], vec![0; 8]),
        ],
        None,
    ))
    .unwrap();
    let t = Tracked::new(&w);
    t.tensor("used", &[1]).unwrap();
    match t.finish(Strictness::Strict).unwrap_err() {
        WeightError::UnusedKeys { keys } => assert_eq!(keys, ["extra"]),
        e => panic!("{e}"),
    }
    assert_eq!(t.finish(Strictness::Lenient).unwrap(), ["extra"]);
}

#[test]
fn non_finite_weights_are_refused_with_the_tensor_named() {
    let w = WeightFile::from_bytes(file(
        &[("w", "F32", &[3], f32s(&[0.0, f32::NAN, 1.0]))],
        None,
    ))
    .unwrap();
    let e = w.tensor("w", &[3]).unwrap_err();
    assert!(
        matches!(e, WeightError::NonFinite { ref name, index: 1, .. } if name == "w"),
        "{e}"
    );
    // An f64 too large for f32 becomes infinite: refused too.
    let w = WeightFile::from_bytes(file(
        &[("big", "F64", &[1], 1e300f64.to_le_bytes().to_vec())],
        None,
    ))
    .unwrap();
    assert!(matches!(
        w.tensor("big", &[1]),
        Err(WeightError::NonFinite { .. })
    ));
}

#[test]
fn hf_transformers_names_are_mapped() {
    let w = WeightFile::from_bytes(file(
        &[
            (
                "resnet.embedder.embedder.convolution.weight",
                "F32",
                &[1],
                f32s(&[1.0]),
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.normalization.bias",
                "F32",
                &[1],
                f32s(&[2.0]),
            ),
            ("classifier.1.weight", "F32", &[1], f32s(&[3.0])),
        ],
        None,
    ))
    .unwrap();
    assert_eq!(w.scheme(), NameScheme::HfTransformers);
    assert_eq!(w.tensor("conv1.weight", &[1]).unwrap().as_slice(), &[1.0]);
    assert_eq!(
        w.tensor("layer2.0.downsample.1.bias", &[1])
            .unwrap()
            .as_slice(),
        &[2.0]
    );
    assert_eq!(w.tensor("fc.weight", &[1]).unwrap().as_slice(), &[3.0]);
    // Errors name the key as it is in the file.
    let e = w.tensor("fc.weight", &[2]).unwrap_err();
    assert!(e.to_string().contains("classifier.1.weight"), "{e}");
}

#[test]
fn duplicate_names_after_mapping_are_refused() {
    let e = WeightFile::from_bytes(file(
        &[
            ("module.fc.weight", "F32", &[1], f32s(&[1.0])),
            ("fc.weight", "F32", &[1], f32s(&[1.0])),
        ],
        None,
    ))
    .unwrap_err();
    assert!(
        matches!(e, WeightError::DuplicateKey { ref canonical, .. } if canonical == "fc.weight"),
        "{e}"
    );
}

#[test]
fn metadata_is_exposed() {
    let w = WeightFile::from_bytes(file(
        &[("a", "F32", &[1], f32s(&[1.0]))],
        Some("{\"scale\":\"2\"}"),
    ))
    .unwrap();
    assert_eq!(w.metadata().get("scale").map(String::as_str), Some("2"));
    assert_eq!(w.metadata_value("scale").as_deref(), Some("2"));
}

#[test]
fn malformed_files_are_typed_errors() {
    let ok = file(&[("a", "F32", &[2], f32s(&[1.0, 2.0]))], None);
    // Empty and too short.
    assert!(matches!(
        WeightFile::from_bytes(vec![]),
        Err(WeightError::TooShort { len: 0 })
    ));
    assert!(matches!(
        WeightFile::from_bytes(vec![1, 2, 3]),
        Err(WeightError::TooShort { len: 3 })
    ));
    // Header length past the end, near u64::MAX, over the limit.
    let mut past = ok.clone();
    past[..8].copy_from_slice(&(ok.len() as u64).to_le_bytes());
    assert!(matches!(
        WeightFile::from_bytes(past),
        Err(WeightError::HeaderPastEnd { .. })
    ));
    let mut huge = ok.clone();
    huge[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    match WeightFile::from_bytes(huge) {
        Err(WeightError::HeaderTooLarge { limit, .. }) => assert_eq!(limit, MAX_HEADER_BYTES),
        r => panic!("{r:?}"),
    }
    // Truncated data: the header promises 8 bytes, 4 are there.
    let truncated = ok[..ok.len() - 4].to_vec();
    assert!(matches!(
        WeightFile::from_bytes(truncated),
        Err(WeightError::Malformed { .. })
    ));
    // Not JSON, not UTF-8.
    for header in [&b"{not json}"[..], &[b'{', 0xff, 0xfe, b'}']] {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header);
        assert!(matches!(
            WeightFile::from_bytes(f),
            Err(WeightError::Malformed { .. })
        ));
    }
    // Byte count not equal to dtype size times shape.
    let wrong = file(&[("a", "F32", &[3], f32s(&[1.0, 2.0]))], None);
    assert!(matches!(
        WeightFile::from_bytes(wrong),
        Err(WeightError::Malformed { .. })
    ));
    // Unknown dtype.
    let unknown = file(&[("a", "F17", &[2], f32s(&[1.0, 2.0]))], None);
    assert!(matches!(
        WeightFile::from_bytes(unknown),
        Err(WeightError::Malformed { .. })
    ));
    // Shape whose product overflows.
    let overflow = file(&[("a", "F32", &[usize::MAX, 4], vec![])], None);
    assert!(matches!(
        WeightFile::from_bytes(overflow),
        Err(WeightError::Malformed { .. })
    ));
    // A missing file.
    assert!(matches!(
        WeightFile::open("/nonexistent/weights.safetensors"),
        Err(WeightError::Io { .. })
    ));
    // A file that cannot be written says so (not "cannot read").
    let t = resnet_weights::Tensor::zeros(&[2]).unwrap();
    let e = resnet_weights::write_safetensors("/nonexistent/dir/w.safetensors", &[("a", &t)], None)
        .unwrap_err();
    assert!(matches!(e, WeightError::WriteIo { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot write /nonexistent/dir/w.safetensors"),
        "{e}"
    );
}

#[test]
fn open_and_read_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    std::fs::write(&p, file(&[("a", "F32", &[2], f32s(&[1.0, 2.0]))], None)).unwrap();
    let a = WeightFile::open(&p).unwrap().tensor("a", &[2]).unwrap();
    let b = WeightFile::read(&p).unwrap().tensor("a", &[2]).unwrap();
    assert_eq!(a, b);
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        WeightFile::open(&empty),
        Err(WeightError::TooShort { len: 0 })
    ));
}

#[test]
fn integer_tensors_load_as_i64_and_floats_are_refused_there() {
    let labels: Vec<u8> = [3i64, -1, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    let small: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = file(
        &[
            ("labels", "I64", &[3], labels),
            ("pair", "I32", &[2], small),
            ("flags", "U8", &[2], vec![0, 255]),
            ("w", "F32", &[1], f32s(&[1.0])),
        ],
        None,
    );
    let f = WeightFile::from_bytes(bytes).unwrap();
    assert_eq!(
        f.load_integers("labels").unwrap(),
        (vec![3, -1, 7], vec![3])
    );
    assert_eq!(f.load_integers("pair").unwrap().0, [1, 2]);
    assert_eq!(f.load_integers("flags").unwrap().0, [0, 255]);
    assert!(matches!(
        f.load_integers("w"),
        Err(WeightError::UnsupportedDtype { .. })
    ));
    assert!(matches!(
        f.load_integers("nope"),
        Err(WeightError::MissingKey { .. })
    ));
}

#[test]
fn counters_are_written_as_i64_scalars_atomically() {
    use resnet_weights::{Tensor, write_safetensors_with_counters};
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.safetensors");
    std::fs::write(&p, b"an older file").unwrap();
    let w = Tensor::from_vec(&[2, 1], vec![0.5, -1.5]).unwrap();
    let meta = HashMap::from([("arch".to_string(), "cifar-resnet20".to_string())]);
    write_safetensors_with_counters(
        &p,
        &[("bn1.weight", &w)],
        &[
            ("bn1.num_batches_tracked", 3),
            ("bn2.num_batches_tracked", -1),
        ],
        Some(meta),
    )
    .unwrap();
    let f = WeightFile::open(&p).unwrap();
    assert_eq!(f.load("bn1.weight").unwrap(), w);
    assert_eq!(
        f.load_integers("bn1.num_batches_tracked").unwrap(),
        (vec![3], vec![])
    );
    assert_eq!(
        f.info("bn2.num_batches_tracked").unwrap().dtype.to_string(),
        "I64"
    );
    assert_eq!(f.metadata()["arch"], "cifar-resnet20");
    // Only the file itself is left: the temporary one was renamed over it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.safetensors"]);
    // A name given twice is refused; a missing directory is a write error; nothing is left.
    let e = write_safetensors_with_counters(&p, &[("a", &w)], &[("a", 1)], None).unwrap_err();
    assert!(e.to_string().contains("\"a\" given twice"), "{e}");
    let e = write_safetensors_with_counters(
        dir.path().join("no/w.safetensors"),
        &[("a", &w)],
        &[],
        None,
    )
    .unwrap_err();
    assert!(matches!(e, WeightError::WriteIo { .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
