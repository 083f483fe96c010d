//! The fast execution plan of a [`crate::ResNet`]: BN folded, weights packed, NHWC activations
//! in reusable workspaces, fused epilogues, one level of rayon parallelism.

use crate::resnet::{Block, ConvBn};
use crate::{ModelError, ResNet};
use resnet_kernels::fast::{self, PackedLinear};
use resnet_kernels::{Cpu, PoolGeometry};
use resnet_layers::{ConvAlgo, FusedConv};
use resnet_tensor::{Layout, Tensor};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug)]
struct FastBlock {
    convs: Vec<FusedConv>,
    down: Option<FusedConv>,
    shortcut: bool,
}

/// The packed network.
#[derive(Debug)]
pub(crate) struct FastNet {
    stem: FusedConv,
    stages: Vec<Vec<FastBlock>>,
    fc: PackedLinear,
    feature_dim: usize,
    num_classes: usize,
}

/// Activation buffers of one forward pass, kept between calls so a forward allocates only its
/// output once the workspace has grown to the input size.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    pub(crate) bufs: [Vec<f32>; 4],
    feats: Vec<f32>,
    /// Input dims this workspace has run on: the first run on new dims also grows every pool
    /// thread's convolution scratch to what each conv needs, so later runs allocate nothing
    /// whichever thread takes which tile.
    planned: Vec<[usize; 4]>,
}

/// A pool of workspaces: concurrent callers each take one.
#[derive(Debug, Default)]
pub(crate) struct WorkspacePool(Mutex<Vec<Workspace>>);

impl WorkspacePool {
    pub(crate) fn take(&self) -> Workspace {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }
    pub(crate) fn give(&self, ws: Workspace) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
    }
}

