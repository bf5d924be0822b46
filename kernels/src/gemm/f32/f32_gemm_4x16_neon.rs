//! aarch64 NEON, 4 rows x 16 columns: each row of `a` broadcast by element, `fmla` with four q
//! registers of `b`'s row, the K loop in inline asm with its registers allocated by hand and
//! its start aligned. The tile is finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, check, for_each_tile, OutBlock};
use crate::gemm::epilogue::neon::{finish_f32, gelu_after_tiles};

/// One k of `k_loop!`: row k of `b` (16 floats at `{b}`, which then moves on one row, `{ldb}`
/// bytes) into registers v$w0-v$w3, times lane $lane of the four rows' values (v0-v3), added to
/// the accumulators v16-v31 (row r, columns 4j..4j+4 in v(16 + 4r + j)).
macro_rules! k_row {
    ($w0:literal, $w1:literal, $w2:literal, $w3:literal, $lane:literal) => {
        concat!(
            "ld1 {{v", $w0, ".4s, v", $w1, ".4s, v", $w2, ".4s, v", $w3, ".4s}}, [{b}], {ldb}\n",
            fmla_row!("16", "17", "18", "19", "0", $w0, $w1, $w2, $w3, $lane),
            fmla_row!("20", "21", "22", "23", "1", $w0, $w1, $w2, $w3, $lane),
            fmla_row!("24", "25", "26", "27", "2", $w0, $w1, $w2, $w3, $lane),
            fmla_row!("28", "29", "30", "31", "3", $w0, $w1, $w2, $w3, $lane),
        )
    };
}

/// Four `fmla`s: accumulators v$c0-v$c3 += weights v$w0-v$w3 times lane $lane of v$x.
macro_rules! fmla_row {
    ($c0:literal, $c1:literal, $c2:literal, $c3:literal, $x:literal,
     $w0:literal, $w1:literal, $w2:literal, $w3:literal, $lane:literal) => {
        concat!(
            "fmla v", $c0, ".4s, v", $w0, ".4s, v", $x, ".s[", $lane, "]\n",
            "fmla v", $c1, ".4s, v", $w1, ".4s, v", $x, ".s[", $lane, "]\n",
            "fmla v", $c2, ".4s, v", $w2, ".4s, v", $x, ".s[", $lane, "]\n",
            "fmla v", $c3, ".4s, v", $w3, ".4s, v", $x, ".s[", $lane, "]\n",
        )
    };
}

/// The four-k steps of [`body`] and [`body_from`]: `{n}` (at least one) steps of four k, rows
/// at `{a0}`..`{a3}`, `b`'s rows at `{b}` every `{ldb}` bytes, sums in v16-v31. The first step
/// is peeled, so that it shares a block with what comes before it (`body`'s zero loads); the
/// loop (74 instructions, 296 bytes) starts on a 512-byte boundary, so that it never crosses a
/// 4 KB page: qemu splits a block at a page, and the cycle estimate then cannot overlap the
/// halves (26.8 M Cortex-A72 cycles of the f16 model when the compiled loop landed 32 bytes
/// before a page). The padding is jumped over, once per call.
macro_rules! k_loop {
    () => {
        concat!(
            four_k!(),
            "subs {n}, {n}, #1\n",
            "b.eq 2f\n",
            "b 3f\n",
            ".p2align 9\n",
            "3:\n",
            four_k!(),
            "subs {n}, {n}, #1\n",
            "b.ne 3b\n",
            "2:\n",
        )
    };
}

/// One step of four k: each row's four values into v0-v3, then `k_row!` for each k.
macro_rules! four_k {
    () => {
        concat!(
            "ldr q0, [{a0}], #16\n",
            "ldr q1, [{a1}], #16\n",
            "ldr q2, [{a2}], #16\n",
            "ldr q3, [{a3}], #16\n",
            k_row!("4", "5", "6", "7", "0"),
            k_row!("8", "9", "10", "11", "1"),
            k_row!("4", "5", "6", "7", "2"),
            k_row!("8", "9", "10", "11", "3"),
        )
    };
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    a: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    panel_stride: usize,
    panels: usize,
    cols: &Columns,
    mut out: OutBlock<'_>,
) {
    check(a, lda, k, b, ldb, panel_stride, panels, 1, &out);
    gelu_after_tiles(&mut out, |out| {
        for_each_tile::<4, f32>(a, lda, out, |rp, _, mut tile| {
            // SAFETY: NEON is baseline on aarch64; `check` made sure that every row of `a`
            // holds k values and `b` k rows of 16 at stride ldb.
            let c = unsafe { body(&rp, k, b.as_ptr(), ldb) };
            finish_f32(&c, cols, &mut tile);
        })
    });
}

