//! int8 quantization of activation rows, the input of the int8 GEMMs: each row gets its own
//! scale and offset, `x ~= scale * q + offset` with `q` in [-127, 127], so that the row's
//! whole [min, max] range uses all 255 levels (GELU and LayerNorm outputs are far from
//! symmetric). The GEMM epilogue restores the offset exactly:
//! `sum_k offset * w[n, k] = offset * sums[n]`.
//!
//! With `biased`, each byte holds `q + 128` (as the bit pattern `q ^ 0x80`): the unsigned
//! operand that `vpdpbusd` multiplies, prepared here once instead of in the kernel's loop.
//!
//! [`quantize_row_scalar`] is the twin; the SIMD kernels compute `q = round((x - offset) *
//! inv)` the same way, so all agree bit for bit: the product is rounded once, straight to an
//! integer (half to even), by a fused multiply-add onto 1.5 * 2^23. Within a row's range
//! `|q| <= 127` without a clamp, and on aarch64 `q` is then the low byte of the sum's bits,
//! so the conversion needs no `fcvtns` (two operations on one of the Cortex-A76's vector
//! pipes) and no saturating narrows. (The fused `x * inv - offset * inv` is one operation
//! cheaper still, and measured worse: 97.7% against 98.4% top-1 agreement of ViT-Tiny int8
//! with f32 over 1,036 augmented photos.)

use super::fill_from;

/// Quantizes one activation row into `dst` (the rest of `dst` zeroed) on the best kernel this
/// CPU has. Returns `(scale, offset)`.
pub fn quantize_row(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    assert!(dst.len() >= src.len(), "quantize_row: destination too short");
    #[cfg(target_arch = "x86_64")]
    {
        if super::RowIsa::Avx512.allowed() && is_x86_feature_detected!("avx512bw") {
            return quantize_row_avx512(src, dst, biased);
        }
        if super::RowIsa::Avx2.allowed() {
            return quantize_row_avx2(src, dst, biased);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return quantize_row_neon(src, dst, biased);
    }
    quantize_row_scalar(src, dst, biased)
}

/// [`quantize_row`] of `gelu(src)`: GELU in place in the pass that finds the row's range,
/// then the quantization. This is how GELU reaches an int8 layer: fused into the row pass the
/// quantization needs anyway, it runs with its constants in registers and four vectors in
/// flight, where inside a GEMM epilogue they would compete with the accumulators.
pub fn gelu_quantize_row(src: &mut [f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return gelu_quantize_row_neon(src, dst, biased);
    }
    {
        super::activation::gelu_slice(src);
        quantize_row(src, dst, biased)
    }
}

/// The scalar twin of [`gelu_quantize_row`].
pub fn gelu_quantize_row_scalar(src: &mut [f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    super::activation::gelu_scalar(src);
    quantize_row_scalar(src, dst, biased)
}

/// Quantizes `src` symmetrically into `dst` (`scale = max|x| / 127`, `x / scale` rounded once
/// to an integer, half to even, as in [`quantize_row`]; the rest of `dst` zeroed) on the best
/// kernel this CPU has; returns the scale and the sum of the quantized values. A zero row gets
/// scale 1. Attention's queries and keys, per token and head.
pub fn quantize_symmetric_row(src: &[f32], dst: &mut [i8]) -> (f32, i32) {
    assert!(dst.len() >= src.len(), "quantize_symmetric_row: destination too short");
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return quantize_symmetric_row_neon(src, dst);
    }
    quantize_symmetric_row_scalar(src, dst)
}

/// The scalar twin of [`quantize_symmetric_row`].
pub fn quantize_symmetric_row_scalar(src: &[f32], dst: &mut [i8]) -> (f32, i32) {
    assert!(dst.len() >= src.len(), "quantize_symmetric_row: destination too short");
    let max = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (scale, inv) = symmetric_scale(max);
    let mut sum = 0i32;
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = round_q(v, inv);
        sum += *d as i32;
    }
    fill_from(dst, src.len(), 0);
    (scale, sum)
}

/// [`quantize_symmetric_row`] of `scales.len()` rows, the same bits as a call per row: row
/// `r`'s `len` values at `src[r * src_stride..]` into `dst[r * dst_stride..][..dst_stride]`
/// (zeroed past `len`), its scale and sum into `scales[r]` and `sums[r]`. On aarch64 four rows
/// at a time, whose scales and their inverses take one vector division each instead of two
/// scalar ones a row (attention's queries and keys: 64 values a row, so those divisions were
/// about a third of the cost).
pub fn quantize_symmetric_rows(
    src: &[f32],
    src_stride: usize,
    len: usize,
    dst: &mut [i8],
    dst_stride: usize,
    scales: &mut [f32],
    sums: &mut [i32],
) {
    check_rows(src.len(), src_stride, len, dst.len(), dst_stride, scales.len(), sums.len());
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return quantize_symmetric_rows_neon(src, src_stride, len, dst, dst_stride, scales, sums);
    }
    quantize_symmetric_rows_scalar(src, src_stride, len, dst, dst_stride, scales, sums)
}

/// The scalar twin of [`quantize_symmetric_rows`]: [`quantize_symmetric_row_scalar`] per row.
pub fn quantize_symmetric_rows_scalar(
    src: &[f32],
    src_stride: usize,
    len: usize,
    dst: &mut [i8],
    dst_stride: usize,
    scales: &mut [f32],
    sums: &mut [i32],
) {
    check_rows(src.len(), src_stride, len, dst.len(), dst_stride, scales.len(), sums.len());
    for (r, (scale, sum)) in scales.iter_mut().zip(sums.iter_mut()).enumerate() {
        let row = &src[r * src_stride..][..len];
        (*scale, *sum) = quantize_symmetric_row_scalar(row, &mut dst[r * dst_stride..][..dst_stride]);
    }
}

