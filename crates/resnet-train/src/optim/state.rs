//! Optimiser state as named tensors.

use super::error::OptimError;

/// One tensor of an optimiser's state, named `<kind>.<parameter name>`, e.g.
/// `momentum_buffer.layer1.0.conv1.weight`, `exp_avg.fc.bias`, `step.fc.bias`.
///
/// Buffers are stored flat (`shape == [len]`) because an optimiser sees parameters as slices;
/// [`load_state`](super::Sgd::load_state) accepts any shape with the right number of elements,
/// so a checkpoint may store them in the parameter's shape. Step counts are 0-dimensional
/// (`shape == []`, one element), as PyTorch keeps `state["step"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// `<kind>.<parameter name>`.
    pub name: String,
    /// The values, row-major.
    pub data: Vec<f32>,
    /// The shape; its product is `data.len()`.
    pub shape: Vec<usize>,
}

impl StateTensor {
    /// A state tensor from its parts (not checked; loading checks).
    pub fn new(name: impl Into<String>, data: Vec<f32>, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            data,
            shape,
        }
    }

    /// A flat buffer: `shape == [data.len()]`.
    pub(crate) fn flat(kind: &str, param: &str, data: Vec<f32>) -> Self {
        let shape = vec![data.len()];
        Self::new(format!("{kind}.{param}"), data, shape)
    }

    /// Splits the name into its kind and the parameter's name, checking the shape.
    pub(crate) fn parts(&self) -> Result<(&str, &str), OptimError> {
        let numel = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel != Some(self.data.len()) {
            return Err(self.bad(format!(
                "shape {:?} does not hold {} elements",
                self.shape,
                self.data.len()
            )));
        }
        match self.name.split_once('.') {
            Some((kind, param)) if !param.is_empty() => Ok((kind, param)),
            _ => Err(self.bad("name is not `<kind>.<parameter>`".to_owned())),
        }
    }

    /// A [`OptimError::BadState`] naming this tensor.
    pub(crate) fn bad(&self, reason: String) -> OptimError {
        OptimError::BadState {
            name: self.name.clone(),
            reason,
        }
    }
}
