//! YUV 4:2:0 to RGB for camera frames, one row at a time: the first step of a frame's
//! preparation, which touches every pixel of the frame.
//!
//! The arithmetic is 16.16 fixed point in 32-bit integers (docs/streaming.md):
//! `R = clip8(Y' + cr_r V')`, `G = clip8(Y' - cb_g U' - cr_g V')`, `B = clip8(Y' + cb_b U')`
//! with `Y' = (Y - y0) y_scale + 1/2`, `U' = U - 128`, `V' = V - 128` and `clip8` the integer
//! part clamped to a byte. Each 2x2 block of pixels shares one chroma sample (replicated, not
//! interpolated). [`YuvCoeffs::convert`] is the scalar twin; the AVX2 and NEON kernels fold the
//! constant terms into one addend per channel (`R = y_scale Y + cr_r V + k_r`: the same
//! integers, no sum comes near overflow) and agree with it bit for bit.

/// The fixed-point coefficients of one YUV matrix and range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YuvCoeffs {
    /// Luma's black level: 16 for limited range, 0 for full.
    pub y0: i32,
    /// Luma's gain (255/219 for limited range) in 16.16.
    pub y_scale: i32,
    /// What V adds to R, in 16.16.
    pub cr_r: i32,
    /// What U takes from G, in 16.16.
    pub cb_g: i32,
    /// What V takes from G, in 16.16.
    pub cr_g: i32,
    /// What U adds to B, in 16.16.
    pub cb_b: i32,
}

impl YuvCoeffs {
    /// The coefficients for the matrix with luma weights `kr` and `kb` (BT.601: 0.299, 0.114);
    /// `limited`: Y spans 16..=235 and U, V 16..=240, otherwise all of 0..=255.
    pub fn new(kr: f64, kb: f64, limited: bool) -> Self {
        let kg = 1.0 - kr - kb;
        let (y0, ys, cs) = if limited { (16, 255.0 / 219.0, 255.0 / 224.0) } else { (0, 1.0, 1.0) };
        let fixed = |v: f64| (v * 65536.0).round() as i32;
        YuvCoeffs {
            y0,
            y_scale: fixed(ys),
            cr_r: fixed(2.0 * (1.0 - kr) * cs),
            cb_g: fixed(2.0 * kb * (1.0 - kb) / kg * cs),
            cr_g: fixed(2.0 * kr * (1.0 - kr) / kg * cs),
            cb_b: fixed(2.0 * (1.0 - kb) * cs),
        }
    }

    /// One pixel's R, G, B: the scalar twin.
    #[inline]
    pub fn convert(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let yy = (y as i32 - self.y0) * self.y_scale + (1 << 15);
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        [yy + self.cr_r * v, yy - self.cb_g * u - self.cr_g * v, yy + self.cb_b * u].map(clip8)
    }

    /// The constant terms of R, G and B once `Y'`, `U'` and `V'` are expanded: what the SIMD
    /// kernels add to `y_scale Y + (chroma products of U and V)`.
    #[allow(dead_code)] // Only the SIMD kernels use it; the scalar-only targets do not.
    fn addends(&self) -> [i32; 3] {
        let base = (1 << 15) - self.y0 * self.y_scale;
        [base - 128 * self.cr_r, base + 128 * (self.cb_g + self.cr_g), base - 128 * self.cb_b]
    }
}

fn clip8(x: i32) -> u8 {
    (x >> 16).clamp(0, 255) as u8
}

/// Where a row's chroma samples are: sample `i` covers pixels `2i` and `2i + 1`.
#[derive(Clone, Copy, Debug)]
pub enum Chroma<'a> {
    /// I420: U and V rows of their own.
    Planar { u: &'a [u8], v: &'a [u8] },
    /// NV12: U, V pairs interleaved in one row.
    Interleaved(&'a [u8]),
}

