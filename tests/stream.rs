//! `edgevit classify --stream`: camera frames on stdin in every supported format give the same
//! top-1 as the same picture classified as a file; broken streams keep every complete frame.

mod common;

use std::process::Output;

use common::*;
use edgevit::config::Filter;
use edgevit::preprocess::{load_image, resize, RgbImage};
use serde_json::Value;

/// Frames per raw format (fewer under qemu, where each inference is much slower).
const FRAMES: usize = if cfg!(target_arch = "aarch64") { 4 } else { 50 };
const MJPEG_FRAMES: usize = if cfg!(target_arch = "aarch64") { 3 } else { 20 };
const W: usize = 320;
const H: usize = 240;

fn edgevit_stdin(args: &[&str], input: Vec<u8>) -> Output {
    common::exec::run_with_input(env!("CARGO_BIN_EXE_edgevit"), args, input)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A shared photo at the frame size.
fn picture() -> RgbImage {
    let photo = load_image(&shared().join("images/photos/chelsea.png")).expect("photo");
    resize(&photo, W, H, Filter::Bilinear)
}

fn grey(img: &RgbImage) -> RgbImage {
    // BT.601 luma, as PIL's convert("L").
    let data = img
        .data
        .chunks_exact(3)
        .flat_map(|p| {
            let l = ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8;
            [l, l, l]
        })
        .collect();
    RgbImage { data, ..img.clone() }
}

fn save_png(img: &RgbImage, path: &std::path::Path) {
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone()).unwrap().save(path).unwrap();
}

fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode(&img.data, img.width as u32, img.height as u32, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// Forward BT.601 limited-range RGB -> YUV with 2x2 chroma averaging, written independently of
/// the runtime's YUV -> RGB (which uses fixed point).
fn yuv420(img: &RgbImage) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (w, h) = (img.width, img.height);
    let px = |x: usize, y: usize| {
        let p = &img.data[(y * w + x) * 3..][..3];
        (p[0] as f64 / 255.0, p[1] as f64 / 255.0, p[2] as f64 / 255.0)
    };
    let luma = |(r, g, b): (f64, f64, f64)| 0.299 * r + 0.587 * g + 0.114 * b;
    let mut y_plane = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            y_plane.push((16.0 + 219.0 * luma(px(x, y))).round() as u8);
        }
    }
    let (mut u, mut v) = (Vec::new(), Vec::new());
    for cy in 0..h.div_ceil(2) {
        for cx in 0..w.div_ceil(2) {
            let (mut su, mut sv, mut n) = (0.0, 0.0, 0.0);
            for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (x, y) = ((2 * cx + x).min(w - 1), (2 * cy + y).min(h - 1));
                let (r, g, b) = px(x, y);
                let l = luma((r, g, b));
                su += (b - l) / 1.772;
                sv += (r - l) / 1.402;
                n += 1.0;
            }
            u.push((128.0 + 224.0 * su / n).round().clamp(0.0, 255.0) as u8);
            v.push((128.0 + 224.0 * sv / n).round().clamp(0.0, 255.0) as u8);
        }
    }
    (y_plane, u, v)
}

fn frame_bytes(img: &RgbImage, format: &str) -> Vec<u8> {
    match format {
        "rgb24" => img.data.clone(),
        "bgr24" => img.data.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
        "rgba" => img.data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        "bgra" => img.data.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0], 255]).collect(),
        "gray8" => img.data.chunks_exact(3).map(|p| p[0]).collect(),
        "yuv420p" => {
            let (y, u, v) = yuv420(img);
            [y, u, v].concat()
        }
        "nv12" => {
            let (y, u, v) = yuv420(img);
            let uv: Vec<u8> = u.iter().zip(&v).flat_map(|(&a, &b)| [a, b]).collect();
            [y, uv].concat()
        }
        other => panic!("no such format {other}"),
    }
}

