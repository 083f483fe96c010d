//! Matrix products on weights packed once, at build time, for the micro-kernels of the `gemm`
//! project (`gemm-f32`).
//!
//! The `gemm` crate's entry point packs its operands on every call (into buffers it allocates)
//! and repacks the weights each time. Convolution weights never change, so [`PackedMatrix`]
//! lays them out once in the form the micro-kernels read — panels of output channels, k-major —
//! and [`PackedMatrix::matmul_acc`] drives gemm's register-blocked micro-kernels directly over
//! the activations, which need no packing (the kernels broadcast them from any stride). A
//! product allocates nothing.

use super::simd;
use crate::{Cpu, SimdLevel};

/// The micro-kernel signature of `gemm-f32` (`gemm_common::microkernel::MicroKernelFn<f32>`):
/// `(m, n, k, dst, packed_lhs, rhs, dst_cs, dst_rs, lhs_cs, rhs_rs, rhs_cs, alpha, beta,
/// alpha_status, conj_dst, conj_lhs, conj_rhs, next_lhs)` computes, for `i < m`, `j < n`,
/// `dst[i*dst_rs + j*dst_cs] = alpha*dst + beta * Σ_k lhs[i + k*lhs_cs] * rhs[k*rhs_rs + j*rhs_cs]`
/// (with `alpha_status` 1: `dst + beta * Σ`). It reads `MR_DIV_N * lanes` lhs values and `nr`
/// rhs values per `k`, whatever `m` and `n`.
type Ukr = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    *const f32,
    *const f32,
    isize,
    isize,
    isize,
    isize,
    isize,
    f32,
    f32,
    u8,
    bool,
    bool,
    bool,
    *const f32,
);

/// The micro-kernels compiled for one instruction set: `table[mr_div_n - 1][nr - 1]` computes
/// an `(mr_div_n * lanes) x nr` block of the output.
#[derive(Clone, Copy)]
struct Kernels {
    lanes: usize,
    nr: usize,
    table: &'static [&'static [Ukr]],
}

macro_rules! kernel_table {
    ($name:ident, $path:path, [$($i:literal),*]) => {
        static $name: &[&[Ukr]] = {
            use $path as k;
            &[$(&k::UKR[$i]),*]
        };
    };
}

kernel_table!(SCALAR, gemm_f32::microkernel::scalar::f32, [0, 1]);
#[cfg(target_arch = "x86_64")]
kernel_table!(FMA, gemm_f32::microkernel::fma::f32, [0, 1]);
#[cfg(target_arch = "x86_64")]
kernel_table!(AVX512, gemm_f32::microkernel::avx512f::f32, [0, 1, 2, 3]);
#[cfg(target_arch = "aarch64")]
kernel_table!(NEON, gemm_f32::microkernel::neon::f32, [0, 1, 2, 3]);

impl Kernels {
    /// The kernels for the instruction set `cpu` proves present.
    fn for_cpu(cpu: Cpu) -> Self {
        let scalar = Kernels {
            lanes: 1,
            nr: gemm_f32::microkernel::scalar::f32::NR,
            table: SCALAR,
        };
        match cpu.level() {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => Kernels {
                lanes: 16,
                nr: gemm_f32::microkernel::avx512f::f32::NR,
                table: AVX512,
            },
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => Kernels {
                lanes: 8,
                nr: gemm_f32::microkernel::fma::f32::NR,
                table: FMA,
            },
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => Kernels {
                lanes: 4,
                nr: gemm_f32::microkernel::neon::f32::NR,
                table: NEON,
            },
            _ => scalar,
        }
    }

    /// Rows of the output one kernel call covers at most.
    fn mr(&self) -> usize {
        self.lanes * self.table.len()
    }
}

/// Widest panel of output channels: the AVX-512 kernels' 4 x 16 rows. Every instruction set's
/// row block (64, 16, 16 or 2) divides a panel, so one packing serves them all.
const MAX_PANEL: usize = 64;

/// Panels are at least this wide (a multiple of every vector width), so that a kernel never
/// reads past a panel.
const MIN_PANEL: usize = 16;

/// Rows written into the panels at a time by [`PackedMatrix::set_rows`]: a multiple of every
/// kernel's vector width and a divisor of every panel width, so a block never straddles two
/// panels.
pub(crate) const ROW_BLOCK: usize = 16;

