//! Camera frames: raw frames back to back (I420, NV12, RGB, BGR, RGBA, BGRA, grey), rows
//! optionally padded to a stride, or a stream of
//! concatenated JPEGs (MJPEG), read from any `Read`, and turned into the model's input with
//! colour conversion fused into the resize (docs/streaming.md).

use std::io::{BufReader, Read};
use std::str::FromStr;

use crate::config::Preprocess;
use crate::error::{Error, Result};
use crate::preprocess::{decode, preprocess_rows, MAX_IMAGE_SIDE};

/// How the frames of a stream are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFormat {
    /// Planar YUV 4:2:0 (I420): Y, then U and V at half width and height (rounded up).
    Yuv420p,
    /// Y plane, then one plane of interleaved U, V at half width and height (rounded up).
    Nv12,
    Rgb24,
    Bgr24,
    /// RGB plus an alpha (or padding) byte, which is ignored: picamera2's XBGR8888.
    Rgba,
    /// BGR plus an alpha (or padding) byte, which is ignored: picamera2's XRGB8888.
    Bgra,
    Gray8,
    /// Concatenated JPEG images, each a complete file.
    Mjpeg,
}

impl FrameFormat {
    pub const NAMES: &'static str = "yuv420p, nv12, rgb24, bgr24, rgba, bgra, gray8, mjpeg";

    /// The word `--frame-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Yuv420p => "yuv420p",
            Self::Nv12 => "nv12",
            Self::Rgb24 => "rgb24",
            Self::Bgr24 => "bgr24",
            Self::Rgba => "rgba",
            Self::Bgra => "bgra",
            Self::Gray8 => "gray8",
            Self::Mjpeg => "mjpeg",
        }
    }

    /// Bytes of one raw frame of `width x height` with unpadded rows; `None` for MJPEG (frames
    /// vary) or overflow.
    pub fn frame_len(self, width: usize, height: usize) -> Option<usize> {
        self.frame_len_strided(width, height, self.min_stride(width)?)
    }

    /// Bytes per row of the first (or only) plane without padding; `None` for MJPEG.
    pub fn min_stride(self, width: usize) -> Option<usize> {
        match self {
            FrameFormat::Yuv420p | FrameFormat::Nv12 | FrameFormat::Gray8 => Some(width),
            FrameFormat::Rgb24 | FrameFormat::Bgr24 => width.checked_mul(3),
            FrameFormat::Rgba | FrameFormat::Bgra => width.checked_mul(4),
            FrameFormat::Mjpeg => None,
        }
    }

    /// Bytes per chroma row for a luma stride: I420's U and V rows are half as long (rounded
    /// up), NV12's interleaved UV rows as long (rounded up to whole pairs), as libcamera lays
    /// them out.
    fn chroma_stride(self, stride: usize) -> usize {
        match self {
            FrameFormat::Yuv420p => stride.div_ceil(2),
            FrameFormat::Nv12 => stride.next_multiple_of(2),
            _ => 0,
        }
    }

    /// Bytes of one raw frame whose rows each take `stride` bytes (padding included); planes
    /// follow each other with no gap. `None` for MJPEG or overflow.
    pub fn frame_len_strided(self, width: usize, height: usize, stride: usize) -> Option<usize> {
        let _ = self.min_stride(width)?;
        let first = stride.checked_mul(height)?;
        let chroma = self.chroma_stride(stride).checked_mul(height.div_ceil(2))?;
        match self {
            FrameFormat::Yuv420p => first.checked_add(chroma.checked_mul(2)?),
            FrameFormat::Nv12 => first.checked_add(chroma),
            _ => Some(first),
        }
    }
}

impl FromStr for FrameFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "yuv420p" | "i420" | "yuv420" => Self::Yuv420p,
            "nv12" => Self::Nv12,
            // picamera2 names formats by their 32-bit word, so its BGR888 is R, G, B in memory.
            "rgb24" | "rgb" | "bgr888" => Self::Rgb24,
            "bgr24" | "bgr" | "rgb888" => Self::Bgr24,
            "rgba" | "rgbx" | "xbgr8888" => Self::Rgba,
            "bgra" | "bgrx" | "xrgb8888" => Self::Bgra,
            "gray8" | "gray" | "grey" => Self::Gray8,
            "mjpeg" | "jpeg" => Self::Mjpeg,
            other => return Err(format!("frame format '{other}' is not one of: {}", Self::NAMES)),
        })
    }
}

/// The YUV to RGB matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (SMPTE 170M): Kr = 0.299, Kb = 0.114.
    #[default]
    Bt601,
    /// ITU-R BT.709: Kr = 0.2126, Kb = 0.0722.
    Bt709,
}

impl FromStr for YuvMatrix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "bt601" | "601" | "smpte170m" => Ok(Self::Bt601),
            "bt709" | "709" | "rec709" => Ok(Self::Bt709),
            other => Err(format!("YUV matrix '{other}' is not one of: bt601, bt709")),
        }
    }
}

/// Whether Y spans 16..235 and U, V 16..240 (limited, "TV") or all of 0..255 (full, "PC").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum YuvRange {
    #[default]
    Limited,
    Full,
}