/// The bounds every row of [`quantize_symmetric_rows`] must fit.
fn check_rows(src: usize, src_stride: usize, len: usize, dst: usize, dst_stride: usize, rows: usize, sums: usize) {
    assert_eq!(rows, sums, "quantize_symmetric_rows: as many sums as scales");
    assert!(dst_stride >= len, "quantize_symmetric_rows: destination rows shorter than {len}");
    assert!(
        rows == 0 || (src >= (rows - 1) * src_stride + len && dst >= rows * dst_stride),
        "quantize_symmetric_rows: {rows} rows do not fit"
    );
}

/// `x * inv` rounded once to an integer (half to even) by the fused add of [`ROUND_MAGIC`]:
/// every quantization's `q`, in [-127, 127] for `x` within the row's scale (the cast saturates
/// anything else, a NaN to 0).
#[inline(always)]
fn round_q(x: f32, inv: f32) -> i8 {
    (x.mul_add(inv, ROUND_MAGIC) - ROUND_MAGIC) as i8
}

/// The symmetric scale `max|x| / 127` and its inverse; scale 1 for a zero, non-finite or
/// vanishingly small maximum (below 127 * f32::MIN_POSITIVE the scale would be subnormal and
/// its inverse inexact; every value then rounds to 0 at scale 1).
#[inline(always)]
fn symmetric_scale(max: f32) -> (f32, f32) {
    let scale = if max >= 127.0 * f32::MIN_POSITIVE && max.is_finite() { max / 127.0 } else { 1.0 };
    (scale, 1.0 / scale)
}

