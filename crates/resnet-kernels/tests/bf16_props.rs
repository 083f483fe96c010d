//! The bf16 product (`vdpbf16ps`) against its scalar twin, bit for bit: random shapes
//! (proptest; `RESNET_PROPS_CASES` sets the count, `cargo xtask props` runs many), values of
//! every magnitude, non-finite values, and accumulation into an existing output. Where the
//! CPU has no AVX512-BF16 the fast half is skipped, loudly; the twin's rounding is still
//! checked against f64 arithmetic.

mod common;
use common::values;
use proptest::prelude::*;
use resnet_kernels::bf16::{
    Bf16Cpu, Bf16Lhs, Bf16Rhs, matmul, matmul_naive, pack_row, round, widen,
};

fn cases() -> u32 {
    std::env::var("RESNET_PROPS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn cpu() -> Option<Bf16Cpu> {
    let cpu = Bf16Cpu::detect();
    if cpu.is_none() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no AVX512-BF16 on this CPU: the fast bf16 kernel is not tested here !!!!!!!!\n"
        );
    }
    cpu
}

/// Values in [-1, 1) scaled by 2^e, with e drawn per element from `-exp..=exp`; `special`
/// mixes in NaN, infinities, zeros of both signs and f32 denormals.
fn spread(len: usize, seed: u64, exp: i32, special: bool) -> Vec<f32> {
    let v = values(len, seed);
    let e = values(len, seed ^ 0x5555);
    v.iter()
        .zip(&e)
        .enumerate()
        .map(|(i, (&x, &r))| {
            if special {
                match (i as u64 ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 59 {
                    0 => return f32::NAN,
                    1 => return f32::INFINITY,
                    2 => return f32::NEG_INFINITY,
                    3 => return -0.0,
                    4 => return f32::from_bits(0x0000_1234),
                    _ => {}
                }
            }
            let k = ((r + 1.0) * 0.5 * (2 * exp + 1) as f32) as i32 - exp;
            x * 2f32.powi(k.clamp(-exp, exp))
        })
        .collect()
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    k: usize,
    n: usize,
    lda_extra: usize,
    ldc_extra: usize,
    exp: i32,
    special: bool,
    accumulate: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let lda = k + lda_extra;
    let ldc = n + ldc_extra;
    let a = spread(m * lda, seed, exp, special);
    let bv = spread(k * n, seed ^ 0xabcd, exp, special);
    let pa = Bf16Lhs::pack(&a, m, k, lda).unwrap();
    let pb = Bf16Rhs::pack(k, n, |kk, j| bv[kk * n + j]).unwrap();
    let c0 = spread(m * ldc, seed ^ 0x1234, 2, false);
    let mut want = c0.clone();
    matmul_naive(&pa, &pb, &mut want, ldc, accumulate).unwrap();
    // The twin against f64 arithmetic on the rounded values, where every term is finite: the
    // per-step f32 rounding is all that differs.
    if !special && exp <= 8 {
        for i in 0..m {
            for j in 0..n {
                let mut exact = if accumulate {
                    f64::from(c0[i * ldc + j])
                } else {
                    0.0
                };
                let mut mag = exact.abs();
                for kk in 0..k {
                    let t = f64::from(widen(round(a[i * lda + kk])))
                        * f64::from(widen(round(bv[kk * n + j])));
                    exact += t;
                    mag += t.abs();
                }
                let got = f64::from(want[i * ldc + j]);
                prop_assert!(
                    (got - exact).abs() <= (k + 1) as f64 * f64::from(f32::EPSILON) * mag + 1e-30,
                    "naive ({i}, {j}): {got} vs exact {exact}"
                );
            }
        }
    }
    // Columns past n in each output row are untouched.
    for i in 0..m {
        for j in n..ldc {
            prop_assert!(same(want[i * ldc + j], c0[i * ldc + j]));
        }
    }
    let Some(cpu) = Bf16Cpu::detect() else {
        return Ok(());
    };
    let mut got = c0.clone();
    // In two row ranges, as threads would split it.
    let split = m / 3;
    matmul(cpu, &pa, &pb, 0..split, &mut got, ldc, accumulate).unwrap();
    matmul(cpu, &pa, &pb, split..m, &mut got, ldc, accumulate).unwrap();
    for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
        prop_assert!(
            same(*g, *w),
            "({}, {}) of {m}x{k}x{n}: fast {g:e} ({:#010x}) vs twin {w:e} ({:#010x})",
            idx / ldc,
            idx % ldc,
            g.to_bits(),
            w.to_bits()
        );
    }
    Ok(())
}

#[test]
fn awkward_shapes() {
    let _ = cpu();
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 2, 32),
        (12, 64, 32),
        (13, 63, 33),
        (25, 3, 64),
        (11, 576, 64),
        (37, 147, 65),
        (24, 1, 17),
        (49, 512, 96),
    ] {
        for accumulate in [false, true] {
            check(m, k, n, 1, 3, 2, false, accumulate, (m * k * n) as u64).unwrap();
        }
    }
}

#[test]
fn extreme_magnitudes() {
    let _ = cpu();
    // Products from about 2^-120 to 2^120: still normal f32 values, bit for bit.
    for seed in 0..4 {
        check(13, 40, 35, 0, 0, 60, false, true, seed).unwrap();
    }
}

#[test]
fn row_packing_pairs_neighbours() {
    let mut out = [0u32; 2];
    pack_row(&[1.0, 2.0, 3.0], &mut out);
    assert_eq!(
        out[0],
        u32::from(round(1.0)) | (u32::from(round(2.0)) << 16)
    );
    assert_eq!(out[1], u32::from(round(3.0)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn bf16_product_matches_its_twin(m in 1usize..40, k in 1usize..140, n in 1usize..100,
        lda_extra in 0usize..3, ldc_extra in 0usize..3, exp in 0i32..20, special in any::<bool>(),
        accumulate in any::<bool>(), seed in any::<u64>()) {
        check(m, k, n, lda_extra, ldc_extra, exp, special, accumulate, seed)?;
    }
}
