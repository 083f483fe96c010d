//! Criterion benchmarks of resnet-rs live in `benches/`; `cargo xtask bench` drives them.
