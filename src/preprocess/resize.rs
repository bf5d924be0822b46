//! PIL's resampling (`Image.resize`), bit for bit: the same filters, the same fixed-point
//! coefficients and rounding, horizontal pass first.

use edgevit_kernels::resample::{resample_rgb_row, resample_rgb_row_pair, resample_rows, Taps, PRECISION_BITS, SLACK};

use super::RgbImage;
use crate::config::Filter;

/// Resizes as PIL's `Image.resize(size, filter)` does for an RGB image, bit for bit.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    if (img.width, img.height) == (width, height) {
        return img.clone();
    }
    resize_rows(img.width, img.height, |y, row| row.copy_from_slice(img.row(y)), width, height, filter)
}

/// [`resize`] from a row source (see [`super::preprocess_rows`]); fetches each needed row once, in
/// increasing order.
pub fn resize_rows(
    src_width: usize,
    src_height: usize,
    mut fetch: impl FnMut(usize, &mut [u8]),
    width: usize,
    height: usize,
    filter: Filter,
) -> RgbImage {
    // With the bytes past the last pixel that the SIMD resampling reads and ignores.
    let mut line = vec![0u8; src_width * 3 + SLACK];
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
    let horiz = Coeffs::new(src_width, width, filter).taps(src_width);
    let vert = Coeffs::new(src_height, height, filter);
    // PIL resamples horizontally first, only the rows the vertical pass will read.
    let first_row = vert.bounds[0].0;
    let last_row = vert.bounds[height - 1].0 + vert.bounds[height - 1].1;
    let mut tmp = vec![0u8; (last_row - first_row) * width * 3];
    if width == src_width {
        for (y, out_row) in tmp.chunks_exact_mut(width * 3).enumerate() {
            fetch(y + first_row, out_row);
        }
    } else {
        // Two rows at a time, which the x86 kernel resamples together.
        let mut next = line.clone();
        let mut pairs = tmp.chunks_exact_mut(2 * width * 3);
        for (i, rows) in (&mut pairs).enumerate() {
            fetch(first_row + 2 * i, &mut line[..src_width * 3]);
            fetch(first_row + 2 * i + 1, &mut next[..src_width * 3]);
            let (a, b) = rows.split_at_mut(width * 3);
            resample_rgb_row_pair([&line, &next], &horiz, [a, b]);
        }
        let rest = pairs.into_remainder();
        if !rest.is_empty() {
            fetch(last_row - 1, &mut line[..src_width * 3]);
            resample_rgb_row(&line, &horiz, rest);
        }
    }
    if height == src_height {
        return RgbImage { width, height, data: tmp };
    }
    let mut data = vec![0u8; height * width * 3];
    for (y, out_row) in data.chunks_exact_mut(width * 3).enumerate() {
        let (ymin, n) = vert.bounds[y];
        resample_rows(&tmp[(ymin - first_row) * width * 3..], width * 3, &vert.row(y)[..n], out_row);
    }
    RgbImage { width, height, data }
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

    /// The horizontal pass's taps for rows of `in_size` pixels.
    fn taps(self, in_size: usize) -> Taps {
        Taps::new(self.taps, self.ksize, self.bounds, in_size)
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
    use crate::preprocess::tests::gradient;

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
}
