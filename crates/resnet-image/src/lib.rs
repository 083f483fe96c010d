//! `resnet-image`: torchvision's evaluation preprocessing, in Rust.
//!
//! Decode (JPEG, PNG, WebP, BMP, GIF, TIFF through the `image` crate; JPEGs, with the default
//! `libjpeg` feature, through libjpeg-turbo's algorithms as PIL decodes them), apply the EXIF
//! orientation, convert to RGB, resize the short side with an antialiased bilinear filter
//! computed as PIL computes it (fixed-point weights, horizontal then vertical pass, each rounded
//! to 8 bits; a general-purpose resizer such as `fast_image_resize` rounds differently and
//! lands a level off on about one value in ten), center-crop, scale to `[0, 1]` and normalise with a
//! per-channel mean and standard deviation. The defaults are ImageNet's (`Resize(256)`,
//! `CenterCrop(224)`, mean `(0.485, 0.456, 0.406)`, std `(0.229, 0.224, 0.225)`), and every one
//! is configurable. On torchvision's own outputs for the sample images the result is equal
//! to the bit.
//!
//! ## Features
//!
//! - `libjpeg` (default): decode JPEGs with MozJPEG's decoder, which is libjpeg-turbo's (same
//!   IDCT, chroma upsampling and colour tables as PIL), built from C source and linked
//!   statically. Without it (pure Rust) JPEGs decode through the `image` crate, a level or two
//!   off libjpeg on some pixels. MozJPEG reports libjpeg's fatal errors by unwinding, which
//!   this crate catches and returns as [`ImageError::Decode`]; a program built with
//!   `panic = "abort"` would abort on a corrupt JPEG instead, so build such programs without
//!   this feature.
//!
//! ```no_run
//! use resnet_image::Preprocess;
//!
//! let pre = Preprocess::imagenet();
//! let x = pre.load("cat.jpg")?;                 // [1, 3, 224, 224], NCHW
//! let batch = pre.load_batch(&["a.png", "b.webp"])?; // [2, 3, 224, 224]
//! # Ok::<(), resnet_image::ImageError>(())
//! ```
//!
//! From pixels already in memory:
//!
//! ```
//! use resnet_image::Preprocess;
//!
//! let img = image::RgbImage::from_pixel(300, 200, image::Rgb([124, 116, 104]));
//! let x = Preprocess::imagenet().from_image(&img.into())?;
//! assert_eq!(x.shape().dims(), &[1, 3, 224, 224]);
//! // ImageNet's mean colour normalises to about zero.
//! assert!(x.as_slice().iter().all(|v| v.abs() < 0.02));
//! # Ok::<(), resnet_image::ImageError>(())
//! ```
//!
//! Networks that take and return pixels rather than normalised input (EDSR super-resolution)
//! convert with [`rgb_to_tensor`] and back with [`tensor_to_rgb`].

#![forbid(unsafe_code)]

use image::{DynamicImage, ImageDecoder, ImageReader};

mod convert;
#[cfg(feature = "libjpeg")]
mod jpeg;
pub use convert::{rgb_to_tensor, tensor_to_rgb};
use resnet_tensor::{Layout, Tensor};
use std::path::{Path, PathBuf};

/// Errors from reading or preprocessing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an image this build can decode.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// The file, or "image bytes".
        what: String,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The image's header claims more pixels than [`MAX_DECODED_BYTES`] allows; nothing was
    /// allocated for it.
    #[error(
        "{what}: a {width}x{height} image needs {bytes} bytes decoded, over the limit of {limit}"
    )]
    TooLarge {
        /// The file, or "image bytes".
        what: String,
        /// Width the header claims.
        width: u32,
        /// Height the header claims.
        height: u32,
        /// Bytes the decoded image would take.
        bytes: u64,
        /// [`MAX_DECODED_BYTES`].
        limit: u64,
    },
    /// Resizing would make an image larger than [`MAX_DECODED_BYTES`]; nothing was allocated
    /// for it.
    #[error(
        "resizing a {width}x{height} image to {new_width}x{new_height} needs {bytes} bytes, over \
         the limit of {limit}: choose a smaller resize"
    )]
    ResizeTooLarge {
        /// Width of the image.
        width: u32,
        /// Height of the image.
        height: u32,
        /// Width after the resize.
        new_width: u64,
        /// Height after the resize.
        new_height: u64,
        /// Bytes the resized 8-bit RGB image would take.
        bytes: u64,
        /// [`MAX_DECODED_BYTES`].
        limit: u64,
    },
    /// An invalid configuration or an image with no pixels.
    #[error("{0}")]
    Invalid(String),
    /// A tensor that is not one RGB image: its shape is not `[1, 3, H, W]` with `H` and `W`
    /// from 1 to `u32::MAX` (see [`tensor_to_rgb`]).
    #[error(
        "a tensor of shape {dims:?} is not an RGB image: expected [1, 3, H, W] with H and W from 1 to {}",
        u32::MAX
    )]
    NotRgbTensor {
        /// The tensor's shape.
        dims: Vec<usize>,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] resnet_tensor::TensorError),
}

