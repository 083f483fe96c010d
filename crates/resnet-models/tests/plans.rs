//! Plans as data: the slot allocator's invariants on every family, shape tracing, printing,
//! and observers that watch or stop a run.

use resnet_models::*;
use resnet_tensor::Tensor;

fn small(cfg: ResNetConfig) -> ResNetConfig {
    ResNetConfig {
        layers: cfg.layers.iter().map(|&n| n.min(2)).collect(),
        ..cfg
    }
}

/// Every slot a step reads was written before and not overwritten since by a step the
/// reader does not expect; a step never writes a slot it reads.
fn check_slots(plan: &Plan) {
    let mut written = vec![false; plan.slots()];
    for (i, step) in plan.steps().iter().enumerate() {
        let mut reads: Vec<Slot> = step.src().into_iter().collect();
        if let Step::Conv(c) = step {
            reads.extend(c.residual);
        }
        for r in &reads {
            assert!(
                written[r.0],
                "step {i} ({step}) reads {r} before it is written"
            );
        }
        if let Some(d) = step.dst() {
            assert!(
                !reads.contains(&d),
                "step {i} ({step}) writes a slot it reads"
            );
            written[d.0] = true;
        }
    }
}

#[test]
fn the_slot_allocator_never_aliases_on_any_family() {
    let mut configs: Vec<ResNetConfig> = ResNetConfig::NAMES
        .iter()
        .map(|n| ResNetConfig::by_name(n, 10).unwrap())
        .collect();
    configs.push(resnet50(10).plain());
    configs.push(ResNetConfig::new(BlockKind::Basic, vec![1, 1, 1, 1, 1]).with_in_channels(1));
    for cfg in configs {
        let plan = resnet_plan(&cfg).unwrap();
        check_slots(&plan);
        // Input, a block's inner maps, its projection and its output: never more than four.
        assert!(plan.slots() <= 4, "{}: {} slots", cfg.name(), plan.slots());
        let outputs: Vec<&str> = plan.outputs().collect();
        let mut want = vec!["stem".to_string()];
        want.extend((1..=cfg.layers.len()).map(|s| format!("layer{s}")));
        want.extend(["pool".into(), "logits".into()]);
        assert_eq!(outputs, want, "{}", cfg.name());
        let convs = plan.convs().count();
        let per_block = match cfg.block {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        };
        let blocks: usize = cfg.layers.iter().sum();
        let projections = plan
            .convs()
            .filter(|c| c.conv.name.ends_with("downsample"))
            .count();
        assert_eq!(convs, 1 + per_block * blocks + projections);
        assert_eq!(projections > 0, cfg.shortcuts, "{}", cfg.name());
    }
    for shortcut in [CifarShortcut::A, CifarShortcut::B, CifarShortcut::None] {
        for depth in [8, 20, 56] {
            let cfg = CifarConfig::new(depth, 10).with_shortcut(shortcut);
            let plan = cifar_plan(&cfg).unwrap();
            check_slots(&plan);
            assert!(plan.slots() <= 4, "{}", cfg.name());
            let a = plan
                .steps()
                .iter()
                .filter(|s| matches!(s, Step::SubsamplePad { .. }))
                .count();
            assert_eq!(a, if shortcut == CifarShortcut::A { 2 } else { 0 });
            let out = plan.trace([2, 3, 33, 31]).unwrap();
            assert_eq!(out.last().unwrap().1, [2, 10, 1, 1]);
        }
    }
    assert!(cifar_plan(&CifarConfig::new(21, 10)).is_err());
    for scale in [1, 2, 3, 4, 8] {
        let cfg = EdsrConfig {
            n_resblocks: 3,
            ..EdsrConfig::baseline(scale)
        };
        let plan = edsr_plan(&cfg).unwrap();
        check_slots(&plan);
        assert!(plan.slots() <= 4);
        let out = plan.trace([1, 3, 5, 7]).unwrap().last().unwrap().1;
        assert_eq!(out, [1, 3, 5 * scale, 7 * scale]);
    }
}

#[test]
fn tracing_gives_every_steps_dims_and_names_a_step_that_does_not_fit() {
    let plan = resnet_plan(&resnet50(1000)).unwrap();
    let trace = plan.trace([2, 3, 224, 224]).unwrap();
    let dims_of = |name: &str| {
        plan.steps()
            .iter()
            .zip(&trace)
            .find(|(s, _)| s.name() == name)
            .map(|(_, d)| d.1)
            .unwrap()
    };
    assert_eq!(dims_of("conv1"), [2, 64, 112, 112]);
    assert_eq!(dims_of("layer4.2.conv3"), [2, 2048, 7, 7]);
    assert_eq!(dims_of("fc"), [2, 1000, 1, 1]);
    let text = plan.describe([1, 3, 224, 224]).unwrap();
    assert_eq!(text.lines().count(), plan.steps().len());
    assert!(text.contains("[layer2.0.downsample]"), "{text}");
    // Wrong channels: the error names the first step and what it expected.
    let e = plan.trace([1, 4, 224, 224]).unwrap_err().to_string();
    assert!(
        e.contains("conv1") && e.contains("expected 3 channels"),
        "{e}"
    );
}

/// Counts steps and stops after the one named.
struct StopAfter<'a> {
    name: &'a str,
    seen: Vec<String>,
}