fn slot(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

fn fuse(cb: &ConvBn) -> Result<FusedConv, ModelError> {
    Ok(FusedConv::new(cb.conv(), Some(cb.bn()))?)
}

fn fuse_block(b: &Block) -> Result<FastBlock, ModelError> {
    Ok(FastBlock {
        convs: b.convs().iter().map(fuse).collect::<Result<_, _>>()?,
        down: b.downsample().map(fuse).transpose()?,
        shortcut: b.has_shortcut(),
    })
}

/// What a forward pass reports of each stage (NHWC data with logical dims), when asked.
pub(crate) type StageSink<'a> =
    &'a mut dyn FnMut(&str, [usize; 4], &[f32]) -> Result<(), ModelError>;

fn numel(d: [usize; 4]) -> usize {
    d.iter().product()
}

impl FastNet {
    pub(crate) fn build(model: &ResNet) -> Result<Self, ModelError> {
        let fc = model.fc();
        Ok(Self {
            stem: fuse(model.stem())?,
            stages: model
                .stages()
                .iter()
                .map(|s| s.iter().map(fuse_block).collect())
                .collect::<Result<_, _>>()?,
            fc: fc.packed()?.clone(),
            feature_dim: fc.config().in_features,
            num_classes: fc.config().out_features,
        })
    }

    /// Every convolution in execution order with its name and algorithm.
    pub(crate) fn conv_algorithms(&self) -> Vec<(String, ConvAlgo)> {
        let mut v = vec![("conv1".to_string(), self.stem.algorithm())];
        for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.iter().enumerate() {
                for (j, c) in block.convs.iter().enumerate() {
                    v.push((format!("layer{}.{b}.conv{}", s + 1, j + 1), c.algorithm()));
                }
                if let Some(d) = &block.down {
                    v.push((format!("layer{}.{b}.downsample", s + 1), d.algorithm()));
                }
            }
        }
        v
    }

    /// Run on an NCHW or NHWC batch; returns the outputs `head` asks for: `(features [N, F],
    /// logits [N, K])`, each `None` when not asked for (a forward allocates only what it
    /// returns). With `profile`, each step's wall time is recorded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        cpu: Cpu,
        x: &Tensor,
        ws: &mut Workspace,
        parallel: bool,
        head: Head,
        mut sink: Option<StageSink<'_>>,
        profile: Option<&mut Vec<LayerTime>>,
    ) -> Result<(Option<Tensor>, Option<Tensor>), ModelError> {
        let dims = x.shape().dims4().expect("checked by the caller");
        let n = dims[0];
        let Workspace {
            bufs,
            feats,
            planned,
        } = ws;
        let plan = !planned.contains(&dims);
        if plan {
            // A bounded memory of sizes (a server may see many): a size forgotten is planned
            // again, which only costs one broadcast per conv.
            if planned.len() == 64 {
                planned.remove(0);
            }
            planned.push(dims);
        }
        let mut r = Runner {
            cpu,
            parallel,
            profile,
            bufs,
            plan,
        };
        // Entry: the model's input in NHWC, in buffer 0.
        let t0 = Instant::now();
        let input = slot(&mut r.bufs[0], x.len());
        match x.layout() {
            Layout::Nchw => fast::nchw_to_nhwc(cpu, dims, x.as_slice(), input)?,
            Layout::Nhwc => input.copy_from_slice(x.as_slice()),
        }
        r.record(|| "input NCHW->NHWC".into(), None, dims, dims, 0, t0);
        // Stem: conv + BN + ReLU into buffer 1, then the max-pool into buffer 0.
        let sd = r.conv(|| "conv1".into(), &self.stem, 0, dims, None, true, 1)?;
        let pool = PoolGeometry::new(sd, [3, 3], [2, 2], [1, 1])?;
        let mut cur_dims = pool.output;
        let t0 = Instant::now();
        {
            let [b0, b1, ..] = &mut *r.bufs;
            fast::max_pool2d_nhwc(
                cpu,
                &pool,
                &b1[..numel(sd)],
                slot(b0, numel(cur_dims)),
                parallel,
            )?;
        }
        r.record(|| "maxpool".into(), None, sd, cur_dims, 0, t0);
        let mut cur = 0;
        if let Some(s) = sink.as_mut() {
            s("stem", cur_dims, &r.bufs[cur][..numel(cur_dims)])?;
        }
        for (si, stage) in self.stages.iter().enumerate() {
            for (bi, block) in stage.iter().enumerate() {
                // Names are built only when profiling: a forward allocates nothing else.
                let name = |what: &'static str, j: usize| {
                    move || match j {
                        0 => format!("layer{}.{bi}.{what}", si + 1),
                        j => format!("layer{}.{bi}.{what}{j}", si + 1),
                    }
                };
                let mut free = [0; 3];
                for (slot, i) in free.iter_mut().zip((0..4).filter(|&i| i != cur)) {
                    *slot = i;
                }
                let (last, inner) = block.convs.split_last().expect("blocks have convs");
                // Inner convs (conv + BN + ReLU) alternate between two free buffers.
                let (mut h, mut h_dims) = (cur, cur_dims);
                for (j, conv) in inner.iter().enumerate() {
                    h_dims = r.conv(
                        name("conv", j + 1),
                        conv,
                        h,
                        h_dims,
                        None,
                        true,
                        free[j % 2],
                    )?;
                    h = free[j % 2];
                }
                // The shortcut: a projection into the third free buffer, the input, or none.
                let res = match (&block.down, block.shortcut) {
                    (Some(down), _) => {
                        r.conv(
                            name("downsample", 0),
                            down,
                            cur,
                            cur_dims,
                            None,
                            false,
                            free[2],
                        )?;
                        Some(free[2])
                    }
                    (None, true) => Some(cur),
                    (None, false) => None,
                };
                // The last conv adds the shortcut and applies ReLU in its output step.
                let dst = if h == free[0] { free[1] } else { free[0] };
                let label = name("conv", inner.len() + 1);
                cur_dims = r.conv(label, last, h, h_dims, res, true, dst)?;
                cur = dst;
            }
            if let Some(s) = sink.as_mut() {
                s(
                    &format!("layer{}", si + 1),
                    cur_dims,
                    &r.bufs[cur][..numel(cur_dims)],
                )?;
            }
        }
        // Head: global average pool, classifier.
        let t0 = Instant::now();
        let feats = slot(feats, n * self.feature_dim);
        fast::global_avg_pool_nhwc(cpu, cur_dims, &r.bufs[cur][..numel(cur_dims)], feats)?;
        let pooled = match head {
            Head::Logits => None,
            Head::Features | Head::Both => Some(Tensor::from_slice_with_layout(
                &[n, self.feature_dim],
                Layout::Nchw,
                feats,
            )?),
        };
        let logits = match head {
            Head::Features => None,
            Head::Logits | Head::Both => {
                let mut logits = Tensor::zeros(&[n, self.num_classes])?;
                self.fc.run(cpu, n, feats, logits.as_mut_slice())?;
                Some(logits)
            }
        };
        if let Some(p) = r.profile {
            p.push(LayerTime {
                name: "avgpool+fc".into(),
                algo: None,
                input: cur_dims,
                output: [n, self.num_classes, 1, 1],
                macs: (n * self.feature_dim * self.num_classes) as u64,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        Ok((pooled, logits))
    }
}

/// Which outputs of the head a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// The logits only.
    Logits,
    /// The pooled features only (the classifier is skipped).
    Features,
    /// Both.
    Both,
}

