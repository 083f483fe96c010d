//! A [`Plan`] bound to weights for one kernel set: weights flow one way, file → named tensors
//! → (batch-norm folded) → packed kernels, and only the bound form stays resident.
//!
//! [`Backend::Fast`] folds each batch-norm into its convolution in f64 and packs the result
//! for the SIMD kernels; [`Backend::Naive`] keeps the parameters as the file has them and runs
//! convolution, batch-norm, add and ReLU as separate f64-accumulating reference kernels.

use crate::exec::{Executor, Observer};
use crate::plan::{ConvStep, LinearStep, Plan, Step};
use crate::{Backend, ModelError};
use resnet_kernels::Cpu;
use resnet_kernels::fast::{PackedConv, PackedLinear};
use resnet_tensor::Tensor;
use resnet_weights::WeightSource;
use std::sync::Arc;

/// A convolution's parameters as the reference kernels take them.
#[derive(Debug, Clone)]
pub(crate) struct NaiveConv {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Option<Vec<f32>>,
    pub(crate) bn: Option<NaiveBn>,
}

/// A batch-norm's parameters (evaluation mode).
#[derive(Debug, Clone)]
pub(crate) struct NaiveBn {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) mean: Vec<f32>,
    pub(crate) var: Vec<f32>,
}

/// What one step of a plan computes with, on the chosen kernel set.
#[derive(Debug, Clone)]
pub(crate) enum Bound {
    /// The step has no parameters.
    None,
    FastConv(PackedConv),
    FastLinear(PackedLinear),
    NaiveConv(NaiveConv),
    NaiveLinear {
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
}

/// A plan with its weights bound for one kernel set, and the threads and workspaces that run
/// it: the engine under [`crate::ResNet`] and [`crate::Edsr`], usable for any plan.
///
/// `Send + Sync`; clones share the weights, the threads and the workspaces.
///
/// ```
/// use resnet_models::{Backend, Network, resnet18, resnet_plan, random_tensor_map};
/// use resnet_tensor::Tensor;
///
/// let cfg = resnet18(10);
/// let weights = random_tensor_map(&cfg, 1)?;
/// let net = Network::load(resnet_plan(&cfg)?, &weights, Backend::Fast)?;
/// let x = Tensor::zeros(&[1, 3, 32, 32])?;
/// let logits = net.output(&x, "logits")?;
/// assert_eq!(logits.shape().dims(), &[1, 10]);
/// # Ok::<(), resnet_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Network {
    plan: Arc<Plan>,
    bound: Arc<Vec<Bound>>,
    backend: Backend,
    exec: Executor,
}

fn param(src: &dyn WeightSource, name: String, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    Ok(src.tensor(&name, shape)?.as_slice().to_vec())
}

fn config_error(step: &str, what: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!("{step}: {what}"))
}

impl Network {
    /// Bind `plan` to the tensors of `src` (named as the plan's steps say) for `backend`, on
    /// all cores. Every tensor is checked against the shape the plan implies.
    pub fn load(plan: Plan, src: &dyn WeightSource, backend: Backend) -> Result<Self, ModelError> {
        let bound = plan
            .steps()
            .iter()
            .map(|step| match step {
                Step::Conv(c) => bind_conv(c, src, backend),
                Step::Linear(l) => bind_linear(l, src, backend),
                _ => Ok(Bound::None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            plan: Arc::new(plan),
            bound: Arc::new(bound),
            backend,
            exec: Executor::new(threads, Cpu::detect())?,
        })
    }

    /// The same network on `threads` worker threads (1: the calling thread only).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        self.exec = Executor::new(threads, self.exec.cpu())?;
        Ok(self)
    }

