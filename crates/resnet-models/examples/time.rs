//! Time forward passes: `cargo run --release -p resnet-models --example time -- WEIGHTS [BATCH] [THREADS] [ITERS]`.

use resnet_models::ResNet;
use resnet_tensor::Tensor;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let batch: usize = a.get(1).map_or(Ok(1), |v| v.parse())?;
    let threads: usize = a.get(2).map_or(Ok(1), |v| v.parse())?;
    let iters: usize = a.get(3).map_or(Ok(20), |v| v.parse())?;
    let model = ResNet::from_file(&a[0])?.with_threads(threads)?;
    let x = Tensor::from_vec(
        &[batch, 3, 224, 224],
        (0..batch * 3 * 224 * 224)
            .map(|i| ((i % 255) as f32) / 128.0 - 1.0)
            .collect(),
    )?;
    model.forward(&x)?;
    let mut t = Vec::new();
    for _ in 0..iters {
        let t0 = Instant::now();
        std::hint::black_box(model.forward(&x)?);
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    println!(
        "{} batch {batch} threads {threads}: median {:.2} ms, min {:.2} ms ({:?})",
        model.config().name(),
        t[t.len() / 2],
        t[0],
        model.cpu().level()
    );
    Ok(())
}
