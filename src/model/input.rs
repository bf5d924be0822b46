//! Each Linear layer's input, prepared for its kernel: the f32 rows, the rows rounded to half,
//! or the rows quantized to int8 per row, with LayerNorm and GELU fused into the same row pass
//! where the layer allows; and the patch rows (im2col) the embedding multiplies.

use rayon::prelude::*;

use edgevit_kernels::attention::AttentionShape;
use edgevit_kernels::buffer::AlignedVec;
use edgevit_kernels::gemm::f16::round_row_to_halves;
use edgevit_kernels::gemm::i8::{I8Kernel, QuantBuffer, QuantRows};
use edgevit_kernels::rows::layernorm::layernorm_row;

use super::weights::LinearWeights;
use crate::config::Architecture;

/// The input of a Linear layer: f32 rows, or the same rows quantized to int8 per row.
#[derive(Clone, Copy)]
pub(super) enum LinearInput<'a> {
    F32(&'a [f32]),
    Int8(QuantRows<'a>),
    /// Rows already rounded to half, packed, for a half-precision f16 kernel.
    Halves(&'a [u16]),
}

impl<'a> LinearInput<'a> {
    /// The first `rows` rows (of `k` inputs).
    pub(super) fn first_rows(self, rows: usize, k: usize) -> LinearInput<'a> {
        match self {
            LinearInput::F32(x) => LinearInput::F32(&x[..rows * k]),
            LinearInput::Halves(x) => LinearInput::Halves(&x[..rows * k]),
            LinearInput::Int8(q) => LinearInput::Int8(QuantRows {
                data: &q.data[..rows * q.stride],
                rows,
                scales: &q.scales[..rows],
                offsets: &q.offsets[..rows],
                ..q
            }),
        }
    }
}

/// The mean of the `d`-wide rows of `rows`, summed in f64 so that the order of a few hundred
/// additions does not show.
pub(super) fn mean_of_rows(rows: &[f32], d: usize, out: &mut [f32]) {
    let n = rows.len() / d;
    for (c, o) in out.iter_mut().enumerate() {
        let sum: f64 = rows[c..].iter().step_by(d).map(|&v| v as f64).sum();
        *o = (sum / n as f64) as f32;
    }
}

pub(super) fn attention_shape(a: &Architecture) -> AttentionShape {
    AttentionShape { tokens: a.tokens(), heads: a.num_heads, head_dim: a.head_dim() }
}

/// The input for `lin`: the f32 rows themselves, or those rows quantized per row into `q`.
pub(super) fn prepare<'a>(
    lin: &LinearWeights,
    x: &'a [f32],
    rows: usize,
    k: usize,
    q: &'a mut InputBuffers,
    prep: Prep,
) -> LinearInput<'a> {
    // (A session made before `set_f16_kernel` chose a half-precision kernel has no room for
    // halves: its layers take the f32 path.)
    if lin.is_f16() && prep.halves && q.halves.len() >= rows * k {
        return halves_or_f32(&x[..rows * k], k, &mut q.halves);
    }
    if !lin.is_int8() {
        return LinearInput::F32(&x[..rows * k]);
    }
    let rows = x[..rows * k].par_chunks_exact(k);
    LinearInput::Int8(q.int8.quantize_rows(prep.i8, k, rows, 16, |src, place| place.quantize(src)))
}

/// GELU of `rows` rows of `x` in place, quantized per row into `q` for an int8 layer, in one
/// row pass ([`gelu_quantize_row`]).
pub(super) fn prepare_gelu<'a>(
    x: &'a mut [f32],
    rows: usize,
    k: usize,
    q: &'a mut InputBuffers,
    prep: Prep,
) -> LinearInput<'a> {
    let rows = x[..rows * k].par_chunks_exact_mut(k);
    LinearInput::Int8(q.int8.quantize_rows(prep.i8, k, rows, 16, |src, place| place.gelu_quantize(src)))
}

