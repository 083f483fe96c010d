//! Normalisation, augmentation and batching, seeded so that any step's batch can be rebuilt on
//! its own: a run resumed at step `k` of epoch `e` sees exactly the batches an uninterrupted
//! run saw.

use super::{DataError, Dataset};
use resnet_tensor::Tensor;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

/// A 64-bit hash of a seed and a path of counters (SplitMix64's finaliser applied along the
/// path): the random stream of one epoch's order or of one example's augmentation, reachable
/// directly, without replaying what came before.
///
/// ```
/// use resnet_train::data::mix_seed;
/// assert_eq!(mix_seed(7, &[1, 2]), mix_seed(7, &[1, 2]));
/// assert_ne!(mix_seed(7, &[1, 2]), mix_seed(7, &[2, 1]));
/// ```
pub fn mix_seed(seed: u64, path: &[u64]) -> u64 {
    let mut h = seed;
    for &p in std::iter::once(&0x5eed).chain(path) {
        h = (h ^ p).wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h
}

/// SplitMix64: a small, fast generator for shuffles and crop offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for the
    /// sizes here).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Per-channel normalisation of 0-255 pixels: `(v / 255 - mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Mean of each channel, on the `[0, 1]` scale.
    pub mean: Vec<f64>,
    /// Standard deviation of each channel, on the `[0, 1]` scale.
    pub std: Vec<f64>,
}

impl Normalize {
    /// Each channel's mean and (population) standard deviation over every pixel of `data`, as
    /// the usual recipe computes them on the training set. A constant channel gets std 1.
    pub fn from_dataset(data: &Dataset) -> Self {
        let [c, h, w] = data.dims();
        let mut count = vec![[0u64; 256]; c];
        for i in 0..data.len() {
            for (ch, plane) in data.image(i).chunks_exact(h * w).enumerate() {
                for &v in plane {
                    count[ch][usize::from(v)] += 1;
                }
            }
        }
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for hist in &count {
            let n: u64 = hist.iter().sum();
            let n = n.max(1) as f64;
            let m = hist
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 * k as f64)
                .sum::<f64>()
                / n;
            let var = hist
                .iter()
                .enumerate()
                .map(|(v, &k)| (v as f64 - m).powi(2) * k as f64)
                .sum::<f64>()
                / n;
            mean.push(m / 255.0);
            let s = var.sqrt() / 255.0;
            std.push(if s > 0.0 { s } else { 1.0 });
        }
        Self { mean, std }
    }

    /// Per channel `(a, b)` such that `v * a + b` normalises a (possibly interpolated) value.
    fn scale(&self) -> Vec<(f32, f32)> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| ((1.0 / (255.0 * s)) as f32, (-m / s) as f32))
            .collect()
    }

    /// The normalised value of every byte, per channel.
    fn table(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| {
                let mut t = [0.0f32; 256];
                for (v, o) in t.iter_mut().enumerate() {
                    *o = ((f64::from(v as f32 / 255.0) - m) / s) as f32;
                }
                t
            })
            .collect()
    }
}

/// Training-time augmentation: He et al.'s for CIFAR (`pad` zero pixels on every side, a random
/// crop back to the image's size, a horizontal flip with probability one half).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding before the random crop (0: no crop).
    pub pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
}

impl Augment {
    /// He et al.'s: pad 4, random crop, flip.
    pub fn he_et_al() -> Self {
        Self { pad: 4, flip: true }
    }

    /// None: every image as it is.
    pub fn none() -> Self {
        Self {
            pad: 0,
            flip: false,
        }
    }
}

/// One step's examples.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The step within its epoch (0-based).
    pub step: usize,
    /// `[n, C, H, W]` normalised (and augmented) images.
    pub input: Tensor,
    /// One class index per image.
    pub labels: Vec<usize>,
}

/// The pieces a batch is built from, shared with the background thread.
#[derive(Debug)]
struct Source {
    data: Arc<Dataset>,
    table: Vec<[f32; 256]>,
    /// Per channel `(a, b)` with `v * a + b` the normalised value of an interpolated `v`.
    scale: Vec<(f32, f32)>,
    augment: Augment,
    batch: usize,
    seed: u64,
}

