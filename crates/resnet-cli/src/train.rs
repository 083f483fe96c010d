//! `resnet train`: SGD steps on one batch of tensors, from given or seeded random weights,
//! exactly as `resnet-train`'s golden tests run them, then the state_dict saved.

use crate::{PriorArg, TrainArgs};
use anyhow::{Context, Result, anyhow, bail};
use resnet_models::{
    CifarConfig, CifarShortcut, Plan, ResNetConfig, WeightFile, WeightSource, cifar_plan,
    random_plan_weights, resnet_plan,
};
use resnet_tensor::Tensor;
use resnet_train::Trainer;
use resnet_train::optim::{DecayPolicy, Prior, Sgd, SgdConfig};
use resnet_weights::{Prefixed, write_safetensors_with_counters};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `--data` schemes a later version will read; refused by name for now.
const LATER_SCHEMES: &[&str] = &["fashion-mnist", "mnist", "cifar10", "cifar100", "imagenet"];

/// What `--model` names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ModelSpec {
    /// He et al.'s CIFAR nets: depth and shortcut option.
    Cifar {
        depth: usize,
        shortcut: CifarShortcut,
    },
    /// A torchvision architecture by name.
    TorchVision(String),
}

fn known_models() -> String {
    format!(
        "cifar-resnetN (option A), cifar-resnetN-b (option B), cifar-plainN (N = 6n + 2: 20, 32, 44, 56, 110 …), {}",
        ResNetConfig::NAMES.join(", ")
    )
}

impl ModelSpec {
    pub(crate) fn parse(name: &str) -> Result<Self> {
        let unknown = || anyhow!("unknown --model {name:?}; known: {}", known_models());
        if let Some(rest) = name.strip_prefix("cifar-") {
            let (kind, rest) = if let Some(r) = rest.strip_prefix("resnet") {
                ("resnet", r)
            } else if let Some(r) = rest.strip_prefix("plain") {
                ("plain", r)
            } else {
                return Err(unknown());
            };
            let (digits, option) = match rest.split_once('-') {
                Some((d, o)) => (d, Some(o)),
                None => (rest, None),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unknown());
            }
            let depth: usize = digits.parse().map_err(|_| unknown())?;
            let shortcut = match (kind, option) {
                ("plain", None) => CifarShortcut::None,
                ("resnet", None | Some("a")) => CifarShortcut::A,
                ("resnet", Some("b")) => CifarShortcut::B,
                _ => return Err(unknown()),
            };
            return Ok(Self::Cifar { depth, shortcut });
        }
        if ResNetConfig::NAMES.contains(&name) {
            return Ok(Self::TorchVision(name.to_string()));
        }
        Err(unknown())
    }

    /// The name written to the saved file's metadata (`cifar-resnet20`, `resnet18`).
    pub(crate) fn name(&self) -> String {
        match self {
            Self::Cifar { depth, shortcut } => {
                CifarConfig::new(*depth, 1).with_shortcut(*shortcut).name()
            }
            Self::TorchVision(n) => n.clone(),
        }
    }

    pub(crate) fn plan(&self, in_channels: usize, classes: usize) -> Result<Plan> {
        Ok(match self {
            Self::Cifar { depth, shortcut } => cifar_plan(
                &CifarConfig::new(*depth, classes)
                    .with_shortcut(*shortcut)
                    .with_in_channels(in_channels),
            )?,
            Self::TorchVision(n) => resnet_plan(
                &ResNetConfig::by_name(n, classes)
                    .ok_or_else(|| anyhow!("unknown --model {n:?}"))?
                    .with_in_channels(in_channels),
            )?,
        })
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([("arch".to_string(), self.name())]);
        if let Self::Cifar { shortcut, .. } = self {
            m.insert("shortcut".into(), shortcut.name().into());
        }
        m
    }
}

/// Open `--init`: torchvision names, or the same under `param.`.
fn init_source(file: &WeightFile) -> Prefixed<'_, WeightFile> {
    let prefixed = !file.contains("conv1.weight") && file.contains("param.conv1.weight");
    Prefixed::new(file, if prefixed { "param." } else { "" })
}

