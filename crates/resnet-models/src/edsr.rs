//! Residual image enhancement: EDSR super-resolution.
//!
//! Pure residual blocks (`conv → ReLU → conv`, scaled by `res_scale`, added to the input; no
//! batch-norm, every conv with a bias), a long skip around the whole body, an upsampler of
//! 3x3 convs and PixelShuffles, and the fixed 1x1 MeanShift convs at both ends. Key names are
//! the EDSR reference code's: `sub_mean`, `head.0`, `body.I.body.{0,2}`, `body.N`,
//! `tail.0.{0,2,..}` (upsampler convs), `tail.1`, `add_mean`.
//!
//! Every conv runs on the fast path ([`FusedConv`]): `res_scale` is folded into the second conv
//! of each block and the residual add into its output step; 3x3 convs of up to 256x256 channels
//! use Winograd. Large images are processed in tiles with an overlap of the network's receptive
//! field, so memory stays bounded and the result equals the untiled one.
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

use crate::ModelError;
use crate::fast::{Exec, Workspace};
use resnet_kernels::Cpu;
use resnet_kernels::fast;
use resnet_layers::{Conv2d, Conv2dConfig, FusedConv};
use resnet_tensor::{Layout, Tensor};
use resnet_weights::{Strictness, Tracked, WeightFile, WeightSource};

/// Configuration of an EDSR network.
#[derive(Debug, Clone, PartialEq)]
pub struct EdsrConfig {
    /// Residual blocks in the body.
    pub n_resblocks: usize,
    /// Feature channels.
    pub n_feats: usize,
    /// Upscaling factor: 1, 3, or a power of two.
    pub scale: usize,
    /// Factor applied to each block's residual before the add.
    pub res_scale: f32,
    /// Range of pixel values (255: inputs and outputs in 0..255).
    pub rgb_range: f32,
    /// Mean colour subtracted at the head and added at the tail (scaled by `rgb_range`).
    pub rgb_mean: [f32; 3],
    /// Image channels.
    pub channels: usize,
}

impl EdsrConfig {
    /// EDSR-baseline: 16 blocks of 64 features, `res_scale` 1, DIV2K's mean colour.
    pub fn baseline(scale: usize) -> Self {
        Self {
            n_resblocks: 16,
            n_feats: 64,
            scale,
            res_scale: 1.0,
            rgb_range: 255.0,
            rgb_mean: [0.4488, 0.4371, 0.4040],
            channels: 3,
        }
    }

    /// The upsampler's PixelShuffle factors: `[2; k]` for `2^k`, `[3]` for 3, `[]` for 1.
    pub fn upsample_factors(&self) -> Result<Vec<usize>, ModelError> {
        match self.scale {
            1 => Ok(vec![]),
            3 => Ok(vec![3]),
            s if s.is_power_of_two() && s <= 16 => Ok(vec![2; s.trailing_zeros() as usize]),
            s => Err(ModelError::Config(format!(
                "EDSR scale must be 1, 3 or a power of two up to 16, got {s}"
            ))),
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        if self.n_feats == 0 || self.channels == 0 {
            return Err(ModelError::Config(
                "n_feats and channels must be at least 1".into(),
            ));
        }
        if !self.res_scale.is_finite() || !self.rgb_range.is_finite() {
            return Err(ModelError::Config(
                "res_scale and rgb_range must be finite".into(),
            ));
        }
        self.upsample_factors().map(|_| ())
    }
}

/// EDSR's residual block: `x + res_scale * conv2(relu(conv1(x)))`, no batch-norm, shape-preserving.
///
/// `res_scale` is folded into `conv2`'s weights and bias when the block is built, and the add
/// happens in `conv2`'s output step.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    conv1: FusedConv,
    conv2: FusedConv,
}

