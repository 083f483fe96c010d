//! `resnet-tensor`: the f32 tensor type of resnet-rs.
//!
//! A [`Tensor`] owns 64-byte aligned f32 storage, a [`Shape`] of up to [`MAX_RANK`] dimensions
//! and a memory [`Layout`]. Rank-4 tensors are images in batches; their shape is always given
//! in logical `[N, C, H, W]` order, whatever the layout stores in memory. The crate does no
//! arithmetic beyond moving elements between layouts: kernels live in `resnet-kernels`.
//!
//! ```
//! use resnet_tensor::{Layout, Tensor};
//!
//! // Two 3-channel 2x2 images, NCHW.
//! let t = Tensor::from_vec(&[2, 3, 2, 2], (0..24).map(|v| v as f32).collect())?;
//! assert_eq!(t.shape().dims(), &[2, 3, 2, 2]);
//!
//! // A cheap view of the second image.
//! let img = t.image(1)?;
//! assert_eq!(img.shape().dims(), &[1, 3, 2, 2]);
//! assert_eq!(img.as_slice()[0], 12.0);
//!
//! // The same tensor with channels last: logical shape unchanged, memory reordered.
//! let nhwc = t.to_layout(Layout::Nhwc)?;
//! assert_eq!(nhwc.shape(), t.shape());
//! assert_eq!(&nhwc.as_slice()[..3], &[0.0, 4.0, 8.0]);
//! assert_eq!(nhwc.to_layout(Layout::Nchw)?, t);
//! # Ok::<(), resnet_tensor::TensorError>(())
//! ```

#![forbid(unsafe_code)]

mod aligned;
mod shape;

pub use aligned::{ALIGN, AlignedVec};
pub use shape::{MAX_RANK, Shape};

use std::fmt;

/// Errors from building or reshaping tensors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// The product of the dimensions does not fit in `usize` (or in memory).
    #[error("shape {dims:?} has more elements than fit in memory")]
    ShapeOverflow {
        /// The offending dimensions.
        dims: Vec<usize>,
    },
    /// More dimensions than [`MAX_RANK`].
    #[error("rank {rank} exceeds the maximum rank {max}")]
    RankTooLarge {
        /// The rank asked for.
        rank: usize,
        /// [`MAX_RANK`].
        max: usize,
    },
    /// The data does not hold as many elements as the shape needs.
    #[error("shape {dims:?} needs {expected} elements, found {found}")]
    LengthMismatch {
        /// The shape.
        dims: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// A byte buffer whose length is not a multiple of 4.
    #[error("{len} bytes is not a whole number of f32 values")]
    RaggedBytes {
        /// Byte length given.
        len: usize,
    },
    /// NHWC (or any non-default layout) asked of a tensor that is not rank 4.
    #[error("layout {layout} needs a rank-4 tensor, got rank {rank}")]
    LayoutNeedsRank4 {
        /// The layout asked for.
        layout: Layout,
        /// The tensor's rank.
        rank: usize,
    },
    /// The allocator could not provide the memory for a tensor this large.
    #[error("cannot allocate {bytes} bytes for a tensor of shape {dims:?}")]
    AllocationFailed {
        /// The shape.
        dims: Vec<usize>,
        /// Bytes asked for.
        bytes: usize,
    },
    /// An index past the end of a dimension.
    #[error("index {index} out of range for dimension {axis} of size {size}")]
    IndexOutOfRange {
        /// Dimension.
        axis: usize,
        /// Index asked for.
        index: usize,
        /// Size of that dimension.
        size: usize,
    },
}

/// Order of a rank-4 tensor's elements in memory. The logical shape is always `[N, C, H, W]`.
///
/// Tensors of any other rank are plain row-major and always report [`Layout::Nchw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// Batch, channel, row, column: row-major in the logical order (PyTorch's default).
    #[default]
    Nchw,
    /// Batch, row, column, channel ("channels last").
    Nhwc,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        })
    }
}

impl Layout {
    /// Memory strides (in elements) of a rank-4 tensor of logical shape `[n, c, h, w]`,
    /// returned in logical order `[sn, sc, sh, sw]`.
    pub fn strides(self, [_, c, h, w]: [usize; 4]) -> [usize; 4] {
        match self {
            Layout::Nchw => [c * h * w, h * w, w, 1],
            Layout::Nhwc => [h * w * c, 1, w * c, c],
        }
    }
}

fn check_layout(shape: &Shape, layout: Layout) -> Result<(), TensorError> {
    if layout != Layout::Nchw && shape.rank() != 4 {
        return Err(TensorError::LayoutNeedsRank4 {
            layout,
            rank: shape.rank(),
        });
    }
    Ok(())
}

