//! The training engine: a forward walk over a plan in training mode that keeps what each
//! step's backward needs (a tape), then the backward walk in reverse, on the reference
//! kernels (`resnet_kernels::naive` and `naive_grad`, f64 accumulation, NCHW).
//!
//! Gradients are kept per slot: walking backwards, the readers of a slot's value (which come
//! after its writer) add to the slot's gradient, and the writer consumes it and clears the
//! slot for the value it overwrote. The plan's allocator never lets a step read the slot it
//! writes, so this is exact.

mod fast;

use crate::TrainError;
use crate::optim::{DecayPolicy, Optimize, Prior, param_group_for};
use resnet_kernels::naive_grad::{self, BnSaved};
use resnet_kernels::{ConvGeometry, PoolGeometry, naive};
use resnet_models::{Backend, ConvSpec, Plan, Step};
use resnet_tensor::{Layout, Tensor};
use resnet_weights::{TensorMap, WeightSource};
use std::collections::BTreeMap;

/// PyTorch's default batch-norm momentum for the running statistics.
const BN_MOMENTUM: f32 = 0.1;

/// What one forward-backward pass gives.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The batch's mean cross-entropy.
    pub loss: f64,
    /// The gradient of the loss for every trainable parameter, by name.
    pub grads: BTreeMap<String, Vec<f32>>,
    /// For class targets, each image's predicted class (the first largest logit, as
    /// `argmax`), from the training-mode forward pass; empty for image targets.
    pub predictions: Vec<usize>,
}

