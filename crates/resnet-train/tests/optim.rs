//! The optimisers, priors and schedules against hand-computed values.
//!
//! The SGD cases use powers of two, so every intermediate is exact and the expected values are
//! exact; AdamW is checked against a float64 evaluation of PyTorch's documented algorithm
//! (values written out below) to f32 rounding.

use resnet_train::optim::{
    AdamW, AdamWConfig, DecayPolicy, OptimError, ParamGroup, Prior, STEM_CONV, Schedule, Sgd,
    SgdConfig, StateTensor, dirac, identity_prior_loss, identity_prior_term, is_norm_or_bias,
    param_group_for, prior_term,
};

type R = Result<(), OptimError>;

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn state_bits(state: &[StateTensor]) -> Vec<(String, Vec<u32>, Vec<usize>)> {
    state
        .iter()
        .map(|t| (t.name.clone(), bits(&t.data), t.shape.clone()))
        .collect()
}

/// `|ours - reference| <= tol * max(|reference|, floor)` elementwise.
fn assert_close(ours: &[f32], reference: &[f64], tol: f64, floor: f64) {
    assert_eq!(ours.len(), reference.len());
    for (i, (&o, &r)) in ours.iter().zip(reference).enumerate() {
        let err = (f64::from(o) - r).abs();
        assert!(
            err <= tol * r.abs().max(floor),
            "element {i}: {o} vs {r} (error {err})"
        );
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

// ---------------------------------------------------------------- SGD

#[test]
fn sgd_plain_step() -> R {
    let mut sgd = Sgd::try_new(SgdConfig::new(0.5))?;
    let mut w = [1.0f32, -2.0];
    sgd.step("w", &mut w, &[0.25, 1.0], None)?;
    assert_eq!(w, [0.875, -2.5]);
    assert!(sgd.state().is_empty(), "no momentum, no state");
    assert!(sgd.momentum_buffer("w").is_none());
    Ok(())
}

#[test]
fn sgd_first_step_buffer_is_the_gradient_undampened() -> R {
    let config = SgdConfig::new(0.5).with_momentum(0.5).with_dampening(0.5);
    let mut sgd = Sgd::new(config);
    let mut w = [1.0f32];
    // Step 1: buf = g = 1 (dampening not applied); w = 1 - 0.5 * 1.
    sgd.step("w", &mut w, &[1.0], None)?;
    assert_eq!(sgd.momentum_buffer("w"), Some(&[1.0f32][..]));
    assert_eq!(w, [0.5]);
    // Step 2: buf = 0.5 * 1 + (1 - 0.5) * 0.5 = 0.75; w = 0.5 - 0.5 * 0.75.
    sgd.step("w", &mut w, &[0.5], None)?;
    assert_eq!(sgd.momentum_buffer("w"), Some(&[0.75f32][..]));
    assert_eq!(w, [0.125]);
    Ok(())
}

#[test]
fn sgd_momentum_without_dampening() -> R {
    let mut sgd = Sgd::new(SgdConfig::new(0.25).with_momentum(0.5));
    let mut w = [2.0f32, 0.0];
    sgd.step("w", &mut w, &[1.0, -1.0], None)?; // buf = g
    assert_eq!(w, [1.75, 0.25]);
    sgd.step("w", &mut w, &[1.0, 0.5], None)?; // buf = 0.5 * buf + g = [1.5, 0]
    assert_eq!(sgd.momentum_buffer("w"), Some(&[1.5f32, 0.0][..]));
    assert_eq!(w, [1.375, 0.25]);
    Ok(())
}

#[test]
fn sgd_weight_decay_is_added_to_the_gradient() -> R {
    let mut sgd = Sgd::new(SgdConfig::new(0.5).with_weight_decay(0.25));
    let mut w = [2.0f32];
    sgd.step("w", &mut w, &[1.0], None)?; // g = 1 + 0.25 * 2 = 1.5
    assert_eq!(w, [1.25]);
    sgd.step("w", &mut w, &[1.0], None)?; // g = 1 + 0.25 * 1.25 = 1.3125
    assert_eq!(w, [0.59375]);
    Ok(())
}

#[test]
fn sgd_nesterov() -> R {
    let mut sgd = Sgd::new(SgdConfig::new(0.5).with_momentum(0.5).with_nesterov(true));
    let mut w = [1.0f32];
    sgd.step("w", &mut w, &[1.0], None)?; // buf = 1; d = 1 + 0.5 * 1
    assert_eq!(w, [0.25]);
    sgd.step("w", &mut w, &[0.5], None)?; // buf = 0.5 + 0.5 = 1; d = 0.5 + 0.5 * 1
    assert_eq!(w, [-0.25]);
    Ok(())
}

#[test]
fn sgd_nesterov_with_weight_decay() -> R {
    let config = SgdConfig::new(0.5)
        .with_momentum(0.5)
        .with_nesterov(true)
        .with_weight_decay(0.5);
    let mut sgd = Sgd::new(config);
    let mut w = [2.0f32];
    sgd.step("w", &mut w, &[1.0], None)?; // g = 2; buf = 2; d = 2 + 1 = 3
    assert_eq!(w, [0.5]);
    sgd.step("w", &mut w, &[0.5], None)?; // g = 0.75; buf = 1.75; d = 0.75 + 0.875
    assert_eq!(sgd.momentum_buffer("w"), Some(&[1.75f32][..]));
    assert_eq!(w, [-0.3125]);
    Ok(())
}

#[test]
fn sgd_decimal_hyperparameters_track_float64() -> R {
    // The golden fixtures' recipe; compared with a float64 evaluation to f32 rounding.
    let mut sgd = Sgd::new(
        SgdConfig::new(0.01)
            .with_momentum(0.9)
            .with_weight_decay(5e-4),
    );
    let mut w = values(37, 1);
    let mut w64: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    let mut buf64 = vec![0.0f64; w.len()];
    for step in 0..3 {
        let g = values(37, 10 + step);
        sgd.step("w", &mut w, &g, None)?;
        for i in 0..w.len() {
            let gi = f64::from(g[i]) + 5e-4 * w64[i];
            buf64[i] = if step == 0 { gi } else { 0.9 * buf64[i] + gi };
            w64[i] -= 0.01 * buf64[i];
        }
    }
    assert_close(&w, &w64, 1e-6, 1.0);
    Ok(())
}

#[test]
fn sgd_param_groups() -> R {
    let mut sgd = Sgd::new(SgdConfig::new(0.5).with_weight_decay(0.5));
    let mut a = [1.0f32];
    let half_no_decay = ParamGroup::no_decay().with_lr_scale(0.5);
    sgd.step("a", &mut a, &[1.0], Some(&half_no_decay))?; // w = 1 - 0.25 * 1
    assert_eq!(a, [0.75]);
    let mut b = [1.0f32];
    let decay = ParamGroup::new().with_weight_decay(0.25);
    sgd.step("b", &mut b, &[1.0], Some(&decay))?; // w = 1 - 0.5 * 1.25
    assert_eq!(b, [0.375]);
    let mut c = [1.0f32];
    sgd.step("c", &mut c, &[1.0], Some(&ParamGroup::DEFAULT))?; // w = 1 - 0.5 * 1.5
    assert_eq!(c, [0.25]);
    Ok(())
}

#[test]
fn sgd_set_lr() -> R {
    let mut sgd = Sgd::new(SgdConfig::new(0.5));
    sgd.set_lr(0.25)?;
    assert_eq!(sgd.lr(), 0.25);
    let mut w = [1.0f32];
    sgd.step("w", &mut w, &[1.0], None)?;
    assert_eq!(w, [0.75]);
    for bad in [f64::NAN, f64::INFINITY, -0.1] {
        assert!(matches!(sgd.set_lr(bad), Err(OptimError::InvalidLr { .. })));
    }
    assert_eq!(sgd.config().lr, 0.25);
    Ok(())
}

#[test]
fn sgd_errors_leave_everything_unchanged() -> R {
    let mut sgd = Sgd::new(SgdConfig::new(0.5).with_momentum(0.5));
    let mut w = [1.0f32, 2.0];
    let err = sgd.step("w", &mut w, &[1.0], None).unwrap_err();
    assert_eq!(
        err,
        OptimError::LengthMismatch {
            name: "w".into(),
            what: "gradient",
            expected: 2,
            found: 1
        }
    );
    assert!(sgd.state().is_empty());
    sgd.step("w", &mut w, &[1.0, 1.0], None)?;
    let before = sgd.state();
    let mut longer = [1.0f32, 2.0, 3.0];
    let err = sgd.step("w", &mut longer, &[1.0; 3], None).unwrap_err();
    assert!(matches!(
        err,
        OptimError::LengthMismatch {
            what: "momentum buffer",
            ..
        }
    ));
    assert_eq!(longer, [1.0, 2.0, 3.0]);
    assert_eq!(sgd.state(), before);
    let bad_group = ParamGroup::new().with_lr_scale(f64::INFINITY);
    assert!(
        sgd.step("w", &mut w, &[1.0, 1.0], Some(&bad_group))
            .is_err()
    );
    assert!(
        sgd.step(
            "w",
            &mut w,
            &[1.0, 1.0],
            Some(&ParamGroup::new().with_weight_decay(-1.0))
        )
        .is_err()
    );
    assert_eq!(sgd.state(), before);
    Ok(())
}

#[test]
fn sgd_bad_configs() {
    let bad = [
        SgdConfig::new(0.1).with_nesterov(true),
        SgdConfig::new(0.1)
            .with_momentum(0.9)
            .with_dampening(0.1)
            .with_nesterov(true),
        SgdConfig::new(f64::NAN),
        SgdConfig::new(0.1).with_momentum(-0.9),
        SgdConfig::new(0.1).with_weight_decay(-1e-4),
        SgdConfig::new(0.1).with_dampening(f64::NAN),
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
        assert!(Sgd::try_new(config).is_err());
        let mut w = [1.0f32];
        assert!(Sgd::new(config).step("w", &mut w, &[1.0], None).is_err());
        assert_eq!(w, [1.0]);
    }
    assert!(matches!(
        SgdConfig::new(0.1).with_nesterov(true).validate(),
        Err(OptimError::BadConfig(_))
    ));
}

#[test]
fn sgd_state_round_trip_is_bitwise() -> R {
    let config = SgdConfig::new(0.1)
        .with_momentum(0.9)
        .with_nesterov(true)
        .with_weight_decay(1e-4);
    let mut a = Sgd::new(config);
    let (mut w1, mut w2) = (values(10, 1), values(7, 2));
    for s in 0..2 {
        a.step("layer1.0.conv1.weight", &mut w1, &values(10, 3 + s), None)?;
        a.step("fc.bias", &mut w2, &values(7, 5 + s), None)?;
    }
    let saved = a.state();
    let names: Vec<_> = saved.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "momentum_buffer.fc.bias",
            "momentum_buffer.layer1.0.conv1.weight"
        ]
    );
    assert_eq!(saved[0].shape, [7]);
    let mut b = Sgd::new(config);
    b.load_state(&saved)?;
    assert_eq!(state_bits(&b.state()), state_bits(&saved));
    let (mut v1, mut v2) = (w1.clone(), w2.clone());
    a.step("layer1.0.conv1.weight", &mut w1, &values(10, 9), None)?;
    a.step("fc.bias", &mut w2, &values(7, 9), None)?;
    b.step("layer1.0.conv1.weight", &mut v1, &values(10, 9), None)?;
    b.step("fc.bias", &mut v2, &values(7, 9), None)?;
    assert_eq!(bits(&w1), bits(&v1));
    assert_eq!(bits(&w2), bits(&v2));
    assert_eq!(state_bits(&a.state()), state_bits(&b.state()));
    // A buffer saved in the parameter's shape loads too.
    let shaped = [StateTensor::new(
        "momentum_buffer.w",
        vec![1.0; 6],
        vec![2, 3],
    )];
    b.load_state(&shaped)?;
    assert_eq!(b.momentum_buffer("w"), Some(&[1.0f32; 6][..]));
    Ok(())
}

