//! DeiT from Hugging Face and timm against the outputs of transformers and timm themselves
//! (tests/data/snapshots, made by tools/make_deit_snapshots.py): the distillation token with
//! two averaged heads, DeiT without the teacher's head, DeiTImageProcessor's defaults, DeiT III's
//! layer scale and patch-only position embedding, and average pooling with fc_norm.

mod common;

use common::{check_snapshot, convert, load_safetensors, rel_max_diff, repo};
use edgevit::config::WeightDType;
use edgevit::config::{Classifier, Family};
use edgevit::Model;

fn labels(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What the file records about the family and the classifier, as `info` shows it.
fn assert_layout(model: &Model, family: Family, distillation_token: bool, classifier: Classifier) {
    let a = model.architecture();
    assert_eq!((a.family, a.distillation_token, a.classifier), (family, distillation_token, classifier));
}

/// How far f16 and int8 logits may be from f32, as a fraction of the f32 logits' range, on
/// these snapshots. Their weights are random (std 0.3) and they have 3 to 7 classes, so the
/// logits span a few units and rounding shows more than on a trained model (ViT-Tiny's int8
/// and f16 are checked on real photos in tests/int8.rs and tests/f16.rs). Measured: int8 up to
/// 7.1e-2 on x86 (f32 attention) and 1.02e-1 on aarch64, where attention's scores are int8
/// too (DeiT III, under qemu as a Cortex-A76); f16 up to 1.2e-3 with f32 accumulation (x86)
/// and 9.1e-3 with half-precision arithmetic (the Cortex-A76 kernel).
const F16_BOUND: f32 = 2e-3;
const F16_HALF_ARITHMETIC_BOUND: f32 = 2e-2;
const INT8_BOUND: f32 = 0.15;

/// The f16 bound for the kernel this CPU runs.
fn f16_bound() -> f32 {
    if edgevit_kernels::gemm::f16::F16Kernel::best().half_arithmetic() {
        F16_HALF_ARITHMETIC_BOUND
    } else {
        F16_BOUND
    }
}

/// f16 and int8 files of the snapshot follow its f32 file on the reference's random inputs:
/// the largest logit difference, as a fraction of the f32 logits' range, stays under `bound`.
fn lower_precisions_follow_f32(name: &str, bound_f16: f32, bound_int8: f32) {
    let dir = repo().join("tests/data/snapshots");
    let reference = load_safetensors(&dir.join(format!("{name}.reference.safetensors")));
    let (shape, pixels) = &reference["pixel_values"];
    let per = pixels.len() / shape[0];
    let f32_model = Model::open(convert(&dir.join(name), WeightDType::F32)).unwrap();
    let mut s32 = f32_model.session();
    for (dtype, bound) in [(WeightDType::F16, bound_f16), (WeightDType::Int8, bound_int8)] {
        let model = Model::open(convert(&dir.join(name), dtype)).unwrap();
        let mut session = model.session();
        for b in 0..shape[0] {
            let input = &pixels[b * per..][..per];
            let want = f32_model.forward(input, &mut s32).unwrap().to_vec();
            let got = model.forward(input, &mut session).unwrap();
            let rel = rel_max_diff(got, &want);
            assert!(rel <= bound, "{name} {dtype:?} input {b}: max |diff| {rel:.2e} of range > {bound}");
        }
    }
}

#[test]
fn hugging_face_deit_with_teacher_averages_both_heads() {
    let model = check_snapshot("deit-teacher-head24-patch14-nobias-f16", &refs(&labels("class", 5)));
    assert_layout(&model, Family::Deit, true, Classifier::ClassAndDistillationTokens);
    lower_precisions_follow_f32("deit-teacher-head24-patch14-nobias-f16", f16_bound(), INT8_BOUND);
}

#[test]
fn hugging_face_deit_without_teacher_reads_the_class_token_with_the_processor_defaults() {
    let model = check_snapshot("deit-plain-default-processor", &refs(&labels("class", 4)));
    assert_layout(&model, Family::Deit, true, Classifier::ClassToken);
}

#[test]
fn timm_distilled_deit_averages_head_and_head_dist() {
    let model = check_snapshot("timm-deit-distilled", &refs(&labels("label", 6)));
    assert_layout(&model, Family::Deit, true, Classifier::ClassAndDistillationTokens);
    lower_precisions_follow_f32("timm-deit-distilled", f16_bound(), INT8_BOUND);
}

#[test]
fn timm_deit3_folds_layer_scale_and_pads_the_position_embedding() {
    let model = check_snapshot("timm-deit3-layerscale", &["a", "b", "c"]);
    assert_layout(&model, Family::Deit, false, Classifier::ClassToken);
    lower_precisions_follow_f32("timm-deit3-layerscale", f16_bound(), INT8_BOUND);
}

#[test]
fn timm_average_pooling_normalises_the_mean_of_the_patches() {
    let model = check_snapshot("timm-vit-avgpool-fcnorm", &["w", "x", "y", "z"]);
    assert_layout(&model, Family::Vit, false, Classifier::MeanOfPatches);
    lower_precisions_follow_f32("timm-vit-avgpool-fcnorm", f16_bound(), INT8_BOUND);
}

/// The bounds DeiT meets are the ones plain ViT meets on its own snapshots.
#[test]
fn vit_snapshots_meet_the_same_bounds() {
    lower_precisions_follow_f32("head24-patch14-nobias-f16", f16_bound(), INT8_BOUND);
    lower_precisions_follow_f32("head80-rect-bicubic-crop-bf16", f16_bound(), INT8_BOUND);
}

/// A copy of snapshot `name` in a temporary folder, with `edit` applied to its config.json and
/// `extra` tensors (f32, shape [1]) added to its weights.
fn edited_copy(name: &str, edit: impl Fn(&mut serde_json::Value), extra: &[&str]) -> tempfile::TempDir {
    let from = repo().join("tests/data/snapshots").join(name);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    if !extra.is_empty() {
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let one = 1f32.to_le_bytes();
        let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            st.tensors().into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        for name in extra {
            views.push((
                name.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &one).unwrap(),
            ));
        }
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), out).unwrap();
    }
    dir
}

