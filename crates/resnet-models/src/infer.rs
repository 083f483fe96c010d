//! [`infer_config`]: a ResNet's configuration read off the keys and shapes of its weights.

use crate::{BlockKind, ModelError, ResNetConfig};
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
