//! The scalar f16-weight microkernel with f32 accumulation: the twin of the widening kernels.
//! Per output, one chain of fused multiply-adds in k order.

use super::{Columns, OutBlock, NR};
use crate::gemm::epilogue::finish_f32;
use crate::gemm::{MR_MAX, NR_MAX};

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(panels * NR <= NR_MAX && w.len() >= panels * k * NR);
    for m0 in (0..out.rows).step_by(4) {
        let n = 4.min(out.rows - m0);
        let mut acc = [0f32; MR_MAX * NR_MAX];
        for r in 0..n {
            for c in 0..out.cols {
                let panel = &w[(c / NR) * k * NR..];
                let mut s = 0f32;
                for kk in 0..k {
                    s = a[(m0 + r) * lda + kk].mul_add(half::f16::from_bits(panel[kk * NR + c % NR]).to_f32(), s);
                }
                acc[r * NR_MAX + c] = s;
            }
        }
        finish_f32(&acc, NR_MAX, cols, &mut out.tile(m0, n));
    }
}
