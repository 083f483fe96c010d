//! He et al.'s CIFAR networks (2016, section 4.2) as plans: a 3x3 stem of 16 filters, three
//! stages of `n` basic blocks with 16, 32 and 64 filters (times a width multiplier), the first
//! block of the second and third stage with stride 2, global pooling and a classifier; depth
//! `6n + 2`. The shortcut where the shape changes is option A (parameter-free: subsample, then
//! zero channels), option B (a 1x1 conv + BN projection), or absent: the plain twin.

use crate::plan::{ConvSpec, Plan, PlanBuilder, Slot};
use crate::{CifarConfig, CifarShortcut, ModelError};

/// The plan of a CIFAR network: torchvision-style keys (`conv1`, `bn1`, `layerS.B.conv{1,2}`,
/// `layerS.B.bn{1,2}`, `layerS.B.downsample.{0,1}` for option B, `fc`), outputs `stem`,
/// `layer1` … `layer3`, `pool`, `logits`.
///
/// ```
/// use resnet_models::{CifarConfig, CifarShortcut, cifar_plan};
/// let plan = cifar_plan(&CifarConfig::new(20, 10).with_shortcut(CifarShortcut::A))?;
/// assert_eq!(plan.convs().count(), 19); // 6n + 1 convs, fc is the 20th layer
/// let dims = plan.trace([1, 3, 32, 32])?;
/// assert_eq!(dims.last().unwrap().1, [1, 10, 1, 1]);
/// # Ok::<(), resnet_models::ModelError>(())
/// ```
pub fn cifar_plan(config: &CifarConfig) -> Result<Plan, ModelError> {
    config.validate()?;
    let eps = config.bn_eps;
    let n = (config.depth - 2) / 6;
    let width = |s: usize| (16 << s) * config.width;
    let (mut b, x) = PlanBuilder::new(config.in_channels);
    let stem = ConvSpec::new("conv1", "conv1", config.in_channels, width(0), 3).with_bn("bn1", eps);
    let mut cur = b.conv(stem, x, None, true);
    b.free(x);
    b.output("stem", cur);
    let mut in_c = width(0);
    for s in 0..3 {
        for i in 0..n {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{i}", s + 1);
            cur = block(&mut b, config, &prefix, cur, in_c, width(s), stride);
            in_c = width(s);
        }
        b.output(&format!("layer{}", s + 1), cur);
    }
    b.classifier_head(cur, in_c, config.num_classes);
    Ok(b.finish())
}

/// One basic block reading `x` (which it frees).
fn block(
    b: &mut PlanBuilder,
    cfg: &CifarConfig,
    prefix: &str,
    x: Slot,
    in_c: usize,
    out: usize,
    stride: usize,
) -> Slot {
    let eps = cfg.bn_eps;
    let conv = |j: usize, cin: usize| {
        let name = format!("{prefix}.conv{j}");
        ConvSpec::new(&name, &name, cin, out, 3).with_bn(&format!("{prefix}.bn{j}"), eps)
    };
    let h = b.conv(conv(1, in_c).with_stride(stride), x, None, true);
    let changes = stride != 1 || in_c != out;
    let projected = match cfg.shortcut {
        CifarShortcut::A if changes => Some(b.subsample_pad(x, stride, out)),
        CifarShortcut::B if changes => {
            let name = format!("{prefix}.downsample");
            let spec = ConvSpec::new(&name, &format!("{name}.0"), in_c, out, 1)
                .with_stride(stride)
                .with_bn(&format!("{name}.1"), eps);
            Some(b.conv(spec, x, None, false))
        }
        _ => None,
    };
    let residual = match cfg.shortcut {
        CifarShortcut::None => None,
        _ => projected.or(Some(x)),
    };
    let y = b.conv(conv(2, out), h, residual, true);
    b.free(h);
    if let Some(p) = projected {
        b.free(p);
    }
    b.free(x);
    y
}
