//! The scalar bf16 microkernel: the twin every SIMD kernel is tested against. Per output, one
//! chain of [`dot_pair`] steps in k order.

use super::{check, dot_pair, OutBlock, NR, PLAIN};
use crate::gemm::epilogue::finish_f32;
use crate::gemm::{MR_MAX, NR_MAX};

pub(super) fn run(a: &[u16], lda: usize, pairs: usize, b: &[u16], panel_stride: usize, panels: usize, mut out: OutBlock<'_>) {
    check(a, lda, pairs, b, panel_stride, panels, NR_MAX / NR, &out);
    let (rows, n) = (out.rows, out.cols);
    for m0 in (0..rows).step_by(4) {
        let tile_rows = 4.min(rows - m0);
        let mut acc = [0f32; MR_MAX * NR_MAX];
        for r in 0..tile_rows {
            let row = &a[(m0 + r) * lda..];
            for c in 0..n {
                let panel = &b[(c / NR) * panel_stride..];
                let mut s = 0f32;
                for p in 0..pairs {
                    let w = &panel[p * 2 * NR + (c % NR) * 2..];
                    s = dot_pair(s, [row[2 * p], row[2 * p + 1]], [w[0], w[1]]);
                }
                acc[r * NR_MAX + c] = s;
            }
        }
        finish_f32(&acc, NR_MAX, PLAIN, &mut out.tile(m0, tile_rows));
    }
}
