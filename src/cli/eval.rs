//! `edgevit eval`: accuracy on labelled images.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use edgevit::inputs::{self, Input};
use edgevit::{Error, Model};

use crate::{emit, in_pool, input_path, open_model, printable, set_threads, Output};

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
pub(crate) struct Eval {
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

pub(crate) fn eval(args: Eval) -> Result<ExitCode, Error> {
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
            let result = inputs::load(input, model.config()).and_then(|pixels| {
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
