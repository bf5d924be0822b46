//! The horizontal pass of PIL's 8-bit resampling for RGB rows: frame preparation's largest
//! step on a Pi (one 640x480 camera frame down to 224 wide reads about six input pixels per
//! output pixel).
//!
//! Each output pixel is `clip8(ROUND + sum of pixel * tap)` per channel over its run of input
//! pixels, with PIL's fixed-point taps (sum 1 << 22) in wrapping 32-bit integer arithmetic.
//! [`resample_rgb_row_scalar`] is the twin; the NEON and SSE4.1 kernels hold one pixel's three
//! channels in the lanes of one vector (the fourth lane is a neighbour's byte, computed and
//! dropped) and do the same integer operations, so all agree bit for bit.

/// PIL's fixed-point precision for 8-bit resampling: taps are in units of 1 / (1 << 22).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's rounding offset: half of the fixed-point unit.
pub const ROUND: i32 = 1 << (PRECISION_BITS - 1);

/// One direction's taps: `bounds[x]` is output pixel x's first input pixel and number of taps,
/// its taps are `taps[x * ksize..][..n]`.
#[derive(Clone, Copy, Debug)]
pub struct Taps<'a> {
    pub taps: &'a [i32],
    pub ksize: usize,
    pub bounds: &'a [(usize, usize)],
}

impl Taps<'_> {
    /// Panics unless every output pixel's taps and input pixels are in range for `in_size`
    /// input pixels: the kernels index without checks.
    fn check(&self, in_size: usize) {
        for (x, &(first, n)) in self.bounds.iter().enumerate() {
            assert!(n <= self.ksize && first + n <= in_size, "resample: pixel {x} reads past its input");
        }
        assert!(self.taps.len() >= self.bounds.len() * self.ksize, "resample: too few taps");
    }
}

/// The byte a fixed-point sum stands for: PIL accumulates in 32-bit integers (the taps of a
/// pixel sum to 1 << 22, so 255 x the largest tap sum stays far from overflow; wrapping keeps
/// its arithmetic should a filter ever reach it), then shifts and clamps.
pub fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Bytes a row must carry past its last pixel: the SIMD kernels load a pixel as 8 bytes (NEON)
/// or 4 (SSE4.1) and ignore the rest.
pub const SLACK: usize = 5;

/// Resamples one row of `(line.len() - SLACK) / 3` RGB pixels into `out` (3 bytes per output
/// pixel of `taps`) on the best kernel this CPU has.
pub fn resample_rgb_row(line: &[u8], taps: Taps, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("sse4.1") {
            return resample_rgb_row_sse41(line, taps, out);
        }
    }
    #[cfg(target_arch = "aarch64")]
    return resample_rgb_row_neon(line, taps, out);
    #[allow(unreachable_code)]
    resample_rgb_row_scalar(line, taps, out)
}

/// The lengths every kernel checks: returns the number of input pixels.
fn check_lengths(line: &[u8], taps: &Taps, out: &[u8]) -> usize {
    assert!(
        line.len() >= SLACK && (line.len() - SLACK).is_multiple_of(3),
        "resample: line must be whole pixels and SLACK bytes"
    );
    assert_eq!(out.len(), taps.bounds.len() * 3, "resample: output length");
    let in_size = (line.len() - SLACK) / 3;
    taps.check(in_size);
    in_size
}

/// The scalar twin.
pub fn resample_rgb_row_scalar(line: &[u8], taps: Taps, out: &mut [u8]) {
    check_lengths(line, &taps, out);
    for (x, px) in out.chunks_exact_mut(3).enumerate() {
        let (first, n) = taps.bounds[x];
        let mut acc = [ROUND; 3];
        for (p, &tap) in line[first * 3..(first + n) * 3].chunks_exact(3).zip(&taps.taps[x * taps.ksize..][..n]) {
            for c in 0..3 {
                acc[c] = acc[c].wrapping_add((p[c] as i32).wrapping_mul(tap));
            }
        }
        px.copy_from_slice(&acc.map(clip8));
    }
}

