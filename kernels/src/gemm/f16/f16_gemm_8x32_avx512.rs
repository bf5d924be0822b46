//! x86_64 AVX-512F, 8 rows x 32 channels (two panels; one at a ragged right edge):
//! `vcvtph2ps` widens a k-row of each panel to a zmm, FMA with each activation row broadcast;
//! 16 FMAs per 10 loads. The tile is finished in registers.

use std::arch::x86_64::*;

use super::{Columns, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::avx512::finish_f32;

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(is_x86_feature_detected!("avx512f"));
    check(a, lda, k, w, panels, 2, &out);
    for_each_tile::<8, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX-512F is present (checked above); `check` made sure that every row holds k
        // values and each panel k * 16 halves.
        unsafe {
            let p1 = w.as_ptr().add((panels - 1) * k * NR);
            let c = if panels == 2 { body::<2>(&rp, k, w.as_ptr(), p1) } else { body::<1>(&rp, k, w.as_ptr(), p1) };
            finish_f32(&c.0, &c.1, cols, &mut tile);
        }
    });
}

#[target_feature(enable = "avx512f")]
unsafe fn body<const NP: usize>(
    rp: &[*const f32; 8],
    k: usize,
    p0: *const u16,
    p1: *const u16,
) -> ([__m512; 8], [__m512; 8]) {
    let mut c0 = [_mm512_setzero_ps(); 8];
    let mut c1 = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 of each panel and a[r][kk] are in
        // bounds (see `run`).
        unsafe {
            let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(p0.add(kk * NR) as *const __m256i));
            let w1 = if NP == 2 { _mm512_cvtph_ps(_mm256_loadu_si256(p1.add(kk * NR) as *const __m256i)) } else { w0 };
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
