//! `edgevit`: classify images and tensors with a `.evit` model on the device.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use edgevit::bench::BenchOptions;
use edgevit::inputs::{self, Input, StdinContent};
use edgevit::npy::{read_npy, NpyData};
use edgevit::stream::{FrameFormat, StreamOptions, YuvMatrix, YuvRange};
use edgevit::synth::Preset;
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
    Eval(Eval),
    Bench(Bench),
    Info(Info),
}

#[derive(FromArgs)]
/// Measure a model: open time, first inference, p50/p90/p99 latency, images/s, peak memory,
/// GOP/s and the share of time per operation (--profile: per layer). Give a model file, or an
/// architecture to benchmark random weights of its real shape (nothing to download). Several
/// files (-m a -m b) or comma-separated --arch, --dtype and --threads run every combination and
/// print one table.
#[argh(
    subcommand,
    name = "bench",
    example = "{command_name} -m vit-base.evit --threads 4 --runs 100",
    example = "{command_name} --arch vit-ti16 --dtype int8 --threads 1 --json",
    example = "{command_name} -m vit-base.evit --profile",
    example = "{command_name} --arch vit-ti16,vit-b16 --dtype int8,f16 --threads 1,2,4 --format csv"
)]
struct Bench {
    /// the .evit model file (repeat for several)
    #[argh(option, short = 'm')]
    model: Vec<PathBuf>,
    /// instead of a file: vit-ti16, vit-s16, vit-b16 or vit-l16 with random weights
    /// (comma-separated for several)
    #[argh(option)]
    arch: Option<String>,
    /// with --arch: int8 (default), f16 or f32 (comma-separated for several)
    #[argh(option)]
    dtype: Option<String>,
    /// timed runs (default 50)
    #[argh(option, default = "50")]
    runs: usize,
    /// stop after this many seconds of timed runs, even if fewer runs were made
    #[argh(option)]
    seconds: Option<f64>,
    /// untimed runs after the first inference (default 3)
    #[argh(option, default = "3")]
    warmup: usize,
    /// worker threads (default: the number of CPU cores; comma-separated for several)
    #[argh(option)]
    threads: Option<String>,
    /// read the model file into memory instead of mapping it
    #[argh(switch)]
    no_mmap: bool,
    /// print the report as one JSON object
    #[argh(switch)]
    json: bool,
    /// also time every layer's operations: a table of time, share, GOP/s or GB/s and kernel
    #[argh(switch)]
    profile: bool,
    /// one table for all combinations: md (markdown, the default for several), csv or json
    #[argh(option)]
    format: Option<TableFormat>,
}

/// `bench --format`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TableFormat {
    Markdown,
    Csv,
    Json,
}

impl std::str::FromStr for TableFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "md" | "markdown" => Ok(Self::Markdown),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!("table format '{other}' is not one of: md, csv, json")),
        }
    }
}

