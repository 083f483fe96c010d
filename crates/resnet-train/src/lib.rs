//! `resnet-train`: training residual networks on the kernels of resnet-rs.
//!
//! A network is the same [`resnet_models::Plan`] the inference path runs; [`Trainer`] walks it
//! forwards in training mode (batch statistics in every batch-norm, the running statistics
//! updated as PyTorch does) keeping only what each step's backward needs, then walks it
//! backwards, each step with its reverse, to the gradient of every named parameter. Nothing
//! restates a network's topology.
//!
//! ```
//! use resnet_models::{CifarConfig, cifar_plan, random_plan_weights};
//! use resnet_train::Trainer;
//! use resnet_tensor::Tensor;
//!
//! let cfg = CifarConfig::new(8, 10).with_in_channels(1);
//! let weights = random_plan_weights(&cifar_plan(&cfg)?, 0)?;
//! let mut t = Trainer::new(cifar_plan(&cfg)?, &weights)?;
//! let x = Tensor::from_vec(&[2, 1, 8, 8], (0..128).map(|i| (i % 7) as f32 / 7.0).collect())?;
//! let step = t.forward_backward(&x, &[3, 5])?;
//! assert!(step.loss > 0.0);
//! assert_eq!(step.grads["conv1.weight"].len(), 16 * 9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`optim`] holds the optimisers with PyTorch's semantics and arithmetic ([`optim::Sgd`],
//! [`optim::AdamW`]), parameter groups, the priors the degradation study compares
//! ([`optim::Prior`]: weight decay toward zero, or toward the identity's Dirac kernel) and
//! learning-rate schedules ([`optim::Schedule`]). They work on one named f32 parameter at a
//! time and keep their state by name, as serialisable named tensors:
//!
//! ```
//! use resnet_train::optim::{DecayPolicy, Prior, Sgd, SgdConfig, param_group_for};
//!
//! let prior = Prior::Identity { lambda: 1e-3 };
//! let mut sgd = Sgd::new(SgdConfig::new(0.01).with_momentum(0.9).with_weight_decay(5e-4));
//! let (name, shape) = ("layer1.0.conv1.weight", [2, 2, 3, 3]);
//! let mut w = resnet_train::optim::dirac(2, 2, 3, 3)?;
//! let mut grad = vec![0.0f32; w.len()]; // from the backward pass
//! let prior_loss = prior.term(name, &shape, &w, &mut grad)?; // added to the loss
//! let group = param_group_for(name, &shape, DecayPolicy::All, &prior); // no decay here
//! sgd.step(name, &mut w, &grad, Some(&group))?;
//! assert_eq!(prior_loss, 0.0);
//! # Ok::<(), resnet_train::optim::OptimError>(())
//! ```
//!
//! [`checkpoint`] saves a run (state_dict, optimiser state, recipe, progress) atomically and
//! rebuilds it so that it continues bitwise as if it had never stopped.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod data;
mod engine;
mod eval;
pub mod optim;

pub use engine::{StepOutput, Target, Trainer};
pub use eval::{Evaluation, evaluate};

/// Errors from training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A kernel refused its arguments.
    #[error(transparent)]
    Kernel(#[from] resnet_kernels::KernelError),
    /// The plan or its input does not fit.
    #[error(transparent)]
    Model(#[from] resnet_models::ModelError),
    /// The weights could not be read.
    #[error(transparent)]
    Weights(#[from] resnet_weights::WeightError),
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] resnet_tensor::TensorError),
    /// An optimiser refused its arguments.
    #[error(transparent)]
    Optim(#[from] optim::OptimError),
    /// The loss is NaN or infinite: the step was not applied.
    #[error("the loss is {loss}; the step was not applied (try a smaller learning rate)")]
    NonFinite {
        /// The loss.
        loss: f64,
    },
    /// The batch or the labels do not fit the network.
    #[error("{0}")]
    Input(String),
}
