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

/// Per-column factors of one column group (up to [`NR_MAX`] columns), set up once by the
/// driver and shared by every row tile of the group: zero past the group's columns, so SIMD
/// epilogues load them whole.
#[derive(Clone, Copy, Debug)]
pub struct Columns {
    /// Columns in the group.
    pub cols: usize,
    /// The bias per column (zero without one).
    pub bias: [f32; NR_MAX],
    /// int8: the weight scale per column.
    pub w_scale: [f32; NR_MAX],
    /// int8: `w_scale * sum of the column's quantized weights`, the weight of a row's offset.
    pub w_offset: [f32; NR_MAX],
    /// int8: the sum of the column's quantized weights (the `vpdpbusd` kernels subtract
    /// 128 times it).
    pub w_sum: [i32; NR_MAX],
}

impl Columns {
    /// No bias, no dequantization: for products without an epilogue of their own
    /// (attention's).
    pub const PLAIN: Columns = Columns {
        cols: NR_MAX,
        bias: [0.0; NR_MAX],
        w_scale: [0.0; NR_MAX],
        w_offset: [0.0; NR_MAX],
        w_sum: [0; NR_MAX],
    };

    /// The factors of a float GEMM's columns: only the bias.
    pub fn float(bias: Option<&[f32]>, cols: usize) -> Columns {
        let mut c = Columns::PLAIN;
        c.set_float(bias, cols);
        c
    }

    /// The factors of an int8 GEMM's columns.
    pub fn int8(bias: Option<&[f32]>, w_scale: &[f32], w_sum: &[i32], cols: usize) -> Columns {
        let mut c = Columns::PLAIN;
        c.set_int8(bias, w_scale, w_sum, cols);
        c
    }

    /// [`Columns::float`] in place: the GEMM driver fills one `Columns` per task, group after
    /// group. Returned by value, the 512 bytes were copied by `memcpy` for every column group
    /// of every GEMM (with the copies of the bias, 0.9% of a ViT-Ti int8 inference on a Zen 4).
    pub fn set_float(&mut self, bias: Option<&[f32]>, cols: usize) {
        assert!(cols <= NR_MAX, "{cols} columns in a group of at most {NR_MAX}");
        self.cols = cols;
        fill(&mut self.bias, bias.map_or(&[][..], |b| &b[..cols]), 0.0);
        self.w_scale = [0.0; NR_MAX];
        self.w_offset = [0.0; NR_MAX];
        self.w_sum = [0; NR_MAX];
    }

    /// [`Columns::int8`] in place.
    pub fn set_int8(&mut self, bias: Option<&[f32]>, w_scale: &[f32], w_sum: &[i32], cols: usize) {
        self.set_float(bias, cols);
        fill(&mut self.w_scale, &w_scale[..cols], 0.0);
        fill(&mut self.w_sum, &w_sum[..cols], 0);
        for i in 0..NR_MAX {
            self.w_offset[i] = self.w_scale[i] * self.w_sum[i] as f32;
        }
    }
}

/// `src` into `dst`, zero past its end: a whole group is a fixed-size copy.
fn fill<T: Copy>(dst: &mut [T; NR_MAX], src: &[T], zero: T) {
    match <&[T; NR_MAX]>::try_from(src) {
        Ok(whole) => *dst = *whole,
        Err(_) => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src.get(i).copied().unwrap_or(zero);
            }
        }
    }
}

/// Per-row factors of an int8 block: activation scale and offset.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    /// Activation scale per row of the block.
    pub scale: &'a [f32],
    /// Activation offset per row of the block.
    pub offset: &'a [f32],
}

impl<'a> Rows<'a> {
    /// The factors of rows `m0..m0 + rows`.
    pub fn at(&self, m0: usize, rows: usize) -> Rows<'a> {
        Rows { scale: &self.scale[m0..m0 + rows], offset: &self.offset[m0..m0 + rows] }
    }
}

/// The twin for f32 tiles: `acc[r * stride + c]` plus the bias, then the epilogue.
pub(crate) fn finish_f32(acc: &[f32], stride: usize, cols: &Columns, out: &mut OutBlock<'_>) {
    let n = out.cols;
    for r in 0..out.rows {
        let mut v = [0f32; NR_MAX];
        for c in 0..n {
            v[c] = acc[r * stride + c] + cols.bias[c];
        }
        let epilogue = out.epilogue;
        apply(&mut v[..n], epilogue, out.row(r));
    }
}

