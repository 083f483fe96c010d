//! Parameter groups: per-parameter learning-rate multipliers and weight decay.

use super::error::{OptimError, check_non_negative};
use super::prior::Prior;

/// Overrides of the optimiser's hyperparameters for one parameter, like one of PyTorch's
/// `param_groups`.
///
/// The learning rate is given as a multiplier of the optimiser's (scheduled) rate, so one schedule
/// drives every group; the weight decay, when set, replaces the optimiser's. Passing `None` as
/// the group of a step is the same as [`ParamGroup::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroup {
    /// Multiplier of the optimiser's learning rate (f64 product, as a Python float would be).
    pub lr_scale: f64,
    /// Weight decay for this parameter instead of the optimiser's; `None` keeps the optimiser's.
    pub weight_decay: Option<f64>,
}

impl Default for ParamGroup {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ParamGroup {
    /// No override: the optimiser's learning rate and weight decay.
    pub const DEFAULT: Self = Self {
        lr_scale: 1.0,
        weight_decay: None,
    };

    /// No override (same as [`ParamGroup::DEFAULT`]).
    pub fn new() -> Self {
        Self::DEFAULT
    }

    /// A group without weight decay (the optimiser's learning rate).
    pub fn no_decay() -> Self {
        Self::DEFAULT.with_weight_decay(0.0)
    }

    /// Sets the learning-rate multiplier.
    pub fn with_lr_scale(mut self, lr_scale: f64) -> Self {
        self.lr_scale = lr_scale;
        self
    }

    /// Sets this group's weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }

    /// Checks that the multiplier and the decay are finite and non-negative.
    pub fn validate(&self) -> Result<(), OptimError> {
        check_non_negative("lr_scale", self.lr_scale)?;
        if let Some(wd) = self.weight_decay {
            check_non_negative("group weight_decay", wd)?;
        }
        Ok(())
    }

    /// This group's learning rate given the optimiser's: `lr * lr_scale`.
    pub fn lr(&self, lr: f64) -> f64 {
        lr * self.lr_scale
    }

    /// This group's weight decay given the optimiser's.
    pub fn weight_decay_or(&self, weight_decay: f64) -> f64 {
        self.weight_decay.unwrap_or(weight_decay)
    }
}

/// Which parameters weight decay applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecayPolicy {
    /// Every parameter (plain `torch.optim.SGD(model.parameters(), weight_decay=...)`, as He et
    /// al. and the golden training fixtures do).
    #[default]
    All,
    /// Every parameter except normalisation weights/biases and biases ([`is_norm_or_bias`]),
    /// a common recipe for longer or large-batch training.
    ExcludeNormAndBias,
}

/// Whether a parameter is a normalisation weight or bias or any bias: its name ends in `.bias`
/// (or is `bias`), or it has at most one dimension.
///
/// Conv and linear weights have two or more dimensions; BatchNorm's `weight` and `bias` (and every
/// bias) have one, so the shape alone finds BN in every naming scheme (torchvision, timm,
/// Hugging Face). Buffers such as `running_mean` are not parameters and never reach an optimiser.
pub fn is_norm_or_bias(name: &str, shape: &[usize]) -> bool {
    shape.len() <= 1 || name == "bias" || name.ends_with(".bias")
}

/// The group of a parameter from its name and shape.
///
/// Convs under the identity prior ([`Prior::applies_to`]) get no weight decay: the prior takes
/// decay's place, pulling them toward the Dirac kernel instead of zero. With
/// [`DecayPolicy::ExcludeNormAndBias`], norm weights/biases and biases get none either.
/// Everything else gets [`ParamGroup::DEFAULT`].
pub fn param_group_for(
    name: &str,
    shape: &[usize],
    policy: DecayPolicy,
    prior: &Prior,
) -> ParamGroup {
    let excluded = policy == DecayPolicy::ExcludeNormAndBias && is_norm_or_bias(name, shape);
    if prior.applies_to(name, shape) || excluded {
        ParamGroup::no_decay()
    } else {
        ParamGroup::DEFAULT
    }
}