impl FromStr for YuvRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "limited" | "tv" | "mpeg" => Ok(Self::Limited),
            "full" | "pc" | "jpeg" => Ok(Self::Full),
            other => Err(format!("YUV range '{other}' is not one of: limited, full")),
        }
    }
}

/// YUV to RGB in 16.16 fixed point:
/// `R = Y' + cr_r*V'`, `G = Y' - cb_g*U' - cr_g*V'`, `B = Y' + cb_b*U'`, where
/// `Y' = (Y - y0) * y_scale` and `U' = U - 128`, `V' = V - 128` (docs/streaming.md).
#[derive(Clone, Copy, Debug)]
pub struct YuvToRgb {
    y0: i32,
    y_scale: i32,
    cr_r: i32,
    cb_g: i32,
    cr_g: i32,
    cb_b: i32,
}

impl YuvToRgb {
    pub fn new(matrix: YuvMatrix, range: YuvRange) -> Self {
        let (kr, kb) = match matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        // Limited range: Y' = (Y - 16) * 255/219 and chroma scaled by 255/224.
        let (y0, ys, cs) = match range {
            YuvRange::Limited => (16, 255.0 / 219.0, 255.0 / 224.0),
            YuvRange::Full => (0, 1.0, 1.0),
        };
        let fixed = |v: f64| (v * 65536.0).round() as i32;
        YuvToRgb {
            y0,
            y_scale: fixed(ys),
            cr_r: fixed(2.0 * (1.0 - kr) * cs),
            cb_g: fixed(2.0 * kb * (1.0 - kb) / kg * cs),
            cr_g: fixed(2.0 * kr * (1.0 - kr) / kg * cs),
            cb_b: fixed(2.0 * (1.0 - kb) * cs),
        }
    }

    #[inline]
    pub fn convert(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let yy = self.luma_term(y);
        let (r, g, b) = self.chroma_terms(u, v);
        [clip16(yy + r), clip16(yy + g), clip16(yy + b)]
    }

    /// `Y'` in 16.16 fixed point, with the rounding half added.
    #[inline]
    fn luma_term(&self, y: u8) -> i32 {
        (y as i32 - self.y0) * self.y_scale + (1 << 15)
    }

    /// What U and V add to R, G and B, in 16.16 fixed point.
    #[inline]
    fn chroma_terms(&self, u: u8, v: u8) -> (i32, i32, i32) {
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        (self.cr_r * v, -self.cb_g * u - self.cr_g * v, self.cb_b * u)
    }
}

/// One raw frame in memory.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame<'a> {
    pub format: FrameFormat,
    pub width: usize,
    pub height: usize,
    /// Bytes per row of the first (or only) plane, padding included (see
    /// [`FrameFormat::frame_len_strided`] for the chroma rows).
    pub stride: usize,
    pub data: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Checks that `data` holds exactly one frame of this format and size, rows unpadded.
    pub fn new(format: FrameFormat, width: usize, height: usize, data: &'a [u8]) -> Result<Self> {
        Self::with_stride(format, width, height, None, data)
    }

    /// [`RawFrame::new`] for rows padded to `stride` bytes (`None`: unpadded), as some camera
    /// tools and numpy views hand them out.
    pub fn with_stride(
        format: FrameFormat,
        width: usize,
        height: usize,
        stride: Option<usize>,
        data: &'a [u8],
    ) -> Result<Self> {
        if format == FrameFormat::Mjpeg {
            return Err(Error::Input("an MJPEG frame is a JPEG file: decode it as an image".into()));
        }
        if width == 0 || height == 0 {
            return Err(Error::Input(format!("frame size {width}x{height} is empty")));
        }
        let too_large = || Error::Input(format!("frame size {width}x{height} is too large"));
        let min = format.min_stride(width).ok_or_else(too_large)?;
        let stride = check_stride(format, width, stride)?.unwrap_or(min);
        match format.frame_len_strided(width, height, stride) {
            Some(n) if n == data.len() => Ok(RawFrame { format, width, height, stride, data }),
            Some(n) => Err(Error::Input(format!(
                "a {width}x{height} {} frame{} is {n} bytes, but {} were given",
                format.name(),
                if stride == min { String::new() } else { format!(" with {stride}-byte rows") },
                data.len()
            ))),
            None => Err(too_large()),
        }
    }

    /// Writes row `y` as interleaved RGB into `out` (`width * 3` bytes). 4:2:0 chroma is
    /// taken from the sample covering each 2x2 block (replicated, not interpolated).
    pub fn rgb_row(&self, y: usize, out: &mut [u8], yuv: &YuvToRgb) {
        let (w, h, s) = (self.width, self.height, self.stride);
        let d = self.data;
        match self.format {
            FrameFormat::Rgb24 => out.copy_from_slice(&d[y * s..][..w * 3]),
            FrameFormat::Bgr24 => {
                for (o, i) in out.chunks_exact_mut(3).zip(d[y * s..][..w * 3].chunks_exact(3)) {
                    o.copy_from_slice(&[i[2], i[1], i[0]]);
                }
            }
            FrameFormat::Rgba => {
                for (o, i) in out.chunks_exact_mut(3).zip(d[y * s..][..w * 4].chunks_exact(4)) {
                    o.copy_from_slice(&i[..3]);
                }
            }
            FrameFormat::Bgra => {
                for (o, i) in out.chunks_exact_mut(3).zip(d[y * s..][..w * 4].chunks_exact(4)) {
                    o.copy_from_slice(&[i[2], i[1], i[0]]);
                }
            }
            FrameFormat::Gray8 => {
                for (o, &g) in out.chunks_exact_mut(3).zip(&d[y * s..][..w]) {
                    o.copy_from_slice(&[g, g, g]);
                }
            }
            FrameFormat::Yuv420p | FrameFormat::Nv12 => {
                let cw = w.div_ceil(2);
                let cs = self.format.chroma_stride(s);
                let luma = &d[y * s..][..w];
                let chroma = &d[s * h..];
                let cy = y / 2;
                // Each chroma sample covers two pixels of the row.
                let mut pairs = out.chunks_mut(6).zip(luma.chunks(2));
                if self.format == FrameFormat::Yuv420p {
                    let plane = cs * h.div_ceil(2);
                    let (us, vs) = (&chroma[cy * cs..][..cw], &chroma[plane + cy * cs..][..cw]);
                    for ((o, l), (&u, &v)) in pairs.by_ref().zip(us.iter().zip(vs)) {
                        yuv_pair(o, l, u, v, yuv);
                    }
                } else {
                    let uv = &chroma[cy * cs..][..cw * 2];
                    for ((o, l), c) in pairs.by_ref().zip(uv.chunks_exact(2)) {
                        yuv_pair(o, l, c[0], c[1], yuv);
                    }
                }
            }
            FrameFormat::Mjpeg => unreachable!("RawFrame::new refuses MJPEG"),
        }
    }

    /// The model's input tensor for this frame, converted and resized in one pass.
    pub fn preprocess_into(&self, p: &Preprocess, yuv: &YuvToRgb, out: &mut Vec<f32>) {
        preprocess_rows(self.width, self.height, |y, row| self.rgb_row(y, row, yuv), p, out);
    }
}

