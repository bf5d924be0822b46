//! Element-wise activations of the MLP. `Gelu` is the exact erf form that Hugging Face's
//! `hidden_act = "gelu"` means; the others cover the remaining ViT configurations.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// x * Phi(x) with the exact erf ("gelu").
    Gelu,
    /// The tanh approximation ("gelu_new", "gelu_pytorch_tanh", "gelu_fast").
    GeluTanh,
    /// x * sigmoid(1.702 x) ("quick_gelu").
    QuickGelu,
    Relu,
    /// x * sigmoid(x) ("silu", "swish").
    Silu,
}

impl Activation {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    /// Applies the activation in place. GELU runs the SIMD kernels below ([`gelu`] is their
    /// scalar twin, bit for bit); the rest use [`Activation::apply`].
    pub fn apply_slice(self, xs: &mut [f32]) {
        if self != Activation::Gelu {
            for x in xs {
                *x = self.apply(*x);
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            return x86::gelu_slice_avx512(xs);
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            return x86::gelu_slice_avx2(xs);
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return arm::gelu_slice_neon(xs);
        }
        xs.iter_mut().for_each(|x| *x = gelu(*x));
    }
}

/// Exact-erf GELU with [`erf_fast`]: the scalar twin of the SIMD kernels, which perform the
/// same operations in the same order (no fused multiply-adds) and so agree with it bit for bit.
/// [`Activation::apply`] (libm's erf) is the reference it is tested against.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
}

// The constants of `exp_fast` and `erf_fast`, shared with the SIMD kernels.
const EXP_MAGIC: f32 = 12_582_912.0;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const EXP_POLY: [f32; 5] = [0.5, 0.166_666_67, 0.041_666_668, 0.008_333_334, 0.001_388_889];
const ERF_P: f32 = 0.327_591_1;
const ERF_POLY: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];

/// GELU kernels on x86_64 registers: [`gelu`] step for step.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    pub(crate) fn gelu_slice_avx512(xs: &mut [f32]) {
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (asserted above).
        unsafe { gelu_slice_avx512_body(xs) }
    }

    #[target_feature(enable = "avx512f")]
    fn gelu_slice_avx512_body(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: c holds exactly 16 floats.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), gelu_avx512(_mm512_loadu_ps(c.as_ptr()))) };
        }
        chunks.into_remainder().iter_mut().for_each(|x| *x = gelu(*x));
    }

    /// GELU of 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn gelu_avx512(x: __m512) -> __m512 {
        let s = _mm512_set1_ps;
        let (mul, add, sub) = (_mm512_mul_ps, _mm512_add_ps, _mm512_sub_ps);
        let z = mul(x, s(std::f32::consts::FRAC_1_SQRT_2));
        // erf_fast(z)
        let sign = _mm512_set1_epi32(i32::MIN);
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(z)));
        let t = _mm512_div_ps(s(1.0), add(s(1.0), mul(s(ERF_P), a)));
        let mut poly = s(ERF_POLY[4]);
        for &c in ERF_POLY[..4].iter().rev() {
            poly = add(s(c), mul(t, poly));
        }
        poly = mul(t, poly);
        let neg_a = _mm512_castsi512_ps(_mm512_xor_si512(sign, _mm512_castps_si512(a)));
        let e = exp_avx512(mul(neg_a, a));
        let y = sub(s(1.0), mul(poly, e));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(y),
            _mm512_and_si512(sign, _mm512_castps_si512(z)),
        ));
        mul(mul(s(0.5), x), add(s(1.0), erf))
    }

    /// [`exp_fast`] of 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp_avx512(x: __m512) -> __m512 {
        let s = _mm512_set1_ps;
        let (mul, add, sub) = (_mm512_mul_ps, _mm512_add_ps, _mm512_sub_ps);
        let x = _mm512_min_ps(_mm512_max_ps(x, s(-87.0)), s(88.0));
        let t = add(mul(x, s(std::f32::consts::LOG2_E)), s(EXP_MAGIC));
        let n = sub(t, s(EXP_MAGIC));
        let r = sub(sub(x, mul(n, s(LN2_HI))), mul(n, s(LN2_LO)));
        let mut p = s(EXP_POLY[4]);
        for &c in EXP_POLY[..4].iter().rev() {
            p = add(s(c), mul(r, p));
        }
        p = add(s(1.0), mul(r, add(s(1.0), mul(r, p))));
        let bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(EXP_MAGIC.to_bits() as i32));
        let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(bits, _mm512_set1_epi32(127)));
        mul(p, _mm512_castsi512_ps(scale))
    }

    pub(crate) fn gelu_slice_avx2(xs: &mut [f32]) {
        assert!(is_x86_feature_detected!("avx2"));
        // SAFETY: AVX2 is present (asserted above).
        unsafe { gelu_slice_avx2_body(xs) }
    }

    #[target_feature(enable = "avx2")]
    fn gelu_slice_avx2_body(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: c holds exactly 8 floats.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), gelu_avx2(_mm256_loadu_ps(c.as_ptr()))) };
        }
        chunks.into_remainder().iter_mut().for_each(|x| *x = gelu(*x));
    }

    /// GELU of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(crate) fn gelu_avx2(x: __m256) -> __m256 {
        let s = _mm256_set1_ps;
        let (mul, add, sub) = (_mm256_mul_ps, _mm256_add_ps, _mm256_sub_ps);
        let z = mul(x, s(std::f32::consts::FRAC_1_SQRT_2));
        let sign = s(-0.0);
        let a = _mm256_andnot_ps(sign, z);
        let t = _mm256_div_ps(s(1.0), add(s(1.0), mul(s(ERF_P), a)));
        let mut poly = s(ERF_POLY[4]);
        for &c in ERF_POLY[..4].iter().rev() {
            poly = add(s(c), mul(t, poly));
        }
        poly = mul(t, poly);
        let e = exp_avx2(mul(_mm256_xor_ps(sign, a), a));
        let y = sub(s(1.0), mul(poly, e));
        let erf = _mm256_or_ps(y, _mm256_and_ps(sign, z));
        mul(mul(s(0.5), x), add(s(1.0), erf))
    }

    /// [`exp_fast`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(crate) fn exp_avx2(x: __m256) -> __m256 {
        let s = _mm256_set1_ps;
        let (mul, add, sub) = (_mm256_mul_ps, _mm256_add_ps, _mm256_sub_ps);
        let x = _mm256_min_ps(_mm256_max_ps(x, s(-87.0)), s(88.0));
        let t = add(mul(x, s(std::f32::consts::LOG2_E)), s(EXP_MAGIC));
        let n = sub(t, s(EXP_MAGIC));
        let r = sub(sub(x, mul(n, s(LN2_HI))), mul(n, s(LN2_LO)));
        let mut p = s(EXP_POLY[4]);
        for &c in EXP_POLY[..4].iter().rev() {
            p = add(s(c), mul(r, p));
        }
        p = add(s(1.0), mul(r, add(s(1.0), mul(r, p))));
        let bits = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(EXP_MAGIC.to_bits() as i32));
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(bits, _mm256_set1_epi32(127)));
        mul(p, _mm256_castsi256_ps(scale))
    }
}

