//! Training data: readers for IDX (MNIST, Fashion-MNIST) and the CIFAR-10/100 binary format,
//! per-channel normalisation, He et al.'s augmentation, and a [`Loader`] that prepares each
//! step's batch on a background thread.
//!
//! Every reader checks what a file claims against what it holds before it allocates: a header
//! that promises more images than the file has is [`DataError::Truncated`], never a large
//! allocation, and a label out of range is [`DataError::Label`].
//!
//! ```
//! use resnet_train::data::{Augment, Dataset, Loader, Normalize};
//!
//! // Eight 4x4 grey images of two classes, as a reader would give them.
//! let images = (0..8 * 16).map(|i| (i * 7 % 256) as u8).collect();
//! let train = Dataset::new("toy", [1, 4, 4], images, vec![0, 1, 0, 1, 1, 0, 1, 0], 2)?;
//! let norm = Normalize::from_dataset(&train);
//! let loader = Loader::new(train, norm, Augment::he_et_al(), 4, 7)?;
//! assert_eq!(loader.steps_per_epoch(), 2);
//! // Epoch 0's batches, from step 0, prepared on a background thread.
//! let batches: Vec<_> = loader.epoch(0, 0).collect::<Result<_, _>>()?;
//! assert_eq!(batches[0].input.shape().dims(), &[4, 1, 4, 4]);
//! // The same seed, epoch and step give the same batch, whenever it is asked for.
//! assert_eq!(loader.batch(0, 1)?.input.as_slice(), batches[1].input.as_slice());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cifar;
mod folder;
mod idx;
mod loader;

pub use cifar::{cifar10, cifar100, read_cifar_file};
pub use folder::image_folder;
pub use idx::{fashion_mnist, mnist, read_idx_images, read_idx_labels};
pub use loader::{Augment, Batch, EpochBatches, Loader, Normalize, mix_seed};

use std::path::{Path, PathBuf};

/// Errors from reading a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not start as its format requires.
    #[error("{}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The file ends before the data its header (or format) promises.
    #[error("{}: truncated: {expected} bytes of data expected, {found} found", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes there are.
        found: u64,
    },
    /// A label is not a class of the dataset.
    #[error("{}: label {label} of example {index} is out of range for {classes} classes", path.display())]
    Label {
        /// The file.
        path: PathBuf,
        /// The example.
        index: usize,
        /// Its label.
        label: usize,
        /// The number of classes.
        classes: usize,
    },
    /// Images and labels do not go together, or a dataset is empty or too large.
    #[error("{0}")]
    Mismatch(String),
    /// A batch could not be built.
    #[error(transparent)]
    Tensor(#[from] resnet_tensor::TensorError),
}

impl DataError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn format(path: &Path, what: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_owned(),
            what: what.into(),
        }
    }
}

/// The largest dataset a reader accepts: 2^33 bytes of pixels (8 GiB; ImageNet-1k at 64x64 is
/// 15 GB, far beyond what these in-memory readers are for).
pub const MAX_PIXELS: u64 = 1 << 33;

/// Labelled images held in memory as bytes: `n` examples of `[channels, height, width]`
/// pixels (NCHW, 0-255) and a class index each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    name: String,
    dims: [usize; 3],
    images: Vec<u8>,
    labels: Vec<u32>,
    classes: usize,
    class_names: Option<Vec<String>>,
    input_size: Option<usize>,
}

impl Dataset {
    /// A dataset from its pixels (`labels.len() * C * H * W` bytes, NCHW) and labels, each
    /// below `classes`.
    pub fn new(
        name: impl Into<String>,
        dims: [usize; 3],
        images: Vec<u8>,
        labels: Vec<u32>,
        classes: usize,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let per = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&p| p as u64 <= MAX_PIXELS)
            .ok_or_else(|| {
                DataError::Mismatch(format!("{name}: images of {dims:?} pixels are too large"))
            })?;
        if per == 0 {
            return Err(DataError::Mismatch(format!(
                "{name}: images of {dims:?} pixels are empty"
            )));
        }
        if labels.len().checked_mul(per) != Some(images.len()) {
            return Err(DataError::Mismatch(format!(
                "{name}: {} bytes of pixels for {} labels of {dims:?} images",
                images.len(),
                labels.len()
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= classes)
        {
            return Err(DataError::Label {
                path: PathBuf::from(&name),
                index: i,
                label: l as usize,
                classes,
            });
        }
        Ok(Self {
            name,
            dims,
            images,
            labels,
            classes,
            class_names: None,
            input_size: None,
        })
    }

    /// The classes' names, in label order (ignored unless there is one per class).
    pub fn with_class_names(mut self, names: Vec<String>) -> Self {
        if names.len() == self.classes {
            self.class_names = Some(names);
        }
        self
    }

    /// The classes' names, when known.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Feed the network `size` x `size` inputs cut from the stored images (at most their
    /// size): the centre for evaluation, a random resized crop (torchvision's
    /// `RandomResizedCrop`: 8% to 100% of the area, aspect ratio 3/4 to 4/3) for training
    /// with augmentation. Without this the input is the whole stored image.
    pub fn with_input_size(mut self, size: usize) -> Self {
        let [_, h, w] = self.dims;
        self.input_size = Some(size.clamp(1, h.min(w)));
        self
    }

    /// `[channels, height, width]` of the network's input.
    pub fn input_dims(&self) -> [usize; 3] {
        match self.input_size {
            Some(s) => [self.dims[0], s, s],
            None => self.dims,
        }
    }

    /// Where it came from (a path, or a name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[channels, height, width]` of every image.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Example `i`'s pixels (`C * H * W` bytes, channel-major).
    pub fn image(&self, i: usize) -> &[u8] {
        let per: usize = self.dims.iter().product();
        &self.images[i * per..(i + 1) * per]
    }

    /// Every label, in order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The first `n` examples (all of them if there are fewer), as `--subset N` takes them.
    pub fn subset(mut self, n: usize) -> Self {
        if n < self.len() {
            let per: usize = self.dims.iter().product();
            self.images.truncate(n * per);
            self.labels.truncate(n);
            self.name = format!("{} (first {n})", self.name);
        }
        self
    }

    /// A digest of the pixels and labels (FNV-1a, 64 bits): equal data, equal digest.
    pub fn fingerprint(&self) -> String {
        let mut h = crate::checkpoint::Fnv1a::new();
        for d in self.dims {
            h.eat(&(d as u64).to_le_bytes());
        }
        h.eat(&self.images);
        for l in &self.labels {
            h.eat(&l.to_le_bytes());
        }
        h.finish()
    }
}

/// A training set and its test set.
#[derive(Debug, Clone)]
pub struct Split {
    /// The examples to train on.
    pub train: Dataset,
    /// The held-out examples.
    pub test: Dataset,
}

/// Read a whole file, refusing one larger than `limit` bytes before reading it.
pub(crate) fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        return Err(DataError::format(path, "is a directory"));
    }
    if meta.len() > limit {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes is more than the {limit} a dataset file may have",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}
