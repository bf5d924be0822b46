//! aarch64 f16-weight microkernels (inline asm: the half-precision intrinsics are not stable
//! Rust). Rows past `rows` repeat the last one and are not stored.
//! - `neon`: `fcvtl`/`fcvtl2` widen a k-row of the panel to four f32x4, then f32 `fmla` with
//!   each activation row. Baseline NEON: runs on the Cortex-A72.
//! - `neon_fp16`: half-precision `fmla` on eight lanes (FEAT_FP16: Cortex-A76 and later), in
//!   chains of at most `FP16_BLOCK` steps that are then widened into f32 sums.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{FP16_BLOCK, MR_MAX, NR};

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

/// 4 rows x 16 channels in half precision: per row two 8-lane half accumulators (a block's
/// chain) and four f32x4 totals.
pub(super) fn neon_fp16(a: &[f32], lda: usize, rows: usize, k: usize, panel: &[u16], acc: &mut [f32; MR_MAX * NR]) {
    assert!(std::arch::is_aarch64_feature_detected!("fp16"), "neon_fp16 needs FEAT_FP16");
    let rp: [*const f32; 4] = std::array::from_fn(|r| a[r.min(rows - 1) * lda..].as_ptr());
    // SAFETY: FP16 arithmetic was checked above; the caller asserted that every row holds k
    // values and the panel k * 16 halves, so all loads are in bounds.
    unsafe { neon_fp16_body(&rp, rows, k, panel.as_ptr(), acc) }
}

#[target_feature(enable = "neon,fp16")]
unsafe fn neon_fp16_body(rp: &[*const f32; 4], rows: usize, k: usize, panel: *const u16, acc: &mut [f32; MR_MAX * NR]) {
    let mut total = [[vdupq_n_f32(0.0); 4]; 4];
    for k0 in (0..k).step_by(FP16_BLOCK) {
        let end = (k0 + FP16_BLOCK).min(k);
        let mut chain = [[vdupq_n_u16(0); 2]; 4];
        let mut kk = k0;
        // Eight steps at a time: each row's next eight activations rounded to half in one
        // register, used lane by lane.
        while kk + 8 <= end {
            // SAFETY: kk + 8 <= k: eight floats of each row and eight k-rows of the panel are in
            // bounds (see caller).
            unsafe {
                let x: [uint16x8_t; 4] = std::array::from_fn(|r| to_half8(rp[r].add(kk)));
                let w = |i: usize| (vld1q_u16(panel.add((kk + i) * NR)), vld1q_u16(panel.add((kk + i) * NR + 8)));
                lane_step::<0>(&mut chain, w(0), &x);
                lane_step::<1>(&mut chain, w(1), &x);
                lane_step::<2>(&mut chain, w(2), &x);
                lane_step::<3>(&mut chain, w(3), &x);
                lane_step::<4>(&mut chain, w(4), &x);
                lane_step::<5>(&mut chain, w(5), &x);
                lane_step::<6>(&mut chain, w(6), &x);
                lane_step::<7>(&mut chain, w(7), &x);
            }
            kk += 8;
        }
        while kk < end {
            // SAFETY: kk < k: one float of each row and one k-row of the panel (see caller).
            unsafe {
                let x: [uint16x8_t; 4] = std::array::from_fn(|r| to_half1(*rp[r].add(kk)));
                let w = (vld1q_u16(panel.add(kk * NR)), vld1q_u16(panel.add(kk * NR + 8)));
                lane_step::<0>(&mut chain, w, &x);
            }
            kk += 1;
        }
        for r in 0..4 {
            for j in 0..2 {
                let (lo, hi) = widen(chain[r][j]);
                total[r][2 * j] = vaddq_f32(total[r][2 * j], lo);
                total[r][2 * j + 1] = vaddq_f32(total[r][2 * j + 1], hi);
            }
        }
    }
    for (r, row) in total.iter().enumerate().take(rows) {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: r < rows <= 4 and acc holds 8 rows of 16.
            unsafe { vst1q_f32(acc.as_mut_ptr().add(r * NR + 4 * j), *v) };
        }
    }
}

/// Eight floats rounded to half (`fcvtn`, to nearest even), as eight lanes.
///
/// # Safety
/// `p` must address eight readable floats.
#[inline(always)]
unsafe fn to_half8(p: *const f32) -> uint16x8_t {
    let x: uint16x8_t;
    // SAFETY: reads the 32 bytes at p (the caller's promise); writes only declared registers.
    unsafe {
        asm!(
            "ldp {a:q}, {b:q}, [{p}]",
            "fcvtn {x:v}.4h, {a:v}.4s",
            "fcvtn2 {x:v}.8h, {b:v}.4s",
            p = in(reg) p,
            a = out(vreg) _,
            b = out(vreg) _,
            x = out(vreg) x,
            options(pure, readonly, nostack),
        );
    }
    x
}

/// One float rounded to half (`fcvt`, to nearest even) in lane 0.
#[inline(always)]
fn to_half1(v: f32) -> uint16x8_t {
    let x: uint16x8_t;
    // SAFETY: register-only conversion.
    unsafe {
        asm!("fcvt {x:h}, {v:s}", v = in(vreg) v, x = out(vreg) x, options(pure, nomem, nostack));
    }
    x
}

/// For every row r: `chain[r] += w * x[r][LANE]` in half precision, fused (`fmla` by element).
///
/// # Safety
/// The CPU must have FEAT_FP16.
#[inline(always)]
unsafe fn lane_step<const LANE: usize>(
    chain: &mut [[uint16x8_t; 2]; 4],
    w: (uint16x8_t, uint16x8_t),
    x: &[uint16x8_t; 4],
) {
    for r in 0..4 {
        // SAFETY: register-only arithmetic; the caller checked FEAT_FP16.
        unsafe {
            asm!(
                ".arch_extension fp16",
                "fmla {c0:v}.8h, {w0:v}.8h, {x:v}.h[{lane}]",
                "fmla {c1:v}.8h, {w1:v}.8h, {x:v}.h[{lane}]",
                c0 = inout(vreg) chain[r][0],
                c1 = inout(vreg) chain[r][1],
                w0 = in(vreg) w.0,
                w1 = in(vreg) w.1,
                x = in(vreg_low16) x[r],
                lane = const LANE,
                options(pure, nomem, nostack),
            );
        }
    }
}

/// Eight half lanes widened to two f32x4 (`fcvtl`, `fcvtl2`: exact).
#[inline(always)]
fn widen(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: register-only conversion, baseline NEON.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack),
        );
    }
    (lo, hi)
}
