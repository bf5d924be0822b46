//! `edgevit`: classify images and tensors with a `.evit` model on the device. One file per
//! subcommand (classify.rs also streams camera frames); here the parsing and what they share:
//! threads, model opening, names from the command line and writing output.

mod bench;
mod classify;
mod eval;
mod info;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use edgevit::{Error, Model};

use bench::{bench, Bench};
use classify::{classify, Classify};
use eval::{eval, Eval};
use info::{info, Info};

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

/// Starts rayon's global pool with the threads `--threads` names.
fn set_threads(threads: Option<usize>) -> Result<(), Error> {
    let n = thread_count(threads)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Unsupported(format!("cannot start {n} threads: {e}")))
}

/// Runs `f` on one of rayon's worker threads, so that the parallel sections inside start from
/// within the pool (no trip through rayon's shared job queue, which allocates now and then).
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
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
