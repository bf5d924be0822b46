//! aarch64 int8 microkernels: baseline NEON for the Cortex-A72 and `sdot` for CPUs with the
//! dot-product extension (Cortex-A76). `sdot` has no stable intrinsic, so it is inline asm
//! inside a `#[target_feature(enable = "dotprod")]` function.

// Register tiles are indexed by row and panel; index loops read clearer than iterators here.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::{row_ptrs, KG, MR_MAX, TILE_N};

pub fn neon(a: &[i8], stride: usize, rows: usize, panel: &[i8], acc: &mut [i32; MR_MAX * TILE_N]) {
    let rp = row_ptrs::<2>(a, stride, rows);
    // SAFETY: NEON is part of the aarch64 baseline; every row pointer addresses `stride`
    // readable bytes and the panel stride/4 groups of 64 bytes (checked by the caller);
    // `acc` has room for 2 x 16 results.
    unsafe { neon_body(rp, stride / KG, panel.as_ptr(), acc) }
}

#[inline(always)]
unsafe fn bcast4(p: *const i8) -> int8x16_t {
    vreinterpretq_s8_s32(vdupq_n_s32((p as *const i32).read_unaligned()))
}

#[target_feature(enable = "neon")]
unsafe fn neon_body(rp: [*const i8; 2], groups: usize, w: *const i8, acc: &mut [i32; MR_MAX * TILE_N]) {
    // lo[r][j]: pair sums for channels 4j, 4j+1; hi[r][j]: for 4j+2, 4j+3.
    let mut lo = [[vdupq_n_s32(0); 4]; 2];
    let mut hi = [[vdupq_n_s32(0); 4]; 2];
    let mut g = 0;
    // Two groups per step: smull + smlal put two products in one int16 lane, at most
    // 2*127*127 = 32258, which cannot overflow; sadalp then widens pairs into int32.
    while g + 2 <= groups {
        let w0: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add(g * 64 + j * 16)));
        let w1: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add((g + 1) * 64 + j * 16)));
        for r in 0..2 {
            let a0 = bcast4(rp[r].add(g * KG));
            let a1 = bcast4(rp[r].add((g + 1) * KG));
            for j in 0..4 {
                let pl = vmlal_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(w0[j])), vget_low_s8(a1), vget_low_s8(w1[j]));
                lo[r][j] = vpadalq_s16(lo[r][j], pl);
                let ph = vmlal_high_s8(vmull_high_s8(a0, w0[j]), a1, w1[j]);
                hi[r][j] = vpadalq_s16(hi[r][j], ph);
            }
        }
        g += 2;
    }
    if g < groups {
        let w0: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add(g * 64 + j * 16)));
        for r in 0..2 {
            let a0 = bcast4(rp[r].add(g * KG));
            for j in 0..4 {
                lo[r][j] = vpadalq_s16(lo[r][j], vmull_s8(vget_low_s8(a0), vget_low_s8(w0[j])));
                hi[r][j] = vpadalq_s16(hi[r][j], vmull_high_s8(a0, w0[j]));
            }
        }
    }
    for r in 0..2 {
        for j in 0..4 {
            vst1q_s32(acc.as_mut_ptr().add(r * TILE_N + j * 4), vpaddq_s32(lo[r][j], hi[r][j]));
        }
    }
}

pub fn neondot(a: &[i8], stride: usize, rows: usize, panel: &[i8], acc: &mut [i32; MR_MAX * TILE_N]) {
    assert!(std::arch::is_aarch64_feature_detected!("dotprod"));
    let rp = row_ptrs::<4>(a, stride, rows);
    // SAFETY: the dot-product extension is present (checked above); memory as for `neon`,
    // with room for 4 x 16 results.
    unsafe { neondot_body(rp, stride / KG, panel.as_ptr(), acc) }
}

/// `acc.4s += w.16b . a.4b[LANE]`: each channel's 4 weights times one row's 4 activations.
macro_rules! sdot_lane {
    ($acc:expr, $w:expr, $a:expr, $lane:literal) => {
        asm!(concat!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[", $lane, "]"),
             inout(vreg) $acc, in(vreg) $w, in(vreg) $a, options(pure, nomem, nostack))
    };
}

