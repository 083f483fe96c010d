//! The configurations networks are built from: [`ResNetConfig`] (with torchvision's named
//! ones) and [`EdsrConfig`].

use crate::ModelError;

/// The residual block a network is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34); expansion 1.
    Basic,
    /// 1x1 → 3x3 (grouped, strided) → 1x1 convs (ResNet-50 and deeper, ResNeXt, Wide); expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block relative to its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A torchvision-style residual network.
///
/// ```
/// use resnet_models::{BlockKind, ResNetConfig};
/// let c = ResNetConfig::new(BlockKind::Bottleneck, vec![3, 4, 6, 3])
///     .with_groups(32)
///     .with_width_per_group(4)
///     .with_num_classes(10);
/// assert_eq!(c, resnet_models::resnext50_32x4d(10));
/// assert_eq!(c.feature_dim(), 2048);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage; stage `i` has `64 * 2^i` planes and stride 2 (stride 1 for the first).
    pub layers: Vec<usize>,
    /// Groups of the 3x3 conv (ResNeXt's cardinality).
    pub groups: usize,
    /// Channels per group of the bottleneck's 3x3 conv at 64 planes (64 = ResNet, 128 = Wide).
    pub width_per_group: usize,
    /// Output classes of the classifier.
    pub num_classes: usize,
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Whether blocks add their shortcut; `false` gives the plain (shortcut-free) twin.
    pub shortcuts: bool,
    /// BatchNorm epsilon.
    pub bn_eps: f32,
}

impl ResNetConfig {
    /// A network of `block`s with `layers[i]` blocks in stage `i`; 1000 classes, RGB input,
    /// groups 1, width per group 64, shortcuts on.
    pub fn new(block: BlockKind, layers: Vec<usize>) -> Self {
        Self {
            block,
            layers,
            groups: 1,
            width_per_group: 64,
            num_classes: 1000,
            in_channels: 3,
            shortcuts: true,
            bn_eps: 1e-5,
        }
    }
    /// Groups of the 3x3 conv.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// Width per group.
    pub fn with_width_per_group(mut self, w: usize) -> Self {
        self.width_per_group = w;
        self
    }
    /// Number of classes.
    pub fn with_num_classes(mut self, n: usize) -> Self {
        self.num_classes = n;
        self
    }
    /// Number of input channels.
    pub fn with_in_channels(mut self, c: usize) -> Self {
        self.in_channels = c;
        self
    }
    /// The same network without shortcut connections (each block is `relu(F(z))`).
    pub fn plain(mut self) -> Self {
        self.shortcuts = false;
        self
    }

    /// Stem output channels.
    pub const STEM_CHANNELS: usize = 64;

    /// Planes of stage `i` (`64 * 2^i`).
    pub fn planes(&self, stage: usize) -> usize {
        64 << stage
    }

    /// Channels of the 3x3 conv of a bottleneck with `planes` planes.
    pub fn bottleneck_width(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
    }

    /// Length of the pooled embedding (input of the classifier).
    pub fn feature_dim(&self) -> usize {
        self.planes(self.layers.len().saturating_sub(1)) * self.block.expansion()
    }

