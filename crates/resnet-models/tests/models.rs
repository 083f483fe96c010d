//! Model construction, inference of the architecture, and input handling, without fixtures.

use resnet_models::*;
use resnet_tensor::{Layout, Tensor};
use resnet_weights::{NameScheme, TensorMap, WeightFile, WeightSource};

fn small(cfg: ResNetConfig) -> ResNetConfig {
    // Same block, groups and width, fewer blocks: quick to build and run.
    let n = cfg.layers.len();
    ResNetConfig {
        layers: vec![1; n],
        ..cfg
    }
    .with_num_classes(7)
}

#[test]
fn constructors_match_torchvision() {
    let cases = [
        (resnet18(1000), "resnet18", 512),
        (resnet34(1000), "resnet34", 512),
        (resnet50(1000), "resnet50", 2048),
        (resnet101(1000), "resnet101", 2048),
        (resnet152(1000), "resnet152", 2048),
        (resnext50_32x4d(1000), "resnext50_32x4d", 2048),
        (resnext101_32x8d(1000), "resnext101_32x8d", 2048),
        (resnext101_64x4d(1000), "resnext101_64x4d", 2048),
        (wide_resnet50_2(1000), "wide_resnet50_2", 2048),
        (wide_resnet101_2(1000), "wide_resnet101_2", 2048),
    ];
    for (cfg, name, dim) in cases {
        cfg.validate().unwrap();
        assert_eq!(cfg.name(), name);
        assert_eq!(cfg.feature_dim(), dim);
    }
    assert_eq!(resnext101_32x8d(1).bottleneck_width(64), 256);
    assert_eq!(wide_resnet50_2(1).bottleneck_width(64), 128);
    assert_eq!(resnet18(3).plain().name(), "plain_resnet18");
}

#[test]
fn invalid_configs_are_refused() {
    assert!(
        ResNetConfig::new(BlockKind::Basic, vec![])
            .validate()
            .is_err()
    );
    assert!(
        ResNetConfig::new(BlockKind::Basic, vec![2, 0])
            .validate()
            .is_err()
    );
    assert!(resnet18(10).with_groups(2).validate().is_err());
    assert!(resnet50(10).with_width_per_group(0).validate().is_err());
    assert!(matches!(
        ResNet::random(&resnet18(10).with_in_channels(0), 1),
        Err(ModelError::Config(_))
    ));
}

#[test]
fn architecture_is_inferred_from_keys_and_shapes() {
    for cfg in [
        resnet18(1000),
        small(resnet50(1000)),
        small(resnext50_32x4d(1000)),
        small(resnext101_64x4d(1000)),
        small(wide_resnet101_2(1000)),
        small(resnet34(1000)).with_in_channels(1),
        small(resnet50(1000)).plain(),
        ResNetConfig::new(BlockKind::Bottleneck, vec![2, 3]).with_num_classes(4),
        ResNetConfig::new(BlockKind::Basic, vec![1, 1, 1, 1, 1]).with_num_classes(4),
    ] {
        let map = random_tensor_map(&cfg, 3).unwrap();
        assert_eq!(infer_config(&map).unwrap(), cfg, "{}", cfg.name());
        let (_, unused) = ResNet::load_checked(&map, &cfg, Strictness::Strict).unwrap();
        assert!(unused.is_empty());
    }
}

#[test]
fn inference_fails_clearly_on_non_resnet_files() {
    let mut map = TensorMap::new();
    map.insert("encoder.weight", Tensor::zeros(&[3, 3]).unwrap());
    let e = infer_config(&map).unwrap_err();
    assert!(e.to_string().contains("conv1.weight"), "{e}");
}

