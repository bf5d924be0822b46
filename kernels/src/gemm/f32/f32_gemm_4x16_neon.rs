//! aarch64 NEON, 4 rows x 16 columns: each row of `a` broadcast by element, `fmla` with four q
//! registers of `b`'s row. The tile is finished in registers.

use std::arch::aarch64::*;

use super::{Columns, check, for_each_tile, OutBlock};
use crate::gemm::epilogue::neon::finish_f32;

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
    check(a, lda, k, b, ldb, panel_stride, panels, 1, &out);
    for_each_tile::<4, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: NEON is baseline on aarch64; `check` made sure that every row of `a` holds k
        // values and `b` k rows of 16 at stride ldb.
        let c = unsafe { body(&rp, k, b.as_ptr(), ldb) };
        finish_f32(&c, cols, &mut tile);
    });
}

/// The 4 x 16 sums, also attention's inner loop.
///
/// # Safety
/// Each `rp[r]` must address k readable floats, and `b` k rows of 16 at stride `ldb`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn body(rp: &[*const f32; 4], k: usize, b: *const f32, ldb: usize) -> [[float32x4_t; 4]; 4] {
    let mut c = [[vdupq_n_f32(0.0); 4]; 4];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds per the function's contract.
        let (w, x) = unsafe {
            let p = b.add(kk * ldb);
            let w = [vld1q_f32(p), vld1q_f32(p.add(4)), vld1q_f32(p.add(8)), vld1q_f32(p.add(12))];
            (w, [*rp[0].add(kk), *rp[1].add(kk), *rp[2].add(kk), *rp[3].add(kk)])
        };
        for r in 0..4 {
            for j in 0..4 {
                c[r][j] = vfmaq_n_f32(c[r][j], w[j], x[r]);
            }
        }
    }
    c
}
