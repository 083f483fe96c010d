//! The fast training path: the same walk over the plan as the reference one, on the SIMD
//! kernels (`resnet_kernels::fast` and `fast::grad`), NHWC, on a pool of threads.
//!
//! Every step's output is kept in a buffer of its own (the next steps' inputs and the ReLU
//! masks are those same buffers, never copies), convolutions followed by a batch-norm also
//! keep the batch-norm's input; gradients live per slot as in the reference walk. All
//! buffers stay with the trainer and are reused by the next step of the same batch shape, so
//! a warm step allocates nothing of the size of an activation.

use super::{StepOutput, Target, Trainer, bn_names};
use crate::TrainError;
use rayon::prelude::*;
use resnet_kernels::fast::grad::{
    self, BnTrain, ConvGrad, ResidualGrad, batch_norm_backward_nhwc, batch_norm_train_nhwc,
};
use resnet_kernels::fast::{self, BufferPool, Ctx, Epilogue, PackedConv, Par, Scratch};
use resnet_kernels::naive_grad::BnSaved;
use resnet_kernels::{Cpu, PoolGeometry, naive};
use resnet_models::Step;
use resnet_tensor::{Layout, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The fast path's threads and reusable memory.
#[derive(Debug, Default)]
pub(crate) struct FastState {
    /// The pool the steps run on (none for one thread).
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
    scratch: Scratch,
    /// Per step: its output (NHWC).
    out: Vec<Vec<f32>>,
    /// Per step: the output's dims.
    dims: Vec<[usize; 4]>,
    /// Per step: the step whose output it read (its source slot's writer then).
    src_step: Vec<usize>,
    /// Per conv step with a batch-norm: the conv's output (the batch-norm's input).
    z: Vec<Vec<f32>>,
    /// Per conv step with a batch-norm: its batch statistics.
    saved: Vec<BnSaved>,
    /// Per slot: the gradient of its current value, and whether it holds one.
    grad: Vec<Vec<f32>>,
    live: Vec<bool>,
    /// A spare gradient buffer (swapped with a slot's when a sum is written beside it).
    spare: Vec<f32>,
    /// The gradient of a conv's output before its batch-norm.
    gz: Vec<f32>,
    /// Target images in NHWC (L1 and MSE losses).
    target: Vec<f32>,
    /// Per conv step: its packed forward and backward from the last step, repacked in place
    /// with the new weights (no packing allocations once warm).
    convs: Vec<Option<PackedConv>>,
    conv_grads: Vec<Option<ConvGrad>>,
    /// Gradient buffers handed back by [`Trainer::recycle`], for the next step's weight
    /// gradients (fresh ones cost new pages every step).
    pub(super) spare_grads: BufferPool,
}

impl Clone for FastState {
    /// A new state for the same thread count (buffers are not copied).
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            threads: self.threads,
            scratch: Scratch::new(self.threads),
            ..Default::default()
        }
    }
}

impl FastState {
    /// A state running on `threads` threads.
    pub(crate) fn new(threads: usize) -> Result<Self, TrainError> {
        let threads = threads.max(1);
        let pool = if threads > 1 {
            Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| {
                        TrainError::Input(format!("cannot start {threads} threads: {e}"))
                    })?,
            ))
        } else {
            None
        };
        Ok(Self {
            pool,
            threads,
            scratch: Scratch::new(threads),
            ..Default::default()
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on this state's pool (on the calling thread without one).
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        on_pool(self.pool.as_deref(), f)
    }
}

/// Run `f` on `pool` with its other threads kept awake through it (on the calling thread
/// without a pool).
fn on_pool<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(|| fast::with_awake_workers(f)),
        None => f(),
    }
}

/// Copy `t` (logical dims `dims`) into `out` in NHWC, with no intermediate copy when it is
/// NCHW or NHWC already.
fn to_nhwc(cpu: Cpu, t: &Tensor, dims: [usize; 4], out: &mut [f32]) -> Result<(), TrainError> {
    match t.layout() {
        Layout::Nhwc if t.len() == out.len() => out.copy_from_slice(t.as_slice()),
        Layout::Nchw => fast::nchw_to_nhwc(cpu, dims, t.as_slice(), out)?,
        _ => {
            let nchw = t.to_layout(Layout::Nchw)?;
            fast::nchw_to_nhwc(cpu, dims, nchw.as_slice(), out)?;
        }
    }
    Ok(())
}