    /// Check the configuration for sizes torchvision would refuse.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |s: String| Err(ModelError::Config(s));
        if self.layers.is_empty() || self.layers.contains(&0) {
            return err(format!(
                "every stage needs at least one block, got {:?}",
                self.layers
            ));
        }
        if self.layers.len() > 8 {
            return err(format!("{} stages is more than 8", self.layers.len()));
        }
        if self.in_channels == 0 {
            return err("in_channels must be at least 1".into());
        }
        if self.groups == 0 || self.width_per_group == 0 {
            return err("groups and width_per_group must be at least 1".into());
        }
        if self.block == BlockKind::Basic && (self.groups != 1 || self.width_per_group != 64) {
            return err("BasicBlock only supports groups=1 and width_per_group=64".into());
        }
        if self.block == BlockKind::Bottleneck && self.bottleneck_width(64) == 0 {
            return err("width_per_group too small: the bottleneck would have no channels".into());
        }
        if self.bn_eps.is_nan() || self.bn_eps < 0.0 {
            return err(format!("bn_eps must be non-negative, got {}", self.bn_eps));
        }
        Ok(())
    }

    /// A short name such as `resnet50`, `resnext50_32x4d`, `wide_resnet50_2`, or a description.
    pub fn name(&self) -> String {
        let depth = self.layers.iter().sum::<usize>()
            * match self.block {
                BlockKind::Basic => 2,
                BlockKind::Bottleneck => 3,
            }
            + 2;
        let base = if self.layers.len() == 4 {
            match (self.block, self.groups, self.width_per_group) {
                (_, 1, 64) => format!("resnet{depth}"),
                (BlockKind::Bottleneck, 1, w) if w % 64 == 0 => {
                    format!("wide_resnet{depth}_{}", w / 64)
                }
                (BlockKind::Bottleneck, g, w) => format!("resnext{depth}_{g}x{w}d"),
                _ => format!("resnet{depth}"),
            }
        } else {
            format!("resnet{depth}_{}stages", self.layers.len())
        };
        if self.shortcuts {
            base
        } else {
            format!("plain_{base}")
        }
    }
}

impl ResNetConfig {
    /// torchvision's configuration of a named architecture (`resnet18`, `resnet50`,
    /// `resnext50_32x4d`, `wide_resnet50_2`, …) with `num_classes` classes.
    ///
    /// ```
    /// let c = resnet_models::ResNetConfig::by_name("resnet34", 10).unwrap();
    /// assert_eq!(c, resnet_models::resnet34(10));
    /// assert!(resnet_models::ResNetConfig::by_name("vgg16", 10).is_none());
    /// ```
    pub fn by_name(name: &str, num_classes: usize) -> Option<Self> {
        let f: fn(usize) -> ResNetConfig = match name {
            "resnet18" => resnet18,
            "resnet34" => resnet34,
            "resnet50" => resnet50,
            "resnet101" => resnet101,
            "resnet152" => resnet152,
            "resnext50_32x4d" => resnext50_32x4d,
            "resnext101_32x8d" => resnext101_32x8d,
            "resnext101_64x4d" => resnext101_64x4d,
            "wide_resnet50_2" => wide_resnet50_2,
            "wide_resnet101_2" => wide_resnet101_2,
            _ => return None,
        };
        Some(f(num_classes))
    }

