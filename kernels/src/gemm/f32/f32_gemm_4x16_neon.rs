//! aarch64 NEON, 4 rows x 16 columns: each row of `a` broadcast by element, `fmla` with four q
//! registers of `b`'s row. The tile is finished in registers.

use std::arch::aarch64::*;

use super::{Columns, check, for_each_tile, OutBlock};
use crate::gemm::epilogue::neon::{finish_f32, gelu_after_tiles};

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
/// Each sum still adds its products in k order, one fused multiply-add at a time.
///
/// # Safety
/// Each `rp[r]` must address k readable floats, and `b` k rows of 16 at stride `ldb`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn body(rp: &[*const f32; 4], k: usize, b: *const f32, ldb: usize) -> [[float32x4_t; 4]; 4] {
    // The zero sums are loaded, not made with `movi`: loads issue on the load pipes, which the
    // first k step leaves half idle, where 16 `movi` took eight cycles of the two vector pipes
    // the multiply-adds need (0.7 M cycles of a ViT-Ti inference on the Cortex-A76). In asm,
    // so that the compiler does not fold the loads back into `movi`.
    static ZEROS: [f32; 8] = [0.0; 8];
    let zero_pair = || {
        let (z0, z1);
        // SAFETY: reads the 8 floats of ZEROS into two registers; nothing else.
        unsafe {
            std::arch::asm!(
                "ldp {z0:q}, {z1:q}, [{p}]",
                p = in(reg) ZEROS.as_ptr(),
                z0 = out(vreg) z0,
                z1 = out(vreg) z1,
                options(nostack, readonly, preserves_flags),
            )
        };
        [z0, z1]
    };
    let c = std::array::from_fn(|_| {
        let ([c0, c1], [c2, c3]) = (zero_pair(), zero_pair());
        [c0, c1, c2, c3]
    });
    // SAFETY: the caller's contract.
    unsafe { body_from(c, rp, k, b, ldb) }
}

/// [`body`] continuing from the sums `c` (for a product split along k: adding the second
/// part to the stored sums of the first gives the same bits as one pass).
///
/// # Safety
/// As for [`body`].
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn body_from(
    mut c: [[float32x4_t; 4]; 4],
    rp: &[*const f32; 4],
    k: usize,
    b: *const f32,
    ldb: usize,
) -> [[float32x4_t; 4]; 4] {
    /// Row `kk + L` of `b` times lane L of each row's four values.
    #[inline(always)]
    unsafe fn step<const L: i32>(c: &mut [[float32x4_t; 4]; 4], x: &[float32x4_t; 4], p: *const f32) {
        // SAFETY: the caller passes a row of 16 readable floats.
        let w = unsafe { [vld1q_f32(p), vld1q_f32(p.add(4)), vld1q_f32(p.add(8)), vld1q_f32(p.add(12))] };
        for r in 0..4 {
            for j in 0..4 {
                c[r][j] = vfmaq_laneq_f32::<L>(c[r][j], w[j], x[r]);
            }
        }
    }
    let mut kk = 0;
    while kk + 4 <= k {
        // SAFETY: kk + 4 <= k: four values of each row and four rows of `b` are in bounds.
        unsafe {
            let x = [vld1q_f32(rp[0].add(kk)), vld1q_f32(rp[1].add(kk)), vld1q_f32(rp[2].add(kk)), vld1q_f32(rp[3].add(kk))];
            let p = b.add(kk * ldb);
            step::<0>(&mut c, &x, p);
            step::<1>(&mut c, &x, p.add(ldb));
            step::<2>(&mut c, &x, p.add(2 * ldb));
            step::<3>(&mut c, &x, p.add(3 * ldb));
        }
        kk += 4;
    }
    for kk in kk..k {
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