/// An owned f32 tensor with 64-byte aligned storage.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    layout: Layout,
    data: AlignedVec,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape.dims())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Tensor {
    /// A zero-filled NCHW (row-major) tensor.
    pub fn zeros(dims: &[usize]) -> Result<Self, TensorError> {
        Self::zeros_with_layout(dims, Layout::Nchw)
    }

    /// A zero-filled tensor with the given layout.
    pub fn zeros_with_layout(dims: &[usize], layout: Layout) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        check_layout(&shape, layout)?;
        Ok(Self {
            data: AlignedVec::zeros(shape.numel()),
            shape,
            layout,
        })
    }

    /// Like [`Tensor::zeros_with_layout`], but an allocation failure is an error
    /// ([`TensorError::AllocationFailed`]) instead of an abort: for sizes that come from user
    /// input.
    pub fn try_zeros_with_layout(dims: &[usize], layout: Layout) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        check_layout(&shape, layout)?;
        let data =
            AlignedVec::try_zeros(shape.numel()).ok_or_else(|| TensorError::AllocationFailed {
                dims: dims.to_vec(),
                bytes: shape.numel() * 4,
            })?;
        Ok(Self {
            shape,
            layout,
            data,
        })
    }

    /// A row-major (NCHW for rank 4) tensor from a vector of `shape.numel()` values.
    pub fn from_vec(dims: &[usize], data: Vec<f32>) -> Result<Self, TensorError> {
        Self::from_slice_with_layout(dims, Layout::Nchw, &data)
    }

    /// A tensor copied from a slice laid out in `layout`.
    pub fn from_slice_with_layout(
        dims: &[usize],
        layout: Layout,
        data: &[f32],
    ) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        check_layout(&shape, layout)?;
        if data.len() != shape.numel() {
            return Err(TensorError::LengthMismatch {
                dims: dims.to_vec(),
                expected: shape.numel(),
                found: data.len(),
            });
        }
        Ok(Self {
            data: AlignedVec::from_slice(data),
            shape,
            layout,
        })
    }

    /// A tensor from raw little-endian f32 bytes laid out in `layout`.
    ///
    /// The byte count must be exactly `4 * numel`; nothing is allocated before that is checked.
    pub fn from_le_bytes(
        dims: &[usize],
        layout: Layout,
        bytes: &[u8],
    ) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        check_layout(&shape, layout)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(TensorError::RaggedBytes { len: bytes.len() });
        }
        if bytes.len() / 4 != shape.numel() {
            return Err(TensorError::LengthMismatch {
                dims: dims.to_vec(),
                expected: shape.numel(),
                found: bytes.len() / 4,
            });
        }
        let mut data = AlignedVec::zeros(shape.numel());
        for (d, b) in data.as_mut_slice().iter_mut().zip(bytes.chunks_exact(4)) {
            *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(Self {
            shape,
            layout,
            data,
        })
    }

    /// The logical shape (`[N, C, H, W]` for rank 4, whatever the layout).
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The memory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in memory order.
    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    /// The elements in memory order, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data.as_mut_slice()
    }

    /// The elements in memory order, as a `Vec`.
    pub fn to_vec(&self) -> Vec<f32> {
        self.as_slice().to_vec()
    }

    /// The elements as little-endian bytes in memory order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.as_slice()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// A borrowed view of the whole tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: self.shape,
            layout: self.layout,
            data: self.as_slice(),
        }
    }

    /// A mutable view of the whole tensor.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        TensorViewMut {
            shape: self.shape,
            layout: self.layout,
            data: self.data.as_mut_slice(),
        }
    }

    /// A view of image `n` of the batch (dimension 0), keeping rank: shape `[1, ...]`.
    ///
    /// Works for any layout, because the batch dimension is outermost in all of them.
    pub fn image(&self, n: usize) -> Result<TensorView<'_>, TensorError> {
        self.view().image(n)
    }

    /// A mutable view of image `n` of the batch (dimension 0).
    pub fn image_mut(&mut self, n: usize) -> Result<TensorViewMut<'_>, TensorError> {
        let (shape, range) = batch_slice(&self.shape, n)?;
        Ok(TensorViewMut {
            shape,
            layout: self.layout,
            data: &mut self.data.as_mut_slice()[range],
        })
    }

    /// The same values with a new shape of equal element count (row-major tensors only keep
    /// their meaning; an NHWC tensor is first converted to NCHW).
    pub fn reshape(self, dims: &[usize]) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        if shape.numel() != self.shape.numel() {
            return Err(TensorError::LengthMismatch {
                dims: dims.to_vec(),
                expected: shape.numel(),
                found: self.shape.numel(),
            });
        }
        let t = if self.layout == Layout::Nchw {
            self
        } else {
            self.to_layout(Layout::Nchw)?
        };
        Ok(Self {
            shape,
            layout: Layout::Nchw,
            data: t.data,
        })
    }

    /// A copy in another layout (a plain copy when the layout is already `layout`).
    pub fn to_layout(&self, layout: Layout) -> Result<Self, TensorError> {
        check_layout(&self.shape, layout)?;
        let mut out = Self {
            shape: self.shape,
            layout,
            data: AlignedVec::zeros(self.len()),
        };
        convert_layout(self.view(), out.view_mut());
        Ok(out)
    }
}

