//! What a model file says about its network and its inputs: architecture, preprocessing and
//! labels. Stored as JSON inside the `.evit` header (see docs/format.md) and validated at open.

use edgevit_kernels::attention::MAX_INT8_HEAD_DIM;
use edgevit_kernels::gemm::pack::padded_k;
use serde::{Deserialize, Serialize};

pub use edgevit_kernels::rows::activation::Activation;

/// Upper bounds that keep a hostile header from asking for absurd scratch memory. Generous:
/// ViT-H/14 at 518 px has 1370 tokens and width 1280.
pub const MAX_DIM: usize = 16_384;
/// Most encoder layers a file may declare.
pub const MAX_LAYERS: usize = 256;
/// Most tokens (patches plus class and distillation tokens).
pub const MAX_TOKENS: usize = 8_192;
/// Most classes.
pub const MAX_LABELS: usize = 1 << 20;
/// The largest model input side, and the largest size any preprocessing step (exact resize,
/// shortest-edge resize, crop) may ask for, in pixels: 4x what ViT-H/14 at 518 px needs, small
/// enough that a hostile header cannot make each image cost gigabytes or seconds.
pub const MAX_INPUT_SIDE: usize = 2_048;
/// The longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 4_096;

/// The network's shape: what `config.json` says, in edgevit's words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Input height in pixels.
    pub image_height: usize,
    /// Input width in pixels.
    pub image_width: usize,
    /// Side of the square patches.
    pub patch_size: usize,
    /// Input channels (3 for RGB).
    pub num_channels: usize,
    /// Width of every token (the embedding size).
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Classes the head predicts.
    pub num_labels: usize,
    /// LayerNorm's epsilon.
    pub layer_norm_eps: f32,
    /// The MLP's activation.
    pub activation: ActivationName,
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
    /// The checkpoint family the weights came from (absent, meaning ViT, in files written
    /// before DeiT support; recorded for `info`, it changes nothing in the forward pass).
    #[serde(default, skip_serializing_if = "Family::is_vit")]
    pub family: Family,
    /// A second learned token after the class token, as DeiT has (absent: none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub distillation_token: bool,
    /// What the classifier reads (absent: the class token).
    #[serde(default, skip_serializing_if = "Classifier::is_class_token")]
    pub classifier: Classifier,
}

/// Where a checkpoint came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// ViT (Hugging Face `ViTForImageClassification`, timm `vit_*`).
    #[default]
    Vit,
    /// DeiT (Hugging Face `DeiTForImageClassification[WithTeacher]`, timm `deit_*`, `deit3_*`).
    Deit,
}

impl Family {
    fn is_vit(&self) -> bool {
        *self == Family::Vit
    }
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            Family::Vit => "ViT",
            Family::Deit => "DeiT",
        }
    }
}

/// Which outputs of the last block feed the classifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classifier {
    /// The final LayerNorm of the class token, times `head` (`[labels, hidden]`).
    #[default]
    ClassToken,
    /// The final LayerNorm of the class and distillation tokens side by side, times `head`
    /// (`[labels, 2 x hidden]`): DeiT's two heads averaged, folded into one at import.
    ClassAndDistillationTokens,
    /// The mean of the patch tokens (the learned tokens left out), then the final LayerNorm,
    /// times `head`: timm's `global_pool="avg"` with `fc_norm`.
    MeanOfPatches,
}

impl Classifier {
    fn is_class_token(&self) -> bool {
        *self == Classifier::ClassToken
    }
    /// In words, for `info`.
    pub fn describe(self) -> &'static str {
        match self {
            Classifier::ClassToken => "class token",
            Classifier::ClassAndDistillationTokens => "mean of the class- and distillation-token heads",
            Classifier::MeanOfPatches => "mean of the patch tokens, then LayerNorm",
        }
    }
}

/// The activation as written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationName {
    /// `0.5 x (1 + erf(x / sqrt 2))` (Hugging Face `gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// `x sigmoid(1.702 x)` (`quick_gelu`).
    QuickGelu,
    /// `max(0, x)`.
    Relu,
    /// `x sigmoid(x)` (`silu`, `swish`).
    Silu,
}

