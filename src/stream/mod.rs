//! Camera frames: raw frames back to back (I420, NV12, RGB, BGR, RGBA, BGRA, grey), rows
//! optionally padded to a stride, or a stream of concatenated JPEGs (MJPEG), read from any
//! `Read`, and turned into the model's input with colour conversion fused into the resize
//! (docs/streaming.md). frame.rs: formats and conversion; reader.rs: splitting the stream;
//! here: the threaded pipeline that reads frame n+1 while frame n is classified.

mod frame;
mod reader;

use std::io::Read;

pub use frame::{check_stride, FrameFormat, RawFrame, YuvMatrix, YuvRange, YuvToRgb};
pub use reader::{FrameReader, MAX_JPEG_BYTES};

use crate::config::Preprocess;
use crate::error::{Error, Result};
use crate::preprocess::decode;

/// What a stream holds and how to read it.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// How each frame is laid out.
    pub format: FrameFormat,
    /// Frame width and height: required for raw formats; for MJPEG, checked if given.
    pub size: Option<(usize, usize)>,
    /// Bytes per row of raw frames whose rows are padded (`None`: unpadded).
    pub stride: Option<usize>,
    /// The YUV to RGB matrix (YUV formats).
    pub matrix: YuvMatrix,
    /// The YUV range (YUV formats).
    pub range: YuvRange,
    /// Classify every Nth frame (1 = all); the others are read and dropped.
    pub every: u64,
    /// Give up with an error if no complete frame arrives for this long (a stalled camera);
    /// `None` waits for ever.
    pub frame_timeout: Option<std::time::Duration>,
}

/// Turns one frame's bytes into the model's input tensor.
pub fn prepare_frame(bytes: &[u8], opts: &StreamOptions, p: &Preprocess, out: &mut Vec<f32>) -> Result<()> {
    if opts.format == FrameFormat::Mjpeg {
        let img = decode(bytes).map_err(|e| Error::Input(format!("corrupt JPEG: {e}")))?;
        if let Some((w, h)) = opts.size.filter(|&s| s != (img.width(), img.height())) {
            return Err(Error::Input(format!(
                "the JPEG is {}x{}, not the {w}x{h} frame size given",
                img.width(),
                img.height()
            )));
        }
        img.preprocess_into(p, out);
        return Ok(());
    }
    let (w, h) = opts.size.ok_or_else(|| Error::Input("raw frames need a frame size".into()))?;
    let yuv = YuvToRgb::new(opts.matrix, opts.range);
    RawFrame::with_stride(opts.format, w, h, opts.stride, bytes)?.preprocess_into(p, &yuv, out);
    Ok(())
}

/// The result for one classified frame, handed to the caller of [`classify_stream`].
pub struct FrameResult<'a> {
    /// The frame's position in the stream, from 0 (skipped frames count).
    pub index: u64,
    /// The frame's logits.
    pub logits: &'a [f32],
    /// Time spent waiting for and reading the frame's bytes.
    pub read_ms: f64,
    /// Colour conversion, resize and normalisation (on the reader thread, overlapping the
    /// previous frame's inference).
    pub preprocess_ms: f64,
    /// The forward pass.
    pub inference_ms: f64,
}

/// Lowers the calling thread's priority: on Linux SCHED_BATCH at nice 10, elsewhere the lowest
/// the OS allows. The frame reader then runs in the gaps between inference's parallel sections
/// instead of preempting a worker when it wakes (batch threads do not preempt on wakeup), which
/// would stall the whole parallel section; but under load from other processes it still gets a
/// share of the CPU. (SCHED_IDLE, used before, got so little beside a busy process that a
/// waiting stream could see no prepared frame for seconds and report a stalled camera.)
/// Best effort: if the OS refuses, the thread keeps its normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy};
        // The crate maps 0..=99 onto nice 19..=-20: 22 is nice 10.
        let Ok(nice_10) = ThreadPriorityValue::try_from(22u8) else { return };
        let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        let _ = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Crossplatform(nice_10),
            batch,
        );
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    }
}

struct Prepared {
    index: u64,
    tensor: Vec<f32>,
    read_ms: f64,
    preprocess_ms: f64,
}

