//! `resnet_rs`: the Python package of resnet-rs (built with PyO3 and maturin).
//!
//! ```python
//! import resnet_rs
//! m = resnet_rs.ResNet.from_file("resnet18.safetensors", threads=2)
//! print(m.classify(["cat.jpg"], k=5))        # [[(class, name, probability), ...]]
//! x = resnet_rs.preprocess("cat.jpg")        # float32 [1, 3, 224, 224], torchvision's eval tensor
//! logits = m.forward(x)                      # float32 [1, 1000]
//! emb = m.features(x)                        # float32 [1, 512]
//! ```
//!
//! Everything goes through the library crates (`resnet-models`, `resnet-image`,
//! `resnet-weights`): this crate converts arrays and errors, and releases the GIL while a model
//! or the image decoder runs, so Python threads run in parallel. NumPy input is read in place
//! (no copy) when it is a C-contiguous, aligned, native-endian float32 array; anything else is
//! refused with a message saying what to pass. The module is built by maturin
//! (`pip install ./crates/resnet-py`), which turns on the `extension-module` feature; see
//! `resnet_rs.pyi` for the Python-side documentation.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use resnet_image::{ImageError, Preprocess};
use resnet_models::{Backend, Edsr, ModelError, Precision, ResNet, WeightError, WeightFile, top_k};
use resnet_tensor::{Layout, Tensor, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

create_exception!(
    resnet_rs,
    WeightsError,
    PyException,
    "A weights file that cannot be read, or does not describe a network this package runs \
     (the message names the key and the expected and found values)."
);

/// ImageNet's class names, one a line (torchvision's order), for 1000-class torchvision nets.
const IMAGENET_CLASSES: &str = include_str!("../data/imagenet_classes.txt");

/// Images per forward pass in `classify`: `resnet classify`'s default `--batch`, so the two
/// give the same numbers.
const CLASSIFY_BATCH: usize = 8;

/// Whether an I/O error means the file is not there.
fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// An error while opening or building a model: `FileNotFoundError` for a missing file,
/// `WeightsError` for everything else, with the path in front of the Rust message.
fn load_error(path: &Path, e: ModelError) -> PyErr {
    let msg = format!("{}: {e}", path.display());
    match &e {
        ModelError::Weights(WeightError::Io { source, .. }) if not_found(source) => {
            PyFileNotFoundError::new_err(msg)
        }
        ModelError::Unsupported(_) => PyRuntimeError::new_err(msg),
        _ => WeightsError::new_err(msg),
    }
}

/// An error while running a model: the input does not fit, a `ValueError`.
fn run_error(e: ModelError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// An image that cannot be read (`FileNotFoundError` when missing) or decoded (`ValueError`).
fn image_error(e: ImageError) -> PyErr {
    match &e {
        ImageError::Io { source, .. } if not_found(source) => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// The precision given from Python: `"f32"` or `"bf16"`.
fn precision(p: &str) -> PyResult<Precision> {
    match p {
        "f32" => Ok(Precision::F32),
        "bf16" => Ok(Precision::Bf16),
        other => Err(PyValueError::new_err(format!(
            "precision {other:?}: expected \"f32\" or \"bf16\""
        ))),
    }
}

/// The thread count given from Python: at least 1.
fn thread_count(threads: Option<usize>) -> PyResult<Option<usize>> {
    match threads {
        Some(0) => Err(PyValueError::new_err("threads must be at least 1")),
        t => Ok(t),
    }
}

/// Borrow `x` as a float32 array of rank `ranks`, checked to be readable in place: a NumPy
/// array (`TypeError` otherwise) of native float32 (`TypeError`), C-contiguous and aligned
/// (`ValueError`, saying to pass `numpy.ascontiguousarray(x)`).
fn borrow_f32<'py>(
    x: &Bound<'py, PyAny>,
    ranks: &[usize],
) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    let Ok(arr) = x.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "expected a numpy.ndarray of float32, got {}",
            x.get_type().name()?
        )));
    };
    let f32_dtype = numpy::dtype::<f32>(x.py());
    if !arr.dtype().is_equiv_to(&f32_dtype) {
        return Err(PyTypeError::new_err(format!(
            "expected a float32 array, got dtype {}: convert with x.astype(numpy.float32)",
            arr.dtype()
        )));
    }
    if !ranks.contains(&arr.ndim()) {
        let want = match ranks {
            [4] => "a 4-D [N, C, H, W] array".to_string(),
            _ => format!("an array of rank {ranks:?}"),
        };
        return Err(PyValueError::new_err(format!(
            "expected {want}, got shape {:?}",
            arr.shape()
        )));
    }
    if !arr.is_c_contiguous() || !arr.is_aligned() {
        return Err(PyValueError::new_err(format!(
            "the array of shape {:?} is not C-contiguous and aligned: pass \
             numpy.ascontiguousarray(x)",
            arr.shape()
        )));
    }
    let typed = arr.cast::<PyArrayDyn<f32>>()?;
    typed
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("cannot read the array: {e}")))
}

