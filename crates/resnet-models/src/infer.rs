//! A network's configuration read off the keys and shapes of its weights (and, where the keys
//! cannot tell, the file's metadata): [`infer_config`] for torchvision-style ResNets,
//! [`infer_cifar_config`] for He et al.'s CIFAR nets, [`infer_arch`] for either.

use crate::{Arch, BlockKind, CifarConfig, CifarShortcut, ModelError, ResNetConfig};
use resnet_weights::WeightSource;

fn shape(src: &dyn WeightSource, name: &str) -> Result<Vec<usize>, ModelError> {
    src.shape_of(name)
        .ok_or_else(|| ModelError::Infer(format!("no tensor {name:?} (is this a ResNet?)")))
}

/// Infer a network's configuration from the keys and shapes of its weights: number of stages
/// and blocks per stage, block type, groups, width per group, classes, input channels, and
/// whether it has shortcuts (plain networks have no `downsample` tensors).
///
/// The returned config still has to be loaded; a file inconsistent with it fails there, with
/// the tensor named.
pub fn infer_config(src: &dyn WeightSource) -> Result<ResNetConfig, ModelError> {
    let conv1 = shape(src, "conv1.weight")?;
    if conv1.len() != 4 {
        return Err(ModelError::Infer(format!(
            "conv1.weight has shape {conv1:?}, expected rank 4"
        )));
    }
    let in_channels = conv1[1];
    let mut layers = Vec::new();
    while src.contains(&format!("layer{}.0.conv1.weight", layers.len() + 1)) {
        let s = layers.len() + 1;
        let mut n = 0;
        while src.contains(&format!("layer{s}.{n}.conv1.weight")) {
            n += 1;
        }
        layers.push(n);
        if layers.len() > 8 {
            return Err(ModelError::Infer("more than 8 stages".into()));
        }
    }
    if layers.is_empty() {
        return Err(ModelError::Infer(
            "no tensor \"layer1.0.conv1.weight\"".into(),
        ));
    }
    let block = if src.contains("layer1.0.conv3.weight") {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let (groups, width_per_group) = match block {
        BlockKind::Basic => (1, 64),
        BlockKind::Bottleneck => {
            // layer1's 3x3 conv: [width, width / groups, 3, 3], width = 64 * wpg / 64 * groups.
            let c2 = shape(src, "layer1.0.conv2.weight")?;
            if c2.len() != 4 || c2[1] == 0 || c2[0] % c2[1] != 0 {
                return Err(ModelError::Infer(format!(
                    "layer1.0.conv2.weight has shape {c2:?}, not a grouped 3x3 conv"
                )));
            }
            let groups = c2[0] / c2[1];
            (groups, c2[0] / groups)
        }
    };
    let fc = shape(src, "fc.weight")?;
    if fc.len() != 2 {
        return Err(ModelError::Infer(format!(
            "fc.weight has shape {fc:?}, expected rank 2"
        )));
    }
    // A network whose blocks change shape anywhere has projections unless it is a plain twin;
    // one whose blocks never do cannot tell, and gets shortcuts (the usual case).
    let needs_projection = layers.len() > 1 || block == BlockKind::Bottleneck;
    let has_projection = src.names().iter().any(|n| n.contains(".downsample."));
    let shortcuts = has_projection || !needs_projection;
    let config = ResNetConfig {
        block,
        layers,
        groups,
        width_per_group,
        num_classes: fc[0],
        in_channels,
        shortcuts,
        bn_eps: 1e-5,
    };
    config
        .validate()
        .map_err(|e| ModelError::Infer(e.to_string()))?;
    Ok(config)
}

/// Infer the family and configuration of a classification network from its weights:
/// [`Arch::Cifar`] ([`infer_cifar_config`]) when the metadata `arch` names a CIFAR net
/// (`cifar-…`, see [`CifarConfig::from_name`]), [`Arch::ResNet`] ([`infer_config`]) when it
/// names a torchvision one (`resnet18` …), and otherwise by the stem: a 3x3 `conv1` is a CIFAR
/// net's, torchvision's is 7x7.
///
/// ```
/// use resnet_models::{Arch, CifarConfig, CifarShortcut, cifar_plan, infer_arch, random_plan_weights};
/// let cfg = CifarConfig::new(20, 10).with_shortcut(CifarShortcut::B);
/// let weights = random_plan_weights(&cifar_plan(&cfg)?, 1)?;
/// assert_eq!(infer_arch(&weights)?, Arch::Cifar(cfg));
/// # Ok::<(), resnet_models::ModelError>(())
/// ```
pub fn infer_arch(src: &dyn WeightSource) -> Result<Arch, ModelError> {
    let named = src.metadata_value("arch");
    let named = named.as_deref().map(str::trim);
    let stem = shape(src, "conv1.weight")?;
    let cifar = match named {
        Some(a) if a.starts_with("cifar-") => true,
        Some(a) if ResNetConfig::NAMES.contains(&a) => false,
        _ => stem.len() == 4 && stem[2..] == [3, 3],
    };
    if cifar {
        infer_cifar_config(src).map(Arch::Cifar)
    } else {
        infer_config(src).map(Arch::ResNet)
    }
}

/// A metadata value parsed, or an error naming the key and the value.
fn meta<T: std::str::FromStr>(src: &dyn WeightSource, key: &str) -> Result<Option<T>, ModelError> {
    match src.metadata_value(key) {
        None => Ok(None),
        Some(v) => {
            v.trim().parse().map(Some).map_err(|_| {
                ModelError::Infer(format!("metadata {key} = {v:?} is not a valid value"))
            })
        }
    }
}

/// Infer a CIFAR network's configuration ([`crate::cifar_plan`]'s keys) from its weights:
/// width, input channels and classes from the shapes of `conv1` and `fc`, depth from the
/// number of blocks in `layer1` … `layer3` (which must be equal), shortcut option B when
/// `layer2.0.downsample.0.weight` exists.
///
/// Option A (parameter-free shortcuts) and the plain twin (no shortcuts) have the same keys,
/// so for a file without projection weights the shortcut comes from the metadata: `arch`
/// (`cifar-resnetN` is option A, `cifar-plainN` plain; what `resnet train --save` writes) or
/// `shortcut` (`A` or `none`). Without either this is an error that says what to add: the
/// loader never guesses between a residual and a plain net. Metadata that contradicts the
/// tensors (another depth, width or option, `num_classes`, `in_channels`) is an error too.
pub fn infer_cifar_config(src: &dyn WeightSource) -> Result<CifarConfig, ModelError> {
    let err = |s: String| Err(ModelError::Infer(s));
    let stem = shape(src, "conv1.weight")?;
    if stem.len() != 4 || stem[2..] != [3, 3] || stem[0] == 0 || stem[0] % 16 != 0 {
        return err(format!(
            "conv1.weight has shape {stem:?}; a CIFAR net's stem is [16 x width, channels, 3, 3]"
        ));
    }
    let (width, in_channels) = (stem[0] / 16, stem[1]);
    let blocks = |s: usize| {
        (0..)
            .take_while(|i| src.contains(&format!("layer{s}.{i}.conv1.weight")))
            .count()
    };
    let counts = [blocks(1), blocks(2), blocks(3)];
    if counts[0] == 0 || counts.iter().any(|&n| n != counts[0]) || blocks(4) != 0 {
        return err(format!(
            "a CIFAR net has three stages of equal length (layer1 … layer3); found {:?} blocks{}",
            counts,
            if blocks(4) != 0 { " and a layer4" } else { "" }
        ));
    }
    let depth = 6 * counts[0] + 2;
    let fc = shape(src, "fc.weight")?;
    if fc.len() != 2 {
        return err(format!("fc.weight has shape {fc:?}, expected rank 2"));
    }
    let projection = "layer2.0.downsample.0.weight";
    let has_projection = src.contains(projection);

    // What the metadata says, each against the tensors.
    let named = match src.metadata_value("arch") {
        Some(a) if a.trim().starts_with("cifar-") => {
            let c = CifarConfig::from_name(a.trim(), fc[0]).ok_or_else(|| {
                ModelError::Infer(format!(
                    "metadata arch = {a:?} is not a CIFAR net's name ({})",
                    CifarConfig::NAME_FORMS
                ))
            })?;
            if (c.depth, c.width) != (depth, width) {
                return err(format!(
                    "metadata arch = {a:?} says depth {} and width {}, the tensors depth {depth} \
                     and width {width}",
                    c.depth, c.width
                ));
            }
            Some(c.shortcut)
        }
        _ => None,
    };
    let stated = match src.metadata_value("shortcut") {
        None => None,
        Some(v) => Some(CifarShortcut::from_name(&v).ok_or_else(|| {
            ModelError::Infer(format!("metadata shortcut = {v:?} is not A, B or none"))
        })?),
    };
    let from_meta = match (named, stated) {
        (Some(a), Some(b)) if a != b => {
            return err(format!(
                "the metadata contradicts itself: arch says shortcut option {}, shortcut says {}",
                a.name(),
                b.name()
            ));
        }
        (a, b) => a.or(b),
    };
    for (key, found) in [("num_classes", fc[0]), ("in_channels", in_channels)] {
        if let Some(n) = meta::<usize>(src, key)?
            && n != found
        {
            return err(format!(
                "metadata {key} = {n}, the tensors {found} (conv1.weight {stem:?}, fc.weight {fc:?})"
            ));
        }
    }
    let shortcut = match (has_projection, from_meta) {
        (true, None | Some(CifarShortcut::B)) => CifarShortcut::B,
        (true, Some(s)) => {
            return err(format!(
                "the metadata says shortcut option {}, but the file has projection weights \
                 ({projection}), which only option B has",
                s.name()
            ));
        }
        (false, Some(CifarShortcut::B)) => {
            return err(format!(
                "the metadata says shortcut option B, but the file has no {projection}"
            ));
        }
        (false, Some(s)) => s,
        (false, None) => {
            return err(format!(
                "this CIFAR net (depth {depth}) has no projection weights ({projection}), so its \
                 shortcuts are option A or absent (the plain twin): the keys cannot tell which. \
                 Record it in the file's metadata: arch = \"cifar-resnet{depth}\" (option A) or \
                 \"cifar-plain{depth}\", or shortcut = \"A\" or \"none\" (from PyTorch: \
                 safetensors.torch.save_file(state_dict, path, metadata={{\"arch\": \
                 \"cifar-resnet{depth}\"}}); `resnet train --save` writes it)"
            ));
        }
    };
    let config = CifarConfig::new(depth, fc[0])
        .with_shortcut(shortcut)
        .with_width(width)
        .with_in_channels(in_channels);
    config
        .validate()
        .map_err(|e| ModelError::Infer(e.to_string()))?;
    Ok(config)
}
