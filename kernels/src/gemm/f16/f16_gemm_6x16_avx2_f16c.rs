//! x86_64 F16C + FMA, 6 rows x 16 channels: `vcvtph2ps` widens a k-row of the panel to two
//! ymm, FMA with each activation row broadcast; 12 ymm accumulators.

use std::arch::x86_64::*;

use super::{Columns, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::avx2::finish_f32;
use crate::gemm::{MR_MAX, NR_MAX};

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"));
    check(a, lda, k, w, panels, 1, &out);
    // Written whole (every row of the tile) by each body call: no zeroing per tile.
    let mut acc = [0f32; MR_MAX * NR_MAX];
    for_each_tile::<6, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX2, FMA and F16C are present (checked above); `check` made sure that every
        // row holds k values and the panel k * 16 halves.
        unsafe {
            body(&rp, k, w.as_ptr(), &mut acc);
            finish_f32(&acc, cols, &mut tile);
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn body(rp: &[*const f32; 6], k: usize, panel: *const u16, acc: &mut [f32; MR_MAX * NR_MAX]) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 and a[r][kk] are in bounds (see `run`).
        unsafe {
            let p = panel.add(kk * NR) as *const __m128i;
            let (w0, w1) = (_mm256_cvtph_ps(_mm_loadu_si128(p)), _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))));
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
