//! Replays every committed fuzz input (fuzz/corpus and fuzz/artifacts: the corpus the fuzzers
//! built and any input that once crashed) through the fuzz targets' own harness, so a plain
//! `cargo test` re-checks them all on stable Rust, natively and under qemu.

use std::path::{Path, PathBuf};

#[path = "../fuzz/harness.rs"]
mod harness;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = inputs(target);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let ok = std::panic::catch_unwind(|| run(&data));
        assert!(ok.is_ok(), "{target}: {} panics", f.display());
    }
    eprintln!("{target}: replayed {} inputs", files.len());
    files.len()
}

#[test]
fn every_committed_fuzz_input_is_handled() {
    assert!(replay("model_file", harness::model_file) >= 2, "the model_file corpus is missing");
    assert!(replay("npy", harness::npy) >= 2, "the npy corpus is missing");
    assert!(replay("frames", harness::frames) >= 2, "the frames corpus is missing");
}

/// Writes the seed inputs the fuzzers start from (run once, by hand:
/// `cargo test --release --test fuzz_replay -- --ignored`).
#[test]
#[ignore]
fn write_seed_corpus() {
    use edgevit::config::{ActivationName, Architecture, WeightDType};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let arch = Architecture {
        image_height: 8,
        image_width: 8,
        patch_size: 4,
        num_channels: 3,
        hidden_size: 8,
        num_layers: 1,
        num_heads: 2,
        intermediate_size: 16,
        num_labels: 3,
        layer_norm_eps: 1e-6,
        activation: ActivationName::Gelu,
        qkv_bias: true,
        family: Default::default(),
        distillation_token: false,
        classifier: Default::default(),
    };
    for (name, dtype) in [
        ("seed-f32-model", WeightDType::F32),
        ("seed-int8-model", WeightDType::Int8),
        ("seed-f16-model", WeightDType::F16),
    ] {
        let bytes = edgevit::synth::build_architecture(&arch, "fuzz seed", dtype, 1).unwrap();
        put("model_file", name, &bytes);
    }
    let values: Vec<f32> = (0..12).map(|v| v as f32 / 4.0).collect();
    put("npy", "seed-f32.npy", &edgevit::npy::npy_f32_bytes(&[1, 3, 2, 2], &values));
    let mut u8npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 2), }";
    let padded = format!("{header:<117}\n");
    u8npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    u8npy.extend_from_slice(padded.as_bytes());
    u8npy.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    put("npy", "seed-u8.npy", &u8npy);
    // Frames: selector byte, then the stream (see harness::frames for the encoding).
    let rgb_6x4: Vec<u8> = (0..6 * 4 * 3).map(|v| (v * 11) as u8).collect();
    put("frames", "seed-rgb24", &[&[2u8 | 1 << 3 | 1 << 5][..], &rgb_6x4, &rgb_6x4].concat());
    let yuv_6x4: Vec<u8> = (0..6 * 4 + 2 * 3 * 2).map(|v| (v * 13) as u8).collect();
    put("frames", "seed-yuv420p", &[&[1 << 3 | 1 << 5][..], &yuv_6x4, &yuv_6x4[..10]].concat());
    put("frames", "seed-nv12", &[&[1u8 | 1 << 3 | 1 << 5][..], &yuv_6x4].concat());
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode(&rgb_6x4, 6, 4, image::ExtendedColorType::Rgb8)
        .unwrap();
    put("frames", "seed-mjpeg", &[&[6u8][..], &jpeg, &jpeg].concat());
}
