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
    let layout = if data[1] % 2 == 0 { Layout::Nchw } else { Layout::Nhwc };
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
