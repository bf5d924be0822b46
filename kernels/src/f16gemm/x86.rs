//! x86_64 packed-weight microkernels: `vcvtph2ps` widens a k-row of an f16 panel (f32 panels
//! are loaded as they are), then FMA with each activation row broadcast. Rows past `rows`
//! repeat the last one and are not stored.

use std::arch::x86_64::*;

use super::{OutBlock, MR_MAX, NR};
use crate::activation::{x86::gelu_avx512, Activation};
use crate::i8gemm::Epilogue;

/// 8 rows x 32 channels (two panels), two zmm accumulators per row: 16 FMAs for every 10
/// loads (8 broadcasts, 2 weight rows), where one panel at a time needs 9 loads for 8 FMAs and
/// is bound by the load ports.
/// The tile is finished in registers into `out`.
pub(super) fn avx512(a: &[f32], lda: usize, rows: usize, k: usize, panels: [&[u16]; 2], out: OutBlock<'_>) {
    let rp: [*const f32; 8] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: the dispatcher checked AVX-512F; the caller asserted that every row holds k
    // values and each panel k * 16 halves, so all loads below are in bounds, and the driver
    // that made `out` checked its rows x cols block.
    unsafe { avx512_body(&rp, rows, k, panels[0].as_ptr(), panels[1].as_ptr(), out) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_body(rp: &[*const f32; 8], rows: usize, k: usize, p0: *const u16, p1: *const u16, out: OutBlock<'_>) {
    let mut c0 = [_mm512_setzero_ps(); 8];
    let mut c1 = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 of each panel and a[r][kk] are in
        // bounds (see caller).
        unsafe {
            let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(p0.add(kk * NR) as *const __m256i));
            let w1 = _mm512_cvtph_ps(_mm256_loadu_si256(p1.add(kk * NR) as *const __m256i));
            for r in 0..8 {
                let x = _mm512_set1_ps(*rp[r].add(kk));
                c0[r] = _mm512_fmadd_ps(x, w0, c0[r]);
                c1[r] = _mm512_fmadd_ps(x, w1, c1[r]);
            }
        }
    }
    // SAFETY: `out`'s block is in bounds (see caller).
    unsafe { finish_wide(&c0, &c1, rows, out) };
}

/// 8 rows x 32 channels of f32 weights: [`avx512`] without the widening.
pub(super) fn avx512_f32(a: &[f32], lda: usize, rows: usize, k: usize, panels: [&[f32]; 2], out: OutBlock<'_>) {
    let rp: [*const f32; 8] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: the dispatcher checked AVX-512F; the caller asserted that every row holds k
    // values and each panel k * 16 floats, so all loads below are in bounds, and the driver
    // that made `out` checked its rows x cols block.
    unsafe { avx512_f32_body(&rp, rows, k, panels[0].as_ptr(), panels[1].as_ptr(), out) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_f32_body(
    rp: &[*const f32; 8],
    rows: usize,
    k: usize,
    p0: *const f32,
    p1: *const f32,
    out: OutBlock<'_>,
) {
    // SAFETY: the caller's bounds: k values per row of `a`, k rows of 16 in each panel.
    let (c0, c1) = unsafe { crate::tile::x86::wide_tile(rp, k, p0, p1, NR) };
    // SAFETY: `out`'s block is in bounds (see caller).
    unsafe { finish_wide(&c0, &c1, rows, out) };
}

/// Adds the bias and applies the epilogue to the two-panel tile in registers, then stores its
/// `rows x out.cols` block (masked at a ragged right edge): the same operations, in the same
/// order, as the driver's `finish_row` on the scalar path.
///
/// # Safety
/// `out.dst` must address `rows` rows of `out.cols` (<= 32) writable floats at stride `out.ldo`.
#[target_feature(enable = "avx512f")]
unsafe fn finish_wide(c0: &[__m512; 8], c1: &[__m512; 8], rows: usize, out: OutBlock<'_>) {
    let mask = |n: usize| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
    let (m0, m1) = (mask(out.cols), mask(out.cols.saturating_sub(16)));
    // SAFETY: masked loads touch only the `cols` biases.
    let bias = out.bias.map(|b| unsafe {
        (_mm512_maskz_loadu_ps(m0, b.as_ptr()), _mm512_maskz_loadu_ps(m1, b.as_ptr().wrapping_add(16)))
    });
    for r in 0..rows.min(8) {
        let d = out.dst.wrapping_add(r * out.ldo);
        let (mut v0, mut v1) = (c0[r], c1[r]);
        if let Some((b0, b1)) = bias {
            (v0, v1) = (_mm512_add_ps(v0, b0), _mm512_add_ps(v1, b1));
        }
        // SAFETY: masked loads and stores touch only the row's `cols` outputs (see above).
        unsafe {
            match out.epilogue {
                Epilogue::Accumulate => {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, d), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, d.wrapping_add(16)), v1);
                }
                Epilogue::Activate(Activation::Gelu) => (v0, v1) = (gelu_avx512(v0), gelu_avx512(v1)),
                _ => {}
            }
            _mm512_mask_storeu_ps(d, m0, v0);
            _mm512_mask_storeu_ps(d.wrapping_add(16), m1, v1);
            if let Epilogue::Activate(act) = out.epilogue {
                if act != Activation::Gelu {
                    act.apply_slice(std::slice::from_raw_parts_mut(d, out.cols));
                }
            }
        }
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
