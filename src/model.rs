//! A validated model and its f32 forward pass.
//!
//! The weights are borrowed straight from the memory-mapped file; a [`Session`] holds every
//! buffer one forward pass needs, sized once from the architecture, so classifying allocates
//! nothing after the session is made.

use std::path::Path;

use edgevit_kernels::attention::{attention, AttentionShape};
use edgevit_kernels::layernorm::{layernorm, layernorm_row};
use edgevit_kernels::matmul::{add_bias_rows, matmul, MatMut, MatRef};
use edgevit_kernels::Threads;

use crate::config::{Architecture, ModelConfig};
use crate::error::{Error, Result};
use crate::format::{DType, EvitFile, Layout};

/// The tensors a model of this architecture must hold, with their shapes, in file order.
/// The tools write exactly this list and [`Model::open`] demands it: one definition of the names.
pub fn expected_tensors(arch: &Architecture) -> Vec<(String, Vec<usize>)> {
    let (d, i) = (arch.hidden_size, arch.intermediate_size);
    let mut v = vec![
        ("patch_embed.weight".to_string(), vec![d, arch.patch_len()]),
        ("patch_embed.bias".to_string(), vec![d]),
        ("cls_token".to_string(), vec![d]),
        ("pos_embed".to_string(), vec![arch.tokens(), d]),
    ];
    for l in 0..arch.num_layers {
        let p = |s: &str| format!("layers.{l}.{s}");
        v.push((p("ln1.weight"), vec![d]));
        v.push((p("ln1.bias"), vec![d]));
        v.push((p("qkv.weight"), vec![3 * d, d]));
        if arch.qkv_bias {
            v.push((p("qkv.bias"), vec![3 * d]));
        }
        v.push((p("proj.weight"), vec![d, d]));
        v.push((p("proj.bias"), vec![d]));
        v.push((p("ln2.weight"), vec![d]));
        v.push((p("ln2.bias"), vec![d]));
        v.push((p("fc1.weight"), vec![i, d]));
        v.push((p("fc1.bias"), vec![i]));
        v.push((p("fc2.weight"), vec![d, i]));
        v.push((p("fc2.bias"), vec![d]));
    }
    v.push(("norm.weight".to_string(), vec![d]));
    v.push(("norm.bias".to_string(), vec![d]));
    v.push(("head.weight".to_string(), vec![arch.num_labels, d]));
    v.push(("head.bias".to_string(), vec![arch.num_labels]));
    v
}

/// Indices into the file's tensor table, in [`expected_tensors`] order.
struct LayerWeights {
    ln1: (usize, usize),
    qkv_w: usize,
    qkv_b: Option<usize>,
    proj: (usize, usize),
    ln2: (usize, usize),
    fc1: (usize, usize),
    fc2: (usize, usize),
}

struct Weights {
    patch: (usize, usize),
    cls: usize,
    pos: usize,
    layers: Vec<LayerWeights>,
    norm: (usize, usize),
    head: (usize, usize),
}

/// An open model. `Send + Sync`: threads may share one, each with its own [`Session`].
pub struct Model {
    file: EvitFile,
    weights: Weights,
}

impl Model {
    /// Maps and validates a model file. Fails with a message naming the problem if the file is
    /// damaged, truncated, or holds tensors this architecture does not have.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = EvitFile::open(path.as_ref())?;
        let weights = resolve(&file).map_err(|m| Error::format(file.path(), m))?;
        Ok(Model { file, weights })
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

    /// Scratch buffers for one forward pass at a time.
    pub fn session(&self) -> Session {
        Session::new(self.architecture())
    }

    fn f32s(&self, index: usize) -> &[f32] {
        // Alignment (64) and length (a whole number of f32) were checked at open.
        bytemuck::cast_slice(self.file.tensor_bytes(index))
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
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(Error::Input(format!("input value {i} is {} (NaN or infinite)", pixels[i])));
        }
        let threads = Threads(rayon::current_num_threads());
        let (t, d, inter) = (a.tokens(), a.hidden_size, a.intermediate_size);
        let w = &self.weights;

        // Patch embedding: a convolution with stride = kernel is a matmul over flattened patches.
        im2col(pixels, a, &mut s.patches);
        let np = a.num_patches();
        let (pw, pb) = (self.f32s(w.patch.0), self.f32s(w.patch.1));
        matmul(
            MatMut::row_major(&mut s.x[d..], np, d),
            MatRef::row_major(&s.patches, np, a.patch_len()),
            MatRef::transposed(pw, d, a.patch_len()),
            false,
            threads,
        );
        add_bias_rows(&mut s.x[d..], pb);
        s.x[..d].copy_from_slice(self.f32s(w.cls));
        for (x, p) in s.x.iter_mut().zip(self.f32s(w.pos)) {
            *x += p;
        }

