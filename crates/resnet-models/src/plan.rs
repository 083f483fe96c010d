//! A network written once, as data: a flat list of [`Step`]s over numbered buffer slots.
//!
//! A builder per family turns a config into a [`Plan`] (`ResNetConfig` in `resnet.rs`,
//! `EdsrConfig` in `edsr.rs`), using the shared machinery here ([`PlanBuilder`]: a slot
//! allocator, one call per kind of step). The plan names every parameter by the key a weights
//! file uses, so the same plan is bound to weights for inference on either kernel set
//! (`network.rs`), printed (`resnet inspect --plan`), observed step by step
//! ([`crate::Observer`]), and walked backwards for training.
//!
//! ```
//! use resnet_models::{resnet18, resnet_plan};
//!
//! let plan = resnet_plan(&resnet18(10))?;
//! // A block with a projection needs its input, the inner map, the projection and the output.
//! assert_eq!(plan.slots(), 4);
//! assert_eq!(plan.convs().count(), 20);
//! let text = plan.to_string();
//! assert!(text.contains("layer4.1.conv2"));
//! # Ok::<(), resnet_models::ModelError>(())
//! ```

use crate::ModelError;
use std::fmt;

/// A numbered activation buffer of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub usize);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A convolution step: `dst = act(scale * bn(conv(src)) + residual)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvStep {
    /// What the convolution computes and where its parameters are.
    pub conv: ConvSpec,
    /// Input slot.
    pub src: Slot,
    /// Output slot (never `src` or `residual`).
    pub dst: Slot,
    /// Slot added to the output before the activation: the shortcut.
    pub residual: Option<Slot>,
    /// Whether ReLU follows.
    pub relu: bool,
}

/// A fully connected step on pooled features: `dst = src W^T + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearStep {
    /// Name in profiles and plans.
    pub name: String,
    /// Key prefix: `{weight}.weight` `[out, in]` and `{weight}.bias` `[out]`.
    pub weight: String,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Input slot.
    pub src: Slot,
    /// Output slot.
    pub dst: Slot,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Step {
    /// Copy the network's input into `dst`, in the layout of the kernel set.
    Input {
        /// Destination slot.
        dst: Slot,
    },
    /// A convolution with its batch-norm, residual add and ReLU.
    Conv(ConvStep),
    /// Max pooling, square window.
    MaxPool {
        /// Input slot.
        src: Slot,
        /// Output slot.
        dst: Slot,
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding (padded positions never win).
        padding: usize,
    },
    /// Global average pooling to one value per channel: `[N, C, H, W]` → `[N, C]`.
    GlobalAvgPool {
        /// Input slot.
        src: Slot,
        /// Output slot.
        dst: Slot,
    },
    /// A classifier on pooled features.
    Linear(LinearStep),
    /// Depth-to-space: `[N, C*r*r, H, W]` → `[N, C, H*r, W*r]`.
    PixelShuffle {
        /// Input slot.
        src: Slot,
        /// Output slot.
        dst: Slot,
        /// Upscaling factor `r`.
        factor: usize,
    },
    /// He et al.'s parameter-free shortcut (option A): every `stride`-th pixel, then zero
    /// channels padded to `out_channels`, half before the input's and the rest after.
    SubsamplePad {
        /// Input slot.
        src: Slot,
        /// Output slot.
        dst: Slot,
        /// Subsampling stride.
        stride: usize,
        /// Output channels.
        out_channels: usize,
    },
    /// A named result (`stem`, `layer1`, `pool`, `logits`, `output` …) that observers can
    /// read; computes nothing.
    Output {
        /// Name of the result.
        name: String,
        /// The slot holding it.
        src: Slot,
    },
}