#[test]
fn sgd_load_state_errors() {
    let mut sgd = Sgd::new(SgdConfig::new(0.1).with_momentum(0.9));
    let good = StateTensor::new("momentum_buffer.w", vec![1.0, 2.0], vec![2]);
    sgd.load_state(std::slice::from_ref(&good)).unwrap();
    let bad: [&[StateTensor]; 5] = [
        &[StateTensor::new("exp_avg.w", vec![1.0], vec![1])],
        &[StateTensor::new("momentum_buffer.v", vec![1.0], vec![2])],
        &[StateTensor::new("momentum_buffer", vec![1.0], vec![1])],
        &[StateTensor::new("momentum_buffer.", vec![1.0], vec![1])],
        &[good.clone(), good.clone()],
    ];
    for state in bad {
        assert!(
            matches!(sgd.load_state(state), Err(OptimError::BadState { .. })),
            "{state:?}"
        );
        assert_eq!(sgd.state(), std::slice::from_ref(&good));
    }
    let mut plain = Sgd::new(SgdConfig::new(0.1));
    assert!(plain.load_state(&[good]).is_err());
    assert!(plain.load_state(&[]).is_ok());
}

// ---------------------------------------------------------------- AdamW

/// float64 values of `torch.optim.AdamW`'s documented algorithm for 3 steps from
/// `w = [1, -0.5, 0]` with gradients `G` (lr 0.1, PyTorch's other defaults), worked by hand
/// (first step: `w = w (1 - lr wd) - lr g / (|g| + eps)`, e.g. `0.999 - 0.05 / 0.50000001`).
const G: [[f32; 3]; 3] = [
    [0.5, -0.25, 1e-3],
    [-0.25, 0.125, 2e-3],
    [0.125, 0.375, -0.5],
];
const W_REF: [[f64; 3]; 3] = [
    [0.899000002, -0.39950000399999985, -0.09999900000999991],
    [0.8714672987058463, -0.37246680137773264, -0.196416593252905],
    [
        0.8365529176159483,
        -0.4110333121137232,
        -0.13267291432594133,
    ],
];
const M_REF: [[f64; 3]; 3] = [
    [0.05, -0.025, 1e-4],
    [0.02, -0.01, 0.00029],
    [0.0305, 0.0285, -0.049739],
];
const V_REF: [[f64; 3]; 3] = [
    [0.00025, 6.25e-05, 1e-09],
    [0.00031225, 7.80625e-05, 4.999e-09],
    [
        0.00032756275,
        0.00021860943750000018,
        0.00025000499400100023,
    ],
];

