//! The scalar f32 microkernel: the twin every SIMD kernel is tested against. Per output, one
//! chain of fused multiply-adds in k order.

use super::{Columns, OutBlock, NR};
use crate::gemm::epilogue::finish_f32;
use crate::gemm::{MR_MAX, NR_MAX};

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
    // Unlike the SIMD kernels, it reads only the block's columns: attention runs it on
    // column groups narrower than 16 at the right edge of a buffer.
    let (rows, n) = (out.rows, out.cols);
    assert!(n <= NR_MAX && n <= panels * NR);
    let last_col = ((n - 1) / NR) * panel_stride + (n - 1) % NR;
    assert!(k == 0 || (a.len() >= (rows - 1) * lda + k && b.len() > (k - 1) * ldb + last_col), "f32 gemm: operands too short");
    for m0 in (0..rows).step_by(4) {
        let tile_rows = 4.min(rows - m0);
        let mut acc = [0f32; MR_MAX * NR_MAX];
        for r in 0..tile_rows {
            for c in 0..n {
                let col = (c / NR) * panel_stride + c % NR;
                let mut s = 0f32;
                for kk in 0..k {
                    s = a[(m0 + r) * lda + kk].mul_add(b[kk * ldb + col], s);
                }
                acc[r * NR_MAX + c] = s;
            }
        }
        finish_f32(&acc, NR_MAX, cols, &mut out.tile(m0, tile_rows));
    }
}
