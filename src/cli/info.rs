//! `edgevit info`: what a model file holds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use edgevit::Error;

use crate::{emit, open_model, printable};

#[derive(FromArgs)]
/// Describe a model file: architecture, preprocessing, labels, tensors.
#[argh(
    subcommand,
    name = "info",
    example = "{command_name} -m vit-base.evit --verify",
    example = "{command_name} -m vit-base.evit --labels > labels.txt"
)]
pub(crate) struct Info {
    /// the .evit model file
    #[argh(option, short = 'm')]
    model: PathBuf,
    /// check every tensor's checksum (reads the whole file)
    #[argh(switch)]
    verify: bool,
    /// read the model file into memory instead of mapping it
    #[argh(switch)]
    no_mmap: bool,
    /// print only the class labels, one per line in index order
    #[argh(switch)]
    labels: bool,
}

pub(crate) fn info(args: Info) -> Result<ExitCode, Error> {
    let model = open_model(&args.model, args.no_mmap, false)?;
    let mut out = String::new();
    // Formatting into a String cannot fail.
    macro_rules! w {
        ($($arg:tt)*) => { let _ = writeln!(out, $($arg)*); };
    }
    if args.labels {
        for label in model.labels() {
            w!("{}", printable(label));
        }
        emit(&out);
        return Ok(ExitCode::SUCCESS);
    }
    let c = model.config();
    let a = &c.architecture;
    let file = model.file();
    let how = if file.is_mapped() { "memory-mapped" } else { "read into memory" };
    w!("file:          {} ({:.1} MB, {how})", args.model.display(), file.file_len() as f64 / 1e6);
    w!("source:        {}", if c.source.is_empty() { "-" } else { &c.source });
    w!(
        "architecture:  {}, {} layers, hidden {}, {} heads of {}, MLP {}, {}",
        a.family.name(),
        a.num_layers,
        a.hidden_size,
        a.num_heads,
        a.head_dim(),
        a.intermediate_size,
        a.activation.name()
    );
    let learned = if a.distillation_token { "class and distillation tokens" } else { "class token" };
    w!(
        "input:         {}x{} RGB, patch {}, {} tokens ({} patches, {learned})",
        a.image_width,
        a.image_height,
        a.patch_size,
        a.tokens(),
        a.num_patches()
    );
    w!("classifier:    {}", a.classifier.describe());
    let params: u64 = file.header().tensors.iter().filter_map(|t| t.numel()).sum();
    let mut storage = match c.weights.dtype {
        edgevit::config::WeightDType::Int8 => "int8 (per-channel, k4n16 packed)".to_string(),
        edgevit::config::WeightDType::F16 => {
            "f16 (k1n16 packed; half-precision arithmetic on CPUs with FP16, else f32)".to_string()
        }
        edgevit::config::WeightDType::F32 => "f32".to_string(),
    };
    if c.weights.dtype != edgevit::config::WeightDType::F32 && !c.weights.keep_f32.is_empty() {
        storage.push_str(&format!("; {} in f32", c.weights.keep_f32.join(", ")));
    }
    w!("weights:       {} tensors, {:.2} M parameters, {storage}", file.header().tensors.len(), params as f64 / 1e6);
    for (group, weights, bytes) in tensor_groups(file.header()) {
        w!("  {group:<12} {weights:<16} {:>8.2} MB", bytes as f64 / 1e6);
    }
    w!("preprocess:    {}", describe_preprocess(&c.preprocess));
    let preview: Vec<&str> = c.labels.iter().take(5).map(String::as_str).collect();
    w!("labels:        {} ({}{})", c.labels.len(), preview.join(", "), if c.labels.len() > 5 { ", ..." } else { "" });
    w!("kernels:       {}", model.kernel_names().join(", "));
    if args.verify {
        file.verify()?;
        w!("verify:        all {} tensor checksums match", file.header().tensors.len());
    }
    emit(&out);
    Ok(ExitCode::SUCCESS)
}

fn describe_preprocess(p: &edgevit::Preprocess) -> String {
    use edgevit::config::Resize;
    let mut steps = Vec::new();
    let filter = format!("{:?}", p.filter).to_lowercase();
    match p.resize {
        Some(Resize::Exact { height, width }) => steps.push(format!("resize to {width}x{height} ({filter})")),
        Some(Resize::ShortestEdge { size }) => steps.push(format!("resize shorter side to {size} ({filter})")),
        None => steps.push("no resize".into()),
    }
    if let Some([h, w]) = p.crop {
        steps.push(format!("centre crop {w}x{h}"));
    }
    match p.rescale_factor {
        Some(r) if (r - 1.0 / 255.0).abs() < 1e-9 => steps.push("scale 1/255".into()),
        Some(r) => steps.push(format!("scale {r}")),
        None => {}
    }
    if let Some(n) = &p.normalize {
        steps.push(format!("normalise mean {:?} std {:?}", n.mean, n.std));
    }
    steps.join(", ")
}

/// Tensors by part of the network: (group, storage of its weights, bytes).
fn tensor_groups(header: &edgevit::format::Header) -> Vec<(&'static str, String, u64)> {
    use edgevit::format::{DType, Layout};
    let groups = ["patch_embed", "embeddings", "attention", "mlp", "layernorm", "classifier"];
    let group_of = |name: &str| -> &'static str {
        let part = name.strip_prefix("layers.").and_then(|r| r.split_once('.')).map_or(name, |(_, rest)| rest);
        match part.split('.').next().unwrap_or("") {
            "patch_embed" => "patch_embed",
            "cls_token" | "pos_embed" => "embeddings",
            "qkv" | "proj" => "attention",
            "fc1" | "fc2" => "mlp",
            "ln1" | "ln2" | "norm" => "layernorm",
            _ => "classifier",
        }
    };
    groups
        .iter()
        .map(|&g| {
            let members: Vec<_> = header.tensors.iter().filter(|t| group_of(&t.name) == g).collect();
            let mut kinds: Vec<&str> = members
                .iter()
                .filter(|t| t.name.ends_with(".weight") || g == "embeddings")
                .map(|t| match (t.dtype, t.layout) {
                    (DType::I8, Layout::K4n16) => "int8 k4n16",
                    (DType::F16, _) => "f16 k1n16",
                    (DType::F32, _) => "f32",
                    (DType::I8, _) => "int8",
                    (DType::I32, _) => "i32",
                })
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            (g, kinds.join(" + "), members.iter().map(|t| t.length).sum())
        })
        .collect()
}
