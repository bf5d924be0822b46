//! Conversion of imported f32 weights to the storage a model file uses, and writing it.

use std::collections::HashMap;
use std::path::Path;

use edgevit::config::{WeightDType, WeightStorage, KEEPABLE_F32};
use edgevit::format::expected_tensors;
use edgevit::format::{self, DType, Layout, TensorData};

use crate::hf::Imported;

pub use edgevit::config::DEFAULT_KEEP_F32;

/// Parses `--keep-f32 patch_embed,head` (or `none`).
pub fn parse_keep_f32(s: &str) -> Result<Vec<String>, String> {
    if s == "none" || s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|p| {
            let p = p.trim();
            if KEEPABLE_F32.contains(&p) {
                Ok(p.to_string())
            } else {
                Err(format!("--keep-f32: '{p}' is not one of {KEEPABLE_F32:?} (or 'none')"))
            }
        })
        .collect()
}

pub fn storage(dtype: WeightDType, keep_f32: &[String]) -> WeightStorage {
    match dtype {
        WeightDType::F32 => WeightStorage::f32(),
        WeightDType::Int8 => WeightStorage { dtype: WeightDType::Int8, keep_f32: keep_f32.to_vec() },
        WeightDType::F16 => WeightStorage { dtype: WeightDType::F16, keep_f32: keep_f32.to_vec() },
    }
}

/// The tensors of `model` in the given storage, in file order.
pub fn convert(model: &Imported, storage: &WeightStorage) -> Result<Vec<TensorData<'static>>, String> {
    convert_with_progress(model, storage, |_, _| {})
}

/// [`convert`], calling `progress(done, total)` after each tensor.
pub fn convert_with_progress(
    model: &Imported,
    storage: &WeightStorage,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<TensorData<'static>>, String> {
    // Refuse what could only produce NaN: non-finite weights, and f16 storage of values
    // beyond half precision's range (they would silently become infinity).
    for (name, _, data) in &model.tensors {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor '{name}' holds {} at element {i}: refusing to convert non-finite weights",
                data[i]
            ));
        }
    }
    let f32s: HashMap<&str, (&Vec<usize>, &Vec<f32>)> =
        model.tensors.iter().map(|(n, s, d)| (n.as_str(), (s, d))).collect();
    let mut quantized: HashMap<String, format::StoredLinear> = HashMap::new();
    let mut out = Vec::new();
    let specs = expected_tensors(&model.config.architecture, storage);
    let total = specs.len();
    for (done, spec) in specs.into_iter().enumerate() {
        progress(done, total);
        let (base, suffix) = spec.name.rsplit_once('.').unwrap_or((spec.name.as_str(), ""));
        match (spec.dtype, spec.layout) {
            // Everything that is not part of an int8 Linear is copied as it was imported.
            (DType::F32, Layout::RowMajor) if suffix != "scale" => {
                let (_, data) =
                    f32s.get(spec.name.as_str()).ok_or_else(|| format!("internal: no f32 tensor '{}'", spec.name))?;
                out.push(TensorData::f32(spec.name.clone(), spec.shape.clone(), data).into_owned());
            }
            (DType::F32, Layout::K1n16) => {
                let (shape, w) = f32s[spec.name.as_str()];
                out.push(format::store_linear(base, w, shape[0], shape[1], WeightDType::F32).weight);
            }
            (DType::F16, Layout::K1n16) => {
                let (shape, w) = f32s[spec.name.as_str()];
                if let Some(i) = w.iter().position(|v| v.abs() > half::f16::MAX.to_f32()) {
                    return Err(format!(
                        "tensor '{}' holds {} at element {i}, beyond half precision's 65504: store it with --dtype int8 or f32",
                        spec.name, w[i]
                    ));
                }
                out.push(format::store_linear(base, w, shape[0], shape[1], WeightDType::F16).weight);
            }
            _ => {
                let q = quantized.entry(base.to_string()).or_insert_with(|| {
                    let (shape, w) = f32s[format!("{base}.weight").as_str()];
                    format::store_linear(base, w, shape[0], shape[1], WeightDType::Int8)
                });
                out.push(match (suffix, &q.scale, &q.sum) {
                    ("weight", _, _) => q.weight.clone(),
                    ("scale", Some(scale), _) => scale.clone(),
                    ("sum", _, Some(sum)) => sum.clone(),
                    (other, _, _) => return Err(format!("internal: unexpected quantized tensor suffix '{other}'")),
                });
            }
        }
    }
    Ok(out)
}

/// Writes `model` as an `.evit` file in the given storage; returns the file's size in bytes.
pub fn write_model(model: &Imported, storage: &WeightStorage, out: &Path) -> Result<u64, String> {
    write_model_with_progress(model, storage, out, |_, _| {})
}

/// [`write_model`], reporting progress as [`convert_with_progress`] does.
pub fn write_model_with_progress(
    model: &Imported,
    storage: &WeightStorage,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<u64, String> {
    let mut config = model.config.clone();
    config.weights = storage.clone();
    let tensors = convert_with_progress(model, storage, progress)?;
    format::write(out, &config, &tensors).map_err(|e| e.to_string())?;
    std::fs::metadata(out).map(|m| m.len()).map_err(|e| format!("{}: {e}", out.display()))
}
