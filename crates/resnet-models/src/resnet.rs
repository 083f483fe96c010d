use crate::fast::{Exec, FastNet, Head};
use crate::{BlockKind, ModelError, ResNetConfig};
use resnet_kernels::Cpu;
use resnet_layers::{
    AdaptiveAvgPool2d, Backend, BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, Linear,
    LinearConfig, MaxPool2d, MaxPool2dConfig, ReLU,
};
use resnet_tensor::{Layout, Tensor};
use resnet_weights::{Strictness, Tracked, WeightFile, WeightSource};
use std::sync::Arc;

/// A convolution followed by its batch-norm: the unit every ResNet conv comes in.
#[derive(Debug, Clone)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// Load `{conv}.weight` and `{bn}.{weight,bias,running_mean,running_var}` from `src`.
    pub fn load(
        src: &dyn WeightSource,
        conv: &str,
        bn: &str,
        config: Conv2dConfig,
        eps: f32,
    ) -> Result<Self, ModelError> {
        let w = src.tensor(&format!("{conv}.weight"), &config.weight_shape())?;
        let conv = Conv2d::new(config, w, None)?;
        let c = [config.out_channels];
        let p = |n: &str| src.tensor(&format!("{bn}.{n}"), &c);
        let bn = BatchNorm2d::new(
            BatchNorm2dConfig::new(config.out_channels).with_eps(eps),
            p("weight")?,
            p("bias")?,
            p("running_mean")?,
            p("running_var")?,
        )?;
        Ok(Self { conv, bn })
    }

    /// The convolution.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The batch-norm.
    pub fn bn(&self) -> &BatchNorm2d {
        &self.bn
    }

    /// `act(bn(conv(x)) + residual)`, where `act` is ReLU when `relu` is set.
    pub fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        backend: Backend,
    ) -> Result<Tensor, ModelError> {
        let y = self.conv.forward(x, backend)?;
        let mut y = self.bn.forward(&y, backend)?;
        if let Some(r) = residual {
            y = resnet_layers::add(&y, r)?;
        }
        if relu {
            ReLU.forward_inplace(&mut y);
        }
        Ok(y)
    }
}

/// One residual block: its convs (2 for Basic, 3 for Bottleneck) and an optional projection.
#[derive(Debug, Clone)]
pub struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
    shortcut: bool,
}

