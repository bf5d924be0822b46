//! The scalar twin of the half-precision kernels: each activation rounded to half (to
//! nearest even); per output and block of [`FP16_BLOCK`] k steps, a half-precision fused
//! multiply-add chain from zero (each step rounded once, to nearest even, as `fmla` does);
//! each block's sum then added to an f32 total. A tile whose half arithmetic overflows is
//! computed again with f32 accumulation, as the SIMD kernels do.

use super::{Columns, OutBlock, FP16_BLOCK, NR};
use crate::gemm::epilogue::finish_f32;
use crate::gemm::{MR_MAX, NR_MAX};
use half::f16;

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(panels * NR <= NR_MAX && w.len() >= panels * k * NR);
    for m0 in (0..out.rows).step_by(4) {
        let n = 4.min(out.rows - m0);
        let rows = &a[m0 * lda..];
        let acc = half_tile(n, out.cols, k, |r, kk| f16::from_f32(rows[r * lda + kk]).to_f32(), |c, kk| {
            f16::from_bits(w[(c / NR) * k * NR + kk * NR + c % NR]).to_f32()
        });
        let tile = out.tile(m0, n);
        // The SIMD kernels check a whole 4 x 16 tile at once; a tile here is the same rows.
        match acc {
            Some(acc) => finish_f32(&acc, NR_MAX, cols, &mut { tile }),
            None => super::f16_gemm_4x16_scalar::run(rows, lda, k, w, panels, cols, tile),
        }
    }
}

/// [`run`] on activations already rounded to half (IEEE half bit patterns), one panel.
pub(super) fn run_halves(a: &[u16], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(panels == 1 && out.cols <= NR && w.len() >= k * NR);
    for m0 in (0..out.rows).step_by(4) {
        let n = 4.min(out.rows - m0);
        let rows = &a[m0 * lda..];
        let acc = half_tile(n, out.cols, k, |r, kk| f16::from_bits(rows[r * lda + kk]).to_f32(), |c, kk| {
            f16::from_bits(w[kk * NR + c]).to_f32()
        });
        let tile = out.tile(m0, n);
        match acc {
            Some(acc) => finish_f32(&acc, NR_MAX, cols, &mut { tile }),
            None => f32_of_halves(rows, lda, k, w, cols, tile),
        }
    }
}

/// One tile's sums in half-precision chains of [`FP16_BLOCK`] steps added in f32, `x(r, kk)`
/// and `w(c, kk)` giving the (half-valued) operands; `None` if any sum overflowed.
fn half_tile(
    rows: usize,
    cols: usize,
    k: usize,
    x: impl Fn(usize, usize) -> f32,
    w: impl Fn(usize, usize) -> f32,
) -> Option<[f32; MR_MAX * NR_MAX]> {
    let mut acc = [0f32; MR_MAX * NR_MAX];
    for r in 0..rows {
        for c in 0..cols {
            let mut sum = 0f32;
            for k0 in (0..k).step_by(FP16_BLOCK) {
                let mut chain = 0f32;
                for kk in k0..(k0 + FP16_BLOCK).min(k) {
                    chain = fma_half(x(r, kk), w(c, kk), chain);
                }
                sum += chain;
            }
            acc[r * NR_MAX + c] = sum;
        }
    }
    acc.iter().all(|v| v.is_finite()).then_some(acc)
}

/// The overflow fallback of the half-input kernels: f32 accumulation (fused, in k order) of
/// the half activations and weights, widened.
pub(super) fn f32_of_halves(a: &[u16], lda: usize, k: usize, w: &[u16], cols: &Columns, mut out: OutBlock<'_>) {
    for m0 in (0..out.rows).step_by(4) {
        let n = 4.min(out.rows - m0);
        let mut acc = [0f32; MR_MAX * NR_MAX];
        for r in 0..n {
            for c in 0..out.cols {
                let mut s = 0f32;
                for kk in 0..k {
                    let x = f16::from_bits(a[(m0 + r) * lda + kk]).to_f32();
                    s = x.mul_add(f16::from_bits(w[kk * NR + c]).to_f32(), s);
                }
                acc[r * NR_MAX + c] = s;
            }
        }
        finish_f32(&acc, NR_MAX, cols, &mut out.tile(m0, n));
    }
}

/// `x * w + h` rounded once to half (to nearest even), for half-precision values given as f32.
/// The product is exact in f32 and the sum exact in f64; rounding that to f32 to odd (keep the
/// nearest-even result if odd, else step to the odd neighbour on the other side of the exact
/// value) keeps enough bits that rounding to half afterwards is exact rounding.
pub(super) fn fma_half(x: f32, w: f32, h: f32) -> f32 {
    let exact = (x * w) as f64 + h as f64;
    let mut r = exact as f32;
    if r as f64 != exact && r.to_bits() & 1 == 0 {
        // Away from r towards `exact`: in magnitude up if |exact| > |r|, else down.
        let up = exact.abs() > (r as f64).abs();
        r = f32::from_bits(if up { r.to_bits() + 1 } else { r.to_bits() - 1 });
    }
    f16::from_f32(r).to_f32()
}
