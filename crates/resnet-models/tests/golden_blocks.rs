//! Single residual blocks against torchvision (`blocks.safetensors`, copied into tests/data).

mod common;

use common::rel_err;
use resnet_models::{Backend, BlockKind, Network, ResNetConfig, resnet_block_plan};
use resnet_weights::{Prefixed, WeightFile};

/// The block alone, as a plan, on both kernel sets (with 1 and 2 threads on the fast one).
fn run_case(case: &str, cfg: ResNetConfig, in_c: usize, planes: usize, stride: usize) -> f64 {
    let file = WeightFile::open(common::blocks_file()).unwrap();
    let prefix = format!("{case}.");
    let src = Prefixed::new(&file, &prefix);
    let x = file.load(&format!("{case}.input")).unwrap();
    let expected = file.load(&format!("{case}.output")).unwrap();
    let mut worst: f64 = 0.0;
    for (backend, threads) in [(Backend::Naive, 1), (Backend::Fast, 1), (Backend::Fast, 2)] {
        let plan = resnet_block_plan(&cfg, in_c, planes, stride).unwrap();
        let net = Network::load(plan, &src, backend)
            .unwrap_or_else(|e| panic!("{case}: {e}"))
            .with_threads(threads)
            .unwrap();
        let y = net.output(&x, "output").unwrap();
        let err = rel_err(&y, &expected);
        eprintln!("{case} {backend} {threads} thread(s): relative error {err:.3e}");
        assert!(err < 1e-4, "{case} {backend}: relative error {err:e}");
        worst = worst.max(err);
    }
    worst
}

fn basic() -> ResNetConfig {
    ResNetConfig::new(BlockKind::Basic, vec![1])
}

fn bottleneck(groups: usize, wpg: usize) -> ResNetConfig {
    ResNetConfig::new(BlockKind::Bottleneck, vec![1])
        .with_groups(groups)
        .with_width_per_group(wpg)
}

#[test]
fn basic_identity() {
    run_case("basic_id", basic(), 16, 16, 1);
}

#[test]
fn basic_downsample() {
    run_case("basic_down", basic(), 16, 32, 2);
}

#[test]
fn bottleneck_downsample() {
    run_case("bottleneck_down", bottleneck(1, 64), 32, 16, 2);
}

#[test]
fn bottleneck_identity() {
    run_case("bottleneck_id", bottleneck(1, 64), 64, 16, 1);
}

#[test]
fn resnext_downsample() {
    run_case("resnext_down", bottleneck(8, 4), 64, 32, 2);
}

#[test]
fn wide_downsample() {
    run_case("wide_down", bottleneck(1, 128), 32, 16, 2);
}

#[test]
fn a_wrong_block_config_names_the_tensor() {
    // basic_down loaded as if it had no stride: the projection shape still fits, but loading
    // resnext_down with groups 1 must fail on conv2 with both shapes named.
    let file = WeightFile::open(common::blocks_file()).unwrap();
    let src = Prefixed::new(&file, "resnext_down.");
    let plan = resnet_block_plan(&bottleneck(1, 32), 64, 32, 2).unwrap();
    let e = Network::load(plan, &src, Backend::Fast).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("conv2.weight")
            && msg.contains("[16, 2, 3, 3]")
            && msg.contains("[16, 16, 3, 3]"),
        "{msg}"
    );
}
