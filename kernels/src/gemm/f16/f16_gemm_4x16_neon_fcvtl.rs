//! aarch64 NEON (Cortex-A72 and later), 4 rows x 16 channels: `fcvtl`/`fcvtl2` widen a k-row
//! of the panel to four f32x4, then f32 `fmla` with each activation row. Inline asm: the
//! half-precision intrinsics are not stable Rust. The tile is finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::neon::finish_f32;

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    check(a, lda, k, w, panels, 1, &out);
    for_each_tile::<4, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: NEON is baseline on aarch64; `check` made sure that every row holds k values
        // and the panel k * 16 halves.
        let c = unsafe { body(&rp, k, w.as_ptr()) };
        finish_f32(&c, cols, &mut tile);
    });
}

/// The 4 x 16 sums with f32 accumulation; also the half-precision kernel's fallback.
///
/// # Safety
/// Each `rp[r]` must address k readable floats and `panel` k * 16 halves.
#[target_feature(enable = "neon")]
pub(super) unsafe fn body(rp: &[*const f32; 4], k: usize, panel: *const u16) -> [[float32x4_t; 4]; 4] {
    let mut c = [[vdupq_n_f32(0.0); 4]; 4];
    for kk in 0..k {
        let (w0, w1, w2, w3): (float32x4_t, float32x4_t, float32x4_t, float32x4_t);
        // SAFETY: reads the 32 bytes of halves at kk * 16 (in bounds, see above) and writes
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
            // SAFETY: kk < k, so a[r][kk] is in bounds (see above).
            let x = unsafe { *rp[r].add(kk) };
            c[r][0] = vfmaq_n_f32(c[r][0], w0, x);
            c[r][1] = vfmaq_n_f32(c[r][1], w1, x);
            c[r][2] = vfmaq_n_f32(c[r][2], w2, x);
            c[r][3] = vfmaq_n_f32(c[r][3], w3, x);
        }
    }
    c
}
