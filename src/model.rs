//! A validated model and its forward pass (f32 or int8 Linear layers).
//!
//! The weights are borrowed straight from the memory-mapped file; a [`Session`] holds every
//! buffer one forward pass needs, sized once from the architecture, so classifying allocates
//! nothing after the session is made (tests/zero_alloc.rs). Call [`Model::forward`] from inside
//! the rayon pool (`ThreadPool::install`, as the CLI does) for that to hold exactly: parallel
//! sections started from outside the pool go through rayon's shared queue, which allocates a
//! small block every 63 jobs.

use std::path::Path;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use edgevit_kernels::attention::{attention, AttentionKernels, AttentionScratch, AttentionShape};
use edgevit_kernels::gemm::f16::{f16_gemm, f16_gemm_halves, round_row_to_halves, F16Kernel, PackedF16};
use edgevit_kernels::gemm::f32::{f32_gemm, F32Kernel, PackedF32};
use edgevit_kernels::gemm::i8::{i8_gemm, I8Kernel, PackedI8, QuantRows};
use edgevit_kernels::gemm::pack::{k4n16_channel_sums, padded_k};
use edgevit_kernels::gemm::Epilogue;
use edgevit_kernels::rows::activation::Activation;
use edgevit_kernels::rows::layernorm::layernorm_row;
use edgevit_kernels::rows::quantize::{gelu_quantize_row, quantize_row};
use edgevit_kernels::rows::RowIsa;
use edgevit_kernels::Threads;

use crate::config::{Architecture, Classifier, ModelConfig, WeightDType, WeightStorage};
use crate::error::{Error, Result};
use crate::format::{DType, EvitFile, Layout};

/// One tensor a model file must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub layout: Layout,
    pub shape: Vec<usize>,
}

fn spec(name: String, dtype: DType, layout: Layout, shape: Vec<usize>) -> TensorSpec {
    TensorSpec { name, dtype, layout, shape }
}

/// The tensors a model of this architecture and weight storage must hold, in file order.
/// The tools write exactly this list and [`Model::open`] demands it: one definition of the names.
///
/// A Linear layer `X` stored in f32 has `X.weight` (`[out, in]`, row-major) and `X.bias`; in
/// int8 it has `X.weight` (`[out, in]` packed k4n16), `X.scale` (f32 per output channel),
/// `X.sum` (int32 per output channel: the sum of its quantized weights) and `X.bias`.
pub fn expected_tensors(arch: &Architecture, storage: &WeightStorage) -> Vec<TensorSpec> {
    let d = arch.hidden_size;
    let f32v = |name: String, shape: Vec<usize>| spec(name, DType::F32, Layout::RowMajor, shape);
    let linear = |v: &mut Vec<TensorSpec>, name: &str, out: usize, inp: usize, bias: bool| {
        match storage.dtype_of(name) {
            WeightDType::F32 => v.push(spec(format!("{name}.weight"), DType::F32, Layout::K1n16, vec![out, inp])),
            WeightDType::F16 => v.push(spec(format!("{name}.weight"), DType::F16, Layout::K1n16, vec![out, inp])),
            WeightDType::Int8 => {
                v.push(spec(format!("{name}.weight"), DType::I8, Layout::K4n16, vec![out, inp]));
                v.push(f32v(format!("{name}.scale"), vec![out]));
                v.push(spec(format!("{name}.sum"), DType::I32, Layout::RowMajor, vec![out]));
            }
        }
        if bias {
            v.push(f32v(format!("{name}.bias"), vec![out]));
        }
    };
    let mut v = Vec::new();
    linear(&mut v, "patch_embed", d, arch.patch_len(), true);
    v.push(f32v("cls_token".into(), vec![d]));
    if arch.distillation_token {
        v.push(f32v("dist_token".into(), vec![d]));
    }
    v.push(f32v("pos_embed".into(), vec![arch.tokens(), d]));
    for l in 0..arch.num_layers {
        let p = |s: &str| format!("layers.{l}.{s}");
        v.push(f32v(p("ln1.weight"), vec![d]));
        v.push(f32v(p("ln1.bias"), vec![d]));
        linear(&mut v, &p("qkv"), 3 * d, d, arch.qkv_bias);
        linear(&mut v, &p("proj"), d, d, true);
        v.push(f32v(p("ln2.weight"), vec![d]));
        v.push(f32v(p("ln2.bias"), vec![d]));
        linear(&mut v, &p("fc1"), arch.intermediate_size, d, true);
        linear(&mut v, &p("fc2"), d, arch.intermediate_size, true);
    }
    v.push(f32v("norm.weight".into(), vec![d]));
    v.push(f32v("norm.bias".into(), vec![d]));
    linear(&mut v, "head", arch.num_labels, arch.head_inputs(), true);
    v
}