impl Source {
    /// The order of epoch `epoch`: a seeded Fisher-Yates shuffle.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut rng = Rng(mix_seed(self.seed, &[0, epoch]));
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        order
    }

    /// The batch of examples `idx` (in this order), each augmented from its own stream
    /// `(seed, epoch, position in the epoch)`.
    fn build(&self, step: usize, epoch: u64, idx: &[usize]) -> Result<Batch, DataError> {
        let [c, h, w] = self.data.dims();
        let input = self.data.input_dims();
        if input != [c, h, w] {
            return self.build_cropped(step, epoch, idx);
        }
        let (pad, per) = (self.augment.pad, c * h * w);
        let mut out = vec![0.0f32; idx.len() * per];
        for (k, (&i, o)) in idx.iter().zip(out.chunks_exact_mut(per)).enumerate() {
            let src = self.data.image(i);
            let position = (step * self.batch + k) as u64;
            let mut rng = Rng(mix_seed(self.seed, &[1, epoch, position]));
            let (dy, dx, flip) = if pad > 0 || self.augment.flip {
                let dy = rng.below(2 * pad + 1);
                let dx = rng.below(2 * pad + 1);
                (dy, dx, self.augment.flip && rng.next() >> 63 == 1)
            } else {
                (pad, pad, false)
            };
            for ch in 0..c {
                let t = &self.table[ch];
                let zero = t[0];
                let plane = &src[ch * h * w..(ch + 1) * h * w];
                for y in 0..h {
                    let row = &mut o[(ch * h + y) * w..(ch * h + y + 1) * w];
                    // Source row y + dy - pad, zero outside.
                    let sy = (y + dy).checked_sub(pad).filter(|&s| s < h);
                    for (x, v) in row.iter_mut().enumerate() {
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = (xx + dx).checked_sub(pad).filter(|&s| s < w);
                        *v = match (sy, sx) {
                            (Some(sy), Some(sx)) => t[usize::from(plane[sy * w + sx])],
                            _ => zero,
                        };
                    }
                }
            }
        }
        let labels = idx
            .iter()
            .map(|&i| self.data.labels()[i] as usize)
            .collect();
        Ok(Batch {
            step,
            input: Tensor::from_vec(&[idx.len(), c, h, w], out)?,
            labels,
        })
    }

    /// A batch of inputs smaller than the stored images: with augmentation a random resized
    /// crop (and flip), else the centre.
    fn build_cropped(&self, step: usize, epoch: u64, idx: &[usize]) -> Result<Batch, DataError> {
        let [c, h, w] = self.data.dims();
        let [_, s, _] = self.data.input_dims();
        let augment = self.augment.pad > 0 || self.augment.flip;
        let per = c * s * s;
        let mut out = vec![0.0f32; idx.len() * per];
        for (k, (&i, o)) in idx.iter().zip(out.chunks_exact_mut(per)).enumerate() {
            let position = (step * self.batch + k) as u64;
            let mut rng = Rng(mix_seed(self.seed, &[1, epoch, position]));
            let (region, flip) = if augment {
                let r = random_resized_crop(&mut rng, h, w);
                (r, self.augment.flip && rng.next() >> 63 == 1)
            } else {
                ([(h - s) / 2, (w - s) / 2, s, s], false)
            };
            resample(
                self.data.image(i),
                [c, h, w],
                region,
                flip,
                s,
                &self.scale,
                o,
            );
        }
        Ok(Batch {
            step,
            input: Tensor::from_vec(&[idx.len(), c, s, s], out)?,
            labels: idx
                .iter()
                .map(|&i| self.data.labels()[i] as usize)
                .collect(),
        })
    }
}

/// torchvision's `RandomResizedCrop` region `[top, left, height, width]` of an `h` x `w`
/// image: 8% to 100% of the area, aspect ratio 3/4 to 4/3 (log-uniform), ten tries, else the
/// whole image.
fn random_resized_crop(rng: &mut Rng, h: usize, w: usize) -> [usize; 4] {
    let unit = |rng: &mut Rng| (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let area = (h * w) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * (0.08 + 0.92 * unit(rng));
        let ratio = (lo + (hi - lo) * unit(rng)).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let top = rng.below(h - ch + 1);
            let left = rng.below(w - cw + 1);
            return [top, left, ch, cw];
        }
    }
    [0, 0, h, w]
}