/// The index of the first largest value (as `argmax`); 0 for an empty row.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// What a training step's loss compares the network's output with.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One class index per image: the mean softmax cross-entropy of the plan's `logits`
    /// output, with label smoothing `smoothing` (0 for none; PyTorch's `label_smoothing`).
    Classes {
        /// Class indices, one per image.
        labels: &'a [usize],
        /// Label smoothing in `[0, 1]`.
        smoothing: f32,
    },
    /// The images the plan's `output` should give (`[N, C, H, W]`, as the output): the mean
    /// absolute error (PyTorch's `F.l1_loss`, EDSR's loss).
    L1(&'a Tensor),
    /// As [`Target::L1`] with the mean squared error (`F.mse_loss`).
    Mse(&'a Tensor),
}

impl Target<'_> {
    /// The plan output the loss reads.
    fn output_name(&self) -> &'static str {
        match self {
            Target::Classes { .. } => "logits",
            _ => "output",
        }
    }

    /// Check the target against the batch size and the output's dims.
    fn check(&self, batch: usize, out: [usize; 4]) -> Result<(), TrainError> {
        match self {
            Target::Classes { labels, .. } if labels.len() != batch => Err(TrainError::Input(
                format!("{} labels for a batch of {batch}", labels.len()),
            )),
            Target::Classes { .. } => Ok(()),
            Target::L1(t) | Target::Mse(t) => match t.shape().dims4() {
                Some(d) if d == out => Ok(()),
                _ => Err(TrainError::Input(format!(
                    "the target is {:?}, the network's output {out:?}",
                    t.shape().dims()
                ))),
            },
        }
    }

    /// Each image's predicted class for class targets (first largest logit), else nothing.
    fn predictions(&self, dims: [usize; 4], out: &[f32]) -> Vec<usize> {
        match self {
            Target::Classes { .. } if dims[1] > 0 => {
                out.chunks_exact(dims[1]).map(argmax).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The loss of `out` (dims `dims`, `[N, K, 1, 1]` logits or images) and its gradient;
    /// `target` holds the target images in the output's layout (unused for classes).
    fn loss(
        &self,
        dims: [usize; 4],
        out: &[f32],
        target: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, TrainError> {
        Ok(match self {
            Target::Classes { labels, smoothing } => naive_grad::softmax_cross_entropy(
                [dims[0], dims[1]],
                out,
                labels,
                *smoothing,
                Some(grad),
            )?,
            Target::L1(_) => naive_grad::l1_loss(out, target, Some(grad))?,
            Target::Mse(_) => naive_grad::mse_loss(out, target, Some(grad))?,
        })
    }
}

/// What a step's backward needs from its forward.
#[derive(Debug)]
enum Tape {
    None,
    Conv {
        /// The conv's input and its dims.
        x: Vec<f32>,
        x_dims: [usize; 4],
        /// The conv's output before the batch-norm (when there is one) and its statistics.
        z: Option<(Vec<f32>, BnSaved)>,
        /// The step's output after ReLU (when there is one).
        y: Option<Vec<f32>>,
    },
    Pool {
        x: Vec<f32>,
        x_dims: [usize; 4],
    },
    Dims([usize; 4]),
    Linear {
        x: Vec<f32>,
        n: usize,
    },
}

/// A network's trainable parameters and batch-norm statistics, and its plan: trains by
/// forward-backward passes in training mode.
#[derive(Debug, Clone)]
pub struct Trainer {
    plan: Plan,
    /// Trainable parameters by name (`{conv}.weight`, `{bn}.weight`, `{bn}.bias`, `fc.*` …).
    params: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    /// Running means and variances by name (`{bn}.running_mean`, `{bn}.running_var`).
    stats: BTreeMap<String, Vec<f32>>,
    /// `{bn}.num_batches_tracked`.
    batches: BTreeMap<String, i64>,
    /// Parameters that get no gradient (and so no update).
    frozen: std::collections::BTreeSet<String>,
    /// The kernel set the steps run on.
    backend: Backend,
    /// The fast path's threads and reusable buffers.
    fast: fast::FastState,
}

fn bn_names(bn: &str) -> [String; 4] {
    [
        format!("{bn}.weight"),
        format!("{bn}.bias"),
        format!("{bn}.running_mean"),
        format!("{bn}.running_var"),
    ]
}

impl Trainer {
    /// Read every parameter and batch-norm statistic `plan` names from `src`, checking shapes;
    /// `{bn}.num_batches_tracked` starts at 0 (read it with [`Trainer::set_batches_tracked`]
    /// if the source has it).
    pub fn new(plan: Plan, src: &dyn WeightSource) -> Result<Self, TrainError> {
        let mut params = BTreeMap::new();
        let mut stats = BTreeMap::new();
        let mut batches = BTreeMap::new();
        let mut take = |name: String, shape: &[usize]| -> Result<(), TrainError> {
            let t = src.tensor(&name, shape)?;
            params.insert(name, (t.as_slice().to_vec(), shape.to_vec()));
            Ok(())
        };
        for step in plan.steps() {
            match step {
                Step::Conv(c) => {
                    let c = &c.conv;
                    take(format!("{}.weight", c.weight), &c.weight_shape())?;
                    if c.bias {
                        take(format!("{}.bias", c.weight), &[c.out_channels])?;
                    }
                    if let Some(bn) = &c.bn {
                        let [w, b, m, v] = bn_names(bn);
                        let o = [c.out_channels];
                        take(w, &o)?;
                        take(b, &o)?;
                        stats.insert(m.clone(), src.tensor(&m, &o)?.as_slice().to_vec());
                        stats.insert(v.clone(), src.tensor(&v, &o)?.as_slice().to_vec());
                        batches.insert(format!("{bn}.num_batches_tracked"), 0);
                    }
                }
                Step::Linear(l) => {
                    take(
                        format!("{}.weight", l.weight),
                        &[l.out_features, l.in_features],
                    )?;
                    take(format!("{}.bias", l.weight), &[l.out_features])?;
                }
                _ => {}
            }
        }
        Ok(Self {
            plan,
            params,
            stats,
            batches,
            frozen: Default::default(),
            backend: Backend::Fast,
            fast: fast::FastState::new(1)?,
        })
    }

    /// Freeze every trainable parameter whose name `pred` accepts: it gets no gradient in a
    /// [`StepOutput`] and so no update (PyTorch's `requires_grad = False`; EDSR's `sub_mean`
    /// and `add_mean`, for one). Returns how many parameters are frozen now.
    ///
    /// ```
    /// # use resnet_models::{CifarConfig, cifar_plan, random_plan_weights};
    /// # use resnet_train::Trainer;
    /// let plan = cifar_plan(&CifarConfig::new(8, 10))?;
    /// let mut t = Trainer::new(plan.clone(), &random_plan_weights(&plan, 0)?)?;
    /// // Train the classifier only.
    /// let n = t.freeze(|name| !name.starts_with("fc."));
    /// assert_eq!(n, t.params().len() - 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn freeze(&mut self, pred: impl Fn(&str) -> bool) -> usize {
        for k in self.params.keys() {
            if pred(k) {
                self.frozen.insert(k.clone());
            }
        }
        self.frozen.len()
    }

    /// The frozen parameters' names.
    pub fn frozen(&self) -> impl Iterator<Item = &str> {
        self.frozen.iter().map(String::as_str)
    }

    /// Run on `backend`: [`Backend::Fast`] (the default: SIMD kernels, NHWC, threads) or
    /// [`Backend::Naive`] (the f64-accumulating reference kernels, one thread, for checking).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Run the fast path on `threads` threads of a pool of this trainer's own (1: the calling
    /// thread). Results are bitwise the same for any thread count.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, TrainError> {
        self.fast = fast::FastState::new(threads)?;
        Ok(self)
    }

    /// The kernel set the steps run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Threads the fast path runs on.
    pub fn threads(&self) -> usize {
        self.fast.threads()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The trainable parameters by name, with their shapes.
    pub fn params(&self) -> &BTreeMap<String, (Vec<f32>, Vec<usize>)> {
        &self.params
    }

    /// A trainable parameter's values, mutably (for an optimiser's update).
    pub fn param_mut(&mut self, name: &str) -> Option<&mut Vec<f32>> {
        self.params.get_mut(name).map(|(v, _)| v)
    }

    /// Set a batch-norm's `num_batches_tracked` (by its full key).
    pub fn set_batches_tracked(&mut self, key: &str, n: i64) -> bool {
        match self.batches.get_mut(key) {
            Some(b) => {
                *b = n;
                true
            }
            None => false,
        }
    }

    /// `num_batches_tracked` of every batch-norm, by full key.
    pub fn batches_tracked(&self) -> &BTreeMap<String, i64> {
        &self.batches
    }

    /// The running statistics by full key.
    pub fn running_stats(&self) -> &BTreeMap<String, Vec<f32>> {
        &self.stats
    }

    /// The state as named tensors (parameters and running statistics; the counters are in
    /// [`Trainer::batches_tracked`]): what the inference path loads.
    pub fn state_dict(&self) -> Result<TensorMap, TrainError> {
        let mut m = TensorMap::new();
        for (k, (v, shape)) in &self.params {
            m.insert(k.clone(), Tensor::from_vec(shape, v.clone())?);
        }
        for (k, v) in &self.stats {
            m.insert(k.clone(), Tensor::from_vec(&[v.len()], v.clone())?);
        }
        Ok(m)
    }

    fn param(&self, name: &str) -> &[f32] {
        &self.params[name].0
    }

    /// One forward pass in training mode on `x` (`[N, C, H, W]`) with class `labels`, then
    /// the backward pass: the mean cross-entropy and every parameter's gradient. Updates the
    /// batch-norms' running statistics and counters as PyTorch's training mode does; the
    /// parameters are not changed (that is the optimiser's job).
    pub fn forward_backward(
        &mut self,
        x: &Tensor,
        labels: &[usize],
    ) -> Result<StepOutput, TrainError> {
        self.forward_backward_with(
            x,
            Target::Classes {
                labels,
                smoothing: 0.0,
            },
        )
    }

    /// [`Trainer::forward_backward`] with any loss: class labels (cross-entropy on the
    /// `logits` output) or target images (L1 or MSE on the `output` output, for enhancement
    /// nets such as EDSR).
    pub fn forward_backward_with(
        &mut self,
        x: &Tensor,
        target: Target<'_>,
    ) -> Result<StepOutput, TrainError> {
        let dims = x
            .shape()
            .dims4()
            .ok_or_else(|| TrainError::Input("expected a rank-4 [N, C, H, W] batch".into()))?;
        if let Target::Classes { labels, .. } = target
            && labels.len() != dims[0]
        {
            return Err(TrainError::Input(format!(
                "{} labels for a batch of {}",
                labels.len(),
                dims[0]
            )));
        }
        let mut out = if self.backend == Backend::Fast {
            self.forward_backward_fast(x, dims, target)?
        } else {
            self.forward_backward_naive(x, dims, target)?
        };
        out.grads.retain(|k, _| !self.frozen.contains(k));
        Ok(out)
    }

    /// The reference path of [`Trainer::forward_backward_with`].
    fn forward_backward_naive(
        &mut self,
        x: &Tensor,
        dims: [usize; 4],
        target: Target<'_>,
    ) -> Result<StepOutput, TrainError> {
        let x = x.to_layout(Layout::Nchw)?;
        let steps = self.plan.steps().to_vec();
        let slots = self.plan.slots();
        let mut vals: Vec<Vec<f32>> = vec![Vec::new(); slots];
        let mut sdims: Vec<[usize; 4]> = vec![[0; 4]; slots];
        let mut tape = Vec::with_capacity(steps.len());
        let mut logits_slot = None;
        // Forward, training mode.
        for step in &steps {
            let input = step.src().map_or(dims, |s| sdims[s.0]);
            let out_dims = step.output_dims(input)?;
            let src = |s: usize| -> Vec<f32> { vals[s].clone() };
            let (out, t) = match step {
                Step::Input { .. } => (x.as_slice().to_vec(), Tape::None),
                Step::Conv(c) => {
                    let xin = src(c.src.0);
                    let res = c.residual.map(|r| vals[r.0].as_slice());
                    let (y, t) = self.conv_forward(&c.conv, c.relu, &xin, input, res)?;
                    (y, t)
                }
                Step::MaxPool {
                    src: s,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    let g = PoolGeometry::new(input, [*kernel; 2], [*stride; 2], [*padding; 2])?;
                    let mut y = vec![0.0; out_dims.iter().product()];
                    naive::max_pool2d(&g, &vals[s.0], &mut y)?;
                    (
                        y,
                        Tape::Pool {
                            x: src(s.0),
                            x_dims: input,
                        },
                    )
                }
                Step::GlobalAvgPool { src: s, .. } => {
                    let mut y = vec![0.0; input[0] * input[1]];
                    naive::adaptive_avg_pool2d(input, [1, 1], &vals[s.0], &mut y)?;
                    (y, Tape::Dims(input))
                }
                Step::Linear(l) => {
                    let n = input[0];
                    let mut y = vec![0.0; n * l.out_features];
                    naive::linear(
                        [n, l.in_features, l.out_features],
                        &vals[l.src.0],
                        self.param(&format!("{}.weight", l.weight)),
                        Some(self.param(&format!("{}.bias", l.weight))),
                        &mut y,
                    )?;
                    (y, Tape::Linear { x: src(l.src.0), n })
                }
                Step::SubsamplePad {
                    src: s,
                    stride,
                    out_channels,
                    ..
                } => {
                    let mut y = vec![0.0; out_dims.iter().product()];
                    naive::subsample_pad_channels(
                        input,
                        *stride,
                        *out_channels,
                        &vals[s.0],
                        &mut y,
                    )?;
                    (y, Tape::Dims(input))
                }
                Step::PixelShuffle { src: s, factor, .. } => {
                    let mut y = vec![0.0; out_dims.iter().product()];
                    naive::pixel_shuffle(input, *factor, &vals[s.0], &mut y)?;
                    (y, Tape::Dims(input))
                }
                Step::Output { name, src: s } => {
                    if name == target.output_name() {
                        logits_slot = Some(*s);
                    }
                    (Vec::new(), Tape::None)
                }
                other => {
                    return Err(TrainError::Input(format!(
                        "no training support for step {other}"
                    )));
                }
            };
            if let Some(d) = step.dst() {
                vals[d.0] = out;
                sdims[d.0] = out_dims;
            }
            tape.push(t);
        }
        let logits_slot = logits_slot.ok_or_else(|| {
            TrainError::Input(format!("the plan has no output {:?}", target.output_name()))
        })?;
        let out_dims = sdims[logits_slot.0];
        target.check(dims[0], out_dims)?;
        // Loss and its gradient.
        let mut grad: Vec<Option<Vec<f32>>> = vec![None; slots];
        let mut g_logits = vec![0.0; vals[logits_slot.0].len()];
        let images = match target {
            Target::L1(t) | Target::Mse(t) => Some(t.to_layout(Layout::Nchw)?),
            Target::Classes { .. } => None,
        };
        let loss = target.loss(
            out_dims,
            &vals[logits_slot.0],
            images.as_ref().map_or(&[][..], |t| t.as_slice()),
            &mut g_logits,
        )?;
        let predictions = target.predictions(out_dims, &vals[logits_slot.0]);
        grad[logits_slot.0] = Some(g_logits);
        drop(vals);
        // Backward.
        let mut grads: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let add = |grad: &mut Vec<Option<Vec<f32>>>, slot: usize, g: Vec<f32>| match &mut grad[slot]
        {
            Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            none => *none = Some(g),
        };
        for (step, t) in steps.iter().zip(tape).rev() {
            let Some(dst) = step.dst() else { continue };
            let Some(g) = grad[dst.0].take() else {
                continue;
            };
            match (step, t) {
                (Step::Input { .. }, _) => {}
                (Step::Conv(c), Tape::Conv { x, x_dims, z, y }) => {
                    let mut g = g;
                    if let Some(y) = y {
                        let mut gi = vec![0.0; g.len()];
                        naive_grad::relu_backward(&y, &g, &mut gi)?;
                        g = gi;
                    }
                    if let Some(r) = c.residual {
                        add(&mut grad, r.0, g.clone());
                    }
                    let spec = &c.conv;
                    if spec.scale != 1.0 {
                        g.iter_mut().for_each(|v| *v *= spec.scale);
                    }
                    let geom = ConvGeometry::new(x_dims, spec.weight_shape(), spec.params())?;
                    if let (Some(bn), Some((z, saved))) = (&spec.bn, z) {
                        let [wn, bname, _, _] = bn_names(bn);
                        let o = spec.out_channels;
                        let (mut gg, mut gb) = (vec![0.0; o], vec![0.0; o]);
                        let mut gz = vec![0.0; g.len()];
                        naive_grad::batch_norm_backward(
                            geom.output,
                            &z,
                            self.param(&wn),
                            &saved,
                            &g,
                            &mut gz,
                            &mut gg,
                            &mut gb,
                        )?;
                        grads.insert(wn, gg);
                        grads.insert(bname, gb);
                        g = gz;
                    }
                    let w = format!("{}.weight", spec.weight);
                    let mut gw = vec![0.0; self.param(&w).len()];
                    let mut gbias = spec.bias.then(|| vec![0.0; spec.out_channels]);
                    naive_grad::conv2d_backward_weight(
                        &geom,
                        &x,
                        &g,
                        &mut gw,
                        gbias.as_deref_mut(),
                    )?;
                    grads.insert(w.clone(), gw);
                    if let Some(gb) = gbias {
                        grads.insert(format!("{}.bias", spec.weight), gb);
                    }
                    let mut gx = vec![0.0; x.len()];
                    naive_grad::conv2d_backward_input(&geom, &g, self.param(&w), &mut gx)?;
                    add(&mut grad, c.src.0, gx);
                }
                (
                    Step::MaxPool {
                        src,
                        kernel,
                        stride,
                        padding,
                        ..
                    },
                    Tape::Pool { x, x_dims },
                ) => {
                    let geom =
                        PoolGeometry::new(x_dims, [*kernel; 2], [*stride; 2], [*padding; 2])?;
                    let mut gx = vec![0.0; x.len()];
                    naive_grad::max_pool2d_backward(&geom, &x, &g, &mut gx)?;
                    add(&mut grad, src.0, gx);
                }
                (Step::GlobalAvgPool { src, .. }, Tape::Dims(d)) => {
                    let mut gx = vec![0.0; d.iter().product()];
                    naive_grad::adaptive_avg_pool2d_backward(d, [1, 1], &g, &mut gx)?;
                    add(&mut grad, src.0, gx);
                }
                (Step::Linear(l), Tape::Linear { x, n }) => {
                    let gx = self.linear_backward(l, n, &x, &g, &mut grads)?;
                    add(&mut grad, l.src.0, gx);
                }
                (
                    Step::SubsamplePad {
                        src,
                        stride,
                        out_channels,
                        ..
                    },
                    Tape::Dims(d),
                ) => {
                    let mut gx = vec![0.0; d.iter().product()];
                    naive_grad::subsample_pad_channels_backward(
                        d,
                        *stride,
                        *out_channels,
                        &g,
                        &mut gx,
                    )?;
                    add(&mut grad, src.0, gx);
                }
                (Step::PixelShuffle { src, factor, .. }, Tape::Dims(d)) => {
                    let mut gx = vec![0.0; d.iter().product()];
                    naive_grad::pixel_shuffle_backward(d, *factor, &g, &mut gx)?;
                    add(&mut grad, src.0, gx);
                }
                (step, _) => {
                    return Err(TrainError::Input(format!(
                        "internal: no tape for the backward of {step}"
                    )));
                }
            }
        }
        Ok(StepOutput {
            loss,
            grads,
            predictions,
        })
    }

    /// Hand a step's output back once it is no longer needed: its gradient buffers are
    /// reused by the next steps instead of new ones (a ResNet-18 step's weight gradients are
    /// 45 MB of fresh pages otherwise). Optional; nothing changes in the results.
    ///
    /// ```no_run
    /// # fn demo(t: &mut resnet_train::Trainer, sgd: &mut resnet_train::optim::Sgd,
    /// #         x: &resnet_tensor::Tensor, labels: &[usize]) -> Result<(), resnet_train::TrainError> {
    /// use resnet_train::optim::{DecayPolicy, Prior};
    /// for _ in 0..10 {
    ///     let out = t.sgd_step(sgd, &Prior::Zero, DecayPolicy::All, x, labels)?;
    ///     println!("loss {}", out.loss);
    ///     t.recycle(out);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn recycle(&mut self, out: StepOutput) {
        // Only the convolutions' weight gradients (rank 4) are taken from the pool again; the
        // small BN and classifier buffers would linger in it and crowd a conv buffer out.
        let params = &self.params;
        let is_conv = |k: &str| params.get(k).is_some_and(|(_, shape)| shape.len() == 4);
        let keep = params
            .values()
            .filter(|(_, shape)| shape.len() == 4)
            .map(|(p, _)| p.len())
            .sum();
        let spare = &mut self.fast.spare_grads;
        spare.set_limit(keep);
        spare.give_all(
            out.grads
                .into_iter()
                .filter(|(k, _)| is_conv(k))
                .map(|(_, g)| g),
        );
    }

    /// One optimiser step (SGD, AdamW, or either as an [`Optimizer`](crate::optim::Optimizer))
    /// on a batch, as PyTorch's recipe (and the golden fixtures) define it:
    /// [`Trainer::forward_backward`], the prior's term added to the loss and to each
    /// gradient, then the optimiser's step on every parameter (weight decay per `policy`, and
    /// never on the convolutions the identity prior covers). Returns the loss and gradients
    /// the update used (prior included). A loss that is not finite is an error and changes
    /// no parameter.
    pub fn sgd_step<O: Optimize + ?Sized>(
        &mut self,
        sgd: &mut O,
        prior: &Prior,
        policy: DecayPolicy,
        x: &Tensor,
        labels: &[usize],
    ) -> Result<StepOutput, TrainError> {
        let target = Target::Classes {
            labels,
            smoothing: 0.0,
        };
        self.sgd_step_with(sgd, prior, policy, x, target)
    }

    /// [`Trainer::sgd_step`] with any loss (see [`Target`]).
    pub fn sgd_step_with<O: Optimize + ?Sized>(
        &mut self,
        sgd: &mut O,
        prior: &Prior,
        policy: DecayPolicy,
        x: &Tensor,
        target: Target<'_>,
    ) -> Result<StepOutput, TrainError> {
        let mut out = self.forward_backward_with(x, target)?;
        for (k, g) in out.grads.iter_mut() {
            let (w, shape) = &self.params[k];
            out.loss += prior.term(k, shape, w, g)?;
        }
        if !out.loss.is_finite() {
            return Err(TrainError::NonFinite { loss: out.loss });
        }
        // On the trainer's threads: the optimisers split large tensors over the pool they run
        // on (fixed pieces, elementwise: the same bits with any thread count).
        let params = &mut self.params;
        let grads = &out.grads;
        self.fast.install(|| -> Result<(), TrainError> {
            for (k, g) in grads {
                let (w, shape) = params
                    .get_mut(k)
                    .ok_or_else(|| TrainError::Input(format!("no parameter {k}")))?;
                let group = param_group_for(k, shape, policy, prior);
                sgd.step(k, w, g, Some(&group))?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// One SGD step on the classifier alone, for fine-tuning with a frozen backbone: the
    /// backbone (batch-norm in eval mode) has already turned the batch into `features`
    /// (`[N, in_features]` or `[N, in_features, 1, 1]`, e.g. the inference path's `pool`
    /// output), and only the plan's final linear layer learns, by cross-entropy on `labels`.
    /// Nothing else changes: no running statistics, no counters.
    pub fn sgd_step_head<O: Optimize + ?Sized>(
        &mut self,
        sgd: &mut O,
        policy: DecayPolicy,
        features: &Tensor,
        labels: &[usize],
    ) -> Result<StepOutput, TrainError> {
        let Some(Step::Linear(l)) = self
            .plan
            .steps()
            .iter()
            .rev()
            .find(|s| matches!(s, Step::Linear(_)))
            .cloned()
        else {
            return Err(TrainError::Input(
                "the plan has no linear classifier".into(),
            ));
        };
        let n = labels.len();
        let (i, o) = (l.in_features, l.out_features);
        if features.len() != n * i || features.shape().dims().first() != Some(&n) {
            return Err(TrainError::Input(format!(
                "features of shape {:?} for {n} labels and a classifier of {i} inputs",
                features.shape().dims()
            )));
        }
        let x = features.as_slice();
        let (wn, bn) = (format!("{}.weight", l.weight), format!("{}.bias", l.weight));
        let mut logits = vec![0.0; n * o];
        naive::linear(
            [n, i, o],
            x,
            self.param(&wn),
            Some(self.param(&bn)),
            &mut logits,
        )?;
        let mut g = vec![0.0; n * o];
        let loss = naive_grad::softmax_cross_entropy([n, o], &logits, labels, 0.0, Some(&mut g))?;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { loss });
        }
        let predictions = Target::Classes {
            labels,
            smoothing: 0.0,
        }
        .predictions([n, o, 1, 1], &logits);
        let mut grads = BTreeMap::new();
        self.linear_backward(&l, n, x, &g, &mut grads)?;
        for (k, g) in &grads {
            let (w, shape) = self
                .params
                .get_mut(k)
                .ok_or_else(|| TrainError::Input(format!("no parameter {k}")))?;
            let group = param_group_for(k, shape, policy, &Prior::Zero);
            sgd.step(k, w, g, Some(&group))?;
        }
        Ok(StepOutput {
            loss,
            grads,
            predictions,
        })
    }

    /// A training-mode batch-norm's bookkeeping, as PyTorch's: the running statistics blend
    /// in the batch's (mean, unbiased variance) with momentum 0.1, and the counter steps.
    fn track_batch(&mut self, bn: &str, saved: &BnSaved) -> Result<(), TrainError> {
        let [_, _, m, v] = bn_names(bn);
        let (mean, var) = (saved.batch_mean(), saved.unbiased_var()?);
        // `Trainer::new` stores both statistics of every batch-norm.
        let (mut rm, mut rv) = (
            self.stats.remove(&m).unwrap_or_default(),
            self.stats.remove(&v).unwrap_or_default(),
        );
        let r = naive_grad::batch_norm_update_running(&mut rm, &mut rv, &mean, &var, BN_MOMENTUM);
        self.stats.insert(m, rm);
        self.stats.insert(v, rv);
        r?;
        if let Some(b) = self.batches.get_mut(&format!("{bn}.num_batches_tracked")) {
            *b += 1;
        }
        Ok(())
    }

    /// The classifier's backward (shared by both kernel sets: it is tiny): its parameters'
    /// gradients go to `grads`, the gradient of its input `[n, in_features]` is returned.
    fn linear_backward(
        &self,
        l: &resnet_models::LinearStep,
        n: usize,
        x: &[f32],
        g: &[f32],
        grads: &mut BTreeMap<String, Vec<f32>>,
    ) -> Result<Vec<f32>, TrainError> {
        let w = format!("{}.weight", l.weight);
        let (i, o) = (l.in_features, l.out_features);
        let mut gx = vec![0.0; n * i];
        let mut gw = vec![0.0; o * i];
        let mut gb = vec![0.0; o];
        naive_grad::linear_backward(
            [n, i, o],
            x,
            self.param(&w),
            g,
            Some(&mut gx),
            &mut gw,
            Some(&mut gb),
        )?;
        grads.insert(w, gw);
        grads.insert(format!("{}.bias", l.weight), gb);
        Ok(gx)
    }

    /// A convolution step in training mode: conv, batch-norm on the batch's statistics
    /// (updating the running ones), scale, residual add, ReLU; with what its backward needs.
    fn conv_forward(
        &mut self,
        c: &ConvSpec,
        relu: bool,
        x: &[f32],
        x_dims: [usize; 4],
        residual: Option<&[f32]>,
    ) -> Result<(Vec<f32>, Tape), TrainError> {
        let geom = ConvGeometry::new(x_dims, c.weight_shape(), c.params())?;
        let mut z = vec![0.0; geom.lens().2];
        let bias = c
            .bias
            .then(|| self.param(&format!("{}.bias", c.weight)).to_vec());
        naive::conv2d(
            &geom,
            x,
            self.param(&format!("{}.weight", c.weight)),
            bias.as_deref(),
            &mut z,
        )?;
        let (mut y, zt) = match &c.bn {
            Some(bn) => {
                let [wn, bname, _, _] = bn_names(bn);
                let mut y = vec![0.0; z.len()];
                let mut saved = BnSaved::default();
                naive_grad::batch_norm_train(
                    geom.output,
                    &z,
                    self.param(&wn),
                    self.param(&bname),
                    c.bn_eps,
                    &mut y,
                    &mut saved,
                )?;
                self.track_batch(bn, &saved)?;
                (y, Some((z, saved)))
            }
            None => (z, None),
        };
        if c.scale != 1.0 {
            y.iter_mut()
                .for_each(|v| *v = (f64::from(*v) * f64::from(c.scale)) as f32);
        }
        if let Some(r) = residual {
            let a = y.clone();
            naive::add(&a, r, &mut y)?;
        }
        if relu {
            naive::relu_inplace(&mut y);
        }
        let t = Tape::Conv {
            x: x.to_vec(),
            x_dims,
            z: zt,
            y: relu.then(|| y.clone()),
        };
        Ok((y, t))
    }
}
