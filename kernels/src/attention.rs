//! Multi-head self-attention over a fused QKV buffer, as one task per (head, block of
//! queries): scores for the block against every key, a scaled softmax, and the value product,
//! in a small per-thread tile of `QUERY_BLOCK x tokens` scores. The heads x tokens x tokens
//! score matrix never exists; nothing is allocated.
//!
//! `qkv` is `tokens x 3*dim` row-major: queries in columns `0..dim`, keys in `dim..2*dim`,
//! values in `2*dim..3*dim`, and head `h` owns columns `h*head_dim..(h+1)*head_dim` of each.
//! The keys are first transposed per head (`head_dim x tokens`, padded to a multiple of 16
//! tokens), so both products run on the f32 GEMM microkernels ([`crate::gemm::f32`]), which
//! read their right-hand side in place at any stride.

use rayon::prelude::*;

use crate::gemm::f32::F32Kernel;
use crate::gemm::{Columns, Epilogue, OutBlock, NR};
use crate::rows::softmax::softmax_exp;
use crate::{OutPtr, Threads};

/// Queries per task: a task's scores are `QUERY_BLOCK x tokens` floats.
pub const QUERY_BLOCK: usize = 32;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Tokens (rows of qkv).
    pub tokens: usize,
    /// Attention heads.
    pub heads: usize,
    /// Columns per head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// The model width: heads x head_dim.
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Tokens rounded up to whole 16-column groups.
    fn padded_tokens(&self) -> usize {
        self.tokens.div_ceil(NR) * NR
    }
}

/// Scratch floats [`attention`] needs to run `slots` tasks at once: the transposed keys, and
/// one score tile per slot.
pub fn scratch_len(shape: AttentionShape, slots: usize) -> usize {
    let tp = shape.padded_tokens();
    shape.dim() * tp + slots.max(1) * QUERY_BLOCK * tp
}

/// Computes `softmax(q k^T / sqrt(head_dim)) v` for every head into `out` (`tokens x dim`)
/// on `kernel`. `scratch` must hold [`scratch_len`]`(shape, 1)` floats or more; extra score
/// tiles let that many (head, query block) tasks run in parallel, up to `threads`.
pub fn attention(
    kernel: F32Kernel,
    qkv: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
    shape: AttentionShape,
    threads: Threads,
) {
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    assert_eq!(qkv.len(), t * 3 * dim, "attention: qkv buffer size");
    assert_eq!(out.len(), t * dim, "attention: output size");
    assert!(scratch.len() >= scratch_len(shape, 1), "attention: scratch too small");
    assert!(kernel.supported(), "this CPU cannot run {}", kernel.name());
    if t == 0 || dim == 0 {
        return;
    }
    let tp = shape.padded_tokens();
    let (keys_t, tiles) = scratch.split_at_mut(dim * tp);
    let parallel = threads.get() > 1 && t * t * dim >= 1 << 16;

    // Keys transposed per head: keys_t[h][d][j] = k[j][h*dh + d], zero past the last token.
    let transpose = |(h, kt): (usize, &mut [f32])| {
        for (d, row) in kt.chunks_exact_mut(tp).enumerate() {
            for (j, v) in row[..t].iter_mut().enumerate() {
                *v = qkv[j * 3 * dim + dim + h * dh + d];
            }
            row[t..].fill(0.0);
        }
    };
    if parallel {
        keys_t.par_chunks_mut(dh * tp).enumerate().for_each(transpose);
    } else {
        keys_t.chunks_mut(dh * tp).enumerate().for_each(transpose);
    }

    let blocks = t.div_ceil(QUERY_BLOCK);
    let tasks = shape.heads * blocks;
    let tile_len = QUERY_BLOCK * tp;
    let slots = (tiles.len() / tile_len).min(if parallel { threads.get() } else { 1 }).min(tasks).max(1);
    let per_slot = tasks.div_ceil(slots);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let keys_t = &*keys_t;
    let run = |(slot, scores): (usize, &mut [f32])| {
        for task in slot * per_slot..((slot + 1) * per_slot).min(tasks) {
            let (h, block) = (task / blocks, task % blocks);
            // SAFETY: each task writes only rows block*QUERY_BLOCK.. of head h's columns of
            // `out`, and every (head, block) task runs exactly once.
            unsafe { query_block(kernel, qkv, keys_t, out_ptr, scores, shape, h, block) };
        }
    };
    if slots > 1 {
        tiles[..slots * tile_len].par_chunks_mut(tile_len).enumerate().for_each(run);
    } else {
        run((0, &mut tiles[..tile_len]));
    }
}

