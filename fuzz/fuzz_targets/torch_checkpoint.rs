//! cargo-fuzz target: see `entry.rs` for what `torch_checkpoint` checks.
#![no_main]
#![forbid(unsafe_code)]
#![allow(dead_code)]

include!("../entry.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| torch_checkpoint(data));
