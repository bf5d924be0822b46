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

/// DeiT's two classifiers, `(head(class token) + head_dist(distillation token)) / 2`, as one
/// Linear layer over the two tokens side by side: weight `[labels, 2 x hidden]` with each
/// half scaled by 1/2, bias the mean of both biases. Halving is exact in floating point, so
/// this computes what the two heads do, summed in one pass.
pub(crate) fn average_heads(cls: &(Vec<f32>, Vec<f32>), dist: &(Vec<f32>, Vec<f32>), d: usize) -> (Vec<f32>, Vec<f32>) {
    let weight = cls
        .0
        .chunks_exact(d)
        .zip(dist.0.chunks_exact(d))
        .flat_map(|(c, t)| c.iter().chain(t).map(|v| v * 0.5))
        .collect();
    let bias = cls.1.iter().zip(&dist.1).map(|(c, t)| (c + t) * 0.5).collect();
    (weight, bias)
}

/// Layer scale (`x + gamma * f(x)`, as in DeiT III) folded into the Linear layer that ends
/// `f`: each output channel's weights and bias multiplied by its gamma, so that the runtime
/// has nothing extra to do.
pub(crate) fn fold_layer_scale(weight: &mut [f32], bias: &mut [f32], gamma: &[f32]) {
    let inputs = weight.len() / gamma.len();
    for ((row, b), &g) in weight.chunks_exact_mut(inputs).zip(bias.iter_mut()).zip(gamma) {
        row.iter_mut().for_each(|w| *w *= g);
        *b *= g;
    }
}

#[cfg(test)]
mod folding_tests {
    #[test]
    fn averaged_heads_equal_the_mean_of_both_heads() {
        // 2 labels, hidden 3: head(c) = [1 2 3; 4 5 6] c + [1, -1], head_dist(t) = [0 1 0; 2 0 2] t + [3, 1].
        let cls = (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![1.0, -1.0]);
        let dist = (vec![0.0, 1.0, 0.0, 2.0, 0.0, 2.0], vec![3.0, 1.0]);
        let (w, b) = super::average_heads(&cls, &dist, 3);
        let (c, t) = ([1.0f32, 0.0, -1.0], [2.0f32, 1.0, 1.0]);
        let input: Vec<f32> = c.iter().chain(&t).copied().collect();
        let ours: Vec<f32> = w
            .chunks_exact(6)
            .zip(&b)
            .map(|(row, b)| row.iter().zip(&input).map(|(w, x)| w * x).sum::<f32>() + b)
            .collect();
        // By hand: head(c) = [-2+1, -2-1] = [-1, -3]; head_dist(t) = [1+3, 6+1] = [4, 7].
        assert_eq!(ours, vec![(-1.0 + 4.0) / 2.0, (-3.0 + 7.0) / 2.0]);
    }

    #[test]
    fn layer_scale_multiplies_each_output_channel() {
        let (mut w, mut b) = (vec![1.0, 2.0, 3.0, 4.0], vec![0.5, -1.0]);
        super::fold_layer_scale(&mut w, &mut b, &[2.0, 0.25]);
        assert_eq!((w, b), (vec![2.0, 4.0, 0.75, 1.0], vec![1.0, -0.25]));
    }
}
