//! Residual image enhancement: EDSR super-resolution.
//!
//! Pure residual blocks (`conv → ReLU → conv`, scaled by `res_scale`, added to the input; no
//! batch-norm, every conv with a bias), a long skip around the whole body, an upsampler of
//! 3x3 convs and PixelShuffles, and the fixed 1x1 MeanShift convs at both ends. Key names are
//! the EDSR reference code's: `sub_mean`, `head.0`, `body.I.body.{0,2}`, `body.N`,
//! `tail.0.{0,2,..}` (upsampler convs), `tail.1`, `add_mean`.
//!
//! The network is a plan ([`edsr_plan`]) bound to weights like every other: on the fast kernels
//! `res_scale` is folded into the second conv of each block and the residual add into its
//! output step; 3x3 convs of up to 256x256 channels use Winograd. Large images are processed
//! in tiles with an overlap of the network's receptive field, so memory stays bounded and the
//! result equals the untiled one.
//!
//! ```no_run
//! use resnet_models::Edsr;
//! use resnet_tensor::Tensor;
//!
//! let model = Edsr::from_file("edsr_baseline_x2.safetensors")?;
//! let lr = Tensor::zeros(&[1, 3, 270, 480])?;        // RGB in 0..255, NCHW
//! let sr = model.forward_tiled(&lr, 192)?;            // [1, 3, 540, 960]
//! # Ok::<(), resnet_models::ModelError>(())
//! ```

use crate::network::Network;
use crate::plan::{ConvSpec, Plan, PlanBuilder};
use crate::{Backend, EdsrConfig, ModelError, Precision};
use resnet_kernels::Cpu;
use resnet_tensor::{Layout, Tensor};
use resnet_weights::WeightSource;

/// The plan of an EDSR network: `sub_mean`, `head.0`, the residual blocks
/// (`body.I.body.{0,2}`), `body.N` with the long skip from the head, the upsampler
/// (`tail.0.{0,2,..}` and PixelShuffles), `tail.1`, `add_mean`; output `output`.
pub fn edsr_plan(config: &EdsrConfig) -> Result<Plan, ModelError> {
    config.validate()?;
    let (c, f) = (config.channels, config.n_feats);
    let conv = |name: &str, cin: usize, cout: usize, k: usize| {
        ConvSpec::new(name, name, cin, cout, k).with_bias()
    };
    let (mut b, x) = PlanBuilder::new(c);
    let m = b.conv(conv("sub_mean", c, c, 1), x, None, false);
    b.free(x);
    // The head's output is kept for the long skip.
    let head = b.conv(conv("head.0", c, f, 3), m, None, false);
    b.free(m);
    let mut cur = head;
    for i in 0..config.n_resblocks {
        let next = residual_block(&mut b, &format!("body.{i}.body"), cur, f, config.res_scale);
        if cur != head {
            b.free(cur);
        }
        cur = next;
    }
    let name = format!("body.{}", config.n_resblocks);
    let body = b.conv(conv(&name, f, f, 3), cur, Some(head), false);
    if cur != head {
        b.free(cur);
    }
    b.free(head);
    cur = body;
    for (i, r) in config.upsample_factors()?.into_iter().enumerate() {
        let u = b.conv(
            conv(&format!("tail.0.{}", 2 * i), f, r * r * f, 3),
            cur,
            None,
            false,
        );
        b.free(cur);
        cur = b.pixel_shuffle(u, r);
        b.free(u);
    }
    let t = b.conv(conv("tail.1", f, c, 3), cur, None, false);
    b.free(cur);
    let y = b.conv(conv("add_mean", c, c, 1), t, None, false);
    b.free(t);
    b.output("output", y);
    Ok(b.finish())
}

/// EDSR's residual block reading `x` (which stays live): `x + res_scale * conv2(relu(conv1(x)))`,
/// keys `{prefix}.0` and `{prefix}.2`, no batch-norm, shape-preserving.
fn residual_block(
    b: &mut PlanBuilder,
    prefix: &str,
    x: crate::plan::Slot,
    feats: usize,
    res_scale: f32,
) -> crate::plan::Slot {
    let conv = |j: usize| {
        let name = format!("{prefix}.{j}");
        ConvSpec::new(&name, &name, feats, feats, 3).with_bias()
    };
    let t = b.conv(conv(0), x, None, true);
    let y = b.conv(conv(2).with_scale(res_scale), t, Some(x), false);
    b.free(t);
    y
}

