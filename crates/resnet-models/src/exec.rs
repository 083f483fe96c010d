//! The one executor: runs a bound plan on either kernel set, owns the threads, the
//! workspaces (activation slots and kernel scratch, reused between calls) and reports each
//! step to an [`Observer`].

use crate::bound::{Bound, BoundPlan, NaiveConv};
use crate::plan::{Plan, Step};
use crate::{Backend, ModelError};
use resnet_kernels::bf16::{
    Bf16Cpu, Bf16Dst, Bf16Src, as_words, as_words_mut, map_to_f32, map_words, max_pool_map,
};
use resnet_kernels::fast::{self, Ctx, Epilogue, Par, Scratch};
use resnet_kernels::{ConvGeometry, Cpu, PoolGeometry, naive};
use resnet_tensor::{Layout, Tensor, TensorView};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Whether a run goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Run the next step.
    Continue,
    /// End the run here (e.g. once the output asked for is known).
    Stop,
}

/// The values of a slot, as a step left them.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// Logical dims `[N, C, H, W]` (`[N, C, 1, 1]` for pooled values).
    pub dims: [usize; 4],
    /// Whether the values are per-image vectors (pooled features, logits): `[N, C]`.
    pub flat: bool,
    /// The memory layout of `data` (the kernel set's: NHWC for fast, NCHW for naive).
    pub layout: Layout,
    /// The values.
    pub data: &'a [f32],
}

impl Values<'_> {
    /// A new NCHW tensor of the values (`[N, C]` when flat): the one allocation an output
    /// costs.
    pub fn to_tensor(&self) -> Result<Tensor, ModelError> {
        let (dims, rank) = self.nchw_dims();
        let mut t = Tensor::try_zeros_with_layout(&dims[..rank], Layout::Nchw)?;
        self.write_nchw(t.as_mut_slice())?;
        Ok(t)
    }

    /// The dims of [`Values::to_tensor`]'s tensor: the first `rank` of the array (2 when
    /// flat, else 4).
    fn nchw_dims(&self) -> ([usize; 4], usize) {
        (self.dims, if self.flat { 2 } else { 4 })
    }

    /// Write the values into `dst` (as many elements) in NCHW order.
    fn write_nchw(&self, dst: &mut [f32]) -> Result<(), ModelError> {
        match self.layout {
            Layout::Nhwc if !self.flat => fast::nhwc_to_nchw(self.dims, self.data, dst)?,
            _ => dst.copy_from_slice(self.data),
        }
        Ok(())
    }
}

/// What an observer learns after each step.
#[derive(Debug)]
pub struct StepEvent<'a> {
    /// Position of the step in the plan.
    pub index: usize,
    /// The step.
    pub step: &'a Step,
    /// Dims of the step's input.
    pub input: [usize; 4],
    /// Dims of what the step wrote (its input's, for an output).
    pub output: [usize; 4],
    /// The convolution algorithm, for convolutions on the fast kernels.
    pub algo: Option<resnet_kernels::fast::ConvAlgo>,
    /// Wall time of the step.
    pub seconds: f64,
    /// For [`Step::Output`]: the values named (when the observer [`Observer::wants`] them;
    /// an output kept in bf16 comes widened exactly to f32).
    pub values: Option<Values<'a>>,
}

/// Watches a run step by step: collects outputs (stages, features, logits), times layers,
/// or stops the run early. `Send`: on several threads, the steps run on the network's pool.
pub trait Observer: Send {
    /// Called after each step.
    fn step(&mut self, event: &StepEvent<'_>) -> Result<Flow, ModelError>;

    /// Whether this observer reads the values of the named output `name` (default: yes).
    /// An output it does not read comes without values ([`StepEvent::values`] is `None`),
    /// which spares a run the widening of an output kept in bf16.
    fn wants(&self, name: &str) -> bool {
        let _ = name;
        true
    }
}

/// Keeps named outputs as NCHW tensors: one (and stops the run there), or all.
#[derive(Debug)]
pub(crate) struct Keep<'n> {
    only: Option<&'n str>,
    one: Option<Tensor>,
    all: Vec<(String, Tensor)>,
}

