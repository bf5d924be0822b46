//! PIL's 8-bit resampling of RGB rows, both passes: frame preparation's largest step on a Pi
//! (one 640x480 camera frame down to 224 wide reads about six input pixels per output pixel,
//! then about five rows per output row).
//!
//! Each output value is `clip8(ROUND + sum of input * tap)` over its run of input pixels (the
//! horizontal pass, [`resample_rgb_row`]) or rows (the vertical pass, [`resample_rows`]), with
//! PIL's fixed-point taps (sum 1 << 22) in wrapping 32-bit integer arithmetic.
//! [`resample_rgb_row_scalar`] and [`resample_rows_scalar`] are the twins. The NEON horizontal
//! kernel holds one pixel's three channels in the lanes of one vector (the fourth lane is a
//! neighbour's byte, computed and dropped) and does the same integer operations; the AVX2 one
//! multiplies 16-bit halves of the taps (`vpmaddwd`) and adds them back, the same sums modulo
//! 2^32. The vertical kernels multiply 16 bytes of a row at a time. All agree bit for bit.

/// PIL's fixed-point precision for 8-bit resampling: taps are in units of 1 / (1 << 22).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's rounding offset: half of the fixed-point unit.
pub const ROUND: i32 = 1 << (PRECISION_BITS - 1);

/// One row's taps, checked once against the input width: output pixel `x` reads input pixels
/// `first..first + n` with taps `taps[x * ksize..][..n]`, where `(first, n) = bounds[x]`. On
/// x86 they are also laid out for the AVX2 kernel when made.
#[derive(Clone, Debug)]
pub struct Taps {
    taps: Vec<i32>,
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    in_size: usize,
    /// Per output pixel, `ksize / 2` rounded up entries of 16 words: for taps `2j` and
    /// `2j + 1`, their low halves (as signed words) four times, then their high halves four
    /// times (see the AVX2 kernel); a tap past `n` is 0.
    #[cfg(target_arch = "x86_64")]
    halves: Vec<[i16; 16]>,
    /// For the NEON kernel: every pixel's run widened to the longest (`window` taps, zeros
    /// around its own) and moved left where it would pass the end, as (first input pixel,
    /// `window` taps) per pixel, so that every pixel runs the same loop.
    #[cfg(target_arch = "aarch64")]
    window: usize,
    #[cfg(target_arch = "aarch64")]
    window_starts: Vec<usize>,
    #[cfg(target_arch = "aarch64")]
    window_taps: Vec<i32>,
}

impl Taps {
    /// Checks the taps for rows of `in_size` input pixels: panics unless every output pixel's
    /// taps and input pixels are in range (the kernels index without checks).
    pub fn new(taps: Vec<i32>, ksize: usize, bounds: Vec<(usize, usize)>, in_size: usize) -> Self {
        for (x, &(first, n)) in bounds.iter().enumerate() {
            assert!(n <= ksize && first + n <= in_size, "resample: pixel {x} reads past its input");
        }
        assert!(taps.len() >= bounds.len() * ksize, "resample: too few taps");
        #[cfg(target_arch = "x86_64")]
        let halves = x86::halves(&taps, ksize, &bounds);
        #[cfg(target_arch = "aarch64")]
        let (window, window_starts, window_taps) = neon::windows(&taps, ksize, &bounds, in_size);
        Taps {
            taps,
            ksize,
            bounds,
            in_size,
            #[cfg(target_arch = "x86_64")]
            halves,
            #[cfg(target_arch = "aarch64")]
            window,
            #[cfg(target_arch = "aarch64")]
            window_starts,
            #[cfg(target_arch = "aarch64")]
            window_taps,
        }
    }

    /// Output pixels.
    pub fn out_size(&self) -> usize {
        self.bounds.len()
    }

    /// Output pixel `x`'s first input pixel and its taps.
    pub fn pixel(&self, x: usize) -> (usize, &[i32]) {
        let (first, n) = self.bounds[x];
        (first, &self.taps[x * self.ksize..][..n])
    }
}

