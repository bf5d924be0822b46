//! aarch64 dot product (Cortex-A76), 4 rows x 16 channels: `sdot` by element, each weight
//! register (4 channels x 4 k) against one row's 4 activations. `sdot` has no stable
//! intrinsic, so it is inline asm inside a `#[target_feature(enable = "dotprod")]` function.
//! The tile is finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{check, run_strips, Columns, OutBlock, Rows, KG};

/// One step of the K loop: four groups (16 k) of four rows times the panel's 16 channels, into
/// the accumulators v16-v31 (row r, channels 4j..4j+4 in v(16 + 4r + j)); v0-v3 hold the rows'
/// 16 bytes, v4-v11 the weights of two groups at a time.
macro_rules! four_groups {
    () => {
        concat!(
            "ldr q0, [{a0}], #16\n",
            "ldr q1, [{a1}], #16\n",
            "ldr q2, [{a2}], #16\n",
            "ldr q3, [{a3}], #16\n",
            "ldp q4, q5, [{w}, #0]\n",
            "ldp q6, q7, [{w}, #32]\n",
            "sdot v16.4s, v4.16b, v0.4b[0]\n",
            "sdot v17.4s, v5.16b, v0.4b[0]\n",
            "sdot v18.4s, v6.16b, v0.4b[0]\n",
            "sdot v19.4s, v7.16b, v0.4b[0]\n",
            "sdot v20.4s, v4.16b, v1.4b[0]\n",
            "sdot v21.4s, v5.16b, v1.4b[0]\n",
            "sdot v22.4s, v6.16b, v1.4b[0]\n",
            "sdot v23.4s, v7.16b, v1.4b[0]\n",
            "sdot v24.4s, v4.16b, v2.4b[0]\n",
            "sdot v25.4s, v5.16b, v2.4b[0]\n",
            "sdot v26.4s, v6.16b, v2.4b[0]\n",
            "sdot v27.4s, v7.16b, v2.4b[0]\n",
            "sdot v28.4s, v4.16b, v3.4b[0]\n",
            "sdot v29.4s, v5.16b, v3.4b[0]\n",
            "sdot v30.4s, v6.16b, v3.4b[0]\n",
            "sdot v31.4s, v7.16b, v3.4b[0]\n",
            "ldp q8, q9, [{w}, #64]\n",
            "ldp q10, q11, [{w}, #96]\n",
            "sdot v16.4s, v8.16b, v0.4b[1]\n",
            "sdot v17.4s, v9.16b, v0.4b[1]\n",
            "sdot v18.4s, v10.16b, v0.4b[1]\n",
            "sdot v19.4s, v11.16b, v0.4b[1]\n",
            "sdot v20.4s, v8.16b, v1.4b[1]\n",
            "sdot v21.4s, v9.16b, v1.4b[1]\n",
            "sdot v22.4s, v10.16b, v1.4b[1]\n",
            "sdot v23.4s, v11.16b, v1.4b[1]\n",
            "sdot v24.4s, v8.16b, v2.4b[1]\n",
            "sdot v25.4s, v9.16b, v2.4b[1]\n",
            "sdot v26.4s, v10.16b, v2.4b[1]\n",
            "sdot v27.4s, v11.16b, v2.4b[1]\n",
            "sdot v28.4s, v8.16b, v3.4b[1]\n",
            "sdot v29.4s, v9.16b, v3.4b[1]\n",
            "sdot v30.4s, v10.16b, v3.4b[1]\n",
            "sdot v31.4s, v11.16b, v3.4b[1]\n",
            "ldp q4, q5, [{w}, #128]\n",
            "ldp q6, q7, [{w}, #160]\n",
            "sdot v16.4s, v4.16b, v0.4b[2]\n",
            "sdot v17.4s, v5.16b, v0.4b[2]\n",
            "sdot v18.4s, v6.16b, v0.4b[2]\n",
            "sdot v19.4s, v7.16b, v0.4b[2]\n",
            "sdot v20.4s, v4.16b, v1.4b[2]\n",
            "sdot v21.4s, v5.16b, v1.4b[2]\n",
            "sdot v22.4s, v6.16b, v1.4b[2]\n",
            "sdot v23.4s, v7.16b, v1.4b[2]\n",
            "sdot v24.4s, v4.16b, v2.4b[2]\n",
            "sdot v25.4s, v5.16b, v2.4b[2]\n",
            "sdot v26.4s, v6.16b, v2.4b[2]\n",
            "sdot v27.4s, v7.16b, v2.4b[2]\n",
            "sdot v28.4s, v4.16b, v3.4b[2]\n",
            "sdot v29.4s, v5.16b, v3.4b[2]\n",
            "sdot v30.4s, v6.16b, v3.4b[2]\n",
            "sdot v31.4s, v7.16b, v3.4b[2]\n",
            "ldp q8, q9, [{w}, #192]\n",
            "ldp q10, q11, [{w}, #224]\n",
            "sdot v16.4s, v8.16b, v0.4b[3]\n",
            "sdot v17.4s, v9.16b, v0.4b[3]\n",
            "sdot v18.4s, v10.16b, v0.4b[3]\n",
            "sdot v19.4s, v11.16b, v0.4b[3]\n",
            "sdot v20.4s, v8.16b, v1.4b[3]\n",
            "sdot v21.4s, v9.16b, v1.4b[3]\n",
            "sdot v22.4s, v10.16b, v1.4b[3]\n",
            "sdot v23.4s, v11.16b, v1.4b[3]\n",
            "sdot v24.4s, v8.16b, v2.4b[3]\n",
            "sdot v25.4s, v9.16b, v2.4b[3]\n",
            "sdot v26.4s, v10.16b, v2.4b[3]\n",
            "sdot v27.4s, v11.16b, v2.4b[3]\n",
            "sdot v28.4s, v8.16b, v3.4b[3]\n",
            "sdot v29.4s, v9.16b, v3.4b[3]\n",
            "sdot v30.4s, v10.16b, v3.4b[3]\n",
            "sdot v31.4s, v11.16b, v3.4b[3]\n",
            "add {w}, {w}, #256\n",
        )
    };
}

