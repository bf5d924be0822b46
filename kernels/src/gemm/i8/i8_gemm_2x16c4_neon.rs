//! aarch64 baseline NEON (Cortex-A72), 2 rows x 16 channels: `smull` + `smlal` put the
//! products of two K groups into int16 lanes (at most 2 * 127 * 127 = 32258: exact), `sadalp`
//! widens pairs into int32. The tile is finished in registers.

// Register tiles are indexed by row and panel; index loops read clearer than iterators here.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::{operands, Dequant, OutBlock, KG};
use crate::gemm::epilogue::neon::finish_i32;

pub(super) fn run(a: &[i8], stride: usize, w: &[i8], panels: usize, dq: &Dequant<'_>, mut out: OutBlock<'_>) {
    let (rp, groups) = operands::<2>(a, stride, w, panels, 1, &out);
    // SAFETY: NEON is part of the aarch64 baseline; `operands` checked that every row pointer
    // addresses `stride` readable bytes and the panel `groups` groups of 64 bytes.
    let c = unsafe { body(rp, groups, w.as_ptr()) };
    finish_i32(&c, dq, &mut out);
}

#[inline(always)]
unsafe fn bcast4(p: *const i8) -> int8x16_t {
    // SAFETY: the caller's pointer addresses 4 readable bytes.
    vreinterpretq_s8_s32(vdupq_n_s32(unsafe { (p as *const i32).read_unaligned() }))
}

#[target_feature(enable = "neon")]
unsafe fn body(rp: [*const i8; 2], groups: usize, w: *const i8) -> [[int32x4_t; 4]; 2] {
    // lo[r][j]: pair sums for channels 4j, 4j+1; hi[r][j]: for 4j+2, 4j+3.
    let mut lo = [[vdupq_n_s32(0); 4]; 2];
    let mut hi = [[vdupq_n_s32(0); 4]; 2];
    let mut g = 0;
    // SAFETY (every load below): g (+1) < groups: in bounds (see `run`).
    while g + 2 <= groups {
        let w0: [int8x16_t; 4] = std::array::from_fn(|j| unsafe { vld1q_s8(w.add(g * 64 + j * 16)) });
        let w1: [int8x16_t; 4] = std::array::from_fn(|j| unsafe { vld1q_s8(w.add((g + 1) * 64 + j * 16)) });
        for r in 0..2 {
            let (a0, a1) = unsafe { (bcast4(rp[r].add(g * KG)), bcast4(rp[r].add((g + 1) * KG))) };
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
        let w0: [int8x16_t; 4] = std::array::from_fn(|j| unsafe { vld1q_s8(w.add(g * 64 + j * 16)) });
        for r in 0..2 {
            let a0 = unsafe { bcast4(rp[r].add(g * KG)) };
            for j in 0..4 {
                lo[r][j] = vpadalq_s16(lo[r][j], vmull_s8(vget_low_s8(a0), vget_low_s8(w0[j])));
                hi[r][j] = vpadalq_s16(hi[r][j], vmull_high_s8(a0, w0[j]));
            }
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|j| vpaddq_s32(lo[r][j], hi[r][j])))
}