#[test]
fn adamw_matches_pytorchs_algorithm_for_three_steps() -> R {
    let mut adam = AdamW::try_new(AdamWConfig::new(0.1))?;
    let mut w = [1.0f32, -0.5, 0.0];
    for t in 0..3 {
        adam.step("w", &mut w, &G[t], None)?;
        assert_eq!(adam.step_count("w"), t as u64 + 1);
        assert_close(&w, &W_REF[t], 1e-6, 1.0);
        assert_close(adam.exp_avg("w").unwrap(), &M_REF[t], 1e-6, 0.0);
        assert_close(adam.exp_avg_sq("w").unwrap(), &V_REF[t], 1e-6, 0.0);
    }
    Ok(())
}

#[test]
fn adamw_large_weight_on_the_gradient_uses_lerps_other_branch() -> R {
    // beta1 = 0.3: lerp weight 0.7 >= 0.5; no weight decay. float64 reference by hand.
    let config = AdamWConfig::new(0.01)
        .with_betas(0.3, 0.999)
        .with_weight_decay(0.0);
    let mut adam = AdamW::new(config);
    let mut w = [1.0f32, -0.5, 0.0];
    let w_ref = [
        [0.9900000002, -0.49000000039999997, -0.00999990000099999],
        [
            0.9919463092867343,
            -0.49194630943748874,
            -0.021187748226504998,
        ],
        [
            0.9898790022562962,
            -0.5023349514567351,
            -0.008750492885084614,
        ],
    ];
    let m_ref = [
        [0.35, -0.175, 0.0007],
        [-0.07, 0.035, 0.00161],
        [0.0665, 0.273, -0.349517],
    ];
    for t in 0..3 {
        adam.step("w", &mut w, &G[t], None)?;
        assert_close(&w, &w_ref[t], 1e-6, 1.0);
        assert_close(adam.exp_avg("w").unwrap(), &m_ref[t], 1e-6, 0.0);
    }
    Ok(())
}

