//! The subcommands.

use crate::{Cli, Command, PreprocessArgs, weights};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_image::Preprocess;
use resnet_models::timing::{median_min, time_iters};
use resnet_models::{
    Arch, CifarConfig, CifarShortcut, Edsr, Plan, ResNet, ResNetConfig, Strictness, WeightFile,
    edsr_plan, infer_arch, top_k,
};
use resnet_tensor::{Layout, Tensor};
use resnet_weights::{WeightSource, write_safetensors};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const IMAGENET_CLASSES: &str = include_str!("../data/imagenet_classes.txt");
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Print a line to stdout; a closed pipe (`resnet ... | head`) ends the program quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::Error::new(e).context("cannot write to stdout"));
        }
    }};
}

pub fn run(cli: Cli) -> Result<()> {
    let threads = cli.threads.map(usize::from);
    match cli.command {
        Command::Classify {
            images,
            weights,
            top,
            labels,
            batch,
            json,
            pre,
        } => {
            // Cheap checks first, before loading the weights.
            let paths = expand(&images)?;
            check_preprocess(&pre)?;
            let labels = match labels {
                Some(p) => Some(read_labels(&p)?),
                None => None,
            };
            let Loaded { model, meta } = load_model(&weights.weights, threads)?;
            let names = class_names(labels, &model, &meta)?;
            let pre = preprocess(&pre, &model, &meta)?;
            for_batches(&paths, usize::from(batch), &pre, |chunk, x| {
                let logits = model.forward(&x)?;
                for (path, row) in chunk.iter().zip(top_k(&logits, top)?) {
                    if json {
                        let v = json!({
                            "path": path.display().to_string(),
                            "indices": row.iter().map(|r| r.0).collect::<Vec<_>>(),
                            "names": names.as_ref().map(|n| {
                                row.iter().map(|r| n[r.0].as_str()).collect::<Vec<_>>()
                            }),
                            "probabilities": row.iter().map(|r| r.1).collect::<Vec<_>>(),
                        });
                        out!("{v}");
                    } else {
                        out!("{}", path.display());
                        for (rank, (class, p)) in row.iter().enumerate() {
                            match &names {
                                Some(n) => {
                                    out!("  {:>2}. {p:.4}  {} ({class})", rank + 1, n[*class])
                                }
                                None => out!("  {:>2}. {p:.4}  class {class}", rank + 1),
                            }
                        }
                    }
                }
                Ok(())
            })
        }
        Command::Embed {
            images,
            weights,
            output,
            batch,
            pre,
        } => {
            let paths = expand(&images)?;
            check_preprocess(&pre)?;
            let Loaded { model, meta } = load_model(&weights.weights, threads)?;
            let pre = preprocess(&pre, &model, &meta)?;
            let dim = model.config().feature_dim();
            let mut rows = Vec::with_capacity(paths.len() * dim);
            for_batches(&paths, usize::from(batch), &pre, |_, x| {
                rows.extend_from_slice(model.forward_features(&x)?.as_slice());
                Ok(())
            })?;
            let t = Tensor::from_vec(&[paths.len(), dim], rows)?;
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            let meta = HashMap::from([
                ("paths".to_string(), serde_json::to_string(&names)?),
                ("arch".to_string(), model.config().name()),
            ]);
            write_safetensors(&output, &[("embeddings", &t)], Some(meta))?;
            eprintln!(
                "wrote {} embeddings of {dim} values to {}",
                paths.len(),
                output.display()
            );
            Ok(())
        }
        Command::Enhance {
            input,
            output,
            weights,
            tile,
            overlap,
        } => {
            let img = resnet_image::decode_file(&input)?.to_rgb8();
            let model = load_edsr(&weights.weights, threads)?;
            let (w, h) = img.dimensions();
            let range = model.config().rgb_range / 255.0;
            let x = resnet_image::rgb_to_tensor(&img, range)?;
            let bar = ProgressBar::new(0);
            bar.set_style(ProgressStyle::with_template(
                "{bar:30} {pos}/{len} tiles {eta}",
            )?);
            let t0 = Instant::now();
            let y = model.forward_tiled_with_progress(
                &x,
                tile as usize,
                overlap.map(|o| o as usize),
                |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            let out = resnet_image::tensor_to_rgb(&y, range)?;
            let (ow, oh) = out.dimensions();
            out.save(&output)
                .with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!(
                "{}x{} -> {}x{} in {:.2} s, wrote {}",
                w,
                h,
                ow,
                oh,
                t0.elapsed().as_secs_f64(),
                output.display()
            );
            Ok(())
        }
        Command::Forward {
            weights,
            input,
            key,
            output,
            stages,
            tile,
        } => {
            let path = weights::resolve(&weights.weights)?;
            let probe = WeightFile::open(&path).with_context(|| path.display().to_string())?;
            let edsr = is_edsr(&probe);
            drop(probe);
            let file = WeightFile::open(&input).with_context(|| input.display().to_string())?;
            let key = match key {
                Some(k) => k,
                None => {
                    let names = file.names();
                    match names.as_slice() {
                        [only] => only.clone(),
                        _ => {
                            bail!(
                                "{} holds {} tensors ({}): choose one with --key",
                                input.display(),
                                names.len(),
                                names.join(", ")
                            );
                        }
                    }
                }
            };
            let x = file.load(&key)?;
            let mut out: Vec<(String, Tensor)> = Vec::new();
            if edsr {
                let model = load_edsr(&weights.weights, threads)?;
                out.push(("output".into(), model.forward_tiled(&x, tile as usize)?));
            } else if stages {
                let model = load_model(&weights.weights, threads)?.model;
                let s = model.forward_stages(&x)?;
                for (name, t) in s.named() {
                    out.push((name, t.clone()));
                }
            } else {
                let model = load_model(&weights.weights, threads)?.model;
                out.push(("logits".into(), model.forward(&x)?));
            }
            let list: Vec<(&str, &Tensor)> = out.iter().map(|(n, t)| (n.as_str(), t)).collect();
            write_safetensors(&output, &list, None)?;
            eprintln!(
                "wrote {} to {}",
                out.iter()
                    .map(|o| o.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                output.display()
            );
            Ok(())
        }
        Command::Inspect {
            file,
            json,
            plan,
            size,
        } => inspect(&file, json, plan.then_some(size as usize)),
        Command::Bench {
            arch,
            batch,
            iters,
            size,
            json,
            train: true,
            channels,
            ..
        } => crate::train_bench::bench_train(&crate::train_bench::TrainBench {
            arch: &arch,
            batch: usize::from(batch),
            channels: usize::from(channels),
            size: size as usize,
            iters: iters as usize,
            threads: threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            json,
        }),
        Command::Bench {
            arch,
            weights,
            batch,
            iters,
            size,
            json,
            ..
        } => bench(
            &arch,
            weights.as_deref(),
            usize::from(batch),
            iters as usize,
            size as usize,
            threads,
            json,
        ),
        Command::Train(args) => crate::train::train(&args, threads),
        Command::Eval(args) => crate::eval::eval(&args, threads),
    }
}

/// A classification network and its file's metadata (normalisation, class names).
pub(crate) struct Loaded {
    pub(crate) model: ResNet,
    pub(crate) meta: HashMap<String, String>,
}

pub(crate) fn load_model(spec: &str, threads: Option<usize>) -> Result<Loaded> {
    let path = weights::resolve(spec)?;
    let file = WeightFile::open(&path).with_context(|| path.display().to_string())?;
    let model = ResNet::from_source(&file).with_context(|| path.display().to_string())?;
    let model = match threads {
        Some(t) => model.with_threads(t)?,
        None => model,
    };
    Ok(Loaded {
        model,
        meta: file.metadata().clone(),
    })
}

/// The naming scheme to report.
fn scheme(file: &WeightFile) -> String {
    if is_edsr(file) {
        "EDSR reference code".into()
    } else {
        file.scheme().to_string()
    }
}

/// Whether a weights file is an EDSR network (by its key names).
fn is_edsr(file: &WeightFile) -> bool {
    file.contains("head.0.weight") && file.contains("tail.1.weight")
}

fn load_edsr(spec: &str, threads: Option<usize>) -> Result<Edsr> {
    let path = weights::resolve(spec)?;
    let model = Edsr::from_file(&path).with_context(|| path.display().to_string())?;
    match threads {
        Some(t) => Ok(model.with_threads(t)?),
        None => Ok(model),
    }
}

/// One class name per non-empty line of `text`.
fn label_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read labels {}", path.display()))?;
    Ok(label_lines(&text))
}

/// A metadata value that is a JSON array, each element converted by `item`, or `None` when
/// absent.
pub(crate) fn meta_array<T>(
    meta: &HashMap<String, String>,
    key: &str,
    what: &str,
    item: impl Fn(&serde_json::Value) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let Some(v) = meta.get(key) else {
        return Ok(None);
    };
    serde_json::from_str::<serde_json::Value>(v)
        .ok()
        .and_then(|j| j.as_array()?.iter().map(&item).collect::<Option<Vec<T>>>())
        .map(Some)
        .ok_or_else(|| anyhow!("the file's metadata {key} = {v:?} is not a JSON array of {what}"))
}

/// Class names: `--labels`, the metadata `classes`, ImageNet's for a 1000-class torchvision
/// net, or none (indices are printed).
fn class_names(
    labels: Option<Vec<String>>,
    model: &ResNet,
    meta: &HashMap<String, String>,
) -> Result<Option<Vec<String>>> {
    let classes = model.config().num_classes();
    let (names, from) = if let Some(l) = labels {
        (l, "labels")
    } else if let Some(m) = meta_array(meta, "classes", "names", |v| v.as_str().map(String::from))?
    {
        (m, "names in the file's metadata classes")
    } else if model.config().resnet().is_some() && classes == 1000 {
        (label_lines(IMAGENET_CLASSES), "labels")
    } else {
        return Ok(None);
    };
    if names.len() != classes {
        bail!(
            "{} {from} for a model with {classes} classes (use --labels FILE)",
            names.len()
        );
    }
    Ok(Some(names))
}

/// Early checks of the preprocessing options (before any weights are loaded).
fn check_preprocess(a: &PreprocessArgs) -> Result<()> {
    for (flag, v) in [("--mean", &a.mean), ("--std", &a.std)] {
        if let Some(v) = v
            && !matches!(v.len(), 1 | 3)
        {
            bail!("{flag} takes one value or three (R,G,B), got {}", v.len());
        }
    }
    if a.std
        .as_ref()
        .is_some_and(|v| v.iter().any(|s| *s == 0.0 || !s.is_finite()))
    {
        bail!("--std must be finite and non-zero");
    }
    if a.mean
        .as_ref()
        .is_some_and(|v| v.iter().any(|m| !m.is_finite()))
    {
        bail!("--mean must be finite");
    }
    Ok(())
}

/// The preprocessing for `model`: the options given, else the family's defaults (torchvision:
/// ImageNet's transform; CIFAR nets: 28 or 32 pixels and the file's metadata `mean`/`std`, or
/// no normalisation, said on stderr). One input channel means greyscale.
fn preprocess(
    a: &PreprocessArgs,
    model: &ResNet,
    meta: &HashMap<String, String>,
) -> Result<Preprocess> {
    let arch = model.config();
    let channels = arch.in_channels();
    if !matches!(channels, 1 | 3) {
        bail!(
            "{} takes {channels} input channels; images give 1 (greyscale) or 3 (RGB): use resnet \
             forward on tensors",
            arch.name()
        );
    }
    let cifar = arch.cifar().is_some();
    let (resize, crop) = match (a.size, cifar) {
        (Some(n), _) => (n, n),
        (None, false) => (a.resize.unwrap_or(256), a.crop.unwrap_or(224)),
        (None, true) => {
            let crop = a.crop.unwrap_or(if channels == 1 { 28 } else { 32 });
            (a.resize.unwrap_or(crop), crop)
        }
    };
    // Mean and std: the options, the metadata, ImageNet's for torchvision RGB nets, or none.
    let imagenet = !cifar && channels == 3;
    let mut unknown = Vec::new();
    let mut pick = |flag: &str,
                    given: &Option<Vec<f32>>,
                    key: &str,
                    imagenet_value: [f32; 3],
                    neutral: f32|
     -> Result<[f32; 3]> {
        let stored = meta_array(meta, key, "numbers", |v| v.as_f64().map(|x| x as f32))?;
        let (v, from) = match (given, stored) {
            (Some(v), _) => (v.clone(), flag.to_string()),
            (None, Some(v)) => (v, format!("the file's metadata {key}")),
            (None, None) if imagenet => (imagenet_value.to_vec(), String::new()),
            (None, None) => {
                unknown.push(key.to_string());
                (vec![neutral], String::new())
            }
        };
        match (v.len(), channels) {
            (1, _) => Ok([v[0]; 3]),
            (3, 3) => Ok([v[0], v[1], v[2]]),
            (n, c) => bail!("{from} has {n} values for a network of {c} input channel(s)"),
        }
    };
    let mean = pick("--mean", &a.mean, "mean", resnet_image::IMAGENET_MEAN, 0.0)?;
    let std = pick("--std", &a.std, "std", resnet_image::IMAGENET_STD, 1.0)?;
    if std.iter().any(|s| *s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
        bail!(
            "the normalisation must be finite with a non-zero std, got mean {mean:?}, std {std:?}"
        );
    }
    if !unknown.is_empty() {
        eprintln!(
            "note: the weights' metadata records no input normalisation ({}): {} gets pixels in \
             [0, 1] with mean {:?} and std {:?}; pass --mean/--std if it was trained on \
             normalised input",
            unknown.join(", "),
            arch.name(),
            &mean[..channels],
            &std[..channels]
        );
    }
    Ok(Preprocess::imagenet()
        .with_resize(Some(resize))
        .with_crop(Some(crop))
        .with_mean_std(mean, std)
        .with_grayscale(channels == 1))
}

/// Files as given, and the image files of directories (sorted), in order.
fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                            IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no images found");
    }
    Ok(out)
}

