//! The forward pass: patch embedding, the encoder layers and the classifier.

use std::ops::Range;
use std::time::Instant;

use edgevit_kernels::attention::attention_rows;
use edgevit_kernels::gemm::f16::{f16_gemm, f16_gemm_halves, PackedF16};
use edgevit_kernels::gemm::f32::{f32_gemm, PackedF32};
use edgevit_kernels::gemm::i8::{i8_gemm, PackedI8};
use edgevit_kernels::gemm::pack::padded_k;
use edgevit_kernels::gemm::{Epilogue, NR};
use edgevit_kernels::rows::activation::Activation;
use edgevit_kernels::rows::layernorm::layernorm_row;
use edgevit_kernels::Threads;

use super::input::{
    attention_shape, first_non_finite, im2col, mean_of_rows, normalize_and_prepare, prepare, prepare_gelu, LinearInput,
};
use super::session::{Laps, OpTimes, Session};
use super::weights::LinearWeights;
use super::Model;
use crate::config::Classifier;
use crate::error::{Error, Result};

/// How many rows the last encoder layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LastLayer {
    /// Only those the classifier reads (all for a mean of the patches).
    ClassifierRows,
    /// Every token's (the tests' reference).
    #[cfg_attr(not(test), allow(dead_code))]
    AllRows,
}

