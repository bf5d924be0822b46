//! `softmax(row * scale)` in place: the attention scores' normalisation, with the branchless
//! exp of [`crate::activation::exp_fast`].
//!
//! [`scaled_softmax_scalar`] is the twin; its sum runs in 16 lanes (element i into lane
//! i % 16, the lanes then added in order, then the tail), and the AVX-512 (one zmm), AVX2 (two
//! ymm) and NEON (four q) kernels keep those lanes and that order and use the same exp
//! polynomial step for step, so all agree bit for bit.

use crate::activation::exp_fast;

/// `softmax(row * scale)` in place on the best SIMD kernel this CPU has.
pub fn scaled_softmax(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return x86::softmax_avx512(row, scale);
        }
        if is_x86_feature_detected!("avx2") {
            return x86::softmax_avx2(row, scale);
        }
    }
    #[cfg(target_arch = "aarch64")]
    return arm::softmax_neon(row, scale);
    #[allow(unreachable_code)]
    scaled_softmax_scalar(row, scale)
}

/// The scalar twin: scale, subtract the maximum, exponentiate, normalise.
pub fn scaled_softmax_scalar(row: &mut [f32], scale: f32) {
    row.iter_mut().for_each(|x| *x *= scale);
    let max = crate::max_lanes(row);
    for x in row.iter_mut() {
        *x = exp_fast(*x - max);
    }
    let inv = 1.0 / crate::sum_lanes(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// The twin's final steps for a SIMD kernel: the 16 lane sums (in lane order) plus the tail's
/// exponentials, then the reciprocal.
fn finish_sum(lanes: [f32; 16], tail: &mut [f32], max: f32) -> f32 {
    for x in tail.iter_mut() {
        *x = exp_fast(*x - max);
    }
    1.0 / (lanes.iter().sum::<f32>() + tail.iter().sum::<f32>())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::finish_sum;
    use crate::activation::x86::{exp_avx2, exp_avx512};
    use std::arch::x86_64::*;

    pub(super) fn softmax_avx512(row: &mut [f32], scale: f32) {
        // SAFETY: the caller detected AVX-512F.
        unsafe { avx512_body(row, scale) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_body(row: &mut [f32], scale: f32) {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        let s = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), s);
                _mm512_storeu_ps(p.add(i), v);
                mx = _mm512_max_ps(mx, v);
            }
        }
        row[whole..].iter_mut().for_each(|x| *x *= scale);
        let max = row[whole..].iter().copied().fold(_mm512_reduce_max_ps(mx), f32::max);
        let m = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            unsafe {
                let e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), m));
                _mm512_storeu_ps(p.add(i), e);
                sum = _mm512_add_ps(sum, e);
            }
        }
        let mut lanes = [0f32; 16];
        // SAFETY: lanes holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
        let inv = finish_sum(lanes, &mut row[whole..], max);
        let iv = _mm512_set1_ps(inv);
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            unsafe { _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), iv)) };
        }
        row[whole..len].iter_mut().for_each(|x| *x *= inv);
    }

    pub(super) fn softmax_avx2(row: &mut [f32], scale: f32) {
        // SAFETY: the caller detected AVX2.
        unsafe { avx2_body(row, scale) }
    }

    /// Sixteen lanes as two ymm: lanes 0..8 and 8..16 of each chunk.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_body(row: &mut [f32], scale: f32) {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        let s = _mm256_set1_ps(scale);
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..whole).step_by(8) {
            // SAFETY: i + 8 <= len.
            unsafe {
                let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), s);
                _mm256_storeu_ps(p.add(i), v);
                mx = _mm256_max_ps(mx, v);
            }
        }
        row[whole..].iter_mut().for_each(|x| *x *= scale);
        let mut l = [0f32; 8];
        // SAFETY: l holds 8 floats.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), mx) };
        let max = row[whole..].iter().chain(&l).copied().fold(f32::NEG_INFINITY, f32::max);
        let m = _mm256_set1_ps(max);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            unsafe {
                let e0 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m));
                let e1 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), m));
                _mm256_storeu_ps(p.add(i), e0);
                _mm256_storeu_ps(p.add(i + 8), e1);
                lo = _mm256_add_ps(lo, e0);
                hi = _mm256_add_ps(hi, e1);
            }
        }
        let mut lanes = [0f32; 16];
        // SAFETY: lanes holds 16 floats.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
        }
        let inv = finish_sum(lanes, &mut row[whole..], max);
        let iv = _mm256_set1_ps(inv);
        for i in (0..whole).step_by(8) {
            // SAFETY: i + 8 <= len.
            unsafe { _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), iv)) };
        }
        row[whole..len].iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::finish_sum;
    use crate::activation::arm::exp_neon;
    use std::arch::aarch64::*;

    pub(super) fn softmax_neon(row: &mut [f32], scale: f32) {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { neon_body(row, scale) }
    }

    /// Sixteen lanes as four q registers.
    #[target_feature(enable = "neon")]
    unsafe fn neon_body(row: &mut [f32], scale: f32) {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        let mut mx = vdupq_n_f32(f32::NEG_INFINITY);
        for i in (0..whole).step_by(4) {
            // SAFETY: i + 4 <= len.
            unsafe {
                let v = vmulq_n_f32(vld1q_f32(p.add(i)), scale);
                vst1q_f32(p.add(i), v);
                mx = vmaxq_f32(mx, v);
            }
        }
        row[whole..].iter_mut().for_each(|x| *x *= scale);
        let max = row[whole..].iter().copied().fold(vmaxvq_f32(mx), f32::max);
        let m = vdupq_n_f32(max);
        let mut sum = [vdupq_n_f32(0.0); 4];
        for i in (0..whole).step_by(16) {
            for (j, s) in sum.iter_mut().enumerate() {
                // SAFETY: i + 16 <= len.
                unsafe {
                    let e = exp_neon(vsubq_f32(vld1q_f32(p.add(i + 4 * j)), m));
                    vst1q_f32(p.add(i + 4 * j), e);
                    *s = vaddq_f32(*s, e);
                }
            }
        }
        let mut lanes = [0f32; 16];
        for (j, s) in sum.iter().enumerate() {
            // SAFETY: lanes holds 16 floats.
            unsafe { vst1q_f32(lanes.as_mut_ptr().add(4 * j), *s) };
        }
        let inv = finish_sum(lanes, &mut row[whole..], max);
        for i in (0..whole).step_by(4) {
            // SAFETY: i + 4 <= len.
            unsafe { vst1q_f32(p.add(i), vmulq_n_f32(vld1q_f32(p.add(i)), inv)) };
        }
        row[whole..len].iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked() {
        let mut x = [0.0f32, (2.0f32).ln(), 1000.0];
        scaled_softmax(&mut x, 1.0);
        assert!((x[2] - 1.0).abs() < 1e-6 && x[0] < 1e-30);
        let mut y = [0.0f32, (3.0f32).ln() * 2.0];
        scaled_softmax(&mut y, 0.5);
        assert!((y[0] - 0.25).abs() < 1e-6 && (y[1] - 0.75).abs() < 1e-6);
    }

    type RowKernel = (&'static str, fn(&mut [f32], f32));

    /// Every kernel this CPU can run, and the dispatcher.
    fn kernels() -> Vec<RowKernel> {
        let mut v: Vec<RowKernel> = vec![("dispatch", scaled_softmax)];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                v.push(("avx2", x86::softmax_avx2));
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(("avx512", x86::softmax_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(("neon", arm::softmax_neon));
        v
    }

    #[test]
    fn every_simd_kernel_matches_the_scalar_twin_bit_for_bit_and_f64() {
        for len in (1..70).chain([197, 257, 577, 1000]) {
            let x: Vec<f32> = crate::matmul::tests::noise(len as u64 * 3, len).iter().map(|v| v * 30.0).collect();
            let mut want = x.clone();
            scaled_softmax_scalar(&mut want, 0.125);
            for (name, kernel) in kernels() {
                let mut got = x.clone();
                kernel(&mut got, 0.125);
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} len {len}: {got:?} vs {want:?}"
                );
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
