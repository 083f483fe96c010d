//! Checkpoints that resume training bitwise.
//!
//! A [`Checkpoint`] is one safetensors file holding everything a run needs to continue as if
//! it had never stopped:
//!
//! - the state_dict under torchvision-style names: every parameter (`conv1.weight`,
//!   `layer1.0.bn1.bias`, `fc.weight`, …), the batch-norms' running statistics
//!   (`*.running_mean`, `*.running_var`, F32) and `*.num_batches_tracked` (I64 scalars, as
//!   PyTorch stores them);
//! - the optimiser's state under [`OPTIM_PREFIX`], exactly [`Optimize::state`]: SGD's
//!   `optim.momentum_buffer.<param>`, AdamW's `optim.exp_avg.<param>` and
//!   `optim.exp_avg_sq.<param>` in the parameter's shape and `optim.step.<param>`;
//! - in the header's metadata: `format` ([`FORMAT`]) and `format_version` ([`VERSION`]), the
//!   [`Recipe`] as JSON under `recipe` (model, classes, optimiser settings, prior, seed, data,
//!   batch size), the [`Progress`] under `progress` (optimiser steps done, epochs completed),
//!   and `arch`, `shortcut`, `num_classes`, `in_channels` as `resnet train --save` writes them.
//!
//! Floats are written in JSON as their shortest round-trip decimal and read back exactly, so
//! the optimiser rebuilt from a checkpoint makes the same roundings.
//!
//! A [`CheckpointDir`] keeps a run's checkpoints as `checkpoint-step<N>.safetensors`, each
//! written atomically (a temporary file in the same directory, synced, then renamed), so a
//! crash mid-write leaves the previous checkpoints and at worst a hidden temporary file that
//! is never taken for a checkpoint. The latest checkpoint is the one with the highest step: no
//! pointer file to get out of step with the checkpoints. Beside them, `model.safetensors`
//! ([`MODEL_FILE`]) is the latest state_dict alone: the `optim.*` tensors make a checkpoint
//! fail strict loading (`ResNet::from_file`, PyTorch's `load_state_dict`), which rightly
//! refuses tensors a model does not use; `model.safetensors` loads anywhere a state_dict does.
//! (A lenient loader such as `Network::load` with the model's plan also takes the checkpoint
//! itself.)
//!
//! ```
//! use resnet_models::{CifarConfig, cifar_plan, random_plan_weights};
//! use resnet_tensor::Tensor;
//! use resnet_train::Trainer;
//! use resnet_train::checkpoint::{Checkpoint, CheckpointDir, Progress, Recipe};
//! use resnet_train::optim::{DecayPolicy, Optimize, Prior, Sgd, SgdConfig};
//!
//! let cfg = CifarConfig::new(8, 4).with_in_channels(1);
//! let sgd_config = SgdConfig::new(0.05).with_momentum(0.9).with_weight_decay(5e-4);
//! let recipe = Recipe::new(cfg.name(), 4, 1, sgd_config, "tensors:batch.safetensors");
//! let x = Tensor::from_vec(&[2, 1, 8, 8], (0..128).map(|i| (i % 7) as f32 / 7.0).collect())?;
//! let labels = [1, 3];
//! let step = |t: &mut Trainer, sgd: &mut dyn Optimize| {
//!     t.sgd_step(sgd, &Prior::Zero, DecayPolicy::All, &x, &labels).map(|_| ())
//! };
//!
//! let mut trainer = Trainer::new(cifar_plan(&cfg)?, &random_plan_weights(&cifar_plan(&cfg)?, 0)?)?;
//! let mut sgd = Sgd::try_new(sgd_config)?;
//! step(&mut trainer, &mut sgd)?;
//!
//! // Save after one step, then load the latest checkpoint and rebuild the run from it.
//! let dir = CheckpointDir::new(tempfile::tempdir()?.keep());
//! let ckpt = Checkpoint::capture(&trainer, &sgd, recipe, Progress { step: 1, epoch: 1, ..Default::default() })?;
//! let path = dir.save(&ckpt)?;
//! let (latest, loaded) = dir.load_latest()?;
//! assert_eq!(latest, path);
//! assert_eq!(loaded.progress.step, 1);
//! let (mut resumed, mut resumed_sgd) = loaded.restore(cifar_plan(&cfg)?)?;
//!
//! // The second step is bitwise the same in both runs.
//! step(&mut trainer, &mut sgd)?;
//! step(&mut resumed, &mut resumed_sgd)?;
//! assert_eq!(trainer.params(), resumed.params());
//! assert_eq!(trainer.running_stats(), resumed.running_stats());
//! # std::fs::remove_dir_all(dir.path())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::optim::{
    AdamWConfig, DecayPolicy, OptimError, Optimize, Optimizer, OptimizerConfig, Prior, SgdConfig,
    StateTensor,
};
use crate::{TrainError, Trainer};
use resnet_models::Plan;
use resnet_tensor::Tensor;
use resnet_weights::{
    TensorMap, WeightError, WeightFile, is_ignorable, write_safetensors_with_counters,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `format` metadata value of a checkpoint.
pub const FORMAT: &str = "resnet-rs-checkpoint";

/// The `format_version` this build writes and reads.
pub const VERSION: u32 = 1;

/// The prefix of the optimiser's tensors in a checkpoint (`optim.momentum_buffer.conv1.weight`).
pub const OPTIM_PREFIX: &str = "optim.";

/// The latest state_dict alone, beside the checkpoints of a [`CheckpointDir`].
pub const MODEL_FILE: &str = "model.safetensors";

/// Everything that can go wrong saving, finding, reading or restoring a checkpoint. Nothing in
/// this module panics on a bad file; a failed read or restore changes no file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint directory does not exist (or is not a directory).
    #[error("checkpoint directory {} does not exist", dir.display())]
    NoDirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory holds no `checkpoint-step<N>.safetensors`.
    #[error("no checkpoint in {} (expected files named checkpoint-step<N>.safetensors)", dir.display())]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory could not be listed or created.
    #[error("checkpoint directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file (truncated, corrupt, unreadable).
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: WeightError,
    },
    /// The file reads but is not a usable checkpoint (no or bad metadata, a bad tensor).
    #[error("{} is not a usable checkpoint: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint could not be written.
    #[error("cannot write checkpoint {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: WeightError,
    },
    /// The checkpoint's tensors do not fit the network or the optimiser they are restored into.
    #[error("the checkpoint does not fit the model: {0}")]
    Mismatch(String),
    /// Building the trainer or a tensor failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The optimiser refused the recipe or its state.
    #[error(transparent)]
    Optim(#[from] OptimError),
}