impl Step {
    /// The slot the step reads its main input from (`None` for [`Step::Input`]).
    pub fn src(&self) -> Option<Slot> {
        match self {
            Step::Input { .. } => None,
            Step::Conv(c) => Some(c.src),
            Step::Linear(l) => Some(l.src),
            Step::MaxPool { src, .. }
            | Step::GlobalAvgPool { src, .. }
            | Step::PixelShuffle { src, .. }
            | Step::SubsamplePad { src, .. }
            | Step::Output { src, .. } => Some(*src),
        }
    }

    /// The slot the step writes (`None` for [`Step::Output`]).
    pub fn dst(&self) -> Option<Slot> {
        match self {
            Step::Output { .. } => None,
            Step::Conv(c) => Some(c.dst),
            Step::Linear(l) => Some(l.dst),
            Step::Input { dst }
            | Step::MaxPool { dst, .. }
            | Step::GlobalAvgPool { dst, .. }
            | Step::PixelShuffle { dst, .. }
            | Step::SubsamplePad { dst, .. } => Some(*dst),
        }
    }

    /// A short name: the layer's for convolutions and classifiers, the kind for the rest.
    pub fn name(&self) -> &str {
        match self {
            Step::Input { .. } => "input",
            Step::Conv(c) => &c.conv.name,
            Step::Linear(l) => &l.name,
            Step::MaxPool { .. } => "maxpool",
            Step::GlobalAvgPool { .. } => "avgpool",
            Step::PixelShuffle { .. } => "pixel_shuffle",
            Step::SubsamplePad { .. } => "shortcut_a",
            Step::Output { name, .. } => name,
        }
    }

    /// The dims `[N, C, H, W]` this step writes, from the dims of its input (`[N, C, 1, 1]`
    /// for pooled features), or an error naming the step when the input does not fit.
    pub fn output_dims(&self, input: [usize; 4]) -> Result<[usize; 4], ModelError> {
        let [n, c, h, w] = input;
        let bad = |reason: String| ModelError::Input {
            found: input.to_vec(),
            reason: format!("{}: {reason}", self.name()),
        };
        let channels = |want: usize| {
            if c == want {
                Ok(())
            } else {
                Err(bad(format!("expected {want} channels")))
            }
        };
        match self {
            Step::Input { .. } | Step::Output { .. } => Ok(input),
            Step::Conv(ConvStep { conv, .. }) => {
                channels(conv.in_channels)?;
                let g =
                    resnet_kernels::ConvGeometry::new(input, conv.weight_shape(), conv.params())
                        .map_err(|e| bad(e.to_string()))?;
                Ok(g.output)
            }
            Step::MaxPool {
                kernel,
                stride,
                padding,
                ..
            } => {
                resnet_kernels::PoolGeometry::new(input, [*kernel; 2], [*stride; 2], [*padding; 2])
                    .map(|g| g.output)
                    .map_err(|e| bad(e.to_string()))
            }
            Step::GlobalAvgPool { .. } => {
                if h == 0 || w == 0 {
                    return Err(bad("spatial size must be at least 1x1".into()));
                }
                Ok([n, c, 1, 1])
            }
            Step::Linear(l) => {
                channels(l.in_features)?;
                Ok([n, l.out_features, 1, 1])
            }
            Step::SubsamplePad {
                stride,
                out_channels,
                ..
            } => {
                if *stride == 0 || *out_channels < c {
                    return Err(bad(format!(
                        "needs a stride of at least 1 and at least {c} output channels"
                    )));
                }
                Ok([n, *out_channels, h.div_ceil(*stride), w.div_ceil(*stride)])
            }
            Step::PixelShuffle { factor: r, .. } => {
                if *r == 0 || c % (r * r) != 0 {
                    return Err(bad(format!("channels must be a multiple of {}", r * r)));
                }
                Ok([n, c / (r * r), h * r, w * r])
            }
        }
    }

