//! Every f32 variant against the scalar twin, bit for bit: edge cases of k, n and m, every
//! epilogue, thread counts, and `b` read in place at any stride (as attention does); the twin
//! against an f64 reference.

use super::*;
use crate::gemm::pack::pack_k1n16_f32;
use crate::gemm::Columns;
use crate::rows::activation::Activation;
use crate::testing::{noise, runs_here};

fn gemm(kernel: F32Kernel, m: usize, n: usize, k: usize, epilogue: Epilogue, bias: bool, threads: usize) -> Vec<f32> {
    let a = noise(m as u64 * 3 + k as u64, m * k).iter().map(|v| v * 2.0).collect::<Vec<_>>();
    let w = noise(n as u64 + 4, n * k);
    let packed = pack_k1n16_f32(&w, n, k);
    let b = noise(6, n);
    let mut out = noise(7, m * (n + 3));
    let bias = bias.then_some(&b[..]);
    f32_gemm(kernel, &a, k, m, PackedF32 { data: &packed, n, k }, bias, &mut out, n + 3, epilogue, Threads(threads));
    out
}

fn check(kernel: F32Kernel, m: usize, n: usize, k: usize, epilogue: Epilogue, threads: usize) {
    for bias in [true, false] {
        let want = gemm(F32Kernel::Scalar, m, n, k, epilogue, bias, 1);
        let got = gemm(kernel, m, n, k, epilogue, bias, threads);
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!("{} {m}x{n}x{k} {epilogue:?} bias {bias}: [{i}] {} vs twin {}", kernel.name(), got[i], want[i]);
        }
    }
}

/// One block read in place from a strided `b` (row stride `ldb`, groups `panel_stride` apart).
fn strided(kernel: F32Kernel, rows: usize, k: usize, ldb: usize, panel_stride: usize, panels: usize) -> Vec<f32> {
    let lda = k + 3;
    let a = noise(k as u64, rows * lda);
    let b = noise(k as u64 + 9, (panels - 1) * panel_stride + k.max(1) * ldb + 16);
    let cols = panels * NR;
    let mut out = vec![f32::NAN; rows * (cols + 1)];
    // SAFETY: `out` holds `rows` rows of `cols` at stride cols + 1, used only here.
    let block = unsafe { OutBlock::new(out.as_mut_ptr(), cols + 1, rows, cols, Epilogue::Store) };
    kernel.run_block(&a, lda, k, &b, ldb, panel_stride, panels, &Columns::PLAIN, block);
    out
}

macro_rules! variant_tests {
    ($($module:ident => $variant:ident),* $(,)?) => {
        const TESTED: &[F32Kernel] = &[$(F32Kernel::$variant),*];
        $(
            mod $module {
                use super::*;

                fn kernel() -> Option<F32Kernel> {
                    let k = F32Kernel::$variant;
                    assert_eq!(k.name(), stringify!($module));
                    runs_here(k.name(), k.supported()).then_some(k)
                }
                fn mr() -> usize {
                    F32Kernel::$variant.tile().0
                }

                #[test]
                fn k_small_and_large() {
                    let Some(kernel) = kernel() else { return };
                    for k in [0, 1, 2, 3, 7, 16, 64, 197, 768] {
                        check(kernel, mr(), 32, k, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn n_lt_nr() {
                    let Some(kernel) = kernel() else { return };
                    for n in [1, 9, 15] {
                        check(kernel, mr(), n, 20, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn n_gt_nr() {
                    let Some(kernel) = kernel() else { return };
                    for n in [17, 31, 32, 33, 48, 80, 1000] {
                        check(kernel, mr(), n, 20, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn m_eq_1() {
                    let Some(kernel) = kernel() else { return };
                    check(kernel, 1, 40, 33, Epilogue::Store, 1);
                }
                #[test]
                fn m_lt_mr_and_gt_mr() {
                    let Some(kernel) = kernel() else { return };
                    for m in (1..mr()).chain([mr() + 1, 2 * mr() + 1, 197]) {
                        check(kernel, m, 40, 33, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn epilogues() {
                    let Some(kernel) = kernel() else { return };
                    for e in [
                        Epilogue::Accumulate,
                        Epilogue::Activate(Activation::Gelu),
                        Epilogue::Activate(Activation::Relu),
                        Epilogue::Activate(Activation::Silu),
                    ] {
                        // Row tiles of every height up to 4 (9 = 4 + 4 + 1, 7 = 4 + 3, 6 = 4 + 2).
                        for m in [9, 7, 6] {
                            check(kernel, m, 50, 64, e, 1);
                        }
                    }
                }
                #[test]
                fn threads() {
                    let Some(kernel) = kernel() else { return };
                    // Split by column groups (590 KB of weights) cut into row parts (runs
                    // of groups alone would not go evenly to 2 or 4 threads), then by rows
                    // (64 KB).
                    check(kernel, 197, 192, 768, Epilogue::Accumulate, 2);
                    check(kernel, 197, 192, 768, Epilogue::Accumulate, 4);
                    check(kernel, 197, 64, 256, Epilogue::Accumulate, 3);
                    check(kernel, 11, 80, 33, Epilogue::Store, 3);
                }
                #[test]
                fn strided_b() {
                    let Some(kernel) = kernel() else { return };
                    let max_panels = kernel.tile().1 / NR;
                    for (k, ldb, ps) in [(1, 16, 16), (5, 19, 16), (64, 208, 16), (197, 576, 16), (33, 40, 80)] {
                        for rows in 1..=mr() {
                            for panels in 1..=max_panels {
                                let got = strided(kernel, rows, k, ldb, ps, panels);
                                let want = strided(F32Kernel::Scalar, rows, k, ldb, ps, panels);
                                assert!(
                                    got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()),
                                    "{} k {k} ldb {ldb} rows {rows} panels {panels}",
                                    kernel.name()
                                );
                            }
                        }
                    }
                }
            }
        )*
    };
}

variant_tests! {
    f32_gemm_4x16_scalar => Scalar,
    f32_gemm_6x16_avx2 => Avx2,
    f32_gemm_8x32_avx512 => Avx512,
    f32_gemm_4x16_neon => Neon,
}

#[test]
fn every_variant_is_tested_and_named_by_its_tile() {
    assert_eq!(TESTED, F32Kernel::ALL);
    for k in F32Kernel::ALL {
        let (mr, nr) = k.tile();
        assert!(k.name().starts_with(&format!("f32_gemm_{mr}x{nr}_")), "{} vs tile {mr}x{nr}", k.name());
    }
}

#[test]
fn the_scalar_twin_matches_an_f64_reference() {
    for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (9, 48, 100), (197, 40, 96), (2, 1000, 9)] {
        let a: Vec<f32> = noise(m as u64 * 3 + k as u64, m * k).iter().map(|v| v * 2.0).collect();
        let w = noise(n as u64 + 4, n * k);
        let b = noise(6, n);
        let start = noise(7, m * (n + 3));
        let got = gemm(F32Kernel::Scalar, m, n, k, Epilogue::Store, true, 1);
        for r in 0..m {
            for c in 0..n + 3 {
                let g = got[r * (n + 3) + c] as f64;
                if c >= n {
                    assert_eq!(g, start[r * (n + 3) + c] as f64, "padding column touched");
                    continue;
                }
                let want: f64 = (0..k).map(|kk| a[r * k + kk] as f64 * w[c * k + kk] as f64).sum::<f64>() + b[c] as f64;
                assert!((g - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(), "{m}x{n}x{k} [{r},{c}]");
            }
        }
    }
}
