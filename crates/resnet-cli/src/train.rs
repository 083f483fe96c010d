//! `resnet train`: SGD steps on tensors (one batch, or passes over them in batches), from given
//! or seeded random weights, exactly as `resnet-train`'s golden tests run them; checkpoints to
//! resume from bitwise, and the state_dict saved.

use crate::{PriorArg, TrainArgs};
use anyhow::{Context, Result, anyhow, bail};
use resnet_models::{
    CifarConfig, CifarShortcut, Plan, ResNetConfig, WeightFile, WeightSource, cifar_plan,
    random_plan_weights, resnet_plan,
};
use resnet_tensor::Tensor;
use resnet_train::Trainer;
use resnet_train::checkpoint::{
    Checkpoint, CheckpointDir, CheckpointError, Progress, Recipe, data_fingerprint,
};
use resnet_train::optim::{DecayPolicy, Prior, Sgd, SgdConfig};
use resnet_weights::{Prefixed, write_safetensors_with_counters};
use serde_json::json;
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

    /// The CIFAR shortcut option recorded in the metadata (`A`, `B`, `none`).
    fn shortcut_name(&self) -> Option<String> {
        match self {
            Self::Cifar { shortcut, .. } => Some(shortcut.name().to_string()),
            Self::TorchVision(_) => None,
        }
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

/// Values of the recipe: from a flag, from the checkpoint being resumed, or a default. A flag
/// that contradicts the checkpoint is refused, naming both.
struct Settings<'a> {
    resumed: Option<(&'a Path, &'a Recipe)>,
}

impl Settings<'_> {
    fn pick<T: PartialEq + std::fmt::Display>(
        &self,
        flag: &str,
        given: Option<T>,
        saved: impl FnOnce(&Recipe) -> T,
        default: T,
    ) -> Result<T> {
        let Some((path, recipe)) = self.resumed else {
            return Ok(given.unwrap_or(default));
        };
        let saved = saved(recipe);
        match given {
            Some(g) if g != saved => bail!(
                "{flag} {g} conflicts with the checkpoint being resumed ({}: {} {saved}); leave {flag} out to continue with the checkpoint's",
                path.display(),
                flag.trim_start_matches('-').replace('-', "_")
            ),
            _ => Ok(saved),
        }
    }
}

/// The prior from `--prior` and `--prior-lambda` (or the checkpoint's).
fn pick_prior(a: &TrainArgs, settings: &Settings<'_>) -> Result<Prior> {
    let saved_kind = |r: &Recipe| match r.prior {
        Prior::Identity { .. } => "identity",
        _ => "zero",
    };
    let given = a.prior.map(|p| match p {
        PriorArg::Zero => "zero",
        PriorArg::Identity => "identity",
    });
    let kind = settings.pick("--prior", given, saved_kind, "zero")?;
    if kind == "zero" {
        if a.prior_lambda.is_some() {
            bail!("--prior-lambda applies to --prior identity only");
        }
        return Ok(Prior::Zero);
    }
    let saved_lambda = |r: &Recipe| match r.prior {
        Prior::Identity { lambda } => lambda,
        _ => 1e-3,
    };
    let lambda = settings.pick("--prior-lambda", a.prior_lambda, saved_lambda, 1e-3)?;
    if !lambda.is_finite() || lambda < 0.0 {
        bail!("--prior-lambda must be finite and non-negative, got {lambda}");
    }
    Ok(Prior::Identity { lambda })
}

/// `--resume DIR`'s checkpoint, with a hint when the latest one is broken.
fn load_resume(dir: &Path) -> Result<(PathBuf, Checkpoint)> {
    let ckpts = CheckpointDir::new(dir);
    ckpts.load_latest().map_err(|e| {
        let hint = match &e {
            CheckpointError::Read { path, .. } | CheckpointError::Invalid { path, .. } => {
                let earlier = ckpts
                    .list()
                    .ok()
                    .and_then(|l| l.into_iter().rev().find(|(_, p)| p != path));
                match earlier {
                    Some((_, p)) => format!(
                        " (nothing was changed; to resume from the checkpoint before it, {}, move the broken file away)",
                        p.display()
                    ),
                    None => " (nothing was changed)".to_string(),
                }
            }
            _ => String::new(),
        };
        anyhow!("--resume {}: {e}{hint}", dir.display())
    })
}

