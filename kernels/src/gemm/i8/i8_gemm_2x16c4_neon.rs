//! aarch64 baseline NEON (Cortex-A72), 2 rows x 16 channels: `smull` + `smlal` put the
//! products of two K groups into int16 lanes (activations are in [-127, 127], so at most
//! 2 * 128 * 127 = 32512: exact for any weight byte), `sadalp` widens pairs into int32. The
//! A72 issues the multiplies on one pipe (8 int8 MACs per cycle) and `sadalp` on the other,
//! so the loop is written with its registers allocated by hand: 16 accumulators, 8 weight
//! registers, 4 broadcast activations and 4 products fill all 32 (the compiler's version
//! spilled and split `smull2` into `ext` + `smull`). The tile is finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{check, run_strips, Columns, OutBlock, Rows};

/// Loads for one step of the K loop: two groups of row 0 into v8, v9 (and of row 1 into v10,
/// v11 with `both`), and the panel's two groups of 64 weight bytes into v0-v7.
macro_rules! load_two_groups {
    () => {
        concat!(
            "ld1r {{v8.4s}}, [{a0}], #4\n",
            "ld1r {{v9.4s}}, [{a0}], #4\n",
            load_two_groups!(weights),
        )
    };
    (both) => {
        concat!(
            "ld1r {{v8.4s}}, [{a0}], #4\n",
            "ld1r {{v9.4s}}, [{a0}], #4\n",
            "ld1r {{v10.4s}}, [{a1}], #4\n",
            "ld1r {{v11.4s}}, [{a1}], #4\n",
            load_two_groups!(weights),
        )
    };
    (weights) => {
        concat!(
            "ldp q0, q1, [{w}]\n",
            "ldp q2, q3, [{w}, #32]\n",
            "ldp q4, q5, [{w}, #64]\n",
            "ldp q6, q7, [{w}, #96]\n",
            "add {w}, {w}, #128\n",
        )
    };
}

/// One row's two groups (in `$x`, `$y`) times four channels' weights of the first and the second
/// group (`$w`, `$v`): two products per int16 lane in `$p`, `$q`, widened into `$c`, `$d` with
/// `$widen`.
macro_rules! row_products {
    ($widen:literal, $x:literal, $y:literal, $w:literal, $v:literal, $p:literal, $q:literal, $c:literal, $d:literal) => {
        concat!(
            "smull  v", $p, ".8h, v", $x, ".8b, v", $w, ".8b\n",
            "smull2 v", $q, ".8h, v", $x, ".16b, v", $w, ".16b\n",
            "smlal  v", $p, ".8h, v", $y, ".8b, v", $v, ".8b\n",
            "smlal2 v", $q, ".8h, v", $y, ".16b, v", $v, ".16b\n",
            $widen, " v", $c, ".4s, v", $p, ".8h\n",
            $widen, " v", $d, ".4s, v", $q, ".8h\n",
        )
    };
}

/// One step of the K loop: two groups of both rows times the panel's 16 channels, into the
/// accumulators v16-v31 (see [`body`] for their order) with `$widen`: `sadalp` adds to them,
/// `saddlp` starts them; v0-v15 are scratch.
macro_rules! two_groups {
    ($widen:literal) => {
        concat!(
            load_two_groups!(both),
            row_products!($widen, "8", "9", "0", "4", "12", "13", "16", "17"),
            row_products!($widen, "10", "11", "0", "4", "14", "15", "18", "19"),
            row_products!($widen, "8", "9", "1", "5", "12", "13", "20", "21"),
            row_products!($widen, "10", "11", "1", "5", "14", "15", "22", "23"),
            row_products!($widen, "8", "9", "2", "6", "12", "13", "24", "25"),
            row_products!($widen, "10", "11", "2", "6", "14", "15", "26", "27"),
            row_products!($widen, "8", "9", "3", "7", "12", "13", "28", "29"),
            row_products!($widen, "10", "11", "3", "7", "14", "15", "30", "31"),
        )
    };
}

/// [`two_groups`] for row 0 alone (a last tile of one row: ViT's 197 tokens leave one), into
/// its accumulators v16, v17, v20, v21, v24, v25, v28, v29; half the multiplies.
macro_rules! two_groups_row0 {
    ($widen:literal) => {
        concat!(
            load_two_groups!(),
            row_products!($widen, "8", "9", "0", "4", "12", "13", "16", "17"),
            row_products!($widen, "8", "9", "1", "5", "14", "15", "20", "21"),
            row_products!($widen, "8", "9", "2", "6", "12", "13", "24", "25"),
            row_products!($widen, "8", "9", "3", "7", "14", "15", "28", "29"),
        )
    };
}

