//! From an image file to the model's input tensor, with the meaning of Hugging Face's
//! `ViTImageProcessor` on its PIL path: convert to RGB as PIL's `convert("RGB")` does, resize
//! with PIL's resampling arithmetic (same filters, same fixed-point rounding), centre crop,
//! rescale, normalise, and lay out channels first.

use std::path::Path;

use crate::config::{Filter, ModelConfig, Preprocess, Resize};
use crate::error::{Error, Result};

/// Images larger than this on either side are refused before their pixels are decoded.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The decoder may allocate at most this much for one image (a 64-megapixel RGB photo
/// fits), so a small file whose header claims a huge image is refused, not allocated.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;
/// An image file larger than this is refused before it is read: a compressed image is
/// smaller than its decoded pixels.
pub const MAX_IMAGE_FILE_BYTES: u64 = MAX_DECODE_BYTES;

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

/// Decodes an image file (JPEG or PNG) and converts it to 8-bit RGB the way PIL's
/// `convert("RGB")` does: grey is replicated, alpha is dropped (not composited), palettes are
/// expanded. 16-bit samples keep their high byte, as PIL does for 16-bit RGB; 16-bit grey is
/// scaled the same way rather than clipped as PIL would (see docs/preprocessing.md). EXIF
/// orientation is applied.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = crate::files::read_regular(path, MAX_IMAGE_FILE_BYTES, "image")?;
    decode_image(&bytes).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// [`load_image`] on bytes already in memory.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, String> {
    let img = decode(bytes)?;
    let (width, height) = (img.width(), img.height());
    let mut data = vec![0u8; width * height * 3];
    for (y, row) in data.chunks_exact_mut(width * 3).enumerate() {
        img.rgb_row(y, row);
    }
    Ok(RgbImage { width, height, data })
}

/// A decoded image in the decoder's own pixel format (grey, grey+alpha, RGB, RGBA, 8 or 16
/// bits), converted to RGB one row at a time as the resize reads it: a 16000 x 16000 grey PNG
/// costs its 256 MB once, not again as a 768 MB RGB copy.
pub struct DecodedImage(image::DynamicImage);

impl DecodedImage {
    /// Pixels per row.
    pub fn width(&self) -> usize {
        self.0.width() as usize
    }
    /// Rows.
    pub fn height(&self) -> usize {
        self.0.height() as usize
    }

    /// Row `y` as 8-bit RGB, the way PIL's `convert("RGB")` makes it (see [`load_image`]).
    pub fn rgb_row(&self, y: usize, row: &mut [u8]) {
        use image::DynamicImage as D;
        let w = self.width();
        let px = row.chunks_exact_mut(3);
        match &self.0 {
            D::ImageRgb8(b) => row.copy_from_slice(&b.as_raw()[y * w * 3..][..w * 3]),
            D::ImageLuma8(b) => px.zip(&b.as_raw()[y * w..][..w]).for_each(|(p, &v)| p.fill(v)),
            D::ImageLumaA8(b) => {
                px.zip(b.as_raw()[y * w * 2..][..w * 2].chunks_exact(2)).for_each(|(p, s)| p.fill(s[0]))
            }
            D::ImageRgba8(b) => {
                px.zip(b.as_raw()[y * w * 4..][..w * 4].chunks_exact(4)).for_each(|(p, s)| p.copy_from_slice(&s[..3]))
            }
            D::ImageLuma16(b) => px.zip(&b.as_raw()[y * w..][..w]).for_each(|(p, &v)| p.fill((v >> 8) as u8)),
            D::ImageLumaA16(b) => {
                px.zip(b.as_raw()[y * w * 2..][..w * 2].chunks_exact(2)).for_each(|(p, s)| p.fill((s[0] >> 8) as u8))
            }
            D::ImageRgb16(b) => {
                row.iter_mut().zip(&b.as_raw()[y * w * 3..][..w * 3]).for_each(|(p, &v)| *p = (v >> 8) as u8)
            }
            D::ImageRgba16(b) => px
                .zip(b.as_raw()[y * w * 4..][..w * 4].chunks_exact(4))
                .for_each(|(p, s)| p.copy_from_slice(&[(s[0] >> 8) as u8, (s[1] >> 8) as u8, (s[2] >> 8) as u8])),
            // Float images (no JPEG or PNG decodes to them): converted one row at a time too.
            other => {
                let strip = other.crop_imm(0, y as u32, w as u32, 1).to_rgb8();
                row.copy_from_slice(strip.as_raw());
            }
        }
    }

