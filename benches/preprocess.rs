//! `cargo bench --bench preprocess`: preparing one camera frame for a 224x224 model (colour
//! conversion fused into the resize, then normalisation), per frame format, at 640x480 and
//! 1280x720. Prints the median milliseconds per frame.

use std::time::Instant;

use edgevit::config::{Filter, Normalize, Preprocess, Resize};
use edgevit::stream::{FrameFormat, RawFrame, YuvMatrix, YuvRange, YuvToRgb};

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..40)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let p = Preprocess {
        resize: Some(Resize::Exact { height: 224, width: 224 }),
        filter: Filter::Bilinear,
        crop: None,
        rescale_factor: Some(1.0 / 255.0),
        normalize: Some(Normalize { mean: [0.5; 3], std: [0.5; 3] }),
    };
    let yuv = YuvToRgb::new(YuvMatrix::Bt601, YuvRange::Limited);
    let mut out = Vec::new();
    println!("{:<10} {:>10} {:>12}", "format", "size", "ms/frame");
    for (w, h) in [(640, 480), (1280, 720)] {
        for format in [FrameFormat::Nv12, FrameFormat::Yuv420p, FrameFormat::Rgb24, FrameFormat::Gray8] {
            let n = format.frame_len(w, h).unwrap();
            let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let frame = RawFrame::new(format, w, h, &data).unwrap();
            let ms = median_ms(|| frame.preprocess_into(&p, &yuv, &mut out));
            println!("{:<10} {:>10} {:>12.3}", format!("{format:?}"), format!("{w}x{h}"), ms);
        }
    }
}
