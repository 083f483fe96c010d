// The fuzzed entry points, shared by the cargo-fuzz targets (fuzz_targets/*.rs) and the
// workspace test that replays seeds and regressions and runs the proptest fallback
// (crates/resnet-cli/tests/hostile.rs), through `include!`. Each must return normally for any
// input: errors are values, never panics.

/// Arbitrary bytes as a weights file, then as a model.
pub fn weights_file(data: &[u8]) {
    if let Ok(file) = resnet_weights::WeightFile::from_bytes(data.to_vec()) {
        for (name, _) in file.tensors() {
            let _ = file.load(name);
        }
        if let Ok(cfg) = resnet_models::infer_config(&file) {
            let _ = resnet_models::ResNet::load(&file, &cfg);
        }
    }
}

/// Arbitrary shapes and bytes through the tensor constructors.
pub fn tensor_bytes(data: &[u8]) {
    use resnet_tensor::{Layout, Tensor};
    if data.len() < 2 {
        return;
    }
    let rank = usize::from(data[0] % 8);
    let layout = if data[1].is_multiple_of(2) { Layout::Nchw } else { Layout::Nhwc };
    let mut dims = Vec::new();
    let mut rest = &data[2..];
    for _ in 0..rank {
        if rest.len() < 8 {
            return;
        }
        let (d, r) = rest.split_at(8);
        // Mostly small dimensions, sometimes huge ones.
        let v = u64::from_le_bytes(d.try_into().expect("8 bytes"));
        dims.push(if v & 1 == 0 { (v >> 1) as usize % 17 } else { (v >> 1) as usize });
        rest = r;
    }
    if let Ok(t) = Tensor::from_le_bytes(&dims, layout, rest) {
        assert_eq!(t.len() * 4, rest.len());
        if let Ok(u) = t.to_layout(Layout::Nchw) {
            let _ = u.image(0);
            let _ = u.reshape(&[t.len()]);
        }
    }
}

/// Arbitrary bytes as an image file through decoding and the ImageNet preprocessing.
pub fn image_preprocess(data: &[u8]) {
    let pre = resnet_image::Preprocess::imagenet().with_resize(Some(32)).with_crop(Some(24));
    if let Ok(t) = pre.from_bytes(data) {
        assert_eq!(t.shape().dims(), &[1, 3, 24, 24]);
        assert!(t.as_slice().iter().all(|v| v.is_finite()));
    }
}

/// A zip archive of stored entries, as `torch.save` writes (CRCs left 0: the checkpoint
/// reader maps stored entries and never inflates them).
pub fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    let u16le = |v: usize| (v as u16).to_le_bytes();
    let u32le = |v: usize| (v as u32).to_le_bytes();
    for (name, data) in entries {
        let offset = out.len();
        for part in [
            &b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..],
            &u32le(data.len()),
            &u32le(data.len()),
            &u16le(name.len()),
            &u16le(0),
            name.as_bytes(),
            data,
        ] {
            out.extend_from_slice(part);
        }
        for part in [
            &b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..],
            &u32le(data.len()),
            &u32le(data.len()),
            &u16le(name.len()),
            &[0; 12],
            &u32le(offset),
            name.as_bytes(),
        ] {
            central.extend_from_slice(part);
        }
    }
    let start = out.len();
    out.extend_from_slice(&central);
    for part in [
        &b"PK\x05\x06\x00\x00\x00\x00"[..],
        &u16le(entries.len()),
        &u16le(entries.len()),
        &u32le(central.len()),
        &u32le(start),
        &[0, 0],
    ] {
        out.extend_from_slice(part);
    }
    out
}

/// Arbitrary bytes as the pickle (`data.pkl`) of a PyTorch zip checkpoint whose storages
/// `data/0` … `data/7` hold 128 bytes each: the restricted pickle reader behind a valid
/// archive, where whole-file mutation would mostly break the zip. Then as a model, like
/// `weights_file`.
pub fn torch_checkpoint(data: &[u8]) {
    if let Ok(file) = resnet_weights::WeightFile::from_bytes(torch_archive(data)) {
        for (name, _) in file.tensors() {
            let _ = file.load(name);
            let _ = file.load_integers(name);
        }
        if let Ok(cfg) = resnet_models::infer_config(&file) {
            let _ = resnet_models::ResNet::load(&file, &cfg);
        }
    }
}

/// The archive `torch_checkpoint` wraps its input in: `pkl` as `archive/data.pkl`, and
/// storages `archive/data/0` … `7` of 128 bytes each.
pub fn torch_archive(pkl: &[u8]) -> Vec<u8> {
    let storage = [0x3fu8; 128];
    let names: Vec<String> = (0..8).map(|i| format!("archive/data/{i}")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", pkl)];
    for name in &names {
        entries.push((name, &storage));
    }
    stored_zip(&entries)
}
