//! What a kernel is told besides its data: the CPU token, the parallelism, and scratch
//! memory, passed as values (faer's style) rather than detected or allocated inside.

use crate::Cpu;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// How a kernel may spread its work over threads.
///
/// Results never depend on it: every kernel splits its work the same way whatever the
/// parallelism and sums each value in the same order, so outputs are bitwise identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Par {
    /// On the calling thread only.
    #[default]
    Seq,
    /// On the current rayon pool, which has this many threads (a kernel uses the count to
    /// decide how finely to split small problems).
    Rayon(NonZeroUsize),
}

impl Par {
    /// `Seq` for one thread, else `Rayon(threads)`.
    ///
    /// ```
    /// use resnet_kernels::fast::Par;
    /// assert_eq!(Par::with_threads(1), Par::Seq);
    /// assert_eq!(Par::with_threads(4).threads(), 4);
    /// ```
    pub fn with_threads(threads: usize) -> Self {
        match NonZeroUsize::new(threads) {
            Some(n) if n.get() > 1 => Par::Rayon(n),
            _ => Par::Seq,
        }
    }

    /// Threads the work may use (1 for `Seq`).
    pub fn threads(self) -> usize {
        match self {
            Par::Seq => 1,
            Par::Rayon(n) => n.get(),
        }
    }

    /// Whether the work is spread over a pool.
    pub fn is_parallel(self) -> bool {
        matches!(self, Par::Rayon(_))
    }
}

/// Per-thread scratch memory for the kernels, owned by the caller and sized in advance.
///
/// One buffer per thread of the pool the kernels run on (a task uses the buffer of the rayon
/// thread running it; a sequential run uses the first). [`Scratch::reserve`] with the largest
/// [`crate::fast::PackedConv::scratch_len`] of a network means no kernel allocates afterwards; a
/// buffer found too small is grown (an allocation, never an error).
#[derive(Debug, Default)]
pub struct Scratch {
    buffers: Vec<Mutex<Vec<f32>>>,
    /// Whole buffers a kernel hands back between calls (the weight gradient's partial sums).
    parts: BufferPool,
}

impl Scratch {
    /// Empty buffers for a pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> Self {
        Self {
            buffers: (0..threads.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            parts: BufferPool::default(),
        }
    }

    /// Grow every buffer to at least `len` values.
    pub fn reserve(&mut self, len: usize) {
        for b in &mut self.buffers {
            let b = b.get_mut().unwrap_or_else(|e| e.into_inner());
            if b.len() < len {
                b.resize(len, 0.0);
            }
        }
    }

    /// Threads this scratch has buffers for.
    pub fn threads(&self) -> usize {
        self.buffers.len()
    }

    /// Run `f` on the buffer of the calling thread. A task holds the buffer only while it
    /// runs and starts no nested parallel work, so the lock is never contended on a pool of at
    /// most [`Scratch::threads`] threads (on a larger one, tasks sharing a buffer wait in
    /// turn).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
        let n = self.buffers.len();
        if n == 0 {
            return f(&mut Vec::new());
        }
        let i = rayon::current_thread_index().unwrap_or(0) % n;
        let mut b = self.buffers[i].lock().unwrap_or_else(|e| e.into_inner());
        f(&mut b)
    }
}

impl Scratch {
    /// The pool of whole buffers kernels keep between calls.
    pub(crate) fn parts(&self) -> &BufferPool {
        &self.parts
    }
}

/// Buffers of `f32` kept for reuse, up to a number of values in all.
///
/// A large allocation is a fresh mapping whose pages the OS faults in and zeroes one by one;
/// a loop that needs buffers of the same sizes every iteration (a training step's gradients)
/// takes them from a pool instead. [`BufferPool::take`] returns the smallest kept buffer that
/// holds the length asked for (else the largest, grown), so buffers of mixed sizes stay
/// matched to their uses.
///
/// ```
/// use resnet_kernels::fast::BufferPool;
/// let pool = BufferPool::new(1 << 20);
/// let mut a = pool.take(1000);
/// a.fill(1.0);
/// pool.give(a);
/// let b = pool.take(500); // the same allocation, its values left from before
/// assert_eq!(b.len(), 500);
/// assert!(b.capacity() >= 1000);
/// ```
#[derive(Debug)]
pub struct BufferPool {
    buffers: Mutex<Vec<Vec<f32>>>,
    limit: usize,
}

impl Default for BufferPool {
    /// A pool keeping up to 16 Mi values (64 MiB).
    fn default() -> Self {
        Self::new(16 << 20)
    }
}

impl BufferPool {
    /// An empty pool that keeps at most `limit` values (counted by capacity).
    pub fn new(limit: usize) -> Self {
        Self {
            buffers: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// Keep at most `limit` values from now on (buffers kept already stay).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// A buffer of `len` values: a kept one (the smallest that holds `len`, else the largest,
    /// grown) or a new one. Values that were in the buffer stay as they were (the rest are
    /// zero): write every value before reading it.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let fits = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity());
        let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        let mut v = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        v.truncate(len);
        v.resize(len, 0.0);
        v
    }

    /// Keep `buffer` for a later [`BufferPool::take`], unless that would exceed the limit (it
    /// is freed then).
    pub fn give(&self, buffer: Vec<f32>) {
        self.give_all(std::iter::once(buffer));
    }

    /// [`BufferPool::give`] for several buffers, in order.
    pub fn give_all(&self, buffers: impl IntoIterator<Item = Vec<f32>>) {
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept: usize = pool.iter().map(Vec::capacity).sum();
        for b in buffers {
            if b.capacity() > 0 && kept + b.capacity() <= self.limit {
                kept += b.capacity();
                pool.push(b);
            }
        }
    }
}

/// The context of a kernel call: the instruction set, the parallelism and the scratch.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The instruction set to run.
    pub cpu: Cpu,
    /// How the work may be spread over threads.
    pub par: Par,
    /// Per-thread scratch memory.
    pub scratch: &'a Scratch,
}

impl<'a> Ctx<'a> {
    /// A context from its parts.
    pub fn new(cpu: Cpu, par: Par, scratch: &'a Scratch) -> Self {
        Self { cpu, par, scratch }
    }
}
