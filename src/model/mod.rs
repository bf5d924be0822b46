//! A validated model and its forward pass (f32 or int8 Linear layers).
//!
//! The weights are borrowed straight from the memory-mapped file; a [`Session`] holds every
//! buffer one forward pass needs, sized once from the architecture, so classifying allocates
//! nothing after the session is made (tests/zero_alloc.rs). Call [`Model::forward`] from inside
//! the rayon pool (`ThreadPool::install`, as the CLI does) for that to hold exactly: parallel
//! sections started from outside the pool go through rayon's shared queue, which allocates a
//! small block every 63 jobs.
//!
//! Where one image goes: [`Model::forward`] (forward.rs) embeds the patches, runs each encoder
//! layer and the classifier, preparing every Linear layer's input for its kernel (input.rs:
//! LayerNorm, GELU and per-row quantization fused where they can be) in the buffers of a
//! [`Session`] (session.rs), over weights resolved from the file at open (weights.rs).

mod forward;
mod input;
mod session;
mod weights;

use std::path::Path;

use edgevit_kernels::attention::AttentionKernels;
use edgevit_kernels::gemm::bf16::Bf16Kernel;
use edgevit_kernels::gemm::f16::F16Kernel;
use edgevit_kernels::gemm::f32::F32Kernel;
use edgevit_kernels::gemm::i8::I8Kernel;
use edgevit_kernels::rows::RowIsa;

use crate::config::{Architecture, ModelConfig, WeightDType};
use crate::error::{Error, Result};
use crate::format::EvitFile;

use input::Prep;
pub use session::{OpTimes, Session};
use weights::{resolve, LayerWeights, LinearWeights, Weights};

/// An open model. `Send + Sync`: threads may share one, each with its own [`Session`].
pub struct Model {
    file: EvitFile,
    weights: Weights,
    i8_kernel: I8Kernel,
    f16_kernel: F16Kernel,
    f32_kernel: F32Kernel,
    /// Chosen once, like the others: `best()` builds a list, and a forward pass allocates
    /// nothing.
    bf16_kernel: Bf16Kernel,
}