#[test]
fn random_init_is_seeded_and_torchvision_like() {
    let cfg = resnet18(10);
    let a = random_tensor_map(&cfg, 7).unwrap();
    let b = random_tensor_map(&cfg, 7).unwrap();
    let c = random_tensor_map(&cfg, 8).unwrap();
    let w = |m: &TensorMap| m.get("layer3.1.conv2.weight").unwrap().to_vec();
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
    // kaiming_normal_ fan_out: std = sqrt(2 / (256 * 9)) ≈ 0.0295
    let v = w(&a);
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    let std = (v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / v.len() as f64)
        .sqrt();
    assert!(
        mean.abs() < 1e-3 && (std / (2.0f64 / 2304.0).sqrt() - 1.0).abs() < 0.02,
        "{mean} {std}"
    );
    assert_eq!(a.get("bn1.weight").unwrap().as_slice(), &[1.0; 64]);
}

#[test]
fn any_batch_and_odd_sizes() {
    let model = ResNet::random(&small(resnet50(1000)), 1).unwrap();
    for (n, h, w) in [(1, 1, 1), (3, 33, 47), (2, 64, 31)] {
        let len = n * 3 * h * w;
        let x = Tensor::from_vec(
            &[n, 3, h, w],
            (0..len).map(|i| (i % 17) as f32 / 17.0).collect(),
        )
        .unwrap();
        let s = model.forward_stages(&x).unwrap();
        assert_eq!(s.logits.shape().dims(), &[n, 7]);
        assert_eq!(s.pool.shape().dims(), &[n, 2048]);
        assert_eq!(s.stem.shape().dims()[2], (h.div_ceil(2)).div_ceil(2));
        assert!(s.logits.as_slice().iter().all(|v| v.is_finite()));
        // Each image of a batch is independent of the others.
        if n > 1 {
            let one = model.forward(&x.image(1).unwrap().to_tensor()).unwrap();
            assert_eq!(one.as_slice(), &s.logits.as_slice()[7..14]);
        }
        // NHWC input gives the same result.
        let nhwc = x.to_layout(Layout::Nhwc).unwrap();
        assert_eq!(model.forward(&nhwc).unwrap(), s.logits);
        assert_eq!(model.forward_features(&x).unwrap(), s.pool);
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = ResNet::random(&small(resnet18(1000)), 1).unwrap();
    for dims in [&[1, 3, 8][..], &[1, 4, 8, 8], &[1, 3, 0, 8]] {
        let x = Tensor::zeros(dims).unwrap();
        assert!(
            matches!(model.forward(&x), Err(ModelError::Input { .. })),
            "{dims:?}"
        );
    }
    // An empty batch is fine and gives empty logits.
    let y = model
        .forward(&Tensor::zeros(&[0, 3, 8, 8]).unwrap())
        .unwrap();
    assert_eq!(y.shape().dims(), &[0, 7]);
}

#[test]
fn plain_twin_differs_and_residual_matters() {
    let cfg = small(resnet18(1000));
    let map = random_tensor_map(&cfg, 5).unwrap();
    let res = ResNet::load(&map, &cfg).unwrap();
    let plain = ResNet::load(&map, &cfg.clone().plain()).unwrap();
    let x = Tensor::from_vec(
        &[1, 3, 16, 16],
        (0..768).map(|i| (i as f32 * 0.37).sin()).collect(),
    )
    .unwrap();
    assert_ne!(res.forward(&x).unwrap(), plain.forward(&x).unwrap());
}

#[test]
fn top_k_orders_by_probability() {
    let logits = Tensor::from_vec(&[2, 3], vec![0.0, 2.0, 1.0, 5.0, 5.0, -1.0]).unwrap();
    let t = top_k(&logits, 2).unwrap();
    assert_eq!(t[0].iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(t[1].iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1]);
    assert!((t[1][0].1 - t[1][1].1).abs() < 1e-7);
}

#[test]
fn models_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ResNet>();
}

