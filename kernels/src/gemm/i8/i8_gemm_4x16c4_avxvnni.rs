//! x86_64 AVX-VNNI, 4 rows x 16 channels: 256-bit `vpdpbusd` with activations stored as
//! `q + 128` (its unsigned operand); the extra `128 * sum(w)` is subtracted at the end.

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
    assert!(
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("avxvnni")
    );
    let groups = check(a, stride, w, panels, 1, &out);
    let sums: &[i32; 16] = cols.w_sum.first_chunk().expect("32 sums");
    // Written whole (every row of the tile) by each body call: no zeroing per tile.
    let mut acc = [0i32; MR_MAX * NR_MAX];
    for_each_tile::<4, i8>(a, stride, &mut out, |rp, m0, mut tile| {
        // SAFETY: AVX2, FMA and AVX-VNNI are present (checked above); memory as checked by
        // `check`.
        unsafe {
            body(rp, groups, w.as_ptr(), sums, &mut acc);
            finish_i32(&acc, &rows.at(m0, tile.rows), cols, &mut tile);
        }
    });
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn body(rp: [*const i8; 4], groups: usize, w: *const i8, sums: &[i32; 16], acc: &mut [i32; MR_MAX * NR_MAX]) {
    let mut c = [[_mm256_setzero_si256(); 2]; 4];
    for g in 0..groups {
        // SAFETY: g < groups: in bounds (see `run`).
        let (w0, w1) = unsafe {
            (_mm256_loadu_si256(w.add(g * 64) as *const __m256i), _mm256_loadu_si256(w.add(g * 64 + 32) as *const __m256i))
        };
        for (r, c) in c.iter_mut().enumerate() {
            // SAFETY: g < groups: in bounds (see `run`).
            let au = _mm256_set1_epi32(unsafe { (rp[r].add(g * 4) as *const i32).read_unaligned() });
            c[0] = _mm256_dpbusd_avx_epi32(c[0], au, w0);
            c[1] = _mm256_dpbusd_avx_epi32(c[1], au, w1);
        }
    }
    // SAFETY: sums holds 16 values.
    let (s0, s1) = unsafe {
        (
            _mm256_slli_epi32(_mm256_loadu_si256(sums.as_ptr() as *const __m256i), 7),
            _mm256_slli_epi32(_mm256_loadu_si256(sums.as_ptr().add(8) as *const __m256i), 7),
        )
    };
    for (r, c) in c.iter().enumerate() {
        // SAFETY: acc holds MR_MAX rows of NR_MAX.
        unsafe {
            _mm256_storeu_si256(acc.as_mut_ptr().add(r * NR_MAX) as *mut __m256i, _mm256_sub_epi32(c[0], s0));
            _mm256_storeu_si256(acc.as_mut_ptr().add(r * NR_MAX + 8) as *mut __m256i, _mm256_sub_epi32(c[1], s1));
        }
    }
}