/// The twin for int32 tiles: `acc[r * stride + c]` dequantized with the bias folded in
/// (`acc * (sa * ws) + (za * ow + bias)`), then the epilogue.
pub(crate) fn finish_i32(acc: &[i32], stride: usize, rows: &Rows<'_>, cols: &Columns, out: &mut OutBlock<'_>) {
    let n = out.cols;
    for r in 0..out.rows {
        let (sa, za) = (rows.scale[r], rows.offset[r]);
        let mut v = [0f32; NR_MAX];
        for c in 0..n {
            let zb = za.mul_add(cols.w_offset[c], cols.bias[c]);
            v[c] = (acc[r * stride + c] as f32).mul_add(sa * cols.w_scale[c], zb);
        }
        let epilogue = out.epilogue;
        apply(&mut v[..n], epilogue, out.row(r));
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

    use super::{Columns, Epilogue, OutBlock, Rows};
    use crate::rows::activation::{gelu_f32x4, gelu_rows16_neon, Activation};

    /// Runs `tiles` over the block with GELU, when it is the epilogue and the block's rows are
    /// 16 columns whole, left out of each tile and applied to all of the block's rows at the
    /// end: the software-pipelined loop then fills and drains once per block, not once per
    /// four rows (1.2 M cycles of a ViT-Ti f32 inference on the Cortex-A76). The same
    /// operations on the same values, so the same bits.
    #[inline(always)]
    pub(crate) fn gelu_after_tiles(out: &mut OutBlock<'_>, tiles: impl FnOnce(&mut OutBlock<'_>)) {
        let (epilogue, gelu) = (out.epilogue, Epilogue::Activate(Activation::Gelu));
        let after = epilogue == gelu && out.cols == 16;
        if after {
            out.epilogue = Epilogue::Store;
        }
        // One call, so that the tiles' loop is inlined once.
        tiles(out);
        if after {
            out.epilogue = epilogue;
            // SAFETY: the block's rows hold 16 writable floats each, `ldo` apart.
            unsafe { gelu_rows16_neon(out.row_ptr(0), out.ldo, out.rows) };
        }
    }

    /// The first 16 values of a column factor as four f32x4.
    #[inline(always)]
    fn load(v: &[f32; 32]) -> [float32x4_t; 4] {
        // SAFETY: `v` holds 32 floats; NEON is baseline on aarch64.
        std::array::from_fn(|j| unsafe { vld1q_f32(v.as_ptr().add(4 * j)) })
    }

    /// Finishes the tile `c[r][j]` (row r, columns 4j..4j+4) of f32 sums: bias, epilogue,
    /// store of the block's rows and columns.
    #[inline(always)]
    pub(crate) fn finish_f32<const MR: usize>(c: &[[float32x4_t; 4]; MR], cols: &Columns, out: &mut OutBlock<'_>) {
        let b = load(&cols.bias);
        // SAFETY: NEON is baseline on aarch64; register-only.
        let value = |r: usize| std::array::from_fn(|j| unsafe { vaddq_f32(c[r][j], b[j]) });
        finish::<MR>(value, out);
    }

    /// Finishes the tile `c[r][j]` of int32 sums: dequantized as [`super::finish_i32`] does,
    /// then the epilogue.
    #[inline(always)]
    pub(crate) fn finish_i32<const MR: usize>(
        c: &[[int32x4_t; 4]; MR],
        rows: &Rows<'_>,
        cols: &Columns,
        out: &mut OutBlock<'_>,
    ) {
        let (ws, ow, b) = (load(&cols.w_scale), load(&cols.w_offset), load(&cols.bias));
        let value = |r: usize| {
            let (sa, za) = (rows.scale[r], rows.offset[r]);
            // SAFETY: NEON is baseline on aarch64; register-only.
            std::array::from_fn(|j| unsafe {
                let zb = vfmaq_n_f32(b[j], ow[j], za);
                vfmaq_f32(zb, vcvtq_f32_s32(c[r][j]), vmulq_n_f32(ws[j], sa))
            })
        };
        finish::<MR>(value, out);
    }

    /// The epilogue for every row of the block, `value(r)` giving row r's 16 values: one loop
    /// per kind of epilogue, so the row loop has no branches and GELU's constants stay out of
    /// the loops that do not need them. The loops run to the tile's height `MR` and stop at the
    /// block's: unrolled with constant row indices, the tile stays in registers (a loop to
    /// `out.rows` indexed it at run time, which stored all of it to the stack first).
    #[inline(always)]
    fn finish<const MR: usize>(value: impl Fn(usize) -> [float32x4_t; 4], out: &mut OutBlock<'_>) {
        const STORE: u8 = 0;
        const ACCUMULATE: u8 = 1;
        const GELU: u8 = 2;
        match out.epilogue {
            Epilogue::Store => rows::<STORE, MR>(value, out),
            Epilogue::Accumulate => rows::<ACCUMULATE, MR>(value, out),
            Epilogue::Activate(Activation::Gelu) => rows::<GELU, MR>(value, out),
            Epilogue::Activate(act) => {
                rows::<STORE, MR>(value, out);
                for r in 0..out.rows {
                    act.apply_slice(out.row(r));
                }
            }
        }

        #[inline(always)]
        fn rows<const KIND: u8, const MR: usize>(value: impl Fn(usize) -> [float32x4_t; 4], out: &mut OutBlock<'_>) {
            debug_assert!(out.rows <= MR);
            // Every NEON kernel runs its tiles inside `gelu_after_tiles`, so GELU reaches this
            // loop only for blocks narrower than 16 columns.
            for r in 0..MR {
                if r == out.rows {
                    break;
                }
                let mut v = value(r);
                if KIND == GELU {
                    v = v.map(gelu_f32x4);
                }
                let dst = out.row_ptr(r);
                if out.cols == 16 {
                    // SAFETY: the block's row r holds 16 writable floats (OutBlock's contract).
                    unsafe {
                        for (j, v) in v.iter().enumerate() {
                            let p = dst.add(4 * j);
                            vst1q_f32(p, if KIND == ACCUMULATE { vaddq_f32(vld1q_f32(p), *v) } else { *v });
                        }
                    }
                } else {
                    let mut buf = [0f32; 16];
                    // SAFETY: `buf` holds 16 floats.
                    v.iter().enumerate().for_each(|(j, v)| unsafe { vst1q_f32(buf.as_mut_ptr().add(4 * j), *v) });
                    let row = out.row(r);
                    if KIND == ACCUMULATE {
                        row.iter_mut().zip(&buf).for_each(|(d, v)| *d += v);
                    } else {
                        row.copy_from_slice(&buf[..row.len()]);
                    }
                }
            }
        }
    }
}

