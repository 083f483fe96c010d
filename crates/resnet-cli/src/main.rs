//! `resnet`: run residual networks from safetensors weights or PyTorch checkpoints on the
//! command line.
//!
//! ```text
//! resnet classify cat.jpg dog.png --weights hf:timm/resnet18.tv_in1k --top 5
//! resnet embed photos/ --weights resnet50.safetensors --output embeddings.safetensors
//! resnet forward --weights w.safetensors --input x.safetensors --output y.safetensors --stages
//! resnet inspect w.safetensors
//! resnet convert resnet18-f37072fd.pth resnet18.safetensors
//! resnet enhance small.png big.png --weights edsr_baseline_x2.safetensors --tile 192
//! resnet bench --arch resnet50 --batch 8 --threads 2 --json
//! resnet train --model cifar-resnet20 --classes 10 --data tensors:batch.safetensors --steps 10 --save w.safetensors
//! resnet train --resume runs/a --epochs 20 --save w.safetensors
//! ```
//!
//! Errors are one line on stderr (the error and its causes) and exit code 1; usage errors exit
//! with 2.

#![forbid(unsafe_code)]

mod commands;
mod eval;
mod limits;
mod train;
mod train_bench;
mod train_data;
mod weights;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run ResNet-family networks on the CPU from safetensors weights or PyTorch checkpoints.
#[derive(Debug, Parser)]
#[command(name = "resnet", version, about, long_about = None, arg_required_else_help = true)]
pub struct Cli {
    /// Worker threads, 1 to 1024 (default: all cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Arithmetic of the convolutions and the classifier (classify, embed, forward, enhance,
    /// eval, bench): f32, or bf16 products with f32 sums where the CPU has AVX512-BF16 (about
    /// 1e-2 relative to f32; an error elsewhere). Training is f32 only.
    #[arg(long, global = true, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    #[command(subcommand)]
    command: Command,
}

/// `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 throughout (the default).
    F32,
    /// bf16 convolutions, f32 sums (AVX512-BF16 only).
    Bf16,
}

/// Where the weights come from.
#[derive(Debug, Args)]
pub struct WeightsArg {
    /// Weights: a safetensors file or a PyTorch checkpoint (`.pth`/`.pt`/`.bin` from
    /// torch.save, read without running its pickle), with torchvision, timm or HF transformers
    /// names; or `hf:REPO[/FILE]` to download from the Hugging Face Hub (FILE defaults to
    /// model.safetensors).
    #[arg(long, short = 'w', value_name = "FILE|hf:REPO[/FILE]")]
    weights: String,
}

/// The images of `classify` and `embed`, and what to do with one that cannot be read.
#[derive(Debug, Args)]
pub struct ImageInputs {
    /// Image files or directories (JPEG, PNG, WebP, BMP, GIF, TIFF; a directory's images in
    /// name order).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Also take the images in the subfolders of directories (at any depth).
    #[arg(long, short = 'r')]
    recursive: bool,
    /// Stop at the first image that cannot be read. By default such an image is reported on
    /// stderr and skipped, every other one is processed, and the exit code is 1 at the end.
    #[arg(long)]
    strict: bool,
}

/// Image preprocessing options. torchvision nets get torchvision's ImageNet evaluation
/// transform by default; CIFAR nets (`resnet train --model cifar-…`) their own size and channels
/// (see `classify --help`).
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Resize the short side to this many pixels [default: 256; CIFAR nets: the crop size].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
    resize: Option<u32>,
    /// Center-crop to this square size [default: 224; CIFAR nets: 28 for a 1-channel net, 32
    /// for a 3-channel one].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
    crop: Option<u32>,
    /// Resize the short side to N and center-crop N x N (sets --resize and --crop at once).
    #[arg(long, value_name = "N", conflicts_with_all = ["resize", "crop"],
          value_parser = clap::value_parser!(u32).range(1..=16384))]
    size: Option<u32>,
    /// Per-channel mean: R,G,B (`--mean 0.5,0.5,0.5`), or one value for all channels
    /// (`--mean 0.5`); a greyscale net takes one value, or three equal ones [default:
    /// ImageNet's 0.485,0.456,0.406 for torchvision nets; CIFAR nets: the file's metadata
    /// `mean`, else 0].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, like --mean [default: ImageNet's 0.229,0.224,0.225 for
    /// torchvision nets; CIFAR nets: the file's metadata `std`, else 1].
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
}

