//! x86_64 f32 tiles: each row of `a` broadcast, FMA with a 16-wide row of `b`. Rows past
//! `rows` repeat the last one and are not stored.

use std::arch::x86_64::*;

use super::{MR_MAX, NR};

pub(super) fn avx512(
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    acc: &mut [f32; MR_MAX * NR],
) {
    let rp: [*const f32; 8] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: AVX-512F was detected by the dispatcher; the caller asserted every row of `a`
    // holds k values and `b` holds k rows of 16 at stride ldb.
    unsafe { avx512_body(&rp, rows, k, b.as_ptr(), ldb, acc) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_body(
    rp: &[*const f32; 8],
    rows: usize,
    k: usize,
    b: *const f32,
    ldb: usize,
    acc: &mut [f32; MR_MAX * NR],
) {
    let mut c = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds per the caller's checks.
        unsafe {
            let w = _mm512_loadu_ps(b.add(kk * ldb));
            for r in 0..8 {
                c[r] = _mm512_fmadd_ps(_mm512_set1_ps(*rp[r].add(kk)), w, c[r]);
            }
        }
    }
    for (r, c) in c.iter().enumerate().take(rows) {
        // SAFETY: r < rows <= 8; acc holds 8 rows of 16.
        unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), *c) };
    }
}

/// 8 rows x 32 columns: two zmm accumulators per row.
pub(super) fn avx512_wide(
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    acc: &mut [f32; MR_MAX * 2 * NR],
) {
    let rp: [*const f32; 8] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: AVX-512F was detected by the dispatcher; the caller asserted every row of `a`
    // holds k values and `b` holds k rows of 32 at stride ldb.
    unsafe { avx512_wide_body(&rp, rows, k, b.as_ptr(), ldb, acc) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_wide_body(
    rp: &[*const f32; 8],
    rows: usize,
    k: usize,
    b: *const f32,
    ldb: usize,
    acc: &mut [f32; MR_MAX * 2 * NR],
) {
    // SAFETY: the caller's bounds: k rows of 32 floats at stride ldb, k values per row of `a`.
    let (c0, c1) = unsafe { wide_tile(rp, k, b, b.wrapping_add(NR), ldb) };
    for r in 0..rows.min(8) {
        // SAFETY: r < 8; acc holds 8 rows of 32.
        unsafe {
            _mm512_storeu_ps(acc.as_mut_ptr().add(r * 2 * NR), c0[r]);
            _mm512_storeu_ps(acc.as_mut_ptr().add(r * 2 * NR + NR), c1[r]);
        }
    }
}

/// The 8 x 32 FMA loop shared with the packed f32 GEMM: `c0[r] = sum_k a[r][k] * b0[k]` and
/// `c1[r]` likewise with `b1`, where `b0` and `b1` are 16-float rows at stride `ldb`.
///
/// # Safety
/// Each `rp[r]` must address k readable floats, and `b0`, `b1` k rows of 16 at stride `ldb`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn wide_tile(
    rp: &[*const f32; 8],
    k: usize,
    b0: *const f32,
    b1: *const f32,
    ldb: usize,
) -> ([__m512; 8], [__m512; 8]) {
    let mut c0 = [_mm512_setzero_ps(); 8];
    let mut c1 = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds per this function's contract.
        unsafe {
            let w0 = _mm512_loadu_ps(b0.add(kk * ldb));
            let w1 = _mm512_loadu_ps(b1.add(kk * ldb));
            for r in 0..8 {
                let x = _mm512_set1_ps(*rp[r].add(kk));
                c0[r] = _mm512_fmadd_ps(x, w0, c0[r]);
                c1[r] = _mm512_fmadd_ps(x, w1, c1[r]);
            }
        }
    }
    (c0, c1)
}

pub(super) fn avx2(a: &[f32], lda: usize, rows: usize, k: usize, b: &[f32], ldb: usize, acc: &mut [f32; MR_MAX * NR]) {
    let rp: [*const f32; 6] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: AVX2 and FMA were detected by the dispatcher; bounds as for `avx512`.
    unsafe { avx2_body(&rp, rows, k, b.as_ptr(), ldb, acc) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_body(
    rp: &[*const f32; 6],
    rows: usize,
    k: usize,
    b: *const f32,
    ldb: usize,
    acc: &mut [f32; MR_MAX * NR],
) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds per the caller's checks.
        unsafe {
            let (w0, w1) = (_mm256_loadu_ps(b.add(kk * ldb)), _mm256_loadu_ps(b.add(kk * ldb + 8)));
            for r in 0..6 {
                let x = _mm256_set1_ps(*rp[r].add(kk));
                lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);
            }
        }
    }
    for r in 0..rows {
        // SAFETY: r < rows <= 6; acc holds 8 rows of 16.
        unsafe {
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR), lo[r]);
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR + 8), hi[r]);
        }
    }
}