#[test]
fn adamw_amsgrad_keeps_the_largest_second_moment() -> R {
    let grads = [[2.0f32, 0.5], [0.0, 0.5], [0.01, -1.0]];
    let plain_ref = [
        [0.23997500005, 0.7399250002],
        [0.23325042005602173, 0.7298510078999801],
        [0.22801561795523312, 0.7305345160960613],
    ];
    let ams_ref = [
        [0.23997500005, 0.7399250002],
        [0.23325377118523688, 0.7298510078999801],
        [0.22802411501808606, 0.7305345160960613],
    ];
    for (amsgrad, reference) in [(false, plain_ref), (true, ams_ref)] {
        let mut adam = AdamW::new(AdamWConfig::new(0.01).with_amsgrad(amsgrad));
        let mut w = [0.25f32, 0.75];
        for t in 0..3 {
            adam.step("w", &mut w, &grads[t], None)?;
            assert_close(&w, &reference[t], 1e-6, 1.0);
        }
        let kinds = adam.state().len();
        assert_eq!(kinds, if amsgrad { 4 } else { 3 });
    }
    Ok(())
}

#[test]
fn adamw_group_without_decay_equals_zero_decay() -> R {
    let mut a = AdamW::new(AdamWConfig::new(0.1).with_weight_decay(0.5));
    let mut b = AdamW::new(AdamWConfig::new(0.1).with_weight_decay(0.0));
    let (mut wa, mut wb) = (values(9, 4), values(9, 4));
    for s in 0..3 {
        let g = values(9, 20 + s);
        a.step("w", &mut wa, &g, Some(&ParamGroup::no_decay()))?;
        b.step("w", &mut wb, &g, None)?;
    }
    assert_eq!(bits(&wa), bits(&wb));
    // ... and a decaying run differs.
    let mut c = AdamW::new(AdamWConfig::new(0.1).with_weight_decay(0.5));
    let mut wc = values(9, 4);
    c.step("w", &mut wc, &values(9, 20), None)?;
    assert_ne!(bits(&wc[..]), bits(&values(9, 4)));
    Ok(())
}

