//! `resnet train --data`: the training data of a run (a tensors file or a dataset), the
//! batches of each epoch, and the per-epoch metrics files.

use anyhow::{Context, Result, anyhow, bail};
use resnet_models::WeightFile;
use resnet_tensor::Tensor;
use resnet_train::checkpoint::data_fingerprint;
use resnet_train::data::{self, Augment, Dataset, Loader, Normalize, Split};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The schemes `--data` takes, for messages.
pub(crate) const SCHEMES: &str = "fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, folder:DIR (one subfolder of images per class; DIR/train and DIR/val if present), tensors:FILE (a safetensors file with `input` NCHW floats and `labels` integers)";

/// Where a run's examples come from.
pub(crate) enum TrainData {
    /// `tensors:FILE`: given inputs, read in order, no shuffling or augmentation.
    Tensors {
        path: PathBuf,
        x: Tensor,
        labels: Vec<usize>,
    },
    /// A dataset of bytes: shuffled, augmented and normalised; its test split evaluated.
    Set {
        /// `fashion-mnist`, `mnist`, `cifar10`, `cifar100`.
        scheme: String,
        dir: PathBuf,
        train: Dataset,
        test: Dataset,
    },
}

impl TrainData {
    /// Read `--data SPEC`, keeping the first `subset` training examples of a dataset.
    pub(crate) fn open(
        spec: &str,
        subset: Option<usize>,
        test_subset: Option<usize>,
        crop: usize,
    ) -> Result<Self> {
        let Some((scheme, rest)) = spec.split_once(':') else {
            bail!("--data {spec:?} names no scheme; one of {SCHEMES}");
        };
        if rest.is_empty() {
            bail!("--data {spec:?}: no path after `{scheme}:`");
        }
        let path = PathBuf::from(rest);
        let read = |f: &dyn Fn(&Path) -> Result<Split, data::DataError>| -> Result<Self> {
            let split = f(&path).with_context(|| format!("--data {spec}"))?;
            let train = match subset {
                Some(n) => split.train.subset(n),
                None => split.train,
            };
            let test = match test_subset {
                Some(n) => split.test.subset(n),
                None => split.test,
            };
            Ok(Self::Set {
                scheme: scheme.to_owned(),
                dir: path.clone(),
                train,
                test,
            })
        };
        match scheme {
            "tensors" => {
                if subset.is_some() || test_subset.is_some() {
                    bail!("--subset and --test-subset apply to datasets, not to tensors:FILE");
                }
                let (x, labels) = load_tensors(&path)?;
                Ok(Self::Tensors { path, x, labels })
            }
            "fashion-mnist" => read(&|p| data::fashion_mnist(p)),
            "mnist" => read(&|p| data::mnist(p)),
            "cifar10" => read(&|p| data::cifar10(p)),
            "cifar100" => read(&|p| data::cifar100(p)),
            // Images kept as squares of 8/7 the input (256 for 224: torchvision's Resize(256)
            // + CenterCrop(224) at evaluation), the input cut from them.
            "folder" => read(&|p| data::image_folder(p, crop * 8 / 7)).map(|d| match d {
                Self::Set {
                    scheme,
                    dir,
                    train,
                    test,
                } => Self::Set {
                    scheme,
                    dir,
                    train: train.with_input_size(crop),
                    test: test.with_input_size(crop),
                },
                t => t,
            }),
            _ => bail!("--data: unknown scheme {scheme:?}; one of {SCHEMES}"),
        }
    }

    /// `[examples, channels, height, width]` of the training data.
    pub(crate) fn dims(&self) -> [usize; 4] {
        match self {
            Self::Tensors { x, .. } => x.shape().dims4().expect("checked by load_tensors"),
            Self::Set { train, .. } => {
                let [c, h, w] = train.input_dims();
                [train.len(), c, h, w]
            }
        }
    }

    /// The dataset's number of classes (none for tensors: their labels need not cover them).
    pub(crate) fn classes(&self) -> Option<usize> {
        match self {
            Self::Tensors { .. } => None,
            Self::Set { train, .. } => Some(train.classes()),
        }
    }