#[test]
fn from_file_round_trip_through_safetensors() {
    let cfg = small(resnext50_32x4d(1000));
    let map = random_tensor_map(&cfg, 9).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    std::fs::write(&p, map.to_safetensors_bytes(None).unwrap()).unwrap();
    let file = WeightFile::open(&p).unwrap();
    assert_eq!(file.scheme(), NameScheme::Torchvision);
    assert_eq!(file.names().len(), map.len());
    let m = ResNet::from_file(&p).unwrap();
    assert_eq!(m.config(), &cfg);
    let x = Tensor::from_vec(&[1, 3, 20, 20], vec![0.5; 1200]).unwrap();
    assert_eq!(
        m.forward(&x).unwrap(),
        ResNet::load(&map, &cfg).unwrap().forward(&x).unwrap()
    );
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let num = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    let den = b
        .as_slice()
        .iter()
        .map(|y| f64::from(y.abs()))
        .fold(0.0, f64::max);
    num / den
}

#[test]
fn fast_path_matches_naive_for_every_family() {
    for cfg in [
        small(resnet18(1000)),
        small(resnet50(1000)),
        small(resnext50_32x4d(1000)),
        small(resnext101_64x4d(1000)),
        small(wide_resnet50_2(1000)),
        small(resnet34(1000)).plain(),
        small(resnet50(1000)).plain().with_in_channels(1),
    ] {
        let fast = ResNet::random(&cfg, 11).unwrap();
        assert_eq!(fast.backend(), Backend::Fast);
        let naive = ResNet::random_on(&cfg, 11, Backend::Naive).unwrap();
        assert_eq!(naive.backend(), Backend::Naive);
        let c = cfg.in_channels;
        let x = Tensor::from_vec(
            &[2, c, 37, 29],
            (0..2 * c * 37 * 29)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect(),
        )
        .unwrap();
        let (a, b) = (
            fast.forward_stages(&x).unwrap(),
            naive.forward_stages(&x).unwrap(),
        );
        for ((name, ta), (_, tb)) in a.named().into_iter().zip(b.named()) {
            let e = rel(ta, tb);
            assert!(e < 1e-5, "{} {name}: {e:e}", cfg.name());
        }
    }
}

#[test]
fn outputs_are_bitwise_identical_for_any_thread_count() {
    let model = ResNet::random(&small(resnext50_32x4d(1000)), 2).unwrap();
    let x = Tensor::from_vec(
        &[3, 3, 45, 51],
        (0..3 * 3 * 45 * 51)
            .map(|i| (i as f32 * 0.013).sin())
            .collect(),
    )
    .unwrap();
    let reference = model
        .clone()
        .with_threads(1)
        .unwrap()
        .forward_stages(&x)
        .unwrap();
    for t in [2, 3, 5] {
        let m = model.clone().with_threads(t).unwrap();
        assert_eq!(m.threads(), t);
        let s = m.forward_stages(&x).unwrap();
        for ((name, a), (_, b)) in s.named().into_iter().zip(reference.named()) {
            assert_eq!(a.as_slice(), b.as_slice(), "{t} threads, {name}");
        }
    }
    assert!(model.with_threads(0).is_err());
}

#[test]
fn one_model_serves_concurrent_callers() {
    let model = std::sync::Arc::new(
        ResNet::random(&small(resnet18(1000)), 4)
            .unwrap()
            .with_threads(2)
            .unwrap(),
    );
    let inputs: Vec<Tensor> = (0..4)
        .map(|k| {
            Tensor::from_vec(
                &[1, 3, 24, 24],
                (0..3 * 24 * 24)
                    .map(|i| ((i + k * 31) % 13) as f32 / 13.0)
                    .collect(),
            )
            .unwrap()
        })
        .collect();
    let expected: Vec<Tensor> = inputs.iter().map(|x| model.forward(x).unwrap()).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (model, inputs, expected) = (&model, &inputs, &expected);
            s.spawn(move || {
                for i in 0..20 {
                    let k = (t + i) % inputs.len();
                    assert_eq!(model.forward(&inputs[k]).unwrap(), expected[k]);
                }
            });
        }
    });
}

