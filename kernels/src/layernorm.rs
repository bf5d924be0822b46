//! LayerNorm over the last dimension, computed in f32 with a two-pass (mean, then variance)
//! formula so that large activations keep their precision.
//!
//! [`layernorm_row_scalar`] is the twin: its sums run in 16 lanes (element i into lane
//! i % 16, the lanes then added in order, then the tail), and the AVX-512 (one zmm), AVX2 (two
//! ymm) and NEON (four q) kernels keep exactly those lanes and that order, so all agree bit
//! for bit.

/// Normalises each row of `input` (`rows x gamma.len()`) into `out`.
pub fn layernorm(input: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    assert!(d > 0 && beta.len() == d, "layernorm: gamma/beta length mismatch");
    assert!(input.len() == out.len() && input.len().is_multiple_of(d), "layernorm: ragged rows");
    for (x, y) in input.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        layernorm_row(x, y, gamma, beta, eps);
    }
}

/// One row of [`layernorm`] on the best SIMD kernel this CPU has.
pub fn layernorm_row(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert!(y.len() == x.len() && gamma.len() == x.len() && beta.len() == x.len(), "layernorm_row: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return x86::row_avx512(x, y, gamma, beta, eps);
        }
        if is_x86_feature_detected!("avx") {
            return x86::row_avx(x, y, gamma, beta, eps);
        }
    }
    #[cfg(target_arch = "aarch64")]
    return arm::row_neon(x, y, gamma, beta, eps);
    #[allow(unreachable_code)]
    layernorm_row_scalar(x, y, gamma, beta, eps)
}

/// The scalar twin of the row kernels.
pub fn layernorm_row_scalar(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert!(y.len() == x.len() && gamma.len() == x.len() && beta.len() == x.len(), "layernorm_row: lengths differ");
    let n = x.len() as f32;
    let mean = crate::sum_lanes(x) / n;
    // (x - mean)^2 goes through `y` as scratch.
    for (d, v) in y.iter_mut().zip(x) {
        *d = (v - mean) * (v - mean);
    }
    let var = crate::sum_lanes(y) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
    }
}

