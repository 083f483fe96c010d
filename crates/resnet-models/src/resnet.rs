//! The ResNet family as a plan ([`resnet_plan`]: stem, stages of basic or bottleneck blocks,
//! pool, classifier) and [`ResNet`], the plan bound to weights.

use crate::network::Network;
use crate::plan::{ConvSpec, Plan, PlanBuilder, Slot};
use crate::{Arch, Backend, BlockKind, ModelError, Precision, ResNetConfig};
use resnet_kernels::Cpu;
use resnet_tensor::{Tensor, TensorView};
use resnet_weights::{Strictness, Tracked, WeightSource};

/// The plan of a network of `config`: torchvision's module names as weight keys (`conv1`,
/// `bn1`, `layerS.B.convJ`, `layerS.B.bnJ`, `layerS.B.downsample.{0,1}`, `fc`), outputs
/// `stem`, `layer1` …, `pool` and `logits`.
pub fn resnet_plan(config: &ResNetConfig) -> Result<Plan, ModelError> {
    config.validate()?;
    let eps = config.bn_eps;
    let stem_c = ResNetConfig::STEM_CHANNELS;
    let (mut b, x) = PlanBuilder::new(config.in_channels);
    let stem = ConvSpec::new("conv1", "conv1", config.in_channels, stem_c, 7)
        .with_stride(2)
        .with_bn("bn1", eps);
    let h = b.conv(stem, x, None, true);
    b.free(x);
    let mut cur = b.max_pool(h, 3, 2, 1);
    b.free(h);
    b.output("stem", cur);
    let mut in_c = stem_c;
    for (s, &n) in config.layers.iter().enumerate() {
        let planes = config.planes(s);
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{i}", s + 1);
            cur = block(&mut b, config, &prefix, cur, in_c, planes, stride);
            in_c = planes * config.block.expansion();
        }
        b.output(&format!("layer{}", s + 1), cur);
    }
    b.classifier_head(cur, in_c, config.num_classes);
    Ok(b.finish())
}

/// The plan of one residual block on its own (keys `conv1`, `bn1`, … and `downsample.*`, no
/// prefix), output `output`: `in_channels` in, `planes * expansion` out, the given stride.
pub fn resnet_block_plan(
    config: &ResNetConfig,
    in_channels: usize,
    planes: usize,
    stride: usize,
) -> Result<Plan, ModelError> {
    config.validate()?;
    if stride == 0 || in_channels == 0 || planes == 0 {
        return Err(ModelError::Config(
            "a block needs channels and a stride of at least 1".into(),
        ));
    }
    let (mut b, x) = PlanBuilder::new(in_channels);
    let y = block(&mut b, config, "", x, in_channels, planes, stride);
    b.output("output", y);
    Ok(b.finish())
}

/// One block reading `x`, which it frees: `relu(F(x) + shortcut(x))`, or `relu(F(x))` in a
/// plain network. Torchvision v1.5: a bottleneck's stride is on its 3x3 conv.
fn block(
    b: &mut PlanBuilder,
    cfg: &ResNetConfig,
    prefix: &str,
    x: Slot,
    in_c: usize,
    planes: usize,
    stride: usize,
) -> Slot {
    let eps = cfg.bn_eps;
    let out = planes * cfg.block.expansion();
    let dot = if prefix.is_empty() { "" } else { "." };
    let conv = |j: usize, cin: usize, cout: usize, k: usize| {
        let name = format!("{prefix}{dot}conv{j}");
        ConvSpec::new(&name, &name, cin, cout, k).with_bn(&format!("{prefix}{dot}bn{j}"), eps)
    };
    let convs = match cfg.block {
        BlockKind::Basic => vec![
            conv(1, in_c, planes, 3).with_stride(stride),
            conv(2, planes, planes, 3),
        ],
        BlockKind::Bottleneck => {
            let width = cfg.bottleneck_width(planes);
            vec![
                conv(1, in_c, width, 1),
                conv(2, width, width, 3)
                    .with_stride(stride)
                    .with_groups(cfg.groups),
                conv(3, width, out, 1),
            ]
        }
    };
    let mut convs = convs.into_iter();
    let last = convs.next_back().expect("blocks have convs");
    // Inner convs: conv + BN + ReLU.
    let mut h = x;
    for spec in convs {
        let next = b.conv(spec, h, None, true);
        if h != x {
            b.free(h);
        }
        h = next;
    }
    // The shortcut: a projection when the shape changes, the input, or none (plain).
    let projected = (cfg.shortcuts && (stride != 1 || in_c != out)).then(|| {
        let name = format!("{prefix}{dot}downsample");
        let spec = ConvSpec::new(&name, &format!("{name}.0"), in_c, out, 1)
            .with_stride(stride)
            .with_bn(&format!("{name}.1"), eps);
        b.conv(spec, x, None, false)
    });
    let residual = projected.or(cfg.shortcuts.then_some(x));
    // The last conv adds the shortcut and applies ReLU in its output step.
    let y = b.conv(last, h, residual, true);
    if h != x {
        b.free(h);
    }
    if let Some(p) = projected {
        b.free(p);
    }
    b.free(x);
    y
}

