//! The training section of the benchmark report: full SGD steps (forward, backward, update)
//! per configuration, each in a child process of its own so that its peak memory is its own,
//! beside PyTorch's on the same configuration (`../shared/tools/torch-train-baseline speed`,
//! same JSON fields).

use resnet_models::{
    CifarConfig, Plan, ResNetConfig, cifar_plan, random_plan_weights, resnet_plan,
};
use resnet_tensor::Tensor;
use resnet_train::Trainer;
use resnet_train::optim::{DecayPolicy, Prior, Sgd, SgdConfig};
use serde_json::{Value, json};
use std::time::Instant;

/// One configuration of the training table.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// `cifar-resnet20`, `cifar-plain56`, `resnet18` …
    pub arch: String,
    /// Images per step.
    pub batch: usize,
    /// Input channels.
    pub channels: usize,
    /// Input height and width.
    pub size: usize,
    /// Threads.
    pub threads: usize,
    /// Timed steps (after three untimed ones, as the PyTorch baseline).
    pub iters: usize,
}

impl TrainConfig {
    /// The arguments that describe it on a command line (`--train-row`).
    pub fn to_arg(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.arch, self.batch, self.channels, self.size, self.threads, self.iters
        )
    }

    /// Parse [`TrainConfig::to_arg`]'s form.
    pub fn parse(s: &str) -> Option<Self> {
        let p: Vec<&str> = s.split(',').collect();
        let [arch, b, c, hw, t, i] = p.as_slice() else {
            return None;
        };
        Some(Self {
            arch: arch.to_string(),
            batch: b.parse().ok()?,
            channels: c.parse().ok()?,
            size: hw.parse().ok()?,
            threads: t.parse().ok()?,
            iters: i.parse().ok()?,
        })
    }

    fn plan(&self) -> Result<Plan, Box<dyn std::error::Error>> {
        Ok(match CifarConfig::from_name(&self.arch, 10) {
            Some(cfg) => cifar_plan(&cfg.with_in_channels(self.channels))?,
            None => {
                let cfg = ResNetConfig::by_name(&self.arch, 10)
                    .ok_or_else(|| format!("unknown architecture {:?}", self.arch))?;
                resnet_plan(&cfg.with_in_channels(self.channels))?
            }
        })
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Time SGD steps of `cfg` in this process (seeded weights and inputs; the PyTorch baseline's
/// optimiser: lr 0.01, momentum 0.9, weight decay 1e-4) and return the JSON row.
pub fn run_row(cfg: &TrainConfig) -> Result<Value, Box<dyn std::error::Error>> {
    let plan = cfg.plan()?;
    let weights = random_plan_weights(&plan, 0)?;
    let mut trainer = Trainer::new(plan, &weights)?.with_threads(cfg.threads)?;
    let mut sgd = Sgd::try_new(
        SgdConfig::new(0.01)
            .with_momentum(0.9)
            .with_weight_decay(1e-4),
    )?;
    let len = cfg.batch * cfg.channels * cfg.size * cfg.size;
    let x = Tensor::from_vec(
        &[cfg.batch, cfg.channels, cfg.size, cfg.size],
        (0..len)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect(),
    )?;
    let labels: Vec<usize> = (0..cfg.batch).map(|i| i * 7 % 10).collect();
    let mut step = || -> Result<(), resnet_train::TrainError> {
        let out = trainer.sgd_step(&mut sgd, &Prior::Zero, DecayPolicy::All, &x, &labels)?;
        trainer.recycle(out);
        Ok(())
    };
    for _ in 0..3 {
        step()?;
    }
    let mut t = Vec::with_capacity(cfg.iters.max(1));
    for _ in 0..cfg.iters.max(1) {
        let t0 = Instant::now();
        step()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    let (median, min) = crate::median_min(&t);
    Ok(json!({
        "engine": "resnet-rs", "arch": cfg.arch, "batch": cfg.batch, "channels": cfg.channels,
        "size": cfg.size, "threads": cfg.threads, "median_ms": median * 1e3, "min_ms": min * 1e3,
        "images_per_s": cfg.batch as f64 / median, "peak_rss_mb": peak_rss_mb(),
    }))
}