    /// The names of a dataset's classes, in label order.
    pub(crate) fn class_names(&self) -> Option<Vec<String>> {
        const FASHION: [&str; 10] = [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ];
        const CIFAR10: [&str; 10] = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ];
        let names: Vec<String> = match self {
            Self::Set { train, .. } if train.class_names().is_some() => {
                train.class_names().map(<[String]>::to_vec)?
            }
            Self::Set { scheme, .. } => match scheme.as_str() {
                "fashion-mnist" => FASHION.iter().map(|s| s.to_string()).collect(),
                "cifar10" => CIFAR10.iter().map(|s| s.to_string()).collect(),
                "mnist" => (0..10).map(|d| d.to_string()).collect(),
                _ => return None,
            },
            Self::Tensors { .. } => return None,
        };
        Some(names)
    }

    /// The largest label and its row (tensors only: a dataset's reader checks its labels).
    pub(crate) fn max_label(&self) -> Option<(usize, usize)> {
        match self {
            Self::Tensors { labels, .. } => labels
                .iter()
                .copied()
                .enumerate()
                .max_by_key(|&(_, l)| l)
                .map(|(i, l)| (l, i)),
            Self::Set { .. } => None,
        }
    }

    /// The digest a checkpoint keeps, to refuse resuming on other data.
    pub(crate) fn fingerprint(&self) -> String {
        match self {
            Self::Tensors { x, labels, .. } => data_fingerprint(&self.dims(), x.as_slice(), labels),
            Self::Set { train, .. } => train.fingerprint(),
        }
    }

    /// The spec a recipe records, with an absolute path.
    pub(crate) fn spec(&self) -> String {
        let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or(p.to_owned());
        match self {
            Self::Tensors { path, .. } => format!("tensors:{}", abs(path).display()),
            Self::Set { scheme, dir, .. } => format!("{scheme}:{}", abs(dir).display()),
        }
    }

    /// Where the data is, for messages.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Tensors { path, .. } => path,
            Self::Set { dir, .. } => dir,
        }
    }

    /// Whether this is a dataset (shuffled, augmented, evaluated) rather than tensors.
    pub(crate) fn is_dataset(&self) -> bool {
        matches!(self, Self::Set { .. })
    }

    /// The default batch: 128 for datasets (He et al.'s), all rows for tensors.
    pub(crate) fn default_batch(&self) -> usize {
        match self {
            Self::Tensors { .. } => self.dims()[0],
            Self::Set { train, .. } => train.len().min(128),
        }
    }

    /// The per-channel normalisation of a dataset (from its training examples), or the one a
    /// checkpoint recorded.
    pub(crate) fn normalize(&self, saved: Option<&(Vec<f64>, Vec<f64>)>) -> Option<Normalize> {
        match (self, saved) {
            (Self::Tensors { .. }, _) => None,
            (Self::Set { .. }, Some((mean, std))) => Some(Normalize {
                mean: mean.clone(),
                std: std.clone(),
            }),
            // Image folders are for fine-tuning ImageNet nets: ImageNet's normalisation.
            (Self::Set { scheme, .. }, None) if scheme == "folder" => Some(Normalize {
                mean: resnet_image::IMAGENET_MEAN
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect(),
                std: resnet_image::IMAGENET_STD
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect(),
            }),
            (Self::Set { train, .. }, None) => Some(Normalize::from_dataset(train)),
        }
    }

    /// The batches of every epoch.
    pub(crate) fn feed(
        self,
        batch: usize,
        augment: bool,
        norm: Option<Normalize>,
        seed: u64,
    ) -> Result<Feed> {
        Ok(match self {
            Self::Tensors { x, labels, .. } => Feed::Tensors(batches(&x, &labels, batch)?),
            Self::Set { train, test, .. } => {
                let norm = norm.expect("datasets are normalised");
                let aug = if augment {
                    Augment::he_et_al()
                } else {
                    Augment::none()
                };
                Feed::Set {
                    loader: Loader::new(train, norm.clone(), aug, batch, seed)?,
                    test,
                    norm,
                }
            }
        })
    }
}

/// `tensors:FILE`: the inputs and their labels.
fn load_tensors(path: &Path) -> Result<(Tensor, Vec<usize>)> {
    let ctx = || format!("--data {}", path.display());
    let file = WeightFile::open(path).with_context(ctx)?;
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
    Ok((x, labels))
}

