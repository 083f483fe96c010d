//! Elementwise and pooling kernels, written once over pulp's `Simd` and dispatched per CPU.

use crate::Cpu;
use pulp::{Simd, WithSimd};

/// Run `f` compiled for the best instruction set `cpu` has, so that its plain loops are
/// vectorised for it (the workspace builds for the baseline of the architecture). Only code
/// inlined into `f` is: pass an `#[inline(always)]` closure calling `#[inline(always)]` code.
pub(crate) fn simd_scope<R>(cpu: Cpu, f: impl FnOnce() -> R) -> R {
    struct Run<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Run<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> R {
            (self.0)()
        }
    }
    cpu.dispatch(Run(f))
}

/// ReLU as PyTorch computes it: `x` where `x > 0`, NaN where `x` is NaN, `+0.0` elsewhere.
#[inline(always)]
pub(crate) fn relu_s(x: f32) -> f32 {
    if x <= 0.0 { 0.0 } else { x }
}

/// [`relu_s`] on a vector: a compare and a select, so NaN passes through on every
/// instruction set (a vector `max` keeps or drops NaN depending on the operand order).
#[inline(always)]
pub(crate) fn relu_v<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    simd.select_f32s(simd.less_than_or_equal_f32s(x, zero), zero, x)
}

/// The larger of two values as PyTorch's max-pool takes it: NaN wins, in either operand.
#[inline(always)]
pub(crate) fn max_s(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// [`max_s`] on vectors.
#[inline(always)]
fn max_v<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
    // The larger where neither is NaN, `a` where `a` is (`a < b` is false there), then `b`
    // where `b` is NaN (the only place `b == b` is false).
    let larger = simd.select_f32s(simd.less_than_f32s(a, b), b, a);
    simd.select_f32s(simd.equal_f32s(b, b), larger, b)
}

/// `dst[i] = relu(dst[i])` (see [`relu_s`]).
pub(crate) fn relu_inplace(cpu: Cpu, dst: &mut [f32]) {
    struct Op<'a>(&'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let (head, tail) = S::as_mut_simd_f32s(self.0);
            for v in head {
                *v = relu_v(simd, *v);
            }
            for v in tail {
                *v = relu_s(*v);
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
            Zip::Max => zip_inplace::<S>(dst, src, |a, b| max_v(simd, a, b), max_s),
            Zip::Add => zip_inplace::<S>(dst, src, |a, b| simd.add_f32s(a, b), |a, b| a + b),
        }
    }
}

/// `dst[i] = max(dst[i], src[i])`, NaN winning (see [`max_s`]).
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