thread_local! {
    /// The rows [`PackedMatrix::refill_rows`] gathers before writing them into the panels:
    /// kept per thread (repacking runs on every thread of a pool, every training step).
    static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` on this thread's row buffer, at least `len` values long (contents unspecified).
/// Not re-entrant: `f` must not call it again.
pub(crate) fn with_rows_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    ROWS.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// Depth of one pass: per pass, each group of `nr` pixels (`nr x KC` activations, in L1) meets
/// every panel's `KC`-deep block of weights (in L2). Measured on whole ResNet-18/50 forwards,
/// 64 is a few percent faster than 128 and 8% faster than 256 (the late stages' small maps
/// stream their weights; shallower blocks keep more of the output tile in cache).
const KC: usize = 64;

/// Where a product writes: channels `chans` of rows `ld` values apart, `ptr` pointing at
/// channel `chans.start` of the first row; and how its values start and end there.
#[derive(Debug, Clone)]
pub(crate) struct OutRows<'a> {
    /// Channel `chans.start` of the first row.
    pub(crate) ptr: *mut f32,
    /// Values from one row to the next.
    pub(crate) ld: usize,
    /// The channels written.
    pub(crate) chans: std::ops::Range<usize>,
    /// Onto what the rows hold, or from a bias and residual; ReLU or not.
    pub(crate) ends: Ends<'a>,
}

/// A `[m, k]` matrix (output channels x reduction) packed for the micro-kernels: panels of
/// `panel` rows (zero-padded), each stored k-major (`panel` contiguous values per `k`), in the
/// order the product reads them — depth block by depth block, and within a depth block panel
/// by panel — so that a product streams the weights from memory in one sequential pass.
#[derive(Debug, Clone)]
pub(crate) struct PackedMatrix {
    m: usize,
    k: usize,
    panel: usize,
    data: Vec<f32>,
}

impl PackedMatrix {
    /// Pack the matrix whose element `(i, kk)` is `at(i, kk)`.
    pub(crate) fn new(m: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let mut p = Self::zeros(m, k);
        p.refill(at);
        p
    }

    /// The `[m, k]` zero matrix, packed (to be filled by [`PackedMatrix::set_rows`] or a refill).
    pub(crate) fn zeros(m: usize, k: usize) -> Self {
        let panel = m.next_multiple_of(MIN_PANEL).clamp(MIN_PANEL, MAX_PANEL);
        let panels = m.div_ceil(panel);
        Self {
            m,
            k,
            panel,
            data: vec![0.0; panels * k * panel],
        }
    }

    /// Overwrite the matrix with the one whose element `(i, kk)` is `at(i, kk)` (same shape),
    /// in the same storage: bitwise what [`PackedMatrix::new`] would hold.
    pub(crate) fn refill(&mut self, at: impl Fn(usize, usize) -> f32) {
        let (m, k, panel) = (self.m, self.k, self.panel);
        let panels = m.div_ceil(panel);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for p in 0..panels {
                let block =
                    &mut self.data[Self::block_offset(k0, kc, p, panel, panels)..][..kc * panel];
                let rows = p * panel..((p + 1) * panel).min(m);
                for (kk, dst) in block.chunks_exact_mut(panel).enumerate() {
                    let (live, pad) = dst.split_at_mut(rows.len());
                    for (d, i) in live.iter_mut().zip(rows.clone()) {
                        *d = at(i, k0 + kk);
                    }
                    pad.fill(0.0);
                }
            }
        }
    }

    /// The packed values of rows `i0 .. i0 + nr` at depth `kk`, side by side (one run of
    /// the storage): rows of one panel, `i0` a multiple of [`ROW_BLOCK`], `nr` at most that
    /// many. What a packer that reads the source in its own order writes into.
    ///
    /// # Panics
    /// If the rows run past `m`, break the block rule, or `kk` is not below `k`.
    #[inline(always)]
    pub(crate) fn run_mut(&mut self, i0: usize, nr: usize, kk: usize) -> &mut [f32] {
        let (m, k, panel) = (self.m, self.k, self.panel);
        assert!(
            i0.is_multiple_of(ROW_BLOCK) && nr <= ROW_BLOCK && i0 + nr <= m && kk < k,
            "run_mut: rows {i0}..{} at depth {kk} of {m} x {k}",
            i0 + nr
        );
        let k0 = kk - kk % KC;
        let at = Self::block_offset(k0, KC.min(k - k0), i0 / panel, panel, m.div_ceil(panel))
            + (kk - k0) * panel
            + i0 % panel;
        &mut self.data[at..at + nr]
    }

    /// [`PackedMatrix::refill`] from whole rows: `row(i, buf)` writes row `i`'s `k` values into
    /// `buf`; [`ROW_BLOCK`] rows at a time are then written into their panel by
    /// [`PackedMatrix::set_rows`]. Bitwise what [`PackedMatrix::new`] would hold.
    pub(crate) fn refill_rows(&mut self, mut row: impl FnMut(usize, &mut [f32])) {
        let (m, k) = (self.m, self.k);
        if k == 0 {
            return;
        }
        with_rows_buffer(ROW_BLOCK * k, |buf| {
            for i0 in (0..m).step_by(ROW_BLOCK) {
                let rows = ROW_BLOCK.min(m - i0);
                for (r, dst) in buf.chunks_exact_mut(k).take(rows).enumerate() {
                    row(i0 + r, dst);
                }
                self.set_rows(i0, &buf[..rows * k]);
            }
        });
        // Padding rows (`m..`) hold the zeros `zeros` gave them; nothing writes them.
    }

    /// Overwrite rows `i0 ..` with `rows` (whole rows of `k` values, one after the other), all
    /// in one panel: `i0` a multiple of [`ROW_BLOCK`] and at most that many rows. Each depth
    /// step writes the rows' values side by side, one run of contiguous stores, reading them
    /// from the rows in step: a transposition in blocks that stay in L1 (one store per value
    /// at a panel's stride, as writing row by row does, touched a cache line per value).
    ///
    /// # Panics
    /// If the rows are not whole, run past `m` or break the block rule.
    pub(crate) fn set_rows(&mut self, i0: usize, rows: &[f32]) {
        let (m, k, panel) = (self.m, self.k, self.panel);
        if k == 0 {
            return;
        }
        assert!(rows.len().is_multiple_of(k), "set_rows takes whole rows");
        let nr = rows.len() / k;
        assert!(
            i0.is_multiple_of(ROW_BLOCK) && nr <= ROW_BLOCK && i0 + nr <= m,
            "set_rows: rows {i0}..{} of {m} are not one block",
            i0 + nr
        );
        let panels = m.div_ceil(panel);
        let (p, il) = (i0 / panel, i0 % panel);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let block =
                &mut self.data[Self::block_offset(k0, kc, p, panel, panels)..][..kc * panel];
            for (kk, dst) in block.chunks_exact_mut(panel).enumerate() {
                for (r, d) in dst[il..il + nr].iter_mut().enumerate() {
                    *d = rows[r * k + k0 + kk];
                }
            }
        }
    }

    /// Where the `kc x panel` block of panel `p` at depth `k0` starts: every depth block
    /// before it is `KC` deep and holds all `panels`.
    fn block_offset(k0: usize, kc: usize, p: usize, panel: usize, panels: usize) -> usize {
        k0 * panels * panel + p * kc * panel
    }

    /// Width of the panels: row ranges passed to [`PackedMatrix::matmul_acc_rows`] start at a
    /// multiple of it.
    pub(crate) fn panel(&self) -> usize {
        self.panel
    }

    /// `dst[j*ldd + i] += Σ_kk self[i, kk] * rhs[j*ldr + kk]` for `i < m`, `j < n`: `n` pixels
    /// (rows of `rhs`, `k` contiguous values each) times the packed weights, accumulated onto
    /// `n` rows of `dst` (`m` contiguous values each). On the calling thread; allocation-free.
    ///
    /// # Panics
    /// If a slice is too short for the rows and strides (an internal invariant of the callers).
    pub(crate) fn matmul_acc(
        &self,
        cpu: Cpu,
        n: usize,
        rhs: &[f32],
        ldr: usize,
        dst: &mut [f32],
        ldd: usize,
    ) {
        if self.m == 0 || n == 0 || self.k == 0 {
            return;
        }
        assert!(ldd >= self.m, "matmul dst stride shorter than a row");
        assert!(dst.len() >= (n - 1) * ldd + self.m, "matmul dst too short");
        let dst = OutRows {
            ptr: dst.as_mut_ptr(),
            ld: ldd,
            chans: 0..self.m,
            ends: Ends::accumulate(),
        };
        // SAFETY: `dst` is uniquely borrowed and holds every element `(j, i)`, `j < n`,
        // `i < m`, at `j * ldd + i` (asserted above).
        unsafe { self.matmul_acc_rows(cpu, n, rhs, ldr, dst) }
    }

    /// [`PackedMatrix::matmul_acc`] for the output rows (channels) `dst.chans` only, starting
    /// at a multiple of [`PackedMatrix::panel`]; `dst.ptr` points at element
    /// `(0, dst.chans.start)`. Threads that split the channels of one output this way get
    /// bitwise the same values as one call over all of them: each value's sum runs in the same
    /// order either way.
    ///
    /// `dst.ends` says how each value starts and ends: onto what `dst` holds, or from the bias (and
    /// residual) it names, and whether ReLU follows. They are applied block by block of the
    /// product, in registers where a kernel of ours computes the block, so that the
    /// destination is written once and never read back (the whole tile, in passes of their
    /// own, left L1 between them). Either way each value is bitwise `relu((bias + residual) +
    /// Σ)`, the sum in depth blocks as always.
    ///
    /// # Safety
    /// For every `j < n` and `i` in `dst.chans`, `dst.ptr + j * dst.ld + (i - dst.chans.start)`
    /// must be valid for reads and writes and not accessed by anyone else during the call.
    ///
    /// # Panics
    /// If `rhs` is too short, the channels are not inside `0..m` or not panel-aligned, or
    /// `dst.ends` names a bias or residual too short for the channels and rows.
    pub(crate) unsafe fn matmul_acc_rows(
        &self,
        cpu: Cpu,
        n: usize,
        rhs: &[f32],
        ldr: usize,
        dst: OutRows<'_>,
    ) {
        let OutRows {
            ptr: dst,
            ld: ldd,
            chans: rows,
            ends,
        } = dst;
        let (m, k, panel) = (self.m, self.k, self.panel);
        if rows.is_empty() || n == 0 {
            return;
        }
        assert!(
            rows.end <= m && rows.start % panel == 0,
            "matmul rows out of range"
        );
        ends.check(n, ldd, rows.len());
        let kern = Kernels::for_cpu(cpu);
        let mr = kern.mr();
        if k == 0 {
            // No sums: the output step alone, over all rows at once.
            let all = Block {
                at: 0,
                height: rows.len(),
                cols: n,
            };
            // SAFETY: every row's channels: the caller's (the contract).
            unsafe {
                ends.start_block(cpu, dst, ldd, 0, all);
                ends.finish_block(cpu, dst, ldd, all);
            }
            return;
        }
        assert!(ldr >= k, "matmul rhs stride shorter than a row");
        assert!(rhs.len() >= (n - 1) * ldr + k, "matmul rhs too short");
        let own = Own::for_rows(cpu, rows.len());
        // Pixels per kernel call: our kernels' where they apply.
        let step = own.map_or(kern.nr, |o| o.cols);
        let (rhs, lhs) = (rhs.as_ptr(), self.data.as_ptr());
        let panels = m.div_ceil(panel);
        let (p_first, p_end) = (rows.start / panel, rows.end.div_ceil(panel));
        let calls = n.div_ceil(step) * rows.len().div_ceil(mr);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let (first, last) = (k0 == 0, k0 + kc == k);
            // The next depth block of these panels' weights, pulled towards L2 a share per
            // kernel call while this block is in use.
            let next = if k0 + kc < k {
                let kc_next = KC.min(k - k0 - kc);
                let start = Self::block_offset(k0 + kc, kc_next, p_first, panel, panels);
                &self.data[start..start + (p_end - p_first) * kc_next * panel]
            } else {
                &[]
            };
            let share = next.len().div_ceil(calls).next_multiple_of(16).max(16);
            let mut ahead = next.chunks(share);
            for j0 in (0..n).step_by(step) {
                let cols = step.min(n - j0);
                // Without our kernels the step runs around gemm's for the whole group of
                // pixels at once (a call per pixel over all channels, not per block: on AVX2
                // a block is 16 channels and a dispatched call would cost more than its work);
                // with them, only their edge blocks take the step around gemm's, block by block.
                let group = Block {
                    at: 0,
                    height: rows.len(),
                    cols,
                };
                let group_out = dst.wrapping_add(j0 * ldd);
                if own.is_none() && first {
                    // SAFETY: the group's rows and channels: the caller's.
                    unsafe { ends.start_block(cpu, group_out, ldd, j0, group) };
                }
                for i0 in rows.clone().step_by(mr) {
                    if let Some(part) = ahead.next() {
                        prefetch_l2(part);
                    }
                    let height = mr.min(rows.end - i0);
                    let (p, within) = (i0 / panel, i0 % panel);
                    // A block never straddles two panels: `mr` divides `panel` or exceeds `m`.
                    assert!(within + height <= panel, "matmul block straddles panels");
                    let a = Self::block_offset(k0, kc, p, panel, panels) + within;
                    let block = Block {
                        at: i0 - rows.start,
                        height,
                        cols,
                    };
                    let out = dst.wrapping_add(j0 * ldd + block.at);
                    let (lhs, rhs) = (lhs.wrapping_add(a), rhs.wrapping_add(j0 * ldr + k0));
                    let run = own.and_then(|o| o.kernel(height, cols));
                    if let Some(run) = run {
                        let start = ends.block_start(first, j0, ldd, block.at);
                        let relu = last && ends.relu;
                        // SAFETY: `Own::for_rows` vouched for the instruction set and
                        // `kernel` for the block (`height` whole vectors of one panel, `cols`
                        // pixels); it reads `kc` steps of `height` packed values, `cols` rhs
                        // rows of `kc ≤ k` values and, from the start, `height` bias values
                        // and `cols` residual rows of them (checked by `ends.check`), and
                        // writes `height x cols` of dst, as gemm's kernels below do.
                        unsafe { run(kc, out, ldd, lhs, panel, rhs, ldr, start, relu) };
                        continue;
                    }
                    if own.is_some() && first {
                        // SAFETY: the block's rows and channels: the caller's.
                        unsafe { ends.start_block(cpu, out, ldd, j0, block) };
                    }
                    for c0 in (0..cols).step_by(kern.nr) {
                        let cc = kern.nr.min(cols - c0);
                        // SAFETY: `kern` matches the instruction set `cpu` proves present; the
                        // kernel reads `kc` steps of `⌈height/lanes⌉·lanes ≤ panel - within`
                        // packed values (padded panels) and `cc` rhs rows of `kc ≤ k` values
                        // (inside the slices, as asserted), and writes `height x cc` of dst,
                        // which the caller vouches for.
                        unsafe {
                            kern.table[height.div_ceil(kern.lanes) - 1][cc - 1](
                                height,
                                cc,
                                kc,
                                out.add(c0 * ldd),
                                lhs,
                                rhs.add(c0 * ldr),
                                ldd as isize,
                                1,
                                panel as isize,
                                1,
                                ldr as isize,
                                1.0,
                                1.0,
                                1,
                                false,
                                false,
                                false,
                                std::ptr::null(),
                            );
                        }
                    }
                    if own.is_some() && last {
                        // SAFETY: as the start.
                        unsafe { ends.finish_block(cpu, out, ldd, block) };
                    }
                }
                if own.is_none() && last {
                    // SAFETY: as the start.
                    unsafe { ends.finish_block(cpu, group_out, ldd, group) };
                }
            }
        }
    }
}