/// `--data tensors:FILE`: the batch and its labels.
fn load_data(spec: &str) -> Result<(PathBuf, Tensor, Vec<usize>)> {
    let supported = "supported now: tensors:FILE (a safetensors file with `input` NCHW floats and `labels` integers)";
    let Some((scheme, rest)) = spec.split_once(':') else {
        bail!("--data {spec:?} names no scheme; {supported}");
    };
    if scheme != "tensors" {
        if LATER_SCHEMES.contains(&scheme) {
            bail!(
                "--data {scheme}: is not supported yet (datasets are a later issue); {supported}"
            );
        }
        bail!("--data: unknown scheme {scheme:?}; {supported}");
    }
    let path = PathBuf::from(rest);
    let ctx = || format!("--data {}", path.display());
    let file = WeightFile::open(&path).with_context(ctx)?;
    let x = file
        .load("input")
        .with_context(|| format!("{}: key `input` (NCHW floats)", ctx()))?;
    let Some([n, c, h, w]) = x.shape().dims4() else {
        bail!(
            "{}: `input` has shape {:?}, expected [N, C, H, W]",
            ctx(),
            x.shape().dims()
        );
    };
    if n == 0 || c == 0 || h == 0 || w == 0 {
        bail!("{}: `input` has an empty shape {:?}", ctx(), [n, c, h, w]);
    }
    let (raw, shape) = file
        .load_integers("labels")
        .with_context(|| format!("{}: key `labels` (integers)", ctx()))?;
    if shape != [n] {
        bail!(
            "{}: `labels` has shape {shape:?}, expected [{n}] (one per input)",
            ctx()
        );
    }
    let labels = raw
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l).map_err(|_| anyhow!("{}: label {l} of row {i} is negative", ctx()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((path, x, labels))
}

/// Fail early, before any training, if `--save` cannot be written where it points.
fn check_save_path(path: &Path) -> Result<()> {
    if path.file_name().is_none() || path.is_dir() {
        bail!("--save {}: not a file name", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "--save {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Run `resnet train`.
pub fn train(a: &TrainArgs) -> Result<()> {
    // Cheap checks first.
    let spec = ModelSpec::parse(&a.model)?;
    let prior = match (a.prior, a.prior_lambda) {
        (PriorArg::Zero, None) => Prior::Zero,
        (PriorArg::Zero, Some(_)) => bail!("--prior-lambda applies to --prior identity only"),
        (PriorArg::Identity, lambda) => {
            let lambda = lambda.unwrap_or(1e-3);
            if !lambda.is_finite() || lambda < 0.0 {
                bail!("--prior-lambda must be finite and non-negative, got {lambda}");
            }
            Prior::Identity { lambda }
        }
    };
    let mut sgd = Sgd::try_new(
        SgdConfig::new(a.lr)
            .with_momentum(a.momentum)
            .with_nesterov(a.nesterov)
            .with_weight_decay(a.weight_decay),
    )
    .context("invalid optimiser settings (--lr, --momentum, --weight-decay, --nesterov)")?;
    check_save_path(&a.save)?;
    let (data_path, x, labels) = load_data(&a.data)?;
    let [n, c, h, w] = x.shape().dims4().expect("checked by load_data");

    // The weights and the class count.
    let init = match &a.init {
        Some(p) => Some(WeightFile::open(p).with_context(|| format!("--init {}", p.display()))?),
        None => None,
    };
    let source = init.as_ref().map(init_source);
    let init_classes = source
        .as_ref()
        .and_then(|s| s.shape_of("fc.weight"))
        .and_then(|s| (s.len() == 2).then_some(s[0]));
    let classes = match (a.classes, init_classes) {
        (Some(0), _) => bail!("--classes must be at least 1"),
        (Some(k), Some(f)) if k != f => bail!(
            "--classes {k} does not match --init {}, whose fc.weight has {f} classes",
            a.init.as_ref().expect("init given").display()
        ),
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => bail!(
            "give --classes N: the class count cannot be inferred from the labels (a batch need not hold the last class), only from --init weights' fc.weight"
        ),
    };
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        bail!(
            "--data {}: label {label} of row {row} is out of range for {classes} classes",
            data_path.display()
        );
    }
    let plan = spec
        .plan(c, classes)
        .with_context(|| format!("--model {}", a.model))?;
    let mut trainer = match &source {
        Some(src) => {
            let ctx = || {
                format!(
                    "--init {} does not fit --model {} with {classes} classes on {c}-channel input",
                    a.init.as_ref().expect("init given").display(),
                    a.model
                )
            };
            let mut t = Trainer::new(plan, src).with_context(ctx)?;
            // Every tensor of the file must be used: a deeper net's weights would otherwise
            // start a shallower one silently.
            let unused: Vec<String> = src
                .names()
                .into_iter()
                .filter(|k| {
                    !t.params().contains_key(k)
                        && !t.running_stats().contains_key(k)
                        && !t.batches_tracked().contains_key(k)
                })
                .collect();
            if let Some(first) = unused.first() {
                return Err(anyhow!(
                    "{} tensor(s) the model does not use, such as {}",
                    unused.len(),
                    src.file_name(first)
                ))
                .with_context(ctx);
            }
            let keys: Vec<String> = t.batches_tracked().keys().cloned().collect();
            for k in keys {
                if !src.contains(&k) {
                    continue;
                }
                let (v, _) = src
                    .inner()
                    .load_integers(&src.key(&k))
                    .with_context(ctx)
                    .with_context(|| format!("{k} must be an integer"))?;
                match v.as_slice() {
                    [v] => {
                        t.set_batches_tracked(&k, *v);
                    }
                    _ => {
                        return Err(anyhow!("{k} holds {} values, expected one", v.len()))
                            .with_context(ctx);
                    }
                }
            }
            t
        }
        None => {
            let weights = random_plan_weights(&plan, a.seed)?;
            Trainer::new(plan, &weights)?
        }
    };
    // The file is read: unmap it (--save may replace it).
    drop(init);

    let mut log = match &a.log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create --log {}", p.display()))?,
        )),
        None => None,
    };
    eprintln!(
        "training {} ({classes} classes) on {n}x{c}x{h}x{w} from {}: {} SGD step{}, lr {:?}",
        spec.name(),
        a.init.as_ref().map_or_else(
            || format!("random weights (seed {})", a.seed),
            |p| p.display().to_string()
        ),
        a.steps,
        if a.steps == 1 { "" } else { "s" },
        a.lr
    );
    for step in 1..=a.steps {
        let t0 = Instant::now();
        // As resnet-train's golden tests run it: the prior in the loss and gradients, decay
        // off on the prior's convs.
        let out = trainer
            .sgd_step(&mut sgd, &prior, DecayPolicy::All, &x, &labels)
            .map_err(|e| match e {
                resnet_train::TrainError::NonFinite { loss } => anyhow!(
                    "step {step}: the loss is {loss}; stopping (nothing saved; try a smaller --lr)"
                ),
                e => anyhow::Error::new(e).context(format!("step {step}")),
            })?;
        let loss = out.loss;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        eprintln!("step {step}/{}  loss {loss:.6}  {ms:.0} ms", a.steps);
        if let Some(f) = &mut log {
            let line = json!({"step": step, "loss": loss, "lr": sgd.lr(), "ms": ms});
            writeln!(f, "{line}")
                .and_then(|()| f.flush())
                .with_context(|| {
                    format!(
                        "cannot write --log {}",
                        a.log.as_ref().expect("log").display()
                    )
                })?;
        }
    }

    // The state_dict, atomically.
    let state = trainer.state_dict()?;
    let tensors: Vec<(&str, &Tensor)> = state.iter().collect();
    let counters: Vec<(&str, i64)> = trainer
        .batches_tracked()
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let mut meta = spec.metadata();
    meta.insert("num_classes".into(), classes.to_string());
    meta.insert("in_channels".into(), c.to_string());
    meta.insert(
        "train".into(),
        json!({
            "steps": a.steps, "lr": a.lr, "momentum": a.momentum,
            "weight_decay": a.weight_decay, "nesterov": a.nesterov,
            "prior": match prior { Prior::Identity { .. } => "identity", _ => "zero" },
            "prior_lambda": match prior { Prior::Identity { lambda } => lambda, _ => 0.0 },
            "seed": a.init.is_none().then_some(a.seed),
        })
        .to_string(),
    );
    write_safetensors_with_counters(&a.save, &tensors, &counters, Some(meta))
        .with_context(|| format!("--save {}", a.save.display()))?;
    eprintln!("wrote {}", a.save.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ModelSpec;
    use resnet_models::CifarShortcut;

    #[test]
    fn model_names() {
        let cifar = |depth, shortcut| ModelSpec::Cifar { depth, shortcut };
        assert_eq!(
            ModelSpec::parse("cifar-resnet20").unwrap(),
            cifar(20, CifarShortcut::A)
        );
        assert_eq!(
            ModelSpec::parse("cifar-resnet32-b").unwrap(),
            cifar(32, CifarShortcut::B)
        );
        assert_eq!(
            ModelSpec::parse("cifar-plain56").unwrap(),
            cifar(56, CifarShortcut::None)
        );
        assert_eq!(
            ModelSpec::parse("resnet50").unwrap(),
            ModelSpec::TorchVision("resnet50".into())
        );
        for (name, canonical) in [
            ("cifar-resnet20", "cifar-resnet20"),
            ("cifar-resnet20-a", "cifar-resnet20"),
            ("cifar-resnet32-b", "cifar-resnet32-b"),
            ("cifar-plain20", "cifar-plain20"),
            ("resnet18", "resnet18"),
        ] {
            assert_eq!(ModelSpec::parse(name).unwrap().name(), canonical);
        }
        for bad in [
            "cifar-plain20-b",
            "cifar-resnet",
            "cifar-resnet+20",
            "cifar-resnet20-c",
            "cifar-vgg16",
            "vgg16",
            "",
        ] {
            let e = ModelSpec::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("unknown --model") && e.contains("cifar-resnetN-b"),
                "{e}"
            );
        }
        // The depth is checked when the plan is built.
        let e = ModelSpec::parse("cifar-resnet21")
            .unwrap()
            .plan(3, 10)
            .unwrap_err();
        assert!(e.to_string().contains("6n + 2"), "{e}");
    }
}
