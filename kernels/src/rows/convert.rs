//! f32 to IEEE half, rounded to nearest even: the activations and values that the
//! half-precision kernels read, converted once. [`to_halves_scalar`] (the `half` crate) is the
//! twin; NEON's `fcvtn` rounds the same way (FPCR's default mode), subnormals and overflow to
//! infinity included.
//!
//! And f32 to bf16 for the bf16 attention kernels ([`crate::gemm::bf16`]): [`to_bf16_scalar`]
//! rounds as `vcvtne2ps2bf16` does (to nearest even, denormals to signed zero, NaNs quieted);
//! [`to_bf16_k2n16`] rounds 16 rows (attention's keys) straight into a k2n16 panel.

use crate::gemm::bf16::k2n16_index;
use crate::gemm::pack::NR;

/// Converts `src` into `dst` (equal lengths) on the best kernel this CPU has.
pub fn to_halves(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_halves: lengths differ");
    #[cfg(target_arch = "aarch64")]
    if super::RowIsa::Neon.allowed() {
        return to_halves_neon(src, dst);
    }
    to_halves_scalar(src, dst)
}

/// The scalar twin.
pub fn to_halves_scalar(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_halves: lengths differ");
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(v).to_bits();
    }
}

/// Eight floats per `fcvtn` + `fcvtn2`.
#[cfg(target_arch = "aarch64")]
pub fn to_halves_neon(src: &[f32], dst: &mut [u16]) {
    use std::arch::asm;
    assert_eq!(src.len(), dst.len(), "to_halves: lengths differ");
    let (len, whole) = (src.len(), src.len() / 8 * 8);
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= len for both slices: reads 32 bytes of `src`, writes 16 of `dst`.
        unsafe {
            asm!(
                "ldp {a:q}, {b:q}, [{s}]",
                "fcvtn {x:v}.4h, {a:v}.4s",
                "fcvtn2 {x:v}.8h, {b:v}.4s",
                "str {x:q}, [{d}]",
                s = in(reg) src.as_ptr().add(i),
                d = in(reg) dst.as_mut_ptr().add(i),
                a = out(vreg) _,
                b = out(vreg) _,
                x = out(vreg) _,
                options(nostack),
            );
        }
    }
    // The rest one value at a time with the scalar `fcvt`, the same rounding: the `half`
    // crate's software conversion cost 0.7% of a Cortex-A76's int8 inference on attention's
    // 197-token rows.
    for i in whole..len {
        // SAFETY: i < len for both slices: reads 4 bytes of `src`, writes 2 of `dst`.
        unsafe {
            asm!(
                "ldr {f:s}, [{s}]",
                "fcvt {h:h}, {f:s}",
                "str {h:h}, [{d}]",
                s = in(reg) src.as_ptr().add(i),
                d = in(reg) dst.as_mut_ptr().add(i),
                f = out(vreg) _,
                h = out(vreg) _,
                options(nostack),
            );
        }
    }
}

/// Converts `src` into bf16 bit patterns in `dst` (equal lengths) on the best kernel this CPU
/// has.
pub fn to_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_bf16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if super::RowIsa::Avx512.allowed() && is_x86_feature_detected!("avx512bf16") {
        // SAFETY: AVX512-BF16 is present (checked just above).
        return unsafe { to_bf16_avx512(src, dst) };
    }
    to_bf16_scalar(src, dst)
}

/// One value as [`to_bf16_scalar`] converts it.
#[inline]
pub fn bf16_from_f32(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) as u16) | 0x40
    } else if x.is_subnormal() {
        ((b >> 16) as u16) & 0x8000
    } else {
        (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// The scalar twin: round to nearest even of the upper 16 bits, denormals to signed zero, NaNs
/// quieted.
pub fn to_bf16_scalar(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_bf16: lengths differ");
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = bf16_from_f32(v);
    }
}

/// 32 floats per `vcvtne2ps2bf16`; the rest by the twin, which rounds the same way.
///
/// # Safety
/// AVX512-BF16 is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_bf16_avx512(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let whole = src.len() / 32 * 32;
    for i in (0..whole).step_by(32) {
        // SAFETY: i + 32 <= len for both slices: reads 128 bytes of `src`, writes 64 of `dst`.
        // The result holds the second operand's 16 values first.
        unsafe {
            let (lo, hi) = (_mm512_loadu_ps(src.as_ptr().add(i)), _mm512_loadu_ps(src.as_ptr().add(i + 16)));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), v);
        }
    }
    to_bf16_scalar(&src[whole..], &mut dst[whole..]);
}