/// Outputs of every stage of a forward pass, for debugging and comparison with other frameworks.
#[derive(Debug, Clone)]
pub struct StageOutputs {
    /// After conv1, bn1, relu and the max-pool: `[N, 64, H/4, W/4]` (a CIFAR net: after
    /// conv1, bn1 and relu, `[N, 16 x width, H, W]`).
    pub stem: Tensor,
    /// After each stage (`layer1` … `layer4` for torchvision's four, `layer1` … `layer3` for a
    /// CIFAR net).
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

/// A residual network ready for inference: the plan of its [`Arch`] (a torchvision-style
/// [`ResNetConfig`] or one of He et al.'s CIFAR nets, [`crate::CifarConfig`]) bound to weights.
///
/// `Send + Sync`: share one model between threads (behind an `Arc` or a reference); concurrent
/// forwards each take their own workspace. On [`Backend::Fast`] (the default) batch-norms are
/// folded into the convolutions and weights packed when the model is built, and only the
/// packed weights stay in memory; [`Backend::Naive`] (the `*_on` constructors) runs the f64
/// reference kernels on the parameters as stored, for checking. Work is spread over
/// [`ResNet::threads`] threads (default: all cores), and the output is bitwise identical for
/// any thread count.
///
/// A CIFAR net (what `resnet train --save` writes) runs through the same type:
///
/// ```
/// use resnet_models::{CifarConfig, ResNet};
/// use resnet_tensor::Tensor;
///
/// let model = ResNet::random(&CifarConfig::new(20, 10).with_in_channels(1), 3)?;
/// let logits = model.forward(&Tensor::zeros(&[2, 1, 28, 28])?)?;
/// assert_eq!(logits.shape().dims(), &[2, 10]);
/// assert_eq!(model.config().name(), "cifar-resnet20");
/// # Ok::<(), resnet_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResNet {
    config: Arch,
    net: Network,
}

impl ResNet {
    /// Build a network of `config` (a [`ResNetConfig`], a [`crate::CifarConfig`] or an
    /// [`Arch`]) from the tensors of `src` (internal, torchvision names) on the fast kernels.
    /// Tensors of `src` the network does not use are ignored; see [`ResNet::load_checked`].
    pub fn load<C: Clone + Into<Arch>>(
        src: &dyn WeightSource,
        config: &C,
    ) -> Result<Self, ModelError> {
        Self::load_on(src, config, Backend::Fast)
    }

    /// [`ResNet::load`] on the given kernel set.
    pub fn load_on<C: Clone + Into<Arch>>(
        src: &dyn WeightSource,
        config: &C,
        backend: Backend,
    ) -> Result<Self, ModelError> {
        Self::load_with(src, config, backend, Precision::F32)
    }

