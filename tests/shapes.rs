//! Import and forward pass on shapes other than ViT-B/16, against transformers' own outputs
//! (tests/data/snapshots, made by tools/make_test_snapshots.py): head sizes 24 and 80, patch
//! 14 and 8, a 32x48 input, MLP widths 100 and 37, no qkv bias, F16 and BF16 checkpoints, the
//! legacy ViTFeatureExtractor config, bicubic resize with a centre crop, grey+alpha input.

mod common;

use common::check_snapshot;

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
