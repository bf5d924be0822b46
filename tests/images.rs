//! Image files that are odd or hostile: EXIF orientation, CMYK, palettes, 16-bit, 1x1, zero
//! and absurd sizes, undecodable bytes. Expected pixels come from Pillow-made files
//! (tools/make_test_images.py) or are worked out here.

mod common;

use std::path::PathBuf;

use edgevit::preprocess::{decode_image, load_image, RgbImage};

fn data(name: &str) -> PathBuf {
    common::repo().join("tests/data/images").join(name)
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data.iter().zip(&b.data).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.data.len() as f64
}

#[test]
fn exif_orientation_is_applied() {
    let reference = load_image(&data("reference.png")).unwrap();
    for tag in [2, 3, 6, 8] {
        let img = load_image(&data(&format!("exif-rotate-{tag}.jpg"))).unwrap();
        // The file stores the picture turned (40x60 for 6 and 8); upright it is the reference
        // again, up to JPEG loss (Pillow's own exif_transpose is 1.5-3.5 levels off).
        let d = mean_abs_diff(&img, &reference);
        assert!(d < 4.0, "orientation {tag}: mean difference {d}");
    }
}

#[test]
fn cmyk_jpeg_palette_and_sixteen_bit() {
    let reference = load_image(&data("reference.png")).unwrap();
    // Pillow stored C = 255 - R, M = 255 - G, Y = 255 - B, K = 0.
    let d = mean_abs_diff(&load_image(&data("cmyk.jpg")).unwrap(), &reference);
    assert!(d < 3.0, "CMYK: {d}");
    // A palette PNG expands to exactly what Pillow's convert("RGB") gives.
    assert_eq!(load_image(&data("palette.png")).unwrap(), load_image(&data("palette-rgb.png")).unwrap());
    // 16-bit grey: value x*1000 + y keeps its high byte, in all three channels.
    let g = load_image(&data("grey16.png")).unwrap();
    assert_eq!((g.width, g.height), (64, 8));
    for (y, x) in [(0, 0), (3, 10), (7, 63)] {
        let want = ((x * 1000 + y) >> 8) as u8;
        assert_eq!(&g.data[(y * 64 + x) * 3..][..3], &[want; 3], "({x}, {y})");
    }
}

fn png(width: u32, height: u32, colour: u8, rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png_encoder(&mut out, width, height, colour);
        enc.write_all_rows(rows);
    }
    out
}

/// A minimal PNG writer (stored zlib blocks): enough to make headers that claim any size.
struct Png<'a> {
    out: &'a mut Vec<u8>,
}

fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    let c = crc(&out[start..]);
    out.extend_from_slice(&c.to_be_bytes());
}

fn png_encoder(out: &mut Vec<u8>, width: u32, height: u32, colour: u8) -> Png<'_> {
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, colour, 0, 0, 0]);
    chunk(out, b"IHDR", &ihdr);
    Png { out }
}

impl Png<'_> {
    fn write_all_rows(&mut self, rows: &[Vec<u8>]) {
        let raw: Vec<u8> = rows.iter().flat_map(|r| std::iter::once(0u8).chain(r.iter().copied())).collect();
        // zlib header, one stored block, Adler-32.
        let mut z = vec![0x78, 0x01, 1];
        z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
        z.extend_from_slice(&raw);
        let (mut a, mut b) = (1u32, 0u32);
        for &v in &raw {
            a = (a + v as u32) % 65521;
            b = (b + a) % 65521;
        }
        z.extend_from_slice(&((b << 16) | a).to_be_bytes());
        chunk(self.out, b"IDAT", &z);
        chunk(self.out, b"IEND", &[]);
    }
}

#[test]
fn tiny_empty_huge_and_undecodable_images() {
    // 1x1 RGB decodes to its one pixel, and preprocesses to a full model input.
    let one = decode_image(&png(1, 1, 2, &[vec![10, 20, 30]])).unwrap();
    assert_eq!((one.width, one.height, one.data.clone()), (1, 1, vec![10, 20, 30]));
    let model = edgevit::Model::open(common::tiny_int8()).unwrap();
    let pixels = edgevit::preprocess::preprocess(&one, &model.config().preprocess);
    assert_eq!(pixels.len(), 3 * 224 * 224);

    // Headers that claim 0 pixels, or 20000x20000 (1.2 GB of RGB) with no data: refused fast,
    // with no giant allocation.
    let started = std::time::Instant::now();
    for (w, h) in [(0, 10), (10, 0), (20_000, 20_000), (16_000, 16_000), (1, 4_000_000_000)] {
        let err = decode_image(&png(w, h, 2, &[])).unwrap_err();
        assert!(!err.is_empty(), "{w}x{h}");
    }
    // A real JPEG whose frame header is patched to claim 20000x20000.
    let mut jpeg = std::fs::read(data("cmyk.jpg")).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0] || w == [0xFF, 0xC2]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
    let err = decode_image(&jpeg).unwrap_err();
    assert!(err.contains("limit") || err.contains("large") || err.contains("dimension"), "{err}");
    assert!(started.elapsed().as_secs_f64() < 5.0);

    // Undecodable bytes, truncated files, an empty file.
    let good = std::fs::read(data("reference.png")).unwrap();
    for bad in [&b""[..], b"GIF89a", b"\xFF\xD8\xFF\xE0", &good[..good.len() / 2], &good[..40]] {
        assert!(decode_image(bad).is_err());
    }
}

/// WebP (lossless) and BMP, as phones and browsers save them, decode to the same pixels as the
/// PNG they were made from.
#[test]
fn webp_and_bmp_decode_like_png() {
    let png_path = common::repo().join("tests/data/pattern-rgb.png");
    let reference = load_image(&png_path).unwrap();
    let rgb =
        image::RgbImage::from_raw(reference.width as u32, reference.height as u32, reference.data.clone()).unwrap();
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .encode(rgb.as_raw(), rgb.width(), rgb.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut bmp = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut bmp, image::ImageFormat::Bmp).unwrap();
    for (name, bytes) in [("webp", webp), ("bmp", bmp.into_inner())] {
        let decoded = decode_image(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((decoded.width, decoded.height), (reference.width, reference.height), "{name}");
        assert!(decoded.data == reference.data, "{name}: pixels differ");
    }
}
