//! LayerNorm over the last dimension, in f32 with a two-pass (mean, then variance) formula so
//! that large activations keep their precision: `y = ((x - mean) / sqrt(var + eps)) * gamma +
//! beta`, the last step one fused multiply-add.
//!
//! [`layernorm_scalar`] is the twin: its sums run in 16 lanes (element i into lane i % 16,
//! the lanes then added in order, then the tail; the squares accumulate by fused
//! multiply-add), and the AVX-512 (one zmm), AVX2 (two ymm) and NEON (four q) kernels keep
//! exactly those lanes and that order, so all agree bit for bit.

use super::finish_lanes;

/// Normalises each row of `input` (`rows x gamma.len()`) into `out`.
pub fn layernorm(input: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    assert!(d > 0 && beta.len() == d, "layernorm: gamma/beta length mismatch");
    assert!(input.len() == out.len() && input.len().is_multiple_of(d), "layernorm: ragged rows");
    for (x, y) in input.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        layernorm_row(x, y, gamma, beta, eps);
    }
}

/// One row of [`layernorm`] on the best kernel this CPU has.
pub fn layernorm_row(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    check(x, y, gamma, beta);
    #[cfg(target_arch = "x86_64")]
    {
        if super::RowIsa::Avx512.allowed() {
            return layernorm_avx512(x, y, gamma, beta, eps);
        }
        if super::RowIsa::Avx2.allowed() {
            return layernorm_avx2(x, y, gamma, beta, eps);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return layernorm_neon(x, y, gamma, beta, eps);
    }
    layernorm_scalar(x, y, gamma, beta, eps)
}

fn check(x: &[f32], y: &[f32], gamma: &[f32], beta: &[f32]) {
    assert!(y.len() == x.len() && gamma.len() == x.len() && beta.len() == x.len(), "layernorm_row: lengths differ");
}

/// The scalar twin of the row kernels.
pub fn layernorm_scalar(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    check(x, y, gamma, beta);
    let n = x.len() as f32;
    let whole = x.len() / 16 * 16;
    let mut lanes = [0f32; 16];
    for c in x[..whole].chunks_exact(16) {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    let mean = finish_lanes(lanes, &x[whole..]) / n;
    let mut lanes = [0f32; 16];
    for c in x[..whole].chunks_exact(16) {
        for i in 0..16 {
            let d = c[i] - mean;
            lanes[i] = d.mul_add(d, lanes[i]);
        }
    }
    let var = (finish_lanes(lanes, &[]) + tail_squares(&x[whole..], mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    normalize_tail(x, y, gamma, beta, mean, inv, 0);
}

/// The sum of squared deviations of a row's tail, in order.
fn tail_squares(tail: &[f32], mean: f32) -> f32 {
    tail.iter().map(|v| (v - mean) * (v - mean)).sum()
}

/// `y[i] = ((x[i] - mean) * inv) * gamma[i] + beta[i]` for `i >= from`.
fn normalize_tail(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], mean: f32, inv: f32, from: usize) {
    for i in from..x.len() {
        y[i] = ((x[i] - mean) * inv).mul_add(gamma[i], beta[i]);
    }
}

#[cfg(target_arch = "aarch64")]
pub use neon::layernorm_neon;

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use std::arch::aarch64::*;

    /// Sixteen lanes as four q registers.
    pub fn layernorm_neon(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        check(x, y, gamma, beta);
        let (len, whole) = (x.len(), x.len() / 16 * 16);
        let (xp, yp, gp, bp) = (x.as_ptr(), y.as_mut_ptr(), gamma.as_ptr(), beta.as_ptr());
        let lanes = |acc: [float32x4_t; 4]| {
            let mut l = [0f32; 16];
            // SAFETY: l holds 16 floats.
            acc.iter().enumerate().for_each(|(j, v)| unsafe { vst1q_f32(l.as_mut_ptr().add(4 * j), *v) });
            l
        };
        // SAFETY (every load and store below): NEON is baseline on aarch64; all four slices
        // have `len` elements (checked), and each index i + 4 j + 4 <= whole, or i + 4 <= len.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); 4];
            for i in (0..whole).step_by(16) {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = vaddq_f32(*a, vld1q_f32(xp.add(i + 4 * j)));
                }
            }
            let mean = finish_lanes(lanes(acc), &x[whole..]) / len as f32;
            let m = vdupq_n_f32(mean);
            let mut acc = [vdupq_n_f32(0.0); 4];
            for i in (0..whole).step_by(16) {
                for (j, a) in acc.iter_mut().enumerate() {
                    let d = vsubq_f32(vld1q_f32(xp.add(i + 4 * j)), m);
                    *a = vfmaq_f32(*a, d, d);
                }
            }
            let var = (finish_lanes(lanes(acc), &[]) + tail_squares(&x[whole..], mean)) / len as f32;
            let inv = 1.0 / (var + eps).sqrt();
            let normalize = |i: usize| {
                let d = vmulq_n_f32(vsubq_f32(vld1q_f32(xp.add(i)), m), inv);
                vst1q_f32(yp.add(i), vfmaq_f32(vld1q_f32(bp.add(i)), d, vld1q_f32(gp.add(i))));
            };
            // Four vectors a step: four independent chains in flight (one a step left the
            // Cortex-A76's vector pipes waiting on each chain's latency).
            for i in (0..whole).step_by(16) {
                (0..4).for_each(|j| normalize(i + 4 * j));
            }
            for i in (whole..len / 4 * 4).step_by(4) {
                normalize(i);
            }
            normalize_tail(x, y, gamma, beta, mean, inv, len / 4 * 4);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{layernorm_avx2, layernorm_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Sixteen lanes as one zmm.
    pub fn layernorm_avx512(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        check(x, y, gamma, beta);
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present and the slices have one length (checked above).
        unsafe { avx512_body(x, y, gamma, beta, eps) }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let (len, whole) = (x.len(), x.len() / 16 * 16);
        let (xp, yp, gp, bp) = (x.as_ptr(), y.as_mut_ptr(), gamma.as_ptr(), beta.as_ptr());
        let lanes = |v: __m512| {
            let mut l = [0f32; 16];
            // SAFETY: l holds 16 floats.
            unsafe { _mm512_storeu_ps(l.as_mut_ptr(), v) };
            l
        };
        // SAFETY (every load and store below): each index i + 16 <= whole <= len, for all four
        // slices.
        let (mean, inv) = unsafe {
            let mut acc = _mm512_setzero_ps();
            for i in (0..whole).step_by(16) {
                acc = _mm512_add_ps(acc, _mm512_loadu_ps(xp.add(i)));
            }
            let mean = finish_lanes(lanes(acc), &x[whole..]) / len as f32;
            let m = _mm512_set1_ps(mean);
            let mut acc = _mm512_setzero_ps();
            for i in (0..whole).step_by(16) {
                let d = _mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), m);
                acc = _mm512_fmadd_ps(d, d, acc);
            }
            let var = (finish_lanes(lanes(acc), &[]) + tail_squares(&x[whole..], mean)) / len as f32;
            let inv = 1.0 / (var + eps).sqrt();
            let iv = _mm512_set1_ps(inv);
            for i in (0..whole).step_by(16) {
                let d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), m), iv);
                _mm512_storeu_ps(yp.add(i), _mm512_fmadd_ps(d, _mm512_loadu_ps(gp.add(i)), _mm512_loadu_ps(bp.add(i))));
            }
            (mean, inv)
        };
        normalize_tail(x, y, gamma, beta, mean, inv, whole);
    }

    /// Sixteen lanes as two ymm: lanes 0..8 and 8..16 of each chunk.
    pub fn layernorm_avx2(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        check(x, y, gamma, beta);
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present and the slices have one length (checked above).
        unsafe { avx2_body(x, y, gamma, beta, eps) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let (len, whole) = (x.len(), x.len() / 16 * 16);
        let (xp, yp, gp, bp) = (x.as_ptr(), y.as_mut_ptr(), gamma.as_ptr(), beta.as_ptr());
        let lanes = |lo: __m256, hi: __m256| {
            let mut l = [0f32; 16];
            // SAFETY: l holds 16 floats.
            unsafe {
                _mm256_storeu_ps(l.as_mut_ptr(), lo);
                _mm256_storeu_ps(l.as_mut_ptr().add(8), hi);
            }
            l
        };
        // SAFETY (every load and store below): each index i + 16 <= whole <= len, or i + 8 <=
        // len, for all four slices.
        unsafe {
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for i in (0..whole).step_by(16) {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(xp.add(i)));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(xp.add(i + 8)));
            }
            let mean = finish_lanes(lanes(lo, hi), &x[whole..]) / len as f32;
            let m = _mm256_set1_ps(mean);
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for i in (0..whole).step_by(16) {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), m);
                let d1 = _mm256_sub_ps(_mm256_loadu_ps(xp.add(i + 8)), m);
                lo = _mm256_fmadd_ps(d0, d0, lo);
                hi = _mm256_fmadd_ps(d1, d1, hi);
            }
            let var = (finish_lanes(lanes(lo, hi), &[]) + tail_squares(&x[whole..], mean)) / len as f32;
            let inv = 1.0 / (var + eps).sqrt();
            let iv = _mm256_set1_ps(inv);
            for i in (0..len / 8 * 8).step_by(8) {
                let d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), m), iv);
                _mm256_storeu_ps(yp.add(i), _mm256_fmadd_ps(d, _mm256_loadu_ps(gp.add(i)), _mm256_loadu_ps(bp.add(i))));
            }
            normalize_tail(x, y, gamma, beta, mean, inv, len / 8 * 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowIsa;
    use crate::testing::noise;

    #[test]
    fn hand_worked_row() {
        // x = [1, 2, 3, 4]: mean 2.5, variance 1.25.
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut y = [0.0; 4];
        layernorm(&x, &mut y, &[1.0, 1.0, 2.0, 1.0], &[0.0, 0.0, 0.0, 10.0], 0.0);
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s, 2.0 * 0.5 / s, 1.5 / s + 10.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }

    type RowKernel = fn(&[f32], &mut [f32], &[f32], &[f32], f32);

    /// Every row kernel this CPU can run.
    fn kernels() -> Vec<(RowIsa, RowKernel)> {
        let mut v: Vec<(RowIsa, RowKernel)> = vec![(RowIsa::Scalar, layernorm_scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            if RowIsa::Avx2.supported() {
                v.push((RowIsa::Avx2, layernorm_avx2));
            }
            if RowIsa::Avx512.supported() {
                v.push((RowIsa::Avx512, layernorm_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push((RowIsa::Neon, layernorm_neon));
        v
    }

    #[test]
    fn simd_rows_match_the_scalar_twin_bit_for_bit_and_f64() {
        for len in (1..70).chain([192, 383, 384, 768, 1024, 1031]) {
            // An offset mean makes the two-pass formula matter.
            let x: Vec<f32> = noise(len as u64, len).iter().map(|v| 40.0 + v * 3.0).collect();
            let gamma = noise(len as u64 + 1, len);
            let beta = noise(len as u64 + 2, len);
            let mut want = vec![f32::NAN; len];
            layernorm_scalar(&x, &mut want, &gamma, &beta, 1e-6);
            for (isa, kernel) in kernels() {
                let mut got = vec![f32::NAN; len];
                kernel(&x, &mut got, &gamma, &beta, 1e-6);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} len {len}");
            }
            let n = len as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            for i in 0..len {
                let exact = (x[i] as f64 - mean) / (var + 1e-6).sqrt() * gamma[i] as f64 + beta[i] as f64;
                assert!((want[i] as f64 - exact).abs() < 1e-4, "len {len} [{i}]: {} vs {exact}", want[i]);
            }
        }
    }
}
