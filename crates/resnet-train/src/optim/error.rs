//! The optimisers' error type.

/// What can go wrong when configuring or stepping an optimiser, a prior or a schedule.
///
/// Every check that guards user input returns one of these; nothing in this module panics on
/// user input. When a step returns an error, the parameter and the optimiser state are
/// unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A gradient, a stored buffer or another tensor does not have the parameter's length.
    #[error("parameter `{name}`: {what} has {found} elements, the parameter has {expected}")]
    LengthMismatch {
        /// The parameter's name.
        name: String,
        /// Which tensor has the wrong length (`"gradient"`, `"momentum buffer"`, ...).
        what: &'static str,
        /// The parameter's length.
        expected: usize,
        /// The other tensor's length.
        found: usize,
    },
    /// A learning rate (after a group's multiplier) is negative, infinite or NaN.
    #[error("learning rate {lr} is not a finite non-negative number")]
    InvalidLr {
        /// The offending learning rate.
        lr: f64,
    },
    /// A hyperparameter is out of range (the message names it), e.g. Nesterov momentum without
    /// momentum or with dampening, as PyTorch refuses.
    #[error("invalid configuration: {0}")]
    BadConfig(String),
    /// A tensor's shape does not fit what is asked of it.
    #[error("tensor `{name}` of shape {shape:?}: {reason}")]
    BadShape {
        /// The tensor's name (or a description).
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A serialised optimiser state cannot be loaded.
    #[error("optimiser state `{name}`: {reason}")]
    BadState {
        /// The state tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks that `lr` is a usable learning rate.
pub(crate) fn check_lr(lr: f64) -> Result<(), OptimError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(OptimError::InvalidLr { lr })
    }
}

/// Checks that a hyperparameter is finite and at least zero.
pub(crate) fn check_non_negative(what: &str, value: f64) -> Result<(), OptimError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(OptimError::BadConfig(format!(
            "{what} must be finite and >= 0, got {value}"
        )))
    }
}

/// Checks that a gradient (or another tensor) has the parameter's length.
pub(crate) fn check_len(
    name: &str,
    what: &'static str,
    expected: usize,
    found: usize,
) -> Result<(), OptimError> {
    if expected == found {
        Ok(())
    } else {
        Err(OptimError::LengthMismatch {
            name: name.to_owned(),
            what,
            expected,
            found,
        })
    }
}