/// The epilogue on AVX-512 registers: a 32-column row as two zmm, masked at a ragged edge.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{Columns, Epilogue, OutBlock, Rows};
    use crate::rows::activation::{gelu_f32x16, Activation};

    #[target_feature(enable = "avx512f")]
    fn load(v: &[f32; 32]) -> (__m512, __m512) {
        // SAFETY: `v` holds 32 floats.
        unsafe { (_mm512_loadu_ps(v.as_ptr()), _mm512_loadu_ps(v.as_ptr().add(16))) }
    }

    /// Finishes rows of f32 sums `c0[r]` (columns 0..16) and `c1[r]` (16..32): bias,
    /// epilogue, masked store of the block's rows and columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn finish_f32(c0: &[__m512; 8], c1: &[__m512; 8], cols: &Columns, out: &mut OutBlock<'_>) {
        let (b0, b1) = load(&cols.bias);
        finish(|r| (_mm512_add_ps(c0[r], b0), _mm512_add_ps(c1[r], b1)), out);
    }

    /// Finishes rows of int32 sums as [`super::finish_i32`] does, then the epilogue.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn finish_i32(
        c0: &[__m512i; 8],
        c1: &[__m512i; 8],
        rows: &Rows<'_>,
        cols: &Columns,
        out: &mut OutBlock<'_>,
    ) {
        let (ws, ow, b) = (load(&cols.w_scale), load(&cols.w_offset), load(&cols.bias));
        let value = |r: usize| {
            let (sa, za) = (_mm512_set1_ps(rows.scale[r]), _mm512_set1_ps(rows.offset[r]));
            let v0 =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0[r]), _mm512_mul_ps(sa, ws.0), _mm512_fmadd_ps(za, ow.0, b.0));
            let v1 =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1[r]), _mm512_mul_ps(sa, ws.1), _mm512_fmadd_ps(za, ow.1, b.1));
            (v0, v1)
        };
        finish(value, out);
    }

    const STORE: u8 = 0;
    const ACCUMULATE: u8 = 1;
    const GELU: u8 = 2;

    /// The epilogue for every row of the block, `value(r)` giving row r's 32 values: one loop
    /// per kind of epilogue, as on NEON, so the row loop has no branches and GELU's constants
    /// stay out of the loops that do not need them (one loop for all kinds, with the choice
    /// made per row, kept the column factors on the stack: 7% of a ViT-Ti int8 inference on
    /// a Zen 4).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn finish(value: impl Fn(usize) -> (__m512, __m512), out: &mut OutBlock<'_>) {
        match out.epilogue {
            Epilogue::Store => rows::<STORE>(value, out),
            Epilogue::Accumulate => rows::<ACCUMULATE>(value, out),
            Epilogue::Activate(Activation::Gelu) => rows::<GELU>(value, out),
            Epilogue::Activate(act) => {
                rows::<STORE>(value, out);
                for r in 0..out.rows {
                    act.apply_slice(out.row(r));
                }
            }
        }
    }

    /// Stores (`STORE`), adds to the output (`ACCUMULATE`) or activates and stores (`GELU`)
    /// the block's rows, masked to its columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn rows<const KIND: u8>(value: impl Fn(usize) -> (__m512, __m512), out: &mut OutBlock<'_>) {
        let mask = |n: usize| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
        let (m0, m1) = (mask(out.cols), mask(out.cols.saturating_sub(16)));
        for r in 0..out.rows.min(8) {
            let (mut v0, mut v1) = value(r);
            let d = out.row_ptr(r);
            // SAFETY: masked loads and stores touch only the row's `cols` outputs (OutBlock's
            // contract).
            unsafe {
                if KIND == ACCUMULATE {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, d), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, d.wrapping_add(16)), v1);
                } else if KIND == GELU {
                    (v0, v1) = (gelu_f32x16(v0), gelu_f32x16(v1));
                }
                _mm512_mask_storeu_ps(d, m0, v0);
                _mm512_mask_storeu_ps(d.wrapping_add(16), m1, v1);
            }
        }
    }
}