impl Block {
    /// Load block `prefix` (e.g. `layer2.0`; empty for unprefixed names) of a network with
    /// config `cfg`: `in_channels` in, `planes * expansion` out, the given stride.
    pub fn load(
        src: &dyn WeightSource,
        cfg: &ResNetConfig,
        prefix: &str,
        in_channels: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Self, ModelError> {
        let eps = cfg.bn_eps;
        let out = planes * cfg.block.expansion();
        let dot = if prefix.is_empty() { "" } else { "." };
        let cb = |j: usize, c: Conv2dConfig| {
            ConvBn::load(
                src,
                &format!("{prefix}{dot}conv{j}"),
                &format!("{prefix}{dot}bn{j}"),
                c,
                eps,
            )
        };
        let convs = match cfg.block {
            BlockKind::Basic => vec![
                cb(
                    1,
                    Conv2dConfig::new(in_channels, planes, 3)
                        .with_stride(stride)
                        .with_padding(1),
                )?,
                cb(2, Conv2dConfig::new(planes, planes, 3).with_padding(1))?,
            ],
            BlockKind::Bottleneck => {
                let width = cfg.bottleneck_width(planes);
                vec![
                    cb(1, Conv2dConfig::new(in_channels, width, 1))?,
                    cb(
                        2,
                        Conv2dConfig::new(width, width, 3)
                            .with_stride(stride)
                            .with_padding(1)
                            .with_groups(cfg.groups),
                    )?,
                    cb(3, Conv2dConfig::new(width, out, 1))?,
                ]
            }
        };
        let downsample = if cfg.shortcuts && (stride != 1 || in_channels != out) {
            Some(ConvBn::load(
                src,
                &format!("{prefix}{dot}downsample.0"),
                &format!("{prefix}{dot}downsample.1"),
                Conv2dConfig::new(in_channels, out, 1).with_stride(stride),
                eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            convs,
            downsample,
            shortcut: cfg.shortcuts,
        })
    }

    /// The block's convs in order.
    pub fn convs(&self) -> &[ConvBn] {
        &self.convs
    }

    /// Whether the block adds a shortcut (false in a plain network).
    pub fn has_shortcut(&self) -> bool {
        self.shortcut
    }

    /// The projection shortcut, if the block has one.
    pub fn downsample(&self) -> Option<&ConvBn> {
        self.downsample.as_ref()
    }

    /// `relu(F(x) + shortcut(x))`, or `relu(F(x))` in a plain network.
    pub fn forward(&self, x: &Tensor, backend: Backend) -> Result<Tensor, ModelError> {
        let projected = match &self.downsample {
            Some(d) => Some(d.forward(x, None, false, backend)?),
            None => None,
        };
        let residual = self.shortcut.then(|| projected.as_ref().unwrap_or(x));
        let (last, inner) = self.convs.split_last().expect("blocks have convs");
        let mut h = None;
        for c in inner {
            h = Some(c.forward(h.as_ref().unwrap_or(x), None, true, backend)?);
        }
        last.forward(h.as_ref().unwrap_or(x), residual, true, backend)
    }
}

/// What the fast path returns.
struct FastOutput {
    pool: Option<Tensor>,
    logits: Option<Tensor>,
    stages: Vec<Tensor>,
}

/// Outputs of every stage of a forward pass, for debugging and comparison with other frameworks.
#[derive(Debug, Clone)]
pub struct StageOutputs {
    /// After conv1, bn1, relu and the max-pool: `[N, 64, H/4, W/4]`.
    pub stem: Tensor,
    /// After each stage (`layer1` … `layer4` for torchvision's four).
    pub layers: Vec<Tensor>,
    /// The pooled embedding `[N, feature_dim]`.
    pub pool: Tensor,
    /// The classifier's output `[N, num_classes]`.
    pub logits: Tensor,
}

impl StageOutputs {
    /// `(name, tensor)` pairs: `stem`, `layer1` …, `pool`, `logits`.
    pub fn named(&self) -> Vec<(String, &Tensor)> {
        let mut v = vec![("stem".to_string(), &self.stem)];
        for (i, t) in self.layers.iter().enumerate() {
            v.push((format!("layer{}", i + 1), t));
        }
        v.push(("pool".into(), &self.pool));
        v.push(("logits".into(), &self.logits));
        v
    }
}

/// A residual network ready for inference.
///
/// `Send + Sync`: share one model between threads (behind an `Arc` or a reference); concurrent
/// forwards each take their own workspace. On [`Backend::Fast`] (the default) batch-norms are
/// folded into the convolutions and weights packed when the model is built; the reference
/// layers are kept too, so [`ResNet::with_backend`] can switch to [`Backend::Naive`] for
/// debugging. Work is spread over [`ResNet::threads`] threads (default: all cores), and the
/// output is bitwise identical for any thread count.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    stem: ConvBn,
    max_pool: MaxPool2d,
    stages: Vec<Vec<Block>>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
    backend: Backend,
    cpu: Cpu,
    fast: Option<Arc<FastNet>>,
    exec: Exec,
}

impl ResNet {
    /// Build a network of `config` from the tensors of `src` (internal, torchvision names).
    /// Tensors of `src` the network does not use are ignored; see [`ResNet::load_checked`].
    pub fn load(src: &dyn WeightSource, config: &ResNetConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let eps = config.bn_eps;
        let stem_c = ResNetConfig::STEM_CHANNELS;
        let stem = ConvBn::load(
            src,
            "conv1",
            "bn1",
            Conv2dConfig::new(config.in_channels, stem_c, 7)
                .with_stride(2)
                .with_padding(3),
            eps,
        )?;
        let mut in_c = stem_c;
        let mut stages = Vec::with_capacity(config.layers.len());
        for (s, &n) in config.layers.iter().enumerate() {
            let planes = config.planes(s);
            let stride = if s == 0 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let prefix = format!("layer{}.{b}", s + 1);
                let st = if b == 0 { stride } else { 1 };
                blocks.push(Block::load(src, config, &prefix, in_c, planes, st)?);
                in_c = planes * config.block.expansion();
            }
            stages.push(blocks);
        }
        let fc_cfg = LinearConfig::new(in_c, config.num_classes);
        let fc = Linear::new(
            fc_cfg,
            src.tensor("fc.weight", &[config.num_classes, in_c])?,
            Some(src.tensor("fc.bias", &[config.num_classes])?),
        )?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let model = Self {
            config: config.clone(),
            stem,
            max_pool: MaxPool2d::new(MaxPool2dConfig::new(3).with_stride(2).with_padding(1))?,
            stages,
            pool: AdaptiveAvgPool2d::new([1, 1])?,
            fc,
            backend: Backend::Naive,
            cpu: Cpu::detect(),
            fast: None,
            exec: Exec::new(threads)?,
        };
        model.try_with_backend(Backend::default())
    }