/// How a run trains: with the data, everything that decides its steps. Saved with every
/// checkpoint, so a resumed run takes it from there (and can refuse settings that contradict
/// it).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The model's name as `resnet train --model` takes it (`cifar-resnet20`, `resnet18`).
    pub model: String,
    /// The CIFAR shortcut option (`A`, `B` or `none`), for CIFAR nets.
    pub shortcut: Option<String>,
    /// The number of classes.
    pub classes: usize,
    /// The number of input channels.
    pub in_channels: usize,
    /// The optimiser and its settings (SGD: learning rate, momentum, dampening, Nesterov,
    /// weight decay; AdamW: learning rate, betas, eps, weight decay, AMSGrad).
    pub optimizer: OptimizerConfig,
    /// Steps of linear learning-rate warm-up (from a tenth of the rate) before the schedule,
    /// which then spans the remaining steps.
    pub warmup: Option<u64>,
    /// The prior on the weights.
    pub prior: Prior,
    /// Which parameters weight decay applies to.
    pub decay: DecayPolicy,
    /// The seed of the random initial weights (of a new classifier when started from given
    /// weights), of the data order and of the augmentation (`None`: checkpoints written
    /// before it was recorded for runs from given weights; read as 0).
    pub seed: Option<u64>,
    /// Where the initial weights came from, if from a file (informative).
    pub init: Option<String>,
    /// The training data, e.g. `tensors:/abs/path/batch.safetensors`.
    pub data: String,
    /// A digest of the data ([`data_fingerprint`]), to refuse resuming on other data.
    pub data_fingerprint: Option<String>,
    /// Examples per step (`None`: the whole data as one batch).
    pub batch: Option<usize>,
    /// The learning-rate schedule over the run's steps: `constant`, `he` (He et al.'s: divided
    /// by 10 at 50% and 75% of the steps) or `cosine`.
    pub schedule: String,
    /// Only the first this many training examples (`--subset`).
    pub subset: Option<usize>,
    /// He et al.'s augmentation (pad 4, random crop, flip) on the training batches.
    pub augment: bool,
    /// The input normalisation the network was trained with: per-channel mean and standard
    /// deviation on the `[0, 1]` scale (datasets of bytes).
    pub normalize: Option<(Vec<f64>, Vec<f64>)>,
    /// The classes' names, in label order, when the data names them.
    pub class_names: Option<Vec<String>>,
    /// Only the classifier learns; the rest runs in eval mode (`--freeze-backbone`).
    pub freeze_backbone: bool,
    /// The side of the square inputs cut from image-folder images (`--crop`).
    pub crop: Option<usize>,
    /// Only the first this many test examples are evaluated (`--test-subset`).
    pub test_subset: Option<usize>,
    /// The steps the learning-rate schedule spans (the run's length when it began), for
    /// schedules that depend on it.
    pub schedule_steps: Option<u64>,
    /// Where an identity-prior run's covered convs started (informative): `centre` (the
    /// prior's mode, plus [`Recipe::prior_noise`]) or `random` (the seeded initialisation, or
    /// the given weights). `None` for other runs and checkpoints written before it was recorded.
    pub prior_init: Option<String>,
    /// The deviation of the Gaussian noise added to the centre at the start (informative;
    /// with `prior_init` `centre`).
    pub prior_noise: Option<f64>,
}

