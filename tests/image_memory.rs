//! Memory for a large image: the decoded pixels once, in the decoder's own format, and a small
//! constant for the resize; no full-size RGB or float copy. A Pi with 1 GB must be able to
//! classify any image the decoder accepts (sides up to 16,384, 256 MiB decoded).
//!
//! One test in its own binary, so that no other test allocates while the peak is measured.

mod common;

use common::*;
use edgevit::config::WeightDType;

/// A line of `/proc/self/status`, in kB.
fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in status"));
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn large_grey_and_rgba_pngs_cost_their_decoded_size_and_a_small_constant() {
    let model = edgevit::Model::open(convert(&repo().join("demo/vit-mnist"), WeightDType::F32)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let side = 6000u32;
    let grey = dir.path().join("grey.png");
    image::GrayImage::from_fn(side, side, |x, y| image::Luma([((x ^ y) & 0xff) as u8])).save(&grey).unwrap();
    let rgba = dir.path().join("rgba.png");
    image::RgbaImage::from_fn(side / 2, side / 2, |x, y| image::Rgba([x as u8, y as u8, 7, 200])).save(&rgba).unwrap();
    for (path, decoded_bytes) in [(&grey, side as u64 * side as u64), (&rgba, side as u64 * side as u64)] {
        // Writing 5 to clear_refs resets the peak (VmHWM) to the current resident size.
        std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
        let before = status_kb("VmHWM:");
        let pixels = edgevit::preprocess::load_and_preprocess(path, model.config()).unwrap();
        assert_eq!(pixels.len(), model.architecture().input_len());
        let grown = status_kb("VmHWM:").saturating_sub(before);
        // The file's bytes (a few MB), the decoded pixels, and 16 MB for everything else; an RGB
        // copy of the image would add 3 bytes a pixel (108 MB for the grey one).
        let file_kb = std::fs::metadata(path).unwrap().len() / 1024;
        let allowed = file_kb + decoded_bytes / 1024 + 16 * 1024;
        eprintln!(
            "{}: peak grew {grown} kB (decoded {} kB, allowed {allowed} kB)",
            path.display(),
            decoded_bytes / 1024
        );
        assert!(grown <= allowed, "{}: peak RSS grew {grown} kB, more than {allowed} kB", path.display());
    }
}
