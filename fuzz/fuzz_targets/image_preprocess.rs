//! cargo-fuzz target: see `entry.rs` for what `image_preprocess` checks.
#![no_main]
#![forbid(unsafe_code)]
#![allow(dead_code)]

include!("../entry.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| image_preprocess(data));