fn batch_slice(shape: &Shape, n: usize) -> Result<(Shape, std::ops::Range<usize>), TensorError> {
    let dims = shape.dims();
    let batch = dims.first().copied().unwrap_or(1);
    if dims.is_empty() || n >= batch {
        return Err(TensorError::IndexOutOfRange {
            axis: 0,
            index: n,
            size: if dims.is_empty() { 0 } else { batch },
        });
    }
    let per = shape.numel() / batch;
    let mut sub = *shape;
    sub.set_dim(0, 1);
    Ok((sub, n * per..(n + 1) * per))
}

/// Copy `src` into `dst`, which must have the same logical shape (layouts may differ).
///
/// # Panics
/// When the shapes differ: this is a programming error, not user input.
pub fn convert_layout(src: TensorView<'_>, dst: TensorViewMut<'_>) {
    assert_eq!(src.shape, dst.shape, "convert_layout: shapes differ");
    if src.layout == dst.layout {
        dst.data.copy_from_slice(src.data);
        return;
    }
    let d = src.shape.dims4().expect("layouts only differ for rank 4");
    let ss = src.layout.strides(d);
    let ds = dst.layout.strides(d);
    for n in 0..d[0] {
        for c in 0..d[1] {
            for h in 0..d[2] {
                for w in 0..d[3] {
                    dst.data[n * ds[0] + c * ds[1] + h * ds[2] + w * ds[3]] =
                        src.data[n * ss[0] + c * ss[1] + h * ss[2] + w * ss[3]];
                }
            }
        }
    }
}

/// A borrowed, contiguous tensor: shape, layout and a slice of elements in memory order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    shape: Shape,
    layout: Layout,
    data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// A view of `data` as a tensor of the given shape and layout.
    pub fn new(dims: &[usize], layout: Layout, data: &'a [f32]) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        check_layout(&shape, layout)?;
        if data.len() != shape.numel() {
            return Err(TensorError::LengthMismatch {
                dims: dims.to_vec(),
                expected: shape.numel(),
                found: data.len(),
            });
        }
        Ok(Self {
            shape,
            layout,
            data,
        })
    }

    /// The logical shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The memory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The elements in memory order.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Image `n` of the batch, as a view with batch size 1.
    pub fn image(&self, n: usize) -> Result<TensorView<'a>, TensorError> {
        let (shape, range) = batch_slice(&self.shape, n)?;
        Ok(TensorView {
            shape,
            layout: self.layout,
            data: &self.data[range],
        })
    }

    /// An owned copy.
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            shape: self.shape,
            layout: self.layout,
            data: AlignedVec::from_slice(self.data),
        }
    }
}

/// A mutable, contiguous tensor view.
#[derive(Debug, PartialEq)]
pub struct TensorViewMut<'a> {
    shape: Shape,
    layout: Layout,
    data: &'a mut [f32],
}

impl<'a> TensorViewMut<'a> {
    /// A mutable view of `data` as a tensor of the given shape and layout.
    pub fn new(dims: &[usize], layout: Layout, data: &'a mut [f32]) -> Result<Self, TensorError> {
        let shape = Shape::new(dims)?;
        check_layout(&shape, layout)?;
        if data.len() != shape.numel() {
            return Err(TensorError::LengthMismatch {
                dims: dims.to_vec(),
                expected: shape.numel(),
                found: data.len(),
            });
        }
        Ok(Self {
            shape,
            layout,
            data,
        })
    }

    /// The logical shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The memory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The elements in memory order.
    pub fn as_slice(&self) -> &[f32] {
        self.data
    }

    /// The elements in memory order, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }

    /// A shared view of the same elements.
    pub fn as_view(&self) -> TensorView<'_> {
        TensorView {
            shape: self.shape,
            layout: self.layout,
            data: self.data,
        }
    }
}

#[cfg(test)]
mod tests;