#[derive(FromArgs)]
/// Classify images (JPEG, PNG), preprocessed float32 .npy tensors ([3,H,W] or [1,3,H,W]),
/// or, with --stream, camera frames read from stdin.
#[argh(
    subcommand,
    name = "classify",
    example = "{command_name} -m vit-base.evit cat.jpg dog.png --top-k 3",
    example = "{command_name} -m vit-base.evit photos/ -r --json > results.jsonl",
    example = "rpicam-vid -t 0 -n --codec yuv420 --width 640 --height 480 -o - | {command_name} -m vit-base.evit --stream --frame-format yuv420p --frame-size 640x480"
)]
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
    /// include all logits in the JSON output (needs --json, or --stream)
    #[argh(switch)]
    logits: bool,
    /// worker threads (default: the number of CPU cores; at most 256)
    #[argh(option)]
    threads: Option<usize>,
    /// read the model file into memory instead of mapping it (for network filesystems, or a
    /// file that may be changed in place while edgevit runs; replacing a model by rename, as
    /// edgevit-tools writes, is safe either way)
    #[argh(switch)]
    no_mmap: bool,
    /// check every tensor's checksum when opening the model (reads the whole file)
    #[argh(switch)]
    verify: bool,
    /// read camera frames from stdin instead of files, and write one JSON line per frame
    #[argh(switch)]
    stream: bool,
    /// with --stream: yuv420p (I420), nv12, rgb24, bgr24, rgba, bgra, gray8, or mjpeg
    /// (concatenated JPEGs)
    #[argh(option)]
    frame_format: Option<FrameFormat>,
    /// with --stream: the frames' size as WxH, e.g. 640x480 (required for raw formats)
    #[argh(option)]
    frame_size: Option<FrameSize>,
    /// with raw frames whose rows are padded: bytes per row of the first plane (yuv420p's
    /// chroma rows are half of it, nv12's the same), e.g. 704 for rpicam-vid's 700x500 I420
    #[argh(option)]
    frame_stride: Option<usize>,
    /// with YUV frames: bt601 (default, what rpicam-vid writes at its default 640x480) or bt709
    #[argh(option)]
    yuv_matrix: Option<YuvMatrix>,
    /// with YUV frames: limited (default; Y in 16..235) or full (0..255)
    #[argh(option)]
    yuv_range: Option<YuvRange>,
    /// with --stream: classify every Nth frame and drop the others (default 1: all)
    #[argh(option, default = "1")]
    every: u64,
    /// with --stream: stop with an error if no complete frame arrives for this many seconds
    /// (default: wait for ever)
    #[argh(option)]
    frame_timeout: Option<f64>,
    /// with a folder among the inputs: search its subfolders too
    #[argh(switch, short = 'r')]
    recursive: bool,
    /// image (JPEG, PNG, WebP, BMP) or .npy files, folders of them, or - for one on stdin
    /// (options may come before or after them; `--` ends options)
    #[argh(positional)]
    inputs: Vec<PathBuf>,
}

/// `--frame-size WxH`.
struct FrameSize(usize, usize);

impl std::str::FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("frame size '{s}' is not WxH (e.g. 640x480)");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (w, h) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
        if w == 0 || h == 0 {
            return Err(format!("frame size '{s}' is empty"));
        }
        Ok(FrameSize(w, h))
    }
}

#[derive(FromArgs)]
/// Accuracy on labelled images: top-1 and top-5, the classes it gets wrong most, and what it
/// takes them for. Labels come from ImageNet file names (n01440764_123.JPEG, for 1000-class
/// models) or from one folder per class, named by label or index (folders are searched
/// recursively; unlabelled files are counted and skipped).
#[argh(
    subcommand,
    name = "eval",
    example = "{command_name} -m vit-base.evit imagenet-val/",
    example = "{command_name} -m digits.evit test-digits/ --json --worst 3"
)]
struct Eval {
    /// the .evit model file
    #[argh(option, short = 'm')]
    model: PathBuf,
    /// how many of the worst classes and most frequent confusions to list (default 10)
    #[argh(option, default = "10")]
    worst: usize,
    /// print one JSON object instead of readable text
    #[argh(switch)]
    json: bool,
    /// worker threads (default: the number of CPU cores; at most 256)
    #[argh(option)]
    threads: Option<usize>,
    /// read the model file into memory instead of mapping it
    #[argh(switch)]
    no_mmap: bool,
    /// labelled images (JPEG, PNG, WebP, BMP) or .npy tensors, or folders of them
    #[argh(positional)]
    inputs: Vec<PathBuf>,
}

