//! The scalar int8 microkernel: the twin every SIMD kernel is tested against.

use super::{Columns, Rows, OutBlock, KG, NR};
use crate::gemm::epilogue::finish_i32;
use crate::gemm::{MR_MAX, NR_MAX};

pub(super) fn run(
    a: &[i8],
    stride: usize,
    w: &[i8],
    panels: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    mut out: OutBlock<'_>,
) {
    assert!(panels * NR <= NR_MAX && a.len() >= out.rows * stride);
    let groups = stride / KG;
    let panel_len = stride * NR;
    for m0 in (0..out.rows).step_by(4) {
        let n = 4.min(out.rows - m0);
        let mut acc = [0i32; MR_MAX * NR_MAX];
        for r in 0..n {
            let row = &a[(m0 + r) * stride..(m0 + r + 1) * stride];
            for c in 0..out.cols {
                let panel = &w[(c / NR) * panel_len..][..panel_len];
                let mut s = 0i32;
                for g in 0..groups {
                    for j in 0..KG {
                        s += row[g * KG + j] as i32 * panel[(g * NR + c % NR) * KG + j] as i32;
                    }
                }
                acc[r * NR_MAX + c] = s;
            }
        }
        finish_i32(&acc, NR_MAX, &rows.at(m0, n), cols, &mut out.tile(m0, n));
    }
}