/// Whether two paths name the same directory (or are spelled the same).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Build the trainer of a new run from `--init` (every tensor of the file must be used) or
/// seeded random weights.
fn fresh_trainer(
    a: &TrainArgs,
    plan: Plan,
    source: Option<&Prefixed<'_, WeightFile>>,
    classes: usize,
    c: usize,
    seed: u64,
    model: &str,
) -> Result<Trainer> {
    let Some(src) = source else {
        let weights = random_plan_weights(&plan, seed)?;
        return Ok(Trainer::new(plan, &weights)?);
    };
    let ctx = || {
        format!(
            "--init {} does not fit --model {model} with {classes} classes on {c}-channel input",
            a.init.as_ref().expect("init given").display(),
        )
    };
    let mut t = Trainer::new(plan, src).with_context(ctx)?;
    // Every tensor of the file must be used: a deeper net's weights would otherwise start a
    // shallower one silently.
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
    Ok(t)
}

/// The batches of an epoch: consecutive rows of the data, `batch` at a time.
fn batches(x: &Tensor, labels: &[usize], batch: usize) -> Result<Vec<(Tensor, Vec<usize>)>> {
    let [n, c, h, w] = x.shape().dims4().expect("checked by load_data");
    if batch >= n {
        return Ok(vec![(x.clone(), labels.to_vec())]);
    }
    let row = c * h * w;
    let data = x.as_slice();
    (0..n)
        .step_by(batch)
        .map(|start| {
            let end = (start + batch).min(n);
            let t = Tensor::from_vec(
                &[end - start, c, h, w],
                data[start * row..end * row].to_vec(),
            )?;
            Ok((t, labels[start..end].to_vec()))
        })
        .collect()
}