/// A Linear layer's tensors, as indices into the file's tensor table.
#[derive(Clone, Copy, Debug)]
enum LinearWeights {
    F32 { weight: usize, bias: Option<usize>, out: usize, inp: usize },
    Int8 { weight: usize, scale: usize, sum: usize, bias: Option<usize>, out: usize, inp: usize },
    F16 { weight: usize, bias: Option<usize>, out: usize, inp: usize },
}

impl LinearWeights {
    fn is_int8(&self) -> bool {
        matches!(self, LinearWeights::Int8 { .. })
    }
    fn is_f16(&self) -> bool {
        matches!(self, LinearWeights::F16 { .. })
    }
}

struct LayerWeights {
    ln1: (usize, usize),
    qkv: LinearWeights,
    proj: LinearWeights,
    ln2: (usize, usize),
    fc1: LinearWeights,
    fc2: LinearWeights,
}

struct Weights {
    patch: LinearWeights,
    cls: usize,
    dist: Option<usize>,
    pos: usize,
    layers: Vec<LayerWeights>,
    norm: (usize, usize),
    head: LinearWeights,
}

/// The input of a Linear layer: f32 rows, or the same rows quantized to int8 per row.
enum LinearInput<'a> {
    F32(&'a [f32]),
    Int8(QuantRows<'a>),
    /// Rows already rounded to half, packed, for a half-precision f16 kernel.
    Halves(&'a [u16]),
}

/// An open model. `Send + Sync`: threads may share one, each with its own [`Session`].
pub struct Model {
    file: EvitFile,
    weights: Weights,
    i8_kernel: I8Kernel,
    f16_kernel: F16Kernel,
    f32_kernel: F32Kernel,
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

    /// A model from an already opened file (mapped, read, or built in memory).
    pub fn from_file(file: EvitFile) -> Result<Self> {
        let weights = resolve(&file).map_err(|m| Error::format(file.path(), m))?;
        Ok(Model {
            file,
            weights,
            i8_kernel: I8Kernel::best(),
            f16_kernel: F16Kernel::best(),
            f32_kernel: F32Kernel::best(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.file.header().config
    }
    pub fn architecture(&self) -> &Architecture {
        &self.config().architecture
    }
    pub fn labels(&self) -> &[String] {
        &self.config().labels
    }
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

    /// The kernels of attention's two products: int8 scores (and half-precision values where
    /// the CPU computes in half) for int8 models, f32 otherwise.
    pub fn attention_kernels(&self) -> AttentionKernels {
        if self.config().weights.dtype == WeightDType::Int8 {
            AttentionKernels::int8(self.i8_kernel, self.f16_kernel, self.f32_kernel)
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

    /// Classifies one raw camera frame (see [`crate::stream`]), converting and resizing it in
    /// one pass.
    pub fn classify_frame(
        &self,
        frame: &crate::stream::RawFrame<'_>,
        yuv: &crate::stream::YuvToRgb,
        k: usize,
    ) -> Result<Vec<Prediction>> {
        let mut pixels = Vec::new();
        frame.preprocess_into(&self.config().preprocess, yuv, &mut pixels);
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

    /// `out` (rows x out features, row stride `ldo`) gets `input * W^T + b`, stored, activated
    /// or added, per `epilogue`.
    fn linear(
        &self,
        lin: &LinearWeights,
        input: LinearInput<'_>,
        rows: usize,
        out: &mut [f32],
        ldo: usize,
        epilogue: Epilogue,
    ) {
        let threads = Threads(rayon::current_num_threads());
        match (*lin, input) {
            (LinearWeights::F32 { weight, bias, out: n, inp: k }, LinearInput::F32(x)) => {
                let w = PackedF32 { data: self.f32s(weight), n, k };
                f32_gemm(self.f32_kernel, x, k, rows, w, bias.map(|b| self.f32s(b)), out, ldo, epilogue, threads);
            }
            (LinearWeights::F16 { weight, bias, out: n, inp: k }, LinearInput::F32(x)) => {
                let w = PackedF16 { data: self.u16s(weight), n, k };
                f16_gemm(self.f16_kernel, x, k, rows, w, bias.map(|b| self.f32s(b)), out, ldo, epilogue, threads);
            }
            (LinearWeights::F16 { weight, bias, out: n, inp: k }, LinearInput::Halves(x)) => {
                let w = PackedF16 { data: self.u16s(weight), n, k };
                let bias = bias.map(|b| self.f32s(b));
                f16_gemm_halves(self.f16_kernel, x, rows, w, bias, out, ldo, epilogue, threads);
            }
            (LinearWeights::Int8 { weight, scale, sum, bias, out: n, inp: k }, LinearInput::Int8(q)) => {
                let w = PackedI8 { data: self.i8s(weight), n, k, scales: self.f32s(scale), sums: self.i32s(sum) };
                i8_gemm(self.i8_kernel, q, w, bias.map(|b| self.f32s(b)), out, ldo, epilogue, threads);
            }
            _ => unreachable!("the caller prepares the input in the layer's dtype"),
        }
    }

    /// Runs the network on one preprocessed image (`channels x height x width`, CHW order) and
    /// returns its logits, which live in `session` until the next call.
    pub fn forward<'s>(&self, pixels: &[f32], s: &'s mut Session) -> Result<&'s [f32]> {
        let a = self.architecture();
        if pixels.len() != a.input_len() {
            return Err(Error::Input(format!(
                "input has {} values; this model takes {}x{}x{} = {}",
                pixels.len(),
                a.num_channels,
                a.image_height,
                a.image_width,
                a.input_len()
            )));
        }
        if let Some(i) = first_non_finite(pixels) {
            return Err(Error::Input(format!("input value {i} is {} (NaN or infinite)", pixels[i])));
        }
        let threads = Threads(rayon::current_num_threads());
        let (t, d, inter) = (a.tokens(), a.hidden_size, a.intermediate_size);
        let w = &self.weights;
        let Session { patches, x, h, qkv, ctx, mlp, scores, logits, q, times, layer_times } = s;
        *times = OpTimes::default();
        layer_times.fill(OpTimes::default());
        let mut clock = Laps(Instant::now());

        // Patch embedding: a convolution with stride = kernel is a matmul over flattened patches.
        im2col(pixels, a, patches);
        let np = a.num_patches();
        let input = prepare(&w.patch, patches, np, a.patch_len(), q, self.prep());
        let prefix = a.prefix_tokens();
        self.linear(&w.patch, input, np, &mut x[prefix * d..], d, Epilogue::Store);
        x[..d].copy_from_slice(self.f32s(w.cls));
        if let Some(dist) = w.dist {
            x[d..2 * d].copy_from_slice(self.f32s(dist));
        }
        for (x, p) in x.iter_mut().zip(self.f32s(w.pos)) {
            *x += p;
        }
        clock.lap(&mut times.patch_embed);

        let eps = a.layer_norm_eps;
        let act = a.activation.kernel();
        let shape = attention_shape(a);
        let attn = self.attention_kernels();
        for (l, lt) in w.layers.iter().zip(layer_times.iter_mut()) {
            let ln = (self.f32s(l.ln1.0), self.f32s(l.ln1.1), eps);
            let input = normalize_and_prepare(&l.qkv, x, ln, h, t, q, self.prep());
            clock.lap2(&mut times.layernorm, &mut lt.layernorm);
            self.linear(&l.qkv, input, t, qkv, 3 * d, Epilogue::Store);
            clock.lap2(&mut times.qkv, &mut lt.qkv);
            attention(attn, qkv, ctx, scores, shape, threads);
            clock.lap2(&mut times.attention, &mut lt.attention);
            let input = prepare(&l.proj, ctx, t, d, q, self.prep());
            self.linear(&l.proj, input, t, x, d, Epilogue::Accumulate);
            clock.lap2(&mut times.projection, &mut lt.projection);

            let ln = (self.f32s(l.ln2.0), self.f32s(l.ln2.1), eps);
            let input = normalize_and_prepare(&l.fc1, x, ln, h, t, q, self.prep());
            clock.lap2(&mut times.layernorm, &mut lt.layernorm);
            // An int8 fc2 takes GELU in the row pass that quantizes its input; otherwise fc1's
            // epilogue applies the activation.
            let gelu_in_quantize = l.fc2.is_int8() && act == Activation::Gelu;
            let fc1_epilogue = if gelu_in_quantize { Epilogue::Store } else { Epilogue::Activate(act) };
            self.linear(&l.fc1, input, t, mlp, inter, fc1_epilogue);
            let input = if gelu_in_quantize {
                prepare_gelu(mlp, t, inter, q, self.prep())
            } else {
                prepare(&l.fc2, mlp, t, inter, q, self.prep())
            };
            self.linear(&l.fc2, input, t, x, d, Epilogue::Accumulate);
            clock.lap2(&mut times.mlp, &mut lt.mlp);
        }

        // Only the rows the classifier reads are normalised.
        let norm = (self.f32s(w.norm.0), self.f32s(w.norm.1));
        match a.classifier {
            Classifier::ClassToken => layernorm_row(&x[..d], &mut h[..d], norm.0, norm.1, eps),
            Classifier::ClassAndDistillationTokens => {
                layernorm_row(&x[..d], &mut h[..d], norm.0, norm.1, eps);
                layernorm_row(&x[d..2 * d], &mut h[d..2 * d], norm.0, norm.1, eps);
            }
            Classifier::MeanOfPatches => {
                let (normed, mean) = h[..2 * d].split_at_mut(d);
                mean_of_rows(&x[prefix * d..t * d], d, mean);
                layernorm_row(mean, normed, norm.0, norm.1, eps);
            }
        }
        clock.lap(&mut times.layernorm);
        let width = a.head_inputs();
        let input = prepare(&w.head, &h[..width], 1, width, q, self.prep());
        self.linear(&w.head, input, 1, logits, a.num_labels, Epilogue::Store);
        clock.lap(&mut times.classifier);
        if let Some(i) = first_non_finite(logits) {
            return Err(Error::Input(format!(
                "the model computed a non-finite logit ({} for class {i}) on this input: its weights overflow f32",
                logits[i]
            )));
        }
        Ok(logits)
    }
}

/// The mean of the `d`-wide rows of `rows`, summed in f64 so that the order of a few hundred
/// additions does not show.
fn mean_of_rows(rows: &[f32], d: usize, out: &mut [f32]) {
    let n = rows.len() / d;
    for (c, o) in out.iter_mut().enumerate() {
        let sum: f64 = rows[c..].iter().step_by(d).map(|&v| v as f64).sum();
        *o = (sum / n as f64) as f32;
    }
}

fn attention_shape(a: &Architecture) -> AttentionShape {
    AttentionShape { tokens: a.tokens(), heads: a.num_heads, head_dim: a.head_dim() }
}

/// The input for `lin`: the f32 rows themselves, or those rows quantized per row into `q`.
fn prepare<'a>(
    lin: &LinearWeights,
    x: &'a [f32],
    rows: usize,
    k: usize,
    q: &'a mut QuantBuffer,
    prep: Prep,
) -> LinearInput<'a> {
    // (A session made before `set_f16_kernel` chose a half-precision kernel has no room for
    // halves: its layers take the f32 path.)
    if lin.is_f16() && prep.halves && q.halves.len() >= rows * k {
        return halves_or_f32(&x[..rows * k], k, &mut q.halves);
    }
    if !lin.is_int8() {
        return LinearInput::F32(&x[..rows * k]);
    }
    let kernel = prep.i8;
    let stride = padded_k(k);
    let biased = kernel.wants_biased();
    let params = q.scales[..rows].par_iter_mut().zip(q.offsets[..rows].par_iter_mut());
    let rows_in = x[..rows * k].par_chunks_exact(k).zip(q.data[..rows * stride].par_chunks_exact_mut(stride));
    rows_in.zip(params).with_min_len(16).for_each(|((src, dst), (s, z))| {
        (*s, *z) = quantize_row(src, dst, biased);
    });
    let (data, scales, offsets) = (&q.data[..rows * stride], &q.scales[..rows], &q.offsets[..rows]);
    LinearInput::Int8(QuantRows { data, rows, stride, scales, offsets, biased: kernel.wants_biased() })
}

/// GELU of `rows` rows of `x` in place, quantized per row into `q` for an int8 layer, in one
/// row pass ([`gelu_quantize_row`]).
fn prepare_gelu<'a>(x: &'a mut [f32], rows: usize, k: usize, q: &'a mut QuantBuffer, prep: Prep) -> LinearInput<'a> {
    let stride = padded_k(k);
    let biased = prep.i8.wants_biased();
    let params = q.scales[..rows].par_iter_mut().zip(q.offsets[..rows].par_iter_mut());
    let rows_in = x[..rows * k].par_chunks_exact_mut(k).zip(q.data[..rows * stride].par_chunks_exact_mut(stride));
    rows_in.zip(params).with_min_len(16).for_each(|((src, dst), (s, z))| {
        (*s, *z) = gelu_quantize_row(src, dst, biased);
    });
    let (data, scales, offsets) = (&q.data[..rows * stride], &q.scales[..rows], &q.offsets[..rows]);
    LinearInput::Int8(QuantRows { data, rows, stride, scales, offsets, biased })
}

/// LayerNorm of `rows` rows of `x` into `h`, then [`prepare`] for `lin`, row by row in
/// parallel: an int8 layer quantizes each row as soon as it is normalised, while it is still
/// in L1, instead of in a second pass over `h`.
fn normalize_and_prepare<'a>(
    lin: &LinearWeights,
    x: &[f32],
    (gamma, beta, eps): (&[f32], &[f32], f32),
    h: &'a mut [f32],
    rows: usize,
    q: &'a mut QuantBuffer,
    prep: Prep,
) -> LinearInput<'a> {
    let d = gamma.len();
    let rows_in = x[..rows * d].par_chunks_exact(d).zip(h[..rows * d].par_chunks_exact_mut(d));
    if lin.is_f16() && prep.halves && q.halves.len() >= rows * d {
        // Each row rounded to half as soon as it is normalised.
        let dst = q.halves[..rows * d].par_chunks_exact_mut(d);
        // Counted, not `all`: every row must be normalised even after one does not fit.
        let overflowing = rows_in.zip(dst).with_min_len(8).map(|((x, h), dst)| {
            layernorm_row(x, h, gamma, beta, eps);
            usize::from(!round_row_to_halves(h, dst))
        });
        if overflowing.sum::<usize>() == 0 {
            return LinearInput::Halves(&q.halves[..rows * d]);
        }
        return LinearInput::F32(&h[..rows * d]);
    }
    if !lin.is_int8() {
        rows_in.with_min_len(8).for_each(|(x, h)| layernorm_row(x, h, gamma, beta, eps));
        return LinearInput::F32(&h[..rows * d]);
    }
    let (stride, biased) = (padded_k(d), prep.i8.wants_biased());
    let params = q.scales[..rows].par_iter_mut().zip(q.offsets[..rows].par_iter_mut());
    let dst = q.data[..rows * stride].par_chunks_exact_mut(stride);
    rows_in.zip(dst).zip(params).with_min_len(8).for_each(|(((x, h), dst), (s, z))| {
        layernorm_row(x, h, gamma, beta, eps);
        (*s, *z) = quantize_row(h, dst, biased);
    });
    let (data, scales, offsets) = (&q.data[..rows * stride], &q.scales[..rows], &q.offsets[..rows]);
    LinearInput::Int8(QuantRows { data, rows, stride, scales, offsets, biased })
}

/// Activations prepared for the next layer's kernel: quantized per row for int8 layers (data,
/// rows x K padded to 4; scales; offsets), or rounded to half for a half-precision f16 kernel.
struct QuantBuffer {
    data: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
    halves: Vec<u16>,
}

/// What the preparation of a layer's input needs to know of the kernels.
#[derive(Clone, Copy)]
struct Prep {
    i8: I8Kernel,
    /// The f16 kernel computes in half precision: give it rows rounded to half once.
    halves: bool,
}

/// `x` (rows of `k`) rounded to half into `halves`, row by row in parallel; the rows as they
/// are when one overflows half (the f32 path keeps such a layer exact).
fn halves_or_f32<'a>(x: &'a [f32], k: usize, halves: &'a mut [u16]) -> LinearInput<'a> {
    let dst = halves[..x.len()].par_chunks_exact_mut(k);
    if x.par_chunks_exact(k).zip(dst).with_min_len(8).all(|(src, dst)| round_row_to_halves(src, dst)) {
        LinearInput::Halves(&halves[..x.len()])
    } else {
        LinearInput::F32(x)
    }
}

/// Rearranges a CHW image into one row per patch (row-major over the patch grid), each row in
/// the (channel, y, x) order of a flattened convolution kernel.
fn im2col(pixels: &[f32], a: &Architecture, out: &mut [f32]) {
    let (p, h, w) = (a.patch_size, a.image_height, a.image_width);
    let gw = w / p;
    for (idx, row) in out.chunks_exact_mut(a.patch_len()).enumerate() {
        let (gy, gx) = (idx / gw, idx % gw);
        for c in 0..a.num_channels {
            for py in 0..p {
                let src = c * h * w + (gy * p + py) * w + gx * p;
                row[(c * p + py) * p..][..p].copy_from_slice(&pixels[src..src + p]);
            }
        }
    }
}

fn resolve(file: &EvitFile) -> Result<Weights, String> {
    let header = file.header();
    let config = &header.config;
    let arch = &config.architecture;
    let expected = expected_tensors(arch, &config.weights);
    let mut index = HashMap::new();
    for (i, t) in header.tensors.iter().enumerate() {
        index.insert(t.name.as_str(), i);
    }
    let mut ids = HashMap::new();
    for e in &expected {
        let i = *index
            .get(e.name.as_str())
            .ok_or_else(|| format!("tensor '{}' ({:?} {:?}) is missing", e.name, e.dtype, e.shape))?;
        let t = &header.tensors[i];
        if t.shape.iter().map(|&d| d as usize).ne(e.shape.iter().copied()) {
            return Err(format!("tensor '{}' has shape {:?}; the architecture needs {:?}", e.name, t.shape, e.shape));
        }
        if t.dtype != e.dtype || t.layout != e.layout {
            // f32 Linear weights were row-major before the f32 kernels: say how to recover.
            let hint = if t.dtype == DType::F32 && t.layout == Layout::RowMajor && e.layout == Layout::K1n16 {
                " (this file predates packed f32 weights: convert the checkpoint again with edgevit-tools quantize)"
            } else {
                ""
            };
            return Err(format!(
                "tensor '{}' is {:?}/{:?}; a {:?} model needs {:?}/{:?}{hint}",
                e.name, t.dtype, t.layout, config.weights.dtype, e.dtype, e.layout
            ));
        }
        ids.insert(e.name.clone(), i);
    }
    if header.tensors.len() != expected.len() {
        let extra = header.tensors.iter().find(|t| !ids.contains_key(&t.name)).map(|t| t.name.as_str()).unwrap_or("?");
        return Err(format!("unexpected tensor '{extra}' for this architecture"));
    }
    let id = |name: String| ids[&name];
    let linear = |name: &str, out: usize, inp: usize| -> Result<LinearWeights, String> {
        let bias = ids.get(&format!("{name}.bias")).copied();
        let weight = id(format!("{name}.weight"));
        Ok(match config.weights.dtype_of(name) {
            WeightDType::F32 => LinearWeights::F32 { weight, bias, out, inp },
            WeightDType::F16 => LinearWeights::F16 { weight, bias, out, inp },
            WeightDType::Int8 => {
                let scale = id(format!("{name}.scale"));
                let scales: &[f32] = bytemuck::cast_slice(file.tensor_bytes(scale));
                if let Some(c) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(format!(
                        "tensor '{name}.scale' has scale {} at channel {c}; scales must be finite and positive",
                        scales[c]
                    ));
                }
                LinearWeights::Int8 { weight, scale, sum: id(format!("{name}.sum")), bias, out, inp }
            }
        })
    };
    let (d, i) = (arch.hidden_size, arch.intermediate_size);
    let mut layers = Vec::with_capacity(arch.num_layers);
    for l in 0..arch.num_layers {
        let p = |s: &str| format!("layers.{l}.{s}");
        layers.push(LayerWeights {
            ln1: (id(p("ln1.weight")), id(p("ln1.bias"))),
            qkv: linear(&p("qkv"), 3 * d, d)?,
            proj: linear(&p("proj"), d, d)?,
            ln2: (id(p("ln2.weight")), id(p("ln2.bias"))),
            fc1: linear(&p("fc1"), i, d)?,
            fc2: linear(&p("fc2"), d, i)?,
        });
    }
    let weights = Weights {
        patch: linear("patch_embed", d, arch.patch_len())?,
        cls: id("cls_token".into()),
        dist: arch.distillation_token.then(|| id("dist_token".into())),
        pos: id("pos_embed".into()),
        layers,
        norm: (id("norm.weight".into()), id("norm.bias".into())),
        head: linear("head", arch.num_labels, arch.head_inputs())?,
    };
    check_sums(file, &weights)?;
    Ok(weights)
}

/// Every int8 layer's stored channel sums must equal the sums of its weights: only some
/// kernels read them, so a file whose sums lie would answer differently on different CPUs.
/// Checked in parallel; reads each int8 weight once.
fn check_sums(file: &EvitFile, w: &Weights) -> Result<(), String> {
    let int8: Vec<(usize, usize, usize, usize)> = std::iter::once(&w.patch)
        .chain(std::iter::once(&w.head))
        .chain(w.layers.iter().flat_map(|l| [&l.qkv, &l.proj, &l.fc1, &l.fc2]))
        .filter_map(|lin| match *lin {
            LinearWeights::Int8 { weight, sum, out, inp, .. } => Some((weight, sum, out, inp)),
            _ => None,
        })
        .collect();
    int8.par_iter().try_for_each(|&(weight, sum, out, inp)| {
        let stored: &[i32] = bytemuck::cast_slice(file.tensor_bytes(sum));
        let packed: &[i8] = bytemuck::cast_slice(file.tensor_bytes(weight));
        if k4n16_channel_sums(packed, out, inp) == stored {
            return Ok(());
        }
        let name = &file.header().tensors[sum].name;
        let weights = &file.header().tensors[weight].name;
        Err(format!(
            "tensor '{name}' does not match the sums of '{weights}': the file is damaged or was not made by edgevit-tools"
        ))
    })
}

/// The index of the first NaN or infinity in `v`. `x * 0` is 0 for a finite `x` and NaN
/// otherwise, so 16 lanes of sums vectorise where a search stopping at the first hit does not
/// (150 k input values: 0.15 ms -> 0.01 ms).
fn first_non_finite(v: &[f32]) -> Option<usize> {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x * 0.0;
        }
    }
    if lanes.iter().all(|&l| l == 0.0) && rest.iter().all(|x| x.is_finite()) {
        return None;
    }
    v.iter().position(|x| !x.is_finite())
}