#[test]
fn adamw_errors() {
    for config in [
        AdamWConfig::new(0.1).with_betas(1.0, 0.999),
        AdamWConfig::new(0.1).with_betas(0.9, -0.1),
        AdamWConfig::new(0.1).with_eps(-1.0),
        AdamWConfig::new(f64::INFINITY),
        AdamWConfig::new(0.1).with_weight_decay(f64::NAN),
    ] {
        assert!(AdamW::try_new(config).is_err(), "{config:?}");
        let mut w = [1.0f32];
        assert!(AdamW::new(config).step("w", &mut w, &[1.0], None).is_err());
        assert_eq!(w, [1.0]);
    }
    let mut adam = AdamW::new(AdamWConfig::default());
    assert_eq!(adam.lr(), 1e-3);
    let mut w = [1.0f32, 2.0];
    assert!(matches!(
        adam.step("w", &mut w, &[1.0, 2.0, 3.0], None),
        Err(OptimError::LengthMismatch { .. })
    ));
    assert_eq!(adam.step_count("w"), 0);
    adam.step("w", &mut w, &[1.0, 2.0], None).unwrap();
    let mut shorter = [1.0f32];
    assert!(adam.step("w", &mut shorter, &[1.0], None).is_err());
    assert_eq!(adam.step_count("w"), 1);
    assert!(adam.set_lr(f64::NAN).is_err());
    adam.set_lr(0.5).unwrap();
    assert_eq!(adam.config().lr, 0.5);
}

#[test]
fn adamw_state_round_trip_is_bitwise() -> R {
    for amsgrad in [false, true] {
        let config = AdamWConfig::new(0.01).with_amsgrad(amsgrad);
        let mut a = AdamW::new(config);
        let (mut w1, mut w2) = (values(12, 1), values(5, 2));
        for s in 0..3 {
            a.step("conv.weight", &mut w1, &values(12, 3 + s), None)?;
            if s < 2 {
                a.step("bn.bias", &mut w2, &values(5, 8 + s), None)?;
            }
        }
        let saved = a.state();
        let step = saved.iter().find(|t| t.name == "step.conv.weight").unwrap();
        assert_eq!(
            (step.data.as_slice(), step.shape.as_slice()),
            (&[3.0f32][..], &[][..])
        );
        let mut b = AdamW::new(config);
        b.load_state(&saved)?;
        assert_eq!(state_bits(&b.state()), state_bits(&saved));
        assert_eq!(b.step_count("bn.bias"), 2);
        let (mut v1, mut v2) = (w1.clone(), w2.clone());
        for (opt, p1, p2) in [(&mut a, &mut w1, &mut w2), (&mut b, &mut v1, &mut v2)] {
            opt.step("conv.weight", p1, &values(12, 30), None)?;
            opt.step("bn.bias", p2, &values(5, 31), None)?;
        }
        assert_eq!(bits(&w1), bits(&v1));
        assert_eq!(bits(&w2), bits(&v2));
        assert_eq!(state_bits(&a.state()), state_bits(&b.state()));
    }
    Ok(())
}

#[test]
fn adamw_load_state_errors() {
    let full = |step: f32| {
        vec![
            StateTensor::new("step.w", vec![step], vec![]),
            StateTensor::new("exp_avg.w", vec![0.0; 2], vec![2]),
            StateTensor::new("exp_avg_sq.w", vec![0.0; 2], vec![2]),
        ]
    };
    let mut adam = AdamW::new(AdamWConfig::default());
    adam.load_state(&full(4.0)).unwrap();
    assert_eq!(adam.step_count("w"), 4);
    let mut missing = full(1.0);
    missing.pop();
    let mut uneven = full(1.0);
    uneven[2] = StateTensor::new("exp_avg_sq.w", vec![0.0; 3], vec![3]);
    let mut extra = full(1.0);
    extra.push(StateTensor::new("max_exp_avg_sq.w", vec![0.0; 2], vec![2]));
    let mut unknown = full(1.0);
    unknown.push(StateTensor::new("momentum_buffer.w", vec![0.0; 2], vec![2]));
    for bad in [
        full(1.5),
        full(-1.0),
        full(f32::NAN),
        missing,
        uneven,
        extra.clone(),
        unknown,
    ] {
        assert!(
            matches!(adam.load_state(&bad), Err(OptimError::BadState { .. })),
            "{bad:?}"
        );
        assert_eq!(adam.step_count("w"), 4);
    }
    let mut ams = AdamW::new(AdamWConfig::default().with_amsgrad(true));
    assert!(ams.load_state(&full(1.0)).is_err());
    assert!(ams.load_state(&extra).is_ok());
}