impl ActivationName {
    /// Maps a Hugging Face `hidden_act` string.
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }
    /// The name as the file writes it (`gelu`, `gelu_tanh`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_tanh",
            Self::QuickGelu => "quick_gelu",
            Self::Relu => "relu",
            Self::Silu => "silu",
        }
    }
    /// The kernels' form of this activation.
    pub fn kernel(self) -> Activation {
        match self {
            Self::Gelu => Activation::Gelu,
            Self::GeluTanh => Activation::GeluTanh,
            Self::QuickGelu => Activation::QuickGelu,
            Self::Relu => Activation::Relu,
            Self::Silu => Activation::Silu,
        }
    }
}

impl Architecture {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_height / self.patch_size) * (self.image_width / self.patch_size)
    }
    /// Learned tokens in front of the patches: the class token, and DeiT's distillation token.
    pub fn prefix_tokens(&self) -> usize {
        1 + self.distillation_token as usize
    }
    /// Patches plus the learned tokens.
    pub fn tokens(&self) -> usize {
        self.num_patches() + self.prefix_tokens()
    }
    /// Width of the classifier's input row.
    pub fn head_inputs(&self) -> usize {
        match self.classifier {
            Classifier::ClassAndDistillationTokens => 2 * self.hidden_size,
            Classifier::ClassToken | Classifier::MeanOfPatches => self.hidden_size,
        }
    }
    /// Length of one flattened patch: channels x patch x patch.
    pub fn patch_len(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }
    /// Values in one input tensor (channels x height x width).
    pub fn input_len(&self) -> usize {
        self.num_channels * self.image_height * self.image_width
    }

    /// Checks that the numbers describe a ViT this runtime can run, within sane bounds.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("image_height", self.image_height),
            ("image_width", self.image_width),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("num_labels", self.num_labels),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        for (name, v) in [("image_height", self.image_height), ("image_width", self.image_width)] {
            if v > MAX_INPUT_SIDE {
                return Err(format!("{name} = {v} is larger than the supported {MAX_INPUT_SIDE}"));
            }
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
        ] {
            if v > MAX_DIM {
                return Err(format!("{name} = {v} is larger than the supported {MAX_DIM}"));
            }
        }
        if self.num_channels != 3 {
            return Err(format!("num_channels = {} (only RGB models, 3 channels, are supported)", self.num_channels));
        }
        if self.num_layers > MAX_LAYERS {
            return Err(format!("num_layers = {} is more than the supported {MAX_LAYERS}", self.num_layers));
        }
        if self.num_labels > MAX_LABELS {
            return Err(format!("num_labels = {} is more than the supported {MAX_LABELS}", self.num_labels));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(format!("hidden_size {} is not divisible by num_heads {}", self.hidden_size, self.num_heads));
        }
        if !self.image_height.is_multiple_of(self.patch_size) || !self.image_width.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image size {}x{} is not a multiple of patch_size {}",
                self.image_height, self.image_width, self.patch_size
            ));
        }
        if self.classifier == Classifier::ClassAndDistillationTokens && !self.distillation_token {
            return Err("the classifier reads a distillation token that the model does not have".into());
        }
        if self.tokens() > MAX_TOKENS {
            return Err(format!("{} tokens is more than the supported {MAX_TOKENS}", self.tokens()));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(format!("layer_norm_eps = {} is not a finite non-negative number", self.layer_norm_eps));
        }
        Ok(())
    }
}

/// Resampling filters, with the meaning (and numbers) of PIL's `Image.Resampling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Nearest neighbour.
    Nearest,
    /// Lanczos (a = 3).
    Lanczos,
    /// Bilinear (triangle filter, widened when shrinking, as PIL does).
    Bilinear,
    /// Bicubic (a = -0.5, widened when shrinking, as PIL does).
    Bicubic,
    /// Box (area average).
    Box,
    /// Hamming.
    Hamming,
}

impl Filter {
    /// PIL's integer code, as Hugging Face's `resample` field uses it.
    pub fn from_pil(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }
}

/// The resize step of preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Resize {
    /// Resize to exactly this size, ignoring the aspect ratio.
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
    /// Scale so the shorter side becomes `size`, keeping the aspect ratio.
    ShortestEdge {
        /// The shorter side's new length.
        size: usize,
    },
}