/// The prior on the weights (`--prior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorArg {
    /// Weight decay toward zero (the optimiser's --weight-decay).
    Zero,
    /// `lambda / 2 * ||W - Dirac||^2` on every 3x3 conv but the stem, which get no weight decay.
    Identity,
}

/// `resnet train`'s options.
///
/// With `--resume`, every recipe option left out (model, classes, data, batch, optimiser,
/// prior, seed) is taken from the checkpoint, and one that is given must agree with it.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Architecture: cifar-resnetN (shortcut option A), cifar-resnetN-b (option B),
    /// cifar-plainN (N = 6n + 2), or a torchvision name (resnet18, resnet50, …).
    #[arg(long, required_unless_present = "resume")]
    model: Option<String>,
    /// Number of classes (required unless --init's fc.weight or --resume fixes it).
    #[arg(long)]
    classes: Option<usize>,
    /// Start from this state_dict (safetensors, torchvision names; `param.<k>` keys accepted);
    /// with --classes other than its classifier's, a new seeded classifier (fine-tuning);
    /// default: seeded random weights (--seed).
    #[arg(
        long,
        visible_alias = "weights",
        value_name = "FILE",
        conflicts_with = "resume"
    )]
    init: Option<PathBuf>,
    /// Training data: `fashion-mnist:DIR`, `mnist:DIR` (the four IDX files, gzipped or not),
    /// `cifar10:DIR`, `cifar100:DIR` (the binary version), shuffled each epoch from --seed,
    /// augmented (pad 4, random crop, flip) and normalised per channel, the test split
    /// evaluated after every epoch; `folder:DIR` (one subfolder of images per class,
    /// DIR/train and DIR/val when present; random resized crops and flips, ImageNet's
    /// normalisation); or `tensors:FILE`, a safetensors file with `input` (NCHW
    /// floats) and `labels` (integers), read in order, without shuffling or augmentation.
    #[arg(long, value_name = "SCHEME:PATH", required_unless_present = "resume")]
    data: Option<String>,
    /// Train on the first N examples of the dataset only.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    subset: Option<u64>,
    /// For folder:DIR: the side of the square inputs (a random resized crop and flip for
    /// training, the centre for evaluation, from images resized to 8/7 of it) [default: 224].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    crop: Option<u32>,
    /// Fine-tuning: only the classifier learns; the rest runs as in inference (batch-norm in
    /// eval mode, its statistics untouched).
    #[arg(long)]
    freeze_backbone: bool,
    /// Evaluate on the first N examples of the test split only (all by default).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    test_subset: Option<u64>,
    /// No augmentation of dataset batches (they are still shuffled and normalised).
    #[arg(long)]
    no_augment: bool,
    /// Learning-rate schedule over the run's steps: `he` (divided by 10 at 50% and 75%, He et
    /// al.'s), `cosine` (to zero) or `constant` [default: he for datasets, constant for
    /// tensors].
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Also write a checkpoint every N steps (besides every epoch's end), so a killed run
    /// loses at most N steps.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: Option<u64>,
    /// Optimiser steps of the whole run (a resumed run continues up to N).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "epochs", required_unless_present = "epochs")]
    steps: Option<u32>,
    /// Passes over the data of the whole run, ceil(examples / --batch) steps each (a resumed
    /// run continues up to N).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: Option<u32>,
    /// Examples per step [default: 128 for datasets (the last incomplete batch of an epoch
    /// dropped); for tensors all rows, one step per epoch (consecutive rows, the last batch
    /// possibly smaller)].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// The optimiser: `sgd` (torch.optim.SGD) or `adamw` (torch.optim.AdamW) [default: sgd].
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Learning rate [default: 0.1 for SGD, 1e-3 for AdamW].
    #[arg(long)]
    lr: Option<f64>,
    /// Linear learning-rate warm-up over this many steps, from a tenth of the rate; the
    /// schedule then spans the remaining steps [default: none].
    #[arg(long, value_name = "STEPS")]
    warmup: Option<u64>,
    /// AdamW's moment decay rates, `BETA1,BETA2` [default: 0.9,0.999].
    #[arg(long, value_name = "B1,B2", value_parser = parse_betas)]
    betas: Option<(f64, f64)>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay (SGD: added to the gradient, as torch.optim.SGD does; AdamW: decoupled)
    /// [default: 0.0001, He et al.'s, for SGD; 0.01, PyTorch's, for AdamW].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// The prior on the weights [default: zero].
    #[arg(long, value_enum)]
    prior: Option<PriorArg>,
    /// The identity prior's strength lambda (default 1e-3; --prior identity only).
    #[arg(long, value_name = "X")]
    prior_lambda: Option<f64>,
    /// With --prior identity, where the covered convs start: `centre` (the Dirac kernel, the
    /// prior's mode, plus --prior-noise) or `random` (the seeded initialisation, or --init's
    /// weights) [default: centre, but --init's weights when given].
    #[arg(long, value_enum)]
    prior_init: Option<PriorInitArg>,
    /// Standard deviation of Gaussian noise added to the Dirac kernel by --prior-init centre
    /// [default: 0].
    #[arg(long, value_name = "X")]
    prior_noise: Option<f64>,
    /// Seed of the random weights (without --init), of the data order and of the augmentation
    /// [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Write the trained state_dict here (safetensors, written atomically).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["out", "resume"])]
    save: Option<PathBuf>,
    /// Write a checkpoint (state_dict, optimiser state, recipe, progress) to
    /// `DIR/checkpoint-step<N>.safetensors` at the end of every epoch and of the run, and the
    /// latest state_dict alone to DIR/model.safetensors; for datasets also one line per epoch
    /// to DIR/metrics.jsonl and DIR/metrics.csv (train loss/error, test loss/error, lr,
    /// seconds, images/s) [default with --resume: its DIR].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from the latest checkpoint in DIR (the highest step), bitwise as if the run
    /// had not stopped.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Also write one JSON line per step here: {"step", "epoch", "loss", "lr", "ms"}
    /// (appended to when resuming).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Kernel set: `fast` (SIMD, threads) or `naive` (the f64-accumulating reference kernels,
    /// one thread: slow, for checking).
    #[arg(long, value_enum, default_value_t = KernelsArg::Fast)]
    kernels: KernelsArg,
}