// ---------------------------------------------------------------- schedules

#[test]
fn multistep_boundaries() {
    let he = Schedule::he_et_al(100);
    assert_eq!(
        he,
        Schedule::MultiStep {
            milestones: vec![50, 75],
            gamma: 0.1
        }
    );
    for (step, lr) in [
        (0, 0.1),
        (49, 0.1),
        (50, 0.1 * 0.1),
        (74, 0.1 * 0.1),
        (75, 0.1 * 0.1 * 0.1),
        (1000, 0.1 * 0.1 * 0.1),
    ] {
        assert_eq!(he.lr_at(0.1, step), lr, "step {step}");
    }
    assert_eq!(he.lr_at(0.1, 50) as f32, 0.01f32);
    assert_eq!(he.lr_at(0.1, 75) as f32, 0.001f32);
    assert_eq!(
        Schedule::he_et_al(64_000),
        Schedule::MultiStep {
            milestones: vec![32_000, 48_000],
            gamma: 0.1
        }
    );
    assert_eq!(
        Schedule::he_et_al(10),
        Schedule::MultiStep {
            milestones: vec![5, 7],
            gamma: 0.1
        }
    );
    // Unsorted, repeated milestones; a milestone at 0 applies from the start.
    let s = Schedule::MultiStep {
        milestones: vec![30, 10, 30],
        gamma: 0.5,
    };
    assert_eq!(s.lr_at(1.0, 9), 1.0);
    assert_eq!(s.lr_at(1.0, 10), 0.5);
    assert_eq!(s.lr_at(1.0, 29), 0.5);
    assert_eq!(s.lr_at(1.0, 30), 0.125);
    let at0 = Schedule::MultiStep {
        milestones: vec![0],
        gamma: 0.5,
    };
    assert_eq!(at0.lr_at(1.0, 0), 0.5);
}

#[test]
fn cosine_boundaries() {
    let s = Schedule::Cosine {
        total: 100,
        min_lr: 0.0,
    };
    assert_eq!(s.lr_at(0.1, 0), 0.1);
    assert!((s.lr_at(0.1, 50) - 0.05).abs() < 1e-17);
    assert_eq!(s.lr_at(0.1, 100), 0.0);
    assert_eq!(
        s.lr_at(0.1, 200),
        0.1,
        "periodic past total, as PyTorch's closed form"
    );
    let m = Schedule::Cosine {
        total: 4,
        min_lr: 0.001,
    };
    assert_eq!(m.lr_at(0.1, 0), 0.1);
    assert_eq!(m.lr_at(0.1, 4), 0.001);
    // step 1 of 4: (1 + cos(pi/4)) / 2
    let expected = 0.001 + 0.099 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
    assert!((m.lr_at(0.1, 1) - expected).abs() < 1e-16);
    // Decreasing over the period.
    assert!((0..4).all(|t| m.lr_at(0.1, t) > m.lr_at(0.1, t + 1)));
}

#[test]
fn linear_warmup_boundaries() {
    let s = Schedule::linear_warmup(
        4,
        0.25,
        Schedule::MultiStep {
            milestones: vec![2],
            gamma: 0.5,
        },
    );
    let lrs: Vec<f64> = (0..8).map(|t| s.lr_at(2.0, t)).collect();
    // 2 * (0.25 + 0.75 * t / 4) for t < 4, then the multistep from its step 0.
    assert_eq!(lrs, [0.5, 0.875, 1.25, 1.625, 2.0, 2.0, 1.0, 1.0]);
    let none = Schedule::linear_warmup(0, 0.1, Schedule::Constant);
    assert_eq!(none.lr_at(0.3, 0), 0.3);
    assert_eq!(Schedule::Constant.lr_at(0.3, 12345), 0.3);
}

#[test]
fn schedule_validation() {
    assert!(Schedule::he_et_al(10).validate().is_ok());
    assert!(
        Schedule::linear_warmup(
            5,
            0.0,
            Schedule::Cosine {
                total: 5,
                min_lr: 0.0
            }
        )
        .validate()
        .is_ok()
    );
    let bad = [
        Schedule::Cosine {
            total: 0,
            min_lr: 0.0,
        },
        Schedule::Cosine {
            total: 3,
            min_lr: -1.0,
        },
        Schedule::MultiStep {
            milestones: vec![1],
            gamma: f64::NAN,
        },
        Schedule::linear_warmup(5, 1.5, Schedule::Constant),
        Schedule::linear_warmup(
            5,
            0.5,
            Schedule::Cosine {
                total: 0,
                min_lr: 0.0,
            },
        ),
    ];
    for s in bad {
        assert!(
            matches!(s.validate(), Err(OptimError::BadConfig(_))),
            "{s:?}"
        );
    }
    // Never panics, even unvalidated.
    assert_eq!(
        Schedule::Cosine {
            total: 0,
            min_lr: 0.5
        }
        .lr_at(1.0, 3),
        0.5
    );
}

