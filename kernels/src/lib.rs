//! Numeric kernels for edgevit. No I/O and no knowledge of model files: every function takes
//! slices and shapes, checks them, and computes. Each optimised kernel has a plain scalar twin
//! here that serves as the oracle in its tests.

pub mod activation;
pub mod attention;
pub mod f16gemm;
pub mod i8gemm;
pub mod layernorm;
pub mod matmul;
pub mod softmax;
pub mod tile;

/// Sum in 16 independent lanes: a plain `iter().sum()` is a serial chain (float addition is
/// not reassociated), this vectorises.
#[inline(always)]
pub(crate) fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Maximum in 16 independent lanes (NaN-free inputs), vectorisable like [`sum_lanes`].
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

/// The instruction set the LayerNorm, softmax and GELU kernels use on this CPU.
pub fn rowwise_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "layernorm/softmax/gelu avx512";
        }
        if is_x86_feature_detected!("avx2") {
            return "layernorm/softmax/gelu avx2";
        }
    }
    #[cfg(target_arch = "aarch64")]
    return "layernorm/softmax/gelu neon";
    #[allow(unreachable_code)]
    "layernorm/softmax/gelu scalar"
}

/// How many threads a kernel may use. `1` keeps the work on the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Threads {
    pub fn get(self) -> usize {
        self.0.max(1)
    }
}

/// An output pointer shared by the tasks of one parallel kernel, each of which writes its own
/// disjoint part of the output (columns of a GEMM, blocks of attention).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: only the GEMM and attention kernels make one, from an output slice their caller has
// borrowed exclusively for the call, and their tasks write disjoint ranges of it.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not field access) so closures capture the whole Send + Sync wrapper.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
