//! Every f16 variant against its scalar twin, bit for bit, on edge cases of k (around the
//! half-precision chain length), n and m, every epilogue and thread counts; the twins against
//! an f64 reference; the half-precision rounding against exact arithmetic.

use super::*;
use crate::gemm::pack::pack_k1n16_f16;
use crate::rows::activation::Activation;
use crate::testing::{noise, runs_here};

struct Case {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    packed: Vec<u16>,
    bias: Vec<f32>,
    start: Vec<f32>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Case {
        let a = noise(m as u64 * 31 + k as u64, m * k).iter().map(|v| v * 2.0).collect();
        let w: Vec<f32> = noise(n as u64 * 7 + 1, n * k).iter().map(|v| v * 0.1).collect();
        Case { m, n, k, a, packed: pack_k1n16_f16(&w, n, k), bias: noise(5, n), start: noise(9, m * (n + 3)) }
    }

    fn weights(&self) -> PackedF16<'_> {
        PackedF16 { data: &self.packed, n: self.n, k: self.k }
    }

    fn run(&self, kernel: F16Kernel, epilogue: Epilogue, bias: bool, threads: usize) -> Vec<f32> {
        let mut out = self.start.clone();
        let bias = bias.then_some(&self.bias[..]);
        let (m, n, k) = (self.m, self.n, self.k);
        f16_gemm(kernel, &self.a, k, m, self.weights(), bias, &mut out, n + 3, epilogue, Threads(threads));
        out
    }

    /// Per output: the f64 value (bias included) and `sum |a w|`, the scale of half-precision
    /// rounding errors.
    fn reference(&self, r: usize, c: usize) -> (f64, f64) {
        let w = self.weights();
        let terms = (0..self.k).map(|kk| self.a[r * self.k + kk] as f64 * w.get(c, kk) as f64);
        let (s, mag) = terms.fold((0.0, 0.0), |(s, mag), t| (s + t, mag + t.abs()));
        (s + self.bias[c] as f64, mag)
    }
}

fn check(kernel: F16Kernel, m: usize, n: usize, k: usize, epilogue: Epilogue, threads: usize) {
    let case = Case::new(m, n, k);
    for bias in [true, false] {
        let want = case.run(kernel.twin(), epilogue, bias, 1);
        let got = case.run(kernel, epilogue, bias, threads);
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!("{} {m}x{n}x{k} {epilogue:?} bias {bias}: [{i}] {} vs twin {}", kernel.name(), got[i], want[i]);
        }
    }
}

macro_rules! variant_tests {
    ($($module:ident => $variant:ident),* $(,)?) => {
        const TESTED: &[F16Kernel] = &[$(F16Kernel::$variant),*];
        $(
            mod $module {
                use super::*;

                fn kernel() -> Option<F16Kernel> {
                    let k = F16Kernel::$variant;
                    assert_eq!(k.name(), stringify!($module));
                    runs_here(k.name(), k.supported()).then_some(k)
                }
                fn mr() -> usize {
                    F16Kernel::$variant.tile().0
                }

                #[test]
                fn k_around_the_chain() {
                    let Some(kernel) = kernel() else { return };
                    for k in [1, 7, 8, 9, FP16_BLOCK - 1, FP16_BLOCK, FP16_BLOCK + 1, 2 * FP16_BLOCK + 7, 100, 768] {
                        check(kernel, mr(), 32, k, Epilogue::Store, 1);
                    }
                }
                /// Long rows (ViT-B's 3072) and tall strips: the A72 kernel widens the panel in
                /// blocks of 256 k-rows and passes over them 64 rows at a time; the x86 kernels
                /// widen whole panels of up to 256 (AVX2) or 768 (AVX-512) k-rows, longer ones a
                /// k-row at a time.
                #[test]
                fn long_k_and_tall_strips() {
                    let Some(kernel) = kernel() else { return };
                    for (m, k) in [(197, 255), (197, 256), (70, 257), (65, 515), (33, 768), (17, 769), (9, 1024), (130, 3072)] {
                        check(kernel, m, 20, k, Epilogue::Store, 1);
                    }
                    check(kernel, 67, 33, 600, Epilogue::Activate(Activation::Gelu), 1);
                    check(kernel, 67, 33, 600, Epilogue::Accumulate, 2);
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
                        check(kernel, 9, 50, 64, e, 1);
                    }
                }
                #[test]
                fn threads() {
                    let Some(kernel) = kernel() else { return };
                    // Split by rows (36 KB of weights), then by column groups (307 KB).
                    check(kernel, 197, 192, 96, Epilogue::Accumulate, 2);
                    check(kernel, 64, 512, 300, Epilogue::Accumulate, 2);
                    check(kernel, 11, 80, 33, Epilogue::Store, 3);
                }
                #[test]
                fn overflowing_tiles_are_computed_in_f32() {
                    let Some(kernel) = kernel() else { return };
                    overflow(kernel);
                }
            }
        )*
    };
}

variant_tests! {
    f16_gemm_4x16_scalar => Scalar,
    f16_gemm_4x16_fp16_scalar => Fp16Scalar,
    f16_gemm_6x16_avx2_f16c => Avx2F16c,
    f16_gemm_8x32_avx512 => Avx512,
    f16_gemm_4x16_neon_fcvtl => Neon,
    f16_gemm_4x16_neon_fp16 => NeonFp16,
}