/// The most bytes a decoded image may take (1 GiB: a 16k x 16k RGBA image). Sizes are read
/// from the header and checked before any pixel buffer is allocated.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// The largest resize or crop side accepted (16384 pixels).
pub const MAX_SIDE: u32 = 1 << 14;

/// ImageNet's channel means (RGB), as torchvision normalises.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A preprocessing pipeline: resize the short side, center-crop, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Length the short side is resized to (`None`: no resize).
    pub resize: Option<u32>,
    /// Center crop `[height, width]` (`None`: no crop).
    pub crop: Option<[u32; 2]>,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Convert to one luma channel before resizing, as PIL's `convert("L")` does (ITU-R 601-2,
    /// `L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`, exact on grey pixels): the output has
    /// one channel, normalised with `mean[0]` and `std[0]`. For networks trained on greyscale
    /// images (MNIST, Fashion-MNIST).
    pub grayscale: bool,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self::imagenet()
    }
}

impl Preprocess {
    /// torchvision's ImageNet evaluation transform: `Resize(256)`, `CenterCrop(224)`,
    /// `ToTensor()`, `Normalize(IMAGENET_MEAN, IMAGENET_STD)`.
    pub fn imagenet() -> Self {
        Self {
            resize: Some(256),
            crop: Some([224, 224]),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            grayscale: false,
        }
    }

    /// Output one luma channel (see [`Preprocess::grayscale`]) or RGB.
    ///
    /// ```
    /// use resnet_image::Preprocess;
    ///
    /// let img = image::RgbImage::from_fn(3, 2, |x, _| image::Rgb([255, 255 * (x as u8 % 2), 0]));
    /// let pre = Preprocess::imagenet()
    ///     .with_resize(None)
    ///     .with_crop(None)
    ///     .with_mean_std([0.0; 3], [1.0; 3])
    ///     .with_grayscale(true);
    /// let x = pre.from_image(&img.into())?;
    /// assert_eq!(x.shape().dims(), &[1, 1, 2, 3]);
    /// // Red is 76 in PIL's luma, yellow 226.
    /// assert_eq!(x.as_slice()[..3], [76.0 / 255.0, 226.0 / 255.0, 76.0 / 255.0]);
    /// # Ok::<(), resnet_image::ImageError>(())
    /// ```
    pub fn with_grayscale(mut self, grayscale: bool) -> Self {
        self.grayscale = grayscale;
        self
    }

    /// Channels of the output: 1 with [`Preprocess::grayscale`], else 3.
    pub fn channels(&self) -> usize {
        if self.grayscale { 1 } else { 3 }
    }

    /// Resize the short side to `size` (or not at all).
    pub fn with_resize(mut self, size: Option<u32>) -> Self {
        self.resize = size;
        self
    }

    /// Center-crop to `size x size` (or not at all).
    pub fn with_crop(mut self, size: Option<u32>) -> Self {
        self.crop = size.map(|s| [s, s]);
        self
    }

    /// Normalise with another mean and standard deviation.
    pub fn with_mean_std(mut self, mean: [f32; 3], std: [f32; 3]) -> Self {
        self.mean = mean;
        self.std = std;
        self
    }

    fn validate(&self) -> Result<(), ImageError> {
        if self.resize == Some(0) || self.crop.is_some_and(|c| c.contains(&0)) {
            return Err(ImageError::Invalid(
                "resize and crop sizes must be at least 1".into(),
            ));
        }
        if self.resize.is_some_and(|r| r > MAX_SIDE)
            || self.crop.is_some_and(|c| c.iter().any(|s| *s > MAX_SIDE))
        {
            return Err(ImageError::Invalid(format!(
                "resize and crop sizes must be at most {MAX_SIDE}"
            )));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(ImageError::Invalid(
                "mean must be finite and std finite and non-zero".into(),
            ));
        }
        Ok(())
    }

