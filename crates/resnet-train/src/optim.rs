//! Optimisers, parameter groups, priors and learning-rate schedules with PyTorch's semantics.
//!
//! - [`Sgd`] is `torch.optim.SGD` (momentum, dampening, Nesterov, weight decay added to the
//!   gradient); [`AdamW`] is `torch.optim.AdamW` (decoupled decay, bias-corrected moments,
//!   optional AMSGrad); [`Optimizer`] is either, chosen at run time, and [`Optimize`] what a
//!   training step needs of any of them.
//! - [`ParamGroup`] overrides the learning rate (as a multiplier) and the weight decay of one
//!   parameter; [`param_group_for`] picks the group of a parameter from its name and shape.
//! - [`Prior`] is the prior of the MAP reading: [`Prior::Zero`] is ordinary weight decay (the
//!   optimiser's business), [`Prior::Identity`] centres a Gaussian prior on the Dirac kernel
//!   ([`dirac`]) of every 3x3 conv but the stem, and [`Prior::term`] gives its loss and gradient.
//! - [`Schedule`] gives the learning rate as a pure function of the step.
//! - Every optimiser's state is a list of named f32 tensors ([`StateTensor`]) for exact resume.
//!
//! # Arithmetic
//!
//! Parameters, gradients and optimiser buffers are f32. Hyperparameters (learning rate, momentum,
//! betas, weight decay, ...) are f64, as Python floats are in PyTorch. Each update follows
//! PyTorch's single-tensor CPU implementation (what `torch.optim` runs on CPU tensors):
//!
//! - scalar factors PyTorch computes in Python (`1 - dampening`, `1 - lr * weight_decay`,
//!   `lr / bias_correction1`, ...) are computed in f64, in the same order, and rounded to f32
//!   where PyTorch's kernel converts the Python scalar to the tensor's dtype;
//! - `a.add(b, alpha=s)` is one fused multiply-add `s * b + a`, as in PyTorch's vectorised CPU
//!   kernel (`vec::fmadd`); with `s = 1` it is a plain correctly rounded add;
//! - `mul_`, `sqrt`, division, `addcmul_` (`a + s * b * c`, unfused) and `addcdiv_`
//!   (`a + s * b / c`) are single f32 operations in PyTorch's order; `lerp_` uses PyTorch's two
//!   branches (`weight < 0.5` or not), fused as in its vectorised kernel.
//!
//! So the updates agree with PyTorch's bit for bit on the elements its vectorised loops handle.
//! PyTorch computes the last few elements of each tensor (fewer than two vector widths) in
//! scalar code whose fusing depends on how PyTorch was compiled; there the two can differ by one
//! rounding of `a + s * b`, and `addcmul_` can differ by one rounding if PyTorch's compiler fused
//! it. Non-finite gradients are not checked: they propagate as in PyTorch.

mod adamw;
mod error;
mod group;
mod optimizer;
mod prior;
mod schedule;
mod sgd;
mod state;

pub use adamw::{AdamW, AdamWConfig};
pub use error::OptimError;
pub use group::{DecayPolicy, ParamGroup, is_norm_or_bias, param_group_for};
pub use optimizer::{Optimize, Optimizer, OptimizerConfig};
pub use prior::{
    Prior, STEM_CONV, dirac, identity_prior_loss, identity_prior_term, is_identity_prior_conv,
    prior_term,
};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};
pub use state::StateTensor;