/// One output vector of [`strip`]: `$o = (b + ow * za) + f32($e) * (ws * sa)` for row `$lane`
/// (the lane of v12 and v13 that holds its factors), with `$t` as scratch. The bias is loaded
/// straight into `$o` (from byte `$b` of the column group's biases) rather than copied from a
/// register on a vector pipe.
macro_rules! dequant {
    ($e:literal, $o:literal, $ws:literal, $ow:literal, $b:literal, $t:literal, $lane:literal) => {
        concat!(
            "scvtf v", $e, ".4s, v", $e, ".4s\n",
            "ldr q", $o, ", [{b}, #", $b, "]\n",
            "fmla v", $o, ".4s, v", $ow, ".4s, v13.s[", $lane, "]\n",
            "fmul v", $t, ".4s, v", $ws, ".4s, v12.s[", $lane, "]\n",
            "fmla v", $o, ".4s, v", $e, ".4s, v", $t, ".4s\n",
        )
    };
}

pub(super) fn run(
    a: &[i8],
    stride: usize,
    w: &[i8],
    panels: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    out: OutBlock<'_>,
) {
    let groups = check(a, stride, w, panels, 1, &out);
    // Whole strips that are stored or added (every Linear layer but a GELU one, and
    // attention's scores) take the asm strip: a Rust tile walk and epilogue cost about 100
    // cycles per 2 x 16 tile on a Cortex-A72, a sixth of the multiplies for K = 192.
    let strip_fits = groups >= 2 && groups.is_multiple_of(2);
    let strip = |tiles, accumulate, out: &mut OutBlock<'_>| {
        // SAFETY: `check` made sure that `a` holds `out.rows` rows of `stride` = 4 * groups
        // bytes and `w` one panel of `groups` groups of 64 bytes; `rows` has a factor per row;
        // the block's `2 * tiles` rows of 16 floats at stride `ldo` are writable and ours
        // (OutBlock's contract).
        unsafe { strip(a.as_ptr(), groups, w.as_ptr(), tiles, rows, cols, out.row_ptr(0), out.ldo, accumulate) }
    };
    // SAFETY: NEON is part of the aarch64 baseline; `check` made sure that every row pointer
    // addresses `stride` readable bytes and the panel `groups` groups of 64 bytes.
    let body = |rp, rows| unsafe { body(rp, rows, groups, w.as_ptr()) };
    run_strips::<2>(a, stride, rows, cols, out, strip_fits, strip, body);
}

