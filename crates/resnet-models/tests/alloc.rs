//! A warm forward pass allocates nothing but its output: activations live in the model's
//! pooled workspaces, convolution scratch in per-thread buffers, weights are packed at build
//! time and the matrix products allocate nothing.

use resnet_models::{
    Backend, Precision, ResNet, ResNetConfig, resnet18, resnet50, resnext50_32x4d, wide_resnet50_2,
};
use resnet_tensor::Tensor;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counts allocations (calls and bytes) while `COUNTING` is set, on every thread: the model's
/// pool threads must be counted too. So this file holds one test: with two, the harness's own
/// thread could record one test's end (a few allocations) inside the other's measured window.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `(allocation calls, bytes)` made while `f` runs.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    CALLS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (
        r,
        CALLS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

fn input(n: usize, hw: usize) -> Tensor {
    let len = n * 3 * hw * hw;
    let v = (0..len).map(|i| ((i % 89) as f32 / 44.0) - 1.0).collect();
    Tensor::from_vec(&[n, 3, hw, hw], v).unwrap()
}

/// Run the model once on `x`, then count what further forwards allocate.
fn check(cfg: ResNetConfig, threads: usize, n: usize, hw: usize) {
    check_in(cfg, Precision::F32, threads, n, hw);
}

/// [`check`] in `precision`.
fn check_in(cfg: ResNetConfig, precision: Precision, threads: usize, n: usize, hw: usize) {
    let name = format!("{:?} {:?} {precision:?}", cfg.block, cfg.groups);
    let model = ResNet::random_with(&cfg, 5, Backend::Fast, precision)
        .unwrap()
        .with_threads(threads)
        .unwrap();
    let x = input(n, hw);
    // One run per entry point sizes everything (workspaces, every pool thread's scratch);
    // then several, so that tiles landing on other threads would show.
    model.forward(&x).unwrap();
    for _ in 0..5 {
        let (logits, calls, bytes) = counted(|| model.forward(&x).unwrap());
        let out = logits.len() * 4;
        assert!(
            bytes <= out + 256 && calls <= 3,
            "{name}, {threads} thread(s), batch {n}, {hw}x{hw}: a warm forward made {calls} \
             allocation(s) of {bytes} bytes in all; its output is {out} bytes"
        );
        let (feats, calls, bytes) = counted(|| model.forward_features(&x).unwrap());
        let out = feats.len() * 4;
        assert!(
            bytes <= out + 256 && calls <= 3,
            "{name}, {threads} thread(s): forward_features made {calls} allocation(s) of \
             {bytes} bytes; its output is {out} bytes"
        );
    }
}

fn small(cfg: ResNetConfig) -> ResNetConfig {
    ResNetConfig {
        layers: vec![1, 1, 1, 1],
        ..cfg
    }
}

#[test]
fn warm_forward_allocates_only_its_output() {
    // One thread. Basic blocks (Winograd, im2col, strided 1x1), bottlenecks (pointwise),
    // groups, width.
    check(small(resnet18(10)), 1, 2, 64);
    check(small(resnet50(10)), 1, 1, 48);
    check(small(resnext50_32x4d(10)), 1, 1, 40);
    check(small(wide_resnet50_2(10)), 1, 1, 33);
    // Several threads.
    check(small(resnet18(10)), 2, 2, 64);
    check(small(resnet50(10)), 2, 1, 48);
    check(small(resnext50_32x4d(10)), 3, 1, 40);
    check(small(resnet50(10)), 3, 3, 37);
    // Batches run image by image, side by side on the threads (lanes) and the rest on all.
    check(small(resnet18(10)), 2, 5, 31);
    check(small(resnet50(10)), 3, 4, 29);
    // bf16: the padded maps come from the scratch's pool.
    if Precision::Bf16.is_available() {
        for threads in [1, 2] {
            check_in(small(resnet18(10)), Precision::Bf16, threads, 1, 64);
            check_in(small(resnet50(10)), Precision::Bf16, threads, 3, 48);
            check_in(small(resnext50_32x4d(10)), Precision::Bf16, threads, 2, 40);
        }
    } else {
        eprintln!("\n!!!!!!!! SKIPPED: no AVX512-BF16: bf16 allocations not counted !!!!!!!!\n");
    }
}