/// The byte a fixed-point sum stands for: PIL accumulates in 32-bit integers (the taps of a
/// pixel sum to 1 << 22, so 255 x the largest tap sum stays far from overflow; wrapping keeps
/// its arithmetic should a filter ever reach it), then shifts and clamps.
#[inline]
pub fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Bytes a row must carry past its last pixel: the SIMD kernels load 8 bytes from a pixel (NEON:
/// one pixel, AVX2: two) and ignore those past the run.
pub const SLACK: usize = 5;

/// Resamples one row of `(line.len() - SLACK) / 3` RGB pixels into `out` (3 bytes per output
/// pixel of `taps`) on the best kernel this CPU has.
pub fn resample_rgb_row(line: &[u8], taps: &Taps, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::avx2_allowed() {
            return resample_rgb_row_avx2(line, taps, out);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if crate::cpu::allows(crate::cpu::Tier::Base) {
        return resample_rgb_row_neon(line, taps, out);
    }
    resample_rgb_row_scalar(line, taps, out)
}

/// [`resample_rgb_row`] for two rows with the same taps; on x86 one kernel call does both,
/// sharing each pixel's work.
pub fn resample_rgb_row_pair(lines: [&[u8]; 2], taps: &Taps, out: [&mut [u8]; 2]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::avx2_allowed() {
            return resample_rgb_row_pair_avx2(lines, taps, out);
        }
    }
    let [a, b] = out;
    resample_rgb_row(lines[0], taps, a);
    resample_rgb_row(lines[1], taps, b);
}

/// This file's kernels by name, and whether this CPU can run each.
pub fn variants() -> Vec<(&'static str, bool)> {
    #[allow(unused_mut)]
    let mut v = vec![("resample_rgb_row_scalar", true), ("resample_rows_scalar", true)];
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2");
        v.extend([("resample_rgb_row_avx2", avx2), ("resample_rgb_row_pair_avx2", avx2), ("resample_rows_avx2", avx2)]);
    }
    #[cfg(target_arch = "aarch64")]
    v.extend([("resample_rgb_row_neon", true), ("resample_rows_neon", true)]);
    v
}

/// The lengths every kernel checks.
fn check_lengths(line: &[u8], taps: &Taps, out: &[u8]) {
    assert_eq!(line.len(), taps.in_size * 3 + SLACK, "resample: line must be the input pixels and SLACK bytes");
    assert_eq!(out.len(), taps.out_size() * 3, "resample: output length");
}

/// The scalar twin.
pub fn resample_rgb_row_scalar(line: &[u8], taps: &Taps, out: &mut [u8]) {
    check_lengths(line, taps, out);
    for (x, px) in out.chunks_exact_mut(3).enumerate() {
        let (first, taps) = taps.pixel(x);
        let mut acc = [ROUND; 3];
        for (p, &tap) in line[first * 3..].chunks_exact(3).zip(taps) {
            for c in 0..3 {
                acc[c] = acc[c].wrapping_add((p[c] as i32).wrapping_mul(tap));
            }
        }
        px.copy_from_slice(&acc.map(clip8));
    }
}