/// One output vector of [`strip`]: `$zb = (b + ow * za) + f32($e) * (ws * sa)` for row `$lane`
/// (the lane of v12 and v13 that holds its factors), with v15 as scratch. The bias is loaded
/// straight into `$zb` (from byte `$b` of the column group's biases): a load pipe's work, where
/// copying it from a register took a vector pipe. `f32($e)` is `scvtf`, or with `magic` (the
/// accumulator started at [`MAGIC_BITS`]) one `fsub` of 1.5 * 2^23 (in v8).
macro_rules! dequant {
    (scvtf, $e:literal, $zb:literal, $ws:literal, $ow:literal, $b:literal, $lane:literal) => {
        concat!("scvtf v", $e, ".4s, v", $e, ".4s\n", dequant!($e, $zb, $ws, $ow, $b, $lane))
    };
    (magic, $e:literal, $zb:literal, $ws:literal, $ow:literal, $b:literal, $lane:literal) => {
        concat!("fsub v", $e, ".4s, v", $e, ".4s, v8.4s\n", dequant!($e, $zb, $ws, $ow, $b, $lane))
    };
    ($e:literal, $zb:literal, $ws:literal, $ow:literal, $b:literal, $lane:literal) => {
        concat!(
            "ldr q", $zb, ", [{b}, #", $b, "]\n",
            "fmla v", $zb, ".4s, v", $ow, ".4s, v13.s[", $lane, "]\n",
            "fmul v15.4s, v", $ws, ".4s, v12.s[", $lane, "]\n",
            "fmla v", $zb, ".4s, v", $e, ".4s, v15.4s\n",
        )
    };
}

/// The bits of 1.5 * 2^23 as an int32 lane. An accumulator that starts there and adds `acc`
/// holds the bits of the float `1.5 * 2^23 + acc` exactly while `|acc| < 2^22`, so one `fsub`
/// converts it, where `scvtf` (a Q-form convert) is two operations on one of the Cortex-A76's
/// vector pipes. `|acc| <= 127 * 128 * K` (activations are in [-127, 127]), below 2^22 for
/// `K <= MAGIC_MAX_K`.
const MAGIC_BITS: u32 = 0x4B40_0000;
const MAGIC_MAX_K: usize = 256;

