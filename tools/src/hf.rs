//! Import of a Hugging Face `ViTForImageClassification`, `DeiTForImageClassification` or
//! `DeiTForImageClassificationWithTeacher` snapshot folder: `config.json`, `model.safetensors`
//! and `preprocessor_config.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use edgevit::config::{
    ActivationName, Architecture, Classifier, Family, Filter, ModelConfig, Normalize, Preprocess, Resize, WeightStorage,
};
use edgevit::format::expected_tensors;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// A checkpoint in edgevit's own tensor names and f32, ready to be quantized and written.
pub struct Imported {
    pub config: ModelConfig,
    /// All weights in f32, in [`expected_tensors`] order for f32 storage, with their shapes.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Tensors of the checkpoint that classification does not use (reported, not written).
    pub unused: Vec<String>,
}

/// Reads a snapshot folder. Every problem is an `Err` with one line naming it.
pub fn import(dir: &Path) -> Result<Imported, String> {
    crate::check_snapshot_folder(dir)?;
    let config = crate::read_json(&dir.join("config.json"))?;
    let preproc_path = dir.join("preprocessor_config.json");
    let preproc = if preproc_path.exists() { Some(crate::read_json(&preproc_path)?) } else { None };
    let weights_path = dir.join("model.safetensors");
    let bytes = crate::read_safetensors(&weights_path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a readable safetensors file: {e}", weights_path.display()))?;
    from_parts(&config, preproc.as_ref(), &st, &dir.display().to_string())
}

fn usize_field(v: &Value, key: &str, file: &str) -> Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("{file}: '{key}' must be a non-negative integer, found {x}")),
    }
}

fn required(v: &Value, key: &str) -> Result<usize, String> {
    usize_field(v, key, "config.json")?.ok_or_else(|| format!("config.json: required field '{key}' is missing"))
}

/// `image_size` and `patch_size` may be an integer or a [height, width] pair.
fn size_pair(v: &Value, key: &str) -> Result<(usize, usize), String> {
    match v.get(key) {
        Some(Value::Array(a)) if a.len() == 2 => match (a[0].as_u64(), a[1].as_u64()) {
            (Some(h), Some(w)) => Ok((h as usize, w as usize)),
            _ => Err(format!("config.json: '{key}' must hold two integers")),
        },
        Some(_) => Ok((required(v, key)?, required(v, key)?)),
        None => Err(format!("config.json: required field '{key}' is missing")),
    }
}

/// The family `model_type` names; other ViT-like families are refused naming what edgevit
/// lacks for them.
fn family(cfg: &Value) -> Result<Family, String> {
    let Some(mt) = cfg.get("model_type").and_then(Value::as_str) else { return Ok(Family::Vit) };
    let missing = match mt {
        "vit" => return Ok(Family::Vit),
        "deit" => return Ok(Family::Deit),
        "beit" | "data2vec-vision" => "relative position bias",
        "dinov2" | "dinov2_with_registers" => "layer scale, SwiGLU and register tokens",
        "swin" | "swinv2" | "donut-swin" => "shifted-window attention",
        "levit" | "mobilevit" | "mobilevitv2" | "efficientformer" => "convolutional stages",
        "vit_hybrid" | "dpt" => "a convolutional backbone",
        _ => {
            return Err(format!(
                "config.json: model_type '{mt}' is not supported (only 'vit' and 'deit' image classifiers)"
            ))
        }
    };
    Err(format!("config.json: model_type '{mt}' is not supported: edgevit has no {missing}"))
}

fn architecture(cfg: &Value, num_labels: usize, family: Family) -> Result<Architecture, String> {
    let (image_height, image_width) = size_pair(cfg, "image_size")?;
    let (ph, pw) = size_pair(cfg, "patch_size")?;
    if ph != pw {
        return Err(format!("config.json: non-square patches {ph}x{pw} are not supported"));
    }
    let act_name = match cfg.get("hidden_act") {
        None => "gelu",
        Some(v) => {
            v.as_str().ok_or_else(|| format!("config.json: 'hidden_act' must be a string such as \"gelu\", not {v}"))?
        }
    };
    let activation = ActivationName::from_hf(act_name).ok_or_else(|| format!("config.json: hidden_act '{act_name}' is not supported (gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu, silu)"))?;
    let eps = match cfg.get("layer_norm_eps") {
        None => 1e-12,
        Some(v) => v.as_f64().ok_or("config.json: 'layer_norm_eps' must be a number")?,
    };
    let arch = Architecture {
        image_height,
        image_width,
        patch_size: ph,
        num_channels: usize_field(cfg, "num_channels", "config.json")?.unwrap_or(3),
        hidden_size: required(cfg, "hidden_size")?,
        num_layers: required(cfg, "num_hidden_layers")?,
        num_heads: required(cfg, "num_attention_heads")?,
        intermediate_size: required(cfg, "intermediate_size")?,
        num_labels,
        layer_norm_eps: eps as f32,
        activation,
        qkv_bias: cfg
            .get("qkv_bias")
            .map(|v| v.as_bool().ok_or("config.json: 'qkv_bias' must be true or false"))
            .transpose()?
            .unwrap_or(true),
        family,
        // transformers' DeiT embeddings always hold a distillation token, with or without the
        // teacher's head.
        distillation_token: family == Family::Deit,
        classifier: Classifier::ClassToken,
    };
    arch.validate().map_err(|e| format!("config.json: {e}"))?;
    Ok(arch)
}

