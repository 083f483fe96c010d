//! 1x1, stride-1, unpadded, ungrouped convolutions: on NHWC data the input *is* the left
//! matrix of the product, so a tile of output pixels is one matrix product with no copy.

use super::super::matmul::{OutRows, PackedMatrix};
use crate::Cpu;

/// The packed `[O, C]` weights of a pointwise convolution.
#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    c: usize,
    w: PackedMatrix,
}

impl Pointwise {
    /// From PyTorch-layout weights `[O, C, 1, 1]`.
    pub(crate) fn new(weight: &[f32], o: usize, c: usize) -> Self {
        Self {
            c,
            w: PackedMatrix::new(o, c, |oc, ic| weight[oc * c + ic]),
        }
    }

    /// New weights of the same shape, into the same storage.
    pub(crate) fn repack(&mut self, weight: &[f32]) {
        let c = self.c;
        self.w
            .refill_rows(|oc, row| row.copy_from_slice(&weight[oc * c..(oc + 1) * c]));
    }

    /// Width of the weight panels (channel ranges of a split start at a multiple of it).
    pub(crate) fn panel(&self) -> usize {
        self.w.panel()
    }

    /// The sums of output pixels `p0 .. p0 + rows` of one image (`x`, NHWC) into `dst`,
    /// started and ended as `dst.ends` says.
    ///
    /// # Safety
    /// As [`PackedMatrix::matmul_acc_rows`]: `dst` covers `rows` rows of its channels, used by
    /// no one else during the call.
    pub(crate) unsafe fn tile(
        &self,
        cpu: Cpu,
        x: &[f32],
        p0: usize,
        rows: usize,
        dst: OutRows<'_>,
    ) {
        let c = self.c;
        // SAFETY: passed on from the caller.
        unsafe {
            self.w
                .matmul_acc_rows(cpu, rows, &x[p0 * c..(p0 + rows) * c], c, dst)
        };
    }
}