/// `ValueError` when `data` holds a NaN or an infinity.
fn check_finite(data: &[f32]) -> PyResult<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(PyValueError::new_err(format!(
            "the input holds a non-finite value ({}) at flat index {i}",
            data[i]
        ))),
        None => Ok(()),
    }
}

/// A tensor as a NumPy array (its elements moved into the array's buffer in one copy).
fn to_numpy<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let t = t
        .to_layout(Layout::Nchw)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let a = ArrayD::from_shape_vec(IxDyn(t.shape().dims()), t.to_vec())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// A metadata value that is a JSON array, each element converted by `item`; `None` when
/// absent, `WeightsError` when it is not such an array.
fn meta_array<T>(
    meta: &HashMap<String, String>,
    key: &str,
    item: impl Fn(&serde_json::Value) -> Option<T>,
) -> PyResult<Option<Vec<T>>> {
    let Some(v) = meta.get(key) else {
        return Ok(None);
    };
    serde_json::from_str::<serde_json::Value>(v)
        .ok()
        .and_then(|j| j.as_array()?.iter().map(&item).collect::<Option<Vec<T>>>())
        .map(Some)
        .ok_or_else(|| {
            WeightsError::new_err(format!(
                "the file's metadata {key} = {v:?} is not a JSON array of the expected values"
            ))
        })
}

/// Class names as `resnet classify` finds them: the metadata `classes`, ImageNet's for a
/// 1000-class torchvision net, or none.
fn class_names(model: &ResNet, meta: &HashMap<String, String>) -> PyResult<Option<Vec<String>>> {
    let classes = model.config().num_classes();
    let names = if let Some(m) = meta_array(meta, "classes", |v| v.as_str().map(String::from))? {
        m
    } else if model.config().resnet().is_some() && classes == 1000 {
        IMAGENET_CLASSES
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    } else {
        return Ok(None);
    };
    if names.len() != classes {
        return Err(WeightsError::new_err(format!(
            "{} class names for a model with {classes} classes",
            names.len()
        )));
    }
    Ok(Some(names))
}

/// The preprocessing `resnet classify` applies for `model` without options: torchvision's
/// ImageNet transform for torchvision nets; for CIFAR nets a 28 (greyscale) or 32 pixel crop
/// and the metadata `mean`/`std` (or none).
fn preprocessing(model: &ResNet, meta: &HashMap<String, String>) -> PyResult<Preprocess> {
    let arch = model.config();
    let channels = arch.in_channels();
    let cifar = arch.cifar().is_some();
    let (resize, crop) = if cifar {
        let crop = if channels == 1 { 28 } else { 32 };
        (crop, crop)
    } else {
        (256, 224)
    };
    let imagenet = !cifar && channels == 3;
    let pick = |key: &str, imagenet_value: [f32; 3], neutral: f32| -> PyResult<[f32; 3]> {
        let v = match meta_array(meta, key, |v| v.as_f64().map(|x| x as f32))? {
            Some(v) => v,
            None if imagenet => imagenet_value.to_vec(),
            None => vec![neutral],
        };
        match (v.len(), channels) {
            (1, _) => Ok([v[0]; 3]),
            (3, 3) => Ok([v[0], v[1], v[2]]),
            (n, c) => Err(WeightsError::new_err(format!(
                "the file's metadata {key} has {n} values for a network of {c} input channel(s)"
            ))),
        }
    };
    let mean = pick("mean", resnet_image::IMAGENET_MEAN, 0.0)?;
    let std = pick("std", resnet_image::IMAGENET_STD, 1.0)?;
    if std.iter().any(|s| *s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
        return Err(WeightsError::new_err(format!(
            "the file's normalisation must be finite with a non-zero std, got mean {mean:?}, \
             std {std:?}"
        )));
    }
    Ok(Preprocess::imagenet()
        .with_resize(Some(resize))
        .with_crop(Some(crop))
        .with_mean_std(mean, std)
        .with_grayscale(channels == 1))
}

/// `p` as the f64 nearest its shortest decimal form (what `resnet classify --json` prints, and
/// what Python prints back): `float32(result) == p` exactly.
fn shortest(p: f32) -> f64 {
    p.to_string().parse().unwrap_or(f64::from(p))
}

