//! Every bf16 variant against the scalar twin, bit for bit: edge cases of k, n and m, and
//! panels at any stride (as attention packs them); the twin against an f64 reference on the
//! same bf16 values, and `dot_pair` against hand-worked cases.

use super::*;
use crate::gemm::Epilogue;
use crate::rows::convert::to_bf16_scalar;
use crate::testing::{noise, runs_here};

/// bf16 rows of `m x k` noise at row stride `lda` (zero past k), and a `k x n` noise matrix
/// packed k2n16 with panels `panel_stride` apart; both as bf16, and as the f32 values they
/// stand for.
struct Operands {
    a: Vec<u16>,
    b: Vec<u16>,
    lda: usize,
    pairs: usize,
    panel_stride: usize,
}

fn operands(m: usize, n: usize, k: usize, lda: usize, panel_stride: usize) -> Operands {
    let pairs = k.div_ceil(2);
    assert!(lda >= 2 * pairs && panel_stride >= pairs * 2 * NR);
    let mut a = vec![0u16; m * lda];
    let x: Vec<f32> = noise(m as u64 * 7 + k as u64, m * k).iter().map(|v| v * 3.0).collect();
    for r in 0..m {
        to_bf16_scalar(&x[r * k..(r + 1) * k], &mut a[r * lda..r * lda + k]);
    }
    let panels = n.div_ceil(NR);
    let w = noise(n as u64 + 11, k * n);
    let mut b = vec![0u16; panels * panel_stride];
    for kk in 0..k {
        for c in 0..n {
            let mut v = [0u16];
            to_bf16_scalar(&w[kk * n + c..][..1], &mut v);
            b[k2n16_index(kk, c, panel_stride)] = v[0];
        }
    }
    Operands { a, b, lda, pairs, panel_stride }
}

/// `m x n` of `a * b` in groups of the kernel's width, into an `m x (n + 1)` buffer of NaN.
fn product(kernel: Bf16Kernel, ops: &Operands, m: usize, n: usize) -> Vec<f32> {
    let ldo = n + 1;
    let mut out = vec![f32::NAN; m * ldo];
    let nr = kernel.tile().1;
    for c0 in (0..n).step_by(nr) {
        let cols = nr.min(n - c0);
        // SAFETY: `out` holds m rows of n at stride ldo, used only here.
        let block = unsafe { OutBlock::new(out.as_mut_ptr().add(c0), ldo, m, cols, Epilogue::Store) };
        let b = &ops.b[(c0 / NR) * ops.panel_stride..];
        kernel.run_block(&ops.a, ops.lda, ops.pairs, b, ops.panel_stride, cols.div_ceil(NR), block);
    }
    out
}

fn check_shape(kernel: Bf16Kernel, m: usize, n: usize, k: usize, lda: usize, pad: usize) {
    let pairs = k.div_ceil(2);
    let ops = operands(m, n, k, lda.max(2 * pairs), pairs * 2 * NR + pad);
    let want = product(Bf16Kernel::Scalar, &ops, m, n);
    let got = product(kernel, &ops, m, n);
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{} {m}x{n}x{k}: [{i}] {} vs twin {}", kernel.name(), got[i], want[i]);
    }
}

