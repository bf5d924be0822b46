//! `edgevit classify`: image and `.npy` files, folders of them, stdin, and (`--stream`) camera
//! frames.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use edgevit::inputs;
use edgevit::stream::{FrameFormat, StreamOptions, YuvMatrix, YuvRange};
use edgevit::{top_k, Error, Model, Prediction};

use crate::{emit, in_pool, input_path, open_model, printable, set_threads, Output, FRAME_TIMEOUT_RANGE};

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
pub(crate) struct Classify {
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

pub(crate) fn classify(args: Classify) -> Result<ExitCode, Error> {
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

fn classify_files(args: &Classify, model: &Model) -> Result<ExitCode, Error> {
    let mut session = model.session();
    let mut failures = 0;
    let paths: Vec<PathBuf> = args.inputs.iter().map(|a| input_path(a)).collect();
    let inputs: Vec<_> = inputs::expand(&paths, args.recursive)
        .into_iter()
        .map(|input| {
            input.map_err(|e| match e {
                Error::Input(m) if m.ends_with(inputs::SUBFOLDERS_NOT_SEARCHED) => {
                    Error::Input(format!("{m}; add --recursive to search them"))
                }
                e => e,
            })
        })
        .collect();
    let total = inputs.len();
    for input in inputs {
        let start = Instant::now();
        let result = input.and_then(|input| {
            let pixels = inputs::load(&input, model.config())?;
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
    if args.every == 0 {
        return Err(Error::Input("--every must be at least 1".into()));
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
