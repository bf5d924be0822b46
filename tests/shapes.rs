//! Import and forward pass on shapes other than ViT-B/16, against transformers' own outputs
//! (tests/data/snapshots, made by tools/make_test_snapshots.py): head sizes 24 and 80, patch
//! 14 and 8, a 32x48 input, MLP widths 100 and 37, no qkv bias, F16 and BF16 checkpoints, the
//! legacy ViTFeatureExtractor config, bicubic resize with a centre crop, grey+alpha input.

mod common;

use common::*;
use edgevit::preprocess::load_and_preprocess;
use edgevit::Model;
use edgevit_tools::quantize::StoreDType;

fn check_snapshot(name: &str, labels: &[&str]) {
    let dir = repo().join("tests/data/snapshots");
    let model = Model::open(convert(&dir.join(name), StoreDType::F32)).unwrap();
    assert_eq!(model.labels(), labels);
    let reference = load_safetensors(&dir.join(format!("{name}.reference.safetensors")));
    let mut session = model.session();
    let (shape, pixels) = &reference["pixel_values"];
    let (_, logits) = &reference["logits"];
    let per = pixels.len() / shape[0];
    let classes = logits.len() / shape[0];
    for b in 0..shape[0] {
        let got = model.forward(&pixels[b * per..][..per], &mut session).unwrap();
        let want = &logits[b * classes..][..classes];
        let rel = rel_max_diff(got, want);
        assert!(rel <= 1e-4, "{name} random input {b}: max |diff| {rel:.2e} of range; {got:?} vs {want:?}");
    }
    for image in ["rgb", "la"] {
        let ours =
            load_and_preprocess(&repo().join(format!("tests/data/pattern-{image}.png")), model.config()).unwrap();
        let (_, ref_pixels) = &reference[&format!("{image}_pixel_values")];
        let max = ours.iter().zip(ref_pixels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max < 1e-5, "{name} {image}: preprocessing max |diff| {max}");
        let got = model.forward(&ours, &mut session).unwrap();
        let rel = rel_max_diff(got, &reference[&format!("{image}_logits")].1);
        assert!(rel <= 1e-4, "{name} {image}: logits max |diff| {rel:.2e} of range");
    }
}

#[test]
fn head24_patch14_no_qkv_bias_f16_legacy_config() {
    check_snapshot(
        "head24-patch14-nobias-f16",
        &["class 0", "class 1", "class 2", "class 3", "class 4", "class 5", "class 6"],
    );
}

#[test]
fn head80_rectangular_bicubic_crop_bf16() {
    check_snapshot("head80-rect-bicubic-crop-bf16", &["left", "middle", "right"]);
}