/// Run `resnet train`.
pub fn train(a: &TrainArgs, threads: Option<usize>) -> Result<()> {
    // The checkpoint to resume first: its recipe fills in the flags left out.
    let resumed = match &a.resume {
        Some(dir) => Some(load_resume(dir)?),
        None => None,
    };
    let settings = Settings {
        resumed: resumed.as_ref().map(|(p, c)| (p.as_path(), &c.recipe)),
    };
    let saved_recipe = resumed.as_ref().map(|(_, c)| &c.recipe);

    // Cheap checks first.
    let spec = match (&a.model, saved_recipe) {
        (Some(m), _) => ModelSpec::parse(m)?,
        (None, Some(r)) => ModelSpec::parse(&r.model)
            .with_context(|| format!("the checkpoint's model {:?}", r.model))?,
        (None, None) => bail!("give --model"),
    };
    let model = settings.pick(
        "--model",
        Some(spec.name()),
        |r| r.model.clone(),
        String::new(),
    )?;
    let prior = pick_prior(a, &settings)?;
    let sgd_config = SgdConfig {
        lr: settings.pick("--lr", a.lr, |r| r.sgd.lr, 0.1)?,
        momentum: settings.pick("--momentum", a.momentum, |r| r.sgd.momentum, 0.9)?,
        weight_decay: settings.pick(
            "--weight-decay",
            a.weight_decay,
            |r| r.sgd.weight_decay,
            5e-4,
        )?,
        nesterov: settings.pick(
            "--nesterov",
            a.nesterov.then_some(true),
            |r| r.sgd.nesterov,
            false,
        )?,
        dampening: saved_recipe.map_or(0.0, |r| r.sgd.dampening),
    };
    let decay = saved_recipe.map_or(DecayPolicy::All, |r| r.decay);
    sgd_config
        .validate()
        .context("invalid optimiser settings (--lr, --momentum, --weight-decay, --nesterov)")?;
    let seed = match (a.seed, saved_recipe) {
        (Some(s), Some(r)) if r.seed != Some(s) => bail!(
            "--seed {s} conflicts with the checkpoint being resumed ({}: {}); leave --seed out",
            resumed.as_ref().expect("resumed").0.display(),
            r.seed.map_or_else(
                || "started from --init weights".into(),
                |s| format!("seed {s}")
            )
        ),
        (_, Some(r)) => r.seed,
        (s, None) => a.init.is_none().then(|| s.unwrap_or(0)),
    };
    if let Some(save) = &a.save {
        check_save_path(save)?;
    }
    let data_spec = match (&a.data, saved_recipe) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => r.data.clone(),
        (None, None) => bail!("give --data"),
    };
    let (data_path, x, labels) = load_data(&data_spec)?;
    let [n, c, h, w] = x.shape().dims4().expect("checked by load_data");
    let fingerprint = data_fingerprint(&[n, c, h, w], x.as_slice(), &labels);
    if let Some((path, r)) = settings.resumed
        && r.data_fingerprint
            .as_ref()
            .is_some_and(|f| *f != fingerprint)
    {
        match &a.data {
            Some(d) => bail!(
                "--data {d} is not the data the checkpoint being resumed was trained on ({}: {})",
                path.display(),
                r.data
            ),
            None => bail!(
                "the data of the checkpoint being resumed ({}: {}) has changed since; give --data",
                path.display(),
                r.data
            ),
        }
    }
    let batch = settings.pick(
        "--batch",
        a.batch.map(|b| (b as usize).min(n)),
        |r| r.batch.unwrap_or(n).min(n),
        n,
    )?;
    let steps_per_epoch = n.div_ceil(batch) as u64;
    let target = match (a.steps, a.epochs) {
        (Some(s), _) => u64::from(s),
        (None, Some(e)) => u64::from(e) * steps_per_epoch,
        (None, None) => bail!("give --steps N or --epochs N"),
    };

    // The class count.
    let init = match &a.init {
        Some(p) => Some(WeightFile::open(p).with_context(|| format!("--init {}", p.display()))?),
        None => None,
    };
    let source = init.as_ref().map(init_source);
    let init_classes = source
        .as_ref()
        .and_then(|s| s.shape_of("fc.weight"))
        .and_then(|s| (s.len() == 2).then_some(s[0]));
    let classes = match (a.classes, init_classes, saved_recipe) {
        (Some(0), _, _) => bail!("--classes must be at least 1"),
        (k, _, Some(_)) => settings.pick("--classes", k, |r| r.classes, 0)?,
        (Some(k), Some(f), None) if k != f => bail!(
            "--classes {k} does not match --init {}, whose fc.weight has {f} classes",
            a.init.as_ref().expect("init given").display()
        ),
        (Some(k), _, None) | (None, Some(k), None) => k,
        (None, None, None) => bail!(
            "give --classes N: the class count cannot be inferred from the labels (a batch need not hold the last class), only from --init weights' fc.weight"
        ),
    };
    if let Some(r) = saved_recipe
        && r.in_channels != c
    {
        bail!(
            "--data {}: {c}-channel input, but the checkpoint being resumed takes {}",
            data_path.display(),
            r.in_channels
        );
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        bail!(
            "--data {}: label {label} of row {row} is out of range for {classes} classes",
            data_path.display()
        );
    }

    // Where checkpoints go: refuse a directory holding another run's.
    let out = a.out.as_ref().or(a.resume.as_ref()).map(CheckpointDir::new);
    if let Some(dir) = &out {
        let continuing = a.resume.as_ref().is_some_and(|r| same_dir(r, dir.path()));
        if !continuing && dir.path().is_dir() {
            if let Some((step, _)) = dir.latest()? {
                bail!(
                    "--out {} already holds checkpoints (up to step {step}); continue them with --resume {}, or choose another directory",
                    dir.path().display(),
                    dir.path().display()
                );
            }
        }
        std::fs::create_dir_all(dir.path()).with_context(|| {
            format!(
                "--out {}: cannot create the directory",
                dir.path().display()
            )
        })?;
    }

    let plan = spec
        .plan(c, classes)
        .with_context(|| format!("--model {model}"))?;
    let start = resumed.as_ref().map_or(0, |(_, ck)| ck.progress.step);
    let (trainer, mut sgd) = match &resumed {
        Some((path, ckpt)) => ckpt
            .restore(plan)
            .with_context(|| format!("--resume {}", path.display()))?,
        None => (
            fresh_trainer(
                a,
                plan,
                source.as_ref(),
                classes,
                c,
                seed.unwrap_or(0),
                &model,
            )?,
            Sgd::try_new(sgd_config)?,
        ),
    };
    // The fast kernels on the requested threads (all cores by default): the weights are
    // bitwise the same for any count.
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let backend = match a.kernels {
        crate::KernelsArg::Fast => resnet_models::Backend::Fast,
        crate::KernelsArg::Naive => resnet_models::Backend::Naive,
    };
    let mut trainer = trainer.with_threads(threads)?.with_backend(backend);
    // The file is read: unmap it (--save may replace it).
    drop(init);
    if start > target {
        bail!("the checkpoint being resumed is at step {start}, past the {target} steps asked for");
    }

    let data_abs = std::fs::canonicalize(&data_path).unwrap_or(data_path.clone());
    let recipe = Recipe {
        model: model.clone(),
        shortcut: spec.shortcut_name(),
        classes,
        in_channels: c,
        sgd: sgd_config,
        prior,
        decay,
        seed,
        init: match saved_recipe {
            Some(r) => r.init.clone(),
            None => a.init.as_ref().map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or(p.clone())
                    .display()
                    .to_string()
            }),
        },
        data: format!("tensors:{}", data_abs.display()),
        data_fingerprint: Some(fingerprint),
        batch: a
            .batch
            .map(|b| b as usize)
            .or(saved_recipe.and_then(|r| r.batch)),
    };
    let batches = batches(&x, &labels, batch)?;

    let mut log = match &a.log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resumed.is_some())
                .truncate(resumed.is_none())
                .open(p)
                .with_context(|| format!("cannot create --log {}", p.display()))?,
        )),
        None => None,
    };
    let todo = target - start;
    let plural = |k: u64| if k == 1 { "" } else { "s" };
    let epochs = if steps_per_epoch == 1 {
        String::new()
    } else {
        format!(" ({steps_per_epoch} per epoch, batch {batch})")
    };
    match &resumed {
        Some((path, _)) => eprintln!(
            "resuming {model} ({classes} classes) on {n}x{c}x{h}x{w} from {} (step {start}): {todo} more SGD step{} to {target}{epochs}, lr {:?}",
            path.display(),
            plural(todo),
            sgd_config.lr
        ),
        None => eprintln!(
            "training {model} ({classes} classes) on {n}x{c}x{h}x{w} from {}: {target} SGD step{}{epochs}, lr {:?}",
            a.init.as_ref().map_or_else(
                || format!("random weights (seed {})", seed.unwrap_or(0)),
                |p| p.display().to_string()
            ),
            plural(target),
            sgd_config.lr
        ),
    }
    let checkpoint = |trainer: &Trainer, sgd: &Sgd, step: u64| -> Result<()> {
        let Some(dir) = &out else { return Ok(()) };
        let progress = Progress {
            step,
            epoch: step / steps_per_epoch,
        };
        let ckpt = Checkpoint::capture(trainer, sgd, recipe.clone(), progress)?;
        let path = dir.save(&ckpt)?;
        eprintln!("wrote {}", path.display());
        Ok(())
    };
    for step in start + 1..=target {
        let t0 = Instant::now();
        let k = ((step - 1) % steps_per_epoch) as usize;
        let epoch = (step - 1) / steps_per_epoch + 1;
        let (xb, lb) = &batches[k];
        // As resnet-train's golden tests run it: the prior in the loss and gradients, decay
        // off on the prior's convs.
        let out = trainer
            .sgd_step(&mut sgd, &prior, decay, xb, lb)
            .map_err(|e| match e {
                resnet_train::TrainError::NonFinite { loss } => anyhow!(
                    "step {step}: the loss is {loss}; stopping (nothing more saved; try a smaller --lr)"
                ),
                e => anyhow::Error::new(e).context(format!("step {step}")),
            })?;
        let loss = out.loss;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let position = if steps_per_epoch == 1 {
            String::new()
        } else {
            format!("  epoch {epoch} batch {}/{steps_per_epoch}", k + 1)
        };
        eprintln!("step {step}/{target}{position}  loss {loss:.6}  {ms:.0} ms");
        if let Some(f) = &mut log {
            let line =
                json!({"step": step, "epoch": epoch, "loss": loss, "lr": sgd.lr(), "ms": ms});
            writeln!(f, "{line}")
                .and_then(|()| f.flush())
                .with_context(|| {
                    format!(
                        "cannot write --log {}",
                        a.log.as_ref().expect("log").display()
                    )
                })?;
        }
        if step % steps_per_epoch == 0 || step == target {
            checkpoint(&trainer, &sgd, step)?;
        }
    }
    if todo == 0 {
        eprintln!("the checkpoint is at step {target} already: nothing to train");
    }

    // The state_dict, atomically.
    let Some(save) = &a.save else { return Ok(()) };
    let state = trainer.state_dict()?;
    let tensors: Vec<(&str, &Tensor)> = state.iter().collect();
    let counters: Vec<(&str, i64)> = trainer
        .batches_tracked()
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let mut meta = recipe.model_metadata();
    let mut train = recipe.to_json();
    train["steps"] = json!(target);
    train["epochs"] = json!(target / steps_per_epoch);
    meta.insert("train".into(), train.to_string());
    write_safetensors_with_counters(save, &tensors, &counters, Some(meta))
        .with_context(|| format!("--save {}", save.display()))?;
    eprintln!("wrote {}", save.display());
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