impl<'n> Keep<'n> {
    pub(crate) fn one(name: &'n str) -> Self {
        Self {
            only: Some(name),
            one: None,
            all: Vec::new(),
        }
    }

    pub(crate) fn all() -> Self {
        Self {
            only: None,
            one: None,
            all: Vec::new(),
        }
    }

    pub(crate) fn take_one(self) -> Option<Tensor> {
        self.one
    }

    pub(crate) fn into_all(self) -> Vec<(String, Tensor)> {
        self.all
    }

    /// Keep the values `v` of the output `name` as images `first..` of a batch of `batch`
    /// images: the output's tensor is made by its first values, its other images written
    /// in place by the runs that follow.
    fn put(
        &mut self,
        name: &str,
        first: usize,
        batch: usize,
        v: &Values<'_>,
    ) -> Result<Flow, ModelError> {
        let (t, flow) = match self.only {
            Some(only) if only == name => match &mut self.one {
                Some(t) => (t, Flow::Stop),
                None => (self.one.insert(whole(v, batch)?), Flow::Stop),
            },
            Some(_) => return Ok(Flow::Continue),
            None => match self.all.iter().position(|(n, _)| n == name) {
                Some(at) => (&mut self.all[at].1, Flow::Continue),
                None => {
                    self.all.push((name.to_owned(), whole(v, batch)?));
                    let last = self.all.len() - 1;
                    (&mut self.all[last].1, Flow::Continue)
                }
            },
        };
        let per = t.len().checked_div(batch).unwrap_or(0);
        let rows = t
            .as_mut_slice()
            .get_mut(first * per..(first + v.dims[0]) * per)
            .filter(|r| r.len() == v.data.len())
            .ok_or_else(|| ModelError::Config(format!("output {name:?} changed shape")))?;
        v.write_nchw(rows)?;
        Ok(flow)
    }
}

/// A zeroed NCHW tensor for the values `v` of a batch of `batch` images.
fn whole(v: &Values<'_>, batch: usize) -> Result<Tensor, ModelError> {
    let (mut dims, rank) = v.nchw_dims();
    dims[0] = batch;
    Ok(Tensor::try_zeros_with_layout(&dims[..rank], Layout::Nchw)?)
}

impl Observer for Keep<'_> {
    fn wants(&self, name: &str) -> bool {
        self.only.is_none_or(|only| only == name)
    }

    fn step(&mut self, e: &StepEvent<'_>) -> Result<Flow, ModelError> {
        match (e.step, &e.values) {
            (Step::Output { name, .. }, Some(v)) => self.put(name, 0, v.dims[0], v),
            _ => Ok(Flow::Continue),
        }
    }
}

/// The observer of one image's run within a batch: keeps its outputs as that image of the
/// batch's (see [`Executor::run_keep`]).
struct Part<'k, 'n> {
    keep: &'k Mutex<&'k mut Keep<'n>>,
    only: Option<&'n str>,
    image: usize,
    batch: usize,
}

impl Observer for Part<'_, '_> {
    fn wants(&self, name: &str) -> bool {
        self.only.is_none_or(|only| only == name)
    }

    fn step(&mut self, e: &StepEvent<'_>) -> Result<Flow, ModelError> {
        match (e.step, &e.values) {
            (Step::Output { name, .. }, Some(v)) => self
                .keep
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(name, self.image, self.batch, v),
            _ => Ok(Flow::Continue),
        }
    }
}

