//! Sizes from the command line, checked before anything is allocated for them: a forward pass
//! whose activations would not fit in the memory available is refused with the options to
//! change, instead of ending in an allocation failure and an abort.

use anyhow::{Result, bail};
use resnet_models::Plan;

/// The smallest `--tile` used, whatever the overlap (see [`tile_size`]).
pub const MIN_TILE: usize = 4;

/// Bytes of memory the system can still give this process (Linux: `MemAvailable`), or `None`
/// where that is not known.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// When the available memory is not known: refuse only what no machine has (1 TiB).
const UNKNOWN_BUDGET: u64 = 1 << 40;

/// About how many bytes one forward pass of `plan` on an input of `dims` (`[N, C, H, W]`)
/// needs: every activation buffer at the largest size the plan writes to it, plus the input
/// and its copy in the kernels' layout. The kernels' scratch (bounded per thread) is left out.
pub fn forward_bytes(plan: &Plan, dims: [usize; 4]) -> Result<u64> {
    let trace = plan.trace(dims)?;
    let mut slots = vec![0u64; plan.slots()];
    for (step, (_, out)) in plan.steps().iter().zip(&trace) {
        if let Some(d) = step.dst() {
            slots[d.0] = slots[d.0].max(numel(*out));
        }
    }
    let values = slots
        .iter()
        .fold(numel(dims).saturating_mul(2), |a, b| a.saturating_add(*b));
    Ok(values.saturating_mul(4))
}

/// About how many bytes a training step keeps: every step's output and its gradient.
pub fn train_step_bytes(plan: &Plan, dims: [usize; 4]) -> Result<u64> {
    let trace = plan.trace(dims)?;
    let values = trace
        .iter()
        .fold(numel(dims), |a, (_, o)| a.saturating_add(numel(*o)));
    Ok(values.saturating_mul(2 * 4))
}

fn numel(d: [usize; 4]) -> u64 {
    d.iter().fold(1u64, |a, &x| a.saturating_mul(x as u64))
}

/// A byte count for people: `2.0 TiB`, `3.2 GiB`, `410 MiB`.
pub fn human(bytes: u64) -> String {
    const TIB: f64 = (1u64 << 40) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= TIB {
        format!("{:.1} TiB", b / TIB)
    } else if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", (b / MIB).ceil())
    }
}

/// Refuse `need` bytes for `what` when they exceed the memory available; `fix` says which
/// options make it smaller.
pub fn check_memory(need: u64, what: &str, fix: &str) -> Result<()> {
    let (budget, known) = match available_bytes() {
        Some(b) => (b, true),
        None => (UNKNOWN_BUDGET, false),
    };
    if need > budget {
        bail!(
            "{what} needs about {} of memory, more than the {} {}: {fix}",
            human(need),
            human(budget),
            if known {
                "available"
            } else {
                "this program allows"
            }
        );
    }
    Ok(())
}

/// The tile size to use for a `--tile` of `tile` pixels computed with `overlap` pixels on
/// every side: at least [`MIN_TILE`] and half the overlap, said on stderr when raised. A tile
/// of `t` pixels costs `(t + 2 overlap)^2` pixels of work for `t^2` kept: 25 times the work at
/// `t = overlap / 2`, over a thousand times for a 2-pixel tile of a 36-pixel overlap.
pub fn tile_size(tile: u32, overlap: usize) -> usize {
    let floor = MIN_TILE.max(overlap / 2);
    let tile = tile as usize;
    if tile < floor {
        let grown = tile + 2 * overlap;
        eprintln!(
            "note: --tile {tile} is too small: each tile is computed with {overlap} pixels of \
             overlap on every side ({grown}x{grown} pixels for {tile}x{tile} kept); using \
             --tile {floor}"
        );
        floor
    } else {
        tile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(2 << 40), "2.0 TiB");
        assert_eq!(human(410 << 20), "410 MiB");
        assert_eq!(human(1), "1 MiB");
    }

    #[test]
    fn forward_bytes_grow_with_the_input() {
        let plan = resnet_models::resnet_plan(&resnet_models::resnet18(1000)).unwrap();
        let small = forward_bytes(&plan, [1, 3, 224, 224]).unwrap();
        let big = forward_bytes(&plan, [8, 3, 224, 224]).unwrap();
        // The stem's 64 x 112 x 112 output alone is 3.2 MB a picture.
        assert!(small > 64 * 112 * 112 * 4, "{small}");
        assert!(big > 7 * small, "{big} vs {small}");
        // The largest batch and side the options allow: hundreds of TiB, no overflow.
        let huge = forward_bytes(&plan, [65535, 3, 16384, 16384]).unwrap();
        assert!(huge > 100 << 40, "{huge}");
        // Sizes past usize are the plan's typed error.
        assert!(forward_bytes(&plan, [usize::MAX, 3, 64, 64]).is_err());
    }

    #[test]
    fn tiles_are_raised_to_the_floor() {
        assert_eq!(tile_size(2, 0), MIN_TILE);
        assert_eq!(tile_size(2, 3), MIN_TILE);
        assert_eq!(tile_size(2, 40), 20);
        assert_eq!(tile_size(19, 40), 20);
        assert_eq!(tile_size(20, 40), 20);
        assert_eq!(tile_size(192, 40), 192);
    }
}
