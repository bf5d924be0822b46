//! aarch64 NEON (Cortex-A72 and later), 4 rows x 16 channels, f32 arithmetic on f16 weights.
//!
//! `fcvtl`/`fcvtl2` widen a block of the panel ([`KC`] k-rows) to f32 once, into a buffer on
//! the stack, and every 4-row tile of the strip runs the f32 kernel's body on it: the f32
//! `fmla`s in the same order, so the same bits as widening in registers, without a vector
//! slot per four weights for every tile (which held the loop to 72% of the A72's peak). Inline
//! asm for the conversions: the half-precision intrinsics are not stable Rust. The tile is
//! finished in registers.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Columns, check, for_each_tile, OutBlock, NR};
use crate::gemm::epilogue::neon::{finish_f32, gelu_after_tiles};
use crate::gemm::f32::neon_body_from;

/// k-rows of a panel widened at a time: 16 KiB of f32, half a Cortex-A72's L1 data cache.
const KC: usize = 256;
/// Rows per pass over the k-blocks when k > [`KC`]: their partial sums (4 KiB) stay on the
/// stack between blocks, and each block is widened once per `MC` rows.
const MC: usize = 64;

pub(super) fn run(a: &[f32], lda: usize, k: usize, w: &[u16], panels: usize, cols: &Columns, mut out: OutBlock<'_>) {
    check(a, lda, k, w, panels, 1, &out);
    // SAFETY: NEON is baseline on aarch64.
    let zero = unsafe { [[vdupq_n_f32(0.0); 4]; 4] };
    // Not zeroed (16 KiB of stores per call): blocks are written before they are read.
    let mut wide = std::mem::MaybeUninit::<[f32; KC * NR]>::uninit();
    let wide = wide.as_mut_ptr().cast::<f32>();
    gelu_after_tiles(&mut out, |out| {
        // One block (k <= KC): every row in one pass, the panel widened once. Longer rows: MC
        // rows per pass, their partial sums kept in `sums` between blocks.
        let rows_per_pass = if k <= KC { out.rows } else { MC };
        let mut sums = [zero; MC / 4];
        for m0 in (0..out.rows).step_by(rows_per_pass) {
            let mut strip = out.tile(m0, rows_per_pass.min(out.rows - m0));
            for k0 in (0..k.max(1)).step_by(KC) {
                let kc = KC.min(k - k0);
                let last = k0 + kc == k;
                // SAFETY: `wide` addresses KC * 16 floats.
                unsafe { widen_block(&w[k0 * NR..(k0 + kc) * NR], wide) };
                for_each_tile::<4, f32>(&a[m0 * lda..], lda, &mut strip, |rp, t0, mut tile| {
                    // (Not last only when k > KC, where t0 < MC.)
                    let c = if k0 == 0 { zero } else { sums[t0 / 4] };
                    let rp = rp.map(|p| p.wrapping_add(k0));
                    // SAFETY: NEON is baseline on aarch64; `check` made sure that every row
                    // holds k values, and `wide` holds k-rows k0..k0 + kc of the panel.
                    let c = unsafe { neon_body_from(c, &rp, kc, wide, NR) };
                    if last {
                        finish_f32(&c, cols, &mut tile);
                    } else {
                        sums[t0 / 4] = c;
                    }
                });
            }
        }
    });
}

/// The 4 x 16 sums of one tile with f32 accumulation, the block at a time as in [`run`] (the
/// same bits): the half-precision kernel's fallback for a tile that overflows half.
///
/// # Safety
/// Each `rp[r]` must address k readable floats, and `panel` must hold k * 16 halves.
pub(super) unsafe fn body(rp: &[*const f32; 4], k: usize, panel: &[u16]) -> [[float32x4_t; 4]; 4] {
    let mut wide = std::mem::MaybeUninit::<[f32; KC * NR]>::uninit();
    let wide = wide.as_mut_ptr().cast::<f32>();
    // SAFETY: NEON is baseline on aarch64.
    let mut c = unsafe { [[vdupq_n_f32(0.0); 4]; 4] };
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let rp = rp.map(|p| p.wrapping_add(k0));
        // SAFETY: `wide` addresses KC * 16 floats; the rows and the block are in bounds by the
        // caller's promise.
        unsafe {
            widen_block(&panel[k0 * NR..(k0 + kc) * NR], wide);
            c = neon_body_from(c, &rp, kc, wide, NR);
        }
    }
    c
}

/// Widens the `half.len() / 16` (at most [`KC`]) k-rows of a panel into `wide`.
///
/// # Safety
/// `wide` must address `KC * 16` writable floats.
unsafe fn widen_block(half: &[u16], wide: *mut f32) {
    assert!(half.len().is_multiple_of(NR) && half.len() <= KC * NR);
    for (i, h) in half.chunks_exact(NR).enumerate() {
        // SAFETY: 16 halves at h; i < KC, so the 16 floats at wide + 16 i are in the buffer
        // (the caller's promise).
        unsafe {
            let [w0, w1, w2, w3] = widen(h.as_ptr());
            let f = wide.add(i * NR);
            vst1q_f32(f, w0);
            vst1q_f32(f.add(4), w1);
            vst1q_f32(f.add(8), w2);
            vst1q_f32(f.add(12), w3);
        }
    }
}

/// One k-row of a panel (16 halves at `p`) widened to four f32x4.
///
/// # Safety
/// `p` must address 16 readable halves.
#[inline(always)]
unsafe fn widen(p: *const u16) -> [float32x4_t; 4] {
    let (w0, w1, w2, w3): (float32x4_t, float32x4_t, float32x4_t, float32x4_t);
    // SAFETY: reads the 32 bytes at `p` (the caller's bound) and writes only the declared
    // registers.
    unsafe {
        asm!(
            "ldp {h0:q}, {h1:q}, [{p}]",
            "fcvtl {w0:v}.4s, {h0:v}.4h",
            "fcvtl2 {w1:v}.4s, {h0:v}.8h",
            "fcvtl {w2:v}.4s, {h1:v}.4h",
            "fcvtl2 {w3:v}.4s, {h1:v}.8h",
            p = in(reg) p,
            h0 = out(vreg) _,
            h1 = out(vreg) _,
            w0 = out(vreg) w0,
            w1 = out(vreg) w1,
            w2 = out(vreg) w2,
            w3 = out(vreg) w3,
            options(pure, readonly, nostack),
        );
    }
    [w0, w1, w2, w3]
}
