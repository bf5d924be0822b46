//! f32 register tiles `acc[r][c] = sum_k a[r, k] * b[k, c]` for `rows` rows of `a` (each
//! broadcast) and 16 columns of a row-major `b`: the inner kernel of attention, where `b` is
//! the keys transposed (`q k^T`) or the values (`p v`), read in place with any row stride.
//! Every SIMD variant accumulates with FMA in k order, like its scalar twin, so all give
//! bit-identical results.

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// Columns per tile.
pub const NR: usize = 16;
/// The most rows any variant computes at once.
pub const MR_MAX: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileKernel {
    Scalar,
    /// x86_64 AVX2 + FMA: 6 rows x 16 columns in 12 ymm accumulators.
    Avx2,
    /// x86_64 AVX-512F: 8 rows x 16 columns in 8 zmm accumulators.
    Avx512,
    /// aarch64 NEON: 4 rows x 16 columns in 16 q accumulators.
    Neon,
}

impl TileKernel {
    pub fn name(self) -> &'static str {
        match self {
            TileKernel::Scalar => "f32_tile_4x16_scalar",
            TileKernel::Avx2 => "f32_tile_6x16_avx2",
            TileKernel::Avx512 => "f32_tile_8x16_avx512",
            TileKernel::Neon => "f32_tile_4x16_neon",
        }
    }

    /// Every variant this CPU can run, best last.
    pub fn available() -> Vec<TileKernel> {
        let mut v = vec![TileKernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(TileKernel::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(TileKernel::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            v.push(TileKernel::Neon);
        }
        v
    }

    /// The fastest variant this CPU can run (no allocation: attention asks on every call).
    pub fn best() -> TileKernel {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return TileKernel::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return TileKernel::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return TileKernel::Neon;
        }
        TileKernel::Scalar
    }

    /// Rows per call.
    pub fn mr(self) -> usize {
        match self {
            TileKernel::Avx512 => 8,
            TileKernel::Avx2 => 6,
            _ => 4,
        }
    }

    /// `acc[r * NR + c] = sum_{kk < k} a[r * lda + kk] * b[kk * ldb + c]` for `r < rows` (at
    /// most [`mr`](Self::mr)) and `c < cols` (at most 16; narrower tiles take the scalar path).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        self,
        a: &[f32],
        lda: usize,
        rows: usize,
        k: usize,
        b: &[f32],
        ldb: usize,
        cols: usize,
        acc: &mut [f32; MR_MAX * NR],
    ) {
        assert!(rows >= 1 && rows <= self.mr() && (1..=NR).contains(&cols), "tile: {rows} x {cols}");
        assert!(
            k == 0 || (a.len() >= (rows - 1) * lda + k && b.len() >= (k - 1) * ldb + cols),
            "tile: operands too short"
        );
        if k == 0 || cols < NR {
            return scalar(a, lda, rows, k, b, ldb, cols, acc);
        }
        match self {
            TileKernel::Scalar => scalar(a, lda, rows, k, b, ldb, cols, acc),
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 => x86::avx2(a, lda, rows, k, b, ldb, acc),
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx512 => x86::avx512(a, lda, rows, k, b, ldb, acc),
            #[cfg(target_arch = "aarch64")]
            TileKernel::Neon => arm::neon(a, lda, rows, k, b, ldb, acc),
            #[allow(unreachable_patterns)]
            other => panic!("{} cannot run on this CPU architecture", other.name()),
        }
    }
}

impl TileKernel {
    /// Whether [`run_wide`](Self::run_wide) has a kernel of its own (else it runs two tiles).
    pub fn has_wide(self) -> bool {
        cfg!(target_arch = "x86_64") && self == TileKernel::Avx512
    }

