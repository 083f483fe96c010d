//! `resnet-train`: training residual networks on the kernels of resnet-rs.
//!
//! Built in steps (see the project's issues): [`optim`] holds the optimisers with PyTorch's
//! semantics and the priors the degradation study compares.
//!
//! ```
//! use resnet_train::optim::{Sgd, SgdConfig};
//!
//! let mut sgd = Sgd::new(SgdConfig::new(0.1).with_momentum(0.9));
//! let mut w = vec![1.0f32, -2.0];
//! sgd.step("w", &mut w, &[0.5, 0.5], None).unwrap();
//! assert_eq!(w, [0.95, -2.05]);
//! ```

#![forbid(unsafe_code)]

pub mod optim;
