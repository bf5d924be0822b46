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

    pub fn apply_slice(self, xs: &mut [f32]) {
        for x in xs {
            *x = self.apply(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