    /// Multiply-accumulates of this step on an input of `input` dims (direct-convolution
    /// count for convolutions; 0 for data movement).
    pub fn macs(&self, input: [usize; 4]) -> u64 {
        let Ok(out) = self.output_dims(input) else {
            return 0;
        };
        match self {
            Step::Conv(c) => {
                let [o, cg, k, _] = c.conv.weight_shape();
                (out[0] * out[2] * out[3]) as u64 * (o * cg * k * k) as u64
            }
            Step::Linear(l) => (input[0] * l.in_features * l.out_features) as u64,
            _ => 0,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Input { dst } => write!(f, "{dst} = input"),
            Step::Conv(ConvStep {
                conv: c,
                src,
                dst,
                residual,
                relu,
            }) => {
                write!(
                    f,
                    "{dst} = conv{k}x{k}({src}, {} -> {}",
                    c.in_channels,
                    c.out_channels,
                    k = c.kernel
                )?;
                if c.stride != 1 {
                    write!(f, ", stride {}", c.stride)?;
                }
                if c.padding != 0 {
                    write!(f, ", pad {}", c.padding)?;
                }
                if c.groups != 1 {
                    write!(f, ", groups {}", c.groups)?;
                }
                write!(f, ")")?;
                if c.bn.is_some() {
                    write!(f, " bn")?;
                }
                if c.scale != 1.0 {
                    write!(f, " *{}", c.scale)?;
                }
                if let Some(r) = residual {
                    write!(f, " +{r}")?;
                }
                if *relu {
                    write!(f, " relu")?;
                }
                write!(f, "  [{}]", c.name)
            }
            Step::MaxPool {
                src,
                dst,
                kernel,
                stride,
                padding,
            } => write!(
                f,
                "{dst} = maxpool{kernel}x{kernel}({src}, stride {stride}, pad {padding})"
            ),
            Step::GlobalAvgPool { src, dst } => write!(f, "{dst} = avgpool({src})"),
            Step::Linear(l) => write!(
                f,
                "{} = linear({}, {} -> {})  [{}]",
                l.dst, l.src, l.in_features, l.out_features, l.name
            ),
            Step::PixelShuffle { src, dst, factor } => {
                write!(f, "{dst} = pixel_shuffle({src}, {factor})")
            }
            Step::SubsamplePad {
                src,
                dst,
                stride,
                out_channels,
            } => write!(
                f,
                "{dst} = shortcut_a({src}, stride {stride}, pad to {out_channels} channels)"
            ),
            Step::Output { name, src } => write!(f, "output {name} = {src}"),
        }
    }
}

/// The dims `(input, output)` of one step on one input size, each `[N, C, H, W]`.
pub type StepDims = ([usize; 4], [usize; 4]);

/// A network as a flat list of steps over `slots` buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    steps: Vec<Step>,
    slots: usize,
    in_channels: usize,
    winograd_tile: usize,
}

impl Plan {
    /// The steps in execution order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// How many activation buffers the steps use.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Channels of the network's input.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// The largest Winograd output tile the fast path may choose for this plan's 3x3
    /// convolutions: 4 or more allows F(4x4, 3x3), 2 or 3 F(2x2, 3x3) only, less none (see
    /// [`PlanBuilder::limit_winograd_tile`]).
    pub fn winograd_tile(&self) -> usize {
        self.winograd_tile
    }

    /// The convolution steps in execution order.
    pub fn convs(&self) -> impl Iterator<Item = &ConvStep> {
        self.steps.iter().filter_map(|s| match s {
            Step::Conv(c) => Some(c),
            _ => None,
        })
    }