/// Classifies a stream of frames. A reader thread reads and prepares frame n+1 while the
/// model runs on frame n. `on_frame` gets each result as soon as it exists and returns false
/// to stop early (e.g. its output was closed). Returns the number of frames classified, or
/// the first error after every frame before it has been handed to `on_frame`.
pub fn classify_stream<R: Read + Send + 'static>(
    model: &crate::Model,
    reader: R,
    opts: StreamOptions,
    mut on_frame: impl FnMut(FrameResult<'_>) -> bool,
) -> Result<u64> {
    use std::sync::mpsc::{channel, sync_channel, RecvTimeoutError};
    use std::time::Instant;
    if opts.every == 0 {
        return Err(Error::Input("every: classifying every Nth frame needs N of at least 1".into()));
    }
    let mut frames = FrameReader::with_stride(reader, opts.format, opts.size, opts.stride)?;
    let preprocess = model.config().preprocess.clone();
    // One prepared frame waits while another is being classified: enough to overlap the two.
    let (ready_tx, ready_rx) = sync_channel::<Result<Prepared>>(1);
    let (recycle_tx, recycle_rx) = channel::<Vec<f32>>();
    // Not joined: if the caller stops early while the reader is blocked on a silent camera,
    // the thread ends with the process rather than holding it up.
    std::thread::Builder::new()
        .name("edgevit-frames".into())
        .spawn(move || {
            lower_priority();
            let mut bytes = Vec::new();
            loop {
                let start = Instant::now();
                let index = frames.frames_read();
                let item = match frames.next_frame(&mut bytes) {
                    Ok(false) => return,
                    Ok(true) if index % opts.every != 0 => continue,
                    Ok(true) => {
                        let read_ms = start.elapsed().as_secs_f64() * 1e3;
                        let start = Instant::now();
                        let mut tensor = recycle_rx.try_recv().unwrap_or_default();
                        prepare_frame(&bytes, &opts, &preprocess, &mut tensor)
                            .map(|()| Prepared {
                                index,
                                tensor,
                                read_ms,
                                preprocess_ms: start.elapsed().as_secs_f64() * 1e3,
                            })
                            .map_err(|e| Error::Input(format!("frame {index}: {e}")))
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if ready_tx.send(item).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| Error::Unsupported(format!("cannot start the frame reader thread: {e}")))?;

    let mut session = model.session();
    let mut classified = 0;
    loop {
        let item = match opts.frame_timeout {
            None => ready_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => ready_rx.recv_timeout(t),
        };
        let frame = match item {
            Ok(item) => item?,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let t = opts.frame_timeout.unwrap_or_default().as_secs_f64();
                return Err(Error::Input(format!(
                    "no complete frame arrived for {t} s ({classified} classified so far): the stream stalled \
                     (--frame-timeout)"
                )));
            }
        };
        let start = Instant::now();
        let logits = model.forward(&frame.tensor, &mut session)?;
        let result = FrameResult {
            index: frame.index,
            logits,
            read_ms: frame.read_ms,
            preprocess_ms: frame.preprocess_ms,
            inference_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        classified += 1;
        if !on_frame(result) {
            break;
        }
        let _ = recycle_tx.send(frame.tensor);
    }
    Ok(classified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths() {
        assert_eq!(FrameFormat::Yuv420p.frame_len(4, 2), Some(8 + 2 * 2));
        assert_eq!(FrameFormat::Nv12.frame_len(5, 3), Some(15 + 2 * 3 * 2));
        assert_eq!(FrameFormat::Rgba.frame_len(3, 3), Some(36));
        assert_eq!(FrameFormat::Mjpeg.frame_len(3, 3), None);
        assert_eq!(FrameFormat::Rgb24.frame_len(usize::MAX, 2), None);
        // Padded rows: I420 chroma rows are half the stride, NV12's UV rows the whole stride.
        assert_eq!(FrameFormat::Yuv420p.frame_len_strided(5, 3, 8), Some(24 + 2 * 2 * 4));
        assert_eq!(FrameFormat::Nv12.frame_len_strided(5, 3, 8), Some(24 + 2 * 8));
        assert_eq!(FrameFormat::Nv12.frame_len_strided(5, 3, 5), FrameFormat::Nv12.frame_len(5, 3));
        assert_eq!(FrameFormat::Bgra.frame_len_strided(3, 2, 16), Some(32));
    }

    #[test]
    fn yuv_reference_colours() {
        // Limited-range BT.601: Y=16 is black, Y=235 white, and (Y, U, V) = (81, 90, 240) is
        // the standard encoding of pure red (ITU-R BT.601 colour bars).
        let c = YuvToRgb::new(YuvMatrix::Bt601, YuvRange::Limited);
        assert_eq!(c.convert(16, 128, 128), [0, 0, 0]);
        assert_eq!(c.convert(235, 128, 128), [255, 255, 255]);
        let red = c.convert(81, 90, 240);
        assert!(red[0] >= 254 && red[1] <= 1 && red[2] <= 1, "{red:?}");
        // Full-range BT.709 (hand-worked): Y=128, V=228: R = 128 + 1.5748 * 100 = 285 -> 255;
        // G = 128 - 0.4681 * 100 = 81.2 -> 81; B = 128.
        let c = YuvToRgb::new(YuvMatrix::Bt709, YuvRange::Full);
        assert_eq!(c.convert(128, 128, 228), [255, 81, 128]);
    }

    #[test]
    fn yuv_rows_match_the_conversion_of_each_pixel() {
        // Widths around the 64-pixel blocks of the row conversion, odd ones included, and
        // padded rows; the reference reads each pixel's Y, U and V from the layout itself
        // (chroma rows: I420 half the stride rounded up, NV12 the stride rounded up to even).
        let c = YuvToRgb::new(YuvMatrix::Bt601, YuvRange::Limited);
        for w in [1, 2, 3, 31, 63, 64, 65, 128, 129, 141] {
            let h = 5;
            for format in [FrameFormat::Nv12, FrameFormat::Yuv420p] {
                for stride in [None, Some(w + 3 + (w + 3) % 2)] {
                    let s = stride.unwrap_or(w);
                    let n = format.frame_len_strided(w, h, s).unwrap();
                    let data: Vec<u8> = (0..n).map(|i| (i * 37 + i / 7) as u8).collect();
                    let frame = RawFrame::with_stride(format, w, h, stride, &data).unwrap();
                    let ch = h.div_ceil(2);
                    let mut row = vec![0u8; w * 3];
                    for y in 0..h {
                        frame.rgb_row(y, &mut row, &c);
                        for x in 0..w {
                            let luma = data[y * s + x];
                            let (u, v) = if format == FrameFormat::Nv12 {
                                let at = s * h + (y / 2) * s.next_multiple_of(2) + 2 * (x / 2);
                                (data[at], data[at + 1])
                            } else {
                                let cs = s.div_ceil(2);
                                let at = s * h + (y / 2) * cs + x / 2;
                                (data[at], data[at + cs * ch])
                            };
                            assert_eq!(
                                row[3 * x..3 * x + 3],
                                c.convert(luma, u, v),
                                "{format:?} {w}x{h} {stride:?} ({x}, {y})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn raw_frames_split_and_partial_frame_is_an_error() {
        let data: Vec<u8> = (0..(2 * 12 + 5)).map(|v| v as u8).collect();
        let mut r = FrameReader::new(&data[..], FrameFormat::Rgb24, Some((2, 2))).unwrap();
        let mut buf = Vec::new();
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, (0..12).collect::<Vec<u8>>());
        assert!(r.next_frame(&mut buf).unwrap());
        let err = r.next_frame(&mut buf).unwrap_err().to_string();
        assert!(err.contains("inside frame 2") && err.contains("5 of its 12"), "{err}");
        let mut r = FrameReader::new(&data[..24], FrameFormat::Rgb24, Some((2, 2))).unwrap();
        assert!(r.next_frame(&mut buf).unwrap() && r.next_frame(&mut buf).unwrap());
        assert!(!r.next_frame(&mut buf).unwrap());
    }

    /// A minimal marker sequence: SOI, an APP1 segment holding a fake EOI, SOS with stuffed
    /// and restart bytes, EOI.
    fn fake_jpeg(tag: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, tag, 0x00];
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn mjpeg_splits_on_real_end_markers_only() {
        let mut stream = fake_jpeg(1);
        stream.extend(fake_jpeg(2));
        let mut r = FrameReader::new(&stream[..], FrameFormat::Mjpeg, None).unwrap();
        let mut buf = Vec::new();
        assert!(r.next_frame(&mut buf).unwrap());
        // The fill byte before the final marker is dropped; everything else is kept.
        let mut want = fake_jpeg(1);
        want.remove(want.len() - 3);
        assert_eq!(buf, want);
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf[8], 2);
        assert!(!r.next_frame(&mut buf).unwrap());

        let cut = &stream[..stream.len() - 4];
        let mut r = FrameReader::new(cut, FrameFormat::Mjpeg, None).unwrap();
        assert!(r.next_frame(&mut buf).unwrap());
        let err = r.next_frame(&mut buf).unwrap_err().to_string();
        assert!(err.contains("ended inside MJPEG frame 1"), "{err}");
        let mut r = FrameReader::new(&b"GIF89a"[..], FrameFormat::Mjpeg, None).unwrap();
        assert!(r.next_frame(&mut buf).unwrap_err().to_string().contains("expected a JPEG start"));
    }

    #[test]
    fn eof_at_every_offset_keeps_complete_frames_and_then_errs() {
        let one = fake_jpeg(7);
        let stream = [one.clone(), one.clone()].concat();
        for (format, data, frame_len) in
            [(FrameFormat::Mjpeg, stream.clone(), one.len()), (FrameFormat::Rgb24, stream.clone(), 9)]
        {
            for end in 0..=data.len() {
                let size = (format != FrameFormat::Mjpeg).then_some((3, 1));
                let mut r = FrameReader::new(&data[..end], format, size).unwrap();
                let mut buf = Vec::new();
                let mut complete = 0;
                let outcome = loop {
                    match r.next_frame(&mut buf) {
                        Ok(true) => complete += 1,
                        other => break other,
                    }
                };
                // Only the frames wholly inside the first `end` bytes come out.
                let whole = if format == FrameFormat::Mjpeg {
                    // The fill byte before each end marker is dropped, so a frame is complete
                    // once its end marker has arrived.
                    (0..2).filter(|k| end >= (k + 1) * frame_len).count()
                } else {
                    end / frame_len
                };
                assert_eq!(complete, whole, "{format:?} cut at {end}");
                let at_boundary = end % frame_len == 0 || (format == FrameFormat::Mjpeg && end == data.len());
                assert_eq!(outcome.is_ok(), at_boundary, "{format:?} cut at {end}: {outcome:?}");
            }
        }
    }

    #[test]
    fn nv12_and_i420_give_the_same_pixels() {
        // 3x3 frame: Y ramp, chroma 2x2 per plane.
        let y: Vec<u8> = (0..9).map(|v| 40 + v * 20).collect();
        let (u, v) = ([100u8, 110, 120, 130], [140u8, 150, 160, 170]);
        let i420: Vec<u8> = y.iter().chain(&u).chain(&v).copied().collect();
        let nv12: Vec<u8> = y.iter().copied().chain(u.iter().zip(&v).flat_map(|(&a, &b)| [a, b])).collect();
        let c = YuvToRgb::new(YuvMatrix::Bt601, YuvRange::Limited);
        let (a, b) = (
            RawFrame::new(FrameFormat::Yuv420p, 3, 3, &i420).unwrap(),
            RawFrame::new(FrameFormat::Nv12, 3, 3, &nv12).unwrap(),
        );
        for row in 0..3 {
            let (mut ra, mut rb) = ([0u8; 9], [0u8; 9]);
            a.rgb_row(row, &mut ra, &c);
            b.rgb_row(row, &mut rb, &c);
            assert_eq!(ra, rb);
            // Pixel (row, 2) uses chroma sample (row / 2, 1).
            let ci = (row / 2) * 2 + 1;
            assert_eq!(ra[6..9], c.convert(y[row * 3 + 2], u[ci], v[ci]));
        }
        assert!(RawFrame::new(FrameFormat::Nv12, 3, 3, &nv12[1..]).is_err());
    }
}