/// Checkpoints with a feature edgevit does not run are refused with one line naming it.
#[test]
fn unsupported_variants_are_refused_by_name() {
    let refused = |dir: &tempfile::TempDir, needle: &str| {
        let err = edgevit_tools::import(dir.path(), &Default::default()).err().expect("refused");
        assert!(err.contains(needle) && !err.contains('\n'), "'{err}' should name '{needle}'");
    };
    let same = |_: &mut serde_json::Value| {};
    let timm = "timm-deit3-layerscale";
    refused(&edited_copy(timm, same, &["reg_token"]), "edgevit does not support register tokens");
    refused(&edited_copy(timm, same, &["blocks.0.mlp.fc1_g.weight"]), "edgevit does not support a gated (SwiGLU) MLP");
    refused(&edited_copy(timm, same, &["blocks.0.attn.q_norm.weight"]), "query/key normalisation");
    refused(
        &edited_copy(timm, same, &["blocks.0.attn.relative_position_bias_table"]),
        "edgevit does not support relative position bias",
    );
    refused(&edited_copy(timm, |c| c["global_pool"] = "map".into(), &[]), "global_pool 'map' is not supported");
    refused(&edited_copy(timm, |c| c["global_pool"] = "avg".into(), &[]), "global_pool 'avg' without fc_norm");
    refused(&edited_copy(timm, |c| c["architecture"] = "eva02_small_patch14_224".into(), &[]), "is not a timm ViT");
    let hf = "deit-teacher-head24-patch14-nobias-f16";
    refused(&edited_copy(hf, |c| c["model_type"] = "beit".into(), &[]), "edgevit has no relative position bias");
    refused(&edited_copy(hf, |c| c["model_type"] = "dinov2".into(), &[]), "register tokens");
    refused(&edited_copy(hf, |c| c["model_type"] = "swin".into(), &[]), "shifted-window attention");
}
