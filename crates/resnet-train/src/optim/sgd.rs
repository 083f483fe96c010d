//! Stochastic gradient descent with momentum, as `torch.optim.SGD`.

use std::collections::BTreeMap;

use super::error::{OptimError, check_len, check_lr, check_non_negative};
use super::group::ParamGroup;
use super::state::StateTensor;
use resnet_kernels::fast::{Par, grad};
use resnet_kernels::naive_grad::{MomentumBuffer, SgdStep};
use resnet_kernels::{Cpu, KernelError};

/// The hyperparameters of [`Sgd`], PyTorch's defaults except the learning rate.
///
/// ```
/// use resnet_train::optim::SgdConfig;
///
/// let config = SgdConfig::new(0.1).with_momentum(0.9).with_weight_decay(1e-4);
/// assert!(config.validate().is_ok());
/// assert!(SgdConfig::new(0.1).with_nesterov(true).validate().is_err()); // needs momentum
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (replaced by [`Sgd::set_lr`], e.g. from a [`Schedule`](super::Schedule)).
    pub lr: f64,
    /// Momentum factor; 0 (the default) keeps no state.
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer (default 0); not applied on the first step.
    pub dampening: f64,
    /// Nesterov momentum (default off); needs momentum > 0 and dampening 0.
    pub nesterov: bool,
    /// L2 penalty added to the gradient, `g + weight_decay * w` (default 0).
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`: no momentum, dampening, Nesterov or weight decay.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Sets the momentum factor.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the dampening.
    pub fn with_dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Turns Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Checks the configuration as PyTorch's constructor does: every value finite and
    /// non-negative (dampening too), and Nesterov only with momentum > 0 and dampening 0.
    pub fn validate(&self) -> Result<(), OptimError> {
        check_lr(self.lr)?;
        check_non_negative("momentum", self.momentum)?;
        check_non_negative("dampening", self.dampening)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(OptimError::BadConfig(
                "Nesterov momentum requires a momentum and zero dampening".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `torch.optim.SGD`, one parameter at a time, its momentum buffers keyed by parameter name.
///
/// For a parameter `w` with gradient `g` (PyTorch's `_single_tensor_sgd`):
///
/// ```text
/// if weight_decay != 0:  g = g + weight_decay * w
/// if momentum != 0:
///     buf = g                                          on the parameter's first step
///     buf = momentum * buf + (1 - dampening) * g       afterwards
///     g = g + momentum * buf   if nesterov   else   g = buf
/// w = w - lr * g
/// ```
///
/// in f32 with PyTorch's roundings (see the [module docs](super#arithmetic)).
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    buffers: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    /// An optimiser with no state. The configuration is checked on every step (a bad one makes
    /// [`Sgd::step`] fail); [`Sgd::try_new`] checks it at once.
    pub fn new(config: SgdConfig) -> Self {
        Self {
            config,
            buffers: BTreeMap::new(),
        }
    }

    /// An optimiser with no state, after checking the configuration.
    pub fn try_new(config: SgdConfig) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate for the following steps (e.g. [`Schedule::lr_at`](super::Schedule::lr_at)).
    pub fn set_lr(&mut self, lr: f64) -> Result<(), OptimError> {
        check_lr(lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// Updates `param` (named `name`) from its gradient; `group` overrides the learning rate
    /// and weight decay (`None`: the configuration's).
    ///
    /// # Errors
    ///
    /// [`OptimError::LengthMismatch`] if `grad` or the stored momentum buffer of `name` does
    /// not have `param`'s length, [`OptimError::InvalidLr`] or [`OptimError::BadConfig`] for a
    /// bad configuration or group. On error nothing is changed.
    pub fn step(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        group: Option<&ParamGroup>,
    ) -> Result<(), OptimError> {
        let c = &self.config;
        c.validate()?;
        let group = group.copied().unwrap_or_default();
        group.validate()?;
        let lr = group.lr(c.lr);
        check_lr(lr)?;
        check_len(name, "gradient", param.len(), grad.len())?;
        let weight_decay = group.weight_decay_or(c.weight_decay);

        // The Python scalars as PyTorch's kernels see them (converted to f32).
        let step = SgdStep {
            neg_lr: (-lr) as f32,
            weight_decay: (weight_decay != 0.0).then_some(weight_decay as f32),
            momentum: c.momentum as f32,
            keep: (1.0 - c.dampening) as f32,
            nesterov: c.nesterov,
        };
        // The arithmetic is resnet-kernels' (`naive_grad::sgd_step` is its reference), compiled
        // for this CPU's vector instructions: fused multiply-adds, the same bits everywhere.
        let cpu = Cpu::detect();
        // Inside a rayon pool (a trainer's), over its threads: the kernel splits the tensor
        // into fixed pieces, so the bits do not depend on it.
        let par = match rayon::current_thread_index() {
            Some(_) => Par::with_threads(rayon::current_num_threads()),
            None => Par::Seq,
        };
        let run = |w: &mut [f32], b: MomentumBuffer<'_>| {
            // Lengths were checked above; the kernel checks them again.
            grad::sgd_step(cpu, par, w, grad, b, &step).map_err(|e| match e {
                KernelError::BadLength {
                    what,
                    expected,
                    found,
                } => OptimError::LengthMismatch {
                    name: name.to_owned(),
                    what,
                    expected,
                    found,
                },
                other => OptimError::BadConfig(other.to_string()),
            })
        };
        if c.momentum == 0.0 {
            return run(param, MomentumBuffer::None);
        }
        match self.buffers.get_mut(name) {
            Some(buffer) => {
                check_len(name, "momentum buffer", param.len(), buffer.len())?;
                run(param, MomentumBuffer::Running(buffer))
            }
            None => {
                // First step: the buffer is the (decayed) gradient itself, undampened.
                let mut buffer = vec![0.0; param.len()];
                run(param, MomentumBuffer::First(&mut buffer))?;
                self.buffers.insert(name.to_owned(), buffer);
                Ok(())
            }
        }
    }

    /// The momentum buffer of `name`, if it has one yet.
    pub fn momentum_buffer(&self, name: &str) -> Option<&[f32]> {
        self.buffers.get(name).map(Vec::as_slice)
    }

    /// Forgets every momentum buffer.
    pub fn clear_state(&mut self) {
        self.buffers.clear();
    }

    /// The state as named tensors, `momentum_buffer.<name>` (flat), sorted by name.
    pub fn state(&self) -> Vec<StateTensor> {
        self.buffers
            .iter()
            .map(|(name, buf)| StateTensor::flat("momentum_buffer", name, buf.clone()))
            .collect()
    }

    /// Replaces the whole state by one saved with [`Sgd::state`]; the steps that follow are
    /// bitwise those the saving optimiser would have made.
    ///
    /// # Errors
    ///
    /// [`OptimError::BadState`] for a name that is not `momentum_buffer.<name>`, a duplicate,
    /// a shape that does not hold its data, or any state when momentum is 0. On error the
    /// state is unchanged.
    pub fn load_state(&mut self, state: &[StateTensor]) -> Result<(), OptimError> {
        let mut buffers = BTreeMap::new();
        for t in state {
            let (kind, param) = t.parts()?;
            if kind != "momentum_buffer" {
                return Err(t.bad(format!("unknown kind `{kind}` for SGD")));
            }
            if self.config.momentum == 0.0 {
                return Err(t.bad("SGD without momentum keeps no state".to_owned()));
            }
            if buffers.insert(param.to_owned(), t.data.clone()).is_some() {
                return Err(t.bad("given twice".to_owned()));
            }
        }
        self.buffers = buffers;
        Ok(())
    }
}