    /// Like [`ResNet::load`], then check for tensors the network did not use: an error in
    /// [`Strictness::Strict`]; in [`Strictness::Lenient`] their names are returned.
    pub fn load_checked(
        src: &dyn WeightSource,
        config: &ResNetConfig,
        strictness: Strictness,
    ) -> Result<(Self, Vec<String>), ModelError> {
        let tracked = Tracked::new(src);
        let model = Self::load(&tracked, config)?;
        let unused = tracked.finish(strictness)?;
        Ok((model, unused))
    }

    /// Open a safetensors file, infer its architecture from the keys and shapes, and load it
    /// strictly (every tensor but `num_batches_tracked` must be used).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ModelError> {
        let file = WeightFile::open(path)?;
        let config = crate::infer_config(&file)?;
        Ok(Self::load_checked(&file, &config, Strictness::Strict)?.0)
    }

    /// A network of `config` with torchvision's random initialisation (Kaiming-normal convs,
    /// fan-out mode; BN weight 1, bias 0; uniform classifier), reproducible from `seed`.
    pub fn random(config: &ResNetConfig, seed: u64) -> Result<Self, ModelError> {
        Self::load(&crate::init::random_weights(config, seed)?, config)
    }

    /// The same network running on another backend (packing the weights for
    /// [`Backend::Fast`] if they are not yet).
    pub fn try_with_backend(mut self, backend: Backend) -> Result<Self, ModelError> {
        match backend {
            Backend::Fast if self.fast.is_none() => {
                self.fast = Some(Arc::new(FastNet::build(&self)?));
            }
            Backend::Naive => self.fast = None,
            _ => {}
        }
        self.backend = backend;
        Ok(self)
    }

    /// The same network running on another backend.
    ///
    /// # Panics
    /// Only if packing fails, which cannot happen for a network that loaded; use
    /// [`ResNet::try_with_backend`] to get the error instead.
    pub fn with_backend(self, backend: Backend) -> Self {
        self.try_with_backend(backend)
            .expect("a loaded network always packs")
    }

    /// The same network on `threads` worker threads (1: the calling thread only).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        self.exec = Exec::new(threads)?;
        Ok(self)
    }

    /// Worker threads used by a forward pass.
    pub fn threads(&self) -> usize {
        self.exec.threads
    }

    /// The CPU features the fast kernels dispatch to.
    pub fn cpu(&self) -> Cpu {
        self.cpu
    }

    /// The classifier.
    pub fn fc(&self) -> &Linear {
        &self.fc
    }

    /// Every convolution in execution order, with the algorithm the fast path chose for it
    /// (`None` on the naive backend).
    pub fn conv_algorithms(&self) -> Option<Vec<(String, resnet_layers::ConvAlgo)>> {
        self.fast.as_ref().map(|f| f.conv_algorithms())
    }

    /// Run the fast path once on `x`, timing every step (each conv with its algorithm, the
    /// pools, the classifier): the per-layer table of `cargo xtask bench`. An error on the
    /// naive backend, which has no plan to time.
    pub fn profile(&self, x: &Tensor) -> Result<Vec<crate::LayerTime>, ModelError> {
        self.check_input(x)?;
        let Some(fast) = &self.fast else {
            return Err(ModelError::Config(
                "profiling needs the fast backend".into(),
            ));
        };
        let mut ws = self.exec.workspaces.take();
        let cpu = self.cpu;
        let mut times = Vec::new();
        let result = self.exec.install(|parallel| {
            fast.run(
                cpu,
                x,
                &mut ws,
                parallel,
                Head::Both,
                None,
                Some(&mut times),
            )
        });
        self.exec.workspaces.give(ws);
        result?;
        Ok(times)
    }

    fn run_fast(
        &self,
        fast: &FastNet,
        x: &Tensor,
        head: Head,
        stages: bool,
    ) -> Result<FastOutput, ModelError> {
        let mut ws = self.exec.workspaces.take();
        let cpu = self.cpu;
        let result = self.exec.install(|parallel| {
            let mut kept = Vec::new();
            let mut keep = |name: &str, dims: [usize; 4], data: &[f32]| -> Result<(), ModelError> {
                let t = Tensor::from_slice_with_layout(&dims, Layout::Nhwc, data)?;
                kept.push((name.to_string(), t.to_layout(Layout::Nchw)?));
                Ok(())
            };
            let sink: Option<crate::fast::StageSink<'_>> =
                if stages { Some(&mut keep) } else { None };
            let (pool, logits) = fast.run(cpu, x, &mut ws, parallel, head, sink, None)?;
            Ok(FastOutput {
                pool,
                logits,
                stages: kept.into_iter().map(|(_, t)| t).collect(),
            })
        });
        self.exec.workspaces.give(ws);
        result
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The stem (conv1 + bn1).
    pub fn stem(&self) -> &ConvBn {
        &self.stem
    }

    /// The blocks of each stage.
    pub fn stages(&self) -> &[Vec<Block>] {
        &self.stages
    }

    fn check_input(&self, x: &Tensor) -> Result<(), ModelError> {
        let d = x.shape().dims();
        let bad = |reason: String| {
            Err(ModelError::Input {
                found: d.to_vec(),
                reason,
            })
        };
        let Some([_, c, h, w]) = x.shape().dims4() else {
            return bad("expected a rank-4 [N, C, H, W] tensor".into());
        };
        if c != self.config.in_channels {
            return bad(format!("expected {} channels", self.config.in_channels));
        }
        if h == 0 || w == 0 {
            return bad("spatial size must be at least 1x1".into());
        }
        Ok(())
    }

    /// Run every stage and keep each output (NCHW).
    pub fn forward_stages(&self, x: &Tensor) -> Result<StageOutputs, ModelError> {
        self.check_input(x)?;
        if let Some(fast) = &self.fast {
            let out = self.run_fast(fast, x, Head::Both, true)?;
            let mut it = out.stages.into_iter();
            let stem = it.next().expect("the stem is always reported");
            return Ok(StageOutputs {
                stem,
                layers: it.collect(),
                pool: out.pool.expect("asked for"),
                logits: out.logits.expect("asked for"),
            });
        }
        let b = self.backend;
        let x = if x.layout() == Layout::Nchw {
            std::borrow::Cow::Borrowed(x)
        } else {
            std::borrow::Cow::Owned(x.to_layout(Layout::Nchw)?)
        };
        let h = self.stem.forward(&x, None, true, b)?;
        let stem = self.max_pool.forward(&h, b)?;
        let mut layers: Vec<Tensor> = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let mut h = layers.last().unwrap_or(&stem).clone();
            for block in stage {
                h = block.forward(&h, b)?;
            }
            layers.push(h);
        }
        let last = layers.last().expect("at least one stage");
        let n = last.shape().dims()[0];
        let pool = self
            .pool
            .forward(last, b)?
            .reshape(&[n, self.config.feature_dim()])?;
        let logits = self.fc.forward(&pool, b)?;
        Ok(StageOutputs {
            stem,
            layers,
            pool,
            logits,
        })
    }

    /// The pooled embedding `[N, feature_dim]` (the classifier's input).
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        if let Some(fast) = &self.fast {
            self.check_input(x)?;
            let out = self.run_fast(fast, x, Head::Features, false)?;
            return Ok(out.pool.expect("asked for"));
        }
        Ok(self.forward_stages(x)?.pool)
    }

    /// Logits `[N, num_classes]` of a normalised `[N, C, H, W]` batch (either layout).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        if let Some(fast) = &self.fast {
            self.check_input(x)?;
            let out = self.run_fast(fast, x, Head::Logits, false)?;
            return Ok(out.logits.expect("asked for"));
        }
        Ok(self.forward_stages(x)?.logits)
    }
}

/// The `k` most probable classes of each row of a `[N, classes]` logits tensor, as
/// `(class index, softmax probability)` in decreasing order.
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>, ModelError> {
    let probs = resnet_layers::softmax(logits)?;
    let d = probs.shape().dims();
    if d.len() != 2 {
        return Err(ModelError::Input {
            found: d.to_vec(),
            reason: "top_k expects [N, classes] logits".into(),
        });
    }
    let classes = d[1];
    Ok(probs
        .as_slice()
        .chunks(classes.max(1))
        .take(d[0])
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx.into_iter().take(k).map(|i| (i, row[i])).collect()
        })
        .collect())
}
