//! x86_64 AVX-512 VNNI, 8 rows x 32 channels (two panels; one at a ragged right edge):
//! 512-bit `vpdpbusd` with activations stored as `q + 128` (its unsigned operand); the extra
//! `128 * sum(w)` is subtracted at the end. The tile is finished in registers.

use std::arch::x86_64::*;

use super::{Columns, Rows, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::avx512::finish_i32;

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
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    );
    let groups = check(a, stride, w, panels, 2, &out);
    for_each_tile::<8, i8>(a, stride, &mut out, |rp, m0, mut tile| {
        let rows = rows.at(m0, tile.rows);
        // SAFETY: AVX-512F/BW/VNNI are present (checked above); memory as checked by `check`.
        unsafe {
            if panels == 2 {
                finished_tile::<2>(rp, groups, w, &rows, cols, &mut tile)
            } else {
                finished_tile::<1>(rp, groups, w, &rows, cols, &mut tile)
            }
        }
    });
}

/// One tile computed and finished in one function with the kernel's features, so that the
/// sums reach the epilogue without a copy (returned to a closure without those features, the
/// 16 vectors were copied by `memcpy`: 1.4% of a ViT-Ti int8 inference on a Zen 4).
///
/// # Safety
/// AVX-512F/BW/VNNI are present; memory as checked by `check`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn finished_tile<const NP: usize>(
    rp: [*const i8; 8],
    groups: usize,
    w: &[i8],
    rows: &Rows<'_>,
    cols: &Columns,
    tile: &mut OutBlock<'_>,
) {
    // SAFETY: as this function's contract.
    let (c0, c1) = unsafe { body::<NP>(rp, groups, w.as_ptr(), &cols.w_sum) };
    finish_i32(&c0, &c1, rows, cols, tile);
}

/// 8 rows x NP panels: per group NP weight loads, 8 broadcasts and 8 x NP dot products.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn body<const NP: usize>(
    rp: [*const i8; 8],
    groups: usize,
    w: *const i8,
    sums: &[i32; 32],
) -> ([__m512i; 8], [__m512i; 8]) {
    let panel_len = groups * NR * 4;
    let mut c = [[_mm512_setzero_si512(); NP]; 8];
    for g in 0..groups {
        // SAFETY: g < groups and p < NP panels: in bounds (see `run`).
        let wv: [__m512i; NP] =
            std::array::from_fn(|p| unsafe { _mm512_loadu_si512(w.add(p * panel_len + g * 64) as *const _) });
        for (r, c) in c.iter_mut().enumerate() {
            // SAFETY: g < groups: in bounds (see `run`).
            let au = _mm512_set1_epi32(unsafe { (rp[r].add(g * 4) as *const i32).read_unaligned() });
            for p in 0..NP {
                c[p] = _mm512_dpbusd_epi32(c[p], au, wv[p]);
            }
        }
    }
    // SAFETY: sums holds 32 values.
    let s: [__m512i; 2] =
        std::array::from_fn(|p| _mm512_slli_epi32(unsafe { _mm512_loadu_si512(sums.as_ptr().add(p * NR) as *const _) }, 7));
    let lo = c.map(|row| _mm512_sub_epi32(row[0], s[0]));
    let hi = if NP == 2 { c.map(|row| _mm512_sub_epi32(row[NP - 1], s[1])) } else { lo };
    (lo, hi)
}
