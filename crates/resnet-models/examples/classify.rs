//! Load a ResNet from a safetensors file (architecture inferred), run it on a batch, print the
//! top-5 classes of each image (by name for a 1000-class ImageNet net) with timings.
//!
//! ```text
//! cargo run --release -p resnet-models --example classify -- [WEIGHTS.safetensors] [INPUT.safetensors KEY]
//! ```
//! Without arguments it uses `../shared/golden/resnet18_f16.safetensors` and the golden input
//! `x224` if they exist, and otherwise a seeded random ResNet-18 on a synthetic image.

use resnet_models::{ResNet, Tensor, WeightFile, imagenet, resnet18, top_k};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let golden = std::env::var("RESNET_GOLDEN_DIR").unwrap_or_else(|_| "../shared/golden".into());
    let weights = args
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{golden}/resnet18_f16.safetensors"));
    let t0 = Instant::now();
    let model = if std::path::Path::new(&weights).is_file() {
        ResNet::from_file(&weights)?
    } else {
        eprintln!("{weights} not found: using a seeded random ResNet-18");
        ResNet::random(&resnet18(1000), 0)?
    };
    println!("loaded {} in {:.1?}", model.config().name(), t0.elapsed());

    let (input, key) = match (args.get(1), args.get(2)) {
        (Some(f), Some(k)) => (f.clone(), k.clone()),
        _ => (
            format!("{golden}/resnet18_f16.expected.safetensors"),
            "x224".into(),
        ),
    };
    let x = if std::path::Path::new(&input).is_file() {
        WeightFile::open(&input)?.load(&key)?
    } else {
        let v = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        Tensor::from_vec(&[1, 3, 224, 224], v)?
    };
    let t0 = Instant::now();
    let logits = model.forward(&x)?;
    println!("forward of {:?} in {:.1?}", x.shape(), t0.elapsed());
    let imagenet_names = model.config().resnet().is_some()
        && model.config().num_classes() == imagenet::CLASSES.len();
    for (i, row) in top_k(&logits, 5)?.iter().enumerate() {
        println!("image {i}:");
        for (c, p) in row {
            if imagenet_names {
                println!("  {p:.4}  {} ({c})", imagenet::CLASSES[*c]);
            } else {
                println!("  {p:.4}  class {c}");
            }
        }
    }
    Ok(())
}