fn classify_file_top1(model: &str, path: &std::path::Path) -> u64 {
    let out =
        common::exec::run(env!("CARGO_BIN_EXE_edgevit"), &["classify", "-m", model, "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    v["top"][0]["index"].as_u64().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn every_raw_format_and_mjpeg_match_the_picture_as_a_file() {
    let model = tiny_int8().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pic = picture();
    let (colour_png, grey_png) = (dir.path().join("pic.png"), dir.path().join("grey.png"));
    save_png(&pic, &colour_png);
    let grey_pic = grey(&pic);
    save_png(&grey_pic, &grey_png);
    let colour_top1 = classify_file_top1(&model, &colour_png);
    let grey_top1 = classify_file_top1(&model, &grey_png);
    let size = format!("{W}x{H}");
    for format in ["rgb24", "bgr24", "rgba", "bgra", "gray8", "yuv420p", "nv12"] {
        let (src, want) = if format == "gray8" { (&grey_pic, grey_top1) } else { (&pic, colour_top1) };
        let one = frame_bytes(src, format);
        let input = one.repeat(FRAMES);
        let args = ["classify", "-m", &model, "--stream", "--frame-format", format, "--frame-size", &size];
        let out = edgevit_stdin(&args, input);
        assert!(out.status.success(), "{format}: {}", text(&out.stderr));
        let results = lines(&out);
        assert_eq!(results.len(), FRAMES, "{format}");
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["frame"].as_u64(), Some(i as u64));
            assert_eq!(r["top"][0]["index"].as_u64(), Some(want), "{format} frame {i}: {r}");
            for stage in ["read", "preprocess", "inference"] {
                assert!(r["ms"][stage].as_f64().is_some_and(|v| v >= 0.0), "{r}");
            }
        }
    }
    // MJPEG: the JPEG decodes to nearly the same pixels; compare with that JPEG as a file.
    let jpeg = jpeg_bytes(&pic);
    let jpeg_path = dir.path().join("pic.jpg");
    std::fs::write(&jpeg_path, &jpeg).unwrap();
    let want = classify_file_top1(&model, &jpeg_path);
    let out =
        edgevit_stdin(&["classify", "-m", &model, "--stream", "--frame-format", "mjpeg"], jpeg.repeat(MJPEG_FRAMES));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let results = lines(&out);
    assert_eq!(results.len(), MJPEG_FRAMES);
    assert!(results.iter().all(|r| r["top"][0]["index"].as_u64() == Some(want)));
}