/// The plan of one EDSR residual block on its own (keys `body.0` and `body.2`, as in the
/// reference code's `ResBlock`), output `output`.
pub fn edsr_block_plan(feats: usize, res_scale: f32) -> Result<Plan, ModelError> {
    if feats == 0 || !res_scale.is_finite() {
        return Err(ModelError::Config(
            "a block needs at least one feature and a finite res_scale".into(),
        ));
    }
    let (mut b, x) = PlanBuilder::new(feats);
    let y = residual_block(&mut b, "body", x, feats, res_scale);
    b.free(x);
    b.output("output", y);
    Ok(b.finish())
}

/// An EDSR super-resolution network ready for inference (`Send + Sync`).
#[derive(Debug, Clone)]
pub struct Edsr {
    config: EdsrConfig,
    net: Network,
}

fn meta<T: std::str::FromStr>(src: &dyn WeightSource, key: &str) -> Result<Option<T>, ModelError> {
    match src.metadata_value(key) {
        None => Ok(None),
        Some(v) => {
            v.trim().parse().map(Some).map_err(|_| {
                ModelError::Infer(format!("metadata {key}={v:?} is not a valid value"))
            })
        }
    }
}

impl Edsr {
    /// Infer the configuration from the keys and shapes (blocks, features, scale, channels) and
    /// the metadata (`res_scale`, `rgb_range`, `rgb_mean`; when absent, the reference code's
    /// values: `res_scale` 0.1 for the paper's EDSR of 32 blocks of 256 features, else 1, as
    /// EDSR-baseline).
    pub fn infer_config(src: &dyn WeightSource) -> Result<EdsrConfig, ModelError> {
        let shape = |n: &str| {
            src.shape_of(n).ok_or_else(|| {
                ModelError::Infer(format!("no tensor {n:?} (is this an EDSR network?)"))
            })
        };
        let head = shape("head.0.weight")?;
        if head.len() != 4 {
            return Err(ModelError::Infer(format!(
                "head.0.weight has shape {head:?}"
            )));
        }
        let (n_feats, channels) = (head[0], head[1]);
        let mut n_resblocks = 0;
        while src.contains(&format!("body.{n_resblocks}.body.0.weight")) {
            n_resblocks += 1;
        }
        let up0 = shape("tail.1.weight").and_then(|_| {
            if src.contains("tail.0.0.weight") {
                shape("tail.0.0.weight").map(Some)
            } else {
                Ok(None)
            }
        })?;
        let scale = match up0 {
            None => 1,
            Some(s) if s[0] == 9 * n_feats => 3,
            Some(s) if s[0] == 4 * n_feats => {
                let mut k = 0;
                while src.contains(&format!("tail.0.{}.weight", 2 * k)) {
                    k += 1;
                }
                1 << k
            }
            Some(s) => {
                return Err(ModelError::Infer(format!(
                    "tail.0.0.weight has {} outputs, neither 4 nor 9 times {n_feats} features",
                    s[0]
                )));
            }
        };
        let mut cfg = EdsrConfig {
            n_resblocks,
            n_feats,
            scale,
            channels,
            ..EdsrConfig::baseline(scale)
        };
        if let Some(s) = meta::<usize>(src, "scale")?
            && s != scale
        {
            return Err(ModelError::Infer(format!(
                "metadata says scale {s}, the upsampler {scale}"
            )));
        }
        // Without metadata (EDSR's reference `.pt` files carry none), the residual scaling of
        // the reference configurations: 0.1 for the paper's EDSR (32 blocks of 256 features),
        // 1 for EDSR-baseline and anything else.
        if n_resblocks == 32 && n_feats == 256 {
            cfg.res_scale = 0.1;
        }
        if let Some(v) = meta(src, "res_scale")? {
            cfg.res_scale = v;
        }
        if let Some(v) = meta(src, "rgb_range")? {
            cfg.rgb_range = v;
        }
        if let Some(v) = src.metadata_value("rgb_mean") {
            let m: Vec<f32> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            cfg.rgb_mean = m.try_into().map_err(|_| {
                ModelError::Infer(format!("metadata rgb_mean={v:?} is not three numbers"))
            })?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Build from the tensors of `src` (EDSR reference-code names) on the fast kernels.
    pub fn load(src: &dyn WeightSource, config: &EdsrConfig) -> Result<Self, ModelError> {
        Self::load_on(src, config, Backend::Fast)
    }

    /// [`Edsr::load`] on the given kernel set.
    pub fn load_on(
        src: &dyn WeightSource,
        config: &EdsrConfig,
        backend: Backend,
    ) -> Result<Self, ModelError> {
        Self::load_with(src, config, backend, Precision::F32)
    }

    /// [`Edsr::load_on`] with the convolutions in `precision` (see [`Precision`]: bf16 needs
    /// AVX512-BF16 and the fast kernels, else [`ModelError::Unsupported`]).
    pub fn load_with(
        src: &dyn WeightSource,
        config: &EdsrConfig,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            config: config.clone(),
            net: Network::load_with(edsr_plan(config)?, src, backend, precision)?,
        })
    }

