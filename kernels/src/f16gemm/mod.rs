//! Packed-weight GEMMs for f16 and f32 weights: `out[m, n] = sum_k a[m, k] * w[n, k] + bias[n]`, with `a` in f32, `w`
//! stored as IEEE half and widened to f32 in registers, and f32 accumulation throughout. The
//! result is stored, activated or added to `out` (the residual), as for the int8 GEMM.
//!
//! Weights are packed once by the tools ("k1n16"): column panels of 16 output channels; within
//! a panel, for each k, the 16 channels' values (32 bytes). N is padded to a multiple of 16
//! with zeros. One 16-value row is one `vcvtph2ps` to a zmm (AVX-512), two to ymm (F16C), or
//! four `fcvtl` to q registers (NEON).

use crate::i8gemm::{apply_epilogue, Epilogue};
use crate::tile::TileKernel;
use crate::{OutPtr, Threads};

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Output channels per packed panel.
pub const NR: usize = 16;
/// The most rows any microkernel computes at once.
pub const MR_MAX: usize = 8;

/// One microkernel call's results: up to [`MR_MAX`] rows of one or two panels, row `r` at
/// `r * panels * NR` (a single-panel kernel fills the first `MR_MAX * NR` values).
pub(crate) type Acc = [f32; MR_MAX * 2 * NR];

/// Where one microkernel call's `rows x cols` results go (row `r` at `dst + r * ldo`) and
/// what happens to them on the way. Kernels that finish a tile in registers (the AVX-512 ones:
/// bias, GELU and residual add without a trip through memory) write it themselves; the others
/// fill an [`Acc`] and the driver finishes it.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct OutBlock<'a> {
    /// The block's first element; the driver checked that all `rows x cols` are in bounds and
    /// that no other task writes them.
    pub(crate) dst: *mut f32,
    pub(crate) ldo: usize,
    pub(crate) cols: usize,
    /// The block's `cols` biases.
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) epilogue: Epilogue,
}

/// The first `MR_MAX * NR` values of `acc`: the tile a single-panel kernel fills.
fn single(acc: &mut Acc) -> &mut [f32; MR_MAX * NR] {
    acc.first_chunk_mut().expect("Acc holds two panels' tiles")
}

/// Elements (halves) of a packed `n x k` matrix.
pub fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * NR * k
}

/// Packs a row-major `[n, k]` f32 matrix as k1n16 halves (round to nearest even).
pub fn pack_k1n16(w: &[f32], n: usize, k: usize) -> Vec<u16> {
    assert_eq!(w.len(), n * k, "pack_k1n16: {n} x {k} needs {} values", n * k);
    let mut out = vec![0u16; packed_len(n, k)];
    for (row, wr) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        let (p, c) = (row / NR, row % NR);
        for (kk, &v) in wr.iter().enumerate() {
            out[(p * k + kk) * NR + c] = half::f16::from_f32(v).to_bits();
        }
    }
    out
}

/// A packed weight matrix.
#[derive(Clone, Copy, Debug)]
pub struct PackedF16<'a> {
    pub data: &'a [u16],
    pub n: usize,
    pub k: usize,
}

impl PackedF16<'_> {
    /// Weight `[row, kk]` widened to f32 (for tests and the scalar kernel).
    pub fn get(&self, row: usize, kk: usize) -> f32 {
        half::f16::from_bits(self.data[((row / NR) * self.k + kk) * NR + row % NR]).to_f32()
    }
}

/// The f16 microkernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum F16Kernel {
    Scalar,
    /// x86_64 F16C + FMA (AVX2): `vcvtph2ps` to two ymm per k, 6 rows x 16 channels.
    Avx2F16c,
    /// x86_64 AVX-512F: `vcvtph2ps` to one zmm per panel and k, 8 rows x 32 channels (two
    /// panels at once).
    Avx512,
    /// aarch64 NEON (Cortex-A72 and later): `fcvtl`/`fcvtl2` widening, `fmla` by lane, 4 rows x
    /// 16 channels. Accumulates in f32: no half-precision arithmetic.
    Neon,
    /// The twin of [`F16Kernel::NeonFp16`]: half-precision arithmetic emulated exactly. Slow;
    /// it exists to test that kernel and to measure its error on any machine.
    Fp16Scalar,
    /// aarch64 with FP16 arithmetic (Cortex-A76 and later, `fp16`): activations rounded to
    /// half, half-precision `fmla` (8 lanes) accumulating [`FP16_BLOCK`] steps of k at a time,
    /// each block's sums widened and added in f32. Bounding the half-precision chain to 16
    /// terms is what keeps its error small (see docs/quantization.md). A tile whose half
    /// arithmetic overflows (an activation or a 16-term sum beyond 65504) is computed again
    /// with f32 accumulation, so large activations cost speed, not correctness.
    NeonFp16,
}