    /// [`run`](Self::run) for 32 columns at once (`b` holds 32 readable columns per row):
    /// `acc[r * 2 * NR + c]`. AVX-512 keeps all 32 columns in 16 zmm accumulators, 16 FMAs per
    /// 10 loads; the others run two 16-column tiles. Bit-identical either way.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wide(
        self,
        a: &[f32],
        lda: usize,
        rows: usize,
        k: usize,
        b: &[f32],
        ldb: usize,
        acc: &mut [f32; MR_MAX * 2 * NR],
    ) {
        assert!(rows >= 1 && rows <= self.mr(), "tile: {rows} rows");
        assert!(
            k == 0 || (a.len() >= (rows - 1) * lda + k && b.len() >= (k - 1) * ldb + 2 * NR),
            "tile: operands too short"
        );
        #[cfg(target_arch = "x86_64")]
        if self == TileKernel::Avx512 && k > 0 {
            return x86::avx512_wide(a, lda, rows, k, b, ldb, acc);
        }
        let mut half = [0f32; MR_MAX * NR];
        for j in 0..2 {
            self.run(a, lda, rows, k, &b[j * NR..], ldb, NR, &mut half);
            for r in 0..rows {
                acc[r * 2 * NR + j * NR..][..NR].copy_from_slice(&half[r * NR..(r + 1) * NR]);
            }
        }
    }
}

/// The scalar twin: the same fused multiply-adds in the same (k) order.
#[allow(clippy::too_many_arguments)]
fn scalar(
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    cols: usize,
    acc: &mut [f32; MR_MAX * NR],
) {
    for r in 0..rows {
        let mut s = [0f32; NR];
        for kk in 0..k {
            let x = a[r * lda + kk];
            let brow = &b[kk * ldb..kk * ldb + cols];
            for (s, &bv) in s.iter_mut().zip(brow) {
                *s = x.mul_add(bv, *s);
            }
        }
        acc[r * NR..r * NR + cols].copy_from_slice(&s[..cols]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::tests::noise;

    #[test]
    fn best_is_the_last_available() {
        assert_eq!(Some(&TileKernel::best()), TileKernel::available().last());
    }

    #[test]
    fn every_variant_matches_the_scalar_twin_bit_for_bit() {
        for &(rows_total, k, ldb_extra) in &[(1, 1, 0), (5, 7, 3), (8, 64, 0), (13, 197, 5), (3, 577, 16), (9, 33, 19)]
        {
            let lda = k + 2;
            let a = noise(k as u64, rows_total * lda);
            let ldb = NR + ldb_extra;
            let b = noise(k as u64 + 9, k * ldb);
            for kernel in TileKernel::available() {
                for rows in 1..=kernel.mr().min(rows_total) {
                    for cols in [1, 9, 16] {
                        let (mut got, mut want) = ([f32::NAN; MR_MAX * NR], [f32::NAN; MR_MAX * NR]);
                        kernel.run(&a, lda, rows, k, &b, ldb, cols, &mut got);
                        scalar(&a, lda, rows, k, &b, ldb, cols, &mut want);
                        if cols == NR && ldb >= 2 * NR {
                            // The 32-column tile: each half equals a 16-column scalar tile.
                            let mut wide = [f32::NAN; MR_MAX * 2 * NR];
                            kernel.run_wide(&a, lda, rows, k, &b, ldb, &mut wide);
                            let mut right = [f32::NAN; MR_MAX * NR];
                            scalar(&a, lda, rows, k, &b[NR..], ldb, NR, &mut right);
                            for r in 0..rows {
                                assert_eq!(
                                    wide[r * 2 * NR..r * 2 * NR + NR],
                                    want[r * NR..(r + 1) * NR],
                                    "{kernel:?} wide"
                                );
                                assert_eq!(
                                    wide[r * 2 * NR + NR..(r + 1) * 2 * NR],
                                    right[r * NR..(r + 1) * NR],
                                    "{kernel:?} wide"
                                );
                            }
                        }
                        for r in 0..rows {
                            let (g, w) = (&got[r * NR..r * NR + cols], &want[r * NR..r * NR + cols]);
                            assert_eq!(g, w, "{kernel:?} rows {rows} cols {cols} k {k}");
                            // And the scalar twin against f64.
                            for (c, &v) in w.iter().enumerate() {
                                let exact: f64 = (0..k).map(|kk| a[r * lda + kk] as f64 * b[kk * ldb + c] as f64).sum();
                                assert!((v as f64 - exact).abs() < 1e-4 * (1.0 + (k as f64).sqrt()), "{v} vs {exact}");
                            }
                        }
                    }
                }
            }
        }
    }
}
