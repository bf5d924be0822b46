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

    /// Applies the activation in place. GELU uses [`erf_fast`] so that the loop vectorises;
    /// [`Activation::apply`] (libm's erf) is its scalar twin.
    pub fn apply_slice(self, xs: &mut [f32]) {
        if self != Activation::Gelu {
            for x in xs {
                *x = self.apply(*x);
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present; the body is safe Rust compiled with it.
            return unsafe { gelu_slice_avx512(xs) };
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are present; the body is safe Rust compiled with them.
            return unsafe { gelu_slice_avx2(xs) };
        }
        gelu_slice(xs)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(xs: &mut [f32]) {
    gelu_slice(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_slice_avx512(xs: &mut [f32]) {
    gelu_slice(xs)
}

#[inline(always)]
fn gelu_slice(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf_fast(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// exp(x) without branches: x = n ln 2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial,
/// 2^n by building the float's exponent. Relative error about 2e-7 for x in [-87, 88].
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits,
    // which vectorises where a float-to-int conversion would not.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // Two-part ln 2 keeps r exact.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // 2^n: n sits in t's low bits; move n + 127 into the exponent field.
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// erf(x) without branches (Abramowitz and Stegun 7.1.26 with the exp above): absolute error
/// below 1e-6 for every x (tested against libm's erff).
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_fast(-a * a);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

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
