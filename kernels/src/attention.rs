//! Multi-head self-attention over a fused QKV buffer.
//!
//! `qkv` is `tokens x 3*dim` row-major: queries in columns `0..dim`, keys in `dim..2*dim`,
//! values in `2*dim..3*dim`, and head `h` owns columns `h*head_dim..(h+1)*head_dim` of each.
//! Heads run one after another, each with its own tokens x tokens scores, so the full
//! heads x tokens x tokens matrix never exists.

use rayon::prelude::*;

use crate::activation::exp_fast;
use crate::matmul::{matmul, matmul_to_ptr, MatMut, MatRef};
use crate::Threads;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Computes `softmax(q k^T / sqrt(head_dim)) v` for every head into `out` (`tokens x dim`).
/// `scores` is scratch for `scores.len() / tokens^2` heads at once (at least one): heads run
/// in parallel up to that many, each with its own tokens x tokens scores, and the products go
/// through the f32 GEMM on strided views of `qkv`, so nothing is copied.
pub fn attention(qkv: &[f32], out: &mut [f32], scores: &mut [f32], shape: AttentionShape, threads: Threads) {
    let (t, dim) = (shape.tokens, shape.dim());
    assert_eq!(qkv.len(), t * 3 * dim, "attention: qkv buffer size");
    assert_eq!(out.len(), t * dim, "attention: output size");
    assert!(scores.len() >= t * t, "attention: scores scratch too small");
    if t == 0 || dim == 0 {
        return;
    }
    let slots = (scores.len() / (t * t)).min(shape.heads).min(threads.get()).max(1);
    if slots == 1 {
        for h in 0..shape.heads {
            // SAFETY: `out` is exclusively borrowed and only this loop writes it.
            unsafe { attention_head(qkv, OutPtr(out.as_mut_ptr()), &mut scores[..t * t], shape, h, threads) };
        }
        return;
    }
    let out_ptr = OutPtr(out.as_mut_ptr());
    let per_slot = shape.heads.div_ceil(slots);
    scores[..slots * t * t].par_chunks_mut(t * t).enumerate().for_each(|(slot, s)| {
        for h in slot * per_slot..((slot + 1) * per_slot).min(shape.heads) {
            // SAFETY: each head writes only its own columns h*head_dim..(h+1)*head_dim of
            // `out`, and every head is handled by exactly one slot.
            unsafe { attention_head(qkv, out_ptr, s, shape, h, Threads(1)) };
        }
    });
}

/// The output pointer shared by the heads running in parallel (each writes its own columns).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: used only inside `attention`, whose heads write disjoint columns of one output
// buffer that the caller has borrowed exclusively for the duration of the call.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One head: scores = q k^T, softmax(scores / sqrt(head_dim)), out[:, head] = scores v.
///
/// # Safety
/// `out` must point to `tokens x dim` floats that no one else reads or writes in columns
/// `h * head_dim .. (h + 1) * head_dim` during the call.
unsafe fn attention_head(
    qkv: &[f32],
    out: OutPtr,
    scores: &mut [f32],
    shape: AttentionShape,
    h: usize,
    threads: Threads,
) {
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    let view = |part: usize| MatRef {
        data: &qkv[part * dim + h * dh..],
        rows: t,
        cols: dh,
        row_stride: 3 * dim,
        col_stride: 1,
    };
    let (q, k, v) = (view(0), view(1), view(2));
    let k_t = MatRef { data: k.data, rows: dh, cols: t, row_stride: 1, col_stride: 3 * dim };
    matmul(MatMut::row_major(scores, t, t), q, k_t, false, threads);
    let scale = 1.0 / (dh as f32).sqrt();
    if threads.get() > 1 && t >= 64 {
        scores.par_chunks_mut(t).for_each(|row| scaled_softmax(row, scale));
    } else {
        scores.chunks_mut(t).for_each(|row| scaled_softmax(row, scale));
    }
    // SAFETY: per this function's contract, the head's columns of `out` are valid and ours;
    // the GEMM writes exactly those (t rows of dh columns, row stride dim).
    unsafe { matmul_to_ptr(out.0.add(h * dh), t, dh, dim, MatRef::row_major(scores, t, t), v, false, threads) };
}

