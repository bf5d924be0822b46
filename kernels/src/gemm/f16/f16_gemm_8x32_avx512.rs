//! x86_64 AVX-512F, 8 rows x 32 channels (two panels; one at a ragged right edge), f32
//! arithmetic on f16 weights.
//!
//! Rows of at most [`KC`] values (every layer of ViT-Ti and ViT-B but ViT-B's K = 3072 fc2):
//! `vcvtph2ps` widens the panels to f32 once, into a buffer on the stack, and every 8-row tile
//! of the strip runs the f32 kernel's body on it, where two conversions per k-row of every tile
//! took slots beside its 16 FMAs. On an AVX-512 Xeon that made ViT-Ti f16 (1 thread) 20.5 ->
//! 18.3 ms, where f32 takes 18.6. On a Zen 4 (512-bit operations as two 256-bit halves), widening
//! in registers held the K = 768 GEMMs at 0.87x the f32 kernel's speed; widened once they run at
//! 0.96-0.98x, and ViT-B f16 takes 4-5% less time. Longer rows widen in registers, one k-row per
//! step: on the Xeon that was faster than f32 at K = 3072 (half the bytes from L2), and widening
//! in blocks with the partial sums kept between blocks up to 20% slower. Either way the FMAs are
//! the same, in the same order: the same bits. The tile is finished in registers.

use std::arch::x86_64::*;

use super::{Columns, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::avx512::finish_f32;
use crate::gemm::f32::avx512_body;

/// The longest rows whose panels are widened once: ViT-B's hidden size. Two panels of KC k-rows
/// are 96 KiB of f32 on the stack (a rayon thread has 2 MiB), read from L2 by each tile as the
/// f32 kernel reads its weights (ViT-Ti's 192 k-rows, 24 KiB, stay in L1).
const KC: usize = 768;

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(is_x86_feature_detected!("avx512f"));
    check(a, lda, k, w, panels, 2, &out);
    if k > KC {
        return run_widening_each_step(a, lda, k, w, panels, cols, out);
    }
    // Not zeroed (up to 96 KiB of stores per call): the k rows read are written first. Each k-row
    // holds panel 0's 16 floats, then panel 1's.
    let mut wide = std::mem::MaybeUninit::<[f32; KC * 2 * NR]>::uninit();
    let wide = wide.as_mut_ptr().cast::<f32>();
    // SAFETY: AVX-512F is present; `wide` addresses KC >= k k-rows of 32 floats, and `check`
    // made sure that each panel holds k * 16 halves.
    unsafe { widen(w, k, panels, wide) };
    for_each_tile::<8, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX-512F is present; every row holds k values (`check`), and `wide` holds
        // the panels' k k-rows at stride 32.
        unsafe {
            let c = if panels == 2 {
                avx512_body::<2>(&rp, k, wide, wide.add(NR), 2 * NR)
            } else {
                avx512_body::<1>(&rp, k, wide, wide, 2 * NR)
            };
            finish_f32(&c.0, &c.1, cols, &mut tile);
        }
    });
}

/// Widens the `k` k-rows of the `panels` panels of `w` (`k * 16` halves each) into `wide`,
/// 32 floats a k-row: panel 0's 16, then panel 1's.
///
/// # Safety
/// AVX-512F is present; `wide` addresses `k * 32` writable floats.
#[target_feature(enable = "avx512f")]
unsafe fn widen(w: &[u16], k: usize, panels: usize, wide: *mut f32) {
    assert!(w.len() >= panels * k * NR);
    for p in 0..panels {
        for (i, h) in w[p * k * NR..(p + 1) * k * NR].chunks_exact(NR).enumerate() {
            // SAFETY: 16 halves at h; i < k, so the 16 floats at row i, panel p of `wide` are
            // in the buffer (the caller's promise).
            unsafe {
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i));
                _mm512_storeu_ps(wide.add(i * 2 * NR + p * NR), x);
            }
        }
    }
}

/// [`run`] for rows longer than [`KC`]: each tile widens the k-row of each panel it needs.
fn run_widening_each_step(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    for_each_tile::<8, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX-512F is present (checked in `run`); `check` made sure that every row holds
        // k values and each panel k * 16 halves.
        unsafe {
            let p1 = w.as_ptr().add((panels - 1) * k * NR);
            let c = if panels == 2 { body::<2>(&rp, k, w.as_ptr(), p1) } else { body::<1>(&rp, k, w.as_ptr(), p1) };
            finish_f32(&c.0, &c.1, cols, &mut tile);
        }
    });
}

#[target_feature(enable = "avx512f")]
unsafe fn body<const NP: usize>(
    rp: &[*const f32; 8],
    k: usize,
    p0: *const u16,
    p1: *const u16,
) -> ([__m512; 8], [__m512; 8]) {
    let mut c0 = [_mm512_setzero_ps(); 8];
    let mut c1 = [_mm512_setzero_ps(); 8];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 of each panel and a[r][kk] are in
        // bounds (see `run`).
        unsafe {
            let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(p0.add(kk * NR) as *const __m256i));
            let w1 = if NP == 2 { _mm512_cvtph_ps(_mm256_loadu_si256(p1.add(kk * NR) as *const __m256i)) } else { w0 };
            for r in 0..8 {
                let x = _mm512_set1_ps(*rp[r].add(kk));
                c0[r] = _mm512_fmadd_ps(x, w0, c0[r]);
                if NP == 2 {
                    c1[r] = _mm512_fmadd_ps(x, w1, c1[r]);
                }
            }
        }
    }
    (c0, c1)
}
