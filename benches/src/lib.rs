//! Shared pieces of the resnet-rs benchmarks: timing, machine description, the distinct
//! convolutions of ResNet-18/50, and the SVG plot of `cargo xtask bench --plot`.

#![forbid(unsafe_code)]

use resnet_kernels::Cpu;

pub mod plot;
pub mod train;

pub use resnet_models::timing::{median_min, time_iters};

/// The CPU's model name (from `/proc/cpuinfo` on Linux), or "unknown CPU".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// What the report says about the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// The SIMD level the kernels dispatch to.
    pub simd: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Measured peak f32 GFLOP/s of one core.
    pub peak_gflops: f64,
}

impl Machine {
    /// Detect the machine and measure one core's peak with a short FMA loop.
    pub fn detect(millis: u64) -> Self {
        let cpu = Cpu::detect();
        Self {
            cpu: cpu_model(),
            simd: cpu.level().to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            peak_gflops: resnet_kernels::fast::measure_peak_gflops(cpu, millis),
        }
    }
}

/// A distinct convolution of ResNet-18/50 at 224x224: `(name, C, O, H (= W), kernel, stride)`.
pub type ConvShape = (&'static str, usize, usize, usize, usize, usize);

/// Every distinct convolution shape of ResNet-18 and ResNet-50 at 224x224 (groups 1).
pub const RESNET_CONVS: &[ConvShape] = &[
    ("stem_7x7_s2", 3, 64, 224, 7, 2),
    ("r18_l1_3x3", 64, 64, 56, 3, 1),
    ("r18_l2_3x3_s2", 64, 128, 56, 3, 2),
    ("r18_l2_3x3", 128, 128, 28, 3, 1),
    ("r18_l3_3x3_s2", 128, 256, 28, 3, 2),
    ("r18_l3_3x3", 256, 256, 14, 3, 1),
    ("r18_l4_3x3_s2", 256, 512, 14, 3, 2),
    ("r18_l4_3x3", 512, 512, 7, 3, 1),
    ("r18_down2_1x1_s2", 64, 128, 56, 1, 2),
    ("r18_down3_1x1_s2", 128, 256, 28, 1, 2),
    ("r18_down4_1x1_s2", 256, 512, 14, 1, 2),
    ("r50_l1_1x1_64_64", 64, 64, 56, 1, 1),
    ("r50_l1_1x1_64_256", 64, 256, 56, 1, 1),
    ("r50_l1_1x1_256_64", 256, 64, 56, 1, 1),
    ("r50_l1_3x3", 64, 64, 56, 3, 1),
    ("r50_l2_1x1_256_128", 256, 128, 56, 1, 1),
    ("r50_l2_3x3_s2", 128, 128, 56, 3, 2),
    ("r50_l2_down_1x1_s2", 256, 512, 56, 1, 2),
    ("r50_l2_1x1_128_512", 128, 512, 28, 1, 1),
    ("r50_l2_1x1_512_128", 512, 128, 28, 1, 1),
    ("r50_l2_3x3", 128, 128, 28, 3, 1),
    ("r50_l3_1x1_512_256", 512, 256, 28, 1, 1),
    ("r50_l3_3x3_s2", 256, 256, 28, 3, 2),
    ("r50_l3_down_1x1_s2", 512, 1024, 28, 1, 2),
    ("r50_l3_1x1_256_1024", 256, 1024, 14, 1, 1),
    ("r50_l3_1x1_1024_256", 1024, 256, 14, 1, 1),
    ("r50_l3_3x3", 256, 256, 14, 3, 1),
    ("r50_l4_1x1_1024_512", 1024, 512, 14, 1, 1),
    ("r50_l4_3x3_s2", 512, 512, 14, 3, 2),
    ("r50_l4_down_1x1_s2", 1024, 2048, 14, 1, 2),
    ("r50_l4_1x1_512_2048", 512, 2048, 7, 1, 1),
    ("r50_l4_1x1_2048_512", 2048, 512, 7, 1, 1),
    ("r50_l4_3x3", 512, 512, 7, 3, 1),
];
