//! Gaussian priors on the weights: centred on zero (weight decay) or on the identity.

use super::error::{OptimError, check_len, check_non_negative};

/// The name of the stem conv, which the identity prior leaves alone (torchvision and He et al.'s
/// CIFAR nets call it `conv1`; block convs are `layerX.Y.conv1`, so they do not match).
pub const STEM_CONV: &str = "conv1.weight";

/// The prior on the conv weights, the "MAP reading" of training.
///
/// Training with weight decay is MAP estimation under a Gaussian prior centred at zero; the
/// identity prior centres it on the Dirac kernel ([`dirac`]) instead, so a plain net's default
/// block is the identity, as a residual block's is.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Prior {
    /// The prior centred at zero: ordinary weight decay, which the optimiser applies (its
    /// `weight_decay`); this prior adds no loss term.
    #[default]
    Zero,
    /// `lambda / 2 * ||W - D||^2` on every 3x3 conv but the stem ([`is_identity_prior_conv`]),
    /// `D` the Dirac kernel; those convs get no weight decay ([`param_group_for`](super::param_group_for)).
    Identity {
        /// The prior's precision (the golden fixtures' `prior_lambda`).
        lambda: f64,
    },
}

impl Prior {
    /// Whether this prior adds a term for the parameter `name` of shape `shape`.
    pub fn applies_to(&self, name: &str, shape: &[usize]) -> bool {
        matches!(self, Prior::Identity { .. }) && is_identity_prior_conv(name, shape)
    }

    /// Adds the prior's gradient to `grad` and returns its loss term, for the parameter `name`
    /// of shape `shape` with values `weight`: [`identity_prior_term`] where
    /// [`Prior::applies_to`], otherwise nothing (loss 0, `grad` unchanged).
    ///
    /// # Errors
    ///
    /// As [`identity_prior_term`]; for parameters the prior does not apply to, none.
    pub fn term(
        &self,
        name: &str,
        shape: &[usize],
        weight: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, OptimError> {
        match *self {
            Prior::Identity { lambda } if self.applies_to(name, shape) => {
                // `applies_to` guarantees four dimensions.
                let shape = [shape[0], shape[1], shape[2], shape[3]];
                identity_prior_term(lambda, shape, weight, grad)
            }
            _ => Ok(0.0),
        }
    }
}

/// Whether the identity prior covers this parameter: a conv weight `[out, in, 3, 3]` other than
/// the stem ([`STEM_CONV`]). The channel-changing stride-2 convs are included (their Dirac kernel
/// is a partial identity), as in the golden fixtures.
pub fn is_identity_prior_conv(name: &str, shape: &[usize]) -> bool {
    matches!(shape, [_, _, 3, 3]) && name != STEM_CONV
}

/// The number of elements of `shape`, or an error if it overflows.
fn numel(name: &str, shape: &[usize]) -> Result<usize, OptimError> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| OptimError::BadShape {
            name: name.to_owned(),
            shape: shape.to_vec(),
            reason: "too many elements".to_owned(),
        })
}

/// The Dirac kernel of `torch.nn.init.dirac_` (with `groups = 1`) for a conv weight
/// `[out_channels, in_channels, kh, kw]`, row-major: `W[i, i, kh / 2, kw / 2] = 1` for
/// `i < min(out_channels, in_channels)`, zero elsewhere.
///
/// A stride-1 conv with this kernel and "same" padding copies its first
/// `min(out, in)` input channels and outputs zeros in the rest. Grouped convs are not covered:
/// `dirac_(w, groups)` repeats the pattern per group, which this function does not do.
///
/// # Errors
///
/// [`OptimError::BadShape`] if the shape's element count overflows `usize`.
pub fn dirac(
    out_channels: usize,
    in_channels: usize,
    kh: usize,
    kw: usize,
) -> Result<Vec<f32>, OptimError> {
    let shape = [out_channels, in_channels, kh, kw];
    let mut kernel = vec![0.0f32; numel("dirac", &shape)?];
    if kh > 0 && kw > 0 {
        let centre = (kh / 2) * kw + kw / 2;
        for i in 0..out_channels.min(in_channels) {
            kernel[(i * in_channels + i) * kh * kw + centre] = 1.0;
        }
    }
    Ok(kernel)
}

