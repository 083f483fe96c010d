//! Adam with decoupled weight decay, as `torch.optim.AdamW`.

use std::collections::BTreeMap;

use super::error::{OptimError, check_len, check_lr, check_non_negative};
use super::group::ParamGroup;
use super::state::StateTensor;

/// The hyperparameters of [`AdamW`], PyTorch's defaults.
///
/// ```
/// use resnet_train::optim::AdamWConfig;
///
/// let config = AdamWConfig::new(3e-4).with_weight_decay(0.05);
/// assert_eq!(config.betas, (0.9, 0.999));
/// assert_eq!(config.eps, 1e-8);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3; replaced by [`AdamW::set_lr`]).
    pub lr: f64,
    /// Decay rates of the first and second moment averages (default `(0.9, 0.999)`), each in
    /// `[0, 1)`.
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay: `w *= 1 - lr * weight_decay` before the Adam step (default 1e-2).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad; default off).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl AdamWConfig {
    /// PyTorch's defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
        }
    }

    /// Sets the moment decay rates.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// Sets epsilon.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Turns AMSGrad on or off.
    pub fn with_amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    /// Checks the configuration as PyTorch's constructor does (lr, eps and weight decay finite
    /// and non-negative, each beta in `[0, 1)`).
    pub fn validate(&self) -> Result<(), OptimError> {
        check_lr(self.lr)?;
        check_non_negative("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        for (i, beta) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&beta) {
                return Err(OptimError::BadConfig(format!(
                    "beta{} must be in [0, 1), got {beta}",
                    i + 1
                )));
            }
        }
        Ok(())
    }
}

/// The state of one parameter.
#[derive(Debug, Clone, PartialEq)]
struct Moments {
    /// The step count, an f32 as PyTorch's `state["step"]` tensor (exact up to 2^24 steps).
    step: f32,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    /// Present exactly when AMSGrad is on.
    max_exp_avg_sq: Option<Vec<f32>>,
}

/// `torch.optim.AdamW`, one parameter at a time, its state keyed by parameter name.
///
/// For a parameter `w` with gradient `g`, at its step `t` (1 on its first step; the moments
/// start at zero), PyTorch's `_single_tensor_adam` with decoupled decay:
///
/// ```text
/// w = w * (1 - lr * weight_decay)
/// m = lerp(m, g, 1 - beta1)                    # m + (1 - beta1) * (g - m)
/// v = v * beta2 + (1 - beta2) * g * g
/// vmax = max(vmax, v)                          # AMSGrad only; then v stands for vmax below
/// step_size = lr / (1 - beta1^t)
/// denom = sqrt(v) / sqrt(1 - beta2^t) + eps
/// w = w + (-step_size) * m / denom
/// ```
///
/// with the scalars in f64 and the tensors in f32 (see the [module docs](super#arithmetic)).
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    states: BTreeMap<String, Moments>,
}

/// PyTorch's `lerp` (its two branches keep the result exact at both ends).
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if weight.abs() < 0.5 {
        weight.mul_add(diff, start)
    } else {
        (weight - 1.0).mul_add(diff, end)
    }
}

/// `torch.maximum`: NaN if either is NaN.
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

