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

    /// Run `task(i)` for every `i < tasks`: on the current rayon pool when parallel and there
    /// is more than one, else in order on the calling thread.
    pub(crate) fn for_each(self, tasks: usize, task: impl Fn(usize) + Send + Sync) {
        use rayon::prelude::*;
        if self.is_parallel() && tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}

/// Per-thread scratch memory for the kernels, owned by the caller and sized in advance.
///
/// One buffer per thread of the pool the kernels run on (a task uses the buffer of the rayon
/// thread running it; a sequential run uses the first). [`Scratch::reserve`] with the largest
/// [`crate::fast::PackedConv::scratch_len`] of a network means no kernel allocates afterwards; a
/// buffer found too small is grown (an allocation, never an error). It also keeps, in a
/// [`BufferPool`] of up to 64 MiB, the partial sums of the weight gradients between calls.
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

    /// The pool of whole buffers kernels keep between calls.
    pub(crate) fn parts(&self) -> &BufferPool {
        &self.parts
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

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn pool_takes_the_smallest_fit_and_keeps_within_its_limit() {
        let pool = BufferPool::new(3000);
        let (big, small) = (Vec::with_capacity(2000), Vec::with_capacity(500));
        let (big_at, small_at) = (big.as_ptr(), small.as_ptr());
        pool.give_all([big, small]);
        // Best fit: 400 values come from the 500 buffer, 1500 from the 2000 one.
        let s = pool.take(400);
        assert_eq!(s.as_ptr(), small_at);
        let b = pool.take(1500);
        assert_eq!((b.as_ptr(), b.len()), (big_at, 1500));
        // Nothing kept: a new buffer, zeroed.
        assert!(pool.take(10).iter().all(|&v| v == 0.0));
        // 2000 + 2000 values exceed the limit of 3000: the second buffer is freed.
        pool.give(b);
        pool.give(Vec::with_capacity(2000));
        let b = pool.take(1);
        assert_eq!(b.as_ptr(), big_at);
        assert!(pool.take(1).capacity() < 2000);
    }
}

/// Run `f` with the other threads of the current rayon pool kept awake until it returns: each
/// spins, taking the work `f` spreads as soon as it is there ([`rayon::yield_now`]), instead
/// of going to sleep between two layers and being woken for the next (a wake-up costs tens of
/// microseconds, on a virtual machine more, and ResNet-50 has 54 layers). What each thread
/// computes does not change, so neither does any bit. Allocates nothing (`rayon::join` keeps
/// its jobs on the stack). Outside a pool, or on a pool of one thread, it just runs `f`.
///
/// The threads spin, at full power, for as long as `f` runs: use it around a burst of
/// parallel work (a forward pass, a training step), not around anything that waits.
///
/// ```
/// use resnet_kernels::fast::with_awake_workers;
/// use rayon::prelude::*;
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
/// let sum: u64 = pool.install(|| {
///     with_awake_workers(|| (0..4u64).map(|i| (0..1000 * i).into_par_iter().sum::<u64>()).sum())
/// });
/// assert_eq!(sum, 499500 + 1999000 + 4498500);
/// ```
pub fn with_awake_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Sets the flag when dropped: when `f` returns, and when it panics (the spinners must
    /// stop for `rayon::join` to pass the panic on).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let threads = rayon::current_num_threads();
    let Some(home) = rayon::current_thread_index() else {
        return f();
    };
    if threads < 2 {
        return f();
    }
    let done = AtomicBool::new(false);
    let spin = || {
        // The thread running `f` may find a spinner in its own queue while it waits for
        // stolen work: it must not spin there, `f` could never finish.
        if rayon::current_thread_index() == Some(home) {
            return;
        }
        while !done.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::hint::spin_loop();
            }
        }
    };
    let (result, ()) = rayon::join(
        || {
            let _done = Done(&done);
            f()
        },
        || spinners(threads - 1, &spin),
    );
    result
}

/// `n` spinners, one for each thread that steals one.
fn spinners(n: usize, spin: &(impl Fn() + Sync)) {
    match n {
        0 => {}
        1 => spin(),
        _ => {
            rayon::join(spin, || spinners(n - 1, spin));
        }
    }
}

#[cfg(test)]
mod awake_tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn awake_workers_run_the_work_and_pass_panics_on() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let sums: Vec<u64> = pool.install(|| {
                with_awake_workers(|| {
                    (0..50u64)
                        .map(|i| (0..i * 100).into_par_iter().sum::<u64>())
                        .collect()
                })
            });
            for (i, s) in sums.iter().enumerate() {
                let n = i as u64 * 100;
                assert_eq!(*s, n * n.saturating_sub(1) / 2);
            }
            // A panic inside stops the spinners and reaches the caller (no hang).
            let caught = pool.install(|| {
                std::panic::catch_unwind(|| {
                    with_awake_workers(|| {
                        (0..64)
                            .into_par_iter()
                            .for_each(|i| assert!(i < 60, "boom"));
                    })
                })
            });
            assert!(caught.is_err(), "{threads} threads");
        }
        // Outside a pool: just runs.
        assert_eq!(with_awake_workers(|| 7), 7);
    }
}