/// Rounds `rows` (at most 16) rows of `len` floats, row `c` at `src[c * stride..]`, to bf16
/// and lays them out as one k2n16 panel ([`crate::gemm::bf16::k2n16_index`]): `len.div_ceil(2)`
/// pairs of 16 columns, row `c` in column `c`. Columns past `rows` and an odd `len`'s last
/// slot are zero. Attention packs its keys this way, 16 tokens per panel.
pub fn to_bf16_k2n16(src: &[f32], stride: usize, len: usize, rows: usize, panel: &mut [u16]) {
    check_k2n16(src, stride, len, rows, panel);
    #[cfg(target_arch = "x86_64")]
    if super::RowIsa::Avx512.allowed() && is_x86_feature_detected!("avx512bf16") {
        // SAFETY: AVX512-BF16 is present (checked just above); the sizes were checked.
        return unsafe { to_bf16_k2n16_avx512(src, stride, len, rows, panel) };
    }
    to_bf16_k2n16_scalar(src, stride, len, rows, panel)
}

fn check_k2n16(src: &[f32], stride: usize, len: usize, rows: usize, panel: &[u16]) {
    assert!(rows <= NR, "to_bf16_k2n16: {rows} rows > {NR}");
    assert!(rows <= 1 || stride >= len, "to_bf16_k2n16: stride {stride} < {len}");
    assert!(rows == 0 || src.len() >= (rows - 1) * stride + len, "to_bf16_k2n16: src too short");
    assert_eq!(panel.len(), len.div_ceil(2) * 2 * NR, "to_bf16_k2n16: panel size");
}

/// The scalar twin of [`to_bf16_k2n16`]: each value by [`bf16_from_f32`] to the place
/// [`k2n16_index`] gives it.
pub fn to_bf16_k2n16_scalar(src: &[f32], stride: usize, len: usize, rows: usize, panel: &mut [u16]) {
    check_k2n16(src, stride, len, rows, panel);
    panel.fill(0);
    for c in 0..rows {
        for k in 0..len {
            panel[k2n16_index(k, c, panel.len())] = bf16_from_f32(src[c * stride + k]);
        }
    }
}