#[test]
fn every_variant_is_tested_and_named_by_its_tile() {
    assert_eq!(TESTED, F16Kernel::ALL);
    for k in F16Kernel::ALL {
        let (mr, nr) = k.tile();
        assert!(k.name().starts_with(&format!("f16_gemm_{mr}x{nr}_")), "{} vs tile {mr}x{nr}", k.name());
    }
}

#[test]
fn the_twins_match_an_f64_reference() {
    for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (7, 33, 64), (13, 15, 768), (197, 40, 96), (2, 1000, 9)] {
        let case = Case::new(m, n, k);
        for kernel in [F16Kernel::Scalar, F16Kernel::Fp16Scalar] {
            let got = case.run(kernel, Epilogue::Store, true, 1);
            for r in 0..m {
                for c in 0..n {
                    let (want, mag) = case.reference(r, c);
                    // Half precision: activations rounded (2^-11 relative) and chains of up to
                    // FP16_BLOCK roundings, each at most 2^-11 of the terms so far.
                    let tol = if kernel.half_arithmetic() {
                        (FP16_BLOCK + 4) as f64 * mag / 2048.0 + 1e-5
                    } else {
                        1e-5 * (1.0 + want.abs()) * (k as f64).sqrt()
                    };
                    let g = got[r * (n + 3) + c] as f64;
                    assert!((g - want).abs() <= tol, "{kernel:?} {m}x{n}x{k} [{r},{c}]: {g} vs {want}");
                }
            }
        }
    }
}

/// Activations of 3e4 times weights near 4: products and sums far beyond half's 65504; the
/// result must still be right.
fn overflow(kernel: F16Kernel) {
    let (m, n, k) = (6, 40, 50);
    let mut case = Case::new(m, n, k);
    case.a[2 * k + 7] = 3e4;
    case.a[5 * k] = -7e4; // not even representable in half
    let w: Vec<f32> = noise(22, n * k).iter().map(|v| v * 4.0).collect();
    case.packed = pack_k1n16_f16(&w, n, k);
    let got = case.run(kernel, Epilogue::Store, true, 1);
    for r in 0..m {
        for c in 0..n {
            let (want, _) = case.reference(r, c);
            let g = got[r * (n + 3) + c] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                "{kernel:?} [{r},{c}]: {g} vs {want}"
            );
        }
    }
}

#[test]
fn the_half_precision_multiply_add_rounds_once() {
    use super::f16_gemm_4x16_fp16_scalar::fma_half;
    // Against the nearest half to the exact value (exact in f64 for half inputs), found by
    // comparing neighbours; ties to the even one. (half's `from_f64` rounds through f32 and so
    // rounds twice: 0.2578125 * 40448 - 0.000408 gives 10432, not 10424.)
    let nearest = |exact: f64| {
        let guess = half::f16::from_f64(exact).to_bits();
        let candidates = [guess.wrapping_sub(1), guess, guess.wrapping_add(1)].map(half::f16::from_bits);
        let dist = |c: half::f16| (c.to_f64() - exact).abs();
        candidates
            .into_iter()
            .filter(|c| c.is_finite())
            .min_by(|a, b| dist(*a).total_cmp(&dist(*b)).then((a.to_bits() & 1).cmp(&(b.to_bits() & 1))))
            .unwrap()
    };
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_half = || loop {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let h = half::f16::from_bits((s >> 20) as u16);
        if h.is_finite() {
            return h;
        }
    };
    for _ in 0..2_000_000 {
        let (x, w, h) = (next_half(), next_half(), next_half());
        let exact = x.to_f64() * w.to_f64() + h.to_f64();
        let got = fma_half(x.to_f32(), w.to_f32(), h.to_f32());
        if exact.abs() < 65520.0 {
            assert_eq!(got.to_bits(), nearest(exact).to_f32().to_bits(), "{x} * {w} + {h}");
        } else {
            assert!(got.is_infinite(), "{x} * {w} + {h} overflows half");
        }
    }
}

/// Activations rounded to half once (`f16_gemm_halves`) give the same bits as the kernels
/// rounding them per panel, for every half-precision kernel this CPU runs, at ragged shapes
/// and with threads; a value beyond half's range is reported, not rounded to infinity.
#[test]
fn rounding_activations_once_changes_no_bit() {
    for kernel in F16Kernel::ALL.iter().copied().filter(|k| k.half_arithmetic() && k.supported()) {
        for (m, n, k, threads) in [(1, 16, 1, 1), (5, 33, 17, 1), (9, 70, 40, 2), (197, 192, 96, 4)] {
            let case = Case::new(m, n, k);
            let mut halves = vec![0u16; m * k];
            for (src, dst) in case.a.chunks_exact(k).zip(halves.chunks_exact_mut(k)) {
                assert!(round_row_to_halves(src, dst));
            }
            for epilogue in [Epilogue::Store, Epilogue::Accumulate, Epilogue::Activate(Activation::Gelu)] {
                let want = case.run(kernel, epilogue, true, 1);
                let mut got = case.start.clone();
                let w = case.weights();
                f16_gemm_halves(kernel, &halves, m, w, Some(&case.bias), &mut got, n + 3, epilogue, Threads(threads));
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} {m}x{n}x{k} {epilogue:?} threads {threads}", kernel.name());
            }
        }
    }
    let mut dst = [0u16; 3];
    assert!(!round_row_to_halves(&[1.0, 70000.0, 2.0], &mut dst));
    assert!(round_row_to_halves(&[1.0, 65504.0, -2.0], &mut dst));
}