    /// Decode, orient and preprocess an image file into a `[1, 3, H, W]` NCHW tensor
    /// (`[1, 1, H, W]` with [`Preprocess::grayscale`]).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Tensor, ImageError> {
        let path = path.as_ref();
        let img = decode_file(path)?;
        self.from_image(&img)
    }

    /// Preprocess encoded image bytes (any supported format) into `[1, 3, H, W]`.
    pub fn from_bytes(&self, bytes: &[u8]) -> Result<Tensor, ImageError> {
        let img = decode_bytes(bytes, "image bytes")?;
        self.from_image(&img)
    }

    /// Preprocess several files into one `[N, 3, H, W]` batch (`[N, 1, H, W]` in greyscale;
    /// all must end at the same size, which a crop guarantees).
    pub fn load_batch<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Tensor, ImageError> {
        let mut data = Vec::new();
        let mut dims = None;
        for p in paths {
            let t = self.load(p)?;
            let d = t.shape().dims().to_vec();
            match &dims {
                None => dims = Some(d),
                Some(prev) if prev != &d => {
                    return Err(ImageError::Invalid(format!(
                        "{} preprocesses to {:?}, the batch so far to {:?}: set a crop size",
                        p.as_ref().display(),
                        &d[1..],
                        &prev[1..]
                    )));
                }
                _ => {}
            }
            data.extend_from_slice(t.as_slice());
        }
        let d = dims.unwrap_or_else(|| vec![0, self.channels(), 0, 0]);
        Ok(Tensor::from_vec(&[paths.len(), d[1], d[2], d[3]], data)?)
    }

    /// Preprocess a decoded image (converted to RGB 8-bit first, then to luma with
    /// [`Preprocess::grayscale`]) into `[1, 3, H, W]` (`[1, 1, H, W]` in greyscale).
    pub fn from_image(&self, img: &DynamicImage) -> Result<Tensor, ImageError> {
        self.validate()?;
        let mut rgb = img.to_rgb8();
        if self.grayscale {
            // PIL's L24: fixed-point ITU-R 601-2 luma, rounded; kept in all three channels so
            // the resize below treats it as PIL treats an "L" image.
            for p in rgb.pixels_mut() {
                let [r, g, b] = p.0.map(u32::from);
                let l = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8;
                p.0 = [l; 3];
            }
        }
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err(ImageError::Invalid("the image has no pixels".into()));
        }
        let (rw, rh, pixels) = match self.resize {
            Some(size) => {
                let (nw, nh) = checked_resized_dims(w, h, size)?;
                (nw, nh, resize_rgb(rgb.into_raw(), w, h, nw, nh))
            }
            None => (w, h, rgb.into_raw()),
        };
        let [ch, cw] = self.crop.unwrap_or([rh, rw]);
        // torchvision's CenterCrop: offsets int(round((size - crop) / 2)), rounding half to
        // even like Python; a crop larger than the image pads with zeros.
        let top = ((f64::from(rh) - f64::from(ch)) / 2.0).round_ties_even() as i64;
        let left = ((f64::from(rw) - f64::from(cw)) / 2.0).round_ties_even() as i64;
        let (ch, cw) = (ch as usize, cw as usize);
        let channels = self.channels();
        let mut out = Tensor::try_zeros_with_layout(&[1, channels, ch, cw], Layout::Nchw)?;
        let data = out.as_mut_slice();
        let plane = ch * cw;
        for y in 0..ch {
            let sy = y as i64 + top;
            for x in 0..cw {
                let sx = x as i64 + left;
                let inside = sy >= 0 && sy < i64::from(rh) && sx >= 0 && sx < i64::from(rw);
                for c in 0..channels {
                    let v = if inside {
                        f32::from(pixels[(sy as usize * rw as usize + sx as usize) * 3 + c]) / 255.0
                    } else {
                        0.0
                    };
                    data[c * plane + y * cw + x] = (v - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(out)
    }
}

/// [`resized_dims`], unless the result, or the intermediate image of the horizontal pass, would
/// take more than [`MAX_DECODED_BYTES`] as 8-bit RGB (or a side would not fit a `u32`).
fn checked_resized_dims(w: u32, h: u32, size: u32) -> Result<(u32, u32), ImageError> {
    let (s, l) = (u64::from(w.min(h)), u64::from(w.max(h)));
    let long = u64::from(size) * l / s.max(1);
    let (nw, nh) = if w <= h {
        (u64::from(size), long)
    } else {
        (long, u64::from(size))
    };
    // The horizontal pass makes an `nw x h` image, the vertical one the `nw x nh` result.
    let bytes = nw.saturating_mul(nh.max(u64::from(h))).saturating_mul(3);
    match (u32::try_from(nw), u32::try_from(nh)) {
        (Ok(a), Ok(b)) if bytes <= MAX_DECODED_BYTES => Ok((a, b)),
        _ => Err(ImageError::ResizeTooLarge {
            width: w,
            height: h,
            new_width: nw,
            new_height: nh,
            bytes,
            limit: MAX_DECODED_BYTES,
        }),
    }
}

/// torchvision's `Resize(size)` output for a `w x h` image: the short side becomes `size`, the
/// long side `int(size * long / short)` (saturating at `u32::MAX`).
pub fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    let long = |l: u32, s: u32| {
        u32::try_from((u64::from(size) * u64::from(l)) / u64::from(s.max(1))).unwrap_or(u32::MAX)
    };
    if w <= h {
        (size, long(h, w))
    } else {
        (long(w, h), size)
    }
}

/// Fixed-point precision of the resampling weights (bits), as in PIL's 8-bit resampler.
const PRECISION_BITS: u32 = 22;

/// For each output index along one axis: the first input index and the fixed-point weights of
/// the triangle (bilinear) filter, widened by the scale when shrinking (antialiasing) and
/// normalised to sum to one — PIL's resampling scheme.
fn bilinear_weights(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle filter's support is 1
    (0..out_size)
        .map(|o| {
            let center = (f64::from(o) + 0.5) * scale;
            // Truncation toward zero, then clamping, as the reference does.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
            let w: Vec<f64> = (lo..hi)
                .map(|i| {
                    let t = ((i as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = w.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    if v < 0.0 {
                        (v * one - 0.5) as i32
                    } else {
                        (v * one + 0.5) as i32
                    }
                })
                .collect();
            (lo, k)
        })
        .collect()
}

/// Resample interleaved 8-bit RGB along one axis. `stride` steps between neighbours along the
/// axis, `lines`/`line_step` enumerate the lines across it; the result is rounded to 8 bits.
fn resample_axis(
    src: &[u8],
    weights: &[(usize, Vec<i32>)],
    out: &mut [u8],
    out_index: impl Fn(usize, usize) -> usize,
    in_index: impl Fn(usize, usize) -> usize,
    lines: usize,
) {
    let half = 1i64 << (PRECISION_BITS - 1);
    for line in 0..lines {
        for (o, (lo, k)) in weights.iter().enumerate() {
            for c in 0..3 {
                let mut acc = half;
                for (j, &kk) in k.iter().enumerate() {
                    acc += i64::from(src[in_index(line, lo + j) + c]) * i64::from(kk);
                }
                out[out_index(line, o) + c] = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
}

/// Resize interleaved RGB from `w x h` to `nw x nh`: horizontal pass, then vertical, each
/// rounded to 8 bits, like PIL's `Image.resize(.., BILINEAR)` that torchvision's `Resize` calls.
fn resize_rgb(pixels: Vec<u8>, w: u32, h: u32, nw: u32, nh: u32) -> Vec<u8> {
    let (w, h, nw_, nh_) = (w as usize, h as usize, nw as usize, nh as usize);
    let mut cur = pixels;
    let mut cur_w = w;
    if nw_ != w {
        let k = bilinear_weights(w as u32, nw);
        let mut out = vec![0u8; nw_ * h * 3];
        resample_axis(
            &cur,
            &k,
            &mut out,
            |y, x| (y * nw_ + x) * 3,
            |y, x| (y * w + x) * 3,
            h,
        );
        cur = out;
        cur_w = nw_;
    }
    if nh_ != h {
        let k = bilinear_weights(h as u32, nh);
        let mut out = vec![0u8; cur_w * nh_ * 3];
        resample_axis(
            &cur,
            &k,
            &mut out,
            |x, y| (y * cur_w + x) * 3,
            |x, y| (y * cur_w + x) * 3,
            cur_w,
        );
        cur = out;
    }
    cur
}

/// Decode with the format guessed from the contents, after checking the header's size against
/// [`MAX_DECODED_BYTES`], and apply the EXIF orientation. JPEGs go through libjpeg's
/// algorithms when the `libjpeg` feature is on and `bytes` holds the whole file.
fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    what: &str,
    bytes: Option<&[u8]>,
) -> Result<DynamicImage, ImageError> {
    let err = |source| ImageError::Decode {
        what: what.to_string(),
        source,
    };
    let reader = reader
        .with_guessed_format()
        .map_err(|e| err(image::ImageError::IoError(e)))?;
    let format = reader.format();
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = reader;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(err)?;
    let (width, height) = decoder.dimensions();
    let total = decoder.total_bytes();
    if total > MAX_DECODED_BYTES {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            width,
            height,
            bytes: total,
            limit: MAX_DECODED_BYTES,
        });
    }
    let orientation = decoder.orientation().map_err(err)?;
    let exact: Option<Result<image::RgbImage, image::ImageError>> = match (format, bytes) {
        #[cfg(feature = "libjpeg")]
        (Some(image::ImageFormat::Jpeg), Some(bytes)) => jpeg::decode_rgb(bytes, (width, height)),
        _ => {
            let _ = (format, bytes);
            None
        }
    };
    // The `image` crate's JPEG decoder pads a file cut short with grey and reports success;
    // libjpeg's path checks this itself (see `jpeg::decode_rgb`).
    if exact.is_none()
        && format == Some(image::ImageFormat::Jpeg)
        && bytes.is_some_and(jpeg_truncated)
    {
        return Err(err(image::ImageError::Decoding(
            image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                "truncated JPEG: the data ends before the end-of-image marker",
            ),
        )));
    }
    let mut img = match exact {
        Some(rgb) => DynamicImage::ImageRgb8(rgb.map_err(err)?),
        None => DynamicImage::from_decoder(decoder).map_err(err)?,
    };
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether JPEG bytes end before their end-of-image marker: walks the marker segments by
/// their lengths and the entropy-coded data after each start-of-scan (up to the next marker
/// that is not a restart or a stuffed `FF 00`). Bytes that are not a JPEG, or break its
/// structure otherwise, are left to the decoder (`false`).
fn jpeg_truncated(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        match b.get(i) {
            None => return true,
            Some(0xFF) => {}
            Some(_) => return false,
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return true;
        };
        i += 1;
        match marker {
            0xD9 => return false,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (b.get(i), b.get(i + 1)) else {
            return true;
        };
        let len = usize::from(hi) << 8 | usize::from(lo);
        if len < 2 {
            return false;
        }
        i += len;
        if i > b.len() {
            return true;
        }
        if marker == 0xDA {
            // Entropy-coded data: up to the next real marker.
            loop {
                let Some(at) = b[i..].iter().position(|&x| x == 0xFF) else {
                    return true;
                };
                i += at;
                match b.get(i + 1) {
                    None => return true,
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

fn decode_bytes(bytes: &[u8], what: &str) -> Result<DynamicImage, ImageError> {
    decode(
        ImageReader::new(std::io::Cursor::new(bytes)),
        what,
        Some(bytes),
    )
}

/// Decode an image file (format from its contents) and apply its EXIF orientation.
pub fn decode_file(path: &Path) -> Result<DynamicImage, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let what = path.display().to_string();
    let reader = ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?;
    // A JPEG is read whole, for libjpeg or for the check that it is not cut short
    // (compressed, it is far smaller than the decoded-size limit, which bounds the read);
    // everything else streams through the `image` crate.
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_DECODED_BYTES {
            return Err(ImageError::Invalid(format!(
                "{what}: a {len}-byte JPEG file is over the limit of {MAX_DECODED_BYTES} bytes"
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        return decode_bytes(&bytes, &what);
    }
    decode(reader, &what, None)
}

#[cfg(test)]
mod tests {
    use super::jpeg_truncated;

    /// Every test JPEG (baseline, progressive, restart markers, greyscale, CMYK): whole, and
    /// with bytes after its end, it is complete; cut anywhere after its first marker, it is
    /// not. Anything that is not a JPEG is left to the decoder.
    #[test]
    fn truncation_is_the_end_of_image_marker_missing() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jpg") {
                continue;
            }
            seen += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(!jpeg_truncated(&bytes), "{}", path.display());
            let mut trailing = bytes.clone();
            trailing.extend_from_slice(b"\x00\xff\xd8trailing data");
            assert!(!jpeg_truncated(&trailing), "{}", path.display());
            for cut in 2..bytes.len() - 1 {
                assert!(
                    jpeg_truncated(&bytes[..cut]),
                    "{} cut at {cut}",
                    path.display()
                );
            }
        }
        assert!(seen >= 7, "{seen} test JPEGs");
        for other in [&b""[..], b"\xff", b"\x89PNG\r\n", b"\xff\xd8\x00\x00"] {
            assert!(!jpeg_truncated(other), "{other:?}");
        }
    }
}
