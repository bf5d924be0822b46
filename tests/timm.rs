//! timm checkpoints: `../shared`'s ViT-Tiny rewritten in timm's layout imports to exactly the
//! same model as the Hugging Face snapshot, with timm's preprocessing.

mod common;

use common::timm_layout::write_timm_folder;
use common::*;
use edgevit::config::WeightDType;
use edgevit::config::{Filter, Resize};
use edgevit_tools::quantize::{storage, write_model, DEFAULT_KEEP_F32};
use edgevit_tools::timm::TimmOptions;

fn hf_labels() -> Vec<String> {
    edgevit_tools::hf::import(&shared().join("models/vit-tiny-imagenet")).unwrap().config.labels
}

#[test]
fn timm_layout_gives_identical_logits_in_f32_and_int8() {
    let dir = tempfile::tempdir().unwrap();
    let timm_dir = dir.path().join("timm");
    let snapshot = shared().join("models/vit-tiny-imagenet");
    write_timm_folder(&snapshot, &timm_dir, "vit_tiny_patch16_224", 0.9, None);
    let labels = hf_labels();
    let timm = edgevit_tools::import(&timm_dir, &TimmOptions { heads: None, labels: Some(labels.clone()) }).unwrap();
    let hf = edgevit_tools::import(&snapshot, &TimmOptions::default()).unwrap();
    assert_eq!(timm.config.architecture, hf.config.architecture);
    assert_eq!(timm.config.labels, labels);
    // timm's eval transform: shorter side to floor(224 / 0.9) = 248, bicubic, centre crop 224.
    let p = &timm.config.preprocess;
    assert_eq!(
        (p.resize, p.filter, p.crop),
        (Some(Resize::ShortestEdge { size: 248 }), Filter::Bicubic, Some([224, 224]))
    );

    let keep: Vec<String> = DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect();
    let entries = reference_entries();
    for dtype in [WeightDType::F32, WeightDType::Int8] {
        let st = storage(dtype, &keep);
        let (a, b) = (dir.path().join("timm.evit"), dir.path().join("hf.evit"));
        write_model(&timm, &st, &a).unwrap();
        write_model(&hf, &st, &b).unwrap();
        let (ma, mb) = (edgevit::Model::open(&a).unwrap(), edgevit::Model::open(&b).unwrap());
        let (mut sa, mut sb) = (ma.session(), mb.session());
        for (name, pixels, _) in entries.iter().take(if cfg!(target_arch = "aarch64") { 3 } else { 12 }) {
            let la = ma.forward(pixels, &mut sa).unwrap().to_vec();
            let lb = mb.forward(pixels, &mut sb).unwrap();
            assert_eq!(la, lb, "{dtype:?} {name}");
        }
    }
}

#[test]
fn timm_folders_that_cannot_be_read_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = shared().join("models/vit-tiny-imagenet");
    let folder = dir.path().join("t");
    write_timm_folder(&snapshot, &folder, "vit_custom_patch16_224", 0.9, None);
    let err = |opts: &TimmOptions| edgevit_tools::import(&folder, opts).err().unwrap_or_default();
    assert!(err(&TimmOptions::default()).contains("--heads"));
    let ok = edgevit_tools::import(&folder, &TimmOptions { heads: Some(3), labels: None }).unwrap();
    assert_eq!(ok.config.labels[7], "class 7");
    assert!(err(&TimmOptions { heads: Some(3), labels: Some(vec!["a".into()]) })
        .contains("1 names but the classifier has 1000"));
    // Heads that do not divide the width are refused by the architecture check.
    assert!(err(&TimmOptions { heads: Some(5), labels: None }).contains("divisible"));

    let labels = hf_labels();
    write_timm_folder(&snapshot, &folder, "vit_tiny_patch16_224", 1.0, Some(&labels));
    let m = edgevit_tools::import(&folder, &TimmOptions::default()).unwrap();
    assert_eq!(m.config.labels, labels);
    assert_eq!(m.config.preprocess.resize, Some(Resize::ShortestEdge { size: 224 }));

    let cfg_path = folder.join("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    for (key, value, needle) in [
        ("global_pool", serde_json::json!("avg"), "global_pool 'avg'"),
        ("num_classes", serde_json::json!(10), "num_classes is 10"),
        ("architecture", serde_json::json!("resnet50"), "not a timm ViT"),
    ] {
        let mut c = cfg.clone();
        c[key] = value;
        std::fs::write(&cfg_path, c.to_string()).unwrap();
        let e = err(&TimmOptions::default());
        assert!(e.contains(needle), "{key}: {e}");
    }
    let mut c = cfg.clone();
    c["pretrained_cfg"]["crop_mode"] = serde_json::json!("squash");
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    assert!(err(&TimmOptions::default()).contains("crop_mode 'squash'"));
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    assert!(edgevit_tools::import(&folder, &TimmOptions { heads: Some(3), labels: None }).is_ok());
    // --heads is for timm only.
    assert!(edgevit_tools::import(&snapshot, &TimmOptions { heads: Some(3), labels: None })
        .err()
        .unwrap()
        .contains("timm"));
}
