//! Rewrites a Hugging Face ViT snapshot as a timm checkpoint folder (timm's tensor names, Q/K/V
//! concatenated into one `qkv`, timm's config.json), independently of the importers.

use std::collections::HashMap;
use std::path::Path;

/// Writes `out/config.json` and `out/model.safetensors` for the HF snapshot `snapshot`.
/// `architecture` is timm's model name; `label_names` go into the config if given.
pub fn write_timm_folder(
    snapshot: &Path,
    out: &Path,
    architecture: &str,
    crop_pct: f64,
    label_names: Option<&[String]>,
) {
    let bytes = std::fs::read(snapshot.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> (Vec<usize>, Vec<u8>) {
        let v = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
        assert_eq!(v.dtype(), safetensors::Dtype::F32);
        (v.shape().to_vec(), v.data().to_vec())
    };
    let prefix = if st.names().iter().any(|n| n.starts_with("vit.")) { "vit." } else { "" };
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = HashMap::new();
    macro_rules! put {
        ($to:expr, $from:expr) => {
            tensors.insert($to, get(&$from[..]))
        };
    }
    let e = format!("{prefix}embeddings.");
    put!("cls_token".into(), format!("{e}cls_token"));
    put!("pos_embed".into(), format!("{e}position_embeddings"));
    put!("patch_embed.proj.weight".into(), format!("{e}patch_embeddings.projection.weight"));
    put!("patch_embed.proj.bias".into(), format!("{e}patch_embeddings.projection.bias"));
    let layers =
        (0..).take_while(|l| st.tensor(&format!("{prefix}encoder.layer.{l}.output.dense.weight")).is_ok()).count();
    for l in 0..layers {
        let src = |s: &str| format!("{prefix}encoder.layer.{l}.{s}");
        let dst = |s: &str| format!("blocks.{l}.{s}");
        for (from, to) in [
            ("layernorm_before.weight", "norm1.weight"),
            ("layernorm_before.bias", "norm1.bias"),
            ("attention.output.dense.weight", "attn.proj.weight"),
            ("attention.output.dense.bias", "attn.proj.bias"),
            ("layernorm_after.weight", "norm2.weight"),
            ("layernorm_after.bias", "norm2.bias"),
            ("intermediate.dense.weight", "mlp.fc1.weight"),
            ("intermediate.dense.bias", "mlp.fc1.bias"),
            ("output.dense.weight", "mlp.fc2.weight"),
            ("output.dense.bias", "mlp.fc2.bias"),
        ] {
            put!(dst(to), src(from));
        }
        for kind in ["weight", "bias"] {
            let parts: Vec<(Vec<usize>, Vec<u8>)> = ["query", "key", "value"]
                .iter()
                .map(|p| get(&src(&format!("attention.attention.{p}.{kind}"))))
                .collect();
            let mut shape = parts[0].0.clone();
            shape[0] *= 3;
            tensors.insert(dst(&format!("attn.qkv.{kind}")), (shape, parts.iter().flat_map(|p| p.1.clone()).collect()));
        }
    }
    put!("norm.weight".into(), format!("{prefix}layernorm.weight"));
    put!("norm.bias".into(), format!("{prefix}layernorm.bias"));
    put!("head.weight".into(), "classifier.weight");
    put!("head.bias".into(), "classifier.bias");
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (s, d))| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    std::fs::create_dir_all(out).unwrap();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();

    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snapshot.join("config.json")).unwrap()).unwrap();
    let size = hf["image_size"].as_u64().unwrap();
    let mut cfg = serde_json::json!({
        "architecture": architecture,
        "num_classes": tensors["head.bias"].0[0],
        "num_features": hf["hidden_size"],
        "global_pool": "token",
        "pretrained_cfg": {
            "input_size": [3, size, size],
            "interpolation": "bicubic",
            "crop_pct": crop_pct,
            "crop_mode": "center",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "first_conv": "patch_embed.proj",
            "classifier": "head"
        }
    });
    if let Some(l) = label_names {
        cfg["label_names"] = serde_json::json!(l);
    }
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
}
