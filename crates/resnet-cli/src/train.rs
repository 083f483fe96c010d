//! `resnet train`: SGD on a dataset (shuffled, augmented, evaluated after every epoch) or on
//! tensors (in order, exactly as `resnet-train`'s golden tests run them), from given or seeded
//! random weights; checkpoints to resume from bitwise, per-epoch metrics, the state_dict saved.

use crate::train_data::{EpochMetrics, Feed, MetricsFiles, TrainData, gaussian_noise};
use crate::{PriorArg, PriorInitArg, TrainArgs};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_models::{
    CifarConfig, CifarShortcut, Network, Plan, ResNetConfig, WeightFile, WeightSource, cifar_plan,
    random_plan_weights, resnet_plan,
};
use resnet_tensor::Tensor;
use resnet_train::checkpoint::{
    Checkpoint, CheckpointDir, CheckpointError, EpochTally, Progress, Recipe,
};
use resnet_train::optim::{
    AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig, Prior, Schedule, SgdConfig, dirac,
};
use resnet_train::{Trainer, evaluate};
use resnet_weights::{Prefixed, write_safetensors_with_counters};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

impl Settings<'_> {
    /// As [`Settings::pick`] for a setting that may be absent (`None` both given and saved).
    fn pick_opt<T: PartialEq + std::fmt::Debug + Clone>(
        &self,
        flag: &str,
        given: Option<T>,
        saved: impl FnOnce(&Recipe) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some((path, recipe)) = self.resumed else {
            return Ok(given);
        };
        let saved = saved(recipe);
        match given {
            Some(g) if Some(&g) != saved.as_ref() => bail!(
                "{flag} {g:?} conflicts with the checkpoint being resumed ({}: {} {saved:?}); leave {flag} out to continue with the checkpoint's",
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

/// Build the trainer of a new run from `--init` (every tensor of the file must be used; with
/// `new_head`, all but the classifier's, which starts seeded) or seeded random weights;
/// `what` names the model for messages.
fn fresh_trainer(
    a: &TrainArgs,
    plan: Plan,
    source: Option<&Prefixed<'_, WeightFile>>,
    what: &str,
    seed: u64,
    new_head: bool,
) -> Result<Trainer> {
    let Some(src) = source else {
        let weights = random_plan_weights(&plan, seed)?;
        return Ok(Trainer::new(plan, &weights)?);
    };
    let is_head = |k: &str| k.starts_with("fc.");
    let ctx = || {
        format!(
            "--init {} does not fit {what}",
            a.init.as_ref().expect("init given").display(),
        )
    };
    let mut t = if new_head {
        // The file's weights but a new, seeded classifier.
        let mut weights = random_plan_weights(&plan, seed)?;
        let names: Vec<String> = weights.iter().map(|(k, _)| k.to_string()).collect();
        for k in names.into_iter().filter(|k| !is_head(k)) {
            let shape = weights.get(&k).map(|t| t.shape().dims().to_vec());
            if let (Some(shape), true) = (shape, src.contains(&k)) {
                let tensor = src.tensor(&k, &shape).with_context(ctx)?;
                weights.insert(k, tensor);
            }
        }
        Trainer::new(plan, &weights).with_context(ctx)?
    } else {
        Trainer::new(plan, src).with_context(ctx)?
    };
    // Every tensor of the file must be used: a deeper net's weights would otherwise start a
    // shallower one silently.
    let unused: Vec<String> = src
        .names()
        .into_iter()
        .filter(|k| {
            let used = t.params().contains_key(k)
                || t.running_stats().contains_key(k)
                || t.batches_tracked().contains_key(k);
            // A replaced classifier's tensors are not used either.
            let replaced = new_head && is_head(k);
            !(used || replaced)
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
    let optimizer_name = settings.pick(
        "--optimizer",
        a.optimizer.map(|o| o.name().to_owned()),
        |r| r.optimizer.name().to_owned(),
        "sgd".to_owned(),
    )?;
    let optimizer: OptimizerConfig = match optimizer_name.as_str() {
        "sgd" => {
            if a.betas.is_some() {
                bail!("--betas is AdamW's (give --optimizer adamw); SGD takes --momentum");
            }
            let saved = |r: &Recipe| r.optimizer.sgd().copied().unwrap_or(SgdConfig::new(0.1));
            SgdConfig {
                lr: settings.pick("--lr", a.lr, |r| saved(r).lr, 0.1)?,
                momentum: settings.pick("--momentum", a.momentum, |r| saved(r).momentum, 0.9)?,
                weight_decay: settings.pick(
                    "--weight-decay",
                    a.weight_decay,
                    |r| saved(r).weight_decay,
                    1e-4,
                )?,
                nesterov: settings.pick(
                    "--nesterov",
                    a.nesterov.then_some(true),
                    |r| saved(r).nesterov,
                    false,
                )?,
                dampening: saved_recipe.map_or(0.0, |r| saved(r).dampening),
            }
            .into()
        }
        "adamw" => {
            if a.momentum.is_some() || a.nesterov {
                bail!("--momentum and --nesterov are SGD's; AdamW takes --betas");
            }
            let saved = |r: &Recipe| r.optimizer.adamw().copied().unwrap_or_default();
            let betas = settings.pick_opt("--betas", a.betas, |r| Some(saved(r).betas))?;
            AdamWConfig {
                lr: settings.pick("--lr", a.lr, |r| saved(r).lr, 1e-3)?,
                betas: betas.unwrap_or((0.9, 0.999)),
                eps: saved_recipe.map_or(1e-8, |r| saved(r).eps),
                weight_decay: settings.pick(
                    "--weight-decay",
                    a.weight_decay,
                    |r| saved(r).weight_decay,
                    0.01,
                )?,
                amsgrad: saved_recipe.is_some_and(|r| saved(r).amsgrad),
            }
            .into()
        }
        other => bail!("the checkpoint's optimiser {other:?} is unknown to this version"),
    };
    let decay = saved_recipe.map_or(DecayPolicy::All, |r| r.decay);
    optimizer.validate().context(
        "invalid optimiser settings (--lr, --momentum, --betas, --weight-decay, --nesterov)",
    )?;
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
        (s, None) => Some(s.unwrap_or(0)),
    };
    if let Some(save) = &a.save {
        check_save_path(save)?;
    }
    if a.prior_init.is_some() || a.prior_noise.is_some() {
        if !matches!(prior, Prior::Identity { .. }) {
            bail!("--prior-init and --prior-noise apply to --prior identity only");
        }
        if resumed.is_some() {
            bail!(
                "--prior-init and --prior-noise set where a run starts; a resumed run continues from its checkpoint"
            );
        }
    }
    if a.freeze_backbone && !matches!(prior, Prior::Zero) {
        bail!(
            "--freeze-backbone trains the classifier alone; the identity prior has nothing to act on"
        );
    }
    let prior_noise = a.prior_noise.unwrap_or(0.0);
    if !prior_noise.is_finite() || prior_noise < 0.0 {
        bail!("--prior-noise must be finite and non-negative, got {prior_noise}");
    }
    if a.prior_init == Some(PriorInitArg::Random) && a.prior_noise.is_some() {
        bail!("--prior-noise applies to --prior-init centre");
    }
    let data_spec = match (&a.data, saved_recipe) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => r.data.clone(),
        (None, None) => bail!("give --data"),
    };
    let subset = settings.pick_opt(
        "--subset",
        a.subset.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        |r| r.subset,
    )?;
    let test_subset = settings.pick_opt(
        "--test-subset",
        a.test_subset
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        |r| r.test_subset,
    )?;
    if a.crop.is_some() && !data_spec.starts_with("folder:") {
        bail!("--crop applies to folder:DIR data");
    }
    let crop = settings.pick(
        "--crop",
        a.crop.map(|c| c as usize),
        |r| r.crop.unwrap_or(224),
        224,
    )?;
    let data = TrainData::open(&data_spec, subset, test_subset, crop)?;
    let freeze_backbone = settings.pick(
        "--freeze-backbone",
        a.freeze_backbone.then_some(true),
        |r| r.freeze_backbone,
        false,
    )?;
    let [n, c, h, w] = data.dims();
    if n == 0 {
        bail!("--data {}: no training examples", data.path().display());
    }
    let fingerprint = data.fingerprint();
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
        data.default_batch(),
    )?;
    let augment = settings.pick(
        "--no-augment",
        a.no_augment.then_some(false),
        |r| r.augment,
        data.is_dataset(),
    )?;
    if augment && !data.is_dataset() {
        bail!("internal: augmentation of tensors");
    }
    let schedule_name = settings.pick(
        "--schedule",
        a.schedule.map(|s| s.name().to_owned()),
        |r| r.schedule.clone(),
        if data.is_dataset() { "he" } else { "constant" }.to_owned(),
    )?;
    let steps_per_epoch = if data.is_dataset() {
        (n / batch) as u64
    } else {
        n.div_ceil(batch) as u64
    };
    let target = match (a.steps, a.epochs) {
        (Some(s), _) => u64::from(s),
        (None, Some(e)) => u64::from(e) * steps_per_epoch,
        (None, None) => bail!("give --steps N or --epochs N"),
    };
    // A schedule that depends on the run's length keeps the length it began with: a resumed
    // run must end where the first one meant to, or it would match no uninterrupted run.
    let schedule_steps = match saved_recipe.and_then(|r| r.schedule_steps) {
        Some(saved) if saved != target && schedule_name != "constant" => bail!(
            "the {schedule_name} schedule of the checkpoint being resumed spans {saved} steps; give --steps {saved} (or the --epochs that make it) to finish that run, or start a new one from its weights with --init"
        ),
        _ => target,
    };
    let warmup = settings.pick_opt("--warmup", a.warmup, |r| r.warmup)?;
    match warmup {
        Some(0) => bail!("--warmup 0: give at least 1 step, or leave --warmup out"),
        Some(w) if w >= schedule_steps && schedule_name != "constant" => bail!(
            "--warmup {w} leaves nothing of the {schedule_name} schedule over the run's \
             {schedule_steps} steps: give fewer warm-up steps"
        ),
        _ => {}
    }
    // After a warm-up the schedule starts from 0 and spans the remaining steps, as PyTorch's
    // SequentialLR([LinearLR, then], milestones=[warm-up]) runs it.
    let after = schedule_steps.saturating_sub(warmup.unwrap_or(0));
    let schedule = match schedule_name.as_str() {
        "he" => Schedule::he_et_al(after),
        "cosine" => Schedule::Cosine {
            total: after.max(1),
            min_lr: 0.0,
        },
        "constant" => Schedule::Constant,
        other => bail!("the checkpoint's schedule {other:?} is unknown to this version"),
    };
    let schedule = match warmup {
        Some(w) => Schedule::linear_warmup(w, 0.1, schedule),
        None => schedule,
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
    let classes = match (a.classes, init_classes, saved_recipe, data.classes()) {
        (Some(0), _, _, _) => bail!("--classes must be at least 1"),
        (k, _, Some(_), _) => settings.pick("--classes", k, |r| r.classes, 0)?,
        // A dataset's class count wins over --init's classifier (fine-tuning: a new head).
        (Some(k), _, None, _) | (None, _, None, Some(k)) | (None, Some(k), None, None) => k,
        (None, None, None, None) => bail!(
            "give --classes N: the class count cannot be inferred from the labels (a batch need not hold the last class), only from --init weights' fc.weight"
        ),
    };
    if let Some(r) = saved_recipe
        && r.in_channels != c
    {
        bail!(
            "--data {}: {c}-channel input, but the checkpoint being resumed takes {}",
            data.path().display(),
            r.in_channels
        );
    }
    if let Some((label, row)) = data.max_label().filter(|&(l, _)| l >= classes) {
        bail!(
            "--data {}: label {label} of row {row} is out of range for {classes} classes",
            data.path().display()
        );
    }
    if let Some(k) = data.classes().filter(|&k| k > classes) {
        bail!(
            "--data {} has {k} classes; the model has {classes}",
            data.path().display()
        );
    }

    // Where checkpoints go: refuse a directory holding another run's.
    let out = a.out.as_ref().or(a.resume.as_ref()).map(CheckpointDir::new);
    if let Some(dir) = &out {
        let continuing = a.resume.as_ref().is_some_and(|r| same_dir(r, dir.path()));
        if !continuing
            && dir.path().is_dir()
            && let Some((step, _)) = dir.latest()?
        {
            bail!(
                "--out {} already holds checkpoints (up to step {step}); continue them with --resume {}, or choose another directory",
                dir.path().display(),
                dir.path().display()
            );
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
    crate::limits::check_memory(
        crate::limits::train_step_bytes(&plan, [batch, c, h, w])?,
        &format!("a training step of {model} on batches of {batch} examples of {w}x{h}"),
        "use a smaller --batch (or --crop)",
    )?;
    // The identity prior's runs start at its centre, unless told otherwise or started from
    // given weights (then only when asked).
    let at_centre = match a.prior_init {
        Some(PriorInitArg::Centre) => true,
        Some(PriorInitArg::Random) => false,
        None => a.init.is_none(),
    };
    let progress = resumed.as_ref().map(|(_, ck)| ck.progress);
    let start = progress.map_or(0, |p| p.step);
    let (trainer, mut sgd) = match &resumed {
        Some((path, ckpt)) => ckpt
            .restore(plan.clone())
            .with_context(|| format!("--resume {}", path.display()))?,
        None => {
            let new_head = init_classes.is_some_and(|f| f != classes);
            if let (true, Some(f)) = (new_head, init_classes) {
                eprintln!(
                    "a new classifier of {classes} classes (seeded from --seed) replaces the {f}-class one of --init"
                );
            }
            let mut t = fresh_trainer(
                a,
                plan.clone(),
                source.as_ref(),
                &format!("--model {model} with {classes} classes on {c}-channel input"),
                seed.unwrap_or(0),
                new_head,
            )?;
            if matches!(prior, Prior::Identity { .. }) && at_centre {
                init_at_centre(&mut t, &prior, seed.unwrap_or(0), prior_noise)?;
            }
            (t, Optimizer::try_new(optimizer)?)
        }
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

    let norm = data.normalize(saved_recipe.and_then(|r| r.normalize.as_ref()));
    let recipe = Recipe {
        model: model.clone(),
        shortcut: spec.shortcut_name(),
        classes,
        in_channels: c,
        optimizer,
        warmup,
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
        data: data.spec(),
        data_fingerprint: Some(fingerprint),
        batch: if data.is_dataset() {
            Some(batch)
        } else {
            a.batch
                .map(|b| b as usize)
                .or(saved_recipe.and_then(|r| r.batch))
        },
        schedule: schedule_name.clone(),
        subset,
        augment,
        normalize: norm.as_ref().map(|n| (n.mean.clone(), n.std.clone())),
        class_names: data.class_names().filter(|n| n.len() == classes),
        freeze_backbone,
        crop: (data.spec().starts_with("folder:")).then_some(crop),
        test_subset,
        schedule_steps: (schedule_name != "constant").then_some(schedule_steps),
        prior_init: match saved_recipe {
            Some(r) => r.prior_init.clone(),
            None => matches!(prior, Prior::Identity { .. })
                .then(|| if at_centre { "centre" } else { "random" }.to_owned()),
        },
        prior_noise: match saved_recipe {
            Some(r) => r.prior_noise,
            None => (matches!(prior, Prior::Identity { .. }) && at_centre).then_some(prior_noise),
        },
    };
    let is_dataset = data.is_dataset();
    let feed = data.feed(batch, augment, norm, seed.unwrap_or(0))?;
    if feed.steps_per_epoch() == 0 {
        bail!("--batch {batch} is more than the {n} examples");
    }

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
    let metrics = match (&out, is_dataset) {
        (Some(dir), true) => Some(MetricsFiles::open(
            dir.path(),
            progress.map(|p| p.step / steps_per_epoch),
        )?),
        _ => None,
    };
    let todo = target - start;
    let plural = |k: u64| if k == 1 { "" } else { "s" };
    let epochs = if steps_per_epoch == 1 {
        String::new()
    } else {
        format!(" ({steps_per_epoch} per epoch, batch {batch})")
    };
    let lr_text = if schedule_name == "constant" && warmup.is_none() {
        format!("lr {:?}", optimizer.lr())
    } else {
        format!(
            "lr {:?} ({schedule_name} schedule{})",
            optimizer.lr(),
            warmup.map_or(String::new(), |w| format!(
                " after {w} warm-up step{}",
                plural(w)
            ))
        )
    };
    let opt_label = match optimizer {
        OptimizerConfig::Sgd(_) => "SGD",
        OptimizerConfig::AdamW(_) => "AdamW",
    };
    match &resumed {
        Some((path, _)) => eprintln!(
            "resuming {model} ({classes} classes) on {n}x{c}x{h}x{w} from {} (step {start}): {todo} more {opt_label} step{} to {target}{epochs}, {lr_text}",
            path.display(),
            plural(todo),
        ),
        None => eprintln!(
            "training {model} ({classes} classes) on {n}x{c}x{h}x{w} from {}: {target} {opt_label} step{}{epochs}, {lr_text}",
            a.init.as_ref().map_or_else(
                || format!("random weights (seed {})", seed.unwrap_or(0)),
                |p| p.display().to_string()
            ),
            plural(target),
        ),
    }
    let checkpoint =
        |trainer: &Trainer, sgd: &Optimizer, step: u64, tally: EpochTally| -> Result<()> {
            let Some(dir) = &out else { return Ok(()) };
            let progress = Progress {
                step,
                epoch: step / steps_per_epoch,
                tally,
            };
            let ckpt = Checkpoint::capture(trainer, sgd, recipe.clone(), progress)?;
            let path = dir.save(&ckpt)?;
            if !is_dataset {
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        };
    // A run resumed mid-epoch carries on with that epoch's totals.
    let mut tally = progress
        .filter(|p| p.step % steps_per_epoch != 0)
        .map_or_else(EpochTally::default, |p| p.tally);
    // --freeze-backbone: the backbone's weights never change, so it is bound once.
    let backbone = if freeze_backbone {
        Some(
            Network::load(
                trainer.plan().clone(),
                &trainer.state_dict()?,
                resnet_models::Backend::Fast,
            )?
            .with_threads(threads)?,
        )
    } else {
        None
    };
    let mut step = start;
    'run: while step < target {
        let epoch = step / steps_per_epoch;
        let from = (step % steps_per_epoch) as usize;
        let bar = progress_bar(is_dataset, epoch + 1, steps_per_epoch, from as u64);
        let mut t0 = Instant::now();
        for b in feed.epoch(epoch, from) {
            let (xb, lb) = b.with_context(|| format!("epoch {}", epoch + 1))?;
            step += 1;
            let k = (step - 1) % steps_per_epoch;
            let lr = schedule.lr_at(optimizer.lr(), step - 1);
            sgd.set_lr(lr)?;
            // As resnet-train's golden tests run it: the prior in the loss and gradients,
            // decay off on the prior's convs.
            let stepped = match &backbone {
                // Fine-tuning the classifier alone: the backbone as in inference.
                Some(net) => {
                    let feats = net
                        .output(&xb, "pool")
                        .with_context(|| format!("step {step}: the frozen backbone"))?;
                    trainer.sgd_step_head(&mut sgd, decay, &feats, &lb)
                }
                None => trainer.sgd_step(&mut sgd, &prior, decay, &xb, &lb),
            };
            let out = stepped
                .map_err(|e| match e {
                    resnet_train::TrainError::NonFinite { loss } => anyhow!(
                        "step {step}: the loss is {loss}; stopping (nothing more saved; try a smaller --lr)"
                    ),
                    e => anyhow::Error::new(e).context(format!("step {step}")),
                })?;
            let loss = out.loss;
            let wrong = out
                .predictions
                .iter()
                .zip(&lb)
                .filter(|(p, l)| p != l)
                .count();
            trainer.recycle(out);
            let secs = t0.elapsed().as_secs_f64();
            t0 = Instant::now();
            tally.add(lb.len(), loss, wrong, secs);
            let ms = secs * 1e3;
            if is_dataset {
                bar.set_position(k + 1);
                bar.set_message(format!(
                    "loss {:.4}  error {:.2}%  {:.0} images/s",
                    tally.loss(),
                    100.0 * tally.error(),
                    tally.seen as f64 / tally.seconds.max(1e-9)
                ));
            } else {
                let position = if steps_per_epoch == 1 {
                    String::new()
                } else {
                    format!("  epoch {} batch {}/{steps_per_epoch}", epoch + 1, k + 1)
                };
                eprintln!("step {step}/{target}{position}  loss {loss:.6}  {ms:.0} ms");
            }
            if let Some(f) = &mut log {
                let line =
                    json!({"step": step, "epoch": epoch + 1, "loss": loss, "lr": lr, "ms": ms});
                writeln!(f, "{line}")
                    .and_then(|()| f.flush())
                    .with_context(|| {
                        format!(
                            "cannot write --log {}",
                            a.log.as_ref().expect("log").display()
                        )
                    })?;
            }
            let end_of_epoch = step % steps_per_epoch == 0;
            if end_of_epoch {
                bar.finish_and_clear();
                if let Feed::Set { test, norm, .. } = &feed {
                    let e0 = Instant::now();
                    // No test split (an image folder without val/): no test numbers.
                    let ev = if test.is_empty() {
                        None
                    } else {
                        let net = Network::load(
                            trainer.plan().clone(),
                            &trainer.state_dict()?,
                            resnet_models::Backend::Fast,
                        )?
                        .with_threads(threads)?;
                        Some(
                            evaluate(&net, test, norm, 500)
                                .with_context(|| format!("evaluating epoch {}", epoch + 1))?,
                        )
                    };
                    let m = EpochMetrics {
                        epoch: epoch + 1,
                        step,
                        train_loss: tally.loss(),
                        train_error: tally.error(),
                        test_loss: ev.as_ref().map_or(f64::NAN, |e| e.loss),
                        test_error: ev.as_ref().map_or(f64::NAN, |e| e.error),
                        lr,
                        seconds: tally.seconds,
                        images_per_s: tally.seen as f64 / tally.seconds.max(1e-9),
                        eval_seconds: e0.elapsed().as_secs_f64(),
                    };
                    let test_text = match &ev {
                        Some(e) => format!("test loss {:.4} error {:.2}%", e.loss, 100.0 * e.error),
                        None => "no test split".to_owned(),
                    };
                    eprintln!(
                        "epoch {}/{}  train loss {:.4} error {:.2}%  {test_text}  lr {lr:.4}  {:.0} s  {:.0} images/s",
                        m.epoch,
                        target.div_ceil(steps_per_epoch),
                        m.train_loss,
                        100.0 * m.train_error,
                        m.seconds,
                        m.images_per_s
                    );
                    // The metrics first: a crash between the two resumes from the checkpoint
                    // before, which cuts this epoch's line from the files and replays it.
                    if let Some(files) = &metrics {
                        files.append(&m)?;
                    }
                    checkpoint(&trainer, &sgd, step, EpochTally::default())?;
                } else {
                    checkpoint(&trainer, &sgd, step, EpochTally::default())?;
                }
                tally = EpochTally::default();
            } else if step == target || a.checkpoint_every.is_some_and(|every| step % every == 0) {
                checkpoint(&trainer, &sgd, step, tally)?;
            }
            if step == target {
                break 'run;
            }
        }
        bar.finish_and_clear();
    }
    if todo == 0 {
        eprintln!("the checkpoint is at step {target} already: nothing to train");
    }
    if let Some(dir) = &out
        && is_dataset
    {
        eprintln!(
            "wrote checkpoints, {} and the metrics (metrics.jsonl, metrics.csv) in {}",
            dir.model_file()
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
            dir.path().display()
        );
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

/// A progress bar over an epoch's steps for dataset runs (hidden otherwise, and when stderr is
/// not a terminal).
fn progress_bar(show: bool, epoch: u64, steps: u64, done: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(epoch.to_string());
    bar.set_position(done);
    bar
}

/// `--prior identity`'s start: every covered conv at the Dirac kernel, plus Gaussian noise of
/// standard deviation `noise` (seeded by `seed` and the conv's position).
fn init_at_centre(t: &mut Trainer, prior: &Prior, seed: u64, noise: f64) -> Result<()> {
    let covered: Vec<(String, Vec<usize>)> = t
        .params()
        .iter()
        .filter(|(k, (_, shape))| prior.applies_to(k, shape))
        .map(|(k, (_, shape))| (k.clone(), shape.clone()))
        .collect();
    for (i, (k, shape)) in covered.iter().enumerate() {
        let [o, ci, kh, kw] = shape[..] else {
            continue;
        };
        let mut centre = dirac(o, ci, kh, kw)?;
        if noise > 0.0 {
            let z = gaussian_noise(seed, i as u64, centre.len(), noise);
            centre.iter_mut().zip(z).for_each(|(c, z)| *c += z);
        }
        if let Some(w) = t.param_mut(k) {
            *w = centre;
        }
    }
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
