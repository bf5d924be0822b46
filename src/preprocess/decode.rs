//! Image files to 8-bit RGB pixels, within limits on size and allocation.

use std::path::Path;

use super::{preprocess_rows, RgbImage};
use crate::config::Preprocess;
use crate::error::{Error, Result};

/// Images larger than this on either side are refused before their pixels are decoded.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The decoder may allocate at most this much for one image (a 64-megapixel RGB photo
/// fits), so a small file whose header claims a huge image is refused, not allocated.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;
/// An image file larger than this is refused before it is read: a compressed image is
/// smaller than its decoded pixels.
pub const MAX_IMAGE_FILE_BYTES: u64 = MAX_DECODE_BYTES;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_bytes_are_an_error() {
        assert!(decode_image(b"not an image").is_err());
        assert!(decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").is_err());
    }
}
