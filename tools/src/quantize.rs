//! Conversion of imported f32 weights to the dtype a model file stores, and writing it.

use std::path::Path;

use edgevit::format::{self, TensorData};

use crate::hf::Imported;

/// Storage types `edgevit-tools quantize --dtype` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDType {
    F32,
}

impl std::str::FromStr for StoreDType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "int8" | "f16" => Err(format!("--dtype {s} is not available in this version yet; use --dtype f32")),
            other => Err(format!("--dtype '{other}' is not one of: f32")),
        }
    }
}

/// Writes `model` as an `.evit` file; returns the file's size in bytes.
pub fn write_model(model: &Imported, dtype: StoreDType, out: &Path) -> Result<u64, String> {
    let tensors: Vec<TensorData<'_>> = match dtype {
        StoreDType::F32 => {
            model.tensors.iter().map(|(name, shape, data)| TensorData::f32(name.clone(), shape.clone(), data)).collect()
        }
    };
    format::write(out, &model.config, &tensors).map_err(|e| e.to_string())?;
    std::fs::metadata(out).map(|m| m.len()).map_err(|e| format!("{}: {e}", out.display()))
}
