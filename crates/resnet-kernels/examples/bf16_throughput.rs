//! Is the AVX512-BF16 product worth it on this CPU? Times `vdpbf16ps` against `vfmadd231ps`
//! (independent chains, registers only) and [`resnet_kernels::bf16::Bf16Conv`] against the
//! f32 [`resnet_kernels::fast::PackedConv`] on ResNet's shapes at batch 1 (one thread, bias
//! and ReLU in the output step), in one run, medians of 20.
//!
//! `cargo run --release -p resnet-kernels --example bf16_throughput`

#[cfg(target_arch = "x86_64")]
fn main() {
    use resnet_kernels::bf16::{Bf16Conv, Bf16Cpu};
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
    // ResNet's convolutions at batch 1: (input size, in, out, kernel, stride).
    for &(hw, cin, cout, k, stride) in &[
        (224usize, 3usize, 64usize, 7usize, 2usize),
        (56, 64, 64, 3, 1),
        (56, 64, 64, 1, 1),
        (56, 64, 256, 1, 1),
        (56, 256, 128, 1, 2),
        (28, 128, 128, 3, 1),
        (28, 128, 512, 1, 1),
        (14, 256, 256, 3, 1),
        (14, 256, 1024, 1, 1),
        (7, 512, 512, 3, 1),
        (7, 512, 2048, 1, 1),
    ] {
        let x: Vec<f32> = (0..hw * hw * cin)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..cout * cin * k * k)
            .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let params = Conv2dParams::default()
            .with_stride(stride)
            .with_padding(k / 2);
        let dims = [cout, cin, k, k];
        let f32conv = PackedConv::new(&w, dims, None, params).unwrap();
        let bf16conv = Bf16Conv::new(&w, dims, None, params).unwrap();
        let input = [1, cin, hw, hw];
        let geom = f32conv.geometry(input).unwrap();
        let mut out = vec![0.0f32; geom.lens().2];
        let scratch = Scratch::new(1);
        let ctx = Ctx::new(Cpu::detect(), Par::Seq, &scratch);
        let (mut tb, mut tf) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let t = Instant::now();
            bf16conv
                .run(cpu, &ctx, &x, input, &mut out, Epilogue::relu())
                .unwrap();
            tb.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            f32conv
                .run(&ctx, &x, input, &mut out, Epilogue::relu())
                .unwrap();
            tf.push(t.elapsed().as_secs_f64());
        }
        let (b, f) = (median(tb), median(tf));
        let flops = 2.0 * geom.macs() as f64;
        println!(
            "{k}x{k}/{stride} {hw}x{hw} {cin}->{cout}: bf16 {:.3} ms ({:.0} GFLOP/s), f32 {} {:.3} ms ({:.0} direct-equivalent GFLOP/s); f32 time / bf16 time {:.2}",
            b * 1e3,
            flops / b / 1e9,
            f32conv.algorithm(),
            f * 1e3,
            flops / f / 1e9,
            f / b
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
