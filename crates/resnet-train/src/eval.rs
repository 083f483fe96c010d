//! Evaluation of a classifier on a labelled dataset: mean cross-entropy, error and the
//! confusion matrix, through the inference path (batch-norm in eval mode).

use crate::TrainError;
use crate::data::{Dataset, Loader, Normalize};
use resnet_kernels::naive_grad;
use resnet_models::Network;

/// What [`evaluate`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Mean softmax cross-entropy.
    pub loss: f64,
    /// Fraction of examples whose first largest logit is not the label.
    pub error: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Run `net` (whose `logits` output has one value per class of `data`) on every example of
/// `data`, normalised by `norm`, `batch` at a time. A dataset without examples is an error.
///
/// ```
/// use resnet_models::{Backend, CifarConfig, Network, cifar_plan, random_plan_weights};
/// use resnet_train::data::{Dataset, Normalize};
/// use resnet_train::evaluate;
///
/// let data = Dataset::new("toy", [1, 8, 8], vec![9; 3 * 64], vec![0, 1, 1], 2)?;
/// let plan = cifar_plan(&CifarConfig::new(8, 2).with_in_channels(1))?;
/// let net = Network::load(plan.clone(), &random_plan_weights(&plan, 0)?, Backend::Fast)?;
/// let e = evaluate(&net, &data, &Normalize::from_dataset(&data), 2)?;
/// assert_eq!(e.examples, 3);
/// assert_eq!(e.confusion.iter().flatten().sum::<u64>(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn evaluate(
    net: &Network,
    data: &Dataset,
    norm: &Normalize,
    batch: usize,
) -> Result<Evaluation, TrainError> {
    if data.is_empty() {
        return Err(TrainError::Input(format!(
            "{}: no examples to evaluate",
            data.name()
        )));
    }
    let k = data.classes();
    let mut confusion = vec![vec![0u64; k]; k];
    let (mut loss_sum, mut wrong) = (0.0f64, 0u64);
    for b in Loader::eval_batches(data, norm, batch) {
        let b = b.map_err(|e| TrainError::Input(e.to_string()))?;
        let y = net.output(&b.input, "logits")?;
        let n = b.labels.len();
        let dims = y.shape().dims();
        if dims.first() != Some(&n) || y.len() != n * k {
            return Err(TrainError::Input(format!(
                "the network gives logits of shape {dims:?}; the data has {k} classes"
            )));
        }
        let logits = y.as_slice();
        loss_sum +=
            naive_grad::softmax_cross_entropy([n, k], logits, &b.labels, 0.0, None)? * n as f64;
        for (row, &label) in logits.chunks_exact(k).zip(&b.labels) {
            let best = crate::engine::argmax(row);
            confusion[label][best] += 1;
            wrong += u64::from(best != label);
        }
    }
    let examples = data.len();
    let per = examples.max(1) as f64;
    Ok(Evaluation {
        examples,
        loss: loss_sum / per,
        error: wrong as f64 / per,
        confusion,
    })
}
