//! From an image file to the model's input tensor, with the meaning of Hugging Face's
//! `ViTImageProcessor` on its PIL path: convert to RGB as PIL's `convert("RGB")` does, resize
//! with PIL's resampling arithmetic (same filters, same fixed-point rounding), centre crop,
//! rescale, normalise, and lay out channels first.

//!
//! `decode` turns file bytes into pixels, `resize` is PIL's resampling, and this module runs
//! the steps in order.

mod decode;
mod resize;

pub use decode::{
    decode, decode_image, load_image, DecodedImage, MAX_DECODE_BYTES, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_SIDE,
};
pub use resize::{resize, resize_rows};

use std::path::Path;

use crate::config::{ModelConfig, Preprocess, Resize};
use crate::error::{Error, Result};
/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// R, G, B bytes, row after row.
    pub data: Vec<u8>,
}

/// Loads an image file and preprocesses it for `config`'s model.
pub fn load_and_preprocess(path: &Path, config: &ModelConfig) -> Result<Vec<f32>> {
    let bytes = crate::files::read_regular(path, MAX_IMAGE_FILE_BYTES, "image")?;
    let img = decode(&bytes).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    drop(bytes);
    let mut out = Vec::new();
    img.preprocess_into(&config.preprocess, &mut out);
    Ok(out)
}

/// Resize, crop, rescale and normalise into a CHW f32 tensor.
pub fn preprocess(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    let mut out = Vec::new();
    preprocess_rows(img.width, img.height, |y, row| row.copy_from_slice(img.row(y)), p, &mut out);
    out
}

/// [`preprocess`] for a source that hands out its rows as 8-bit RGB on demand: `fetch(y, row)`
/// fills `row` (width x 3 bytes) with source row `y`. Only the rows the resize reads are
/// fetched, each once, so a camera frame is colour-converted and resized in one pass without
/// an RGB copy of the whole frame. `out` is resized to the model's input and overwritten.
pub fn preprocess_rows(
    width: usize,
    height: usize,
    fetch: impl FnMut(usize, &mut [u8]),
    p: &Preprocess,
    out: &mut Vec<f32>,
) {
    let (w, h) = match p.resize {
        Some(Resize::Exact { height, width }) => (width, height),
        Some(Resize::ShortestEdge { size }) => {
            let (h, w) = crate::config::shortest_edge_size(height, width, size);
            (w, h)
        }
        None => (width, height),
    };
    let img = resize_rows(width, height, fetch, w, h, p.filter);
    normalize_chw(&img, p, out);
}

/// Centre crop, rescale, normalise and lay out channels first.
fn normalize_chw(img: &RgbImage, p: &Preprocess, out: &mut Vec<f32>) {
    let (oh, ow) = p.output_size(img.height, img.width);
    let (top, left) = ((img.height as isize - oh as isize) / 2, (img.width as isize - ow as isize) / 2);
    let scale = p.rescale_factor.unwrap_or(1.0);
    let (mean, std) = match &p.normalize {
        Some(n) => (n.mean, n.std),
        None => ([0.0; 3], [1.0; 3]),
    };
    // Every value is written below: a reused buffer of the right size is not cleared first.
    out.resize(3 * oh * ow, 0.0);
    let value = |byte: u8, c: usize| (byte as f32 * scale - mean[c]) / std[c];
    // Each channel's 256 values once, instead of a division per pixel.
    let table: [[f32; 256]; 3] = std::array::from_fn(|c| std::array::from_fn(|b| value(b as u8, c)));
    // A crop larger than the image pads with zeros, as Hugging Face's center_crop does: the
    // padding is the value of a 0 byte. The columns that lie in the image, once per row.
    let x0 = (-left).clamp(0, ow as isize) as usize;
    let x1 = ((img.width as isize - left).clamp(0, ow as isize) as usize).max(x0);
    let (r, g, b) = {
        let (r, rest) = out.split_at_mut(oh * ow);
        let (g, b) = rest.split_at_mut(oh * ow);
        (r, g, b)
    };
    for y in 0..oh {
        let row = y * ow..(y + 1) * ow;
        let (r, g, b) = (&mut r[row.clone()], &mut g[row.clone()], &mut b[row]);
        let sy = y as isize + top;
        if sy < 0 || sy as usize >= img.height || x0 == x1 {
            r.fill(value(0, 0));
            g.fill(value(0, 1));
            b.fill(value(0, 2));
            continue;
        }
        for (c, plane) in [&mut *r, &mut *g, &mut *b].into_iter().enumerate() {
            plane[..x0].fill(value(0, c));
            plane[x1..].fill(value(0, c));
        }
        // One pass over the row's pixels, each channel's value looked up.
        let start = (sy as usize * img.width) as isize + left + x0 as isize;
        let pixels = &img.data[start as usize * 3..(start as usize + x1 - x0) * 3];
        for (((px, r), g), b) in pixels.chunks_exact(3).zip(&mut r[x0..x1]).zip(&mut g[x0..x1]).zip(&mut b[x0..x1]) {
            (*r, *g, *b) = (table[0][px[0] as usize], table[1][px[1] as usize], table[2][px[2] as usize]);
        }
    }
}

