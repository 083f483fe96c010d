//! `resnet eval`: a classifier's error, loss and confusion matrix on a dataset split.

use crate::commands::{Loaded, Opts, load_model, meta_array};
use crate::train_data::TrainData;
use crate::{EvalArgs, SplitArg};
use anyhow::{Context, Result, bail};
use resnet_train::data::Normalize;
use resnet_train::evaluate;
use serde_json::json;

/// Run `resnet eval`.
pub fn eval(a: &EvalArgs, opts: Opts) -> Result<()> {
    let Loaded { model, meta } = load_model(&a.weights.weights, opts)?;
    let crop = match a.crop {
        Some(c) => c as usize,
        None => meta.get("crop").and_then(|c| c.parse().ok()).unwrap_or(224),
    };
    let data = TrainData::open(&a.data, None, None, crop)?;
    let names = data.class_names();
    let TrainData::Set { train, test, .. } = data else {
        bail!(
            "--data {}: resnet eval takes a dataset (fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, folder:DIR)",
            a.data
        );
    };
    // A model that names its classes must name the data's, in the same order.
    if let (Some(theirs), Some(ours)) = (
        meta_array(&meta, "classes", "names", |v| v.as_str().map(String::from))?,
        names.as_ref(),
    ) && theirs != *ours
    {
        bail!(
            "the weights' classes ({}) are not --data {}'s ({})",
            theirs.join(", "),
            a.data,
            ours.join(", ")
        );
    }
    let arch = model.config();
    let [c, h, w] = train.input_dims();
    if arch.in_channels() != c {
        bail!(
            "{} takes {}-channel input; --data {} has {c} channel(s)",
            arch.name(),
            arch.in_channels(),
            a.data
        );
    }
    if arch.num_classes() != train.classes() {
        bail!(
            "{} has {} classes; --data {} has {}",
            arch.name(),
            arch.num_classes(),
            a.data,
            train.classes()
        );
    }
    // The normalisation the net was trained with (its metadata), else the training split's.
    let number = |v: &serde_json::Value| v.as_f64();
    let norm = match (
        meta_array(&meta, "mean", "numbers", number)?,
        meta_array(&meta, "std", "numbers", number)?,
    ) {
        (Some(mean), Some(std)) if mean.len() == c && std.len() == c => Normalize { mean, std },
        (Some(m), Some(s)) => bail!(
            "the file's metadata mean/std have {}/{} values for {c}-channel data",
            m.len(),
            s.len()
        ),
        _ => {
            eprintln!(
                "note: the weights' metadata records no normalisation (mean, std): using the training split's"
            );
            Normalize::from_dataset(&train)
        }
    };
    let set = match a.split {
        SplitArg::Test => &test,
        SplitArg::Train => &train,
    };
    if set.is_empty() {
        bail!(
            "--data {}: the {} split has no examples",
            a.data,
            match a.split {
                SplitArg::Test => "test",
                SplitArg::Train => "train",
            }
        );
    }
    let batch = (a.batch as usize).min(set.len());
    crate::limits::check_memory(
        crate::limits::forward_bytes(model.plan(), [batch, c, h, w])?,
        &format!("{} on batches of {batch} examples of {w}x{h}", arch.name()),
        "use a smaller --batch (or --crop)",
    )?;
    let e = evaluate(model.network(), set, &norm, a.batch as usize)
        .with_context(|| format!("evaluating on {}", set.name()))?;
    let k = set.classes();
    let names: Vec<String> = names.unwrap_or_else(|| (0..k).map(|i| i.to_string()).collect());
    if a.json {
        println!(
            "{}",
            json!({
                "examples": e.examples, "error": e.error, "loss": e.loss,
                "confusion": e.confusion, "classes": names,
                "split": match a.split { SplitArg::Test => "test", SplitArg::Train => "train" },
            })
        );
        return Ok(());
    }
    let wrong: u64 = e
        .confusion
        .iter()
        .enumerate()
        .map(|(i, row)| row.iter().sum::<u64>() - row[i])
        .sum();
    println!(
        "{} on {} ({} examples of {c}x{h}x{w}): error {:.2}% ({wrong} wrong), loss {:.4}",
        arch.name(),
        set.name(),
        e.examples,
        100.0 * e.error,
        e.loss
    );
    // The confusion matrix: rows are the true classes, columns the predicted ones.
    let width = e
        .confusion
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(k.to_string().len())
        .max(3);
    let label_width = names.iter().map(String::len).max().unwrap_or(1);
    println!(
        "confusion matrix (rows: true class, columns: predicted class {}..{}):",
        0,
        k - 1
    );
    let head: String = (0..k).map(|j| format!(" {j:>width$}")).collect();
    println!("{:>label_width$}     {head}", "");
    for (i, row) in e.confusion.iter().enumerate() {
        let cells: String = row.iter().map(|v| format!(" {v:>width$}")).collect();
        let total: u64 = row.iter().sum();
        let acc = if total == 0 {
            String::new()
        } else {
            format!("  {:.1}% right", 100.0 * row[i] as f64 / total as f64)
        };
        println!("{:>label_width$} {i:>3} {cells}{acc}", names[i]);
    }
    Ok(())
}