impl Recipe {
    /// A recipe for `model` with `classes` classes on `in_channels`-channel input, trained by
    /// `optimizer` (an [`SgdConfig`], an [`AdamWConfig`] or an
    /// [`OptimizerConfig`]) on `data`: no prior, decay on every parameter, no warm-up, seed,
    /// init, fingerprint or batch size (set the public fields for those).
    pub fn new(
        model: impl Into<String>,
        classes: usize,
        in_channels: usize,
        optimizer: impl Into<OptimizerConfig>,
        data: impl Into<String>,
    ) -> Self {
        Self {
            model: model.into(),
            shortcut: None,
            classes,
            in_channels,
            optimizer: optimizer.into(),
            warmup: None,
            prior: Prior::Zero,
            decay: DecayPolicy::All,
            seed: None,
            init: None,
            data: data.into(),
            data_fingerprint: None,
            batch: None,
            schedule: "constant".to_owned(),
            subset: None,
            augment: false,
            normalize: None,
            class_names: None,
            freeze_backbone: false,
            crop: None,
            test_subset: None,
            schedule_steps: None,
            prior_init: None,
            prior_noise: None,
        }
    }

    /// The recipe as a JSON object (the `recipe` metadata of a checkpoint).
    pub fn to_json(&self) -> Value {
        let (prior, lambda) = match self.prior {
            Prior::Zero => ("zero", 0.0),
            Prior::Identity { lambda } => ("identity", lambda),
        };
        let mut v = json!({
            "model": self.model,
            "shortcut": self.shortcut,
            "classes": self.classes,
            "in_channels": self.in_channels,
            "optimizer": self.optimizer.name(),
            "lr": self.optimizer.lr(),
            "weight_decay": self.optimizer.weight_decay(),
            "warmup": self.warmup,
            "prior": prior,
            "prior_lambda": lambda,
            "decay": match self.decay {
                DecayPolicy::All => "all",
                DecayPolicy::ExcludeNormAndBias => "exclude_norm_and_bias",
            },
            "seed": self.seed,
            "init": self.init,
            "data": self.data,
            "data_fingerprint": self.data_fingerprint,
            "batch": self.batch,
            "schedule": self.schedule,
            "subset": self.subset,
            "augment": self.augment,
            "normalize_mean": self.normalize.as_ref().map(|n| &n.0),
            "normalize_std": self.normalize.as_ref().map(|n| &n.1),
            "class_names": self.class_names,
            "freeze_backbone": self.freeze_backbone,
            "crop": self.crop,
            "test_subset": self.test_subset,
            "schedule_steps": self.schedule_steps,
            "prior_init": self.prior_init,
            "prior_noise": self.prior_noise,
        });
        let o = v.as_object_mut().expect("an object");
        match self.optimizer {
            OptimizerConfig::Sgd(c) => {
                o.insert("momentum".into(), json!(c.momentum));
                o.insert("dampening".into(), json!(c.dampening));
                o.insert("nesterov".into(), json!(c.nesterov));
            }
            OptimizerConfig::AdamW(c) => {
                o.insert("betas".into(), json!([c.betas.0, c.betas.1]));
                o.insert("eps".into(), json!(c.eps));
                o.insert("amsgrad".into(), json!(c.amsgrad));
            }
        }
        v
    }