#[cfg(target_arch = "aarch64")]
pub use neon::resample_rgb_row_neon;

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use std::arch::aarch64::*;

    const SHIFT: i32 = PRECISION_BITS as i32;

    /// Two output pixels per step, one pixel per vector: 8 bytes loaded (the pixel's 3
    /// first), widened to 32 bits by one `tbl`, multiplied by the tap (two taps per load, by
    /// lane) and added. Each pixel's even and odd taps go into separate sums, so four
    /// independent multiply-add chains are in flight (wrapping integer sums: any order gives
    /// the same bits); `sshr` + `sqxtun` + `uqxtn` shift and clamp both pixels to bytes at once.
    pub fn resample_rgb_row_neon(line: &[u8], taps: Taps, out: &mut [u8]) {
        check_lengths(line, &taps, out);
        let (lp, op, width) = (line.as_ptr(), out.as_mut_ptr(), taps.bounds.len());
        let run = |x: usize| {
            let (first, n) = taps.bounds[x];
            (first, taps.taps[x * taps.ksize..][..n].as_ptr(), n)
        };
        for x in (0..width).step_by(2) {
            // SAFETY: NEON is baseline on aarch64. Input pixel first + t < in_size, so its 8
            // bytes end within the slack; t < n taps (checked above). A 4-byte store of
            // pixel x < width - 1 ends inside pixel x + 1, which is written after it.
            unsafe {
                let bytes = if x + 1 < width {
                    let [a, b] = sums([run(x), run(x + 1)], lp);
                    let words =
                        vcombine_u16(vqmovun_s32(vshrq_n_s32::<SHIFT>(a)), vqmovun_s32(vshrq_n_s32::<SHIFT>(b)));
                    vreinterpret_u32_u8(vqmovn_u16(words))
                } else {
                    let [a] = sums([run(x)], lp);
                    let words = vqmovun_s32(vshrq_n_s32::<SHIFT>(a));
                    vreinterpret_u32_u8(vqmovn_u16(vcombine_u16(words, words)))
                };
                for (k, px) in (x..width.min(x + 2)).enumerate() {
                    let v = if k == 0 { vget_lane_u32::<0>(bytes) } else { vget_lane_u32::<1>(bytes) };
                    if px + 1 < width {
                        (op.add(3 * px) as *mut u32).write_unaligned(v);
                    } else {
                        std::ptr::copy_nonoverlapping(v.to_le_bytes().as_ptr(), op.add(3 * px), 3);
                    }
                }
            }
        }
    }

    /// The fixed-point sums of `P` output pixels, each given as (first input pixel, taps, n).
    ///
    /// # Safety
    /// Each pixel's taps must address `n` values, and the 8 bytes from each of its input
    /// pixels `first..first + n` must be readable at `lp`.
    #[inline(always)]
    unsafe fn sums<const P: usize>(runs: [(usize, *const i32, usize); P], lp: *const u8) -> [int32x4_t; P] {
        // SAFETY: by the caller's contract.
        unsafe {
            // One `tbl` widens a pixel's bytes to 32-bit lanes (indices past the table give 0).
            let widen = vld1q_u8([0, 255, 255, 255, 1, 255, 255, 255, 2, 255, 255, 255, 3, 255, 255, 255].as_ptr());
            let pixel =
                |i: usize| vreinterpretq_s32_u8(vqtbl1q_u8(vcombine_u8(vld1_u8(lp.add(3 * i)), vdup_n_u8(0)), widen));
            let mut even = [vdupq_n_s32(ROUND); P];
            let mut odd = [vdupq_n_s32(0); P];
            let shared = runs.iter().map(|r| r.2).min().unwrap_or(0) / 2 * 2;
            for t in (0..shared).step_by(2) {
                for (k, &(first, tp, _)) in runs.iter().enumerate() {
                    let two = vld1_s32(tp.add(t));
                    even[k] = vmlaq_lane_s32::<0>(even[k], pixel(first + t), two);
                    odd[k] = vmlaq_lane_s32::<1>(odd[k], pixel(first + t + 1), two);
                }
            }
            for (k, &(first, tp, n)) in runs.iter().enumerate() {
                for t in shared..n {
                    even[k] = vmlaq_n_s32(even[k], pixel(first + t), *tp.add(t));
                }
            }
            std::array::from_fn(|k| vaddq_s32(even[k], odd[k]))
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::resample_rgb_row_sse41;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// One pixel per vector, as the NEON kernel (4 bytes loaded): `pmovzxbd`, `pmulld` and
    /// `paddd` into even and odd sums; `psrad` + `packssdw` + `packuswb` are the shift and the
    /// clamp to a byte.
    pub fn resample_rgb_row_sse41(line: &[u8], taps: Taps, out: &mut [u8]) {
        assert!(is_x86_feature_detected!("sse4.1"));
        check_lengths(line, &taps, out);
        // SAFETY: SSE4.1 is present (asserted above).
        unsafe { body(line, taps, out) }
    }

    #[target_feature(enable = "sse4.1")]
    fn body(line: &[u8], taps: Taps, out: &mut [u8]) {
        let (lp, op, width) = (line.as_ptr(), out.as_mut_ptr(), taps.bounds.len());
        for (x, &(first, n)) in taps.bounds.iter().enumerate() {
            let tp = taps.taps[x * taps.ksize..][..n].as_ptr();
            // SAFETY: input pixel first + t < in_size, so its 4 bytes end within the slack;
            // t < n taps (checked by the caller). The 4-byte store of pixel x < width - 1 ends
            // inside pixel x + 1, which is written after it.
            unsafe {
                let product = |t: usize| {
                    let p = _mm_cvtsi32_si128((lp.add(3 * (first + t)) as *const i32).read_unaligned());
                    _mm_mullo_epi32(_mm_cvtepu8_epi32(p), _mm_set1_epi32(*tp.add(t)))
                };
                let (mut even, mut odd) = (_mm_set1_epi32(ROUND), _mm_setzero_si128());
                for t in (0..n / 2 * 2).step_by(2) {
                    even = _mm_add_epi32(even, product(t));
                    odd = _mm_add_epi32(odd, product(t + 1));
                }
                if n % 2 == 1 {
                    even = _mm_add_epi32(even, product(n - 1));
                }
                let acc = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm_add_epi32(even, odd));
                let words = _mm_packs_epi32(acc, _mm_setzero_si128());
                let bytes = _mm_cvtsi128_si32(_mm_packus_epi16(words, words));
                if x + 1 < width {
                    (op.add(3 * x) as *mut i32).write_unaligned(bytes);
                } else {
                    std::ptr::copy_nonoverlapping(bytes.to_le_bytes().as_ptr(), op.add(3 * x), 3);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noise_bytes as bytes;

    type Kernel = (&'static str, fn(&[u8], Taps, &mut [u8]));

    fn kernels() -> Vec<Kernel> {
        let mut v: Vec<Kernel> = vec![("scalar", resample_rgb_row_scalar)];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("sse4.1") {
            v.push(("sse41", resample_rgb_row_sse41));
        }
        #[cfg(target_arch = "aarch64")]
        v.push(("neon", resample_rgb_row_neon));
        v
    }

    #[test]
    fn hand_worked_pixel() {
        // Two taps of one half each, and one tap past a half: rounding and clamping.
        let line = [10, 20, 30, 11, 21, 255, 0, 0, 0, 0, 0];
        let half = 1 << 21;
        let t = [half, half, 3 * half, 0];
        let taps = Taps { taps: &t, ksize: 2, bounds: &[(0, 2), (1, 1)] };
        for (name, kernel) in kernels() {
            let mut out = [0u8; 6];
            kernel(&line, taps, &mut out);
            // (10 + 11) / 2 = 10.5 rounds up; 255 * 1.5 clamps.
            assert_eq!(out, [11, 21, 143, 17, 32, 255], "{name}");
        }
    }

    #[test]
    fn every_kernel_matches_the_twin_bit_for_bit() {
        for (case, (in_size, out_size, ksize)) in
            [(1, 1, 1), (2, 1, 2), (7, 3, 4), (16, 5, 6), (33, 40, 3), (640, 224, 7), (100, 37, 13)]
                .into_iter()
                .enumerate()
        {
            let mut line = bytes(case as u64, in_size * 3 + SLACK);
            line[in_size * 3..].fill(0xAB);
            let raw = bytes(case as u64 + 100, out_size * ksize * 4);
            // Taps of both signs up to 1.5 (bicubic and Lanczos have negative lobes), and runs
            // that start anywhere, reach the last input pixel, or are empty.
            let t: Vec<i32> =
                raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2] & 0x7F, 0]) - (1 << 21)).collect();
            let b: Vec<(usize, usize)> = (0..out_size)
                .map(|x| {
                    let first = if x == out_size - 1 { in_size - 1 } else { (x * 7 + case) % in_size };
                    (first, (ksize - x % 2).min(in_size - first))
                })
                .collect();
            let taps = Taps { taps: &t, ksize, bounds: &b };
            let mut want = vec![0u8; out_size * 3];
            resample_rgb_row_scalar(&line, taps, &mut want);
            for (name, kernel) in kernels() {
                let mut got = vec![0u8; out_size * 3];
                kernel(&line, taps, &mut got);
                assert_eq!(got, want, "{name}: {in_size} -> {out_size}, {ksize} taps");
            }
        }
    }

    #[test]
    #[should_panic(expected = "reads past its input")]
    fn runs_past_the_line_are_refused() {
        let taps = Taps { taps: &[1, 1], ksize: 2, bounds: &[(1, 2)] };
        resample_rgb_row(&[0; 6 + SLACK], taps, &mut [0; 3]);
    }
}