/// Checks lambda and the lengths of a prior term's tensors.
fn check_term(
    lambda: f64,
    expected: usize,
    weight: usize,
    centre: Option<usize>,
    grad: usize,
) -> Result<(), OptimError> {
    check_non_negative("prior lambda", lambda)?;
    check_len("prior", "weight", expected, weight)?;
    if let Some(centre) = centre {
        check_len("prior", "centre", expected, centre)?;
    }
    check_len("prior", "gradient", expected, grad)
}

/// One element: adds `lambda * (w - c)` to the gradient (computed in f64, rounded once) and
/// returns `(w - c)^2`.
fn add_element(lambda: f64, w: f32, c: f32, g: &mut f32) -> f64 {
    let d = f64::from(w) - f64::from(c);
    *g = (f64::from(*g) + lambda * d) as f32;
    d * d
}

/// The Gaussian prior centred on `centre`: adds `lambda * (w - centre)` to `grad` and returns
/// the loss term `lambda / 2 * ||w - centre||^2`.
///
/// The loss is accumulated in f64; each gradient element is `grad + lambda * (w - centre)`
/// computed in f64 and rounded once to f32.
///
/// # Errors
///
/// [`OptimError::LengthMismatch`] if `centre` or `grad` does not have `weight`'s length,
/// [`OptimError::BadConfig`] if `lambda` is negative or not finite. On error `grad` is unchanged.
pub fn prior_term(
    lambda: f64,
    weight: &[f32],
    centre: &[f32],
    grad: &mut [f32],
) -> Result<f64, OptimError> {
    check_term(
        lambda,
        weight.len(),
        weight.len(),
        Some(centre.len()),
        grad.len(),
    )?;
    let mut sum = 0.0;
    for ((&w, &c), g) in weight.iter().zip(centre).zip(grad.iter_mut()) {
        sum += add_element(lambda, w, c, g);
    }
    Ok(lambda / 2.0 * sum)
}

/// The identity prior of a conv weight of shape `[out, in, kh, kw]`: [`prior_term`] with the
/// centre [`dirac`]`(out, in, kh, kw)`, without building it. Returns the loss term
/// `lambda / 2 * ||W - D||^2` and adds `lambda * (W - D)` to `grad`.
///
/// # Errors
///
/// [`OptimError::BadShape`] if the shape overflows, otherwise as [`prior_term`].
pub fn identity_prior_term(
    lambda: f64,
    shape: [usize; 4],
    weight: &[f32],
    grad: &mut [f32],
) -> Result<f64, OptimError> {
    let n = numel("identity prior weight", &shape)?;
    check_term(lambda, n, weight.len(), None, grad.len())?;
    let mut sum = 0.0;
    for (k, (&w, g)) in weight.iter().zip(grad.iter_mut()).enumerate() {
        sum += add_element(lambda, w, dirac_at(shape, k), g);
    }
    Ok(lambda / 2.0 * sum)
}

/// The identity prior's loss term alone, `lambda / 2 * ||W - D||^2` (accumulated in f64).
///
/// # Errors
///
/// As [`identity_prior_term`].
pub fn identity_prior_loss(
    lambda: f64,
    shape: [usize; 4],
    weight: &[f32],
) -> Result<f64, OptimError> {
    let n = numel("identity prior weight", &shape)?;
    check_term(lambda, n, weight.len(), None, weight.len())?;
    let sum: f64 = weight
        .iter()
        .enumerate()
        .map(|(k, &w)| {
            let d = f64::from(w) - f64::from(dirac_at(shape, k));
            d * d
        })
        .sum();
    Ok(lambda / 2.0 * sum)
}

/// Element `k` (row-major) of the Dirac kernel of `shape` (`k` in range, so no dimension is 0).
fn dirac_at([_, in_channels, kh, kw]: [usize; 4], k: usize) -> f32 {
    let x = k % kw;
    let y = (k / kw) % kh;
    let i = (k / (kw * kh)) % in_channels;
    let o = k / (kw * kh * in_channels);
    if o == i && y == kh / 2 && x == kw / 2 {
        1.0
    } else {
        0.0
    }
}
