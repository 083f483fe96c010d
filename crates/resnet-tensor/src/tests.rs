//! Unit tests of the tensor type: alignment, constructors, byte round trips, layouts, views and
//! allocation failure.

use super::*;

#[test]
fn storage_is_aligned() {
    for n in [0usize, 1, 15, 16, 17, 1000] {
        let t = Tensor::zeros(&[n]).unwrap();
        assert_eq!(t.len(), n);
        if n > 0 {
            assert_eq!(t.as_slice().as_ptr() as usize % ALIGN, 0);
        }
    }
}

#[test]
fn from_vec_checks_length() {
    let e = Tensor::from_vec(&[2, 3], vec![0.0; 5]).unwrap_err();
    assert_eq!(
        e,
        TensorError::LengthMismatch {
            dims: vec![2, 3],
            expected: 6,
            found: 5
        }
    );
}

#[test]
fn absurd_shapes_are_refused_without_allocating() {
    let e = Tensor::zeros(&[usize::MAX, 2]).unwrap_err();
    assert!(matches!(e, TensorError::ShapeOverflow { .. }));
    let e = Tensor::zeros(&[1 << 40, 1 << 30]).unwrap_err();
    assert!(matches!(e, TensorError::ShapeOverflow { .. }));
    let e = Tensor::from_le_bytes(&[1 << 62, 4], Layout::Nchw, &[0; 8]).unwrap_err();
    assert!(matches!(e, TensorError::ShapeOverflow { .. }));
    // A zero-sized tensor whose other dimensions overflow (found by fuzzing: its strides
    // overflowed).
    let e = Tensor::from_le_bytes(&[0, 1 << 40, 1 << 40, 4], Layout::Nhwc, &[]).unwrap_err();
    assert!(matches!(e, TensorError::ShapeOverflow { .. }));
    let e = Tensor::zeros(&[1; 7]).unwrap_err();
    assert_eq!(e, TensorError::RankTooLarge { rank: 7, max: 6 });
}

#[test]
fn le_bytes_round_trip() {
    let t = Tensor::from_vec(&[1, 2, 1, 2], vec![1.5, -2.0, 3.25, 0.0]).unwrap();
    let b = t.to_le_bytes();
    let u = Tensor::from_le_bytes(&[1, 2, 1, 2], Layout::Nchw, &b).unwrap();
    assert_eq!(t, u);
    assert_eq!(
        Tensor::from_le_bytes(&[2], Layout::Nchw, &b[..7]).unwrap_err(),
        TensorError::RaggedBytes { len: 7 }
    );
    assert!(matches!(
        Tensor::from_le_bytes(&[3], Layout::Nchw, &b[..8]).unwrap_err(),
        TensorError::LengthMismatch { .. }
    ));
}

#[test]
fn nhwc_needs_rank_4() {
    let e = Tensor::zeros_with_layout(&[2, 3], Layout::Nhwc).unwrap_err();
    assert_eq!(
        e,
        TensorError::LayoutNeedsRank4 {
            layout: Layout::Nhwc,
            rank: 2
        }
    );
}

#[test]
fn layout_conversion_moves_elements() {
    // n=1, c=2, h=1, w=3
    let t = Tensor::from_vec(&[1, 2, 1, 3], vec![0., 1., 2., 10., 11., 12.]).unwrap();
    let u = t.to_layout(Layout::Nhwc).unwrap();
    assert_eq!(u.as_slice(), &[0., 10., 1., 11., 2., 12.]);
    assert_eq!(u.layout(), Layout::Nhwc);
    assert_eq!(u.to_layout(Layout::Nchw).unwrap(), t);
    // reshape of an NHWC tensor goes through NCHW.
    let r = u.reshape(&[2, 3]).unwrap();
    assert_eq!(r.as_slice(), t.as_slice());
}

#[test]
fn image_views() {
    let t = Tensor::from_vec(&[3, 2], vec![0., 1., 2., 3., 4., 5.]).unwrap();
    assert_eq!(t.image(2).unwrap().as_slice(), &[4., 5.]);
    assert_eq!(t.image(2).unwrap().shape().dims(), &[1, 2]);
    assert_eq!(
        t.image(3).unwrap_err(),
        TensorError::IndexOutOfRange {
            axis: 0,
            index: 3,
            size: 3
        }
    );
    let mut t = t;
    t.image_mut(0).unwrap().as_mut_slice()[1] = 9.0;
    assert_eq!(t.as_slice()[1], 9.0);
    let zero_batch = Tensor::zeros(&[0, 3, 2, 2]).unwrap();
    assert!(zero_batch.image(0).is_err());
}

proptest::proptest! {
    #[test]
    fn layout_round_trip(n in 0usize..3, c in 1usize..5, h in 0usize..5, w in 1usize..6) {
        let len = n * c * h * w;
        let t = Tensor::from_vec(&[n, c, h, w], (0..len).map(|v| v as f32).collect()).unwrap();
        let u = t.to_layout(Layout::Nhwc).unwrap();
        let s = Layout::Nhwc.strides([n, c, h, w]);
        for (i, &v) in t.as_slice().iter().enumerate() {
            let (ni, ci, hi, wi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
            proptest::prop_assert_eq!(u.as_slice()[ni * s[0] + ci * s[1] + hi * s[2] + wi * s[3]], v);
        }
        proptest::prop_assert_eq!(u.to_layout(Layout::Nchw).unwrap(), t);
    }
}

#[test]
fn try_zeros_reports_allocation_failure() {
    let t = Tensor::try_zeros_with_layout(&[2, 3, 4, 5], Layout::Nhwc).unwrap();
    assert_eq!(t.len(), 120);
    // 2^40 floats (4 TiB) passes the shape check but no allocator provides it.
    let e = Tensor::try_zeros_with_layout(&[1 << 20, 1 << 20], Layout::Nchw).unwrap_err();
    assert!(matches!(e, TensorError::AllocationFailed { .. }), "{e}");
}
