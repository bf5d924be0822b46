//! Import of a timm Vision Transformer folder (`vit_*`, `deit_*` with or without distillation,
//! `deit3_*`): timm's `config.json` (`architecture`, `num_classes`, `pretrained_cfg`) and
//! `model.safetensors` with timm's tensor names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use edgevit::config::{ActivationName, Architecture, Classifier, Family, Filter, Normalize, Preprocess, Resize};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::hf::{assemble, load_tensor, Imported};

/// What a timm checkpoint may not say for itself.
#[derive(Clone, Debug, Default)]
pub struct TimmOptions {
    /// Attention heads, when the architecture name does not tell (e.g. a custom width).
    pub heads: Option<usize>,
    /// Class names, one per output, when the config has none.
    pub labels: Option<Vec<String>>,
}

/// True if `config.json` is timm's (it names an `architecture` and has no `model_type`).
pub fn is_timm_config(cfg: &Value) -> bool {
    cfg.get("architecture").is_some_and(Value::is_string) && cfg.get("model_type").is_none()
}

/// timm's architecture name prefixes edgevit imports, and their family.
const FAMILIES: [(&str, Family); 3] = [("vit_", Family::Vit), ("deit3_", Family::Deit), ("deit_", Family::Deit)];

/// Heads of timm's named ViT sizes: `{vit,deit,deit3}_{tiny,small,base,large,huge}_...`.
pub fn heads_from_name(arch: &str) -> Option<usize> {
    let rest = FAMILIES.iter().find_map(|(prefix, _)| arch.strip_prefix(prefix))?;
    let size = rest.split('_').next()?;
    Some(match size {
        "tiny" => 3,
        "small" => 6,
        "base" => 12,
        "large" => 16,
        "huge" => 16,
        _ => return None,
    })
}

