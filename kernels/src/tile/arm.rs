//! aarch64 f32 tile: each row of `a` broadcast, `fmla` with four q registers of `b`'s row.
//! Rows past `rows` repeat the last one and are not stored.

use std::arch::aarch64::*;

use super::{MR_MAX, NR};

pub(super) fn neon(a: &[f32], lda: usize, rows: usize, k: usize, b: &[f32], ldb: usize, acc: &mut [f32; MR_MAX * NR]) {
    let rp: [*const f32; 4] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: NEON is baseline on aarch64; the caller asserted every row of `a` holds k values
    // and `b` holds k rows of 16 at stride ldb.
    unsafe { neon_body(&rp, rows, k, b.as_ptr(), ldb, acc) }
}

#[target_feature(enable = "neon")]
unsafe fn neon_body(
    rp: &[*const f32; 4],
    rows: usize,
    k: usize,
    b: *const f32,
    ldb: usize,
    acc: &mut [f32; MR_MAX * NR],
) {
    let mut c = [[vdupq_n_f32(0.0); 4]; 4];
    for kk in 0..k {
        // SAFETY: kk < k: in bounds per the caller's checks.
        let w = unsafe {
            let p = b.add(kk * ldb);
            [vld1q_f32(p), vld1q_f32(p.add(4)), vld1q_f32(p.add(8)), vld1q_f32(p.add(12))]
        };
        for r in 0..4 {
            // SAFETY: kk < k: in bounds per the caller's checks.
            let x = unsafe { *rp[r].add(kk) };
            for j in 0..4 {
                c[r][j] = vfmaq_n_f32(c[r][j], w[j], x);
            }
        }
    }
    for (r, row) in c.iter().enumerate().take(rows) {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: r < rows <= 4; acc holds 8 rows of 16.
            unsafe { vst1q_f32(acc.as_mut_ptr().add(r * NR + 4 * j), *v) };
        }
    }
}