/// The 4 x 16 sums, also attention's inner loop.
///
/// Four k at a time, each row's four values are one `ldr q` and the products use `fmla` by
/// element: a broadcast load (`ld1r`) per row and k would occupy the same two vector pipes as
/// the multiply-adds on the Cortex-A76 (and the A72), 20 vector operations for 16 `fmla`.
/// Each sum still adds its products in k order, one fused multiply-add at a time. The four-k
/// steps are inline asm (`k_loop!`), the k % 4 left after them Rust.
///
/// # Safety
/// Each `rp[r]` must address k readable floats, and `b` k rows of 16 at stride `ldb`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn body(rp: &[*const f32; 4], k: usize, b: *const f32, ldb: usize) -> [[float32x4_t; 4]; 4] {
    let steps = k / 4;
    if steps == 0 {
        // SAFETY: the caller's contract.
        return unsafe { k_tail([[vdupq_n_f32(0.0); 4]; 4], rp, 0, k, b, ldb) };
    }
    // The zero sums are loaded, not made with `movi`, and in the block of the first step:
    // loads issue on the load pipes, which the first step leaves half idle, where 16 `movi`
    // took eight cycles of the two vector pipes the multiply-adds need (0.7 M cycles of a
    // ViT-Ti inference on the Cortex-A76), and a block of its own would cost them again.
    static ZEROS: [f32; 8] = [0.0; 8];
    let (c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33);
    // SAFETY: `steps` four-k steps read 4 * steps <= k floats of each row and 4 * steps rows
    // of 16 floats of `b` at stride `ldb` (the caller's contract), and ZEROS; only the
    // declared registers are written.
    unsafe {
        asm!(
            "ldp q16, q17, [{z}]", "ldp q18, q19, [{z}]", "ldp q20, q21, [{z}]", "ldp q22, q23, [{z}]",
            "ldp q24, q25, [{z}]", "ldp q26, q27, [{z}]", "ldp q28, q29, [{z}]", "ldp q30, q31, [{z}]",
            k_loop!(),
            z = in(reg) ZEROS.as_ptr(),
            a0 = inout(reg) rp[0] => _,
            a1 = inout(reg) rp[1] => _,
            a2 = inout(reg) rp[2] => _,
            a3 = inout(reg) rp[3] => _,
            b = inout(reg) b => _,
            n = inout(reg) steps => _,
            ldb = in(reg) 4 * ldb,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v16") c00, out("v17") c01, out("v18") c02, out("v19") c03,
            out("v20") c10, out("v21") c11, out("v22") c12, out("v23") c13,
            out("v24") c20, out("v25") c21, out("v26") c22, out("v27") c23,
            out("v28") c30, out("v29") c31, out("v30") c32, out("v31") c33,
            options(nostack, readonly),
        );
    }
    let c = [[c00, c01, c02, c03], [c10, c11, c12, c13], [c20, c21, c22, c23], [c30, c31, c32, c33]];
    // SAFETY: the caller's contract.
    unsafe { k_tail(c, rp, 4 * steps, k, b, ldb) }
}

/// [`body`] continuing from the sums `c` (for a product split along k: adding the second
/// part to the stored sums of the first gives the same bits as one pass).
///
/// # Safety
/// As for [`body`].
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn body_from(
    c: [[float32x4_t; 4]; 4],
    rp: &[*const f32; 4],
    k: usize,
    b: *const f32,
    ldb: usize,
) -> [[float32x4_t; 4]; 4] {
    let [[mut c00, mut c01, mut c02, mut c03], [mut c10, mut c11, mut c12, mut c13], [mut c20, mut c21, mut c22, mut c23], [mut c30, mut c31, mut c32, mut c33]] = c;
    let steps = k / 4;
    if steps > 0 {
        // SAFETY: as in `body`, without ZEROS.
        unsafe {
            asm!(
                k_loop!(),
                a0 = inout(reg) rp[0] => _,
                a1 = inout(reg) rp[1] => _,
                a2 = inout(reg) rp[2] => _,
                a3 = inout(reg) rp[3] => _,
                b = inout(reg) b => _,
                n = inout(reg) steps => _,
                ldb = in(reg) 4 * ldb,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                inout("v16") c00, inout("v17") c01, inout("v18") c02, inout("v19") c03,
                inout("v20") c10, inout("v21") c11, inout("v22") c12, inout("v23") c13,
                inout("v24") c20, inout("v25") c21, inout("v26") c22, inout("v27") c23,
                inout("v28") c30, inout("v29") c31, inout("v30") c32, inout("v31") c33,
                options(nostack, readonly),
            );
        }
    }
    let c = [[c00, c01, c02, c03], [c10, c11, c12, c13], [c20, c21, c22, c23], [c30, c31, c32, c33]];
    // SAFETY: the caller's contract.
    unsafe { k_tail(c, rp, 4 * steps, k, b, ldb) }
}

/// The products of k `from..k` (fewer than four) added to `c`, one k at a time.
///
/// # Safety
/// As for [`body`].
#[target_feature(enable = "neon")]
#[inline]
unsafe fn k_tail(
    mut c: [[float32x4_t; 4]; 4],
    rp: &[*const f32; 4],
    from: usize,
    k: usize,
    b: *const f32,
    ldb: usize,
) -> [[float32x4_t; 4]; 4] {
    for kk in from..k {
        // SAFETY: kk < k: in bounds per the function's contract.
        let (w, x) = unsafe {
            let p = b.add(kk * ldb);
            let w = [vld1q_f32(p), vld1q_f32(p.add(4)), vld1q_f32(p.add(8)), vld1q_f32(p.add(12))];
            (w, [*rp[0].add(kk), *rp[1].add(kk), *rp[2].add(kk), *rp[3].add(kk)])
        };
        for r in 0..4 {
            for j in 0..4 {
                c[r][j] = vfmaq_n_f32(c[r][j], w[j], x[r]);
            }
        }
    }
    c
}