    /// The same network dispatching to another instruction set (for testing the paths of
    /// older CPUs on one machine); results are within rounding of each other.
    pub fn with_cpu(mut self, cpu: Cpu) -> Result<Self, ModelError> {
        self.exec = Executor::new(self.exec.threads(), cpu)?;
        Ok(self)
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The kernel set.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// The instruction set the fast kernels dispatch to.
    pub fn cpu(&self) -> Cpu {
        self.exec.cpu()
    }

    /// Every convolution in execution order with the algorithm the fast kernels run for it
    /// (`None` on the naive backend).
    pub fn conv_algorithms(&self) -> Option<Vec<(String, resnet_kernels::fast::ConvAlgo)>> {
        (self.backend == Backend::Fast).then(|| {
            self.plan
                .steps()
                .iter()
                .zip(self.bound.iter())
                .filter_map(|(s, b)| match (s, b) {
                    (Step::Conv(c), Bound::FastConv(p)) => Some((c.name.clone(), p.algorithm())),
                    _ => None,
                })
                .collect()
        })
    }

    /// Run the plan on `x` (`[N, C, H, W]`, either layout), reporting every step to
    /// `observer`, which may stop the run early.
    pub fn run(&self, x: &Tensor, observer: &mut dyn Observer) -> Result<(), ModelError> {
        self.exec
            .run(&self.plan, &self.bound, self.backend, x, observer)
    }

    /// Run until the output `name` and return it (NCHW; `[N, C]` for pooled values).
    pub fn output(&self, x: &Tensor, name: &str) -> Result<Tensor, ModelError> {
        let mut keep = crate::exec::Keep::one(name);
        self.run(x, &mut keep)?;
        keep.take_one()
            .ok_or_else(|| ModelError::Config(format!("the plan has no output {name:?}")))
    }

    /// Run the whole plan once on `x`, timing every step (each convolution with its
    /// algorithm): the per-layer table of `cargo xtask bench`.
    pub fn profile(&self, x: &Tensor) -> Result<Vec<crate::LayerTime>, ModelError> {
        let mut p = crate::exec::Profile::default();
        self.run(x, &mut p)?;
        Ok(p.0)
    }

    /// Run the whole plan and return every output, in order, with its name.
    pub fn outputs(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>, ModelError> {
        let mut keep = crate::exec::Keep::all();
        self.run(x, &mut keep)?;
        Ok(keep.into_all())
    }
}

/// Fold the batch-norm (and the output scale) into the weights and bias in f64, and pack.
fn bind_conv(c: &ConvStep, src: &dyn WeightSource, backend: Backend) -> Result<Bound, ModelError> {
    let shape = c.weight_shape();
    if c.groups == 0 || c.in_channels % c.groups != 0 || c.out_channels % c.groups != 0 {
        return Err(config_error(
            &c.name,
            format_args!(
                "groups {} must divide {} input and {} output channels",
                c.groups, c.in_channels, c.out_channels
            ),
        ));
    }
    if c.kernel == 0 || c.stride == 0 {
        return Err(config_error(
            &c.name,
            "kernel and stride must be at least 1",
        ));
    }
    let o = c.out_channels;
    let weight = param(src, format!("{}.weight", c.weight), &shape)?;
    let bias = if c.bias {
        Some(param(src, format!("{}.bias", c.weight), &[o])?)
    } else {
        None
    };
    let bn = match &c.bn {
        Some(bn) => {
            let p = |n: &str| param(src, format!("{bn}.{n}"), &[o]);
            Some(NaiveBn {
                gamma: p("weight")?,
                beta: p("bias")?,
                mean: p("running_mean")?,
                var: p("running_var")?,
            })
        }
        None => None,
    };
    if c.bn_eps.is_nan() || c.bn_eps < 0.0 || !c.scale.is_finite() {
        return Err(config_error(
            &c.name,
            "the batch-norm epsilon must be a non-negative number and the scale finite",
        ));
    }
    if backend == Backend::Naive {
        return Ok(Bound::NaiveConv(NaiveConv { weight, bias, bn }));
    }
    // y = scale * (gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta)
    //   = conv_{w * s}(x) + t,  k = gamma / sqrt(var + eps),  s = scale * k,
    //                           t = scale * (b * k + (beta - mean * k))
    let scale = f64::from(c.scale);
    let eps = f64::from(c.bn_eps);
    let (s, t): (Vec<f64>, Vec<f64>) = (0..o)
        .map(|i| {
            let b = bias.as_ref().map_or(0.0, |b| f64::from(b[i]));
            match &bn {
                Some(bn) => {
                    let k = f64::from(bn.gamma[i]) / (f64::from(bn.var[i]) + eps).sqrt();
                    let t = b * k + (f64::from(bn.beta[i]) - f64::from(bn.mean[i]) * k);
                    (scale * k, scale * t)
                }
                None => (scale, scale * b),
            }
        })
        .unzip();
    let per = weight.len() / o.max(1);
    let folded: Vec<f32> = weight
        .iter()
        .enumerate()
        .map(|(i, &w)| (f64::from(w) * s[i / per]) as f32)
        .collect();
    let bias: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    Ok(Bound::FastConv(PackedConv::new(
        &folded,
        shape,
        Some(&bias),
        c.params(),
    )?))
}

fn bind_linear(
    l: &LinearStep,
    src: &dyn WeightSource,
    backend: Backend,
) -> Result<Bound, ModelError> {
    let (i, o) = (l.in_features, l.out_features);
    let weight = param(src, format!("{}.weight", l.weight), &[o, i])?;
    let bias = param(src, format!("{}.bias", l.weight), &[o])?;
    Ok(match backend {
        Backend::Naive => Bound::NaiveLinear { weight, bias },
        Backend::Fast => Bound::FastLinear(PackedLinear::new(&weight, i, o, Some(&bias))?),
    })
}
