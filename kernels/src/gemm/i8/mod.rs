//! int8 GEMM: `out[m, n] = dequant(sum_k qa[m, k] * qw[n, k]) + bias[n]`, then stored,
//! activated or added (see [`super::epilogue`]).
//!
//! Weights are quantized per output channel and packed k4n16 ([`super::pack`]) by the tools.
//! Activations are quantized per row at run time ([`crate::rows::quantize`]) to [-127, 127].
//! The tools write weights in [-127, 127] too, but a file can hold -128, and every kernel is
//! exact for any weight byte: with one operand in [-127, 127], the 16-bit pair sums of the
//! `smlal` and `vpmaddubsw` kernels are at most 2 * 128 * 127 = 32512. Every kernel's int32
//! sums are exact, and the epilogue is the same everywhere, so all kernels agree with the
//! scalar twin bit for bit.

use super::driver::{drive, Problem};
#[allow(unused_imports)] // used by the SIMD kernels of whichever architecture this is built for
use super::for_each_tile;
use super::pack::{k4n16_len, padded_k, KG, NR};
use super::{Columns, Epilogue, OutBlock, Rows};
use crate::buffer::AlignedVec;
use crate::rows::quantize::{gelu_quantize_row, quantize_row};
use crate::Threads;
use rayon::prelude::*;

/// The signature every int8 microkernel shares: `out.rows` activation rows of `stride` bytes
/// (K padded to whole groups) times `panels` consecutive k4n16 weight panels, dequantized
/// with the block's `rows` and `cols` factors and finished into `out`.
pub(crate) type Ukernel =
    fn(a: &[i8], stride: usize, w: &[i8], panels: usize, rows: &Rows<'_>, cols: &Columns, out: OutBlock<'_>);

kernel_family! {
    /// The int8 microkernels, named `i8_gemm_{MR}x{NR}c{K per step}_{isa}`.
    pub enum I8Kernel: Ukernel {
        /// Portable Rust: the twin every SIMD kernel is tested against.
        Scalar = i8_gemm_4x16c4_scalar { mr: 4, nr: 16 } where cfg(all()), cpu(true), tier(Scalar),
        /// x86_64 AVX2: `vpsignb`/`vpmaddubsw`/`vpmaddwd`.
        Avx2 = i8_gemm_4x16c4_avx2 { mr: 4, nr: 16 }
            where cfg(target_arch = "x86_64"), cpu(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")), tier(Base),
        /// x86_64 AVX-VNNI: 256-bit `vpdpbusd` on activations stored as `q + 128`.
        AvxVnni = i8_gemm_4x16c4_avxvnni { mr: 4, nr: 16 }
            where cfg(target_arch = "x86_64"),
            cpu(is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("avxvnni")), tier(Base),
        /// x86_64 AVX-512 VNNI: 512-bit `vpdpbusd`, two panels per call.
        Avx512Vnni = i8_gemm_8x32c4_avx512vnni { mr: 8, nr: 32 }
            where cfg(target_arch = "x86_64"),
            cpu(is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")), tier(Extended),
        /// aarch64 baseline NEON (Cortex-A72): `smull`/`smlal`/`sadalp`.
        Neon = i8_gemm_2x16c4_neon { mr: 2, nr: 16 } where cfg(target_arch = "aarch64"), cpu(true), tier(Base),
        /// aarch64 dot product (Cortex-A76): `sdot`.
        NeonDot = i8_gemm_4x16c4_neondot { mr: 4, nr: 16 }
            where cfg(target_arch = "aarch64"), cpu(std::arch::is_aarch64_feature_detected!("dotprod")), tier(Extended),
        /// aarch64 int8 matrix multiply (Armv8.6 i8mm): `smmla` on 2 x 8 blocks.
        NeonI8mm = i8_gemm_4x16c8_neoni8mm { mr: 4, nr: 16 }
            where cfg(target_arch = "aarch64"), cpu(std::arch::is_aarch64_feature_detected!("i8mm")), tier(Extended),
    }
}

impl I8Kernel {
    /// The fastest kernel this CPU can run within the `EDGEVIT_ISA` cap ([`crate::cpu`]).
    pub fn best() -> I8Kernel {
        *Self::allowed().last().expect("the scalar kernel always runs")
    }

    /// Computes one block: `out.rows` rows of `a` (`stride` bytes each) times `panels`
    /// consecutive k4n16 panels of `w`, dequantized with `rows` and `cols` and finished into
    /// `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_block(
        self,
        a: &[i8],
        stride: usize,
        w: &[i8],
        panels: usize,
        rows: &Rows<'_>,
        cols: &Columns,
        out: OutBlock<'_>,
    ) {
        let ukernel =
            self.ukernel().unwrap_or_else(|| panic!("{} is not built for this CPU architecture", self.name()));
        assert!(self.supported(), "this CPU cannot run {}", self.name());
        ukernel(a, stride, w, panels, rows, cols, out)
    }

    /// Whether the kernel reads activations stored as `q + 128` (the unsigned operand of
    /// `vpdpbusd`) rather than signed `q`.
    pub fn wants_biased(self) -> bool {
        matches!(self, I8Kernel::AvxVnni | I8Kernel::Avx512Vnni)
    }
}

/// Activations quantized per row: `rows x stride` int8 (stride = K padded to whole groups,
/// zero-filled), standing for `scales[r] * q + offsets[r]`; stored as `q + 128` when `biased`
/// (see [`I8Kernel::wants_biased`]).
#[derive(Clone, Copy, Debug)]
pub struct QuantRows<'a> {
    /// The quantized rows.
    pub data: &'a [i8],
    /// Number of rows.
    pub rows: usize,
    /// Bytes per row.
    pub stride: usize,
    /// Scale per row.
    pub scales: &'a [f32],
    /// Offset per row.
    pub offsets: &'a [f32],
    /// Whether bytes hold `q + 128`.
    pub biased: bool,
}

