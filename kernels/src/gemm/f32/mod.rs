//! f32 GEMM: `out[m, n] = sum_k a[m, k] * b[k, n] + bias[n]` on f32 register tiles, then
//! stored, activated or added (see [`super::epilogue`]).
//!
//! The microkernels read `b` as column groups of 16 at any row stride: k1n16-packed weight
//! panels (row stride 16, panels `16 k` apart) for the Linear layers, and attention's
//! transposed keys and values in place. Every variant accumulates with fused multiply-adds in
//! k order, like its scalar twin, so all give bit-identical results.

use super::driver::{drive, Problem};
#[allow(unused_imports)] // used by the SIMD kernels of whichever architecture this is built for
use super::for_each_tile;
use super::pack::{k1n16_len, NR};
use super::{Columns, Epilogue, OutBlock};
use crate::Threads;

/// The signature every f32 microkernel shares: `out.rows` rows of `a` (row stride `lda`, `k`
/// values each) times `panels` groups of 16 columns of `b`, group `j` at `b[j * panel_stride]`
/// with row stride `ldb`, plus the columns' bias, finished into `out`.
pub(crate) type Ukernel = fn(
    a: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    panel_stride: usize,
    panels: usize,
    cols: &Columns,
    out: OutBlock<'_>,
);

kernel_family! {
    /// The f32 microkernels, named `f32_gemm_{MR}x{NR}_{isa}`.
    pub enum F32Kernel: Ukernel {
        /// Portable Rust: the twin every SIMD kernel is tested against.
        Scalar = f32_gemm_4x16_scalar { mr: 4, nr: 16 } where cfg(all()), cpu(true), tier(Scalar),
        /// x86_64 AVX2 + FMA: 12 ymm accumulators.
        Avx2 = f32_gemm_6x16_avx2 { mr: 6, nr: 16 }
            where cfg(target_arch = "x86_64"),
            cpu(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")), tier(Base),
        /// x86_64 AVX-512F: 16 zmm accumulators, 16 FMAs per 10 loads (8 x 16 at a ragged edge).
        Avx512 = f32_gemm_8x32_avx512 { mr: 8, nr: 32 }
            where cfg(target_arch = "x86_64"), cpu(is_x86_feature_detected!("avx512f")), tier(Extended),
        /// aarch64 NEON: 16 q accumulators, `fmla` by element.
        Neon = f32_gemm_4x16_neon { mr: 4, nr: 16 } where cfg(target_arch = "aarch64"), cpu(true), tier(Base),
    }
}

/// The NEON tile body, which the A72 f16 kernel runs on weights it has widened to f32.
#[cfg(target_arch = "aarch64")]
pub(crate) use f32_gemm_4x16_neon::body_from as neon_body_from;
/// The AVX2 tile body, which the AVX2 f16 kernel runs on weights it has widened to f32.
#[cfg(target_arch = "x86_64")]
pub(crate) use f32_gemm_6x16_avx2::body as avx2_body;
/// The AVX-512 tile body, which the AVX-512 f16 kernel runs on weights it has widened to f32.
#[cfg(target_arch = "x86_64")]
pub(crate) use f32_gemm_8x32_avx512::body as avx512_body;

impl F32Kernel {
    /// The fastest variant this CPU can run within the `EDGEVIT_ISA` cap ([`crate::cpu`]).
    pub fn best() -> F32Kernel {
        *Self::allowed().last().expect("the scalar kernel always runs")
    }

    /// Computes one block: `out.rows x out.cols` of `a * b` (layout as [`Ukernel`]) plus the
    /// columns' bias, finished into `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_block(
        self,
        a: &[f32],
        lda: usize,
        k: usize,
        b: &[f32],
        ldb: usize,
        panel_stride: usize,
        panels: usize,
        cols: &Columns,
        out: OutBlock<'_>,
    ) {
        let ukernel =
            self.ukernel().unwrap_or_else(|| panic!("{} is not built for this CPU architecture", self.name()));
        assert!(self.supported(), "this CPU cannot run {}", self.name());
        ukernel(a, lda, k, b, ldb, panel_stride, panels, cols, out)
    }
}

/// An f32 `[n, k]` weight matrix packed k1n16 ([`super::pack::pack_k1n16_f32`]).
#[derive(Clone, Copy, Debug)]
pub struct PackedF32<'a> {
    /// The packed weights.
    pub data: &'a [f32],
    /// Output channels.
    pub n: usize,
    /// Inputs per channel.
    pub k: usize,
}

/// `out` (`m x ldo`, row-major) receives the `m x w.n` product of `a` (`m x w.k`, row stride
/// `lda`) and `w`, plus `bias`, per `epilogue`. Threads split the weight panels.
#[allow(clippy::too_many_arguments)]
pub fn f32_gemm(
    kernel: F32Kernel,
    a: &[f32],
    lda: usize,
    m: usize,
    w: PackedF32<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (n, k) = (w.n, w.k);
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k), "f32_gemm: activations too short");
    assert!(w.data.len() >= k1n16_len(n, k), "f32_gemm: weights too short");
    let (mr, nr) = kernel.tile();
    assert!(bias.is_none_or(|b| b.len() >= n), "f32_gemm: bias too short");
    let columns = |col0: usize, cols: usize, c: &mut Columns| c.set_float(bias.map(|b| &b[col0..]), cols);
    let micro = |p0: usize, panels: usize, cols: &Columns, m0: usize, out: OutBlock<'_>| {
        let b = &w.data[p0 * k * NR..(p0 + panels) * k * NR];
        kernel.run_block(&a[m0 * lda..], lda, k, b, NR, k * NR, panels, cols, out);
    };
    drive(Problem { m, n, k, mr, np: nr / NR, weight_size: 4 }, out, ldo, epilogue, threads, columns, micro);
}

/// Checks one SIMD microkernel call's operands: a strip of `out.rows` rows of `a`, and
/// `panels` (at most `max_panels`) whole 16-column groups of `b`.
#[allow(clippy::too_many_arguments, dead_code)]
fn check(
    a: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    panel_stride: usize,
    panels: usize,
    max_panels: usize,
    out: &OutBlock<'_>,
) {
    assert!((1..=max_panels).contains(&panels) && out.cols <= panels * NR);
    assert!(k == 0 || a.len() >= (out.rows - 1) * lda + k, "f32 gemm: rows of a too short");
    assert!(k == 0 || b.len() >= (panels - 1) * panel_stride + (k - 1) * ldb + NR, "f32 gemm: b too short");
}

#[cfg(test)]
mod tests;
