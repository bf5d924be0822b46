//! `edgevit`: classify images and tensors with a `.evit` model on the device.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use edgevit::npy::{read_npy, NpyData};
use edgevit::{preprocess, top_k, Error, Model, Prediction};

#[derive(FromArgs)]
/// Run Vision Transformer image classifiers from an .evit model file.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Classify(Classify),
    Info(Info),
}

#[derive(FromArgs)]
/// Classify images (JPEG, PNG) or preprocessed float32 .npy tensors ([3,H,W] or [1,3,H,W]).
#[argh(subcommand, name = "classify")]
struct Classify {
    /// the .evit model file
    #[argh(option, short = 'm')]
    model: PathBuf,
    /// how many classes to report per input (default 5)
    #[argh(option, default = "5")]
    top_k: usize,
    /// print one JSON object per line instead of readable text
    #[argh(switch)]
    json: bool,
    /// include all logits in the JSON output (needs --json)
    #[argh(switch)]
    logits: bool,
    /// worker threads (default: the number of CPU cores)
    #[argh(option)]
    threads: Option<usize>,
    /// image or .npy files
    #[argh(positional, greedy)]
    inputs: Vec<PathBuf>,
}

#[derive(FromArgs)]
/// Describe a model file: architecture, preprocessing, labels, tensors.
#[argh(subcommand, name = "info")]
struct Info {
    /// the .evit model file
    #[argh(option, short = 'm')]
    model: PathBuf,
    /// check every tensor's checksum (reads the whole file)
    #[argh(switch)]
    verify: bool,
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Classify(c) => classify(c),
        Command::Info(i) => info(i),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edgevit: {e}");
            ExitCode::FAILURE
        }
    }
}

fn set_threads(threads: Option<usize>) -> Result<(), Error> {
    let n = match threads {
        Some(0) => return Err(Error::Input("--threads must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Unsupported(format!("cannot start {n} threads: {e}")))
}

fn classify(args: Classify) -> Result<ExitCode, Error> {
    if args.inputs.is_empty() {
        return Err(Error::Input("no inputs given: name one or more image or .npy files".into()));
    }
    if args.top_k == 0 {
        return Err(Error::Input("--top-k must be at least 1".into()));
    }
    if args.logits && !args.json {
        return Err(Error::Input("--logits needs --json".into()));
    }
    set_threads(args.threads)?;
    let model = Model::open(&args.model)?;
    let mut session = model.session();
    let mut failures = 0;
    for input in &args.inputs {
        let start = Instant::now();
        let result =
            load_input(input, &model).and_then(|pixels| model.forward(&pixels, &mut session).map(|l| l.to_vec()));
        let ms = start.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(logits) => {
                let top = top_k(&logits, args.top_k, model.labels());
                let line = if args.json {
                    json_line(input, &top, ms, args.logits.then_some(&logits[..]))
                } else {
                    text_block(input, &top, ms)
                };
                if !emit(&format!("{line}\n")) {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("edgevit: {e}");
            }
        }
    }
    if failures > 0 {
        eprintln!("edgevit: {failures} of {} inputs failed", args.inputs.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads an image (decoded and preprocessed) or an already preprocessed `.npy` tensor.
fn load_input(path: &Path, model: &Model) -> Result<Vec<f32>, Error> {
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        return preprocess::load_and_preprocess(path, model.config());
    }
    let a = model.architecture();
    let arr = read_npy(path)?;
    let want = [a.num_channels, a.image_height, a.image_width];
    let shape_ok = arr.shape == want || (arr.shape.len() == 4 && arr.shape[0] == 1 && arr.shape[1..] == want);
    match arr.data {
        NpyData::F32(v) if shape_ok => Ok(v),
        NpyData::F32(_) => Err(Error::Input(format!(
            "{}: tensor shape {:?}; this model takes [{}, {}, {}] or [1, {}, {}, {}]",
            path.display(),
            arr.shape,
            want[0],
            want[1],
            want[2],
            want[0],
            want[1],
            want[2]
        ))),
        NpyData::U8(_) => {
            Err(Error::Input(format!("{}: a preprocessed tensor must be float32, not uint8", path.display())))
        }
    }
}

fn json_line(input: &Path, top: &[Prediction], ms: f64, logits: Option<&[f32]>) -> String {
    let mut obj = serde_json::json!({
        "input": input.to_string_lossy(),
        "top": top,
        "ms": (ms * 1000.0).round() / 1000.0,
    });
    if let Some(l) = logits {
        obj["logits"] = serde_json::json!(l);
    }
    obj.to_string()
}

fn text_block(input: &Path, top: &[Prediction], ms: f64) -> String {
    let mut s = format!("{} ({ms:.1} ms)", input.display());
    for p in top {
        s.push_str(&format!("\n  {:>6.2}%  {} [{}]", p.prob * 100.0, p.label, p.index));
    }
    s
}

fn info(args: Info) -> Result<ExitCode, Error> {
    let model = Model::open(&args.model)?;
    let mut out = String::new();
    // Formatting into a String cannot fail.
    macro_rules! w {
        ($($arg:tt)*) => { let _ = writeln!(out, $($arg)*); };
    }
    let c = model.config();
    let a = &c.architecture;
    let file = model.file();
    w!("file:          {} ({:.1} MB)", args.model.display(), file.file_len() as f64 / 1e6);
    w!("source:        {}", if c.source.is_empty() { "-" } else { &c.source });
    w!(
        "architecture:  ViT, {} layers, hidden {}, {} heads of {}, MLP {}, {:?}",
        a.num_layers,
        a.hidden_size,
        a.num_heads,
        a.head_dim(),
        a.intermediate_size,
        a.activation
    );
    w!("input:         {}x{} RGB, patch {}, {} tokens", a.image_width, a.image_height, a.patch_size, a.tokens());
    let params: u64 = file.header().tensors.iter().filter_map(|t| t.numel()).sum();
    let storage = match c.weights.dtype {
        edgevit::config::WeightDType::F32 => "f32".to_string(),
        edgevit::config::WeightDType::Int8 if c.weights.keep_f32.is_empty() => {
            "int8 (per-channel, k4n16 packed)".to_string()
        }
        edgevit::config::WeightDType::Int8 => {
            format!("int8 (per-channel, k4n16 packed); {} in f32", c.weights.keep_f32.join(", "))
        }
    };
    w!("weights:       {} tensors, {:.2} M parameters, {storage}", file.header().tensors.len(), params as f64 / 1e6);
    let p = &c.preprocess;
    w!(
        "preprocess:    resize {:?} ({:?}), crop {:?}, rescale {:?}, normalize {:?}",
        p.resize,
        p.filter,
        p.crop,
        p.rescale_factor,
        p.normalize.as_ref().map(|n| (n.mean, n.std))
    );
    let preview: Vec<&str> = c.labels.iter().take(5).map(String::as_str).collect();
    w!("labels:        {} ({}{})", c.labels.len(), preview.join(", "), if c.labels.len() > 5 { ", ..." } else { "" });
    w!("kernels:       {}", model.kernel_names().join(", "));
    if args.verify {
        file.verify()?;
        w!("verify:        all {} tensor checksums match", file.header().tensors.len());
    }
    Ok(if emit(&out) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Writes to stdout; false if it is closed (e.g. piped into `head`), which ends the run quietly.
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok()
}
