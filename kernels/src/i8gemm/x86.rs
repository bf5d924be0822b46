//! x86_64 int8 microkernels. Each one is a safe wrapper that checks the CPU feature and then
//! calls a `#[target_feature]` body; `super::I8Kernel::run` has checked the slice sizes.

// Register tiles are indexed by row and panel; index loops read clearer than iterators here.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{row_ptrs, KG, MR_MAX, NR, TILE_N};

pub fn avx2(a: &[i8], stride: usize, rows: usize, panel: &[i8], acc: &mut [i32; MR_MAX * TILE_N]) {
    assert!(is_x86_feature_detected!("avx2"));
    let rp = row_ptrs::<4>(a, stride, rows);
    // SAFETY: AVX2 is present (checked above); every row pointer addresses `stride` readable
    // bytes and the panel holds stride/4 groups of 64 bytes (checked by the caller), which is
    // all the body reads; `acc` has room for 4 x 16 results.
    unsafe { avx2_body(rp, stride / KG, panel.as_ptr(), acc) }
}

#[target_feature(enable = "avx2")]
unsafe fn avx2_body(rp: [*const i8; 4], groups: usize, w: *const i8, acc: &mut [i32; MR_MAX * TILE_N]) {
    let ones = _mm256_set1_epi16(1);
    let mut c = [[_mm256_setzero_si256(); 2]; 4];
    for g in 0..groups {
        let w0 = _mm256_loadu_si256(w.add(g * 64) as *const __m256i);
        let w1 = _mm256_loadu_si256(w.add(g * 64 + 32) as *const __m256i);
        for r in 0..4 {
            let av = _mm256_set1_epi32((rp[r].add(g * KG) as *const i32).read_unaligned());
            // a*w = |a| * (w * sign(a)): vpmaddubsw's unsigned operand is |a| <= 127, so each
            // pair sum is at most 2*127*127 = 32258 and never saturates int16.
            let aa = _mm256_abs_epi8(av);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, av)), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, av)), ones);
            c[r][0] = _mm256_add_epi32(c[r][0], p0);
            c[r][1] = _mm256_add_epi32(c[r][1], p1);
        }
    }
    for r in 0..4 {
        _mm256_storeu_si256(acc.as_mut_ptr().add(r * TILE_N) as *mut __m256i, c[r][0]);
        _mm256_storeu_si256(acc.as_mut_ptr().add(r * TILE_N + 8) as *mut __m256i, c[r][1]);
    }
}

pub fn avxvnni(
    a: &[i8],
    stride: usize,
    rows: usize,
    panel: &[i8],
    sums: &[i32; TILE_N],
    acc: &mut [i32; MR_MAX * TILE_N],
) {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni"));
    let rp = row_ptrs::<4>(a, stride, rows);
    // SAFETY: as for `avx2`, with AVX-VNNI checked too.
    unsafe { avxvnni_body(rp, stride / KG, panel.as_ptr(), sums, acc) }
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avxvnni_body(
    rp: [*const i8; 4],
    groups: usize,
    w: *const i8,
    sums: &[i32; TILE_N],
    acc: &mut [i32; MR_MAX * TILE_N],
) {
    let mut c = [[_mm256_setzero_si256(); 2]; 4];
    for g in 0..groups {
        let w0 = _mm256_loadu_si256(w.add(g * 64) as *const __m256i);
        let w1 = _mm256_loadu_si256(w.add(g * 64 + 32) as *const __m256i);
        for r in 0..4 {
            // Activations arrive as a + 128 (unsigned); the extra 128 * sum(w) is subtracted below.
            let au = _mm256_set1_epi32((rp[r].add(g * KG) as *const i32).read_unaligned());
            c[r][0] = _mm256_dpbusd_avx_epi32(c[r][0], au, w0);
            c[r][1] = _mm256_dpbusd_avx_epi32(c[r][1], au, w1);
        }
    }
    let s0 = _mm256_slli_epi32(_mm256_loadu_si256(sums.as_ptr() as *const __m256i), 7);
    let s1 = _mm256_slli_epi32(_mm256_loadu_si256(sums.as_ptr().add(8) as *const __m256i), 7);
    for r in 0..4 {
        _mm256_storeu_si256(acc.as_mut_ptr().add(r * TILE_N) as *mut __m256i, _mm256_sub_epi32(c[r][0], s0));
        _mm256_storeu_si256(acc.as_mut_ptr().add(r * TILE_N + 8) as *mut __m256i, _mm256_sub_epi32(c[r][1], s1));
    }
}

pub fn avx512vnni(
    a: &[i8],
    stride: usize,
    rows: usize,
    panel: &[i8],
    panels: usize,
    sums: &[i32; TILE_N],
    acc: &mut [i32; MR_MAX * TILE_N],
) {
    assert!(
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    );
    let rp = row_ptrs::<8>(a, stride, rows);
    let groups = stride / KG;
    // SAFETY: as for `avx2`, with AVX-512F/BW/VNNI checked; the caller checked that `panel`
    // holds `panels` panels of `groups` groups; `acc` has room for 8 x 32.
    unsafe {
        if panels == 2 {
            avx512vnni_body::<2>(rp, groups, panel.as_ptr(), sums, acc)
        } else {
            avx512vnni_body::<1>(rp, groups, panel.as_ptr(), sums, acc)
        }
    }
}

/// 8 rows x NP panels: 8 x NP accumulators; per group NP weight loads, 8 broadcasts (folded
/// into `vpdpbusd`'s memory operand) and 8 x NP dot products.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn avx512vnni_body<const NP: usize>(
    rp: [*const i8; 8],
    groups: usize,
    w: *const i8,
    sums: &[i32; TILE_N],
    acc: &mut [i32; MR_MAX * TILE_N],
) {
    let panel_len = groups * NR * KG;
    let mut c = [[_mm512_setzero_si512(); NP]; 8];
    for g in 0..groups {
        let wv: [__m512i; NP] = std::array::from_fn(|p| _mm512_loadu_si512(w.add(p * panel_len + g * 64) as *const _));
        for r in 0..8 {
            // Activations arrive as a + 128 (unsigned); 128 * sum(w) is subtracted below.
            let au = _mm512_set1_epi32((rp[r].add(g * KG) as *const i32).read_unaligned());
            for p in 0..NP {
                c[r][p] = _mm512_dpbusd_epi32(c[r][p], au, wv[p]);
            }
        }
    }
    for p in 0..NP {
        let s = _mm512_slli_epi32(_mm512_loadu_si512(sums.as_ptr().add(p * NR) as *const _), 7);
        for r in 0..8 {
            _mm512_storeu_si512(acc.as_mut_ptr().add(r * TILE_N + p * NR) as *mut _, _mm512_sub_epi32(c[r][p], s));
        }
    }
}