/// Preprocessing from decoded RGB to the model's input tensor, in this order:
/// resize, centre crop, rescale, normalise, HWC -> CHW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// The resize, if any, before the crop.
    pub resize: Option<Resize>,
    /// The resampling filter of the resize.
    pub filter: Filter,
    /// Centre crop to (height, width) after resizing.
    pub crop: Option<[usize; 2]>,
    /// Multiply the 0..255 pixel values by this (Hugging Face: 1/255).
    pub rescale_factor: Option<f32>,
    /// Per-channel (mean, std) for `(x - mean) / std`.
    pub normalize: Option<Normalize>,
}

/// Per-channel normalisation: `(x - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Subtracted from each channel (R, G, B).
    pub mean: [f32; 3],
    /// Each channel is then divided by this.
    pub std: [f32; 3],
}

impl Preprocess {
    /// Size (height, width) the steps produce for an input of `h x w`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (h, w) = match self.resize {
            None => (h, w),
            Some(Resize::Exact { height, width }) => (height, width),
            Some(Resize::ShortestEdge { size }) => shortest_edge_size(h, w, size),
        };
        match self.crop {
            Some([ch, cw]) => (ch, cw),
            None => (h, w),
        }
    }

    /// Checks that the steps produce this architecture's input size, within the bounds.
    pub fn validate(&self, arch: &Architecture) -> Result<(), String> {
        if let Some(n) = &self.normalize {
            if n.std.iter().chain(&n.mean).any(|v| !v.is_finite()) || n.std.contains(&0.0) {
                return Err(format!("normalisation mean {:?} / std {:?} must be finite with std != 0", n.mean, n.std));
            }
        }
        if let Some(r) = self.rescale_factor {
            if !r.is_finite() {
                return Err(format!("rescale_factor {r} is not finite"));
            }
        }
        let sides: &[(&str, usize)] = match (self.resize, self.crop) {
            (Some(Resize::Exact { height, width }), _) => &[("resize height", height), ("resize width", width)],
            (Some(Resize::ShortestEdge { size }), _) => &[("shortest-edge resize", size)],
            _ => &[],
        };
        let crop = self.crop.map(|[h, w]| [("crop height", h), ("crop width", w)]);
        for &(name, v) in sides.iter().chain(crop.iter().flatten()) {
            if v == 0 || v > MAX_INPUT_SIDE {
                return Err(format!("{name} {v} is outside 1..={MAX_INPUT_SIDE}"));
            }
        }
        let target = (arch.image_height, arch.image_width);
        match (self.resize, self.crop) {
            (_, Some(c)) if (c[0], c[1]) != target => Err(format!(
                "crop size {}x{} differs from the model's image size {}x{}",
                c[0], c[1], target.0, target.1
            )),
            (Some(Resize::Exact { height, width }), None) if (height, width) != target => Err(format!(
                "resize to {height}x{width} differs from the model's image size {}x{} and there is no crop",
                target.0, target.1
            )),
            (Some(Resize::ShortestEdge { size }), None) if target.0 != target.1 || size != target.0 => {
                Err(format!("shortest-edge resize to {size} needs a crop to reach {}x{}", target.0, target.1))
            }
            _ => Ok(()),
        }
    }
}

/// Hugging Face's rule for `{"shortest_edge": s}`: the short side becomes `s` and the long side
/// `int(s * long / short)`, here capped at [`MAX_DIM`] so that an absurdly thin image cannot
/// ask for a giant resize buffer (the centre crop that follows keeps only `s` of it anyway).
pub fn shortest_edge_size(h: usize, w: usize, size: usize) -> (usize, usize) {
    let long = |l: usize, s: usize| ((size as f64 * l as f64 / s as f64) as usize).min(MAX_DIM);
    if h <= w {
        (size, long(w, h))
    } else {
        (long(h, w), size)
    }
}

/// How the Linear layers' weights are stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightStorage {
    /// The storage of every Linear layer not in `keep_f32`.
    pub dtype: WeightDType,
    /// Linear layers kept in f32 whatever `dtype` says: "patch_embed" and/or "head".
    #[serde(default)]
    pub keep_f32: Vec<String>,
}

/// The storage of one Linear layer's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDType {
    /// Full precision, packed k1n16.
    F32,
    /// Symmetric int8 per output channel, packed k4n16, with f32 scales and int32 channel sums.
    Int8,
    /// IEEE half, packed k1n16; computed in half precision where the CPU has FP16 arithmetic
    /// (Cortex-A76), else in f32.
    F16,
}