impl Model {
    /// Maps and validates a model file. Fails with a message naming the problem if the file is
    /// damaged, truncated, or holds tensors this architecture does not have.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(EvitFile::open(path.as_ref())?)
    }

    /// [`Model::open`], reading the file into memory instead of mapping it (`--no-mmap`): the
    /// model is then unaffected if the file is changed or removed while in use.
    pub fn open_in_memory(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(EvitFile::read(path.as_ref())?)
    }

    /// A model from an already opened file (mapped, read, or built in memory). Fails if the
    /// `EDGEVIT_ISA` environment variable holds no cap this build knows
    /// ([`edgevit_kernels::cpu`]).
    pub fn from_file(file: EvitFile) -> Result<Self> {
        edgevit_kernels::cpu::cap().map_err(Error::Unsupported)?;
        let weights = resolve(&file).map_err(|m| Error::format(file.path(), m))?;
        Ok(Model {
            file,
            weights,
            i8_kernel: I8Kernel::best(),
            f16_kernel: F16Kernel::best(),
            f32_kernel: F32Kernel::best(),
            bf16_kernel: Bf16Kernel::best(),
        })
    }

    /// The configuration the file holds.
    pub fn config(&self) -> &ModelConfig {
        &self.file.header().config
    }
    /// The network's shape.
    pub fn architecture(&self) -> &Architecture {
        &self.config().architecture
    }
    /// Class names, by index.
    pub fn labels(&self) -> &[String] {
        &self.config().labels
    }
    /// The open file the weights are read from.
    pub fn file(&self) -> &EvitFile {
        &self.file
    }

    /// The int8 GEMM kernel in use (chosen from the CPU's features at open).
    pub fn i8_kernel(&self) -> I8Kernel {
        self.i8_kernel
    }

    /// Uses another int8 kernel, e.g. to compare kernels. Fails if this CPU cannot run it.
    pub fn set_i8_kernel(&mut self, kernel: I8Kernel) -> Result<()> {
        if !I8Kernel::available().contains(&kernel) {
            return Err(Error::Unsupported(format!("this CPU cannot run {}", kernel.name())));
        }
        self.i8_kernel = kernel;
        Ok(())
    }

    /// The f16-weight GEMM kernel in use (chosen from the CPU's features at open).
    pub fn f16_kernel(&self) -> F16Kernel {
        self.f16_kernel
    }

    /// Uses another f16-weight kernel, e.g. to measure half-precision arithmetic against f32
    /// accumulation. Fails if this CPU cannot run it.
    pub fn set_f16_kernel(&mut self, kernel: F16Kernel) -> Result<()> {
        if !F16Kernel::available().contains(&kernel) {
            return Err(Error::Unsupported(format!("this CPU cannot run {}", kernel.name())));
        }
        self.f16_kernel = kernel;
        Ok(())
    }

    /// The GEMM kernels the Linear layers use.
    fn gemm_kernels(&self) -> Vec<&'static str> {
        let w = &self.weights;
        let mut v = Vec::new();
        let all = std::iter::once(&w.patch)
            .chain(std::iter::once(&w.head))
            .chain(w.layers.iter().flat_map(|l| [&l.qkv, &l.proj, &l.fc1, &l.fc2]));
        let (mut int8, mut f16, mut f32) = (false, false, false);
        for lin in all {
            match lin {
                LinearWeights::Int8 { .. } => int8 = true,
                LinearWeights::F16 { .. } => f16 = true,
                LinearWeights::F32 { .. } => f32 = true,
            }
        }
        if int8 {
            v.push(self.i8_kernel.name());
        }
        if f16 {
            v.push(self.f16_kernel.name());
        }
        if f32 {
            v.push(self.f32_kernel.name());
        }
        v
    }

    /// The kernels of attention's two products: for int8 models, int8 scores on aarch64 (and
    /// half-precision values where the CPU computes in half), bf16 scores on x86-64 CPUs with
    /// AVX512-BF16; f32 otherwise (`AttentionKernels::int8`).
    pub fn attention_kernels(&self) -> AttentionKernels {
        if self.config().weights.dtype == WeightDType::Int8 {
            AttentionKernels::int8(self.i8_kernel, self.f16_kernel, self.f32_kernel, self.bf16_kernel)
        } else {
            AttentionKernels::f32(self.f32_kernel)
        }
    }

    fn linear_kernel(&self, lin: &LinearWeights) -> &'static str {
        match lin {
            LinearWeights::Int8 { .. } => self.i8_kernel.name(),
            LinearWeights::F16 { .. } => self.f16_kernel.name(),
            LinearWeights::F32 { .. } => self.f32_kernel.name(),
        }
    }

    /// The kernels behind each kind of operation of [`OpTimes`], by name, for profiles.
    pub fn op_kernels(&self) -> [(&'static str, String); 7] {
        let w = &self.weights;
        let [layernorm, softmax, gelu, quantize] = RowIsa::best().kernel_names();
        let int8 = self.config().weights.dtype == WeightDType::Int8;
        let with_quantize = |k: String| if int8 { format!("{k} + {quantize}") } else { k };
        let first = w.layers.first();
        let layer =
            |f: fn(&LayerWeights) -> &LinearWeights| first.map_or("-", |l| self.linear_kernel(f(l))).to_string();
        let [scores, values] = self.attention_kernels().names();
        [
            ("patch_embed", self.linear_kernel(&w.patch).to_string()),
            ("layernorm", with_quantize(layernorm)),
            ("qkv", layer(|l| &l.qkv)),
            ("attention", format!("scores {scores}, {softmax}, values {values}")),
            ("projection", layer(|l| &l.proj)),
            ("mlp", format!("{} + {gelu} + {}", layer(|l| &l.fc1), layer(|l| &l.fc2))),
            ("classifier", self.linear_kernel(&w.head).to_string()),
        ]
    }

    /// Every kernel the forward pass uses, by name, for `info` and `bench`: the GEMM kernel of
    /// each weight dtype, attention's two, and the row kernels.
    pub fn kernel_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.gemm_kernels().into_iter().map(str::to_string).collect();
        let [scores, values] = self.attention_kernels().names();
        v.push(format!("attention: scores {scores}, values {values}"));
        v.extend(RowIsa::best().kernel_names());
        v
    }

    /// Classifies a decoded image: preprocessing as the model file says, a forward pass, and
    /// the `k` most probable classes. Makes its own scratch [`Session`]; to classify many
    /// images, make one session and use [`crate::preprocess::preprocess`] and
    /// [`Model::forward`], which then allocate nothing per image.
    pub fn classify(&self, image: &crate::preprocess::RgbImage, k: usize) -> Result<Vec<Prediction>> {
        let pixels = crate::preprocess::preprocess(image, &self.config().preprocess);
        let mut session = self.session();
        Ok(top_k(self.forward(&pixels, &mut session)?, k, self.labels()))
    }

    /// Scratch buffers for one forward pass at a time, sized for the current rayon pool's
    /// threads (make sessions after configuring the pool).
    pub fn session(&self) -> Session {
        let halves = self.f16_kernel.half_arithmetic() && self.file.header().config.weights.dtype == WeightDType::F16;
        Session::new(self.architecture(), halves)
    }

    fn f32s(&self, index: usize) -> &[f32] {
        // Alignment (64) and length (a whole number of elements) were checked at open.
        bytemuck::cast_slice(self.file.tensor_bytes(index))
    }
    fn i32s(&self, index: usize) -> &[i32] {
        bytemuck::cast_slice(self.file.tensor_bytes(index))
    }
    fn i8s(&self, index: usize) -> &[i8] {
        bytemuck::cast_slice(self.file.tensor_bytes(index))
    }
    fn u16s(&self, index: usize) -> &[u16] {
        bytemuck::cast_slice(self.file.tensor_bytes(index))
    }

    /// How inputs are prepared for this model's kernels.
    fn prep(&self) -> Prep {
        Prep { i8: self.i8_kernel, halves: self.f16_kernel.half_arithmetic() }
    }
}

