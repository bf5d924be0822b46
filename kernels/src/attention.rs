//! Multi-head self-attention over a fused QKV buffer, in blocks of up to `QUERY_BLOCK` queries
//! of one head (each thread an even share of the heads x queries rows): scores for the block
//! against every key, a softmax, and the value product, in a small per-thread tile of
//! `QUERY_BLOCK x tokens` scores. The heads x tokens x tokens score
//! matrix never exists; nothing is allocated after the [`AttentionScratch`] is made.
//!
//! `qkv` is `tokens x 3*dim` row-major: queries in columns `0..dim`, keys in `dim..2*dim`,
//! values in `2*dim..3*dim`, and head `h` owns columns `h*head_dim..(h+1)*head_dim` of each.
//!
//! Both products run on the GEMM microkernels, in the precision [`AttentionKernels`] names:
//!
//! - scores `q k^T` in f32 ([`crate::gemm::f32`], on the keys transposed per head), or in int8
//!   ([`crate::gemm::i8`]): queries and keys quantized symmetrically per token and head, the
//!   keys packed k4n16 like weights, `1 / sqrt(head_dim)` folded into the queries' scales. On
//!   the real ViT-Tiny int8 this moves the mean KL divergence from f32 by 3%
//!   (docs/quantization.md); the probabilities stay f32 (quantizing them to 8 bits costs 45%).
//! - values `p v` in f32, or in half precision ([`crate::gemm::f16`], values converted to
//!   k1n16 halves once per call) on CPUs that compute in half.
//! - scores in bf16 ([`crate::gemm::bf16`]) on x86-64 CPUs with AVX512-BF16: queries and keys
//!   rounded to bf16 (the keys once per call, packed k2n16), sums in f32.
//!
//! Softmax leaves the probabilities unnormalised; each output row is scaled by `1 / sum`.

use rayon::prelude::*;

use crate::buffer::AlignedVec;
use crate::gemm::bf16::Bf16Kernel;
use crate::gemm::f16::F16Kernel;
use crate::gemm::f32::F32Kernel;
use crate::gemm::i8::I8Kernel;
use crate::gemm::pack::{padded_k, KG};
use crate::gemm::{Columns, Epilogue, OutBlock, Rows, NR};
use crate::rows::convert::{to_bf16, to_bf16_k2n16, to_halves};
use crate::rows::fill_from;
use crate::rows::quantize::quantize_symmetric_rows;
use crate::rows::softmax::softmax_exp_rows;
use crate::{OutPtr, Threads};

/// Queries per block at most: a block's scores are `QUERY_BLOCK x tokens` floats.
pub const QUERY_BLOCK: usize = 32;

/// The widest head int8 models' attention takes: with int8 scores (aarch64) four keys at a time
/// are quantized through a buffer of this size on the stack. Model files are checked against it
/// when they are opened or written, on every CPU, so that a file that opens runs anywhere.
pub const MAX_INT8_HEAD_DIM: usize = 1024;

/// Rows of one head by which work is shared between threads: the NEON microkernels' tile
/// height, and a divisor of QUERY_BLOCK.
const UNIT: usize = 4;
const _: () = assert!(QUERY_BLOCK.is_multiple_of(UNIT));

/// Shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Tokens rounded up to whole 16-column panels.
    fn padded_tokens(&self) -> usize {
        self.tokens.div_ceil(NR) * NR
    }
    /// Columns per head rounded up to whole bf16 pairs.
    fn even_head_dim(&self) -> usize {
        self.head_dim.next_multiple_of(2)
    }
}

/// The precision and kernel of the scores `q k^T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scores {
    /// f32 on the transposed keys.
    F32(F32Kernel),
    /// int8 queries and keys, quantized per token.
    Int8(I8Kernel),
    /// bf16 queries and keys.
    Bf16(Bf16Kernel),
}

/// The precision and kernel of the value product `p v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// f32, values read in place.
    F32(F32Kernel),
    /// Values as halves; the kernel's arithmetic (f32 or half) as [`F16Kernel`] says.
    F16(F16Kernel),
}

/// The kernels of both products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionKernels {
    /// Scores.
    pub scores: Scores,
    /// Value product.
    pub values: Values,
}

impl AttentionKernels {
    /// Both products in f32: the reference path, for f32 and f16 models.
    pub fn f32(kernel: F32Kernel) -> Self {
        AttentionKernels { scores: Scores::F32(kernel), values: Values::F32(kernel) }
    }

    /// For int8 models: on aarch64, int8 scores on `i8`, and values in half precision where
    /// `f16` computes in half (Cortex-A76), else in f32 on `f32`. On x86-64, scores in bf16
    /// where `bf16` is a SIMD kernel (AVX512-BF16) and values in f32; int8 scores are slower
    /// there (`cargo bench --bench kernels`: ViT-B/16 attention 1.4 ms on
    /// `f32_gemm_8x32_avx512` against 3.7 ms with `i8_gemm_8x32c4_avx512vnni` scores, whose
    /// quantization and short K = 64 tiles cost more than the multiplies save). bf16 values
    /// (commit bc9ac37) saved little more (ViT-B/16: 1.77 ms f32, 1.25 ms bf16 scores, 1.11 ms
    /// both) and took the real ViT-Tiny's top-1 agreement with f32 below the 98% that
    /// `tests/int8.rs` asserts on its augmented photos (BENCHMARKS.md).
    pub fn int8(i8: I8Kernel, f16: F16Kernel, f32: F32Kernel, bf16: Bf16Kernel) -> Self {
        if cfg!(target_arch = "x86_64") {
            let scores = if bf16 != Bf16Kernel::Scalar { Scores::Bf16(bf16) } else { Scores::F32(f32) };
            return AttentionKernels { scores, values: Values::F32(f32) };
        }
        let values = if f16.half_arithmetic() { Values::F16(f16) } else { Values::F32(f32) };
        AttentionKernels { scores: Scores::Int8(i8), values }
    }

