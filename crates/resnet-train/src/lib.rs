//! `resnet-train`: training residual networks on the kernels of resnet-rs.
//!
//! Built in steps (see the project's issues). So far [`optim`] holds the optimisers with
//! PyTorch's semantics and arithmetic ([`optim::Sgd`], [`optim::AdamW`]), parameter groups,
//! the priors the degradation study compares ([`optim::Prior`]: weight decay toward zero, or
//! toward the identity's Dirac kernel) and learning-rate schedules ([`optim::Schedule`]). The
//! optimisers work on one named f32 parameter at a time and keep their state by name, as
//! serialisable named tensors, so a training engine can drive them over any set of parameters
//! and resume exactly.
//!
//! ```
//! use resnet_train::optim::{Sgd, SgdConfig};
//!
//! let mut sgd = Sgd::new(SgdConfig::new(0.1).with_momentum(0.9));
//! let mut w = vec![1.0f32, -2.0];
//! sgd.step("w", &mut w, &[0.5, 0.5], None).unwrap();
//! assert_eq!(w, [0.95, -2.05]);
//! ```
//!
//! One step of the golden fixtures' recipe for a parameter (identity prior on the 3x3 convs but
//! the stem, weight decay everywhere else):
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

#![forbid(unsafe_code)]

pub mod optim;
