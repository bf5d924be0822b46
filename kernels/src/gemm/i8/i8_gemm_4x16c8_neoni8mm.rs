//! aarch64 int8 matrix multiply (Armv8.6 i8mm), 4 rows x 16 channels: `smmla` multiplies 2
//! rows x 8 k by 2 channels x 8 k. The k4n16 panels hold 4 k per channel, so two K groups
//! are zipped in registers into `smmla`'s operand layout. The tile is finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, Rows, check, for_each_tile, OutBlock, KG};
use crate::gemm::epilogue::neon::{finish_i32, gelu_after_tiles};

pub(super) fn run(
    a: &[i8],
    stride: usize,
    w: &[i8],
    panels: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    mut out: OutBlock<'_>,
) {
    assert!(std::arch::is_aarch64_feature_detected!("i8mm"));
    let groups = check(a, stride, w, panels, 1, &out);
    gelu_after_tiles(&mut out, |out| {
        for_each_tile::<4, i8>(a, stride, out, |rp, m0, mut tile| {
            // SAFETY: the i8mm extension is present (checked above); memory as checked by
            // `check`.
            let c = unsafe { body(rp, groups, w.as_ptr()) };
            finish_i32(&unzip(&c), &rows.at(m0, tile.rows), cols, &mut tile);
        })
    });
}

/// The 2 x 2 blocks of `smmla` as rows of four channels.
fn unzip(c: &[[int32x4_t; 8]; 2]) -> [[int32x4_t; 4]; 4] {
    // c[p][q]: rows 2p, 2p+1 x channels 2q, 2q+1 as [r0c0, r0c1, r1c0, r1c1]; rows of four
    // channels are the low (even row) or high (odd row) halves of two neighbours.
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let s64 = |v| vreinterpretq_s64_s32(v);
        std::array::from_fn(|r| {
            std::array::from_fn(|j| {
                let (x, y) = (s64(c[r / 2][2 * j]), s64(c[r / 2][2 * j + 1]));
                vreinterpretq_s32_s64(if r % 2 == 0 { vzip1q_s64(x, y) } else { vzip2q_s64(x, y) })
            })
        })
    }
}

/// `acc.4s += a.16b (2 rows x 8) * w.16b (2 channels x 8)^T` = [r0c0, r0c1, r1c0, r1c1].
macro_rules! smmla {
    ($acc:expr, $a:expr, $w:expr) => {
        asm!("smmla {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) $acc, in(vreg) $a, in(vreg) $w, options(pure, nomem, nostack))
    };
}

#[target_feature(enable = "i8mm")]
unsafe fn body(rp: [*const i8; 4], groups: usize, w: *const i8) -> [[int32x4_t; 8]; 2] {
    let mut c = [[vdupq_n_s32(0); 8]; 2];
    // Two K groups (8 values) per step: zipping a 4-channel register of group g with the same
    // register of group g+1 gives two channels x 8 k each, the operand layout of smmla.
    let step = |g: usize, pair: bool, c: &mut [[int32x4_t; 8]; 2]| {
        // SAFETY (loads and smmla below): g (+1 when `pair`) < groups: in bounds (see `run`);
        // smmla is register-only.
        unsafe {
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
    c
}
