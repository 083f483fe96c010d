//! The fast training path against the reference one on nets and sizes that are not in the
//! golden fixtures: every gradient, the loss and the batch-norm statistics of one
//! forward-backward pass agree to 1e-4 (relative to each tensor's largest value), and the
//! fast path gives bitwise the same result on 1 and 3 threads.

use resnet_models::{
    Backend, BlockKind, CifarConfig, CifarShortcut, Plan, ResNetConfig, cifar_plan,
    random_plan_weights, resnet_plan,
};
use resnet_tensor::Tensor;
use resnet_train::{StepOutput, Trainer};
use resnet_weights::TensorMap;
use std::collections::BTreeMap;

fn rel(ours: &[f32], want: &[f32]) -> f64 {
    let num = ours
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    let den = want.iter().map(|b| f64::from(b.abs())).fold(0.0, f64::max);
    if den == 0.0 { num } else { num / den }
}

fn input(dims: [usize; 4], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(&dims, v).unwrap()
}

/// A trainer of `plan` from the weights of seed 7.
fn trainer(plan: &Plan, backend: Backend, threads: usize) -> Trainer {
    let w = random_plan_weights(plan, 7).unwrap();
    Trainer::new(plan.clone(), &w)
        .unwrap()
        .with_backend(backend)
        .with_threads(threads)
        .unwrap()
}

fn pass(
    plan: &Plan,
    backend: Backend,
    threads: usize,
    x: &Tensor,
    labels: &[usize],
) -> (StepOutput, Trainer) {
    let mut t = trainer(plan, backend, threads);
    let out = t.forward_backward(x, labels).unwrap();
    (out, t)
}

fn check(what: &str, plan: &Plan, dims: [usize; 4]) {
    let x = input(dims, 3);
    let labels: Vec<usize> = (0..dims[0]).map(|i| (i * 7 + 1) % 10).collect();
    let (want, tn) = pass(plan, Backend::Naive, 1, &x, &labels);
    let (got, tf) = pass(plan, Backend::Fast, 1, &x, &labels);
    let (got3, _) = pass(plan, Backend::Fast, 3, &x, &labels);
    let le = (got.loss - want.loss).abs() / want.loss.abs();
    assert!(le < 1e-5, "{what}: loss {} vs {}", got.loss, want.loss);
    let mut bad = Vec::new();
    for (k, g) in &want.grads {
        let e = rel(&got.grads[k], g);
        if e > 1e-4 {
            bad.push(format!("{k}: {e:.2e}"));
        }
        let same = got.grads[k]
            .iter()
            .zip(&got3.grads[k])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{what}: {k} differs between 1 and 3 threads");
    }
    for (k, v) in tn.running_stats() {
        let e = rel(&tf.running_stats()[k], v);
        if e > 1e-5 {
            bad.push(format!("{k}: {e:.2e}"));
        }
    }
    assert_eq!(tn.batches_tracked(), tf.batches_tracked());
    assert!(bad.is_empty(), "{what}: {}", bad.join(", "));
}

#[test]
fn cifar_nets_every_shortcut_odd_sizes() {
    for (shortcut, c, hw, n) in [
        (CifarShortcut::A, 1, 9, 3),
        (CifarShortcut::B, 3, 10, 2),
        (CifarShortcut::None, 1, 11, 4),
        (CifarShortcut::A, 3, 7, 5),
        (CifarShortcut::A, 1, 28, 4),
        // Several pieces and row blocks in the weight gradients, on 3 threads.
        (CifarShortcut::B, 3, 28, 8),
    ] {
        let cfg = CifarConfig::new(if hw == 28 { 20 } else { 8 }, 10)
            .with_in_channels(c)
            .with_shortcut(shortcut);
        let plan = cifar_plan(&cfg).unwrap();
        check(
            &format!("{shortcut:?} {c}x{hw}x{hw} batch {n}"),
            &plan,
            [n, c, hw, hw],
        );
    }
}

#[test]
fn torchvision_bottleneck_grouped_net() {
    // A ResNeXt-style net: bottlenecks, groups, the 7x7 stem and max-pool.
    let cfg = ResNetConfig::new(BlockKind::Bottleneck, vec![1, 1, 1, 1])
        .with_groups(4)
        .with_width_per_group(4)
        .with_num_classes(10);
    let plan = resnet_plan(&cfg).unwrap();
    check("resnext-like", &plan, [2, 3, 35, 37]);
}

/// Gradients of each step, and the state after the last.
type Run = (Vec<BTreeMap<String, Vec<f32>>>, TensorMap);

