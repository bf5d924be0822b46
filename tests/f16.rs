//! f16 weights on the real ViT-Tiny: logits within 1e-2 of the logit range of f32's, and the
//! same top-1 on every reference image (fewer images under qemu, where each is slow).

mod common;

use common::*;
use edgevit::config::{WeightDType, WeightStorage};
use edgevit::Model;
use edgevit_kernels::gemm::f16::F16Kernel;

const IMAGES: usize = if cfg!(target_arch = "aarch64") { 8 } else { usize::MAX };

#[test]
fn f16_follows_f32_on_the_reference_images() {
    let keep_default: Vec<String> = edgevit::config::DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect();
    let snapshot = shared().join("models/vit-tiny-imagenet");
    let entries = reference_entries();
    // The f32 logits are transformers' own, which ours match to 1.3e-6 of the logit range with
    // the same top-5 on every image (tests/parity.rs): no f32 passes here.
    let wanted: Vec<&Vec<f32>> = entries.iter().take(IMAGES).map(|(_, _, logits)| logits).collect();
    for keep in [keep_default, Vec::new()] {
        let path = convert_with(&snapshot, &WeightStorage { dtype: WeightDType::F16, keep_f32: keep.clone() });
        let f16_model = Model::open(&path).unwrap();
        assert!(f16_model.kernel_names().iter().any(|k| k.starts_with("f16_gemm")));
        let size = std::fs::metadata(&path).unwrap().len() as f64 / std::fs::metadata(tiny_f32()).unwrap().len() as f64;
        let mut sb = f16_model.session();
        let (mut worst, mut same_top1, mut n) = (0f32, 0, 0);
        for ((name, pixels, _), &want) in entries.iter().zip(&wanted) {
            let got = f16_model.forward(pixels, &mut sb).unwrap();
            let d = rel_max_diff(got, want);
            assert!(d <= 1e-2, "{name}: max |diff| = {d} of the logit range (keep_f32 {keep:?})");
            worst = worst.max(d);
            same_top1 += (argmax(got) == argmax(want)) as usize;
            n += 1;
        }
        eprintln!("f16 (keep_f32 {keep:?}): worst max|diff| {worst:.2e} of the range, top-1 {same_top1}/{n}, size {size:.2}x f32");
        assert_eq!(same_top1, n, "top-1 must match f32 on every image");
    }
}

/// Half-precision arithmetic (the Cortex-A76 path, or its exact scalar twin elsewhere) on the
/// same images: the same bound, and the worst error printed next to f32 accumulation's.
#[test]
fn half_precision_arithmetic_follows_f32_on_the_reference_images() {
    let kernel = if F16Kernel::best().half_arithmetic() { F16Kernel::best() } else { F16Kernel::Fp16Scalar };
    // The scalar twin is slow (about 3 s an image here, far more under qemu): a sample by
    // default, every image with EDGEVIT_FP16_IMAGES=37. (On a CPU with FP16 arithmetic the
    // test above already runs this kernel on 8 images.)
    let default = if cfg!(target_arch = "aarch64") { 1 } else { 8 };
    let images: usize = std::env::var("EDGEVIT_FP16_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let f32_model = Model::open(tiny_f32()).unwrap();
    let snapshot = shared().join("models/vit-tiny-imagenet");
    let keep: Vec<String> = edgevit::config::DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect();
    let path = convert_with(&snapshot, &WeightStorage { dtype: WeightDType::F16, keep_f32: keep });
    let mut f16_model = Model::open(&path).unwrap();
    f16_model.set_f16_kernel(kernel).unwrap();
    let (mut sa, mut sb) = (f32_model.session(), f16_model.session());
    let (mut worst, mut same_top1, mut n) = (0f32, 0, 0);
    for (name, pixels, _) in reference_entries().iter().take(images) {
        let want = f32_model.forward(pixels, &mut sa).unwrap().to_vec();
        let got = f16_model.forward(pixels, &mut sb).unwrap();
        let d = rel_max_diff(got, &want);
        assert!(d <= 1e-2, "{name}: max |diff| = {d} of the logit range with {}", kernel.name());
        worst = worst.max(d);
        same_top1 += (argmax(got) == argmax(&want)) as usize;
        n += 1;
    }
    eprintln!("{}: worst max|diff| {worst:.2e} of the range, top-1 {same_top1}/{n}", kernel.name());
    assert_eq!(same_top1, n, "top-1 must match f32 on every image");
}

/// Every f32-accumulating kernel this CPU runs (the Cortex-A72's `fcvtl` one included, wherever
/// it runs) gives its scalar twin's logits bit for bit through the whole model: the kernels'
/// own tests check tiles, this checks the driver and the blocking around them.
#[test]
fn every_widening_kernel_gives_the_scalar_twins_logits() {
    let snapshot = shared().join("models/vit-tiny-imagenet");
    let keep: Vec<String> = edgevit::config::DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect();
    let mut model =
        Model::open(convert_with(&snapshot, &WeightStorage { dtype: WeightDType::F16, keep_f32: keep })).unwrap();
    let (_, pixels, _) = &reference_entries()[5];
    let mut session = model.session();
    model.set_f16_kernel(F16Kernel::Scalar).unwrap();
    let want = model.forward(pixels, &mut session).unwrap().to_vec();
    let widening: Vec<F16Kernel> =
        F16Kernel::available().into_iter().filter(|k| !k.half_arithmetic() && *k != F16Kernel::Scalar).collect();
    for kernel in widening {
        model.set_f16_kernel(kernel).unwrap();
        let got = model.forward(pixels, &mut session).unwrap();
        assert!(got == want.as_slice(), "{} and its twin disagree", kernel.name());
        eprintln!("{}: the scalar twin's logits", kernel.name());
    }
}