#[test]
fn truncated_and_corrupt_streams_keep_every_complete_frame() {
    let model = tiny_int8().to_str().unwrap().to_string();
    let pic = picture();
    let size = format!("{W}x{H}");
    let one = frame_bytes(&pic, "yuv420p");
    let mut input = one.repeat(3);
    input.extend_from_slice(&one[..one.len() / 2]);
    let out = edgevit_stdin(
        &["classify", "-m", &model, "--stream", "--frame-format", "yuv420p", "--frame-size", &size],
        input,
    );
    let err = text(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert_eq!(lines(&out).len(), 3);
    assert!(err.contains("ended inside frame 3"), "{err}");

    // The third JPEG keeps its marker structure but its frame header says width 0.
    let jpeg = jpeg_bytes(&pic);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut bad = jpeg.clone();
    bad[sof + 7..sof + 9].copy_from_slice(&[0, 0]);
    let input = [jpeg.clone(), jpeg.clone(), bad, jpeg.clone()].concat();
    let out = edgevit_stdin(&["classify", "-m", &model, "--stream", "--frame-format", "mjpeg"], input);
    let err = text(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert_eq!(lines(&out).len(), 2);
    assert!(err.contains("frame 2") && err.contains("JPEG"), "{err}");

    // A JPEG of another size than --frame-size says.
    let out = edgevit_stdin(
        &["classify", "-m", &model, "--stream", "--frame-format", "mjpeg", "--frame-size", "640x480"],
        jpeg.clone(),
    );
    assert!(text(&out.stderr).contains("not the 640x480"), "{}", text(&out.stderr));

    // An empty stream is an error, not silence.
    let out = edgevit_stdin(
        &["classify", "-m", &model, "--stream", "--frame-format", "rgb24", "--frame-size", &size],
        vec![],
    );
    assert!(!out.status.success() && text(&out.stderr).contains("no frames"));
}

#[test]
fn every_nth_frame_and_flag_errors() {
    let model = tiny_int8().to_str().unwrap().to_string();
    let (w, h) = (64usize, 48usize);
    let frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let size = format!("{w}x{h}");
    let n = if cfg!(target_arch = "aarch64") { 9 } else { 23 };
    let out = edgevit_stdin(
        &["classify", "-m", &model, "--stream", "--frame-format", "rgb24", "--frame-size", &size, "--every", "4"],
        frame.repeat(n),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let idx: Vec<u64> = lines(&out).iter().map(|r| r["frame"].as_u64().unwrap()).collect();
    assert_eq!(idx, (0..n as u64).step_by(4).collect::<Vec<_>>());

    let bad_flags: [(&[&str], &str); 6] = [
        (&["--stream"], "--frame-format"),
        (&["--stream", "--frame-format", "yuv422"], "not one of"),
        (&["--stream", "--frame-format", "nv12"], "--frame-size"),
        (&["--stream", "--frame-format", "nv12", "--frame-size", "640by480"], "WxH"),
        (&["--frame-format", "nv12"], "add --stream"),
        (&["--stream", "--frame-format", "rgb24", "--frame-size", "4x4", "--yuv-matrix", "bt709"], "apply to yuv420p"),
    ];
    for (flags, needle) in bad_flags {
        let mut args = vec!["classify", "-m", &model];
        args.extend_from_slice(flags);
        let out = edgevit_stdin(&args, vec![]);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{flags:?}: {err}");
    }
}

/// `tight`'s rows (of each plane) copied into rows of `stride` bytes (chroma rows: half of it
/// for yuv420p, all of it for nv12, as libcamera pads them), the padding filled with junk.
fn pad_rows(format: &str, w: usize, h: usize, tight: &[u8], stride: usize) -> Vec<u8> {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let planes: Vec<(usize, usize, usize)> = match format {
        "rgb24" | "bgr24" => vec![(w * 3, h, stride)],
        "rgba" | "bgra" => vec![(w * 4, h, stride)],
        "gray8" => vec![(w, h, stride)],
        "yuv420p" => vec![(w, h, stride), (cw, ch, stride / 2), (cw, ch, stride / 2)],
        "nv12" => vec![(w, h, stride), (2 * cw, ch, stride)],
        other => panic!("no such format {other}"),
    };
    let (mut out, mut at) = (Vec::new(), 0);
    for (row, rows, padded) in planes {
        for _ in 0..rows {
            out.extend_from_slice(&tight[at..at + row]);
            out.resize(out.len() + padded - row, 0xA5);
            at += row;
        }
    }
    assert_eq!(at, tight.len());
    out
}

#[test]
fn padded_rows_give_the_same_logits_as_unpadded_frames() {
    let model = tiny_int8().to_str().unwrap().to_string();
    // Odd sides, so that chroma rows round up.
    let (w, h) = (101, 75);
    let pic = resize(&picture(), w, h, Filter::Bilinear);
    let size = format!("{w}x{h}");
    let logits = |format: &str, bytes: Vec<u8>, stride: Option<usize>| {
        let stride = stride.map(|s| s.to_string());
        let mut args = vec!["classify", "-m", &model, "--stream", "--frame-format", format, "--frame-size", &size];
        args.extend(["--logits", "--top-k", "1"]);
        if let Some(s) = &stride {
            args.extend(["--frame-stride", s]);
        }
        let out = edgevit_stdin(&args, bytes);
        assert!(out.status.success(), "{format} {stride:?}: {}", text(&out.stderr));
        lines(&out).into_iter().map(|l| l["logits"].clone()).collect::<Vec<_>>()
    };
    for (format, bpp) in
        [("rgb24", 3), ("bgr24", 3), ("rgba", 4), ("bgra", 4), ("gray8", 1), ("yuv420p", 1), ("nv12", 1)]
    {
        let tight = frame_bytes(&pic, format);
        // rpicam-vid pads rows to a multiple of 64 bytes.
        let stride = (w * bpp).next_multiple_of(64);
        let padded = pad_rows(format, w, h, &tight, stride);
        // Two frames back to back (one under qemu, where each inference takes about a second).
        let frames = if cfg!(target_arch = "aarch64") { 1 } else { 2 };
        let want = logits(format, tight.repeat(frames), None);
        assert_eq!(want.len(), frames);
        assert_eq!(logits(format, padded.repeat(frames), Some(stride)), want, "{format}");
    }

    let bad: [(&str, &str, &str); 3] = [
        ("rgb24", "300", "less than one 101-pixel rgb24 row (303 bytes)"),
        ("yuv420p", "129", "must be even"),
        ("mjpeg", "128", "raw frames, not mjpeg"),
    ];
    for (format, stride, needle) in bad {
        let args = [
            "classify",
            "-m",
            &model,
            "--stream",
            "--frame-format",
            format,
            "--frame-size",
            &size,
            "--frame-stride",
            stride,
        ];
        let out = edgevit_stdin(&args, vec![0; 4096]);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(needle) && err.contains("--frame-stride"), "{format}: {err}");
    }
}

#[test]
fn a_stalled_stream_times_out_after_its_complete_frames() {
    use std::io::{BufRead, BufReader, Write};
    let model = tiny_int8().to_str().unwrap().to_string();
    let (w, h) = (32usize, 24usize);
    let frame: Vec<u8> = (0..w * h).map(|i| (i * 5 % 256) as u8).collect();
    let size = format!("{w}x{h}");
    let args = [
        "classify",
        "-m",
        &model,
        "--stream",
        "--frame-format",
        "gray8",
        "--frame-size",
        &size,
        "--frame-timeout",
        "1",
    ];
    let mut child = common::exec::spawn(env!("CARGO_BIN_EXE_edgevit"), &args);
    let mut stdin = child.stdin.take().unwrap();
    // Two complete frames and half of a third, then silence with the pipe still open.
    stdin.write_all(&frame.repeat(2)).unwrap();
    stdin.write_all(&frame[..frame.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for i in 0..2 {
        let line = lines.next().expect("a line per complete frame").unwrap();
        assert!(line.contains(&format!("\"frame\":{i}")), "{line}");
    }
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    let waited = started.elapsed().as_secs_f64();
    drop(stdin);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains("stalled") && err.contains("2 classified"), "{err}");
    assert!(waited < 30.0, "waited {waited} s");
}

/// Resident memory of a running process, in kB (Linux).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn ten_thousand_frames_with_flat_memory() {
    use std::io::{BufRead, BufReader, Write};
    const N: usize = 10_000;
    let model = convert(&repo().join("demo/vit-mnist"), edgevit::config::WeightDType::Int8);
    let (w, h) = (40usize, 30usize);
    let frames: Vec<Vec<u8>> =
        (0..7).map(|k| (0..w * h * 3 / 2).map(|i| ((i * 7 + k * 31) % 256) as u8).collect()).collect();
    let size = format!("{w}x{h}");
    let args = [
        "classify",
        "-m",
        model.to_str().unwrap(),
        "--stream",
        "--frame-format",
        "nv12",
        "--frame-size",
        &size,
        "--threads",
        "2",
    ];
    let mut child = common::exec::spawn(env!("CARGO_BIN_EXE_edgevit"), &args);
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            stdin.write_all(&frames[i % frames.len()]).unwrap();
        }
        stdin.flush().unwrap();
        // Keep the pipe open until the last RSS reading, so the process is still alive.
        let _ = done_rx.recv();
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rss_after_100 = 0;
    for i in 0..N {
        let line = lines.next().unwrap_or_else(|| panic!("stream ended after {i} frames")).unwrap();
        assert!(line.starts_with(&format!("{{\"frame\":{i},")), "{line}");
        if i == 99 {
            rss_after_100 = rss_kb(pid);
        }
    }
    let rss_end = rss_kb(pid);
    done_tx.send(()).unwrap();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    eprintln!("RSS after frame 100: {rss_after_100} kB, after frame {N}: {rss_end} kB");
    assert!(rss_end <= rss_after_100 + 1024, "memory grew from {rss_after_100} kB to {rss_end} kB over {N} frames");
}