impl ResidualBlock {
    /// A block from its two 3x3 convs (with bias) and the residual scale.
    pub fn new(conv1: &Conv2d, conv2: &Conv2d, res_scale: f32) -> Result<Self, ModelError> {
        let c = conv1.config().in_channels;
        for cv in [conv1, conv2] {
            let cfg = cv.config();
            if cfg.in_channels != c || cfg.out_channels != c || cfg.params.stride != [1, 1] {
                return Err(ModelError::Config(format!(
                    "a residual block keeps its shape: both convs must map {c} to {c} channels, stride 1"
                )));
            }
        }
        let scaled = |t: &Tensor| {
            let mut t = t.clone();
            t.as_mut_slice().iter_mut().for_each(|v| *v *= res_scale);
            t
        };
        let conv2 = Conv2d::new(
            *conv2.config(),
            scaled(conv2.weight()),
            conv2.bias().map(scaled),
        )?;
        Ok(Self {
            conv1: FusedConv::new(conv1, None)?,
            conv2: FusedConv::new(&conv2, None)?,
        })
    }

    /// Run on an `[N, C, H, W]` tensor (either layout), giving NCHW.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let dims = x.shape().dims4().ok_or_else(|| ModelError::Input {
            found: x.shape().dims().to_vec(),
            reason: "expected [N, C, H, W]".into(),
        })?;
        let cpu = Cpu::detect();
        let x = x.to_layout(Layout::Nhwc)?;
        let mut t = vec![0.0; x.len()];
        let od = self
            .conv1
            .run(cpu, x.as_slice(), dims, None, true, &mut t, false)?;
        let mut y = vec![0.0; x.len()];
        self.conv2
            .run(cpu, &t, od, Some(x.as_slice()), false, &mut y, false)?;
        Ok(Tensor::from_slice_with_layout(&dims, Layout::Nhwc, &y)?.to_layout(Layout::Nchw)?)
    }
}

/// EDSR's MeanShift: a fixed 1x1 conv `y = (x + sign * rgb_range * mean) / std` per channel
/// (`sign` -1 subtracts the mean at the head, +1 adds it back at the tail).
pub fn mean_shift(
    rgb_range: f32,
    mean: [f32; 3],
    std: [f32; 3],
    sign: f32,
) -> Result<Conv2d, ModelError> {
    let mut w = vec![0.0; 9];
    let mut b = vec![0.0; 3];
    for c in 0..3 {
        w[c * 3 + c] = 1.0 / std[c];
        b[c] = sign * rgb_range * mean[c] / std[c];
    }
    Ok(Conv2d::new(
        Conv2dConfig::new(3, 3, 1).with_bias(true),
        Tensor::from_vec(&[3, 3, 1, 1], w)?,
        Some(Tensor::from_vec(&[3], b)?),
    )?)
}

/// An EDSR super-resolution network ready for inference (`Send + Sync`).
#[derive(Debug, Clone)]
pub struct Edsr {
    config: EdsrConfig,
    sub_mean: FusedConv,
    head: FusedConv,
    blocks: Vec<ResidualBlock>,
    body_end: FusedConv,
    up: Vec<(FusedConv, usize)>,
    tail: FusedConv,
    add_mean: FusedConv,
    cpu: Cpu,
    exec: Exec,
}

fn conv2d(
    src: &dyn WeightSource,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
) -> Result<Conv2d, ModelError> {
    let cfg = Conv2dConfig::new(cin, cout, k)
        .with_padding(k / 2)
        .with_bias(true);
    let w = src.tensor(&format!("{name}.weight"), &cfg.weight_shape())?;
    let b = src.tensor(&format!("{name}.bias"), &[cout])?;
    Ok(Conv2d::new(cfg, w, Some(b))?)
}