/// The epilogue with AVX2 and FMA, for the 256-bit kernels: their tiles of up to [`MR_MAX`]
/// rows of [`NR_MAX`] sums, read from the `acc` array they wrote, 16 columns as two ymm per
/// row. (The twins' `mul_add` is a libm call on x86 builds without FMA in their base target:
/// it took 45% of an int8 inference on a Zen 3 before this module.)
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{Columns, Epilogue, OutBlock, Rows};
    use crate::gemm::{MR_MAX, NR_MAX};
    use crate::rows::activation::{gelu_f32x8, Activation};

    /// Two ymm of a 16-value row.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn load(v: &[f32]) -> [__m256; 2] {
        assert!(v.len() >= 16);
        // SAFETY: `v` holds at least 16 floats (asserted).
        unsafe { [_mm256_loadu_ps(v.as_ptr()), _mm256_loadu_ps(v.as_ptr().add(8))] }
    }

    /// [`super::finish_f32`] on `acc` (rows of [`NR_MAX`]): bias, epilogue, store.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn finish_f32(acc: &[f32; MR_MAX * NR_MAX], cols: &Columns, out: &mut OutBlock<'_>) {
        let b = load(&cols.bias);
        for r in 0..out.rows {
            let c = load(&acc[r * NR_MAX..]);
            finish_row([_mm256_add_ps(c[0], b[0]), _mm256_add_ps(c[1], b[1])], r, out);
        }
    }

    /// [`super::finish_i32`] on `acc`: `acc * (sa * ws) + (za * ow + bias)`, then the epilogue.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn finish_i32(acc: &[i32; MR_MAX * NR_MAX], rows: &Rows<'_>, cols: &Columns, out: &mut OutBlock<'_>) {
        let (ws, ow, b) = (load(&cols.w_scale), load(&cols.w_offset), load(&cols.bias));
        for r in 0..out.rows {
            let (sa, za) = (_mm256_set1_ps(rows.scale[r]), _mm256_set1_ps(rows.offset[r]));
            let v = std::array::from_fn(|j| {
                // SAFETY: row r of `acc` holds 16 sums (r < out.rows <= MR_MAX).
                let c = unsafe { _mm256_loadu_si256(acc.as_ptr().add(r * NR_MAX + 8 * j) as *const __m256i) };
                let zb = _mm256_fmadd_ps(za, ow[j], b[j]);
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(sa, ws[j]), zb)
            });
            finish_row(v, r, out);
        }
    }

    /// Stores, activates or accumulates row r's 16 values: straight to the output when the
    /// block is 16 columns wide, through a buffer at a ragged edge.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn finish_row(mut v: [__m256; 2], r: usize, out: &mut OutBlock<'_>) {
        if out.epilogue == Epilogue::Activate(Activation::Gelu) {
            v = [gelu_f32x8(v[0]), gelu_f32x8(v[1])];
        }
        let accumulate = out.epilogue == Epilogue::Accumulate;
        if out.cols == 16 {
            let d = out.row_ptr(r);
            // SAFETY: the block's row r holds 16 writable floats (OutBlock's contract).
            unsafe {
                for (j, v) in v.iter().enumerate() {
                    let p = d.add(8 * j);
                    _mm256_storeu_ps(p, if accumulate { _mm256_add_ps(_mm256_loadu_ps(p), *v) } else { *v });
                }
            }
        } else {
            let mut buf = [0f32; 16];
            // SAFETY: `buf` holds 16 floats.
            unsafe { v.iter().enumerate().for_each(|(j, v)| _mm256_storeu_ps(buf.as_mut_ptr().add(8 * j), *v)) };
            let row = out.row(r);
            if accumulate {
                row.iter_mut().zip(&buf).for_each(|(d, v)| *d += v);
            } else {
                row.copy_from_slice(&buf[..row.len()]);
            }
        }
        if let Epilogue::Activate(act) = out.epilogue {
            if act != Activation::Gelu {
                act.apply_slice(out.row(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_factors_refilled_in_place_keep_nothing_of_the_last_group() {
        let scale: Vec<f32> = (0..40).map(|i| 0.5 + i as f32 / 8.0).collect();
        let sum: Vec<i32> = (0..40).map(|i| 100 - 7 * i).collect();
        let bias: Vec<f32> = (0..40).map(|i| i as f32 - 20.0).collect();
        let mut c = Columns::PLAIN;
        // A whole group, then a narrower one at the right edge, then a float group: the
        // driver reuses one `Columns` for a task's groups.
        for (col0, cols) in [(0, NR_MAX), (NR_MAX, 8)] {
            c.set_int8(Some(&bias[col0..]), &scale[col0..], &sum[col0..], cols);
            assert_eq!(c.cols, cols);
            for i in 0..NR_MAX {
                let j = col0 + i;
                let real = i < cols;
                assert_eq!(c.bias[i], if real { bias[j] } else { 0.0 }, "bias {i} of {cols}");
                assert_eq!(c.w_scale[i], if real { scale[j] } else { 0.0 }, "scale {i} of {cols}");
                assert_eq!(c.w_sum[i], if real { sum[j] } else { 0 }, "sum {i} of {cols}");
                assert_eq!(c.w_offset[i], if real { scale[j] * sum[j] as f32 } else { 0.0 }, "offset {i}");
            }
        }
        c.set_float(None, 5);
        assert_eq!(
            (c.cols, c.bias, c.w_scale, c.w_offset, c.w_sum),
            (5, [0.0; NR_MAX], [0.0; NR_MAX], [0.0; NR_MAX], [0; NR_MAX])
        );
        c.set_float(Some(&bias[3..]), 5);
        assert_eq!(c.bias[..6], [-17.0, -16.0, -15.0, -14.0, -13.0, 0.0]);
    }
}