macro_rules! variant_tests {
    ($($module:ident => $variant:ident),* $(,)?) => {
        const TESTED: &[Bf16Kernel] = &[$(Bf16Kernel::$variant),*];
        $(
            mod $module {
                use super::*;

                fn kernel() -> Option<Bf16Kernel> {
                    let k = Bf16Kernel::$variant;
                    assert_eq!(k.name(), stringify!($module));
                    runs_here(k.name(), k.supported()).then_some(k)
                }
                fn mr() -> usize {
                    Bf16Kernel::$variant.tile().0
                }

                #[test]
                fn k_small_and_large() {
                    let Some(kernel) = kernel() else { return };
                    for k in [0, 1, 2, 3, 7, 16, 64, 197, 768] {
                        check_shape(kernel, mr(), 32, k, 0, 0);
                    }
                }
                #[test]
                fn n_ragged() {
                    let Some(kernel) = kernel() else { return };
                    for n in [1, 9, 15, 16, 17, 31, 33, 48, 197] {
                        check_shape(kernel, mr(), n, 20, 0, 0);
                    }
                }
                #[test]
                fn m_ragged() {
                    let Some(kernel) = kernel() else { return };
                    for m in (1..mr()).chain([mr() + 1, 2 * mr() + 1, 32, 197]) {
                        check_shape(kernel, m, 40, 33, 0, 0);
                    }
                }
                #[test]
                fn strided_rows_and_panels() {
                    let Some(kernel) = kernel() else { return };
                    for (k, lda, pad) in [(64, 64, 0), (64, 80, 32), (197, 208, 64), (5, 6, 2)] {
                        check_shape(kernel, 2 * mr() - 1, 48, k, lda, pad);
                    }
                }
            }
        )*
    };
}

variant_tests! {
    bf16_gemm_4x16c2_scalar => Scalar,
    bf16_gemm_8x32c2_avx512bf16 => Avx512Bf16,
}

#[test]
fn every_variant_is_tested_and_named_by_its_tile() {
    assert_eq!(TESTED, Bf16Kernel::ALL);
    for k in Bf16Kernel::ALL {
        let (mr, nr) = k.tile();
        assert!(k.name().starts_with(&format!("bf16_gemm_{mr}x{nr}c2_")), "{} vs tile {mr}x{nr}", k.name());
    }
}

#[test]
fn the_scalar_twin_matches_an_f64_reference_on_the_same_bf16_values() {
    for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (9, 48, 100), (33, 40, 197)] {
        let ops = operands(m, n, k, 2 * k.div_ceil(2), k.div_ceil(2) * 2 * NR);
        let got = product(Bf16Kernel::Scalar, &ops, m, n);
        for r in 0..m {
            for c in 0..n {
                let want: f64 = (0..k)
                    .map(|kk| {
                        let w = ops.b[k2n16_index(kk, c, ops.panel_stride)];
                        bf16_to_f32(ops.a[r * ops.lda + kk]) as f64 * bf16_to_f32(w) as f64
                    })
                    .sum();
                let g = got[r * (n + 1) + c] as f64;
                assert!((g - want).abs() <= 1e-6 * (1.0 + want.abs()) * (k as f64).sqrt(), "{m}x{n}x{k} [{r},{c}]");
            }
            assert!(got[r * (n + 1) + n].is_nan(), "a column past n written");
        }
    }
}

#[test]
fn dot_pair_adds_the_odd_product_first_and_flushes_denormals() {
    let (one, two24, minus_two24) = (0x3f80, 0x4b80, 0xcb80);
    // 2^24 + 1 rounds to 2^24 (a tie, to even), then - 2^24 leaves 0; the even product first
    // would give 1.
    assert_eq!(dot_pair(bf16_to_f32(two24), [minus_two24, one], [one, one]), 0.0);
    assert_eq!(dot_pair(bf16_to_f32(two24), [one, minus_two24], [one, one]), 1.0);
    // 2^-65 * 2^-65 = 2^-130 is denormal in f32: flushed to zero.
    assert_eq!(dot_pair(0.0, [0, 0x1f00], [0, 0x1f00]).to_bits(), 0);
    // A denormal bf16 input reads as zero: 2^-127 * 2^100 would be 2^-27.
    assert_eq!(dot_pair(0.0, [0x0040, 0], [0x7180, 0]), 0.0);
    // Plain values: 1.5 * 2 + (-0.5) * 3 = 1.5.
    assert_eq!(dot_pair(0.0, [0x3fc0, 0xbf00], [0x4000, 0x4040]), 1.5);
}
