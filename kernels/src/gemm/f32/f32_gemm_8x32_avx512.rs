//! x86_64 AVX-512F, 8 rows x 32 columns: two zmm accumulators per row, 16 FMAs for every 10
//! loads (8 broadcasts, 2 rows of `b`), where one 16-column group at a time needs 9 loads for
//! 8 FMAs and is bound by the load ports. A single group (a ragged right edge) runs 8 x 16.
//! The tile is finished in registers.

use std::arch::x86_64::*;

use super::{Columns, check, for_each_tile, OutBlock};
use crate::gemm::epilogue::avx512::finish_f32;

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    a: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    panel_stride: usize,
    panels: usize,
    cols: &Columns,
    mut out: OutBlock<'_>,
) {
    assert!(is_x86_feature_detected!("avx512f"));
    check(a, lda, k, b, ldb, panel_stride, panels, 2, &out);
    for_each_tile::<8, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX-512F is present (checked above); `check` made sure that every row of `a`
        // holds k values and `b` `panels` groups of k rows of 16 at stride ldb.
        unsafe {
            let c = if panels == 2 {
                body::<2>(&rp, k, b.as_ptr(), b.as_ptr().add(panel_stride), ldb)
            } else {
                body::<1>(&rp, k, b.as_ptr(), b.as_ptr(), ldb)
            };
            finish_f32(&c.0, &c.1, cols, &mut tile);
        }
    });
}

/// `c0[r] = sum_k a[r][k] * b0[k]` and, with two panels, `c1[r]` likewise with `b1`, where
/// `b0` and `b1` are 16-float rows at stride `ldb` (the f16 kernel's widened panels too).
///
/// # Safety
/// AVX-512F is present; each `rp[r]` addresses `k` floats, `b0` and `b1` (with two panels)
/// `k` rows of 16 at stride `ldb`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn body<const NP: usize>(
    rp: &[*const f32; 8],
    k: usize,
    b0: *const f32,
    b1: *const f32,
    ldb: usize,
) -> ([__m512; 8], [__m512; 8]) {
    let mut c0 = [_mm512_setzero_ps(); 8];
    let mut c1 = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds (see `run`).
        unsafe {
            let w0 = _mm512_loadu_ps(b0.add(kk * ldb));
            let w1 = if NP == 2 { _mm512_loadu_ps(b1.add(kk * ldb)) } else { w0 };
            for r in 0..8 {
                let x = _mm512_set1_ps(*rp[r].add(kk));
                c0[r] = _mm512_fmadd_ps(x, w0, c0[r]);
                if NP == 2 {
                    c1[r] = _mm512_fmadd_ps(x, w1, c1[r]);
                }
            }
        }
    }
    (c0, c1)
}