    /// Reads a recipe written by [`Recipe::to_json`]; the error names the field.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("the recipe is not a JSON object")?;
        let prior = match str_field(o, "prior")?.as_str() {
            "zero" => Prior::Zero,
            "identity" => Prior::Identity {
                lambda: f64_field(o, "prior_lambda")?,
            },
            other => return Err(format!("recipe field `prior`: unknown prior {other:?}")),
        };
        let decay = match str_field(o, "decay")?.as_str() {
            "all" => DecayPolicy::All,
            "exclude_norm_and_bias" => DecayPolicy::ExcludeNormAndBias,
            other => return Err(format!("recipe field `decay`: unknown policy {other:?}")),
        };
        let bool_field = |k: &str| {
            o.get(k)
                .and_then(Value::as_bool)
                .ok_or_else(|| format!("recipe field `{k}`: missing or not a boolean"))
        };
        // Checkpoints written before AdamW was recorded have no `optimizer`: SGD.
        let optimizer = match opt(o, "optimizer", |v| v.as_str().map(str::to_owned))?.as_deref() {
            None | Some("sgd") => OptimizerConfig::Sgd(SgdConfig {
                lr: f64_field(o, "lr")?,
                momentum: f64_field(o, "momentum")?,
                dampening: f64_field(o, "dampening")?,
                nesterov: bool_field("nesterov")?,
                weight_decay: f64_field(o, "weight_decay")?,
            }),
            Some("adamw") => {
                let betas = o
                    .get("betas")
                    .and_then(Value::as_array)
                    .and_then(|b| Some((b.first()?.as_f64()?, b.get(1)?.as_f64()?)))
                    .ok_or("recipe field `betas`: missing or not two numbers")?;
                OptimizerConfig::AdamW(AdamWConfig {
                    lr: f64_field(o, "lr")?,
                    betas,
                    eps: f64_field(o, "eps")?,
                    weight_decay: f64_field(o, "weight_decay")?,
                    amsgrad: bool_field("amsgrad")?,
                })
            }
            Some(other) => {
                return Err(format!(
                    "recipe field `optimizer`: unknown optimiser {other:?}"
                ));
            }
        };
        Ok(Self {
            model: str_field(o, "model")?,
            shortcut: opt(o, "shortcut", |v| v.as_str().map(str::to_owned))?,
            classes: usize_field(o, "classes")?,
            in_channels: usize_field(o, "in_channels")?,
            optimizer,
            warmup: opt(o, "warmup", Value::as_u64)?,
            prior,
            decay,
            seed: opt(o, "seed", Value::as_u64)?,
            init: opt(o, "init", |v| v.as_str().map(str::to_owned))?,
            data: str_field(o, "data")?,
            data_fingerprint: opt(o, "data_fingerprint", |v| v.as_str().map(str::to_owned))?,
            batch: opt(o, "batch", |v| {
                v.as_u64().and_then(|b| usize::try_from(b).ok())
            })?,
            schedule: opt(o, "schedule", |v| v.as_str().map(str::to_owned))?
                .unwrap_or_else(|| "constant".to_owned()),
            subset: opt(o, "subset", |v| {
                v.as_u64().and_then(|b| usize::try_from(b).ok())
            })?,
            augment: opt(o, "augment", Value::as_bool)?.unwrap_or(false),
            normalize: match (
                opt(o, "normalize_mean", f64_list)?,
                opt(o, "normalize_std", f64_list)?,
            ) {
                (Some(m), Some(s)) if m.len() == s.len() => Some((m, s)),
                (None, None) => None,
                _ => return Err("recipe fields `normalize_mean`/`normalize_std`: one without the other, or of different lengths".to_owned()),
            },
            class_names: opt(o, "class_names", |v| {
                v.as_array()?
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })?,
            freeze_backbone: opt(o, "freeze_backbone", Value::as_bool)?.unwrap_or(false),
            crop: opt(o, "crop", |v| v.as_u64().and_then(|b| usize::try_from(b).ok()))?,
            test_subset: opt(o, "test_subset", |v| {
                v.as_u64().and_then(|b| usize::try_from(b).ok())
            })?,
            schedule_steps: opt(o, "schedule_steps", Value::as_u64)?,
            prior_init: opt(o, "prior_init", |v| v.as_str().map(str::to_owned))?,
            prior_noise: opt(o, "prior_noise", Value::as_f64)?,
        })
    }

    /// The metadata `resnet train --save` writes too: `arch`, `shortcut` (CIFAR nets),
    /// `num_classes`, `in_channels`; `mean`/`std` (JSON lists, the `[0, 1]` scale, as
    /// `resnet classify` reads them) when the input was normalised from bytes; `classes` (a
    /// JSON list of names) when the data names its classes.
    pub fn model_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("arch".to_owned(), self.model.clone()),
            ("num_classes".to_owned(), self.classes.to_string()),
            ("in_channels".to_owned(), self.in_channels.to_string()),
        ]);
        if let Some(s) = &self.shortcut {
            m.insert("shortcut".to_owned(), s.clone());
        }
        if let Some((mean, std)) = &self.normalize {
            m.insert("mean".to_owned(), json!(mean).to_string());
            m.insert("std".to_owned(), json!(std).to_string());
        }
        if let Some(names) = &self.class_names {
            m.insert("classes".to_owned(), json!(names).to_string());
        }
        if let Some(crop) = self.crop {
            m.insert("crop".to_owned(), crop.to_string());
        }
        m
    }
}

fn f64_list(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(Value::as_f64).collect()
}

fn str_field(o: &Map<String, Value>, k: &str) -> Result<String, String> {
    o.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("recipe field `{k}`: missing or not a string"))
}

fn f64_field(o: &Map<String, Value>, k: &str) -> Result<f64, String> {
    o.get(k)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("recipe field `{k}`: missing or not a number"))
}

fn usize_field(o: &Map<String, Value>, k: &str) -> Result<usize, String> {
    o.get(k)
        .and_then(Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("recipe field `{k}`: missing or not a non-negative integer"))
}

/// An optional field: absent or `null` is `None`; otherwise `get` must read it.
fn opt<T>(
    o: &Map<String, Value>,
    k: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => get(v)
            .map(Some)
            .ok_or_else(|| format!("recipe field `{k}`: unexpected value {v}")),
    }
}

/// How far a run has got.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// Optimiser steps done since the run began (over every resume).
    pub step: u64,
    /// Epochs (passes over the data) completed.
    pub epoch: u64,
    /// The current epoch's running totals, when the checkpoint was taken mid-epoch.
    pub tally: EpochTally,
}

/// Running totals of an epoch's training steps, so that an epoch resumed mid-way reports the
/// same training loss and error as one that ran through.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpochTally {
    /// Sum over the epoch's examples so far of the loss (each step's mean loss times its
    /// batch size).
    pub loss_sum: f64,
    /// Examples the training-mode forward pass got wrong.
    pub wrong: u64,
    /// Examples seen.
    pub seen: u64,
    /// Seconds spent on the epoch's steps.
    pub seconds: f64,
}

impl EpochTally {
    /// Add one step of `n` examples, mean loss `loss`, `wrong` of them wrong, in `seconds`.
    pub fn add(&mut self, n: usize, loss: f64, wrong: usize, seconds: f64) {
        self.loss_sum += loss * n as f64;
        self.wrong += wrong as u64;
        self.seen += n as u64;
        self.seconds += seconds;
    }