// ---------------------------------------------------------------- Dirac and priors

/// The (o, i, y, x) of every 1 in a kernel of shape [out, in, kh, kw].
fn ones(kernel: &[f32], [_, cin, kh, kw]: [usize; 4]) -> Vec<[usize; 4]> {
    let mut found = Vec::new();
    for (k, &v) in kernel.iter().enumerate() {
        assert!(v == 0.0 || v == 1.0);
        if v == 1.0 {
            found.push([
                k / (cin * kh * kw),
                k / (kh * kw) % cin,
                k / kw % kh,
                k % kw,
            ]);
        }
    }
    found
}

#[test]
fn dirac_shapes() -> R {
    let fewer_out = dirac(2, 3, 3, 3)?;
    assert_eq!(fewer_out.len(), 54);
    assert_eq!(ones(&fewer_out, [2, 3, 3, 3]), [[0, 0, 1, 1], [1, 1, 1, 1]]);
    let more_out = dirac(3, 2, 3, 3)?;
    assert_eq!(ones(&more_out, [3, 2, 3, 3]), [[0, 0, 1, 1], [1, 1, 1, 1]]);
    let pointwise = dirac(3, 2, 1, 1)?;
    assert_eq!(pointwise, [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    // Even sizes: index size / 2, as dirac_.
    let even = dirac(1, 1, 2, 4)?;
    assert_eq!(ones(&even, [1, 1, 2, 4]), [[0, 0, 1, 2]]);
    assert!(dirac(0, 5, 3, 3)?.is_empty());
    assert!(dirac(4, 4, 0, 3)?.is_empty());
    assert!(matches!(
        dirac(usize::MAX, 2, 3, 3),
        Err(OptimError::BadShape { .. })
    ));
    Ok(())
}

#[test]
fn identity_prior_gradient_is_the_finite_difference_of_its_loss() -> R {
    let shape = [3, 2, 3, 3];
    let lambda = 0.5;
    let w = values(54, 7);
    let grad0 = values(54, 8);
    let mut grad = grad0.clone();
    let loss = identity_prior_term(lambda, shape, &w, &mut grad)?;
    assert_eq!(loss, identity_prior_loss(lambda, shape, &w)?);
    for k in 0..w.len() {
        let (mut wp, mut wm) = (w.clone(), w.clone());
        wp[k] += 1.0 / 128.0;
        wm[k] -= 1.0 / 128.0;
        let fd = (identity_prior_loss(lambda, shape, &wp)?
            - identity_prior_loss(lambda, shape, &wm)?)
            / (f64::from(wp[k]) - f64::from(wm[k]));
        let added = f64::from(grad[k]) - f64::from(grad0[k]);
        // The gradient is rounded to f32 once: compare to that rounding.
        let tol = 1e-12 + f64::from(f32::EPSILON) * f64::from(grad[k].abs());
        assert!((added - fd).abs() <= tol, "element {k}: {added} vs {fd}");
    }
    Ok(())
}

#[test]
fn identity_prior_centre_and_value() -> R {
    let shape = [2, 3, 3, 3];
    let d = dirac(2, 3, 3, 3)?;
    let mut g = vec![0.0f32; 54];
    assert_eq!(identity_prior_term(1e-3, shape, &d, &mut g)?, 0.0);
    assert!(g.iter().all(|&x| x == 0.0), "no pull at the centre");
    let w: Vec<f32> = d.iter().map(|x| x + 1.0).collect();
    assert_eq!(identity_prior_loss(2.0, shape, &w)?, 54.0);
    // The implicit centre is dirac(): same loss and gradient bits as the explicit one.
    let w = values(54, 3);
    let (mut g1, mut g2) = (values(54, 4), values(54, 4));
    let l1 = identity_prior_term(1e-3, shape, &w, &mut g1)?;
    let l2 = prior_term(1e-3, &w, &d, &mut g2)?;
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_eq!(bits(&g1), bits(&g2));
    Ok(())
}

#[test]
fn prior_term_errors() {
    let mut g = vec![0.0f32; 4];
    assert!(matches!(
        prior_term(1.0, &[0.0; 4], &[0.0; 3], &mut g),
        Err(OptimError::LengthMismatch { .. })
    ));
    assert!(prior_term(1.0, &[0.0; 4], &[0.0; 4], &mut g[..3]).is_err());
    assert!(matches!(
        prior_term(-1.0, &[1.0; 4], &[0.0; 4], &mut g),
        Err(OptimError::BadConfig(_))
    ));
    assert!(identity_prior_term(1.0, [1, 1, 3, 3], &[0.0; 8], &mut [0.0; 8]).is_err());
    assert!(identity_prior_loss(1.0, [1, 1, 3, 3], &[0.0; 10]).is_err());
    assert!(identity_prior_loss(1.0, [usize::MAX, 2, 3, 3], &[]).is_err());
    assert_eq!(g, [0.0; 4]);
}

#[test]
fn prior_covers_the_3x3_convs_but_the_stem() -> R {
    let prior = Prior::Identity { lambda: 1e-3 };
    let conv = [16, 16, 3, 3];
    assert!(prior.applies_to("layer1.0.conv1.weight", &conv));
    assert!(prior.applies_to("layer2.0.conv1.weight", &[32, 16, 3, 3]));
    assert!(!prior.applies_to(STEM_CONV, &[16, 3, 3, 3]));
    assert!(!prior.applies_to("layer2.0.downsample.0.weight", &[32, 16, 1, 1]));
    assert!(!prior.applies_to("fc.weight", &[10, 64]));
    assert!(!prior.applies_to("bn1.weight", &[16]));
    assert!(!Prior::Zero.applies_to("layer1.0.conv1.weight", &conv));
    assert_eq!(Prior::default(), Prior::Zero);

    let w = values(16 * 16 * 9, 5);
    let mut g = vec![0.0f32; w.len()];
    assert_eq!(
        Prior::Zero.term("layer1.0.conv1.weight", &conv, &w, &mut g)?,
        0.0
    );
    assert_eq!(prior.term(STEM_CONV, &conv, &w, &mut g)?, 0.0);
    assert!(g.iter().all(|&x| x == 0.0));
    let loss = prior.term("layer1.0.conv1.weight", &conv, &w, &mut g)?;
    assert_eq!(loss, identity_prior_loss(1e-3, conv, &w)?);
    assert!(loss > 0.0 && g.iter().any(|&x| x != 0.0));
    Ok(())
}

#[test]
fn param_groups_from_names_and_shapes() {
    assert!(is_norm_or_bias("bn1.weight", &[16]));
    assert!(is_norm_or_bias("layer1.0.downsample.1.weight", &[64]));
    assert!(is_norm_or_bias("fc.bias", &[10]));
    assert!(is_norm_or_bias("bias", &[10]));
    assert!(!is_norm_or_bias("conv1.weight", &[16, 3, 3, 3]));
    assert!(!is_norm_or_bias("fc.weight", &[10, 64]));

    let identity = Prior::Identity { lambda: 1e-3 };
    let cases: [(&str, &[usize], Prior, DecayPolicy, ParamGroup); 7] = [
        (
            "layer1.0.conv1.weight",
            &[16, 16, 3, 3],
            Prior::Zero,
            DecayPolicy::All,
            ParamGroup::DEFAULT,
        ),
        (
            "layer1.0.conv1.weight",
            &[16, 16, 3, 3],
            identity,
            DecayPolicy::All,
            ParamGroup::no_decay(),
        ),
        (
            STEM_CONV,
            &[16, 3, 3, 3],
            identity,
            DecayPolicy::All,
            ParamGroup::DEFAULT,
        ),
        (
            "bn1.weight",
            &[16],
            identity,
            DecayPolicy::All,
            ParamGroup::DEFAULT,
        ),
        (
            "bn1.weight",
            &[16],
            Prior::Zero,
            DecayPolicy::ExcludeNormAndBias,
            ParamGroup::no_decay(),
        ),
        (
            "fc.bias",
            &[10],
            Prior::Zero,
            DecayPolicy::ExcludeNormAndBias,
            ParamGroup::no_decay(),
        ),
        (
            "fc.weight",
            &[10, 64],
            identity,
            DecayPolicy::ExcludeNormAndBias,
            ParamGroup::DEFAULT,
        ),
    ];
    for (name, shape, prior, policy, expected) in cases {
        assert_eq!(
            param_group_for(name, shape, policy, &prior),
            expected,
            "{name}"
        );
    }
    assert_eq!(ParamGroup::no_decay().weight_decay_or(0.5), 0.0);
    assert_eq!(ParamGroup::default().weight_decay_or(0.5), 0.5);
    assert_eq!(ParamGroup::new().with_lr_scale(0.5).lr(0.2), 0.1);
}
