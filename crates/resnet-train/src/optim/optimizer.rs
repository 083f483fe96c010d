//! [`Optimizer`]: SGD or AdamW chosen at run time (what `resnet train --optimizer` and
//! checkpoints hold), and [`Optimize`], what a training step needs of any optimiser.

use super::{AdamW, AdamWConfig, OptimError, ParamGroup, Sgd, SgdConfig, StateTensor};

/// What a training step and a checkpoint need of an optimiser: an update of one named
/// parameter, and the state that makes the next update reproducible.
pub trait Optimize: Send {
    /// Updates `param` (named `name`) from its gradient; `group` overrides the learning rate
    /// and weight decay. On error nothing is changed.
    fn step(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        group: Option<&ParamGroup>,
    ) -> Result<(), OptimError>;
    /// The state as named tensors (see [`StateTensor`]).
    fn state(&self) -> Vec<StateTensor>;
}

impl Optimize for Sgd {
    fn step(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        group: Option<&ParamGroup>,
    ) -> Result<(), OptimError> {
        Sgd::step(self, name, param, grad, group)
    }
    fn state(&self) -> Vec<StateTensor> {
        Sgd::state(self)
    }
}

impl Optimize for AdamW {
    fn step(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        group: Option<&ParamGroup>,
    ) -> Result<(), OptimError> {
        AdamW::step(self, name, param, grad, group)
    }
    fn state(&self) -> Vec<StateTensor> {
        AdamW::state(self)
    }
}

/// The settings of either optimiser.
///
/// ```
/// use resnet_train::optim::{AdamWConfig, OptimizerConfig, SgdConfig};
/// let sgd: OptimizerConfig = SgdConfig::new(0.1).with_momentum(0.9).into();
/// let adamw: OptimizerConfig = AdamWConfig::new(1e-3).into();
/// assert_eq!((sgd.name(), adamw.name()), ("sgd", "adamw"));
/// assert_eq!(adamw.lr(), 1e-3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.AdamW`.
    AdamW(AdamWConfig),
}

impl From<SgdConfig> for OptimizerConfig {
    fn from(c: SgdConfig) -> Self {
        Self::Sgd(c)
    }
}

impl From<AdamWConfig> for OptimizerConfig {
    fn from(c: AdamWConfig) -> Self {
        Self::AdamW(c)
    }
}

impl OptimizerConfig {
    /// `sgd` or `adamw`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd(_) => "sgd",
            Self::AdamW(_) => "adamw",
        }
    }
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Sgd(c) => c.lr,
            Self::AdamW(c) => c.lr,
        }
    }
    /// The weight decay.
    pub fn weight_decay(&self) -> f64 {
        match self {
            Self::Sgd(c) => c.weight_decay,
            Self::AdamW(c) => c.weight_decay,
        }
    }
    /// The SGD settings, if this is SGD.
    pub fn sgd(&self) -> Option<&SgdConfig> {
        match self {
            Self::Sgd(c) => Some(c),
            Self::AdamW(_) => None,
        }
    }
    /// The AdamW settings, if this is AdamW.
    pub fn adamw(&self) -> Option<&AdamWConfig> {
        match self {
            Self::AdamW(c) => Some(c),
            Self::Sgd(_) => None,
        }
    }
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), OptimError> {
        match self {
            Self::Sgd(c) => c.validate(),
            Self::AdamW(c) => c.validate(),
        }
    }
}

/// SGD or AdamW, chosen at run time.
///
/// ```
/// use resnet_train::optim::{AdamWConfig, Optimize, Optimizer};
/// let mut opt = Optimizer::try_new(AdamWConfig::new(0.1).into())?;
/// let mut w = vec![1.0f32, -1.0];
/// opt.step("w", &mut w, &[0.5, -0.5], None)?;
/// // Adam's first step moves every element by the learning rate (and decay shrinks it).
/// assert!((w[0] - (1.0 - 0.1 * 0.01 - 0.1)).abs() < 1e-6);
/// assert_eq!(opt.state().len(), 3); // step, exp_avg, exp_avg_sq
/// # Ok::<(), resnet_train::optim::OptimError>(())
/// ```
#[derive(Debug, Clone)]
pub enum Optimizer {
    /// `torch.optim.SGD`.
    Sgd(Sgd),
    /// `torch.optim.AdamW`.
    AdamW(AdamW),
}

impl Optimizer {
    /// An optimiser with no state, after checking the configuration.
    pub fn try_new(config: OptimizerConfig) -> Result<Self, OptimError> {
        Ok(match config {
            OptimizerConfig::Sgd(c) => Self::Sgd(Sgd::try_new(c)?),
            OptimizerConfig::AdamW(c) => Self::AdamW(AdamW::try_new(c)?),
        })
    }
    /// The configuration (with the current learning rate).
    pub fn config(&self) -> OptimizerConfig {
        match self {
            Self::Sgd(o) => OptimizerConfig::Sgd(*o.config()),
            Self::AdamW(o) => OptimizerConfig::AdamW(*o.config()),
        }
    }
    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Sgd(o) => o.lr(),
            Self::AdamW(o) => o.lr(),
        }
    }
    /// Sets the learning rate for the following steps.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), OptimError> {
        match self {
            Self::Sgd(o) => o.set_lr(lr),
            Self::AdamW(o) => o.set_lr(lr),
        }
    }
    /// Replaces the state by one saved with [`Optimize::state`].
    pub fn load_state(&mut self, state: &[StateTensor]) -> Result<(), OptimError> {
        match self {
            Self::Sgd(o) => o.load_state(state),
            Self::AdamW(o) => o.load_state(state),
        }
    }
}

impl Optimize for Optimizer {
    fn step(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        group: Option<&ParamGroup>,
    ) -> Result<(), OptimError> {
        match self {
            Self::Sgd(o) => o.step(name, param, grad, group),
            Self::AdamW(o) => o.step(name, param, grad, group),
        }
    }
    fn state(&self) -> Vec<StateTensor> {
        match self {
            Self::Sgd(o) => o.state(),
            Self::AdamW(o) => o.state(),
        }
    }
}
