//! int8 GEMM: `out[m, n] = (sum_k a[m, k] * w[n, k]) * a_scale[m] * w_scale[n] + bias[n]`,
//! with the result stored, passed through an activation, or added to `out` (residual).
//!
//! Weights are quantized per output channel and packed once, by the tools, in one layout that
//! every kernel reads ("k4n16"): column panels of 16 output channels; within a panel, K in
//! groups of 4; each group is 64 bytes, 4 consecutive k values for each of the 16 channels.
//! That is the operand shape of `sdot` (aarch64) and `vpdpbusd` (x86) alike. N is padded to a
//! multiple of 16 and K to a multiple of 4, with zeros.
//!
//! Activations are quantized per row (token) to [-127, 127] at run time; both operands avoid
//! -128, which keeps the 16-bit intermediate sums of the NEON and AVX2 kernels exact.

use crate::activation::Activation;
use crate::Threads;

#[cfg(target_arch = "aarch64")]
mod arm;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Output channels per packed panel.
pub const NR: usize = 16;
/// K values per group.
pub const KG: usize = 4;
/// The most rows any microkernel computes at once.
pub const MR_MAX: usize = 8;

pub fn padded_k(k: usize) -> usize {
    k.div_ceil(KG) * KG
}

/// Bytes of a packed `n x k` weight matrix.
pub fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * NR * padded_k(k)
}

/// Quantizes a row-major `[n, k]` f32 matrix symmetrically per row (output channel):
/// `scale = max|w| / 127`, `q = round(w / scale)`. An all-zero row gets scale 1.
pub fn quantize_per_row(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(w.len(), n * k);
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    for ((src, dst), s) in w.chunks_exact(k.max(1)).zip(q.chunks_exact_mut(k.max(1))).zip(&mut scales) {
        *s = quantize_row(src, dst);
    }
    (q, scales)
}

/// Quantizes one row into `dst` (which may be longer: the rest is zeroed) and returns its
/// scale. Values map to [-127, 127]; an all-zero (or empty) row gets scale 1.
pub fn quantize_row(src: &[f32], dst: &mut [i8]) -> f32 {
    let absmax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if absmax > 0.0 && absmax.is_finite() { absmax / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    dst[src.len()..].fill(0);
    scale
}

/// Packs a row-major `[n, k]` int8 matrix into the k4n16 layout.
pub fn pack_k4n16(q: &[i8], n: usize, k: usize) -> Vec<i8> {
    assert_eq!(q.len(), n * k);
    let groups = padded_k(k) / KG;
    let mut out = vec![0i8; packed_len(n, k)];
    for col in 0..n {
        let (panel, c) = (col / NR, col % NR);
        for kk in 0..k {
            let (g, j) = (kk / KG, kk % KG);
            out[(panel * groups + g) * NR * KG + c * KG + j] = q[col * k + kk];
        }
    }
    out
}

/// Per-channel sums of the quantized weights, which the kernels that treat activations as
/// unsigned (`a + 128`) subtract again: `sum((a + 128) w) - 128 sum(w) = sum(a w)`, exactly.
pub fn channel_sums(q: &[i8], n: usize, k: usize) -> Vec<i32> {
    q.chunks_exact(k.max(1)).take(n).map(|row| row.iter().map(|&v| v as i32).sum()).collect()
}

/// Activations quantized per row: `rows x stride` int8 (stride = K padded to 4, zero-filled).
#[derive(Clone, Copy, Debug)]
pub struct QuantRows<'a> {
    pub data: &'a [i8],
    pub rows: usize,
    pub stride: usize,
    pub scales: &'a [f32],
}

/// A packed weight matrix with its per-channel scales and sums.
#[derive(Clone, Copy, Debug)]
pub struct PackedWeights<'a> {
    pub data: &'a [i8],
    pub n: usize,
    pub k: usize,
    pub scales: &'a [f32],
    pub sums: &'a [i32],
}

/// What happens to `acc * scales + bias` before it lands in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    Store,
    Activate(Activation),
    /// `out += value`: the residual connection.
    Accumulate,
}

/// The int8 microkernels, named by tile and instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8Kernel {
    Scalar,
    /// x86_64 AVX2: `vpsignb`/`vpmaddubsw`/`vpmaddwd`, 4 rows x 16 channels.
    Avx2,
    /// x86_64 AVX-VNNI: 256-bit `vpdpbusd`, 4 rows x 16 channels.
    AvxVnni,
    /// x86_64 AVX-512 VNNI: 512-bit `vpdpbusd`, 8 rows x 16 channels.
    Avx512Vnni,
    /// aarch64 baseline NEON (Cortex-A72): `smull`/`smlal`/`sadalp`, 2 rows x 16 channels.
    Neon,
    /// aarch64 dot product (Cortex-A76): `sdot`, 4 rows x 16 channels.
    NeonDot,
}