/// How the values of a product start and end: see [`PackedMatrix::matmul_acc_rows`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ends<'a> {
    /// `None`: onto what the destination holds.
    start: Option<Start<'a>>,
    /// ReLU on the finished values.
    relu: bool,
}

/// The value a product's sums are added to, instead of the destination's.
#[derive(Debug, Clone, Copy)]
struct Start<'a> {
    /// Per channel of the product's rows (from the first).
    bias: &'a [f32],
    /// Laid out as the destination (same row stride, starting at the same element).
    residual: Option<&'a [f32]>,
}

/// A block of the destination: `height` channels from channel `at` (counted from the first
/// of the product's) of `cols` pixels.
#[derive(Debug, Clone, Copy)]
struct Block {
    at: usize,
    height: usize,
    cols: usize,
}

impl<'a> Ends<'a> {
    /// Accumulate onto the destination, no ReLU: a plain `dst += product`.
    pub(crate) fn accumulate() -> Self {
        Self::default()
    }

    /// Start from `bias` (one value per channel of the product's rows) plus, if given,
    /// `residual` (laid out as the destination: same row stride, from the same element);
    /// ReLU at the end if `relu`.
    pub(crate) fn output(bias: &'a [f32], residual: Option<&'a [f32]>, relu: bool) -> Self {
        Self {
            start: Some(Start { bias, residual }),
            relu,
        }
    }

