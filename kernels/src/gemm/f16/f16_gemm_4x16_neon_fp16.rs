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
        if HALVES && kk + 8 <= end {
            let steps = (end - kk) / 8;
            // SAFETY: kk + 8 * steps <= k: the rows' halves and the panel's k-rows read are in
            // bounds (see `run_halves`); FP16 is present (this function's feature).
            unsafe {
                let rows = rp.map(|p| (p as *const u16).add(kk));
                eight_steps_of_halves(rows, panel.add(kk * NR), steps, &mut chain);
            }
            kk += 8 * steps;
        }
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
        if HALVES {
            // SAFETY: FP16 (and so NEON) is present: this function's feature.
            unsafe { widen_into(&chain, &mut total) };
        } else {
            for r in 0..4 {
                for j in 0..2 {
                    let (lo, hi) = widen(chain[r][j]);
                    total[r][2 * j] = vaddq_f32(total[r][2 * j], lo);
                    total[r][2 * j + 1] = vaddq_f32(total[r][2 * j + 1], hi);
                }
            }
        }
    }
    total
}

/// One row's two chains widened (`fcvtl`, `fcvtl2`: exact) and added to its four totals.
#[rustfmt::skip]
macro_rules! widen_row {
    ($c0:literal, $c1:literal, $t0:literal, $t1:literal, $t2:literal, $t3:literal) => { concat!(
        "fcvtl v4.4s, v", $c0, ".4h\n",
        "fcvtl2 v5.4s, v", $c0, ".8h\n",
        "fcvtl v6.4s, v", $c1, ".4h\n",
        "fcvtl2 v7.4s, v", $c1, ".8h\n",
        "fadd v", $t0, ".4s, v", $t0, ".4s, v4.4s\n",
        "fadd v", $t1, ".4s, v", $t1, ".4s, v5.4s\n",
        "fadd v", $t2, ".4s, v", $t2, ".4s, v6.4s\n",
        "fadd v", $t3, ".4s, v", $t3, ".4s, v7.4s\n",
    )};
}

/// The widening of [`body_on`]'s chains into its totals (as its `widen` loop, row by row: the
/// same additions, so the same bits), in asm on a 256-byte boundary: compiled from Rust, these
/// 32 operations moved with the code around them, and where they crossed a 4 KB page qemu split
/// them into blocks that the cycle estimate cannot overlap (3.6 M of ViT-Ti f16's estimated A76
/// cycles).
///
/// # Safety
/// NEON is present (baseline on aarch64).
#[inline(always)]
unsafe fn widen_into(chain: &[[uint16x8_t; 2]; 4], total: &mut [[float32x4_t; 4]; 4]) {
    let [[a0, a1, a2, a3], [b0, b1, b2, b3], [c0, c1, c2, c3], [d0, d1, d2, d3]] = total;
    // SAFETY: register-only conversions and additions; only the declared registers are
    // written. The padding is jumped over.
    unsafe {
        asm!(
            "b 1f",
            ".p2align 8",
            "1:",
            widen_row!(16, 17, 8, 9, 10, 11),
            widen_row!(18, 19, 12, 13, 14, 15),
            widen_row!(20, 21, 24, 25, 26, 27),
            widen_row!(22, 23, 28, 29, 30, 31),
            in("v16") chain[0][0], in("v17") chain[0][1], in("v18") chain[1][0], in("v19") chain[1][1],
            in("v20") chain[2][0], in("v21") chain[2][1], in("v22") chain[3][0], in("v23") chain[3][1],
            inout("v8") *a0, inout("v9") *a1, inout("v10") *a2, inout("v11") *a3,
            inout("v12") *b0, inout("v13") *b1, inout("v14") *b2, inout("v15") *b3,
            inout("v24") *c0, inout("v25") *c1, inout("v26") *c2, inout("v27") *c3,
            inout("v28") *d0, inout("v29") *d1, inout("v30") *d2, inout("v31") *d3,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            options(pure, nomem, nostack),
        );
    }
}