/// Each row's 32-value blocks by `vcvtne2ps2bf16` (16 pairs, one per 32-bit lane); 16 rows'
/// blocks are then a 16 x 16 matrix of pairs, transposed in registers (32-bit, 64-bit and two
/// 128-bit interleaving steps) so that each pair's 16 columns go out as one 64-byte store.
/// Values past the last whole block go through the twin.
///
/// # Safety
/// AVX512-BF16 is present, and the sizes pass `check_k2n16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_bf16_k2n16_avx512(src: &[f32], stride: usize, len: usize, rows: usize, panel: &mut [u16]) {
    use std::arch::x86_64::*;
    let blocks = len / 32;
    for b in 0..blocks {
        let mut r = [_mm512_setzero_si512(); NR];
        for (c, row) in r.iter_mut().enumerate().take(rows) {
            // SAFETY: c < rows and 32 b + 32 <= len: the 32 floats read lie in `src`.
            unsafe {
                let p = src.as_ptr().add(c * stride + 32 * b);
                let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                // The second operand's 16 values come first: lane l holds values 2l, 2l + 1.
                *row = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            }
        }
        // Lanes l of rows 2i, 2i + 1 side by side, then rows 4i..4i + 4 at each column of a
        // 128-bit lane, then the four 128-bit lanes of rows 0-3, 4-7, 8-11, 12-15 gathered.
        let mut t = [_mm512_setzero_si512(); NR];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // r[4i + k], 128-bit lane L: rows 4i..4i + 4 of pair 4L + k.
        for k in 0..4 {
            let (x0, x1, x2, x3) = (r[k], r[4 + k], r[8 + k], r[12 + k]);
            let even01 = _mm512_shuffle_i32x4::<0b10_00_10_00>(x0, x1);
            let odd01 = _mm512_shuffle_i32x4::<0b11_01_11_01>(x0, x1);
            let even23 = _mm512_shuffle_i32x4::<0b10_00_10_00>(x2, x3);
            let odd23 = _mm512_shuffle_i32x4::<0b11_01_11_01>(x2, x3);
            let pairs = [
                _mm512_shuffle_i32x4::<0b10_00_10_00>(even01, even23),
                _mm512_shuffle_i32x4::<0b10_00_10_00>(odd01, odd23),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(even01, even23),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(odd01, odd23),
            ];
            for (l, v) in pairs.into_iter().enumerate() {
                let q = 16 * b + 4 * l + k;
                // SAFETY: q < len / 2 <= pairs: the 32 values of pair q's row lie in `panel`.
                unsafe { _mm512_storeu_si512(panel.as_mut_ptr().add(q * 2 * NR).cast(), v) };
            }
        }
    }
    // The pairs past the last whole block are a k2n16 panel of their own.
    let rest = if rows == 0 { &[][..] } else { &src[32 * blocks..] };
    to_bf16_k2n16_scalar(rest, stride, len - 32 * blocks, rows, &mut panel[blocks * 16 * 2 * NR..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_like_the_twin_and_by_hand() {
        // Hand-worked: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and goes to the even 1;
        // 1 + 3 * 2^-8 goes up to 1 + 2^-6; a denormal becomes a zero of its sign; a
        // signalling NaN comes out quiet.
        let cases = [
            (1.0f32, 0x3f80u16),
            (1.0 + 1.0 / 256.0, 0x3f80),
            (1.0 + 3.0 / 256.0, 0x3f82),
            (-2.5, 0xc020),
            (f32::from_bits(0x0000_1234), 0x0000),
            (f32::from_bits(0x8040_0000), 0x8000),
            (f32::from_bits(0x7f80_0001), 0x7fc0),
            (f32::INFINITY, 0x7f80),
            (f32::MAX, 0x7f80),
        ];
        for (x, want) in cases {
            assert_eq!(bf16_from_f32(x), want, "{x:e}");
        }
        let mut x: Vec<f32> = crate::testing::noise(8, 1000).iter().map(|v| v * 3.0e4).collect();
        x.extend(cases.map(|c| c.0));
        x.extend((0..3000).map(|i| f32::from_bits(0x3f80_0000 + i * 97)));
        let mut want = vec![0u16; x.len()];
        to_bf16_scalar(&x, &mut want);
        for start in [0, 1, 31, 32, 33] {
            for len in [0, 1, 31, 32, 33, 64, 197, x.len() - start] {
                let mut got = vec![0u16; len];
                to_bf16(&x[start..start + len], &mut got);
                assert_eq!(got, want[start..start + len], "start {start} len {len}");
            }
        }
    }

    #[test]
    fn k2n16_panels_match_the_twin_and_the_layout() {
        // Values that exercise the rounding (ties, denormals, NaNs) in every position.
        let mut x: Vec<f32> = crate::testing::noise(9, 16 * 140).iter().map(|v| v * 3.0e4).collect();
        for (i, v) in
            [1.0 + 1.0 / 256.0, f32::from_bits(0x0000_1234), f32::from_bits(0x7f80_0001), -0.0].iter().enumerate()
        {
            for j in (i..x.len()).step_by(37) {
                x[j] = *v;
            }
        }
        for len in [1usize, 2, 31, 32, 33, 63, 64, 65, 80, 96, 127] {
            for rows in [0, 1, 7, 15, 16] {
                let stride = len + 3;
                let pairs = len.div_ceil(2);
                let src = &x[..if rows == 0 { 0 } else { (rows - 1) * stride + len }];
                let mut want = vec![7u16; pairs * 2 * NR];
                to_bf16_k2n16_scalar(src, stride, len, rows, &mut want);
                // The twin is the layout: pair q of row c at q * 32 + 2c, even k first.
                for q in 0..pairs {
                    for c in 0..NR {
                        for e in 0..2 {
                            let k = 2 * q + e;
                            let v = if c < rows && k < len { bf16_from_f32(src[c * stride + k]) } else { 0 };
                            assert_eq!(want[q * 32 + 2 * c + e], v, "len {len} rows {rows} q {q} c {c} e {e}");
                        }
                    }
                }
                let mut got = vec![7u16; pairs * 2 * NR];
                to_bf16_k2n16(src, stride, len, rows, &mut got);
                assert_eq!(got, want, "len {len} rows {rows}");
            }
        }
    }

    #[test]
    fn every_kernel_rounds_like_the_twin() {
        let mut x: Vec<f32> = crate::testing::noise(5, 1000).iter().map(|v| v * 70000.0).collect();
        x.extend([0.0, -0.0, 1e-8, 5.96e-8, 6.1e-5, 65504.0, 65520.0, 1e9, -1e-30, 0.1, 1.0 / 3.0]);
        x.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7fa0_1234), f32::INFINITY, f32::NEG_INFINITY]);
        x.extend((0..2000).map(|i| f32::from_bits(0x3380_0000 + i * 4099)));
        let mut want = vec![0u16; x.len()];
        to_halves_scalar(&x, &mut want);
        // Every start offset mod 8, so that each special value goes through the vector loop
        // and through the tail.
        for start in [0, 995, 996, 997, 998, 999, 1000, 1001, 1002] {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 197] {
                let mut got = vec![0u16; len];
                to_halves(&x[start..start + len], &mut got);
                assert_eq!(got, want[start..start + len], "start {start} len {len}");
            }
        }
        let mut got = vec![0u16; x.len()];
        to_halves(&x, &mut got);
        assert_eq!(got, want);
    }
}
