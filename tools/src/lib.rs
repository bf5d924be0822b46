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
    if !dir.is_dir() {
        return Err(format!("{}: no such snapshot folder", dir.display()));
    }
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", cfg_path.display()))?;
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
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .is_some_and(|cfg| timm::is_timm_config(&cfg))
}

/// Class names from a text file, one per line (blank lines at the end are ignored).
pub fn read_labels(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
    while labels.last().is_some_and(|l| l.trim().is_empty()) {
        labels.pop();
    }
    if labels.is_empty() {
        return Err(format!("{}: no labels (one class name per line)", path.display()));
    }
    Ok(labels)
}