/// Room for one layer's activations quantized per row, reused from layer to layer: the
/// layout a kernel wants (K padded to whole groups, `q + 128` for the `vpdpbusd` kernels) stays
/// inside, and the rows are quantized in parallel by the code that produces them, while each
/// is still in L1 (LayerNorm or GELU, then the quantization).
#[derive(Clone, Debug, Default)]
pub struct QuantBuffer {
    data: AlignedVec<i8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

/// One row's place in a [`QuantBuffer`]: the producer of the row quantizes it with one of the
/// methods, which return the [`Quantized`] token that [`QuantBuffer::quantize_rows`] asks for.
pub struct QuantRow<'a> {
    dst: &'a mut [i8],
    biased: bool,
}

/// The scale and offset of a row that [`QuantRow`] quantized.
pub struct Quantized(f32, f32);

impl QuantRow<'_> {
    /// Quantizes `src` ([`quantize_row`]).
    pub fn quantize(self, src: &[f32]) -> Quantized {
        let (scale, offset) = quantize_row(src, self.dst, self.biased);
        Quantized(scale, offset)
    }

    /// GELU of `src` in place, then quantized, in one row pass ([`gelu_quantize_row`]).
    pub fn gelu_quantize(self, src: &mut [f32]) -> Quantized {
        let (scale, offset) = gelu_quantize_row(src, self.dst, self.biased);
        Quantized(scale, offset)
    }
}

impl QuantBuffer {
    /// Room for up to `rows` rows of up to `k` inputs.
    pub fn new(rows: usize, k: usize) -> QuantBuffer {
        QuantBuffer { data: AlignedVec::zeroed(rows * padded_k(k)), scales: vec![0.0; rows], offsets: vec![0.0; rows] }
    }

    /// Quantizes one row per item of `items` (rows of `k` inputs) for `kernel`, in parallel
    /// tasks of at least `min_len` rows: `row(item, place)` produces the row and quantizes it
    /// into its place. Returns the rows, ready for [`i8_gemm`].
    pub fn quantize_rows<T: Send>(
        &mut self,
        kernel: I8Kernel,
        k: usize,
        items: impl IndexedParallelIterator<Item = T>,
        min_len: usize,
        row: impl Fn(T, QuantRow<'_>) -> Quantized + Sync + Send,
    ) -> QuantRows<'_> {
        let (rows, stride, biased) = (items.len(), padded_k(k), kernel.wants_biased());
        assert!(rows <= self.scales.len() && rows * stride <= self.data.len(), "QuantBuffer: room for fewer rows");
        let places = self.data[..rows * stride].par_chunks_exact_mut(stride);
        let params = self.scales[..rows].par_iter_mut().zip(self.offsets[..rows].par_iter_mut());
        items.zip(places).zip(params).with_min_len(min_len).for_each(|((item, dst), (s, z))| {
            let Quantized(scale, offset) = row(item, QuantRow { dst, biased });
            (*s, *z) = (scale, offset);
        });
        let (data, scales, offsets) = (&self.data[..rows * stride], &self.scales[..rows], &self.offsets[..rows]);
        QuantRows { data, rows, stride, scales, offsets, biased }
    }
}

/// A k4n16-packed int8 weight matrix (`n` output channels of `k` inputs) with its
/// per-channel scales and sums of quantized weights.
#[derive(Clone, Copy, Debug)]
pub struct PackedI8<'a> {
    /// The packed weights ([`super::pack::pack_k4n16`]).
    pub data: &'a [i8],
    /// Output channels.
    pub n: usize,
    /// Inputs per channel.
    pub k: usize,
    /// Scale per channel.
    pub scales: &'a [f32],
    /// Sum of the quantized weights per channel ([`super::pack::channel_sums`]).
    pub sums: &'a [i32],
}