    /// The names [`ResNetConfig::by_name`] knows.
    pub const NAMES: [&'static str; 10] = [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    ];
}

macro_rules! ctor {
    ($(#[$doc:meta])* $name:ident, $block:ident, [$($l:expr),*], $g:expr, $w:expr) => {
        $(#[$doc])*
        pub fn $name(num_classes: usize) -> ResNetConfig {
            ResNetConfig::new(BlockKind::$block, vec![$($l),*])
                .with_groups($g)
                .with_width_per_group($w)
                .with_num_classes(num_classes)
        }
    };
}

ctor!(/// ResNet-18: BasicBlock, [2, 2, 2, 2].
    resnet18, Basic, [2, 2, 2, 2], 1, 64);
ctor!(/// ResNet-34: BasicBlock, [3, 4, 6, 3].
    resnet34, Basic, [3, 4, 6, 3], 1, 64);
ctor!(/// ResNet-50: Bottleneck, [3, 4, 6, 3].
    resnet50, Bottleneck, [3, 4, 6, 3], 1, 64);
ctor!(/// ResNet-101: Bottleneck, [3, 4, 23, 3].
    resnet101, Bottleneck, [3, 4, 23, 3], 1, 64);
ctor!(/// ResNet-152: Bottleneck, [3, 8, 36, 3].
    resnet152, Bottleneck, [3, 8, 36, 3], 1, 64);
ctor!(/// ResNeXt-50 32x4d.
    resnext50_32x4d, Bottleneck, [3, 4, 6, 3], 32, 4);
ctor!(/// ResNeXt-101 32x8d.
    resnext101_32x8d, Bottleneck, [3, 4, 23, 3], 32, 8);
ctor!(/// ResNeXt-101 64x4d.
    resnext101_64x4d, Bottleneck, [3, 4, 23, 3], 64, 4);
ctor!(/// Wide ResNet-50-2 (bottleneck width doubled).
    wide_resnet50_2, Bottleneck, [3, 4, 6, 3], 1, 128);
ctor!(/// Wide ResNet-101-2.
    wide_resnet101_2, Bottleneck, [3, 4, 23, 3], 1, 128);

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

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
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

/// The shortcut of a CIFAR network's blocks where the shape changes (He et al. 2016, 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarShortcut {
    /// Parameter-free: `x[:, :, ::2, ::2]`, then zero channels, half before and half after.
    A,
    /// A 1x1 conv (stride 2) + BN projection.
    B,
    /// No shortcut at all: the plain twin.
    None,
}

impl CifarShortcut {
    /// `A`, `B` or `none`, as the training recipes and file metadata write it.
    pub fn name(self) -> &'static str {
        match self {
            CifarShortcut::A => "A",
            CifarShortcut::B => "B",
            CifarShortcut::None => "none",
        }
    }

    /// The option [`CifarShortcut::name`] writes (`A`, `B`, `none`), in either case; `None`
    /// for anything else.
    ///
    /// ```
    /// use resnet_models::CifarShortcut;
    /// assert_eq!(CifarShortcut::from_name("a"), Some(CifarShortcut::A));
    /// assert_eq!(CifarShortcut::from_name("None"), Some(CifarShortcut::None));
    /// assert_eq!(CifarShortcut::from_name("C"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        [CifarShortcut::A, CifarShortcut::B, CifarShortcut::None]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// Configuration of one of He et al.'s CIFAR networks: depth `6n + 2`, widths 16/32/64 times
/// `width`.
#[derive(Debug, Clone, PartialEq)]
pub struct CifarConfig {
    /// Layers with weights: `6n + 2` (20, 32, 44, 56, 110 …).
    pub depth: usize,
    /// Width multiplier (1: He et al.'s 16/32/64 filters).
    pub width: usize,
    /// Image channels (3 for CIFAR, 1 for MNIST-like data).
    pub in_channels: usize,
    /// Classes.
    pub num_classes: usize,
    /// Shortcut option.
    pub shortcut: CifarShortcut,
    /// BatchNorm epsilon.
    pub bn_eps: f32,
}

impl CifarConfig {
    /// ResNet-`depth` for `num_classes` classes: 3 input channels, width 1, option A.
    pub fn new(depth: usize, num_classes: usize) -> Self {
        Self {
            depth,
            width: 1,
            in_channels: 3,
            num_classes,
            shortcut: CifarShortcut::A,
            bn_eps: 1e-5,
        }
    }

    /// With another shortcut option.
    pub fn with_shortcut(mut self, shortcut: CifarShortcut) -> Self {
        self.shortcut = shortcut;
        self
    }

    /// With another number of input channels.
    pub fn with_in_channels(mut self, c: usize) -> Self {
        self.in_channels = c;
        self
    }

    /// With a width multiplier.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    /// The plain twin (no shortcuts).
    pub fn plain(self) -> Self {
        self.with_shortcut(CifarShortcut::None)
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            return Err(ModelError::Config(format!(
                "a CIFAR network's depth is 6n + 2 with n >= 1, got {}",
                self.depth
            )));
        }
        if self.width == 0 || self.width > 64 || self.in_channels == 0 || self.num_classes == 0 {
            return Err(ModelError::Config(
                "width (1 to 64), input channels and classes must be at least 1".into(),
            ));
        }
        if self.bn_eps.is_nan() || self.bn_eps < 0.0 {
            return Err(ModelError::Config("bn_eps must be non-negative".into()));
        }
        Ok(())
    }

    /// Length of the pooled embedding (input of the classifier): `64 * width`.
    pub fn feature_dim(&self) -> usize {
        64 * self.width
    }

    /// The forms [`CifarConfig::from_name`] reads, for messages.
    pub const NAME_FORMS: &'static str = "cifar-resnetN (shortcut option A), cifar-resnetN-b \
        (option B), cifar-plainN (no shortcuts), N = 6n + 2 (20, 32, 44, 56, 110 …), each \
        optionally with -wK for K times the width";

    /// The configuration a name of [`CifarConfig::name`]'s form describes, with
    /// `num_classes` classes and 3 input channels: `cifar-resnetN` (option A; `-a` may be
    /// written), `cifar-resnetN-b` (option B), `cifar-plainN` (no shortcuts), each optionally
    /// followed by `-wK` (width multiplier K). `None` for any other name (a torchvision name
    /// such as `resnet18` included).
    ///
    /// Only the form is checked here: a depth that is not `6n + 2` (`cifar-resnet21`) parses,
    /// and [`CifarConfig::validate`] (or [`crate::cifar_plan`]) refuses it, saying why.
    ///
    /// ```
    /// use resnet_models::{CifarConfig, CifarShortcut};
    /// let c = CifarConfig::from_name("cifar-resnet32-b", 100).unwrap();
    /// assert_eq!((c.depth, c.shortcut, c.num_classes), (32, CifarShortcut::B, 100));
    /// assert_eq!(CifarConfig::from_name("cifar-plain20-w2", 10).unwrap(),
    ///            CifarConfig::new(20, 10).plain().with_width(2));
    /// for name in ["cifar-resnet20", "cifar-resnet32-b", "cifar-plain56", "cifar-resnet20-b-w4"] {
    ///     assert_eq!(CifarConfig::from_name(name, 10).unwrap().name(), name);
    /// }
    /// assert!(CifarConfig::from_name("cifar-plain20-b", 10).is_none());
    /// assert!(CifarConfig::from_name("resnet18", 10).is_none());
    /// assert!(CifarConfig::from_name("cifar-resnet21", 10).unwrap().validate().is_err());
    /// ```
    pub fn from_name(name: &str, num_classes: usize) -> Option<Self> {
        let number = |s: &str| -> Option<usize> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let rest = name.strip_prefix("cifar-")?;
        let (plain, rest) = match rest.strip_prefix("resnet") {
            Some(r) => (false, r),
            None => (true, rest.strip_prefix("plain")?),
        };
        let mut parts = rest.split('-');
        let depth = number(parts.next()?)?;
        let mut shortcut = if plain {
            CifarShortcut::None
        } else {
            CifarShortcut::A
        };
        let mut width = 1;
        let mut next = parts.next();
        if !plain && let Some(o @ ("a" | "b")) = next {
            shortcut = if o == "a" {
                CifarShortcut::A
            } else {
                CifarShortcut::B
            };
            next = parts.next();
        }
        if let Some(w) = next {
            width = number(w.strip_prefix('w')?)?;
            next = parts.next();
        }
        if next.is_some() {
            return None;
        }
        Some(
            CifarConfig::new(depth, num_classes)
                .with_shortcut(shortcut)
                .with_width(width),
        )
    }

    /// A name such as `cifar-resnet20`, `cifar-plain56` or `cifar-resnet32-b`.
    pub fn name(&self) -> String {
        let kind = match self.shortcut {
            CifarShortcut::None => "plain",
            _ => "resnet",
        };
        let option = match self.shortcut {
            CifarShortcut::B => "-b",
            _ => "",
        };
        let width = if self.width == 1 {
            String::new()
        } else {
            format!("-w{}", self.width)
        };
        format!("cifar-{kind}{}{option}{width}", self.depth)
    }
}

/// Which family a classification network belongs to, with its configuration: what
/// [`crate::ResNet`] runs and [`crate::infer_arch`] reads off a weights file.
///
/// ```
/// use resnet_models::{Arch, CifarConfig, resnet18};
/// let a = Arch::from(CifarConfig::new(20, 10).with_in_channels(1));
/// assert_eq!((a.name().as_str(), a.num_classes(), a.in_channels(), a.feature_dim()),
///            ("cifar-resnet20", 10, 1, 64));
/// assert_eq!(Arch::from(resnet18(7)), resnet18(7));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Arch {
    /// A torchvision-style ResNet, ResNeXt or Wide ResNet (7x7 stem, max-pool, stages of 64·2^i
    /// planes), or its plain twin.
    ResNet(ResNetConfig),
    /// One of He et al.'s CIFAR networks (3x3 stem of 16 filters, three stages, no max-pool),
    /// shortcut option A, B or none.
    Cifar(CifarConfig),
}