/// The GELU kernel on aarch64 NEON registers: [`gelu`] step for step.
#[cfg(target_arch = "aarch64")]
pub(crate) mod arm {
    use super::*;
    use std::arch::aarch64::*;

    pub(crate) fn gelu_slice_neon(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: NEON is baseline on aarch64; c holds exactly 4 floats.
            unsafe { vst1q_f32(c.as_mut_ptr(), gelu_neon(vld1q_f32(c.as_ptr()))) };
        }
        chunks.into_remainder().iter_mut().for_each(|x| *x = gelu(*x));
    }

    /// GELU of 4 lanes.
    #[target_feature(enable = "neon")]
    pub(crate) fn gelu_neon(x: float32x4_t) -> float32x4_t {
        let s = vdupq_n_f32;
        let (mul, add, sub) = (vmulq_f32, vaddq_f32, vsubq_f32);
        let z = mul(x, s(std::f32::consts::FRAC_1_SQRT_2));
        let a = vabsq_f32(z);
        let t = vdivq_f32(s(1.0), add(s(1.0), mul(s(ERF_P), a)));
        let mut poly = s(ERF_POLY[4]);
        for &c in ERF_POLY[..4].iter().rev() {
            poly = add(s(c), mul(t, poly));
        }
        poly = mul(t, poly);
        let e = exp_neon(mul(vnegq_f32(a), a));
        let y = sub(s(1.0), mul(poly, e));
        // copysign: the magnitude bits of y, the sign bit of z.
        let erf = vbslq_f32(vdupq_n_u32(0x7fff_ffff), y, z);
        mul(mul(s(0.5), x), add(s(1.0), erf))
    }

    /// [`exp_fast`] of 4 lanes.
    #[target_feature(enable = "neon")]
    pub(crate) fn exp_neon(x: float32x4_t) -> float32x4_t {
        let s = vdupq_n_f32;
        let (mul, add, sub) = (vmulq_f32, vaddq_f32, vsubq_f32);
        let x = vminq_f32(vmaxq_f32(x, s(-87.0)), s(88.0));
        let t = add(mul(x, s(std::f32::consts::LOG2_E)), s(EXP_MAGIC));
        let n = sub(t, s(EXP_MAGIC));
        let r = sub(sub(x, mul(n, s(LN2_HI))), mul(n, s(LN2_LO)));
        let mut p = s(EXP_POLY[4]);
        for &c in EXP_POLY[..4].iter().rev() {
            p = add(s(c), mul(r, p));
        }
        p = add(s(1.0), mul(r, add(s(1.0), mul(r, p))));
        let bits = vsubq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(EXP_MAGIC.to_bits()));
        let scale = vshlq_n_u32::<23>(vaddq_u32(bits, vdupq_n_u32(127)));
        mul(p, vreinterpretq_f32_u32(scale))
    }
}

