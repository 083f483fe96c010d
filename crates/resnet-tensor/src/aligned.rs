//! [`AlignedVec`]: 64-byte aligned f32 storage built from cache-line blocks, without `unsafe`.

/// Alignment in bytes of [`AlignedVec`] storage: one cache line, and one AVX-512 vector.
pub const ALIGN: usize = 64;

const LANES: usize = ALIGN / 4;

/// One cache line of f32: the unit of [`AlignedVec`] storage, which gives it its alignment.
#[derive(Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([f32; LANES]);

/// Growable-once f32 storage whose first element is 64-byte aligned, built without `unsafe`:
/// it is a vector of cache-line blocks viewed as a flat slice.
#[derive(Clone, Default)]
pub struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl PartialEq for AlignedVec {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl AlignedVec {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            lines: vec![Line([0.0; LANES]); len.div_ceil(LANES)],
            len,
        }
    }

    /// `len` zeros, or `None` when the allocator cannot provide them (instead of aborting).
    pub fn try_zeros(len: usize) -> Option<Self> {
        let n = len.div_ceil(LANES);
        let mut lines = Vec::new();
        lines.try_reserve_exact(n).ok()?;
        lines.resize(n, Line([0.0; LANES]));
        Some(Self { lines, len })
    }

    /// A copy of `data`.
    pub fn from_slice(data: &[f32]) -> Self {
        let mut v = Self::zeros(data.len());
        v.as_mut_slice().copy_from_slice(data);
        v
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements.
    pub fn as_slice(&self) -> &[f32] {
        &bytemuck::cast_slice::<Line, f32>(&self.lines)[..self.len]
    }

    /// The elements, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Line, f32>(&mut self.lines)[..self.len]
    }
}