    /// Mean loss per example (0 before any).
    pub fn loss(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.loss_sum / self.seen as f64
        }
    }

    /// Fraction of examples wrong (0 before any).
    pub fn error(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.wrong as f64 / self.seen as f64
        }
    }
}

impl Progress {
    fn to_json(self) -> Value {
        let t = self.tally;
        json!({"step": self.step, "epoch": self.epoch, "tally": {
            "loss_sum": t.loss_sum, "wrong": t.wrong, "seen": t.seen, "seconds": t.seconds,
        }})
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let get = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("progress field `{k}`: missing or not an integer"))
        };
        let tally = match v.get("tally") {
            None | Some(Value::Null) => EpochTally::default(),
            Some(t) => {
                let num = |k: &str| {
                    t.get(k).and_then(Value::as_f64).ok_or_else(|| {
                        format!("progress field `tally.{k}`: missing or not a number")
                    })
                };
                let int = |k: &str| {
                    t.get(k).and_then(Value::as_u64).ok_or_else(|| {
                        format!("progress field `tally.{k}`: missing or not an integer")
                    })
                };
                EpochTally {
                    loss_sum: num("loss_sum")?,
                    wrong: int("wrong")?,
                    seen: int("seen")?,
                    seconds: num("seconds")?,
                }
            }
        };
        Ok(Self {
            step: get("step")?,
            epoch: get("epoch")?,
            tally,
        })
    }
}

/// A digest of a batch of training data (its dims, values and labels; FNV-1a, 64 bits), for
/// [`Recipe::data_fingerprint`]: equal data gives equal digests wherever the file lives.
///
/// ```
/// use resnet_train::checkpoint::data_fingerprint;
/// let a = data_fingerprint(&[1, 1, 1, 2], &[0.5, 1.0], &[3]);
/// assert_eq!(a, data_fingerprint(&[1, 1, 1, 2], &[0.5, 1.0], &[3]));
/// assert_ne!(a, data_fingerprint(&[1, 1, 1, 2], &[0.5, 1.0], &[2]));
/// ```
pub fn data_fingerprint(dims: &[usize], input: &[f32], labels: &[usize]) -> String {
    let mut h = Fnv1a::new();
    for &d in dims {
        h.eat(&(d as u64).to_le_bytes());
    }
    for v in input {
        h.eat(&v.to_bits().to_le_bytes());
    }
    for &l in labels {
        h.eat(&(l as u64).to_le_bytes());
    }
    h.finish()
}

/// FNV-1a, 64 bits: the digest of the data fingerprints.
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// `fnv1a64:` and the digest in hex.
    pub(crate) fn finish(&self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

/// One checkpoint: the network's state, the optimiser's, the recipe and the progress.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// How the run trains.
    pub recipe: Recipe,
    /// How far it got.
    pub progress: Progress,
    /// Parameters and running statistics by torchvision-style name (F32).
    pub state: TensorMap,
    /// `{bn}.num_batches_tracked` by full key.
    pub counters: BTreeMap<String, i64>,
    /// The optimiser's state ([`Optimize::state`]), names without [`OPTIM_PREFIX`].
    pub optim: Vec<StateTensor>,
}

impl Checkpoint {
    /// The state of a run after `progress`: the trainer's state_dict and counters and the
    /// optimiser's state.
    pub fn capture(
        trainer: &Trainer,
        optimizer: &(impl Optimize + ?Sized),
        recipe: Recipe,
        progress: Progress,
    ) -> Result<Self, CheckpointError> {
        Ok(Self {
            recipe,
            progress,
            state: trainer.state_dict()?,
            counters: trainer.batches_tracked().clone(),
            optim: optimizer.state(),
        })
    }

    /// Rebuilds the run: a [`Trainer`] for `plan` holding the checkpoint's parameters, running
    /// statistics and counters, and the recipe's [`Optimizer`] with its saved state (SGD's
    /// momentum buffers, AdamW's moments and step counts). Its next step is bitwise the step
    /// the saving run would have made.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Train`] when `plan` asks for a tensor the checkpoint lacks or has
    /// in another shape; [`CheckpointError::Mismatch`] when the checkpoint holds tensors or
    /// counters `plan` does not use, lacks a counter, or holds optimiser state for a parameter
    /// the network does not have (or of another size); [`CheckpointError::Optim`] for a bad
    /// recipe or optimiser state.
    pub fn restore(&self, plan: Plan) -> Result<(Trainer, Optimizer), CheckpointError> {
        let mut trainer = Trainer::new(plan, &self.state)?;
        let unused: Vec<&str> = self
            .state
            .iter()
            .map(|(k, _)| k)
            .filter(|k| {
                !trainer.params().contains_key(*k) && !trainer.running_stats().contains_key(*k)
            })
            .collect();
        if let Some(first) = unused.first() {
            return Err(CheckpointError::Mismatch(format!(
                "{} tensor(s) the model does not use, such as {first}",
                unused.len()
            )));
        }
        if let Some(k) = self
            .counters
            .keys()
            .find(|k| !trainer.batches_tracked().contains_key(*k))
        {
            return Err(CheckpointError::Mismatch(format!(
                "counter {k} belongs to no batch-norm of the model"
            )));
        }
        let keys: Vec<String> = trainer.batches_tracked().keys().cloned().collect();
        for k in keys {
            let n = self
                .counters
                .get(&k)
                .ok_or_else(|| CheckpointError::Mismatch(format!("no counter {k}")))?;
            trainer.set_batches_tracked(&k, *n);
        }
        for t in &self.optim {
            let (kind, param) = t.name.split_once('.').unwrap_or(("", ""));
            match trainer.params().get(param) {
                // AdamW's step count is one number per parameter; the rest is per element.
                Some(_) if kind == "step" && t.data.len() == 1 => {}
                Some((w, _)) if kind != "step" && w.len() == t.data.len() => {}
                Some((w, _)) => {
                    return Err(CheckpointError::Mismatch(format!(
                        "optimiser state {} has {} elements, the parameter {}",
                        t.name,
                        t.data.len(),
                        w.len()
                    )));
                }
                None => {
                    return Err(CheckpointError::Mismatch(format!(
                        "optimiser state {} names no parameter of the model",
                        t.name
                    )));
                }
            }
        }
        let mut optimizer = Optimizer::try_new(self.recipe.optimizer)?;
        optimizer.load_state(&self.optim)?;
        Ok((trainer, optimizer))
    }