pub fn import(dir: &Path, opts: &TimmOptions) -> Result<Imported, String> {
    let cfg = crate::read_json(&dir.join("config.json"))?;
    let weights_path = dir.join("model.safetensors");
    let bytes = crate::read_safetensors(&weights_path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a readable safetensors file: {e}", weights_path.display()))?;
    from_parts(&cfg, &st, opts, &dir.display().to_string())
}

fn shape_of(st: &SafeTensors<'_>, name: &str) -> Result<Vec<usize>, String> {
    st.tensor(name).map(|t| t.shape().to_vec()).map_err(|_| {
        format!("tensor '{name}' is missing from model.safetensors (is this a timm ViT with a class token?)")
    })
}

/// Builds the import from a parsed timm config and weights.
pub fn from_parts(cfg: &Value, st: &SafeTensors<'_>, opts: &TimmOptions, source: &str) -> Result<Imported, String> {
    let file = "config.json";
    let arch_name = cfg.get("architecture").and_then(Value::as_str).unwrap_or("");
    let Some(&(_, family)) = FAMILIES.iter().find(|(prefix, _)| arch_name.starts_with(prefix)) else {
        return Err(format!("{file}: architecture '{arch_name}' is not a timm ViT (vit_*, deit_* or deit3_*)"));
    };
    let names: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    // Features of timm's VisionTransformer that edgevit does not run: refused by name rather
    // than mis-converted.
    for (tensor, feature) in [
        ("reg_token", "register tokens"),
        ("attn_pool.latent", "attention pooling (global_pool 'map')"),
        ("norm_pre.weight", "a LayerNorm before the blocks (norm_pre)"),
        ("blocks.0.attn.q_norm.weight", "query/key normalisation (qk_norm)"),
        ("blocks.0.attn.norm.weight", "a LayerNorm inside attention (scale_attn_norm)"),
        ("blocks.0.mlp.norm.weight", "a LayerNorm inside the MLP (scale_mlp_norm)"),
        ("blocks.0.mlp.fc1_g.weight", "a gated (SwiGLU) MLP"),
        ("blocks.0.attn.relative_position_bias_table", "relative position bias"),
    ] {
        if names.contains(tensor) {
            return Err(format!("model.safetensors has '{tensor}': edgevit does not support {feature}"));
        }
    }
    if !names.contains("cls_token") {
        return Err("model.safetensors has no 'cls_token': edgevit needs a class token (class_token=True)".into());
    }
    let distilled = names.contains("dist_token");
    let fc_norm = names.contains("fc_norm.weight");
    let pool = cfg.get("global_pool").and_then(Value::as_str).unwrap_or(if fc_norm { "avg" } else { "token" });
    let classifier = match (pool, fc_norm) {
        ("token", false) if distilled => Classifier::ClassAndDistillationTokens,
        ("token", false) => Classifier::ClassToken,
        ("avg", true) if !distilled => Classifier::MeanOfPatches,
        ("avg", false) => {
            return Err(format!(
                "{file}: global_pool 'avg' without fc_norm (a LayerNorm before pooling) is not supported"
            ))
        }
        (pool, _) => {
            return Err(format!(
                "{file}: global_pool '{pool}'{} is not supported ('token', or 'avg' with fc_norm)",
                if fc_norm { " with fc_norm" } else { "" }
            ))
        }
    };
    // Sizes come from the weights themselves; the config supplies what they cannot.
    let patch = shape_of(st, "patch_embed.proj.weight")?;
    let [hidden, channels, ph, pw] = patch[..] else {
        return Err(format!("tensor 'patch_embed.proj.weight' has shape {patch:?}; expected [hidden, 3, p, p]"));
    };
    if ph != pw {
        return Err(format!("non-square patches {ph}x{pw} are not supported"));
    }
    let num_layers = (0..).take_while(|l| names.contains(&format!("blocks.{l}.attn.qkv.weight"))).count();
    let fc1 = shape_of(st, "blocks.0.mlp.fc1.weight")?;
    let head = shape_of(st, "head.weight")?;
    let num_labels = head[0];
    let pcfg = cfg.get("pretrained_cfg").unwrap_or(&Value::Null);
    let input: Option<Vec<u64>> =
        pcfg.get("input_size").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect());
    let (image_height, image_width) = match input.as_deref() {
        Some([_, h, w]) => (*h as usize, *w as usize),
        None => (224, 224),
        Some(other) => return Err(format!("{file}: pretrained_cfg.input_size {other:?} is not [3, H, W]")),
    };
    if let Some(n) = cfg.get("num_classes").and_then(Value::as_u64) {
        if n as usize != num_labels {
            return Err(format!("{file}: num_classes is {n} but head.weight has {num_labels} rows"));
        }
    }
    let num_heads = match (opts.heads, heads_from_name(arch_name)) {
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => {
            return Err(format!(
                "{file}: the number of attention heads cannot be read from architecture '{arch_name}'; pass --heads N"
            ))
        }
    };
    let arch = Architecture {
        image_height,
        image_width,
        patch_size: ph,
        num_channels: channels,
        hidden_size: hidden,
        num_layers,
        num_heads,
        intermediate_size: fc1[0],
        num_labels,
        // timm's ViT LayerNorm uses eps 1e-6 and nn.GELU (exact erf).
        layer_norm_eps: 1e-6,
        activation: ActivationName::Gelu,
        qkv_bias: names.contains("blocks.0.attn.qkv.bias"),
        family,
        distillation_token: distilled,
        classifier,
    };
    arch.validate().map_err(|e| format!("{file}: {e}"))?;
    let labels = labels(cfg, opts, num_labels)?;
    let preprocess = preprocess(pcfg, &arch)?;

    let mut used = BTreeSet::new();
    let mut load =
        |name: String, shape: &[usize]| load_tensor(st, &name, shape, "the checkpoint's sizes imply", &mut used);
    let (d, i, p) = (hidden, arch.intermediate_size, ph);
    let mut out: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    out.insert("patch_embed.weight".into(), load("patch_embed.proj.weight".into(), &[d, channels, p, p])?);
    out.insert("patch_embed.bias".into(), load("patch_embed.proj.bias".into(), &[d])?);
    out.insert("cls_token".into(), load("cls_token".into(), &[1, 1, d])?);
    if distilled {
        out.insert("dist_token".into(), load("dist_token".into(), &[1, 1, d])?);
    }
    // With no_embed_class (DeiT III) the position embedding covers the patches only: the
    // learned tokens get zeros, which is what adding none to them means.
    let pos_rows = shape_of(st, "pos_embed")?.iter().product::<usize>() / d.max(1);
    let pos = if pos_rows == arch.num_patches() && pos_rows != arch.tokens() {
        let mut pos = vec![0.0; arch.prefix_tokens() * d];
        pos.extend(load("pos_embed".into(), &[1, arch.num_patches(), d])?);
        pos
    } else {
        load("pos_embed".into(), &[1, arch.tokens(), d])?
    };
    out.insert("pos_embed".into(), pos);
    for l in 0..num_layers {
        let src = |s: &str| format!("blocks.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        // timm's qkv is already one [3*hidden, hidden] matrix, in query, key, value order.
        let mut pairs = vec![
            ("norm1.weight", "ln1.weight", vec![d]),
            ("norm1.bias", "ln1.bias", vec![d]),
            ("attn.qkv.weight", "qkv.weight", vec![3 * d, d]),
            ("attn.proj.weight", "proj.weight", vec![d, d]),
            ("attn.proj.bias", "proj.bias", vec![d]),
            ("norm2.weight", "ln2.weight", vec![d]),
            ("norm2.bias", "ln2.bias", vec![d]),
            ("mlp.fc1.weight", "fc1.weight", vec![i, d]),
            ("mlp.fc1.bias", "fc1.bias", vec![i]),
            ("mlp.fc2.weight", "fc2.weight", vec![d, i]),
            ("mlp.fc2.bias", "fc2.bias", vec![d]),
        ];
        if arch.qkv_bias {
            pairs.push(("attn.qkv.bias", "qkv.bias", vec![3 * d]));
        }
        for (from, to, shape) in pairs {
            out.insert(dst(to), load(src(from), &shape)?);
        }
        // Layer scale multiplies the output of attention's projection and of the MLP.
        for (gamma, layer) in [("ls1.gamma", "proj"), ("ls2.gamma", "fc2")] {
            if names.contains(&src(gamma)) {
                let g = load(src(gamma), &[d])?;
                let mut w = out.remove(&dst(&format!("{layer}.weight"))).expect("loaded above");
                let mut b = out.remove(&dst(&format!("{layer}.bias"))).expect("loaded above");
                crate::fold_layer_scale(&mut w, &mut b, &g);
                out.insert(dst(&format!("{layer}.weight")), w);
                out.insert(dst(&format!("{layer}.bias")), b);
            }
        }
    }
    // With average pooling, fc_norm normalises the mean and `norm` is absent (an identity).
    let norm = if fc_norm { "fc_norm" } else { "norm" };
    out.insert("norm.weight".into(), load(format!("{norm}.weight"), &[d])?);
    out.insert("norm.bias".into(), load(format!("{norm}.bias"), &[d])?);
    if distilled {
        let head = (load("head.weight".into(), &[num_labels, d])?, load("head.bias".into(), &[num_labels])?);
        let dist = (load("head_dist.weight".into(), &[num_labels, d])?, load("head_dist.bias".into(), &[num_labels])?);
        let (weight, bias) = crate::average_heads(&head, &dist, d);
        out.insert("head.weight".into(), weight);
        out.insert("head.bias".into(), bias);
    } else {
        out.insert("head.weight".into(), load("head.weight".into(), &[num_labels, d])?);
        out.insert("head.bias".into(), load("head.bias".into(), &[num_labels])?);
    }
    if let Some(extra) = names.difference(&used).next() {
        return Err(format!(
            "unexpected tensor '{extra}' in model.safetensors: a timm ViT with {num_layers} blocks does not have it"
        ));
    }
    assemble(arch, preprocess, labels, out, source, Vec::new())
}

/// `--labels`, else the config's `label_names` (top level or in pretrained_cfg), else indices.
fn labels(cfg: &Value, opts: &TimmOptions, n: usize) -> Result<Vec<String>, String> {
    if let Some(l) = &opts.labels {
        if l.len() != n {
            return Err(format!("--labels has {} names but the classifier has {n} outputs", l.len()));
        }
        return Ok(l.clone());
    }
    let listed = cfg
        .get("label_names")
        .or_else(|| cfg.get("pretrained_cfg").and_then(|p| p.get("label_names")))
        .and_then(Value::as_array);
    match listed {
        Some(a) if a.len() == n => {
            Ok(a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect())
        }
        Some(a) => Err(format!("config.json: label_names has {} entries but the classifier has {n} outputs", a.len())),
        None => Ok((0..n).map(|i| format!("class {i}")).collect()),
    }
}

/// timm's eval transform: resize the shorter side to `floor(size / crop_pct)` with the
/// configured filter, centre crop to the input size, scale to 0..1, normalise.
fn preprocess(p: &Value, arch: &Architecture) -> Result<Preprocess, String> {
    let file = "config.json: pretrained_cfg";
    let filter = match p.get("interpolation").and_then(Value::as_str).unwrap_or("bicubic") {
        "bicubic" => Filter::Bicubic,
        "bilinear" => Filter::Bilinear,
        "nearest" => Filter::Nearest,
        "lanczos" => Filter::Lanczos,
        "box" => Filter::Box,
        "hamming" => Filter::Hamming,
        other => return Err(format!("{file}: interpolation '{other}' is not supported")),
    };
    match p.get("crop_mode").and_then(Value::as_str).unwrap_or("center") {
        "center" => {}
        other => return Err(format!("{file}: crop_mode '{other}' is not supported (only 'center')")),
    }
    let crop_pct = p.get("crop_pct").and_then(Value::as_f64).unwrap_or(0.875);
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(format!("{file}: crop_pct {crop_pct} must be in (0, 1]"));
    }
    if arch.image_height != arch.image_width {
        return Err(format!("{file}: non-square input {}x{} is not supported", arch.image_width, arch.image_height));
    }
    let size = (arch.image_height as f64 / crop_pct).floor() as usize;
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], String> {
        match p.get(key).and_then(Value::as_array) {
            None => Ok(default),
            Some(a) if a.len() == 3 && a.iter().all(Value::is_number) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(f64::NAN) as f32))
            }
            Some(a) => Err(format!("{file}: '{key}' {a:?} must be three numbers")),
        }
    };
    let pre = Preprocess {
        resize: Some(Resize::ShortestEdge { size }),
        filter,
        crop: Some([arch.image_height, arch.image_width]),
        rescale_factor: Some(1.0 / 255.0),
        normalize: Some(Normalize {
            mean: triple("mean", [0.485, 0.456, 0.406])?,
            std: triple("std", [0.229, 0.224, 0.225])?,
        }),
    };
    pre.validate(arch).map_err(|e| format!("{file}: {e}"))?;
    Ok(pre)
}
