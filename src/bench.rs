//! `edgevit bench`: latency, throughput, memory and where the time goes, for one model.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Architecture;
use crate::model::{Model, OpTimes};

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Untimed runs after the first inference.
    pub warmup: usize,
    /// Timed runs (the measurement stops at whichever of `runs` and `seconds` comes first).
    pub runs: usize,
    /// How long the timed runs may take at most, in seconds.
    pub seconds: Option<f64>,
    /// Time every layer's operations too ([`BenchReport::profile`]).
    pub profile: bool,
}

/// Everything `bench` reports. Times in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The model file's path, or `random <arch> <dtype>` for `--arch`.
    pub model: String,
    /// How the weights are stored (e.g. `int8 (patch_embed, head in f32)`).
    pub storage: String,
    /// Worker threads the forward passes ran on.
    pub threads: usize,
    /// The kernels the forward pass uses on this CPU.
    pub kernels: Vec<String>,
    /// The model file's size.
    pub model_mb: f64,
    /// Building the random-weight model in memory (`--arch` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synth_ms: Option<f64>,
    /// Mapping and validating the file (or, for `--arch`, opening the built bytes).
    pub open_ms: f64,
    /// The first forward pass, which touches every weight page once.
    pub first_inference_ms: f64,
    /// Timed runs made.
    pub runs: usize,
    /// Mean latency of the timed runs.
    pub mean_ms: f64,
    /// Standard deviation of the timed runs' latency.
    pub stddev_ms: f64,
    /// Fastest timed run.
    pub min_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Timed runs per second of wall time.
    pub images_per_s: f64,
    /// The network's operations ([`ops_per_inference`]), in billions.
    pub gops_per_inference: f64,
    /// `gops_per_inference` at the median latency.
    pub achieved_gops: f64,
    /// Peak resident memory of the process (Linux: VmHWM), if known.
    pub peak_rss_mb: Option<f64>,
    /// Share of the timed runs' forward time per kind of operation, in forward order.
    pub op_share: Vec<OpShare>,
    /// With `--profile`: every layer's operations, in forward order, per run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileRow>>,
    /// Where the figures come from, so that results from many boards can be compared.
    pub machine: Machine,
}

/// One operation of one layer (or of the model, outside the encoder layers) in a profile.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    /// The encoder layer, from 0; absent for the patch embedding, the final layernorm and the
    /// classifier.
    pub layer: Option<usize>,
    /// `patch_embed`, `layernorm`, `qkv`, `attention`, `projection`, `mlp` or `classifier`.
    pub op: &'static str,
    /// Mean milliseconds per run.
    pub ms: f64,
    /// Of the forward pass's timed total.
    pub share: f64,
    /// Multiply-add work (x2) per second, for the products.
    pub gops: Option<f64>,
    /// f32 bytes read and written per second, for the layernorms.
    pub gbps: Option<f64>,
    /// The kernels behind the operation, by name.
    pub kernel: String,
}

/// The profile's rows from summed op times (`ops`, whose per-layer parts are `layers`) over
/// `runs` runs.
pub fn profile_rows(model: &Model, ops: &OpTimes, layers: &[OpTimes], runs: usize) -> Vec<ProfileRow> {
    let a = model.architecture();
    let (t, d, i) = (a.tokens() as f64, a.hidden_size as f64, a.intermediate_size as f64);
    let kernels = model.op_kernels();
    let kernel = |op: &str| kernels.iter().find(|k| k.0 == op).map(|k| k.1.clone()).unwrap_or_default();
    let total = ops.total().as_secs_f64().max(f64::MIN_POSITIVE);
    let per_run = |d: Duration| d.as_secs_f64() / runs.max(1) as f64;
    let row = |layer: Option<usize>, op: &'static str, d: Duration, work: Option<f64>, bytes: Option<f64>| {
        let secs = per_run(d).max(f64::MIN_POSITIVE);
        ProfileRow {
            layer,
            op,
            ms: secs * 1e3,
            share: d.as_secs_f64() / total,
            gops: work.map(|w| w / secs / 1e9),
            gbps: bytes.map(|b| b / secs / 1e9),
            kernel: kernel(op),
        }
    };
    let patch = 2.0 * a.num_patches() as f64 * a.patch_len() as f64 * d;
    let mut rows = vec![row(None, "patch_embed", ops.patch_embed, Some(patch), None)];
    let mut layer_norms = Duration::ZERO;
    for (l, lt) in layers.iter().enumerate() {
        layer_norms += lt.layernorm;
        // Two layernorms, each reading and writing t x d f32 values.
        rows.push(row(Some(l), "layernorm", lt.layernorm, None, Some(2.0 * t * d * 8.0)));
        rows.push(row(Some(l), "qkv", lt.qkv, Some(2.0 * t * d * 3.0 * d), None));
        rows.push(row(Some(l), "attention", lt.attention, Some(2.0 * 2.0 * t * t * d), None));
        rows.push(row(Some(l), "projection", lt.projection, Some(2.0 * t * d * d), None));
        rows.push(row(Some(l), "mlp", lt.mlp, Some(2.0 * 2.0 * t * d * i), None));
    }
    rows.push(row(None, "layernorm", ops.layernorm.saturating_sub(layer_norms), None, None));
    let head = 2.0 * a.head_inputs() as f64 * a.num_labels as f64;
    rows.push(row(None, "classifier", ops.classifier, Some(head), None));
    rows
}