impl Chroma<'_> {
    fn at(&self, i: usize) -> (u8, u8) {
        match *self {
            Chroma::Planar { u, v } => (u[i], v[i]),
            Chroma::Interleaved(uv) => (uv[2 * i], uv[2 * i + 1]),
        }
    }

    /// Panics unless the row holds the samples of `width` pixels: the kernels read without
    /// checks.
    fn check(&self, width: usize) {
        let n = width.div_ceil(2);
        let ok = match *self {
            Chroma::Planar { u, v } => u.len() >= n && v.len() >= n,
            Chroma::Interleaved(uv) => uv.len() >= 2 * n,
        };
        assert!(ok, "yuv: a chroma row shorter than its {width}-pixel luma row");
    }
}

/// Converts one row of `luma.len()` pixels into interleaved RGB (`out`: 3 bytes a pixel) on
/// the best kernel this CPU has.
pub fn yuv420_rgb_row(luma: &[u8], chroma: Chroma, c: &YuvCoeffs, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::avx2_allowed() {
            return yuv420_rgb_row_avx2(luma, chroma, c, out);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if crate::cpu::allows(crate::cpu::Tier::Base) {
        return yuv420_rgb_row_neon(luma, chroma, c, out);
    }
    yuv420_rgb_row_scalar(luma, chroma, c, out)
}

/// This file's kernels by name, and whether this CPU can run each.
pub fn variants() -> Vec<(&'static str, bool)> {
    #[allow(unused_mut)]
    let mut v = vec![("yuv420_rgb_row_scalar", true)];
    #[cfg(target_arch = "x86_64")]
    v.push(("yuv420_rgb_row_avx2", is_x86_feature_detected!("avx2")));
    #[cfg(target_arch = "aarch64")]
    v.push(("yuv420_rgb_row_neon", true));
    v
}

fn check_lengths(luma: &[u8], chroma: &Chroma, out: &[u8]) {
    assert_eq!(out.len(), luma.len() * 3, "yuv: output length");
    chroma.check(luma.len());
}

/// The scalar twin.
pub fn yuv420_rgb_row_scalar(luma: &[u8], chroma: Chroma, c: &YuvCoeffs, out: &mut [u8]) {
    check_lengths(luma, &chroma, out);
    convert_from(0, luma, chroma, c, out);
}

/// The twin's pixels from `first` (even) on: the SIMD kernels' ragged end.
fn convert_from(first: usize, luma: &[u8], chroma: Chroma, c: &YuvCoeffs, out: &mut [u8]) {
    for (x, (px, &y)) in out.chunks_exact_mut(3).zip(luma).enumerate().skip(first) {
        let (u, v) = chroma.at(x / 2);
        px.copy_from_slice(&c.convert(y, u, v));
    }
}

/// Pixels per step of the SIMD kernels: 16 luma bytes, 8 chroma samples.
#[allow(dead_code)] // The scalar-only targets have no SIMD kernel.
const STEP: usize = 16;

#[cfg(target_arch = "x86_64")]
pub use x86::yuv420_rgb_row_avx2;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// `pshufb` masks that interleave eight pixels' channels: `rg` holds R of the even pixels,
    /// R of the odd ones, then G the same way (four bytes each), `b` B the same way; output
    /// byte `j` is channel `j % 3` of pixel `j / 3`. Index 0x80 gives a zero byte.
    const fn interleave_masks() -> [[u8; 16]; 4] {
        let mut m = [[0x80u8; 16]; 4];
        let mut j = 0;
        while j < 24 {
            let (pixel, channel) = (j / 3, j % 3);
            let lane = (pixel % 2) * 4 + pixel / 2;
            let (mask, at) = (if j < 16 { 0 } else { 2 }, j % 16);
            if channel < 2 {
                m[mask][at] = (channel * 8 + lane) as u8;
            } else {
                m[mask + 1][at] = lane as u8;
            }
            j += 1;
        }
        m
    }
    static INTERLEAVE: [[u8; 16]; 4] = interleave_masks();
    /// Even bytes, then odd bytes: splits luma into even and odd pixels, NV12 into U and V.
    static EVEN_ODD: [u8; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15];

    /// Sixteen pixels per step in 32-bit lanes: even and odd pixels each in one vector beside
    /// their shared chroma terms, `vpsrad` + `vpackssdw` + `vpackuswb` as the shift and clamp,
    /// two `pshufb` per eight pixels to interleave. The last `width % 16` pixels go through the
    /// twin.
    pub fn yuv420_rgb_row_avx2(luma: &[u8], chroma: Chroma, c: &YuvCoeffs, out: &mut [u8]) {
        assert!(is_x86_feature_detected!("avx2"));
        check_lengths(luma, &chroma, out);
        // SAFETY: AVX2 is present (asserted above).
        let done = unsafe { body(luma, chroma, c, out) };
        convert_from(done, luma, chroma, c, out);
    }

    /// The whole steps of the row; returns the pixels converted.
    #[target_feature(enable = "avx2")]
    fn body(luma: &[u8], chroma: Chroma, c: &YuvCoeffs, out: &mut [u8]) -> usize {
        let steps = luma.len() / STEP;
        let set = |v: i32| _mm256_set1_epi32(v);
        let [k_r, k_g, k_b] = c.addends().map(set);
        let (ys, cr_r, cb_g, cr_g, cb_b) = (set(c.y_scale), set(c.cr_r), set(c.cb_g), set(c.cr_g), set(c.cb_b));
        // SAFETY: step s reads luma bytes 16s..16s + 16 and chroma samples 8s..8s + 8, all
        // within the rows (16 steps <= width, samples checked for the width), and writes
        // out bytes 48s..48s + 48 <= 3 width. The masks are 16-byte statics.
        unsafe {
            let even_odd = _mm_loadu_si128(EVEN_ODD.as_ptr().cast());
            let mask = INTERLEAVE.map(|m| _mm_loadu_si128(m.as_ptr().cast()));
            let interleave = |rg: __m128i, b: __m128i, dst: *mut u8| {
                let first = _mm_or_si128(_mm_shuffle_epi8(rg, mask[0]), _mm_shuffle_epi8(b, mask[1]));
                let rest = _mm_or_si128(_mm_shuffle_epi8(rg, mask[2]), _mm_shuffle_epi8(b, mask[3]));
                _mm_storeu_si128(dst.cast(), first);
                _mm_storel_epi64(dst.add(16).cast(), rest);
            };
            for s in 0..steps {
                let (x, half) = (s * STEP, s * STEP / 2);
                let y = _mm_shuffle_epi8(_mm_loadu_si128(luma.as_ptr().add(x).cast()), even_odd);
                let (u, v) = match chroma {
                    Chroma::Planar { u, v } => {
                        (_mm_loadl_epi64(u.as_ptr().add(half).cast()), _mm_loadl_epi64(v.as_ptr().add(half).cast()))
                    }
                    Chroma::Interleaved(uv) => {
                        let split = _mm_shuffle_epi8(_mm_loadu_si128(uv.as_ptr().add(x).cast()), even_odd);
                        (split, _mm_unpackhi_epi64(split, split))
                    }
                };
                let (u, v) = (_mm256_cvtepu8_epi32(u), _mm256_cvtepu8_epi32(v));
                let even = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(y), ys);
                let odd = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(y, y)), ys);
                let chroma_r = _mm256_add_epi32(_mm256_mullo_epi32(v, cr_r), k_r);
                let chroma_g =
                    _mm256_sub_epi32(k_g, _mm256_add_epi32(_mm256_mullo_epi32(u, cb_g), _mm256_mullo_epi32(v, cr_g)));
                let chroma_b = _mm256_add_epi32(_mm256_mullo_epi32(u, cb_b), k_b);
                // Per 128-bit lane: the even then the odd pixels' values as 16-bit words.
                let words = |k: __m256i| {
                    let shift = |l: __m256i| _mm256_srai_epi32::<16>(_mm256_add_epi32(l, k));
                    _mm256_packs_epi32(shift(even), shift(odd))
                };
                let rg = _mm256_packus_epi16(words(chroma_r), words(chroma_g));
                let b = words(chroma_b);
                let b = _mm256_packus_epi16(b, b);
                // Lane 0 holds pixels 0..8 of the step, lane 1 pixels 8..16.
                let dst = out.as_mut_ptr().add(3 * x);
                interleave(_mm256_castsi256_si128(rg), _mm256_castsi256_si128(b), dst);
                interleave(_mm256_extracti128_si256::<1>(rg), _mm256_extracti128_si256::<1>(b), dst.add(24));
            }
        }
        steps * STEP
    }
}