    /// The same for the channels from `at` on: what a product over a sub-range of the rows
    /// (one block of groups) takes.
    pub(crate) fn channels_from(self, at: usize) -> Self {
        Self {
            start: self.start.map(|s| Start {
                bias: &s.bias[at..],
                residual: s.residual.map(|r| &r[at..]),
            }),
            ..self
        }
    }

    /// Panics unless the bias and residual cover `n` rows `ld` apart of `chans` channels.
    fn check(&self, n: usize, ld: usize, chans: usize) {
        if let Some(s) = self.start {
            assert!(s.bias.len() >= chans, "matmul bias too short");
            if let Some(r) = s.residual {
                assert!(r.len() >= (n - 1) * ld + chans, "matmul residual too short");
            }
        }
    }

    /// What our kernels start a block from (pixel `j0`, channel `at`): pointers into the
    /// bias and residual checked by [`Ends::check`].
    fn block_start(&self, first: bool, j0: usize, ld: usize, at: usize) -> KernelStart {
        match self.start {
            Some(s) if first => match s.residual {
                Some(r) => KernelStart::BiasResidual(
                    s.bias[at..].as_ptr(),
                    r.as_ptr().wrapping_add(j0 * ld + at),
                ),
                None => KernelStart::Bias(s.bias[at..].as_ptr()),
            },
            _ => KernelStart::Dst,
        }
    }