/// The binary and the machine a benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// The edgevit version.
    pub edgevit: &'static str,
    /// The git commit the binary was built from.
    pub commit: &'static str,
    /// The target triple the binary was built for.
    pub target: &'static str,
    /// The CPU's model name, where the system says it.
    pub cpu: Option<String>,
    /// Cores the system reports.
    pub cores: usize,
    /// The CPU features the kernels choose by, that this CPU has.
    pub cpu_features: Vec<&'static str>,
    /// UTC, YYYY-MM-DD.
    pub date: String,
}

impl Machine {
    /// This binary on this machine, today.
    pub fn this() -> Self {
        use crate::version;
        Machine {
            edgevit: version::VERSION,
            commit: version::COMMIT,
            target: version::TARGET,
            cpu: version::cpu_model(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_features: version::cpu_features(),
            date: version::utc_date(),
        }
    }
}

/// The share of forward time one kind of operation took.
#[derive(Clone, Debug, Serialize)]
pub struct OpShare {
    /// The operation, as in [`OpTimes::entries`].
    pub op: &'static str,
    /// Of the timed runs' total forward time, from 0 to 1.
    pub share: f64,
}

/// Multiply-add operations (x2) of one forward pass: every Linear layer, and attention's two
/// products per head (Q K^T and softmax(.) V). This is the network's count, as other engines
/// compute it; edgevit's last layer skips the rows its classifier does not read (for a class
/// token 6.3% of ViT-B/16's and 6.4% of ViT-Ti/16's operations), so GOP/s figures are per
/// network, not per multiply done.
pub fn ops_per_inference(a: &Architecture) -> f64 {
    let (t, d, i, np) = (a.tokens() as f64, a.hidden_size as f64, a.intermediate_size as f64, a.num_patches() as f64);
    let patch = np * a.patch_len() as f64 * d;
    let layer = t * d * 3.0 * d + 2.0 * t * t * d + t * d * d + 2.0 * t * d * i;
    let head = a.head_inputs() as f64 * a.num_labels as f64;
    2.0 * (patch + a.num_layers as f64 * layer + head)
}

/// Peak resident set size in MB, from `/proc/self/status` where there is one.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The value at fraction `q` of sorted `v` (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the benchmark. `progress(done, total_hint)` is called after each timed run.
pub fn run(
    model: &Model,
    opts: BenchOptions,
    open_ms: f64,
    synth_ms: Option<f64>,
    mut progress: impl FnMut(usize, f64),
) -> crate::Result<BenchReport> {
    let a = model.architecture();
    // A fixed input in the normalised range; the values do not change the work done.
    let pixels: Vec<f32> = (0..a.input_len()).map(|i| ((i * 7919 % 2001) as f32 / 1000.0) - 1.0).collect();
    let mut session = model.session();
    let start = Instant::now();
    model.forward(&pixels, &mut session)?;
    let first_inference_ms = ms(start.elapsed());
    for _ in 0..opts.warmup {
        model.forward(&pixels, &mut session)?;
    }
    let mut latencies = Vec::with_capacity(opts.runs);
    let mut ops = OpTimes::default();
    let mut layers = vec![OpTimes::default(); a.num_layers];
    let began = Instant::now();
    let limit = opts.seconds.map(Duration::from_secs_f64);
    while latencies.len() < opts.runs && limit.is_none_or(|l| began.elapsed() < l) {
        let t = Instant::now();
        model.forward(&pixels, &mut session)?;
        latencies.push(ms(t.elapsed()));
        ops.add(session.op_times());
        for (sum, l) in layers.iter_mut().zip(session.layer_times()) {
            sum.add(l);
        }
        let fraction = match limit {
            Some(l) => (began.elapsed().as_secs_f64() / l.as_secs_f64()).max(latencies.len() as f64 / opts.runs as f64),
            None => latencies.len() as f64 / opts.runs as f64,
        };
        progress(latencies.len(), fraction.min(1.0));
    }
    let wall = began.elapsed().as_secs_f64();
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let p50 = percentile(&sorted, 0.5);
    let gops = ops_per_inference(a) / 1e9;
    let total = ops.total().as_secs_f64().max(f64::MIN_POSITIVE);
    let storage = model.config().weights.describe();
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let variance = latencies.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (latencies.len().max(2) - 1) as f64;
    Ok(BenchReport {
        model: model.file().path().display().to_string(),
        storage,
        threads: rayon::current_num_threads(),
        kernels: model.kernel_names(),
        model_mb: model.file().file_len() as f64 / 1e6,
        synth_ms,
        open_ms,
        first_inference_ms,
        runs: latencies.len(),
        mean_ms: mean,
        stddev_ms: variance.sqrt(),
        min_ms: sorted.first().copied().unwrap_or(f64::NAN),
        p50_ms: p50,
        p90_ms: percentile(&sorted, 0.9),
        p99_ms: percentile(&sorted, 0.99),
        images_per_s: latencies.len() as f64 / wall,
        gops_per_inference: gops,
        achieved_gops: gops / (p50 / 1e3),
        peak_rss_mb: peak_rss_mb(),
        op_share: ops.entries().iter().map(|&(op, d)| OpShare { op, share: d.as_secs_f64() / total }).collect(),
        profile: opts.profile.then(|| profile_rows(model, &ops, &layers, latencies.len())),
        machine: Machine::this(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl BenchReport {
    /// A readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<18}{v}\n"));
        line("model:", format!("{} ({:.1} MB, {})", self.model, self.model_mb, self.storage));
        line("threads:", self.threads.to_string());
        line("kernels:", self.kernels.join(", "));
        if let Some(t) = self.synth_ms {
            line("build (random):", format!("{t:.1} ms"));
        }
        line("open:", format!("{:.2} ms", self.open_ms));
        line("first inference:", format!("{:.2} ms", self.first_inference_ms));
        line(
            "latency:",
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, mean {:.2} ms, min {:.2} ms ({} runs)",
                self.p50_ms, self.p90_ms, self.p99_ms, self.mean_ms, self.min_ms, self.runs
            ),
        );
        line("throughput:", format!("{:.2} images/s", self.images_per_s));
        line(
            "compute:",
            format!("{:.2} GOP/inference, {:.1} GOP/s at p50", self.gops_per_inference, self.achieved_gops),
        );
        line("peak RSS:", self.peak_rss_mb.map_or("unknown".into(), |m| format!("{m:.1} MB")));
        let shares: Vec<String> = self.op_share.iter().map(|o| format!("{} {:.1}%", o.op, o.share * 100.0)).collect();
        line("time per op:", shares.join(", "));
        if let Some(rows) = &self.profile {
            s.push_str(&profile_table(rows));
        }
        s
    }
}

/// The profile as a table: one line per layer and operation.
pub fn profile_table(rows: &[ProfileRow]) -> String {
    let mut s =
        format!("\n{:>5}  {:<11} {:>9} {:>7} {:>13}  kernel\n", "layer", "op", "ms/run", "share", "GOP/s | GB/s");
    for r in rows {
        let layer = r.layer.map_or("-".to_string(), |l| l.to_string());
        let rate = match (r.gops, r.gbps) {
            (Some(g), _) => format!("{g:.1} GOP/s"),
            (None, Some(b)) => format!("{b:.1} GB/s"),
            _ => "-".to_string(),
        };
        s.push_str(&format!(
            "{layer:>5}  {:<11} {:>9.3} {:>6.1}% {rate:>13}  {}\n",
            r.op,
            r.ms,
            r.share * 100.0,
            r.kernel
        ));
    }
    let total: f64 = rows.iter().map(|r| r.ms).sum();
    s.push_str(&format!(
        "{:>5}  {:<11} {total:>9.3} {:>6.1}%\n",
        "",
        "total",
        100.0 * rows.iter().map(|r| r.share).sum::<f64>()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&v, 0.99), 10.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
    }

    #[test]
    fn vit_base_is_35_gop() {
        // ViT-B/16 at 224: 17.6 G multiply-adds, the figure usually quoted for it.
        let a = crate::synth::Preset::Base.architecture();
        let g = ops_per_inference(&a) / 2e9;
        assert!((g - 17.56).abs() < 0.05, "{g}");
    }
}
