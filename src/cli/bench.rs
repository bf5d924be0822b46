//! `edgevit bench`: one configuration's report, a profile per layer, or a sweep over models,
//! dtypes and thread counts in one table.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use edgevit::bench::BenchOptions;
use edgevit::synth::Preset;
use edgevit::{Error, Model};

use crate::{emit, input_path, open_model, printable, thread_count};

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
pub(crate) struct Bench {
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

/// Comma-separated values of `flag`, each parsed by `parse`.
fn list<T>(flag: &str, value: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, Error> {
    value.split(',').map(|v| parse(v.trim()).map_err(|e| Error::Input(format!("{flag} {value}: {e}")))).collect()
}

/// A model to benchmark: a file, or an architecture and dtype with random weights.
enum BenchModel {
    File(PathBuf),
    Random(Preset, edgevit::config::WeightDType),
}

pub(crate) fn bench(args: Bench) -> Result<ExitCode, Error> {
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
            let dtypes =
                list("--dtype", args.dtype.as_deref().unwrap_or("int8"), str::parse::<edgevit::config::WeightDType>)?;
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
    // A pool per thread count (the global one can be set only once per process).
    let pools = threads
        .iter()
        .map(|&n| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build();
            pool.map(|p| (n, p)).map_err(|e| Error::Unsupported(format!("cannot start {n} threads: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Models are made and opened on one thread of their own, not on every core (`--threads 1`
    // runs on one thread from start to end) nor on a measured pool: whichever of a pool's
    // threads picked that work up would differ from run to run, and `benches/arm_threads.sh`
    // takes per-thread instruction counts of two runs apart. The price: a random model's
    // weight quantization, which runs rows in parallel elsewhere, runs on one thread here
    // (ViT-B/16 int8: about 2.3 s on a Zen 3 core); opening checks values, some milliseconds.
    let setup = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::Unsupported(format!("cannot start a thread: {e}")))?;
    let mut reports = Vec::new();
    for m in &models {
        let start = Instant::now();
        let (model, synth_ms) = setup.install(|| match m {
            BenchModel::File(path) => Ok::<_, Error>((open_model(path, args.no_mmap, false)?, None)),
            BenchModel::Random(preset, dtype) => {
                let file = edgevit::synth::open(*preset, *dtype, 1)?;
                let synth_ms = start.elapsed().as_secs_f64() * 1e3;
                Ok((Model::from_file(file)?, Some(synth_ms)))
            }
        })?;
        let open_ms = start.elapsed().as_secs_f64() * 1e3 - synth_ms.unwrap_or(0.0);
        for (n, pool) in &pools {
            let n = *n;
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
