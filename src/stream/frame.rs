//! Raw frames in memory: their formats and sizes (row strides included), and each row as RGB
//! for the resize (YUV through the kernels' fixed-point conversion).

use std::str::FromStr;

use edgevit_kernels::yuv::{yuv420_rgb_row, Chroma, YuvCoeffs};

use crate::config::Preprocess;
use crate::error::{Error, Result};
use crate::preprocess::preprocess_rows;
use crate::{top_k, Model, Prediction};

/// How the frames of a stream are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFormat {
    /// Planar YUV 4:2:0 (I420): Y, then U and V at half width and height (rounded up).
    Yuv420p,
    /// Y plane, then one plane of interleaved U, V at half width and height (rounded up).
    Nv12,
    /// R, G, B bytes per pixel.
    Rgb24,
    /// B, G, R bytes per pixel.
    Bgr24,
    /// RGB plus an alpha (or padding) byte, which is ignored: picamera2's XBGR8888.
    Rgba,
    /// BGR plus an alpha (or padding) byte, which is ignored: picamera2's XRGB8888.
    Bgra,
    /// One grey byte per pixel.
    Gray8,
    /// Concatenated JPEG images, each a complete file.
    Mjpeg,
}

impl FrameFormat {
    /// The words `name` gives, for messages.
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
    /// Y in 16..=235, U and V in 16..=240 ("TV").
    #[default]
    Limited,
    /// All of 0..=255 ("PC", JPEG).
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

/// YUV to RGB in 16.16 fixed point (the kernel's [`YuvCoeffs`]; docs/streaming.md).
#[derive(Clone, Copy, Debug)]
pub struct YuvToRgb(YuvCoeffs);

impl YuvToRgb {
    /// The converter for this matrix and range.
    pub fn new(matrix: YuvMatrix, range: YuvRange) -> Self {
        let (kr, kb) = match matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
        };
        YuvToRgb(YuvCoeffs::new(kr, kb, range == YuvRange::Limited))
    }

    /// One pixel's R, G, B.
    #[inline]
    pub fn convert(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        self.0.convert(y, u, v)
    }
}

/// One raw frame in memory.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame<'a> {
    /// How the bytes are laid out.
    pub format: FrameFormat,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bytes per row of the first (or only) plane, padding included (see
    /// [`FrameFormat::frame_len_strided`] for the chroma rows).
    pub stride: usize,
    /// The frame's bytes, exactly one frame.
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
                let chroma = if self.format == FrameFormat::Yuv420p {
                    let plane = cs * h.div_ceil(2);
                    Chroma::Planar { u: &chroma[cy * cs..][..cw], v: &chroma[plane + cy * cs..][..cw] }
                } else {
                    Chroma::Interleaved(&chroma[cy * cs..][..cw * 2])
                };
                yuv420_rgb_row(luma, chroma, &yuv.0, out);
            }
            FrameFormat::Mjpeg => unreachable!("RawFrame::new refuses MJPEG"),
        }
    }

    /// The model's input tensor for this frame, converted and resized in one pass.
    pub fn preprocess_into(&self, p: &Preprocess, yuv: &YuvToRgb, out: &mut Vec<f32>) {
        preprocess_rows(self.width, self.height, |y, row| self.rgb_row(y, row, yuv), p, out);
    }

    /// Classifies this frame with `model`: converted and resized in one pass, a forward pass
    /// in a scratch session, the `k` most probable classes. To classify many frames, reuse a
    /// [`crate::Session`] with [`RawFrame::preprocess_into`] and [`Model::forward`].
    pub fn classify(&self, model: &Model, yuv: &YuvToRgb, k: usize) -> Result<Vec<Prediction>> {
        let mut pixels = Vec::new();
        self.preprocess_into(&model.config().preprocess, yuv, &mut pixels);
        let mut session = model.session();
        Ok(top_k(model.forward(&pixels, &mut session)?, k, model.labels()))
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
