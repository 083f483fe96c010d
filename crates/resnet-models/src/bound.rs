//! Binding a plan's parameters to one kernel set: weights flow one way, file → named tensors
//! → (batch-norm folded) → packed kernels, and only the bound form stays resident.
//!
//! [`Backend::Fast`] folds each batch-norm (and an output scale) into its convolution in f64
//! and packs the result for the SIMD kernels; [`Backend::Naive`] keeps the parameters as the
//! file has them, for the reference kernels to run convolution, batch-norm, add and ReLU one
//! after another.

use crate::plan::{ConvSpec, LinearStep, Plan, Step};
use crate::{Backend, ModelError, Precision};
use resnet_kernels::bf16::{Bf16Conv, Bf16Cpu};
use resnet_kernels::fast::{PackedConv, PackedLinear};
use resnet_weights::WeightSource;

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
    /// A convolution in bf16 products, with the detected CPU's token.
    Bf16Conv(Bf16Conv, Bf16Cpu),
    FastLinear(PackedLinear),
    /// A classifier in bf16 products: a 1x1 convolution on `[N, in, 1, 1]`.
    Bf16Linear(Bf16Conv, Bf16Cpu),
    NaiveConv(NaiveConv),
    NaiveLinear {
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
}

/// A plan with the parameters of every step in the form one kernel set runs them.
#[derive(Debug)]
pub(crate) struct BoundPlan {
    pub(crate) plan: Plan,
    /// One entry per step of `plan`.
    pub(crate) steps: Vec<Bound>,
    pub(crate) backend: Backend,
    pub(crate) precision: Precision,
    /// Per step: the border of the bf16 map its output is kept in, or `None` for f32 (see
    /// [`bf16_storage`]).
    pub(crate) storage: Vec<Option<[usize; 2]>>,
}

impl BoundPlan {
    /// Bind every step of `plan` to the tensors of `src`.
    pub(crate) fn new(
        plan: Plan,
        src: &dyn WeightSource,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let bf16 = match (precision, backend) {
            (Precision::F32, _) => None,
            (Precision::Bf16, Backend::Naive) => {
                return Err(ModelError::Unsupported(
                    "bf16 precision runs on the fast kernels only (the naive backend is the \
                     f64 reference)"
                        .into(),
                ));
            }
            (Precision::Bf16, _) => Some(Bf16Cpu::detect().ok_or_else(|| {
                ModelError::Unsupported(
                    "bf16 precision needs AVX512-BF16 (vdpbf16ps), which this CPU lacks; use f32"
                        .into(),
                )
            })?),
        };
        let steps = plan
            .steps()
            .iter()
            .map(|step| bind(step, src, backend, bf16, plan.winograd_tile()))
            .collect::<Result<Vec<_>, _>>()?;
        let storage = bf16_storage(&plan, &steps);
        Ok(Self {
            plan,
            steps,
            backend,
            precision,
            storage,
        })
    }
}

