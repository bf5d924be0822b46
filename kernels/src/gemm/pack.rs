//! Weight layouts, written once by the tools and read in place by every microkernel of a
//! family on every CPU (one `.evit` file runs anywhere):
//!
//! - **k4n16** (int8): column panels of 16 output channels; within a panel, K in groups of 4;
//!   each group is 64 bytes, the 4 consecutive k values of each of the 16 channels. That is
//!   the operand shape of `sdot` (aarch64) and `vpdpbusd` (x86) alike. N is padded to a
//!   multiple of 16 and K to a multiple of 4, with zeros.
//! - **k1n16** (f16 and f32): column panels of 16 output channels; within a panel, for each k,
//!   the 16 channels' values. Each panel is a row-major `k x 16` matrix. N is padded to a
//!   multiple of 16 with zeros.

/// Output channels per packed panel.
pub const NR: usize = 16;
/// K values per int8 group.
pub const KG: usize = 4;

/// K padded to whole int8 groups: the row stride of quantized activations.
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(KG) * KG
}

/// Bytes of an `n x k` int8 matrix packed k4n16.
pub fn k4n16_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * NR * padded_k(k)
}

/// Elements of an `n x k` matrix packed k1n16.
pub fn k1n16_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * NR * k
}

/// Quantizes a row-major `[n, k]` f32 matrix symmetrically per row (output channel) with
/// [`quantize_row`], rows in parallel: the clip search is most of the work of writing an
/// int8 file (`edgevit-tools quantize` of ViT-Ti: 1.26 -> 0.67 s on 2 cores, the same bytes).
/// Returns the int8 values and one scale per row.
pub fn quantize_per_row(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    use rayon::prelude::*;
    assert_eq!(w.len(), n * k);
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    let rows = w.par_chunks_exact(k.max(1)).zip(q.par_chunks_exact_mut(k.max(1)));
    rows.zip(scales.par_iter_mut()).for_each(|((src, dst), s)| *s = quantize_row(src, dst));
    (q, scales)
}

/// Clip points tried by [`quantize_row`], as fractions of the row's largest magnitude.
const CLIP_STEPS: usize = 41;
const CLIP_MIN: f32 = 0.6;