impl I8Kernel {
    pub fn name(self) -> &'static str {
        match self {
            I8Kernel::Scalar => "i8_gemm_4x16_scalar",
            I8Kernel::Avx2 => "i8_gemm_4x16c4_avx2",
            I8Kernel::AvxVnni => "i8_gemm_4x16c4_avxvnni",
            I8Kernel::Avx512Vnni => "i8_gemm_8x16c4_avx512vnni",
            I8Kernel::Neon => "i8_gemm_2x16c4_neon",
            I8Kernel::NeonDot => "i8_gemm_4x16c4_neondot",
        }
    }

    /// Every kernel this CPU can run, best last.
    pub fn available() -> Vec<I8Kernel> {
        let mut v = vec![I8Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                v.push(I8Kernel::Avx2);
                if is_x86_feature_detected!("avxvnni") {
                    v.push(I8Kernel::AvxVnni);
                }
            }
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                v.push(I8Kernel::Avx512Vnni);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                v.push(I8Kernel::Neon);
            }
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                v.push(I8Kernel::NeonDot);
            }
        }
        v
    }

    pub fn best() -> I8Kernel {
        *Self::available().last().expect("scalar is always available")
    }

    /// Rows per microkernel call.
    fn mr(self) -> usize {
        match self {
            I8Kernel::Avx512Vnni => 8,
            I8Kernel::Neon => 2,
            _ => 4,
        }
    }

    /// Runs the microkernel: exact int32 dot products of `rows` (<= mr) activation rows with
    /// one 16-channel panel, into `acc[r * NR + c]`.
    fn run(self, a: &[i8], stride: usize, rows: usize, panel: &[i8], sums: &[i32; NR], acc: &mut [i32; MR_MAX * NR]) {
        let groups = stride / KG;
        assert!(rows >= 1 && rows <= self.mr() && a.len() >= (rows - 1) * stride + stride);
        assert!(panel.len() >= groups * NR * KG);
        match self {
            I8Kernel::Scalar => scalar::kernel(a, stride, rows, panel, acc),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx2 => x86::avx2(a, stride, rows, panel, acc),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::AvxVnni => x86::avxvnni(a, stride, rows, panel, sums, acc),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx512Vnni => x86::avx512vnni(a, stride, rows, panel, sums, acc),
            #[cfg(target_arch = "aarch64")]
            I8Kernel::Neon => arm::neon(a, stride, rows, panel, acc),
            #[cfg(target_arch = "aarch64")]
            I8Kernel::NeonDot => arm::neondot(a, stride, rows, panel, acc),
            #[allow(unreachable_patterns)]
            other => panic!("{} cannot run on this CPU architecture", other.name()),
        }
        let _ = sums;
    }
}

/// A pointer that may be shared between the threads of one GEMM, each writing its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: OutPtr is only used inside `i8_gemm`, whose tasks write disjoint column ranges of
// the output while the exclusive borrow of `out` is held by the caller.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not field access) so closures capture the whole Send + Sync wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out` (`a.rows x ldo`, row-major) receives the `a.rows x w.n` result per `epilogue`.
pub fn i8_gemm(
    kernel: I8Kernel,
    a: QuantRows<'_>,
    w: PackedWeights<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (m, n) = (a.rows, w.n);
    assert_eq!(a.stride, padded_k(w.k), "i8_gemm: activation stride must be K padded to 4");
    assert!(a.data.len() >= m * a.stride && a.scales.len() >= m, "i8_gemm: activations too short");
    assert!(
        w.data.len() >= packed_len(n, w.k) && w.scales.len() >= n && w.sums.len() >= n,
        "i8_gemm: weights too short"
    );
    assert!(bias.is_none_or(|b| b.len() >= n), "i8_gemm: bias too short");
    assert!(ldo >= n && (m == 0 || out.len() >= (m - 1) * ldo + n), "i8_gemm: output too small");
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let panel_len = a.stride * NR;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let out_len = out.len();
    let run_panels = |range: std::ops::Range<usize>| {
        let mut acc = [0i32; MR_MAX * NR];
        let mr = kernel.mr();
        for p in range {
            let col0 = p * NR;
            let cols = NR.min(n - col0);
            let mut sums = [0i32; NR];
            sums[..cols].copy_from_slice(&w.sums[col0..col0 + cols]);
            let panel = &w.data[p * panel_len..(p + 1) * panel_len];
            for m0 in (0..m).step_by(mr) {
                let rows = mr.min(m - m0);
                kernel.run(&a.data[m0 * a.stride..(m0 + rows) * a.stride], a.stride, rows, panel, &sums, &mut acc);
                for r in 0..rows {
                    let row = m0 + r;
                    let start = row * ldo + col0;
                    assert!(start + cols <= out_len);
                    // SAFETY: in bounds (checked above); this task is the only writer of
                    // columns col0..col0+cols, and `out` is exclusively borrowed for the call.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), cols) };
                    let sa = a.scales[row];
                    for c in 0..cols {
                        let mut v = acc[r * NR + c] as f32 * (sa * w.scales[col0 + c]);
                        if let Some(b) = bias {
                            v += b[col0 + c];
                        }
                        match epilogue {
                            Epilogue::Store => dst[c] = v,
                            Epilogue::Activate(act) => dst[c] = act.apply(v),
                            Epilogue::Accumulate => dst[c] += v,
                        }
                    }
                }
            }
        }
    };
    let t = threads.get();
    if t <= 1 || (m * n * w.k) < (1 << 18) {
        run_panels(0..panels);
    } else {
        use rayon::prelude::*;
        // A few tasks per thread balances ragged panel counts.
        let chunk = panels.div_ceil(t * 2).max(1);
        (0..panels.div_ceil(chunk)).into_par_iter().for_each(|i| run_panels(i * chunk..((i + 1) * chunk).min(panels)));
    }
}

/// The plain definition, straight from unpacked weights: the oracle for the kernels' tests.
pub fn i8_gemm_reference(
    a: &[i8],
    a_scales: &[f32],
    m: usize,
    k: usize,
    q: &[i8],
    w_scales: &[f32],
    n: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: i64 = (0..k).map(|kk| a[i * k + kk] as i64 * q[j * k + kk] as i64).sum();
            out[i * n + j] = acc as f32 * (a_scales[i] * w_scales[j]) + bias.map_or(0.0, |b| b[j]);
        }
    }
    out
}

#[cfg(test)]
mod tests;