        let eps = a.layer_norm_eps;
        let act = a.activation.kernel();
        let shape = AttentionShape { tokens: t, heads: a.num_heads, head_dim: a.head_dim() };
        for l in &w.layers {
            layernorm(&s.x, &mut s.h, self.f32s(l.ln1.0), self.f32s(l.ln1.1), eps);
            matmul(
                MatMut::row_major(&mut s.qkv, t, 3 * d),
                MatRef::row_major(&s.h, t, d),
                MatRef::transposed(self.f32s(l.qkv_w), 3 * d, d),
                false,
                threads,
            );
            if let Some(b) = l.qkv_b {
                add_bias_rows(&mut s.qkv, self.f32s(b));
            }
            attention(&s.qkv, &mut s.ctx, &mut s.scores, shape, threads);
            // Residual: x += ctx * Wproj^T + b, accumulating straight into x.
            matmul(
                MatMut::row_major(&mut s.x, t, d),
                MatRef::row_major(&s.ctx, t, d),
                MatRef::transposed(self.f32s(l.proj.0), d, d),
                true,
                threads,
            );
            add_bias_rows(&mut s.x, self.f32s(l.proj.1));

            layernorm(&s.x, &mut s.h, self.f32s(l.ln2.0), self.f32s(l.ln2.1), eps);
            matmul(
                MatMut::row_major(&mut s.mlp, t, inter),
                MatRef::row_major(&s.h, t, d),
                MatRef::transposed(self.f32s(l.fc1.0), inter, d),
                false,
                threads,
            );
            add_bias_rows(&mut s.mlp, self.f32s(l.fc1.1));
            act.apply_slice(&mut s.mlp);
            matmul(
                MatMut::row_major(&mut s.x, t, d),
                MatRef::row_major(&s.mlp, t, inter),
                MatRef::transposed(self.f32s(l.fc2.0), d, inter),
                true,
                threads,
            );
            add_bias_rows(&mut s.x, self.f32s(l.fc2.1));
        }

        // Only the CLS token reaches the classifier, so only its row is normalised.
        layernorm_row(&s.x[..d], &mut s.h[..d], self.f32s(w.norm.0), self.f32s(w.norm.1), eps);
        let labels = a.num_labels;
        matmul(
            MatMut::row_major(&mut s.logits, 1, labels),
            MatRef::row_major(&s.h[..d], 1, d),
            MatRef::transposed(self.f32s(w.head.0), labels, d),
            false,
            threads,
        );
        add_bias_rows(&mut s.logits, self.f32s(w.head.1));
        Ok(&s.logits)
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
    let arch = &header.config.architecture;
    let expected = expected_tensors(arch);
    let mut index = std::collections::HashMap::new();
    for (i, t) in header.tensors.iter().enumerate() {
        index.insert(t.name.as_str(), i);
    }
    let mut ids = Vec::with_capacity(expected.len());
    for (name, shape) in &expected {
        let i = *index.get(name.as_str()).ok_or_else(|| format!("tensor '{name}' (shape {shape:?}) is missing"))?;
        let t = &header.tensors[i];
        if t.shape.iter().map(|&d| d as usize).ne(shape.iter().copied()) {
            return Err(format!("tensor '{name}' has shape {:?}; the architecture needs {shape:?}", t.shape));
        }
        if t.dtype != DType::F32 || t.layout != Layout::RowMajor {
            return Err(format!(
                "tensor '{name}' is {:?}/{:?}; this build runs f32 row-major tensors",
                t.dtype, t.layout
            ));
        }
        ids.push(i);
    }
    if header.tensors.len() != expected.len() {
        let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let extra =
            header.tensors.iter().find(|t| !known.contains(t.name.as_str())).map(|t| t.name.as_str()).unwrap_or("?");
        return Err(format!("unexpected tensor '{extra}' for this architecture"));
    }
    let mut it = ids.into_iter();
    let mut next = || it.next().expect("one id per expected tensor");
    let patch = (next(), next());
    let cls = next();
    let pos = next();
    let mut layers = Vec::with_capacity(arch.num_layers);
    for _ in 0..arch.num_layers {
        layers.push(LayerWeights {
            ln1: (next(), next()),
            qkv_w: next(),
            qkv_b: arch.qkv_bias.then(&mut next),
            proj: (next(), next()),
            ln2: (next(), next()),
            fc1: (next(), next()),
            fc2: (next(), next()),
        });
    }
    let norm = (next(), next());
    let head = (next(), next());
    Ok(Weights { patch, cls, pos, layers, norm, head })
}

/// Every buffer one forward pass uses. Make one per thread with [`Model::session`].
pub struct Session {
    patches: Vec<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    mlp: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
}

impl Session {
    fn new(a: &Architecture) -> Self {
        let (t, d) = (a.tokens(), a.hidden_size);
        Session {
            patches: vec![0.0; a.num_patches() * a.patch_len()],
            x: vec![0.0; t * d],
            h: vec![0.0; t * d],
            qkv: vec![0.0; t * 3 * d],
            ctx: vec![0.0; t * d],
            mlp: vec![0.0; t * a.intermediate_size],
            scores: vec![0.0; t * t],
            logits: vec![0.0; a.num_labels],
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
        };
        let pixels: Vec<f32> = (0..48).map(|v| v as f32).collect();
        let mut out = vec![0.0; 4 * 12];
        im2col(&pixels, &arch, &mut out);
        // patch 1 = grid (0, 1): channel 0 rows 0..2, columns 2..4, then channels 1 and 2.
        assert_eq!(&out[12..24], &[2., 3., 6., 7., 18., 19., 22., 23., 34., 35., 38., 39.]);
    }
}
