//! x86_64 f16-weight microkernels: `vcvtph2ps` widens a k-row of the panel, then FMA with
//! each activation row broadcast. Rows past `rows` repeat the last one and are not stored.

use std::arch::x86_64::*;

use super::{MR_MAX, NR};

/// 8 rows x 16 channels, one zmm accumulator per row.
pub(super) fn avx512(a: &[f32], lda: usize, rows: usize, k: usize, panel: &[u16], acc: &mut [f32; MR_MAX * NR]) {
    let rp: [*const f32; 8] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: the dispatcher checked AVX-512F; the caller asserted that every row holds k
    // values and the panel k * 16 halves, so all loads below are in bounds.
    unsafe { avx512_body(&rp, rows, k, panel.as_ptr(), acc) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_body(rp: &[*const f32; 8], rows: usize, k: usize, panel: *const u16, acc: &mut [f32; MR_MAX * NR]) {
    let mut c = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 and a[r][kk] are in bounds (see caller).
        unsafe {
            let w = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(kk * NR) as *const __m256i));
            for r in 0..8 {
                c[r] = _mm512_fmadd_ps(_mm512_set1_ps(*rp[r].add(kk)), w, c[r]);
            }
        }
    }
    for (r, c) in c.iter().enumerate().take(rows) {
        // SAFETY: r < rows <= 8 and acc holds 8 rows of 16.
        unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), *c) };
    }
}

/// 6 rows x 16 channels, two ymm accumulators per row.
pub(super) fn avx2_f16c(a: &[f32], lda: usize, rows: usize, k: usize, panel: &[u16], acc: &mut [f32; MR_MAX * NR]) {
    let rp: [*const f32; 6] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: the dispatcher checked AVX2, FMA and F16C; bounds as for `avx512`.
    unsafe { avx2_body(&rp, rows, k, panel.as_ptr(), acc) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_body(rp: &[*const f32; 6], rows: usize, k: usize, panel: *const u16, acc: &mut [f32; MR_MAX * NR]) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 and a[r][kk] are in bounds (see caller).
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
    for r in 0..rows {
        // SAFETY: r < rows <= 6 and acc holds 8 rows of 16.
        unsafe {
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR), lo[r]);
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR + 8), hi[r]);
        }
    }
}
