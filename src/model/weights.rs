//! The model's weights as indices into the file's tensor table, resolved and checked once at
//! open.

use std::collections::HashMap;

use rayon::prelude::*;

use edgevit_kernels::gemm::pack::k4n16_channel_sums;

use crate::config::WeightDType;
use crate::format::{expected_tensors, DType, EvitFile, Layout};

/// A Linear layer's tensors, as indices into the file's tensor table.
#[derive(Clone, Copy, Debug)]
pub(super) enum LinearWeights {
    F32 { weight: usize, bias: Option<usize>, out: usize, inp: usize },
    Int8 { weight: usize, scale: usize, sum: usize, bias: Option<usize>, out: usize, inp: usize },
    F16 { weight: usize, bias: Option<usize>, out: usize, inp: usize },
}

impl LinearWeights {
    pub(super) fn is_int8(&self) -> bool {
        matches!(self, LinearWeights::Int8 { .. })
    }
    pub(super) fn is_f16(&self) -> bool {
        matches!(self, LinearWeights::F16 { .. })
    }
    pub(super) fn out_features(&self) -> usize {
        match *self {
            LinearWeights::F32 { out, .. } | LinearWeights::Int8 { out, .. } | LinearWeights::F16 { out, .. } => out,
        }
    }
}

pub(super) struct LayerWeights {
    pub(super) ln1: (usize, usize),
    pub(super) qkv: LinearWeights,
    pub(super) proj: LinearWeights,
    pub(super) ln2: (usize, usize),
    pub(super) fc1: LinearWeights,
    pub(super) fc2: LinearWeights,
}

pub(super) struct Weights {
    pub(super) patch: LinearWeights,
    pub(super) cls: usize,
    pub(super) dist: Option<usize>,
    pub(super) pos: usize,
    pub(super) layers: Vec<LayerWeights>,
    pub(super) norm: (usize, usize),
    pub(super) head: LinearWeights,
}

pub(super) fn resolve(file: &EvitFile) -> Result<Weights, String> {
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
pub(super) fn check_sums(file: &EvitFile, w: &Weights) -> Result<(), String> {
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