/// Steps of k that [`F16Kernel::NeonFp16`] accumulates in half precision before widening.
pub const FP16_BLOCK: usize = 16;

impl F16Kernel {
    pub fn name(self) -> &'static str {
        match self {
            F16Kernel::Scalar => "f16_gemm_4x16_scalar",
            F16Kernel::Avx2F16c => "f16_gemm_6x16_avx2_f16c",
            F16Kernel::Avx512 => "f16_gemm_8x32_avx512",
            F16Kernel::Neon => "f16_gemm_4x16_neon_fcvtl",
            F16Kernel::Fp16Scalar => "f16_gemm_4x16_fp16_scalar",
            F16Kernel::NeonFp16 => "f16_gemm_4x16_neon_fp16",
        }
    }

    /// Every kernel this CPU can run: the f32-accumulating ones, best last, then the
    /// half-precision ones.
    pub fn available() -> Vec<F16Kernel> {
        let mut v = vec![F16Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                v.push(F16Kernel::Avx2F16c);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(F16Kernel::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            v.push(F16Kernel::Neon);
        }
        v.push(F16Kernel::Fp16Scalar);
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("fp16") {
            v.push(F16Kernel::NeonFp16);
        }
        v
    }

    /// The fastest kernel this CPU can run: half-precision arithmetic where the CPU has it.
    pub fn best() -> F16Kernel {
        let v = Self::available();
        if v.contains(&F16Kernel::NeonFp16) {
            return F16Kernel::NeonFp16;
        }
        v.into_iter().rfind(|k| !k.half_arithmetic()).expect("scalar is always available")
    }

    /// Whether the kernel multiplies and adds in half precision (else in f32).
    pub fn half_arithmetic(self) -> bool {
        matches!(self, F16Kernel::Fp16Scalar | F16Kernel::NeonFp16)
    }

    /// The scalar kernel this one matches bit for bit.
    pub fn twin(self) -> F16Kernel {
        if self.half_arithmetic() {
            F16Kernel::Fp16Scalar
        } else {
            F16Kernel::Scalar
        }
    }

    fn mr(self) -> usize {
        match self {
            F16Kernel::Avx512 => 8,
            F16Kernel::Avx2F16c => 6,
            _ => 4,
        }
    }

    /// Panels per call.
    fn panels(self) -> usize {
        match self {
            F16Kernel::Avx512 => 2,
            _ => 1,
        }
    }

    /// `acc[r * panels * NR + j * NR + c] = sum_k a[r, k] * panels[j][k, c]` for `rows` (<= mr)
    /// rows of `a` (row stride `lda`) and the first [`panels`](Self::panels) 16-channel panels;
    /// or, returning true, those results finished straight into `out`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        self,
        a: &[f32],
        lda: usize,
        rows: usize,
        k: usize,
        panels: [&[u16]; 2],
        acc: &mut Acc,
        out: OutBlock<'_>,
    ) -> bool {
        assert!(rows >= 1 && rows <= self.mr() && a.len() >= (rows - 1) * lda + k);
        assert!(panels.iter().all(|p| p.len() >= k * NR));
        #[cfg(not(target_arch = "x86_64"))]
        let _ = out;
        match self {
            F16Kernel::Scalar => scalar(a, lda, rows, k, panels[0], single(acc)),
            F16Kernel::Fp16Scalar => {
                scalar_fp16(a, lda, rows, k, panels[0], single(acc));
                if !acc[..rows * NR].iter().all(|v| v.is_finite()) {
                    scalar(a, lda, rows, k, panels[0], single(acc));
                }
            }
            #[cfg(target_arch = "aarch64")]
            F16Kernel::NeonFp16 => {
                arm::neon_fp16(a, lda, rows, k, panels[0], single(acc));
                if !acc[..rows * NR].iter().all(|v| v.is_finite()) {
                    arm::neon(a, lda, rows, k, panels[0], single(acc));
                }
            }
            #[cfg(target_arch = "x86_64")]
            F16Kernel::Avx2F16c => x86::avx2_f16c(a, lda, rows, k, panels[0], single(acc)),
            #[cfg(target_arch = "x86_64")]
            F16Kernel::Avx512 => {
                x86::avx512(a, lda, rows, k, panels, out);
                return true;
            }
            #[cfg(target_arch = "aarch64")]
            F16Kernel::Neon => arm::neon(a, lda, rows, k, panels[0], single(acc)),
            #[allow(unreachable_patterns)]
            other => panic!("{} cannot run on this CPU architecture", other.name()),
        }
        false
    }
}