/// Which outputs stay in bf16 between convolutions: a bf16 convolution's output (an even
/// channel count) that only bf16 convolutions read, as their input or their residual, is kept
/// as a bf16 map ([`resnet_kernels::bf16::map_words`]) with the widest border its readers'
/// padding asks for (none for grouped readers, which gather). It costs half the bytes of f32
/// and spares each reader its rounding pass; the values its readers multiply are the same
/// (they round their input to bf16 anyway), and a residual is added as its bf16 rounding.
/// Max-pooling may read a map too (the stem's output): it pools into f32, and since rounding
/// is monotone its result is the f32 pooling's, rounded; so may a named output (a stage),
/// widened to f32 only for an observer that reads it. Outputs that anything else reads
/// (average pooling, the classifier, f32 kernels) stay f32.
fn bf16_storage(plan: &Plan, bound: &[Bound]) -> Vec<Option<[usize; 2]>> {
    let steps = plan.steps();
    (0..steps.len())
        .map(|i| {
            let (Step::Conv(c), Bound::Bf16Conv(..)) = (&steps[i], &bound[i]) else {
                return None;
            };
            if !c.conv.out_channels.is_multiple_of(2) {
                return None;
            }
            let d = c.dst;
            let mut pad = [0, 0];
            let mut read = false;
            for (step, b) in steps.iter().zip(bound).skip(i + 1) {
                let reads =
                    step.src() == Some(d) || matches!(step, Step::Conv(r) if r.residual == Some(d));
                if reads {
                    match (step, b) {
                        (Step::Conv(r), Bound::Bf16Conv(..)) => {
                            if r.src == d && r.conv.groups == 1 {
                                pad[0] = pad[0].max(r.conv.padding);
                                pad[1] = pad[1].max(r.conv.padding);
                            }
                        }
                        // Pooled into f32 straight from the map (its windows skip the
                        // border); a named output is widened for the observers that read it.
                        (Step::MaxPool { .. } | Step::Output { .. }, _) => {}
                        _ => return None,
                    }
                    read = true;
                }
                if step.dst() == Some(d) {
                    break;
                }
            }
            read.then_some(pad)
        })
        .collect()
}

/// The parameters of `step` from `src`, in the form `backend` runs them.
fn bind(
    step: &Step,
    src: &dyn WeightSource,
    backend: Backend,
    bf16: Option<Bf16Cpu>,
    winograd_tile: usize,
) -> Result<Bound, ModelError> {
    match step {
        Step::Conv(c) => bind_conv(&c.conv, src, backend, bf16, winograd_tile),
        Step::Linear(l) => bind_linear(l, src, backend, bf16),
        _ => Ok(Bound::None),
    }
}

fn param(src: &dyn WeightSource, name: String, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    Ok(src.tensor(&name, shape)?.as_slice().to_vec())
}

fn config_error(step: &str, what: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!("{step}: {what}"))
}

/// Fold the batch-norm (and the output scale) into the weights and bias in f64, and pack
/// (in bf16 when `bf16` holds the CPU's token; in Winograd tiles of at most `winograd_tile`
/// pixels a side).
fn bind_conv(
    c: &ConvSpec,
    src: &dyn WeightSource,
    backend: Backend,
    bf16: Option<Bf16Cpu>,
    winograd_tile: usize,
) -> Result<Bound, ModelError> {
    let shape = c.weight_shape();
    if c.groups == 0
        || !c.in_channels.is_multiple_of(c.groups)
        || !c.out_channels.is_multiple_of(c.groups)
    {
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
    if let Some(cpu) = bf16 {
        let conv = Bf16Conv::new(&folded, shape, Some(&bias), c.params())?;
        return Ok(Bound::Bf16Conv(conv, cpu));
    }
    let algo = PackedConv::algorithm_within(shape, c.params(), winograd_tile)?;
    Ok(Bound::FastConv(PackedConv::with_algorithm(
        &folded,
        shape,
        Some(&bias),
        c.params(),
        algo,
    )?))
}

fn bind_linear(
    l: &LinearStep,
    src: &dyn WeightSource,
    backend: Backend,
    bf16: Option<Bf16Cpu>,
) -> Result<Bound, ModelError> {
    let (i, o) = (l.in_features, l.out_features);
    let weight = param(src, format!("{}.weight", l.weight), &[o, i])?;
    let bias = param(src, format!("{}.bias", l.weight), &[o])?;
    if let Some(cpu) = bf16 {
        // `[O, I]` is the weight of a 1x1 convolution from I channels to O.
        let conv = Bf16Conv::new(&weight, [o, i, 1, 1], Some(&bias), Default::default())?;
        return Ok(Bound::Bf16Linear(conv, cpu));
    }
    Ok(match backend {
        Backend::Naive => Bound::NaiveLinear { weight, bias },
        Backend::Fast => Bound::FastLinear(PackedLinear::new(&weight, i, o, Some(&bias))?),
    })
}
