//! f32 matrix multiplication. The fast path goes through the `gemm` crate; `matmul_scalar` is
//! its oracle. Matrices are strided views so that a transposed weight or one head's columns of a
//! fused QKV buffer can be used without copying.

use crate::Threads;

/// A read-only strided view of a `rows x cols` matrix: element (r, c) is
/// `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix whose rows are contiguous.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `rows x cols` matrix stored in `data` (so the view is
    /// `cols x rows`). Used for PyTorch Linear weights, stored `[out, in]`.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }

    fn fits(&self) -> bool {
        fits(self.data.len(), self.rows, self.cols, self.row_stride, self.col_stride)
    }

    pub fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// A mutable row-major view with a row stride (so a block of columns can be addressed).
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a> MatMut<'a> {
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols, row_stride: cols }
    }
}

fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(rs).and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    matches!(last, Some(l) if l < len)
}

/// Below this many multiply-adds a matmul runs on one thread: splitting costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `dst = a * b (+ dst if accumulate)`.
///
/// # Panics
/// If the shapes disagree or a view does not fit its slice: callers pass shapes they derived
/// from a validated model, so a mismatch is a bug, not bad input.
pub fn matmul(dst: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, threads: Threads) {
    check_shapes(&dst, &a, &b);
    let (m, n) = (dst.rows, dst.cols);
    // SAFETY: check_shapes proved that every element addressed, r * row_stride + c for
    // r < rows and c < cols, lies inside `dst`, which is a unique borrow.
    unsafe { matmul_to_ptr(dst.data.as_mut_ptr(), m, n, dst.row_stride, a, b, accumulate, threads) }
}

/// [`matmul`] into a raw row-major destination (`rows x cols`, row stride `row_stride`), for
/// callers whose threads write disjoint column blocks of one buffer (attention heads), where
/// no `&mut` slice may cover another thread's columns.
///
/// # Safety
/// Every `dst + r * row_stride + c` (r < rows, c < cols) must be valid for writes (and reads
/// if `accumulate`), and nothing else may access those elements during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_to_ptr(
    dst: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    threads: Threads,
) {
    assert!(a.rows == rows && b.cols == cols && a.cols == b.rows, "matmul: shapes disagree");
    assert!(a.fits() && b.fits(), "matmul: a view does not fit its slice");
    let (m, n, k) = (rows, cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    // SAFETY: in the destination per this function's contract.
                    unsafe { dst.add(r * row_stride + c).write(0.0) };
                }
            }
        }
        return;
    }
    let parallelism = if threads.get() > 1 && m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(threads.get())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the views fit their slices (checked above) and the destination is valid and
    // unaliased per this function's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The scalar twin of [`matmul`]: a triple loop accumulating in f64, the oracle for tests.
pub fn matmul_scalar(dst: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    check_shapes(&dst, &a, &b);
    for r in 0..dst.rows {
        for c in 0..dst.cols {
            let mut acc = 0.0f64;
            for i in 0..a.cols {
                acc += a.at(r, i) as f64 * b.at(i, c) as f64;
            }
            let out = &mut dst.data[r * dst.row_stride + c];
            *out = if accumulate { *out + acc as f32 } else { acc as f32 };
        }
    }
}

fn check_shapes(dst: &MatMut<'_>, a: &MatRef<'_>, b: &MatRef<'_>) {
    assert_eq!(a.rows, dst.rows, "matmul: lhs rows {} != dst rows {}", a.rows, dst.rows);
    assert_eq!(b.cols, dst.cols, "matmul: rhs cols {} != dst cols {}", b.cols, dst.cols);
    assert_eq!(a.cols, b.rows, "matmul: inner dims {} != {}", a.cols, b.rows);
    assert!(a.fits(), "matmul: lhs view does not fit its slice");
    assert!(b.fits(), "matmul: rhs view does not fit its slice");
    assert!(dst.cols <= dst.row_stride || dst.rows <= 1, "matmul: dst rows overlap");
    assert!(fits(dst.data.len(), dst.rows, dst.cols, dst.row_stride, 1), "matmul: dst view does not fit its slice");
}

/// Adds `bias` to every row of a row-major `rows x bias.len()` matrix.
pub fn add_bias_rows(data: &mut [f32], bias: &[f32]) {
    assert!(!bias.is_empty() && data.len().is_multiple_of(bias.len()), "add_bias_rows: ragged matrix");
    for row in data.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence (xorshift) so tests need no extra crate.
    pub(crate) fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn gemm_matches_scalar_on_ragged_shapes() {
        for &(m, n, k) in &[(1, 1, 1), (1, 17, 5), (7, 3, 768), (197, 33, 19), (13, 64, 1), (50, 250, 37), (3, 1, 9)] {
            let a = noise(1 + m as u64, m * k);
            let w = noise(2 + n as u64, n * k); // PyTorch layout [n, k]
            let bias = noise(3, n);
            for threads in [1, 2] {
                for accumulate in [false, true] {
                    let mut fast = noise(4, m * n);
                    let mut slow = fast.clone();
                    matmul(
                        MatMut::row_major(&mut fast, m, n),
                        MatRef::row_major(&a, m, k),
                        MatRef::transposed(&w, n, k),
                        accumulate,
                        Threads(threads),
                    );
                    matmul_scalar(
                        MatMut::row_major(&mut slow, m, n),
                        MatRef::row_major(&a, m, k),
                        MatRef::transposed(&w, n, k),
                        accumulate,
                    );
                    add_bias_rows(&mut fast, &bias);
                    add_bias_rows(&mut slow, &bias);
                    for (i, (x, y)) in fast.iter().zip(&slow).enumerate() {
                        let tol = 1e-5 * (k as f32).sqrt() + 1e-6;
                        assert!(
                            (x - y).abs() <= tol,
                            "m={m} n={n} k={k} t={threads} acc={accumulate} [{i}]: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strided_views_address_the_right_elements() {
        // a 2x3 block of columns 1..4 in a 2x5 buffer, times a 3x2 matrix, into columns 2..4 of a 2x6 buffer.
        let a = [0., 1., 2., 3., 0., 0., 4., 5., 6., 0.];
        let b = [1., 0., 0., 1., 1., 1.];
        let mut out = [9.0f32; 12];
        let view = MatRef { data: &a[1..], rows: 2, cols: 3, row_stride: 5, col_stride: 1 };
        matmul(
            MatMut { data: &mut out[2..], rows: 2, cols: 2, row_stride: 6 },
            view,
            MatRef::row_major(&b, 3, 2),
            false,
            Threads(1),
        );
        // row 0: [1,2,3] x b = [1+3, 2+3]; row 1: [4,5,6] x b = [4+6, 5+6]
        assert_eq!(out, [9., 9., 4., 5., 9., 9., 9., 9., 10., 11., 9., 9.]);
    }

    #[test]
    #[should_panic(expected = "inner dims")]
    fn mismatched_shapes_are_refused() {
        let a = [0.0; 6];
        let mut out = [0.0; 4];
        matmul(
            MatMut::row_major(&mut out, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 2, 2),
            false,
            Threads(1),
        );
    }
}