/// One head, one block of queries: scores against every key, scaled softmax, value product.
///
/// # Safety
/// `out` must point to `tokens x dim` floats that no one else reads or writes in the block's
/// rows of head `h`'s columns during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn query_block(
    kernel: F32Kernel,
    qkv: &[f32],
    keys_t: &[f32],
    out: OutPtr,
    scores: &mut [f32],
    shape: AttentionShape,
    h: usize,
    block: usize,
) {
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    let tp = shape.padded_tokens();
    let i0 = block * QUERY_BLOCK;
    let rows = QUERY_BLOCK.min(t - i0);
    let kt = &keys_t[h * dh * tp..(h + 1) * dh * tp];
    let (mr, nr) = kernel.tile();
    assert!(scores.len() >= rows * tp);
    // scores[r][j] = q[i0 + r] . k[j], in blocks of mr rows x nr columns.
    for r0 in (0..rows).step_by(mr) {
        let rr = mr.min(rows - r0);
        let q = &qkv[(i0 + r0) * 3 * dim + h * dh..];
        for j0 in (0..tp).step_by(nr) {
            let cols = nr.min(tp - j0);
            // SAFETY: rows r0..r0+rr, columns j0..j0+cols of the tp-wide scores tile, which
            // this task owns (checked above).
            let block = unsafe { OutBlock::new(scores.as_mut_ptr().add(r0 * tp + j0), tp, rr, cols, Epilogue::Store) };
            kernel.run_block(q, 3 * dim, dh, &kt[j0..], tp, NR, cols / NR, &Columns::PLAIN, block);
        }
    }
    // Unnormalised probabilities; each output row is scaled by 1 / sum instead (dh values
    // rather than t).
    let scale = 1.0 / (dh as f32).sqrt();
    let mut inv = [0f32; QUERY_BLOCK];
    for (r, row) in scores.chunks_mut(tp).take(rows).enumerate() {
        inv[r] = softmax_exp(&mut row[..t], scale);
    }
    // out[i0 + r][h*dh + c] = inv[r] * sum_j e[r][j] * v[j][h*dh + c]
    for r0 in (0..rows).step_by(mr) {
        let rr = mr.min(rows - r0);
        for c0 in (0..dh).step_by(nr) {
            let cols = nr.min(dh - c0);
            let panels = cols.div_ceil(NR);
            let v = &qkv[2 * dim + h * dh + c0..];
            // A group narrower than its panels would read past the end of the last value row:
            // the scalar kernel reads only the columns it needs.
            let fits = v.len() >= (t - 1) * 3 * dim + (panels - 1) * NR + NR;
            let kernel = if fits { kernel } else { F32Kernel::Scalar };
            let at = (i0 + r0) * dim + h * dh + c0;
            // SAFETY: per this function's contract, these rows of head h's columns are valid and
            // written by no one else.
            let block = unsafe { OutBlock::new(out.get().add(at), dim, rr, cols, Epilogue::Store) };
            kernel.run_block(&scores[r0 * tp..], tp, t, v, 3 * dim, NR, panels, &Columns::PLAIN, block);
        }
        for r in 0..rr {
            // SAFETY: as for the blocks above: row i0+r0+r of head h's columns.
            let row = unsafe { std::slice::from_raw_parts_mut(out.get().add((i0 + r0 + r) * dim + h * dh), dh) };
            let f = inv[r0 + r];
            row.iter_mut().for_each(|x| *x *= f);
        }
    }
}

/// The scalar reference of [`attention`]: materialises each head's full score matrix and
/// accumulates in f64. The oracle for tests.
pub fn attention_reference(qkv: &[f32], out: &mut [f32], shape: AttentionShape) {
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
    use crate::testing::noise;

    #[test]
    fn every_kernel_matches_the_reference_and_the_scalar_kernel_bit_for_bit() {
        for &(tokens, heads, head_dim) in
            &[(1, 1, 1), (5, 3, 24), (17, 4, 16), (50, 2, 80), (197, 3, 64), (10, 5, 7), (257, 2, 64), (40, 1, 33)]
        {
            let shape = AttentionShape { tokens, heads, head_dim };
            let qkv: Vec<f32> =
                noise(tokens as u64 * 31 + heads as u64, tokens * 3 * shape.dim()).iter().map(|x| x * 3.0).collect();
            let mut want = vec![0.0; tokens * shape.dim()];
            attention_reference(&qkv, &mut want, shape);
            let mut first: Option<Vec<f32>> = None;
            for kernel in F32Kernel::available() {
                for (threads, slots) in [(1, 1), (2, 2), (3, 8)] {
                    let mut got = vec![f32::NAN; tokens * shape.dim()];
                    let mut scratch = vec![f32::NAN; scratch_len(shape, slots)];
                    attention(kernel, &qkv, &mut got, &mut scratch, shape, Threads(threads));
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() < 1e-5, "{} {shape:?} t={threads} [{i}]: {a} vs {b}", kernel.name());
                    }
                    // Every kernel and thread count gives the same bits.
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert_eq!(f, &got, "{} {shape:?} threads {threads}", kernel.name()),
                    }
                }
            }
        }
    }
}
