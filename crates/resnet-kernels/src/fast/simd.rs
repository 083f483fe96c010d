//! Elementwise and pooling kernels, written once over pulp's `Simd` and dispatched per CPU.

use crate::Cpu;
use pulp::{Simd, WithSimd};

/// `dst[i] = max(dst[i], 0)`.
pub(crate) fn relu_inplace(cpu: Cpu, dst: &mut [f32]) {
    struct Op<'a>(&'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let zero = simd.splat_f32s(0.0);
            let (head, tail) = S::as_mut_simd_f32s(self.0);
            for v in head {
                *v = simd.max_f32s(*v, zero);
            }
            for v in tail {
                *v = v.max(0.0);
            }
        }
    }
    cpu.dispatch(Op(dst));
}

/// `dst[i] = op(dst[i], src[i])` over vectors, then the tail in scalar code.
#[inline(always)]
fn zip_inplace<S: Simd>(
    dst: &mut [f32],
    src: &[f32],
    vector: impl Fn(S::f32s, S::f32s) -> S::f32s,
    scalar: impl Fn(f32, f32) -> f32,
) {
    let (dh, dt) = S::as_mut_simd_f32s(dst);
    let (sh, st) = S::as_simd_f32s(src);
    for (d, s) in dh.iter_mut().zip(sh) {
        *d = vector(*d, *s);
    }
    for (d, s) in dt.iter_mut().zip(st) {
        *d = scalar(*d, *s);
    }
}

/// An elementwise in-place operation with a second operand.
#[derive(Clone, Copy)]
enum Zip {
    Max,
    Add,
}

struct ZipOp<'a>(&'a mut [f32], &'a [f32], Zip);

impl WithSimd for ZipOp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self(dst, src, op) = self;
        match op {
            Zip::Max => zip_inplace::<S>(dst, src, |a, b| simd.max_f32s(a, b), f32::max),
            Zip::Add => zip_inplace::<S>(dst, src, |a, b| simd.add_f32s(a, b), |a, b| a + b),
        }
    }
}

/// `dst[i] = max(dst[i], src[i])`.
pub(crate) fn max_inplace(cpu: Cpu, dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    cpu.dispatch(ZipOp(dst, src, Zip::Max));
}

/// `dst[i] += src[i]`.
pub(crate) fn add_inplace(cpu: Cpu, dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    cpu.dispatch(ZipOp(dst, src, Zip::Add));
}

/// `dst[i] = a[i] + b[i]`.
pub(crate) fn add_to(cpu: Cpu, dst: &mut [f32], a: &[f32], b: &[f32]) {
    struct Op<'a>(&'a mut [f32], &'a [f32], &'a [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let (dh, dt) = S::as_mut_simd_f32s(self.0);
            let (ah, at) = S::as_simd_f32s(self.1);
            let (bh, bt) = S::as_simd_f32s(self.2);
            for ((d, a), b) in dh.iter_mut().zip(ah).zip(bh) {
                *d = simd.add_f32s(*a, *b);
            }
            for ((d, a), b) in dt.iter_mut().zip(at).zip(bt) {
                *d = *a + *b;
            }
        }
    }
    debug_assert!(dst.len() == a.len() && a.len() == b.len());
    cpu.dispatch(Op(dst, a, b));
}

/// `dst[i] *= s`.
pub(crate) fn scale_inplace(cpu: Cpu, dst: &mut [f32], s: f32) {
    struct Op<'a>(&'a mut [f32], f32);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let k = simd.splat_f32s(self.1);
            let (dh, dt) = S::as_mut_simd_f32s(self.0);
            for d in dh {
                *d = simd.mul_f32s(*d, k);
            }
            for d in dt {
                *d *= self.1;
            }
        }
    }
    cpu.dispatch(Op(dst, s));
}