/// `softmax(row * scale)` in place, compiled for AVX2 where present so the exp vectorises.
fn scaled_softmax(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present; the body is safe Rust compiled with it.
        return unsafe { scaled_softmax_avx512(row, scale) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA are present; the body is safe Rust compiled with them.
        return unsafe { scaled_softmax_avx2(row, scale) };
    }
    row.iter_mut().for_each(|x| *x *= scale);
    softmax_in_place(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scaled_softmax_avx2(row: &mut [f32], scale: f32) {
    row.iter_mut().for_each(|x| *x *= scale);
    softmax_in_place(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scaled_softmax_avx512(row: &mut [f32], scale: f32) {
    row.iter_mut().for_each(|x| *x *= scale);
    softmax_in_place(row)
}

/// Numerically stable softmax of one row, in place, with the branchless [`exp_fast`].
#[inline(always)]
pub fn softmax_in_place(xs: &mut [f32]) {
    let max = crate::max_lanes(xs);
    for x in xs.iter_mut() {
        *x = exp_fast(*x - max);
    }
    let sum = crate::sum_lanes(xs);
    let inv = 1.0 / sum;
    for x in xs.iter_mut() {
        *x *= inv;
    }
}

/// The scalar twin of [`attention`]: materialises each head's full score matrix and
/// accumulates in f64. The oracle for tests.
pub fn attention_scalar(qkv: &[f32], out: &mut [f32], shape: AttentionShape) {
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    assert_eq!(qkv.len(), t * 3 * dim);
    assert_eq!(out.len(), t * dim);
    let at = |row: usize, col: usize| qkv[row * 3 * dim + col] as f64;
    for h in 0..shape.heads {
        for i in 0..t {
            let mut s: Vec<f64> = (0..t)
                .map(|j| (0..dh).map(|c| at(i, h * dh + c) * at(j, dim + h * dh + c)).sum::<f64>() / (dh as f64).sqrt())
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            s.iter_mut().for_each(|x| *x = (*x - max).exp());
            let sum: f64 = s.iter().sum();
            for c in 0..dh {
                let v: f64 = (0..t).map(|j| s[j] / sum * at(j, 2 * dim + h * dh + c)).sum();
                out[i * dim + h * dh + c] = v as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::tests::noise;

    #[test]
    fn matches_scalar_for_many_head_sizes_and_token_counts() {
        for &(tokens, heads, head_dim) in &[(1, 1, 1), (5, 3, 24), (17, 4, 16), (50, 2, 80), (197, 3, 64), (10, 5, 7)] {
            let shape = AttentionShape { tokens, heads, head_dim };
            let qkv: Vec<f32> =
                noise(tokens as u64 * 31 + heads as u64, tokens * 3 * shape.dim()).iter().map(|x| x * 3.0).collect();
            let mut want = vec![0.0; tokens * shape.dim()];
            attention_scalar(&qkv, &mut want, shape);
            for threads in [1, 2] {
                let mut got = vec![f32::NAN; tokens * shape.dim()];
                let mut scores = vec![0.0; tokens * tokens];
                attention(&qkv, &mut got, &mut scores, shape, Threads(threads));
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-5, "{shape:?} t={threads} [{i}]: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn softmax_hand_worked() {
        let mut x = [0.0f32, (2.0f32).ln(), 1000.0];
        softmax_in_place(&mut x);
        assert!((x[2] - 1.0).abs() < 1e-6 && x[0] < 1e-30);
        let mut y = [0.0f32, (3.0f32).ln()];
        softmax_in_place(&mut y);
        assert!((y[0] - 0.25).abs() < 1e-6 && (y[1] - 0.75).abs() < 1e-6);
    }
}
