//! Layers: parameter checks, input checks, and agreement with the kernels.

use resnet_layers::*;

fn t(dims: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(dims, v).unwrap()
}

#[test]
fn conv_checks_its_parameters() {
    let cfg = Conv2dConfig::new(4, 6, 3).with_groups(2);
    assert_eq!(cfg.weight_shape(), [6, 2, 3, 3]);
    let e = Conv2d::new(cfg, Tensor::zeros(&[6, 4, 3, 3]).unwrap(), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Conv2d: weight has shape [6, 4, 3, 3], expected [6, 2, 3, 3]"
    );
    assert!(matches!(
        Conv2d::new(
            Conv2dConfig::new(4, 6, 3).with_groups(4),
            Tensor::zeros(&[6, 1, 3, 3]).unwrap(),
            None
        ),
        Err(LayerError::Config { .. })
    ));
    let with_bias = cfg.with_bias(true);
    assert!(Conv2d::new(with_bias, Tensor::zeros(&[6, 2, 3, 3]).unwrap(), None).is_err());
    assert!(
        Conv2d::new(
            with_bias,
            Tensor::zeros(&[6, 2, 3, 3]).unwrap(),
            Some(Tensor::zeros(&[5]).unwrap())
        )
        .is_err()
    );
}

#[test]
fn conv_checks_its_input() {
    let conv = Conv2d::new(
        Conv2dConfig::new(2, 1, 3),
        Tensor::zeros(&[1, 2, 3, 3]).unwrap(),
        None,
    )
    .unwrap();
    for dims in [&[1, 3, 5, 5][..], &[1, 2, 2, 5], &[2, 5, 5]] {
        let e = conv.forward(&Tensor::zeros(dims).unwrap()).unwrap_err();
        assert!(matches!(e, LayerError::InputShape { .. }), "{dims:?}: {e}");
    }
    let y = conv
        .forward(&Tensor::zeros(&[2, 2, 5, 4]).unwrap())
        .unwrap();
    assert_eq!(y.shape().dims(), &[2, 1, 3, 2]);
}

#[test]
fn nhwc_input_gives_nchw_output_with_the_same_values() {
    let conv = Conv2d::new(
        Conv2dConfig::new(2, 3, 3).with_padding(1).with_bias(true),
        t(
            &[3, 2, 3, 3],
            (0..54).map(|v| (v as f32 * 0.1).sin()).collect(),
        ),
        Some(t(&[3], vec![0.1, -0.2, 0.3])),
    )
    .unwrap();
    let x = t(&[1, 2, 4, 5], (0..40).map(|v| v as f32 / 7.0).collect());
    let a = conv.forward(&x).unwrap();
    let b = conv.forward(&x.to_layout(Layout::Nhwc).unwrap()).unwrap();
    assert_eq!(a, b);
    assert_eq!(b.layout(), Layout::Nchw);
}

#[test]
fn batch_norm_scale_shift_matches_forward() {
    let bn = BatchNorm2d::new(
        BatchNorm2dConfig::new(2),
        t(&[2], vec![1.5, 0.5]),
        t(&[2], vec![0.1, -0.1]),
        t(&[2], vec![0.2, -0.3]),
        t(&[2], vec![0.9, 1.7]),
    )
    .unwrap();
    let x = t(&[1, 2, 1, 2], vec![1.0, -1.0, 2.0, 0.5]);
    let y = bn.forward(&x).unwrap();
    let ss = bn.scale_shift();
    for (i, (&xv, &yv)) in x.as_slice().iter().zip(y.as_slice()).enumerate() {
        let (s, b) = ss[i / 2];
        assert!((f64::from(xv) * s + b - f64::from(yv)).abs() < 1e-6);
    }
    assert!(
        BatchNorm2d::new(
            BatchNorm2dConfig::new(2).with_eps(-1.0),
            t(&[2], vec![1.0; 2]),
            t(&[2], vec![0.0; 2]),
            t(&[2], vec![0.0; 2]),
            t(&[2], vec![1.0; 2]),
        )
        .is_err()
    );
}

#[test]
fn pools_and_linear() {
    let mp = MaxPool2d::new(MaxPool2dConfig::new(3).with_stride(2).with_padding(1)).unwrap();
    let x = t(&[1, 1, 3, 3], (1..=9).map(|v| -(v as f32)).collect());
    assert_eq!(
        mp.forward(&x).unwrap().as_slice(),
        &[-1.0, -2.0, -4.0, -5.0]
    );
    assert!(MaxPool2d::new(MaxPool2dConfig::new(2).with_padding(2)).is_err());
    let gap = AdaptiveAvgPool2d::new([1, 1]).unwrap();
    assert_eq!(gap.forward(&x).unwrap().as_slice(), &[-5.0]);
    assert!(AdaptiveAvgPool2d::new([0, 1]).is_err());
    let fc = Linear::new(
        LinearConfig::new(2, 1),
        t(&[1, 2], vec![1.0, 2.0]),
        Some(t(&[1], vec![0.5])),
    )
    .unwrap();
    assert_eq!(
        fc.forward(&t(&[2, 2], vec![1.0, 1.0, 0.0, -1.0]))
            .unwrap()
            .as_slice(),
        &[3.5, -1.5]
    );
    assert!(fc.forward(&t(&[1, 3], vec![0.0; 3])).is_err());
}

#[test]
fn add_and_relu() {
    let a = t(&[1, 1, 1, 2], vec![1.0, -3.0]);
    let b = t(&[1, 1, 1, 2], vec![0.5, 1.0]);
    assert_eq!(ReLU.forward(&add(&a, &b).unwrap()).as_slice(), &[1.5, 0.0]);
    // PyTorch's NaN contract: NaN passes through ReLU.
    let y = ReLU.forward(&t(&[3], vec![f32::NAN, -0.0, f32::INFINITY]));
    assert!(y.as_slice()[0].is_nan());
    assert_eq!(y.as_slice()[1].to_bits(), 0.0f32.to_bits());
    assert_eq!(y.as_slice()[2], f32::INFINITY);
    assert!(add(&a, &t(&[2], vec![0.0; 2])).is_err());
}

#[test]
fn pixel_shuffle() {
    let ps = PixelShuffle::new(2).unwrap();
    let x = t(
        &[1, 4, 1, 2],
        vec![10.0, 20.0, 11.0, 21.0, 12.0, 22.0, 13.0, 23.0],
    );
    let y = ps.forward(&x).unwrap();
    assert_eq!(y.shape().dims(), &[1, 1, 2, 4]);
    assert_eq!(
        y.as_slice(),
        &[10.0, 11.0, 20.0, 21.0, 12.0, 13.0, 22.0, 23.0]
    );
    assert!(ps.forward(&t(&[1, 3, 1, 1], vec![0.0; 3])).is_err());
    assert!(PixelShuffle::new(0).is_err());
}
