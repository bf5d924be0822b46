//! f16-weight GEMM: `out[m, n] = sum_k a[m, k] * w[n, k] + bias[n]` with `a` in f32 and `w`
//! stored as IEEE half, packed k1n16 ([`super::pack`]), then stored, activated or added (see
//! [`super::epilogue`]).
//!
//! Two kinds of microkernel: those that widen the weights to f32 in registers and accumulate
//! in f32 (bit-identical to [`F16Kernel::Scalar`]), and those that compute in half precision
//! (Cortex-A76 and later), bit-identical to [`F16Kernel::Fp16Scalar`], which emulates every
//! half rounding exactly.

use super::driver::{drive, Problem};
#[allow(unused_imports)] // used by the SIMD kernels of whichever architecture this is built for
use super::for_each_tile;
use super::pack::{k1n16_len, NR};
use super::{Columns, Epilogue, OutBlock};
use crate::Threads;

/// The signature every f16 microkernel shares: `out.rows` rows of `a` (row stride `lda`, `k`
/// values each) times `panels` consecutive k1n16 panels of `w` (`16 k` halves each), plus the
/// columns' bias, finished into `out`.
pub(crate) type Ukernel =
    fn(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, out: OutBlock<'_>);

/// Steps of k that the half-precision kernels accumulate before widening the chain into f32.
/// Bounding the half-precision chain to 16 terms is what keeps their error small (see
/// docs/quantization.md).
pub const FP16_BLOCK: usize = 16;

kernel_family! {
    /// The f16-weight microkernels, named `f16_gemm_{MR}x{NR}_{isa}`.
    pub enum F16Kernel: Ukernel {
        /// Portable Rust, f32 accumulation: the twin of the widening kernels.
        Scalar = f16_gemm_4x16_scalar { mr: 4, nr: 16 } where cfg(all()), cpu(true), tier(Scalar),
        /// Portable Rust, half-precision arithmetic emulated exactly: the twin of
        /// [`F16Kernel::NeonFp16`]. Slow; it exists to test that kernel and to measure its
        /// error on any machine.
        Fp16Scalar = f16_gemm_4x16_fp16_scalar { mr: 4, nr: 16 } where cfg(all()), cpu(true), tier(Scalar),
        /// x86_64 F16C + FMA: `vcvtph2ps` to two ymm per k.
        Avx2F16c = f16_gemm_6x16_avx2_f16c { mr: 6, nr: 16 }
            where cfg(target_arch = "x86_64"),
            cpu(is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")), tier(Base),
        /// x86_64 AVX-512F: `vcvtph2ps` to one zmm per panel and k, two panels per call.
        Avx512 = f16_gemm_8x32_avx512 { mr: 8, nr: 32 }
            where cfg(target_arch = "x86_64"), cpu(is_x86_feature_detected!("avx512f")), tier(Extended),
        /// aarch64 NEON (Cortex-A72 and later): `fcvtl`/`fcvtl2` widening, f32 `fmla` by element.
        Neon = f16_gemm_4x16_neon_fcvtl { mr: 4, nr: 16 } where cfg(target_arch = "aarch64"), cpu(true), tier(Base),
        /// aarch64 FP16 arithmetic (Cortex-A76 and later): activations rounded to half,
        /// half-precision `fmla` (8 lanes) in chains of [`FP16_BLOCK`] steps of k, each chain
        /// widened and added in f32. A tile whose half arithmetic overflows is computed again
        /// with f32 accumulation, so large activations cost speed, not correctness.
        NeonFp16 = f16_gemm_4x16_neon_fp16 { mr: 4, nr: 16 }
            where cfg(target_arch = "aarch64"), cpu(std::arch::is_aarch64_feature_detected!("fp16")), tier(Extended),
    }
}

impl F16Kernel {
    /// The fastest kernel this CPU can run within the `EDGEVIT_ISA` cap ([`crate::cpu`]):
    /// half-precision arithmetic where the CPU has it.
    pub fn best() -> F16Kernel {
        let v = Self::allowed();
        if v.contains(&F16Kernel::NeonFp16) {
            return F16Kernel::NeonFp16;
        }
        v.into_iter().rfind(|k| !k.half_arithmetic()).expect("the scalar kernel always runs")
    }

    /// Computes one block: `out.rows` rows of `a` (row stride `lda`, `k` values each) times
    /// `panels` consecutive k1n16 panels of `w`, plus the columns' bias, finished into `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_block(
        self,
        a: &[f32],
        lda: usize,
        k: usize,
        w: &[u16],
        panels: usize,
        cols: &Columns,
        out: OutBlock<'_>,
    ) {
        let ukernel =
            self.ukernel().unwrap_or_else(|| panic!("{} is not built for this CPU architecture", self.name()));
        assert!(self.supported(), "this CPU cannot run {}", self.name());
        ukernel(a, lda, k, w, panels, cols, out)
    }

    /// [`run_block`](Self::run_block) on activations already rounded to half (IEEE half bit
    /// patterns), one panel: for the half-precision kernels, which would otherwise round each
    /// activation row once per panel.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_block_halves(
        self,
        a: &[u16],
        lda: usize,
        k: usize,
        w: &[u16],
        cols: &Columns,
        out: OutBlock<'_>,
    ) {
        assert!(self.supported(), "this CPU cannot run {}", self.name());
        match self {
            F16Kernel::Fp16Scalar => f16_gemm_4x16_fp16_scalar::run_halves(a, lda, k, w, 1, cols, out),
            #[cfg(target_arch = "aarch64")]
            F16Kernel::NeonFp16 => f16_gemm_4x16_neon_fp16::run_halves(a, lda, k, w, 1, cols, out),
            other => panic!("{} takes f32 activations", other.name()),
        }
    }

    /// Whether the kernel multiplies and adds in half precision (else in f32).
    pub fn half_arithmetic(self) -> bool {
        matches!(self, F16Kernel::Fp16Scalar | F16Kernel::NeonFp16)
    }

    /// The scalar kernel this one matches bit for bit.
    pub fn twin(self) -> F16Kernel {
        if self.half_arithmetic() {
            F16Kernel::Fp16Scalar
        } else {
            F16Kernel::Scalar
        }
    }
}