#[target_feature(enable = "dotprod")]
unsafe fn neondot_body(rp: [*const i8; 4], groups: usize, w: *const i8, acc: &mut [i32; MR_MAX * TILE_N]) {
    let mut c = [[vdupq_n_s32(0); 4]; 4];
    let mut g = 0;
    // Four groups per step: one 16-byte load holds a row's activations for all four.
    while g + 4 <= groups {
        let a: [int8x16_t; 4] = std::array::from_fn(|r| vld1q_s8(rp[r].add(g * KG)));
        macro_rules! step {
            ($lane:literal) => {
                let wv: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add((g + $lane) * 64 + j * 16)));
                for r in 0..4 {
                    for j in 0..4 {
                        sdot_lane!(c[r][j], wv[j], a[r], $lane);
                    }
                }
            };
        }
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        g += 4;
    }
    while g < groups {
        let a: [int8x16_t; 4] = std::array::from_fn(|r| bcast4(rp[r].add(g * KG)));
        let wv: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add(g * 64 + j * 16)));
        for r in 0..4 {
            for j in 0..4 {
                sdot_lane!(c[r][j], wv[j], a[r], 0);
            }
        }
        g += 1;
    }
    for r in 0..4 {
        for j in 0..4 {
            vst1q_s32(acc.as_mut_ptr().add(r * TILE_N + j * 4), c[r][j]);
        }
    }
}

pub fn neoni8mm(a: &[i8], stride: usize, rows: usize, panel: &[i8], acc: &mut [i32; MR_MAX * TILE_N]) {
    assert!(std::arch::is_aarch64_feature_detected!("i8mm"));
    let rp = row_ptrs::<4>(a, stride, rows);
    // SAFETY: the i8mm extension is present (checked above); memory as for `neon`, with room
    // for 4 x 16 results.
    unsafe { neoni8mm_body(rp, stride / KG, panel.as_ptr(), acc) }
}

/// `acc.4s += a.16b (2 rows x 8) * w.16b (2 channels x 8)^T` = [r0c0, r0c1, r1c0, r1c1].
macro_rules! smmla {
    ($acc:expr, $a:expr, $w:expr) => {
        asm!("smmla {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) $acc, in(vreg) $a, in(vreg) $w, options(pure, nomem, nostack))
    };
}

#[target_feature(enable = "i8mm")]
unsafe fn neoni8mm_body(rp: [*const i8; 4], groups: usize, w: *const i8, acc: &mut [i32; MR_MAX * TILE_N]) {
    // c[p][q]: rows 2p, 2p+1 x channels 2q, 2q+1.
    let mut c = [[vdupq_n_s32(0); 8]; 2];
    // Two K groups (8 values) per step: zipping a 4-channel register of group g with the same
    // register of group g+1 gives two channels x 8 k each, the operand layout of smmla.
    let step = |g: usize, pair: bool, c: &mut [[int32x4_t; 8]; 2]| {
        let load_a = |r: usize| -> int8x8_t {
            if pair {
                vld1_s8(rp[r].add(g * KG))
            } else {
                // The last odd group: k4..7 are zero.
                vreinterpret_s8_s32(vset_lane_s32::<0>(
                    (rp[r].add(g * KG) as *const i32).read_unaligned(),
                    vdup_n_s32(0),
                ))
            }
        };
        let a0 = vcombine_s8(load_a(0), load_a(1));
        let a1 = vcombine_s8(load_a(2), load_a(3));
        for j in 0..4 {
            let lo = vld1q_s8(w.add(g * 64 + j * 16));
            let hi = if pair { vld1q_s8(w.add((g + 1) * 64 + j * 16)) } else { vdupq_n_s8(0) };
            let (l32, h32) = (vreinterpretq_s32_s8(lo), vreinterpretq_s32_s8(hi));
            let w01 = vreinterpretq_s8_s32(vzip1q_s32(l32, h32));
            let w23 = vreinterpretq_s8_s32(vzip2q_s32(l32, h32));
            smmla!(c[0][2 * j], a0, w01);
            smmla!(c[0][2 * j + 1], a0, w23);
            smmla!(c[1][2 * j], a1, w01);
            smmla!(c[1][2 * j + 1], a1, w23);
        }
    };
    let mut g = 0;
    while g + 2 <= groups {
        step(g, true, &mut c);
        g += 2;
    }
    if g < groups {
        step(g, false, &mut c);
    }
    for p in 0..2 {
        for q in 0..8 {
            let v = c[p][q];
            let (r0, r1) = (2 * p, 2 * p + 1);
            acc[r0 * TILE_N + 2 * q] = vgetq_lane_s32::<0>(v);
            acc[r0 * TILE_N + 2 * q + 1] = vgetq_lane_s32::<1>(v);
            acc[r1 * TILE_N + 2 * q] = vgetq_lane_s32::<2>(v);
            acc[r1 * TILE_N + 2 * q + 1] = vgetq_lane_s32::<3>(v);
        }
    }
}
