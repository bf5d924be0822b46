//! `softmax(row * scale)` (`scale > 0`): attention's normalisation.
//!
//! [`softmax_exp`] does the work in two passes over the row, which is in L1: the maximum `m`;
//! then `e = exp(x * scale - m * scale)` (one fused multiply-add for the argument) in place,
//! and its sum, whose reciprocal it returns. Attention multiplies its output rows by that
//! reciprocal (64 values per head) instead of normalising the 197 probabilities.
//!
//! [`softmax_exp_scalar`] is the twin: element i of the sum goes into lane i % 16, the 16
//! lanes are then added in order. The AVX-512 (one zmm), AVX2 (two ymm) and NEON (four q)
//! kernels keep those lanes and that order (a ragged tail through a zero-padded vector) and
//! use the same `exp` step for step, so all agree bit for bit.

use super::activation::exp_fast;
use super::max_lanes;

/// `softmax(row * scale)` in place on the best kernel this CPU has.
pub fn scaled_softmax(row: &mut [f32], scale: f32) {
    let inv = softmax_exp(row, scale);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `row = exp(row * scale - max(row) * scale)` in place on the best kernel this CPU has;
/// returns `1 / sum(row)`, the factor that normalises it.
pub fn softmax_exp(row: &mut [f32], scale: f32) -> f32 {
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
    softmax_exp_scalar(row, scale)
}

/// The scalar twin of [`softmax_exp`].
pub fn softmax_exp_scalar(row: &mut [f32], scale: f32) -> f32 {
    assert!(scale > 0.0, "softmax: scale must be positive");
    let shift = -(max_lanes(row) * scale);
    let mut lanes = [0f32; 16];
    for (i, x) in row.iter_mut().enumerate() {
        *x = exp_fast(x.mul_add(scale, shift));
        lanes[i % 16] += *x;
    }
    1.0 / lanes.iter().sum::<f32>()
}

#[cfg(target_arch = "aarch64")]
pub use neon::softmax_neon;

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::activation::exp_f32x4;
    use std::arch::aarch64::*;

    /// Sixteen lanes as four q registers, four exponentials in flight; the tail through a
    /// zero-padded chunk.
    pub fn softmax_neon(row: &mut [f32], scale: f32) -> f32 {
        assert!(scale > 0.0, "softmax: scale must be positive");
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        // SAFETY (every load and store below): NEON is baseline on aarch64, and each index
        // i + 4 j + 4 <= whole <= len, or into the 16-float `buf`.
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
            let mut chunk = |p: *mut f32, lanes: usize| {
                let e: [float32x4_t; 4] =
                    std::array::from_fn(|j| exp_f32x4(vfmaq_f32(vh, vld1q_f32(p.add(4 * j)), vs)));
                for (j, e) in e.iter().enumerate() {
                    vst1q_f32(p.add(4 * j), *e);
                }
                // Lanes past a tail hold zeros, which add nothing.
                for k in lanes..16 {
                    *p.add(k) = 0.0;
                }
                for (j, s) in sum.iter_mut().enumerate() {
                    *s = vaddq_f32(*s, vld1q_f32(p.add(4 * j)));
                }
            };
            for i in (0..whole).step_by(16) {
                chunk(p.add(i), 16);
            }
            if whole < len {
                let mut buf = [0f32; 16];
                buf[..len - whole].copy_from_slice(&row[whole..]);
                chunk(buf.as_mut_ptr(), len - whole);
                row[whole..].copy_from_slice(&buf[..len - whole]);
            }
            let mut lanes = [0f32; 16];
            sum.iter().enumerate().for_each(|(j, s)| vst1q_f32(lanes.as_mut_ptr().add(4 * j), *s));
            1.0 / lanes.iter().sum::<f32>()
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{softmax_avx2, softmax_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::activation::{exp_f32x16, exp_f32x8};
    use std::arch::x86_64::*;

    /// Sixteen lanes as one zmm; the tail masked.
    pub fn softmax_avx512(row: &mut [f32], scale: f32) -> f32 {
        assert!(scale > 0.0, "softmax: scale must be positive");
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (asserted above).
        unsafe { avx512_body(row, scale) }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_body(row: &mut [f32], scale: f32) -> f32 {
        let len = row.len();
        let p = row.as_mut_ptr();
        let mask = |i: usize| if len - i >= 16 { u16::MAX } else { (1u16 << (len - i)) - 1 };
        // SAFETY (every load and store below): masked to the lanes i.. i + 16 that are < len.
        unsafe {
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..len).step_by(16) {
                mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, mask(i), p.add(i)));
            }
            let shift = -(_mm512_reduce_max_ps(mx) * scale);
            let (vs, vh) = (_mm512_set1_ps(scale), _mm512_set1_ps(shift));
            let mut sum = _mm512_setzero_ps();
            for i in (0..len).step_by(16) {
                let e = exp_f32x16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask(i), p.add(i)), vs, vh));
                _mm512_mask_storeu_ps(p.add(i), mask(i), e);
                sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(mask(i), e));
            }
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
            1.0 / lanes.iter().sum::<f32>()
        }
    }

    /// Sixteen lanes as two ymm: lanes 0..8 and 8..16 of each chunk; the tail through a
    /// zero-padded chunk.
    pub fn softmax_avx2(row: &mut [f32], scale: f32) -> f32 {
        assert!(scale > 0.0, "softmax: scale must be positive");
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (asserted above).
        unsafe { avx2_body(row, scale) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body(row: &mut [f32], scale: f32) -> f32 {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        // SAFETY (every load and store below): each index i + 16 <= whole <= len, or into the
        // 16-float `buf`.
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
            let mut chunk = |p: *mut f32, lanes: usize| {
                let e0 = exp_f32x8(_mm256_fmadd_ps(_mm256_loadu_ps(p), vs, vh));
                let e1 = exp_f32x8(_mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), vs, vh));
                _mm256_storeu_ps(p, e0);
                _mm256_storeu_ps(p.add(8), e1);
                for k in lanes..16 {
                    *p.add(k) = 0.0;
                }
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(p));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(p.add(8)));
            };
            for i in (0..whole).step_by(16) {
                chunk(p.add(i), 16);
            }
            if whole < len {
                let mut buf = [0f32; 16];
                buf[..len - whole].copy_from_slice(&row[whole..]);
                chunk(buf.as_mut_ptr(), len - whole);
                row[whole..].copy_from_slice(&buf[..len - whole]);
            }
            let mut lanes = [0f32; 16];
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
            1.0 / lanes.iter().sum::<f32>()
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

    type Kernel = (RowIsa, fn(&mut [f32], f32) -> f32);

    fn kernels() -> Vec<Kernel> {
        let mut v: Vec<Kernel> = vec![(RowIsa::Scalar, softmax_exp_scalar)];
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
            let inv = softmax_exp_scalar(&mut want, 0.125);
            for (isa, kernel) in kernels() {
                let mut got = x.clone();
                let got_inv = kernel(&mut got, 0.125);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} len {len}");
                assert_eq!(got_inv.to_bits(), inv.to_bits(), "{isa:?} len {len}");
            }
            want.iter_mut().for_each(|v| *v *= inv);
            let max = x.iter().map(|&v| v as f64 * 0.125).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = x.iter().map(|&v| (v as f64 * 0.125 - max).exp()).sum();
            for (i, &v) in want.iter().enumerate() {
                let exact = (x[i] as f64 * 0.125 - max).exp() / sum;
                assert!((v as f64 - exact).abs() < 1e-6, "len {len} [{i}]: {v} vs {exact}");
            }
        }
    }
}