    /// Set the block at `out` (pixel `j0` of the product) to its start value, if it has one.
    ///
    /// # Safety
    /// `out + j * ld + i` for `j < block.cols`, `i < block.height` is the caller's to write.
    unsafe fn start_block(&self, cpu: Cpu, out: *mut f32, ld: usize, j0: usize, block: Block) {
        let Some(s) = self.start else { return };
        let bias = &s.bias[block.at..block.at + block.height];
        for j in 0..block.cols {
            // SAFETY: the contract.
            let row = unsafe { std::slice::from_raw_parts_mut(out.add(j * ld), block.height) };
            match s.residual {
                Some(r) => {
                    let at = (j0 + j) * ld + block.at;
                    simd::add_to(cpu, row, bias, &r[at..at + block.height]);
                }
                None => row.copy_from_slice(bias),
            }
        }
    }

    /// ReLU on the block at `out`, if asked for.
    ///
    /// # Safety
    /// As [`Ends::start_block`].
    unsafe fn finish_block(&self, cpu: Cpu, out: *mut f32, ld: usize, block: Block) {
        if !self.relu {
            return;
        }
        for j in 0..block.cols {
            // SAFETY: the contract.
            let row = unsafe { std::slice::from_raw_parts_mut(out.add(j * ld), block.height) };
            simd::relu_inplace(cpu, row);
        }
    }
}