    /// The kernels' names, scores first.
    pub fn names(&self) -> [&'static str; 2] {
        let scores = match self.scores {
            Scores::F32(k) => k.name(),
            Scores::Int8(k) => k.name(),
            Scores::Bf16(k) => k.name(),
        };
        let values = match self.values {
            Values::F32(k) => k.name(),
            Values::F16(k) => k.name(),
        };
        [scores, values]
    }
}

/// Every buffer attention needs, for any [`AttentionKernels`]: made once, reused by every call.
pub struct AttentionScratch {
    shape: AttentionShape,
    slots: usize,
    /// f32 scores: keys transposed per head, `head_dim x padded tokens`.
    keys_t: AlignedVec<f32>,
    /// One `QUERY_BLOCK x padded tokens` score tile per slot.
    scores: AlignedVec<f32>,
    /// int8 scores: keys per head packed k4n16 (`padded tokens x padded head_dim`), their
    /// scales and sums, and each column group's epilogue factors.
    keys_i8: AlignedVec<i8>,
    key_scales: Vec<f32>,
    key_sums: Vec<i32>,
    key_columns: Vec<Columns>,
    /// int8 scores: one block of quantized queries and their scales per slot.
    queries_i8: AlignedVec<i8>,
    query_scales: Vec<f32>,
    /// Half-precision values: per head, k1n16 panels of 16 channels x tokens.
    values_f16: AlignedVec<u16>,
    /// Half-precision values: one block of probabilities as halves per slot.
    probs_f16: AlignedVec<u16>,
    /// bf16 scores: keys per head packed k2n16 (`padded tokens x even head_dim`).
    keys_bf16: AlignedVec<u16>,
    /// bf16 scores: one block of queries per slot, `even head_dim` apart.
    queries_bf16: AlignedVec<u16>,
}

impl AttentionScratch {
    /// Scratch for `shape`, letting up to `slots` (head, query block) tasks run at once.
    pub fn new(shape: AttentionShape, slots: usize) -> Self {
        let slots = slots.max(1);
        let (tp, dhp, heads) = (shape.padded_tokens(), padded_k(shape.head_dim), shape.heads);
        let value_panels = shape.head_dim.div_ceil(NR);
        AttentionScratch {
            shape,
            slots,
            keys_t: AlignedVec::zeroed(shape.dim() * tp),
            scores: AlignedVec::zeroed(slots * QUERY_BLOCK * tp),
            keys_i8: AlignedVec::zeroed(heads * tp * dhp),
            key_scales: vec![0.0; heads * tp],
            key_sums: vec![0; heads * tp],
            key_columns: vec![Columns::PLAIN; heads * tp / NR],
            queries_i8: AlignedVec::zeroed(slots * QUERY_BLOCK * dhp),
            query_scales: vec![0.0; slots * QUERY_BLOCK],
            values_f16: AlignedVec::zeroed(heads * value_panels * shape.tokens * NR),
            probs_f16: AlignedVec::zeroed(slots * QUERY_BLOCK * tp),
            keys_bf16: AlignedVec::zeroed(heads * tp * shape.even_head_dim()),
            queries_bf16: AlignedVec::zeroed(slots * QUERY_BLOCK * shape.even_head_dim()),
        }
    }
}

/// Computes `softmax(q k^T / sqrt(head_dim)) v` for every head into `out` (`tokens x dim`) on
/// `kernels`, on up to `threads` threads (at most the scratch's slots), each an even share of
/// the heads x tokens rows.
pub fn attention(
    kernels: AttentionKernels,
    qkv: &[f32],
    out: &mut [f32],
    scratch: &mut AttentionScratch,
    shape: AttentionShape,
    threads: Threads,
) {
    attention_rows(kernels, qkv, out, scratch, shape, shape.tokens, threads);
}