/// `resnet eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    weights: WeightsArg,
    /// The data: `fashion-mnist:DIR`, `mnist:DIR`, `cifar10:DIR`, `cifar100:DIR`, `folder:DIR`.
    #[arg(long, value_name = "SCHEME:DIR")]
    data: String,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// For folder:DIR, the side of the centre crop the network sees (images are first resized
    /// to 8/7 of it, as torchvision's Resize(256) + CenterCrop(224)) [default: the crop the
    /// weights' metadata records, else 224].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    crop: Option<u32>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Print one JSON object (examples, error, loss, confusion, classes) instead of text.
    #[arg(long)]
    json: bool,
}

/// `resnet eval --split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The held-out test split.
    Test,
    /// The training split.
    Train,
}

/// `resnet train --optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// `torch.optim.SGD` (momentum, Nesterov, weight decay added to the gradient).
    Sgd,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
}

impl OptimizerArg {
    /// The name a recipe records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sgd => "sgd",
            Self::Adamw => "adamw",
        }
    }
}

/// `B1,B2` for `--betas`.
fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    match v.as_slice() {
        [a, b] => Ok((*a, *b)),
        _ => Err(format!("{s:?}: give two numbers, BETA1,BETA2")),
    }
}

/// `resnet train --schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// He et al.'s: the rate divided by 10 at 50% and 75% of the run's steps.
    He,
    /// Cosine annealing to zero over the run's steps.
    Cosine,
    /// The same rate throughout.
    Constant,
}

