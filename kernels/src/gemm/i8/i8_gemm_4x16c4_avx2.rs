//! x86_64 AVX2, 4 rows x 16 channels: `a * w = |w| * (a * sign(w))` through `vpmaddubsw`
//! (unsigned x signed bytes to int16 pairs) and `vpmaddwd` (pairs to int32).
//!
//! The sign moves onto the activation, not the weight: activations are in [-127, 127], so
//! `vpsignb` can always negate them, while a weight byte may be -128 (the tools never write
//! it, but a file can hold it); `vpabsb` of -128 is 0x80, which `vpmaddubsw` reads as the
//! unsigned 128. It also takes the absolute value once per weight vector instead of once per
//! row.

use std::arch::x86_64::*;

use super::{Columns, Rows, check, for_each_tile, OutBlock};
use crate::gemm::epilogue::avx2::finish_i32;
use crate::gemm::{MR_MAX, NR_MAX};

pub(super) fn run(
    a: &[i8],
    stride: usize,
    w: &[i8],
    panels: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    mut out: OutBlock<'_>,
) {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    let groups = check(a, stride, w, panels, 1, &out);
    // Written whole (every row of the tile) by each body call: no zeroing per tile.
    let mut acc = [0i32; MR_MAX * NR_MAX];
    for_each_tile::<4, i8>(a, stride, &mut out, |rp, m0, mut tile| {
        // SAFETY: AVX2 and FMA are present (checked above); `check` made sure that every row
        // pointer addresses `stride` readable bytes and the panel `groups` groups of 64 bytes.
        unsafe {
            body(rp, groups, w.as_ptr(), &mut acc);
            finish_i32(&acc, &rows.at(m0, tile.rows), cols, &mut tile);
        }
    });
}

#[target_feature(enable = "avx2")]
unsafe fn body(rp: [*const i8; 4], groups: usize, w: *const i8, acc: &mut [i32; MR_MAX * NR_MAX]) {
    let ones = _mm256_set1_epi16(1);
    let mut c = [[_mm256_setzero_si256(); 2]; 4];
    for g in 0..groups {
        // SAFETY: g < groups: in bounds (see `run`).
        let (w0, w1) = unsafe {
            (_mm256_loadu_si256(w.add(g * 64) as *const __m256i), _mm256_loadu_si256(w.add(g * 64 + 32) as *const __m256i))
        };
        let (aw0, aw1) = (_mm256_abs_epi8(w0), _mm256_abs_epi8(w1));
        for (r, c) in c.iter_mut().enumerate() {
            // SAFETY: g < groups: in bounds (see `run`).
            let av = _mm256_set1_epi32(unsafe { (rp[r].add(g * 4) as *const i32).read_unaligned() });
            // |w| <= 128 and |a| <= 127, so each int16 pair sum is at most 2 * 128 * 127 = 32512:
            // no saturation.
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw0, _mm256_sign_epi8(av, w0)), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw1, _mm256_sign_epi8(av, w1)), ones);
            c[0] = _mm256_add_epi32(c[0], p0);
            c[1] = _mm256_add_epi32(c[1], p1);
        }
    }
    for (r, c) in c.iter().enumerate() {
        // SAFETY: acc holds MR_MAX rows of NR_MAX.
        unsafe {
            _mm256_storeu_si256(acc.as_mut_ptr().add(r * NR_MAX) as *mut __m256i, c[0]);
            _mm256_storeu_si256(acc.as_mut_ptr().add(r * NR_MAX + 8) as *mut __m256i, c[1]);
        }
    }
}
