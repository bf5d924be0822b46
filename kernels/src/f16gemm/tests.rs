use super::*;
use crate::activation::Activation;

fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// f64 reference from the packed (already rounded) weights.
fn reference(a: &[f32], m: usize, k: usize, w: &PackedF16<'_>, bias: &[f32]) -> Vec<f64> {
    reference_with_magnitude(a, m, k, w, bias).into_iter().map(|(v, _)| v).collect()
}

/// The reference and, per output, `sum |a w|`: the scale of half-precision rounding errors.
fn reference_with_magnitude(a: &[f32], m: usize, k: usize, w: &PackedF16<'_>, bias: &[f32]) -> Vec<(f64, f64)> {
    let mut out = vec![(0f64, 0f64); m * w.n];
    for r in 0..m {
        for c in 0..w.n {
            let terms = (0..k).map(|kk| a[r * k + kk] as f64 * w.get(c, kk) as f64);
            let (s, mag) = terms.fold((0.0, 0.0), |(s, mag), t| (s + t, mag + t.abs()));
            out[r * w.n + c] = (s + bias[c] as f64, mag);
        }
    }
    out
}

#[test]
fn packing_rounds_to_nearest_half_and_pads_with_zeros() {
    let w = [1.0f32, 0.1, -2.5, 65504.0, 1e-8, 3.0];
    let packed = pack_k1n16(&w, 2, 3);
    assert_eq!(packed.len(), 16 * 3);
    let p = PackedF16 { data: &packed, n: 2, k: 3 };
    assert_eq!(p.get(0, 0), 1.0);
    assert_eq!(p.get(0, 1), half::f16::from_f32(0.1).to_f32());
    assert_eq!(p.get(1, 0), 65504.0);
    assert_eq!(p.get(1, 1), 0.0); // 1e-8 is below the smallest subnormal half
    assert!(packed[2..16].iter().all(|&h| h == 0), "channels 2..16 of the panel are padding");
}

#[test]
fn every_kernel_matches_its_scalar_twin_and_the_reference_on_ragged_shapes() {
    let kernels = F16Kernel::available();
    // N covers one panel, part of one, and odd and even panel counts (pairs on AVX-512).
    for &(m, n, k) in &[
        (1, 1, 1),
        (3, 17, 5),
        (7, 33, 64),
        (9, 48, 100),
        (13, 15, 768),
        (197, 40, 96),
        (8, 16, 7),
        (11, 80, 33),
        (2, 1000, 9),
    ] {
        let a = noise(m as u64 * 31 + k as u64, m * k, 2.0);
        let wf = noise(n as u64 * 7 + 1, n * k, 0.1);
        let bias = noise(5, n, 0.5);
        let packed = pack_k1n16(&wf, n, k);
        let w = PackedF16 { data: &packed, n, k };
        let want = reference_with_magnitude(&a, m, k, &w, &bias);
        let mut twin_out = std::collections::HashMap::new();
        for &kernel in &kernels {
            for threads in [1, 3] {
                let ldo = n + 3;
                let mut out = vec![7.0f32; m * ldo];
                f16_gemm(kernel, &a, k, m, w, Some(&bias), &mut out, ldo, Epilogue::Store, Threads(threads));
                let got: Vec<f32> = out.chunks(ldo).flat_map(|r| r[..n].to_vec()).collect();
                assert!(out.chunks(ldo).all(|r| r[n..].iter().all(|&v| v == 7.0)), "{kernel:?} wrote padding");
                for (i, (&g, &(w, mag))) in got.iter().zip(&want).enumerate() {
                    // Half precision: activations rounded (2^-11 relative) and chains of up to
                    // FP16_BLOCK roundings, each at most 2^-11 of the terms so far.
                    let tol = if kernel.half_arithmetic() {
                        (FP16_BLOCK + 4) as f64 * mag / 2048.0 + 1e-5
                    } else {
                        1e-5 * (1.0 + w.abs()) * (k as f64).sqrt()
                    };
                    assert!((g as f64 - w).abs() <= tol, "{kernel:?} {m}x{n}x{k} [{i}]: {g} vs {w}");
                }
                // Same operations in the same order per output: bit-identical to the twin
                // (which comes first in `available`).
                match twin_out.get(&kernel.twin()) {
                    None => assert_eq!(kernel, kernel.twin(), "twins come first"),
                    Some(t) => assert_eq!(t, &got, "{kernel:?} {m}x{n}x{k} differs from {:?}", kernel.twin()),
                }
                twin_out.entry(kernel).or_insert(got);
            }
        }
    }
}