/// exp(x) without branches: x = n ln 2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial,
/// 2^n by building the float's exponent. Relative error about 2e-7 for x in [-87, 88].
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits,
    // which vectorises where a float-to-int conversion would not.
    let t = x * std::f32::consts::LOG2_E + EXP_MAGIC;
    let n = t - EXP_MAGIC;
    // Two-part ln 2 keeps r exact.
    let r = x - n * LN2_HI - n * LN2_LO;
    let [c2, c3, c4, c5, c6] = EXP_POLY;
    let p = 1.0 + r * (1.0 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * c6)))));
    // 2^n: n sits in t's low bits; move n + 127 into the exponent field.
    let bits = t.to_bits().wrapping_sub(EXP_MAGIC.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// erf(x) without branches (Abramowitz and Stegun 7.1.26 with the exp above): absolute error
/// below 1e-6 for every x (tested against libm's erff).
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let [c1, c2, c3, c4, c5] = ERF_POLY;
    let poly = t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))));
    let y = 1.0 - poly * exp_fast(-a * a);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    type SliceKernel = (&'static str, fn(&mut [f32]));

    /// Every GELU kernel this CPU can run, scalar twin first.
    fn gelu_kernels() -> Vec<SliceKernel> {
        let mut v: Vec<SliceKernel> = vec![("scalar", |xs: &mut [f32]| xs.iter_mut().for_each(|x| *x = gelu(*x)))];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                v.push(("avx2", x86::gelu_slice_avx2));
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(("avx512", x86::gelu_slice_avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(("neon", arm::gelu_slice_neon));
        v
    }

    #[test]
    fn every_gelu_kernel_matches_the_scalar_twin_bit_for_bit() {
        let mut xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        let edges = [0.0, -0.0, 1e-30, -1e-30, f32::MIN_POSITIVE, 1e-42, 86.9, 87.5, -88.5, 200.0, -200.0, 1e10, -1e10];
        xs.extend(edges.iter().chain(&[3.4e38, -3.4e38]));
        let want: Vec<u32> = xs.iter().map(|&x| gelu(x).to_bits()).collect();
        for (name, kernel) in gelu_kernels() {
            // Every length up to 40 (ragged tails), then the whole sweep.
            for len in 0..40 {
                let mut part = xs[1000..1000 + len].to_vec();
                kernel(&mut part);
                assert!(
                    part.iter().map(|v| v.to_bits()).eq(want[1000..1000 + len].iter().copied()),
                    "{name} len {len}"
                );
            }
            let mut got = xs.clone();
            kernel(&mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), *w, "{name} at x = {}: {g} vs {}", xs[i], f32::from_bits(*w));
            }
        }
    }

    #[test]
    fn fast_erf_and_exp_match_libm() {
        let mut worst_erf = 0f32;
        let mut worst_exp = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 5e-5; // -10 .. 10
            worst_erf = worst_erf.max((erf_fast(x) - libm::erff(x)).abs());
            let e = (exp_fast(x) - libm::expf(x)).abs() / libm::expf(x);
            worst_exp = worst_exp.max(e);
        }
        assert!(worst_erf <= 1e-6, "erf abs error {worst_erf}");
        assert!(worst_exp <= 5e-7, "exp rel error {worst_exp}");
        let mut xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).collect();
        let want: Vec<f32> = xs.iter().map(|&x| Activation::Gelu.apply(x)).collect();
        Activation::Gelu.apply_slice(&mut xs);
        for (a, b) in xs.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn gelu_known_values() {
        // GELU(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429 (Phi(1)).
        assert!((Activation::Gelu.apply(1.0) - 0.841_344_8).abs() < 1e-6);
        assert!((Activation::Gelu.apply(-1.0) + 0.158_655_25).abs() < 1e-6);
        assert_eq!(Activation::Gelu.apply(0.0), 0.0);
        assert_eq!(Activation::Relu.apply(-3.0), 0.0);
        assert!((Activation::Silu.apply(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((Activation::GeluTanh.apply(1.0) - 0.841_192).abs() < 1e-5);
    }
}
