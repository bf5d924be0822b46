//! x86_64 F16C + FMA, 6 rows x 16 channels, f32 arithmetic on f16 weights; 12 ymm accumulators.
//!
//! Rows of at most [`KC`] values (ViT-Ti's K = 192 layers): `vcvtph2ps` widens the panel to f32
//! once, into a buffer on the stack, and every 6-row tile of the strip runs the f32 kernel's
//! body on it, where two conversions per k-row of every tile took FMA-port slots beside its
//! 12 FMAs. Longer rows widen in registers, one k-row per step, as the AVX-512 kernel does
//! (see there why). Either way the FMAs are the same, in the same order: the same bits.

use std::arch::x86_64::*;

use super::{Columns, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::avx2::finish_f32;
use crate::gemm::f32::avx2_body;
use crate::gemm::{MR_MAX, NR_MAX};

/// The longest rows whose panel is widened once: KC k-rows of 16 are 16 KiB of f32.
const KC: usize = 256;

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"));
    check(a, lda, k, w, panels, 1, &out);
    // Written whole (every row of the tile) by each body call: no zeroing per tile.
    let mut acc = [0f32; MR_MAX * NR_MAX];
    if k > KC {
        for_each_tile::<6, f32>(a, lda, &mut out, |rp, _, mut tile| {
            // SAFETY: AVX2, FMA and F16C are present (checked above); `check` made sure that
            // every row holds k values and the panel k * 16 halves.
            unsafe {
                body(&rp, k, w.as_ptr(), &mut acc);
                finish_f32(&acc, cols, &mut tile);
            }
        });
        return;
    }
    // Not zeroed (16 KiB of stores per call): the k rows read are written first.
    let mut wide = std::mem::MaybeUninit::<[f32; KC * NR]>::uninit();
    let wide = wide.as_mut_ptr().cast::<f32>();
    // SAFETY: F16C is present; `wide` addresses KC >= k k-rows of 16 floats, and `check` made
    // sure that the panel holds k * 16 halves.
    unsafe { widen(&w[..k * NR], wide) };
    for_each_tile::<6, f32>(a, lda, &mut out, |rp, _, mut tile| {
        // SAFETY: AVX2 and FMA are present; every row holds k values (`check`), and `wide` the
        // panel's k k-rows.
        unsafe {
            avx2_body(&rp, k, wide, NR, &mut acc);
            finish_f32(&acc, cols, &mut tile);
        }
    });
}

/// Widens the `half.len() / 16` k-rows of a panel into `wide`.
///
/// # Safety
/// F16C is present; `wide` addresses `half.len()` writable floats.
#[target_feature(enable = "avx,f16c")]
unsafe fn widen(half: &[u16], wide: *mut f32) {
    for (i, h) in half.chunks_exact(NR).enumerate() {
        // SAFETY: 16 halves at h; the 16 floats at wide + 16 i are in the buffer (the caller's
        // promise).
        unsafe {
            let p = h.as_ptr() as *const __m128i;
            let f = wide.add(i * NR);
            _mm256_storeu_ps(f, _mm256_cvtph_ps(_mm_loadu_si128(p)));
            _mm256_storeu_ps(f.add(8), _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))));
        }
    }
}

/// One tile's sums with each k-row of the panel widened in registers, into `acc`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn body(rp: &[*const f32; 6], k: usize, panel: *const u16, acc: &mut [f32; MR_MAX * NR_MAX]) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for kk in 0..k {
        // SAFETY: kk < k, so the 16 halves at kk * 16 and a[r][kk] are in bounds (see `run`).
        unsafe {
            let p = panel.add(kk * NR) as *const __m128i;
            let (w0, w1) = (_mm256_cvtph_ps(_mm_loadu_si128(p)), _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))));
            for r in 0..6 {
                let x = _mm256_set1_ps(*rp[r].add(kk));
                lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);
            }
        }
    }
    for r in 0..6 {
        // SAFETY: acc holds MR_MAX rows of NR_MAX.
        unsafe {
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR_MAX), lo[r]);
            _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR_MAX + 8), hi[r]);
        }
    }
}
