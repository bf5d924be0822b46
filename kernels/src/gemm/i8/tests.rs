//! Every int8 variant against the scalar twin, bit for bit, on the edge cases XNNPACK names
//! (k below, at and above the group, ragged n, m = 1 and partial tiles), every epilogue and
//! thread counts; the twin against an f64 reference.

use super::*;
use crate::gemm::pack::{channel_sums, pack_k4n16};
use crate::rows::activation::Activation;
use crate::testing::{noise, qnoise, runs_here};

/// One GEMM problem with random operands; `run` gives a kernel's whole output buffer.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    q: Vec<i8>,
    packed: Vec<i8>,
    sums: Vec<i32>,
    w_scales: Vec<f32>,
    a: Vec<i8>,
    a_scales: Vec<f32>,
    a_offsets: Vec<f32>,
    bias: Vec<f32>,
    start: Vec<f32>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Case {
        let q = qnoise(n as u64 * 7 + k as u64, n * k);
        let a = qnoise(m as u64 * 13 + 5, m * k);
        let ldo = n + 3;
        Case {
            m,
            n,
            k,
            packed: pack_k4n16(&q, n, k),
            sums: channel_sums(&q, n, k),
            q,
            w_scales: (0..n).map(|i| 0.01 + i as f32 * 1e-4).collect(),
            a,
            a_scales: (0..m).map(|i| 0.02 + i as f32 * 3e-4).collect(),
            a_offsets: (0..m).map(|i| (i as f32 * 0.9).cos() * 0.3).collect(),
            bias: noise(n as u64, n),
            start: noise(m as u64 + 99, m * ldo),
        }
    }

    fn run(&self, kernel: I8Kernel, epilogue: Epilogue, bias: bool, threads: usize) -> Vec<f32> {
        let (m, n, k) = (self.m, self.n, self.k);
        let kp = padded_k(k);
        let mut data = vec![0i8; m * kp];
        for r in 0..m {
            data[r * kp..r * kp + k].copy_from_slice(&self.a[r * k..(r + 1) * k]);
        }
        if kernel.wants_biased() {
            data.iter_mut().for_each(|v| *v ^= -128);
        }
        let a = QuantRows {
            data: &data,
            rows: m,
            stride: kp,
            scales: &self.a_scales,
            offsets: &self.a_offsets,
            biased: kernel.wants_biased(),
        };
        let w = PackedI8 { data: &self.packed, n, k, scales: &self.w_scales, sums: &self.sums };
        let mut out = self.start.clone();
        let bias = bias.then_some(&self.bias[..]);
        i8_gemm(kernel, a, w, bias, &mut out, n + 3, epilogue, Threads(threads));
        out
    }

    /// The f64 value of output (r, c) before the epilogue.
    fn reference(&self, r: usize, c: usize) -> f64 {
        let dot: f64 = (0..self.k)
            .map(|kk| {
                let x = self.a[r * self.k + kk] as f64 * self.a_scales[r] as f64 + self.a_offsets[r] as f64;
                x * self.q[c * self.k + kk] as f64 * self.w_scales[c] as f64
            })
            .sum();
        dot + self.bias[c] as f64
    }
}

/// `kernel` and the scalar twin agree bit for bit on an `m x n x k` problem (padding columns
/// untouched included).
fn check(kernel: I8Kernel, m: usize, n: usize, k: usize, epilogue: Epilogue, threads: usize) {
    let case = Case::new(m, n, k);
    for bias in [true, false] {
        let want = case.run(I8Kernel::Scalar, epilogue, bias, 1);
        let got = case.run(kernel, epilogue, bias, threads);
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!(
                "{} {m}x{n}x{k} {epilogue:?} bias {bias} threads {threads}: [{}, {}] = {} but the twin gives {}",
                kernel.name(),
                i / (n + 3),
                i % (n + 3),
                got[i],
                want[i]
            );
        }
    }
}

