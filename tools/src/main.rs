//! `edgevit-tools`: turn a Vision Transformer checkpoint into an `.evit` model file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use edgevit_tools::hf;
use edgevit_tools::quantize::{write_model, StoreDType};

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
}

#[derive(FromArgs)]
/// Convert a Hugging Face ViTForImageClassification snapshot folder (config.json,
/// model.safetensors, preprocessor_config.json) into one .evit model file.
#[argh(subcommand, name = "quantize")]
struct Quantize {
    /// the snapshot folder
    #[argh(positional)]
    snapshot: PathBuf,
    /// weight storage type: f32 (default f32)
    #[argh(option, default = "StoreDType::F32")]
    dtype: StoreDType,
    /// where to write the .evit file
    #[argh(option, short = 'o')]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Quantize(q) => quantize(q),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgevit-tools: {e}");
            ExitCode::FAILURE
        }
    }
}

fn quantize(args: Quantize) -> Result<(), String> {
    let start = Instant::now();
    let model = hf::import(&args.snapshot)?;
    for name in &model.unused {
        eprintln!("edgevit-tools: note: '{name}' is not used for classification and is not written");
    }
    let size = write_model(&model, args.dtype, &args.output)?;
    let a = &model.config.architecture;
    eprintln!(
        "edgevit-tools: wrote {} ({:.1} MB, {:?}, {} layers, hidden {}, {} labels) in {:.1} s",
        args.output.display(),
        size as f64 / 1e6,
        args.dtype,
        a.num_layers,
        a.hidden_size,
        a.num_labels,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
