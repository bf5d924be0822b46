//! `edgevit-tools`: turn a Vision Transformer checkpoint into an `.evit` model file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use edgevit::config::Family;
use edgevit::config::WeightDType;
use edgevit_tools::quantize::{parse_keep_f32, storage, write_model_with_progress, DEFAULT_KEEP_F32};
use edgevit_tools::timm::TimmOptions;

#[derive(FromArgs)]
/// Workstation tools for edgevit: import, quantize and write .evit model files.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Quantize(Quantize),
    Compare(Compare),
    Synth(Synth),
}

#[derive(FromArgs)]
/// Write a model with random weights at the real shape of a standard ViT (for benchmarks and
/// memory tests; its predictions mean nothing).
#[argh(subcommand, name = "synth", example = "{command_name} --arch vit-ti16 --dtype int8 -o random-vit-ti.evit")]
struct Synth {
    /// vit-ti16, vit-s16, vit-b16 or vit-l16
    #[argh(option)]
    arch: edgevit::synth::Preset,
    /// int8 (default), f16 or f32
    #[argh(option, default = "String::from(\"int8\")")]
    dtype: String,
    /// seed for the random weights (default 1); the same seed gives the same file
    #[argh(option, default = "1")]
    seed: u64,
    /// where to write the .evit file
    #[argh(option, short = 'o')]
    output: PathBuf,
}

#[derive(FromArgs)]
/// Compare a candidate model with a reference on the same inputs: top-1 agreement, top-5
/// overlap, mean KL divergence, logit cosine, and accuracy for labelled inputs (ImageNet file
/// names such as n01440764_1.JPEG, or a folder per class named by label or index).
#[argh(subcommand, name = "compare", example = "{command_name} vit-base-f32.evit vit-base.evit imagenet-val/")]
struct Compare {
    /// the reference model (e.g. the f32 .evit)
    #[argh(positional)]
    reference: PathBuf,
    /// the candidate model (e.g. the int8 .evit)
    #[argh(positional)]
    candidate: PathBuf,
    /// images, .npy tensors, or folders of them
    #[argh(positional, greedy)]
    inputs: Vec<PathBuf>,
}

#[derive(FromArgs)]
/// Convert a Vision Transformer checkpoint folder into one .evit model file: a Hugging Face
/// ViTForImageClassification snapshot (config.json, model.safetensors,
/// preprocessor_config.json) or a timm ViT (timm's config.json and model.safetensors).
#[argh(
    subcommand,
    name = "quantize",
    example = "{command_name} google/vit-base-patch16-224 -o vit-base.evit",
    example = "{command_name} ./vit-base --dtype f16 -o vit-base-f16.evit",
    example = "{command_name} ./vit_small_timm --labels imagenet.txt -o vit-s.evit"
)]
struct Quantize {
    /// the checkpoint folder, or a Hugging Face Hub repository id (owner/name[@revision]) to
    /// download into the Hugging Face cache
    #[argh(positional)]
    snapshot: PathBuf,
    /// weight storage: int8 (per-channel symmetric, the fast default), f16 (half the size of
    /// f32; widened to f32, or computed in half precision on CPUs with FP16 arithmetic such as
    /// the Cortex-A76) or f32 (exact)
    #[argh(option, default = "WeightDType::Int8")]
    dtype: WeightDType,
    /// with int8 or f16: Linear layers to keep in f32, comma-separated from patch_embed, head,
    /// or none (default: patch_embed,head, the closest to f32; on a Raspberry Pi 5, `head`
    /// makes ViT-Ti int8 about 3.5% faster, see docs/quantization.md)
    #[argh(option)]
    keep_f32: Option<String>,
    /// where to write the .evit file
    #[argh(option, short = 'o')]
    output: PathBuf,
    /// timm checkpoints: attention heads, when the architecture name does not say
    #[argh(option)]
    heads: Option<usize>,
    /// class names, one per line, replacing (or supplying) the checkpoint's
    #[argh(option)]
    labels: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli: Cli = edgevit::args::parse("edgevit-tools", &args);
    // Quantization runs kernels too: a cap that does not parse is refused here as well.
    if let Err(e) = edgevit_kernels::cpu::cap() {
        eprintln!("edgevit-tools: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Quantize(q) => quantize(q),
        Command::Compare(c) => compare(c),
        Command::Synth(s) => synth(s),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgevit-tools: {e}");
            ExitCode::FAILURE
        }
    }
}

