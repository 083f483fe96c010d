//! Learning-rate schedules as pure functions of the step.

use super::error::{OptimError, check_non_negative};

/// A learning-rate schedule: [`Schedule::lr_at`] gives the rate at a step (counted from 0, the
/// first optimiser step) from the base rate, with no state, so a resumed run needs only its step.
///
/// Rates are f64 and computed as PyTorch's schedulers compute them in Python; the optimiser
/// rounds them to f32 where PyTorch does (which is why `lr_at` returns f64: AdamW uses the rate
/// in f64 arithmetic first).
///
/// ```
/// use resnet_train::optim::Schedule;
///
/// // He et al.: 0.1, divided by 10 at 50% and 75% of 64k steps.
/// let he = Schedule::he_et_al(64_000);
/// assert_eq!(he.lr_at(0.1, 31_999), 0.1);
/// assert_eq!(he.lr_at(0.1, 32_000), 0.1 * 0.1);
/// assert_eq!(he.lr_at(0.1, 48_000), 0.1 * 0.1 * 0.1);
///
/// let warm_cos = Schedule::linear_warmup(5, 0.1, Schedule::Cosine { total: 95, min_lr: 0.0 });
/// assert_eq!(warm_cos.lr_at(1.0, 0), 0.1);
/// assert_eq!(warm_cos.lr_at(1.0, 5), 1.0);
/// assert_eq!(warm_cos.lr_at(1.0, 100), 0.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The base rate at every step.
    Constant,
    /// `torch.optim.lr_scheduler.MultiStepLR`: the rate is multiplied by `gamma` at each
    /// milestone step (a milestone given `k` times multiplies by `gamma^k`), the products taken
    /// in step order as PyTorch's chained updates do.
    MultiStep {
        /// Steps at which the rate drops (any order; the drop applies from that step on).
        milestones: Vec<u64>,
        /// The factor at each milestone.
        gamma: f64,
    },
    /// `torch.optim.lr_scheduler.CosineAnnealingLR` in its closed form:
    /// `min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total)) / 2`.
    ///
    /// As PyTorch's, the formula is periodic: past `total` the rate rises again (it is back at
    /// the base rate at `2 * total`). With `total == 0` the rate is `min_lr` (PyTorch would
    /// divide by zero; [`Schedule::validate`] refuses it).
    Cosine {
        /// The step at which the rate reaches `min_lr` (PyTorch's `T_max`).
        total: u64,
        /// The lowest rate (PyTorch's `eta_min`).
        min_lr: f64,
    },
    /// `torch.optim.lr_scheduler.LinearLR` (to factor 1) for `steps` steps, then `then` counted
    /// from 0, as `SequentialLR([LinearLR(..), then], milestones=[steps])`:
    /// `base_lr * (start_factor + (1 - start_factor) * step / steps)` for `step < steps`.
    LinearWarmup {
        /// Length of the ramp.
        steps: u64,
        /// The factor at step 0, in `[0, 1]`.
        start_factor: f64,
        /// The schedule after the ramp, whose step 0 is the ramp's end.
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// He et al.'s schedule (ResNet paper, section 4.2): the rate divided by 10 at 50% and 75%
    /// of `total_steps` (milestones `total_steps / 2` and `3 * total_steps / 4`, rounded down).
    pub fn he_et_al(total_steps: u64) -> Self {
        Schedule::MultiStep {
            milestones: vec![
                total_steps / 2,
                total_steps / 4 * 3 + total_steps % 4 * 3 / 4,
            ],
            gamma: 0.1,
        }
    }

    /// A linear warm-up of `steps` steps from `start_factor` times the base rate, then `then`.
    pub fn linear_warmup(steps: u64, start_factor: f64, then: Schedule) -> Self {
        Schedule::LinearWarmup {
            steps,
            start_factor,
            then: Box::new(then),
        }
    }

    /// Checks the parameters: `gamma`, `min_lr` finite and non-negative, `total > 0`,
    /// `start_factor` in `[0, 1]`.
    pub fn validate(&self) -> Result<(), OptimError> {
        match self {
            Schedule::Constant => Ok(()),
            Schedule::MultiStep { gamma, .. } => check_non_negative("gamma", *gamma),
            Schedule::Cosine { total, min_lr } => {
                if *total == 0 {
                    return Err(OptimError::BadConfig("cosine total must be > 0".to_owned()));
                }
                check_non_negative("min_lr", *min_lr)
            }
            Schedule::LinearWarmup {
                start_factor, then, ..
            } => {
                if !(0.0..=1.0).contains(start_factor) {
                    return Err(OptimError::BadConfig(format!(
                        "start_factor must be in [0, 1], got {start_factor}"
                    )));
                }
                then.validate()
            }
        }
    }

    /// The learning rate at `step` (0 = the first optimiser step) for base rate `base_lr`.
    pub fn lr_at(&self, base_lr: f64, step: u64) -> f64 {
        match self {
            Schedule::Constant => base_lr,
            Schedule::MultiStep { milestones, gamma } => {
                let mut passed: Vec<u64> =
                    milestones.iter().copied().filter(|&m| m <= step).collect();
                passed.sort_unstable();
                let mut lr = base_lr;
                for run in passed.chunk_by(|a, b| a == b) {
                    // PyTorch: `lr * gamma ** count` (one pow, then one product).
                    lr *= gamma.powf(run.len() as f64);
                }
                lr
            }
            Schedule::Cosine { total, min_lr } => {
                if *total == 0 {
                    return *min_lr;
                }
                let angle = std::f64::consts::PI * step as f64 / *total as f64;
                min_lr + (base_lr - min_lr) * (1.0 + angle.cos()) / 2.0
            }
            Schedule::LinearWarmup {
                steps,
                start_factor,
                then,
            } => {
                if step < *steps {
                    base_lr * (start_factor + (1.0 - start_factor) * step as f64 / *steps as f64)
                } else {
                    then.lr_at(base_lr, step - steps)
                }
            }
        }
    }
}
