//! Models with random weights at the real shapes of the standard ViTs, built in memory: a
//! device can be benchmarked without downloading anything (`edgevit bench --arch`,
//! `edgevit-tools synth`). Weights are stored exactly as the tools store real ones (int8 is
//! quantized per channel and packed k4n16), so the same kernels run on the same bytes.

use std::str::FromStr;

use crate::config::{
    ActivationName, Architecture, Filter, ModelConfig, Normalize, Preprocess, Resize, WeightDType, WeightStorage,
    DEFAULT_KEEP_F32,
};
use crate::error::{Error, Result};
use crate::format::expected_tensors;
use crate::format::{self, AlignedBytes, DType, EvitFile, Layout, TensorPlan};

/// The standard ImageNet ViTs at 224x224 with 16x16 patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// ViT-Ti/16: width 192, 12 layers, 3 heads (5.7 M parameters).
    Tiny,
    /// ViT-S/16: width 384, 12 layers, 6 heads (22 M).
    Small,
    /// ViT-B/16: width 768, 12 layers, 12 heads (86 M), as google/vit-base-patch16-224.
    Base,
    /// ViT-L/16: width 1024, 24 layers, 16 heads (304 M).
    Large,
}

impl Preset {
    /// The words `--arch` takes, for messages.
    pub const NAMES: &'static str = "vit-ti16, vit-s16, vit-b16, vit-l16";

    /// The word `--arch` takes for this preset.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "vit-ti16",
            Preset::Small => "vit-s16",
            Preset::Base => "vit-b16",
            Preset::Large => "vit-l16",
        }
    }

    /// (hidden size, layers, heads).
    fn dims(self) -> (usize, usize, usize) {
        match self {
            Preset::Tiny => (192, 12, 3),
            Preset::Small => (384, 12, 6),
            Preset::Base => (768, 12, 12),
            Preset::Large => (1024, 24, 16),
        }
    }

    /// The preset's architecture (ImageNet-1k head, 224x224 input).
    pub fn architecture(self) -> Architecture {
        let (hidden, layers, heads) = self.dims();
        Architecture {
            image_height: 224,
            image_width: 224,
            patch_size: 16,
            num_channels: 3,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            intermediate_size: 4 * hidden,
            num_labels: 1000,
            layer_norm_eps: 1e-12,
            activation: ActivationName::Gelu,
            qkv_bias: true,
            family: Default::default(),
            distillation_token: false,
            classifier: Default::default(),
        }
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().replace(['_', '/'], "-").as_str() {
            "vit-ti16" | "vit-tiny" | "vit-t16" => Preset::Tiny,
            "vit-s16" | "vit-small" => Preset::Small,
            "vit-b16" | "vit-base" => Preset::Base,
            "vit-l16" | "vit-large" => Preset::Large,
            other => return Err(format!("architecture '{other}' is not one of: {}", Preset::NAMES)),
        })
    }
}

/// A deterministic xorshift64* generator: the same seed gives the same model everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-a, a).
    fn sym(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
}

/// The bytes of a random-weight model of `preset` in `dtype` (int8 keeps the default f32
/// layers, as `edgevit-tools quantize` does).
pub fn build(preset: Preset, dtype: WeightDType, seed: u64) -> Result<AlignedBytes> {
    build_architecture(&preset.architecture(), preset.name(), dtype, seed)
}

