//! int8 fidelity against our own f32 on the real ViT-Tiny and the demo model, kernel
//! agreement, and refusal of int8 files this build cannot run.

mod common;

use common::*;
use edgevit::config::WeightDType;
use edgevit::preprocess::{load_image, preprocess, RgbImage};
use edgevit::Model;
use edgevit_kernels::gemm::i8::I8Kernel;
use edgevit_tools::compare::kl_divergence;

/// int8 against f32 on the 37 reference images. The f32 logits are transformers' own: our f32
/// matches them to 1.3e-6 of the logit range with the same top-5 on every image (tests/parity.rs),
/// so this counts the same agreements without 37 more f32 passes (minutes under qemu).
#[test]
fn reference_images_keep_their_top1() {
    let i8m = Model::open(tiny_int8()).unwrap();
    let mut s8 = i8m.session();
    let mut same = 0;
    let mut kls = Vec::new();
    for (name, pixels, a) in reference_entries() {
        let b = i8m.forward(&pixels, &mut s8).unwrap();
        kls.push(kl_divergence(&a, b));
        if argmax(&a) == argmax(b) {
            same += 1;
        } else {
            eprintln!("{name}: f32 top-1 {} vs int8 {}", argmax(&a), argmax(b));
        }
    }
    eprintln!("int8 top-1 = f32 top-1 on {same}/37; mean KL {:.5}", kls.iter().sum::<f64>() / kls.len() as f64);
    assert!(same >= 35, "int8 agrees with f32 on only {same} of 37");
}

/// A random crop of 35-100% of the side with aspect 0.8-1.25, flipped half the time.
fn augment(img: &RgbImage, rng: &mut Rng) -> RgbImage {
    let side = rng.uniform(0.35, 1.0);
    let aspect = rng.uniform(0.8, 1.25);
    let w = ((img.width as f64 * side * aspect.sqrt()).round() as usize).clamp(1, img.width);
    let h = ((img.height as f64 * side / aspect.sqrt()).round() as usize).clamp(1, img.height);
    let x0 = (rng.next() % (img.width - w + 1) as u64) as usize;
    let y0 = (rng.next() % (img.height - h + 1) as u64) as usize;
    let flip = rng.next().is_multiple_of(2);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in y0..y0 + h {
        for x in 0..w {
            let sx = if flip { x0 + w - 1 - x } else { x0 + x };
            data.extend_from_slice(&img.data[(y * img.width + sx) * 3..][..3]);
        }
    }
    RgbImage { width: w, height: h, data }
}

/// int8 against f32 on `per_image` augmented crops of each of the 37 photos, drawn from
/// `seed`: (inputs, top-1 agreement, mean KL(f32 || int8)).
fn augmented_agreement(f32m: &Model, i8m: &Model, seed: u64, per_image: usize) -> (usize, f64, f64) {
    let (mut s32, mut s8) = (f32m.session(), i8m.session());
    let mut rng = Rng(seed);
    let (mut n, mut same, mut kl_sum) = (0usize, 0usize, 0f64);
    for (name, _, _) in reference_entries() {
        let img = load_image(&shared().join("images").join(&name)).unwrap();
        for _ in 0..per_image {
            let pixels = preprocess(&augment(&img, &mut rng), &f32m.config().preprocess);
            let a = f32m.forward(&pixels, &mut s32).unwrap().to_vec();
            let b = i8m.forward(&pixels, &mut s8).unwrap();
            same += (argmax(&a) == argmax(b)) as usize;
            kl_sum += kl_divergence(&a, b);
            n += 1;
        }
    }
    (n, same as f64 / n as f64, kl_sum / n as f64)
}

