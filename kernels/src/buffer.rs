//! Buffers that start on a cache line.
//!
//! The GEMM driver splits a layer's output by columns, and attention by heads: with a buffer
//! that starts 16 bytes into a line (where the system allocator puts large blocks), every task
//! boundary falls inside a cache line that both threads write, row after row, and the line
//! moves between the cores. AVX-512 loads and stores of a misaligned row also straddle two
//! lines each. On a 2-core Xeon this cost ViT-Ti int8 12% at 2 threads and 4% at 1.

use std::ops::{Deref, DerefMut};

/// Bytes per cache line on the CPUs edgevit runs on (and a multiple of every vector width).
pub const CACHE_LINE: usize = 64;

/// A zero-filled buffer of fixed length whose first element starts a [`CACHE_LINE`]: a `Vec`
/// with room to spare, used from the first aligned element on. Safe code: the offset comes
/// from the allocation's address, and the `Vec` never reallocates.
#[derive(Debug, Default)]
pub struct AlignedVec<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> AlignedVec<T> {
    /// `len` default (zero) values.
    pub fn zeroed(len: usize) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        assert!(CACHE_LINE.is_multiple_of(size), "AlignedVec: element size {size} does not divide a cache line");
        let spare = CACHE_LINE / size;
        let buf = vec![T::default(); len + spare];
        // Elements are aligned to their size, so the distance to the next line is a whole
        // number of elements.
        let start = (CACHE_LINE - buf.as_ptr() as usize % CACHE_LINE) % CACHE_LINE / size;
        AlignedVec { buf, start, len }
    }
}

impl<T: Copy + Default> Clone for AlignedVec<T> {
    /// A new allocation, aligned again (copying the `Vec` would keep the old offset).
    fn clone(&self) -> Self {
        let mut c = Self::zeroed(self.len);
        c.copy_from_slice(self);
        c
    }
}

impl<T> Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_with_the_length_asked_for() {
        for len in [0, 1, 15, 16, 17, 4096, 37_824, 1 << 20] {
            let f = AlignedVec::<f32>::zeroed(len);
            let b = AlignedVec::<i8>::zeroed(len);
            let h = AlignedVec::<u16>::zeroed(len);
            assert_eq!((f.len(), b.len(), h.len()), (len, len, len));
            assert_eq!(f.as_ptr() as usize % CACHE_LINE, 0, "{len} floats");
            assert_eq!(b.as_ptr() as usize % CACHE_LINE, 0, "{len} bytes");
            assert_eq!(h.as_ptr() as usize % CACHE_LINE, 0, "{len} halves");
            assert!(f.iter().all(|&v| v == 0.0) && b.iter().all(|&v| v == 0));
            // A clone is a new allocation: aligned again, not at the old offset.
            let mut c = f.clone();
            c.iter_mut().for_each(|v| *v = 1.0);
            assert_eq!(c.as_ptr() as usize % CACHE_LINE, 0);
            assert!(f.iter().all(|&v| v == 0.0));
        }
    }
}