impl AdamW {
    /// An optimiser with no state. The configuration is checked on every step (a bad one makes
    /// [`AdamW::step`] fail); [`AdamW::try_new`] checks it at once.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            states: BTreeMap::new(),
        }
    }

    /// An optimiser with no state, after checking the configuration.
    pub fn try_new(config: AdamWConfig) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate for the following steps.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), OptimError> {
        check_lr(lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// How many steps `name` has taken (0 before its first).
    pub fn step_count(&self, name: &str) -> u64 {
        // The count is a small non-negative integer stored exactly in f32.
        self.states.get(name).map_or(0, |s| s.step as u64)
    }

    /// Updates `param` (named `name`) from its gradient; `group` overrides the learning rate
    /// and weight decay (`None`: the configuration's).
    ///
    /// # Errors
    ///
    /// [`OptimError::LengthMismatch`] if `grad` or the stored moments of `name` do not have
    /// `param`'s length, [`OptimError::InvalidLr`] or [`OptimError::BadConfig`] for a bad
    /// configuration or group. On error nothing is changed.
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
        if let Some(s) = self.states.get(name) {
            check_len(name, "exp_avg", param.len(), s.exp_avg.len())?;
            check_len(name, "exp_avg_sq", param.len(), s.exp_avg_sq.len())?;
            let max_len = s.max_exp_avg_sq.as_ref().map_or(0, Vec::len);
            if c.amsgrad {
                check_len(name, "max_exp_avg_sq", param.len(), max_len)?;
            }
        }
        let s = self
            .states
            .entry(name.to_owned())
            .or_insert_with(|| Moments {
                step: 0.0,
                exp_avg: vec![0.0; param.len()],
                exp_avg_sq: vec![0.0; param.len()],
                max_exp_avg_sq: c.amsgrad.then(|| vec![0.0; param.len()]),
            });
        s.step += 1.0;

        // The Python scalars, in f64 as PyTorch computes them.
        let (beta1, beta2) = c.betas;
        let t = f64::from(s.step);
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        // ... and as the f32 kernels see them.
        let decay = (weight_decay != 0.0).then_some((1.0 - lr * weight_decay) as f32);
        let weight1 = (1.0 - beta1) as f32;
        let beta2_32 = beta2 as f32;
        let weight2 = (1.0 - beta2) as f32;
        let neg_step_size = (-step_size) as f32;
        let bc2_sqrt = bias_correction2_sqrt as f32;
        let eps = c.eps as f32;

        let mut max_sq = s.max_exp_avg_sq.as_deref_mut();
        for (i, (w, &g)) in param.iter_mut().zip(grad).enumerate() {
            if let Some(decay) = decay {
                *w *= decay;
            }
            let m = lerp(s.exp_avg[i], g, weight1);
            s.exp_avg[i] = m;
            let v = s.exp_avg_sq[i] * beta2_32 + weight2 * g * g;
            s.exp_avg_sq[i] = v;
            let v = match max_sq.as_deref_mut() {
                Some(max_sq) => {
                    max_sq[i] = maximum(max_sq[i], v);
                    max_sq[i]
                }
                None => v,
            };
            let denom = v.sqrt() / bc2_sqrt + eps;
            *w += neg_step_size * m / denom;
        }
        Ok(())
    }

    /// The first-moment average of `name`, if it has taken a step.
    pub fn exp_avg(&self, name: &str) -> Option<&[f32]> {
        self.states.get(name).map(|s| s.exp_avg.as_slice())
    }

    /// The second-moment average of `name`, if it has taken a step.
    pub fn exp_avg_sq(&self, name: &str) -> Option<&[f32]> {
        self.states.get(name).map(|s| s.exp_avg_sq.as_slice())
    }

    /// Forgets every parameter's state.
    pub fn clear_state(&mut self) {
        self.states.clear();
    }

    /// The state as named tensors, per parameter (sorted by name): `step.<name>` (shape `[]`),
    /// `exp_avg.<name>`, `exp_avg_sq.<name>` and, with AMSGrad, `max_exp_avg_sq.<name>` (flat).
    pub fn state(&self) -> Vec<StateTensor> {
        let mut out = Vec::new();
        for (name, s) in &self.states {
            out.push(StateTensor::new(
                format!("step.{name}"),
                vec![s.step],
                vec![],
            ));
            out.push(StateTensor::flat("exp_avg", name, s.exp_avg.clone()));
            out.push(StateTensor::flat("exp_avg_sq", name, s.exp_avg_sq.clone()));
            if let Some(max) = &s.max_exp_avg_sq {
                out.push(StateTensor::flat("max_exp_avg_sq", name, max.clone()));
            }
        }
        out
    }

    /// Replaces the whole state by one saved with [`AdamW::state`]; the steps that follow are
    /// bitwise those the saving optimiser would have made.
    ///
    /// # Errors
    ///
    /// [`OptimError::BadState`] for an unknown kind or a duplicate, a shape that does not hold
    /// its data, a step that is not a non-negative whole number, a parameter missing one of its
    /// tensors or with tensors of different lengths, or `max_exp_avg_sq` present without
    /// AMSGrad or missing with it. On error the state is unchanged.
    pub fn load_state(&mut self, state: &[StateTensor]) -> Result<(), OptimError> {
        type Parts<'a> = [Option<&'a StateTensor>; 4];
        const KINDS: [&str; 4] = ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
        let mut by_param: BTreeMap<&str, Parts<'_>> = BTreeMap::new();
        for t in state {
            let (kind, param) = t.parts()?;
            let Some(k) = KINDS.iter().position(|&x| x == kind) else {
                return Err(t.bad(format!("unknown kind `{kind}` for AdamW")));
            };
            let slot = &mut by_param.entry(param).or_default()[k];
            if slot.replace(t).is_some() {
                return Err(t.bad("given twice".to_owned()));
            }
        }
        let mut states = BTreeMap::new();
        for (param, parts) in by_param {
            let missing = |kind: &str| OptimError::BadState {
                name: format!("{kind}.{param}"),
                reason: "missing".to_owned(),
            };
            let step_t = parts[0].ok_or_else(|| missing("step"))?;
            let exp_avg = parts[1].ok_or_else(|| missing("exp_avg"))?;
            let exp_avg_sq = parts[2].ok_or_else(|| missing("exp_avg_sq"))?;
            let step = match step_t.data.as_slice() {
                &[s] if s >= 0.0 && s.is_finite() && s.fract() == 0.0 => s,
                _ => {
                    return Err(step_t.bad("not one non-negative whole number".to_owned()));
                }
            };
            let len = exp_avg.data.len();
            if exp_avg_sq.data.len() != len {
                return Err(exp_avg_sq.bad(format!(
                    "{} elements, exp_avg has {len}",
                    exp_avg_sq.data.len()
                )));
            }
            let max_exp_avg_sq = match (parts[3], self.config.amsgrad) {
                (Some(t), true) if t.data.len() == len => Some(t.data.clone()),
                (Some(t), true) => {
                    return Err(t.bad(format!("{} elements, exp_avg has {len}", t.data.len())));
                }
                (Some(t), false) => return Err(t.bad("present without AMSGrad".to_owned())),
                (None, true) => return Err(missing("max_exp_avg_sq")),
                (None, false) => None,
            };
            let moments = Moments {
                step,
                exp_avg: exp_avg.data.clone(),
                exp_avg_sq: exp_avg_sq.data.clone(),
                max_exp_avg_sq,
            };
            states.insert(param.to_owned(), moments);
        }
        self.states = states;
        Ok(())
    }
}