/// Eight int32 lanes (two q registers) on a 32-byte boundary, so that an `ldp` of them never
/// straddles a cache line: where [`strip`]'s accumulators start.
#[repr(C, align(32))]
struct Lanes([u32; 8]);
static ZERO_LANES: Lanes = Lanes([0; 8]);
static MAGIC_LANES: Lanes = Lanes([MAGIC_BITS; 8]);

pub(super) fn run(
    a: &[i8],
    stride: usize,
    w: &[i8],
    panels: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    out: OutBlock<'_>,
) {
    assert!(std::arch::is_aarch64_feature_detected!("dotprod"));
    let groups = check(a, stride, w, panels, 1, &out);
    // Whole strips that are stored or added (every Linear layer but a GELU one, and
    // attention's scores) take the asm strip: the Rust tile walk and epilogue cost about 120
    // cycles per 4 x 16 tile on a Cortex-A76, a third of the multiplies for K = 192.
    let strip_fits = groups >= 4 && groups.is_multiple_of(4);
    let strip = |tiles, accumulate, out: &mut OutBlock<'_>| {
        // SAFETY: the dot-product extension is present (checked above); `check` made sure
        // that `a` holds `out.rows` rows of `stride` = 4 * groups bytes and `w` one panel of
        // `groups` groups of 64 bytes; `rows` has a factor per row; the block's `4 * tiles`
        // rows of 16 floats at stride `ldo` are writable and ours (OutBlock's contract).
        unsafe {
            let (a, w, dst) = (a.as_ptr(), w.as_ptr(), out.row_ptr(0));
            if KG * groups <= MAGIC_MAX_K {
                strip_magic(a, groups, w, tiles, rows, cols, dst, out.ldo, accumulate)
            } else {
                strip(a, groups, w, tiles, rows, cols, dst, out.ldo, accumulate)
            }
        }
    };
    // A short tile computes its own rows only: ViT's 197 tokens leave one row, whose three
    // copies took 0.5 M Cortex-A76 cycles of ViT-Ti int8 (DeiT's 198 leave two).
    // SAFETY: the dot-product extension is present (checked above); memory as checked by
    // `check`.
    let body = |rp, rows| unsafe {
        match rows {
            1 => body::<1>(rp, groups, w.as_ptr()),
            2 => body::<2>(rp, groups, w.as_ptr()),
            3 => body::<3>(rp, groups, w.as_ptr()),
            _ => body::<4>(rp, groups, w.as_ptr()),
        }
    };
    run_strips::<4>(a, stride, rows, cols, out, strip_fits, strip, body);
}

