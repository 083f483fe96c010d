//! Concurrency soak: one model shared by 8 threads, each running hundreds of forwards on its
//! own inputs (of different batch sizes and image sizes, so workspaces grow and are reused),
//! every output compared bit for bit with a sequential run.

use resnet_models::{ResNet, ResNetConfig, resnet18};
use resnet_tensor::Tensor;
use std::sync::Arc;

const THREADS: usize = 8;
const FORWARDS: usize = 300;

#[test]
fn eight_threads_share_one_model_without_mixing_anything() {
    let cfg = ResNetConfig {
        layers: vec![1, 1, 1, 1],
        ..resnet18(10)
    };
    let model = Arc::new(ResNet::random(&cfg, 17).unwrap().with_threads(2).unwrap());
    // Each thread gets its own inputs: batch 1..3, sizes 24..40.
    let inputs: Vec<Vec<Tensor>> = (0..THREADS)
        .map(|t| {
            (0..4)
                .map(|k| {
                    let (n, hw) = (1 + (t + k) % 3, 24 + 4 * ((t * 3 + k) % 5));
                    let len = n * 3 * hw * hw;
                    let v = (0..len)
                        .map(|i| (((i + 131 * t + 17 * k) % 97) as f32 / 48.0) - 1.0)
                        .collect();
                    Tensor::from_vec(&[n, 3, hw, hw], v).unwrap()
                })
                .collect()
        })
        .collect();
    // The reference: a sequential run on a single-threaded copy.
    let sequential = model.as_ref().clone().with_threads(1).unwrap();
    let expected: Vec<Vec<Tensor>> = inputs
        .iter()
        .map(|xs| xs.iter().map(|x| sequential.forward(x).unwrap()).collect())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (model, xs, want) = (&model, &inputs[t], &expected[t]);
                s.spawn(move || {
                    for i in 0..FORWARDS {
                        let k = (i * 7 + t) % xs.len();
                        let y = model.forward(&xs[k]).unwrap();
                        assert_eq!(y.as_slice(), want[k].as_slice(), "thread {t}, forward {i}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no thread panicked");
        }
    });
}