/// One input of `classify`: an image file, encoded image bytes, or an already preprocessed
/// `[1, C, H, W]` tensor.
enum Item {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Tensor(Tensor),
}

/// An image given as a path (str or os.PathLike) or as encoded bytes.
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    fn extract(x: &Bound<'_, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(b) = x.cast::<PyBytes>() {
            return Ok(Source::Bytes(b.as_bytes().to_vec()));
        }
        x.extract::<PathBuf>().map(Source::Path).map_err(|_| {
            PyTypeError::new_err(format!(
                "{what} takes paths (str or os.PathLike), encoded image bytes or float32 arrays, \
                 got {}",
                x.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })
    }

    fn load(&self, pre: &Preprocess) -> PyResult<Tensor> {
        match self {
            Source::Path(p) => pre.load(p),
            Source::Bytes(b) => pre.from_bytes(b),
        }
        .map_err(image_error)
    }
}

/// Whether `x` stands for one input of `classify` rather than a sequence of them.
fn is_single(x: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(x.is_instance_of::<PyString>()
        || x.is_instance_of::<PyBytes>()
        || x.hasattr("__fspath__")?
        || x.cast::<PyUntypedArray>().is_ok())
}

/// A residual classification network (ResNet-18 … 152, ResNeXt, Wide ResNet, CIFAR nets).
#[pyclass(frozen, name = "ResNet", module = "resnet_rs")]
pub struct PyResNet {
    model: ResNet,
    names: Option<Vec<String>>,
    pre: Preprocess,
}

impl PyResNet {
    /// Logits or features of a borrowed NCHW array, with the GIL released.
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        features: bool,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let arr = borrow_f32(x, &[4])?;
        let dims = arr.shape().to_vec();
        let data = arr
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let out = py.detach(|| -> PyResult<Tensor> {
            check_finite(data)?;
            let view = TensorView::new(&dims, Layout::Nchw, data)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            if features {
                self.model.forward_features_view(view)
            } else {
                self.model.forward_view(view)
            }
            .map_err(run_error)
        })?;
        to_numpy(py, &out)
    }
}

#[pymethods]
impl PyResNet {
    /// Load a network from a weights file (safetensors with torchvision, timm or HF names;
    /// whatever `resnet_weights::WeightFile::open` reads). The architecture comes from the
    /// keys and shapes; `threads` (default: all cores) is the model's thread count;
    /// `precision` `"bf16"` runs the convolutions in bf16 products where the CPU has
    /// AVX512-BF16 (`RuntimeError` elsewhere).
    #[staticmethod]
    #[pyo3(signature = (path, threads=None, precision="f32"))]
    fn from_file(
        py: Python<'_>,
        path: PathBuf,
        threads: Option<usize>,
        precision: &str,
    ) -> PyResult<Self> {
        let threads = thread_count(threads)?;
        let precision = self::precision(precision)?;
        let (model, meta) = py.detach(|| -> PyResult<_> {
            let file = WeightFile::open(&path).map_err(|e| load_error(&path, e.into()))?;
            let model = ResNet::from_source_with(&file, Backend::Fast, precision)
                .map_err(|e| load_error(&path, e))?;
            let model = match threads {
                Some(t) => model.with_threads(t).map_err(|e| load_error(&path, e))?,
                None => model,
            };
            Ok((model, file.metadata().clone()))
        })?;
        let names = class_names(&model, &meta)?;
        let pre = preprocessing(&model, &meta)?;
        Ok(Self { model, names, pre })
    }