    /// Resize, crop, rescale and normalise (see [`preprocess_rows`]).
    pub fn preprocess_into(&self, p: &Preprocess, out: &mut Vec<f32>) {
        preprocess_rows(self.width(), self.height(), |y, row| self.rgb_row(y, row), p, out);
    }
}

/// Decodes a JPEG or PNG (EXIF orientation applied), keeping its pixel format.
pub fn decode(bytes: &[u8]) -> Result<DecodedImage, String> {
    use image::{DynamicImage, ImageDecoder, ImageReader};
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    if reader.format().is_none() {
        return Err("cannot decode image: unrecognised format (JPEG, PNG, WebP and BMP are supported)".into());
    }
    let img = if reader.format() == Some(image::ImageFormat::Jpeg) {
        decode_jpeg_strict(bytes)?
    } else {
        let mut decoder = reader.into_decoder().map_err(|e| format!("cannot decode image: {e}"))?;
        let orientation = decoder.orientation().map_err(|e| format!("cannot decode image: {e}"))?;
        let mut img = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode image: {e}"))?;
        img.apply_orientation(orientation);
        img
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(format!("image is {}x{}: nothing to classify", img.width(), img.height()));
    }
    Ok(DecodedImage(img))
}

/// Decodes a JPEG to RGB (or grey) with zune-jpeg in strict mode, so that a file cut short or
/// with damaged entropy-coded data is an error rather than a picture with grey blocks, and
/// applies its EXIF orientation.
fn decode_jpeg_strict(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let corrupt =
        |e: zune_jpeg::errors::DecodeErrors| format!("cannot decode image: the JPEG is damaged or truncated ({e})");
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_IMAGE_SIDE as usize)
        .set_max_height(MAX_IMAGE_SIDE as usize);
    // The last scan must be followed by the end-of-image marker: without it the file was cut
    // (the decoder would fill what is missing). 0xFF inside scan data is always followed by
    // 0x00 or a restart marker, so the first 0xFF 0xD9 after the last SOS is the real one.
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    if !last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9])) {
        return Err(
            "cannot decode image: the JPEG is damaged or truncated (no end-of-image marker after its last scan)".into(),
        );
    }
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(corrupt)?;
    let info = decoder.info().ok_or("cannot decode image: no JPEG header")?;
    let (w, h) = (info.width as u32, info.height as u32);
    let grey = decoder.input_colorspace() == Some(ColorSpace::Luma);
    let out = if grey { ColorSpace::Luma } else { ColorSpace::RGB };
    if (w as u64) * (h as u64) * out.num_components() as u64 > MAX_DECODE_BYTES {
        return Err(format!("cannot decode image: {w}x{h} needs more than the {MAX_DECODE_BYTES} bytes allowed"));
    }
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(corrupt)?;
    let orientation = decoder
        .exif()
        .and_then(|e| image::metadata::Orientation::from_exif_chunk(e))
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = if grey {
        image::GrayImage::from_raw(w, h, pixels).map(image::DynamicImage::ImageLuma8)
    } else {
        image::RgbImage::from_raw(w, h, pixels).map(image::DynamicImage::ImageRgb8)
    }
    .ok_or("cannot decode image: the JPEG decoder returned the wrong number of pixels")?;
    img.apply_orientation(orientation);
    Ok(img)
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
    out.clear();
    out.resize(3 * oh * ow, 0.0);
    let value = |byte: u8, c: usize| (byte as f32 * scale - mean[c]) / std[c];
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
        // One pass over the row's pixels, a plain loop the compiler vectorises (`ld3` on NEON).
        let start = (sy as usize * img.width) as isize + left + x0 as isize;
        let pixels = &img.data[start as usize * 3..(start as usize + x1 - x0) * 3];
        for (((px, r), g), b) in pixels.chunks_exact(3).zip(&mut r[x0..x1]).zip(&mut g[x0..x1]).zip(&mut b[x0..x1]) {
            (*r, *g, *b) = (value(px[0], 0), value(px[1], 1), value(px[2], 2));
        }
    }
}

