//! The subcommands.

use crate::{Cli, Command, PreprocessArgs, limits, weights};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_image::Preprocess;
use resnet_models::timing::{median_min, time_iters};
use resnet_models::{
    Arch, Backend, CifarConfig, CifarShortcut, Edsr, Plan, Precision, ResNet, ResNetConfig,
    Strictness, WeightFile, edsr_plan, infer_arch, top_k,
};
use resnet_tensor::{Layout, Tensor};
use resnet_weights::{WeightSource, write_safetensors};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// What every model-running command takes from the global options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opts {
    /// `--threads` (default: all cores).
    pub(crate) threads: Option<usize>,
    /// `--precision`.
    pub(crate) precision: Precision,
}

pub fn run(cli: Cli) -> Result<()> {
    let threads = cli.threads.map(usize::from);
    let precision = match cli.precision {
        crate::PrecisionArg::F32 => Precision::F32,
        crate::PrecisionArg::Bf16 => Precision::Bf16,
    };
    let opts = Opts { threads, precision };
    let training = matches!(
        cli.command,
        Command::Train(_) | Command::Bench { train: true, .. }
    );
    if training && precision != Precision::F32 {
        bail!(
            "training runs in f32; --precision {precision} applies to classify, embed, forward, \
             enhance, eval and bench (without --train)"
        );
    }
    match cli.command {
        Command::Classify {
            inputs,
            weights,
            top,
            labels,
            batch,
            json,
            pre,
        } => {
            // Cheap checks first, before loading the weights.
            let mut skips = Skips::new(inputs.strict);
            let paths = expand(&inputs.images, inputs.recursive, &mut skips)?;
            skips.single_image(paths.len());
            check_preprocess(&pre)?;
            let labels = match labels {
                Some(p) => Some(read_labels(&p)?),
                None => None,
            };
            let Loaded { model, meta } = load_model(&weights.weights, opts)?;
            let names = class_names(labels, &model, &meta)?;
            let pre = preprocess(&pre, &model, &meta)?;
            let batch = usize::from(batch).min(paths.len());
            check_batch_memory(&model, &pre, batch)?;
            for_batches(&paths, batch, &pre, &mut skips, |chunk, x| {
                let logits = model.forward(&x)?;
                for (path, row) in chunk.iter().zip(top_k(&logits, top)?) {
                    if json {
                        let v = json!({
                            "path": path.display().to_string(),
                            "indices": row.iter().map(|r| r.0).collect::<Vec<_>>(),
                            "names": names.as_ref().map(|n| {
                                row.iter().map(|r| n[r.0].as_str()).collect::<Vec<_>>()
                            }),
                            "probabilities": row.iter().map(|r| round_sig(r.1)).collect::<Vec<_>>(),
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
            })?;
            skips.finish(paths.len())
        }
        Command::Embed {
            inputs,
            weights,
            output,
            batch,
            pre,
        } => {
            let mut skips = Skips::new(inputs.strict);
            let paths = expand(&inputs.images, inputs.recursive, &mut skips)?;
            skips.single_image(paths.len());
            check_preprocess(&pre)?;
            check_writable(&output)?;
            let Loaded { model, meta } = load_model(&weights.weights, opts)?;
            let pre = preprocess(&pre, &model, &meta)?;
            let batch = usize::from(batch).min(paths.len());
            check_batch_memory(&model, &pre, batch)?;
            let dim = model.config().feature_dim();
            let mut rows = Vec::new();
            let mut done: Vec<String> = Vec::new();
            for_batches(&paths, batch, &pre, &mut skips, |chunk, x| {
                rows.extend_from_slice(model.forward_features(&x)?.as_slice());
                done.extend(chunk.iter().map(|p| p.display().to_string()));
                Ok(())
            })?;
            if done.is_empty() {
                return skips.finish(paths.len());
            }
            let t = Tensor::from_vec(&[done.len(), dim], rows)?;
            let meta = HashMap::from([
                ("paths".to_string(), serde_json::to_string(&done)?),
                ("arch".to_string(), model.config().name()),
            ]);
            write_safetensors(&output, &[("embeddings", &t)], Some(meta))?;
            eprintln!(
                "wrote {} embeddings of {dim} values to {}",
                done.len(),
                output.display()
            );
            skips.finish(paths.len())
        }
        Command::Enhance {
            input,
            output,
            weights,
            tile,
            overlap,
        } => {
            // Everything that can fail cheaply fails before the network runs.
            check_writable(&output)?;
            let format = image_output_format(&output)?;
            let writer = AtomicOutput::create(&output)?;
            let img = resnet_image::decode_file(&input)?.to_rgb8();
            let model = load_edsr(&weights.weights, opts)?;
            let (w, h) = img.dimensions();
            let halo = overlap.map_or_else(|| model.halo(), |o| o as usize);
            let tile = limits::tile_size(tile, halo);
            check_edsr_memory(&model, [1, 3, h as usize, w as usize], tile, halo)?;
            let range = model.config().rgb_range / 255.0;
            let x = resnet_image::rgb_to_tensor(&img, range)?;
            drop(img);
            let bar = ProgressBar::new(0);
            bar.set_style(ProgressStyle::with_template(
                "{bar:30} {pos}/{len} tiles {eta}",
            )?);
            let t0 = Instant::now();
            let y = model.forward_tiled_with_progress(&x, tile, Some(halo), |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            drop(x);
            let out = resnet_image::tensor_to_rgb(&y, range)?;
            drop(y);
            let (ow, oh) = out.dimensions();
            writer.write(|path| {
                out.save_with_format(path, format)
                    .map_err(std::io::Error::other)
            })?;
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
            if edsr && stages {
                bail!(
                    "--stages writes a classifier's stem, layer1 … and pool; {} holds EDSR \
                     super-resolution weights, whose forward writes the key `output` only: \
                     leave out --stages",
                    path.display()
                );
            }
            check_writable(&output)?;
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
            let dims = x.shape().dims4();
            if edsr {
                let model = load_edsr(&weights.weights, opts)?;
                let tile = limits::tile_size(tile, model.halo());
                if let Some(d) = dims
                    && d[1] == model.config().channels
                {
                    check_edsr_memory(&model, d, tile, model.halo())?;
                }
                out.push(("output".into(), model.forward_tiled(&x, tile)?));
            } else {
                let model = load_model(&weights.weights, opts)?.model;
                // An input the plan does not fit is left to the model's own error.
                if let Some(d) = dims
                    && let Ok(need) = limits::forward_bytes(model.plan(), d)
                {
                    limits::check_memory(
                        need,
                        &format!("{} on an input of {d:?}", model.config().name()),
                        "give a smaller input (fewer images, or smaller ones)",
                    )?;
                }
                if stages {
                    let s = model.forward_stages(&x)?;
                    for (name, t) in s.named() {
                        out.push((name, t.clone()));
                    }
                } else {
                    out.push(("logits".into(), model.forward(&x)?));
                }
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
        Command::Convert { input, output } => convert(&input, &output),
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
            opts,
            json,
        ),
        Command::Train(args) => crate::train::train(&args, threads),
        Command::Eval(args) => crate::eval::eval(&args, opts),
    }
}

/// A classification network and its file's metadata (normalisation, class names).
pub(crate) struct Loaded {
    pub(crate) model: ResNet,
    pub(crate) meta: HashMap<String, String>,
}

pub(crate) fn load_model(spec: &str, opts: Opts) -> Result<Loaded> {
    let path = weights::resolve(spec)?;
    let file = WeightFile::open(&path).with_context(|| path.display().to_string())?;
    if is_edsr(&file) {
        bail!(
            "{} holds EDSR super-resolution weights, not a classifier: use `resnet enhance IN.png \
             OUT.png --weights {}` (or `resnet forward` on tensors)",
            path.display(),
            path.display()
        );
    }
    let model = ResNet::from_source_with(&file, Backend::Fast, opts.precision)
        .with_context(|| path.display().to_string())?;
    let model = match opts.threads {
        Some(t) => model.with_threads(t)?,
        None => model,
    };
    Ok(Loaded {
        model,
        meta: file.metadata().clone(),
    })
}

/// The naming scheme to report, or `None` for a file none of whose tensors has a ResNet or
/// EDSR parameter name (not a model).
fn scheme(file: &WeightFile) -> Option<String> {
    if is_edsr(file) {
        Some("EDSR reference code".into())
    } else if file.names().iter().any(|n| is_model_name(n)) {
        Some(file.scheme().to_string())
    } else {
        None
    }
}

/// Whether an internal (torchvision-mapped) tensor name is a ResNet or EDSR parameter's.
fn is_model_name(name: &str) -> bool {
    let head = name.split('.').next().unwrap_or("");
    let layer = head
        .strip_prefix("layer")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    layer
        || matches!(
            head,
            "conv1" | "bn1" | "fc" | "head" | "body" | "tail" | "sub_mean" | "add_mean"
        )
}

/// How many unmapped tensor names `inspect` lists (`--json` lists all).
const UNMAPPED_SHOWN: usize = 20;

/// Whether a weights file is an EDSR network (by its key names).
fn is_edsr(file: &WeightFile) -> bool {
    file.contains("head.0.weight") && file.contains("tail.1.weight")
}

fn load_edsr(spec: &str, opts: Opts) -> Result<Edsr> {
    let path = weights::resolve(spec)?;
    let model = Edsr::from_file_with(&path, Backend::Fast, opts.precision)
        .with_context(|| path.display().to_string())?;
    match opts.threads {
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
        (
            resnet_models::imagenet::CLASSES.map(String::from).to_vec(),
            "labels",
        )
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
            // A grey pixel has R = G = B: three equal values are the one value.
            (3, 1) if v[0] == v[1] && v[1] == v[2] => Ok([v[0]; 3]),
            (n, c) => bail!(
                "{from} has {n} values for a network of {c} input channel(s) (a greyscale \
                 network takes one value, or three equal ones)"
            ),
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

/// Images that could not be read: reported on stderr and counted, or the end of the run
/// (`--strict`, or a run of one image, where there is nothing else to go on with).
pub(crate) struct Skips {
    strict: bool,
    skipped: usize,
}

impl Skips {
    fn new(strict: bool) -> Self {
        Self { strict, skipped: 0 }
    }

    /// A run of one image stops at its error: nothing else would be lost.
    fn single_image(&mut self, images: usize) {
        self.strict |= images == 1;
    }

    /// Report `e` and go on, or return it with `--strict`.
    fn skip(&mut self, e: anyhow::Error, bar: &ProgressBar) -> Result<()> {
        if self.strict {
            return Err(e);
        }
        self.skipped += 1;
        bar.suspend(|| eprintln!("warning: {} (skipped)", crate::one_line(&e)));
        Ok(())
    }

    /// The run's result: an error when something was skipped.
    fn finish(&self, total: usize) -> Result<()> {
        match self.skipped {
            0 => Ok(()),
            n => bail!(
                "{n} of {total} images could not be read and were skipped (see above); the \
                 others were processed (--strict stops at the first error)"
            ),
        }
    }
}

fn is_image(f: &Path) -> bool {
    f.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
}

/// The image files in `dir` (sorted), and with `recursive` in its subfolders (each folder's
/// files, then its subfolders', in name order; symbolic links to folders are not followed).
/// Returns whether `dir` has subfolders that were not walked.
fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>, skips: &mut Skips) -> Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            let e = anyhow!("cannot read directory {}: {e}", dir.display());
            skips.skip(e, &ProgressBar::hidden())?;
            return Ok(false);
        }
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if real_dir {
            dirs.push(path);
        } else if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    dirs.sort();
    out.extend(files);
    if !recursive {
        return Ok(!dirs.is_empty());
    }
    for d in dirs {
        walk(&d, true, out, skips)?;
    }
    Ok(false)
}

/// Files as given, and the image files of directories (sorted; `recursive`: with their
/// subfolders'), in order.
fn expand(inputs: &[PathBuf], recursive: bool, skips: &mut Skips) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    let mut unwalked = false;
    for p in inputs {
        if p.is_dir() {
            unwalked |= walk(p, recursive, &mut out, skips)?;
            dirs.push(p.display().to_string());
        } else if p.is_file() {
            out.push(p.clone());
        } else if p.to_str().is_some_and(|t| t.parse::<f32>().is_ok()) {
            bail!(
                "{} does not exist (values of --mean and --std are separated by commas: \
                 --mean 0.5,0.5,0.5)",
                p.display()
            );
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        let hint = if unwalked {
            " (-r to look in subfolders too)"
        } else {
            ""
        };
        bail!(
            "no images found in {} (files ending in .{}){hint}",
            dirs.join(", "),
            IMAGE_EXTENSIONS.join(", .")
        );
    }
    Ok(out)
}

/// An image error naming the file (most already do).
fn image_error(path: &Path, e: resnet_image::ImageError) -> anyhow::Error {
    let name = path.display().to_string();
    if e.to_string().contains(&name) {
        anyhow::Error::new(e)
    } else {
        anyhow::Error::new(e).context(name)
    }
}

/// Preprocess and run `paths` in batches of up to `batch` images, with a progress bar when
/// there is more than one batch. An image that cannot be read is left out of its batch and
/// reported through `skips` (or ends the run, with `--strict`); `f` sees the images of each
/// batch that could be read.
fn for_batches(
    paths: &[PathBuf],
    batch: usize,
    pre: &Preprocess,
    skips: &mut Skips,
    mut f: impl FnMut(&[&PathBuf], Tensor) -> Result<()>,
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
    for chunk in paths.chunks(batch.max(1)) {
        let mut good = Vec::with_capacity(chunk.len());
        let mut data = Vec::new();
        let mut dims = [0usize; 4];
        for p in chunk {
            match pre.load(p) {
                Ok(t) => {
                    if let Some(d) = t.shape().dims4() {
                        dims = d;
                    }
                    data.extend_from_slice(t.as_slice());
                    good.push(p);
                }
                Err(e) => skips.skip(image_error(p, e), &bar)?,
            }
        }
        if !good.is_empty() {
            let x = Tensor::from_vec(&[good.len(), dims[1], dims[2], dims[3]], data)?;
            bar.suspend(|| f(&good, x))?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Refuse a batch of `batch` preprocessed images whose forward pass would not fit in memory.
fn check_batch_memory(model: &ResNet, pre: &Preprocess, batch: usize) -> Result<()> {
    let [h, w] = pre.crop.unwrap_or([0, 0]).map(|s| s as usize);
    let dims = [batch, pre.channels(), h, w];
    limits::check_memory(
        limits::forward_bytes(model.plan(), dims)?,
        &format!(
            "{} on {} of {w}x{h}",
            model.config().name(),
            if batch == 1 {
                "one image".to_string()
            } else {
                format!("batches of {batch} images")
            }
        ),
        "use a smaller --batch, --crop or --size",
    )
}

/// Refuse an EDSR run on `dims` in tiles of `tile` (with `halo` pixels of overlap) whose
/// input, output and per-tile activations would not fit in memory.
fn check_edsr_memory(model: &Edsr, dims: [usize; 4], tile: usize, halo: usize) -> Result<()> {
    let [n, c, h, w] = dims;
    let s = model.config().scale;
    let grown = |side: usize| side.min(tile + 2 * halo);
    let per_tile = limits::forward_bytes(model.plan(), [1, c, grown(h), grown(w)])?;
    // The input, the output tensor and the 8-bit output image.
    let images = (n as u64)
        .saturating_mul((c * h * w) as u64)
        .saturating_mul(4 + 4 * (s * s) as u64 + (s * s) as u64);
    limits::check_memory(
        per_tile.saturating_add(images),
        &format!("super-resolving a {w}x{h} image x{s} in tiles of {tile} pixels"),
        "use a smaller --tile, or a smaller image",
    )
}

/// Fail early when `path` cannot be written: its folder must exist and it must not be a
/// folder itself.
fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write {}: it is a directory", path.display());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: the directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The image format `path`'s extension names, if this build can write it.
fn image_output_format(path: &Path) -> Result<image::ImageFormat> {
    let formats = "png, jpg, webp, bmp, gif, tif";
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        bail!(
            "cannot write {}: no file extension to choose the image format by ({formats})",
            path.display()
        );
    };
    match image::ImageFormat::from_extension(ext) {
        Some(f)
            if f.writing_enabled()
                && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) =>
        {
            Ok(f)
        }
        _ => bail!(
            "cannot write {}: .{ext} is not an image format this program writes ({formats})",
            path.display()
        ),
    }
}

/// An output file written atomically: a temporary file beside it, created up front (so a
/// folder that cannot be written fails before any work), renamed over it at the end, removed
/// if the run fails.
struct AtomicOutput {
    path: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl AtomicOutput {
    fn create(path: &Path) -> Result<Self> {
        check_writable(path)?;
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("cannot write {}: not a file name", path.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            done: false,
        })
    }

    /// Write the temporary file with `write`, then move it to the output path.
    fn write(mut self, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
        write(&self.tmp)
            .and_then(|()| std::fs::rename(&self.tmp, &self.path))
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A probability rounded to 6 significant digits, for JSON (`0.123457`, not the f32's
/// `0.12345679104328156` as f64).
fn round_sig(p: f32) -> f64 {
    let p = f64::from(p);
    if p == 0.0 || !p.is_finite() {
        return p;
    }
    let scale = 10f64.powi(5 - p.abs().log10().floor() as i32);
    (p * scale).round() / scale
}

/// `resnet convert IN OUT.safetensors`: the file's tensors, as they are, in safetensors.
fn convert(spec: &str, output: &Path) -> Result<()> {
    let path = weights::resolve(spec)?;
    if output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "{}: the output of convert is a safetensors file; give it a name ending in \
             .safetensors",
            output.display()
        );
    }
    check_writable(output)?;
    if let (Ok(a), Ok(b)) = (path.canonicalize(), output.canonicalize())
        && a == b
    {
        bail!(
            "{} is both the input and the output: write the safetensors file elsewhere",
            output.display()
        );
    }
    let file = WeightFile::open(&path).with_context(|| path.display().to_string())?;
    file.to_safetensors(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "wrote {} tensor(s) from {} ({}) to {}",
        file.tensors().count(),
        path.display(),
        file.format(),
        output.display()
    );
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
    if scheme(&file).is_none() {
        found.arch = Err(format!(
            "not a model: none of its {} tensor(s) has a ResNet (torchvision/timm, HF \
             transformers) or EDSR parameter name",
            file.names().len()
        ));
        found.unmapped = file
            .names()
            .into_iter()
            .map(|n| file.file_name(&n))
            .collect();
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
            "format": file.format().to_string(),
            "scheme": scheme(file),
            "model": scheme(file).is_some(),
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
    out!("format:       {}", file.format());
    match scheme(file) {
        Some(s) => out!("naming:       {s}"),
        None => out!("naming:       none (not a model file)"),
    }
    out!("tensors:      {}", tensors.len());
    out!("parameters:   {params} ({:.1} M)", *params as f64 / 1e6);
    match &arch {
        Ok(a) => out!("architecture: {a}"),
        Err(e) => out!("architecture: not recognised: {e}"),
    }
    if unmapped.is_empty() {
        out!("unmapped:     none");
    } else {
        out!("unmapped:     {} tensor(s):", unmapped.len());
        for name in unmapped.iter().take(UNMAPPED_SHOWN) {
            out!("  {name}");
        }
        if unmapped.len() > UNMAPPED_SHOWN {
            out!(
                "  … and {} more (--json lists them all)",
                unmapped.len() - UNMAPPED_SHOWN
            );
        }
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
    opts: Opts,
    json_out: bool,
) -> Result<()> {
    let model = match weights {
        Some(w) => load_model(w, opts)?.model,
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
            let m = ResNet::random_with(&cfg, 0, Backend::Fast, opts.precision)?;
            match opts.threads {
                Some(t) => m.with_threads(t)?,
                None => m,
            }
        }
    };
    let channels = model.config().in_channels();
    let dims = [batch, channels, size, size];
    limits::check_memory(
        limits::forward_bytes(model.plan(), dims)?,
        &format!(
            "{} on a batch of {batch} at {size}x{size}",
            model.config().name()
        ),
        "use a smaller --batch or --size",
    )?;
    let x = Tensor::try_zeros_with_layout(&dims, Layout::Nchw)?;
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
                "precision": model.precision().to_string(),
            })
        );
    } else {
        out!(
            "{name} batch {batch} threads {} {size}x{size} {}: median {:.2} ms, min {:.2} ms, {:.1} images/s, {:.1} GFLOP/s ({})",
            model.threads(),
            model.precision(),
            median * 1e3,
            min * 1e3,
            batch as f64 / median,
            flop / median / 1e9,
            model.cpu().level()
        );
    }
    Ok(())
}