/// [`build`] for any architecture (tests and fuzzing use tiny ones); `name` goes into the
/// file's `source`. Its preprocessing resizes straight to the input size.
pub fn build_architecture(arch: &Architecture, name: &str, dtype: WeightDType, seed: u64) -> Result<AlignedBytes> {
    arch.validate().map_err(Error::Input)?;
    let arch = arch.clone();
    let (h, w) = (arch.image_height, arch.image_width);
    let weights = match dtype {
        WeightDType::F32 => WeightStorage::f32(),
        WeightDType::Int8 | WeightDType::F16 => {
            WeightStorage { dtype, keep_f32: DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect() }
        }
    };
    let config = ModelConfig {
        architecture: arch.clone(),
        preprocess: Preprocess {
            resize: Some(Resize::Exact { height: h, width: w }),
            filter: Filter::Bilinear,
            crop: None,
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some(Normalize { mean: [0.5; 3], std: [0.5; 3] }),
        },
        labels: (0..arch.num_labels).map(|i| format!("class {i}")).collect(),
        source: format!("random weights ({name}, seed {seed})"),
        weights,
    };
    let specs = expected_tensors(&arch, &config.weights);
    let plan: Vec<TensorPlan> = specs
        .iter()
        .map(|s| TensorPlan { name: s.name.clone(), dtype: s.dtype, layout: s.layout, shape: s.shape.clone() })
        .collect();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // An int8 Linear's three tensors come from one f32 matrix, quantized when its weight is met.
    let mut stored: Option<format::StoredLinear> = None;
    format::build(&config, &plan, |i, dst| {
        let spec = &specs[i];
        let (base, suffix) = spec.name.rsplit_once('.').unwrap_or((spec.name.as_str(), ""));
        match (spec.dtype, spec.layout, suffix) {
            (DType::I8 | DType::F16, _, _) | (DType::F32, Layout::K1n16, _) => {
                let (n, k) = (spec.shape[0], spec.shape[1]);
                let w: Vec<f32> = (0..n * k).map(|_| rng.sym(0.05)).collect();
                let dtype = match spec.dtype {
                    DType::I8 => WeightDType::Int8,
                    DType::F16 => WeightDType::F16,
                    _ => WeightDType::F32,
                };
                let s = format::store_linear(base, &w, n, k, dtype);
                dst.copy_from_slice(&s.weight.bytes);
                stored = Some(s);
            }
            (DType::F32, _, "scale") | (DType::I32, _, "sum") => {
                let s = stored.as_ref().and_then(|s| if suffix == "sum" { s.sum.as_ref() } else { s.scale.as_ref() });
                let s = s.ok_or_else(|| Error::Input(format!("internal: '{}' before its weight", spec.name)))?;
                dst.copy_from_slice(&s.bytes);
            }
            (DType::F32, _, _) => {
                let out: &mut [f32] = bytemuck::cast_slice_mut(dst);
                let is_norm_weight =
                    suffix == "weight" && (base.ends_with("ln1") || base.ends_with("ln2") || base == "norm");
                if is_norm_weight {
                    out.fill(1.0);
                } else {
                    let a = if suffix == "bias" { 0.01 } else { 0.05 };
                    out.iter_mut().for_each(|v| *v = rng.sym(a));
                }
            }
            _ => return Err(Error::Input(format!("internal: no generator for tensor '{}'", spec.name))),
        }
        Ok(())
    })
}

/// [`build`], opened as a model file held in memory.
pub fn open(preset: Preset, dtype: WeightDType, seed: u64) -> Result<EvitFile> {
    let name = format!("random {} {}", preset.name(), dtype.name());
    EvitFile::from_bytes(&name, build(preset, dtype, seed)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_have_the_published_sizes() {
        assert_eq!("vit-b16".parse::<Preset>(), Ok(Preset::Base));
        assert_eq!("ViT_L16".parse::<Preset>(), Ok(Preset::Large));
        assert!("vit-h14".parse::<Preset>().unwrap_err().contains("vit-b16"));
        // google/vit-base-patch16-224 has 86,567,656 parameters (the classifier included).
        let params: usize = expected_tensors(&Preset::Base.architecture(), &WeightStorage::f32())
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 86_567_656);
    }

    #[test]
    fn small_synthetic_models_open_and_run() {
        for dtype in [WeightDType::F32, WeightDType::Int8, WeightDType::F16] {
            let file = open(Preset::Tiny, dtype, 7).unwrap();
            file.verify().unwrap();
            let model = crate::Model::from_file(file).unwrap();
            let mut s = model.session();
            let logits = model.forward(&vec![0.25; 3 * 224 * 224], &mut s).unwrap();
            assert!(logits.iter().all(|v| v.is_finite()));
            // The same seed makes the same model.
            let again = build(Preset::Tiny, dtype, 7).unwrap();
            assert_eq!(&again[..], &build(Preset::Tiny, dtype, 7).unwrap()[..]);
        }
    }
}