/// Resize `region` (`[top, left, height, width]`) of the `[c, h, w]` bytes `src` to `s` x `s`
/// by bilinear interpolation (pixel centres aligned, as `align_corners = False`), flipped if
/// asked, normalised by `scale` (per channel `(a, b)`: `v * a + b`), into `out`.
fn resample(
    src: &[u8],
    [c, h, w]: [usize; 3],
    [top, left, rh, rw]: [usize; 4],
    flip: bool,
    s: usize,
    scale: &[(f32, f32)],
    out: &mut [f32],
) {
    let coords = |n: usize, start: usize, len: usize, limit: usize| -> Vec<(usize, usize, f32)> {
        (0..n)
            .map(|i| {
                let f = (start as f64 + (i as f64 + 0.5) * len as f64 / n as f64 - 0.5)
                    .clamp(0.0, (limit - 1) as f64);
                let i0 = f.floor() as usize;
                let i1 = (i0 + 1).min(limit - 1);
                (i0, i1, (f - i0 as f64) as f32)
            })
            .collect()
    };
    let ys = coords(s, top, rh, h);
    let xs = coords(s, left, rw, w);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let (a, b) = scale[ch];
        for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
            let row = &mut out[(ch * s + y) * s..(ch * s + y + 1) * s];
            for (x, v) in row.iter_mut().enumerate() {
                let (x0, x1, fx) = xs[if flip { s - 1 - x } else { x }];
                let p = |yy: usize, xx: usize| f32::from(plane[yy * w + xx]);
                let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                *v = (top + (bottom - top) * fy) * a + b;
            }
        }
    }
}

/// Batches of a dataset for training: each epoch a seeded shuffle, `batch` examples per step
/// (the last incomplete batch dropped, as He et al.'s recipe in PyTorch does), each example
/// augmented from its own seeded stream and normalised. Every batch is a function of (seed,
/// epoch, step) alone, so a resumed run continues exactly.
#[derive(Debug, Clone)]
pub struct Loader {
    source: Arc<Source>,
}

impl Loader {
    /// Batches of `batch` examples of `data`, normalised by `norm`, augmented by `augment`,
    /// shuffled from `seed`.
    pub fn new(
        data: impl Into<Arc<Dataset>>,
        norm: Normalize,
        augment: Augment,
        batch: usize,
        seed: u64,
    ) -> Result<Self, DataError> {
        let data = data.into();
        if batch == 0 || batch > data.len() {
            return Err(DataError::Mismatch(format!(
                "{}: a batch of {batch} from {} examples (need 1 to {})",
                data.name(),
                data.len(),
                data.len()
            )));
        }
        if let Some(bad) = norm
            .std
            .iter()
            .chain(&norm.mean)
            .find(|v| !v.is_finite())
            .or(norm.std.iter().find(|&&s| s <= 0.0))
        {
            return Err(DataError::Mismatch(format!(
                "{}: normalisation with a mean or standard deviation of {bad} (the deviation must be positive, both finite)",
                data.name()
            )));
        }
        if norm.mean.len() != data.dims()[0] || norm.std.len() != data.dims()[0] {
            return Err(DataError::Mismatch(format!(
                "{}: normalisation for {} channels, images of {}",
                data.name(),
                norm.mean.len(),
                data.dims()[0]
            )));
        }
        Ok(Self {
            source: Arc::new(Source {
                table: norm.table(),
                scale: norm.scale(),
                data,
                augment,
                batch,
                seed,
            }),
        })
    }

    /// Optimiser steps per epoch (`len / batch`, rounded down).
    pub fn steps_per_epoch(&self) -> usize {
        self.source.data.len() / self.source.batch
    }

    /// Examples per step.
    pub fn batch_size(&self) -> usize {
        self.source.batch
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.source.data
    }

    /// Step `step`'s batch of epoch `epoch`, built now on this thread.
    pub fn batch(&self, epoch: u64, step: usize) -> Result<Batch, DataError> {
        let s = &self.source;
        if step >= self.steps_per_epoch() {
            return Err(DataError::Mismatch(format!(
                "step {step} of an epoch of {}",
                self.steps_per_epoch()
            )));
        }
        let order = s.order(epoch);
        s.build(step, epoch, &order[step * s.batch..(step + 1) * s.batch])
    }

