//! What happens to a finished register tile on its way to the output, for every GEMM: int32
//! tiles are dequantized, the bias is added, then the result is stored, activated or added to
//! the output (the residual connection).
//!
//! `finish_f32` and `finish_i32` are the scalar twins, reading a tile from memory. The NEON
//! and AVX-512 versions finish tiles straight from registers with the same operations in the
//! same order (fused multiply-adds where the twin uses `mul_add`), so every kernel's output is
//! bit-identical to its twin's.
//!
//! Dequantization: an int8 tile holds `acc = sum_k qa[k] * qw[k]`, where the activation row is
//! `x = sa * qa + za` and the weight channel `w = ws * qw`. So
//! `sum_k x[k] w[k] = ws * (sa * acc + za * sum_k qw[k])`, computed as
//! `acc * (sa * ws) + (za * (ws * wsum) + bias)`, two fused multiply-adds per output.

use super::{OutBlock, NR_MAX};
use crate::rows::activation::Activation;

/// What happens to `tile + bias` before it lands in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = value`.
    Store,
    /// `out = act(value)`.
    Activate(Activation),
    /// `out += value`: the residual connection.
    Accumulate,
}

/// The factors that turn a block's int32 sums into floats: per column (output channel) the
/// weight scale and the sum of its quantized weights, per row the activation scale and offset.
#[derive(Clone, Copy, Debug)]
pub struct Dequant<'a> {
    /// Weight scale per column of the block.
    pub w_scale: &'a [f32],
    /// Sum of the quantized weights per column of the block.
    pub w_sum: &'a [i32],
    /// Activation scale per row of the block.
    pub a_scale: &'a [f32],
    /// Activation offset per row of the block.
    pub a_offset: &'a [f32],
}

/// `ws * wsum` for one column: the weight of the row's offset.
#[inline(always)]
pub(crate) fn offset_weight(w_scale: f32, w_sum: i32) -> f32 {
    w_scale * w_sum as f32
}