fn synth(args: Synth) -> Result<(), String> {
    let dtype = str::parse::<edgevit::config::WeightDType>(&args.dtype)?;
    let bytes = edgevit::synth::build(args.arch, dtype, args.seed).map_err(|e| e.to_string())?;
    edgevit::format::write_bytes(&args.output, &bytes).map_err(|e| e.to_string())?;
    eprintln!(
        "edgevit-tools: wrote {} ({:.1} MB, random {} {} weights, seed {})",
        args.output.display(),
        bytes.len() as f64 / 1e6,
        args.arch.name(),
        dtype.name(),
        args.seed
    );
    Ok(())
}

fn compare(args: Compare) -> Result<(), String> {
    let mut failed = 0;
    let mut inputs = Vec::new();
    for input in edgevit::inputs::expand(&args.inputs, true) {
        match input {
            Ok(edgevit::inputs::Input::File(path)) => inputs.push(path),
            Ok(edgevit::inputs::Input::Stdin) => return Err("compare reads files and folders, not stdin (-)".into()),
            Err(e) => {
                failed += 1;
                eprintln!("edgevit-tools: {e}");
            }
        }
    }
    if inputs.is_empty() {
        return Err("no inputs: name image or .npy files, or folders holding them".into());
    }
    let reference = edgevit::Model::open(&args.reference).map_err(|e| e.to_string())?;
    let candidate = edgevit::Model::open(&args.candidate).map_err(|e| e.to_string())?;
    if reference.labels().len() != candidate.labels().len() {
        return Err(format!("the models have {} and {} classes", reference.labels().len(), candidate.labels().len()));
    }
    let bar = edgevit::progress::bar(inputs.len() as u64, "inputs");
    bar.set_prefix("compare");
    let fidelity = edgevit_tools::compare::compare(
        &reference,
        &candidate,
        &inputs,
        |e| {
            failed += 1;
            bar.suspend(|| eprintln!("edgevit-tools: {e}"));
        },
        || bar.inc(1),
    );
    bar.finish_and_clear();
    print!("{}", fidelity.report());
    if failed > 0 {
        return Err(format!("{failed} of {} inputs could not be classified", inputs.len() + failed));
    }
    Ok(())
}

fn quantize(args: Quantize) -> Result<(), String> {
    let start = Instant::now();
    let labels = args.labels.as_deref().map(edgevit_tools::read_labels).transpose()?;
    let opts = TimmOptions { heads: args.heads, labels };
    let arg = args.snapshot.to_string_lossy().into_owned();
    let snapshot = if edgevit_tools::hub::looks_like_repo_id(&arg) {
        let progress = std::io::stderr().is_terminal();
        // A mistyped local folder looks like a hub id too: say both.
        let folder = edgevit_tools::hub::fetch(&arg, progress)
            .map_err(|e| format!("there is no folder '{arg}' here, so it was tried as a Hugging Face hub id: {e}"))?;
        if progress {
            eprintln!("edgevit-tools: {arg} is in {}", folder.display());
        }
        folder
    } else {
        args.snapshot.clone()
    };
    let model = edgevit_tools::import(&snapshot, &opts)?;
    let is_timm = edgevit_tools::is_timm_folder(&snapshot);
    if !is_timm && !snapshot.join("preprocessor_config.json").exists() {
        let a = &model.config.architecture;
        let defaults = match a.family {
            Family::Vit => {
                format!("ViTImageProcessor's defaults (resize to {}x{} bilinear", a.image_height, a.image_width)
            }
            Family::Deit => "DeiTImageProcessor's defaults (resize to 256x256 bicubic, centre crop 224x224".to_string(),
        };
        eprintln!(
            "edgevit-tools: note: no preprocessor_config.json; using {defaults}, rescale 1/255, normalise with mean \
             0.5 and std 0.5)"
        );
    }
    for name in &model.unused {
        eprintln!("edgevit-tools: note: '{name}' is not used for classification and is not written");
    }
    let keep = match &args.keep_f32 {
        Some(s) => parse_keep_f32(s)?,
        None => DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect(),
    };
    if args.keep_f32.is_some() && args.dtype == WeightDType::F32 {
        return Err("--keep-f32 applies to --dtype int8 and f16".into());
    }
    let storage = storage(args.dtype, &keep);
    let bar = edgevit::progress::bar(0, "tensors");
    bar.set_prefix("quantize");
    let size = write_model_with_progress(&model, &storage, &args.output, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64 + 1);
    });
    bar.finish_and_clear();
    let size = size?;
    let a = &model.config.architecture;
    eprintln!(
        "edgevit-tools: wrote {} ({:.1} MB, {} {}, {} layers, hidden {}, {} labels) in {:.1} s",
        args.output.display(),
        size as f64 / 1e6,
        a.family.name(),
        storage.describe(),
        a.num_layers,
        a.hidden_size,
        a.num_labels,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
