//! GEMMs for the Linear layers: `out[m, n] = sum_k a[m, k] * w[n, k] + bias[n]`, then stored,
//! activated or added to `out` (the residual), for int8, f16 and f32 weights.
//!
//! As in BLIS, one [`driver`] owns the loops around the register tile (column panels split
//! across threads, `MR` rows per call) and one [`epilogue`] owns what happens to a finished
//! tile (dequantization, bias, activation, residual add). A microkernel owns only its tile:
//! each variant is one file, named as `edgevit info` prints it, in the family of its weight
//! dtype:
//!
//! - [`i8`](mod@i8): int8 weights and activations quantized per row, int32 accumulation (`sdot`,
//!   `smmla`, `smull`/`smlal`, `vpdpbusd`, `vpmaddubsw`);
//! - [`f16`](mod@f16): half-precision weights widened to f32, or half-precision arithmetic (Cortex-A76);
//! - [`f32`](mod@f32): f32 weights; the same microkernels run attention's products.
//!
//! Weights are packed once, by the tools, in the layouts of [`pack`]: column panels of
//! [`NR`] = 16 output channels.

pub mod bf16;
pub mod driver;
pub mod epilogue;
pub mod f16;
pub mod f32;
pub mod i8;
pub mod pack;

pub use epilogue::{Columns, Epilogue, Rows};
pub use pack::NR;

/// The most rows any microkernel computes at once.
pub const MR_MAX: usize = 8;
/// The most columns any microkernel computes at once: two panels.
pub const NR_MAX: usize = 2 * NR;

/// Where one microkernel call's `rows x cols` results go (row `r` at `dst + r * ldo`), and
/// what happens to them on the way: a column strip of any height, which the microkernel
/// walks `MR` rows at a time (`OutBlock::tile`). Only the driver (and attention) make one,
/// for a block checked to be in bounds and that no other task writes.
#[derive(Clone, Copy)]
pub struct OutBlock<'a> {
    dst: *mut f32,
    /// Row stride of the output.
    pub ldo: usize,
    /// Rows of the block.
    pub rows: usize,
    /// Columns of the block (at most the kernel's NR).
    pub cols: usize,
    /// Store, activate or accumulate.
    pub epilogue: Epilogue,
    _rows: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> OutBlock<'a> {
    /// # Safety
    /// `dst` must address `rows` rows of `cols` writable floats at stride `ldo`, which no one
    /// else reads or writes while the block lives.
    pub(crate) unsafe fn new(dst: *mut f32, ldo: usize, rows: usize, cols: usize, epilogue: Epilogue) -> Self {
        assert!(rows >= 1 && (1..=NR_MAX).contains(&cols) && (rows == 1 || ldo >= cols));
        OutBlock { dst, ldo, rows, cols, epilogue, _rows: std::marker::PhantomData }
    }

    /// Rows `m0..m0 + rows` of the block, as a block of its own.
    pub(crate) fn tile(&mut self, m0: usize, rows: usize) -> OutBlock<'_> {
        assert!(rows >= 1 && m0 + rows <= self.rows);
        let dst = self.dst.wrapping_add(m0 * self.ldo);
        OutBlock { dst, ldo: self.ldo, rows, cols: self.cols, epilogue: self.epilogue, _rows: std::marker::PhantomData }
    }

    /// With [`Epilogue::Accumulate`], asks for the block's rows in cache before the tile is
    /// computed, so that they are there when the epilogue adds to them: the residual stream,
    /// which the MLP's wider buffers have pushed out of L2 by then (ViT-B int8 on a Zen 4: half of
    /// `finish_i32`'s 3.8% of the inference sat at the add that waits for them). Other epilogues
    /// read nothing there.
    #[inline(always)]
    pub(crate) fn prefetch_accumulated(&self) {
        if self.epilogue == Epilogue::Accumulate {
            for r in 0..self.rows {
                let row = self.dst.wrapping_add(r * self.ldo);
                for c in (0..self.cols).step_by(16).chain([self.cols - 1]) {
                    crate::prefetch(row.wrapping_add(c));
                }
            }
        }
    }

    /// Row `r` of the block.
    pub fn row(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows);
        // SAFETY: in bounds and exclusive by the constructor's contract.
        unsafe { std::slice::from_raw_parts_mut(self.dst.add(r * self.ldo), self.cols) }
    }

    /// The first element of row `r`, for SIMD stores of whole rows.
    #[allow(dead_code)] // used by the SIMD epilogues of whichever architecture this is built for
    pub(crate) fn row_ptr(&self, r: usize) -> *mut f32 {
        assert!(r < self.rows);
        self.dst.wrapping_add(r * self.ldo)
    }
}

/// Calls `tile(row_pointers, first_row, block)` for each `MR`-row tile of the strip `out`, the
/// rows of `a` at stride `lda`; in a last, shorter tile the rows past its end repeat its last
/// row (computed, never stored), so kernel bodies need no ragged-row branches.
/// Inlined into each microkernel, so that profiles name the kernel.
#[allow(dead_code)] // used by the SIMD kernels of whichever architecture this is built for
#[inline(always)]
pub(crate) fn for_each_tile<const MR: usize, T>(
    a: &[T],
    lda: usize,
    out: &mut OutBlock<'_>,
    mut tile: impl FnMut([*const T; MR], usize, OutBlock<'_>),
) {
    debug_assert!((out.rows - 1) * lda <= a.len());
    for m0 in (0..out.rows).step_by(MR) {
        let rows = MR.min(out.rows - m0);
        // Pointer arithmetic only: the kernels' `check` made sure that the block's rows are in
        // `a` (when k > 0; with k = 0 nothing is read).
        let first = a.as_ptr().wrapping_add(m0 * lda);
        let rp = std::array::from_fn(|r| first.wrapping_add(r.min(rows - 1) * lda));
        let tile_out = out.tile(m0, rows);
        tile_out.prefetch_accumulated();
        tile(rp, m0, tile_out);
    }
}
