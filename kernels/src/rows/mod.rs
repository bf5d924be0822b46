//! Row kernels: the element-wise and per-row work around the GEMMs. One file per operation,
//! each holding its scalar twin (`*_scalar`) beside the NEON (`*_neon`), AVX2 (`*_avx2`) and
//! AVX-512 (`*_avx512`) versions, which perform the same operations in the same order and so
//! agree with the twin bit for bit:
//!
//! - [`layernorm`]: LayerNorm of a row (two-pass mean and variance);
//! - [`softmax`]: `softmax(row * scale)`, attention's normalisation;
//! - [`activation`]: GELU (exact-erf form, through a rational erf and a Newton reciprocal: no
//!   division) and the other activations; the shared `exp`;
//! - [`quantize`]: int8 quantization of activation rows with a per-row scale and offset;
//! - [`convert`]: f32 to half, for the half-precision kernels.
//!
//! The SIMD versions keep several vectors in flight and use fused multiply-adds; the twins
//! use `mul_add` at the same places.

pub mod activation;
pub mod convert;
pub mod layernorm;
pub mod quantize;
pub mod softmax;

/// `dst[from..].fill(v)`, without calling `memset` where nothing is left to fill: a row
/// whose length is already padded (every row of ViT's) would otherwise cost a call of zero
/// bytes, tens of thousands of them an inference (about 1% of ViT-Ti int8's Cortex-A76
/// cycles).
#[inline(always)]
pub(crate) fn fill_from<T: Copy>(dst: &mut [T], from: usize, v: T) {
    if from != dst.len() {
        dst[from..].fill(v);
    }
}

/// The instruction set the row kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowIsa {
    /// Portable Rust: the twins.
    Scalar,
    /// x86_64 AVX2 + FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl RowIsa {
    /// The best instruction set this CPU has for the row kernels, within the `EDGEVIT_ISA`
    /// cap ([`crate::cpu`]).
    pub fn best() -> RowIsa {
        // Puts the cap in force for the dispatchers' `allowed()`.
        let _ = crate::cpu::cap();
        [RowIsa::Avx512, RowIsa::Avx2, RowIsa::Neon].into_iter().find(|i| i.allowed()).unwrap_or(RowIsa::Scalar)
    }

    /// Whether this CPU has the instruction set and the `EDGEVIT_ISA` cap allows it: what the
    /// row kernels' dispatch asks.
    #[inline]
    pub fn allowed(self) -> bool {
        self.supported() && crate::cpu::allows(self.tier())
    }

    /// How far up the instruction sets it reaches.
    pub fn tier(self) -> crate::cpu::Tier {
        match self {
            RowIsa::Scalar => crate::cpu::Tier::Scalar,
            RowIsa::Avx2 | RowIsa::Neon => crate::cpu::Tier::Base,
            RowIsa::Avx512 => crate::cpu::Tier::Extended,
        }
    }

    /// Every instruction set this CPU can run the row kernels on, scalar first.
    pub fn available() -> Vec<RowIsa> {
        [RowIsa::Scalar, RowIsa::Avx2, RowIsa::Avx512, RowIsa::Neon].into_iter().filter(|i| i.supported()).collect()
    }

    /// Whether this build and CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            RowIsa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            RowIsa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            RowIsa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            RowIsa::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The suffix of the row kernels' function names for this instruction set.
    pub fn suffix(self) -> &'static str {
        match self {
            RowIsa::Scalar => "scalar",
            RowIsa::Avx2 => "avx2",
            RowIsa::Avx512 => "avx512",
            RowIsa::Neon => "neon",
        }
    }

    /// The names of the row kernels on this instruction set, as their functions are called.
    pub fn kernel_names(self) -> [String; 4] {
        ["layernorm", "softmax", "gelu", "quantize_row"].map(|k| format!("{k}_{}", self.suffix()))
    }
}

/// The sum order every row kernel shares: element i into lane i % 16 over the whole chunks
/// of 16, then (this function) the 16 lanes added in order, then the tail in order. A plain
/// `iter().sum()` is a serial chain (float addition is not reassociated); lanes vectorise, and
/// the SIMD kernels keep exactly these lanes: one zmm, two ymm or four q registers.
#[inline(always)]
pub(crate) fn finish_lanes(lanes: [f32; 16], tail: &[f32]) -> f32 {
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// The maximum of a NaN-free slice, in 16 independent lanes so that it vectorises.
#[inline(always)]
pub(crate) fn max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..16 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().copied().fold(rest, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::runs_here;

    #[test]
    fn expected_row_kernels_run() {
        for isa in [RowIsa::Scalar, RowIsa::Avx2, RowIsa::Avx512, RowIsa::Neon] {
            for name in isa.kernel_names() {
                runs_here(&name, isa.supported());
            }
        }
        assert_eq!(Some(&RowIsa::best()), RowIsa::available().last());
    }
}
