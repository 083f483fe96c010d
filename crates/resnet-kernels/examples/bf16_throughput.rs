//! Is the AVX512-BF16 product worth it on this CPU? Times `vdpbf16ps` against `vfmadd231ps`
//! (independent chains, registers only) and the bf16 product of [`resnet_kernels::bf16`]
//! against the f32 1x1 convolution on ResNet's shapes, in one run, medians of 20.
//!
//! `cargo run --release -p resnet-kernels --example bf16_throughput`

#[cfg(target_arch = "x86_64")]
fn main() {
    use resnet_kernels::bf16::{Bf16Cpu, Bf16Lhs, Bf16Rhs, matmul};
    use resnet_kernels::fast::{Ctx, Epilogue, PackedConv, Par, Scratch};
    use resnet_kernels::{Conv2dParams, Cpu};
    use std::time::Instant;

    let Some(cpu) = Bf16Cpu::detect() else {
        println!("no AVX512-BF16 on this CPU: nothing to time");
        return;
    };
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let n = 20_000_000;
    let (mut tb, mut tf) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        // SAFETY: `Bf16Cpu` proves AVX512-F and AVX512-BF16.
        std::hint::black_box(unsafe { chains::dpbf16(n) });
        tb.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        // SAFETY: as above (AVX512-F).
        std::hint::black_box(unsafe { chains::fma(n) });
        tf.push(t.elapsed().as_secs_f64());
    }
    let (b, f) = (median(tb), median(tf));
    let ops = 24.0 * n as f64;
    println!(
        "instructions: vdpbf16ps {:.2} G/s = {:.0} GFLOP/s; vfmadd231ps {:.2} G/s = {:.0} GFLOP/s; bf16 / f32 flop rate {:.2}",
        ops / b / 1e9,
        ops * 64.0 / b / 1e9,
        ops / f / 1e9,
        ops * 32.0 / f / 1e9,
        (64.0 / b) / (32.0 / f)
    );
    for &(hw, cin, cout) in &[
        (56usize, 64usize, 64usize),
        (28, 128, 128),
        (14, 256, 256),
        (7, 512, 512),
        (56, 64, 256),
    ] {
        let m = hw * hw;
        let a: Vec<f32> = (0..m * cin)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..cout * cin)
            .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let pb = Bf16Rhs::pack(cin, cout, |k, j| w[j * cin + k]).unwrap();
        let mut pa = Bf16Lhs::pack(&a, m, cin, cin).unwrap();
        let mut c = vec![0.0f32; m * cout];
        let conv = PackedConv::new(&w, [cout, cin, 1, 1], None, Conv2dParams::default()).unwrap();
        let scratch = Scratch::new(1);
        let ctx = Ctx::new(Cpu::detect(), Par::Seq, &scratch);
        let mut out = vec![0.0f32; m * cout];
        let (mut tp, mut tm, mut tc) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..20 {
            let t = Instant::now();
            pa.repack(&a, m, cin, cin).unwrap();
            tp.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            matmul(cpu, &pa, &pb, 0..m, &mut c, cout, false).unwrap();
            tm.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            conv.run(&ctx, &a, [1, cin, hw, hw], &mut out, Epilogue::none())
                .unwrap();
            tc.push(t.elapsed().as_secs_f64());
        }
        let (p, mm, cf) = (median(tp), median(tm), median(tc));
        let flops = 2.0 * (m * cin * cout) as f64;
        println!(
            "1x1 {hw}x{hw} {cin}->{cout}: bf16 product {:.0} GFLOP/s (+ rounding the input {:.3} ms), f32 conv {:.0} GFLOP/s; f32 time / bf16 time {:.2}",
            flops / mm / 1e9,
            p * 1e3,
            flops / cf / 1e9,
            cf / (mm + p)
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod chains {
    use std::arch::x86_64::*;

    /// 24 independent accumulators, `n` rounds of `vdpbf16ps`.
    ///
    /// # Safety
    /// AVX512-F and AVX512-BF16 present.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(n: usize) -> f32 {
        // SAFETY: same-size reinterpretations of integer vectors as bf16 vectors.
        let (x, y) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3f80_3f80)),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3c00_3c00)),
            )
        };
        let mut a = [_mm512_setzero_ps(); 24];
        for _ in 0..n {
            for r in a.iter_mut() {
                *r = _mm512_dpbf16_ps(*r, x, y);
            }
        }
        let s = a
            .iter()
            .fold(_mm512_setzero_ps(), |s, r| _mm512_add_ps(s, *r));
        _mm512_reduce_add_ps(s)
    }

    /// 24 independent accumulators, `n` rounds of `vfmadd231ps`.
    ///
    /// # Safety
    /// AVX512-F present.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma(n: usize) -> f32 {
        let (x, y) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
        let mut a = [_mm512_setzero_ps(); 24];
        for _ in 0..n {
            for r in a.iter_mut() {
                *r = _mm512_fmadd_ps(*r, x, y);
            }
        }
        let s = a
            .iter()
            .fold(_mm512_setzero_ps(), |s, r| _mm512_add_ps(s, *r));
        _mm512_reduce_add_ps(s)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("AVX512-BF16 is an x86-64 extension: nothing to time here");
}