/// Quantizes one weight row into `dst` (which may be longer: the rest is zeroed) and returns
/// its scale: `w ~= scale * q`, `q` in [-127, 127].
///
/// The scale is not simply `max|w| / 127`: a few large weights would then leave most of the
/// row on a handful of levels. It is `c / 127` for the clip point `c` in
/// [0.6, 1] x max|w| (41 steps) that minimises the row's squared error, weights beyond `c`
/// saturating. A row of zeros (or of magnitudes too small for a normal float scale) gets
/// scale 1 and `q = 0`.
pub fn quantize_row(src: &[f32], dst: &mut [i8]) -> f32 {
    assert!(dst.len() >= src.len(), "quantize_row: destination too short");
    dst[src.len()..].fill(0);
    let absmax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !absmax.is_finite() || absmax / 127.0 < f32::MIN_POSITIVE {
        dst[..src.len()].fill(0);
        return 1.0;
    }
    // The candidates in the order they are compared (the first of equal errors wins): max|w|,
    // then the clip points from the lowest up.
    let mut scales = [absmax / 127.0; CLIP_STEPS];
    for (i, s) in scales[1..].iter_mut().enumerate() {
        *s = absmax * (CLIP_MIN + (1.0 - CLIP_MIN) * i as f32 / (CLIP_STEPS - 1) as f32) / 127.0;
    }
    let invs = scales.map(|s| 1.0 / s);
    #[cfg(target_arch = "x86_64")]
    let errors = if crate::cpu::avx2_allowed() {
        // SAFETY: the CPU has AVX2 (checked on the line above).
        unsafe { candidate_errors_avx2(src, &scales, &invs) }
    } else {
        candidate_errors(src, &scales, &invs)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let errors = candidate_errors(src, &scales, &invs);
    let mut best = (errors[0], scales[0]);
    for (&e, &scale) in errors.iter().zip(&scales).skip(1) {
        if scale >= f32::MIN_POSITIVE && e < best.0 {
            best = (e, scale);
        }
    }
    let scale = best.1;
    let inv = 1.0 / scale;
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Every candidate scale's squared error over the row, in one pass. Each sum still adds the
/// row's terms in order, so it is the same f64 as a pass per candidate gives; but the 41 sums
/// are independent, where a pass per candidate waited on each addition, and the compiler
/// computes several candidates per instruction.
#[inline(always)]
fn candidate_errors(src: &[f32], scales: &[f32; CLIP_STEPS], invs: &[f32; CLIP_STEPS]) -> [f64; CLIP_STEPS] {
    let mut errors = [0f64; CLIP_STEPS];
    for &v in src {
        for ((e, &scale), &inv) in errors.iter_mut().zip(scales).zip(invs) {
            *e += (((v * inv).round().clamp(-127.0, 127.0) * scale - v) as f64).powi(2);
        }
    }
    errors
}

/// [`candidate_errors`] compiled for AVX2: x86-64's baseline has no rounding instruction, so
/// there every `round` is a call to libm.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn candidate_errors_avx2(src: &[f32], scales: &[f32; CLIP_STEPS], invs: &[f32; CLIP_STEPS]) -> [f64; CLIP_STEPS] {
    candidate_errors(src, scales, invs)
}

/// Packs a row-major `[n, k]` int8 matrix k4n16.
pub fn pack_k4n16(q: &[i8], n: usize, k: usize) -> Vec<i8> {
    assert_eq!(q.len(), n * k);
    let groups = padded_k(k) / KG;
    let mut out = vec![0i8; k4n16_len(n, k)];
    for col in 0..n {
        let (panel, c) = (col / NR, col % NR);
        for kk in 0..k {
            let (g, j) = (kk / KG, kk % KG);
            out[(panel * groups + g) * NR * KG + c * KG + j] = q[col * k + kk];
        }
    }
    out
}

/// Per-channel sums of the quantized weights: the epilogue's term for the activations'
/// per-row offset, and the correction for kernels that treat activations as unsigned
/// (`sum((a + 128) w) - 128 sum(w) = sum(a w)`, exactly).
pub fn channel_sums(q: &[i8], n: usize, k: usize) -> Vec<i32> {
    q.chunks_exact(k.max(1)).take(n).map(|row| row.iter().map(|&v| v as i32).sum()).collect()
}

/// [`channel_sums`] of an `n x k` matrix from its k4n16 packing: what the int8 kernels'
/// epilogue needs, recomputed where the stored sums must be checked.
pub fn k4n16_channel_sums(packed: &[i8], n: usize, k: usize) -> Vec<i32> {
    let panel_len = padded_k(k) * NR;
    let mut sums = vec![0i32; n.div_ceil(NR) * NR];
    for (p, panel) in packed.chunks_exact(panel_len).enumerate().take(n.div_ceil(NR)) {
        // 64 lanes, one per byte of a group (channel c owns lanes 4c..4c+4): vectorises.
        let mut lanes = [0i32; NR * KG];
        for group in panel.chunks_exact(NR * KG) {
            for (l, &v) in lanes.iter_mut().zip(group) {
                *l += v as i32;
            }
        }
        for (c, s) in sums[p * NR..(p + 1) * NR].iter_mut().enumerate() {
            *s = lanes[c * KG..(c + 1) * KG].iter().sum();
        }
    }
    sums.truncate(n);
    sums
}

/// Packs a row-major `[n, k]` f32 matrix k1n16 as halves (rounded to nearest even).
pub fn pack_k1n16_f16(w: &[f32], n: usize, k: usize) -> Vec<u16> {
    pack_k1n16(w, n, k, |v| half::f16::from_f32(v).to_bits())
}

/// Packs a row-major `[n, k]` f32 matrix k1n16.
pub fn pack_k1n16_f32(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    pack_k1n16(w, n, k, |v| v)
}

fn pack_k1n16<T: Copy + Default>(w: &[f32], n: usize, k: usize, convert: impl Fn(f32) -> T) -> Vec<T> {
    assert_eq!(w.len(), n * k, "pack_k1n16: {n} x {k} needs {} values", n * k);
    let mut out = vec![T::default(); k1n16_len(n, k)];
    for (row, wr) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        let (p, c) = (row / NR, row % NR);
        for (kk, &v) in wr.iter().enumerate() {
            out[(p * k + kk) * NR + c] = convert(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4n16_is_k4_groups_in_16_channel_panels() {
        // 17 channels x 5 k: two panels, two groups; w[n][k] = n * 8 + k.
        let q: Vec<i8> = (0..17).flat_map(|n| (0..5).map(move |k| (n * 8 + k) as i8)).collect();
        let p = pack_k4n16(&q, 17, 5);
        assert_eq!(p.len(), 2 * 16 * 8);
        assert_eq!(&p[0..8], &[0, 1, 2, 3, 8, 9, 10, 11]); // panel 0, group 0: channel 0 k0..3, channel 1 k0..3
        assert_eq!(&p[64..68], &[4, 0, 0, 0]); // panel 0, group 1: channel 0 k4 then zero padding
        assert_eq!(&p[128..132], &[(16 * 8) as i8, (16 * 8 + 1) as i8, (16 * 8 + 2) as i8, (16 * 8 + 3) as i8]);
        assert!(p[132..192].iter().all(|&v| v == 0)); // padded channels 17..32
    }

    #[test]
    fn sums_from_the_packing_equal_the_sums_of_the_rows() {
        for (n, k) in [(1, 1), (17, 5), (40, 768), (3, 3)] {
            let q = crate::testing::qnoise(n as u64 + k as u64, n * k);
            assert_eq!(k4n16_channel_sums(&pack_k4n16(&q, n, k), n, k), channel_sums(&q, n, k), "{n} x {k}");
        }
    }

    #[test]
    fn k1n16_halves_round_to_nearest_and_pad_with_zeros() {
        let w = [1.0f32, 0.1, -2.5, 65504.0, 1e-8, 3.0];
        let packed = pack_k1n16_f16(&w, 2, 3);
        assert_eq!(packed.len(), 16 * 3);
        let get = |row: usize, kk: usize| half::f16::from_bits(packed[kk * NR + row]).to_f32();
        assert_eq!(get(0, 0), 1.0);
        assert_eq!(get(0, 1), half::f16::from_f32(0.1).to_f32());
        assert_eq!(get(1, 0), 65504.0);
        assert_eq!(get(1, 1), 0.0); // 1e-8 is below the smallest subnormal half
        assert!(packed[2..16].iter().all(|&h| h == 0), "channels 2..16 of the panel are padding");
        let f = pack_k1n16_f32(&w, 2, 3);
        assert_eq!((f[0], f[1], f[NR], f[2 * NR + 1]), (1.0, 65504.0, 0.1, 3.0));
    }

    #[test]
    fn weight_rows_quantize_symmetrically_and_pad() {
        // Levels at 1/127 fit these values exactly: no clip point does better than the max.
        let mut dst = [9i8; 6];
        let s = quantize_row(&[0.5, -1.0, 0.25, 0.0], &mut dst);
        assert_eq!(s, 1.0 / 127.0);
        assert_eq!(dst, [64, -127, 32, 0, 0, 0]);
        let mut z = [1i8; 2];
        assert_eq!(quantize_row(&[0.0, 0.0], &mut z), 1.0);
        assert_eq!(z, [0, 0]);
        // Denormal magnitudes: no normal scale exists, so the row is zero.
        let mut d = [1i8; 3];
        assert_eq!(quantize_row(&[1e-44, -1e-44, 0.0], &mut d), 1.0);
        assert_eq!(d, [0, 0, 0]);
    }

    #[test]
    fn an_outlier_is_clipped_when_that_lowers_the_error() {
        // 1000 small weights and one 30x larger: clipping the outlier gives the rest finer
        // levels. The chosen scale must beat max/127 in squared error, and no tried point
        // beats it.
        let mut w: Vec<f32> = crate::testing::noise(3, 1000).iter().map(|v| v * 0.1).collect();
        w[17] = 3.0;
        let mut q = vec![0i8; 1000];
        let s = quantize_row(&w, &mut q);
        let err = |s: f32| -> f64 {
            w.iter().map(|&v| (((v / s).round().clamp(-127.0, 127.0) * s - v) as f64).powi(2)).sum()
        };
        let max_scale = 3.0 / 127.0;
        assert!(s < max_scale && err(s) < err(max_scale), "scale {s}");
        for i in 0..CLIP_STEPS {
            let c = 3.0 * (CLIP_MIN + (1.0 - CLIP_MIN) * i as f32 / (CLIP_STEPS - 1) as f32);
            assert!(err(s) <= err(c / 127.0) * (1.0 + 1e-9), "clip {c} is better");
        }
        assert!(w.iter().zip(&q).all(|(&v, &q)| (q as f32 * s - v).abs() <= s * 0.5 + 1e-6 || q.abs() == 127));
    }

    #[test]
    fn rows_quantize_as_a_pass_per_candidate_would() {
        // The definition, one pass over the row per candidate scale, in comparison order.
        fn by_candidate(src: &[f32]) -> (f32, Vec<i8>) {
            let absmax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let error = |scale: f32| -> f64 {
                src.iter()
                    .map(|&v| (((v * (1.0 / scale)).round().clamp(-127.0, 127.0) * scale - v) as f64).powi(2))
                    .sum()
            };
            let mut best = (error(absmax / 127.0), absmax / 127.0);
            for i in 0..CLIP_STEPS - 1 {
                let scale = absmax * (CLIP_MIN + (1.0 - CLIP_MIN) * i as f32 / (CLIP_STEPS - 1) as f32) / 127.0;
                if scale >= f32::MIN_POSITIVE && error(scale) < best.0 {
                    best = (error(scale), scale);
                }
            }
            let q = src.iter().map(|&v| (v * (1.0 / best.1)).round().clamp(-127.0, 127.0) as i8).collect();
            (best.1, q)
        }
        for (seed, k, outliers) in [(1u64, 768, 0), (2, 192, 3), (3, 3072, 10), (4, 5, 1), (5, 64, 64)] {
            let mut w: Vec<f32> = crate::testing::noise(seed, k).iter().map(|v| v * 0.05).collect();
            for j in 0..outliers {
                w[(j * 37) % k] *= 30.0;
            }
            let mut q = vec![0i8; k];
            let s = quantize_row(&w, &mut q);
            assert_eq!((s, q), by_candidate(&w), "seed {seed}");
        }
    }
}