impl Model {
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
        self.linear_columns(lin, input, rows, out, ldo, epilogue, 0..lin.out_features());
    }

    /// [`Model::linear`] for the output features `cols` alone (starting at a whole weight
    /// panel), written from column 0 of `out`: the same bits as those columns of the whole.
    #[allow(clippy::too_many_arguments)]
    fn linear_columns(
        &self,
        lin: &LinearWeights,
        input: LinearInput<'_>,
        rows: usize,
        out: &mut [f32],
        ldo: usize,
        epilogue: Epilogue,
        cols: Range<usize>,
    ) {
        assert!(cols.start.is_multiple_of(NR) && cols.end <= lin.out_features(), "linear: columns {cols:?}");
        let (first_panel, n) = (cols.start / NR, cols.len());
        let threads = Threads(rayon::current_num_threads());
        let bias = |b: Option<usize>| b.map(|b| &self.f32s(b)[cols.clone()]);
        match (*lin, input) {
            (LinearWeights::F32 { weight, bias: b, inp: k, .. }, LinearInput::F32(x)) => {
                let w = PackedF32 { data: &self.f32s(weight)[first_panel * k * NR..], n, k };
                f32_gemm(self.f32_kernel, x, k, rows, w, bias(b), out, ldo, epilogue, threads);
            }
            (LinearWeights::F16 { weight, bias: b, inp: k, .. }, LinearInput::F32(x)) => {
                let w = PackedF16 { data: &self.u16s(weight)[first_panel * k * NR..], n, k };
                f16_gemm(self.f16_kernel, x, k, rows, w, bias(b), out, ldo, epilogue, threads);
            }
            (LinearWeights::F16 { weight, bias: b, inp: k, .. }, LinearInput::Halves(x)) => {
                let w = PackedF16 { data: &self.u16s(weight)[first_panel * k * NR..], n, k };
                f16_gemm_halves(self.f16_kernel, x, rows, w, bias(b), out, ldo, epilogue, threads);
            }
            (LinearWeights::Int8 { weight, scale, sum, bias: b, inp: k, .. }, LinearInput::Int8(q)) => {
                let w = PackedI8 {
                    data: &self.i8s(weight)[first_panel * padded_k(k) * NR..],
                    n,
                    k,
                    scales: &self.f32s(scale)[cols.clone()],
                    sums: &self.i32s(sum)[cols.clone()],
                };
                i8_gemm(self.i8_kernel, q, w, bias(b), out, ldo, epilogue, threads);
            }
            _ => unreachable!("the caller prepares the input in the layer's dtype"),
        }
    }

    /// Runs the network on one preprocessed image (`channels x height x width`, CHW order) and
    /// returns its logits, which live in `session` until the next call.
    pub fn forward<'s>(&self, pixels: &[f32], s: &'s mut Session) -> Result<&'s [f32]> {
        self.forward_rows(pixels, s, LastLayer::ClassifierRows)
    }

    /// [`Model::forward`], with the last layer computing every token's row or only those the
    /// classifier reads (the tests check that both give the same bits).
    pub(crate) fn forward_rows<'s>(&self, pixels: &[f32], s: &'s mut Session, last: LastLayer) -> Result<&'s [f32]> {
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
        // Every step after the keys and values works row by row (activations are quantized
        // per row), so the last layer computes only the rows the classifier reads: for a class
        // token, one query of attention and one row of the projection and MLP instead of 197.
        let last_rows = match (last, a.classifier) {
            (LastLayer::AllRows, _) | (_, Classifier::MeanOfPatches) => t,
            (_, Classifier::ClassToken) => 1,
            (_, Classifier::ClassAndDistillationTokens) => 2,
        };
        for (i, (l, lt)) in w.layers.iter().zip(layer_times.iter_mut()).enumerate() {
            let rows = if i + 1 == w.layers.len() { last_rows.min(t) } else { t };
            let ln = (self.f32s(l.ln1.0), self.f32s(l.ln1.1), eps);
            let input = normalize_and_prepare(&l.qkv, x, ln, h, t, q, self.prep());
            clock.lap2(&mut times.layernorm, &mut lt.layernorm);
            if rows < t && d.is_multiple_of(NR) {
                // Keys and values for every token, queries for the rows computed.
                self.linear_columns(&l.qkv, input, t, &mut qkv[d..], 3 * d, Epilogue::Store, d..3 * d);
                self.linear_columns(&l.qkv, input.first_rows(rows, d), rows, qkv, 3 * d, Epilogue::Store, 0..d);
            } else {
                self.linear(&l.qkv, input, t, qkv, 3 * d, Epilogue::Store);
            }
            clock.lap2(&mut times.qkv, &mut lt.qkv);
            attention_rows(attn, qkv, ctx, scores, shape, rows, threads);
            clock.lap2(&mut times.attention, &mut lt.attention);
            let input = prepare(&l.proj, ctx, rows, d, q, self.prep());
            self.linear(&l.proj, input, rows, x, d, Epilogue::Accumulate);
            clock.lap2(&mut times.projection, &mut lt.projection);

            let ln = (self.f32s(l.ln2.0), self.f32s(l.ln2.1), eps);
            let input = normalize_and_prepare(&l.fc1, x, ln, h, rows, q, self.prep());
            clock.lap2(&mut times.layernorm, &mut lt.layernorm);
            // An int8 fc2 takes GELU in the row pass that quantizes its input; otherwise fc1's
            // epilogue applies the activation.
            let gelu_in_quantize = l.fc2.is_int8() && act == Activation::Gelu;
            let fc1_epilogue = if gelu_in_quantize { Epilogue::Store } else { Epilogue::Activate(act) };
            self.linear(&l.fc1, input, rows, mlp, inter, fc1_epilogue);
            let input = if gelu_in_quantize {
                prepare_gelu(mlp, rows, inter, q, self.prep())
            } else {
                prepare(&l.fc2, mlp, rows, inter, q, self.prep())
            };
            self.linear(&l.fc2, input, rows, x, d, Epilogue::Accumulate);
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

#[cfg(test)]
mod tests {
    use edgevit_kernels::gemm::f16::F16Kernel;
    use edgevit_kernels::gemm::i8::I8Kernel;

    use super::*;
    use crate::config::{Architecture, WeightDType};
    use crate::format::EvitFile;

    /// A small random-weight model: 37 tokens (more than one block of queries), two layers.
    fn model(classifier: Classifier, dtype: WeightDType) -> Model {
        let mut arch = crate::synth::Preset::Tiny.architecture();
        (arch.image_height, arch.image_width, arch.hidden_size, arch.num_heads) = (96, 96, 64, 2);
        (arch.num_layers, arch.intermediate_size, arch.num_labels) = (2, 256, 10);
        arch.classifier = classifier;
        arch.distillation_token = classifier == Classifier::ClassAndDistillationTokens;
        let bytes = crate::synth::build_architecture(&arch, "rows test", dtype, 3).unwrap();
        Model::from_file(EvitFile::from_bytes("rows test", bytes).unwrap()).unwrap()
    }

    fn input(a: &Architecture) -> Vec<f32> {
        (0..a.input_len()).map(|i| ((i * 7919 % 2001) as f32 / 1000.0) - 1.0).collect()
    }

    #[test]
    fn the_last_layer_on_the_classifier_rows_alone_gives_the_same_logits_bit_for_bit() {
        let classifiers = [Classifier::ClassToken, Classifier::ClassAndDistillationTokens, Classifier::MeanOfPatches];
        for classifier in classifiers {
            for dtype in [WeightDType::F32, WeightDType::F16, WeightDType::Int8] {
                let mut m = model(classifier, dtype);
                let pixels = input(m.architecture());
                let kernels: Vec<(I8Kernel, F16Kernel)> = match dtype {
                    WeightDType::Int8 => I8Kernel::available().into_iter().map(|k| (k, m.f16_kernel())).collect(),
                    WeightDType::F16 => F16Kernel::available().into_iter().map(|k| (m.i8_kernel(), k)).collect(),
                    _ => vec![(m.i8_kernel(), m.f16_kernel())],
                };
                for (i8k, f16k) in kernels {
                    m.set_i8_kernel(i8k).unwrap();
                    m.set_f16_kernel(f16k).unwrap();
                    for threads in [1, 2] {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        let (mut s1, mut s2) = (m.session(), m.session());
                        let (rows, all) = pool.install(|| {
                            let rows = m.forward_rows(&pixels, &mut s1, LastLayer::ClassifierRows).unwrap();
                            let all = m.forward_rows(&pixels, &mut s2, LastLayer::AllRows).unwrap();
                            (rows.to_vec(), all.to_vec())
                        });
                        let what = format!("{classifier:?} {dtype:?} {} {} {threads} threads", i8k.name(), f16k.name());
                        assert!(all.iter().any(|v| *v != 0.0), "{what}: all-zero logits");
                        assert!(rows.iter().zip(&all).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                    }
                }
            }
        }
    }
}