/// The output of step `src` (empty for none).
fn src_value(st: &FastState, src: Option<usize>) -> &[f32] {
    src.map_or(&[][..], |s| &st.out[s][..])
}

/// Resize `v` to `len` values (reusing its memory).
fn fit(v: &mut Vec<f32>, len: usize) {
    if v.len() != len {
        v.resize(len, 0.0);
    }
}

impl Trainer {
    /// [`Trainer::forward_backward`] on the fast kernels.
    pub(super) fn forward_backward_fast(
        &mut self,
        x: &Tensor,
        dims: [usize; 4],
        target: Target<'_>,
    ) -> Result<StepOutput, TrainError> {
        let mut st = std::mem::take(&mut self.fast);
        let pool = st.pool.clone();
        let r = on_pool(pool.as_deref(), || self.run_fast(&mut st, x, dims, target));
        self.fast = st;
        r
    }

    fn run_fast(
        &mut self,
        st: &mut FastState,
        x: &Tensor,
        dims: [usize; 4],
        target: Target<'_>,
    ) -> Result<StepOutput, TrainError> {
        let cpu = Cpu::detect();
        let par = Par::with_threads(st.threads);
        let steps = self.plan.steps().to_vec();
        let nsteps = steps.len();
        let slots = self.plan.slots();
        st.out.resize_with(nsteps, Vec::new);
        st.z.resize_with(nsteps, Vec::new);
        st.saved.resize_with(nsteps, BnSaved::default);
        st.dims.resize(nsteps, [0; 4]);
        st.src_step.resize(nsteps, usize::MAX);
        st.grad.resize_with(slots, Vec::new);
        st.live.clear();
        st.live.resize(slots, false);
        let mut writer = vec![usize::MAX; slots];
        let mut logits_step = None;
        st.convs.resize_with(nsteps, || None);
        st.conv_grads.resize_with(nsteps, || None);
        // The convolutions kept from the last step take the current weights, all at once and
        // on every thread: each is repacked alone, so the split changes nothing.
        {
            let params = &self.params;
            let repack = |(i, (conv, grad)): (
                usize,
                (&mut Option<PackedConv>, &mut Option<ConvGrad>),
            )|
             -> Result<(), TrainError> {
                let Step::Conv(c) = &steps[i] else {
                    return Ok(());
                };
                let spec = &c.conv;
                let weight = &params[&format!("{}.weight", spec.weight)].0;
                let bias = spec
                    .bias
                    .then(|| &params[&format!("{}.bias", spec.weight)].0[..]);
                if let Some(p) = conv {
                    p.repack(weight, bias)?;
                }
                if let Some(g) = grad {
                    g.repack(weight)?;
                }
                Ok(())
            };
            if par.is_parallel() {
                st.convs
                    .par_iter_mut()
                    .zip(st.conv_grads.par_iter_mut())
                    .enumerate()
                    .try_for_each(repack)?;
            } else {
                st.convs
                    .iter_mut()
                    .zip(st.conv_grads.iter_mut())
                    .enumerate()
                    .try_for_each(repack)?;
            }
        }
        // Forward, training mode.
        for (i, step) in steps.iter().enumerate() {
            let src = step.src().map(|s| writer[s.0]);
            if let Some(s) = src
                && s == usize::MAX
            {
                return Err(TrainError::Input(format!(
                    "internal: step {step} reads a slot nothing wrote"
                )));
            }
            let input = src.map_or(dims, |s| st.dims[s]);
            let out_dims = step.output_dims(input)?;
            st.src_step[i] = src.unwrap_or(usize::MAX);
            let mut out = std::mem::take(&mut st.out[i]);
            let len = out_dims.iter().product();
            match step {
                Step::Input { .. } => {
                    fit(&mut out, len);
                    to_nhwc(cpu, x, dims, &mut out)?;
                }
                Step::Conv(c) => {
                    fit(&mut out, len);
                    let spec = &c.conv;
                    let bias = spec
                        .bias
                        .then(|| self.param(&format!("{}.bias", spec.weight)));
                    let weight = self.param(&format!("{}.weight", spec.weight));
                    // Winograd rounds an output differently by its place in a tile, so equal
                    // input patches (a constant background) give unequal outputs; a
                    // batch-norm over a nearly constant channel then magnifies that noise by
                    // up to 1/sqrt(eps) and ReLU masks flip. The direct product gives equal
                    // patches equal outputs, as PyTorch's f32 path does.
                    let algo = PackedConv::algorithm_within(spec.weight_shape(), spec.params(), 0)?;
                    let conv = match st.convs[i].take() {
                        // Repacked above with this step's weights.
                        Some(conv)
                            if conv.algorithm() == algo
                                && conv.weight_dims() == spec.weight_shape()
                                && conv.params() == spec.params() =>
                        {
                            conv
                        }
                        _ => PackedConv::with_algorithm(
                            weight,
                            spec.weight_shape(),
                            bias,
                            spec.params(),
                            algo,
                        )?,
                    };
                    let ctx = Ctx::new(cpu, par, &st.scratch);
                    let res = c.residual.map(|r| &st.out[writer[r.0]][..]);
                    match &spec.bn {
                        Some(bn) => {
                            let mut z = std::mem::take(&mut st.z[i]);
                            fit(&mut z, len);
                            conv.run(&ctx, src_value(st, src), input, &mut z, Epilogue::none())?;
                            let [wn, bname, _, _] = bn_names(bn);
                            let mut saved = BnSaved::default();
                            batch_norm_train_nhwc(
                                cpu,
                                par,
                                out_dims,
                                &z,
                                &BnTrain {
                                    gamma: self.param(&wn),
                                    beta: self.param(&bname),
                                    eps: spec.bn_eps,
                                    scale: spec.scale,
                                    residual: res,
                                    relu: c.relu,
                                },
                                &mut out,
                                &mut saved,
                            )?;
                            self.track_batch(bn, &saved)?;
                            st.z[i] = z;
                            st.saved[i] = saved;
                        }
                        None if spec.scale == 1.0 => {
                            let mut epi = Epilogue::none().with_relu(c.relu);
                            if let Some(r) = res {
                                epi = epi.with_residual(r);
                            }
                            conv.run(&ctx, src_value(st, src), input, &mut out, epi)?;
                        }
                        None => {
                            conv.run(&ctx, src_value(st, src), input, &mut out, Epilogue::none())?;
                            let s = spec.scale;
                            out.iter_mut().for_each(|v| *v *= s);
                            if let Some(r) = res {
                                out.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                            }
                            if c.relu {
                                fast::relu_inplace(cpu, &mut out);
                            }
                        }
                    }
                    st.convs[i] = Some(conv);
                }
                Step::MaxPool {
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    fit(&mut out, len);
                    let g = PoolGeometry::new(input, [*kernel; 2], [*stride; 2], [*padding; 2])?;
                    fast::max_pool2d_nhwc(cpu, par, &g, src_value(st, src), &mut out)?;
                }
                Step::GlobalAvgPool { .. } => {
                    fit(&mut out, len);
                    fast::global_avg_pool_nhwc(cpu, input, src_value(st, src), &mut out)?;
                }
                Step::Linear(l) => {
                    fit(&mut out, len);
                    naive::linear(
                        [input[0], l.in_features, l.out_features],
                        src_value(st, src),
                        self.param(&format!("{}.weight", l.weight)),
                        Some(self.param(&format!("{}.bias", l.weight))),
                        &mut out,
                    )?;
                }
                Step::SubsamplePad {
                    stride,
                    out_channels,
                    ..
                } => {
                    fit(&mut out, len);
                    fast::subsample_pad_channels_nhwc(
                        input,
                        *stride,
                        *out_channels,
                        src_value(st, src),
                        &mut out,
                    )?;
                }
                Step::PixelShuffle { factor, .. } => {
                    fit(&mut out, len);
                    fast::pixel_shuffle_nhwc(input, *factor, src_value(st, src), &mut out)?;
                }
                Step::Output { name, .. } => {
                    if name == target.output_name() {
                        logits_step = src;
                    }
                }
                other => {
                    return Err(TrainError::Input(format!(
                        "no training support for step {other}"
                    )));
                }
            }
            st.out[i] = out;
            st.dims[i] = out_dims;
            if let Some(d) = step.dst() {
                writer[d.0] = i;
            }
        }
        let li = logits_step.ok_or_else(|| {
            TrainError::Input(format!("the plan has no output {:?}", target.output_name()))
        })?;
        let out_dims = st.dims[li];
        target.check(dims[0], out_dims)?;
        let logits_slot = steps[li]
            .dst()
            .ok_or_else(|| TrainError::Input("internal: an output without a slot".into()))?;
        let mut g_logits = std::mem::take(&mut st.grad[logits_slot.0]);
        fit(&mut g_logits, st.out[li].len());
        if let Target::L1(t) | Target::Mse(t) = target {
            fit(&mut st.target, t.len());
            to_nhwc(cpu, t, out_dims, &mut st.target)?;
        }
        let loss = target.loss(out_dims, &st.out[li], &st.target, &mut g_logits)?;
        let predictions = target.predictions(out_dims, &st.out[li]);
        st.grad[logits_slot.0] = g_logits;
        st.live[logits_slot.0] = true;
        // Backward.
        let mut grads: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate().rev() {
            let Some(dst) = step.dst() else { continue };
            if !st.live[dst.0] {
                continue;
            }
            st.live[dst.0] = false;
            let mut g = std::mem::take(&mut st.grad[dst.0]);
            let src = st.src_step[i];
            let in_dims = if src == usize::MAX {
                dims
            } else {
                st.dims[src]
            };
            // The source slot (whose gradient this step's backward writes or adds to) and
            // whether it needs one (the network's input does not).
            let src_slot = step.src();
            let wants = src_slot.is_some()
                && src != usize::MAX
                && !matches!(steps[src], Step::Input { .. });
            match step {
                Step::Input { .. } | Step::Output { .. } => {}
                Step::Conv(c) => {
                    let spec = &c.conv;
                    let out_dims = st.dims[i];
                    let len: usize = out_dims.iter().product();
                    let w = format!("{}.weight", spec.weight);
                    // The residual's gradient is the masked gradient itself.
                    let res = c.residual.map(|r| r.0);
                    let res_live = res.is_some_and(|r| st.live[r]);
                    // The shortcut's first gradient is the masked gradient itself: after a
                    // batch-norm's backward it is no longer needed here, so its buffer is
                    // handed over rather than copied.
                    let hand_over = res.is_some() && !res_live && spec.bn.is_some();
                    let mut res_buf = res
                        .filter(|_| !hand_over)
                        .map(|r| std::mem::take(&mut st.grad[r]));
                    if let Some(b) = &mut res_buf
                        && !res_live
                    {
                        fit(b, len);
                    }
                    let residual = match &mut res_buf {
                        None => ResidualGrad::None,
                        Some(b) if res_live => ResidualGrad::Add(b),
                        Some(b) => ResidualGrad::Set(b),
                    };
                    let mut gz = std::mem::take(&mut st.gz);
                    let gz_is_g = match &spec.bn {
                        Some(bn) => {
                            let [wn, bname, _, _] = bn_names(bn);
                            let oc = spec.out_channels;
                            let (mut gg, mut gb) = (vec![0.0; oc], vec![0.0; oc]);
                            fit(&mut gz, len);
                            batch_norm_backward_nhwc(
                                cpu,
                                par,
                                out_dims,
                                &st.z[i],
                                self.param(&wn),
                                &st.saved[i],
                                spec.scale,
                                c.relu.then_some(&st.out[i][..]),
                                &mut g,
                                residual,
                                &mut gz,
                                &mut gg,
                                &mut gb,
                            )?;
                            grads.insert(wn, gg);
                            grads.insert(bname, gb);
                            false
                        }
                        None => {
                            if c.relu {
                                g.iter_mut()
                                    .zip(&st.out[i])
                                    .for_each(|(g, &y)| *g = if y <= 0.0 { 0.0 } else { *g });
                            }
                            match residual {
                                ResidualGrad::Add(r) => {
                                    r.iter_mut().zip(&g).for_each(|(r, &g)| *r += g)
                                }
                                ResidualGrad::Set(r) => r.copy_from_slice(&g),
                                ResidualGrad::None => {}
                            }
                            if spec.scale != 1.0 {
                                let s = spec.scale;
                                g.iter_mut().for_each(|v| *v *= s);
                            }
                            true
                        }
                    };
                    if let (Some(r), Some(b)) = (res, res_buf) {
                        st.grad[r] = b;
                        st.live[r] = true;
                    }
                    if let (Some(r), true) = (res, hand_over) {
                        g = std::mem::replace(&mut st.grad[r], g);
                        st.live[r] = true;
                    }
                    let gout: &[f32] = if gz_is_g { &g } else { &gz };
                    let cg = match st.conv_grads[i].take() {
                        // Repacked at the start of the step.
                        Some(cg)
                            if cg.weight_dims() == spec.weight_shape()
                                && cg.params() == spec.params() =>
                        {
                            cg
                        }
                        _ => ConvGrad::new(self.param(&w), spec.weight_shape(), spec.params())?,
                    };
                    let ctx = Ctx::new(cpu, par, &st.scratch);
                    // Every value is written by the backward below.
                    let mut gw = st.spare_grads.take(self.param(&w).len());
                    let mut gbias = spec.bias.then(|| vec![0.0; spec.out_channels]);
                    cg.backward_weight(
                        &ctx,
                        &st.out[src],
                        in_dims,
                        gout,
                        &mut gw,
                        gbias.as_deref_mut(),
                    )?;
                    grads.insert(w, gw);
                    if let Some(gb) = gbias {
                        grads.insert(format!("{}.bias", spec.weight), gb);
                    }
                    if wants {
                        let s = c.src.0;
                        let li: usize = in_dims.iter().product();
                        if st.live[s] {
                            let mut out = std::mem::take(&mut st.spare);
                            fit(&mut out, li);
                            cg.backward_input(&ctx, in_dims, gout, &mut out, Some(&st.grad[s]))?;
                            st.spare = std::mem::replace(&mut st.grad[s], out);
                        } else {
                            let mut out = std::mem::take(&mut st.grad[s]);
                            fit(&mut out, li);
                            cg.backward_input(&ctx, in_dims, gout, &mut out, None)?;
                            st.grad[s] = out;
                            st.live[s] = true;
                        }
                    }
                    st.conv_grads[i] = Some(cg);
                    st.gz = gz;
                }
                Step::MaxPool {
                    src: s,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    if wants {
                        let geom =
                            PoolGeometry::new(in_dims, [*kernel; 2], [*stride; 2], [*padding; 2])?;
                        let acc = take_grad(st, s.0, in_dims);
                        let mut gx = std::mem::take(&mut st.grad[s.0]);
                        grad::max_pool2d_backward_nhwc(
                            cpu,
                            par,
                            &geom,
                            &st.out[src],
                            &g,
                            &mut gx,
                            acc,
                        )?;
                        st.grad[s.0] = gx;
                    }
                }
                Step::GlobalAvgPool { src: s, .. } => {
                    if wants {
                        let acc = take_grad(st, s.0, in_dims);
                        let mut gx = std::mem::take(&mut st.grad[s.0]);
                        grad::global_avg_pool_backward_nhwc(in_dims, &g, &mut gx, acc)?;
                        st.grad[s.0] = gx;
                    }
                }
                Step::Linear(l) => {
                    let gx = self.linear_backward(l, in_dims[0], &st.out[src], &g, &mut grads)?;
                    if wants {
                        let s = l.src.0;
                        if st.live[s] {
                            st.grad[s].iter_mut().zip(&gx).for_each(|(a, b)| *a += b);
                        } else {
                            // Into the slot's own buffer: dropping it for `gx` would throw
                            // away a capacity the slot's next, larger, gradient reuses.
                            fit(&mut st.grad[s], gx.len());
                            st.grad[s].copy_from_slice(&gx);
                            st.live[s] = true;
                        }
                    }
                }
                Step::SubsamplePad {
                    src: s,
                    stride,
                    out_channels,
                    ..
                } => {
                    if wants {
                        let acc = take_grad(st, s.0, in_dims);
                        let mut gx = std::mem::take(&mut st.grad[s.0]);
                        grad::subsample_pad_channels_backward_nhwc(
                            in_dims,
                            *stride,
                            *out_channels,
                            &g,
                            &mut gx,
                            acc,
                        )?;
                        st.grad[s.0] = gx;
                    }
                }
                Step::PixelShuffle { src: s, factor, .. } => {
                    if wants {
                        let acc = take_grad(st, s.0, in_dims);
                        let mut gx = std::mem::take(&mut st.grad[s.0]);
                        grad::pixel_shuffle_backward_nhwc(in_dims, *factor, &g, &mut gx, acc)?;
                        st.grad[s.0] = gx;
                    }
                }
                other => {
                    return Err(TrainError::Input(format!(
                        "internal: no backward for step {other}"
                    )));
                }
            }
            st.grad[dst.0] = g;
        }
        Ok(StepOutput {
            loss,
            grads,
            predictions,
        })
    }
}

/// Prepare slot `s`'s gradient buffer for a backward that writes (returns `false`) or adds to
/// it (`true`); marks it live.
fn take_grad(st: &mut FastState, s: usize, dims: [usize; 4]) -> bool {
    let acc = st.live[s];
    if !acc {
        fit(&mut st.grad[s], dims.iter().product());
        st.live[s] = true;
    }
    acc
}