/// The vertical pass for one output row: byte `i` of `out` is
/// `clip8(ROUND + sum of taps[j] * src[j * stride + i])` over the `taps.len()` input rows that
/// start `stride` bytes apart in `src`; on the best kernel this CPU has.
pub fn resample_rows(src: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::avx2_allowed() {
            return resample_rows_avx2(src, stride, taps, out);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if crate::cpu::allows(crate::cpu::Tier::Base) {
        return resample_rows_neon(src, stride, taps, out);
    }
    resample_rows_scalar(src, stride, taps, out)
}

/// Panics unless every tap's row holds `out.len()` bytes: the kernels read without checks.
fn check_rows(src: &[u8], stride: usize, taps: &[i32], out: &[u8]) {
    if let Some(last) = taps.len().checked_sub(1) {
        let end = last.checked_mul(stride).and_then(|s| s.checked_add(out.len()));
        assert!(end.is_some_and(|e| e <= src.len()), "resample: rows past the source");
    }
}

/// The scalar twin of the vertical pass, from byte `first` on (the SIMD kernels' ragged end).
fn rows_from(first: usize, src: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate().skip(first) {
        let mut acc = ROUND;
        for (j, &tap) in taps.iter().enumerate() {
            acc = acc.wrapping_add((src[j * stride + i] as i32).wrapping_mul(tap));
        }
        *o = clip8(acc);
    }
}

/// The scalar twin of the vertical pass.
pub fn resample_rows_scalar(src: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) {
    check_rows(src, stride, taps, out);
    rows_from(0, src, stride, taps, out);
}

#[cfg(target_arch = "aarch64")]
pub use neon::resample_rgb_row_neon;
#[cfg(target_arch = "aarch64")]
pub use neon::resample_rows_neon;

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use std::arch::aarch64::*;

    const SHIFT: i32 = PRECISION_BITS as i32;

    /// [`Taps`]' windows: the longest run's length, and each pixel's start and taps.
    pub(super) fn windows(
        taps: &[i32],
        ksize: usize,
        bounds: &[(usize, usize)],
        in_size: usize,
    ) -> (usize, Vec<usize>, Vec<i32>) {
        let window = bounds.iter().map(|b| b.1).max().unwrap_or(0);
        let mut starts = Vec::with_capacity(bounds.len());
        let mut window_taps = vec![0; bounds.len() * window];
        for (x, &(first, n)) in bounds.iter().enumerate() {
            // window <= in_size: every run lies in the input.
            let start = first.min(in_size - window);
            window_taps[x * window + first - start..][..n].copy_from_slice(&taps[x * ksize..][..n]);
            starts.push(start);
        }
        (window, starts, window_taps)
    }

    /// Two output pixels per step, one pixel per vector: 8 bytes loaded (the pixel's 3
    /// first), widened to 32 bits by one `tbl`, multiplied by the tap (two taps per load, by
    /// lane) and added. Each pixel's even and odd taps go into separate sums, so four
    /// independent multiply-add chains are in flight (wrapping integer sums: any order gives
    /// the same bits, and the window's zero taps add nothing); `sshr` + `sqxtun` + `uqxtn`
    /// shift and clamp both pixels to bytes at once. Every pixel runs its whole window, so the
    /// loop is the same for all.
    pub fn resample_rgb_row_neon(line: &[u8], taps: &Taps, out: &mut [u8]) {
        check_lengths(line, taps, out);
        let (lp, op, width) = (line.as_ptr(), out.as_mut_ptr(), taps.out_size());
        let Some(last) = width.checked_sub(1) else { return };
        let pair = |x: usize, y: usize| pair_bytes(taps, lp, x, y);
        let mut x = 0;
        while x + 2 < width {
            let bytes = pair(x, x + 1);
            // SAFETY: 4-byte stores at pixels x and x + 1 < width - 1 end inside the next
            // pixel, which is written after them.
            unsafe {
                (op.add(3 * x) as *mut u32).write_unaligned(bytes[0]);
                (op.add(3 * x + 3) as *mut u32).write_unaligned(bytes[1]);
            }
            x += 2;
        }
        // The last one or two pixels, three bytes each.
        let bytes = pair(x, last);
        out[3 * x..][..3].copy_from_slice(&bytes[0].to_le_bytes()[..3]);
        if x < last {
            out[3 * last..].copy_from_slice(&bytes[1].to_le_bytes()[..3]);
        }
    }

    /// The vertical pass, 16 bytes per step: each row's bytes widened to four vectors of
    /// 32-bit lanes and multiply-added by its tap (`mla` by element); `sshr` + `sqxtun` +
    /// `uqxtn` shift and clamp. The last `out.len() % 16` bytes go through the twin.
    pub fn resample_rows_neon(src: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) {
        check_rows(src, stride, taps, out);
        let steps = out.len() / 16;
        for s in 0..steps {
            // SAFETY: NEON is baseline on aarch64. Step s reads bytes 16s..16s + 16 of each
            // tap's row, within src (checked above), and writes out[16s..16s + 16].
            unsafe {
                let mut acc = [vdupq_n_s32(ROUND); 4];
                for (j, &tap) in taps.iter().enumerate() {
                    let bytes = vld1q_u8(src.as_ptr().add(j * stride + 16 * s));
                    let words = [vmovl_u8(vget_low_u8(bytes)), vmovl_u8(vget_high_u8(bytes))];
                    for (k, a) in acc.iter_mut().enumerate() {
                        let half = if k % 2 == 0 { vget_low_u16(words[k / 2]) } else { vget_high_u16(words[k / 2]) };
                        *a = vmlaq_n_s32(*a, vreinterpretq_s32_u32(vmovl_u16(half)), tap);
                    }
                }
                let words = acc.map(|a| vqmovun_s32(vshrq_n_s32::<SHIFT>(a)));
                let bytes = vcombine_u8(
                    vqmovn_u16(vcombine_u16(words[0], words[1])),
                    vqmovn_u16(vcombine_u16(words[2], words[3])),
                );
                vst1q_u8(out.as_mut_ptr().add(16 * s), bytes);
            }
        }
        rows_from(16 * steps, src, stride, taps, out);
    }

    /// Output pixels x and y (x again for one pixel), 4 bytes each, the low 3 its own.
    #[inline(always)]
    fn pair_bytes(taps: &Taps, lp: *const u8, x: usize, y: usize) -> [u32; 2] {
        let window = taps.window;
        let run = |x: usize| (taps.window_starts[x], &taps.window_taps[x * window..][..window]);
        // SAFETY: NEON is baseline on aarch64. The window's input pixels end at
        // start + window <= in_size, so their 8-byte loads end within the line's slack (its
        // length checked by the caller).
        unsafe {
            let [a, b] = sums([run(x), run(y)], lp);
            let words = vcombine_u16(vqmovun_s32(vshrq_n_s32::<SHIFT>(a)), vqmovun_s32(vshrq_n_s32::<SHIFT>(b)));
            let bytes = vreinterpret_u32_u8(vqmovn_u16(words));
            [vget_lane_u32::<0>(bytes), vget_lane_u32::<1>(bytes)]
        }
    }

    /// The fixed-point sums of two output pixels, each given as (first input pixel, taps).
    ///
    /// # Safety
    /// The two runs must have the same length, and the 8 bytes from each of their input
    /// pixels must be readable at `lp`.
    #[inline(always)]
    unsafe fn sums(runs: [(usize, &[i32]); 2], lp: *const u8) -> [int32x4_t; 2] {
        // SAFETY: by the caller's contract.
        unsafe {
            // One `tbl` widens a pixel's bytes to 32-bit lanes (indices past the table give 0).
            let widen = vld1q_u8([0, 255, 255, 255, 1, 255, 255, 255, 2, 255, 255, 255, 3, 255, 255, 255].as_ptr());
            let pixel =
                |i: usize| vreinterpretq_s32_u8(vqtbl1q_u8(vcombine_u8(vld1_u8(lp.add(3 * i)), vdup_n_u8(0)), widen));
            let mut even = [vdupq_n_s32(ROUND); 2];
            let mut odd = [vdupq_n_s32(0); 2];
            let n = runs[0].1.len();
            for t in (0..n / 2 * 2).step_by(2) {
                for (k, &(first, taps)) in runs.iter().enumerate() {
                    let two = vld1_s32(taps.as_ptr().add(t));
                    even[k] = vmlaq_lane_s32::<0>(even[k], pixel(first + t), two);
                    odd[k] = vmlaq_lane_s32::<1>(odd[k], pixel(first + t + 1), two);
                }
            }
            if n % 2 == 1 {
                for (k, &(first, taps)) in runs.iter().enumerate() {
                    even[k] = vmlaq_n_s32(even[k], pixel(first + n - 1), taps[n - 1]);
                }
            }
            std::array::from_fn(|k| vaddq_s32(even[k], odd[k]))
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{resample_rgb_row_avx2, resample_rgb_row_pair_avx2, resample_rows_avx2};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// The AVX2 layout of the taps (`Taps`' `halves`): each tap as `high << 16 + low` with both halves signed words, so
    /// that `vpmaddwd` can take them (the sums are the same integers modulo 2^32).
    pub(super) fn halves(taps: &[i32], ksize: usize, bounds: &[(usize, usize)]) -> Vec<[i16; 16]> {
        let pairs = ksize.div_ceil(2);
        let mut out = vec![[0i16; 16]; bounds.len() * pairs];
        for (x, &(_, n)) in bounds.iter().enumerate() {
            for (j, entry) in out[x * pairs..][..pairs].iter_mut().enumerate() {
                for (k, t) in [2 * j, 2 * j + 1].into_iter().enumerate() {
                    let tap = if t < n { taps[x * ksize + t] } else { 0 };
                    let low = tap as i16;
                    let high = (tap.wrapping_sub(low as i32) >> 16) as i16;
                    for i in 0..4 {
                        (entry[2 * i + k], entry[8 + 2 * i + k]) = (low, high);
                    }
                }
            }
        }
        out
    }

    /// One output pixel per step, two taps per `vpmaddwd`: the 8 bytes from input pixel
    /// `first + 2j` (pixels `2j` and `2j + 1` of the run) go to both 128-bit lanes, `vpshufb`
    /// makes them the words `R R G G B B 0 0`, and one `vpmaddwd` against [`Taps`]' halves
    /// gives both taps' products of each channel, with the low halves in lane 0 and the high
    /// halves in lane 1. The pixel is `lane 0 + lane 1 << 16` (plus the rounding half),
    /// shifted and clamped by `psrad` + `packssdw` + `packuswb`.
    pub fn resample_rgb_row_avx2(line: &[u8], taps: &Taps, out: &mut [u8]) {
        assert!(is_x86_feature_detected!("avx2"));
        check_lengths(line, taps, out);
        // SAFETY: AVX2 is present (asserted above).
        unsafe { body([line], taps, [out]) }
    }

    /// [`resample_rgb_row_avx2`] for two rows at once: each pixel's bounds, taps and final
    /// shift and clamp serve both.
    pub fn resample_rgb_row_pair_avx2(lines: [&[u8]; 2], taps: &Taps, out: [&mut [u8]; 2]) {
        assert!(is_x86_feature_detected!("avx2"));
        check_lengths(lines[0], taps, out[0]);
        check_lengths(lines[1], taps, out[1]);
        // SAFETY: AVX2 is present (asserted above).
        unsafe { body(lines, taps, out) }
    }

    /// `ROWS` (1 or 2) rows, whose lengths the caller checked.
    #[target_feature(enable = "avx2")]
    fn body<const ROWS: usize>(lines: [&[u8]; ROWS], taps: &Taps, mut out: [&mut [u8]; ROWS]) {
        let width = taps.out_size();
        let pairs = taps.ksize.div_ceil(2);
        debug_assert_eq!(taps.halves.len(), width * pairs);
        const Z: i8 = -128;
        let words = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, Z, 3, Z, 1, Z, 4, Z, 2, Z, 5, Z, Z, Z, Z, Z));
        let start = _mm256_setr_epi32(ROUND, ROUND, ROUND, 0, 0, 0, 0, 0);
        // Output pixel x's bytes in the low 3 of 4, per row (the second repeats the first
        // for one row).
        let pixel = |x: usize| {
            let (first, n) = taps.bounds[x];
            // SAFETY: the 8-byte load at input pixel first + 2j, 2j < n, ends at byte
            // 3 (first + n - 1) + 8 <= 3 in_size + 5, within each line's slack (checked by
            // the caller); the halves hold `pairs` >= n / 2 rounded up entries per pixel.
            unsafe {
                let halves = taps.halves.as_ptr().add(x * pairs);
                let mut acc = [start; ROWS];
                for j in 0..n.div_ceil(2) {
                    let h = _mm256_loadu_si256(halves.add(j).cast());
                    for (acc, line) in acc.iter_mut().zip(&lines) {
                        let at = line.as_ptr().add(3 * (first + 2 * j));
                        let px = _mm256_broadcastq_epi64(_mm_loadl_epi64(at.cast()));
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_shuffle_epi8(px, words), h));
                    }
                }
                // The low halves' sums of both rows in one vector, the high halves' in another.
                let (a, b) = (acc[0], acc[ROWS - 1]);
                let low = _mm256_permute2x128_si256::<0x20>(a, b);
                let high = _mm256_permute2x128_si256::<0x31>(a, b);
                let sum = _mm256_add_epi32(low, _mm256_slli_epi32::<16>(high));
                let shifted = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(sum);
                let words = _mm256_packs_epi32(shifted, shifted);
                let bytes = _mm256_packus_epi16(words, words);
                [_mm256_cvtsi256_si32(bytes), _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes))]
            }
        };
        let Some(last) = width.checked_sub(1) else { return };
        for x in 0..last {
            let bytes = pixel(x);
            for (out, bytes) in out.iter_mut().zip(bytes) {
                // SAFETY: a 4-byte store at pixel x < width - 1 ends inside pixel x + 1, which
                // is written after it.
                unsafe { (out.as_mut_ptr().add(3 * x) as *mut i32).write_unaligned(bytes) };
            }
        }
        let bytes = pixel(last);
        for (out, bytes) in out.iter_mut().zip(bytes) {
            out[3 * last..].copy_from_slice(&bytes.to_le_bytes()[..3]);
        }
    }

    /// The vertical pass, 16 bytes per step: each row's bytes widened to two vectors of
    /// 32-bit lanes (`vpmovzxbd`) and multiply-added by its tap (`vpmulld`); `vpsrad` +
    /// `vpackssdw` + `vpackuswb` shift and clamp. The last `out.len() % 16` bytes go through
    /// the twin.
    pub fn resample_rows_avx2(src: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) {
        assert!(is_x86_feature_detected!("avx2"));
        check_rows(src, stride, taps, out);
        // SAFETY: AVX2 is present (asserted above).
        let done = unsafe { rows_body(src, stride, taps, out) };
        rows_from(done, src, stride, taps, out);
    }

    #[target_feature(enable = "avx2")]
    fn rows_body(src: &[u8], stride: usize, taps: &[i32], out: &mut [u8]) -> usize {
        let steps = out.len() / 16;
        for s in 0..steps {
            // SAFETY: step s reads bytes 16s..16s + 16 of each tap's row, within src (checked
            // by the caller), and writes out[16s..16s + 16].
            unsafe {
                let (mut low, mut high) = (_mm256_set1_epi32(ROUND), _mm256_set1_epi32(ROUND));
                for (j, &tap) in taps.iter().enumerate() {
                    let bytes = _mm_loadu_si128(src.as_ptr().add(j * stride + 16 * s).cast());
                    let tap = _mm256_set1_epi32(tap);
                    low = _mm256_add_epi32(low, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(bytes), tap));
                    high = _mm256_add_epi32(
                        high,
                        _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(bytes, bytes)), tap),
                    );
                }
                let shift = |a: __m256i| _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(a);
                // packssdw works per 128-bit lane: put the quarters back in order.
                let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(shift(low), shift(high)));
                let bytes = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256::<1>(words));
                _mm_storeu_si128(out.as_mut_ptr().add(16 * s).cast(), bytes);
            }
        }
        16 * steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noise_bytes as bytes;

    type Kernel = (&'static str, fn(&[u8], &Taps, &mut [u8]));

    fn kernels() -> Vec<Kernel> {
        let mut v: Vec<Kernel> = vec![("scalar", resample_rgb_row_scalar)];
        #[cfg(target_arch = "x86_64")]
        if crate::testing::runs_here("resample_rgb_row_avx2", is_x86_feature_detected!("avx2")) {
            v.push(("avx2", resample_rgb_row_avx2));
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
        let taps = Taps::new(vec![half, half, 3 * half, 0], 2, vec![(0, 2), (1, 1)], 2);
        for (name, kernel) in kernels() {
            let mut out = [0u8; 6];
            kernel(&line, &taps, &mut out);
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
            let taps = Taps::new(t, ksize, b, in_size);
            let mut want = vec![0u8; out_size * 3];
            resample_rgb_row_scalar(&line, &taps, &mut want);
            for (name, kernel) in kernels() {
                let mut got = vec![0u8; out_size * 3];
                kernel(&line, &taps, &mut got);
                assert_eq!(got, want, "{name}: {in_size} -> {out_size}, {ksize} taps");
            }
        }
    }

    #[test]
    fn row_pairs_match_the_twin_bit_for_bit() {
        for (in_size, out_size, ksize) in [(1, 1, 1), (16, 5, 6), (640, 224, 7), (100, 37, 13)] {
            let lines: Vec<Vec<u8>> = (0..2).map(|r| bytes(r + in_size as u64, in_size * 3 + SLACK)).collect();
            let raw = bytes(7, out_size * ksize * 4);
            let t: Vec<i32> =
                raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2] & 0x7F, 0]) - (1 << 21)).collect();
            let b: Vec<(usize, usize)> =
                (0..out_size).map(|x| ((x * 3) % in_size, (ksize - x % 2).min(in_size - (x * 3) % in_size))).collect();
            let taps = Taps::new(t, ksize, b, in_size);
            let want: Vec<Vec<u8>> = lines
                .iter()
                .map(|l| {
                    let mut o = vec![0u8; out_size * 3];
                    resample_rgb_row_scalar(l, &taps, &mut o);
                    o
                })
                .collect();
            let (mut a, mut c) = (vec![0u8; out_size * 3], vec![0u8; out_size * 3]);
            resample_rgb_row_pair([&lines[0], &lines[1]], &taps, [&mut a, &mut c]);
            assert_eq!([a, c], [want[0].clone(), want[1].clone()], "{in_size} -> {out_size}");
        }
    }

    type RowsKernel = (&'static str, fn(&[u8], usize, &[i32], &mut [u8]));

    fn rows_kernels() -> Vec<RowsKernel> {
        let mut v: Vec<RowsKernel> = vec![("scalar", resample_rows_scalar)];
        #[cfg(target_arch = "x86_64")]
        if crate::testing::runs_here("resample_rows_avx2", is_x86_feature_detected!("avx2")) {
            v.push(("avx2", resample_rows_avx2));
        }
        #[cfg(target_arch = "aarch64")]
        v.push(("neon", resample_rows_neon));
        v
    }

    #[test]
    fn hand_worked_column() {
        // Taps of a quarter and three quarters: 0.25 * 10 + 0.75 * 11 = 10.75 -> 11, and
        // 0.25 * 200 + 0.75 * 255 = 241.25 -> 241; a negative lobe clamps at 0.
        let quarter = 1 << 20;
        let src = [10, 200, 0, 11, 255, 255];
        for (name, kernel) in rows_kernels() {
            let mut out = [0u8; 2];
            kernel(&src, 3, &[quarter, 3 * quarter], &mut out);
            assert_eq!(out, [11, 241], "{name}");
            let mut out = [9u8; 3];
            kernel(&src, 3, &[-quarter, 0], &mut out);
            assert_eq!(out, [0, 0, 0], "{name}");
        }
    }

    #[test]
    fn every_rows_kernel_matches_the_twin_bit_for_bit() {
        // Row lengths around the 16-byte step, 0 to 13 taps of both signs, rows with padding.
        for (case, (len, n, pad)) in
            [(1, 1, 0), (15, 2, 1), (16, 3, 0), (17, 5, 7), (47, 6, 0), (672, 5, 0), (100, 13, 3), (33, 0, 0)]
                .into_iter()
                .enumerate()
        {
            let stride = len + pad;
            let src = bytes(case as u64, n.max(1) * stride);
            let raw = bytes(case as u64 + 50, 4 * n);
            let taps: Vec<i32> =
                raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2] & 0x7F, 0]) - (1 << 21)).collect();
            let mut want = vec![0u8; len];
            resample_rows_scalar(&src, stride, &taps, &mut want);
            for (name, kernel) in rows_kernels() {
                let mut got = vec![0xA5u8; len];
                kernel(&src, stride, &taps, &mut got);
                assert_eq!(got, want, "{name}: {len} bytes, {n} taps");
            }
        }
    }

    #[test]
    #[should_panic(expected = "rows past the source")]
    fn rows_past_the_source_are_refused() {
        resample_rows(&[0; 20], 8, &[1, 1, 1], &mut [0; 5]);
    }

    #[test]
    #[should_panic(expected = "reads past its input")]
    fn runs_past_the_line_are_refused() {
        Taps::new(vec![1, 1], 2, vec![(1, 2)], 2);
    }
}