/// One ranked class.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The class index.
    pub index: usize,
    /// Its label (the index as text when the file has no label for it).
    pub label: String,
    /// Softmax probability over all classes.
    pub prob: f32,
}

/// The `k` most probable classes (softmax over `logits`), best first; ties keep index order.
pub fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            prob: ((logits[i] as f64 - max).exp() / sum) as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::input::{first_non_finite, im2col};
    use super::*;

    #[test]
    fn first_non_finite_finds_each_kind_anywhere() {
        for len in [0usize, 1, 15, 16, 17, 150_528] {
            let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 1e30).collect();
            assert_eq!(first_non_finite(&v), None, "{len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, len / 2, len.saturating_sub(1)].into_iter().filter(|&at| at < len) {
                    let keep = v[at];
                    v[at] = bad;
                    assert_eq!(first_non_finite(&v), Some(at), "{len} {bad} at {at}");
                    v[at] = keep;
                }
            }
        }
    }

    #[test]
    fn top_k_ranks_and_normalises() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let logits = [1.0f32, 3.0, 3.0f32.ln() + 1.0];
        let top = top_k(&logits, 2, &labels);
        assert_eq!(top[0].index, 1);
        assert_eq!(top[1].index, 2);
        // probabilities: e^1, e^3, 3e^1 over their sum
        let sum = 1f64.exp() + 3f64.exp() + 3.0 * 1f64.exp();
        assert!((top[0].prob as f64 - 3f64.exp() / sum).abs() < 1e-6);
        assert!((top[1].prob as f64 - 3.0 * 1f64.exp() / sum).abs() < 1e-6);
    }

    #[test]
    fn im2col_orders_channel_then_row_then_column() {
        let arch = Architecture {
            image_height: 4,
            image_width: 4,
            patch_size: 2,
            num_channels: 3,
            hidden_size: 2,
            num_layers: 1,
            num_heads: 1,
            intermediate_size: 2,
            num_labels: 1,
            layer_norm_eps: 1e-6,
            activation: crate::config::ActivationName::Gelu,
            qkv_bias: true,
            family: Default::default(),
            distillation_token: false,
            classifier: Default::default(),
        };
        let pixels: Vec<f32> = (0..48).map(|v| v as f32).collect();
        let mut out = vec![0.0; 4 * 12];
        im2col(&pixels, &arch, &mut out);
        // patch 1 = grid (0, 1): channel 0 rows 0..2, columns 2..4, then channels 1 and 2.
        assert_eq!(&out[12..24], &[2., 3., 6., 7., 18., 19., 22., 23., 34., 35., 38., 39.]);

        // Patches of 16 take a fixed-size copy: every value where the formula puts it.
        let (p, h, w) = (16, 32, 48);
        let arch = Architecture { image_height: h, image_width: w, patch_size: p, ..arch };
        let pixels: Vec<f32> = (0..3 * h * w).map(|v| v as f32).collect();
        let mut out = vec![0.0; 6 * 3 * p * p];
        im2col(&pixels, &arch, &mut out);
        for (idx, row) in out.chunks_exact(3 * p * p).enumerate() {
            let (gy, gx) = (idx / 3, idx % 3);
            for (i, &v) in row.iter().enumerate() {
                let (c, py, px) = (i / (p * p), i / p % p, i % p);
                assert_eq!(v, pixels[c * h * w + (gy * p + py) * w + gx * p + px], "patch {idx}, value {i}");
            }
        }
    }
}