impl RgbImage {
    /// Row `y` as interleaved RGB bytes.
    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width * 3..(y + 1) * self.width * 3]
    }
}

/// Resizes as PIL's `Image.resize(size, filter)` does for an RGB image, bit for bit.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    if (img.width, img.height) == (width, height) {
        return img.clone();
    }
    resize_rows(img.width, img.height, |y, row| row.copy_from_slice(img.row(y)), width, height, filter)
}

/// [`resize`] from a row source (see [`preprocess_rows`]); fetches each needed row once, in
/// increasing order.
pub fn resize_rows(
    src_width: usize,
    src_height: usize,
    mut fetch: impl FnMut(usize, &mut [u8]),
    width: usize,
    height: usize,
    filter: Filter,
) -> RgbImage {
    let mut line = vec![0u8; src_width * 3];
    if (src_width, src_height) == (width, height) {
        let mut data = vec![0u8; width * height * 3];
        for (y, row) in data.chunks_exact_mut(width * 3).enumerate() {
            fetch(y, row);
        }
        return RgbImage { width, height, data };
    }
    if filter == Filter::Nearest {
        return resize_nearest(src_width, src_height, fetch, width, height);
    }
    let horiz = Coeffs::new(src_width, width, filter);
    let vert = Coeffs::new(src_height, height, filter);
    // PIL resamples horizontally first, only the rows the vertical pass will read.
    let first_row = vert.bounds[0].0;
    let last_row = vert.bounds[height - 1].0 + vert.bounds[height - 1].1;
    let mut tmp = vec![0u8; (last_row - first_row) * width * 3];
    for (y, out_row) in tmp.chunks_exact_mut(width * 3).enumerate() {
        if width == src_width {
            fetch(y + first_row, out_row);
            continue;
        }
        fetch(y + first_row, &mut line);
        for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = horiz.bounds[x];
            let mut acc = [ROUND; 3];
            for (p, &tap) in line[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(&horiz.row(x)[..n]) {
                for c in 0..3 {
                    acc[c] = acc[c].wrapping_add(p[c] as i32 * tap);
                }
            }
            px.copy_from_slice(&acc.map(clip8));
        }
    }
    if height == src_height {
        return RgbImage { width, height, data: tmp };
    }
    let mut data = vec![0u8; height * width * 3];
    let mut acc = vec![0i32; width * 3];
    for (y, out_row) in data.chunks_exact_mut(width * 3).enumerate() {
        let (ymin, n) = vert.bounds[y];
        acc.fill(ROUND);
        // Tap by tap over whole rows: the inner loop is a contiguous multiply-add.
        for (j, &tap) in vert.row(y)[..n].iter().enumerate() {
            let src = &tmp[(ymin - first_row + j) * width * 3..][..width * 3];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a = a.wrapping_add(v as i32 * tap);
            }
        }
        for (v, &a) in out_row.iter_mut().zip(&acc) {
            *v = clip8(a);
        }
    }
    RgbImage { width, height, data }
}

/// PIL's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's rounding offset: half of the fixed-point unit.
const ROUND: i32 = 1 << (PRECISION_BITS - 1);

/// PIL accumulates in 32-bit integers (the taps of a row sum to 1 << 22, so 255 x the largest
/// tap sum stays far from overflow); wrapping keeps its arithmetic should a filter ever reach it.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Per-output-pixel filter taps, computed as PIL's `precompute_coeffs` and then rounded to
/// fixed point as its `normalize_coeffs_8bpc`.
struct Coeffs {
    ksize: usize,
    taps: Vec<i32>,
    /// (first input index, number of taps) per output pixel.
    bounds: Vec<(usize, usize)>,
}

