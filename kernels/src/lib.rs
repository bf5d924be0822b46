//! Numeric kernels for edgevit. No I/O and no knowledge of model files: every function takes
//! slices and shapes, checks them, and computes. Each optimised kernel has a plain scalar twin
//! here that serves as the oracle in its tests.

pub mod activation;
pub mod attention;
pub mod i8gemm;
pub mod layernorm;
pub mod matmul;

/// How many threads a kernel may use. `1` keeps the work on the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Threads {
    pub fn get(self) -> usize {
        self.0.max(1)
    }
}
