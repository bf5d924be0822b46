//! Parity with transformers on the real ImageNet ViT-Tiny in ../shared.

mod common;

use common::*;
use edgevit::preprocess::load_and_preprocess;
use edgevit::Model;

#[test]
fn logits_from_reference_pixels_match_transformers() {
    let model = Model::open(tiny_f32()).unwrap();
    let mut session = model.session();
    let entries = reference_entries();
    assert_eq!(entries.len(), 37, "the reference holds 37 images");
    let mut worst = 0.0f32;
    for (name, pixels, want) in &entries {
        let got = model.forward(pixels, &mut session).unwrap();
        let rel = rel_max_diff(got, want);
        worst = worst.max(rel);
        // Measured 1.23e-6 on x86 and under qemu as the Cortex-A72 and A76 (2026-11-30).
        assert!(rel <= 1e-5, "{name}: max |diff| is {rel:.2e} of the logit range");
        assert_eq!(argmax(got), argmax(want), "{name}: top-1");
        assert_eq!(top5(got), top5(want), "{name}: top-5 set");
    }
    eprintln!("worst max|diff| / range over 37 images: {worst:.2e}");
}

#[test]
fn preprocessing_from_files_matches_transformers() {
    let model = Model::open(tiny_f32()).unwrap();
    let norm = model.config().preprocess.normalize.clone().expect("ViT normalises");
    let plane = 224 * 224;
    let mut session = model.session();
    let mut top1_same = 0;
    let mut worst = (0.0f32, String::new());
    for (name, ref_pixels, ref_logits) in reference_entries() {
        let path = shared().join("images").join(&name);
        let ours = load_and_preprocess(&path, model.config()).unwrap();
        assert_eq!(ours.len(), ref_pixels.len(), "{name}");
        // Undo the normalisation, so the difference is in units of 0..1 pixel intensity.
        let mut sum = 0.0f64;
        for (i, (a, b)) in ours.iter().zip(&ref_pixels).enumerate() {
            let c = i / plane;
            sum += ((a - b) * norm.std[c]).abs() as f64;
        }
        let mean = (sum / ours.len() as f64) as f32;
        if mean > worst.0 {
            worst = (mean, name.clone());
        }
        assert!(mean <= 1.0 / 255.0, "{name}: mean |pixel diff| {:.3}/255", mean * 255.0);
        let logits = model.forward(&ours, &mut session).unwrap();
        if argmax(logits) == argmax(&ref_logits) {
            top1_same += 1;
        } else {
            eprintln!("{name}: top-1 {} vs transformers {}", argmax(logits), argmax(&ref_logits));
        }
    }
    eprintln!("worst mean |pixel diff|: {:.4}/255 ({}); top-1 identical on {top1_same}/37", worst.0 * 255.0, worst.1);
    assert!(top1_same >= 36, "top-1 identical on only {top1_same} of 37 images");
}

#[test]
fn png_preprocessing_is_bit_exact_with_pil() {
    // PNG decoding is lossless, so any difference would come from our resize; PIL's
    // fixed-point arithmetic is reproduced exactly, leaving only float rounding of the
    // normalisation.
    let model = Model::open(tiny_f32()).unwrap();
    for (name, ref_pixels, _) in reference_entries().into_iter().filter(|(n, ..)| n.ends_with(".png")) {
        let ours = load_and_preprocess(&shared().join("images").join(&name), model.config()).unwrap();
        let max = ours.iter().zip(&ref_pixels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max < 1e-5, "{name}: max |diff| {max} (one 8-bit step is {})", 2.0 / 255.0);
    }
}
