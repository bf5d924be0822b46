//! aarch64 dot product (Cortex-A76), 4 rows x 16 channels: `sdot` by element, each weight
//! register (4 channels x 4 k) against one row's 4 activations. `sdot` has no stable
//! intrinsic, so it is inline asm inside a `#[target_feature(enable = "dotprod")]` function.
//! The tile is finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, Rows, check, for_each_tile, OutBlock, KG};
use crate::gemm::epilogue::neon::finish_i32;

pub(super) fn run(
    a: &[i8],
    stride: usize,
    w: &[i8],
    panels: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    mut out: OutBlock<'_>,
) {
    assert!(std::arch::is_aarch64_feature_detected!("dotprod"));
    let groups = check(a, stride, w, panels, 1, &out);
    for_each_tile::<4, i8>(a, stride, &mut out, |rp, m0, mut tile| {
        // SAFETY: the dot-product extension is present (checked above); memory as checked by
        // `check`.
        let c = unsafe { body(rp, groups, w.as_ptr()) };
        finish_i32(&c, &rows.at(m0, tile.rows), cols, &mut tile);
    });
}

/// `acc.4s += w.16b . a.4b[LANE]`: each channel's 4 weights times one row's 4 activations.
macro_rules! sdot_lane {
    ($acc:expr, $w:expr, $a:expr, $lane:literal) => {
        asm!(concat!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[", $lane, "]"),
             inout(vreg) $acc, in(vreg) $w, in(vreg) $a, options(pure, nomem, nostack))
    };
}

#[inline(always)]
unsafe fn bcast4(p: *const i8) -> int8x16_t {
    // SAFETY: the caller's pointer addresses 4 readable bytes.
    vreinterpretq_s8_s32(vdupq_n_s32(unsafe { (p as *const i32).read_unaligned() }))
}

#[target_feature(enable = "dotprod")]
unsafe fn body(rp: [*const i8; 4], groups: usize, w: *const i8) -> [[int32x4_t; 4]; 4] {
    let mut c = [[vdupq_n_s32(0); 4]; 4];
    let mut g = 0;
    // SAFETY (loads and sdot below): g + 3 < groups resp. g < groups: in bounds (see `run`);
    // sdot is register-only.
    unsafe {
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
    }
    c
}
