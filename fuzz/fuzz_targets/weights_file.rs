//! cargo-fuzz target: see `entry.rs` for what `weights_file` checks.
#![no_main]
#![forbid(unsafe_code)]
#![allow(dead_code)]

include!("../entry.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| weights_file(data));