/// `out` (`a.rows x ldo`, row-major) receives the `a.rows x w.n` result per `epilogue`.
#[allow(clippy::too_many_arguments)]
pub fn i8_gemm(
    kernel: I8Kernel,
    a: QuantRows<'_>,
    w: PackedI8<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (m, n, stride) = (a.rows, w.n, a.stride);
    assert_eq!(stride, padded_k(w.k), "i8_gemm: activation stride must be K padded to 4");
    assert_eq!(a.biased, kernel.wants_biased(), "i8_gemm: activations must be biased exactly when the kernel wants it");
    assert!(
        a.data.len() >= m * stride && a.scales.len() >= m && a.offsets.len() >= m,
        "i8_gemm: activations too short"
    );
    assert!(
        w.data.len() >= k4n16_len(n, w.k) && w.scales.len() >= n && w.sums.len() >= n,
        "i8_gemm: weights too short"
    );
    let ukernel =
        kernel.ukernel().unwrap_or_else(|| panic!("{} is not built for this CPU architecture", kernel.name()));
    assert!(kernel.supported(), "this CPU cannot run {}", kernel.name());
    let (mr, nr) = kernel.tile();
    let panel_len = stride * NR;
    assert!(bias.is_none_or(|b| b.len() >= n), "i8_gemm: bias too short");
    let columns = |col0: usize, cols: usize, c: &mut Columns| {
        c.set_int8(bias.map(|b| &b[col0..]), &w.scales[col0..], &w.sums[col0..], cols);
        // The next group's factors, while this group's tiles run: the weights stream through
        // L2, so these lines are cold by the time they are read, and each group's first read
        // waited for memory (1% of a ViT-Ti int8 inference on a Zen 4).
        let next = col0 + cols;
        for line in [next, next + 16] {
            crate::prefetch(w.scales.as_ptr().wrapping_add(line));
            crate::prefetch(w.sums.as_ptr().wrapping_add(line).cast());
            if let Some(b) = bias {
                crate::prefetch(b.as_ptr().wrapping_add(line));
            }
        }
    };
    let micro = |p0: usize, panels: usize, cols: &Columns, m0: usize, out: OutBlock<'_>| {
        let m1 = m0 + out.rows;
        let rows = Rows { scale: &a.scales[m0..m1], offset: &a.offsets[m0..m1] };
        let w = &w.data[p0 * panel_len..(p0 + panels) * panel_len];
        ukernel(&a.data[m0 * stride..m1 * stride], stride, w, panels, &rows, cols, out);
    };
    let problem = Problem { m, n, k: w.k, mr, np: nr / NR, weight_size: 1 };
    drive(problem, out, ldo, epilogue, threads, columns, micro);
}

/// Checks one microkernel call's operands (a strip of `out.rows` rows) and returns the number
/// of K groups.
#[allow(dead_code)] // used by the SIMD kernels of whichever architecture this is built for
fn check(a: &[i8], stride: usize, w: &[i8], panels: usize, max_panels: usize, out: &OutBlock<'_>) -> usize {
    assert!(a.len() >= out.rows * stride && stride.is_multiple_of(KG), "i8 gemm: activations too short");
    assert!(panels >= 1 && panels <= max_panels && w.len() >= panels * stride * NR, "i8 gemm: weights too short");
    assert!(out.cols <= panels * NR);
    stride / KG
}

/// The block walk of the ARM int8 kernels that have a whole-strip asm loop: a block that is a
/// full 16-column strip, stored or added, with `strip_fits` (K a whole number of the asm's
/// steps) goes to `strip` for its whole `MR`-row tiles; the other rows, and every other block
/// (a GELU epilogue, a partial panel), tile by tile through `body` (the int32 sums of one tile,
/// given its row pointers and how many of its rows are real) and `finish_i32`.
///
/// `strip(tiles, accumulate, out)` must compute the first `MR * tiles` rows of `out`.
#[cfg(target_arch = "aarch64")]
#[allow(clippy::too_many_arguments)]
fn run_strips<const MR: usize>(
    a: &[i8],
    stride: usize,
    rows: &Rows<'_>,
    cols: &Columns,
    mut out: OutBlock<'_>,
    strip_fits: bool,
    strip: impl FnOnce(usize, bool, &mut OutBlock<'_>),
    body: impl Fn([*const i8; MR], usize) -> [[std::arch::aarch64::int32x4_t; 4]; MR],
) {
    let accumulate = match out.epilogue {
        Epilogue::Store => Some(false),
        Epilogue::Accumulate => Some(true),
        Epilogue::Activate(_) => None,
    };
    let tiles = out.rows / MR;
    let done = match accumulate {
        Some(accumulate) if out.cols == NR && strip_fits && tiles > 0 => {
            strip(tiles, accumulate, &mut out);
            MR * tiles
        }
        _ => 0,
    };
    if done == out.rows {
        return;
    }
    let (rows, a) = (rows.at(done, out.rows - done), &a[done * stride..]);
    let mut rest = out.tile(done, out.rows - done);
    super::epilogue::neon::gelu_after_tiles(&mut rest, |rest| {
        for_each_tile::<MR, i8>(a, stride, rest, |rp, m0, mut tile| {
            super::epilogue::neon::finish_i32(&body(rp, tile.rows), &rows.at(m0, tile.rows), cols, &mut tile);
        })
    });
}

#[cfg(test)]
mod tests;