/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds that to an integer n (half
/// to even, the default rounding mode) and leaves `n` in the low bits of the sum's bit pattern
/// (two's complement, so the low byte is `n as i8` for `|n| <= 127`).
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// Ranges below this quantize as a constant row: the scale `range / 254` would be subnormal,
/// its inverse inexact or infinite, and `|q|` no longer bounded by 127 (the error of the
/// constant row is at most the range, below 3.7e-36).
const MIN_RANGE: f32 = 254.0 * f32::MIN_POSITIVE;

/// The row's parameters: `(scale, offset, inv)` with `q = (x - offset) * inv`, or `None` for
/// a constant (or empty, or non-finite, or vanishingly narrow) row, whose every value is the
/// offset. For `lo <= x <= hi`, `|(x - offset) * inv|` exceeds 127 by a few float roundings
/// at most, so it rounds into [-127, 127].
#[inline(always)]
fn params(lo: f32, hi: f32) -> Option<(f32, f32, f32)> {
    let range = hi - lo;
    if range.is_nan() || range < MIN_RANGE || range.is_infinite() {
        return None;
    }
    let offset = range.mul_add(0.5, lo);
    let scale = range / 254.0;
    let inv = 1.0 / scale;
    Some((scale, offset, inv))
}

/// A constant row: every byte `q = 0`.
fn constant(dst: &mut [i8], lo: f32, flip: i8) -> (f32, f32) {
    dst.fill(flip);
    (1.0, if lo.is_finite() { lo } else { 0.0 })
}

/// The scalar twin.
pub fn quantize_row_scalar(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
    assert!(dst.len() >= src.len(), "quantize_row: destination too short");
    let (lo, hi) = src.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let flip = if biased { -128i8 } else { 0 };
    let Some((scale, offset, inv)) = params(lo, hi) else { return constant(dst, lo, flip) };
    quantize_tail(src, dst, offset, inv, flip, 0);
    fill_from(dst, src.len(), flip);
    (scale, offset)
}

/// `dst[i] = round((src[i] - offset) * inv) ^ flip` for `i >= from` ([`round_q`]).
#[inline(always)]
fn quantize_tail(src: &[f32], dst: &mut [i8], offset: f32, inv: f32, flip: i8, from: usize) {
    for (d, &v) in dst[from..].iter_mut().zip(&src[from..]) {
        *d = round_q(v - offset, inv) ^ flip;
    }
}

#[cfg(target_arch = "aarch64")]
pub use neon::{gelu_quantize_row_neon, quantize_row_neon, quantize_symmetric_row_neon, quantize_symmetric_rows_neon};

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::activation::{gelu, gelu_chunks_neon};
    use super::*;
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// Four q registers in flight for the range and for the conversion of 16 values at a time.
    pub fn quantize_row_neon(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
        assert!(dst.len() >= src.len(), "quantize_row: destination too short");
        // SAFETY: `range` only reads `src`.
        let Some((l, h)) = (unsafe { range(src.as_ptr() as *mut f32, src.len(), false) }) else {
            return quantize_row_scalar(src, dst, biased);
        };
        quantize(src, dst, biased, l, h)
    }

    /// [`super::quantize_symmetric_row`]: the maximum magnitude in four q registers, then 16
    /// values per step: `fmla` onto 1.5 * 2^23, the low byte of each lane by three `uzp1`
    /// (as in `quantize_chunks16`), and the sum by pairwise widening adds.
    pub fn quantize_symmetric_row_neon(src: &[f32], dst: &mut [i8]) -> (f32, i32) {
        assert!(dst.len() >= src.len(), "quantize_symmetric_row: destination too short");
        let whole = src.len() / 16 * 16;
        // SAFETY: NEON is baseline on aarch64; `src` holds `whole` floats.
        let m = unsafe { vmaxvq_f32(max_abs(src.as_ptr(), whole)) };
        let max = src[whole..].iter().fold(m, |m, v| m.max(v.abs()));
        if !m.is_finite() || !max.is_finite() {
            // A NaN or an infinity (NEON's max keeps a NaN, the twin's skips it): values
            // beyond the scale, which the twin saturates and the low bytes would not.
            return quantize_symmetric_row_scalar(src, dst);
        }
        let (scale, inv) = symmetric_scale(max);
        (scale, symmetric_finish(src, dst, inv))
    }

    /// The quantization pass of a symmetric row once its scale is known: `dst` gets `src`'s
    /// bytes (zeroed past its length); returns their sum.
    #[inline(always)]
    fn symmetric_finish(src: &[f32], dst: &mut [i8], inv: f32) -> i32 {
        let (len, whole) = (src.len(), src.len() / 16 * 16);
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        // SAFETY (every load and store below): NEON is baseline on aarch64; each index
        // i + 16 <= whole <= len <= dst.len() (the callers' contract).
        unsafe {
            let (magic, vinv) = (vdupq_n_f32(ROUND_MAGIC), vdupq_n_f32(inv));
            let mut sums = vdupq_n_s32(0);
            for i in (0..whole).step_by(16) {
                let t: [int16x8_t; 4] = std::array::from_fn(|j| {
                    vreinterpretq_s16_f32(vfmaq_f32(magic, vld1q_f32(sp.add(i + 4 * j)), vinv))
                });
                let (h0, h1) = (vuzp1q_s16(t[0], t[1]), vuzp1q_s16(t[2], t[3]));
                let b = vuzp1q_s8(vreinterpretq_s8_s16(h0), vreinterpretq_s8_s16(h1));
                vst1q_s8(dp.add(i), b);
                sums = vpadalq_s16(sums, vpaddlq_s8(b));
            }
            let mut sum = vaddvq_s32(sums);
            for (d, &v) in dst[whole..len].iter_mut().zip(&src[whole..]) {
                *d = round_q(v, inv);
                sum += *d as i32;
            }
            fill_from(dst, len, 0);
            sum
        }
    }

    /// The maximum magnitude of the vector part (`whole` values) of the row at `p`, NaN kept.
    ///
    /// # Safety
    /// `p` must address `whole` readable floats, `whole` a multiple of 16.
    #[inline(always)]
    unsafe fn max_abs(p: *const f32, whole: usize) -> float32x4_t {
        // SAFETY: every index i + 16 <= whole (the caller's contract).
        unsafe {
            let mut mx = [vdupq_n_f32(0.0); 4];
            for i in (0..whole).step_by(16) {
                for (j, m) in mx.iter_mut().enumerate() {
                    *m = vmaxq_f32(*m, vabsq_f32(vld1q_f32(p.add(i + 4 * j))));
                }
            }
            vmaxq_f32(vmaxq_f32(mx[0], mx[1]), vmaxq_f32(mx[2], mx[3]))
        }
    }

    /// [`super::quantize_symmetric_rows`]: four rows at a time, their maxima gathered into one
    /// vector by pairwise maxima, their scales and inverses by one vector division each (the
    /// same IEEE quotients as the twin's scalar ones). A group with a NaN or an infinity takes
    /// the twin; leftover rows take [`quantize_symmetric_row_neon`].
    pub fn quantize_symmetric_rows_neon(
        src: &[f32],
        src_stride: usize,
        len: usize,
        dst: &mut [i8],
        dst_stride: usize,
        scales: &mut [f32],
        sums: &mut [i32],
    ) {
        check_rows(src.len(), src_stride, len, dst.len(), dst_stride, scales.len(), sums.len());
        let (rows, whole) = (scales.len(), len / 16 * 16);
        let row = |r: usize| &src[r * src_stride..][..len];
        let mut r = 0;
        while r + 4 <= rows {
            // SAFETY: NEON is baseline on aarch64; each row holds `len >= whole` floats.
            let maxima = unsafe {
                let m: [float32x4_t; 4] = std::array::from_fn(|k| max_abs(row(r + k).as_ptr(), whole));
                vpmaxq_f32(vpmaxq_f32(m[0], m[1]), vpmaxq_f32(m[2], m[3]))
            };
            let mut max = [0f32; 4];
            // SAFETY: `max` holds four floats.
            unsafe { vst1q_f32(max.as_mut_ptr(), maxima) };
            // (A NaN in a vector part is seen before the tails' `f32::max` could skip it.)
            let mut finite = max.iter().all(|m| m.is_finite());
            for (k, m) in max.iter_mut().enumerate() {
                *m = row(r + k)[whole..].iter().fold(*m, |m, v| m.max(v.abs()));
                finite &= m.is_finite();
            }
            let (scales4, sums4) = (&mut scales[r..r + 4], &mut sums[r..r + 4]);
            let dst4 = &mut dst[r * dst_stride..(r + 4) * dst_stride];
            if !finite {
                // As in the single-row kernel: the twin saturates values beyond the scale.
                quantize_symmetric_rows_scalar(
                    &src[r * src_stride..],
                    src_stride,
                    len,
                    dst4,
                    dst_stride,
                    scales4,
                    sums4,
                );
                r += 4;
                continue;
            }
            // `symmetric_scale` for four rows: max / 127, or 1 below 127 * MIN_POSITIVE (every
            // maximum is finite here), then 1 / scale.
            let (mut scale, mut inv) = ([0f32; 4], [0f32; 4]);
            // SAFETY: register arithmetic, and stores of four floats into four-float arrays.
            unsafe {
                let m = vld1q_f32(max.as_ptr());
                let small = vcltq_f32(m, vdupq_n_f32(127.0 * f32::MIN_POSITIVE));
                let s = vbslq_f32(small, vdupq_n_f32(1.0), vdivq_f32(m, vdupq_n_f32(127.0)));
                vst1q_f32(scale.as_mut_ptr(), s);
                vst1q_f32(inv.as_mut_ptr(), vdivq_f32(vdupq_n_f32(1.0), s));
            }
            for k in 0..4 {
                scales4[k] = scale[k];
                sums4[k] = symmetric_finish(row(r + k), &mut dst4[k * dst_stride..][..dst_stride], inv[k]);
            }
            r += 4;
        }
        for r in r..rows {
            (scales[r], sums[r]) = quantize_symmetric_row_neon(row(r), &mut dst[r * dst_stride..][..dst_stride]);
        }
    }

    /// [`super::gelu_quantize_row`]: GELU of four vectors at a time, stored back while the
    /// range is taken, then the quantization.
    pub fn gelu_quantize_row_neon(src: &mut [f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
        assert!(dst.len() >= src.len(), "quantize_row: destination too short");
        // SAFETY: `src` is exclusively borrowed, so `range` may write GELU into it.
        let Some((l, h)) = (unsafe { range(src.as_mut_ptr(), src.len(), true) }) else {
            // GELU is in `src` already, the twin's bits.
            return quantize_row_scalar(src, dst, biased);
        };
        quantize(src, dst, biased, l, h)
    }

    /// The minimum and maximum of `len` floats at `p`, first replacing each by its GELU when
    /// `gelu_first` is set (eight at a time then, in `gelu_chunks_neon`'s asm loop); `None`
    /// (GELU applied all the same) when the vector part holds a NaN: the caller then takes
    /// the twin for that row.
    ///
    /// # Safety
    /// `p` must address `len` readable floats, writable too when `gelu_first` is set.
    #[inline(always)]
    unsafe fn range(p: *mut f32, len: usize, gelu_first: bool) -> Option<(f32, f32)> {
        let step = if gelu_first { 8 } else { 16 };
        let whole = len / step * step;
        // SAFETY (every load and store below): NEON is baseline on aarch64; each index
        // i + step <= whole <= len, or i < len.
        unsafe {
            let (mut lo, mut hi) = ([vdupq_n_f32(f32::INFINITY); 4], [vdupq_n_f32(f32::NEG_INFINITY); 4]);
            if gelu_first {
                // Whole chunks of eight in the asm loop, the rest one by one below.
                if whole > 0 {
                    let (mut l, mut h) = ([lo[0], lo[1]], [hi[0], hi[1]]);
                    // SAFETY: p addresses len >= whole = 8 * (whole / 8) writable floats (the
                    // caller's contract).
                    gelu_chunks_neon(p, whole / 8, &mut l, &mut h);
                    (lo[0], lo[1], hi[0], hi[1]) = (l[0], l[1], h[0], h[1]);
                }
            } else {
                for i in (0..whole).step_by(16) {
                    for j in 0..4 {
                        let v = vld1q_f32(p.add(i + 4 * j));
                        lo[j] = vminq_f32(lo[j], v);
                        hi[j] = vmaxq_f32(hi[j], v);
                    }
                }
            }
            let mut l = vminvq_f32(vminq_f32(vminq_f32(lo[0], lo[1]), vminq_f32(lo[2], lo[3])));
            let mut h = vmaxvq_f32(vmaxq_f32(vmaxq_f32(hi[0], hi[1]), vmaxq_f32(hi[2], hi[3])));
            if gelu_first {
                for i in whole..len {
                    *p.add(i) = gelu(*p.add(i));
                }
            }
            if l.is_nan() || h.is_nan() {
                // NEON's min and max keep a NaN, the twin's skip it: the twin's range could
                // leave values outside it, which the twin saturates and the low bytes would not.
                return None;
            }
            for i in whole..len {
                (l, h) = (l.min(*p.add(i)), h.max(*p.add(i)));
            }
            Some((l, h))
        }
    }

    /// `dst = ((src - offset) * inv)` rounded to nearest, ties to even, xor-ed with `flip`,
    /// for `chunks` (at least one) chunks of 16 values of the row's range: the twin's
    /// operations, `fmla` onto [`ROUND_MAGIC`] and the low byte of each lane gathered by three
    /// `uzp1` (llvm-mca: 7.1 Cortex-A76 cycles per 16 values, 17.1 on the A72; with `fcvtns`,
    /// saturating narrows and a clamp 13.1 and 20.1). Every value must lie in the row's range
    /// (a row with a NaN in its vector part goes to the twin: see `range`). In asm for its
    /// alignment: the loop (19 instructions) starts on a 128-byte boundary, so it never
    /// straddles a 4 KB page. Compiled from intrinsics it did, after a change elsewhere moved
    /// it, and qemu splits a block at a page: the cycle estimate of the two halves (26.7 A76
    /// cycles per 16 values against 13.2 as one block) cost 1.4 M cycles of ViT-Ti int8 with no
    /// instruction changed.
    ///
    /// # Safety
    /// `src` must address `16 * chunks` readable floats and `dst` as many writable bytes.
    #[inline(always)]
    unsafe fn quantize_chunks16(
        src: *const f32,
        dst: *mut i8,
        chunks: usize,
        offset: float32x4_t,
        inv: float32x4_t,
        flip: int8x16_t,
    ) {
        // SAFETY: the loads stay in the 16 * chunks floats at src, the stores in as many
        // bytes at dst; only the declared registers are written. The padding is jumped over.
        unsafe {
            asm!(
                "b 1f",
                ".p2align 7",
                "1:",
                "ldp q4, q5, [{s}], #32",
                "ldp q6, q7, [{s}], #32",
                // The fused multiply-adds' addend, loaded into the registers they write.
                "ldp q20, q21, [{m}]",
                "ldp q22, q23, [{m}]",
                "fsub v4.4s, v4.4s, v16.4s", "fsub v5.4s, v5.4s, v16.4s",
                "fsub v6.4s, v6.4s, v16.4s", "fsub v7.4s, v7.4s, v16.4s",
                "fmla v20.4s, v4.4s, v17.4s", "fmla v21.4s, v5.4s, v17.4s",
                "fmla v22.4s, v6.4s, v17.4s", "fmla v23.4s, v7.4s, v17.4s",
                // The low byte of each 32-bit lane: q.
                "uzp1 v20.8h, v20.8h, v21.8h",
                "uzp1 v22.8h, v22.8h, v23.8h",
                "uzp1 v20.16b, v20.16b, v22.16b",
                "eor v20.16b, v20.16b, v19.16b",
                "str q20, [{d}], #16",
                "subs {n}, {n}, #1",
                "b.ne 1b",
                s = inout(reg) src => _,
                d = inout(reg) dst => _,
                n = inout(reg) chunks => _,
                m = in(reg) MAGIC_PAIR.0.as_ptr(),
                in("v16") offset, in("v17") inv, in("v19") flip,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                options(nostack),
            );
        }
    }

    /// [`ROUND_MAGIC`] in two q registers' worth, for one `ldp`.
    static MAGIC_PAIR: MagicPair = MagicPair([ROUND_MAGIC; 8]);

    /// On a 32-byte boundary, so that the `ldp` never straddles a cache line.
    #[repr(C, align(32))]
    struct MagicPair([f32; 8]);

    /// The quantization pass, once the row's range is known.
    #[inline(always)]
    fn quantize(src: &[f32], dst: &mut [i8], biased: bool, l: f32, h: f32) -> (f32, f32) {
        let (len, whole) = (src.len(), src.len() / 16 * 16);
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let flip = if biased { -128i8 } else { 0 };
        // SAFETY: NEON is baseline on aarch64; src holds len >= whole floats and dst at least
        // as many bytes (checked by the callers).
        unsafe {
            let Some((scale, offset, inv)) = params(l, h) else { return constant(dst, l, flip) };
            let (vi, vo) = (vdupq_n_f32(inv), vdupq_n_f32(offset));
            let vflip = vdupq_n_s8(flip);
            if whole > 0 {
                quantize_chunks16(sp, dp, whole / 16, vo, vi, vflip);
            }
            quantize_tail(src, dst, offset, inv, flip, whole);
            fill_from(dst, len, flip);
            (scale, offset)
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{quantize_row_avx2, quantize_row_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Two zmm pairs for the range, 16 values per conversion: `(x - offset) * inv` fused onto
    /// 1.5 * 2^23 leaves `q` in the sum's low byte (as on NEON), narrowed by truncation. A row
    /// with a NaN goes to the twin, which rounds it to 0: `vcvtps2dq` with a mask for it and
    /// saturating narrows, two more operations and a slower narrow per 16 values, took 4.1% of
    /// a ViT-Ti int8 inference on a Zen 4.
    pub fn quantize_row_avx512(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
        assert!(dst.len() >= src.len(), "quantize_row: destination too short");
        assert!(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"));
        // SAFETY: AVX-512F/BW are present (asserted above).
        unsafe { avx512_body(src, dst, biased) }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    fn avx512_body(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
        let (len, whole) = (src.len(), src.len() / 16 * 16);
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let flip = if biased { -128i8 } else { 0 };
        // SAFETY (every load and store below): each index i + 16 <= whole <= len <= dst.len().
        unsafe {
            let (mut lo, mut hi) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
            let (mut lo1, mut hi1) = (lo, hi);
            let mut unordered: __mmask16 = 0;
            let pairs = len / 32 * 32;
            // The value first: x86's min and max return their second operand when either is
            // a NaN, so a NaN is skipped, as the twin's `f32::min` skips it (and the row then
            // goes to the twin).
            for i in (0..pairs).step_by(32) {
                let (v, v1) = (_mm512_loadu_ps(sp.add(i)), _mm512_loadu_ps(sp.add(i + 16)));
                (lo, hi) = (_mm512_min_ps(v, lo), _mm512_max_ps(v, hi));
                (lo1, hi1) = (_mm512_min_ps(v1, lo1), _mm512_max_ps(v1, hi1));
                unordered |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v1);
            }
            if whole > pairs {
                let v = _mm512_loadu_ps(sp.add(pairs));
                (lo, hi) = (_mm512_min_ps(v, lo), _mm512_max_ps(v, hi));
                unordered |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
            if unordered != 0 {
                return quantize_row_scalar(src, dst, biased);
            }
            let (lo, hi) = (_mm512_min_ps(lo1, lo), _mm512_max_ps(hi1, hi));
            let (l, h) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
            let (l, h) = src[whole..].iter().fold((l, h), |(l, h), &v| (l.min(v), h.max(v)));
            let Some((scale, offset, inv)) = params(l, h) else { return constant(dst, l, flip) };
            let (vi, vo) = (_mm512_set1_ps(inv), _mm512_set1_ps(offset));
            let magic = _mm512_set1_ps(ROUND_MAGIC);
            let vflip = _mm_set1_epi8(flip);
            for i in (0..whole).step_by(16) {
                // Rounded to an integer q in [-127, 127] by the add (every value lies in the
                // row's range): the low byte of each lane's bits.
                let t = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_loadu_ps(sp.add(i)), vo), vi, magic);
                let q = _mm512_cvtepi32_epi8(_mm512_castps_si512(t));
                _mm_storeu_si128(dp.add(i) as *mut __m128i, _mm_xor_si128(q, vflip));
            }
            quantize_tail(src, dst, offset, inv, flip, whole);
            fill_from(dst, len, flip);
            (scale, offset)
        }
    }

    /// Two ymm pairs for the range, 16 values per conversion: as [`quantize_row_avx512`], `q`
    /// is the low byte of `(x - offset) * inv` fused onto 1.5 * 2^23. AVX2 has no truncating
    /// narrow, so `vpshufb` gathers each lane's low bytes and `vpermd` puts the 16 in order. A
    /// row with a NaN goes to the twin.
    pub fn quantize_row_avx2(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
        assert!(dst.len() >= src.len(), "quantize_row: destination too short");
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (asserted above).
        unsafe { avx2_body(src, dst, biased) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body(src: &[f32], dst: &mut [i8], biased: bool) -> (f32, f32) {
        let (len, whole) = (src.len(), src.len() / 16 * 16);
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let flip = if biased { -128i8 } else { 0 };
        // SAFETY (every load and store below): each index i + 16 <= whole <= len <= dst.len().
        unsafe {
            let (mut lo, mut hi) = ([_mm256_set1_ps(f32::INFINITY); 2], [_mm256_set1_ps(f32::NEG_INFINITY); 2]);
            let mut unordered = _mm256_setzero_ps();
            for i in (0..whole).step_by(16) {
                let v = [_mm256_loadu_ps(sp.add(i)), _mm256_loadu_ps(sp.add(i + 8))];
                for j in 0..2 {
                    // The value first: x86's min and max return their second operand when
                    // either is a NaN, so a NaN is skipped, as the twin's `f32::min` skips it
                    // (and the row then goes to the twin).
                    lo[j] = _mm256_min_ps(v[j], lo[j]);
                    hi[j] = _mm256_max_ps(v[j], hi[j]);
                }
                unordered = _mm256_or_ps(unordered, _mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[1]));
            }
            if _mm256_movemask_ps(unordered) != 0 {
                return quantize_row_scalar(src, dst, biased);
            }
            let (mut ll, mut hh) = ([0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(ll.as_mut_ptr(), _mm256_min_ps(lo[0], lo[1]));
            _mm256_storeu_ps(hh.as_mut_ptr(), _mm256_max_ps(hi[0], hi[1]));
            let start = (f32::INFINITY, f32::NEG_INFINITY);
            let (l, h) = ll.iter().zip(&hh).fold(start, |(l, h), (&a, &b)| (l.min(a), h.max(b)));
            let (l, h) = src[whole..].iter().fold((l, h), |(l, h), &v| (l.min(v), h.max(v)));
            let Some((scale, offset, inv)) = params(l, h) else { return constant(dst, l, flip) };
            let (vi, vo) = (_mm256_set1_ps(inv), _mm256_set1_ps(offset));
            let magic = _mm256_set1_ps(ROUND_MAGIC);
            let vflip = _mm_set1_epi8(flip);
            // Each 128-bit lane's four low bytes into its first word (for the first eight
            // values) or its second (the next eight); -1 zeroes a byte.
            const Z: i8 = -1;
            let m0 = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 4, 8, 12, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z));
            let m1 = _mm256_broadcastsi128_si256(_mm_setr_epi8(Z, Z, Z, Z, 0, 4, 8, 12, Z, Z, Z, Z, Z, Z, Z, Z));
            // Words: lane 0 holds values 0-3 and 8-11, lane 1 values 4-7 and 12-15.
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for i in (0..whole).step_by(16) {
                let t = |j: usize| {
                    let x = _mm256_loadu_ps(sp.add(i + 8 * j));
                    _mm256_castps_si256(_mm256_fmadd_ps(_mm256_sub_ps(x, vo), vi, magic))
                };
                let bytes = _mm256_or_si256(_mm256_shuffle_epi8(t(0), m0), _mm256_shuffle_epi8(t(1), m1));
                let q = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, order));
                _mm_storeu_si128(dp.add(i) as *mut __m128i, _mm_xor_si128(q, vflip));
            }
            quantize_tail(src, dst, offset, inv, flip, whole);
            fill_from(dst, len, flip);
            (scale, offset)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowIsa;
    use crate::testing::noise;

    type Kernel = fn(&[f32], &mut [i8], bool) -> (f32, f32);

    fn kernels() -> Vec<(RowIsa, Kernel)> {
        let mut v: Vec<(RowIsa, Kernel)> = vec![(RowIsa::Scalar, quantize_row_scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            if RowIsa::Avx2.supported() {
                v.push((RowIsa::Avx2, quantize_row_avx2));
            }
            if RowIsa::Avx512.supported() && is_x86_feature_detected!("avx512bw") {
                v.push((RowIsa::Avx512, quantize_row_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push((RowIsa::Neon, quantize_row_neon));
        v
    }

    #[test]
    fn symmetric_rows_match_the_twin_and_half_a_step() {
        for len in (0..40).chain([64, 80, 768]) {
            for spread in [1.0f32, 1e-3, 300.0] {
                let x: Vec<f32> = noise(len as u64 * 3 + 1, len).iter().map(|v| v * spread).collect();
                let mut want = vec![9i8; len + 3];
                let (ws, wsum) = quantize_symmetric_row_scalar(&x, &mut want);
                let mut got = vec![9i8; len + 3];
                assert_eq!(quantize_symmetric_row(&x, &mut got), (ws, wsum), "len {len}");
                assert_eq!(got, want, "len {len}");
                assert_eq!(wsum, want.iter().map(|&q| q as i32).sum::<i32>());
                assert!(x.iter().zip(&want).all(|(v, &q)| (q as f32 * ws - v).abs() <= ws * 0.5 + 1e-9), "len {len}");
            }
        }
    }

    #[test]
    fn symmetric_rows_match_a_call_per_row() {
        // Groups of four rows and leftovers, ragged lengths, strides wider than the rows, and
        // rows with a NaN (in the vector part or in the tail), an infinity, all zeros, or a
        // vanishingly small maximum, each in a group of its own.
        for rows in [0usize, 1, 3, 4, 5, 8, 11, 16, 18] {
            for len in [0usize, 5, 16, 21, 64, 80] {
                let (src_stride, dst_stride) = (len + 7, len + 3);
                let n = rows * src_stride;
                let mut x: Vec<f32> = noise((rows * 31 + len) as u64, n).iter().map(|v| v * 5.0).collect();
                let cases =
                    [(1, f32::NAN, 7), (7, f32::NAN, len.max(1) - 1), (10, f32::INFINITY, 3), (16, f32::NAN, 2)];
                for (r, bad, at) in cases {
                    if r < rows && len > 0 {
                        // The row's largest value first: a scale from the other values alone
                        // would leave it far outside.
                        let row = &mut x[r * src_stride..][..len];
                        row[0] = 100.0;
                        row[at % len] = bad;
                    }
                }
                for (r, fill) in [(5, 0.0f32), (13, 1e-39)] {
                    if r < rows {
                        x[r * src_stride..][..len].fill(fill);
                    }
                }
                let mut want = vec![9i8; rows * dst_stride];
                let (mut ws, mut wsum) = (vec![0f32; rows], vec![0i32; rows]);
                quantize_symmetric_rows_scalar(&x, src_stride, len, &mut want, dst_stride, &mut ws, &mut wsum);
                let mut got = vec![9i8; rows * dst_stride];
                let (mut gs, mut gsum) = (vec![0f32; rows], vec![0i32; rows]);
                quantize_symmetric_rows(&x, src_stride, len, &mut got, dst_stride, &mut gs, &mut gsum);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!((bits(&gs), &gsum, &got), (bits(&ws), &wsum, &want), "rows {rows} len {len}");
                for r in 0..rows {
                    let mut one = vec![9i8; dst_stride];
                    let (s1, sum1) = quantize_symmetric_row_scalar(&x[r * src_stride..][..len], &mut one);
                    assert_eq!(
                        (s1.to_bits(), sum1, &one[..]),
                        (ws[r].to_bits(), wsum[r], &want[r * dst_stride..][..dst_stride])
                    );
                }
            }
        }
    }

    #[test]
    fn gelu_then_quantize_matches_the_twin_bit_for_bit() {
        type Fused = fn(&mut [f32], &mut [i8], bool) -> (f32, f32);
        #[cfg(not(target_arch = "aarch64"))]
        let fused: Vec<(&str, Fused)> = vec![("dispatch", gelu_quantize_row)];
        #[cfg(target_arch = "aarch64")]
        let fused: Vec<(&str, Fused)> = vec![("dispatch", gelu_quantize_row), ("neon", gelu_quantize_row_neon)];
        for len in (0..40).chain([197, 768, 3072]) {
            let x: Vec<f32> = noise(len as u64 + 17, len).iter().map(|v| v * 6.0 - 0.5).collect();
            let (mut want_x, mut want) = (x.clone(), vec![3i8; len + 4]);
            let wp = gelu_quantize_row_scalar(&mut want_x, &mut want, false);
            for (name, kernel) in &fused {
                let (mut got_x, mut got) = (x.clone(), vec![3i8; len + 4]);
                let gp = kernel(&mut got_x, &mut got, false);
                assert_eq!((gp.0.to_bits(), gp.1.to_bits()), (wp.0.to_bits(), wp.1.to_bits()), "{name} len {len}");
                assert_eq!(got, want, "{name} len {len}");
                assert!(got_x.iter().zip(&want_x).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} len {len}");
            }
        }
    }

    #[test]
    fn rows_use_their_whole_range() {
        let mut dst = [9i8; 5];
        let (s, z) = quantize_row(&[-0.17, 1.0, 0.415, 0.2], &mut dst, false);
        assert!((z - 0.415).abs() < 1e-6 && (s - 1.17 / 254.0).abs() < 1e-7, "{s} {z}");
        assert_eq!(&dst[..2], &[-127, 127]);
        assert_eq!(dst[2], 0);
        assert_eq!(dst[4], 0);
        for (x, q) in [-0.17f32, 1.0, 0.415, 0.2].iter().zip(dst) {
            assert!((s * q as f32 + z - x).abs() <= s * 0.5 + 1e-6);
        }
        let mut c = [1i8; 3];
        assert_eq!(quantize_row(&[2.5, 2.5], &mut c, false), (1.0, 2.5));
        assert_eq!(c, [0, 0, 0]);
        let mut b = [0i8; 5];
        quantize_row(&[-0.17, 1.0, 0.415, 0.2], &mut b, true);
        assert_eq!(b.map(|v| v as u8), dst.map(|v| (v as i32 + 128) as u8));
    }

    #[test]
    fn half_steps_round_to_even_once_and_narrow_rows_are_constant() {
        // Range [0, 254]: offset 127, scale 1, so x - 127 is q before rounding. 127.5 and
        // 128.5 are ties (to 0 and 2); 129.49999 is below one and rounds once, to 2. 16 values
        // (a whole SIMD chunk) and one more (the scalar tail).
        let mut x = vec![0.0f32, 254.0, 127.5, 128.5, 126.5, 129.499_99, 0.7];
        x.resize(17, 127.0);
        x[16] = 125.5;
        let mut want = vec![-127i8, 127, 0, 2, 0, 2, -126];
        want.resize(17, 0);
        want[16] = -2;
        for (isa, kernel) in kernels() {
            let mut got = vec![9i8; 17];
            assert_eq!(kernel(&x, &mut got, false), (1.0, 127.0), "{isa:?}");
            assert_eq!(got, want, "{isa:?}");
        }
        // A range whose scale would be subnormal: a constant row at its minimum.
        let tiny = [1e-37f32, 2e-37, 1.5e-37];
        for (isa, kernel) in kernels() {
            let mut got = [9i8; 3];
            assert_eq!(kernel(&tiny, &mut got, true), (1.0, 1e-37), "{isa:?}");
            assert_eq!(got, [-128; 3], "{isa:?}");
        }
    }

    /// NaN and infinities: every kernel gives the twin's bytes. The twin's `f32::min` skips a
    /// NaN, and its cast turns one into 0. NEON's vector min and max keep a NaN, so such rows
    /// take the twin there; x86's give their second operand, so the value goes first, and a
    /// mask zeroes a NaN before the conversion.
    #[test]
    fn rows_with_nan_or_infinity_match_the_twin() {
        for len in [5usize, 16, 21, 40, 48, 100] {
            // A NaN with a payload too: its low bits are not those of a zero.
            let payload = f32::from_bits(0x7fc0_1234);
            let places = [
                (0, f32::NAN),
                (len - 1, f32::NAN),
                (len / 2, f32::NAN),
                (len / 2 + 1, payload),
                (3, f32::INFINITY),
                (2, f32::NEG_INFINITY),
            ];
            for (at, bad) in places {
                let mut x: Vec<f32> = noise(len as u64 + 91, len).iter().map(|v| v * 300.0).collect();
                x[at] = bad;
                for biased in [false, true] {
                    let mut want = vec![5i8; len + 2];
                    let wp = quantize_row_scalar(&x, &mut want, biased);
                    for (isa, kernel) in kernels() {
                        let mut got = vec![5i8; len + 2];
                        let gp = kernel(&x, &mut got, biased);
                        let (got, want) =
                            ((gp.0.to_bits(), gp.1.to_bits(), got), (wp.0.to_bits(), wp.1.to_bits(), &want));
                        assert_eq!((got.0, got.1, &got.2), want, "{isa:?} len {len} at {at}");
                    }
                    #[cfg(target_arch = "aarch64")]
                    {
                        let (mut want, mut got) = (vec![5i8; len + 2], vec![5i8; len + 2]);
                        let (mut wx, mut gx) = (x.clone(), x.clone());
                        let wp = gelu_quantize_row_scalar(&mut wx, &mut want, biased);
                        let gp = gelu_quantize_row_neon(&mut gx, &mut got, biased);
                        assert_eq!((gp.0.to_bits(), gp.1.to_bits(), &got), (wp.0.to_bits(), wp.1.to_bits(), &want));
                        assert!(gx.iter().zip(&wx).all(|(a, b)| a.to_bits() == b.to_bits()));
                    }
                }
                let (mut want, mut got) = (vec![5i8; len + 2], vec![5i8; len + 2]);
                let (ws, wsum) = quantize_symmetric_row_scalar(&x, &mut want);
                let (gs, gsum) = quantize_symmetric_row(&x, &mut got);
                assert_eq!((gs.to_bits(), gsum, &got), (ws.to_bits(), wsum, &want), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn every_kernel_matches_the_scalar_twin_bit_for_bit() {
        for len in (0..70).chain([192, 197, 768, 3072]) {
            for (seed, spread) in [(1, 1.0f32), (2, 40.0), (3, 1e-3)] {
                let mut x: Vec<f32> = noise(len as u64 * 5 + seed, len).iter().map(|v| v * spread + 0.3).collect();
                if len > 3 && seed == 2 {
                    x[len / 2] = x[0]; // repeated extremes
                }
                for biased in [false, true] {
                    let mut want = vec![7i8; len + 5];
                    let wp = quantize_row_scalar(&x, &mut want, biased);
                    for (isa, kernel) in kernels() {
                        let mut got = vec![7i8; len + 5];
                        let gp = kernel(&x, &mut got, biased);
                        assert_eq!(
                            (gp.0.to_bits(), gp.1.to_bits()),
                            (wp.0.to_bits(), wp.1.to_bits()),
                            "{isa:?} len {len}"
                        );
                        assert_eq!(got, want, "{isa:?} len {len} biased {biased}");
                    }
                    // Every value within half a step of its quantized value.
                    let (s, z) = wp;
                    let flip = if biased { -128i8 } else { 0 };
                    for (v, &q) in x.iter().zip(&want) {
                        assert!((s * (q ^ flip) as f32 + z - v).abs() <= s * 0.5001 + 1e-6, "len {len}: {v}");
                    }
                }
            }
        }
    }
}
