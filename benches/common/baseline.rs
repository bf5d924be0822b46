//! The benchmarks' f32 baseline: the `gemm` crate (a well-tuned BLIS-style GEMM), which
//! edgevit's own kernels are measured against. Not used at run time.

/// `out (m x n) = x (m x k) * w^T`, with `w` row-major `n x k` (a PyTorch Linear weight).
#[allow(clippy::too_many_arguments)]
pub fn gemm_crate(out: &mut [f32], x: &[f32], w: &[f32], m: usize, n: usize, k: usize, threads: usize) {
    assert!(out.len() >= m * n && x.len() >= m * k && w.len() >= n * k, "gemm_crate: operands too short");
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the three buffers hold the m x n, m x k and n x k elements addressed with these
    // strides (checked above), and `out` is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