/// The scalar twin: the same sums in the same order per output (k ascending).
fn scalar(a: &[f32], lda: usize, rows: usize, k: usize, panel: &[u16], acc: &mut [f32; MR_MAX * NR]) {
    for r in 0..rows {
        let mut sums = [0f32; NR];
        for kk in 0..k {
            let x = a[r * lda + kk];
            for (c, s) in sums.iter_mut().enumerate() {
                *s = x.mul_add(half::f16::from_bits(panel[kk * NR + c]).to_f32(), *s);
            }
        }
        acc[r * NR..(r + 1) * NR].copy_from_slice(&sums);
    }
}

/// The half-precision twin: each activation rounded to half (to nearest even); per output and
/// block of [`FP16_BLOCK`] k steps, a half-precision fused multiply-add chain from zero (each
/// step rounded once, to nearest even, as `fmla` does); each block's sum then added to an f32
/// total.
fn scalar_fp16(a: &[f32], lda: usize, rows: usize, k: usize, panel: &[u16], acc: &mut [f32; MR_MAX * NR]) {
    use half::f16;
    for r in 0..rows {
        let mut sums = [0f32; NR];
        for k0 in (0..k).step_by(FP16_BLOCK) {
            let mut block = [0f32; NR];
            for kk in k0..(k0 + FP16_BLOCK).min(k) {
                let x = f16::from_f32(a[r * lda + kk]).to_f32();
                for (c, h) in block.iter_mut().enumerate() {
                    *h = fma_half(x, f16::from_bits(panel[kk * NR + c]).to_f32(), *h);
                }
            }
            for (s, h) in sums.iter_mut().zip(block) {
                *s += h;
            }
        }
        acc[r * NR..(r + 1) * NR].copy_from_slice(&sums);
    }
}

/// `x * w + h` rounded once to half (to nearest even), for half-precision values given as f32.
/// The product is exact in f32 and the sum exact in f64; rounding that to f32 to odd (keep the
/// nearest-even result if odd, else step to the odd neighbour on the other side of the exact
/// value) keeps enough bits that rounding to half afterwards is exact rounding.
fn fma_half(x: f32, w: f32, h: f32) -> f32 {
    let exact = (x * w) as f64 + h as f64;
    let mut r = exact as f32;
    if r as f64 != exact && r.to_bits() & 1 == 0 {
        // Away from r towards `exact`: in magnitude up if |exact| > |r|, else down.
        let up = exact.abs() > (r as f64).abs();
        r = f32::from_bits(if up { r.to_bits() + 1 } else { r.to_bits() - 1 });
    }
    half::f16::from_f32(r).to_f32()
}

/// Adds the bias, then stores, activates or accumulates one row of results.
fn finish_row(acc: &[f32], bias: Option<&[f32]>, dst: &mut [f32], epilogue: Epilogue) {
    let mut v = [0f32; 2 * NR];
    let v = &mut v[..dst.len()];
    v.copy_from_slice(&acc[..dst.len()]);
    apply_epilogue(v, bias, dst, epilogue);
}

/// `out` (`m x ldo`, row-major) receives the `m x w.n` product of `a` (`m x w.k`, row stride
/// `lda`) and `w`, plus `bias`, per `epilogue`. Threads split the weight panels.
#[allow(clippy::too_many_arguments)]
pub fn f16_gemm(
    kernel: F16Kernel,
    a: &[f32],
    lda: usize,
    m: usize,
    w: PackedF16<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (n, k) = (w.n, w.k);
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k), "f16_gemm: activations too short");
    assert!(w.data.len() >= packed_len(n, k), "f16_gemm: weights too short");
    let panel = |p: usize| &w.data[p * k * NR..(p + 1) * k * NR];
    let micro = |p: [usize; 2], m0: usize, rows: usize, acc: &mut Acc, out: OutBlock<'_>| {
        kernel.run(&a[m0 * lda..], lda, rows, k, [panel(p[0]), panel(p[1])], acc, out)
    };
    drive(m, n, k, kernel.mr(), kernel.panels(), micro, bias, out, ldo, epilogue, threads);
}

/// An f32 `[n, k]` matrix packed k1n16: panels of 16 output channels, for each k the 16
/// channels' values. Each panel is a row-major `k x 16` matrix, so the f32 register tiles of
/// [`crate::tile`] read it directly.
#[derive(Clone, Copy, Debug)]
pub struct PackedF32<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub k: usize,
}

/// Packs a row-major `[n, k]` f32 matrix k1n16 (N padded to 16 with zeros).
pub fn pack_k1n16_f32(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(w.len(), n * k, "pack_k1n16_f32: {n} x {k} needs {} values", n * k);
    let mut out = vec![0f32; packed_len(n, k)];
    for (row, wr) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        let (p, c) = (row / NR, row % NR);
        for (kk, &v) in wr.iter().enumerate() {
            out[(p * k + kk) * NR + c] = v;
        }
    }
    out
}

