//! [`Cpu`]: the token that proves which instruction set the fast kernels may use, made only
//! by feature detection; [`SimdLevel`] names the levels.

/// The SIMD instruction set the fast kernels were dispatched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// No SIMD: portable scalar code.
    Scalar,
    /// x86-64-v3: AVX2 + FMA, 8 f32 lanes.
    Avx2Fma,
    /// x86-64-v4: AVX-512 (F, BW, CD, DQ, VL), 16 f32 lanes.
    Avx512,
    /// aarch64 NEON, 4 f32 lanes.
    Neon,
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "AVX2+FMA (x86-64-v3)",
            SimdLevel::Avx512 => "AVX-512 (x86-64-v4)",
            SimdLevel::Neon => "NEON",
        })
    }
}

/// Proof that the CPU's features were detected: the fast kernels take one, and dispatch
/// through it to code compiled for exactly those features. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    arch: pulp::Arch,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::detect()
    }
}

impl Cpu {
    /// Detect the best instruction set this CPU supports.
    pub fn detect() -> Self {
        Self {
            arch: pulp::Arch::new(),
        }
    }

    /// Portable scalar code only (for testing the fallback path).
    pub fn scalar() -> Self {
        Self {
            arch: pulp::Arch::Scalar,
        }
    }

    /// The given instruction set, if this CPU has it: a lower level than [`Cpu::detect`]'s
    /// picks the code paths of older CPUs (for testing them all on one machine).
    ///
    /// ```
    /// use resnet_kernels::{Cpu, SimdLevel};
    /// assert!(Cpu::with_level(SimdLevel::Scalar).is_some());
    /// for cpu in Cpu::all_levels() {
    ///     assert_eq!(Cpu::with_level(cpu.level()).map(|c| c.level()), Some(cpu.level()));
    /// }
    /// ```
    pub fn with_level(level: SimdLevel) -> Option<Self> {
        let arch = match level {
            SimdLevel::Scalar => Some(pulp::Arch::Scalar),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => pulp::x86::V4::try_new().map(pulp::Arch::V4),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => pulp::x86::V3::try_new().map(pulp::Arch::V3),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => pulp::aarch64::Neon::try_new().map(pulp::Arch::Neon),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        arch.map(|arch| Self { arch })
    }

    /// Every instruction set this CPU has, best first (always ending with scalar).
    pub fn all_levels() -> Vec<Self> {
        [
            SimdLevel::Avx512,
            SimdLevel::Avx2Fma,
            SimdLevel::Neon,
            SimdLevel::Scalar,
        ]
        .into_iter()
        .filter_map(Self::with_level)
        .collect()
    }

    /// The instruction set in use.
    #[allow(unreachable_patterns)]
    pub fn level(&self) -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        return match self.arch {
            pulp::Arch::V4(_) => SimdLevel::Avx512,
            pulp::Arch::V3(_) => SimdLevel::Avx2Fma,
            _ => SimdLevel::Scalar,
        };
        #[cfg(target_arch = "aarch64")]
        return match self.arch {
            pulp::Arch::Neon(_) => SimdLevel::Neon,
            _ => SimdLevel::Scalar,
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        SimdLevel::Scalar
    }

    /// The detected instruction set, for kernels written per instruction set.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn arch(&self) -> pulp::Arch {
        self.arch
    }

    pub(crate) fn dispatch<Op: pulp::WithSimd>(&self, op: Op) -> Op::Output {
        self.arch.dispatch(op)
    }
}
