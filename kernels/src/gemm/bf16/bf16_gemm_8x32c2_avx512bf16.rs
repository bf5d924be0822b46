//! x86_64 AVX512-BF16, 8 rows x 32 columns: two zmm accumulators per row, each `vdpbf16ps` a
//! pair of k for 16 columns; per pair 16 of them for 10 loads (8 broadcast pairs of `a`, one
//! vector of each panel), as the f32 kernel's 16 FMAs per 10 loads, but two k at a time. A
//! single panel (a ragged right edge) runs 8 x 16. The tile is finished in registers.

use std::arch::x86_64::*;

use super::{check, for_each_tile, OutBlock, NR, PLAIN};
use crate::gemm::epilogue::avx512::finish_f32;

pub(super) fn run(a: &[u16], lda: usize, pairs: usize, b: &[u16], panel_stride: usize, panels: usize, mut out: OutBlock<'_>) {
    assert!(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16"));
    check(a, lda, pairs, b, panel_stride, panels, 2, &out);
    for_each_tile::<8, u16>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX512-BF16 is present (checked above); `check` made sure that every row of
        // `a` holds 2 * pairs values and `b` `panels` panels of `pairs * 32` values.
        unsafe {
            let c = if panels == 2 {
                body::<2>(&rp, pairs, b.as_ptr(), b.as_ptr().add(panel_stride))
            } else {
                body::<1>(&rp, pairs, b.as_ptr(), b.as_ptr())
            };
            finish_f32(&c.0, &c.1, PLAIN, &mut tile);
        }
    });
}

/// `c0[r] = sum_p a[r] pair p . b0 pair p` and, with two panels, `c1[r]` likewise with `b1`.
///
/// # Safety
/// AVX512-BF16 is present; each `rp[r]` addresses `2 * pairs` values, `b0` and `b1` (with two
/// panels) `pairs * 32`.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn body<const NP: usize>(rp: &[*const u16; 8], pairs: usize, b0: *const u16, b1: *const u16) -> ([__m512; 8], [__m512; 8]) {
    let mut c0 = [_mm512_setzero_ps(); 8];
    let mut c1 = [_mm512_setzero_ps(); 8];
    for p in 0..pairs {
        // SAFETY: p < pairs: in bounds (see `run`).
        unsafe {
            let w0 = pairs_of(_mm512_loadu_si512(b0.add(p * 2 * NR).cast()));
            let w1 = if NP == 2 { pairs_of(_mm512_loadu_si512(b1.add(p * 2 * NR).cast())) } else { w0 };
            for r in 0..8 {
                let x = pairs_of(_mm512_set1_epi32(rp[r].add(2 * p).cast::<i32>().read_unaligned()));
                c0[r] = _mm512_dpbf16_ps(c0[r], x, w0);
                if NP == 2 {
                    c1[r] = _mm512_dpbf16_ps(c1[r], x, w1);
                }
            }
        }
    }
    (c0, c1)
}

/// The 32 bf16 bit patterns of a vector, as `vdpbf16ps` takes them.
#[inline(always)]
fn pairs_of(v: __m512i) -> __m512bh {
    // SAFETY: both types are 64 bytes of plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}
