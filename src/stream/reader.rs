//! Splitting a byte stream into frames: fixed-size raw frames, or whole JPEG files found by
//! walking their marker segments.

use std::io::{BufReader, Read};

use super::frame::{check_stride, FrameFormat};
use crate::error::{Error, Result};
use crate::preprocess::MAX_IMAGE_SIDE;

/// Largest JPEG accepted in an MJPEG stream, so a stream without an end marker cannot make
/// the reader buffer without bound.
pub const MAX_JPEG_BYTES: usize = 64 << 20;

/// Splits a byte stream into frames: fixed-size raw frames, or whole JPEG files.
pub struct FrameReader<R> {
    reader: BufReader<R>,
    format: FrameFormat,
    /// Bytes of one raw frame (0 for MJPEG).
    frame_len: usize,
    /// Frames returned so far.
    frames: u64,
    /// Bytes read ahead while looking for the end of a JPEG's entropy-coded data, to be read
    /// again (last in, first out).
    pushback: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// `size` is required for raw formats; for MJPEG it is checked against each decoded frame
    /// by the caller.
    pub fn new(reader: R, format: FrameFormat, size: Option<(usize, usize)>) -> Result<Self> {
        Self::with_stride(reader, format, size, None)
    }

    /// [`FrameReader::new`] for raw frames whose rows are padded to `stride` bytes.
    pub fn with_stride(
        reader: R,
        format: FrameFormat,
        size: Option<(usize, usize)>,
        stride: Option<usize>,
    ) -> Result<Self> {
        let frame_len = match (format, size) {
            (FrameFormat::Mjpeg, _) => {
                check_stride(format, 0, stride)?;
                0
            }
            (_, None) => return Err(Error::Input(format!("{} frames need a frame size", format.name()))),
            (_, Some((w, h))) if w == 0 || h == 0 || w > MAX_IMAGE_SIDE as usize || h > MAX_IMAGE_SIDE as usize => {
                return Err(Error::Input(format!(
                    "frame size {w}x{h}: each side must be between 1 and {MAX_IMAGE_SIDE}"
                )));
            }
            (_, Some((w, h))) => {
                let stride = check_stride(format, w, stride)?.unwrap_or(format.min_stride(w).expect("raw format"));
                format
                    .frame_len_strided(w, h, stride)
                    .ok_or_else(|| Error::Input(format!("a {w}x{h} frame with {stride}-byte rows is too large")))?
            }
        };
        Ok(FrameReader {
            reader: BufReader::with_capacity(1 << 16, reader),
            format,
            frame_len,
            frames: 0,
            pushback: Vec::new(),
        })
    }

    /// Frames returned so far.
    pub fn frames_read(&self) -> u64 {
        self.frames
    }