/// [`attention`] for the first `queries` tokens only, against the keys and values of all
/// tokens: rows `0..queries` of `out` (at least `queries x dim` floats), each the same bits
/// as [`attention`] gives it. A classifier that reads only the class token needs no other
/// rows of the last layer.
pub fn attention_rows(
    kernels: AttentionKernels,
    qkv: &[f32],
    out: &mut [f32],
    scratch: &mut AttentionScratch,
    shape: AttentionShape,
    queries: usize,
    threads: Threads,
) {
    let (t, dim) = (shape.tokens, shape.dim());
    assert_eq!(qkv.len(), t * 3 * dim, "attention: qkv buffer size");
    assert!(queries <= t, "attention: {queries} queries of {t} tokens");
    assert!(out.len() >= queries * dim, "attention: output size");
    assert_eq!(scratch.shape, shape, "attention: scratch made for another shape");
    if queries == 0 || dim == 0 {
        return;
    }
    let parallel = threads.get() > 1 && t * t * dim >= 1 << 16;
    prepare_keys(kernels.scores, qkv, scratch, parallel);
    if let Values::F16(_) = kernels.values {
        prepare_values(qkv, scratch, parallel);
    }

    let units = shape.heads * queries.div_ceil(UNIT);
    let slots = scratch.slots.min(if parallel { threads.get() } else { 1 }).min(units);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let tp = shape.padded_tokens();
    let dhp = padded_k(shape.head_dim);
    let dh2 = shape.even_head_dim();
    let AttentionScratch {
        keys_t,
        scores,
        keys_i8,
        key_columns,
        queries_i8,
        query_scales,
        values_f16,
        probs_f16,
        keys_bf16,
        queries_bf16,
        ..
    } = scratch;
    let shared = Shared { qkv, keys_t, keys_i8, key_columns, values_f16, keys_bf16, shape, kernels };
    type Slot<'a> = (usize, ((((&'a mut [f32], &'a mut [i8]), &'a mut [f32]), &'a mut [u16]), &'a mut [u16]));
    let run = |(slot, ((((scores, quantized), scales), halves), queries_bf16)): Slot<'_>| {
        slot_blocks(slot, slots, shape.heads, queries, |h, i0, rows| {
            let mut tile = Tile {
                scores: &mut *scores,
                queries: &mut *quantized,
                scales: &mut *scales,
                halves: &mut *halves,
                queries_bf16: &mut *queries_bf16,
            };
            // SAFETY: each block writes only its rows i0..i0+rows of head h's columns of `out`,
            // and no two blocks of any slots share a row of a head (`slot_blocks`).
            unsafe { query_block(&shared, &mut tile, out_ptr, h, i0, rows) };
        });
    };
    let (scores, quantized, scales, halves, queries_bf16) = (
        &mut scores[..slots * QUERY_BLOCK * tp],
        &mut queries_i8[..slots * QUERY_BLOCK * dhp],
        &mut query_scales[..slots * QUERY_BLOCK],
        &mut probs_f16[..slots * QUERY_BLOCK * tp],
        &mut queries_bf16[..slots * QUERY_BLOCK * dh2],
    );
    if slots > 1 {
        let bufs = scores.par_chunks_mut(QUERY_BLOCK * tp).zip(quantized.par_chunks_mut(QUERY_BLOCK * dhp));
        let bufs = bufs.zip(scales.par_chunks_mut(QUERY_BLOCK)).zip(halves.par_chunks_mut(QUERY_BLOCK * tp));
        let bufs = bufs.zip(queries_bf16.par_chunks_mut(QUERY_BLOCK * dh2));
        bufs.enumerate().for_each(run);
    } else {
        run((0, ((((scores, quantized), scales), halves), queries_bf16)));
    }
}

/// Calls `f(head, first query, rows)` for the blocks of slot `slot` of `slots`: an even share,
/// to a unit of UNIT rows, of the `heads x queries` rows, in blocks of up to QUERY_BLOCK rows
/// of one head. Whole (head, block of 32) tasks dealt out in turn would leave ViT-Ti's four
/// threads 6, 5.2, 5.2 and 2.2 blocks of work (3 heads of 6 blocks and one of 5 rows).
fn slot_blocks(slot: usize, slots: usize, heads: usize, queries: usize, mut f: impl FnMut(usize, usize, usize)) {
    let units_per_head = queries.div_ceil(UNIT);
    let units = heads * units_per_head;
    let (mut unit, end) = (slot * units / slots, (slot + 1) * units / slots);
    while unit < end {
        let (h, first) = (unit / units_per_head, unit % units_per_head);
        let n = (end - unit).min(units_per_head - first).min(QUERY_BLOCK / UNIT);
        let i0 = first * UNIT;
        f(h, i0, (n * UNIT).min(queries - i0));
        unit += n;
    }
}

/// What every task reads.
struct Shared<'a> {
    qkv: &'a [f32],
    keys_t: &'a [f32],
    keys_i8: &'a [i8],
    key_columns: &'a [Columns],
    values_f16: &'a [u16],
    keys_bf16: &'a [u16],
    shape: AttentionShape,
    kernels: AttentionKernels,
}

/// One task slot's buffers.
struct Tile<'a> {
    scores: &'a mut [f32],
    queries: &'a mut [i8],
    scales: &'a mut [f32],
    halves: &'a mut [u16],
    queries_bf16: &'a mut [u16],
}