/// Labels from `id2label`, in index order; they must cover exactly `0..n`.
fn labels(cfg: &Value, n: usize) -> Result<Vec<String>, String> {
    let Some(map) = cfg.get("id2label") else {
        return Ok((0..n).map(|i| format!("LABEL_{i}")).collect());
    };
    let map = map.as_object().ok_or("config.json: 'id2label' must be an object")?;
    let mut out = vec![None; n];
    for (k, v) in map {
        let i: usize = k.parse().ok().filter(|i: &usize| i.to_string() == *k).ok_or_else(|| {
            format!("config.json: id2label key '{k}' is not a plain index (0, 1, ... without signs or leading zeros)")
        })?;
        let slot = out
            .get_mut(i)
            .ok_or_else(|| format!("config.json: id2label has index {i} but the classifier has {n} outputs"))?;
        *slot = Some(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
    }
    out.into_iter()
        .enumerate()
        .map(|(i, l)| {
            l.ok_or_else(|| {
                format!(
                    "config.json: id2label has {} entries but the classifier has {n} outputs (index {i} missing)",
                    map.len()
                )
            })
        })
        .collect()
}

/// `ViTImageProcessor` (or the legacy `ViTFeatureExtractor`) settings. Without a
/// `preprocessor_config.json`, the processor's own defaults apply.
fn preprocess(p: Option<&Value>, arch: &Architecture) -> Result<Preprocess, String> {
    // DeiTImageProcessor's defaults differ from ViTImageProcessor's in size, filter and crop
    // (both normalise with mean and std 0.5): what the file leaves out takes them.
    let mut merged = match arch.family {
        Family::Deit => serde_json::json!({
            "size": {"height": 256, "width": 256}, "resample": 3, "do_center_crop": true,
            "crop_size": {"height": 224, "width": 224}
        }),
        Family::Vit => Value::Object(Default::default()),
    };
    if let (Some(Value::Object(given)), Value::Object(m)) = (p, &mut merged) {
        m.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let p = &merged;
    let file = "preprocessor_config.json";
    let flag = |key: &str| -> Result<bool, String> {
        p.get(key)
            .map(|v| v.as_bool().ok_or_else(|| format!("{file}: '{key}' must be true or false")))
            .transpose()
            .map(|b| b.unwrap_or(true))
    };
    let resize = if flag("do_resize")? {
        Some(match p.get("size") {
            None => Resize::Exact { height: arch.image_height, width: arch.image_width },
            Some(Value::Number(n)) => {
                let s = n.as_u64().ok_or_else(|| format!("{file}: 'size' must be an integer"))? as usize;
                Resize::Exact { height: s, width: s }
            }
            Some(Value::Object(o)) => {
                let get = |k: &str| o.get(k).and_then(Value::as_u64).map(|v| v as usize);
                match (get("height"), get("width"), get("shortest_edge")) {
                    (Some(height), Some(width), _) => Resize::Exact { height, width },
                    (_, _, Some(size)) => Resize::ShortestEdge { size },
                    _ => return Err(format!("{file}: 'size' must have height and width, or shortest_edge")),
                }
            }
            Some(other) => return Err(format!("{file}: 'size' {other} is not understood")),
        })
    } else {
        None
    };
    let filter = match p.get("resample") {
        None => Filter::Bilinear,
        Some(v) => v
            .as_i64()
            .and_then(Filter::from_pil)
            .ok_or_else(|| format!("{file}: 'resample' {v} is not a PIL filter (0-5)"))?,
    };
    let crop = if p.get("do_center_crop").and_then(Value::as_bool).unwrap_or(false) {
        Some(match p.get("crop_size") {
            Some(Value::Number(n)) => [n.as_u64().unwrap_or(0) as usize; 2],
            Some(Value::Object(o)) => {
                let get = |k: &str| o.get(k).and_then(Value::as_u64).map(|v| v as usize);
                [
                    get("height").ok_or(format!("{file}: crop_size needs height"))?,
                    get("width").ok_or(format!("{file}: crop_size needs width"))?,
                ]
            }
            _ => return Err(format!("{file}: do_center_crop is set but crop_size is missing or not understood")),
        })
    } else {
        None
    };
    let rescale_factor = if flag("do_rescale")? {
        Some(
            p.get("rescale_factor")
                .map(|v| v.as_f64().ok_or(format!("{file}: 'rescale_factor' must be a number")))
                .transpose()?
                .unwrap_or(1.0 / 255.0) as f32,
        )
    } else {
        None
    };
    let triple = |key: &str| -> Result<[f32; 3], String> {
        match p.get(key) {
            None => Ok([0.5; 3]),
            Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(f64::NAN) as f32; 3]),
            Some(Value::Array(a)) if a.len() == 3 => {
                let v: Option<Vec<f32>> = a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
                v.map(|v| [v[0], v[1], v[2]]).ok_or_else(|| format!("{file}: '{key}' must hold numbers"))
            }
            Some(other) => Err(format!("{file}: '{key}' {other} must be a number or three numbers")),
        }
    };
    let normalize = if flag("do_normalize")? {
        Some(Normalize { mean: triple("image_mean")?, std: triple("image_std")? })
    } else {
        None
    };
    let pre = Preprocess { resize, filter, crop, rescale_factor, normalize };
    pre.validate(arch).map_err(|e| format!("{file}: {e}"))?;
    Ok(pre)
}

