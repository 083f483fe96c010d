//! [`Shape`]: a tensor's dimensions, inline and checked (rank at most [`MAX_RANK`], element
//! count that fits an allocation).

use crate::TensorError;
use std::fmt;

/// The most dimensions a [`Shape`] holds.
pub const MAX_RANK: usize = 6;

/// A tensor's dimensions: at most [`MAX_RANK`], stored inline (`Copy`, no allocation), with an
/// element count that is known to fit in `usize` and in an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
    numel: usize,
}

impl Shape {
    /// A shape, checking its rank and that its element count (times 4 bytes) does not overflow.
    pub fn new(dims: &[usize]) -> Result<Self, TensorError> {
        if dims.len() > MAX_RANK {
            return Err(TensorError::RankTooLarge {
                rank: dims.len(),
                max: MAX_RANK,
            });
        }
        // The product of the non-zero dimensions must fit too: strides are products of
        // dimensions, and a zero-sized tensor may still be asked for them.
        let overflow = || TensorError::ShapeOverflow {
            dims: dims.to_vec(),
        };
        dims.iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
            .filter(|&n| n <= isize::MAX as usize / 64)
            .ok_or_else(overflow)?;
        let numel = dims.iter().product();
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Self {
            dims: d,
            rank: dims.len(),
            numel,
        })
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// The dimensions of a rank-4 shape, `[N, C, H, W]`.
    pub fn dims4(&self) -> Option<[usize; 4]> {
        (self.rank == 4).then(|| [self.dims[0], self.dims[1], self.dims[2], self.dims[3]])
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of elements (product of the dimensions; 1 for rank 0).
    pub fn numel(&self) -> usize {
        self.numel
    }

    pub(crate) fn set_dim(&mut self, axis: usize, value: usize) {
        // Only ever used to shrink a dimension, so the product cannot overflow.
        self.dims[axis] = value;
        self.numel = self.dims().iter().product();
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.dims(), f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.dims(), f)
    }
}
