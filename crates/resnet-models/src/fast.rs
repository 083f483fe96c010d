//! The fast execution plan of a [`crate::ResNet`]: BN folded, weights packed, NHWC activations
//! in reusable workspaces, fused epilogues, one level of rayon parallelism.

use crate::resnet::{Block, ConvBn};
use crate::{ModelError, ResNet};
use resnet_kernels::fast::{self, PackedLinear};
use resnet_kernels::{Cpu, PoolGeometry};
use resnet_layers::{ConvAlgo, FusedConv};
use resnet_tensor::{Layout, Tensor};
use std::sync::{Arc, Mutex};

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
    bufs: [Vec<f32>; 4],
    feats: Vec<f32>,
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

    /// Run on an NCHW or NHWC batch; returns `(features [N, F], logits [N, K])`.
    pub(crate) fn run(
        &self,
        cpu: Cpu,
        x: &Tensor,
        ws: &mut Workspace,
        parallel: bool,
        mut sink: Option<StageSink<'_>>,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let dims = x.shape().dims4().expect("checked by the caller");
        let n = dims[0];
        let bufs = &mut ws.bufs;
        // Run `conv` from buffer `src` into buffer `dst` (≠ src, ≠ res), returning output dims.
        let conv_into = |bufs: &mut [Vec<f32>; 4],
                         conv: &FusedConv,
                         src: usize,
                         src_dims: [usize; 4],
                         res: Option<usize>,
                         relu: bool,
                         dst: usize|
         -> Result<[usize; 4], ModelError> {
            let od = conv.geometry(src_dims)?.output;
            let mut out = std::mem::take(&mut bufs[dst]);
            let result = conv.run(
                cpu,
                &bufs[src][..numel(src_dims)],
                src_dims,
                res.map(|r| &bufs[r][..numel(od)]),
                relu,
                slot(&mut out, numel(od)),
                parallel,
            );
            bufs[dst] = out;
            result?;
            Ok(od)
        };
        // Entry: the model's input in NHWC, in buffer 0.
        let input = slot(&mut bufs[0], x.len());
        match x.layout() {
            Layout::Nchw => fast::nchw_to_nhwc(dims, x.as_slice(), input)?,
            Layout::Nhwc => input.copy_from_slice(x.as_slice()),
        }
        // Stem: conv + BN + ReLU into buffer 1, then the max-pool into buffer 0.
        let sd = conv_into(bufs, &self.stem, 0, dims, None, true, 1)?;
        let pool = PoolGeometry::new(sd, [3, 3], [2, 2], [1, 1])?;
        let mut cur_dims = pool.output;
        {
            let [b0, b1, ..] = &mut *bufs;
            fast::max_pool2d_nhwc(
                cpu,
                &pool,
                &b1[..numel(sd)],
                slot(b0, numel(cur_dims)),
                parallel,
            )?;
        }
        let mut cur = 0;
        if let Some(s) = sink.as_mut() {
            s("stem", cur_dims, &bufs[cur][..numel(cur_dims)])?;
        }
        for (si, stage) in self.stages.iter().enumerate() {
            for block in stage {
                let free: Vec<usize> = (0..4).filter(|&i| i != cur).collect();
                let (last, inner) = block.convs.split_last().expect("blocks have convs");
                // Inner convs (conv + BN + ReLU) alternate between two free buffers.
                let (mut h, mut h_dims) = (cur, cur_dims);
                for (j, conv) in inner.iter().enumerate() {
                    h_dims = conv_into(bufs, conv, h, h_dims, None, true, free[j % 2])?;
                    h = free[j % 2];
                }
                // The shortcut: a projection into the third free buffer, the input, or none.
                let res = match (&block.down, block.shortcut) {
                    (Some(down), _) => {
                        conv_into(bufs, down, cur, cur_dims, None, false, free[2])?;
                        Some(free[2])
                    }
                    (None, true) => Some(cur),
                    (None, false) => None,
                };
                // The last conv adds the shortcut and applies ReLU in its output step.
                let dst = if h == free[0] { free[1] } else { free[0] };
                cur_dims = conv_into(bufs, last, h, h_dims, res, true, dst)?;
                cur = dst;
            }
            if let Some(s) = sink.as_mut() {
                s(
                    &format!("layer{}", si + 1),
                    cur_dims,
                    &bufs[cur][..numel(cur_dims)],
                )?;
            }
        }
        // Head: global average pool, classifier.
        let feats = slot(&mut ws.feats, n * self.feature_dim);
        fast::global_avg_pool_nhwc(cpu, cur_dims, &ws.bufs[cur][..numel(cur_dims)], feats)?;
        let pooled = Tensor::from_slice_with_layout(&[n, self.feature_dim], Layout::Nchw, feats)?;
        let mut logits = Tensor::zeros(&[n, self.num_classes])?;
        self.fc.run(n, feats, logits.as_mut_slice())?;
        Ok((pooled, logits))
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
