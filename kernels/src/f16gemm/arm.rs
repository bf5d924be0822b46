//! aarch64 f16-weight microkernel: `fcvtl`/`fcvtl2` widen a k-row of the panel to four f32x4
//! (inline asm: the half-precision intrinsics are not stable Rust), then `fmla` with each
//! activation row. Baseline NEON: runs on the Cortex-A72. Rows past `rows` repeat the last.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{MR_MAX, NR};

/// 4 rows x 16 channels, four q accumulators per row.
pub(super) fn neon(a: &[f32], lda: usize, rows: usize, k: usize, panel: &[u16], acc: &mut [f32; MR_MAX * NR]) {
    let rp: [*const f32; 4] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: NEON is part of every aarch64 target edgevit supports; the caller asserted that
    // every row holds k values and the panel k * 16 halves, so all loads are in bounds.
    unsafe { neon_body(&rp, rows, k, panel.as_ptr(), acc) }
}

#[target_feature(enable = "neon")]
unsafe fn neon_body(rp: &[*const f32; 4], rows: usize, k: usize, panel: *const u16, acc: &mut [f32; MR_MAX * NR]) {
    let mut c = [[vdupq_n_f32(0.0); 4]; 4];
    for kk in 0..k {
        let (w0, w1, w2, w3): (float32x4_t, float32x4_t, float32x4_t, float32x4_t);
        // SAFETY: reads the 32 bytes of halves at kk * 16 (in bounds, see caller) and writes
        // only the declared registers.
        unsafe {
            asm!(
                "ldp {h0:q}, {h1:q}, [{p}]",
                "fcvtl {w0:v}.4s, {h0:v}.4h",
                "fcvtl2 {w1:v}.4s, {h0:v}.8h",
                "fcvtl {w2:v}.4s, {h1:v}.4h",
                "fcvtl2 {w3:v}.4s, {h1:v}.8h",
                p = in(reg) panel.add(kk * NR),
                h0 = out(vreg) _,
                h1 = out(vreg) _,
                w0 = out(vreg) w0,
                w1 = out(vreg) w1,
                w2 = out(vreg) w2,
                w3 = out(vreg) w3,
                options(pure, readonly, nostack),
            );
        }
        for r in 0..4 {
            // SAFETY: kk < k, so a[r][kk] is in bounds (see caller).
            let x = unsafe { *rp[r].add(kk) };
            c[r][0] = vfmaq_n_f32(c[r][0], w0, x);
            c[r][1] = vfmaq_n_f32(c[r][1], w1, x);
            c[r][2] = vfmaq_n_f32(c[r][2], w2, x);
            c[r][3] = vfmaq_n_f32(c[r][3], w3, x);
        }
    }
    for (r, row) in c.iter().enumerate().take(rows) {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: r < rows <= 4 and acc holds 8 rows of 16.
            unsafe { vst1q_f32(acc.as_mut_ptr().add(r * NR + 4 * j), *v) };
        }
    }
}