/// The twin for f32 tiles: `acc[r * stride + c]` plus the bias, then the epilogue.
pub(crate) fn finish_f32(acc: &[f32], stride: usize, out: &mut OutBlock<'_>) {
    let cols = out.cols;
    for r in 0..out.rows {
        let mut v = [0f32; NR_MAX];
        let v = &mut v[..cols];
        v.copy_from_slice(&acc[r * stride..r * stride + cols]);
        if let Some(b) = out.bias {
            v.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        let epilogue = out.epilogue;
        apply(v, epilogue, out.row(r));
    }
}

/// The twin for int32 tiles: `acc[r * stride + c]` dequantized (the bias folded in), then
/// the epilogue.
pub(crate) fn finish_i32(acc: &[i32], stride: usize, dq: &Dequant<'_>, out: &mut OutBlock<'_>) {
    let cols = out.cols;
    for r in 0..out.rows {
        let (sa, za) = (dq.a_scale[r], dq.a_offset[r]);
        let mut v = [0f32; NR_MAX];
        for c in 0..cols {
            let wa = sa * dq.w_scale[c];
            let ow = offset_weight(dq.w_scale[c], dq.w_sum[c]);
            let zb = match out.bias {
                Some(b) => za.mul_add(ow, b[c]),
                None => za * ow,
            };
            v[c] = (acc[r * stride + c] as f32).mul_add(wa, zb);
        }
        let epilogue = out.epilogue;
        apply(&mut v[..cols], epilogue, out.row(r));
    }
}

/// Stores, activates or accumulates one row of finished values.
#[inline(always)]
fn apply(v: &mut [f32], epilogue: Epilogue, dst: &mut [f32]) {
    match epilogue {
        Epilogue::Store => dst.copy_from_slice(v),
        Epilogue::Activate(act) => {
            act.apply_slice(v);
            dst.copy_from_slice(v);
        }
        Epilogue::Accumulate => dst.iter_mut().zip(v.iter()).for_each(|(d, v)| *d += v),
    }
}

/// The epilogue on NEON registers: a 16-column row as four f32x4.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    use super::{Dequant, Epilogue, OutBlock};
    use crate::rows::activation::{gelu_f32x4, Activation};

    /// Finishes the tile `c[r][j]` (row r, columns 4j..4j+4) of f32 sums: bias, epilogue, store
    /// of the block's rows and columns.
    #[inline(always)]
    pub(crate) fn finish_f32<const MR: usize>(c: &[[float32x4_t; 4]; MR], out: &mut OutBlock<'_>) {
        // SAFETY: NEON is baseline on aarch64; the intrinsics below only touch registers.
        unsafe {
            let bias = load_cols(out.bias, out.cols);
            for (r, row) in c.iter().enumerate().take(out.rows) {
                let mut v = *row;
                if let Some(b) = bias {
                    v = std::array::from_fn(|j| vaddq_f32(v[j], b[j]));
                }
                finish_row(v, r, out);
            }
        }
    }

    /// Finishes the tile `c[r][j]` of int32 sums: dequantized as [`super::finish_i32`] does,
    /// then the epilogue.
    #[inline(always)]
    pub(crate) fn finish_i32<const MR: usize>(c: &[[int32x4_t; 4]; MR], dq: &Dequant<'_>, out: &mut OutBlock<'_>) {
        // SAFETY: NEON is baseline on aarch64; the intrinsics below touch registers, except the
        // loads of `sums`, which holds 16 values.
        unsafe {
            let cols = out.cols;
            let ws = load_cols(Some(dq.w_scale), cols).expect("scales");
            let mut sums = [0i32; 16];
            sums[..cols].copy_from_slice(&dq.w_sum[..cols]);
            let ow: [float32x4_t; 4] =
                std::array::from_fn(|j| vmulq_f32(ws[j], vcvtq_f32_s32(vld1q_s32(sums.as_ptr().add(4 * j)))));
            let bias = load_cols(out.bias, cols);
            for (r, row) in c.iter().enumerate().take(out.rows) {
                let (sa, za) = (dq.a_scale[r], dq.a_offset[r]);
                let v = std::array::from_fn(|j| {
                    let wa = vmulq_n_f32(ws[j], sa);
                    let zb = match bias {
                        Some(b) => vfmaq_n_f32(b[j], ow[j], za),
                        None => vmulq_n_f32(ow[j], za),
                    };
                    vfmaq_f32(zb, vcvtq_f32_s32(row[j]), wa)
                });
                finish_row(v, r, out);
            }
        }
    }

    /// Up to 16 per-column values as four f32x4, zero past `cols`.
    #[inline(always)]
    fn load_cols(v: Option<&[f32]>, cols: usize) -> Option<[float32x4_t; 4]> {
        let v = v?;
        let mut buf = [0f32; 16];
        let src: &[f32] = if cols == 16 {
            &v[..16]
        } else {
            buf[..cols].copy_from_slice(&v[..cols]);
            &buf
        };
        // SAFETY: `src` holds 16 floats.
        Some(std::array::from_fn(|j| unsafe { vld1q_f32(src.as_ptr().add(4 * j)) }))
    }

    /// Stores, activates or accumulates row `r` of the block (16 values, `out.cols` kept).
    #[inline(always)]
    fn finish_row(mut v: [float32x4_t; 4], r: usize, out: &mut OutBlock<'_>) {
        if out.epilogue == Epilogue::Activate(Activation::Gelu) {
            v = v.map(gelu_f32x4);
        }
        let cols = out.cols;
        let dst = out.row_ptr(r);
        if cols == 16 {
            // SAFETY: the block's row r holds 16 writable floats (OutBlock's contract).
            unsafe {
                for (j, v) in v.iter().enumerate() {
                    let p = dst.add(4 * j);
                    let x = if out.epilogue == Epilogue::Accumulate { vaddq_f32(vld1q_f32(p), *v) } else { *v };
                    vst1q_f32(p, x);
                }
            }
        } else {
            let mut buf = [0f32; 16];
            // SAFETY: `buf` holds 16 floats.
            v.iter().enumerate().for_each(|(j, v)| unsafe { vst1q_f32(buf.as_mut_ptr().add(4 * j), *v) });
            let accumulate = out.epilogue == Epilogue::Accumulate;
            let row = out.row(r);
            if accumulate {
                row.iter_mut().zip(&buf).for_each(|(d, v)| *d += v);
            } else {
                row.copy_from_slice(&buf[..cols]);
            }
        }
        if let Epilogue::Activate(act) = out.epilogue {
            if act != Activation::Gelu {
                act.apply_slice(out.row(r));
            }
        }
    }
}

