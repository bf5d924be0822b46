//! `softmax(row * scale)` (`scale > 0`): attention's normalisation.
//!
//! [`softmax_exp`] does the work in two passes over the row, which is in L1: the maximum `m`;
//! then `e = exp(x * scale - m * scale)` (one fused multiply-add for the argument) in place,
//! and its sum, whose reciprocal it returns. Attention multiplies its output rows by that
//! reciprocal (64 values per head) instead of normalising the 197 probabilities.
//!
//! [`softmax_exp_scalar`] is the twin: element i of the sum goes into lane i % 16, the 16
//! lanes are then added in order. The AVX-512 (one zmm), AVX2 (two ymm) and NEON (four q)
//! kernels keep those lanes and that order (a ragged tail through a zero-padded vector) and
//! use the same `exp` step for step, so all agree bit for bit.

use super::activation::exp_fast;
use super::max_lanes;

/// `softmax(row * scale)` in place on the best kernel this CPU has.
pub fn scaled_softmax(row: &mut [f32], scale: f32) {
    let inv = softmax_exp(row, scale);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `row = exp(row * scale - max(row) * scale)` in place on the best kernel this CPU has;
/// returns `1 / sum(row)`, the factor that normalises it.
pub fn softmax_exp(row: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if super::RowIsa::Avx512.allowed() {
            return softmax_avx512(row, scale);
        }
        if super::RowIsa::Avx2.allowed() {
            return softmax_avx2(row, scale);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return softmax_neon(row, scale);
    }
    softmax_exp_scalar(row, scale)
}

/// The scalar twin of [`softmax_exp`].
pub fn softmax_exp_scalar(row: &mut [f32], scale: f32) -> f32 {
    assert!(scale > 0.0, "softmax: scale must be positive");
    let shift = -(max_lanes(row) * scale);
    let mut lanes = [0f32; 16];
    for (i, x) in row.iter_mut().enumerate() {
        *x = exp_fast(x.mul_add(scale, shift));
        lanes[i % 16] += *x;
    }
    1.0 / lanes.iter().sum::<f32>()
}

/// [`softmax_exp`] of `inv.len()` rows of `len` values, row `r` at `block[r * stride..]`:
/// each row's exponentials in place and its `1 / sum` into `inv[r]`, the same bits as a call
/// per row. `stride` must be at least `len` rounded up to 16, and the slots between `len` and
/// that are scratch (left unspecified): the NEON kernel computes a row's last, partial chunk in
/// place, and adds up four rows' sums at once.
pub fn softmax_exp_rows(block: &mut [f32], stride: usize, len: usize, scale: f32, inv: &mut [f32]) {
    let (rows, slot) = (inv.len(), len.next_multiple_of(16));
    assert!(stride >= slot, "softmax_exp_rows: stride {stride} < {slot}");
    assert!(rows == 0 || block.len() >= (rows - 1) * stride + slot, "softmax_exp_rows: block too short");
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return softmax_rows_neon(block, stride, len, scale, inv);
    }
    for (r, f) in inv.iter_mut().enumerate() {
        *f = softmax_exp(&mut block[r * stride..][..len], scale);
    }
}