/// The tail of a row past its whole 16-lane chunks, and the twin's lane order for the sums.
fn tail_sum(xs: impl Iterator<Item = f32>) -> f32 {
    xs.sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::tail_sum;
    use std::arch::x86_64::*;

    pub(super) fn row_avx512(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        // SAFETY: the caller detected AVX-512F and checked that all four slices have one length.
        unsafe { avx512_body(x, y, gamma, beta, eps) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let (len, whole) = (x.len(), x.len() / 16 * 16);
        let xp = x.as_ptr();
        let lanes = |v: __m512| {
            let mut l = [0f32; 16];
            // SAFETY: l holds 16 floats.
            unsafe { _mm512_storeu_ps(l.as_mut_ptr(), v) };
            l.iter().sum::<f32>()
        };
        let mut acc = _mm512_setzero_ps();
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            acc = _mm512_add_ps(acc, unsafe { _mm512_loadu_ps(xp.add(i)) });
        }
        let mean = (lanes(acc) + tail_sum(x[whole..].iter().copied())) / len as f32;
        let m = _mm512_set1_ps(mean);
        let mut acc = _mm512_setzero_ps();
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(xp.add(i)) }, m);
            acc = _mm512_add_ps(acc, _mm512_mul_ps(d, d));
        }
        let rest = tail_sum(x[whole..].iter().map(|v| (v - mean) * (v - mean)));
        let inv = 1.0 / ((lanes(acc) + rest) / len as f32 + eps).sqrt();
        let iv = _mm512_set1_ps(inv);
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len for all four slices.
            unsafe {
                let d = _mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), m);
                let v = _mm512_mul_ps(_mm512_mul_ps(d, iv), _mm512_loadu_ps(gamma.as_ptr().add(i)));
                _mm512_storeu_ps(y.as_mut_ptr().add(i), _mm512_add_ps(v, _mm512_loadu_ps(beta.as_ptr().add(i))));
            }
        }
        for i in whole..len {
            y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
        }
    }

    pub(super) fn row_avx(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        // SAFETY: the caller detected AVX and checked that all four slices have one length.
        unsafe { avx_body(x, y, gamma, beta, eps) }
    }

    /// Sixteen lanes as two ymm: lanes 0..8 and 8..16 of each chunk.
    #[target_feature(enable = "avx")]
    unsafe fn avx_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let (len, whole) = (x.len(), x.len() / 16 * 16);
        let xp = x.as_ptr();
        let lanes = |lo: __m256, hi: __m256| {
            let mut l = [0f32; 16];
            // SAFETY: l holds 16 floats.
            unsafe {
                _mm256_storeu_ps(l.as_mut_ptr(), lo);
                _mm256_storeu_ps(l.as_mut_ptr().add(8), hi);
            }
            l.iter().sum::<f32>()
        };
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            unsafe {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(xp.add(i)));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(xp.add(i + 8)));
            }
        }
        let mean = (lanes(lo, hi) + tail_sum(x[whole..].iter().copied())) / len as f32;
        let m = _mm256_set1_ps(mean);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 <= len.
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), m);
                let d1 = _mm256_sub_ps(_mm256_loadu_ps(xp.add(i + 8)), m);
                lo = _mm256_add_ps(lo, _mm256_mul_ps(d0, d0));
                hi = _mm256_add_ps(hi, _mm256_mul_ps(d1, d1));
            }
        }
        let rest = tail_sum(x[whole..].iter().map(|v| (v - mean) * (v - mean)));
        let inv = 1.0 / ((lanes(lo, hi) + rest) / len as f32 + eps).sqrt();
        let iv = _mm256_set1_ps(inv);
        for i in (0..len / 8 * 8).step_by(8) {
            // SAFETY: i + 8 <= len for all four slices.
            unsafe {
                let d = _mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), m);
                let v = _mm256_mul_ps(_mm256_mul_ps(d, iv), _mm256_loadu_ps(gamma.as_ptr().add(i)));
                _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_add_ps(v, _mm256_loadu_ps(beta.as_ptr().add(i))));
            }
        }
        for i in len / 8 * 8..len {
            y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::tail_sum;
    use std::arch::aarch64::*;

    pub(super) fn row_neon(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        // SAFETY: NEON is baseline on aarch64; the caller checked that all four slices have one
        // length.
        unsafe { neon_body(x, y, gamma, beta, eps) }
    }

    /// Sixteen lanes as four q registers.
    #[target_feature(enable = "neon")]
    unsafe fn neon_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let (len, whole) = (x.len(), x.len() / 16 * 16);
        let xp = x.as_ptr();
        let lanes = |acc: [float32x4_t; 4]| {
            let mut l = [0f32; 16];
            for (j, v) in acc.iter().enumerate() {
                // SAFETY: l holds 16 floats.
                unsafe { vst1q_f32(l.as_mut_ptr().add(4 * j), *v) };
            }
            l.iter().sum::<f32>()
        };
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in (0..whole).step_by(16) {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 16 <= len.
                *a = vaddq_f32(*a, unsafe { vld1q_f32(xp.add(i + 4 * j)) });
            }
        }
        let mean = (lanes(acc) + tail_sum(x[whole..].iter().copied())) / len as f32;
        let m = vdupq_n_f32(mean);
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in (0..whole).step_by(16) {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 16 <= len.
                let d = vsubq_f32(unsafe { vld1q_f32(xp.add(i + 4 * j)) }, m);
                *a = vaddq_f32(*a, vmulq_f32(d, d));
            }
        }
        let rest = tail_sum(x[whole..].iter().map(|v| (v - mean) * (v - mean)));
        let inv = 1.0 / ((lanes(acc) + rest) / len as f32 + eps).sqrt();
        let iv = vdupq_n_f32(inv);
        for i in (0..len / 4 * 4).step_by(4) {
            // SAFETY: i + 4 <= len for all four slices.
            unsafe {
                let d = vsubq_f32(vld1q_f32(xp.add(i)), m);
                let v = vmulq_f32(vmulq_f32(d, iv), vld1q_f32(gamma.as_ptr().add(i)));
                vst1q_f32(y.as_mut_ptr().add(i), vaddq_f32(v, vld1q_f32(beta.as_ptr().add(i))));
            }
        }
        for i in len / 4 * 4..len {
            y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Every row kernel this CPU can run, and the dispatcher.
    fn kernels() -> Vec<(&'static str, RowKernel)> {
        let mut v: Vec<(&'static str, RowKernel)> = vec![("dispatch", layernorm_row)];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx") {
                v.push(("avx", x86::row_avx));
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(("avx512", x86::row_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(("neon", arm::row_neon));
        v
    }

    #[test]
    fn simd_rows_match_the_scalar_twin_bit_for_bit_and_f64() {
        for len in (1..70).chain([192, 383, 384, 768, 1024, 1031]) {
            // An offset mean makes the two-pass formula matter.
            let x: Vec<f32> = crate::matmul::tests::noise(len as u64, len).iter().map(|v| 40.0 + v * 3.0).collect();
            let gamma = crate::matmul::tests::noise(len as u64 + 1, len);
            let beta = crate::matmul::tests::noise(len as u64 + 2, len);
            let mut want = vec![f32::NAN; len];
            layernorm_row_scalar(&x, &mut want, &gamma, &beta, 1e-6);
            for (name, kernel) in kernels() {
                let mut got = vec![f32::NAN; len];
                kernel(&x, &mut got, &gamma, &beta, 1e-6);
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} len {len}: {got:?} vs {want:?}"
                );
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