#[derive(FromArgs)]
/// Describe a model file: architecture, preprocessing, labels, tensors.
#[argh(
    subcommand,
    name = "info",
    example = "{command_name} -m vit-base.evit --verify",
    example = "{command_name} -m vit-base.evit --labels > labels.txt"
)]
struct Info {
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

/// The most worker threads `--threads` accepts: far beyond any board's cores, and small enough
/// to fail at once (thousands of threads take seconds to start, or abort).
const MAX_THREADS: usize = 256;
/// The range of `--frame-timeout`, in seconds.
const FRAME_TIMEOUT_RANGE: (f64, f64) = (0.001, 86_400.0);

fn main() -> ExitCode {
    let cli: Cli = parse_args();
    let result = match cli.command {
        Command::Classify(c) => classify(c),
        Command::Eval(e) => eval(e),
        Command::Bench(b) => bench(b),
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

/// Arguments that are not valid UTF-8 (file names), and `-`, stand in argh's String world as a
/// token no real argument can contain (it starts with NUL), and are mapped back to the
/// original bytes where inputs are read: see [`input_path`].
const NON_UTF8_TOKEN: &str = "\0non-utf8-arg-";

fn parse_args() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let strings: Vec<String> = args
        .iter()
        .enumerate()
        // argh takes a lone "-" (stdin) for an unknown option: it travels as the same token.
        .map(|(i, a)| {
            a.to_str().filter(|&a| a != "-").map(str::to_string).unwrap_or_else(|| format!("{NON_UTF8_TOKEN}{i}"))
        })
        .collect();
    let cmd = Path::new(&strings[0]).file_name().and_then(|n| n.to_str()).unwrap_or("edgevit");
    let rest: Vec<&str> = strings[1..].iter().map(String::as_str).collect();
    edgevit::args::parse(cmd, &rest)
}

/// The input path an argument named: the original bytes of a non-UTF-8 one.
fn input_path(arg: &Path) -> PathBuf {
    let original = arg.to_str().and_then(|s| s.strip_prefix(NON_UTF8_TOKEN)).and_then(|i| i.parse::<usize>().ok());
    match original.and_then(|i| std::env::args_os().nth(i)) {
        Some(os) => PathBuf::from(os),
        None => arg.to_path_buf(),
    }
}

/// Text for a terminal: control characters (a newline, an escape sequence) escaped, so that a
/// label or a file name cannot forge output lines or drive the terminal.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn set_threads(threads: Option<usize>) -> Result<(), Error> {
    let n = match threads {
        Some(0) => return Err(Error::Input("--threads must be at least 1".into())),
        Some(n) if n > MAX_THREADS => {
            return Err(Error::Input(format!("--threads {n} is more than the {MAX_THREADS} edgevit supports")))
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Unsupported(format!("cannot start {n} threads: {e}")))
}

fn classify(args: Classify) -> Result<ExitCode, Error> {
    if args.stream {
        return classify_stream(args);
    }
    let stream_only = [
        ("--frame-format", args.frame_format.is_some()),
        ("--frame-size", args.frame_size.is_some()),
        ("--frame-stride", args.frame_stride.is_some()),
        ("--yuv-matrix", args.yuv_matrix.is_some()),
        ("--yuv-range", args.yuv_range.is_some()),
        ("--every", args.every != 1),
        ("--frame-timeout", args.frame_timeout.is_some()),
    ];
    if let Some((flag, _)) = stream_only.iter().find(|(_, given)| *given) {
        return Err(Error::Input(format!(
            "{flag} applies to camera frames: add --stream (frames are read from stdin)"
        )));
    }
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
    let model = open_model(&args.model, args.no_mmap, args.verify)?;
    in_pool(|| classify_files(&args, &model))
}

/// Runs `f` on one of rayon's worker threads, so that the parallel sections inside start from
/// within the pool (no trip through rayon's shared job queue, which allocates now and then).
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

fn classify_files(args: &Classify, model: &Model) -> Result<ExitCode, Error> {
    let mut session = model.session();
    let mut failures = 0;
    let paths: Vec<PathBuf> = args.inputs.iter().map(|a| input_path(a)).collect();
    let inputs = inputs::expand(&paths, args.recursive);
    let total = inputs.len();
    for input in inputs {
        let start = Instant::now();
        let result = input.and_then(|input| {
            let pixels = load_input(&input, model)?;
            Ok((input, model.forward(&pixels, &mut session)?.to_vec()))
        });
        let ms = start.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok((input, logits)) => {
                let top = top_k(&logits, args.top_k, model.labels());
                let name = input.name();
                let line = if args.json {
                    json_line(&name, &top, ms, args.logits.then_some(&logits[..]))
                } else {
                    text_block(&name, &top, ms)
                };
                match emit(&format!("{line}\n")) {
                    Output::Written => {}
                    // A closed pipe (`| head -1`) ends the run quietly; see `emit`.
                    Output::Closed => break,
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("edgevit: {}", printable(&e.to_string()));
            }
        }
    }
    if failures > 0 {
        eprintln!("edgevit: {failures} of {total} inputs failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(args: Eval) -> Result<ExitCode, Error> {
    if args.inputs.is_empty() {
        return Err(Error::Input("no inputs given: name labelled images or folders of them".into()));
    }
    set_threads(args.threads)?;
    let model = open_model(&args.model, args.no_mmap, false)?;
    let paths: Vec<PathBuf> = args.inputs.iter().map(|a| input_path(a)).collect();
    let labels = model.labels();
    let mut accuracy = edgevit::eval::Accuracy::new(labels.len());
    let (mut unlabelled, mut failed) = (0usize, 0usize);
    let mut labelled = Vec::new();
    for input in inputs::expand(&paths, true) {
        match input {
            Ok(Input::File(path)) => match edgevit::eval::label_of(&path, labels) {
                Some(label) => labelled.push((Input::File(path), label)),
                None => unlabelled += 1,
            },
            Ok(Input::Stdin) => return Err(Error::Input("eval reads labelled files: stdin (-) has no label".into())),
            Err(e) => {
                failed += 1;
                eprintln!("edgevit: {}", printable(&e.to_string()));
            }
        }
    }
    if labelled.is_empty() {
        return Err(Error::Input(format!(
            "none of the {unlabelled} inputs is labelled: name them as ImageNet does (n01440764_123.JPEG, for a \
             1000-class model) or put them in one folder per class, named by label or index"
        )));
    }
    let bar = edgevit::progress::bar(labelled.len() as u64, "images");
    bar.set_prefix("eval");
    in_pool(|| {
        let mut session = model.session();
        for (input, label) in &labelled {
            let result = load_input(input, &model).and_then(|pixels| {
                accuracy.add(model.forward(&pixels, &mut session)?, *label);
                Ok(())
            });
            match result {
                Ok(()) => {}
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("edgevit: {}", printable(&e.to_string())));
                }
            }
            bar.inc(1);
        }
    });
    bar.finish_and_clear();
    let report = accuracy.report(labels, args.worst);
    let text = if args.json {
        let mut obj = serde_json::json!({
            "model": args.model.to_string_lossy(),
            "dtype": model.config().weights.dtype.name(),
            "unlabelled": unlabelled,
            "failed": failed,
        });
        let extra = serde_json::to_value(&report).expect("reports serialise");
        obj.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        format!("{obj}\n")
    } else {
        eval_text(&args.model, &model, &report, unlabelled, failed)
    };
    if emit(&text) == Output::Closed {
        return Ok(ExitCode::SUCCESS);
    }
    if failed > 0 {
        eprintln!("edgevit: {failed} inputs could not be classified");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_text(
    path: &Path,
    model: &Model,
    r: &edgevit::eval::AccuracyReport,
    unlabelled: usize,
    failed: usize,
) -> String {
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    let class = |c: &edgevit::eval::ClassRef| format!("[{}] {}", c.index, printable(&c.label));
    let mut s = String::new();
    let _ = writeln!(s, "model:   {} ({})", printable(&path.to_string_lossy()), model.config().weights.dtype.name());
    let _ = writeln!(s, "inputs:  {} labelled, {unlabelled} unlabelled (skipped), {failed} failed", r.inputs);
    let _ = writeln!(s, "top-1:   {} ({}/{})", pct(r.top1), r.top1_correct, r.inputs);
    let _ = writeln!(s, "top-5:   {} ({}/{})", pct(r.top5), r.top5_correct, r.inputs);
    if !r.worst_classes.is_empty() {
        let _ = writeln!(s, "\nworst classes ({} of the {} with inputs):", r.worst_classes.len(), r.classes_seen);
        let _ = writeln!(s, "  {:>8}  {:>8}  {:>6}  class", "top-1", "top-5", "inputs");
        for c in &r.worst_classes {
            let _ = write!(s, "  {:>8}  {:>8}  {:>6}  {}", pct(c.top1), pct(c.top5), c.inputs, class(&c.class));
            if let Some(t) = &c.taken_for {
                let _ = write!(s, " (taken for {} x{})", class(&t.class), t.count);
            }
            s.push('\n');
        }
    }
    if !r.confusions.is_empty() {
        let _ = writeln!(s, "\nmost frequent confusions (true -> predicted):");
        for c in &r.confusions {
            let _ = writeln!(s, "  {:>6}  {} -> {}", c.count, class(&c.truth), class(&c.predicted));
        }
    }
    s
}

/// `classify --stream`: frames from stdin, one JSON line per classified frame, flushed at once.
fn classify_stream(args: Classify) -> Result<ExitCode, Error> {
    if !args.inputs.is_empty() {
        return Err(Error::Input(format!(
            "--stream reads frames from stdin; it takes no input files (got {})",
            args.inputs[0].display()
        )));
    }
    let format = args
        .frame_format
        .ok_or_else(|| Error::Input(format!("--stream needs --frame-format, one of: {}", FrameFormat::NAMES)))?;
    if args.top_k == 0 {
        return Err(Error::Input("--top-k must be at least 1".into()));
    }
    if format != FrameFormat::Mjpeg && args.frame_size.is_none() {
        return Err(Error::Input(format!("{} frames need --frame-size WxH, e.g. 640x480", format.name())));
    }
    if let (Some(stride), Some(FrameSize(w, _))) = (args.frame_stride, &args.frame_size) {
        edgevit::stream::check_stride(format, *w, Some(stride))
            .map_err(|e| Error::Input(format!("--frame-stride {stride}: {e}")))?;
    } else if args.frame_stride.is_some() && format == FrameFormat::Mjpeg {
        return Err(Error::Input("--frame-stride applies to raw frames, not mjpeg".into()));
    }
    let is_yuv = matches!(format, FrameFormat::Yuv420p | FrameFormat::Nv12);
    if !is_yuv && (args.yuv_matrix.is_some() || args.yuv_range.is_some()) {
        return Err(Error::Input(format!(
            "--yuv-matrix and --yuv-range apply to yuv420p and nv12 frames, not {}",
            format.name()
        )));
    }
    let opts = StreamOptions {
        format,
        size: args.frame_size.map(|FrameSize(w, h)| (w, h)),
        stride: args.frame_stride,
        matrix: args.yuv_matrix.unwrap_or_default(),
        range: args.yuv_range.unwrap_or_default(),
        every: args.every,
        frame_timeout: match args.frame_timeout {
            None => None,
            Some(s) if s >= FRAME_TIMEOUT_RANGE.0 && s <= FRAME_TIMEOUT_RANGE.1 => {
                Some(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => {
                let (lo, hi) = FRAME_TIMEOUT_RANGE;
                return Err(Error::Input(format!("--frame-timeout {s} must be between {lo} and {hi} seconds")));
            }
        },
    };
    set_threads(args.threads)?;
    let model = open_model(&args.model, args.no_mmap, args.verify)?;
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    let mut out_closed = false;
    let result = in_pool(|| {
        edgevit::stream::classify_stream(&model, std::io::stdin(), opts, |frame| {
            let mut obj = serde_json::json!({
                "frame": frame.index,
                "top": top_k(frame.logits, args.top_k, model.labels()),
                "ms": {
                    "read": round(frame.read_ms),
                    "preprocess": round(frame.preprocess_ms),
                    "inference": round(frame.inference_ms),
                },
            });
            if args.logits {
                obj["logits"] = serde_json::json!(frame.logits);
            }
            out_closed = emit(&format!("{obj}\n")) == Output::Closed;
            !out_closed
        })
    });
    match result {
        Ok(0) if !out_closed => {
            eprintln!("edgevit: the stream held no frames");
            Ok(ExitCode::FAILURE)
        }
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

/// Reads an image (decoded and preprocessed) or an already preprocessed `.npy` tensor.
fn load_input(input: &Input, model: &Model) -> Result<Vec<f32>, Error> {
    let path = match input {
        Input::File(path) => path,
        Input::Stdin => {
            return match inputs::read_stdin()? {
                StdinContent::Image(img) => {
                    let mut out = Vec::new();
                    img.preprocess_into(&model.config().preprocess, &mut out);
                    Ok(out)
                }
                StdinContent::Tensor(arr) => tensor_input(Path::new("-"), arr, model),
            }
        }
    };
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        return preprocess::load_and_preprocess(path, model.config());
    }
    tensor_input(path, read_npy(path)?, model)
}

/// A `.npy` tensor as the model's input, if it has the model's input shape and is float32.
fn tensor_input(path: &Path, arr: edgevit::npy::NpyArray, model: &Model) -> Result<Vec<f32>, Error> {
    let a = model.architecture();
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

fn json_line(input: &str, top: &[Prediction], ms: f64, logits: Option<&[f32]>) -> String {
    let mut obj = serde_json::json!({
        "input": input,
        "top": top,
        "ms": (ms * 1000.0).round() / 1000.0,
    });
    if let Some(l) = logits {
        obj["logits"] = serde_json::json!(l);
    }
    obj.to_string()
}

fn text_block(input: &str, top: &[Prediction], ms: f64) -> String {
    let mut s = format!("{} ({ms:.1} ms)", printable(input));
    for p in top {
        s.push_str(&format!("\n  {:>6.2}%  {} [{}]", p.prob * 100.0, printable(&p.label), p.index));
    }
    s
}

/// Opens a model mapped (the default) or read into memory, optionally checking every checksum.
fn open_model(path: &Path, no_mmap: bool, verify: bool) -> Result<Model, Error> {
    // The model's name as given (a non-UTF-8 name, or `-`, travels as a token through argh).
    let path = &input_path(path);
    let model = if no_mmap { Model::open_in_memory(path)? } else { Model::open(path)? };
    if verify {
        model.file().verify()?;
    }
    Ok(model)
}

/// Comma-separated values of `flag`, each parsed by `parse`.
fn list<T>(flag: &str, value: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, Error> {
    value.split(',').map(|v| parse(v.trim()).map_err(|e| Error::Input(format!("{flag} {value}: {e}")))).collect()
}

/// The worker-thread count `--threads` names (default: the number of cores).
fn thread_count(threads: Option<usize>) -> Result<usize, Error> {
    match threads {
        Some(0) => Err(Error::Input("--threads must be at least 1".into())),
        Some(n) if n > MAX_THREADS => {
            Err(Error::Input(format!("--threads {n} is more than the {MAX_THREADS} edgevit supports")))
        }
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    }
}

/// A model to benchmark: a file, or an architecture and dtype with random weights.
enum BenchModel {
    File(PathBuf),
    Random(Preset, edgevit::config::WeightDType),
}

fn bench(args: Bench) -> Result<ExitCode, Error> {
    if args.runs == 0 {
        return Err(Error::Input("--runs must be at least 1".into()));
    }
    if let Some(s) = args.seconds.filter(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::Input(format!("--seconds {s} must be a positive number")));
    }
    let threads = match &args.threads {
        Some(t) => list("--threads", t, |v| v.parse::<usize>().map_err(|e| format!("'{v}': {e}")))?
            .into_iter()
            .map(|n| thread_count(Some(n)))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![thread_count(None)?],
    };
    let models: Vec<BenchModel> = match (args.model.is_empty(), &args.arch) {
        (false, None) => {
            if args.dtype.is_some() {
                return Err(Error::Input("--dtype goes with --arch; a model file has its own storage".into()));
            }
            args.model.iter().map(|m| BenchModel::File(input_path(m))).collect()
        }
        (true, Some(arch)) => {
            if args.no_mmap {
                return Err(Error::Input(
                    "--no-mmap applies to a model file; --arch builds the model in memory".into(),
                ));
            }
            let presets = list("--arch", arch, |v| v.parse::<Preset>())?;
            let dtypes = list("--dtype", args.dtype.as_deref().unwrap_or("int8"), edgevit::synth::parse_dtype)?;
            presets.iter().flat_map(|&p| dtypes.iter().map(move |&d| BenchModel::Random(p, d))).collect()
        }
        (false, Some(_)) => return Err(Error::Input("give either -m MODEL or --arch, not both".into())),
        (true, None) => {
            return Err(Error::Input(format!(
                "name a model file with -m, or an architecture with --arch ({})",
                Preset::NAMES
            )))
        }
    };
    let table = args.format.or((models.len() * threads.len() > 1).then_some(TableFormat::Markdown));
    if table.is_some() && args.json {
        return Err(Error::Input("--json prints one run's report; with several, use --format json".into()));
    }
    let opts = BenchOptions { warmup: args.warmup, runs: args.runs, seconds: args.seconds, profile: args.profile };
    let mut reports = Vec::new();
    for m in &models {
        let start = Instant::now();
        let (model, synth_ms) = match m {
            BenchModel::File(path) => (open_model(path, args.no_mmap, false)?, None),
            BenchModel::Random(preset, dtype) => {
                let file = edgevit::synth::open(*preset, *dtype, 1)?;
                let synth_ms = start.elapsed().as_secs_f64() * 1e3;
                (Model::from_file(file)?, Some(synth_ms))
            }
        };
        let open_ms = start.elapsed().as_secs_f64() * 1e3 - synth_ms.unwrap_or(0.0);
        for &n in &threads {
            // A pool per thread count (the global one can be set only once per process).
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::Unsupported(format!("cannot start {n} threads: {e}")))?;
            // Runs, or with --seconds the share of the time limit, whichever ends the measurement.
            let bar = edgevit::progress::bar(args.runs as u64, "runs");
            bar.set_prefix(format!("bench {n} thread{}", if n == 1 { "" } else { "s" }));
            let report = pool.install(|| {
                edgevit::bench::run(&model, opts, open_ms, synth_ms, |done, fraction| {
                    bar.set_position((done as u64).max((fraction * args.runs as f64) as u64));
                })
            });
            bar.finish_and_clear();
            reports.push(report?);
        }
    }
    let text = match table {
        None if args.json => format!("{}\n", serde_json::to_string(&reports[0]).expect("reports serialise")),
        None => reports[0].text(),
        Some(TableFormat::Json) => format!("{}\n", serde_json::to_string(&reports).expect("reports serialise")),
        Some(format) => sweep_table(&reports, format == TableFormat::Csv),
    };
    emit(&text);
    Ok(ExitCode::SUCCESS)
}

/// One line per configuration, as markdown or CSV.
fn sweep_table(reports: &[edgevit::bench::BenchReport], csv: bool) -> String {
    let head = ["model", "storage", "threads", "mean ms", "stddev ms", "p50 ms", "p99 ms", "images/s", "GOP/s"];
    let rows: Vec<[String; 9]> = reports
        .iter()
        .map(|r| {
            [
                r.model.clone(),
                r.storage.clone(),
                r.threads.to_string(),
                format!("{:.3}", r.mean_ms),
                format!("{:.3}", r.stddev_ms),
                format!("{:.3}", r.p50_ms),
                format!("{:.3}", r.p99_ms),
                format!("{:.2}", r.images_per_s),
                format!("{:.1}", r.achieved_gops),
            ]
        })
        .collect();
    let mut s = String::new();
    if csv {
        let quote = |v: &str| {
            if v.contains([',', '"', '\n']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        };
        let _ = writeln!(s, "{}", head.join(","));
        for r in &rows {
            let _ = writeln!(s, "{}", r.iter().map(|v| quote(v)).collect::<Vec<_>>().join(","));
        }
    } else {
        let _ = writeln!(s, "| {} |", head.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
        for r in &rows {
            let cells: Vec<String> = r.iter().map(|v| printable(v).replace('|', "\\|")).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
    }
    s
}

fn info(args: Info) -> Result<ExitCode, Error> {
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

/// Writes to stdout; false if it is closed (e.g. piped into `head`), which ends the run quietly.
/// Whether output still has a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Written,
    /// The reader closed the pipe: the run stops, quietly and successfully, in file and stream
    /// mode alike (`edgevit classify ... | head -1` is normal use).
    Closed,
}

/// Writes and flushes `text` to stdout. Any other write error (a full disk, `>/dev/full`) is
/// reported and ends the process with status 1: results that cannot be delivered are not a
/// success.
fn emit(text: &str) -> Output {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Output::Written,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Output::Closed,
        Err(e) => {
            eprintln!("edgevit: cannot write the results to stdout: {e}");
            std::process::exit(1);
        }
    }
}