    /// The names of the [`Step::Output`]s in order.
    pub fn outputs(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(|s| match s {
            Step::Output { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    /// For an input of `input` dims, each step's `(input, output)` dims, or the first step
    /// the input does not fit.
    pub fn trace(&self, input: [usize; 4]) -> Result<Vec<StepDims>, ModelError> {
        let mut dims = vec![[0; 4]; self.slots];
        self.steps
            .iter()
            .map(|step| {
                let i = step.src().map_or(input, |s| dims[s.0]);
                let o = step.output_dims(i)?;
                if let Some(d) = step.dst() {
                    dims[d.0] = o;
                }
                Ok((i, o))
            })
            .collect()
    }

    /// The plan with the dims each step produces on an input of `input` dims, one step a line
    /// (what `resnet inspect --plan` prints).
    pub fn describe(&self, input: [usize; 4]) -> Result<String, ModelError> {
        use fmt::Write;
        let mut s = String::new();
        for (step, (_, o)) in self.steps.iter().zip(self.trace(input)?) {
            let line = step.to_string();
            let _ = writeln!(s, "{line:72} {o:?}");
        }
        Ok(s)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "{step}")?;
        }
        Ok(())
    }
}

/// The machinery the family builders share: a slot allocator (a step's output takes the
/// lowest slot not in use; the builder frees a slot when its value has no further reader) and
/// one call per kind of step.
#[derive(Debug)]
pub struct PlanBuilder {
    steps: Vec<Step>,
    live: Vec<bool>,
    in_channels: usize,
    winograd_tile: usize,
}

/// What a convolution computes, apart from where its data lives: see [`PlanBuilder::conv`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// Name in profiles and plans.
    pub name: String,
    /// Key prefix of the weights.
    pub weight: String,
    /// Key prefix of the following batch-norm, if any.
    pub bn: Option<String>,
    /// The batch-norm's epsilon (1e-5 unless set).
    pub bn_eps: f32,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: usize,
    /// Channel groups.
    pub groups: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
    /// Factor on the output before the residual add.
    pub scale: f32,
}

impl ConvSpec {
    /// The weight shape `[O, C/groups, K, K]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel,
            self.kernel,
        ]
    }

    /// The kernel-level hyper-parameters.
    pub fn params(&self) -> resnet_kernels::Conv2dParams {
        resnet_kernels::Conv2dParams::default()
            .with_stride(self.stride)
            .with_padding(self.padding)
            .with_groups(self.groups)
    }

    /// A `kernel x kernel` convolution named `name`, weights under `weight`, "same" padding
    /// (`kernel / 2`), stride 1, one group, no bias, no batch-norm, scale 1.
    pub fn new(name: &str, weight: &str, cin: usize, cout: usize, kernel: usize) -> Self {
        Self {
            name: name.to_string(),
            weight: weight.to_string(),
            bn: None,
            bn_eps: 1e-5,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            bias: false,
            scale: 1.0,
        }
    }

    /// Followed by the batch-norm under key prefix `bn`, with epsilon `eps`.
    pub fn with_bn(mut self, bn: &str, eps: f32) -> Self {
        self.bn = Some(bn.to_string());
        self.bn_eps = eps;
        self
    }

    /// With a stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// With explicit padding.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// With channel groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// With a bias.
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }

    /// Scale the output by `scale` before the residual add.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }
}

impl PlanBuilder {
    /// A plan for inputs of `in_channels` channels, and the slot holding the input.
    pub fn new(in_channels: usize) -> (Self, Slot) {
        let mut b = Self {
            steps: Vec::new(),
            live: Vec::new(),
            in_channels,
            winograd_tile: 4,
        };
        let dst = b.alloc();
        b.steps.push(Step::Input { dst });
        (b, dst)
    }

    /// The lowest slot not in use, now in use.
    fn alloc(&mut self) -> Slot {
        match self.live.iter().position(|l| !l) {
            Some(i) => {
                self.live[i] = true;
                Slot(i)
            }
            None => {
                self.live.push(true);
                Slot(self.live.len() - 1)
            }
        }
    }

    /// `slot`'s value has no further reader: its buffer may be reused.
    pub fn free(&mut self, slot: Slot) {
        debug_assert!(self.live[slot.0], "{slot} freed twice");
        self.live[slot.0] = false;
    }