/// An f16 `[n, k]` weight matrix packed k1n16 ([`super::pack::pack_k1n16_f16`]).
#[derive(Clone, Copy, Debug)]
pub struct PackedF16<'a> {
    /// The packed weights (IEEE half bit patterns).
    pub data: &'a [u16],
    /// Output channels.
    pub n: usize,
    /// Inputs per channel.
    pub k: usize,
}

impl PackedF16<'_> {
    /// Weight `[row, kk]` widened to f32.
    pub fn get(&self, row: usize, kk: usize) -> f32 {
        half::f16::from_bits(self.data[((row / NR) * self.k + kk) * NR + row % NR]).to_f32()
    }
}

/// `out` (`m x ldo`, row-major) receives the `m x w.n` product of `a` (`m x w.k`, row stride
/// `lda`) and `w`, plus `bias`, per `epilogue`. Threads split the weight panels.
#[allow(clippy::too_many_arguments)]
pub fn f16_gemm(
    kernel: F16Kernel,
    a: &[f32],
    lda: usize,
    m: usize,
    w: PackedF16<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (n, k) = (w.n, w.k);
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k), "f16_gemm: activations too short");
    assert!(w.data.len() >= k1n16_len(n, k), "f16_gemm: weights too short");
    let ukernel =
        kernel.ukernel().unwrap_or_else(|| panic!("{} is not built for this CPU architecture", kernel.name()));
    assert!(kernel.supported(), "this CPU cannot run {}", kernel.name());
    let (mr, nr) = kernel.tile();
    assert!(bias.is_none_or(|b| b.len() >= n), "f16_gemm: bias too short");
    let columns = |col0: usize, cols: usize, c: &mut Columns| c.set_float(bias.map(|b| &b[col0..]), cols);
    let micro = |p0: usize, panels: usize, cols: &Columns, m0: usize, out: OutBlock<'_>| {
        ukernel(&a[m0 * lda..], lda, k, &w.data[p0 * k * NR..(p0 + panels) * k * NR], panels, cols, out);
    };
    drive(Problem { m, n, k, mr, np: nr / NR, weight_size: 2 }, out, ldo, epilogue, threads, columns, micro);
}

/// [`f16_gemm`] for a half-precision kernel on activations already rounded to half (`a`: `m`
/// rows of `w.k` IEEE half bit patterns, packed): the model rounds each row once, in the pass
/// that produces it, where `f16_gemm` would round it again for every panel (a quarter of the
/// microkernel's instructions). The same results as `f16_gemm` on the unrounded rows, unless
/// a tile overflows half: the retry with f32 accumulation then reads the rounded activations.
#[allow(clippy::too_many_arguments)]
pub fn f16_gemm_halves(
    kernel: F16Kernel,
    a: &[u16],
    m: usize,
    w: PackedF16<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (n, k) = (w.n, w.k);
    assert!(kernel.half_arithmetic(), "f16_gemm_halves: {} takes f32 activations", kernel.name());
    assert!(a.len() >= m * k, "f16_gemm_halves: activations too short");
    assert!(w.data.len() >= k1n16_len(n, k), "f16_gemm_halves: weights too short");
    assert!(bias.is_none_or(|b| b.len() >= n), "f16_gemm_halves: bias too short");
    let (mr, nr) = kernel.tile();
    assert_eq!(nr, NR, "the half-precision kernels take one panel per call");
    let columns = |col0: usize, cols: usize, c: &mut Columns| c.set_float(bias.map(|b| &b[col0..]), cols);
    let micro = |p0: usize, _panels: usize, cols: &Columns, m0: usize, out: OutBlock<'_>| {
        kernel.run_block_halves(&a[m0 * k..], k, k, &w.data[p0 * k * NR..(p0 + 1) * k * NR], cols, out);
    };
    drive(Problem { m, n, k, mr, np: 1, weight_size: 2 }, out, ldo, epilogue, threads, columns, micro);
}

/// Rounds `src` to half into `dst` (see [`crate::rows::convert::to_halves`]); false if a
/// value overflows half (or is NaN), where [`f16_gemm`] on the f32 values stays correct.
pub fn round_row_to_halves(src: &[f32], dst: &mut [u16]) -> bool {
    crate::rows::convert::to_halves(src, dst);
    // Infinity and NaN have every exponent bit set. A fold, not `any`: without the early exit
    // the scan vectorises (with `any` it took 5% of an f16 inference on the Cortex-A76).
    !dst.iter().fold(false, |seen, &h| seen | (h & 0x7c00 == 0x7c00))
}

/// Checks one microkernel call's operands: a strip of `out.rows` rows of `a` and `panels`
/// (at most `max_panels`) panels of `w`.
#[allow(dead_code)] // used by the SIMD kernels of whichever architecture this is built for
fn check(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, max_panels: usize, out: &OutBlock<'_>) {
    assert!((1..=max_panels).contains(&panels) && out.cols <= panels * NR);
    assert!(a.len() >= (out.rows - 1) * lda + k && w.len() >= panels * k * NR, "f16 gemm: operands too short");
}

#[cfg(test)]
mod tests;