/// Every buffer one forward pass uses. Make one per thread with [`Model::session`].
pub struct Session {
    patches: Vec<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    mlp: Vec<f32>,
    scores: AttentionScratch,
    logits: Vec<f32>,
    q: QuantBuffer,
    times: OpTimes,
    /// Per encoder layer (its layernorm, qkv, attention, projection and mlp).
    layer_times: Vec<OpTimes>,
}

impl Session {
    /// Where the last forward pass spent its time.
    pub fn op_times(&self) -> &OpTimes {
        &self.times
    }

    /// The same, per encoder layer: each layer's layernorm, qkv, attention, projection and
    /// mlp (patch embedding, the final layernorm and the classifier are in [`Session::op_times`]
    /// only).
    pub fn layer_times(&self) -> &[OpTimes] {
        &self.layer_times
    }
}

/// Wall time per kind of operation in one forward pass. Activation quantization (int8) is
/// counted with the Linear layer it feeds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpTimes {
    pub patch_embed: Duration,
    pub layernorm: Duration,
    pub qkv: Duration,
    pub attention: Duration,
    pub projection: Duration,
    pub mlp: Duration,
    pub classifier: Duration,
}

impl OpTimes {
    /// (name, time) for each kind, in forward order.
    pub fn entries(&self) -> [(&'static str, Duration); 7] {
        [
            ("patch_embed", self.patch_embed),
            ("layernorm", self.layernorm),
            ("qkv", self.qkv),
            ("attention", self.attention),
            ("projection", self.projection),
            ("mlp", self.mlp),
            ("classifier", self.classifier),
        ]
    }
    pub fn total(&self) -> Duration {
        self.entries().iter().map(|e| e.1).sum()
    }
    pub fn add(&mut self, o: &OpTimes) {
        self.patch_embed += o.patch_embed;
        self.layernorm += o.layernorm;
        self.qkv += o.qkv;
        self.attention += o.attention;
        self.projection += o.projection;
        self.mlp += o.mlp;
        self.classifier += o.classifier;
    }
}

/// A stopwatch that charges the time since its last lap to a slot.
struct Laps(Instant);

impl Laps {
    fn lap(&mut self, slot: &mut Duration) {
        let now = Instant::now();
        *slot += now - self.0;
        self.0 = now;
    }

