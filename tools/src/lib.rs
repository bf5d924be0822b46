//! Workstation side of edgevit: read a checkpoint, convert its weights, write one `.evit` file.

pub mod compare;
pub mod hf;
pub mod hub;
pub mod quantize;
pub mod timm;

use std::path::Path;

/// Reads a checkpoint folder: a Hugging Face `ViTForImageClassification` snapshot or a timm
/// ViT, told apart by their `config.json`. `--heads` applies to timm only; `--labels`
/// replaces the class names of either.
pub fn import(dir: &Path, opts: &timm::TimmOptions) -> Result<hf::Imported, String> {
    check_snapshot_folder(dir)?;
    let cfg = read_json(&dir.join("config.json"))?;
    if timm::is_timm_config(&cfg) {
        return timm::import(dir, opts);
    }
    if opts.heads.is_some() {
        return Err("--heads applies to timm checkpoints; a Hugging Face config.json states num_attention_heads".into());
    }
    let mut imported = hf::import(dir)?;
    if let Some(labels) = &opts.labels {
        let n = imported.config.architecture.num_labels;
        if labels.len() != n {
            return Err(format!("--labels has {} names but the classifier has {n} outputs", labels.len()));
        }
        imported.config.labels = labels.clone();
    }
    Ok(imported)
}

/// True if `dir/config.json` is a timm config.
pub fn is_timm_folder(dir: &Path) -> bool {
    read_json(&dir.join("config.json")).is_ok_and(|cfg| timm::is_timm_config(&cfg))
}

/// An error unless `dir` is a folder, saying what to pass instead.
pub(crate) fn check_snapshot_folder(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.is_file() {
        return Err(format!("{}: is a file; pass the snapshot folder that holds it", dir.display()));
    }
    Err(format!("{}: no such snapshot folder", dir.display()))
}

/// The largest JSON file (config, preprocessor config) the tools read.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Reads a JSON file: a regular file of at most 64 MiB.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = edgevit::files::read_regular(path, MAX_JSON_BYTES, "JSON").map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))
}

/// Reads a safetensors file (a regular file), refusing a header that names a tensor twice,
/// which the `safetensors` crate would silently resolve to one of them.
pub(crate) fn read_safetensors(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = edgevit::files::read_regular(path, u64::MAX, "safetensors").map_err(|e| e.to_string())?;
    let bad = |m: String| format!("{}: not a readable safetensors file: {m}", path.display());
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| bad("shorter than 8 bytes".into()))?;
    let header = usize::try_from(len)
        .ok()
        .and_then(|n| bytes.get(8..8 + n))
        .ok_or_else(|| bad(format!("header of {len} bytes runs past the end")))?;
    if let Err(e) = serde_json::from_slice::<UniqueKeys>(header) {
        return Err(bad(e.to_string()));
    }
    Ok(bytes)
}

/// A JSON object whose keys must be distinct (values are not kept).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("the header names '{key}' twice")));
                    }
                }
                Ok(UniqueKeys)
            }
        }
        d.deserialize_map(Keys)
    }
}

/// Class names from a text file, one per line (blank lines at the end are ignored).
pub fn read_labels(path: &Path) -> Result<Vec<String>, String> {
    let bytes = edgevit::files::read_regular(path, MAX_JSON_BYTES, "label").map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
    while labels.last().is_some_and(|l| l.trim().is_empty()) {
        labels.pop();
    }
    if labels.is_empty() {
        return Err(format!("{}: no labels (one class name per line)", path.display()));
    }
    Ok(labels)
}
