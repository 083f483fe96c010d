//! Image folders, torchvision's `ImageFolder` convention: one subfolder per class (sorted by
//! name), image files inside. Each image is decoded once, its short side resized to `size` and
//! its centre cropped to `size` x `size` (torchvision's evaluation `Resize` + `CenterCrop`),
//! and kept as RGB bytes; the network's input is cut from that square (see
//! [`Dataset::with_input_size`]).

use super::{DataError, Dataset, MAX_PIXELS, Split};
use resnet_image::Preprocess;
use std::path::{Path, PathBuf};

/// Extensions read as images (case-insensitive).
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// The class subfolders of `dir`, sorted by name.
fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let path = e.path();
        if path.is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push((name, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The image files of one class folder, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = e.map_err(|e| DataError::io(dir, e))?.path();
        let is_image = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Read the images of `dir`'s class folders, labelled by `classes` (names in label order).
fn read_split(dir: &Path, classes: &[String], size: usize) -> Result<Dataset, DataError> {
    let pre = Preprocess::imagenet()
        .with_resize(Some(size as u32))
        .with_crop(Some(size as u32))
        .with_mean_std([0.0; 3], [1.0; 3]);
    let per = 3 * size * size;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (name, path) in class_dirs(dir)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(DataError::format(
                &path,
                format!(
                    "class folder {name:?} is not among the training classes ({})",
                    classes.join(", ")
                ),
            ));
        };
        for file in image_files(&path)? {
            if (pixels.len() + per) as u64 > MAX_PIXELS {
                return Err(DataError::format(
                    dir,
                    format!("more than {MAX_PIXELS} bytes of {size}x{size} images"),
                ));
            }
            let x = pre
                .load(&file)
                .map_err(|e| DataError::format(&file, e.to_string()))?;
            // Pixels were scaled to [0, 1] by v / 255 exactly: back to the byte.
            pixels.extend(
                x.as_slice()
                    .iter()
                    .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
            );
            labels.push(label as u32);
        }
    }
    let d = Dataset::new(
        dir.display().to_string(),
        [3, size, size],
        pixels,
        labels,
        classes.len(),
    )?;
    Ok(d.with_class_names(classes.to_vec()))
}

/// An image folder as a training split and a test split: `dir/train` and `dir/val` (or
/// `dir/test`) when `dir/train` exists, else `dir` itself for training and no test examples.
/// Classes are the training folder's subfolders, sorted by name; images are kept as
/// `size` x `size` RGB squares (short side resized to `size`, centre cropped).
pub fn image_folder(dir: impl AsRef<Path>, size: usize) -> Result<Split, DataError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    if size == 0 || (3 * size * size) as u64 > MAX_PIXELS {
        return Err(DataError::Mismatch(format!(
            "images of {size}x{size} pixels"
        )));
    }
    let nested = dir.join("train");
    let train_dir = if nested.is_dir() {
        nested
    } else {
        dir.to_owned()
    };
    let classes: Vec<String> = class_dirs(&train_dir)?.into_iter().map(|c| c.0).collect();
    if classes.is_empty() {
        return Err(DataError::format(
            &train_dir,
            "has no class subfolders (expected one folder of images per class)",
        ));
    }
    let train = read_split(&train_dir, &classes, size)?;
    if train.is_empty() {
        return Err(DataError::format(
            &train_dir,
            format!(
                "its class folders hold no images ({})",
                IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    let test_dir = ["val", "test"]
        .iter()
        .map(|d| dir.join(d))
        .find(|d| d.is_dir() && train_dir != *dir);
    let test = match test_dir {
        Some(d) => read_split(&d, &classes, size)?,
        None => Dataset::new(
            format!("{} (no test split)", dir.display()),
            [3, size, size],
            Vec::new(),
            Vec::new(),
            classes.len(),
        )?
        .with_class_names(classes),
    };
    Ok(Split { train, test })
}
