//! bf16 GEMM for attention on x86-64 CPUs with AVX512-BF16 (Zen 4, Zen 5, Cooper Lake and later
//! Xeons): `out[m, n] = sum_k a[m, k] * b[k, n]` on bf16 operands with f32 sums, at twice the
//! f32 kernels' multiply rate. It runs int8 models' attention scores `q k^T` (see
//! [`crate::attention`]); the Linear layers never use it.
//!
//! Operands come in pairs along k, as `vdpbf16ps` reads them: `a` rows of `2 * pairs` bf16
//! values (zero-padded to an even k), `b` as k2n16 panels ([`k2n16_index`]). Per output and
//! pair, the odd product is added first and then the even one, each a fused multiply-add, with
//! denormal inputs read as zero and denormal results flushed (the Intel SDM's pseudo-code, which
//! `cargo bench --bench bf16_semantics` checks this CPU against): [`dot_pair`] is that step, and
//! the scalar twin and the SIMD kernel give the same bits.

#[allow(unused_imports)] // used by the SIMD kernels of whichever architecture this is built for
use super::for_each_tile;
use super::pack::NR;
use super::{Columns, OutBlock};

/// The signature every bf16 microkernel shares: `out.rows` rows of `a` (row stride `lda`
/// values, `2 * pairs` each) times `panels` k2n16 panels of `b` (`pairs * 32` values each,
/// `panel_stride` apart), stored into `out` (the tile's columns past `out.cols` are computed,
/// not stored).
pub(crate) type Ukernel =
    fn(a: &[u16], lda: usize, pairs: usize, b: &[u16], panel_stride: usize, panels: usize, out: OutBlock<'_>);

kernel_family! {
    /// The bf16 microkernels, named `bf16_gemm_{MR}x{NR}c2_{isa}`.
    pub enum Bf16Kernel: Ukernel {
        /// Portable Rust: the twin every SIMD kernel is tested against.
        Scalar = bf16_gemm_4x16c2_scalar { mr: 4, nr: 16 } where cfg(all()), cpu(true), tier(Scalar),
        /// x86_64 AVX512-BF16: 16 zmm accumulators, 16 `vdpbf16ps` per 10 loads.
        Avx512Bf16 = bf16_gemm_8x32c2_avx512bf16 { mr: 8, nr: 32 }
            where cfg(target_arch = "x86_64"),
            cpu(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")), tier(Extended),
    }
}

impl Bf16Kernel {
    /// The fastest variant this CPU can run within the `EDGEVIT_ISA` cap ([`crate::cpu`]).
    pub fn best() -> Bf16Kernel {
        *Self::allowed().last().expect("the scalar kernel always runs")
    }

    /// Computes one block: `out.rows x out.cols` of `a * b` (layout as [`Ukernel`]), stored
    /// into `out` as its epilogue says.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_block(
        self,
        a: &[u16],
        lda: usize,
        pairs: usize,
        b: &[u16],
        panel_stride: usize,
        panels: usize,
        out: OutBlock<'_>,
    ) {
        let ukernel =
            self.ukernel().unwrap_or_else(|| panic!("{} is not built for this CPU architecture", self.name()));
        assert!(self.supported(), "this CPU cannot run {}", self.name());
        ukernel(a, lda, pairs, b, panel_stride, panels, out)
    }
}

/// Where value `(k, n)` of a k2n16-packed `b` sits: panel `n / 16`, then pair `k / 2`, then
/// column `n % 16`'s two values of that pair.
pub fn k2n16_index(k: usize, n: usize, panel_stride: usize) -> usize {
    (n / NR) * panel_stride + (k / 2) * 2 * NR + (n % NR) * 2 + k % 2
}

/// The value a bf16 bit pattern stands for.
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// Denormal to signed zero: `vdpbf16ps`'s DAZ on its inputs and FTZ on its results.
fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// One `vdpbf16ps` lane: `acc + a[1] b[1] + a[0] b[0]`, the odd product first, each step a
/// fused multiply-add with denormals flushed.
#[inline]
pub fn dot_pair(acc: f32, a: [u16; 2], b: [u16; 2]) -> f32 {
    let step = |acc: f32, i: usize| flush(flush(bf16_to_f32(a[i])).mul_add(flush(bf16_to_f32(b[i])), flush(acc)));
    step(step(acc, 1), 0)
}

/// Checks one SIMD microkernel call's operands: a strip of `out.rows` rows of `a`, and
/// `panels` (at most `max_panels`) whole k2n16 panels of `b`.
#[allow(clippy::too_many_arguments, dead_code)]
fn check(
    a: &[u16],
    lda: usize,
    pairs: usize,
    b: &[u16],
    panel_stride: usize,
    panels: usize,
    max_panels: usize,
    out: &OutBlock<'_>,
) {
    assert!((1..=max_panels).contains(&panels) && out.cols <= panels * NR);
    assert!(lda >= 2 * pairs, "bf16 gemm: rows of a shorter than 2 * pairs");
    assert!(pairs == 0 || a.len() >= (out.rows - 1) * lda + 2 * pairs, "bf16 gemm: rows of a too short");
    assert!(pairs == 0 || b.len() >= (panels - 1) * panel_stride + pairs * 2 * NR, "bf16 gemm: b too short");
}

/// The columns' factors of a bf16 product: none (no bias).
const PLAIN: &Columns = &Columns::PLAIN;

#[cfg(test)]
mod tests;