/// How one of our kernels starts its block: from the destination, or from the bias (and
/// residual) at these pointers (the block's first channel; the residual's rows as far apart
/// as the destination's).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum KernelStart {
    Dst,
    Bias(*const f32),
    BiasResidual(*const f32, *const f32),
}

/// One of our kernels: `dst[j*ldd + i] = end(start(j, i) + Σ_kk lhs[kk*panel + i] *
/// rhs[j*ldr + kk])` for `i` in the kernel's rows, `j` below its pixels, `kk < kc`; arguments
/// `(kc, dst, ldd, lhs, panel, rhs, ldr, start, relu)`. Safety: the CPU has AVX-512F, the
/// elements named are valid (reads of `lhs`, `rhs` and the start's, reads and writes of `dst`)
/// and `dst`'s are used by no one else during the call.
type OwnFn =
    unsafe fn(usize, *mut f32, usize, *const f32, usize, *const f32, usize, KernelStart, bool);

/// Our own kernels, for AVX-512 and blocks of whole vectors. They exist for two reasons.
/// gemm's serve one or two vectors of output channels (the 16- and 32-channel convs of the
/// CIFAR nets) worst: its widest kernel for them holds a 16 x 6 (or 32 x 6) tile, 6 (12)
/// independent sums, too few to hide the latency of the fused multiply-adds; ours hold
/// 16 x 14 and 32 x 12. And ours apply the output step (bias, residual, ReLU) to the block in
/// registers. Each sum runs exactly as in gemm's kernels (from zero, one fused multiply-add per
/// step in order, then added to the start value), so the results are bitwise the same; only
/// the speed differs.
#[derive(Clone, Copy)]
struct Own {
    /// Pixels (columns of the output block) per call.
    cols: usize,
}

impl Own {
    /// Our kernels for a product over `rows` output channels on `cpu`, if there are: with
    /// AVX-512, for one to four whole vectors, or more channels (in blocks of four vectors).
    fn for_rows(cpu: Cpu, rows: usize) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if cpu.level() == SimdLevel::Avx512 {
            let cols = match rows {
                16 => 14,
                32 => 12,
                48 => 8,
                r if r >= 64 => 6,
                _ => return None,
            };
            return Some(Self { cols });
        }
        let _ = (cpu, rows);
        None
    }

    /// The kernel for a block of `height` channels and `cols` pixels, if there is one.
    fn kernel(self, height: usize, cols: usize) -> Option<OwnFn> {
        if cols != self.cols {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        let run: Option<OwnFn> = match (height, cols) {
            (16, 14) => Some(own_avx512::<1, 14>),
            (32, 12) => Some(own_avx512::<2, 12>),
            (48, 8) => Some(own_avx512::<3, 8>),
            (64, 6) => Some(own_avx512::<4, 6>),
            (16, 6) => Some(own_avx512::<1, 6>),
            (32, 6) => Some(own_avx512::<2, 6>),
            (48, 6) => Some(own_avx512::<3, 6>),
            _ => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let run = {
            let _ = height;
            None
        };
        run
    }
}

/// An [`OwnFn`] for `MV` vectors of rows and `NR` pixels: `MV * NR` sums in registers.
///
/// # Safety
/// As [`OwnFn`] says.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn own_avx512<const MV: usize, const NR: usize>(
    kc: usize,
    dst: *mut f32,
    ldd: usize,
    lhs: *const f32,
    panel: usize,
    rhs: *const f32,
    ldr: usize,
    start: KernelStart,
    relu: bool,
) {
    use std::arch::x86_64::{
        __m512, _CMP_LE_OQ, _MM_HINT_ET0, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps,
        _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_mov_ps, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };
    // The block's first depth step meets the destination (and the residual) for the first
    // time; both come from beyond L2. Ask for the same block of the next pixels now, so that
    // it arrives while this one sums.
    if !matches!(start, KernelStart::Dst) {
        for j in NR..2 * NR {
            for v in 0..MV {
                let at = j * ldd + 16 * v;
                // A prefetch is only a hint and never faults, wherever it points.
                _mm_prefetch::<_MM_HINT_ET0>(dst.wrapping_add(at).cast());
                if let KernelStart::BiasResidual(_, r) = start {
                    _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(at).cast());
                }
            }
        }
    }
    let mut acc: [[__m512; MV]; NR] = [[_mm512_setzero_ps(); MV]; NR];
    for kk in 0..kc {
        let mut a: [__m512; MV] = [_mm512_setzero_ps(); MV];
        for (v, a) in a.iter_mut().enumerate() {
            // SAFETY: row block `v` of depth `kk`: inside the packed panel (the contract).
            *a = unsafe { _mm512_loadu_ps(lhs.add(kk * panel + 16 * v)) };
        }
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: pixel `j`'s value at depth `kk`: inside rhs (the contract).
            let b = _mm512_set1_ps(unsafe { *rhs.add(j * ldr + kk) });
            for (s, &a) in acc.iter_mut().zip(&a) {
                *s = _mm512_fmadd_ps(a, b, *s);
            }
        }
    }
    let zero = _mm512_setzero_ps();
    for (j, acc) in acc.iter().enumerate() {
        for (v, &s) in acc.iter().enumerate() {
            // SAFETY: pixel `j`'s rows of block `v`, and the start values beside them: the
            // caller's to read (and the destination's to write).
            unsafe {
                let d = dst.add(j * ldd + 16 * v);
                let from = match start {
                    KernelStart::Dst => _mm512_loadu_ps(d),
                    KernelStart::Bias(b) => _mm512_loadu_ps(b.add(16 * v)),
                    KernelStart::BiasResidual(b, r) => _mm512_add_ps(
                        _mm512_loadu_ps(b.add(16 * v)),
                        _mm512_loadu_ps(r.add(j * ldd + 16 * v)),
                    ),
                };
                let mut x = _mm512_add_ps(from, s);
                if relu {
                    // As `simd::relu_v`: zero where `x <= 0`, so NaN passes.
                    x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, zero), zero);
                }
                _mm512_storeu_ps(d, x);
            }
        }
    }
}