fn to_f32(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>, String> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(format!("tensor '{name}' is {other:?}; only F32, F16 and BF16 weights can be imported")),
    })
}

/// Builds the import from parsed parts (also used by tests with in-memory checkpoints).
pub fn from_parts(
    cfg: &Value,
    preproc: Option<&Value>,
    st: &SafeTensors<'_>,
    source: &str,
) -> Result<Imported, String> {
    let names: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    let family = family(cfg)?;
    let base = match family {
        Family::Vit => "vit.",
        Family::Deit => "deit.",
    };
    let prefix = if names.iter().any(|n| n.starts_with(base)) { base } else { "" };
    // DeiTForImageClassificationWithTeacher has two heads, on the class and distillation tokens.
    let teacher = family == Family::Deit && names.contains("cls_classifier.weight");
    let head_name = if teacher { "cls_classifier" } else { "classifier" };
    let classifier = st.tensor(&format!("{head_name}.weight")).map_err(|_| {
        format!(
            "tensor '{head_name}.weight' is missing from model.safetensors (is this a {} checkpoint?)",
            match family {
                Family::Vit => "ViTForImageClassification",
                Family::Deit => "DeiTForImageClassification",
            }
        )
    })?;
    let num_labels = classifier.shape().first().copied().unwrap_or(0);
    let mut arch = architecture(cfg, num_labels, family)?;
    if teacher {
        arch.classifier = Classifier::ClassAndDistillationTokens;
    }
    let labels = labels(cfg, num_labels)?;
    let preprocess = preprocess(preproc, &arch)?;

    let mut used = BTreeSet::new();
    let mut load = |name: String, shape: &[usize]| load_tensor(st, &name, shape, "config.json implies", &mut used);

    let (d, i, c, p) = (arch.hidden_size, arch.intermediate_size, arch.num_channels, arch.patch_size);
    let e = format!("{prefix}embeddings.");
    let mut out: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    out.insert("patch_embed.weight".into(), load(format!("{e}patch_embeddings.projection.weight"), &[d, c, p, p])?);
    out.insert("patch_embed.bias".into(), load(format!("{e}patch_embeddings.projection.bias"), &[d])?);
    out.insert("cls_token".into(), load(format!("{e}cls_token"), &[1, 1, d])?);
    if arch.distillation_token {
        out.insert("dist_token".into(), load(format!("{e}distillation_token"), &[1, 1, d])?);
    }
    out.insert("pos_embed".into(), load(format!("{e}position_embeddings"), &[1, arch.tokens(), d])?);
    for l in 0..arch.num_layers {
        let src = |s: &str| format!("{prefix}encoder.layer.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        // Query, key and value become one [3*hidden, hidden] matrix: one GEMM instead of three.
        let mut qkv_w = Vec::with_capacity(3 * d * d);
        for part in ["query", "key", "value"] {
            qkv_w.extend(load(src(&format!("attention.attention.{part}.weight")), &[d, d])?);
        }
        out.insert(dst("qkv.weight"), qkv_w);
        if arch.qkv_bias {
            let mut qkv_b = Vec::with_capacity(3 * d);
            for part in ["query", "key", "value"] {
                qkv_b.extend(load(src(&format!("attention.attention.{part}.bias")), &[d])?);
            }
            out.insert(dst("qkv.bias"), qkv_b);
        }
        for (from, to, shape) in [
            ("layernorm_before.weight", "ln1.weight", vec![d]),
            ("layernorm_before.bias", "ln1.bias", vec![d]),
            ("attention.output.dense.weight", "proj.weight", vec![d, d]),
            ("attention.output.dense.bias", "proj.bias", vec![d]),
            ("layernorm_after.weight", "ln2.weight", vec![d]),
            ("layernorm_after.bias", "ln2.bias", vec![d]),
            ("intermediate.dense.weight", "fc1.weight", vec![i, d]),
            ("intermediate.dense.bias", "fc1.bias", vec![i]),
            ("output.dense.weight", "fc2.weight", vec![d, i]),
            ("output.dense.bias", "fc2.bias", vec![d]),
        ] {
            out.insert(dst(to), load(src(from), &shape)?);
        }
    }
    out.insert("norm.weight".into(), load(format!("{prefix}layernorm.weight"), &[d])?);
    out.insert("norm.bias".into(), load(format!("{prefix}layernorm.bias"), &[d])?);
    if teacher {
        let cls = (
            load("cls_classifier.weight".into(), &[num_labels, d])?,
            load("cls_classifier.bias".into(), &[num_labels])?,
        );
        let dist = (
            load("distillation_classifier.weight".into(), &[num_labels, d])?,
            load("distillation_classifier.bias".into(), &[num_labels])?,
        );
        let (weight, bias) = crate::average_heads(&cls, &dist, d);
        out.insert("head.weight".into(), weight);
        out.insert("head.bias".into(), bias);
    } else {
        out.insert("head.weight".into(), load("classifier.weight".into(), &[num_labels, d])?);
        out.insert("head.bias".into(), load("classifier.bias".into(), &[num_labels])?);
    }

    // The pooler belongs to ViTModel's other heads and is never used for classification.
    let mut unused = Vec::new();
    for name in names.difference(&used) {
        if name.starts_with(&format!("{prefix}pooler.")) {
            unused.push(name.clone());
        } else {
            return Err(format!("unexpected tensor '{name}' in model.safetensors: config.json does not describe it (num_hidden_layers {}, qkv_bias {})", arch.num_layers, arch.qkv_bias));
        }
    }

    assemble(arch, preprocess, labels, out, source, unused)
}

/// Reads tensor `name` as f32, checking its shape against `shape` (ignoring size-1 axes) and
/// recording it in `used`; a missing or mis-shaped tensor is an error naming it, and
/// `implied_by` says where the expected shape comes from.
pub(crate) fn load_tensor(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    implied_by: &str,
    used: &mut BTreeSet<String>,
) -> Result<Vec<f32>, String> {
    let view = st
        .tensor(name)
        .map_err(|_| format!("tensor '{name}' (expected shape {shape:?}) is missing from model.safetensors"))?;
    let strip_ones = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if view.shape().iter().product::<usize>() != shape.iter().product::<usize>()
        || strip_ones(view.shape()) != strip_ones(shape)
    {
        return Err(format!("tensor '{name}' has shape {:?}; {implied_by} {shape:?}", view.shape()));
    }
    used.insert(name.to_string());
    to_f32(name, &view)
}

/// The import from weights already in edgevit's names (`out` holds every tensor of the f32
/// storage): orders them as the file will, and validates the config.
pub(crate) fn assemble(
    arch: Architecture,
    preprocess: Preprocess,
    labels: Vec<String>,
    mut out: BTreeMap<String, Vec<f32>>,
    source: &str,
    unused: Vec<String>,
) -> Result<Imported, String> {
    let tensors = expected_tensors(&arch, &WeightStorage::f32())
        .into_iter()
        .map(|spec| {
            let data = out.remove(&spec.name).expect("every expected tensor was loaded");
            (spec.name, spec.shape, data)
        })
        .collect();
    let config = ModelConfig {
        architecture: arch,
        preprocess,
        weights: WeightStorage::f32(),
        labels,
        source: source.to_string(),
    };
    config.validate()?;
    Ok(Imported { config, tensors, unused })
}