/// Activation slots and kernel scratch of one run, kept between calls so that a run
/// allocates only its outputs once the workspace has seen the input size.
#[derive(Debug, Default)]
struct Workspace {
    bufs: Vec<Vec<f32>>,
    /// A named output kept in bf16, widened for an observer.
    wide: Vec<f32>,
    /// Per slot: the dims of the values it holds, whether they are flat, and the border of
    /// the bf16 map they are kept in (`None`: f32).
    dims: Vec<([usize; 4], bool, Option<[usize; 2]>)>,
    scratch: Scratch,
    /// The workspaces of the threads that run a batch's images side by side.
    lanes: Vec<Workspace>,
    /// Input dims this workspace has sized its scratch for (at most 64: a server may see
    /// many sizes; a forgotten one is sized again, which costs one pass over the plan).
    planned: Vec<[usize; 4]>,
}

/// A pool of workspaces: concurrent callers each take one.
#[derive(Debug, Default)]
struct WorkspacePool(Mutex<Vec<Workspace>>);

impl WorkspacePool {
    fn take(&self) -> Workspace {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }
    fn give(&self, ws: Workspace) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
    }
}

/// The worker threads of an executor, started by its first run (so that a network built
/// with the default thread count and then given another starts no threads it throws away),
/// and shared by its clones.
#[derive(Debug, Default)]
struct Workers(std::sync::OnceLock<rayon::ThreadPool>);

impl Workers {
    /// The pool of `threads` threads, started now if it was not, every thread running before
    /// this returns (a run never waits on a thread that is still starting, nor does a
    /// thread's start land inside a later run).
    fn get(&self, threads: usize) -> Result<&rayon::ThreadPool, ModelError> {
        if let Some(p) = self.0.get() {
            return Ok(p);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("resnet-{i}"))
            .build()
            .map_err(|e| ModelError::Config(format!("cannot start {threads} threads: {e}")))?;
        pool.broadcast(|_| ());
        // Two first runs at once may both start a pool: one is kept, the other dropped.
        Ok(self.0.get_or_init(|| pool))
    }
}

/// Threads, instruction set and workspaces of a network.
#[derive(Debug, Clone)]
pub(crate) struct Executor {
    threads: usize,
    cpu: Cpu,
    /// The worker threads when there is more than one.
    workers: Arc<Workers>,
    workspaces: Arc<WorkspacePool>,
}