/// Hint the CPU to bring `values` into L2 (a no-op where there is no portable hint).
#[inline(always)]
fn prefetch_l2(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch is only a hint and never faults; SSE is part of x86-64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD instruction sets of this machine (gemm's scalar kernels multiply and add
    /// unfused, so they round differently).
    fn simd_levels() -> Vec<Cpu> {
        Cpu::all_levels()
            .into_iter()
            .filter(|c| c.level() != crate::SimdLevel::Scalar)
            .collect()
    }

    /// Panics unless every level's result has the first one's bits.
    fn assert_same_bits(levels: &[Cpu], results: &[Vec<f32>], what: &str) {
        for (cpu, r) in levels.iter().zip(results).skip(1) {
            let same = r
                .iter()
                .zip(&results[0])
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{what}: {} and {} disagree",
                cpu.level(),
                levels[0].level()
            );
        }
    }

    fn check(cpu: Cpu, m: usize, n: usize, k: usize) {
        let a = |i: usize, kk: usize| ((i * 7 + kk * 3) % 11) as f32 - 5.0;
        let packed = PackedMatrix::new(m, k, a);
        let (ldr, ldd) = (k + 3, m + 2);
        let rhs: Vec<f32> = (0..n * ldr).map(|v| (v % 13) as f32 * 0.25 - 1.0).collect();
        let mut dst: Vec<f32> = (0..n * ldd).map(|v| (v % 5) as f32).collect();
        let before = dst.clone();
        packed.matmul_acc(cpu, n, &rhs, ldr, &mut dst, ldd);
        for j in 0..n {
            for i in 0..ldd {
                let want = if i < m {
                    let s: f64 = (0..k)
                        .map(|kk| f64::from(a(i, kk)) * f64::from(rhs[j * ldr + kk]))
                        .sum();
                    f64::from(before[j * ldd + i]) + s
                } else {
                    f64::from(before[j * ldd + i])
                };
                let got = f64::from(dst[j * ldd + i]);
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "m {m} n {n} k {k} at ({i}, {j}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn matches_reference_on_awkward_shapes() {
        for cpu in Cpu::all_levels() {
            for &(m, n, k) in &[
                (1, 1, 1),
                (4, 7, 36),
                (17, 5, 3),
                (64, 6, 128),
                (65, 13, 129),
                (130, 1, 300),
                (1000, 2, 64),
                (48, 49, 27),
            ] {
                check(cpu, m, n, k);
            }
        }
    }

    /// Every SIMD instruction set sums each value in the same order (from zero, one fused
    /// multiply-add per depth step, then onto the destination), so all give bitwise the same
    /// products: our AVX-512 kernels (16- and 32-row blocks, also as the last block of a
    /// split) against gemm's AVX2 kernels.
    #[test]
    fn the_wide_kernels_give_gemms_bits() {
        let a = |i: usize, kk: usize| ((i * 37 + kk * 11) % 23) as f32 * 0.37 - 4.1;
        let levels = simd_levels();
        for (m, n, k, chans) in [
            (16, 14, 64, 0..16),
            (16, 1, 9, 0..16),
            (16, 29, 130, 0..16),
            (32, 12, 64, 0..32),
            (32, 40, 200, 0..32),
            (32, 25, 1, 0..32),
            (80, 31, 70, 64..80),
            (96, 27, 65, 64..96),
            (16, 100, 144, 0..16),
        ] {
            let packed = PackedMatrix::new(m, k, a);
            let ldr = k + 1;
            let rhs: Vec<f32> = (0..n * ldr)
                .map(|v| ((v * 7) % 19) as f32 * 0.21 - 1.7)
                .collect();
            let results: Vec<Vec<f32>> = levels
                .iter()
                .map(|&cpu| {
                    let mut dst: Vec<f32> = (0..n * m).map(|v| (v % 5) as f32 * 0.1).collect();
                    let out = OutRows {
                        ptr: dst[chans.start..].as_mut_ptr(),
                        ld: m,
                        chans: chans.clone(),
                        ends: Ends::accumulate(),
                    };
                    // SAFETY: `dst` holds `n` rows of `m` values, only this call uses it.
                    unsafe { packed.matmul_acc_rows(cpu, n, &rhs, ldr, out) };
                    dst
                })
                .collect();
            assert_same_bits(&levels, &results, &format!("m {m} n {n} k {k}"));
            for cpu in Cpu::all_levels() {
                check(cpu, m, n, k);
            }
        }
    }

    /// The output step (start from bias and residual, ReLU at the end) gives bitwise the same
    /// values whether our AVX-512 kernels apply it in registers or it runs around gemm's
    /// kernels (AVX2, and AVX-512's edge blocks), and the values a reference computes.
    #[test]
    fn the_output_step_is_bitwise_the_same_on_every_level() {
        let a = |i: usize, kk: usize| ((i * 29 + kk * 13) % 31) as f32 * 0.11 - 1.6;
        let levels = simd_levels();
        for (m, n, k, chans) in [
            (16, 30, 64, 0..16),
            (32, 25, 70, 0..32),
            (48, 17, 129, 0..48),
            (64, 13, 64, 0..64),
            (256, 50, 64, 64..256),
            (200, 7, 300, 0..200),
            (80, 6, 0, 0..80),
        ] {
            let packed = PackedMatrix::new(m, k, a);
            let ldr = k + 2;
            let rhs: Vec<f32> = (0..n * ldr)
                .map(|v| ((v * 5) % 17) as f32 * 0.23 - 1.9)
                .collect();
            let bias: Vec<f32> = (0..m).map(|i| (i % 7) as f32 * 0.3 - 0.9).collect();
            let res: Vec<f32> = (0..n * m)
                .map(|v| ((v * 3) % 11) as f32 * 0.2 - 1.0)
                .collect();
            for (residual, relu) in [(false, false), (false, true), (true, false), (true, true)] {
                let run = |cpu: Cpu| {
                    let mut dst = vec![f32::NAN; n * m];
                    let ends = Ends::output(
                        &bias[chans.clone()],
                        residual.then(|| &res[chans.start..]),
                        relu,
                    );
                    let out = OutRows {
                        ptr: dst[chans.start..].as_mut_ptr(),
                        ld: m,
                        chans: chans.clone(),
                        ends,
                    };
                    // SAFETY: `dst` holds `n` rows of `m` values, only this call uses it.
                    unsafe { packed.matmul_acc_rows(cpu, n, &rhs, ldr, out) };
                    dst
                };
                let results: Vec<Vec<f32>> = levels.iter().map(|&cpu| run(cpu)).collect();
                let what = format!("m {m} n {n} k {k} residual {residual} relu {relu}");
                assert_same_bits(&levels, &results, &what);
                let got = run(Cpu::scalar());
                for j in 0..n {
                    for (i, &b) in bias.iter().enumerate() {
                        let at = j * m + i;
                        if !chans.contains(&i) {
                            assert!(got[at].is_nan(), "channel {i} outside the product written");
                            continue;
                        }
                        let s: f64 = (0..k)
                            .map(|kk| f64::from(a(i, kk)) * f64::from(rhs[j * ldr + kk]))
                            .sum();
                        let r = if residual { f64::from(res[at]) } else { 0.0 };
                        let mut want = f64::from(b) + r + s;
                        if relu {
                            want = want.max(0.0);
                        }
                        let got = f64::from(got[at]);
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "m {m} n {n} k {k} at ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn empty_products_are_no_ops() {
        let p = PackedMatrix::new(0, 5, |_, _| 1.0);
        let mut dst = [];
        p.matmul_acc(Cpu::detect(), 3, &[0.0; 15], 5, &mut dst, 0);
        let p = PackedMatrix::new(3, 0, |_, _| 1.0);
        let mut dst = [1.0; 6];
        p.matmul_acc(Cpu::detect(), 2, &[], 0, &mut dst, 3);
        assert_eq!(dst, [1.0; 6]);
    }
}
