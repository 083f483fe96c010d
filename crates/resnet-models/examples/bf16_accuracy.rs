//! How far the bf16 path is from f32: relative error per stage (`max|bf16 - f32| / max|f32|`)
//! and against PyTorch's expected outputs, top-1 agreement with f32 on the three sample
//! images and on random inputs, for the golden ResNet-18 and ResNet-50; and the golden EDSR
//! nets' outputs (RGB, 0..255) against f32's and PyTorch's, as maximum absolute errors.
//!
//! `cargo run --release -p resnet-models --example bf16_accuracy -- [GOLDEN_DIR] [RANDOM_INPUTS]`
//! (defaults: `../shared/golden`, 300; random inputs are N(0, 1) per value, seeded).

use resnet_models::{Backend, Edsr, Precision, ResNet};
use resnet_tensor::Tensor;
use resnet_weights::WeightFile;
use std::path::PathBuf;

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.as_slice().iter().zip(b.as_slice()) {
        num = num.max((f64::from(x) - f64::from(y)).abs());
        den = den.max(f64::from(y).abs());
    }
    num / den
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&i, &j| row[i].total_cmp(&row[j]))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "../shared/golden".into()));
    let randoms: usize = args.next().map_or(Ok(300), |s| s.parse())?;
    if !Precision::Bf16.is_available() {
        println!("no AVX512-BF16 on this CPU: nothing to measure");
        return Ok(());
    }
    let images = WeightFile::open(dir.join("preprocess.safetensors"))?;
    for name in ["resnet18_f16", "resnet50_bf16"] {
        let w = dir.join(format!("{name}.safetensors"));
        let f32net = ResNet::from_file(&w)?;
        let bf16net = ResNet::from_file_with(&w, Backend::Fast, Precision::Bf16)?;
        let expected = WeightFile::open(dir.join(format!("{name}.expected.safetensors")))?;
        let x = expected.load("x224")?;
        let a = f32net.forward_stages(&x)?;
        let b = bf16net.forward_stages(&x)?;
        println!(
            "{name}: relative error per stage, bf16 vs f32 | bf16 vs PyTorch | f32 vs PyTorch"
        );
        for ((stage, tb), (_, ta)) in b.named().into_iter().zip(a.named()) {
            let want = expected.load(&format!("x224.{stage}"))?;
            println!(
                "  {stage:>7}: {:.2e} | {:.2e} | {:.2e}",
                rel(tb, ta),
                rel(tb, &want),
                rel(ta, &want)
            );
        }
        let mut agree = 0;
        for img in ["chelsea", "coffee", "rocket"] {
            let x = images.load(img)?;
            let (la, lb) = (f32net.forward(&x)?, bf16net.forward(&x)?);
            let (ta, tb) = (argmax(la.as_slice()), argmax(lb.as_slice()));
            agree += usize::from(ta == tb);
            println!(
                "  {img}: top-1 f32 {ta}, bf16 {tb}; logits relative error {:.2e}",
                rel(&lb, &la)
            );
        }
        println!("  sample images: top-1 equal on {agree} of 3");
        // Random inputs, in batches of 10.
        let (mut same, mut worst, mut state) = (0usize, 0.0f64, 0x9e37_79b9_7f4a_7c15u64);
        let mut normal = move || {
            // Box-Muller on a xorshift stream.
            let mut u = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (u1, u2) = (u(), u());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let batch = 10;
        for _ in 0..randoms.div_ceil(batch) {
            let data: Vec<f32> = (0..batch * 3 * 224 * 224).map(|_| normal()).collect();
            let x = Tensor::from_vec(&[batch, 3, 224, 224], data)?;
            let (la, lb) = (f32net.forward(&x)?, bf16net.forward(&x)?);
            for i in 0..batch {
                let ra = &la.as_slice()[i * 1000..(i + 1) * 1000];
                let rb = &lb.as_slice()[i * 1000..(i + 1) * 1000];
                same += usize::from(argmax(ra) == argmax(rb));
                let den = ra.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
                let num = ra
                    .iter()
                    .zip(rb)
                    .fold(0.0f64, |m, (&p, &q)| m.max(f64::from(p - q).abs()));
                worst = worst.max(num / den);
            }
        }
        let n = randoms.div_ceil(batch) * batch;
        println!(
            "  {n} random N(0,1) inputs: top-1 equal on {same} ({:.1}%), worst logits relative error {worst:.2e}",
            100.0 * same as f64 / n as f64
        );
    }
    for name in ["edsr_baseline_x2", "edsr_tiny_x3", "edsr_tiny_x4"] {
        let w = dir.join(format!("{name}.safetensors"));
        let expected = WeightFile::open(dir.join(format!("{name}.expected.safetensors")))?;
        let (x, want) = (expected.load("input")?, expected.load("output")?);
        let a = Edsr::from_file(&w)?.forward(&x)?;
        let b = Edsr::from_file_with(&w, Backend::Fast, Precision::Bf16)?.forward(&x)?;
        let max_abs = |p: &Tensor, q: &Tensor| {
            p.as_slice()
                .iter()
                .zip(q.as_slice())
                .fold(0.0f32, |m, (u, v)| m.max((u - v).abs()))
        };
        println!(
            "{name}: max |bf16 - f32| {:.3}, max |bf16 - PyTorch| {:.3}, max |f32 - PyTorch| {:.1e} (of 0..255)",
            max_abs(&b, &a),
            max_abs(&b, &want),
            max_abs(&a, &want)
        );
    }
    Ok(())
}