impl Observer for StopAfter<'_> {
    fn step(&mut self, e: &StepEvent<'_>) -> Result<Flow, ModelError> {
        self.seen.push(e.step.name().to_string());
        assert!(e.seconds >= 0.0);
        if let Step::Output { .. } = e.step {
            let v = e.values.expect("outputs carry their values");
            assert_eq!(v.data.len(), v.dims.iter().product::<usize>());
        }
        Ok(if e.step.name() == self.name {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

#[test]
fn an_observer_sees_every_step_in_order_and_can_stop_the_run() {
    let model = ResNet::random(&small(resnet18(10)), 3).unwrap();
    let x = Tensor::zeros(&[1, 3, 32, 32]).unwrap();
    let mut all = StopAfter {
        name: "",
        seen: Vec::new(),
    };
    model.network().run(&x, &mut all).unwrap();
    let names: Vec<&str> = model.plan().steps().iter().map(Step::name).collect();
    assert_eq!(all.seen, names);
    let mut early = StopAfter {
        name: "layer2",
        seen: Vec::new(),
    };
    model.network().run(&x, &mut early).unwrap();
    assert_eq!(early.seen.last().map(String::as_str), Some("layer2"));
    assert!(early.seen.len() < names.len());
    // The profile is an observer too: one row per computing step.
    let profile = model.profile(&x).unwrap();
    let computing = model
        .plan()
        .steps()
        .iter()
        .filter(|s| !matches!(s, Step::Output { .. }))
        .count();
    assert_eq!(profile.len(), computing);
    assert!(profile.iter().any(|l| l.name == "fc" && l.macs == 512 * 10));
}

#[test]
fn a_hand_written_plan_runs_on_both_kernel_sets() {
    // conv -> relu -> max-pool -> pool -> linear, written with the builder by hand.
    let (mut b, x) = PlanBuilder::new(2);
    let h = b.conv(ConvSpec::new("c", "c", 2, 4, 3).with_bias(), x, None, true);
    b.free(x);
    let p = b.max_pool(h, 2, 2, 0);
    b.free(h);
    let f = b.global_avg_pool(p);
    b.free(p);
    let y = b.linear("fc", "fc", f, 4, 3);
    b.output("y", y);
    let plan = b.finish();
    let mut w = resnet_weights::TensorMap::new();
    let vals = |n: usize| (0..n).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>();
    w.insert(
        "c.weight",
        Tensor::from_vec(&[4, 2, 3, 3], vals(72)).unwrap(),
    );
    w.insert("c.bias", Tensor::from_vec(&[4], vals(4)).unwrap());
    w.insert("fc.weight", Tensor::from_vec(&[3, 4], vals(12)).unwrap());
    w.insert("fc.bias", Tensor::from_vec(&[3], vals(3)).unwrap());
    let x = Tensor::from_vec(&[2, 2, 7, 9], vals(252)).unwrap();
    let fast = Network::load(plan.clone(), &w, Backend::Fast).unwrap();
    let naive = Network::load(plan, &w, Backend::Naive).unwrap();
    let (a, b) = (
        fast.output(&x, "y").unwrap(),
        naive.output(&x, "y").unwrap(),
    );
    assert_eq!(a.shape().dims(), &[2, 3]);
    for (p, q) in a.as_slice().iter().zip(b.as_slice()) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
    assert!(fast.output(&x, "nope").is_err());
}

#[test]
fn a_plan_can_limit_the_winograd_tile() {
    // One 3x3 conv of 16 -> 16 channels: F(4x4) by default, F(2x2) at a limit of 2 or 3, none
    // below; the outputs agree within rounding with the reference kernels' either way.
    let vals = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<_>>();
    let mut w = resnet_weights::TensorMap::new();
    w.insert(
        "c.weight",
        Tensor::from_vec(&[16, 16, 3, 3], vals(16 * 16 * 9, 0.37)).unwrap(),
    );
    w.insert("c.bias", Tensor::from_vec(&[16], vals(16, 0.11)).unwrap());
    let x = Tensor::from_vec(&[1, 16, 13, 11], vals(16 * 13 * 11, 0.53)).unwrap();
    let mut want = None;
    for (limit, algo) in [
        (None, "winograd-f4x4-3x3"),
        (Some(4), "winograd-f4x4-3x3"),
        (Some(3), "winograd-f2x2-3x3"),
        (Some(2), "winograd-f2x2-3x3"),
        (Some(1), "im2col-tiled-gemm"),
        (Some(0), "im2col-tiled-gemm"),
    ] {
        let (mut b, x0) = PlanBuilder::new(16);
        if let Some(m) = limit {
            b.limit_winograd_tile(m);
        }
        let h = b.conv(
            ConvSpec::new("c", "c", 16, 16, 3).with_bias(),
            x0,
            None,
            false,
        );
        b.output("y", h);
        let plan = b.finish();
        assert_eq!(plan.winograd_tile(), limit.unwrap_or(4));
        let fast = Network::load(plan.clone(), &w, Backend::Fast).unwrap();
        let conv = fast.profile(&x).unwrap();
        let conv = conv.iter().find(|l| l.name == "c").unwrap();
        assert_eq!(conv.algo.unwrap().to_string(), algo, "limit {limit:?}");
        let want = want.get_or_insert_with(|| {
            Network::load(plan, &w, Backend::Naive)
                .unwrap()
                .output(&x, "y")
                .unwrap()
        });
        let got = fast.output(&x, "y").unwrap();
        let top = want.as_slice().iter().fold(0f32, |a, v| a.max(v.abs()));
        for (p, q) in got.as_slice().iter().zip(want.as_slice()) {
            assert!((p - q).abs() <= 1e-5 * top, "limit {limit:?}: {p} vs {q}");
        }
    }
}