    /// Reads the next frame into `buf` (replacing its contents). `Ok(false)` at a clean end
    /// of stream; an error for a partial frame, a read error or a malformed JPEG stream.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        let more = if self.format == FrameFormat::Mjpeg { self.next_jpeg(buf)? } else { self.next_raw(buf)? };
        if more {
            self.frames += 1;
        }
        Ok(more)
    }

    fn next_raw(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        // The buffer grows as bytes arrive (and keeps its size for the next frame), so a large
        // --frame-size costs memory only once its frames actually come.
        let got = (&mut self.reader)
            .take(self.frame_len as u64)
            .read_to_end(buf)
            .map_err(|e| Error::Input(format!("frame {}: read error: {e}", self.frames)))?;
        match got {
            0 => Ok(false),
            n if n == self.frame_len => Ok(true),
            n => Err(Error::Input(format!(
                "the stream ended inside frame {}: {n} of its {} bytes arrived (are the frame size \
                 and format right?)",
                self.frames, self.frame_len
            ))),
        }
    }

    /// One byte, or `None` at end of stream.
    fn byte(&mut self) -> Result<Option<u8>> {
        if let Some(b) = self.pushback.pop() {
            return Ok(Some(b));
        }
        let mut b = [0u8];
        loop {
            match self.reader.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Input(format!("frame {}: read error: {e}", self.frames))),
            }
        }
    }

    /// Reads one JPEG file by walking its marker segments: lengths for headers, and for
    /// entropy-coded data a scan for a marker that is not a stuffed 0xFF00 or a restart.
    /// An EOI inside an embedded thumbnail is skipped with its segment.
    fn next_jpeg(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let frame = self.frames;
        let bad = |what: String| Error::Input(format!("MJPEG frame {frame}: {what}"));
        let truncated = || Error::Input(format!("the stream ended inside MJPEG frame {frame}"));
        let Some(first) = self.byte()? else { return Ok(false) };
        let second = self.byte()?.ok_or_else(truncated)?;
        if [first, second] != [0xFF, 0xD8] {
            return Err(bad(format!("expected a JPEG start (FF D8), found {first:02X} {second:02X}")));
        }
        buf.extend_from_slice(&[0xFF, 0xD8]);
        loop {
            if buf.len() > MAX_JPEG_BYTES {
                return Err(bad(format!("no end marker within {MAX_JPEG_BYTES} bytes")));
            }
            let b = self.byte()?.ok_or_else(truncated)?;
            if b != 0xFF {
                return Err(bad(format!("expected a marker at byte {}, found {b:02X}", buf.len())));
            }
            // Any number of 0xFF fill bytes may precede a marker.
            let mut marker = 0xFF;
            while marker == 0xFF {
                marker = self.byte()?.ok_or_else(truncated)?;
            }
            buf.extend_from_slice(&[0xFF, marker]);
            match marker {
                0xD9 => return Ok(true),
                0x01 | 0xD0..=0xD7 => continue,
                0x00 | 0xD8 => return Err(bad(format!("unexpected marker FF {marker:02X}"))),
                _ => {}
            }
            let hi = self.byte()?.ok_or_else(truncated)?;
            let lo = self.byte()?.ok_or_else(truncated)?;
            let len = u16::from_be_bytes([hi, lo]) as usize;
            if len < 2 {
                return Err(bad(format!("segment FF {marker:02X} has length {len}")));
            }
            buf.extend_from_slice(&[hi, lo]);
            let start = buf.len();
            buf.resize(start + len - 2, 0);
            self.read_exact_into(&mut buf[start..]).map_err(|_| truncated())?;
            if marker == 0xDA {
                self.skip_entropy_data(buf)?;
            }
        }
    }

    fn read_exact_into(&mut self, dst: &mut [u8]) -> Result<()> {
        let mut at = 0;
        while at < dst.len() {
            match self.pushback.pop() {
                Some(b) => dst[at] = b,
                None => break,
            }
            at += 1;
        }
        self.reader
            .read_exact(&mut dst[at..])
            .map_err(|e| Error::Input(format!("frame {}: read error: {e}", self.frames)))
    }

    /// Copies entropy-coded bytes up to (not including) the next real marker, which is pushed
    /// back for the segment loop.
    fn skip_entropy_data(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let frame = self.frames;
        loop {
            if buf.len() > MAX_JPEG_BYTES {
                return Err(Error::Input(format!("MJPEG frame {frame}: no end marker within {MAX_JPEG_BYTES} bytes")));
            }
            let b = self.byte()?.ok_or_else(|| Error::Input(format!("the stream ended inside MJPEG frame {frame}")))?;
            if b != 0xFF {
                buf.push(b);
                continue;
            }
            let mut next =
                self.byte()?.ok_or_else(|| Error::Input(format!("the stream ended inside MJPEG frame {frame}")))?;
            while next == 0xFF {
                next =
                    self.byte()?.ok_or_else(|| Error::Input(format!("the stream ended inside MJPEG frame {frame}")))?;
            }
            if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                buf.extend_from_slice(&[0xFF, next]);
                continue;
            }
            // A real marker: hand it back for the segment loop, 0xFF first.
            self.pushback.push(next);
            self.pushback.push(0xFF);
            return Ok(());
        }
    }
}