/// The epilogue on AVX-512 registers: a 32-column row as two zmm, masked at a ragged edge.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{Dequant, Epilogue, OutBlock};
    use crate::rows::activation::{gelu_f32x16, Activation};

    fn masks(cols: usize) -> (u16, u16) {
        let mask = |n: usize| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
        (mask(cols), mask(cols.saturating_sub(16)))
    }

    /// Finishes rows of f32 sums `c0[r]` (columns 0..16) and `c1[r]` (16..32): bias,
    /// epilogue, masked store of the block's rows and columns.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn finish_f32(c0: &[__m512; 8], c1: &[__m512; 8], out: &mut OutBlock<'_>) {
        let (m0, m1) = masks(out.cols);
        // SAFETY: masked loads touch only the `cols` biases.
        let bias = out.bias.map(|b| unsafe {
            (_mm512_maskz_loadu_ps(m0, b.as_ptr()), _mm512_maskz_loadu_ps(m1, b.as_ptr().wrapping_add(16)))
        });
        for r in 0..out.rows.min(8) {
            let (mut v0, mut v1) = (c0[r], c1[r]);
            if let Some((b0, b1)) = bias {
                (v0, v1) = (_mm512_add_ps(v0, b0), _mm512_add_ps(v1, b1));
            }
            finish_row(v0, v1, r, out);
        }
    }

    /// Finishes rows of int32 sums as [`super::finish_i32`] does, then the epilogue.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn finish_i32(c0: &[__m512i; 8], c1: &[__m512i; 8], dq: &Dequant<'_>, out: &mut OutBlock<'_>) {
        let (m0, m1) = masks(out.cols);
        // SAFETY: masked loads touch only the block's `cols` columns of each slice.
        let (ws, ow, bias) = unsafe {
            let col = |p: *const f32| (_mm512_maskz_loadu_ps(m0, p), _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)));
            let ws = col(dq.w_scale.as_ptr());
            let sum = |m, p: *const i32| _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, p));
            let s = dq.w_sum.as_ptr();
            let ow = (_mm512_mul_ps(ws.0, sum(m0, s)), _mm512_mul_ps(ws.1, sum(m1, s.wrapping_add(16))));
            (ws, ow, out.bias.map(|b| col(b.as_ptr())))
        };
        for r in 0..out.rows.min(8) {
            let (sa, za) = (_mm512_set1_ps(dq.a_scale[r]), _mm512_set1_ps(dq.a_offset[r]));
            let zb = |ow: __m512, b: Option<__m512>| match b {
                Some(b) => _mm512_fmadd_ps(za, ow, b),
                None => _mm512_mul_ps(za, ow),
            };
            let (z0, z1) = (zb(ow.0, bias.map(|b| b.0)), zb(ow.1, bias.map(|b| b.1)));
            let v0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0[r]), _mm512_mul_ps(sa, ws.0), z0);
            let v1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1[r]), _mm512_mul_ps(sa, ws.1), z1);
            finish_row(v0, v1, r, out);
        }
    }

    #[target_feature(enable = "avx512f")]
    fn finish_row(mut v0: __m512, mut v1: __m512, r: usize, out: &mut OutBlock<'_>) {
        let (m0, m1) = masks(out.cols);
        let d = out.row_ptr(r);
        // SAFETY: masked loads and stores touch only the row's `cols` outputs (OutBlock's
        // contract).
        unsafe {
            match out.epilogue {
                Epilogue::Accumulate => {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, d), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, d.wrapping_add(16)), v1);
                }
                Epilogue::Activate(Activation::Gelu) => (v0, v1) = (gelu_f32x16(v0), gelu_f32x16(v1)),
                _ => {}
            }
            _mm512_mask_storeu_ps(d, m0, v0);
            _mm512_mask_storeu_ps(d.wrapping_add(16), m1, v1);
        }
        if let Epilogue::Activate(act) = out.epilogue {
            if act != Activation::Gelu {
                act.apply_slice(out.row(r));
            }
        }
    }
}