/// Every 2-row tile of a 16-column strip, stored or added to `dst`, in one asm loop: the K
/// loop, the pair sums, and the dequantization with the same operations in the same order as
/// `finish_i32` (`zb = b + ow * za`, then `zb + f32(acc) * (ws * sa)`, both fused), so the
/// result is the twin's bit for bit.
///
/// # Safety
/// `a` must address `2 * tiles` rows of `4 * groups` bytes (`groups` even, at least 2), `w`
/// `groups` groups of 64 bytes, `rows` `2 * tiles` factors, and `dst` `2 * tiles` rows of 16
/// writable floats at stride `ldo` floats that no one else touches.
// Not inlined: one call per strip, and its name in profiles (benches/mca_inner_loops.py reads its loop).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn strip(
    a: *const i8,
    groups: usize,
    w: *const i8,
    tiles: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    dst: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    debug_assert!(groups >= 2 && groups.is_multiple_of(2) && rows.scale.len() >= 2 * tiles && rows.offset.len() >= 2 * tiles);
    let stride = 4 * groups;
    // SAFETY: by the caller's contract, every load stays in `a`, `w`, `rows` and `cols`, and
    // every store in the rows of `dst`; only the declared registers are written.
    unsafe {
        asm!(
            "3:",
            "mov {w}, {w0}",
            // The first two groups start the accumulators (no zeroing), the loop adds the rest.
            two_groups!("saddlp"),
            "subs {n}, {pairs}, #1",
            "b.eq 4f",
            // The loop (59 instructions) on a 256-byte boundary, which no 4 KB page boundary
            // crosses: qemu splits a block at a page, and the cycle estimate then cannot
            // overlap the halves (4.5 M A72 cycles when a change elsewhere moved it across one).
            // The padding is jumped over.
            "b 2f",
            ".p2align 8",
            "2:",
            two_groups!("sadalp"),
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "4:",
            // The loop left a0 at row 1 and a1 at row 2: the next tile's rows.
            "mov {a0}, {a1}",
            "add {a1}, {a1}, {stride}",
            // Row 0's sums of columns 4j..4j+4 into v16, v20, v24, v28; row 1's into v18, v22,
            // v26, v30.
            "addp v16.4s, v16.4s, v17.4s",
            "addp v18.4s, v18.4s, v19.4s",
            "addp v20.4s, v20.4s, v21.4s",
            "addp v22.4s, v22.4s, v23.4s",
            "addp v24.4s, v24.4s, v25.4s",
            "addp v26.4s, v26.4s, v27.4s",
            "addp v28.4s, v28.4s, v29.4s",
            "addp v30.4s, v30.4s, v31.4s",
            // Column factors: weight scales v0-v3, offsets' weights v4-v7 (the biases are
            // loaded where they are used); row scales in v12.s[0..2], offsets in v13.s[0..2].
            "ldp q0, q1, [{ws}]",
            "ldp q2, q3, [{ws}, #32]",
            "ldp q4, q5, [{ow}]",
            "ldp q6, q7, [{ow}, #32]",
            "ldr d12, [{sa}], #8",
            "ldr d13, [{za}], #8",
            // Each value: zb = b + ow * za into the odd register, then zb + f32(acc) * (ws * sa).
            dequant!(16, 17, 0, 4, 0, 14, 0),
            dequant!(20, 21, 1, 5, 16, 15, 0),
            dequant!(24, 25, 2, 6, 32, 14, 0),
            dequant!(28, 29, 3, 7, 48, 15, 0),
            dequant!(18, 19, 0, 4, 0, 14, 1),
            dequant!(22, 23, 1, 5, 16, 15, 1),
            dequant!(26, 27, 2, 6, 32, 14, 1),
            dequant!(30, 31, 3, 7, 48, 15, 1),
            "add {d1}, {d0}, {ldo}",
            "cbz {acc}, 5f",
            // The residual: out = out + value.
            "ldp q16, q20, [{d0}]",
            "ldp q24, q28, [{d0}, #32]",
            "ldp q18, q22, [{d1}]",
            "ldp q26, q30, [{d1}, #32]",
            "fadd v17.4s, v16.4s, v17.4s",
            "fadd v21.4s, v20.4s, v21.4s",
            "fadd v25.4s, v24.4s, v25.4s",
            "fadd v29.4s, v28.4s, v29.4s",
            "fadd v19.4s, v18.4s, v19.4s",
            "fadd v23.4s, v22.4s, v23.4s",
            "fadd v27.4s, v26.4s, v27.4s",
            "fadd v31.4s, v30.4s, v31.4s",
            "5:",
            "stp q17, q21, [{d0}]",
            "stp q25, q29, [{d0}, #32]",
            "stp q19, q23, [{d1}]",
            "stp q27, q31, [{d1}, #32]",
            "add {d0}, {d1}, {ldo}",
            "subs {tiles}, {tiles}, #1",
            "b.ne 3b",
            a0 = inout(reg) a => _,
            a1 = inout(reg) a.add(stride) => _,
            stride = in(reg) stride,
            w0 = in(reg) w,
            w = out(reg) _,
            pairs = in(reg) groups / 2,
            n = out(reg) _,
            ws = in(reg) cols.w_scale.as_ptr(),
            ow = in(reg) cols.w_offset.as_ptr(),
            b = in(reg) cols.bias.as_ptr(),
            sa = inout(reg) rows.scale.as_ptr() => _,
            za = inout(reg) rows.offset.as_ptr() => _,
            d0 = inout(reg) dst => _,
            d1 = out(reg) _,
            ldo = in(reg) 4 * ldo,
            acc = in(reg) accumulate as usize,
            tiles = inout(reg) tiles => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
}

/// The 2 x 16 int32 sums: `c[r][j]` holds row r, channels 4j..4j+4. A tile of one row
/// (`rows == 1`) computes row 0 alone and leaves row 1's sums zero.
///
/// # Safety
/// Each `rp[r]` must address `groups * 4` readable bytes and `w` `groups` groups of 64.
#[inline(always)]
unsafe fn body(rp: [*const i8; 2], rows: usize, groups: usize, w: *const i8) -> [[int32x4_t; 4]; 2] {
    // acc[4j + 2r]: row r, channels 4j, 4j+1 as pair sums; acc[4j + 2r + 1]: 4j+2, 4j+3.
    let z = || unsafe { vdupq_n_s32(0) };
    let mut acc = [z(); 16];
    let (mut a0, mut a1, mut wp) = (rp[0], rp[1], w);
    let pairs = groups / 2;
    // The one-row loop, as the two-row one below with row 1's loads and products left out.
    if pairs > 0 && rows == 1 {
        // SAFETY: each step reads 8 bytes of row 0 and 128 bytes of weights (two groups),
        // `pairs` times: within the bounds above. Writes only the declared registers.
        unsafe {
            asm!(
                "2:",
                two_groups_row0!("sadalp"),
                "subs {n}, {n}, #1",
                "b.ne 2b",
                a0 = inout(reg) a0,
                w = inout(reg) wp,
                n = inout(reg) pairs => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                inout("v16") acc[0], inout("v17") acc[1],
                inout("v20") acc[4], inout("v21") acc[5],
                inout("v24") acc[8], inout("v25") acc[9],
                inout("v28") acc[12], inout("v29") acc[13],
                options(nostack, readonly),
            );
        }
    } else if pairs > 0 {
        // SAFETY: each step reads 8 bytes of each row and 128 bytes of weights (two groups),
        // `pairs` times: within the bounds above. Writes only the declared registers.
        unsafe {
            asm!(
                "2:",
                two_groups!("sadalp"),
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
                for (r, x) in [x0, x1].into_iter().enumerate().take(rows) {
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