#[cfg(target_arch = "aarch64")]
pub use neon::{softmax_neon, softmax_rows_neon};

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::activation::{EXP_MAGIC, EXP_POLY, LN2};
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// Sixteen lanes as four q registers; the exponentials in an asm loop (`exp_chunks`),
    /// the tail through a zero-padded chunk.
    pub fn softmax_neon(row: &mut [f32], scale: f32) -> f32 {
        assert!(scale > 0.0, "softmax: scale must be positive");
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let exp = ExpConstants::new(scale, -(row_max(row) * scale));
        let p = row.as_mut_ptr();
        // SAFETY (every access below): NEON is baseline on aarch64, and each index is below
        // whole <= len, or in the 16-float `buf`.
        unsafe {
            let mut sum = [vdupq_n_f32(0.0); 4];
            if whole > 0 {
                // SAFETY: p addresses `whole` floats of the row.
                exp_chunks(p, whole / 16, &exp, &mut sum);
            }
            // The tail through a 16-float chunk.
            if whole < len {
                let mut buf = [0f32; 16];
                copy_short(p.add(whole), buf.as_mut_ptr(), len - whole);
                exp_tail(&mut buf, len - whole, &exp);
                add_tail(&mut sum, &buf, len - whole);
                copy_short(buf.as_ptr(), p.add(whole), len - whole);
            }
            let mut lanes = [0f32; 16];
            sum.iter().enumerate().for_each(|(j, s)| vst1q_f32(lanes.as_mut_ptr().add(4 * j), *s));
            1.0 / lanes.iter().sum::<f32>()
        }
    }

    /// [`super::softmax_exp_rows`] on NEON: [`softmax_neon`]'s steps per row, but the constants
    /// are made once, a row's last partial chunk is computed in place in its slot (no copies
    /// through a buffer), and the in-order sums of the 16 lanes run for four rows at once, one
    /// row per lane after a transpose, ending in one vector division: the same additions in the
    /// same order, without a chain of 15 dependent additions and a division per row.
    pub fn softmax_rows_neon(block: &mut [f32], stride: usize, len: usize, scale: f32, inv: &mut [f32]) {
        assert!(scale > 0.0, "softmax: scale must be positive");
        let (rows, whole, slot) = (inv.len(), len / 16 * 16, len.next_multiple_of(16));
        assert!(stride >= slot && (rows == 0 || block.len() >= (rows - 1) * stride + slot));
        // SAFETY: NEON is baseline on aarch64.
        let (zero, one) = unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(1.0)) };
        let mut exp = ExpConstants::new(scale, 0.0);
        for g in (0..rows).step_by(4) {
            let mut sums = [[one; 4]; 4];
            for (i, sum) in sums.iter_mut().enumerate().take(rows - g) {
                let row = &mut block[(g + i) * stride..][..slot];
                exp.set_shift(-(row_max(&row[..len]) * scale));
                let p = row.as_mut_ptr();
                *sum = [zero; 4];
                if whole > 0 {
                    // SAFETY: p addresses `whole` floats of the row.
                    unsafe { exp_chunks(p, whole / 16, &exp, sum) };
                }
                if whole < len {
                    let tail = len - whole;
                    let chunk: &mut [f32; 16] = (&mut row[whole..]).try_into().expect("the slot holds 16 floats");
                    exp_tail(chunk, tail, &exp);
                    add_tail(sum, chunk, tail);
                }
            }
            let mut four = [0f32; 4];
            // SAFETY: NEON is baseline; `four` holds 4 floats.
            unsafe { vst1q_f32(four.as_mut_ptr(), vdivq_f32(one, lane_sums(&sums))) };
            for (f, x) in inv[g..].iter_mut().zip(four) {
                *f = x;
            }
        }
    }

    /// The largest value of `row`: whole chunks of 16 in four vectors, the rest one by one.
    #[inline(always)]
    fn row_max(row: &[f32]) -> f32 {
        let whole = row.len() / 16 * 16;
        let p = row.as_ptr();
        // SAFETY: NEON is baseline on aarch64, and each index c + 4 j + 4 <= whole <= len.
        let m = unsafe {
            let mut mx = [vdupq_n_f32(f32::NEG_INFINITY); 4];
            for c in (0..whole).step_by(16) {
                for (j, m) in mx.iter_mut().enumerate() {
                    *m = vmaxq_f32(*m, vld1q_f32(p.add(c + 4 * j)));
                }
            }
            vmaxvq_f32(vmaxq_f32(vmaxq_f32(mx[0], mx[1]), vmaxq_f32(mx[2], mx[3])))
        };
        row[whole..].iter().copied().fold(m, f32::max)
    }

    /// Adds the first `tail` values of a 16-float chunk to the sums, lane `i` into lane `i`;
    /// lanes past the tail add +0.
    #[inline(always)]
    fn add_tail(sum: &mut [float32x4_t; 4], chunk: &[f32; 16], tail: usize) {
        // SAFETY: NEON is baseline on aarch64; the loads stay in `chunk`.
        unsafe {
            let tail = vdupq_n_u32(tail as u32);
            for (j, s) in sum.iter_mut().enumerate() {
                let lane = vaddq_u32(vld1q_u32([0, 1, 2, 3].as_ptr()), vdupq_n_u32(4 * j as u32));
                let e = vreinterpretq_u32_f32(vld1q_f32(chunk.as_ptr().add(4 * j)));
                *s = vaddq_f32(*s, vreinterpretq_f32_u32(vandq_u32(vcltq_u32(lane, tail), e)));
            }
        }
    }

    /// Row `r`'s 16 lanes (`s[r]`, four vectors) added in lane order, into lane `r`: each
    /// quarter of the four rows transposed (`trn1`/`trn2`), so that vector `j` holds lane `j` of
    /// every row, then `((l0 + l1) + l2) + ...`, the twin's order, on four rows at once.
    #[inline(always)]
    fn lane_sums(s: &[[float32x4_t; 4]; 4]) -> float32x4_t {
        // SAFETY: NEON is baseline on aarch64; the intrinsics below only touch registers.
        unsafe {
            let (f64s, f32s) = (vreinterpretq_f64_f32, vreinterpretq_f32_f64);
            let mut lanes = [vdupq_n_f32(0.0); 16];
            for q in 0..4 {
                let (t0, t1) = (vtrn1q_f32(s[0][q], s[1][q]), vtrn2q_f32(s[0][q], s[1][q]));
                let (t2, t3) = (vtrn1q_f32(s[2][q], s[3][q]), vtrn2q_f32(s[2][q], s[3][q]));
                lanes[4 * q] = f32s(vtrn1q_f64(f64s(t0), f64s(t2)));
                lanes[4 * q + 1] = f32s(vtrn1q_f64(f64s(t1), f64s(t3)));
                lanes[4 * q + 2] = f32s(vtrn2q_f64(f64s(t0), f64s(t2)));
                lanes[4 * q + 3] = f32s(vtrn2q_f64(f64s(t1), f64s(t3)));
            }
            lanes[2..].iter().fold(vaddq_f32(lanes[0], lanes[1]), |acc, &l| vaddq_f32(acc, l))
        }
    }

    /// Copies `n` (< 16) floats without a call to `memcpy` (which made the caller keep its
    /// sums on the stack): whole vectors, then single values.
    ///
    /// # Safety
    /// `src` must address `n` readable floats, `dst` `n` writable ones.
    #[inline(always)]
    unsafe fn copy_short(src: *const f32, dst: *mut f32, n: usize) {
        debug_assert!(n < 16);
        let whole = n / 4 * 4;
        // SAFETY: every index is below n. (Fixed trip counts with a test: loops up to n
        // become a call again.)
        unsafe {
            for i in [0, 4, 8] {
                if i < whole {
                    vst1q_f32(dst.add(i), vld1q_f32(src.add(i)));
                }
            }
            for i in whole..whole + 3 {
                if i < n {
                    *dst.add(i) = *src.add(i);
                }
            }
        }
    }

    /// What [`exp_chunks`] reads: the addends of its fused multiply-adds, loaded into the
    /// destination register when needed (a load instead of a register copy on the vector
    /// pipes), and the multipliers, used by lane.
    struct ExpConstants {
        /// shift, `EXP_MAGIC`; then `EXP_POLY[3]`, `[2]`, `[1]`, `[0]` and 1, each twice, for `ldp`
        /// (fewer instructions: the loop stays one block for qemu, see [`exp_chunks`]).
        addends: [[f32; 4]; 12],
        /// scale, log2 e, ln 2 (and an unused lane).
        by_lane: [f32; 4],
    }

    impl ExpConstants {
        fn new(scale: f32, shift: f32) -> Self {
            let (p, one) = (EXP_POLY, 1.0);
            let addends = [shift, EXP_MAGIC, p[3], p[3], p[2], p[2], p[1], p[1], p[0], p[0], one, one];
            Self { addends: addends.map(|c| [c; 4]), by_lane: [scale, std::f32::consts::LOG2_E, LN2, 0.0] }
        }

        /// The next row's shift (its `-max * scale`); the rest stays.
        fn set_shift(&mut self, shift: f32) {
            self.addends[0] = [shift; 4];
        }
    }

    /// The first half of `exp_fast` for the eight values at `[{p}, #$off]`: their argument
    /// `x scale + shift`, raised to -87 if below (it is never above 0: no upper clamp),
    /// reduced to `r = x - n ln 2` in `$r0`, `$r1`; `2^n` in `$s0`, `$s1`. v16, v17 are
    /// scratch.
    #[rustfmt::skip]
    macro_rules! reduce_half {
        ($r0:literal, $r1:literal, $s0:literal, $s1:literal, $off:literal) => { concat!(
            "ldp q", $r0, ", q", $r1, ", [{p}, #", $off, "]\n",
            "ldr q", $s0, ", [{c}]\n",
            "ldr q", $s1, ", [{c}]\n",
            "fmla v", $s0, ".4s, v", $r0, ".4s, v24.s[0]\n",
            "fmla v", $s1, ".4s, v", $r1, ".4s, v24.s[0]\n",
            "fmax v", $r0, ".4s, v", $s0, ".4s, v26.4s\n",
            "fmax v", $r1, ".4s, v", $s1, ".4s, v26.4s\n",
            "ldr q", $s0, ", [{c}, #16]\n",
            "ldr q", $s1, ", [{c}, #16]\n",
            "fmla v", $s0, ".4s, v", $r0, ".4s, v24.s[1]\n",
            "fmla v", $s1, ".4s, v", $r1, ".4s, v24.s[1]\n",
            "fsub v16.4s, v", $s0, ".4s, v23.4s\n",
            "fsub v17.4s, v", $s1, ".4s, v23.4s\n",
            "fmls v", $r0, ".4s, v16.4s, v24.s[2]\n",
            "fmls v", $r1, ".4s, v17.4s, v24.s[2]\n",
            "shl v", $s0, ".4s, v", $s0, ".4s, #23\n",
            "shl v", $s1, ".4s, v", $s1, ".4s, #23\n",
        )};
    }

    /// The second half for the eight values `reduce_half` left in `$r0`, `$r1` (r) and `$s0`,
    /// `$s1` (2^n): the polynomial, times 2^n, stored to `[{p}, #$off]` and added to the sums
    /// `$sum0`, `$sum1`. v18-v21 are scratch.
    #[rustfmt::skip]
    macro_rules! finish_half {
        ($r0:literal, $r1:literal, $s0:literal, $s1:literal, $sum0:literal, $sum1:literal, $off:literal) => { concat!(
            "ldp q18, q19, [{c}, #32]\n",
            "fmla v18.4s, v", $r0, ".4s, v25.4s\n",
            "fmla v19.4s, v", $r1, ".4s, v25.4s\n",
            "ldp q20, q21, [{c}, #64]\n",
            "fmla v20.4s, v18.4s, v", $r0, ".4s\n",
            "fmla v21.4s, v19.4s, v", $r1, ".4s\n",
            "ldp q18, q19, [{c}, #96]\n",
            "fmla v18.4s, v20.4s, v", $r0, ".4s\n",
            "fmla v19.4s, v21.4s, v", $r1, ".4s\n",
            "ldp q20, q21, [{c}, #128]\n",
            "fmla v20.4s, v18.4s, v", $r0, ".4s\n",
            "fmla v21.4s, v19.4s, v", $r1, ".4s\n",
            "ldp q18, q19, [{c}, #160]\n",
            "fmla v18.4s, v20.4s, v", $r0, ".4s\n",
            "fmla v19.4s, v21.4s, v", $r1, ".4s\n",
            "fmul v18.4s, v18.4s, v", $s0, ".4s\n",
            "fmul v19.4s, v19.4s, v", $s1, ".4s\n",
            "fadd v", $sum0, ".4s, v", $sum0, ".4s, v18.4s\n",
            "fadd v", $sum1, ".4s, v", $sum1, ".4s, v19.4s\n",
            "stp q18, q19, [{p}, #", $off, "]\n",
        )};
    }

    /// `exp(x scale + shift)` in place of the first `tail` (< 16) values of `buf`, eight at a
    /// time (the values past `tail` are left unspecified): the loop's two halves, once or twice.
    fn exp_tail(buf: &mut [f32; 16], tail: usize, k: &ExpConstants) {
        // SAFETY: the loads and stores stay in `buf` (the second half only when tail > 8) and
        // in `k`; only the declared registers are written.
        unsafe {
            asm!(
                reduce_half!(0, 1, 2, 3, 0),
                finish_half!(0, 1, 2, 3, 28, 29, 0),
                "cmp {tail}, #8",
                "b.ls 1f",
                reduce_half!(0, 1, 2, 3, 32),
                finish_half!(0, 1, 2, 3, 28, 29, 32),
                "1:",
                p = in(reg) buf.as_mut_ptr(),
                tail = in(reg) tail,
                c = in(reg) k.addends.as_ptr(),
                in("v23") vdupq_n_f32(EXP_MAGIC),
                in("v24") vld1q_f32(k.by_lane.as_ptr()),
                in("v25") vdupq_n_f32(EXP_POLY[4]),
                in("v26") vdupq_n_f32(-87.0),
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v28") _, out("v29") _,
                options(nostack),
            );
        }
    }

    /// `exp(x scale + shift)` of `chunks` (at least one) chunks of 16 floats at `p`, in
    /// place, each chunk's four vectors added to `sum`: `exp_fast`'s operations in its order,
    /// so bit for bit its results.
    ///
    /// Software-pipelined by half chunks: each step reduces the next eight values' arguments
    /// while it finishes the previous eight. One exponential is a chain of 13 dependent
    /// operations; four of them at a time filled the Cortex-A72's reorder buffer (115
    /// estimated cycles per 16 values, 71 with the pipelining; the Cortex-A76 56, then 35).
    /// The loop is kept to 85 instructions (74 since the upper clamp and the second step of
    /// `r` went) and starts on a 512-byte boundary: qemu ends a translation block after
    /// about 86 such instructions or at a 4 KB page, and the cycle estimate cannot overlap the
    /// two blocks of a split loop (docs/kernels.md).
    ///
    /// # Safety
    /// `p` must address `16 * chunks` writable floats.
    unsafe fn exp_chunks(p: *mut f32, chunks: usize, k: &ExpConstants, sum: &mut [float32x4_t; 4]) {
        debug_assert!(chunks >= 1);
        let [mut s0, mut s1, mut s2, mut s3] = *sum;
        // SAFETY: the loads and stores stay in the 16 * chunks floats at p and in `k`; only
        // the declared registers are written. Registers: v0-v3 (r and 2^n of a chunk's first
        // half), v4-v7 (its second half), v23-v26 constants, v28-v31 the sums.
        unsafe {
            asm!(
                reduce_half!(0, 1, 2, 3, 0),
                "subs {n}, {n}, #1",
                "b.eq 2f",
                "b 1f",
                ".p2align 9",
                "1:",
                reduce_half!(4, 5, 6, 7, 32),
                finish_half!(0, 1, 2, 3, 28, 29, 0),
                reduce_half!(0, 1, 2, 3, 64),
                finish_half!(4, 5, 6, 7, 30, 31, 32),
                "add {p}, {p}, #64",
                "subs {n}, {n}, #1",
                "b.ne 1b",
                "2:",
                reduce_half!(4, 5, 6, 7, 32),
                finish_half!(0, 1, 2, 3, 28, 29, 0),
                finish_half!(4, 5, 6, 7, 30, 31, 32),
                p = inout(reg) p => _,
                n = inout(reg) chunks => _,
                c = in(reg) k.addends.as_ptr(),
                in("v23") vdupq_n_f32(EXP_MAGIC),
                in("v24") vld1q_f32(k.by_lane.as_ptr()),
                in("v25") vdupq_n_f32(EXP_POLY[4]),
                in("v26") vdupq_n_f32(-87.0),
                inout("v28") s0, inout("v29") s1, inout("v30") s2, inout("v31") s3,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _,
                options(nostack),
            );
        }
        *sum = [s0, s1, s2, s3];
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{softmax_avx2, softmax_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::activation::{exp_f32x16, exp_f32x8};
    use std::arch::x86_64::*;

    /// Sixteen lanes as one zmm; the tail masked.
    pub fn softmax_avx512(row: &mut [f32], scale: f32) -> f32 {
        assert!(scale > 0.0, "softmax: scale must be positive");
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (asserted above).
        unsafe { avx512_body(row, scale) }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_body(row: &mut [f32], scale: f32) -> f32 {
        let len = row.len();
        let p = row.as_mut_ptr();
        let mask = |i: usize| if len - i >= 16 { u16::MAX } else { (1u16 << (len - i)) - 1 };
        // SAFETY (every load and store below): masked to the lanes i.. i + 16 that are < len.
        unsafe {
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..len).step_by(16) {
                mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, mask(i), p.add(i)));
            }
            let shift = -(_mm512_reduce_max_ps(mx) * scale);
            let (vs, vh) = (_mm512_set1_ps(scale), _mm512_set1_ps(shift));
            let mut sum = _mm512_setzero_ps();
            for i in (0..len).step_by(16) {
                let e = exp_f32x16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask(i), p.add(i)), vs, vh));
                _mm512_mask_storeu_ps(p.add(i), mask(i), e);
                sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(mask(i), e));
            }
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
            1.0 / lanes.iter().sum::<f32>()
        }
    }

    /// Sixteen lanes as two ymm: lanes 0..8 and 8..16 of each chunk; the tail through a
    /// zero-padded chunk.
    pub fn softmax_avx2(row: &mut [f32], scale: f32) -> f32 {
        assert!(scale > 0.0, "softmax: scale must be positive");
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (asserted above).
        unsafe { avx2_body(row, scale) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body(row: &mut [f32], scale: f32) -> f32 {
        let (len, whole) = (row.len(), row.len() / 16 * 16);
        let p = row.as_mut_ptr();
        // SAFETY (every load and store below): each index i + 16 <= whole <= len, or into the
        // 16-float `buf`.
        unsafe {
            let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
            for i in (0..whole).step_by(8) {
                mx = _mm256_max_ps(mx, _mm256_loadu_ps(p.add(i)));
            }
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), mx);
            let max = row[whole..].iter().chain(&l).copied().fold(f32::NEG_INFINITY, f32::max);
            let shift = -(max * scale);
            let (vs, vh) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut chunk = |p: *mut f32, lanes: usize| {
                let e0 = exp_f32x8(_mm256_fmadd_ps(_mm256_loadu_ps(p), vs, vh));
                let e1 = exp_f32x8(_mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), vs, vh));
                _mm256_storeu_ps(p, e0);
                _mm256_storeu_ps(p.add(8), e1);
                for k in lanes..16 {
                    *p.add(k) = 0.0;
                }
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(p));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(p.add(8)));
            };
            for i in (0..whole).step_by(16) {
                chunk(p.add(i), 16);
            }
            if whole < len {
                let mut buf = [0f32; 16];
                buf[..len - whole].copy_from_slice(&row[whole..]);
                chunk(buf.as_mut_ptr(), len - whole);
                row[whole..].copy_from_slice(&buf[..len - whole]);
            }
            let mut lanes = [0f32; 16];
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
            1.0 / lanes.iter().sum::<f32>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowIsa;
    use crate::testing::noise;

    #[test]
    fn hand_worked() {
        let mut x = [0.0f32, (2.0f32).ln(), 1000.0];
        scaled_softmax(&mut x, 1.0);
        assert!((x[2] - 1.0).abs() < 1e-6 && x[0] < 1e-30);
        let mut y = [0.0f32, (3.0f32).ln() * 2.0];
        scaled_softmax(&mut y, 0.5);
        assert!((y[0] - 0.25).abs() < 1e-6 && (y[1] - 0.75).abs() < 1e-6);
    }

    type Kernel = (RowIsa, fn(&mut [f32], f32) -> f32);

    fn kernels() -> Vec<Kernel> {
        let mut v: Vec<Kernel> = vec![(RowIsa::Scalar, softmax_exp_scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            if RowIsa::Avx2.supported() {
                v.push((RowIsa::Avx2, softmax_avx2));
            }
            if RowIsa::Avx512.supported() {
                v.push((RowIsa::Avx512, softmax_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push((RowIsa::Neon, softmax_neon));
        v
    }

    /// Rows at a stride, as attention's score tiles hold them: the same values and factors as
    /// the twin row by row, for every row count around the four-row groups, tails around 16,
    /// and scratch slots past each row holding NaN and infinities that must not leak in.
    #[test]
    fn rows_at_a_stride_match_the_twin_bit_for_bit() {
        for len in (1usize..40).chain([63, 64, 65, 197]) {
            for rows in [1, 2, 3, 4, 5, 8, 9] {
                for stride in [len.next_multiple_of(16), len.next_multiple_of(16) + 16] {
                    let mut block: Vec<f32> =
                        noise((len * 10 + rows) as u64, rows * stride).iter().map(|v| v * 30.0).collect();
                    for r in 0..rows {
                        for (i, v) in block[r * stride + len..(r + 1) * stride].iter_mut().enumerate() {
                            *v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30][i % 4];
                        }
                    }
                    let mut got = block.clone();
                    let mut got_inv = vec![0f32; rows];
                    softmax_exp_rows(&mut got, stride, len, 0.125, &mut got_inv);
                    for r in 0..rows {
                        let mut want = block[r * stride..][..len].to_vec();
                        let inv = softmax_exp_scalar(&mut want, 0.125);
                        let row = &got[r * stride..][..len];
                        assert!(
                            row.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "len {len} rows {rows} [{r}]"
                        );
                        assert_eq!(got_inv[r].to_bits(), inv.to_bits(), "len {len} rows {rows} [{r}]");
                    }
                }
            }
        }
    }

    #[test]
    fn every_simd_kernel_matches_the_scalar_twin_bit_for_bit_and_f64() {
        for len in (1..70).chain([197, 257, 577, 1000]) {
            let x: Vec<f32> = noise(len as u64 * 3, len).iter().map(|v| v * 30.0).collect();
            let mut want = x.clone();
            let inv = softmax_exp_scalar(&mut want, 0.125);
            for (isa, kernel) in kernels() {
                let mut got = x.clone();
                let got_inv = kernel(&mut got, 0.125);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} len {len}");
                assert_eq!(got_inv.to_bits(), inv.to_bits(), "{isa:?} len {len}");
            }
            want.iter_mut().for_each(|v| *v *= inv);
            let max = x.iter().map(|&v| v as f64 * 0.125).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = x.iter().map(|&v| (v as f64 * 0.125 - max).exp()).sum();
            for (i, &v) in want.iter().enumerate() {
                let exact = (x[i] as f64 * 0.125 - max).exp() / sum;
                assert!((v as f64 - exact).abs() < 1e-6, "len {len} [{i}]: {v} vs {exact}");
            }
        }
    }
}