/// Borrowed input (`forward_view`, `forward_features_view`) gives bitwise the owned input's
/// results, in either layout, and is checked the same way.
#[test]
fn forward_view_equals_forward() {
    use resnet_tensor::TensorView;
    let model = resnet_models::ResNet::random(&resnet_models::resnet18(7), 3)
        .unwrap()
        .with_threads(2)
        .unwrap();
    let dims = [2, 3, 19, 23];
    let data: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| ((i * 7919) % 257) as f32 / 128.0 - 1.0)
        .collect();
    let owned = resnet_tensor::Tensor::from_vec(&dims, data.clone()).unwrap();
    let view = TensorView::new(&dims, Layout::Nchw, &data).unwrap();
    assert_eq!(
        model.forward_view(view).unwrap().as_slice(),
        model.forward(&owned).unwrap().as_slice()
    );
    assert_eq!(
        model.forward_features_view(view).unwrap().as_slice(),
        model.forward_features(&owned).unwrap().as_slice()
    );
    let nhwc = owned.to_layout(Layout::Nhwc).unwrap();
    assert_eq!(
        model.forward_view(nhwc.view()).unwrap().as_slice(),
        model.forward(&owned).unwrap().as_slice()
    );
    let bad = TensorView::new(&[1, 4, 8, 8], Layout::Nchw, &data[..256]).unwrap();
    assert!(model.forward_view(bad).is_err());
}

/// Every output of a whole-batch run ([`Network::run`]: each step over all images at once).
struct WholeBatch(Vec<(String, Tensor)>);

impl Observer for WholeBatch {
    fn step(&mut self, e: &StepEvent<'_>) -> Result<Flow, ModelError> {
        if let (Step::Output { name, .. }, Some(v)) = (e.step, &e.values) {
            self.0.push((name.clone(), v.to_tensor()?));
        }
        Ok(Flow::Continue)
    }
}

/// A batch runs image by image (as many side by side as there are threads, the images left
/// over one at a time on all threads), each output written into its place: bitwise each
/// image's own run and the whole batch's run, for every family, precision and thread count.
#[test]
fn a_batch_is_its_images() {
    let (n, h, w) = (5, 29, 23);
    let x = Tensor::from_vec(
        &[n, 3, h, w],
        (0..n * 3 * h * w)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect(),
    )
    .unwrap();
    let mut precisions = vec![Precision::F32];
    if Precision::Bf16.is_available() {
        precisions.push(Precision::Bf16);
    } else {
        eprintln!("\n!!!!!!!! SKIPPED: no AVX512-BF16: bf16 batches not checked !!!!!!!!\n");
    }
    for precision in precisions {
        let resnets = [
            small(resnet18(1000)).into(),
            small(resnet50(1000)).into(),
            small(resnext50_32x4d(1000)).into(),
            Arch::from(CifarConfig::new(8, 10).with_in_channels(3)),
        ];
        let mut nets: Vec<(String, Network)> = Vec::new();
        for (seed, arch) in resnets.iter().enumerate() {
            let m = ResNet::random_with(arch, seed as u64, Backend::Fast, precision).unwrap();
            nets.push((arch.name(), m.network().clone()));
        }
        let edsr = Edsr::random_with(&EdsrConfig::baseline(2), 9, precision).unwrap();
        nets.push(("edsr".into(), edsr.network().clone()));
        for (name, net) in nets {
            for threads in [1, 2, 3] {
                let net = net.clone().with_threads(threads).unwrap();
                let what = format!("{name} {precision:?} {threads} thread(s)");
                let batch = net.outputs(&x).unwrap();
                let mut whole = WholeBatch(Vec::new());
                net.run(&x, &mut whole).unwrap();
                assert_eq!(batch, whole.0, "{what}: split against whole batch");
                for (out, t) in [&batch[0], batch.last().unwrap()] {
                    assert_eq!(&net.output(&x, out).unwrap(), t, "{what}: only {out}");
                }
                for i in 0..n {
                    let alone = net.outputs(&x.image(i).unwrap().to_tensor()).unwrap();
                    for ((out, b), (_, a)) in batch.iter().zip(&alone) {
                        let per = a.len();
                        assert_eq!(
                            &b.as_slice()[i * per..(i + 1) * per],
                            a.as_slice(),
                            "{what}: image {i}, {out}"
                        );
                    }
                }
            }
        }
    }
}