/// Checks a row stride given for `format` frames of `width` pixels: at least the unpadded row,
/// even for I420 (whose chroma rows are half as long), and not for MJPEG.
pub fn check_stride(format: FrameFormat, width: usize, stride: Option<usize>) -> Result<Option<usize>> {
    let Some(stride) = stride else { return Ok(None) };
    let Some(min) = format.min_stride(width) else {
        return Err(Error::Input("a row stride applies to raw frames, not mjpeg".into()));
    };
    if stride < min {
        return Err(Error::Input(format!(
            "a row stride of {stride} bytes is less than one {width}-pixel {} row ({min} bytes)",
            format.name()
        )));
    }
    if format == FrameFormat::Yuv420p && stride % 2 == 1 && stride != min {
        return Err(Error::Input(format!(
            "a padded yuv420p row stride must be even (its chroma rows are half as long), not {stride}"
        )));
    }
    Ok(Some(stride))
}

/// Converts one or two pixels sharing a chroma sample.
#[inline]
fn yuv_pair(out: &mut [u8], luma: &[u8], u: u8, v: u8, yuv: &YuvToRgb) {
    let (r, g, b) = yuv.chroma_terms(u, v);
    for (o, &l) in out.chunks_exact_mut(3).zip(luma) {
        let yy = yuv.luma_term(l);
        o.copy_from_slice(&[clip16(yy + r), clip16(yy + g), clip16(yy + b)]);
    }
}

#[inline]
fn clip16(x: i32) -> u8 {
    (x >> 16).clamp(0, 255) as u8
}

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
                "the stream ended inside frame {}: {n} of its {} bytes arrived (is --frame-size or \
                 --frame-format wrong?)",
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

/// What a stream holds and how to read it.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    pub format: FrameFormat,
    /// Frame width and height: required for raw formats; for MJPEG, checked if given.
    pub size: Option<(usize, usize)>,
    /// Bytes per row of raw frames whose rows are padded (`None`: unpadded).
    pub stride: Option<usize>,
    pub matrix: YuvMatrix,
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
                "the JPEG is {}x{}, not the {w}x{h} --frame-size says",
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
    pub logits: &'a [f32],
    /// Time spent waiting for and reading the frame's bytes.
    pub read_ms: f64,
    /// Colour conversion, resize and normalisation (on the reader thread, overlapping the
    /// previous frame's inference).
    pub preprocess_ms: f64,
    pub inference_ms: f64,
}

/// Puts the calling thread at idle priority (Linux SCHED_IDLE; elsewhere the lowest the OS
/// allows). The frame reader then runs in the gaps between inference's parallel sections
/// rather than preempting a worker thread, which would stall the whole parallel section.
/// Best effort: if the OS refuses, the thread keeps its normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let _ = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            idle,
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
        return Err(Error::Input("--every must be at least 1".into()));
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