/// One step of [`eight_steps_of_halves`]'s loop: lane `$l` of each row's eight halves (v0-v3)
/// times k-row `$l` of the panel, loaded into `$w0`, `$w1`, added to the row's chain.
#[rustfmt::skip]
macro_rules! halves_lane {
    ($l:literal, $w0:literal, $w1:literal) => { concat!(
        "ldp q", $w0, ", q", $w1, ", [{w}], #32\n",
        "fmla v16.8h, v", $w0, ".8h, v0.h[", $l, "]\n",
        "fmla v17.8h, v", $w1, ".8h, v0.h[", $l, "]\n",
        "fmla v18.8h, v", $w0, ".8h, v1.h[", $l, "]\n",
        "fmla v19.8h, v", $w1, ".8h, v1.h[", $l, "]\n",
        "fmla v20.8h, v", $w0, ".8h, v2.h[", $l, "]\n",
        "fmla v21.8h, v", $w1, ".8h, v2.h[", $l, "]\n",
        "fmla v22.8h, v", $w0, ".8h, v3.h[", $l, "]\n",
        "fmla v23.8h, v", $w1, ".8h, v3.h[", $l, "]\n",
    )};
}

/// `steps` (at least one) groups of eight k-steps of [`body_on`]'s half-precision chains, on
/// activations already in half: the loop `lane_step` compiles to, the same operations on each
/// chain in the same order, so the same bits. In asm for its alignment: the loop (78
/// instructions) starts on a 512-byte boundary, so it never straddles a 4 KB page. Compiled
/// from intrinsics it moved with every change elsewhere, and where it crossed a page qemu split
/// it into blocks that the cycle estimate cannot overlap (ViT-Ti f16 on the A76: 151.3 M
/// estimated cycles against 144.5 M with the same instructions).
///
/// # Safety
/// FP16 arithmetic is present; each row pointer addresses `8 * steps` halves and `panel`
/// `8 * steps` k-rows of 16 halves.
#[target_feature(enable = "neon,fp16")]
unsafe fn eight_steps_of_halves(rows: [*const u16; 4], panel: *const u16, steps: usize, chain: &mut [[uint16x8_t; 2]; 4]) {
    debug_assert!(steps >= 1);
    let [[mut c0, mut c1], [mut c2, mut c3], [mut c4, mut c5], [mut c6, mut c7]] = *chain;
    // SAFETY: the loads stay in the rows' and the panel's ranges (the caller's promise); only
    // the declared registers are written. The padding is jumped over.
    unsafe {
        asm!(
            ".arch_extension fp16",
            "b 1f",
            ".p2align 9",
            "1:",
            "ldr q0, [{r0}], #16",
            "ldr q1, [{r1}], #16",
            "ldr q2, [{r2}], #16",
            "ldr q3, [{r3}], #16",
            halves_lane!(0, 4, 5),
            halves_lane!(1, 6, 7),
            halves_lane!(2, 4, 5),
            halves_lane!(3, 6, 7),
            halves_lane!(4, 4, 5),
            halves_lane!(5, 6, 7),
            halves_lane!(6, 4, 5),
            halves_lane!(7, 6, 7),
            "subs {n}, {n}, #1",
            "b.ne 1b",
            r0 = inout(reg) rows[0] => _,
            r1 = inout(reg) rows[1] => _,
            r2 = inout(reg) rows[2] => _,
            r3 = inout(reg) rows[3] => _,
            w = inout(reg) panel => _,
            n = inout(reg) steps => _,
            inout("v16") c0, inout("v17") c1, inout("v18") c2, inout("v19") c3,
            inout("v20") c4, inout("v21") c5, inout("v22") c6, inout("v23") c7,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            options(nostack, readonly),
        );
    }
    *chain = [[c0, c1], [c2, c3], [c4, c5], [c6, c7]];
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
