//! The tensors a model file holds, by name, dtype, layout and shape: written by the tools,
//! demanded by the runtime.

use super::{DType, Layout};
use crate::config::{Architecture, WeightDType, WeightStorage};

/// One tensor a model file must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// How its elements are ordered.
    pub layout: Layout,
    /// Its logical shape.
    pub shape: Vec<usize>,
}

fn spec(name: String, dtype: DType, layout: Layout, shape: Vec<usize>) -> TensorSpec {
    TensorSpec { name, dtype, layout, shape }
}

/// The tensors a model of this architecture and weight storage must hold, in file order.
/// The tools write exactly this list and [`crate::Model::open`] demands it: one definition of the names.
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