    /// A network of `config` with PyTorch's default initialisation, reproducible from `seed`.
    pub fn random(config: &EdsrConfig, seed: u64) -> Result<Self, ModelError> {
        Self::random_with(config, seed, Precision::F32)
    }

    /// [`Edsr::random`] with the convolutions in `precision` (the same weights for the same
    /// seed).
    pub fn random_with(
        config: &EdsrConfig,
        seed: u64,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let weights = crate::random_edsr_tensor_map(config, seed)?;
        Self::load_with(&weights, config, Backend::Fast, precision)
    }

    /// Open a file, infer the configuration, and load it strictly.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ModelError> {
        Self::from_file_on(path, Backend::Fast)
    }

    /// [`Edsr::from_file`] on the given kernel set.
    pub fn from_file_on(
        path: impl AsRef<std::path::Path>,
        backend: Backend,
    ) -> Result<Self, ModelError> {
        Self::from_file_with(path, backend, Precision::F32)
    }

    /// [`Edsr::from_file`] on the given kernel set and precision.
    pub fn from_file_with(
        path: impl AsRef<std::path::Path>,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        crate::network::load_file_strict(
            path.as_ref(),
            |f| Self::infer_config(f),
            |src, cfg| Self::load_with(src, cfg, backend, precision),
        )
    }

    /// The same network on `threads` worker threads (1: the calling thread only). The threads
    /// start with the first run, which reports a failure to start them as
    /// [`ModelError::Config`]; a `threads` of 0 is that error here.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        self.net = self.net.with_threads(threads)?;
        Ok(self)
    }

    /// Worker threads used by a forward pass.
    pub fn threads(&self) -> usize {
        self.net.threads()
    }

    /// The convolutions' arithmetic.
    pub fn precision(&self) -> Precision {
        self.net.precision()
    }

    /// The CPU features the fast kernels dispatch to.
    pub fn cpu(&self) -> Cpu {
        self.net.cpu()
    }

    /// The configuration.
    pub fn config(&self) -> &EdsrConfig {
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

    /// Multiply-accumulates of one forward on an `h x w` input (direct-convolution count;
    /// 0 for an input too small for the network).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let plan = self.net.plan();
        plan.trace([1, self.config.channels, h, w])
            .map(|t| {
                plan.steps()
                    .iter()
                    .zip(t)
                    .map(|(s, (i, _))| s.macs(i))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Run once on `x`, timing every step (see [`Network::profile`]).
    pub fn profile(&self, x: &Tensor) -> Result<Vec<crate::LayerTime>, ModelError> {
        self.check(x)?;
        self.net.profile(x)
    }

    /// How far (in input pixels) an output pixel's receptive field reaches: at most one per
    /// 3x3 conv of the plan, rounded up to an even number.
    pub fn halo(&self) -> usize {
        let convs = self
            .net
            .plan()
            .convs()
            .filter(|c| c.conv.kernel == 3)
            .count();
        convs.next_multiple_of(2)
    }

    /// Super-resolve a batch `[N, C, H, W]` (values in `0..rgb_range`) in one piece: `[N, C,
    /// H*scale, W*scale]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.check(x)?;
        self.net.output(x, "output")
    }

    /// Like [`Edsr::forward`], processing `tile x tile` input regions (plus an overlap of
    /// `overlap` pixels on each side, default [`Edsr::halo`]) one at a time: memory is bounded
    /// by the tile. With the default overlap (or more) the result is the untiled one up to
    /// float rounding: the 64-channel convs run Winograd F(4x4,3x3), whose transforms mix all
    /// 6x6 inputs of a tile into each of its outputs, so pixels beyond an output's receptive
    /// field (the crop's border, or the image's neighbours) enter its rounding, never its
    /// value. Measured: at most 3e-6 of the output's largest value (the tests allow 2e-5),
    /// far below one step of an 8-bit image. A smaller overlap is faster but changes pixels
    /// near tile borders. `progress` is called after each tile with `(done, total)`.
    pub fn forward_tiled_with_progress(
        &self,
        x: &Tensor,
        tile: usize,
        overlap: Option<usize>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Tensor, ModelError> {
        let [n, c, h, w] = self.check(x)?;
        if tile == 0 {
            return Err(ModelError::Config("tile size must be at least 1".into()));
        }
        let tile = tile.next_multiple_of(2);
        // Even offsets keep Winograd's 2x2 grid (and F(4x4)'s, half the time) aligned with the
        // untiled one: fewer values round differently.
        let halo = overlap.unwrap_or_else(|| self.halo()).next_multiple_of(2);
        let s = self.config.scale;
        let x = x.to_layout(Layout::Nchw)?;
        let mut out = Tensor::try_zeros_with_layout(&[n, c, h * s, w * s], Layout::Nchw)?;
        let (ty, tx) = (h.div_ceil(tile), w.div_ceil(tile));
        let total = n * ty * tx;
        let mut done = 0;
        for ni in 0..n {
            let img = x.image(ni)?;
            for by in 0..ty {
                for bx in 0..tx {
                    let (y0, x0) = (by * tile, bx * tile);
                    let (y1, x1) = ((y0 + tile).min(h), (x0 + tile).min(w));
                    // The tile grown by the halo, clamped to the image (even offsets).
                    let (ey0, ex0) = (y0.saturating_sub(halo), x0.saturating_sub(halo));
                    let (ey1, ex1) = ((y1 + halo).min(h), (x1 + halo).min(w));
                    let (eh, ew) = (ey1 - ey0, ex1 - ex0);
                    let mut crop = vec![0.0; eh * ew * c];
                    let src = img.as_slice();
                    for yy in 0..eh {
                        for xx in 0..ew {
                            for ci in 0..c {
                                crop[(yy * ew + xx) * c + ci] =
                                    src[(ci * h + ey0 + yy) * w + ex0 + xx];
                            }
                        }
                    }
                    let crop =
                        Tensor::from_slice_with_layout(&[1, c, eh, ew], Layout::Nhwc, &crop)?;
                    let y = self.net.output(&crop, "output")?;
                    let y = y.as_slice();
                    // Keep the centre: output rows (y0..y1)*s of the crop's (ey0..)*s.
                    let dst = out.as_mut_slice();
                    let (oh, ow) = (h * s, w * s);
                    for yy in (y0 * s)..(y1 * s) {
                        for xx in (x0 * s)..(x1 * s) {
                            let (cy, cx) = (yy - ey0 * s, xx - ex0 * s);
                            for ci in 0..c {
                                dst[((ni * c + ci) * oh + yy) * ow + xx] =
                                    y[(ci * eh * s + cy) * ew * s + cx];
                            }
                        }
                    }
                    done += 1;
                    progress(done, total);
                }
            }
        }
        Ok(out)
    }

    /// [`Edsr::forward_tiled_with_progress`] with the default overlap and no progress reports.
    pub fn forward_tiled(&self, x: &Tensor, tile: usize) -> Result<Tensor, ModelError> {
        self.forward_tiled_with_progress(x, tile, None, |_, _| {})
    }

    fn check(&self, x: &Tensor) -> Result<[usize; 4], ModelError> {
        let d = x.shape().dims();
        match x.shape().dims4() {
            Some([n, c, h, w]) if c == self.config.channels && h > 0 && w > 0 => Ok([n, c, h, w]),
            _ => Err(ModelError::Input {
                found: d.to_vec(),
                reason: format!(
                    "expected [N, {}, H, W] with H, W at least 1",
                    self.config.channels
                ),
            }),
        }
    }
}
