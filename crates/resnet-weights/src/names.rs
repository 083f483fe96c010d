//! Key-name schemes ([`NameScheme`]): detecting torchvision/timm or HF transformers names and
//! mapping them to the internal (torchvision) names.

/// A family of key names for the same ResNet parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameScheme {
    /// torchvision (and timm, which uses the same names): `conv1`, `bn1`,
    /// `layer{1..4}.{B}.conv{J}`, `layer{S}.{B}.downsample.{0,1}`, `fc`.
    Torchvision,
    /// HF transformers `ResNetForImageClassification` (`microsoft/resnet-*`):
    /// `resnet.embedder.embedder.*`, `resnet.encoder.stages.S.layers.L.{layer.J,shortcut}.*`,
    /// `classifier.1.*`.
    HfTransformers,
}

impl std::fmt::Display for NameScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameScheme::Torchvision => "torchvision/timm",
            NameScheme::HfTransformers => "HF transformers",
        })
    }
}

impl NameScheme {
    /// The scheme a set of keys is written in: HF transformers when any key is one of its
    /// distinctive `resnet.embedder.` / `resnet.encoder.` names, torchvision otherwise.
    pub fn detect<'a>(mut keys: impl Iterator<Item = &'a str>) -> Self {
        if keys.any(|k| {
            let k = k.strip_prefix("module.").unwrap_or(k);
            k.starts_with("resnet.embedder.") || k.starts_with("resnet.encoder.")
        }) {
            NameScheme::HfTransformers
        } else {
            NameScheme::Torchvision
        }
    }
}

/// The internal (torchvision) name of a file key under `scheme`; keys the scheme does not know
/// are returned unchanged. A `module.` prefix (from `DataParallel`) is dropped.
pub fn to_canonical(scheme: NameScheme, key: &str) -> String {
    let key = key.strip_prefix("module.").unwrap_or(key);
    match scheme {
        NameScheme::Torchvision => key.to_string(),
        NameScheme::HfTransformers => hf_to_torchvision(key).unwrap_or_else(|| key.to_string()),
    }
}

fn norm_or_conv(part: &str, conv: &str, bn: &str) -> Option<String> {
    if let Some(rest) = part.strip_prefix("convolution.") {
        Some(format!("{conv}.{rest}"))
    } else {
        part.strip_prefix("normalization.")
            .map(|rest| format!("{bn}.{rest}"))
    }
}

fn hf_to_torchvision(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("resnet.embedder.embedder.") {
        return norm_or_conv(rest, "conv1", "bn1");
    }
    if let Some(rest) = key.strip_prefix("classifier.1.") {
        return Some(format!("fc.{rest}"));
    }
    let rest = key.strip_prefix("resnet.encoder.stages.")?;
    let (stage, rest) = rest.split_once('.')?;
    let stage: usize = stage.parse().ok()?;
    let rest = rest.strip_prefix("layers.")?;
    let (block, rest) = rest.split_once('.')?;
    let block: usize = block.parse().ok()?;
    let prefix = format!("layer{}.{block}", stage + 1);
    if let Some(rest) = rest.strip_prefix("shortcut.") {
        return norm_or_conv(
            rest,
            &format!("{prefix}.downsample.0"),
            &format!("{prefix}.downsample.1"),
        );
    }
    let rest = rest.strip_prefix("layer.")?;
    let (j, rest) = rest.split_once('.')?;
    let j: usize = j.parse().ok()?;
    norm_or_conv(
        rest,
        &format!("{prefix}.conv{}", j + 1),
        &format!("{prefix}.bn{}", j + 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_torchvision() {
        let s = NameScheme::HfTransformers;
        for (hf, tv) in [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.1.layer.0.convolution.weight",
                "layer1.1.conv1.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.0.layer.2.normalization.bias",
                "layer4.0.bn3.bias",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.convolution.weight",
                "layer2.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.normalization.num_batches_tracked",
                "layer2.0.downsample.1.num_batches_tracked",
            ),
            ("classifier.1.weight", "fc.weight"),
            ("module.classifier.1.bias", "fc.bias"),
            ("something.else", "something.else"),
        ] {
            assert_eq!(to_canonical(s, hf), tv, "{hf}");
        }
        assert_eq!(
            NameScheme::detect(
                [
                    "classifier.1.bias",
                    "resnet.embedder.embedder.convolution.weight"
                ]
                .into_iter()
            ),
            NameScheme::HfTransformers
        );
        assert_eq!(
            NameScheme::detect(["conv1.weight", "fc.bias"].into_iter()),
            NameScheme::Torchvision
        );
    }
}
