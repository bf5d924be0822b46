//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgevit::config::WeightDType;
use edgevit_tools::quantize::{storage, write_model, DEFAULT_KEEP_F32};

pub mod exec;
pub mod timm_layout;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` (the reference model, photos and transformers' outputs), or `$EDGEVIT_SHARED`.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("EDGEVIT_SHARED").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared"));
    assert!(
        dir.join("reference/vit-tiny-imagenet.safetensors").exists(),
        "the reference data is missing: expected {}/reference/vit-tiny-imagenet.safetensors; \
         set EDGEVIT_SHARED to the folder that holds DESIGN.md, models/, images/ and reference/",
        dir.display()
    );
    dir
}

/// Quantizes a snapshot folder into a temporary `.evit` and returns its path (kept for the
/// test process's lifetime).
pub fn convert(snapshot: &Path, dtype: WeightDType) -> PathBuf {
    let keep: Vec<String> = DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect();
    convert_with(snapshot, &storage(dtype, &keep))
}

/// [`convert`] with an explicit weight storage.
pub fn convert_with(snapshot: &Path, storage: &edgevit::config::WeightStorage) -> PathBuf {
    let imported = edgevit_tools::import(snapshot, &Default::default())
        .unwrap_or_else(|e| panic!("import {}: {e}", snapshot.display()));
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let out = dir.join("model.evit");
    write_model(&imported, storage, &out).expect("write model");
    out
}

/// The real ViT-Tiny from `../shared`, converted to f32 once per test binary.
pub fn tiny_f32() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| convert(&shared().join("models/vit-tiny-imagenet"), WeightDType::F32))
}

/// The real ViT-Tiny in int8 with the default storage, converted once per test binary.
pub fn tiny_int8() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| convert(&shared().join("models/vit-tiny-imagenet"), WeightDType::Int8))
}

/// All f32 tensors of a safetensors file, by name, with their shapes.
pub fn load_safetensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

/// The reference entries as (image path relative to images/, pixel_values, logits).
pub fn reference_entries() -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let mut tensors = load_safetensors(&shared().join("reference/vit-tiny-imagenet.safetensors"));
    let mut names: Vec<String> = tensors.keys().filter_map(|k| k.strip_prefix("logits/").map(str::to_string)).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let (_, pixels) =
                tensors.remove(&format!("pixel_values/{n}")).expect("pixel_values for every logits entry");
            let (_, logits) = tensors.remove(&format!("logits/{n}")).expect("logits");
            (n, pixels, logits)
        })
        .collect()
}

pub fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a))).expect("non-empty")
}

pub fn top5(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    let mut t = idx[..5].to_vec();
    t.sort();
    t
}

/// max |a - b| / (max(b) - min(b)).
pub fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    let range = b.iter().copied().fold(f32::NEG_INFINITY, f32::max) - b.iter().copied().fold(f32::INFINITY, f32::min);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / range
}

/// The demo model's held-out digits (28x28 grey, as RGB images) and their labels.
pub fn demo_heldout() -> Vec<(edgevit::preprocess::RgbImage, usize)> {
    use edgevit::npy::{read_npy, NpyData};
    let dir = repo().join("demo/heldout");
    let images = read_npy(&dir.join("images.npy")).unwrap();
    let labels = read_npy(&dir.join("labels.npy")).unwrap();
    let (NpyData::U8(pixels), NpyData::U8(labels)) = (images.data, labels.data) else {
        panic!("uint8 arrays expected")
    };
    assert_eq!((images.shape[1], images.shape[2], labels.len()), (28, 28, images.shape[0]));
    pixels
        .chunks_exact(784)
        .zip(labels)
        .map(|(grey, label)| {
            let data = grey.iter().flat_map(|&v| [v, v, v]).collect();
            (edgevit::preprocess::RgbImage { width: 28, height: 28, data }, label as usize)
        })
        .collect()
}

/// `model`'s top-1 class for each image, through its own preprocessing.
pub fn predict_all(model: &edgevit::Model, images: &[(edgevit::preprocess::RgbImage, usize)]) -> Vec<usize> {
    let mut session = model.session();
    images
        .iter()
        .map(|(img, _)| {
            let pixels = edgevit::preprocess::preprocess(img, &model.config().preprocess);
            argmax(model.forward(&pixels, &mut session).unwrap())
        })
        .collect()
}

/// A small deterministic generator (splitmix64) for augmentations and mutations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Checks a snapshot under tests/data/snapshots against the outputs its own framework computed
/// (`NAME.reference.safetensors`, made by tools/make_test_snapshots.py or
/// tools/make_deit_snapshots.py): logits from the reference's random inputs, and preprocessing
/// and logits for the test pictures it holds, all within 1e-4 of the logit range, with f32
/// weights. Returns the opened model.
pub fn check_snapshot(name: &str, labels: &[&str]) -> edgevit::Model {
    let dir = repo().join("tests/data/snapshots");
    let model = edgevit::Model::open(convert(&dir.join(name), WeightDType::F32)).unwrap();
    assert_eq!(model.labels(), labels);
    let reference = load_safetensors(&dir.join(format!("{name}.reference.safetensors")));
    let mut session = model.session();
    if let Some((shape, pixels)) = reference.get("pixel_values") {
        let (_, logits) = &reference["logits"];
        let per = pixels.len() / shape[0];
        let classes = logits.len() / shape[0];
        for b in 0..shape[0] {
            let got = model.forward(&pixels[b * per..][..per], &mut session).unwrap();
            let want = &logits[b * classes..][..classes];
            let rel = rel_max_diff(got, want);
            assert!(rel <= 1e-4, "{name} random input {b}: max |diff| {rel:.2e} of range; {got:?} vs {want:?}");
        }
    }
    for image in ["rgb", "la"] {
        let Some((_, ref_pixels)) = reference.get(&format!("{image}_pixel_values")) else { continue };
        let picture = repo().join(format!("tests/data/pattern-{image}.png"));
        let ours = edgevit::preprocess::load_and_preprocess(&picture, model.config()).unwrap();
        let max = ours.iter().zip(ref_pixels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max < 1e-5, "{name} {image}: preprocessing max |diff| {max}");
        let got = model.forward(&ours, &mut session).unwrap();
        let rel = rel_max_diff(got, &reference[&format!("{image}_logits")].1);
        assert!(rel <= 1e-4, "{name} {image}: logits max |diff| {rel:.2e} of range");
    }
    drop(session);
    model
}