    /// [`ResNet::load_on`] with the convolutions in `precision` (see [`Precision`]: bf16
    /// needs AVX512-BF16 and the fast kernels, else [`ModelError::Unsupported`]). Precision
    /// is chosen here, where the weights are packed, not after.
    pub fn load_with<C: Clone + Into<Arch>>(
        src: &dyn WeightSource,
        config: &C,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let config: Arch = config.clone().into();
        Ok(Self {
            net: Network::load_with(config.plan()?, src, backend, precision)?,
            config,
        })
    }

    /// Like [`ResNet::load`], then check for tensors the network did not use: an error in
    /// [`Strictness::Strict`]; in [`Strictness::Lenient`] their names are returned.
    pub fn load_checked<C: Clone + Into<Arch>>(
        src: &dyn WeightSource,
        config: &C,
        strictness: Strictness,
    ) -> Result<(Self, Vec<String>), ModelError> {
        let tracked = Tracked::new(src);
        let model = Self::load(&tracked, config)?;
        let unused = tracked.finish(strictness)?;
        Ok((model, unused))
    }

    /// Open a safetensors file, infer its architecture ([`crate::infer_arch`]: a torchvision
    /// ResNet from its keys and shapes, a CIFAR net from them and the metadata `arch`), and
    /// load it strictly (every tensor but `num_batches_tracked` must be used).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ModelError> {
        Self::from_file_on(path, Backend::Fast)
    }

    /// [`ResNet::from_file`] on the given kernel set.
    pub fn from_file_on(
        path: impl AsRef<std::path::Path>,
        backend: Backend,
    ) -> Result<Self, ModelError> {
        Self::from_file_with(path, backend, Precision::F32)
    }

    /// [`ResNet::from_file`] on the given kernel set and precision (see
    /// [`ResNet::load_with`]).
    ///
    /// ```no_run
    /// use resnet_models::{Backend, Precision, ResNet};
    /// let net = ResNet::from_file_with("resnet18.safetensors", Backend::Fast, Precision::Bf16)?;
    /// # Ok::<(), resnet_models::ModelError>(())
    /// ```
    pub fn from_file_with(
        path: impl AsRef<std::path::Path>,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        crate::network::load_file_strict(
            path.as_ref(),
            |f| crate::infer_arch(f),
            |src, cfg| Self::load_with(src, cfg, backend, precision),
        )
    }

    /// [`ResNet::from_source_on`] on the fast kernels.
    pub fn from_source(src: &dyn WeightSource) -> Result<Self, ModelError> {
        Self::from_source_on(src, Backend::Fast)
    }

    /// [`ResNet::from_file`] on a source already open (a [`resnet_weights::WeightFile`] whose
    /// metadata the caller also reads, a prefixed view, tensors in memory): infer the
    /// architecture with [`crate::infer_arch`] and load strictly.
    pub fn from_source_on(src: &dyn WeightSource, backend: Backend) -> Result<Self, ModelError> {
        Self::from_source_with(src, backend, Precision::F32)
    }

    /// [`ResNet::from_source_on`] with the convolutions in `precision` (see
    /// [`ResNet::load_with`]).
    pub fn from_source_with(
        src: &dyn WeightSource,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let config = crate::infer_arch(src)?;
        let tracked = Tracked::new(src);
        let model = Self::load_with(&tracked, &config, backend, precision)?;
        tracked.finish(Strictness::Strict)?;
        Ok(model)
    }

    /// A network of `config` with torchvision's random initialisation (Kaiming-normal convs,
    /// fan-out mode; BN weight 1, bias 0; uniform classifier), reproducible from `seed`.
    pub fn random<C: Clone + Into<Arch>>(config: &C, seed: u64) -> Result<Self, ModelError> {
        Self::random_on(config, seed, Backend::Fast)
    }

    /// [`ResNet::random`] on the given kernel set (the same weights for the same seed).
    pub fn random_on<C: Clone + Into<Arch>>(
        config: &C,
        seed: u64,
        backend: Backend,
    ) -> Result<Self, ModelError> {
        Self::random_with(config, seed, backend, Precision::F32)
    }

    /// [`ResNet::random_on`] with the convolutions in `precision` (the same weights for the
    /// same seed; see [`ResNet::load_with`]).
    pub fn random_with<C: Clone + Into<Arch>>(
        config: &C,
        seed: u64,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let config: Arch = config.clone().into();
        let weights = crate::random_plan_weights(&config.plan()?, seed)?;
        Self::load_with(&weights, &config, backend, precision)
    }

    /// The same network on `threads` worker threads (1: the calling thread only). The threads
    /// start with the first run, which reports a failure to start them as
    /// [`ModelError::Config`]; a `threads` of 0 is that error here.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        self.net = self.net.with_threads(threads)?;
        Ok(self)
    }

    /// The same network dispatching to another instruction set (see [`Cpu::all_levels`]).
    pub fn with_cpu(mut self, cpu: Cpu) -> Result<Self, ModelError> {
        self.net = self.net.with_cpu(cpu)?;
        Ok(self)
    }

    /// Worker threads used by a forward pass.
    pub fn threads(&self) -> usize {
        self.net.threads()
    }

    /// The CPU features the fast kernels dispatch to.
    pub fn cpu(&self) -> Cpu {
        self.net.cpu()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.net.backend()
    }

    /// The convolutions' arithmetic.
    pub fn precision(&self) -> Precision {
        self.net.precision()
    }

    /// The architecture: [`Arch::ResNet`] or [`Arch::Cifar`] with its configuration. It
    /// compares equal to the [`ResNetConfig`] or [`crate::CifarConfig`] it holds, and
    /// [`Arch::resnet`] / [`Arch::cifar`] give that configuration.
    pub fn config(&self) -> &Arch {
        &self.config
    }

    /// The plan the network runs.
    pub fn plan(&self) -> &Plan {
        self.net.plan()
    }

    /// The bound plan, to run with an observer of one's own.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Every convolution in execution order, with the algorithm the fast path chose for it
    /// (`None` on the naive backend).
    pub fn conv_algorithms(&self) -> Option<Vec<(String, resnet_kernels::fast::ConvAlgo)>> {
        self.net.conv_algorithms()
    }

    /// Run once on `x`, timing every step (each conv with its algorithm, the pools, the
    /// classifier): the per-layer table of `cargo xtask bench`.
    pub fn profile(&self, x: &Tensor) -> Result<Vec<crate::LayerTime>, ModelError> {
        self.check_input(x.shape().dims())?;
        self.net.profile(x)
    }

    fn check_input(&self, d: &[usize]) -> Result<(), ModelError> {
        let bad = |reason: String| {
            Err(ModelError::Input {
                found: d.to_vec(),
                reason,
            })
        };
        let &[_, c, h, w] = d else {
            return bad("expected a rank-4 [N, C, H, W] tensor".into());
        };
        if c != self.config.in_channels() {
            return bad(format!("expected {} channels", self.config.in_channels()));
        }
        if h == 0 || w == 0 {
            return bad("spatial size must be at least 1x1".into());
        }
        Ok(())
    }

    /// Run every stage and keep each output (NCHW).
    pub fn forward_stages(&self, x: &Tensor) -> Result<StageOutputs, ModelError> {
        self.check_input(x.shape().dims())?;
        let mut outs = self.net.outputs(x)?.into_iter().map(|(_, t)| t);
        let missing = || ModelError::Config("the plan lacks an output".into());
        let stem = outs.next().ok_or_else(missing)?;
        let mut layers: Vec<Tensor> = outs.collect();
        let logits = layers.pop().ok_or_else(missing)?;
        let pool = layers.pop().ok_or_else(missing)?;
        Ok(StageOutputs {
            stem,
            layers,
            pool,
            logits,
        })
    }

    /// The pooled embedding `[N, feature_dim]` (the classifier's input; the classifier is not
    /// run).
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.forward_features_view(x.view())
    }

    /// Logits `[N, num_classes]` of a normalised `[N, C, H, W]` batch (either layout).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.forward_view(x.view())
    }

    /// [`ResNet::forward`] on borrowed input, read in place (no copy into a [`Tensor`] first).
    pub fn forward_view(&self, x: TensorView<'_>) -> Result<Tensor, ModelError> {
        self.check_input(x.shape().dims())?;
        self.net.output_view(x, "logits")
    }

    /// [`ResNet::forward_features`] on borrowed input, read in place.
    pub fn forward_features_view(&self, x: TensorView<'_>) -> Result<Tensor, ModelError> {
        self.check_input(x.shape().dims())?;
        self.net.output_view(x, "pool")
    }
}