#[test]
// Under qemu a forward pass is a hundred times slower; there the kernels are checked exactly
// by the kernel tests and `every_kernel_gives_the_same_logits`, and fidelity by the 37
// reference images.
#[cfg_attr(target_arch = "aarch64", ignore = "1,036 forward passes are too slow under qemu")]
fn augmented_photos_agree_with_f32() {
    let f32m = Model::open(tiny_f32()).unwrap();
    let i8m = Model::open(tiny_int8()).unwrap();
    let (n, agreement, mean_kl) = augmented_agreement(&f32m, &i8m, 2026, 28);
    eprintln!("augmented set: {n} inputs, int8/f32 top-1 agreement {:.2}%, mean KL {mean_kl:.5}", agreement * 100.0);
    // The int8 issue's bar. Every flip is a near-tie (f32 top-1 probability <= 0.37 with the
    // runner-up a few points behind), so the figure moves by a few tenths with the last bits
    // of either model; see docs/quantization.md.
    let floor = 0.98;
    assert!(agreement >= floor, "top-1 agreement {agreement:.4} < {floor:.3} over {n} inputs");
    assert!(mean_kl <= 0.005, "mean KL(f32 || int8) {mean_kl:.5} > 0.005 over {n} inputs");
}

/// The same measurement on three more draws of crops (3,108 inputs), each printed: one draw's
/// agreement moves by about 0.4 points with the last bits of either model (docs/quantization.md),
/// so a change to the numerics is judged on all four draws. The same bar, on their mean.
#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "3,108 forward passes are too slow under qemu")]
fn augmented_photos_agree_with_f32_over_more_draws() {
    let f32m = Model::open(tiny_f32()).unwrap();
    let i8m = Model::open(tiny_int8()).unwrap();
    let (mut total, mut agreed, mut kl) = (0usize, 0f64, 0f64);
    for seed in [7, 11, 2027] {
        let (n, agreement, mean_kl) = augmented_agreement(&f32m, &i8m, seed, 28);
        eprintln!("seed {seed}: {n} inputs, int8/f32 top-1 agreement {:.2}%, mean KL {mean_kl:.5}", agreement * 100.0);
        assert!(mean_kl <= 0.005, "seed {seed}: mean KL(f32 || int8) {mean_kl:.5} > 0.005 over {n} inputs");
        (total, agreed, kl) = (total + n, agreed + agreement * n as f64, kl + mean_kl * n as f64);
    }
    let (agreement, mean_kl) = (agreed / total as f64, kl / total as f64);
    eprintln!("three draws: {total} inputs, agreement {:.2}%, mean KL {mean_kl:.5}", agreement * 100.0);
    let floor = 0.98;
    assert!(agreement >= floor, "top-1 agreement {agreement:.4} < {floor:.3} over {total} inputs");
}

#[test]
fn demo_heldout_accuracy_within_half_a_point_of_f32() {
    let demo = repo().join("demo");
    let heldout = demo_heldout();
    let acc: Vec<f64> = [WeightDType::F32, WeightDType::Int8]
        .into_iter()
        .map(|dtype| {
            let model = Model::open(convert(&demo.join("vit-mnist"), dtype)).unwrap();
            let pred = predict_all(&model, &heldout);
            pred.iter().zip(&heldout).filter(|(p, (_, l))| *p == l).count() as f64 / heldout.len() as f64
        })
        .collect();
    eprintln!("demo held-out accuracy: f32 {:.4}, int8 {:.4}", acc[0], acc[1]);
    assert!((acc[0] - acc[1]).abs() <= 0.005, "int8 {:.4} vs f32 {:.4}", acc[1], acc[0]);
}

