//! aarch64 baseline NEON (Cortex-A72), 2 rows x 16 channels: `smull` + `smlal` put the
//! products of two K groups into int16 lanes (at most 2 * 127 * 127 = 32258: exact), `sadalp`
//! widens pairs into int32. The A72 issues the multiplies on one pipe (8 int8 MACs per cycle)
//! and `sadalp` on the other, so the loop is written with its registers allocated by hand:
//! 16 accumulators, 8 weight registers, 4 broadcast activations and 4 products fill all 32
//! (the compiler's version spilled and split `smull2` into `ext` + `smull`). The tile is
//! finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, Rows, check, for_each_tile, OutBlock};
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
    let groups = check(a, stride, w, panels, 1, &out);
    for_each_tile::<2, i8>(a, stride, &mut out, |rp, m0, mut tile| {
        // SAFETY: NEON is part of the aarch64 baseline; `check` made sure that every row
        // pointer addresses `stride` readable bytes and the panel `groups` groups of 64 bytes.
        let c = unsafe { body(rp, groups, w.as_ptr()) };
        finish_i32(&c, &rows.at(m0, tile.rows), cols, &mut tile);
    });
}

/// The 2 x 16 int32 sums: `c[r][j]` holds row r, channels 4j..4j+4.
///
/// # Safety
/// Each `rp[r]` must address `groups * 4` readable bytes and `w` `groups` groups of 64.
#[inline(always)]
unsafe fn body(rp: [*const i8; 2], groups: usize, w: *const i8) -> [[int32x4_t; 4]; 2] {
    // acc[2 (4j + 2r)]: row r, channels 4j, 4j+1 as pair sums; acc[2 (4j + 2r) + 1]: 4j+2, 4j+3.
    let z = || unsafe { vdupq_n_s32(0) };
    let mut acc = [z(); 16];
    let (mut a0, mut a1, mut wp) = (rp[0], rp[1], w);
    let pairs = groups / 2;
    if pairs > 0 {
        // SAFETY: each step reads 8 bytes of each row and 128 bytes of weights (two groups),
        // `pairs` times: within the bounds above. Writes only the declared registers.
        unsafe {
            asm!(
                "2:",
                "ld1r {{v8.4s}}, [{a0}], #4",
                "ld1r {{v9.4s}}, [{a0}], #4",
                "ld1r {{v10.4s}}, [{a1}], #4",
                "ld1r {{v11.4s}}, [{a1}], #4",
                "ldp q0, q1, [{w}]",
                "ldp q2, q3, [{w}, #32]",
                "ldp q4, q5, [{w}, #64]",
                "ldp q6, q7, [{w}, #96]",
                "add {w}, {w}, #128",
            "smull  v12.8h, v8.8b, v0.8b",
            "smull2 v13.8h, v8.16b, v0.16b",
            "smlal  v12.8h, v9.8b, v4.8b",
            "smlal2 v13.8h, v9.16b, v4.16b",
            "sadalp v16.4s, v12.8h",
            "sadalp v17.4s, v13.8h",
            "smull  v14.8h, v10.8b, v0.8b",
            "smull2 v15.8h, v10.16b, v0.16b",
            "smlal  v14.8h, v11.8b, v4.8b",
            "smlal2 v15.8h, v11.16b, v4.16b",
            "sadalp v18.4s, v14.8h",
            "sadalp v19.4s, v15.8h",
            "smull  v12.8h, v8.8b, v1.8b",
            "smull2 v13.8h, v8.16b, v1.16b",
            "smlal  v12.8h, v9.8b, v5.8b",
            "smlal2 v13.8h, v9.16b, v5.16b",
            "sadalp v20.4s, v12.8h",
            "sadalp v21.4s, v13.8h",
            "smull  v14.8h, v10.8b, v1.8b",
            "smull2 v15.8h, v10.16b, v1.16b",
            "smlal  v14.8h, v11.8b, v5.8b",
            "smlal2 v15.8h, v11.16b, v5.16b",
            "sadalp v22.4s, v14.8h",
            "sadalp v23.4s, v15.8h",
            "smull  v12.8h, v8.8b, v2.8b",
            "smull2 v13.8h, v8.16b, v2.16b",
            "smlal  v12.8h, v9.8b, v6.8b",
            "smlal2 v13.8h, v9.16b, v6.16b",
            "sadalp v24.4s, v12.8h",
            "sadalp v25.4s, v13.8h",
            "smull  v14.8h, v10.8b, v2.8b",
            "smull2 v15.8h, v10.16b, v2.16b",
            "smlal  v14.8h, v11.8b, v6.8b",
            "smlal2 v15.8h, v11.16b, v6.16b",
            "sadalp v26.4s, v14.8h",
            "sadalp v27.4s, v15.8h",
            "smull  v12.8h, v8.8b, v3.8b",
            "smull2 v13.8h, v8.16b, v3.16b",
            "smlal  v12.8h, v9.8b, v7.8b",
            "smlal2 v13.8h, v9.16b, v7.16b",
            "sadalp v28.4s, v12.8h",
            "sadalp v29.4s, v13.8h",
            "smull  v14.8h, v10.8b, v3.8b",
            "smull2 v15.8h, v10.16b, v3.16b",
            "smlal  v14.8h, v11.8b, v7.8b",
            "smlal2 v15.8h, v11.16b, v7.16b",
            "sadalp v30.4s, v14.8h",
            "sadalp v31.4s, v15.8h",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                w = inout(reg) wp,
                n = inout(reg) pairs => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                inout("v16") acc[0], inout("v17") acc[1], inout("v18") acc[2], inout("v19") acc[3],
                inout("v20") acc[4], inout("v21") acc[5], inout("v22") acc[6], inout("v23") acc[7],
                inout("v24") acc[8], inout("v25") acc[9], inout("v26") acc[10], inout("v27") acc[11],
                inout("v28") acc[12], inout("v29") acc[13], inout("v30") acc[14], inout("v31") acc[15],
                options(nostack, readonly),
            );
        }
    }
    if groups % 2 == 1 {
        // The last group alone: one product per int16 lane.
        // SAFETY: the last group's 4 bytes of each row and 64 bytes of weights are in bounds.
        unsafe {
            let bcast = |p: *const i8| vreinterpretq_s8_s32(vdupq_n_s32((p as *const i32).read_unaligned()));
            let (x0, x1) = (bcast(a0), bcast(a1));
            for j in 0..4 {
                let wj = vld1q_s8(wp.add(16 * j));
                for (r, x) in [x0, x1].into_iter().enumerate() {
                    let i = 2 * (2 * j + r);
                    acc[i] = vpadalq_s16(acc[i], vmull_s8(vget_low_s8(x), vget_low_s8(wj)));
                    acc[i + 1] = vpadalq_s16(acc[i + 1], vmull_high_s8(x, wj));
                }
            }
        }
    }
    // SAFETY: register-only pairwise adds.
    std::array::from_fn(|r| std::array::from_fn(|j| unsafe { vpaddq_s32(acc[2 * (2 * j + r)], acc[2 * (2 * j + r) + 1]) }))
}