fn conv(
    src: &dyn WeightSource,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
) -> Result<FusedConv, ModelError> {
    Ok(FusedConv::new(&conv2d(src, name, cin, cout, k)?, None)?)
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
    /// the metadata (`res_scale`, `rgb_range`, `rgb_mean`; EDSR-baseline's values when absent).
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

    /// Build from the tensors of `src` (EDSR reference-code names).
    pub fn load(src: &dyn WeightSource, config: &EdsrConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let (c, f) = (config.channels, config.n_feats);
        let mut up = Vec::new();
        for (i, r) in config.upsample_factors()?.into_iter().enumerate() {
            up.push((conv(src, &format!("tail.0.{}", 2 * i), f, r * r * f, 3)?, r));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            sub_mean: conv(src, "sub_mean", c, c, 1)?,
            head: conv(src, "head.0", c, f, 3)?,
            blocks: (0..config.n_resblocks)
                .map(|i| {
                    ResidualBlock::new(
                        &conv2d(src, &format!("body.{i}.body.0"), f, f, 3)?,
                        &conv2d(src, &format!("body.{i}.body.2"), f, f, 3)?,
                        config.res_scale,
                    )
                })
                .collect::<Result<_, ModelError>>()?,
            body_end: conv(src, &format!("body.{}", config.n_resblocks), f, f, 3)?,
            up,
            tail: conv(src, "tail.1", f, c, 3)?,
            add_mean: conv(src, "add_mean", c, c, 1)?,
            config: config.clone(),
            cpu: Cpu::detect(),
            exec: Exec::new(threads)?,
        })
    }

    /// A network of `config` with PyTorch's default initialisation, reproducible from `seed`.
    pub fn random(config: &EdsrConfig, seed: u64) -> Result<Self, ModelError> {
        Self::load(&crate::random_edsr_tensor_map(config, seed)?, config)
    }

    /// Open a file, infer the configuration, and load it strictly.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ModelError> {
        let file = WeightFile::open(path)?;
        let cfg = Self::infer_config(&file)?;
        let tracked = Tracked::new(&file);
        let model = Self::load(&tracked, &cfg)?;
        tracked.finish(Strictness::Strict)?;
        Ok(model)
    }

    /// The same network on `threads` worker threads.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        self.exec = Exec::new(threads)?;
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &EdsrConfig {
        &self.config
    }

    /// Multiply-accumulates of one forward on an `h x w` input (direct-convolution count).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (c, f) = (self.config.channels as u64, self.config.n_feats as u64);
        let lr = (h * w) as u64;
        let mut m =
            lr * c * c + lr * 9 * c * f + lr * 9 * f * f * (2 * self.config.n_resblocks as u64 + 1);
        let mut px = lr;
        for (_, r) in &self.up {
            let rr = (*r * *r) as u64;
            m += px * 9 * f * f * rr;
            px *= rr;
        }
        m + px * 9 * f * c + px * c * c
    }

    /// How far (in input pixels) an output pixel's receptive field reaches: one per 3x3 conv,
    /// rounded up to an even number so tiles keep Winograd's 2x2 grid.
    pub fn halo(&self) -> usize {
        let convs = 1 + 2 * self.config.n_resblocks + 1 + self.up.len() + 1;
        convs.next_multiple_of(2)
    }

    /// Super-resolve a batch `[N, C, H, W]` (values in `0..rgb_range`) in one piece: `[N, C,
    /// H*scale, W*scale]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let [n, c, h, w] = self.check(x)?;
        let s = self.config.scale;
        let mut ws = self.exec.workspaces.take();
        let nhwc = match x.layout() {
            Layout::Nhwc => x.clone(),
            Layout::Nchw => x.to_layout(Layout::Nhwc)?,
        };
        let result = self
            .exec
            .install(|parallel| self.run(&nhwc, [n, c, h, w], &mut ws, parallel));
        self.exec.workspaces.give(ws);
        let out = result?;
        let t = Tensor::from_slice_with_layout(&[n, c, h * s, w * s], Layout::Nhwc, &out)?;
        Ok(t.to_layout(Layout::Nchw)?)
    }

    /// Like [`Edsr::forward`], processing `tile x tile` input regions (plus an overlap of
    /// `overlap` pixels on each side, default [`Edsr::halo`]) one at a time: memory is bounded
    /// by the tile. With the default overlap (or more) the result equals the untiled one bit for
    /// bit; a smaller overlap is faster but changes pixels near tile borders. `progress` is
    /// called after each tile with `(done, total)`.
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
        // Even offsets keep Winograd's 2x2 grid aligned with the untiled one.
        let halo = overlap.unwrap_or_else(|| self.halo()).next_multiple_of(2);
        let s = self.config.scale;
        let x = x.to_layout(Layout::Nchw)?;
        let mut out = Tensor::try_zeros_with_layout(&[n, c, h * s, w * s], Layout::Nchw)?;
        let (ty, tx) = (h.div_ceil(tile), w.div_ceil(tile));
        let total = n * ty * tx;
        let mut ws = self.exec.workspaces.take();
        let mut done = 0;
        let result = (|| {
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
                        let y = self.exec.install(|parallel| {
                            self.run(&crop, [1, c, eh, ew], &mut ws, parallel)
                        })?;
                        // Keep the centre: output rows (y0..y1)*s of the crop's (ey0..)*s.
                        let dst = out.as_mut_slice();
                        let (oh, ow) = (h * s, w * s);
                        for yy in (y0 * s)..(y1 * s) {
                            for xx in (x0 * s)..(x1 * s) {
                                let (cy, cx) = (yy - ey0 * s, xx - ex0 * s);
                                for ci in 0..c {
                                    dst[((ni * c + ci) * oh + yy) * ow + xx] =
                                        y[(cy * ew * s + cx) * c + ci];
                                }
                            }
                        }
                        done += 1;
                        progress(done, total);
                    }
                }
            }
            Ok::<_, ModelError>(())
        })();
        self.exec.workspaces.give(ws);
        result?;
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

    /// The whole network on NHWC data; returns the NHWC output (a buffer of `ws`, copied out).
    fn run(
        &self,
        x: &Tensor,
        dims: [usize; 4],
        ws: &mut Workspace,
        parallel: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let cpu = self.cpu;
        let bufs = &mut ws.bufs;
        let numel = |d: [usize; 4]| d.iter().product::<usize>();
        let slot = |v: &mut Vec<f32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        // conv from buffer src into buffer dst, optional residual buffer.
        let step = |bufs: &mut [Vec<f32>; 4],
                    conv: &FusedConv,
                    src: Option<usize>,
                    d: [usize; 4],
                    res: Option<usize>,
                    relu: bool,
                    dst: usize|
         -> Result<[usize; 4], ModelError> {
            let od = conv.geometry(d)?.output;
            let mut out = std::mem::take(&mut bufs[dst]);
            slot(&mut out, numel(od));
            let input: &[f32] = match src {
                Some(i) => &bufs[i][..numel(d)],
                None => x.as_slice(),
            };
            let r = conv.run(
                cpu,
                input,
                d,
                res.map(|r| &bufs[r][..numel(od)]),
                relu,
                &mut out[..numel(od)],
                parallel,
            );
            bufs[dst] = out;
            r?;
            Ok(od)
        };
        // sub_mean → 0, head → 1 (kept for the long skip).
        let d = step(bufs, &self.sub_mean, None, dims, None, false, 0)?;
        let hd = step(bufs, &self.head, Some(0), d, None, false, 1)?;
        // Blocks: cur ∈ {1 (first), 2, 3}; scratch 0.
        let mut cur = 1;
        for block in &self.blocks {
            step(bufs, &block.conv1, Some(cur), hd, None, true, 0)?;
            let dst = if cur == 2 { 3 } else { 2 };
            step(bufs, &block.conv2, Some(0), hd, Some(cur), false, dst)?;
            cur = dst;
        }
        // body.N plus the long skip from the head's output (buffer 1).
        let dst = if cur == 2 { 3 } else { 2 };
        let mut d = step(bufs, &self.body_end, Some(cur), hd, Some(1), false, dst)?;
        let mut cur = dst;
        // Upsampler: conv, then PixelShuffle.
        for (conv, r) in &self.up {
            let a = if cur == 0 { 1 } else { 0 };
            let ud = step(bufs, conv, Some(cur), d, None, false, a)?;
            let b = (0..4).find(|&i| i != a && i != cur).expect("four buffers");
            let mut out = std::mem::take(&mut bufs[b]);
            slot(&mut out, numel(ud));
            let r2 = fast::pixel_shuffle_nhwc(ud, *r, &bufs[a][..numel(ud)], &mut out[..numel(ud)]);
            bufs[b] = out;
            r2?;
            d = [ud[0], ud[1] / (r * r), ud[2] * r, ud[3] * r];
            cur = b;
        }
        let t = (0..4).find(|&i| i != cur).expect("four buffers");
        let td = step(bufs, &self.tail, Some(cur), d, None, false, t)?;
        let o = (0..4).find(|&i| i != t).expect("four buffers");
        let od = step(bufs, &self.add_mean, Some(t), td, None, false, o)?;
        Ok(bufs[o][..numel(od)].to_vec())
    }
}