/// Preprocess and run `paths` in batches, with a progress bar when there is more than one batch.
fn for_batches(
    paths: &[PathBuf],
    batch: usize,
    pre: &Preprocess,
    mut f: impl FnMut(&[PathBuf], Tensor) -> Result<()>,
) -> Result<()> {
    let bar = if paths.len() > batch {
        let b = ProgressBar::new(paths.len() as u64);
        b.set_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images {eta}",
        )?);
        b
    } else {
        ProgressBar::hidden()
    };
    for chunk in paths.chunks(batch) {
        let x = pre.load_batch(chunk)?;
        bar.suspend(|| f(chunk, x))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// What `inspect` found out about a file.
struct Inspection<'a> {
    path: &'a Path,
    file: &'a WeightFile,
    params: usize,
    tensors: Vec<TensorRow>,
    arch: std::result::Result<String, String>,
    unmapped: Vec<String>,
    /// The plan, with the input dims to describe it on, when asked for.
    plan: Option<(Plan, [usize; 4])>,
}

fn inspect(spec: &str, json_out: bool, plan_size: Option<usize>) -> Result<()> {
    let path = weights::resolve(spec)?;
    let file = WeightFile::open(&path).with_context(|| path.display().to_string())?;
    let mut params = 0usize;
    let mut tensors = Vec::new();
    for (name, info) in file.tensors() {
        let n: usize = info.shape.iter().product();
        if !resnet_weights::is_ignorable(name) {
            params += n;
        }
        tensors.push((
            info.file_name.clone(),
            name.to_string(),
            info.dtype.to_string(),
            info.shape.clone(),
        ));
    }
    tensors.sort();
    let mut found = Inspection {
        path: &path,
        file: &file,
        params,
        tensors,
        arch: Err(String::new()),
        unmapped: Vec::new(),
        plan: None,
    };
    let dims = |c: usize, s: usize| [1, c, s, s];
    if is_edsr(&file) {
        match Edsr::infer_config(&file) {
            Ok(cfg) => {
                let tracked = resnet_weights::Tracked::new(&file);
                match Edsr::load(&tracked, &cfg) {
                    Ok(_) => {
                        found.arch = Ok(format!(
                            "edsr x{} ({} residual blocks, {} features, res_scale {}, rgb_range {})",
                            cfg.scale, cfg.n_resblocks, cfg.n_feats, cfg.res_scale, cfg.rgb_range
                        ));
                        found.unmapped = tracked.unused();
                    }
                    Err(e) => found.arch = Err(e.to_string()),
                }
                if let Some(s) = plan_size {
                    found.plan = Some((edsr_plan(&cfg)?, dims(cfg.channels, s)));
                }
            }
            Err(e) => found.arch = Err(e.to_string()),
        }
        return print_inspect(&found, json_out);
    }
    match infer_arch(&file) {
        Ok(arch) => {
            match ResNet::load_checked(&file, &arch, Strictness::Lenient) {
                Ok((_, unused)) => {
                    found.arch = Ok(describe(&arch));
                    found.unmapped = unused;
                }
                Err(e) => found.arch = Err(e.to_string()),
            }
            if let Some(s) = plan_size {
                found.plan = Some((arch.plan()?, dims(arch.in_channels(), s)));
            }
        }
        Err(e) => {
            found.arch = Err(e.to_string());
            found.unmapped = file
                .names()
                .into_iter()
                .map(|n| file.file_name(&n))
                .collect();
        }
    }
    print_inspect(&found, json_out)
}