    /// The metadata written with the checkpoint.
    fn metadata(&self) -> HashMap<String, String> {
        let mut m = self.recipe.model_metadata();
        m.insert("format".into(), FORMAT.into());
        m.insert("format_version".into(), VERSION.to_string());
        m.insert("recipe".into(), self.recipe.to_json().to_string());
        m.insert("progress".into(), self.progress.to_json().to_string());
        m
    }

    /// Writes the checkpoint to `path` atomically (temporary file, synced, renamed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let write = |source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut optim = Vec::with_capacity(self.optim.len());
        for t in &self.optim {
            // In the parameter's shape, as PyTorch keeps a momentum buffer, when it fits.
            let param = t.name.split_once('.').map(|(_, p)| p);
            let shape = match param.and_then(|p| self.state.get(p)) {
                Some(w) if w.len() == t.data.len() => w.shape().dims().to_vec(),
                _ => t.shape.clone(),
            };
            let tensor = Tensor::from_vec(&shape, t.data.clone()).map_err(|e| write(e.into()))?;
            optim.push((format!("{OPTIM_PREFIX}{}", t.name), tensor));
        }
        let tensors: Vec<(&str, &Tensor)> = self
            .state
            .iter()
            .chain(optim.iter().map(|(k, t)| (k.as_str(), t)))
            .collect();
        let counters: Vec<(&str, i64)> = self
            .counters
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        write_safetensors_with_counters(path, &tensors, &counters, Some(self.metadata()))
            .map_err(write)
    }

    /// Writes the state_dict alone (parameters, running statistics, counters and the model
    /// metadata; no optimiser state, recipe or progress) to `path` atomically: what the
    /// inference path and `--init` load.
    pub fn save_model(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let tensors: Vec<(&str, &Tensor)> = self.state.iter().collect();
        let counters: Vec<(&str, i64)> = self
            .counters
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        write_safetensors_with_counters(
            path,
            &tensors,
            &counters,
            Some(self.recipe.model_metadata()),
        )
        .map_err(|source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a checkpoint written by [`Checkpoint::save`] (into memory: the file may be
    /// replaced afterwards).
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Read`] for a file that cannot be read or is not valid safetensors
    /// (truncated, corrupt), [`CheckpointError::Invalid`] for one without the checkpoint
    /// metadata (a plain state_dict), of another format version, or with a bad tensor.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let file = WeightFile::read(path).map_err(|source| CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| CheckpointError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let meta = file.metadata();
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(invalid(format!("format {f:?}, expected {FORMAT:?}"))),
            None => {
                return Err(invalid(
                    "no `format` metadata (a plain state_dict? it can start a run as --init)"
                        .into(),
                ));
            }
        }
        match meta.get("format_version").map(String::as_str) {
            Some(v) if v == VERSION.to_string() => {}
            other => {
                return Err(invalid(format!(
                    "format version {}; this build reads version {VERSION}",
                    other.unwrap_or("(none)")
                )));
            }
        }
        let json = |k: &str| -> Result<Value, CheckpointError> {
            let text = meta
                .get(k)
                .ok_or_else(|| invalid(format!("no `{k}` metadata")))?;
            serde_json::from_str(text).map_err(|e| invalid(format!("`{k}` metadata: {e}")))
        };
        let recipe = Recipe::from_json(&json("recipe")?).map_err(invalid)?;
        let progress = Progress::from_json(&json("progress")?).map_err(invalid)?;
        let mut state = TensorMap::new();
        let mut counters = BTreeMap::new();
        let mut optim = Vec::new();
        let bad = |name: &str, e: WeightError| invalid(format!("tensor {name}: {e}"));
        for (name, info) in file.tensors() {
            if let Some(rest) = name.strip_prefix(OPTIM_PREFIX) {
                let t = file.load(name).map_err(|e| bad(name, e))?;
                optim.push(StateTensor::new(
                    rest,
                    t.as_slice().to_vec(),
                    info.shape.clone(),
                ));
            } else if is_ignorable(name) {
                let (v, _) = file.load_integers(name).map_err(|e| bad(name, e))?;
                match v.as_slice() {
                    [n] => {
                        counters.insert(name.to_owned(), *n);
                    }
                    _ => {
                        return Err(invalid(format!(
                            "tensor {name}: {} values, expected one",
                            v.len()
                        )));
                    }
                }
            } else {
                state.insert(name, file.load(name).map_err(|e| bad(name, e))?);
            }
        }
        Ok(Self {
            recipe,
            progress,
            state,
            counters,
            optim,
        })
    }
}

/// A directory of checkpoints, `checkpoint-step<N>.safetensors`, and [`MODEL_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDir {
    dir: PathBuf,
}

impl CheckpointDir {
    /// The checkpoints in `dir` (nothing is read or created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the checkpoint after `step` steps goes: `checkpoint-step<step>.safetensors`.
    pub fn file_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-step{step}.safetensors"))
    }

    /// Where the latest state_dict alone goes.
    pub fn model_file(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// The step of a checkpoint's file name, if it is one (`checkpoint-step12.safetensors`;
    /// no leading zeros, so one step has one name).
    pub fn step_of(file_name: &str) -> Option<u64> {
        let digits = file_name
            .strip_prefix("checkpoint-step")?
            .strip_suffix(".safetensors")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let step: u64 = digits.parse().ok()?;
        (step.to_string() == digits).then_some(step)
    }

    /// The checkpoints present, by step, ascending.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NoDirectory`] when the directory does not exist,
    /// [`CheckpointError::Dir`] when it cannot be listed.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        if !self.dir.is_dir() {
            return Err(CheckpointError::NoDirectory {
                dir: self.dir.clone(),
            });
        }
        let err = |source| CheckpointError::Dir {
            dir: self.dir.clone(),
            source,
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let Some(step) = entry.file_name().to_str().and_then(Self::step_of) else {
                continue;
            };
            if entry.file_type().map_err(err)?.is_file() {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The checkpoint with the highest step, if any.
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>, CheckpointError> {
        Ok(self.list()?.pop())
    }

    /// Reads the latest checkpoint, checking that its progress matches its file name.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NoDirectory`], [`CheckpointError::Empty`] when there is no
    /// checkpoint, and [`Checkpoint::load`]'s errors for the latest one (an earlier checkpoint
    /// is not silently taken instead; nothing is removed).
    pub fn load_latest(&self) -> Result<(PathBuf, Checkpoint), CheckpointError> {
        let (step, path) = self.latest()?.ok_or_else(|| CheckpointError::Empty {
            dir: self.dir.clone(),
        })?;
        let ckpt = Checkpoint::load(&path)?;
        if ckpt.progress.step != step {
            return Err(CheckpointError::Invalid {
                path,
                reason: format!(
                    "its name says step {step}, its progress step {}",
                    ckpt.progress.step
                ),
            });
        }
        Ok((path, ckpt))
    }

    /// Writes `ckpt` as `checkpoint-step<N>.safetensors` (N its progress step), creating the
    /// directory if needed, then [`MODEL_FILE`]; both atomically. Returns the checkpoint's
    /// path.
    pub fn save(&self, ckpt: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| CheckpointError::Dir {
            dir: self.dir.clone(),
            source,
        })?;
        let path = self.file_for(ckpt.progress.step);
        ckpt.save(&path)?;
        ckpt.save_model(self.model_file())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            CheckpointDir::step_of("checkpoint-step12.safetensors"),
            Some(12)
        );
        assert_eq!(
            CheckpointDir::step_of("checkpoint-step0.safetensors"),
            Some(0)
        );
        for bad in [
            "checkpoint-step012.safetensors",
            "checkpoint-step.safetensors",
            "checkpoint-step-1.safetensors",
            "checkpoint-step1.safetensors.tmp-7",
            ".checkpoint-step1.safetensors.tmp-7",
            "checkpoint-step99999999999999999999999.safetensors",
            "model.safetensors",
        ] {
            assert_eq!(CheckpointDir::step_of(bad), None, "{bad}");
        }
        let d = CheckpointDir::new("/x");
        assert_eq!(
            d.file_for(3),
            PathBuf::from("/x/checkpoint-step3.safetensors")
        );
    }

    #[test]
    fn recipes_round_trip_exactly() {
        let mut r = Recipe::new(
            "cifar-resnet20",
            10,
            3,
            SgdConfig::new(0.1 + 0.2)
                .with_momentum(0.9)
                .with_weight_decay(5e-4)
                .with_nesterov(true),
            "tensors:/d.safetensors",
        );
        r.shortcut = Some("A".into());
        r.prior = Prior::Identity { lambda: 1.0 / 3.0 };
        r.seed = Some(u64::MAX);
        r.batch = Some(7);
        r.data_fingerprint = Some("fnv1a64:00".into());
        r.prior_init = Some("centre".into());
        r.prior_noise = Some(0.01);
        let text = r.to_json().to_string();
        let back = Recipe::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.optimizer.lr().to_bits(), (0.1f64 + 0.2).to_bits());
        // AdamW's settings and a warm-up, too.
        let mut a = r.clone();
        a.optimizer = AdamWConfig::new(3e-4)
            .with_betas(0.8, 0.99)
            .with_eps(1e-7)
            .with_weight_decay(0.05)
            .with_amsgrad(true)
            .into();
        a.warmup = Some(17);
        let back = Recipe::from_json(&serde_json::from_str(&a.to_json().to_string()).unwrap());
        assert_eq!(back.unwrap(), a);
        // A recipe of a version before the optimiser was recorded reads as SGD.
        let mut old = r.to_json();
        old.as_object_mut().unwrap().remove("optimizer");
        assert_eq!(Recipe::from_json(&old).unwrap(), r);
        // One before the prior's start was recorded: none.
        for k in ["prior_init", "prior_noise"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let back = Recipe::from_json(&old).unwrap();
        assert_eq!((back.prior_init, back.prior_noise), (None, None));
        // Every float a user could pass survives the trip bit for bit.
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = f64::from_bits(s >> 2);
            if !x.is_finite() {
                continue;
            }
            let v: Value = serde_json::from_str(&json!(x).to_string()).unwrap();
            assert_eq!(v.as_f64().unwrap().to_bits(), x.to_bits(), "{x:e}");
        }
        let e = Recipe::from_json(&json!({"model": "m"})).unwrap_err();
        assert!(e.contains("prior"), "{e}");
    }

    #[test]
    fn an_adamw_run_resumes_bitwise_from_its_saved_checkpoint() {
        use crate::optim::Optimize;
        use resnet_models::{CifarConfig, cifar_plan, random_plan_weights};
        let cfg = CifarConfig::new(8, 3).with_in_channels(1);
        let plan = || cifar_plan(&cfg).unwrap();
        let x = Tensor::from_vec(
            &[4, 1, 8, 8],
            (0..256)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect(),
        )
        .unwrap();
        let labels = [0, 2, 1, 2];
        let config = AdamWConfig::new(1e-2).with_weight_decay(0.05);
        let mut trainer = Trainer::new(plan(), &random_plan_weights(&plan(), 3).unwrap()).unwrap();
        let mut opt = Optimizer::try_new(config.into()).unwrap();
        let step = |t: &mut Trainer, o: &mut Optimizer| {
            t.sgd_step(
                o,
                &Prior::Zero,
                DecayPolicy::ExcludeNormAndBias,
                &x,
                &labels,
            )
            .unwrap();
        };
        step(&mut trainer, &mut opt);
        step(&mut trainer, &mut opt);
        let recipe = Recipe::new(cfg.name(), 3, 1, config, "tensors:x");
        let ckpt = Checkpoint::capture(&trainer, &opt, recipe, Progress::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        ckpt.save(&path).unwrap();
        let (mut resumed, mut ropt) = Checkpoint::load(&path).unwrap().restore(plan()).unwrap();
        assert!(matches!(ropt, Optimizer::AdamW(_)));
        assert_eq!(ropt.state().len(), opt.state().len());
        step(&mut trainer, &mut opt);
        step(&mut resumed, &mut ropt);
        let bits = |t: &Trainer| -> Vec<u32> {
            let sd = t.state_dict().unwrap();
            sd.iter()
                .flat_map(|(_, t)| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(bits(&resumed), bits(&trainer));
    }

    #[test]
    fn restore_refuses_a_checkpoint_of_another_model() {
        use crate::optim::Sgd;
        use resnet_models::{CifarConfig, cifar_plan, random_plan_weights};
        let cfg = CifarConfig::new(8, 3).with_in_channels(1);
        let plan = || cifar_plan(&cfg).unwrap();
        let trainer = Trainer::new(plan(), &random_plan_weights(&plan(), 1).unwrap()).unwrap();
        let mut sgd = Sgd::new(SgdConfig::new(0.1).with_momentum(0.9));
        let mut w = trainer.params()["fc.bias"].0.clone();
        sgd.step("fc.bias", &mut w, &[0.5; 3], None).unwrap();
        let recipe = Recipe::new(cfg.name(), 3, 1, *sgd.config(), "tensors:x");
        let ckpt = Checkpoint::capture(&trainer, &sgd, recipe, Progress::default()).unwrap();
        assert!(ckpt.restore(plan()).is_ok());
        // A deeper net lacks tensors; a shallower one would leave some unused.
        let deeper = cifar_plan(&CifarConfig::new(14, 3).with_in_channels(1)).unwrap();
        assert!(matches!(
            ckpt.restore(deeper),
            Err(CheckpointError::Train(_))
        ));
        let mut extra = ckpt.clone();
        extra
            .state
            .insert("layer9.weight", Tensor::zeros(&[1]).unwrap());
        let e = extra.restore(plan()).unwrap_err().to_string();
        assert!(e.contains("layer9.weight"), "{e}");
        let mut odd = ckpt.clone();
        odd.optim[0].name = "momentum_buffer.nope".into();
        let e = odd.restore(plan()).unwrap_err().to_string();
        assert!(e.contains("momentum_buffer.nope"), "{e}");
        let mut short = ckpt.clone();
        short.counters.remove("bn1.num_batches_tracked");
        let e = short.restore(plan()).unwrap_err().to_string();
        assert!(e.contains("no counter bn1.num_batches_tracked"), "{e}");
    }
}