/// Linear layers int8 models keep in f32 unless told otherwise: the patch embedding and the
/// classifier. Measured on ViT-B/16 at 2 threads, f32 there costs about 0.2% latency (the
/// classifier reads one row; the patch embedding is 0.7% of the multiply-adds), and it gives
/// the lowest KL divergence against f32 on ViT-Tiny (docs/quantization.md).
pub const DEFAULT_KEEP_F32: &[&str] = &["patch_embed", "head"];

/// Linear layers that `keep_f32` may name.
pub const KEEPABLE_F32: [&str; 2] = ["patch_embed", "head"];

impl WeightDType {
    /// The word `--dtype` takes and messages use.
    pub fn name(self) -> &'static str {
        match self {
            WeightDType::F32 => "f32",
            WeightDType::Int8 => "int8",
            WeightDType::F16 => "f16",
        }
    }
}

impl std::str::FromStr for WeightDType {
    type Err = String;
    /// The words `--dtype` takes: `int8`, `f16`, `f32`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "int8" => Ok(Self::Int8),
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            other => Err(format!("'{other}' is not one of: int8, f16, f32")),
        }
    }
}

impl WeightStorage {
    /// Every Linear layer in f32.
    pub fn f32() -> Self {
        WeightStorage { dtype: WeightDType::F32, keep_f32: Vec::new() }
    }

    /// Human-readable storage, e.g. "int8 (patch_embed, head in f32)".
    pub fn describe(&self) -> String {
        let name = match self.dtype {
            WeightDType::F32 => return "f32".into(),
            WeightDType::Int8 => "int8",
            WeightDType::F16 => "f16",
        };
        if self.keep_f32.is_empty() {
            name.into()
        } else {
            format!("{name} ({} in f32)", self.keep_f32.join(", "))
        }
    }

    /// The dtype of the Linear layer `name` ("patch_embed", "layers.3.fc1", "head", ...).
    pub fn dtype_of(&self, name: &str) -> WeightDType {
        if self.keep_f32.iter().any(|k| k == name) {
            WeightDType::F32
        } else {
            self.dtype
        }
    }

    /// Checks that `keep_f32` names only layers that may be kept.
    pub fn validate(&self) -> Result<(), String> {
        match self.keep_f32.iter().find(|k| !KEEPABLE_F32.contains(&k.as_str())) {
            Some(k) => Err(format!("keep_f32 names '{k}'; only {KEEPABLE_F32:?} may be kept in f32")),
            None => Ok(()),
        }
    }
}

/// Everything a model file says besides its tensors.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_follows_hugging_face_and_is_capped() {
        assert_eq!(shortest_edge_size(300, 451, 256), (256, 384));
        assert_eq!(shortest_edge_size(451, 300, 256), (384, 256));
        assert_eq!(shortest_edge_size(1, 16384, 224), (224, MAX_DIM));
    }
}

/// Everything a model file says besides its tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The network's shape.
    pub architecture: Architecture,
    /// How an image becomes the input tensor.
    pub preprocess: Preprocess,
    /// How the Linear layers' weights are stored.
    pub weights: WeightStorage,
    /// One name per output class, in index order.
    pub labels: Vec<String>,
    /// Where the weights came from (free text, e.g. the snapshot folder).
    #[serde(default)]
    pub source: String,
}

impl ModelConfig {
    /// Checks every number against the bounds and the parts against each other.
    pub fn validate(&self) -> Result<(), String> {
        self.architecture.validate()?;
        self.preprocess.validate(&self.architecture)?;
        self.weights.validate()?;
        let head_dim = self.architecture.head_dim();
        if self.weights.dtype == WeightDType::Int8 && padded_k(head_dim) > MAX_INT8_HEAD_DIM {
            return Err(format!(
                "head_dim = {head_dim} (hidden_size / num_heads) is more than the {MAX_INT8_HEAD_DIM} that int8 \
                 models' attention supports; write this model as f16 or f32"
            ));
        }
        if self.labels.len() != self.architecture.num_labels {
            return Err(format!("{} label names for {} classes", self.labels.len(), self.architecture.num_labels));
        }
        if let Some((i, l)) = self.labels.iter().enumerate().find(|(_, l)| l.len() > MAX_LABEL_LEN) {
            return Err(format!("label {i} is {} bytes long, more than the {MAX_LABEL_LEN} allowed", l.len()));
        }
        Ok(())
    }
}
