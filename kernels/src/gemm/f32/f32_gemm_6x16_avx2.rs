//! x86_64 AVX2 + FMA, 6 rows x 16 columns: each row of `a` broadcast, FMA with two ymm of
//! `b`'s row; 12 ymm accumulators.

use std::arch::x86_64::*;

use super::{Columns, check, for_each_tile, OutBlock};
use crate::gemm::epilogue::avx2::finish_f32;
use crate::gemm::{MR_MAX, NR_MAX};

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
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    check(a, lda, k, b, ldb, panel_stride, panels, 1, &out);
    // Written whole (every row of the tile) by each body call: no zeroing per tile.
    let mut acc = [0f32; MR_MAX * NR_MAX];
    for_each_tile::<6, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX2 and FMA are present (checked above); `check` made sure that every row of
        // `a` holds k values and `b` k rows of 16 at stride ldb.
        unsafe {
            body(&rp, k, b.as_ptr(), ldb, &mut acc);
            finish_f32(&acc, cols, &mut tile);
        }
    });
}

/// The 6 x 16 sums of `rp`'s rows times `b` (16-float rows at stride `ldb`; the f16 kernel's
/// widened panel too), fused in k order, into `acc`'s first rows.
///
/// # Safety
/// AVX2 and FMA are present; each `rp[r]` addresses `k` floats, `b` `k` rows of 16 at stride
/// `ldb`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn body(rp: &[*const f32; 6], k: usize, b: *const f32, ldb: usize, acc: &mut [f32; MR_MAX * NR_MAX]) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds (see `run`).
        unsafe {
            let (w0, w1) = (_mm256_loadu_ps(b.add(kk * ldb)), _mm256_loadu_ps(b.add(kk * ldb + 8)));
            for r in 0..6 {
                let x = _mm256_set1_ps(*rp[r].add(kk));
                lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);
            }
        }
    }
    for r in 0..6 {
        // SAFETY: acc holds MR_MAX rows of NR_MAX.
        unsafe {
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR_MAX), lo[r]);
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR_MAX + 8), hi[r]);
        }
    }
}
