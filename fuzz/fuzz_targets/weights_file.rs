//! Arbitrary bytes as a weights file, then as a model: typed errors, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = resnet_weights::WeightFile::from_bytes(data.to_vec()) {
        for (name, _) in file.tensors() {
            let _ = file.load(name);
        }
        if let Ok(cfg) = resnet_models::infer_config(&file) {
            let _ = resnet_models::ResNet::load(&file, &cfg);
        }
    }
});
