//! Per-layer times of one forward pass: `cargo run --release -p resnet-models --example profile -- WEIGHTS [BATCH] [THREADS] [f32|bf16]`.

use resnet_models::{Backend, Precision, ResNet};
use resnet_tensor::Tensor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let batch: usize = a.get(1).map_or(Ok(1), |v| v.parse())?;
    let threads: usize = a.get(2).map_or(Ok(1), |v| v.parse())?;
    let precision = match a.get(3).map(String::as_str) {
        None | Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some(other) => return Err(format!("precision {other:?}: f32 or bf16").into()),
    };
    let model = ResNet::from_file_with(&a[0], Backend::Fast, precision)?.with_threads(threads)?;
    let x = Tensor::zeros(&[batch, 3, 224, 224])?;
    model.forward(&x)?;
    let mut runs: Vec<Vec<resnet_models::LayerTime>> = (0..9)
        .map(|_| model.profile(&x))
        .collect::<Result<_, _>>()?;
    let mut total = 0.0;
    for i in 0..runs[0].len() {
        let mut t: Vec<f64> = runs.iter_mut().map(|r| r[i].seconds).collect();
        t.sort_by(f64::total_cmp);
        let l = &runs[0][i];
        let med = t[t.len() / 2];
        total += med;
        println!(
            "{:24} {:>20} {:?} -> {:?} {:8.3} ms {:6.1} GFLOP/s",
            l.name,
            l.algo.map(|a| a.to_string()).unwrap_or_default(),
            l.input,
            l.output,
            med * 1e3,
            2.0 * l.macs as f64 / med / 1e9
        );
    }
    println!("total {:.2} ms", total * 1e3);
    Ok(())
}