type TensorRow = (String, String, String, Vec<usize>);

fn print_inspect(found: &Inspection<'_>, json_out: bool) -> Result<()> {
    let Inspection {
        path,
        file,
        params,
        tensors,
        arch,
        unmapped,
        plan,
    } = found;
    let plan = match plan {
        Some((p, d)) => Some(
            p.describe(*d)
                .with_context(|| format!("the plan does not fit an input of {d:?}"))?,
        ),
        None => None,
    };
    if json_out {
        let v = json!({
            "file": path.display().to_string(),
            "scheme": scheme(file),
            "parameters": params,
            "tensors": tensors.iter().map(|(f, _, d, s)| json!({"name": f, "dtype": d, "shape": s})).collect::<Vec<_>>(),
            "architecture": arch.as_ref().ok(),
            "architecture_error": arch.as_ref().err(),
            "unmapped": unmapped,
            "metadata": file.metadata(),
            "plan": plan.as_ref().map(|p| p.lines().collect::<Vec<_>>()),
        });
        out!("{v}");
        return Ok(());
    }
    out!("file:         {}", path.display());
    out!("naming:       {}", scheme(file));
    out!("tensors:      {}", tensors.len());
    out!("parameters:   {params} ({:.1} M)", *params as f64 / 1e6);
    match &arch {
        Ok(a) => out!("architecture: {a}"),
        Err(e) => out!("architecture: not recognised: {e}"),
    }
    if unmapped.is_empty() {
        out!("unmapped:     none");
    } else {
        out!(
            "unmapped:     {} tensor(s): {}",
            unmapped.len(),
            unmapped.join(", ")
        );
    }
    for (k, v) in file.metadata() {
        out!("metadata:     {k} = {v}");
    }
    out!();
    for (file_name, canonical, dtype, shape) in tensors {
        let mapped = if file_name == canonical {
            String::new()
        } else {
            format!("  -> {canonical}")
        };
        out!("{file_name:60} {dtype:5} {shape:?}{mapped}");
    }
    if let Some(plan) = plan {
        out!();
        out!("plan (step, then the dims it produces):");
        for line in plan.lines() {
            out!("  {line}");
        }
    }
    Ok(())
}

