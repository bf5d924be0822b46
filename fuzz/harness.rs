//! What each fuzz target does with its input. Shared by the cargo-fuzz targets and by
//! tests/fuzz_replay.rs, which runs every committed corpus and crash input through it. Any
//! outcome but a panic, an abort or a hang is a pass: errors are the expected answer.
#![allow(dead_code)]

use edgevit::config::{Filter, Normalize, Preprocess, Resize};
use edgevit::format::{AlignedBytes, EvitFile, PREFIX_LEN};
use edgevit::stream::{prepare_frame, FrameFormat, FrameReader, StreamOptions, YuvMatrix, YuvRange};
use edgevit::Model;

/// A model file: opened as given, then again with its two checksums repaired so that
/// mutations reach the JSON parser and the validation behind it. A file that opens is
/// verified and, if small, run.
pub fn model_file(data: &[u8]) {
    open_and_run(data);
    if data.len() >= PREFIX_LEN {
        let mut fixed = data.to_vec();
        let json_len = u64::from_le_bytes(fixed[16..24].try_into().unwrap());
        if let Some(end) = (PREFIX_LEN as u64).checked_add(json_len).filter(|&e| e <= fixed.len() as u64) {
            let crc = crc32(&fixed[PREFIX_LEN..end as usize]);
            fixed[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        let crc = crc32(&fixed[..60]);
        fixed[60..64].copy_from_slice(&crc.to_le_bytes());
        open_and_run(&fixed);
    }
}

fn open_and_run(data: &[u8]) {
    let mut bytes = AlignedBytes::zeroed(data.len());
    bytes.as_mut_slice().copy_from_slice(data);
    let Ok(file) = EvitFile::from_bytes("fuzz", bytes) else { return };
    let _ = file.verify();
    let Ok(model) = Model::from_file(file) else { return };
    let a = model.architecture().clone();
    // Keep each execution fast: run the network only when it is small.
    let work = a.tokens() * a.tokens() * a.hidden_size.max(a.intermediate_size) * a.num_layers;
    if work <= 1 << 22 && a.input_len() <= 1 << 16 {
        let mut session = model.session();
        let pixels = vec![0.5f32; a.input_len()];
        let _ = model.forward(&pixels, &mut session);
    }
}

/// A .npy file.
pub fn npy(data: &[u8]) {
    let _ = edgevit::npy::parse_npy(data);
}

/// A frame stream: the first byte picks the format, YUV options and a small frame size; the
/// rest is the stream. Every frame read is prepared for a 4x4 model input.
pub fn frames(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else { return };
    let formats = [
        FrameFormat::Yuv420p,
        FrameFormat::Nv12,
        FrameFormat::Rgb24,
        FrameFormat::Bgr24,
        FrameFormat::Rgba,
        FrameFormat::Bgra,
        FrameFormat::Gray8,
        FrameFormat::Mjpeg,
    ];
    let format = formats[(sel & 7) as usize];
    let (w, h) = (1 + (sel >> 3 & 3) as usize * 5, 1 + (sel >> 5 & 3) as usize * 3);
    let opts = StreamOptions {
        format,
        size: if format == FrameFormat::Mjpeg && sel & 0x80 == 0 { None } else { Some((w, h)) },
        // Rows padded by two bytes when both size bits are set.
        stride: format.min_stride(w).filter(|_| sel & 0x18 == 0x18).map(|s| s + 2),
        matrix: if sel & 0x40 == 0 { YuvMatrix::Bt601 } else { YuvMatrix::Bt709 },
        range: if sel & 0x20 == 0 { YuvRange::Limited } else { YuvRange::Full },
        every: 1,
        frame_timeout: None,
    };
    let preprocess = Preprocess {
        resize: Some(Resize::Exact { height: 4, width: 4 }),
        filter: Filter::Bicubic,
        crop: None,
        rescale_factor: Some(1.0 / 255.0),
        normalize: Some(Normalize { mean: [0.5; 3], std: [0.5; 3] }),
    };
    let Ok(mut reader) = FrameReader::with_stride(stream, format, opts.size, opts.stride) else { return };
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        match reader.next_frame(&mut buf) {
            Ok(true) => {
                // Keep executions fast: a mutated JPEG header may claim megapixels, whose decode
                // (bounded by the decoder limits, tested in tests/images.rs) would dominate.
                if format == FrameFormat::Mjpeg && jpeg_pixels(&buf) > 256 * 256 {
                    continue;
                }
                if prepare_frame(&buf, &opts, &preprocess, &mut out).is_ok() {
                    assert_eq!(out.len(), 3 * 4 * 4);
                }
            }
            Ok(false) | Err(_) => return,
        }
    }
}

/// Width x height from the first SOF marker of a JPEG, or 0 if there is none.
fn jpeg_pixels(jpeg: &[u8]) -> usize {
    jpeg.windows(9)
        .find(|w| w[0] == 0xFF && (0xC0..=0xCF).contains(&w[1]) && ![0xC4, 0xC8, 0xCC].contains(&w[1]))
        .map_or(0, |w| u16::from_be_bytes([w[5], w[6]]) as usize * u16::from_be_bytes([w[7], w[8]]) as usize)
}

/// CRC-32 (IEEE), bitwise: the harness must not depend on anything but edgevit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
