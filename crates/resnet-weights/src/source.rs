//! The [`WeightSource`] trait and its helpers: [`TensorMap`] (tensors in memory) and [`Tracked`]
//! (records which keys were asked for, to report unused ones).

use crate::WeightError;
use resnet_tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Anything that hands out named f32 tensors: a [`crate::WeightFile`], a [`TensorMap`], or a
/// [`Tracked`] wrapper. Names are internal (torchvision) names.
pub trait WeightSource {
    /// The shape of a tensor, if present.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
    /// All internal names, sorted.
    fn names(&self) -> Vec<String>;
    /// The tensor `name`, which must have shape `expected`.
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<Tensor, WeightError>;
    /// The key a tensor has in its file (the internal name where no file is involved).
    fn file_name(&self, name: &str) -> String {
        name.to_string()
    }
    /// A value of the file's metadata, if any.
    fn metadata_value(&self, _key: &str) -> Option<String> {
        None
    }
    /// Whether `name` is present.
    fn contains(&self, name: &str) -> bool {
        self.shape_of(name).is_some()
    }
}

/// The checks every source makes before handing out `name`: present (else `MissingKey`) and
/// of the `expected` shape (else `ShapeMismatch`, naming the key as it is in its file).
pub(crate) fn check_found(
    name: &str,
    file_name: &str,
    expected: &[usize],
    found: Option<&[usize]>,
) -> Result<(), WeightError> {
    match found {
        None => Err(WeightError::MissingKey {
            name: name.to_string(),
            expected: Some(expected.to_vec()),
        }),
        Some(f) if f != expected => Err(WeightError::ShapeMismatch {
            name: file_name.to_string(),
            expected: expected.to_vec(),
            found: f.to_vec(),
        }),
        Some(_) => Ok(()),
    }
}

/// Keys a model never needs and unused-key checks skip: BatchNorm's `num_batches_tracked`.
pub fn is_ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// In-memory named tensors: for seeded random weights, tests, and renaming.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    tensors: BTreeMap<String, Tensor>,
}

impl TensorMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add or replace a tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }
    /// Remove a tensor.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }
    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// Iterate in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Serialise as safetensors bytes (f32) with optional metadata.
    pub fn to_safetensors_bytes(
        &self,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Vec<u8>, WeightError> {
        let list: Vec<(&str, &Tensor)> = self.iter().collect();
        crate::write::safetensors_bytes(&list, metadata)
    }
}

impl WeightSource for TensorMap {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape().dims().to_vec())
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<Tensor, WeightError> {
        let t = self.tensors.get(name);
        check_found(name, name, expected, t.map(|t| t.shape().dims()))?;
        let t = t.expect("checked above");
        Ok(t.clone())
    }
}

/// How to treat tensors in the weights that the model did not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Unused tensors are an error ([`WeightError::UnusedKeys`]).
    #[default]
    Strict,
    /// Unused tensors are returned for the caller to warn about.
    Lenient,
}

/// A source wrapper that records every name asked for, to find unused tensors afterwards.
pub struct Tracked<'a, S: WeightSource + ?Sized> {
    inner: &'a S,
    used: Mutex<BTreeSet<String>>,
}

impl<'a, S: WeightSource + ?Sized> Tracked<'a, S> {
    /// Wrap a source.
    pub fn new(inner: &'a S) -> Self {
        Self {
            inner,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// The file names of tensors never asked for (ignoring `num_batches_tracked`).
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        self.inner
            .names()
            .into_iter()
            .filter(|n| !used.contains(n) && !is_ignorable(n))
            .map(|n| self.inner.file_name(&n))
            .collect()
    }

    /// Check for unused tensors: an error in strict mode; in lenient mode they are returned.
    pub fn finish(&self, strictness: Strictness) -> Result<Vec<String>, WeightError> {
        let unused = self.unused();
        if strictness == Strictness::Strict && !unused.is_empty() {
            return Err(WeightError::UnusedKeys { keys: unused });
        }
        Ok(unused)
    }
}

impl<S: WeightSource + ?Sized> WeightSource for Tracked<'_, S> {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.shape_of(name)
    }
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<Tensor, WeightError> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.inner.tensor(name, expected)
    }
    fn file_name(&self, name: &str) -> String {
        self.inner.file_name(name)
    }
    fn metadata_value(&self, key: &str) -> Option<String> {
        self.inner.metadata_value(key)
    }
}

/// The tensors of `inner` whose names start with `prefix`, served without it: a state_dict
/// stored under `param.` (as in the training fixtures), `model.`, or one block of a file of
/// many.
///
/// ```
/// use resnet_weights::{Prefixed, Tensor, TensorMap, WeightSource};
/// let mut m = TensorMap::new();
/// m.insert("param.fc.bias", Tensor::zeros(&[2])?);
/// m.insert("other", Tensor::zeros(&[1])?);
/// let p = Prefixed::new(&m, "param.");
/// assert_eq!(p.names(), ["fc.bias"]);
/// assert_eq!(p.tensor("fc.bias", &[2])?.len(), 2);
/// assert!(!p.contains("other"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Prefixed<'a, S: WeightSource + ?Sized> {
    inner: &'a S,
    prefix: &'a str,
}

impl<'a, S: WeightSource + ?Sized> Prefixed<'a, S> {
    /// `inner`'s tensors under `prefix`.
    pub fn new(inner: &'a S, prefix: &'a str) -> Self {
        Self { inner, prefix }
    }

    /// The source behind the prefix.
    pub fn inner(&self) -> &'a S {
        self.inner
    }

    /// `name` as `inner` knows it: with the prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl<S: WeightSource + ?Sized> WeightSource for Prefixed<'_, S> {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.shape_of(&self.key(name))
    }
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(self.prefix).map(str::to_string))
            .collect()
    }
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<Tensor, WeightError> {
        self.inner.tensor(&self.key(name), expected)
    }
    fn file_name(&self, name: &str) -> String {
        self.inner.file_name(&self.key(name))
    }
    fn metadata_value(&self, key: &str) -> Option<String> {
        self.inner.metadata_value(key)
    }
}