#[cfg(target_arch = "aarch64")]
pub use neon::yuv420_rgb_row_neon;

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use std::arch::aarch64::*;

    /// Sixteen pixels per step in 32-bit lanes: `ld2` splits luma into even and odd pixels
    /// (and NV12 into U and V), `sqshrun` + `uqxtn` are the shift and clamp, `zip1`/`zip2`
    /// put the pixels back in order and `st3` interleaves the channels. The last
    /// `width % 16` pixels go through the twin.
    pub fn yuv420_rgb_row_neon(luma: &[u8], chroma: Chroma, c: &YuvCoeffs, out: &mut [u8]) {
        check_lengths(luma, &chroma, out);
        let steps = luma.len() / STEP;
        let [k_r, k_g, k_b] = c.addends();
        for s in 0..steps {
            let (x, half) = (s * STEP, s * STEP / 2);
            // SAFETY: NEON is baseline on aarch64. Step s reads luma bytes 16s..16s + 16 and
            // chroma samples 8s..8s + 8, all within the rows (16 steps <= width, samples
            // checked for the width), and writes out bytes 48s..48s + 48 <= 3 width.
            unsafe {
                let y = vld2_u8(luma.as_ptr().add(x));
                let (u, v) = match chroma {
                    Chroma::Planar { u, v } => (vld1_u8(u.as_ptr().add(half)), vld1_u8(v.as_ptr().add(half))),
                    Chroma::Interleaved(uv) => {
                        let split = vld2_u8(uv.as_ptr().add(x));
                        (split.0, split.1)
                    }
                };
                let widen = |b: uint8x8_t| {
                    let h = vmovl_u8(b);
                    [vget_low_u16(h), vget_high_u16(h)].map(|q| vreinterpretq_s32_u32(vmovl_u16(q)))
                };
                let (u, v) = (widen(u), widen(v));
                let even = widen(y.0).map(|l| vmulq_n_s32(l, c.y_scale));
                let odd = widen(y.1).map(|l| vmulq_n_s32(l, c.y_scale));
                let chroma_r: [_; 2] = std::array::from_fn(|i| vmlaq_n_s32(vdupq_n_s32(k_r), v[i], c.cr_r));
                let chroma_g: [_; 2] =
                    std::array::from_fn(|i| vmlsq_n_s32(vmlsq_n_s32(vdupq_n_s32(k_g), u[i], c.cb_g), v[i], c.cr_g));
                let chroma_b: [_; 2] = std::array::from_fn(|i| vmlaq_n_s32(vdupq_n_s32(k_b), u[i], c.cb_b));
                let bytes = |l: [int32x4_t; 2], k: [int32x4_t; 2]| {
                    let words = vcombine_u16(
                        vqshrun_n_s32::<16>(vaddq_s32(l[0], k[0])),
                        vqshrun_n_s32::<16>(vaddq_s32(l[1], k[1])),
                    );
                    vqmovn_u16(words)
                };
                let channel = |k: [int32x4_t; 2]| {
                    let (e, o) = (bytes(even, k), bytes(odd, k));
                    vcombine_u8(vzip1_u8(e, o), vzip2_u8(e, o))
                };
                let rgb = uint8x16x3_t(channel(chroma_r), channel(chroma_g), channel(chroma_b));
                vst3q_u8(out.as_mut_ptr().add(3 * x), rgb);
            }
        }
        convert_from(steps * STEP, luma, chroma, c, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noise_bytes as bytes;

    type Kernel = (&'static str, fn(&[u8], Chroma, &YuvCoeffs, &mut [u8]));

    fn kernels() -> Vec<Kernel> {
        let mut v: Vec<Kernel> = vec![("scalar", yuv420_rgb_row_scalar)];
        #[cfg(target_arch = "x86_64")]
        if crate::testing::runs_here("yuv420_rgb_row_avx2", is_x86_feature_detected!("avx2")) {
            v.push(("avx2", yuv420_rgb_row_avx2));
        }
        #[cfg(target_arch = "aarch64")]
        v.push(("neon", yuv420_rgb_row_neon));
        v
    }

    fn bt601_limited() -> YuvCoeffs {
        YuvCoeffs::new(0.299, 0.114, true)
    }

    #[test]
    fn hand_worked_pixels() {
        let c = bt601_limited();
        // Limited-range black and white, and 255/219 of (Y - 16) rounded.
        assert_eq!(c.convert(16, 128, 128), [0, 0, 0]);
        assert_eq!(c.convert(235, 128, 128), [255, 255, 255]);
        assert_eq!(c.convert(126, 128, 128), [128, 128, 128]);
        // Studio red (Y 81, U 90, V 240, BT.601 colour bars): R = 254.44 rounds to 254, G and
        // B are 0 after rounding and the clamp (B is -0.97).
        assert_eq!(c.convert(81, 90, 240), [254, 0, 0]);
        // Full-range BT.709: R = 128 + 1.5748 * 100 clamps; G = 128 - 0.4681 * 100 = 81.19.
        assert_eq!(YuvCoeffs::new(0.2126, 0.0722, false).convert(128, 128, 228), [255, 81, 128]);
    }

    #[test]
    fn every_kernel_matches_the_twin_bit_for_bit() {
        let coeffs = [bt601_limited(), YuvCoeffs::new(0.2126, 0.0722, false)];
        // Widths around the 16-pixel step, odd ones (half a chroma pair at the end), and a
        // camera row.
        for (case, width) in [1, 2, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 640].into_iter().enumerate() {
            let seed = case as u64 * 10;
            let luma = bytes(seed, width);
            let cw = width.div_ceil(2);
            let (u, v, uv) = (bytes(seed + 1, cw), bytes(seed + 2, cw), bytes(seed + 3, 2 * cw));
            for c in &coeffs {
                for chroma in [Chroma::Planar { u: &u, v: &v }, Chroma::Interleaved(&uv)] {
                    let mut want = vec![0u8; 3 * width];
                    yuv420_rgb_row_scalar(&luma, chroma, c, &mut want);
                    for (name, kernel) in kernels() {
                        let mut got = vec![0xA5u8; 3 * width];
                        kernel(&luma, chroma, c, &mut got);
                        assert_eq!(got, want, "{name}: width {width}, {chroma:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn extremes_clamp_in_every_kernel() {
        // Every combination of 0, 16, 128, 235, 240 and 255 in Y, U and V, each in a
        // 16-pixel step: values past both ends of a byte before the clamp.
        let levels = [0u8, 16, 128, 235, 240, 255];
        let mut luma = Vec::new();
        let (mut u, mut v) = (Vec::new(), Vec::new());
        for &y in &levels {
            for &cu in &levels {
                for &cv in &levels {
                    luma.extend([y, y]);
                    u.push(cu);
                    v.push(cv);
                }
            }
        }
        let c = bt601_limited();
        let want: Vec<u8> = luma.iter().enumerate().flat_map(|(x, &y)| c.convert(y, u[x / 2], v[x / 2])).collect();
        assert!(want.contains(&0) && want.contains(&255));
        for (name, kernel) in kernels() {
            let mut got = vec![0u8; want.len()];
            kernel(&luma, Chroma::Planar { u: &u, v: &v }, &c, &mut got);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    #[should_panic(expected = "chroma row shorter")]
    fn short_chroma_rows_are_refused() {
        let c = bt601_limited();
        yuv420_rgb_row(&[0; 5], Chroma::Interleaved(&[0; 4]), &c, &mut [0; 15]);
    }
}