/// The wall time of one step of a forward pass (see [`ResNet::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTime {
    /// Layer name (torchvision's, e.g. `layer2.0.conv1`).
    pub name: String,
    /// The convolution algorithm, for convolutions.
    pub algo: Option<ConvAlgo>,
    /// Input dims `[N, C, H, W]`.
    pub input: [usize; 4],
    /// Output dims `[N, C, H, W]`.
    pub output: [usize; 4],
    /// Multiply-accumulates (direct-convolution count).
    pub macs: u64,
    /// Wall time.
    pub seconds: f64,
}

struct Runner<'a, 'p> {
    cpu: Cpu,
    parallel: bool,
    profile: Option<&'p mut Vec<LayerTime>>,
    bufs: &'a mut [Vec<f32>; 4],
    /// First run on these input dims: size every thread's scratch for each conv.
    plan: bool,
}

impl Runner<'_, '_> {
    fn record(
        &mut self,
        name: impl FnOnce() -> String,
        algo: Option<ConvAlgo>,
        input: [usize; 4],
        output: [usize; 4],
        macs: u64,
        t0: Instant,
    ) {
        if let Some(p) = self.profile.as_mut() {
            p.push(LayerTime {
                name: name(),
                algo,
                input,
                output,
                macs,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
    }

    /// Run `conv` from buffer `src` into buffer `dst` (≠ src, ≠ res), returning output dims.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: impl FnOnce() -> String,
        conv: &FusedConv,
        src: usize,
        src_dims: [usize; 4],
        res: Option<usize>,
        relu: bool,
        dst: usize,
    ) -> Result<[usize; 4], ModelError> {
        if self.plan {
            let len = conv.scratch_len(src_dims)?;
            if self.parallel {
                rayon::broadcast(|_| fast::reserve_scratch(len));
            } else {
                fast::reserve_scratch(len);
            }
        }
        let t0 = Instant::now();
        let geom = conv.geometry(src_dims)?;
        let od = geom.output;
        let mut out = std::mem::take(&mut self.bufs[dst]);
        let result = conv.run(
            self.cpu,
            &self.bufs[src][..numel(src_dims)],
            src_dims,
            res.map(|r| &self.bufs[r][..numel(od)]),
            relu,
            slot(&mut out, numel(od)),
            self.parallel,
        );
        self.bufs[dst] = out;
        result?;
        self.record(name, Some(conv.algorithm()), src_dims, od, geom.macs(), t0);
        Ok(od)
    }
}

/// Threads and workspaces of a model.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    pub(crate) threads: usize,
    pub(crate) pool: Option<Arc<rayon::ThreadPool>>,
    pub(crate) workspaces: Arc<WorkspacePool>,
}

impl Exec {
    pub(crate) fn new(threads: usize) -> Result<Self, ModelError> {
        if threads == 0 {
            return Err(ModelError::Config(
                "the thread count must be at least 1".into(),
            ));
        }
        let pool = if threads > 1 {
            Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("resnet-{i}"))
                    .build()
                    .map_err(|e| {
                        ModelError::Config(format!("cannot start {threads} threads: {e}"))
                    })?,
            ))
        } else {
            None
        };
        Ok(Self {
            threads,
            pool,
            workspaces: Arc::new(WorkspacePool::default()),
        })
    }

    /// Run `f(parallel)` on this model's threads.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce(bool) -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(|| f(true)),
            None => f(false),
        }
    }
}