    /// Logits `[N, classes]` (float32) of a normalised float32 `[N, C, H, W]` batch (any batch,
    /// any size), read in place.
    fn forward<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        self.run(py, x, false)
    }

    /// The pooled embedding `[N, feature_dim]` (the classifier's input) of a normalised float32
    /// `[N, C, H, W]` batch, read in place.
    fn features<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        self.run(py, x, true)
    }

    /// The `k` most probable classes of each input as `(class, name, probability)` tuples,
    /// most probable first. `items` is a sequence of image paths (decoded and preprocessed as
    /// `resnet classify` does), encoded image bytes (a file's contents) and/or preprocessed
    /// float32 `[C, H, W]` or `[1, C, H, W]` arrays; a single item counts as a sequence of one. `name` is `None` when the
    /// model has no class names.
    #[pyo3(signature = (items, k=5))]
    #[allow(clippy::type_complexity)]
    fn classify(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        k: usize,
    ) -> PyResult<Vec<Vec<(usize, Option<String>, f64)>>> {
        let list: Vec<Bound<'_, PyAny>> = if is_single(items)? {
            vec![items.clone()]
        } else {
            items.try_iter()?.collect::<PyResult<_>>()?
        };
        let mut inputs = Vec::with_capacity(list.len());
        for item in &list {
            if item.cast::<PyUntypedArray>().is_ok() {
                let arr = borrow_f32(item, &[3, 4])?;
                let mut dims = arr.shape().to_vec();
                if dims.len() == 3 {
                    dims.insert(0, 1);
                }
                if dims[0] != 1 {
                    return Err(PyValueError::new_err(format!(
                        "classify takes one image per array ([C, H, W] or [1, C, H, W]), got \
                         shape {:?}: use forward for batches",
                        arr.shape()
                    )));
                }
                let data = arr
                    .as_slice()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                check_finite(data)?;
                let t = Tensor::from_vec(&dims, data.to_vec())
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                inputs.push(Item::Tensor(t));
            } else {
                inputs.push(match Source::extract(item, "classify")? {
                    Source::Path(p) => Item::Path(p),
                    Source::Bytes(b) => Item::Bytes(b),
                });
            }
        }
        py.detach(|| -> PyResult<_> {
            let mut rows = Vec::with_capacity(inputs.len());
            for chunk in inputs.chunks(CLASSIFY_BATCH) {
                let mut tensors = Vec::with_capacity(chunk.len());
                for item in chunk {
                    tensors.push(match item {
                        Item::Path(p) => self.pre.load(p).map_err(image_error)?,
                        Item::Bytes(b) => self.pre.from_bytes(b).map_err(image_error)?,
                        Item::Tensor(t) => t.clone(),
                    });
                }
                // Runs of equal size go through the network together.
                let mut start = 0;
                while start < tensors.len() {
                    let dims = tensors[start].shape().dims().to_vec();
                    let end = (start..tensors.len())
                        .find(|&i| tensors[i].shape().dims() != dims.as_slice())
                        .unwrap_or(tensors.len());
                    let mut data = Vec::with_capacity(tensors[start].len() * (end - start));
                    for t in &tensors[start..end] {
                        data.extend_from_slice(t.as_slice());
                    }
                    let mut batch_dims = dims.clone();
                    batch_dims[0] = end - start;
                    let x = Tensor::from_vec(&batch_dims, data)
                        .map_err(|e| PyValueError::new_err(e.to_string()))?;
                    let logits = self.model.forward(&x).map_err(run_error)?;
                    for row in top_k(&logits, k).map_err(run_error)? {
                        rows.push(
                            row.into_iter()
                                .map(|(c, p)| {
                                    let name = self.names.as_ref().map(|n| n[c].clone());
                                    (c, name, shortest(p))
                                })
                                .collect(),
                        );
                    }
                    start = end;
                }
            }
            Ok(rows)
        })
    }

    /// Decode and preprocess an image (a path or encoded bytes) as `classify` does for this
    /// model (torchvision's eval transform for torchvision nets): float32 `[1, C, H, W]`.
    fn preprocess<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let src = Source::extract(image, "preprocess")?;
        let t = py.detach(|| src.load(&self.pre))?;
        to_numpy(py, &t)
    }

    /// The architecture's name (`resnet18`, `cifar-resnet20`, …).
    #[getter]
    fn arch(&self) -> String {
        self.model.config().name()
    }

    /// Number of classes (the logits' width).
    #[getter]
    fn num_classes(&self) -> usize {
        self.model.config().num_classes()
    }

    /// Width of the pooled embedding `features` returns.
    #[getter]
    fn feature_dim(&self) -> usize {
        self.model.config().feature_dim()
    }

    /// Input channels (3, or 1 for greyscale nets).
    #[getter]
    fn in_channels(&self) -> usize {
        self.model.config().in_channels()
    }

    /// Threads one call runs on.
    #[getter]
    fn threads(&self) -> usize {
        self.model.threads()
    }

    /// The convolutions' arithmetic: `"f32"` or `"bf16"`.
    #[getter]
    fn precision(&self) -> String {
        self.model.precision().to_string()
    }

    /// The class names (`classify`'s `name`), or `None`.
    #[getter]
    fn class_names(&self) -> Option<Vec<String>> {
        self.names.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "ResNet(arch={:?}, classes={}, threads={}, precision={:?})",
            self.model.config().name(),
            self.model.config().num_classes(),
            self.model.threads(),
            self.model.precision().to_string()
        )
    }
}

/// An EDSR super-resolution network.
#[pyclass(frozen, name = "Edsr", module = "resnet_rs")]
pub struct PyEdsr {
    model: Edsr,
}

