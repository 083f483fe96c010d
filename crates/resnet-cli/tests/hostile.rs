//! Hostile input through the fuzzed entry points (`fuzz/entry.rs`): the seed corpora, every
//! crash input kept in `fuzz/regressions/`, and a proptest-driven byte mutator over the seeds —
//! the fallback `cargo xtask fuzz` runs where cargo-fuzz cannot. `RESNET_FUZZ_CASES` sets the
//! number of mutated inputs per target (default 300).

#![allow(dead_code)]

include!("../../../fuzz/entry.rs");

use proptest::prelude::*;
use std::path::PathBuf;

type Entry = fn(&[u8]);
const TARGETS: [(&str, Entry); 4] = [
    ("weights_file", weights_file),
    ("torch_checkpoint", torch_checkpoint),
    ("tensor_bytes", tensor_bytes),
    ("image_preprocess", image_preprocess),
];

fn files(dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(dir)
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&d)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .map(|p| {
                    let b = std::fs::read(&p).unwrap();
                    (p, b)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn seeds_and_regressions_replay_cleanly() {
    for (target, entry) in TARGETS {
        let seeds = files("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (path, bytes) in seeds.iter().chain(&files("regressions", target)) {
            eprintln!("{target}: {}", path.display());
            entry(bytes);
        }
    }
}

fn cases() -> u32 {
    std::env::var("RESNET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// A mutation of a seed: flip bytes, overwrite runs, truncate, splice in interesting values.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, Vec<u8>),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    HeaderLen(u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1u64 << 32),
        Just(0u64),
        Just(64u64 << 20),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..32)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        interesting.prop_map(Mutation::HeaderLen),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    b[i % n] ^= x;
                }
            }
            Mutation::Set(i, v) => {
                for (k, x) in v.iter().enumerate() {
                    if let Some(slot) = b.get_mut((i % n) + k) {
                        *slot = *x;
                    }
                }
            }
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::HeaderLen(v) => {
                if b.len() >= 8 {
                    b[..8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_seeds_never_crash(target in 0usize..3, seed in any::<usize>(),
                                 muts in proptest::collection::vec(mutation(), 1..6)) {
        let (name, entry) = TARGETS[target];
        let seeds = files("seeds", name);
        let (_, bytes) = &seeds[seed % seeds.len()];
        entry(&apply(bytes.clone(), &muts));
    }
}

#[test]
fn the_torch_checkpoint_target_wraps_a_valid_pickle_into_a_loadable_archive() {
    // Otherwise the target would fuzz only the archive's error path.
    let pkl = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds/torch_checkpoint/strided_pth.pkl"),
    )
    .unwrap();
    let file = resnet_weights::WeightFile::from_bytes(torch_archive(&pkl)).unwrap();
    assert_eq!(file.tensors().count(), 10);
    assert!(file.load("permuted").is_ok());
}
