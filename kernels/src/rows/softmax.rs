//! `softmax(row * scale)` in place (`scale > 0`): attention's normalisation.
//!
//! Three passes over the row, which is in L1: the maximum `m`; `e = exp(x * scale - m *
//! scale)` (one fused multiply-add for the argument) and its sum; `e / sum` as one multiply.
//! [`softmax_scalar`] is the twin: its sum runs in 16 lanes (element i into lane i % 16, the
//! lanes then added in order, then the tail), and the AVX-512 (one zmm), AVX2 (two ymm) and
//! NEON (four q) kernels keep those lanes and that order and use the same `exp` step for step,
//! so all agree bit for bit.

use super::activation::exp_fast;
use super::{finish_lanes, max_lanes};

/// `softmax(row * scale)` in place on the best kernel this CPU has.
pub fn scaled_softmax(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return softmax_avx512(row, scale);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return softmax_avx2(row, scale);
        }
    }
    #[cfg(target_arch = "aarch64")]
    return softmax_neon(row, scale);
    #[allow(unreachable_code)]
    softmax_scalar(row, scale)
}

/// The scalar twin.
pub fn softmax_scalar(row: &mut [f32], scale: f32) {
    assert!(scale > 0.0, "softmax: scale must be positive");
    let shift = -(max_lanes(row) * scale);
    row.iter_mut().for_each(|x| *x = exp_fast(x.mul_add(scale, shift)));
    let whole = row.len() / 16 * 16;
    let mut lanes = [0f32; 16];
    for c in row[..whole].chunks_exact(16) {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    let inv = 1.0 / finish_lanes(lanes, &row[whole..]);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// The twin's scalar steps for the tail past a SIMD kernel's whole chunks of 16: the
/// exponentials, then the reciprocal of the whole sum.
fn finish_tail(lanes: [f32; 16], tail: &mut [f32], scale: f32, shift: f32) -> f32 {
    tail.iter_mut().for_each(|x| *x = exp_fast(x.mul_add(scale, shift)));
    1.0 / finish_lanes(lanes, tail)
}

#[cfg(target_arch = "aarch64")]
pub use neon::softmax_neon;

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::activation::exp_f32x4;
    use super::*;
    use std::arch::aarch64::*;

    /// Sixteen lanes as four q registers, four exponentials in flight.
    pub fn softmax_neon(row: &mut [f32], scale: f32) {
        assert!(scale > 0.0, "softmax: scale must be positive");
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        // SAFETY (every load and store below): NEON is baseline on aarch64, and each index
        // i + 4 j + 4 <= whole <= len, or i + 4 <= len.
        unsafe {
            let mut mx = [vdupq_n_f32(f32::NEG_INFINITY); 4];
            for i in (0..whole).step_by(16) {
                for (j, m) in mx.iter_mut().enumerate() {
                    *m = vmaxq_f32(*m, vld1q_f32(p.add(i + 4 * j)));
                }
            }
            let m = vmaxq_f32(vmaxq_f32(mx[0], mx[1]), vmaxq_f32(mx[2], mx[3]));
            let max = row[whole..].iter().copied().fold(vmaxvq_f32(m), f32::max);
            let shift = -(max * scale);
            let (vs, vh) = (vdupq_n_f32(scale), vdupq_n_f32(shift));
            let mut sum = [vdupq_n_f32(0.0); 4];
            for i in (0..whole).step_by(16) {
                let e: [float32x4_t; 4] =
                    std::array::from_fn(|j| exp_f32x4(vfmaq_f32(vh, vld1q_f32(p.add(i + 4 * j)), vs)));
                for j in 0..4 {
                    vst1q_f32(p.add(i + 4 * j), e[j]);
                    sum[j] = vaddq_f32(sum[j], e[j]);
                }
            }
            let mut lanes = [0f32; 16];
            sum.iter().enumerate().for_each(|(j, s)| vst1q_f32(lanes.as_mut_ptr().add(4 * j), *s));
            let inv = finish_tail(lanes, &mut row[whole..], scale, shift);
            for i in (0..len / 4 * 4).step_by(4) {
                vst1q_f32(p.add(i), vmulq_n_f32(vld1q_f32(p.add(i)), inv));
            }
            row[len / 4 * 4..].iter_mut().for_each(|x| *x *= inv);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{softmax_avx2, softmax_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::activation::{exp_f32x16, exp_f32x8};
    use super::*;
    use std::arch::x86_64::*;

    /// Sixteen lanes as one zmm.
    pub fn softmax_avx512(row: &mut [f32], scale: f32) {
        assert!(scale > 0.0, "softmax: scale must be positive");
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (asserted above).
        unsafe { avx512_body(row, scale) }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_body(row: &mut [f32], scale: f32) {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        // SAFETY (every load and store below): each index i + 16 <= whole <= len.
        unsafe {
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..whole).step_by(16) {
                mx = _mm512_max_ps(mx, _mm512_loadu_ps(p.add(i)));
            }
            let max = row[whole..].iter().copied().fold(_mm512_reduce_max_ps(mx), f32::max);
            let shift = -(max * scale);
            let (vs, vh) = (_mm512_set1_ps(scale), _mm512_set1_ps(shift));
            let mut sum = _mm512_setzero_ps();
            for i in (0..whole).step_by(16) {
                let e = exp_f32x16(_mm512_fmadd_ps(_mm512_loadu_ps(p.add(i)), vs, vh));
                _mm512_storeu_ps(p.add(i), e);
                sum = _mm512_add_ps(sum, e);
            }
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
            let inv = finish_tail(lanes, &mut row[whole..], scale, shift);
            let iv = _mm512_set1_ps(inv);
            for i in (0..whole).step_by(16) {
                _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), iv));
            }
            row[whole..len].iter_mut().for_each(|x| *x *= inv);
        }
    }

    /// Sixteen lanes as two ymm: lanes 0..8 and 8..16 of each chunk.
    pub fn softmax_avx2(row: &mut [f32], scale: f32) {
        assert!(scale > 0.0, "softmax: scale must be positive");
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (asserted above).
        unsafe { avx2_body(row, scale) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body(row: &mut [f32], scale: f32) {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        // SAFETY (every load and store below): each index i + 16 <= whole <= len, or i + 8 <= len.
        unsafe {
            let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
            for i in (0..whole).step_by(8) {
                mx = _mm256_max_ps(mx, _mm256_loadu_ps(p.add(i)));
            }
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), mx);
            let max = row[whole..].iter().chain(&l).copied().fold(f32::NEG_INFINITY, f32::max);
            let shift = -(max * scale);
            let (vs, vh) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for i in (0..whole).step_by(16) {
                let e0 = exp_f32x8(_mm256_fmadd_ps(_mm256_loadu_ps(p.add(i)), vs, vh));
                let e1 = exp_f32x8(_mm256_fmadd_ps(_mm256_loadu_ps(p.add(i + 8)), vs, vh));
                _mm256_storeu_ps(p.add(i), e0);
                _mm256_storeu_ps(p.add(i + 8), e1);
                lo = _mm256_add_ps(lo, e0);
                hi = _mm256_add_ps(hi, e1);
            }
            let mut lanes = [0f32; 16];
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
            let inv = finish_tail(lanes, &mut row[whole..], scale, shift);
            let iv = _mm256_set1_ps(inv);
            for i in (0..len / 8 * 8).step_by(8) {
                _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), iv));
            }
            row[len / 8 * 8..].iter_mut().for_each(|x| *x *= inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowIsa;
    use crate::testing::noise;

    #[test]
    fn hand_worked() {
        let mut x = [0.0f32, (2.0f32).ln(), 1000.0];
        scaled_softmax(&mut x, 1.0);
        assert!((x[2] - 1.0).abs() < 1e-6 && x[0] < 1e-30);
        let mut y = [0.0f32, (3.0f32).ln() * 2.0];
        scaled_softmax(&mut y, 0.5);
        assert!((y[0] - 0.25).abs() < 1e-6 && (y[1] - 0.75).abs() < 1e-6);
    }

    /// Every kernel this CPU can run.
    type Kernel = (RowIsa, fn(&mut [f32], f32));

    fn kernels() -> Vec<Kernel> {
        let mut v: Vec<Kernel> = vec![(RowIsa::Scalar, softmax_scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            if RowIsa::Avx2.supported() {
                v.push((RowIsa::Avx2, softmax_avx2));
            }
            if RowIsa::Avx512.supported() {
                v.push((RowIsa::Avx512, softmax_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push((RowIsa::Neon, softmax_neon));
        v
    }

    #[test]
    fn every_simd_kernel_matches_the_scalar_twin_bit_for_bit_and_f64() {
        for len in (1..70).chain([197, 257, 577, 1000]) {
            let x: Vec<f32> = noise(len as u64 * 3, len).iter().map(|v| v * 30.0).collect();
            let mut want = x.clone();
            softmax_scalar(&mut want, 0.125);
            for (isa, kernel) in kernels() {
                let mut got = x.clone();
                kernel(&mut got, 0.125);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} len {len}");
            }
            let max = x.iter().map(|&v| v as f64 * 0.125).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = x.iter().map(|&v| (v as f64 * 0.125 - max).exp()).sum();
            for (i, &v) in want.iter().enumerate() {
                let exact = (x[i] as f64 * 0.125 - max).exp() / sum;
                assert!((v as f64 - exact).abs() < 1e-6, "len {len} [{i}]: {v} vs {exact}");
            }
        }
    }
}
