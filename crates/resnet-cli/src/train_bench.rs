//! `resnet bench --train`: full SGD steps (forward, backward, update) timed on seeded random
//! weights and inputs, reported as `../shared/tools/torch-train-baseline speed` reports
//! PyTorch's (same JSON fields), so the two compare row by row.

use crate::train::ModelSpec;
use anyhow::{Result, bail};
use resnet_models::random_plan_weights;
use resnet_models::timing::{median_min, time_iters};
use resnet_tensor::Tensor;
use resnet_train::Trainer;
use resnet_train::optim::{DecayPolicy, Prior, Sgd, SgdConfig};
use serde_json::json;

/// Untimed steps before the timed ones (as the PyTorch baseline).
const WARMUP: usize = 3;

/// What `resnet bench --train` times.
pub(crate) struct TrainBench<'a> {
    pub arch: &'a str,
    pub batch: usize,
    pub channels: usize,
    pub size: usize,
    pub iters: usize,
    pub threads: usize,
    pub json: bool,
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Time SGD steps of one configuration and print one line (or JSON).
pub(crate) fn bench_train(b: &TrainBench<'_>) -> Result<()> {
    if b.batch < 2 {
        bail!("--batch must be at least 2 to train (batch-norm needs two values per channel)");
    }
    let spec = ModelSpec::parse(b.arch)?;
    let plan = spec.plan(b.channels, 10)?;
    crate::limits::check_memory(
        crate::limits::train_step_bytes(&plan, [b.batch, b.channels, b.size, b.size])?,
        &format!(
            "a training step of {} on a batch of {} at {}x{}",
            b.arch, b.batch, b.size, b.size
        ),
        "use a smaller --batch or --size",
    )?;
    let weights = random_plan_weights(&plan, 0)?;
    let mut trainer = Trainer::new(plan, &weights)?.with_threads(b.threads)?;
    let mut sgd = Sgd::try_new(
        SgdConfig::new(0.01)
            .with_momentum(0.9)
            .with_weight_decay(1e-4),
    )?;
    let len = b.batch * b.channels * b.size * b.size;
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let values: Vec<f32> = (0..len)
        .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(&[b.batch, b.channels, b.size, b.size], values)?;
    let labels: Vec<usize> = (0..b.batch).map(|_| (next() % 10) as usize).collect();
    let mut step = || -> Result<()> {
        let out = trainer.sgd_step(&mut sgd, &Prior::Zero, DecayPolicy::All, &x, &labels)?;
        trainer.recycle(out);
        Ok(())
    };
    // `time_iters` runs one more untimed step first.
    for _ in 1..WARMUP {
        step()?;
    }
    let times = time_iters(b.iters, &mut step)?;
    let (median, min) = median_min(&times);
    let peak = peak_rss_mb();
    let name = spec.name();
    if b.json {
        println!(
            "{}",
            json!({
                "engine": "resnet-rs", "arch": name, "batch": b.batch, "channels": b.channels,
                "size": b.size, "threads": b.threads, "median_ms": median * 1e3,
                "min_ms": min * 1e3, "images_per_s": b.batch as f64 / median,
                "peak_rss_mb": peak,
            })
        );
    } else {
        println!(
            "{name} train batch {} {}x{}x{} threads {}: median {:.1} ms/step, min {:.1} ms, {:.1} images/s, peak memory {}",
            b.batch,
            b.channels,
            b.size,
            b.size,
            b.threads,
            median * 1e3,
            min * 1e3,
            b.batch as f64 / median,
            peak.map_or("unknown".to_string(), |p| format!("{p:.0} MiB")),
        );
    }
    Ok(())
}
