//! Wall-clock timing of repeated calls, shared by `resnet bench` and `cargo xtask bench`: one
//! definition of the warm-up, the median and the minimum.
//!
//! ```
//! use resnet_models::timing::{median_min, time_iters};
//! let times = time_iters(5, || Ok::<(), ()>(()))?;
//! assert_eq!(times.len(), 5);
//! let (median, min) = median_min(&times);
//! assert!(min <= median);
//! # Ok::<(), ()>(())
//! ```

use std::time::Instant;

/// Run `f` `iters` times (at least once, after one untimed warm-up call) and return each
/// call's wall time in seconds.
pub fn time_iters<E>(iters: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Vec<f64>, E> {
    f()?;
    let mut t = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    Ok(t)
}

/// Median (the mean of the middle two for an even count) and minimum of a list of times; NaN
/// for an empty list.
pub fn median_min(times: &[f64]) -> (f64, f64) {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let med = if t.is_empty() {
        f64::NAN
    } else if t.len() % 2 == 1 {
        t[t.len() / 2]
    } else {
        (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2.0
    };
    (med, t.first().copied().unwrap_or(f64::NAN))
}