    /// Epoch `epoch`'s batches from step `from` on, prepared on a background thread two
    /// batches ahead of the consumer.
    pub fn epoch(&self, epoch: u64, from: usize) -> EpochBatches {
        let s = Arc::clone(&self.source);
        let steps = self.steps_per_epoch();
        let (tx, rx) = sync_channel(2);
        let handle = std::thread::Builder::new()
            .name(format!("resnet-data-epoch-{epoch}"))
            .spawn(move || {
                let order = s.order(epoch);
                for step in from..steps {
                    let b = s.build(step, epoch, &order[step * s.batch..(step + 1) * s.batch]);
                    let failed = b.is_err();
                    if tx.send(b).is_err() || failed {
                        break;
                    }
                }
            })
            .ok();
        EpochBatches {
            rx: Some(rx),
            threaded: handle.is_some(),
            handle,
            // Where no thread could be started, the batches are built on the caller's thread.
            fallback: (self.clone(), epoch, from),
        }
    }

    /// Every example of `data` once, in order, normalised, not augmented, `batch` at a time
    /// (the last batch may be smaller): for evaluation.
    pub fn eval_batches<'a>(
        data: &'a Dataset,
        norm: &Normalize,
        batch: usize,
    ) -> impl Iterator<Item = Result<Batch, DataError>> + 'a {
        let table = norm.table();
        let batch = batch.max(1);
        (0..data.len().div_ceil(batch)).map(move |k| {
            let lo = k * batch;
            let hi = (lo + batch).min(data.len());
            eval_batch(&table, data, k, lo..hi)
        })
    }
}

/// An evaluation batch of examples `range` of `data` through the normalisation `table`: the
/// centre `[input height, input width]` of each image.
fn eval_batch(
    table: &[[f32; 256]],
    data: &Dataset,
    step: usize,
    range: std::ops::Range<usize>,
) -> Result<Batch, DataError> {
    let [c, h, w] = data.dims();
    let [_, ih, iw] = data.input_dims();
    let (top, left) = ((h - ih) / 2, (w - iw) / 2);
    let per = c * ih * iw;
    let mut out = vec![0.0f32; range.len() * per];
    for (i, o) in range.clone().zip(out.chunks_exact_mut(per)) {
        for (ch, (src, dst)) in data
            .image(i)
            .chunks_exact(h * w)
            .zip(o.chunks_exact_mut(ih * iw))
            .enumerate()
        {
            let t = &table[ch];
            for (y, row) in dst.chunks_exact_mut(iw).enumerate() {
                let from = &src[(top + y) * w + left..(top + y) * w + left + iw];
                for (d, &s) in row.iter_mut().zip(from) {
                    *d = t[usize::from(s)];
                }
            }
        }
    }
    Ok(Batch {
        step,
        input: Tensor::from_vec(&[range.len(), c, ih, iw], out)?,
        labels: data.labels()[range].iter().map(|&l| l as usize).collect(),
    })
}

/// An epoch's batches, in order (see [`Loader::epoch`]).
#[derive(Debug)]
pub struct EpochBatches {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    /// Whether a background thread prepares the batches (else they are built in `next`).
    threaded: bool,
    handle: Option<JoinHandle<()>>,
    fallback: (Loader, u64, usize),
}

impl Iterator for EpochBatches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.threaded {
            let rx = self.rx.as_ref()?;
            return match rx.recv() {
                Ok(b) => Some(b),
                // The producer hangs up after the last batch; if it stopped early (it
                // panicked), the epoch is not silently cut short.
                Err(_) => {
                    self.rx = None;
                    match self.handle.take().map(JoinHandle::join) {
                        Some(Err(_)) => Some(Err(DataError::Mismatch(
                            "the thread preparing the batches failed".to_owned(),
                        ))),
                        _ => None,
                    }
                }
            };
        }
        // No background thread: build here.
        let (loader, epoch, step) = &mut self.fallback;
        if *step >= loader.steps_per_epoch() {
            return None;
        }
        let b = loader.batch(*epoch, *step);
        *step += 1;
        Some(b)
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Hang up first, so a producer blocked on a full channel returns.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