#[test]
fn epilogues_add_activate_and_accumulate() {
    let (m, n, k) = (5, 20, 9);
    let a = noise(1, m * k, 1.0);
    let packed = pack_k1n16(&noise(2, n * k, 0.3), n, k);
    let w = PackedF16 { data: &packed, n, k };
    let bias = noise(3, n, 0.2);
    let base = reference_with_magnitude(&a, m, k, &w, &bias);
    let kernel = F16Kernel::best();
    // Against the f64 reference, with the half-precision kernels' tolerance as above.
    let tol = |mag: f64| if kernel.half_arithmetic() { (FP16_BLOCK + 4) as f64 * mag / 2048.0 + 1e-5 } else { 1e-5 };
    let mut acc_out = vec![1.5f32; m * n];
    f16_gemm(kernel, &a, k, m, w, Some(&bias), &mut acc_out, n, Epilogue::Accumulate, Threads(1));
    let mut act_out = vec![0f32; m * n];
    let relu = Epilogue::Activate(Activation::Relu);
    f16_gemm(kernel, &a, k, m, w, Some(&bias), &mut act_out, n, relu, Threads(1));
    for (i, &(want, mag)) in base.iter().enumerate() {
        assert!((acc_out[i] as f64 - (want + 1.5)).abs() < tol(mag), "accumulate [{i}]");
        assert!((act_out[i] as f64 - want.max(0.0)).abs() < tol(mag), "relu [{i}]");
    }
}

#[test]
fn f32_packed_gemm_matches_the_reference_for_every_tile_kernel() {
    for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (9, 48, 100), (197, 40, 96), (8, 33, 768), (11, 80, 33), (2, 1000, 9)] {
        let a = noise(m as u64 + 3, m * k, 2.0);
        let wf = noise(n as u64 + 4, n * k, 0.1);
        let bias = noise(6, n, 0.5);
        let packed = pack_k1n16_f32(&wf, n, k);
        let mut first: Option<Vec<f32>> = None;
        for kernel in crate::tile::TileKernel::available() {
            for threads in [1, 3] {
                let mut out = vec![0f32; m * n];
                let w = PackedF32 { data: &packed, n, k };
                f32_packed_gemm(kernel, &a, k, m, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(threads));
                for r in 0..m {
                    for c in 0..n {
                        let want: f64 =
                            (0..k).map(|kk| a[r * k + kk] as f64 * wf[c * k + kk] as f64).sum::<f64>() + bias[c] as f64;
                        let got = out[r * n + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                            "{kernel:?} {m}x{n}x{k}"
                        );
                    }
                }
                match &first {
                    None => first = Some(out),
                    Some(f) => assert_eq!(f, &out, "{kernel:?} {m}x{n}x{k} threads {threads}"),
                }
            }
        }
    }
}

#[test]
fn every_epilogue_matches_the_scalar_path_bit_for_bit() {
    use crate::tile::TileKernel;
    let epilogues = [
        Epilogue::Store,
        Epilogue::Accumulate,
        Epilogue::Activate(Activation::Gelu),
        Epilogue::Activate(Activation::Relu),
        Epilogue::Activate(Activation::Silu),
    ];
    for &(m, n, k) in &[(1, 5, 3), (9, 33, 20), (17, 80, 64), (3, 1000, 8)] {
        let a = noise(m as u64 + 11, m * k, 3.0);
        let wf = noise(n as u64 + 12, n * k, 0.5);
        let bias = noise(13, n, 1.0);
        let (p16, p32) = (pack_k1n16(&wf, n, k), pack_k1n16_f32(&wf, n, k));
        let (w16, w32) = (PackedF16 { data: &p16, n, k }, PackedF32 { data: &p32, n, k });
        let ldo = n + 5;
        let start = noise(14, m * ldo, 1.0);
        for epilogue in epilogues {
            for bias in [Some(&bias[..]), None] {
                let run16 = |kernel| {
                    let mut out = start.clone();
                    f16_gemm(kernel, &a, k, m, w16, bias, &mut out, ldo, epilogue, Threads(2));
                    out
                };
                let run32 = |kernel| {
                    let mut out = start.clone();
                    f32_packed_gemm(kernel, &a, k, m, w32, bias, &mut out, ldo, epilogue, Threads(2));
                    out
                };
                let want32 = run32(TileKernel::Scalar);
                let what = format!("{m}x{n}x{k} {epilogue:?} bias {}", bias.is_some());
                for kernel in F16Kernel::available() {
                    assert_eq!(run16(kernel), run16(kernel.twin()), "{kernel:?} {what}");
                }
                for kernel in TileKernel::available() {
                    assert_eq!(run32(kernel), want32, "{kernel:?} {what}");
                }
                // The padding columns beyond n are never touched.
                assert!(want32.chunks(ldo).zip(start.chunks(ldo)).all(|(o, s)| o[n..] == s[n..]), "{what}");
            }
        }
    }
}

#[test]
fn the_half_precision_multiply_add_rounds_once() {
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

#[test]
fn half_precision_tiles_that_overflow_are_computed_in_f32() {
    // Activations of 3e4 times weights near 4: products and sums far beyond half's 65504.
    let (m, n, k) = (6, 40, 50);
    let mut a = noise(21, m * k, 1.0);
    a[2 * k + 7] = 3e4;
    a[5 * k] = -7e4; // not even representable in half
    let packed = pack_k1n16(&noise(22, n * k, 4.0), n, k);
    let w = PackedF16 { data: &packed, n, k };
    let bias = noise(23, n, 0.5);
    let want = reference(&a, m, k, &w, &bias);
    for kernel in F16Kernel::available().into_iter().filter(|k| k.half_arithmetic()) {
        let mut out = vec![0f32; m * n];
        f16_gemm(kernel, &a, k, m, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(1));
        for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()) * (k as f64).sqrt(), "{kernel:?} [{i}]: {g} vs {w}");
        }
    }
}
