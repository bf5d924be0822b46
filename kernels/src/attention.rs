//! Multi-head self-attention over a fused QKV buffer.
//!
//! `qkv` is `tokens x 3*dim` row-major: queries in columns `0..dim`, keys in `dim..2*dim`,
//! values in `2*dim..3*dim`, and head `h` owns columns `h*head_dim..(h+1)*head_dim` of each.
//! Work is split by query row, so each task writes only its own row of the output and needs one
//! row of scores: the full heads x tokens x tokens matrix never exists.

use rayon::prelude::*;

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
/// `scores` is scratch of at least `tokens * tokens` floats.
pub fn attention(qkv: &[f32], out: &mut [f32], scores: &mut [f32], shape: AttentionShape, threads: Threads) {
    let (t, dim) = (shape.tokens, shape.dim());
    assert_eq!(qkv.len(), t * 3 * dim, "attention: qkv buffer size");
    assert_eq!(out.len(), t * dim, "attention: output size");
    assert!(scores.len() >= t * t, "attention: scores scratch too small");
    if t == 0 || dim == 0 {
        return;
    }
    let rows = out.par_chunks_mut(dim).zip(scores[..t * t].par_chunks_mut(t)).enumerate();
    if threads.get() > 1 {
        rows.for_each(|(i, (o, s))| attention_row(qkv, i, o, s, shape));
    } else {
        out.chunks_mut(dim)
            .zip(scores[..t * t].chunks_mut(t))
            .enumerate()
            .for_each(|(i, (o, s))| attention_row(qkv, i, o, s, shape));
    }
}

fn attention_row(qkv: &[f32], query: usize, out: &mut [f32], scores: &mut [f32], shape: AttentionShape) {
    let (dim, dh) = (shape.dim(), shape.head_dim);
    let stride = 3 * dim;
    let scale = 1.0 / (dh as f32).sqrt();
    for h in 0..shape.heads {
        let q = &qkv[query * stride + h * dh..][..dh];
        for (j, s) in scores.iter_mut().enumerate() {
            let k = &qkv[j * stride + dim + h * dh..][..dh];
            *s = dot(q, k) * scale;
        }
        softmax_in_place(scores);
        let o = &mut out[h * dh..(h + 1) * dh];
        o.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let v = &qkv[j * stride + 2 * dim + h * dh..][..dh];
            for (acc, x) in o.iter_mut().zip(v) {
                *acc += p * x;
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums let the compiler vectorise without reassociating.
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Numerically stable softmax of one row, in place.
pub fn softmax_in_place(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
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
