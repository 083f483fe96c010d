//! A short FMA loop that measures the core's peak f32 rate, to put kernel speeds in proportion.

use crate::Cpu;
use pulp::{Simd, WithSimd};
use std::time::Instant;

struct FmaLoop {
    iters: u64,
}

impl WithSimd for FmaLoop {
    type Output = (f32, u64);
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f32, u64) {
        // 12 independent accumulators hide the FMA latency (4 cycles x 2 ports + slack).
        // Opaque starting values, so the loop cannot be folded away.
        let a = simd.splat_f32s(std::hint::black_box(0.999_999));
        let b = simd.splat_f32s(std::hint::black_box(1e-7));
        let mut acc = [simd.splat_f32s(std::hint::black_box(1.0)); 12];
        for _ in 0..self.iters {
            for v in acc.iter_mut() {
                *v = simd.mul_add_f32s(*v, a, b);
            }
        }
        let mut s = simd.splat_f32s(0.0);
        for v in acc {
            s = simd.add_f32s(s, v);
        }
        let lanes = (core::mem::size_of::<S::f32s>() / 4) as u64;
        (simd.reduce_sum_f32s(s), self.iters * 12 * lanes * 2)
    }
}

/// Measured peak f32 rate of one core, in GFLOP/s (an FMA counts 2), for the instruction set
/// `cpu` dispatches to. Runs for about `millis` milliseconds; the best of several rounds is kept.
pub fn measure_peak_gflops(cpu: Cpu, millis: u64) -> f64 {
    let mut best: f64 = 0.0;
    let start = Instant::now();
    let mut iters = 1 << 16;
    // At least one measured round, however slow the machine (or valgrind) is.
    while best == 0.0 || start.elapsed().as_millis() < u128::from(millis.max(1)) {
        let t0 = Instant::now();
        let (sink, flops) = cpu.dispatch(FmaLoop { iters });
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        if dt < 2e-3 {
            iters *= 2;
            continue;
        }
        best = best.max(flops as f64 / dt / 1e9);
    }
    best
}