fn describe(arch: &Arch) -> String {
    if let Some(c) = arch.cifar() {
        let widths: Vec<String> = (0..3).map(|s| ((16 << s) * c.width).to_string()).collect();
        return format!(
            "{} (He et al.'s CIFAR net: {} blocks per stage, widths {}, {}, {} classes, {} input \
             channels)",
            c.name(),
            (c.depth - 2) / 6,
            widths.join("/"),
            match c.shortcut {
                CifarShortcut::A => "shortcut option A (subsample and zero channels)",
                CifarShortcut::B => "shortcut option B (1x1 conv + BN projections)",
                CifarShortcut::None => "no shortcuts (plain)",
            },
            c.num_classes,
            c.in_channels
        );
    }
    let Some(c) = arch.resnet() else {
        return arch.name();
    };
    format!(
        "{} ({:?} blocks {:?}, groups {}, width/group {}, {} classes, {} input channels{})",
        c.name(),
        c.block,
        c.layers,
        c.groups,
        c.width_per_group,
        c.num_classes,
        c.in_channels,
        if c.shortcuts { "" } else { ", no shortcuts" }
    )
}

#[allow(clippy::too_many_arguments)]
fn bench(
    arch: &str,
    weights: Option<&str>,
    batch: usize,
    iters: usize,
    size: usize,
    threads: Option<usize>,
    json_out: bool,
) -> Result<()> {
    let model = match weights {
        Some(w) => load_model(w, threads)?.model,
        None => {
            let cfg: Arch = match (
                ResNetConfig::by_name(arch, 1000),
                CifarConfig::from_name(arch, 10),
            ) {
                (Some(c), _) => c.into(),
                (None, Some(c)) => c.into(),
                (None, None) => bail!(
                    "unknown --arch {arch:?}; known: {}, {}",
                    ResNetConfig::NAMES.join(", "),
                    CifarConfig::NAME_FORMS
                ),
            };
            let m = ResNet::random(&cfg, 0)?;
            match threads {
                Some(t) => m.with_threads(t)?,
                None => m,
            }
        }
    };
    let channels = model.config().in_channels();
    let x = Tensor::zeros_with_layout(&[batch, channels, size, size], Layout::Nchw)?;
    let flop: f64 = model
        .profile(&x.image(0)?.to_tensor())?
        .iter()
        .map(|l| 2.0 * l.macs as f64)
        .sum::<f64>()
        * batch as f64;
    let times = time_iters(iters, || model.forward(&x).map(drop))?;
    let (median, min) = median_min(&times);
    let name = model.config().name();
    if json_out {
        out!(
            "{}",
            json!({
                "arch": name, "batch": batch, "threads": model.threads(), "size": size,
                "median_ms": median * 1e3, "min_ms": min * 1e3,
                "images_per_s": batch as f64 / median, "gflops": flop / median / 1e9,
                "simd": model.cpu().level().to_string(),
            })
        );
    } else {
        out!(
            "{name} batch {batch} threads {} {size}x{size}: median {:.2} ms, min {:.2} ms, {:.1} images/s, {:.1} GFLOP/s ({})",
            model.threads(),
            median * 1e3,
            min * 1e3,
            batch as f64 / median,
            flop / median / 1e9,
            model.cpu().level()
        );
    }
    Ok(())
}