// `strip` (any K) and `strip_magic` (K <= MAGIC_MAX_K): the same asm but for where the
// accumulators start and how they become floats.
macro_rules! strip_fn {
    ($name:ident, $mode:ident, $init:expr, $load_magic:literal) => {
        /// Every 4-row tile of a 16-column strip, stored or added to `dst`, in one asm loop:
        /// the K loop, and the dequantization with the same operations in the same order as
        /// `finish_i32` (`zb = b + ow * za`, then `zb + f32(acc) * (ws * sa)`, both fused), so
        /// the result is the twin's bit for bit. Each result lands in the register the
        /// previous value left free (v14, then v16..v30). The accumulators start at zero for
        /// `scvtf`, or at [`MAGIC_BITS`] for `fsub` (`magic`: `K <= MAGIC_MAX_K` only).
        ///
        /// # Safety
        /// The CPU must have the dot-product extension. `a` must address `4 * tiles` rows of
        /// `4 * groups` bytes (`groups` a multiple of 4, at most `MAGIC_MAX_K / 4` for
        /// `magic`), `w` `groups` groups of 64 bytes, `rows` `4 * tiles` factors, and `dst`
        /// `4 * tiles` rows of 16 writable floats at stride `ldo` floats that no one else
        /// touches.
        #[target_feature(enable = "dotprod")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
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
            debug_assert!(groups >= 4 && groups.is_multiple_of(4));
            debug_assert!(rows.scale.len() >= 4 * tiles && rows.offset.len() >= 4 * tiles);
            let stride = 4 * groups;
            let init: *const u32 = $init;
            // SAFETY: by the caller's contract, every load stays in `a`, `w`, `rows`, `cols`
            // and `init`, and every store in the rows of `dst`; only the declared registers
            // are written.
            unsafe {
                asm!(
                    // The tile loop on a 256-byte boundary, so that its K loop (79
                    // instructions, 40 bytes in) crosses a 4 KB page boundary only if the loop
                    // starts in a page's last 256 bytes: qemu splits a block at a page, and the
                    // cycle estimate then cannot overlap the halves (0.6 M A76 cycles when a
                    // change elsewhere moved it across one). Not 512: that padding moved the
                    // f16 kernel's loop across a page instead (7.8 M cycles of the f16 model).
                    // The padding is jumped over, once per strip.
                    "b 3f",
                    ".p2align 8",
                    "3:",
                    "mov {w}, {w0}",
                    "mov {n}, {steps}",
                    // The accumulators' start (zero, or the magic bits), by loads: the load
                    // pipes are idle while the vector pipes start the tile's dot products,
                    // where `movi` took a vector slot each.
                    "ldp q16, q17, [{init}]", "ldp q18, q19, [{init}]",
                    "ldp q20, q21, [{init}]", "ldp q22, q23, [{init}]",
                    "ldp q24, q25, [{init}]", "ldp q26, q27, [{init}]",
                    "ldp q28, q29, [{init}]", "ldp q30, q31, [{init}]",
                    "2:",
                    four_groups!(),
                    "subs {n}, {n}, #1",
                    "b.ne 2b",
                    // The loop left a0..a3 at rows 1..4: the next tile starts at a3.
                    "mov {a0}, {a3}",
                    "add {a1}, {a3}, {stride}",
                    "add {a2}, {a1}, {stride}",
                    "add {a3}, {a2}, {stride}",
                    // Column factors: weight scales v0-v3, offsets' weights v4-v7 (the biases are
                    // loaded where they are used); the four rows' scales in v12, offsets in v13.
                    "ldp q0, q1, [{ws}]",
                    "ldp q2, q3, [{ws}, #32]",
                    "ldp q4, q5, [{ow}]",
                    "ldp q6, q7, [{ow}, #32]",
                    "ldr q12, [{sa}], #16",
                    "ldr q13, [{za}], #16",
                    $load_magic,
                    dequant!($mode, 16, 14, 0, 4, 0, 0),
                    dequant!($mode, 17, 16, 1, 5, 16, 0),
                    dequant!($mode, 18, 17, 2, 6, 32, 0),
                    dequant!($mode, 19, 18, 3, 7, 48, 0),
                    dequant!($mode, 20, 19, 0, 4, 0, 1),
                    dequant!($mode, 21, 20, 1, 5, 16, 1),
                    dequant!($mode, 22, 21, 2, 6, 32, 1),
                    dequant!($mode, 23, 22, 3, 7, 48, 1),
                    dequant!($mode, 24, 23, 0, 4, 0, 2),
                    dequant!($mode, 25, 24, 1, 5, 16, 2),
                    dequant!($mode, 26, 25, 2, 6, 32, 2),
                    dequant!($mode, 27, 26, 3, 7, 48, 2),
                    dequant!($mode, 28, 27, 0, 4, 0, 3),
                    dequant!($mode, 29, 28, 1, 5, 16, 3),
                    dequant!($mode, 30, 29, 2, 6, 32, 3),
                    dequant!($mode, 31, 30, 3, 7, 48, 3),
                    "add {d1}, {d0}, {ldo}",
                    "add {d2}, {d1}, {ldo}",
                    "add {d3}, {d2}, {ldo}",
                    "cbz {acc}, 5f",
                    // The residual: out = out + value.
                    "ldp q0, q1, [{d0}]",
                    "ldp q2, q3, [{d0}, #32]",
                    "fadd v14.4s, v0.4s, v14.4s",
                    "fadd v16.4s, v1.4s, v16.4s",
                    "fadd v17.4s, v2.4s, v17.4s",
                    "fadd v18.4s, v3.4s, v18.4s",
                    "ldp q0, q1, [{d1}]",
                    "ldp q2, q3, [{d1}, #32]",
                    "fadd v19.4s, v0.4s, v19.4s",
                    "fadd v20.4s, v1.4s, v20.4s",
                    "fadd v21.4s, v2.4s, v21.4s",
                    "fadd v22.4s, v3.4s, v22.4s",
                    "ldp q0, q1, [{d2}]",
                    "ldp q2, q3, [{d2}, #32]",
                    "fadd v23.4s, v0.4s, v23.4s",
                    "fadd v24.4s, v1.4s, v24.4s",
                    "fadd v25.4s, v2.4s, v25.4s",
                    "fadd v26.4s, v3.4s, v26.4s",
                    "ldp q0, q1, [{d3}]",
                    "ldp q2, q3, [{d3}, #32]",
                    "fadd v27.4s, v0.4s, v27.4s",
                    "fadd v28.4s, v1.4s, v28.4s",
                    "fadd v29.4s, v2.4s, v29.4s",
                    "fadd v30.4s, v3.4s, v30.4s",
                    "5:",
                    "stp q14, q16, [{d0}]",
                    "stp q17, q18, [{d0}, #32]",
                    "stp q19, q20, [{d1}]",
                    "stp q21, q22, [{d1}, #32]",
                    "stp q23, q24, [{d2}]",
                    "stp q25, q26, [{d2}, #32]",
                    "stp q27, q28, [{d3}]",
                    "stp q29, q30, [{d3}, #32]",
                    "add {d0}, {d3}, {ldo}",
                    "subs {tiles}, {tiles}, #1",
                    "b.ne 3b",
                    a0 = inout(reg) a => _,
                    a1 = inout(reg) a.add(stride) => _,
                    a2 = inout(reg) a.add(2 * stride) => _,
                    a3 = inout(reg) a.add(3 * stride) => _,
                    stride = in(reg) stride,
                    w0 = in(reg) w,
                    w = out(reg) _,
                    steps = in(reg) groups / 4,
                    n = out(reg) _,
                    ws = in(reg) cols.w_scale.as_ptr(),
                    ow = in(reg) cols.w_offset.as_ptr(),
                    b = in(reg) cols.bias.as_ptr(),
                    init = in(reg) init,
                    sa = inout(reg) rows.scale.as_ptr() => _,
                    za = inout(reg) rows.offset.as_ptr() => _,
                    d0 = inout(reg) dst => _,
                    d1 = out(reg) _,
                    d2 = out(reg) _,
                    d3 = out(reg) _,
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
    };
}

strip_fn!(strip, scvtf, ZERO_LANES.0.as_ptr(), "");
strip_fn!(strip_magic, magic, MAGIC_LANES.0.as_ptr(), "ldr q8, [{init}]");

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

/// The int32 sums of one tile's first `ROWS` rows (1 to 4; the other rows stay zero).
#[target_feature(enable = "dotprod")]
unsafe fn body<const ROWS: usize>(rp: [*const i8; 4], groups: usize, w: *const i8) -> [[int32x4_t; 4]; 4] {
    let mut c = [[vdupq_n_s32(0); 4]; 4];
    let mut g = 0;
    // SAFETY (loads and sdot below): g + 3 < groups resp. g < groups: in bounds (see `run`);
    // sdot is register-only.
    unsafe {
        // Four groups per step: one 16-byte load holds a row's activations for all four.
        while g + 4 <= groups {
            let a: [int8x16_t; ROWS] = std::array::from_fn(|r| vld1q_s8(rp[r].add(g * KG)));
            macro_rules! step {
                ($lane:literal) => {
                    let wv: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add((g + $lane) * 64 + j * 16)));
                    for r in 0..ROWS {
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
            let a: [int8x16_t; ROWS] = std::array::from_fn(|r| bcast4(rp[r].add(g * KG)));
            let wv: [int8x16_t; 4] = std::array::from_fn(|j| vld1q_s8(w.add(g * 64 + j * 16)));
            for r in 0..ROWS {
                for j in 0..4 {
                    sdot_lane!(c[r][j], wv[j], a[r], 0);
                }
            }
            g += 1;
        }
    }
    c
}