#[pymethods]
impl PyEdsr {
    /// Load an EDSR network (reference-code key names; blocks, features and scale from the
    /// keys and shapes, `res_scale` and the mean from the metadata).
    /// `precision` as for `ResNet.from_file`.
    #[staticmethod]
    #[pyo3(signature = (path, threads=None, precision="f32"))]
    fn from_file(
        py: Python<'_>,
        path: PathBuf,
        threads: Option<usize>,
        precision: &str,
    ) -> PyResult<Self> {
        let threads = thread_count(threads)?;
        let precision = self::precision(precision)?;
        let model = py.detach(|| -> PyResult<_> {
            let model = Edsr::from_file_with(&path, Backend::Fast, precision)
                .map_err(|e| load_error(&path, e))?;
            match threads {
                Some(t) => model.with_threads(t).map_err(|e| load_error(&path, e)),
                None => Ok(model),
            }
        })?;
        Ok(Self { model })
    }

    /// Super-resolve a float32 `[N, 3, H, W]` batch (RGB in `0..rgb_range`, as from
    /// `load_rgb`) into `[N, 3, H*scale, W*scale]`, `tile x tile` input pixels at a time
    /// (the untiled result up to float rounding with the default overlap; `tile=None`: in one
    /// piece).
    #[pyo3(signature = (x, tile=Some(192), overlap=None))]
    fn enhance<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        tile: Option<usize>,
        overlap: Option<usize>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let arr = borrow_f32(x, &[4])?;
        let dims = arr.shape().to_vec();
        let data = arr
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let out = py.detach(|| -> PyResult<Tensor> {
            check_finite(data)?;
            let t = Tensor::from_slice_with_layout(&dims, Layout::Nchw, data)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            match tile {
                Some(tile) => self
                    .model
                    .forward_tiled_with_progress(&t, tile, overlap, |_, _| {}),
                None => self.model.forward(&t),
            }
            .map_err(run_error)
        })?;
        to_numpy(py, &out)
    }

    /// The upscaling factor.
    #[getter]
    fn scale(&self) -> usize {
        self.model.config().scale
    }

    /// The pixel range the network works in (255 for the reference weights).
    #[getter]
    fn rgb_range(&self) -> f32 {
        self.model.config().rgb_range
    }

    /// Threads one call runs on.
    #[getter]
    fn threads(&self) -> usize {
        self.model.threads()
    }

    /// The convolutions' arithmetic: `"f32"` or `"bf16"`.
    #[getter]
    fn precision(&self) -> String {
        self.model.precision().to_string()
    }

    fn __repr__(&self) -> String {
        let c = self.model.config();
        format!(
            "Edsr(blocks={}, feats={}, scale={}, threads={})",
            c.n_resblocks,
            c.n_feats,
            c.scale,
            self.model.threads()
        )
    }
}

/// torchvision's evaluation transform of an image (a path or encoded bytes): decode
/// (EXIF-oriented, RGB), resize
/// the short side to `resize` (PIL's antialiased bilinear), center-crop `crop`, scale to
/// `[0, 1]`, normalise with `mean`/`std` (default ImageNet's): float32 `[1, 3, H, W]`.
#[pyfunction]
#[pyo3(signature = (image, resize=Some(256), crop=Some(224), mean=None, std=None))]
fn preprocess<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    resize: Option<u32>,
    crop: Option<u32>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let pre = Preprocess::imagenet()
        .with_resize(resize)
        .with_crop(crop)
        .with_mean_std(
            mean.unwrap_or(resnet_image::IMAGENET_MEAN),
            std.unwrap_or(resnet_image::IMAGENET_STD),
        );
    let src = Source::extract(image, "preprocess")?;
    let t = py.detach(|| src.load(&pre))?;
    to_numpy(py, &t)
}

/// An image file as float32 `[1, 3, H, W]` RGB in `0..255` (EXIF-oriented), the input
/// `Edsr.enhance` takes.
#[pyfunction]
fn load_rgb<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let t = py.detach(|| -> PyResult<Tensor> {
        let img = resnet_image::decode_file(&path)
            .map_err(image_error)?
            .to_rgb8();
        resnet_image::rgb_to_tensor(&img, 1.0).map_err(image_error)
    })?;
    to_numpy(py, &t)
}

/// The `resnet_rs` module.
#[pymodule]
fn resnet_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyResNet>()?;
    m.add_class::<PyEdsr>()?;
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(load_rgb, m)?)?;
    m.add("WeightsError", m.py().get_type::<WeightsError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