impl ScheduleArg {
    /// The name a recipe records.
    pub fn name(self) -> &'static str {
        match self {
            Self::He => "he",
            Self::Cosine => "cosine",
            Self::Constant => "constant",
        }
    }
}

/// `resnet train --prior-init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorInitArg {
    /// At the prior's centre (the Dirac kernel), plus --prior-noise.
    Centre,
    /// The seeded random initialisation.
    Random,
}

/// The kernel set of `resnet train` (`--kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelsArg {
    /// SIMD kernels on NHWC activations, on --threads threads.
    Fast,
    /// The reference kernels (NCHW, f64 accumulation), one thread.
    Naive,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify images: the top-k classes with probabilities.
    ///
    /// Class names: --labels, else the file's metadata `classes` (a JSON array of names), else
    /// ImageNet's for a 1000-class torchvision net, else the class indices.
    ///
    /// Preprocessing: torchvision nets get the ImageNet evaluation transform (resize 256, crop
    /// 224, ImageNet mean/std). A network with one input channel gets greyscale input (PIL's
    /// luma), one with three RGB. CIFAR nets (He et al.'s, as `resnet train` saves them) work
    /// at any size; they get images resized (short side) and center-cropped to 28 pixels for a
    /// 1-channel net, 32 for a 3-channel one (--size to change), scaled to [0, 1] and
    /// normalised with the metadata `mean`/`std` (JSON arrays) when the file records them,
    /// else not at all: how a trained net's input was normalised is not known otherwise, so
    /// pass --mean/--std if it was.
    Classify {
        #[command(flatten)]
        inputs: ImageInputs,
        #[command(flatten)]
        weights: WeightsArg,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// A file with one class name per line (default: the file's metadata `classes`, or
        /// the ImageNet classes for a 1000-class torchvision net, or class indices).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Images per forward pass.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
        /// One JSON object per image (path, indices, names or null, probabilities) instead of
        /// text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pre: PreprocessArgs,
    },
    /// Write the pooled embedding of each image (one row per image) to a safetensors file
    /// (preprocessing as in classify).
    Embed {
        #[command(flatten)]
        inputs: ImageInputs,
        #[command(flatten)]
        weights: WeightsArg,
        /// Output safetensors file (key `embeddings`, image paths in the metadata).
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Images per forward pass.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
        #[command(flatten)]
        pre: PreprocessArgs,
    },
    /// Super-resolve an image with EDSR weights (any format the image crate reads and writes).
    Enhance {
        /// Input image.
        input: PathBuf,
        /// Output image (format from the extension; 8-bit, rounded and clamped).
        output: PathBuf,
        #[command(flatten)]
        weights: WeightsArg,
        /// Tile size in input pixels (each tile is grown by the overlap on every side;
        /// smaller than 4 or than half the overlap, it is raised to that).
        #[arg(long, default_value_t = 192, value_parser = clap::value_parser!(u32).range(1..))]
        tile: u32,
        /// Overlap between tiles in input pixels (default: the receptive field, which makes the
        /// result that of untiled processing up to float rounding, far below one 8-bit step;
        /// less is faster but shows at tile borders).
        #[arg(long)]
        overlap: Option<u32>,
    },
    /// Run the model on an NCHW f32 tensor from a safetensors file and write the logits
    /// (and with --stages every stage); with EDSR weights, the key `output` (RGB, 0..255).
    Forward {
        #[command(flatten)]
        weights: WeightsArg,
        /// Input safetensors file.
        #[arg(long, short = 'i')]
        input: PathBuf,
        /// Key of the input tensor (default: the file's only tensor).
        #[arg(long)]
        key: Option<String>,
        /// Output safetensors file.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Also write stem, layer1 … layer4 (layer3 for a CIFAR net) and pool (classifiers
        /// only: with EDSR weights, which have no such stages, it is an error).
        #[arg(long)]
        stages: bool,
        /// EDSR weights: tile size in input pixels (at least 4 and half the receptive field).
        #[arg(long, default_value_t = 192, value_parser = clap::value_parser!(u32).range(1..))]
        tile: u32,
    },
    /// Describe a weights file: tensors, dtypes, shapes, parameters, naming scheme,
    /// architecture, and what could not be mapped.
    Inspect {
        /// The safetensors file (or hf:REPO[/FILE]).
        file: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also print the plan the network runs: one step a line, with the dims each step
        /// produces on a batch of one image of --size pixels.
        #[arg(long)]
        plan: bool,
        /// Input size (square) for --plan.
        #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(1..65537))]
        size: u32,
    },
    /// Convert a weights file (a PyTorch checkpoint, `.pth`/`.pt`/`.bin`, or safetensors) to
    /// safetensors: every tensor under its key in the file, with its element type, and the
    /// file's metadata; written atomically.
    Convert {
        /// The weights file (or hf:REPO[/FILE]).
        input: String,
        /// The safetensors file to write (ending in .safetensors).
        output: PathBuf,
    },
    /// Time forward passes of one configuration: the median and the fastest of the timed
    /// passes, after one untimed warm-up pass.
    Bench {
        /// Architecture with seeded random weights (ignored with --weights): a torchvision
        /// name (resnet18, resnet50, …; 1000 classes) or a CIFAR net (cifar-resnet20,
        /// cifar-resnet56-b, cifar-plain20, …; 10 classes, 3 input channels).
        #[arg(long, default_value = "resnet18")]
        arch: String,
        /// Time a real weights file instead.
        #[arg(long, short = 'w')]
        weights: Option<String>,
        /// Batch size.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
        /// Timed iterations (after one untimed warm-up pass).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        iters: u32,
        /// Input size (square).
        #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(1..4097))]
        size: u32,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
        /// Time training steps (forward, backward, SGD update) instead of forward passes;
        /// `--arch` then also takes the CIFAR nets (`cifar-resnet20`, `cifar-plain56`, …).
        #[arg(long)]
        train: bool,
        /// Input channels (with --train).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
        channels: u16,
    },
    /// Train with SGD on a dataset or on tensors (the fast kernels, on --threads threads) and
    /// save the state_dict, checkpoints and per-epoch metrics.
    Train(Box<TrainArgs>),
    /// Evaluate a classifier on a dataset's test split: error, mean cross-entropy and the
    /// confusion matrix.
    Eval(EvalArgs),
}

/// An error and its causes on one line, `outer: cause: cause`, like `{:#}`, but without a cause
/// whose text is already on the line: several library errors print their source in their own
/// message as well as returning it from `source()`.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read x.png: {}", self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn the_chain_is_one_line() {
        let e = Err::<(), _>(not_found())
            .context("labels.txt")
            .context("cannot read labels")
            .unwrap_err();
        assert_eq!(one_line(&e), "cannot read labels: labels.txt: no such file");
        assert_eq!(one_line(&anyhow::anyhow!("plain")), "plain");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = anyhow::Error::new(Wrapper(not_found())).context("x.png");
        assert_eq!(one_line(&e), "x.png: cannot read x.png: no such file");
        assert_eq!(
            format!("{e:#}"),
            "x.png: cannot read x.png: no such file: no such file"
        );
    }
}