impl RgbImage {
    /// Row `y` as interleaved RGB bytes.
    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width * 3..(y + 1) * self.width * 3]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Filter, Normalize};

    pub(crate) fn gradient(w: usize, h: usize) -> RgbImage {
        let data = (0..h)
            .flat_map(|y| {
                (0..w)
                    .flat_map(move |x| [(x * 255 / w.max(2).saturating_sub(1).max(1)) as u8, (y * 7 % 256) as u8, 128])
            })
            .collect();
        RgbImage { width: w, height: h, data }
    }

    #[test]
    fn normalise_and_chw_layout() {
        let img = RgbImage { width: 2, height: 1, data: vec![0, 51, 255, 255, 0, 102] };
        let p = Preprocess {
            resize: None,
            filter: Filter::Bilinear,
            crop: None,
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some(crate::config::Normalize { mean: [0.5; 3], std: [0.5; 3] }),
        };
        let t = preprocess(&img, &p);
        let want = [-1.0, 1.0, 0.4 - 1.0, -1.0, 1.0, 0.8 - 1.0];
        for (a, b) in t.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{t:?}");
        }
    }

    #[test]
    fn crops_inside_and_larger_than_the_image_match_a_pixel_by_pixel_crop() {
        let normalize = Some(Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
        for (w, h) in [(1, 1), (5, 4), (7, 9), (10, 3)] {
            let img = gradient(w, h);
            for crop in [None, Some([3, 3]), Some([12, 12]), Some([4, 9]), Some([9, 2]), Some([1, 14])] {
                let p = Preprocess {
                    resize: None,
                    filter: Filter::Bilinear,
                    crop,
                    rescale_factor: Some(1.0 / 255.0),
                    normalize: normalize.clone(),
                };
                let mut got = Vec::new();
                normalize_chw(&img, &p, &mut got);
                // The reference: every output pixel on its own, zero bytes outside the image.
                let (oh, ow) = p.output_size(h, w);
                let (top, left) = ((h as isize - oh as isize) / 2, (w as isize - ow as isize) / 2);
                let n = normalize.as_ref().unwrap();
                let mut want = vec![0f32; 3 * oh * ow];
                for c in 0..3 {
                    for y in 0..oh {
                        for x in 0..ow {
                            let (sy, sx) = (y as isize + top, x as isize + left);
                            let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                            let v = if inside { img.data[(sy as usize * w + sx as usize) * 3 + c] as f32 } else { 0.0 };
                            want[(c * oh + y) * ow + x] = (v * (1.0 / 255.0) - n.mean[c]) / n.std[c];
                        }
                    }
                }
                assert!(got.iter().map(|v| v.to_bits()).eq(want.iter().map(|v| v.to_bits())), "{w}x{h} crop {crop:?}");
            }
        }
    }
}