fn slot(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

fn numel(d: [usize; 4]) -> usize {
    d.iter().product()
}

impl Executor {
    pub(crate) fn new(threads: usize, cpu: Cpu) -> Result<Self, ModelError> {
        if threads == 0 {
            return Err(ModelError::Config(
                "the thread count must be at least 1".into(),
            ));
        }
        Ok(Self {
            threads,
            cpu,
            workers: Arc::default(),
            workspaces: Arc::new(WorkspacePool::default()),
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    pub(crate) fn cpu(&self) -> Cpu {
        self.cpu
    }

    /// The worker threads, or `None` on one thread (the caller's).
    fn pool(&self) -> Result<Option<&rayon::ThreadPool>, ModelError> {
        if self.threads > 1 {
            self.workers.get(self.threads).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The dims of the input `x`, checked against the plan.
    fn input_dims(net: &BoundPlan, x: &TensorView<'_>) -> Result<[usize; 4], ModelError> {
        let dims = x.shape().dims4().ok_or_else(|| ModelError::Input {
            found: x.shape().dims().to_vec(),
            reason: "expected a rank-4 [N, C, H, W] tensor".into(),
        })?;
        if dims[1] != net.plan.in_channels() {
            return Err(ModelError::Input {
                found: dims.to_vec(),
                reason: format!("expected {} channels", net.plan.in_channels()),
            });
        }
        Ok(dims)
    }

    /// Run `plan` on `x` and keep the outputs `keep` asks for. A batch runs image by image:
    /// as many images at once as there are threads, each on one thread with its activations
    /// in that core's caches (a batch's activations, all images at once, would leave them),
    /// then the images left over one at a time on every thread. Each output is written into
    /// its place in the batch's tensor. A value depends on its own image only, and not on the
    /// thread count, so this is bitwise the whole batch's result ([`Executor::run`]).
    pub(crate) fn run_keep(
        &self,
        net: &BoundPlan,
        x: TensorView<'_>,
        keep: &mut Keep<'_>,
    ) -> Result<(), ModelError> {
        let dims = Self::input_dims(net, &x)?;
        let batch = dims[0];
        if batch < 2 {
            return self.run(net, x, keep);
        }
        let only = keep.only;
        let keep = Mutex::new(keep);
        let one = [1, dims[1], dims[2], dims[3]];
        let image = |image: usize, ws: &mut Workspace, par: Par| -> Result<(), ModelError> {
            let mut part = Part {
                keep: &keep,
                only,
                image,
                batch,
            };
            self.steps(net, x.image(image)?, one, ws, par, &mut part)
        };
        let mut ws = self.workspaces.take();
        let result = match self.pool()? {
            Some(p) => {
                // Lane `j` runs images `j, j + lanes, …` on one thread, in a workspace of its
                // own (kept in the batch's, so that a warm run allocates none).
                let spread = batch - batch % self.threads;
                let lanes = self.threads.min(spread);
                let mut own = std::mem::take(&mut ws.lanes);
                own.resize_with(own.len().max(lanes), Workspace::default);
                let result = p.install(|| {
                    use rayon::prelude::*;
                    own[..lanes]
                        .par_iter_mut()
                        .enumerate()
                        .try_for_each(|(j, lane)| {
                            (j..spread)
                                .step_by(lanes)
                                .try_for_each(|i| image(i, lane, Par::Seq))
                        })?;
                    if spread == batch {
                        return Ok(());
                    }
                    let all = Par::with_threads(self.threads);
                    fast::with_awake_workers(|| {
                        (spread..batch).try_for_each(|i| image(i, &mut ws, all))
                    })
                });
                ws.lanes = own;
                result
            }
            None => (0..batch).try_for_each(|i| image(i, &mut ws, Par::Seq)),
        };
        self.workspaces.give(ws);
        result
    }

    /// Run `plan` (bound as `bound` for `backend`) on `x`, on this executor's threads.
    pub(crate) fn run(
        &self,
        net: &BoundPlan,
        x: TensorView<'_>,
        obs: &mut dyn Observer,
    ) -> Result<(), ModelError> {
        let dims = Self::input_dims(net, &x)?;
        let pool = self.pool()?;
        let mut ws = self.workspaces.take();
        let par = Par::with_threads(self.threads);
        let result = match pool {
            Some(p) => p.install(|| {
                fast::with_awake_workers(|| self.steps(net, x, dims, &mut ws, par, obs))
            }),
            None => self.steps(net, x, dims, &mut ws, par, obs),
        };
        self.workspaces.give(ws);
        result
    }

    /// Size the workspace for input dims `dims` (first run on them) on `threads` threads:
    /// every slot, and the scratch of every thread for the largest convolution task.
    fn plan_for(
        &self,
        plan: &Plan,
        bound: &[Bound],
        dims: [usize; 4],
        threads: usize,
        ws: &mut Workspace,
    ) -> Result<(), ModelError> {
        if ws.bufs.len() < plan.slots() {
            ws.bufs.resize_with(plan.slots(), Vec::new);
            ws.dims.resize(plan.slots(), ([0; 4], false, None));
        }
        if ws.scratch.threads() != threads {
            ws.scratch = Scratch::new(threads);
            ws.planned.clear();
        }
        if ws.planned.contains(&dims) {
            return Ok(());
        }
        let trace = plan.trace(dims)?;
        let mut need = 0;
        for (b, (i, _)) in bound.iter().zip(&trace) {
            match b {
                Bound::FastConv(p) => need = need.max(p.scratch_len(*i)?),
                Bound::Bf16Conv(p, _) => need = need.max(p.scratch_len(*i)?),
                _ => {}
            }
        }
        ws.scratch.reserve(need);
        if ws.planned.len() == 64 {
            ws.planned.remove(0);
        }
        ws.planned.push(dims);
        Ok(())
    }

    /// The step loop.
    fn steps(
        &self,
        net: &BoundPlan,
        x: TensorView<'_>,
        dims: [usize; 4],
        ws: &mut Workspace,
        par: Par,
        obs: &mut dyn Observer,
    ) -> Result<(), ModelError> {
        let BoundPlan {
            plan,
            steps: bound,
            backend,
            storage,
            ..
        } = net;
        let backend = *backend;
        self.plan_for(plan, bound, dims, par.threads(), ws)?;
        let cpu = self.cpu;
        let layout = match backend {
            Backend::Fast => Layout::Nhwc,
            Backend::Naive => Layout::Nchw,
        };
        let Workspace {
            bufs,
            dims: slot_dims,
            scratch,
            wide,
            ..
        } = ws;
        let ctx = Ctx::new(cpu, par, scratch);
        for (index, (step, bound)) in plan.steps().iter().zip(bound).enumerate() {
            let t0 = Instant::now();
            let (input, flat_in) = match step.src() {
                Some(s) => (slot_dims[s.0].0, slot_dims[s.0].1),
                None => (dims, false),
            };
            let keep = storage[index];
            let output = step.output_dims(input)?;
            let mut algo = None;
            let mut values = None;
            // The destination is taken out of the slot list while the step runs, so that it
            // can be written while the sources are read (the builder never aliases them).
            // A named output kept in bf16, widened when the observer reads it.
            let mut widened = false;
            if let Step::Output { src: s, name } = step
                && let (d, _, Some(pad)) = slot_dims[s.0]
                && obs.wants(name)
            {
                let words = as_words(&bufs[s.0][..map_words(d, pad)?]);
                map_to_f32(words, d, pad, slot(wide, numel(d)))?;
                widened = true;
            }
            let dst_slot = step.dst();
            let mut out = dst_slot.map_or_else(Vec::new, |d| std::mem::take(&mut bufs[d.0]));
            let result = (|| -> Result<(), ModelError> {
                let len = match keep {
                    // f32-sized words of a bf16 map.
                    Some(pad) => map_words(output, pad)?,
                    None => numel(output),
                };
                let dst = match dst_slot {
                    Some(_) => slot(&mut out, len),
                    None => &mut [],
                };
                // A slot's f32 values (a bf16 map is read by bf16 convolutions only).
                let src = |s: crate::plan::Slot| -> Result<&[f32], ModelError> {
                    match slot_dims[s.0] {
                        (d, _, None) => Ok(&bufs[s.0][..numel(d)]),
                        (_, _, Some(_)) => Err(ModelError::Config(format!(
                            "step {index} ({}) reads {s}, which holds bf16 values",
                            step.name()
                        ))),
                    }
                };
                // A slot as a bf16 convolution reads it: f32 values or a bf16 map.
                let act = |s: crate::plan::Slot| -> Result<Bf16Src<'_>, ModelError> {
                    Ok(match slot_dims[s.0] {
                        (d, _, None) => Bf16Src::F32(&bufs[s.0][..numel(d)]),
                        (d, _, Some(pad)) => Bf16Src::Bf16 {
                            words: as_words(&bufs[s.0][..map_words(d, pad)?]),
                            pad,
                        },
                    })
                };
                match (step, bound) {
                    (Step::Input { .. }, _) => copy_input(cpu, x, dims, layout, dst)?,
                    (Step::Conv(c), Bound::FastConv(p)) => {
                        algo = Some(p.algorithm());
                        let mut epi = Epilogue::none().with_relu(c.relu);
                        if let Some(r) = c.residual {
                            epi = epi.with_residual(src(r)?);
                        }
                        p.run(&ctx, src(c.src)?, input, dst, epi)?;
                    }
                    (Step::Conv(c), Bound::Bf16Conv(p, bf16)) => {
                        algo = Some(p.algorithm());
                        let residual = c.residual.map(act).transpose()?;
                        let dst = match keep {
                            Some(pad) => Bf16Dst::Bf16 {
                                words: as_words_mut(dst),
                                pad,
                            },
                            None => Bf16Dst::F32(dst),
                        };
                        p.run_io(*bf16, &ctx, act(c.src)?, input, dst, residual, c.relu)?;
                    }
                    (Step::Conv(c), Bound::NaiveConv(nc)) => {
                        let res = c.residual.map(&src).transpose()?;
                        naive_conv(c, nc, input, src(c.src)?, res, dst)?;
                    }
                    (
                        Step::MaxPool {
                            kernel,
                            stride,
                            padding,
                            src: s,
                            ..
                        },
                        _,
                    ) => {
                        let g =
                            PoolGeometry::new(input, [*kernel; 2], [*stride; 2], [*padding; 2])?;
                        match (backend, act(*s)?) {
                            (Backend::Fast, Bf16Src::Bf16 { words, pad }) => {
                                let bf16 = Bf16Cpu::detect().ok_or_else(|| {
                                    ModelError::Unsupported("bf16 maps need AVX512-BF16".into())
                                })?;
                                max_pool_map(bf16, par, &g, words, pad, dst)?
                            }
                            (Backend::Fast, _) => {
                                fast::max_pool2d_nhwc(cpu, par, &g, src(*s)?, dst)?
                            }
                            (Backend::Naive, _) => naive::max_pool2d(&g, src(*s)?, dst)?,
                        }
                    }
                    (Step::GlobalAvgPool { src: s, .. }, _) => match backend {
                        Backend::Fast => fast::global_avg_pool_nhwc(cpu, input, src(*s)?, dst)?,
                        Backend::Naive => naive::adaptive_avg_pool2d(input, [1, 1], src(*s)?, dst)?,
                    },
                    (Step::Linear(l), Bound::Bf16Linear(p, bf16)) => {
                        let dims = [input[0], l.in_features, 1, 1];
                        p.run(*bf16, &ctx, src(l.src)?, dims, dst, Epilogue::none())?
                    }
                    (Step::Linear(l), Bound::FastLinear(p)) => {
                        p.run_par(cpu, par, input[0], src(l.src)?, dst)?
                    }
                    (Step::Linear(l), Bound::NaiveLinear { weight, bias }) => naive::linear(
                        [input[0], l.in_features, l.out_features],
                        src(l.src)?,
                        weight,
                        Some(bias),
                        dst,
                    )?,
                    (Step::PixelShuffle { src: s, factor, .. }, _) => match backend {
                        Backend::Fast => fast::pixel_shuffle_nhwc(input, *factor, src(*s)?, dst)?,
                        Backend::Naive => naive::pixel_shuffle(input, *factor, src(*s)?, dst)?,
                    },
                    (
                        Step::SubsamplePad {
                            src: s,
                            stride,
                            out_channels,
                            ..
                        },
                        _,
                    ) => match backend {
                        Backend::Fast => fast::subsample_pad_channels_nhwc(
                            input,
                            *stride,
                            *out_channels,
                            src(*s)?,
                            dst,
                        )?,
                        Backend::Naive => naive::subsample_pad_channels(
                            input,
                            *stride,
                            *out_channels,
                            src(*s)?,
                            dst,
                        )?,
                    },
                    (Step::Output { src: s, name }, _) => {
                        let data = match widened {
                            true => &wide[..numel(input)],
                            false if obs.wants(name) => src(*s)?,
                            false => &[],
                        };
                        values = (widened || obs.wants(name)).then_some(Values {
                            dims: input,
                            flat: flat_in,
                            layout,
                            data,
                        });
                    }
                    (step, _) => {
                        return Err(ModelError::Config(format!(
                            "step {index} ({}) has no weights bound",
                            step.name()
                        )));
                    }
                }
                Ok(())
            })();
            let event = StepEvent {
                index,
                step,
                input,
                output,
                algo,
                seconds: t0.elapsed().as_secs_f64(),
                values,
            };
            let flow = result.and_then(|()| obs.step(&event));
            if let Some(d) = dst_slot {
                bufs[d.0] = out;
                let flat = matches!(step, Step::GlobalAvgPool { .. } | Step::Linear(_));
                slot_dims[d.0] = (output, flat, keep);
            }
            if flow? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }
}

/// The network's input in the kernel set's layout.
fn copy_input(
    cpu: Cpu,
    x: TensorView<'_>,
    dims: [usize; 4],
    layout: Layout,
    dst: &mut [f32],
) -> Result<(), ModelError> {
    match (x.layout(), layout) {
        (a, b) if a == b => dst.copy_from_slice(x.as_slice()),
        (Layout::Nchw, Layout::Nhwc) => fast::nchw_to_nhwc(cpu, dims, x.as_slice(), dst)?,
        (Layout::Nhwc, Layout::Nchw) => fast::nhwc_to_nchw(dims, x.as_slice(), dst)?,
        _ => unreachable!("two layouts"),
    }
    Ok(())
}

/// A convolution step on the reference kernels, one after another as PyTorch runs them:
/// conv (+ bias), batch-norm, scale, residual add, ReLU, on NCHW data.
fn naive_conv(
    c: &crate::plan::ConvStep,
    nc: &NaiveConv,
    input: [usize; 4],
    x: &[f32],
    residual: Option<&[f32]>,
    dst: &mut [f32],
) -> Result<(), ModelError> {
    let (relu, c) = (c.relu, &c.conv);
    let geom = ConvGeometry::new(input, c.weight_shape(), c.params())?;
    naive::conv2d(&geom, x, &nc.weight, nc.bias.as_deref(), dst)?;
    if let Some(bn) = &nc.bn {
        let y = dst.to_vec();
        let params = naive::BatchNormParams {
            gamma: &bn.gamma,
            beta: &bn.beta,
            mean: &bn.mean,
            var: &bn.var,
            eps: c.bn_eps,
        };
        naive::batch_norm(geom.output, &y, &params, dst)?;
    }
    if c.scale != 1.0 {
        for v in dst.iter_mut() {
            *v = (f64::from(*v) * f64::from(c.scale)) as f32;
        }
    }
    if let Some(r) = residual {
        let y = dst.to_vec();
        naive::add(&y, r, dst)?;
    }
    if relu {
        naive::relu_inplace(dst);
    }
    Ok(())
}

/// The wall time of one step of a run (see [`crate::Network::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTime {
    /// Layer name (torchvision's for convolutions, e.g. `layer2.0.conv1`; the kind of step
    /// otherwise: `input`, `maxpool`, `avgpool`, `fc` …).
    pub name: String,
    /// The convolution algorithm, for convolutions on the fast kernels.
    pub algo: Option<resnet_kernels::fast::ConvAlgo>,
    /// Input dims `[N, C, H, W]`.
    pub input: [usize; 4],
    /// Output dims `[N, C, H, W]`.
    pub output: [usize; 4],
    /// Multiply-accumulates (direct-convolution count; 0 for data movement).
    pub macs: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Records a [`LayerTime`] for every step that computes something.
#[derive(Debug, Default)]
pub(crate) struct Profile(pub(crate) Vec<LayerTime>);

impl Observer for Profile {
    fn wants(&self, _: &str) -> bool {
        false
    }

    fn step(&mut self, e: &StepEvent<'_>) -> Result<Flow, ModelError> {
        if !matches!(e.step, Step::Output { .. }) {
            self.0.push(LayerTime {
                name: e.step.name().to_string(),
                algo: e.algo,
                input: e.input,
                output: e.output,
                macs: e.step.macs(e.input),
                seconds: e.seconds,
            });
        }
        Ok(Flow::Continue)
    }
}