#[test]
fn int8_heads_wider_than_attention_takes_are_refused_not_run() {
    // Attention's int8 scores (aarch64) quantize keys through a stack buffer of
    // MAX_INT8_HEAD_DIM values: a wider head must fail validation (at open and at write, on
    // every CPU, so that a file that opens runs anywhere), not panic in the forward pass.
    let mut config = Model::open(tiny_int8()).unwrap().config().clone();
    assert_eq!(config.weights.dtype, WeightDType::Int8);
    config.architecture.num_heads = 1;
    config.architecture.hidden_size = 1024;
    assert_eq!(config.validate(), Ok(()));
    config.architecture.hidden_size = 1028;
    let err = config.validate().unwrap_err();
    assert!(err.contains("head_dim = 1028") && err.contains("f16 or f32"), "{err}");
    config.weights.dtype = WeightDType::F16;
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn every_kernel_gives_the_same_logits() {
    // Integer accumulation is exact and the epilogue is shared, so every kernel must produce
    // bit-identical logits.
    let mut model = Model::open(tiny_int8()).unwrap();
    let (_, pixels, _) = &reference_entries()[3];
    let mut s = model.session();
    let mut first: Option<(I8Kernel, Vec<f32>)> = None;
    for kernel in I8Kernel::available() {
        model.set_i8_kernel(kernel).unwrap();
        let logits = model.forward(pixels, &mut s).unwrap().to_vec();
        match &first {
            None => first = Some((kernel, logits)),
            Some((k0, l0)) => assert!(l0 == &logits, "{} and {} disagree", k0.name(), kernel.name()),
        }
    }
}

/// Rewrites part of the JSON header in place (same length) and fixes both checksums.
fn patch_header(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[64..64 + json_len]).unwrap();
    assert!(json.contains(from), "header has no '{from}'");
    let new = json.replacen(from, to, 1);
    let mut out = bytes.to_vec();
    out[64..64 + json_len].copy_from_slice(new.as_bytes());
    let crc = crc32fast::hash(new.as_bytes());
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    let pcrc = crc32fast::hash(&out[..60]);
    out[60..64].copy_from_slice(&pcrc.to_le_bytes());
    out
}

#[test]
fn unrunnable_int8_files_are_refused_at_open() {
    let path = convert(&repo().join("demo/vit-mnist"), WeightDType::Int8);
    let bytes = std::fs::read(&path).unwrap();
    let model = Model::open(&path).unwrap();
    let header = model.file().header().clone();
    let data_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, data: Vec<u8>, needle: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let err = Model::open(&p).err().unwrap_or_else(|| panic!("{name} should be refused")).to_string();
        assert!(err.contains(needle), "{name}: '{err}' should mention '{needle}'");
    };
    let scale = header.tensors.iter().find(|t| t.name == "layers.1.fc1.scale").unwrap();
    for (label, value, needle) in [
        ("zero", 0.0f32, "tensor 'layers.1.fc1.scale' has scale 0"),
        ("nan", f32::NAN, "tensor 'layers.1.fc1.scale' holds NaN or infinity"),
        ("inf", f32::INFINITY, "tensor 'layers.1.fc1.scale' holds NaN or infinity"),
        ("negative", -0.5, "tensor 'layers.1.fc1.scale' has scale -0.5"),
    ] {
        let mut b = bytes.clone();
        let at = data_offset + scale.offset as usize + 4 * 5;
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        check(label, b, needle);
    }
    // A channel sum that disagrees with its weights: kernels that read the sums would answer
    // differently from those that do not.
    let sum = header.tensors.iter().find(|t| t.name == "layers.0.qkv.sum").unwrap();
    let mut b = bytes.clone();
    let at = data_offset + sum.offset as usize;
    let stored = i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    b[at..at + 4].copy_from_slice(&(stored + 1).to_le_bytes());
    check("sum", b, "tensor 'layers.0.qkv.sum' does not match the sums of 'layers.0.qkv.weight'");
    check("packing", patch_header(&bytes, "\"k4n16\"", "\"k9n99\""), "unknown variant `k9n99`");
    check("dtype", patch_header(&bytes, "\"dtype\":\"i8\"", "\"dtype\":\"u8\""), "unknown variant `u8`");
    check("storage", patch_header(&bytes, "\"int8\"", "\"int4\""), "unknown variant `int4`");
    check("layout", patch_header(&bytes, "\"layout\":\"k4n16\"", "\"layout\":\"k4n17\""), "unknown variant `k4n17`");
}
