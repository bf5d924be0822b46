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
use crate::{OutPtr, Threads};

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
/// Row length of the microkernels' int32 result tile: up to two panels.
pub const TILE_N: usize = 2 * NR;

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

/// Quantizes one activation row into `dst` (the rest zeroed) with a per-row scale and offset,
/// so that `x ~= scale * q + offset` and the row's whole [min, max] range uses all 255 levels
/// (GELU outputs and LayerNorm outputs are far from symmetric). Returns `(scale, offset)`.
/// The GEMM epilogue restores the offset exactly: `sum_k offset * w[n, k] = offset * sums[n]`.
///
/// With `biased`, each byte holds `q + 128` (as the bit pattern `q ^ 0x80`): the unsigned
/// operand that `vpdpbusd` multiplies, prepared here once instead of in the kernel's loop.
pub fn quantize_activation_row(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    assert!(dst.len() >= src.len(), "quantize_activation_row: destination too short");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512F/BW are present; the body is plain safe Rust compiled with them.
        return unsafe { quantize_activation_row_avx512(src, dst, biased) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; the body is plain safe Rust compiled with AVX2 enabled so
        // that the rounding and min/max loops become vector instructions.
        return unsafe { quantize_activation_row_avx2(src, dst, biased) };
    }
    quantize_activation_row_body(src, dst, biased)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn quantize_activation_row_avx512(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    use std::arch::x86_64::*;
    // The range pass with explicit 16-lane min/max: the portable version does not vectorise.
    let (mut lo, mut hi) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
    let chunks = src.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` holds exactly 16 floats.
        let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    let (mut l, mut h) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    for &v in rest {
        l = l.min(v);
        h = h.max(v);
    }
    quantize_with_range(src, dst, biased, l, h)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_activation_row_avx2(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    quantize_activation_row_body(src, dst, biased)
}

#[inline(always)]
fn quantize_activation_row_body(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    let (lo, hi) = min_max(src);
    quantize_with_range(src, dst, biased, lo, hi)
}

#[inline(always)]
fn quantize_with_range(src: &[f32], dst: &mut [i8], biased: bool, lo: f32, hi: f32) -> (f32, f32) {
    let flip = if biased { -128i8 } else { 0 };
    dst[src.len()..].fill(flip);
    let range = hi - lo;
    if range.is_nan() || range <= 0.0 || range.is_infinite() {
        // Constant (or empty) row: every value is the offset.
        dst[..src.len()].fill(flip);
        return (1.0, if lo.is_finite() { lo } else { 0.0 });
    }
    let offset = lo + (hi - lo) * 0.5;
    let scale = (hi - lo) / 254.0;
    let inv = 1.0 / scale;
    // Round half to even by adding 1.5 * 2^23 (the integer lands in the low mantissa bits),
    // which vectorises where a float-to-int conversion would not.
    const MAGIC: f32 = 12_582_912.0;
    for (d, &v) in dst.iter_mut().zip(src) {
        let t = ((v - offset) * inv).clamp(-127.0, 127.0) + MAGIC;
        *d = (t.to_bits().wrapping_sub(MAGIC.to_bits()) as u8 as i8) ^ flip;
    }
    (scale, offset)
}

/// Minimum and maximum of a slice, in 16 independent lanes so that it vectorises.
#[inline(always)]
fn min_max(src: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; 16];
    let mut hi = [f32::NEG_INFINITY; 16];
    let chunks = src.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        lo[i] = lo[i].min(v);
        hi[i] = hi[i].max(v);
    }
    (lo.iter().copied().fold(f32::INFINITY, f32::min), hi.iter().copied().fold(f32::NEG_INFINITY, f32::max))
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

/// Activations quantized per row: `rows x stride` int8 (stride = K padded to 4, zero-filled),
/// standing for `scales[r] * q + offsets[r]`; stored as `q + 128` when `biased` (see
/// [`I8Kernel::wants_biased`]).
#[derive(Clone, Copy, Debug)]
pub struct QuantRows<'a> {
    pub data: &'a [i8],
    pub rows: usize,
    pub stride: usize,
    pub scales: &'a [f32],
    pub offsets: &'a [f32],
    pub biased: bool,
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

/// What happens to `w_scale * (a_scale * acc + a_offset * w_sum) + bias` before it lands in
/// the output.
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
    /// aarch64 int8 matrix multiply (Armv8.6 i8mm): `smmla` on 2x8 blocks, 4 rows x 16
    /// channels, reading the same k4n16 panels (pairs of K groups are zipped in registers).
    NeonI8mm,
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
            I8Kernel::NeonI8mm => "i8_gemm_4x16c8_neoni8mm",
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
            if std::arch::is_aarch64_feature_detected!("i8mm") {
                v.push(I8Kernel::NeonI8mm);
            }
        }
        v
    }

    pub fn best() -> I8Kernel {
        *Self::available().last().expect("scalar is always available")
    }

    /// Whether the kernel reads activations stored as `q + 128` (the unsigned operand of
    /// `vpdpbusd`) rather than signed `q`.
    pub fn wants_biased(self) -> bool {
        matches!(self, I8Kernel::AvxVnni | I8Kernel::Avx512Vnni)
    }

    /// Panels (of 16 channels) per microkernel call.
    fn panels(self) -> usize {
        match self {
            I8Kernel::Avx512Vnni => 2,
            _ => 1,
        }
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
    /// `panels` consecutive 16-channel panels, into `acc[r * TILE_N + c]`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        self,
        a: &[i8],
        stride: usize,
        rows: usize,
        panel: &[i8],
        panels: usize,
        sums: &[i32; TILE_N],
        acc: &mut [i32; MR_MAX * TILE_N],
    ) {
        let groups = stride / KG;
        assert!(rows >= 1 && rows <= self.mr() && a.len() >= (rows - 1) * stride + stride);
        assert!(panels >= 1 && panels <= self.panels() && panel.len() >= panels * groups * NR * KG);
        match self {
            I8Kernel::Scalar => scalar::kernel(a, stride, rows, panel, acc),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx2 => x86::avx2(a, stride, rows, panel, acc),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::AvxVnni => x86::avxvnni(a, stride, rows, panel, sums, acc),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx512Vnni => x86::avx512vnni(a, stride, rows, panel, panels, sums, acc),
            #[cfg(target_arch = "aarch64")]
            I8Kernel::Neon => arm::neon(a, stride, rows, panel, acc),
            #[cfg(target_arch = "aarch64")]
            I8Kernel::NeonDot => arm::neondot(a, stride, rows, panel, acc),
            #[cfg(target_arch = "aarch64")]
            I8Kernel::NeonI8mm => arm::neoni8mm(a, stride, rows, panel, acc),
            #[allow(unreachable_patterns)]
            other => panic!("{} cannot run on this CPU architecture", other.name()),
        }
        let _ = sums;
    }
}

/// The epilogue for one row of a tile: dequantize, add the bias, then store, activate or add.
fn finish_row(
    acc: &[i32],
    ws: &[f32],
    ss: &[i32],
    a: (f32, f32),
    bias: Option<&[f32]>,
    dst: &mut [f32],
    epilogue: Epilogue,
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present; the body is safe Rust compiled with it.
        return unsafe { finish_row_avx512(acc, ws, ss, a, bias, dst, epilogue) };
    }
    finish_row_body(acc, ws, ss, a, bias, dst, epilogue)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn finish_row_avx512(
    acc: &[i32],
    ws: &[f32],
    ss: &[i32],
    a: (f32, f32),
    bias: Option<&[f32]>,
    dst: &mut [f32],
    epilogue: Epilogue,
) {
    finish_row_body(acc, ws, ss, a, bias, dst, epilogue)
}

#[inline(always)]
fn finish_row_body(
    acc: &[i32],
    ws: &[f32],
    ss: &[i32],
    (sa, za): (f32, f32),
    bias: Option<&[f32]>,
    dst: &mut [f32],
    epilogue: Epilogue,
) {
    let cols = dst.len();
    let mut v = [0f32; TILE_N];
    for (((v, &a), &w), &s) in v[..cols].iter_mut().zip(&acc[..cols]).zip(&ws[..cols]).zip(&ss[..cols]) {
        *v = w * (sa * a as f32 + za * s as f32);
    }
    apply_epilogue(&mut v[..cols], bias, dst, epilogue);
}

/// Adds the bias to one row of results `v`, then stores, activates or accumulates it into
/// `dst`: the epilogue every GEMM shares.
#[inline(always)]
pub(crate) fn apply_epilogue(v: &mut [f32], bias: Option<&[f32]>, dst: &mut [f32], epilogue: Epilogue) {
    if let Some(b) = bias {
        v.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
    match epilogue {
        Epilogue::Store => dst.copy_from_slice(v),
        Epilogue::Activate(act) => {
            act.apply_slice(v);
            dst.copy_from_slice(v);
        }
        Epilogue::Accumulate => dst.iter_mut().zip(v.iter()).for_each(|(d, v)| *d += v),
    }
}

/// `out` (`a.rows x ldo`, row-major) receives the `a.rows x w.n` result per `epilogue`.
#[allow(clippy::too_many_arguments)]
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
    assert_eq!(a.biased, kernel.wants_biased(), "i8_gemm: activations must be biased exactly when the kernel wants it");
    assert!(
        a.data.len() >= m * a.stride && a.scales.len() >= m && a.offsets.len() >= m,
        "i8_gemm: activations too short"
    );
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
        let mut acc = [0i32; MR_MAX * TILE_N];
        let (mr, np) = (kernel.mr(), kernel.panels());
        for p in range.clone().step_by(np) {
            let panels = np.min(range.end - p);
            let col0 = p * NR;
            let cols = (panels * NR).min(n - col0);
            let mut sums = [0i32; TILE_N];
            sums[..cols].copy_from_slice(&w.sums[col0..col0 + cols]);
            let panel = &w.data[p * panel_len..(p + panels) * panel_len];
            let (ws, ss) = (&w.scales[col0..col0 + cols], &w.sums[col0..col0 + cols]);
            let b = bias.map(|b| &b[col0..col0 + cols]);
            for m0 in (0..m).step_by(mr) {
                let rows = mr.min(m - m0);
                kernel.run(
                    &a.data[m0 * a.stride..(m0 + rows) * a.stride],
                    a.stride,
                    rows,
                    panel,
                    panels,
                    &sums,
                    &mut acc,
                );
                for r in 0..rows {
                    let row = m0 + r;
                    let start = row * ldo + col0;
                    assert!(start + cols <= out_len);
                    // SAFETY: in bounds (checked above); this task is the only writer of
                    // columns col0..col0+cols, and `out` is exclusively borrowed for the call.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), cols) };
                    let accs = &acc[r * TILE_N..r * TILE_N + cols];
                    finish_row(accs, ws, ss, (a.scales[row], a.offsets[row]), b, dst, epilogue);
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
        // Chunks hold whole microkernel tiles (kernel.panels() panels each).
        let np = kernel.panels();
        let chunk = panels.div_ceil(t * 2).div_ceil(np).max(1) * np;
        (0..panels.div_ceil(chunk)).into_par_iter().for_each(|i| run_panels(i * chunk..((i + 1) * chunk).min(panels)));
    }
}

/// Row pointers for a microkernel tile of `MR` rows; rows past `rows` repeat the last one
/// (computed, then ignored by the caller), so kernel bodies need no ragged-row branches.
#[allow(dead_code)] // used by the SIMD kernels of whichever architecture this is built for
fn row_ptrs<const MR: usize>(a: &[i8], stride: usize, rows: usize) -> [*const i8; MR] {
    std::array::from_fn(|r| a[r.min(rows - 1) * stride..].as_ptr())
}

/// The plain definition in f64 from dequantized values (`x` is `m x k`, `w` is `n x k`, both
/// row-major): the oracle for the kernels' tests.
pub fn linear_reference(x: &[f64], m: usize, k: usize, w: &[f64], n: usize, bias: Option<&[f32]>) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum();
            out[i * n + j] = dot + bias.map_or(0.0, |b| b[j] as f64);
        }
    }
    out
}

#[cfg(test)]
mod tests;
