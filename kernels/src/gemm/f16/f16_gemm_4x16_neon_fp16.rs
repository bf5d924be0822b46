//! aarch64 FP16 arithmetic (Cortex-A76 and later), 4 rows x 16 channels: per row two 8-lane
//! half accumulators (a block's chain of at most [`FP16_BLOCK`] steps) widened into four
//! f32x4 totals. Inline asm: the half-precision intrinsics are not stable Rust. A tile whose
//! half arithmetic overflows is computed again with f32 accumulation. The tile is finished in
//! registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, check, for_each_tile, OutBlock, FP16_BLOCK, NR};
use crate::gemm::epilogue::neon::{finish_f32, gelu_after_tiles};

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(std::arch::is_aarch64_feature_detected!("fp16"), "f16_gemm_4x16_neon_fp16 needs FEAT_FP16");
    check(a, lda, k, w, panels, 1, &out);
    // SAFETY: FP16 arithmetic was checked above; `check` made sure that every row holds k
    // values and the panel k * 16 halves.
    unsafe { tiles(a, lda, k, w, cols, &mut out) }
}

/// [`run`]'s tile walk, compiled with FP16 like [`body_on`] so that the sums stay in
/// registers: a call across the feature boundary returned them through 256 bytes of stack.
///
/// # Safety
/// FP16 arithmetic is present; every row of `a` holds `k` values and `w` `k * 16` halves.
#[target_feature(enable = "neon,fp16")]
unsafe fn tiles(a: &[f32], lda: usize, k: usize, w: &[u16], cols: &Columns, out: &mut OutBlock<'_>) {
    gelu_after_tiles(out, |out| {
        for_each_tile::<4, f32>(a, lda, out, |rp, _, mut tile| {
            // SAFETY: the caller's promise.
            let mut c = unsafe { body_on::<false>(&rp, k, w.as_ptr()) };
            if !all_finite(&c) {
                // SAFETY: as above.
                c = unsafe { super::f16_gemm_4x16_neon_fcvtl::body(&rp, k, w) };
            }
            finish_f32(&c, cols, &mut tile);
        })
    });
}

/// [`run`] on activations already rounded to half (`a` holds IEEE half bit patterns): the
/// conversion done once per row instead of once per panel. On overflow, f32 accumulation of
/// the same halves (as the twin's `run_halves`).
pub(super) fn run_halves(a: &[u16], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(std::arch::is_aarch64_feature_detected!("fp16"), "f16_gemm_4x16_neon_fp16 needs FEAT_FP16");
    assert!(panels == 1 && out.cols <= NR);
    assert!(a.len() >= (out.rows - 1) * lda + k && w.len() >= k * NR, "f16 gemm: operands too short");
    // SAFETY: FP16 arithmetic was checked above, and the bounds.
    unsafe { tiles_of_halves(a, lda, k, w, cols, &mut out) }
}

/// [`run_halves`]'s tile walk, compiled with FP16 like [`body_on`] so that the sums stay in
/// registers: a call across the feature boundary returned them through 256 bytes of stack.
///
/// # Safety
/// FP16 arithmetic is present; every row of `a` holds `k` halves and `w` `k * 16`.
#[target_feature(enable = "neon,fp16")]
unsafe fn tiles_of_halves(a: &[u16], lda: usize, k: usize, w: &[u16], cols: &Columns, out: &mut OutBlock<'_>) {
    gelu_after_tiles(out, |out| {
        for_each_tile::<4, u16>(a, lda, out, |rp, m0, mut tile| {
            let rp = rp.map(|p| p as *const f32);
            // SAFETY: the caller's promise.
            let c = unsafe { body_on::<true>(&rp, k, w.as_ptr()) };
            if !all_finite(&c) {
                let rows = tile.rows;
                let a = &a[m0 * lda..];
                return super::f16_gemm_4x16_fp16_scalar::f32_of_halves(a, lda, k, w, cols, tile.tile(0, rows));
            }
            finish_f32(&c, cols, &mut tile);
        })
    });
}

fn all_finite(c: &[[float32x4_t; 4]; 4]) -> bool {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let max = c.iter().flatten().fold(vdupq_n_f32(0.0), |m, v| vmaxq_f32(m, vabsq_f32(*v)));
        // `fmax` and `fmaxv` propagate NaN, which then fails the comparison, as infinity does.
        vmaxvq_f32(max) <= f32::MAX
    }
}

/// The tile's sums; with `HALVES`, the row pointers address halves (cast), not floats.
#[target_feature(enable = "neon,fp16")]
unsafe fn body_on<const HALVES: bool>(rp: &[*const f32; 4], k: usize, panel: *const u16) -> [[float32x4_t; 4]; 4] {
    let mut total = [[vdupq_n_f32(0.0); 4]; 4];
    for k0 in (0..k).step_by(FP16_BLOCK) {
        let end = (k0 + FP16_BLOCK).min(k);
        let mut chain = [[vdupq_n_u16(0); 2]; 4];
        let mut kk = k0;
        // Eight steps at a time: each row's next eight activations rounded to half in one
        // register, used lane by lane.
        while kk + 8 <= end {
            // SAFETY: kk + 8 <= k: eight floats of each row and eight k-rows of the panel are in
            // bounds (see `run`).
            unsafe {
                let x: [uint16x8_t; 4] = std::array::from_fn(|r| {
                    if HALVES {
                        vld1q_u16((rp[r] as *const u16).add(kk))
                    } else {
                        to_half8(rp[r].add(kk))
                    }
                });
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
            // SAFETY: kk < k: one float of each row and one k-row of the panel (see `run`).
            unsafe {
                let x: [uint16x8_t; 4] = std::array::from_fn(|r| {
                    if HALVES {
                        vld1q_dup_u16((rp[r] as *const u16).add(kk))
                    } else {
                        to_half1(*rp[r].add(kk))
                    }
                });
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
    total
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
