//! `resnet-models`: the ResNet family, built from a config and filled from a weight source.
//!
//! [`ResNetConfig`] describes any torchvision-style residual network: block type
//! ([`BlockKind::Basic`] or [`BlockKind::Bottleneck`], torchvision v1.5 with the stride on the
//! 3x3 conv), blocks per stage, groups and width per group (ResNeXt, Wide ResNet), the number of
//! classes, and whether blocks have shortcuts at all (the "plain" twin). Constructors
//! [`resnet18`] … [`wide_resnet101_2`] give torchvision's configurations.
//!
//! A [`ResNet`] is filled from any [`WeightSource`] (torchvision, timm and HF transformers key
//! names), from a file with its architecture inferred from the keys and shapes
//! ([`ResNet::from_file`]), or from seeded Kaiming initialisation ([`ResNet::random`]). The same
//! type runs He et al.'s CIFAR nets ([`CifarConfig`], [`cifar_plan`]: shortcut option A, B or
//! the plain twin), which [`ResNet::from_file`] recognises too ([`infer_arch`]: option A and
//! the plain twin have the same keys, so a file without projection weights must say which in
//! its metadata `arch`, as `resnet train --save` writes it).
//!
//! Every network is written once, as a [`Plan`]: a flat list of [`Step`]s over buffer slots,
//! built from its config by one builder per family ([`resnet_plan`], [`edsr_plan`]) on shared
//! machinery ([`PlanBuilder`]). A [`Network`] binds a plan to weights for one kernel set
//! ([`Backend::Fast`]: batch-norms folded, weights packed for the SIMD kernels;
//! [`Backend::Naive`]: the f64 reference kernels on the parameters as stored) and runs it with
//! one executor, which owns the threads and the reused workspaces and reports each step to an
//! [`Observer`] (stage outputs, per-layer timing).
//!
//! ```no_run
//! use resnet_models::{ResNet, Tensor, imagenet};
//!
//! let model = ResNet::from_file("resnet18.safetensors")?;
//! let x = Tensor::zeros(&[1, 3, 224, 224])?; // a normalised NCHW image batch
//! let logits = model.forward(&x)?;           // [1, 1000]
//! let top = resnet_models::top_k(&logits, 5)?;
//! let (class, p) = top[0][0];
//! println!("{} ({class}) with probability {p:.3}", imagenet::CLASSES[class]);
//! # Ok::<(), resnet_models::ModelError>(())
//! ```
//!
//! Inputs and outputs are [`Tensor`]s (`resnet_tensor`'s, re-exported here with [`Layout`] and
//! [`TensorError`]); [`imagenet::CLASSES`] names a 1000-class torchvision classifier's logits.
//!
//! [`Edsr`] is the residual image-enhancement family (EDSR super-resolution): residual blocks
//! without batch-norm, a long skip, PixelShuffle upsamplers and the mean-shift convs, on the
//! same plan machinery and executor.
//!
//! Without a file, a seeded random network of any configuration:
//!
//! ```
//! use resnet_models::{ResNet, Tensor, resnet18};
//!
//! let model = ResNet::random(&resnet18(10), 42)?;
//! let x = Tensor::zeros(&[2, 3, 33, 47])?; // any batch, odd sizes
//! let stages = model.forward_stages(&x)?;
//! assert_eq!(stages.logits.shape().dims(), &[2, 10]);
//! assert_eq!(stages.pool.shape().dims(), &[2, 512]);
//! assert_eq!(stages.layers[3].shape().dims(), &[2, 512, 2, 2]);
//! # Ok::<(), resnet_models::ModelError>(())
//! ```

#![forbid(unsafe_code)]

mod bound;
mod cifar;
mod config;
mod edsr;
mod error;
mod exec;
pub mod imagenet;
mod infer;
mod init;
mod network;
mod plan;
mod resnet;
pub mod timing;

pub use cifar::cifar_plan;
pub use config::{
    Arch, BlockKind, CifarConfig, CifarShortcut, EdsrConfig, ResNetConfig, resnet18, resnet34,
    resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d,
    wide_resnet50_2, wide_resnet101_2,
};
pub use edsr::{Edsr, edsr_block_plan, edsr_plan};
pub use error::{Backend, ModelError, Precision};
pub use exec::{Flow, LayerTime, Observer, StepEvent, Values};
pub use infer::{infer_arch, infer_cifar_config, infer_config};
pub use init::{random_edsr_tensor_map, random_plan_weights, random_tensor_map};
pub use network::Network;
pub use plan::{ConvSpec, ConvStep, LinearStep, Plan, PlanBuilder, Slot, Step, StepDims};
pub use resnet::{ResNet, StageOutputs, resnet_block_plan, resnet_plan, top_k};

pub use resnet_kernels::fast::ConvAlgo;
pub use resnet_kernels::{Cpu, SimdLevel};
pub use resnet_tensor::{Layout, Tensor, TensorError};
pub use resnet_weights::{Strictness, WeightError, WeightFile, WeightSource};
