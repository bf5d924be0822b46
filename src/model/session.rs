//! A forward pass's buffers and where its time went.

use std::time::{Duration, Instant};

use edgevit_kernels::attention::AttentionScratch;
use edgevit_kernels::buffer::AlignedVec;
use edgevit_kernels::gemm::i8::QuantBuffer;

use super::input::{attention_shape, InputBuffers};
use crate::config::Architecture;

/// Every buffer one forward pass uses. Make one per thread with [`crate::Model::session`].
/// Those that threads write side by side start on a cache line ([`AlignedVec`]).
pub struct Session {
    pub(super) patches: AlignedVec<f32>,
    pub(super) x: AlignedVec<f32>,
    pub(super) h: AlignedVec<f32>,
    pub(super) qkv: AlignedVec<f32>,
    pub(super) ctx: AlignedVec<f32>,
    pub(super) mlp: AlignedVec<f32>,
    pub(super) scores: AttentionScratch,
    pub(super) logits: Vec<f32>,
    pub(super) q: InputBuffers,
    pub(super) times: OpTimes,
    /// Per encoder layer (its layernorm, qkv, attention, projection and mlp).
    pub(super) layer_times: Vec<OpTimes>,
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
    /// Patch embedding (im2col and its GEMM) and position embeddings.
    pub patch_embed: Duration,
    /// LayerNorms, with the quantization or rounding of their output.
    pub layernorm: Duration,
    /// The query, key and value projections.
    pub qkv: Duration,
    /// Scores, softmax and the weighted sum of values.
    pub attention: Duration,
    /// The output projection and its residual.
    pub projection: Duration,
    /// fc1, the activation, fc2 and the residual.
    pub mlp: Duration,
    /// The classifier head.
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
    /// All kinds together.
    pub fn total(&self) -> Duration {
        self.entries().iter().map(|e| e.1).sum()
    }
    /// Adds another pass's times (to sum over runs).
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
pub(super) struct Laps(pub(super) Instant);

impl Laps {
    pub(super) fn lap(&mut self, slot: &mut Duration) {
        let now = Instant::now();
        *slot += now - self.0;
        self.0 = now;
    }

    /// [`Laps::lap`], charged to an op's total and to its layer's.
    pub(super) fn lap2(&mut self, slot: &mut Duration, layer_slot: &mut Duration) {
        let now = Instant::now();
        *slot += now - self.0;
        *layer_slot += now - self.0;
        self.0 = now;
    }
}

impl Session {
    /// `halves`: room for activations rounded to half (f16 models on half-precision kernels).
    pub(super) fn new(a: &Architecture, halves: bool) -> Self {
        let (t, d) = (a.tokens(), a.hidden_size);
        Session {
            patches: AlignedVec::zeroed(a.num_patches() * a.patch_len()),
            x: AlignedVec::zeroed(t * d),
            h: AlignedVec::zeroed(t * d),
            qkv: AlignedVec::zeroed(t * 3 * d),
            ctx: AlignedVec::zeroed(t * d),
            mlp: AlignedVec::zeroed(t * a.intermediate_size),
            // Keys and values in each kernel's form, and one score tile per thread.
            scores: AttentionScratch::new(attention_shape(a), rayon::current_num_threads()),
            logits: vec![0.0; a.num_labels],
            q: InputBuffers {
                int8: QuantBuffer::new(t, d.max(a.intermediate_size).max(a.patch_len())),
                halves: AlignedVec::zeroed(if halves {
                    t * d.max(a.intermediate_size).max(a.patch_len()).max(a.head_inputs())
                } else {
                    0
                }),
            },
            times: OpTimes::default(),
            layer_times: vec![OpTimes::default(); a.num_layers],
        }
    }
}
