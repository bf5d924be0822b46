//! `edgevit eval`: accuracy on labelled folders, checked against transformers' predictions on
//! the demo's held-out digits and against `edgevit-tools compare` on the shared ImageNet
//! samples.

mod common;

use std::collections::BTreeMap;
use std::process::Output;

use common::*;
use edgevit::config::WeightDType;
use serde_json::Value;

fn edgevit(args: &[&str]) -> Output {
    common::exec::run(env!("CARGO_BIN_EXE_edgevit"), args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn eval_json(args: &[&str]) -> Value {
    let out = edgevit(args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim()).unwrap()
}

#[test]
fn folders_per_class_give_transformers_accuracy_per_class() {
    let demo = repo().join("demo");
    let model = convert(&demo.join("vit-mnist"), WeightDType::F32);
    let model = model.to_str().unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("heldout/reference.json")).unwrap()).unwrap();
    let torch: Vec<usize> =
        reference["predictions"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    // The held-out digits as PNG files in one folder per class (named by label).
    let dir = tempfile::tempdir().unwrap();
    let heldout = demo_heldout();
    for (i, (img, label)) in heldout.iter().enumerate() {
        let folder = dir.path().join(label.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        let grey: Vec<u8> = img.data.chunks_exact(3).map(|p| p[0]).collect();
        image::GrayImage::from_raw(28, 28, grey).unwrap().save(folder.join(format!("{i:04}.png"))).unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "not an image").unwrap();
    // An image outside the class folders has no label.
    let first = format!("{}/0000.png", heldout[0].1);
    std::fs::copy(dir.path().join(first), dir.path().join("unlabelled.png")).unwrap();

    let r = eval_json(&["eval", "-m", model, dir.path().to_str().unwrap(), "--json", "--worst", "10"]);
    // Transformers' counts, from its predictions.
    let n = heldout.len();
    let correct = heldout.iter().zip(&torch).filter(|((_, l), p)| l == *p).count();
    assert_eq!(r["inputs"], n);
    assert_eq!(r["top1_correct"], correct);
    assert!((r["top1"].as_f64().unwrap() - reference["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert!(r["top5_correct"].as_u64().unwrap() >= correct as u64);
    assert_eq!(r["classes_seen"], 10);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["unlabelled"], 1, "the PNG outside the class folders");
    let mut per_class = [[0usize; 2]; 10];
    let mut confusions: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for ((_, l), &p) in heldout.iter().zip(&torch) {
        per_class[*l][0] += 1;
        per_class[*l][1] += (p == *l) as usize;
        if p != *l {
            *confusions.entry((*l, p)).or_default() += 1;
        }
    }
    let worst = r["worst_classes"].as_array().unwrap();
    assert_eq!(worst.len(), 10);
    for c in worst {
        let i = c["class"]["index"].as_u64().unwrap() as usize;
        assert_eq!(c["inputs"], per_class[i][0]);
        assert!((c["top1"].as_f64().unwrap() - per_class[i][1] as f64 / per_class[i][0] as f64).abs() < 1e-12);
    }
    let accuracies: Vec<f64> = worst.iter().map(|c| c["top1"].as_f64().unwrap()).collect();
    assert!(accuracies.windows(2).all(|w| w[0] <= w[1]), "worst first: {accuracies:?}");
    let most = confusions.values().max().unwrap();
    let top = &r["confusions"][0];
    let pair = (top["true"]["index"].as_u64().unwrap() as usize, top["predicted"]["index"].as_u64().unwrap() as usize);
    assert_eq!(confusions[&pair], *most);
    assert_eq!(top["count"], *most);

    // The readable report says the same.
    let out = edgevit(&["eval", "-m", model, dir.path().to_str().unwrap(), "--worst", "2"]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        report.contains(&format!("top-1:   {:.2}% ({correct}/{n})", 100.0 * correct as f64 / n as f64)),
        "{report}"
    );
    assert!(report.contains("worst classes (2 of the 10 with inputs)"), "{report}");
}

/// How many of the 17 ImageNet samples to score (fewer under qemu, where each ViT-Ti inference
/// takes seconds).
const SAMPLES: usize = if cfg!(target_arch = "aarch64") { 4 } else { 17 };

#[test]
fn imagenet_names_give_the_accuracy_compare_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<_> =
        std::fs::read_dir(shared().join("images/imagenet-samples")).unwrap().map(|e| e.unwrap().path()).collect();
    all.sort();
    assert_eq!(all.len(), 17);
    for p in &all[..SAMPLES] {
        std::fs::copy(p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let samples = dir.path().to_str().unwrap();
    let (f32m, int8m) = (tiny_f32().to_str().unwrap(), tiny_int8().to_str().unwrap());
    // compare's own code, on the same files.
    let inputs: Vec<std::path::PathBuf> = edgevit::inputs::expand(&[samples.into()], true)
        .into_iter()
        .map(|i| match i.unwrap() {
            edgevit::inputs::Input::File(p) => p,
            edgevit::inputs::Input::Stdin => unreachable!(),
        })
        .collect();
    let (reference, candidate) = (edgevit::Model::open(f32m).unwrap(), edgevit::Model::open(int8m).unwrap());
    let fidelity = edgevit_tools::compare::compare(&reference, &candidate, &inputs, |e| panic!("{e}"), || {});
    assert_eq!(fidelity.labelled, SAMPLES);
    let mut f32_report = Value::Null;
    for (model, correct) in [(f32m, fidelity.ref_correct), (int8m, fidelity.cand_correct)] {
        let r = eval_json(&["eval", "-m", model, samples, "--json"]);
        assert_eq!(r["inputs"], SAMPLES);
        assert_eq!(r["top1_correct"], correct, "{model}");
        if model == f32m {
            f32_report = r;
        }
    }
    // transformers' own logits for these files rank the same number first.
    let labels: Vec<String> = reference.labels().to_vec();
    let names: Vec<String> =
        all[..SAMPLES].iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let entries = reference_entries();
    let scored: Vec<_> =
        entries.iter().filter(|(name, _, _)| names.iter().any(|n| name.ends_with(n.as_str()))).collect();
    assert_eq!(scored.len(), SAMPLES);
    let torch_correct = scored
        .iter()
        .map(|(name, _, logits)| {
            let label = edgevit::eval::label_of(std::path::Path::new(name), &labels).unwrap();
            (argmax(logits) == label) as usize
        })
        .sum::<usize>();
    assert_eq!(f32_report["top1_correct"], torch_correct);
}

#[test]
fn eval_refuses_what_it_cannot_score() {
    let model = tiny_int8().to_str().unwrap();
    let photos = shared().join("images/photos");
    let cases: [(&[&str], &str); 3] = [
        (&["eval", "-m", model, photos.to_str().unwrap()], "none of the"),
        (&["eval", "-m", model, "-"], "stdin"),
        (&["eval", "-m", model], "no inputs given"),
    ];
    for (args, needle) in cases {
        let out = edgevit(args);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}