/// The `k` most probable classes of each row of a `[N, classes]` logits tensor, as
/// `(class index, softmax probability)` in decreasing order.
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>, ModelError> {
    let d = logits.shape().dims();
    if d.len() != 2 {
        return Err(ModelError::Input {
            found: d.to_vec(),
            reason: "top_k expects [N, classes] logits".into(),
        });
    }
    let classes = d[1];
    let mut probs = vec![0.0; logits.len()];
    resnet_kernels::naive::softmax(classes, logits.as_slice(), &mut probs)?;
    Ok(probs
        .chunks(classes.max(1))
        .take(d[0])
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx.into_iter().take(k).map(|i| (i, row[i])).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Step;

    /// The borders of the outputs kept in bf16, by layer name (`None`: f32).
    fn storage(net: &ResNet) -> Vec<(String, Option<[usize; 2]>)> {
        net.plan()
            .steps()
            .iter()
            .zip(net.net.storage())
            .filter(|(s, _)| matches!(s, Step::Conv(_)))
            .map(|(s, k)| (s.name().to_string(), *k))
            .collect()
    }

    #[test]
    fn bf16_maps_between_convolutions_only() {
        if !Precision::Bf16.is_available() {
            eprintln!("\n!!!!!!!! SKIPPED: no AVX512-BF16: bf16 storage not checked !!!!!!!!\n");
            return;
        }
        // The border each layer's output is kept with, in a bf16 net of architecture `arch`.
        let kept = |arch: &str| {
            let cfg = ResNetConfig::by_name(arch, 10).unwrap();
            let kept =
                storage(&ResNet::random_with(&cfg, 1, Backend::Fast, Precision::Bf16).unwrap());
            move |name: &str| kept.iter().find(|(n, _)| n == name).unwrap().1
        };
        let at = kept("resnet18");
        // The stem feeds max-pooling (which pools a map into f32), a stage's last block a
        // named output (widened when read) and the next stage; the last, average pooling.
        assert_eq!(at("conv1"), Some([0, 0]));
        assert_eq!(at("layer1.1.conv2"), Some([1, 1]));
        assert_eq!(at("layer4.1.conv2"), None);
        // Inside a block, and a block read only by the next one (input and residual): maps
        // with the 3x3 readers' border.
        assert_eq!(at("layer1.0.conv1"), Some([1, 1]));
        assert_eq!(at("layer1.0.conv2"), Some([1, 1]));
        assert_eq!(at("layer2.0.downsample"), Some([0, 0]));
        let at = kept("resnet50");
        assert_eq!(at("layer1.0.conv1"), Some([1, 1]));
        assert_eq!(at("layer1.0.conv2"), Some([0, 0]));
        assert_eq!(at("layer1.0.conv3"), Some([0, 0]));
        // A stage's output (read by the next stage and a named output), but not the last,
        // which average pooling reads.
        assert_eq!(at("layer1.2.conv3"), Some([0, 0]));
        assert_eq!(at("layer4.2.conv3"), None);
        // f32 networks keep f32.
        let cfg = ResNetConfig::by_name("resnet50", 10).unwrap();
        let net = ResNet::random(&cfg, 1).unwrap();
        assert!(storage(&net).iter().all(|(_, k)| k.is_none()));
    }
}
