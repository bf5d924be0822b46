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
/// Four k at a time, each row's four values are one `ldr q` and the products `fmla` by element
/// (as in `f32_gemm_4x16_neon`: no broadcast load per row and k on the vector pipes). Each sum
/// adds its products in k order.
///
/// # Safety
/// Each `rp[r]` must address k readable floats and `panel` k * 16 halves.
#[target_feature(enable = "neon")]
pub(super) unsafe fn body(rp: &[*const f32; 4], k: usize, panel: *const u16) -> [[float32x4_t; 4]; 4] {
    let mut c = [[vdupq_n_f32(0.0); 4]; 4];
    /// One k-row of the panel (16 halves at `p`) widened to four f32x4.
    #[inline(always)]
    unsafe fn widen(p: *const u16) -> [float32x4_t; 4] {
        let (w0, w1, w2, w3): (float32x4_t, float32x4_t, float32x4_t, float32x4_t);
        // SAFETY: reads the 32 bytes at `p` (the caller's bound) and writes only the declared
        // registers.
        unsafe {
            asm!(
                "ldp {h0:q}, {h1:q}, [{p}]",
                "fcvtl {w0:v}.4s, {h0:v}.4h",
                "fcvtl2 {w1:v}.4s, {h0:v}.8h",
                "fcvtl {w2:v}.4s, {h1:v}.4h",
                "fcvtl2 {w3:v}.4s, {h1:v}.8h",
                p = in(reg) p,
                h0 = out(vreg) _,
                h1 = out(vreg) _,
                w0 = out(vreg) w0,
                w1 = out(vreg) w1,
                w2 = out(vreg) w2,
                w3 = out(vreg) w3,
                options(pure, readonly, nostack),
            );
        }
        [w0, w1, w2, w3]
    }
    /// Row `kk + L` of the panel times lane L of each row's four values.
    #[inline(always)]
    unsafe fn step<const L: i32>(c: &mut [[float32x4_t; 4]; 4], x: &[float32x4_t; 4], p: *const u16) {
        // SAFETY: the caller passes a k-row in bounds.
        let w = unsafe { widen(p) };
        for r in 0..4 {
            for j in 0..4 {
                c[r][j] = vfmaq_laneq_f32::<L>(c[r][j], w[j], x[r]);
            }
        }
    }
    let mut kk = 0;
    while kk + 4 <= k {
        // SAFETY: kk + 4 <= k: four values of each row and four k-rows of the panel are in bounds.
        unsafe {
            let x = [vld1q_f32(rp[0].add(kk)), vld1q_f32(rp[1].add(kk)), vld1q_f32(rp[2].add(kk)), vld1q_f32(rp[3].add(kk))];
            let p = panel.add(kk * NR);
            step::<0>(&mut c, &x, p);
            step::<1>(&mut c, &x, p.add(NR));
            step::<2>(&mut c, &x, p.add(2 * NR));
            step::<3>(&mut c, &x, p.add(3 * NR));
        }
        kk += 4;
    }
    for kk in kk..k {
        // SAFETY: kk < k: the k-row and a[r][kk] are in bounds (see above).
        let w = unsafe { widen(panel.add(kk * NR)) };
        for r in 0..4 {
            // SAFETY: as above.
            let x = unsafe { *rp[r].add(kk) };
            for j in 0..4 {
                c[r][j] = vfmaq_n_f32(c[r][j], w[j], x);
            }
        }
    }
    c
}