/// `block[d * tp + j] = src[j * ld + d]` for the block's rows d and the t tokens j, zero from
/// column t to tp: four tokens by four rows at a time, each a 4 x 4 transpose in registers
/// (`trn1`/`trn2` on aarch64, `unpcklps`/`movlhps` on x86-64), one load and one store of four
/// values per row where a value at a time cost a load and a store per value. On x86-64 the
/// keys `KEYS_AHEAD` tokens on are prefetched.
fn transpose_keys(src: &[f32], ld: usize, t: usize, tp: usize, block: &mut [f32]) {
    let n = block.len() / tp;
    let mut j = 0;
    while j + 4 <= t {
        for c in (j + KEYS_AHEAD..t).take(4) {
            for d in (0..n).step_by(16) {
                crate::prefetch(src.as_ptr().wrapping_add(c * ld + d));
            }
        }
        let keys: [&[f32]; 4] = std::array::from_fn(|c| &src[(j + c) * ld..][..n]);
        let mut d = 0;
        while d + 4 <= n {
            let v: [&[f32; 4]; 4] = std::array::from_fn(|c| keys[c][d..d + 4].try_into().unwrap());
            let rows: [&mut [f32; 4]; 4] = {
                let mut rows = block[d * tp + j..].chunks_mut(tp);
                std::array::from_fn(|_| (&mut rows.next().unwrap()[..4]).try_into().unwrap())
            };
            transpose_4x4(v, rows);
            d += 4;
        }
        for d in d..n {
            for (c, key) in keys.iter().enumerate() {
                block[d * tp + j + c] = key[d];
            }
        }
        j += 4;
    }
    for j in j..t {
        let key = &src[j * ld..][..n];
        block.chunks_exact_mut(tp).zip(key).for_each(|(row, &v)| row[j] = v);
    }
    block.chunks_exact_mut(tp).for_each(|row| row[t..].fill(0.0));
}

/// How many tokens ahead [`transpose_keys`] asks for the keys it will read: they sit a whole
/// qkv row apart (9 KB for ViT-B), which the hardware prefetchers did not fetch in time.
const KEYS_AHEAD: usize = 16;