/// LayerNorm of `rows` rows of `x` into `h`, then [`prepare`] for `lin`, row by row in
/// parallel: an int8 layer quantizes each row as soon as it is normalised, while it is still
/// in L1, instead of in a second pass over `h`.
pub(super) fn normalize_and_prepare<'a>(
    lin: &LinearWeights,
    x: &[f32],
    (gamma, beta, eps): (&[f32], &[f32], f32),
    h: &'a mut [f32],
    rows: usize,
    q: &'a mut InputBuffers,
    prep: Prep,
) -> LinearInput<'a> {
    let d = gamma.len();
    let rows_in = x[..rows * d].par_chunks_exact(d).zip(h[..rows * d].par_chunks_exact_mut(d));
    if lin.is_f16() && prep.halves && q.halves.len() >= rows * d {
        // Each row rounded to half as soon as it is normalised.
        let dst = q.halves[..rows * d].par_chunks_exact_mut(d);
        // Counted, not `all`: every row must be normalised even after one does not fit.
        let overflowing = rows_in.zip(dst).with_min_len(8).map(|((x, h), dst)| {
            layernorm_row(x, h, gamma, beta, eps);
            usize::from(!round_row_to_halves(h, dst))
        });
        if overflowing.sum::<usize>() == 0 {
            return LinearInput::Halves(&q.halves[..rows * d]);
        }
        return LinearInput::F32(&h[..rows * d]);
    }
    if !lin.is_int8() {
        rows_in.with_min_len(8).for_each(|(x, h)| layernorm_row(x, h, gamma, beta, eps));
        return LinearInput::F32(&h[..rows * d]);
    }
    LinearInput::Int8(q.int8.quantize_rows(prep.i8, d, rows_in, 8, |(x, h), place| {
        layernorm_row(x, h, gamma, beta, eps);
        place.quantize(h)
    }))
}

/// Activations prepared for the next layer's kernel: quantized per row for int8 layers, or
/// rounded to half for a half-precision f16 kernel.
pub(super) struct InputBuffers {
    pub(super) int8: QuantBuffer,
    pub(super) halves: AlignedVec<u16>,
}

/// What the preparation of a layer's input needs to know of the kernels.
#[derive(Clone, Copy)]
pub(super) struct Prep {
    pub(super) i8: I8Kernel,
    /// The f16 kernel computes in half precision: give it rows rounded to half once.
    pub(super) halves: bool,
}

/// `x` (rows of `k`) rounded to half into `halves`, row by row in parallel; the rows as they
/// are when one overflows half (the f32 path keeps such a layer exact).
pub(super) fn halves_or_f32<'a>(x: &'a [f32], k: usize, halves: &'a mut [u16]) -> LinearInput<'a> {
    let dst = halves[..x.len()].par_chunks_exact_mut(k);
    if x.par_chunks_exact(k).zip(dst).with_min_len(8).all(|(src, dst)| round_row_to_halves(src, dst)) {
        LinearInput::Halves(&halves[..x.len()])
    } else {
        LinearInput::F32(x)
    }
}

/// Rearranges a CHW image into one row per patch (row-major over the patch grid), each row in
/// the (channel, y, x) order of a flattened convolution kernel.
pub(super) fn im2col(pixels: &[f32], a: &Architecture, out: &mut [f32]) {
    let (p, h, w) = (a.patch_size, a.image_height, a.image_width);
    let gw = w / p;
    for (idx, row) in out.chunks_exact_mut(a.patch_len()).enumerate() {
        let (gy, gx) = (idx / gw, idx % gw);
        for c in 0..a.num_channels {
            for py in 0..p {
                let src = c * h * w + (gy * p + py) * w + gx * p;
                copy_patch_row(&mut row[(c * p + py) * p..][..p], &pixels[src..src + p]);
            }
        }
    }
}

/// One row of one patch's channel. Patches of 16 pixels (every ViT and DeiT checkpoint we know)
/// take a fixed-size copy that compiles to four vector loads and stores: a call to `memcpy`
/// for each row of 64 bytes cost more than the copy (ViT-Ti: 9,408 calls an image).
fn copy_patch_row(dst: &mut [f32], src: &[f32]) {
    match (<&mut [f32; 16]>::try_from(&mut *dst), <&[f32; 16]>::try_from(src)) {
        (Ok(dst), Ok(src)) => *dst = *src,
        _ => dst.copy_from_slice(src),
    }
}

/// The index of the first NaN or infinity in `v`. `x * 0` is 0 for a finite `x` and NaN
/// otherwise, so 16 lanes of sums vectorise where a search stopping at the first hit does not
/// (150 k input values: 0.15 ms -> 0.01 ms).
pub(super) fn first_non_finite(v: &[f32]) -> Option<usize> {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x * 0.0;
        }
    }
    if lanes.iter().all(|&l| l == 0.0) && rest.iter().all(|x| x.is_finite()) {
        return None;
    }
    v.iter().position(|x| !x.is_finite())
}