impl Arch {
    /// The configuration's name: `resnet50`, `plain_resnet18`, `cifar-resnet20`, `cifar-plain56` …
    pub fn name(&self) -> String {
        match self {
            Arch::ResNet(c) => c.name(),
            Arch::Cifar(c) => c.name(),
        }
    }

    /// Output classes of the classifier.
    pub fn num_classes(&self) -> usize {
        match self {
            Arch::ResNet(c) => c.num_classes,
            Arch::Cifar(c) => c.num_classes,
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            Arch::ResNet(c) => c.in_channels,
            Arch::Cifar(c) => c.in_channels,
        }
    }

    /// Length of the pooled embedding (input of the classifier).
    pub fn feature_dim(&self) -> usize {
        match self {
            Arch::ResNet(c) => c.feature_dim(),
            Arch::Cifar(c) => c.feature_dim(),
        }
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Arch::ResNet(c) => c.validate(),
            Arch::Cifar(c) => c.validate(),
        }
    }

    /// The plan of the network ([`crate::resnet_plan`] or [`crate::cifar_plan`]).
    pub fn plan(&self) -> Result<crate::Plan, ModelError> {
        match self {
            Arch::ResNet(c) => crate::resnet_plan(c),
            Arch::Cifar(c) => crate::cifar_plan(c),
        }
    }

    /// The torchvision-style configuration, if this is one.
    pub fn resnet(&self) -> Option<&ResNetConfig> {
        match self {
            Arch::ResNet(c) => Some(c),
            Arch::Cifar(_) => None,
        }
    }

    /// The CIFAR configuration, if this is one.
    pub fn cifar(&self) -> Option<&CifarConfig> {
        match self {
            Arch::Cifar(c) => Some(c),
            Arch::ResNet(_) => None,
        }
    }
}

impl From<ResNetConfig> for Arch {
    fn from(c: ResNetConfig) -> Self {
        Arch::ResNet(c)
    }
}

impl From<&ResNetConfig> for Arch {
    fn from(c: &ResNetConfig) -> Self {
        Arch::ResNet(c.clone())
    }
}

impl From<CifarConfig> for Arch {
    fn from(c: CifarConfig) -> Self {
        Arch::Cifar(c)
    }
}

impl From<&CifarConfig> for Arch {
    fn from(c: &CifarConfig) -> Self {
        Arch::Cifar(c.clone())
    }
}

impl PartialEq<ResNetConfig> for Arch {
    fn eq(&self, other: &ResNetConfig) -> bool {
        self.resnet() == Some(other)
    }
}

impl PartialEq<CifarConfig> for Arch {
    fn eq(&self, other: &CifarConfig) -> bool {
        self.cifar() == Some(other)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
