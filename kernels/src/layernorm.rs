//! LayerNorm over the last dimension, computed in f32 with a two-pass (mean, then variance)
//! formula so that large activations keep their precision.

/// Normalises each row of `input` (`rows x gamma.len()`) into `out`.
pub fn layernorm(input: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    assert!(d > 0 && beta.len() == d, "layernorm: gamma/beta length mismatch");
    assert!(input.len() == out.len() && input.len().is_multiple_of(d), "layernorm: ragged rows");
    for (x, y) in input.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        layernorm_row(x, y, gamma, beta, eps);
    }
}

/// One row of [`layernorm`], compiled for AVX2 where present so its loops vectorise.
pub fn layernorm_row(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert!(y.len() == x.len() && gamma.len() == x.len() && beta.len() == x.len(), "layernorm_row: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA are present; the body is safe Rust compiled with them.
        return unsafe { layernorm_row_avx2(x, y, gamma, beta, eps) };
    }
    layernorm_row_body(x, y, gamma, beta, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layernorm_row_avx2(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    layernorm_row_body(x, y, gamma, beta, eps)
}

#[inline(always)]
fn layernorm_row_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = crate::sum_lanes(x) / n;
    // (x - mean)^2 goes through `y` as scratch so the sum vectorises.
    for (d, v) in y.iter_mut().zip(x) {
        *d = (v - mean) * (v - mean);
    }
    let var = crate::sum_lanes(y) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
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
}