macro_rules! variant_tests {
    ($($module:ident => $variant:ident),* $(,)?) => {
        /// The variants these tests cover, in table order.
        const TESTED: &[I8Kernel] = &[$(I8Kernel::$variant),*];
        $(
            mod $module {
                use super::*;

                fn kernel() -> Option<I8Kernel> {
                    let k = I8Kernel::$variant;
                    assert_eq!(k.name(), stringify!($module));
                    runs_here(k.name(), k.supported()).then_some(k)
                }
                fn mr() -> usize {
                    I8Kernel::$variant.tile().0
                }

                #[test]
                fn k_lt_group() {
                    let Some(kernel) = kernel() else { return };
                    for k in 1..KG {
                        check(kernel, mr(), 16, k, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn k_eq_group() {
                    let Some(kernel) = kernel() else { return };
                    check(kernel, mr(), 16, KG, Epilogue::Store, 1);
                }
                #[test]
                fn k_gt_group() {
                    let Some(kernel) = kernel() else { return };
                    for k in [KG + 1, 2 * KG - 1, 3 * KG + 2, 5 * KG + 1, 7 * KG + 3] {
                        check(kernel, mr(), 16, k, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn k_div_group() {
                    let Some(kernel) = kernel() else { return };
                    for k in [2 * KG, 3 * KG, 4 * KG, 8 * KG, 48 * KG, 192 * KG] {
                        check(kernel, mr(), 16, k, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn n_lt_nr() {
                    let Some(kernel) = kernel() else { return };
                    for n in [1, 5, 15] {
                        check(kernel, mr(), n, 24, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn n_gt_nr() {
                    let Some(kernel) = kernel() else { return };
                    for n in [17, 31, 32, 33, 48, 80, 1000] {
                        check(kernel, mr(), n, 24, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn m_eq_1() {
                    let Some(kernel) = kernel() else { return };
                    check(kernel, 1, 40, 36, Epilogue::Store, 1);
                }
                #[test]
                fn m_lt_mr_and_gt_mr() {
                    let Some(kernel) = kernel() else { return };
                    for m in (1..mr()).chain([mr() + 1, 2 * mr() + 1, 197]) {
                        check(kernel, m, 40, 36, Epilogue::Store, 1);
                    }
                }
                #[test]
                fn epilogues() {
                    let Some(kernel) = kernel() else { return };
                    for e in [
                        Epilogue::Accumulate,
                        Epilogue::Activate(Activation::Gelu),
                        Epilogue::Activate(Activation::Relu),
                    ] {
                        check(kernel, 11, 50, 64, e, 1);
                    }
                }
                #[test]
                fn strips_stored_and_added() {
                    // Tall column strips, as the Linear layers and attention's scores run:
                    // odd and even row counts, one and several panels, K of 2 groups to 192.
                    let Some(kernel) = kernel() else { return };
                    for (m, n, k) in [(2, 16, 8), (7, 32, 64), (197, 48, 192), (20, 16, 768)] {
                        for e in [Epilogue::Store, Epilogue::Accumulate] {
                            check(kernel, m, n, k, e, 1);
                        }
                    }
                }
                #[test]
                fn threads() {
                    let Some(kernel) = kernel() else { return };
                    // Split by rows (small weights), then by column groups (280 KB of weights).
                    check(kernel, 37, 70, 130, Epilogue::Accumulate, 2);
                    check(kernel, 197, 192, 768, Epilogue::Activate(Activation::Gelu), 3);
                    check(kernel, 40, 400, 700, Epilogue::Accumulate, 2);
                }
                #[test]
                fn extremes_stay_exact() {
                    let Some(kernel) = kernel() else { return };
                    extremes(kernel);
                }
            }
        )*
    };
}

variant_tests! {
    i8_gemm_4x16c4_scalar => Scalar,
    i8_gemm_4x16c4_avx2 => Avx2,
    i8_gemm_4x16c4_avxvnni => AvxVnni,
    i8_gemm_8x32c4_avx512vnni => Avx512Vnni,
    i8_gemm_2x16c4_neon => Neon,
    i8_gemm_4x16c4_neondot => NeonDot,
    i8_gemm_4x16c8_neoni8mm => NeonI8mm,
}

/// Every product at +-127 * 127 over a long K: the int16 pair sums of the `smlal` and
/// `vpmaddubsw` kernels sit near their limit and the int32 sums are large, yet exact. And at
/// K = 256 with weights of -128, which the tools never write but a file can hold: the int16
/// pair sums of `vpmaddubsw` at their largest (2 * 128 * 127), and the largest sums the
/// Cortex-A76 strip converts with its 1.5 * 2^23 start (`MAGIC_MAX_K`).
fn extremes(kernel: I8Kernel) {
    let (m, n) = (5, 18);
    let cases = [(3072, -127i8), (256, -128)];
    for ((k, weight), sign) in cases.into_iter().flat_map(|c| [(c, 1i8), (c, -1)]) {
        let flip = if kernel.wants_biased() { -128i8 } else { 0 };
        let a = vec![(127i8 * sign) ^ flip; m * k];
        let q = vec![weight; n * k];
        let packed = pack_k4n16(&q, n, k);
        let sums = channel_sums(&q, n, k);
        let mut out = vec![0f32; m * n];
        let (ones_m, zeros_m, ones_n) = (vec![1f32; m], vec![0f32; m], vec![1f32; n]);
        let a = QuantRows {
            data: &a,
            rows: m,
            stride: k,
            scales: &ones_m,
            offsets: &zeros_m,
            biased: kernel.wants_biased(),
        };
        let w = PackedI8 { data: &packed, n, k, scales: &ones_n, sums: &sums };
        i8_gemm(kernel, a, w, None, &mut out, n, Epilogue::Store, Threads(1));
        let expect = (127 * weight as i64 * k as i64) as f32 * sign as f32;
        assert!(out.iter().all(|&v| v == expect), "{}: {} vs {expect}", kernel.name(), out[0]);
    }
}

#[test]
fn every_variant_is_tested_and_named_by_its_tile() {
    assert_eq!(TESTED, I8Kernel::ALL);
    for k in I8Kernel::ALL {
        let (mr, nr) = k.tile();
        assert!(k.name().starts_with(&format!("i8_gemm_{mr}x{nr}c")), "{} vs tile {mr}x{nr}", k.name());
    }
    assert_eq!(Some(&I8Kernel::best()), I8Kernel::allowed().last());
}

#[test]
fn the_scalar_twin_matches_an_f64_reference() {
    for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (9, 48, 768), (13, 31, 66)] {
        let case = Case::new(m, n, k);
        for epilogue in [Epilogue::Store, Epilogue::Accumulate, Epilogue::Activate(Activation::Gelu)] {
            let got = case.run(I8Kernel::Scalar, epilogue, true, 1);
            let ldo = n + 3;
            for r in 0..m {
                for c in 0..ldo {
                    let start = case.start[r * ldo + c];
                    let expect = if c >= n {
                        start
                    } else {
                        let v = case.reference(r, c) as f32;
                        match epilogue {
                            Epilogue::Store => v,
                            Epilogue::Activate(act) => act.apply(v),
                            Epilogue::Accumulate => start + v,
                        }
                    };
                    // Exact integer sums; only the float epilogue rounds (the offset term is
                    // scaled by up to 127 * K, so allow a few ulps of that).
                    let tol = 1e-5 * expect.abs().max(1.0) + 2e-7 * (k as f32) * 0.3 * 127.0 * 0.02;
                    let g = got[r * ldo + c];
                    assert!((g - expect).abs() <= tol, "{m}x{n}x{k} {epilogue:?} [{r},{c}]: {g} vs {expect}");
                }
            }
        }
    }
}