    /// [`Laps::lap`], charged to an op's total and to its layer's.
    fn lap2(&mut self, slot: &mut Duration, layer_slot: &mut Duration) {
        let now = Instant::now();
        *slot += now - self.0;
        *layer_slot += now - self.0;
        self.0 = now;
    }
}

impl Session {
    /// `halves`: room for activations rounded to half (f16 models on half-precision kernels).
    fn new(a: &Architecture, halves: bool) -> Self {
        let (t, d) = (a.tokens(), a.hidden_size);
        let widest = padded_k(d.max(a.intermediate_size).max(a.patch_len()));
        Session {
            patches: vec![0.0; a.num_patches() * a.patch_len()],
            x: vec![0.0; t * d],
            h: vec![0.0; t * d],
            qkv: vec![0.0; t * 3 * d],
            ctx: vec![0.0; t * d],
            mlp: vec![0.0; t * a.intermediate_size],
            // Keys and values in each kernel's form, and one score tile per thread.
            scores: AttentionScratch::new(attention_shape(a), rayon::current_num_threads()),
            logits: vec![0.0; a.num_labels],
            q: QuantBuffer {
                data: vec![0; t * widest],
                scales: vec![0.0; t],
                offsets: vec![0.0; t],
                halves: if halves {
                    vec![0; t * d.max(a.intermediate_size).max(a.patch_len()).max(a.head_inputs())]
                } else {
                    Vec::new()
                },
            },
            times: OpTimes::default(),
            layer_times: vec![OpTimes::default(); a.num_layers],
        }
    }
}

/// One ranked class.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub index: usize,
    pub label: String,
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
    }
}