/// Three SGD steps (lr 0.1, momentum 0.9, no prior) on a fixed batch of four 12x12 images
/// from the weights of seed 7. With `recycle`, each step's output is handed back to the
/// trainer, poisoned with NaN first: garbage in recycled buffers must not reach the next step.
fn three_steps(plan: &Plan, backend: Backend, threads: usize, recycle: bool) -> Run {
    use resnet_train::optim::{DecayPolicy, Prior, Sgd, SgdConfig};
    let x = input([4, 1, 12, 12], 5);
    let labels = [1, 2, 3, 4];
    let mut t = trainer(plan, backend, threads);
    let mut sgd = Sgd::try_new(SgdConfig::new(0.1).with_momentum(0.9)).unwrap();
    let mut grads = Vec::new();
    for _ in 0..3 {
        let mut out = t
            .sgd_step(&mut sgd, &Prior::Zero, DecayPolicy::All, &x, &labels)
            .unwrap();
        grads.push(out.grads.clone());
        if recycle {
            out.grads.values_mut().for_each(|g| g.fill(f32::NAN));
            t.recycle(out);
        }
    }
    (grads, t.state_dict().unwrap())
}

fn cifar8(shortcut: CifarShortcut) -> Plan {
    let cfg = CifarConfig::new(8, 10)
        .with_in_channels(1)
        .with_shortcut(shortcut);
    cifar_plan(&cfg).unwrap()
}

#[test]
fn three_sgd_steps_match_the_reference() {
    let plan = cifar8(CifarShortcut::A);
    let (naive_grads, naive) = three_steps(&plan, Backend::Naive, 1, false);
    let (fast_grads, fast) = three_steps(&plan, Backend::Fast, 1, false);
    for (step, (naive, fast)) in naive_grads.iter().zip(&fast_grads).enumerate() {
        for (k, g) in naive {
            let e = rel(&fast[k], g);
            assert!(e < 1e-4, "step {step}: grad {k}: {e:.2e}");
        }
    }
    for (k, v) in naive.iter() {
        let e = rel(fast.get(k).unwrap().as_slice(), v.as_slice());
        assert!(e < 1e-4, "{k}: {e:.2e}");
    }
}

/// Steps whose outputs are handed back (`Trainer::recycle`, buffers of another size among
/// them) give bitwise the gradients and weights of steps that drop theirs, on 1 and 2 threads.
#[test]
fn recycled_gradient_buffers_change_nothing() {
    let plan = cifar8(CifarShortcut::B);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for threads in [1, 2] {
        let (grads, state) = three_steps(&plan, Backend::Fast, threads, false);
        let (grads_r, state_r) = three_steps(&plan, Backend::Fast, threads, true);
        for (a, b) in grads.iter().zip(&grads_r) {
            for (k, g) in a {
                assert_eq!(bits(g), bits(&b[k]), "{threads} thread(s): grad {k}");
            }
        }
        for (k, v) in state.iter() {
            let w = state_r.get(k).unwrap();
            assert_eq!(
                bits(v.as_slice()),
                bits(w.as_slice()),
                "{threads} thread(s): {k}"
            );
        }
    }
}

/// EDSR (no batch-norm, biases, residual scaling, pixel shuffle) trained with the L1 and MSE
/// losses: the fast path against the reference one, 1 against 3 threads, and the frozen
/// mean shifts get no gradient.
#[test]
fn edsr_with_l1_and_mse_losses() {
    use resnet_models::{EdsrConfig, edsr_plan};
    use resnet_train::Target;
    let cfg = EdsrConfig {
        n_resblocks: 2,
        n_feats: 8,
        res_scale: 0.1,
        ..EdsrConfig::baseline(2)
    };
    let plan = edsr_plan(&cfg).unwrap();
    let x = input([2, 3, 7, 9], 11);
    let t = input([2, 3, 14, 18], 12);
    for target in [Target::L1(&t), Target::Mse(&t)] {
        let run = |backend: Backend, threads: usize| {
            let w = random_plan_weights(&plan, 5).unwrap();
            let mut tr = Trainer::new(plan.clone(), &w)
                .unwrap()
                .with_backend(backend)
                .with_threads(threads)
                .unwrap();
            tr.freeze(|k| k.starts_with("sub_mean") || k.starts_with("add_mean"));
            tr.forward_backward_with(&x, target).unwrap()
        };
        let (want, got, got3) = (
            run(Backend::Naive, 1),
            run(Backend::Fast, 1),
            run(Backend::Fast, 3),
        );
        assert!((got.loss - want.loss).abs() <= 1e-5 * want.loss.abs());
        assert!(!want.grads.keys().any(|k| k.contains("mean")));
        assert_eq!(want.grads.len(), got.grads.len());
        for (k, g) in &want.grads {
            let e = rel(&got.grads[k], g);
            assert!(e < 1e-4, "{target:?}: {k}: {e:.2e}");
            assert_eq!(got.grads[k], got3.grads[k], "{k}: 1 vs 3 threads");
        }
    }
}