impl Coeffs {
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let (support, f): (f64, fn(f64) -> f64) = match filter {
            Filter::Box => (0.5, |x| if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }),
            Filter::Bilinear => (1.0, |x| if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }),
            Filter::Hamming => (1.0, hamming),
            Filter::Bicubic => (2.0, bicubic),
            Filter::Lanczos => (3.0, lanczos),
            Filter::Nearest => unreachable!("nearest has its own path"),
        };
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut taps = vec![0i32; out_size * ksize];
        let mut bounds = Vec::with_capacity(out_size);
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // PIL truncates toward zero here, then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                *kx = f((x as f64 + xmin as f64 - center + 0.5) * ss);
                ww += *kx;
            }
            for (x, &kx) in k.iter().enumerate().take(n) {
                let v = if ww != 0.0 { kx / ww } else { kx };
                let fixed = v * (1i64 << PRECISION_BITS) as f64;
                taps[xx * ksize + x] = if v < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            bounds.push((xmin, n));
        }
        Coeffs { ksize, taps, bounds }
    }

    fn row(&self, i: usize) -> &[i32] {
        &self.taps[i * self.ksize..(i + 1) * self.ksize]
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x * (0.54 + 0.46 * x.cos())
    }
}

/// PIL's nearest-neighbour resize: output pixel x samples input `floor((x + 0.5) * scale)`.
fn resize_nearest(
    src_width: usize,
    src_height: usize,
    mut fetch: impl FnMut(usize, &mut [u8]),
    width: usize,
    height: usize,
) -> RgbImage {
    let (sx, sy) = (src_width as f64 / width as f64, src_height as f64 / height as f64);
    let mut line = vec![0u8; src_width * 3];
    let mut fetched = usize::MAX;
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let iy = (((y as f64 + 0.5) * sy) as usize).min(src_height - 1);
        if iy != fetched {
            fetch(iy, &mut line);
            fetched = iy;
        }
        for x in 0..width {
            let ix = (((x as f64 + 0.5) * sx) as usize).min(src_width - 1);
            data.extend_from_slice(&line[ix * 3..][..3]);
        }
    }
    RgbImage { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Normalize;

    fn gradient(w: usize, h: usize) -> RgbImage {
        let data = (0..h)
            .flat_map(|y| {
                (0..w)
                    .flat_map(move |x| [(x * 255 / w.max(2).saturating_sub(1).max(1)) as u8, (y * 7 % 256) as u8, 128])
            })
            .collect();
        RgbImage { width: w, height: h, data }
    }

    #[test]
    fn bilinear_halving_averages_pairs() {
        // Downscaling by 2 with PIL's bilinear (support widened to 2 input pixels) over
        // [0, 100, 200, 100] gives taps (1/8, 3/8, 3/8, 1/8) around each centre, clipped at the
        // edges: out[0] = (3*0 + 3*100 + 1*200)/7 = 71.43 -> 71, out[1] = (1*0 + 3*100 + 3*200 +
        // 1*100... ) computed by hand below.
        let img =
            RgbImage { width: 4, height: 1, data: [0u8, 100, 200, 100].iter().flat_map(|&v| [v, v, v]).collect() };
        let out = resize(&img, 2, 1, Filter::Bilinear);
        // centre 1.0, support 2: taps at x=0..3 with weights 1-|x+0.5-1|/2 = .75,.75,.25,(x=3 -> 0)
        // -> (0*.75 + 100*.75 + 200*.25) / 1.75 = 71.43
        // centre 3.0: x=1..4 clipped to 1..3: weights .25,.75,.75 -> (25+150+75)/1.75 = 142.86
        assert_eq!(out.data.chunks(3).map(|p| p[0]).collect::<Vec<_>>(), vec![71, 143]);
    }

    #[test]
    fn identity_resize_is_a_copy_and_output_has_the_requested_size() {
        let img = gradient(31, 17);
        assert_eq!(resize(&img, 31, 17, Filter::Bicubic), img);
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos, Filter::Box, Filter::Hamming] {
            let out = resize(&img, 9, 40, f);
            assert_eq!((out.width, out.height, out.data.len()), (9, 40, 9 * 40 * 3));
        }
    }

    #[test]
    fn constant_image_stays_constant_under_every_filter() {
        let img = RgbImage { width: 13, height: 7, data: vec![77; 13 * 7 * 3] };
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos, Filter::Box, Filter::Hamming] {
            for (w, h) in [(5, 3), (30, 20), (13, 3)] {
                assert!(resize(&img, w, h, f).data.iter().all(|&v| v == 77), "{f:?} {w}x{h}");
            }
        }
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

    #[test]
    fn undecodable_bytes_are_an_error() {
        assert!(decode_image(b"not an image").is_err());
        assert!(decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").is_err());
    }
}