    /// `act(scale * conv(src) + residual)` into a new slot.
    pub fn conv(&mut self, conv: ConvSpec, src: Slot, residual: Option<Slot>, relu: bool) -> Slot {
        let dst = self.alloc();
        self.steps.push(Step::Conv(ConvStep {
            conv,
            src,
            dst,
            residual,
            relu,
        }));
        dst
    }

    /// Max pooling of `src` into a new slot.
    pub fn max_pool(&mut self, src: Slot, kernel: usize, stride: usize, padding: usize) -> Slot {
        let dst = self.alloc();
        self.steps.push(Step::MaxPool {
            src,
            dst,
            kernel,
            stride,
            padding,
        });
        dst
    }

    /// Global average pooling of `src` into a new slot.
    pub fn global_avg_pool(&mut self, src: Slot) -> Slot {
        let dst = self.alloc();
        self.steps.push(Step::GlobalAvgPool { src, dst });
        dst
    }

    /// A classifier (`{weight}.weight`, `{weight}.bias`) on `src` into a new slot.
    pub fn linear(&mut self, name: &str, weight: &str, src: Slot, inf: usize, outf: usize) -> Slot {
        let dst = self.alloc();
        self.steps.push(Step::Linear(LinearStep {
            name: name.to_string(),
            weight: weight.to_string(),
            in_features: inf,
            out_features: outf,
            src,
            dst,
        }));
        dst
    }

    /// He et al.'s option-A shortcut of `src` into a new slot.
    pub fn subsample_pad(&mut self, src: Slot, stride: usize, out_channels: usize) -> Slot {
        let dst = self.alloc();
        self.steps.push(Step::SubsamplePad {
            src,
            dst,
            stride,
            out_channels,
        });
        dst
    }

    /// PixelShuffle of `src` by `factor` into a new slot.
    pub fn pixel_shuffle(&mut self, src: Slot, factor: usize) -> Slot {
        let dst = self.alloc();
        self.steps.push(Step::PixelShuffle { src, dst, factor });
        dst
    }

    /// The classification head on `features` (which it frees): global average pooling
    /// (output `pool`) and the classifier `fc` (output `logits`), as torchvision's ResNets
    /// and He et al.'s CIFAR nets end.
    pub fn classifier_head(&mut self, features: Slot, channels: usize, classes: usize) {
        let f = self.global_avg_pool(features);
        self.free(features);
        self.output("pool", f);
        let logits = self.linear("fc", "fc", f, channels, classes);
        self.free(f);
        self.output("logits", logits);
    }

    /// Name the value of `src` as a result observers can read.
    pub fn output(&mut self, name: &str, src: Slot) {
        self.steps.push(Step::Output {
            name: name.to_string(),
            src,
        });
    }

    /// Let the fast path compute 3x3 convolutions in Winograd tiles of at most `m x m`
    /// output pixels: 4 or more (the default) allows F(4x4, 3x3), 2 or 3 F(2x2, 3x3) only,
    /// less no Winograd at all. Winograd rounds an output with inputs of its tile that are
    /// outside its receptive field (terms that cancel exactly, not in rounding): F(2x2)'s
    /// sparse transforms never let an input change an output it does not feed, but F(4x4)'s
    /// input transform mixes a tile's fifth input row (and column) into all four of its
    /// output rows, so a change reaches up to 2 pixels further per convolution. A plan that
    /// is run on overlapping crops of an image and must give bitwise the uncropped result
    /// with a halo of one pixel per convolution asks for `m = 2` (EDSR's tiled forward does
    /// not: it accepts rounding-level differences at tile borders for F(4x4)'s speed).
    pub fn limit_winograd_tile(&mut self, m: usize) {
        self.winograd_tile = m;
    }

    /// The finished plan.
    pub fn finish(self) -> Plan {
        Plan {
            steps: self.steps,
            slots: self.live.len(),
            in_channels: self.in_channels,
            winograd_tile: self.winograd_tile,
        }
    }
}