/// `rows[r][c] = v[c][r]`.
#[inline(always)]
fn transpose_4x4(v: [&[f32; 4]; 4], rows: [&mut [f32; 4]; 4]) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; each pointer addresses four floats of an array.
    unsafe {
        use std::arch::aarch64::*;
        let [a, b, c, d] = v.map(|v| vld1q_f32(v.as_ptr()));
        let (ab0, ab1) = (vreinterpretq_f64_f32(vtrn1q_f32(a, b)), vreinterpretq_f64_f32(vtrn2q_f32(a, b)));
        let (cd0, cd1) = (vreinterpretq_f64_f32(vtrn1q_f32(c, d)), vreinterpretq_f64_f32(vtrn2q_f32(c, d)));
        let out = [vtrn1q_f64(ab0, cd0), vtrn1q_f64(ab1, cd1), vtrn2q_f64(ab0, cd0), vtrn2q_f64(ab1, cd1)];
        for (row, o) in rows.into_iter().zip(out) {
            vst1q_f32(row.as_mut_ptr(), vreinterpretq_f32_f64(o));
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is baseline on x86-64; each pointer addresses four floats of an array.
    unsafe {
        use std::arch::x86_64::*;
        let [a, b, c, d] = v.map(|v| _mm_loadu_ps(v.as_ptr()));
        let (ab0, ab1) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
        let (cd0, cd1) = (_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
        let out = [_mm_movelh_ps(ab0, cd0), _mm_movehl_ps(cd0, ab0), _mm_movelh_ps(ab1, cd1), _mm_movehl_ps(cd1, ab1)];
        for (row, o) in rows.into_iter().zip(out) {
            _mm_storeu_ps(row.as_mut_ptr(), o);
        }
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    for (r, row) in rows.into_iter().enumerate() {
        *row = [v[0][r], v[1][r], v[2][r], v[3][r]];
    }
}

/// The keys in the form the scores kernel reads: transposed per head (f32), or quantized per
/// token and packed k4n16 per head (int8), with each 16-token panel's epilogue factors.
fn prepare_keys(scores: Scores, qkv: &[f32], s: &mut AttentionScratch, parallel: bool) {
    let shape = s.shape;
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    let (tp, dhp) = (shape.padded_tokens(), padded_k(dh));
    match scores {
        Scores::F32(_) => {
            // keys_t[h][d][j] = k[j][h*dh + d], zero past the last token: row h*dh + d is
            // column dim + h*dh + d of qkv. A task per 16 rows, which take each key's 16 values
            // from one cache line (a task per row read a line per value: 10 cycles a value on
            // a Cortex-A76).
            const ROWS: usize = 16;
            let transpose = |(i, block): (usize, &mut [f32])| {
                transpose_keys(&qkv[dim + i * ROWS..], 3 * dim, t, tp, block);
            };
            if parallel {
                s.keys_t.par_chunks_mut(ROWS * tp).enumerate().for_each(transpose);
            } else {
                s.keys_t.chunks_mut(ROWS * tp).enumerate().for_each(transpose);
            }
        }
        Scores::Int8(_) => {
            // A task per (head, panel of 16 tokens): quantize each key, pack it, and make the
            // panel's epilogue factors.
            let panel_len = NR * dhp;
            type Panel<'a> = (usize, (((&'a mut [i8], &'a mut [f32]), &'a mut [i32]), &'a mut Columns));
            let pack = |(i, (((panel, scales), sums), columns)): Panel<'_>| {
                let (h, p) = (i / (tp / NR), i % (tp / NR));
                // Four tokens at a time: quantized together, then packed.
                let mut q = [0i8; 4 * MAX_INT8_HEAD_DIM];
                for c0 in (0..NR).step_by(4) {
                    let j0 = p * NR + c0;
                    let real = t.saturating_sub(j0).min(4);
                    if real > 0 {
                        let keys = &qkv[j0 * 3 * dim + dim + h * dh..];
                        let (sc, su) = (&mut scales[c0..c0 + real], &mut sums[c0..c0 + real]);
                        quantize_symmetric_rows(keys, 3 * dim, dh, &mut q[..real * dhp], dhp, sc, su);
                    }
                    // Tokens past the last: zero keys.
                    fill_from(&mut q[..4 * dhp], real * dhp, 0);
                    fill_from(&mut scales[..c0 + 4], c0 + real, 1.0);
                    fill_from(&mut sums[..c0 + 4], c0 + real, 0);
                    // k4n16: group g of token c0 + c at byte g * 64 + (c0 + c) * 4, so the four
                    // tokens' groups g are 16 consecutive bytes.
                    for (g, dst) in panel.chunks_exact_mut(NR * KG).enumerate() {
                        let dst: &mut [i8; 4 * KG] = (&mut dst[c0 * KG..][..4 * KG]).try_into().unwrap();
                        for (c, d) in dst.chunks_exact_mut(KG).enumerate() {
                            d.copy_from_slice(&q[c * dhp + g * KG..][..KG]);
                        }
                    }
                }
                *columns = Columns::int8(None, scales, sums, NR);
            };
            assert!(dhp <= MAX_INT8_HEAD_DIM, "attention: int8 scores take head_dim up to {MAX_INT8_HEAD_DIM}");
            if parallel {
                let tasks = s.keys_i8.par_chunks_mut(panel_len).zip(s.key_scales.par_chunks_mut(NR));
                let tasks = tasks.zip(s.key_sums.par_chunks_mut(NR)).zip(s.key_columns.par_iter_mut());
                tasks.enumerate().for_each(pack);
            } else {
                let tasks = s.keys_i8.chunks_mut(panel_len).zip(s.key_scales.chunks_mut(NR));
                let tasks = tasks.zip(s.key_sums.chunks_mut(NR)).zip(s.key_columns.iter_mut());
                tasks.enumerate().for_each(pack);
            }
        }
        Scores::Bf16(_) => {
            // A task per (head, panel of 16 tokens): the keys rounded to bf16 straight into
            // the panel's k2n16 slots; tokens past the last are zero keys.
            let dh2 = shape.even_head_dim();
            let pack = |(i, panel): (usize, &mut [u16])| {
                let (h, j0) = (i / (tp / NR), i % (tp / NR) * NR);
                let keys = &qkv[(j0 * 3 * dim + dim + h * dh).min(qkv.len())..];
                to_bf16_k2n16(keys, 3 * dim, dh, t.saturating_sub(j0).min(NR), panel);
            };
            if parallel {
                s.keys_bf16.par_chunks_mut(NR * dh2).enumerate().for_each(pack);
            } else {
                s.keys_bf16.chunks_mut(NR * dh2).enumerate().for_each(pack);
            }
        }
    }
}

/// The values as k1n16 halves per head: panel (h, c) holds channels 16c.. of head h, for each
/// token 16 halves; channels past head_dim are zero.
fn prepare_values(qkv: &[f32], s: &mut AttentionScratch, parallel: bool) {
    let shape = s.shape;
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    let panels = dh.div_ceil(NR);
    let convert = |(i, panel): (usize, &mut [u16])| {
        let (h, c0) = (i / panels, (i % panels) * NR);
        let cols = NR.min(dh - c0);
        for (j, row) in panel.chunks_exact_mut(NR).enumerate() {
            to_halves(&qkv[j * 3 * dim + 2 * dim + h * dh + c0..][..cols], &mut row[..cols]);
            fill_from(row, cols, 0);
        }
    };
    if parallel {
        s.values_f16.par_chunks_mut(t * NR).enumerate().for_each(convert);
    } else {
        s.values_f16.chunks_mut(t * NR).enumerate().for_each(convert);
    }
}

const ZEROS: [f32; QUERY_BLOCK] = [0.0; QUERY_BLOCK];

/// One head, one block of queries (`rows` of them, at most QUERY_BLOCK, from query `i0`):
/// scores against every key, softmax, value product.
///
/// # Safety
/// `out` must point to `(i0 + rows) x dim` floats of which no one else reads or writes the
/// block's rows of head `h`'s columns during the call.
unsafe fn query_block(s: &Shared<'_>, tile: &mut Tile<'_>, out: OutPtr, h: usize, i0: usize, rows: usize) {
    let shape = s.shape;
    let (t, dim, dh) = (shape.tokens, shape.dim(), shape.head_dim);
    let (tp, dhp) = (shape.padded_tokens(), padded_k(dh));
    assert!(rows <= QUERY_BLOCK);
    let scale = 1.0 / (dh as f32).sqrt();
    let scores = &mut *tile.scores;
    assert!(scores.len() >= rows * tp);
    let score_block = |scores: &mut [f32], r0: usize, rr: usize, j0: usize, cols: usize| {
        // SAFETY: rows r0..r0+rr, columns j0..j0+cols of the tp-wide scores tile, which this
        // task owns (checked above).
        unsafe { OutBlock::new(scores.as_mut_ptr().add(r0 * tp + j0), tp, rr, cols, Epilogue::Store) }
    };
    // scores[r][j] = q[i0 + r] . k[j] / sqrt(dh)
    match s.kernels.scores {
        Scores::F32(kernel) => {
            let nr = kernel.tile().1;
            let kt = &s.keys_t[h * dh * tp..(h + 1) * dh * tp];
            let q = &s.qkv[i0 * 3 * dim + h * dh..];
            for j0 in (0..tp).step_by(nr) {
                let cols = nr.min(tp - j0);
                let block = score_block(scores, 0, rows, j0, cols);
                kernel.run_block(q, 3 * dim, dh, &kt[j0..], tp, NR, cols / NR, &Columns::PLAIN, block);
            }
        }
        Scores::Int8(kernel) => {
            let nr = kernel.tile().1;
            let flip = if kernel.wants_biased() { -128i8 } else { 0 };
            let (queries, mut sums) = (&mut tile.queries[..rows * dhp], [0i32; QUERY_BLOCK]);
            let first = &s.qkv[i0 * 3 * dim + h * dh..];
            quantize_symmetric_rows(first, 3 * dim, dh, queries, dhp, &mut tile.scales[..rows], &mut sums[..rows]);
            tile.scales[..rows].iter_mut().for_each(|s_q| *s_q *= scale);
            if flip != 0 {
                queries.iter_mut().for_each(|v| *v ^= flip);
            }
            let keys = &s.keys_i8[h * tp * dhp..(h + 1) * tp * dhp];
            let columns = &s.key_columns[h * tp / NR..(h + 1) * tp / NR];
            let factors = Rows { scale: &tile.scales[..rows], offset: &ZEROS[..rows] };
            let q = &tile.queries[..rows * dhp];
            for j0 in (0..tp).step_by(nr) {
                let cols = nr.min(tp - j0);
                let panels = cols / NR;
                // The group's factors: one panel's, or two panels' joined.
                let joined;
                let group = if panels == 1 {
                    &columns[j0 / NR]
                } else {
                    joined = join(&columns[j0 / NR], &columns[j0 / NR + 1]);
                    &joined
                };
                let block = score_block(scores, 0, rows, j0, cols);
                kernel.run_block(q, dhp, &keys[j0 * dhp..(j0 + cols) * dhp], panels, &factors, group, block);
            }
        }
        Scores::Bf16(kernel) => {
            let (nr, dh2) = (kernel.tile().1, shape.even_head_dim());
            let queries = &mut tile.queries_bf16[..rows * dh2];
            for (r, q) in queries.chunks_exact_mut(dh2).enumerate() {
                to_bf16(&s.qkv[(i0 + r) * 3 * dim + h * dh..][..dh], &mut q[..dh]);
                fill_from(q, dh, 0);
            }
            let keys = &s.keys_bf16[h * tp * dh2..(h + 1) * tp * dh2];
            for j0 in (0..tp).step_by(nr) {
                let cols = nr.min(tp - j0);
                let block = score_block(scores, 0, rows, j0, cols);
                kernel.run_block(queries, dh2, dh2 / 2, &keys[j0 * dh2..], NR * dh2, cols / NR, block);
            }
        }
    }
    // Unnormalised probabilities; each output row is scaled by 1 / sum instead (dh values
    // rather than t).
    // int8 scores have the scale folded into the queries'.
    let softmax_scale = if let Scores::Int8(_) = s.kernels.scores { 1.0 } else { scale };
    let mut inv = [0f32; QUERY_BLOCK];
    // The slots past each row's t scores are scratch (the value product reads t).
    softmax_exp_rows(&mut scores[..rows * tp], tp, t, softmax_scale, &mut inv[..rows]);
    // Half-precision kernels read the probabilities as halves: convert them once, not once per
    // panel of values.
    let halves_in = matches!(s.kernels.values, Values::F16(k) if k.half_arithmetic());
    if halves_in {
        for (p, h16) in scores.chunks(tp).zip(tile.halves.chunks_mut(tp)).take(rows) {
            to_halves(&p[..t], &mut h16[..t]);
        }
    }
    // out[i0 + r][h*dh + c] = inv[r] * sum_j e[r][j] * v[j][h*dh + c]
    let nr = match s.kernels.values {
        Values::F32(k) => k.tile().1,
        Values::F16(k) => k.tile().1,
    };
    for c0 in (0..dh).step_by(nr) {
        let cols = nr.min(dh - c0);
        let panels = cols.div_ceil(NR);
        let at = i0 * dim + h * dh + c0;
        // SAFETY: per this function's contract, these rows of head h's columns are valid and
        // written by no one else.
        let block = unsafe { OutBlock::new(out.get().add(at), dim, rows, cols, Epilogue::Store) };
        match s.kernels.values {
            Values::F32(kernel) => {
                let v = &s.qkv[2 * dim + h * dh + c0..];
                // A group narrower than its panels would read past the end of the last value
                // row: the scalar kernel reads only the columns it needs.
                let fits = v.len() >= (t - 1) * 3 * dim + panels * NR;
                let kernel = if fits { kernel } else { F32Kernel::Scalar };
                kernel.run_block(scores, tp, t, v, 3 * dim, NR, panels, &Columns::PLAIN, block);
            }
            Values::F16(kernel) => {
                let first = h * dh.div_ceil(NR) + c0 / NR;
                let v = &s.values_f16[first * t * NR..(first + panels) * t * NR];
                if halves_in {
                    kernel.run_block_halves(tile.halves, tp, t, v, &Columns::PLAIN, block);
                } else {
                    kernel.run_block(scores, tp, t, v, panels, &Columns::PLAIN, block);
                }
            }
        }
    }
    for (r, &f) in inv.iter().enumerate().take(rows) {
        // SAFETY: as for the blocks above: row i0+r of head h's columns.
        let row = unsafe { std::slice::from_raw_parts_mut(out.get().add((i0 + r) * dim + h * dh), dh) };
        row.iter_mut().for_each(|x| *x *= f);
    }
}

/// The factors of two neighbouring 16-column panels as one 32-column group.
fn join(a: &Columns, b: &Columns) -> Columns {
    let mut c = *a;
    c.cols = a.cols + b.cols;
    c.w_scale[NR..].copy_from_slice(&b.w_scale[..NR]);
    c.w_offset[NR..].copy_from_slice(&b.w_offset[..NR]);
    c.w_sum[NR..].copy_from_slice(&b.w_sum[..NR]);
    c
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

    const SHAPES: [(usize, usize, usize); 8] =
        [(1, 1, 1), (5, 3, 24), (17, 4, 16), (50, 2, 80), (197, 3, 64), (10, 5, 7), (257, 2, 64), (40, 1, 33)];

    fn run(kernels: AttentionKernels, qkv: &[f32], shape: AttentionShape, threads: usize, slots: usize) -> Vec<f32> {
        let mut got = vec![f32::NAN; shape.tokens * shape.dim()];
        let mut scratch = AttentionScratch::new(shape, slots);
        attention(kernels, qkv, &mut got, &mut scratch, shape, Threads(threads));
        got
    }

    fn inputs(shape: AttentionShape) -> Vec<f32> {
        let n = shape.tokens * 3 * shape.dim();
        noise(shape.tokens as u64 * 31 + shape.heads as u64, n).iter().map(|x| x * 3.0).collect()
    }

    #[test]
    fn slots_cover_every_row_once_in_even_shares() {
        for (heads, queries) in [(3usize, 197usize), (12, 197), (3, 1), (1, 1), (2, 5), (5, 40), (1, 257)] {
            let units = heads * queries.div_ceil(UNIT);
            for slots in (1..=8).filter(|&s| s <= units) {
                let mut seen = vec![0u8; heads * queries];
                let mut shares = vec![];
                for slot in 0..slots {
                    let mut share = 0;
                    slot_blocks(slot, slots, heads, queries, |h, i0, rows| {
                        assert!((1..=QUERY_BLOCK).contains(&rows) && i0 + rows <= queries, "{h} {i0} {rows}");
                        (i0..i0 + rows).for_each(|i| seen[h * queries + i] += 1);
                        share += rows.div_ceil(UNIT);
                    });
                    shares.push(share);
                }
                assert!(seen.iter().all(|&n| n == 1), "{heads} x {queries} over {slots}: {seen:?}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{heads} x {queries} over {slots}: {shares:?}");
                if slots == 1 {
                    // One slot: blocks of QUERY_BLOCK rows from each head's first query.
                    let mut starts = vec![];
                    slot_blocks(0, 1, heads, queries, |h, i0, _| starts.push((h, i0)));
                    let want: Vec<_> =
                        (0..heads).flat_map(|h| (0..queries).step_by(QUERY_BLOCK).map(move |i| (h, i))).collect();
                    assert_eq!(starts, want);
                }
            }
        }
    }

    #[test]
    fn keys_transpose_value_by_value() {
        for (n, t, tp) in [(16, 197, 208), (16, 4, 16), (7, 13, 16), (3, 3, 3), (16, 1, 16), (5, 0, 4)] {
            let ld = n + 5;
            let src: Vec<f32> = (0..t * ld + n).map(|i| i as f32 + 0.5).collect();
            let mut block = vec![f32::NAN; n * tp];
            transpose_keys(&src, ld, t, tp, &mut block);
            for d in 0..n {
                for j in 0..tp {
                    let want = if j < t { src[j * ld + d] } else { 0.0 };
                    assert_eq!(block[d * tp + j].to_bits(), want.to_bits(), "n {n} t {t}: [{d}][{j}]");
                }
            }
        }
    }

    #[test]
    fn f32_attention_matches_the_reference_and_every_kernel_gives_the_same_bits() {
        for &(tokens, heads, head_dim) in &SHAPES {
            let shape = AttentionShape { tokens, heads, head_dim };
            let qkv = inputs(shape);
            let mut want = vec![0.0; tokens * shape.dim()];
            attention_reference(&qkv, &mut want, shape);
            let first = run(AttentionKernels::f32(F32Kernel::Scalar), &qkv, shape, 1, 1);
            for kernel in F32Kernel::available() {
                for (threads, slots) in [(1, 1), (2, 2), (3, 8)] {
                    let got = run(AttentionKernels::f32(kernel), &qkv, shape, threads, slots);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() < 1e-5, "{} {shape:?} t={threads} [{i}]: {a} vs {b}", kernel.name());
                    }
                    assert_eq!(first, got, "{} {shape:?} threads {threads}", kernel.name());
                }
            }
        }
    }

    #[test]
    fn int8_scores_and_half_values_stay_close_and_match_their_twins_bit_for_bit() {
        for &(tokens, heads, head_dim) in &SHAPES {
            let shape = AttentionShape { tokens, heads, head_dim };
            let qkv = inputs(shape);
            let mut want = vec![0.0; tokens * shape.dim()];
            attention_reference(&qkv, &mut want, shape);
            // The twins: scalar int8 scores with f32 or half-precision values.
            let twin_f32 =
                AttentionKernels { scores: Scores::Int8(I8Kernel::Scalar), values: Values::F32(F32Kernel::Scalar) };
            let twin_f16 =
                AttentionKernels { scores: Scores::Int8(I8Kernel::Scalar), values: Values::F16(F16Kernel::Fp16Scalar) };
            let (base32, base16) = (run(twin_f32, &qkv, shape, 1, 1), run(twin_f16, &qkv, shape, 1, 1));
            // Scores off by int8 rounding of q and k (|q|, |k| up to 3, head_dim terms), values by
            // half rounding: a few percent of the outputs' scale (3).
            for (name, got) in [("int8/f32", &base32), ("int8/f16", &base16)] {
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 0.15, "{name} {shape:?}: {worst}");
            }
            for i8k in I8Kernel::available() {
                for (threads, slots) in [(1, 1), (3, 8)] {
                    for values in [Values::F32(F32Kernel::best()), Values::F16(F16Kernel::Fp16Scalar)] {
                        let kernels = AttentionKernels { scores: Scores::Int8(i8k), values };
                        let want = if matches!(values, Values::F32(_)) { &base32 } else { &base16 };
                        let got = run(kernels, &qkv, shape, threads, slots);
                        assert_eq!(&got, want, "{} {shape:?} threads {threads} {values:?}", i8k.name());
                    }
                }
            }
            for f16k in F16Kernel::available().into_iter().filter(|k| k.half_arithmetic()) {
                let kernels = AttentionKernels { scores: Scores::Int8(I8Kernel::best()), values: Values::F16(f16k) };
                assert_eq!(run(kernels, &qkv, shape, 2, 4), base16, "{} {shape:?}", f16k.name());
            }
        }
    }

    #[test]
    fn bf16_scores_stay_close_and_match_their_twin_bit_for_bit() {
        let twin =
            AttentionKernels { scores: Scores::Bf16(Bf16Kernel::Scalar), values: Values::F32(F32Kernel::Scalar) };
        for &(tokens, heads, head_dim) in &SHAPES {
            let shape = AttentionShape { tokens, heads, head_dim };
            let qkv = inputs(shape);
            let mut want = vec![0.0; tokens * shape.dim()];
            attention_reference(&qkv, &mut want, shape);
            let base = run(twin, &qkv, shape, 1, 1);
            // Queries and keys each rounded to 8 significant bits (relative error up to 2^-9):
            // scores of up to head_dim terms of |q k| <= 9.
            let worst = base.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 0.05, "bf16 {shape:?}: {worst}");
            for kernel in Bf16Kernel::available() {
                let kernels = AttentionKernels { scores: Scores::Bf16(kernel), values: Values::F32(F32Kernel::best()) };
                for (threads, slots) in [(1, 1), (2, 2), (3, 8)] {
                    let got = run(kernels, &qkv, shape, threads, slots);
                    assert!(
                        got.iter().zip(&base).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{} {shape:?} threads {threads}",
                        kernel.name()
                    );
                }
            }
        }
    }

    #[test]
    fn the_first_rows_alone_are_the_same_bits_as_in_the_whole_and_nothing_else_is_written() {
        let mut all = vec![AttentionKernels::f32(F32Kernel::best())];
        for i8k in I8Kernel::available() {
            all.push(AttentionKernels { scores: Scores::Int8(i8k), values: Values::F32(F32Kernel::best()) });
        }
        for f16k in F16Kernel::available() {
            all.push(AttentionKernels { scores: Scores::Int8(I8Kernel::best()), values: Values::F16(f16k) });
        }
        for k in Bf16Kernel::available() {
            all.push(AttentionKernels { scores: Scores::Bf16(k), values: Values::F32(F32Kernel::best()) });
        }
        for &(tokens, heads, head_dim) in &SHAPES {
            let shape = AttentionShape { tokens, heads, head_dim };
            let qkv = inputs(shape);
            let dim = shape.dim();
            for &kernels in &all {
                let whole = run(kernels, &qkv, shape, 2, 2);
                for queries in [0, 1, 2, QUERY_BLOCK - 1, QUERY_BLOCK, QUERY_BLOCK + 1, tokens] {
                    let queries = queries.min(tokens);
                    for threads in [1, 3] {
                        let mut got = vec![f32::NAN; tokens * dim];
                        let mut scratch = AttentionScratch::new(shape, threads);
                        attention_rows(kernels, &qkv, &mut got, &mut scratch, shape, queries, Threads(threads));
                        let what = format!("{:?} {shape:?} {queries} queries, {threads} threads", kernels.names());
                        let (rows, rest) = got.split_at(queries * dim);
                        assert!(rows.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                        assert!(rest.iter().all(|v| v.is_nan()), "{what}: wrote past its rows");
                    }
                }
            }
        }
    }
}