/// The name of the f32 packed GEMM that [`f32_packed_gemm`] runs on `kernel`'s tiles.
pub fn f32_gemm_name(kernel: TileKernel) -> &'static str {
    match kernel {
        TileKernel::Avx512 => "f32_gemm_8x32_avx512",
        TileKernel::Avx2 => "f32_gemm_6x16_avx2",
        TileKernel::Neon => "f32_gemm_4x16_neon",
        TileKernel::Scalar => "f32_gemm_4x16_scalar",
    }
}

/// [`f16_gemm`] for f32 weights packed k1n16, on the f32 register tiles of [`crate::tile`],
/// except with AVX-512, which takes two panels per call (8 x 32, see `x86::avx512_f32`).
#[allow(clippy::too_many_arguments)]
pub fn f32_packed_gemm(
    kernel: TileKernel,
    a: &[f32],
    lda: usize,
    m: usize,
    w: PackedF32<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    let (n, k) = (w.n, w.k);
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k), "f32_packed_gemm: activations too short");
    assert!(w.data.len() >= packed_len(n, k), "f32_packed_gemm: weights too short");
    let panel = |p: usize| &w.data[p * k * NR..(p + 1) * k * NR];
    let wide = cfg!(target_arch = "x86_64") && kernel == TileKernel::Avx512;
    let micro = |p: [usize; 2], m0: usize, rows: usize, acc: &mut Acc, _out: OutBlock<'_>| {
        let a = &a[m0 * lda..];
        #[cfg(target_arch = "x86_64")]
        if wide {
            x86::avx512_f32(a, lda, rows, k, [panel(p[0]), panel(p[1])], _out);
            return true;
        }
        kernel.run(a, lda, rows, k, panel(p[0]), NR, NR, single(acc));
        false
    };
    drive(m, n, k, kernel.mr(), if wide { 2 } else { 1 }, micro, bias, out, ldo, epilogue, threads);
}

/// The shared driver: groups of `np` (1 or 2) panels split across threads, `mr` rows per
/// microkernel call, then the epilogue per row. `micro(panels, first_row, rows, acc, out)`
/// either fills `acc[r * np * NR + c]` and returns false, or finishes the block into `out`
/// itself and returns true; a last group short of panels names its last panel twice and only
/// the real columns are kept.
#[allow(clippy::too_many_arguments)]
fn drive(
    m: usize,
    n: usize,
    k: usize,
    mr: usize,
    np: usize,
    micro: impl Fn([usize; 2], usize, usize, &mut Acc, OutBlock<'_>) -> bool + Sync,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
) {
    assert!(bias.is_none_or(|b| b.len() >= n), "gemm: bias too short");
    assert!(ldo >= n && (m == 0 || out.len() >= (m - 1) * ldo + n), "gemm: output too small");
    if m == 0 || n == 0 {
        return;
    }
    assert!(np == 1 || np == 2);
    let panels = n.div_ceil(NR);
    let groups = panels.div_ceil(np);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let out_len = out.len();
    let run_groups = |range: std::ops::Range<usize>| {
        let mut acc = [0f32; MR_MAX * 2 * NR];
        for g in range {
            let p = [g * np, (g * np + np - 1).min(panels - 1)];
            let col0 = p[0] * NR;
            let cols = (np * NR).min(n - col0);
            let b = bias.map(|b| &b[col0..col0 + cols]);
            for m0 in (0..m).step_by(mr) {
                let rows = mr.min(m - m0);
                let start = m0 * ldo + col0;
                assert!(start + (rows - 1) * ldo + cols <= out_len);
                // In bounds (checked above); this task is the only writer of columns
                // col0..col0+cols, and `out` is exclusively borrowed for the call.
                let block = OutBlock { dst: out_ptr.get().wrapping_add(start), ldo, cols, bias: b, epilogue };
                if micro(p, m0, rows, &mut acc, block) {
                    continue;
                }
                for r in 0..rows {
                    // SAFETY: as for `block`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(block.dst.add(r * ldo), cols) };
                    finish_row(&acc[r * np * NR..r * np * NR + cols], b, dst, epilogue);
                }
            }
        }
    };
    let t = threads.get();
    if t <= 1 || m * n * k < (1 << 18) {
        run_groups(0..groups);
    } else {
        use rayon::prelude::*;
        let chunk = groups.div_ceil(t * 2).max(1);
        (0..groups.div_ceil(chunk)).into_par_iter().for_each(|i| run_groups(i * chunk..((i + 1) * chunk).min(groups)));
    }
}

#[cfg(test)]
mod tests;