/// The batches of an epoch of tensors: consecutive rows, `batch` at a time.
fn batches(x: &Tensor, labels: &[usize], batch: usize) -> Result<Vec<(Tensor, Vec<usize>)>> {
    let [n, c, h, w] = x.shape().dims4().expect("checked by load_tensors");
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

/// The batches of a run, epoch by epoch.
pub(crate) enum Feed {
    /// Tensors: the same batches every epoch.
    Tensors(Vec<(Tensor, Vec<usize>)>),
    /// A dataset: a seeded loader, the test split and the normalisation.
    Set {
        loader: Loader,
        test: Dataset,
        norm: Normalize,
    },
}

impl Feed {
    /// Optimiser steps per epoch.
    pub(crate) fn steps_per_epoch(&self) -> u64 {
        match self {
            Self::Tensors(b) => b.len() as u64,
            Self::Set { loader, .. } => loader.steps_per_epoch() as u64,
        }
    }

    /// Epoch `epoch`'s (0-based) batches from step `from` of it on.
    pub(crate) fn epoch(
        &self,
        epoch: u64,
        from: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Vec<usize>)>> + '_> {
        match self {
            Self::Tensors(b) => Box::new(b[from.min(b.len())..].iter().map(|b| Ok(b.clone()))),
            Self::Set { loader, .. } => Box::new(
                loader
                    .epoch(epoch, from)
                    .map(|b| b.map(|b| (b.input, b.labels)).map_err(Into::into)),
            ),
        }
    }
}

/// One epoch's line of `metrics.jsonl` / `metrics.csv`.
pub(crate) struct EpochMetrics {
    pub epoch: u64,
    pub step: u64,
    pub train_loss: f64,
    pub train_error: f64,
    pub test_loss: f64,
    pub test_error: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub eval_seconds: f64,
}

const CSV_HEADER: &str =
    "epoch,step,train_loss,train_error,test_loss,test_error,lr,seconds,images_per_s,eval_seconds";

impl EpochMetrics {
    fn json(&self) -> Value {
        json!({
            "epoch": self.epoch, "step": self.step,
            "train_loss": self.train_loss, "train_error": self.train_error,
            "test_loss": self.test_loss, "test_error": self.test_error,
            "lr": self.lr, "seconds": self.seconds, "images_per_s": self.images_per_s,
            "eval_seconds": self.eval_seconds,
        })
    }

    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{:.3},{:.1},{:.3}",
            self.epoch,
            self.step,
            self.train_loss,
            self.train_error,
            self.test_loss,
            self.test_error,
            self.lr,
            self.seconds,
            self.images_per_s,
            self.eval_seconds
        )
    }
}

/// `DIR/metrics.jsonl` and `DIR/metrics.csv`, one line per epoch.
pub(crate) struct MetricsFiles {
    dir: PathBuf,
}

impl MetricsFiles {
    /// The files in `dir`: started afresh, or (resuming at the end of epoch `kept`) cut back to
    /// the epochs up to `kept`, so an epoch replayed after a crash is not listed twice.
    pub(crate) fn open(dir: &Path, kept: Option<u64>) -> Result<Self> {
        let this = Self {
            dir: dir.to_owned(),
        };
        let (jsonl, csv) = this.paths();
        let keep = |line: &str, epoch_of: &dyn Fn(&str) -> Option<u64>| {
            kept.is_some_and(|k| epoch_of(line).is_some_and(|e| e <= k))
        };
        let json_epoch = |l: &str| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
        };
        let csv_epoch = |l: &str| l.split(',').next().and_then(|e| e.parse().ok());
        let old = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let lines: String = old(&jsonl)
            .lines()
            .filter(|l| keep(l, &json_epoch))
            .map(|l| format!("{l}\n"))
            .collect();
        write_file(&jsonl, &lines)?;
        let rows: String = std::iter::once(CSV_HEADER.to_owned())
            .chain(
                old(&csv)
                    .lines()
                    .skip(1)
                    .filter(|l| keep(l, &csv_epoch))
                    .map(str::to_owned),
            )
            .map(|l| format!("{l}\n"))
            .collect();
        write_file(&csv, &rows)?;
        Ok(this)
    }

    fn paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("metrics.jsonl"), self.dir.join("metrics.csv"))
    }

    /// Append one epoch to both files.
    pub(crate) fn append(&self, m: &EpochMetrics) -> Result<()> {
        let (jsonl, csv) = self.paths();
        for (path, line) in [(jsonl, m.json().to_string()), (csv, m.csv())] {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Gaussian noise of standard deviation `std` (Box-Muller on a seeded stream).
pub(crate) fn gaussian_noise(seed: u64, stream: u64, len: usize, std: f64) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let u = |k: u64| {
                let h = data::mix_seed(seed, &[2, stream, i as u64, k]);
                ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (u1, u2) = (u(0), u(1));
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}
