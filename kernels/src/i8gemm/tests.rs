use super::*;

/// Deterministic int8 values in [-127, 127] (xorshift), with extremes mixed in.
fn qnoise(seed: u64, n: usize) -> Vec<i8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match i % 11 {
                0 => 127,
                1 => -127,
                _ => (((s >> 33) % 255) as i32 - 127) as i8,
            }
        })
        .collect()
}

fn run_case(kernel: I8Kernel, m: usize, n: usize, k: usize, epilogue: Epilogue, threads: usize) {
    let kp = padded_k(k);
    let q = qnoise(n as u64 * 7 + k as u64, n * k);
    let w_scales: Vec<f32> = (0..n).map(|i| 0.01 + i as f32 * 1e-4).collect();
    let a = qnoise(m as u64 * 13 + 5, m * k);
    let a_scales: Vec<f32> = (0..m).map(|i| 0.02 + i as f32 * 3e-4).collect();
    let a_offsets: Vec<f32> = (0..m).map(|i| (i as f32 * 0.9).cos() * 0.3).collect();
    let bias: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut a_padded = vec![0i8; m * kp];
    for r in 0..m {
        a_padded[r * kp..r * kp + k].copy_from_slice(&a[r * k..(r + 1) * k]);
    }
    if kernel.wants_biased() {
        a_padded.iter_mut().for_each(|v| *v ^= -128);
    }
    let packed = pack_k4n16(&q, n, k);
    let sums = channel_sums(&q, n, k);
    let x: Vec<f64> = (0..m * k).map(|i| a[i] as f64 * a_scales[i / k] as f64 + a_offsets[i / k] as f64).collect();
    let wd: Vec<f64> = (0..n * k).map(|i| q[i] as f64 * w_scales[i / k] as f64).collect();
    let want = linear_reference(&x, m, k, &wd, n, Some(&bias));
    let ldo = n + 3;
    let init: Vec<f32> = (0..m * ldo).map(|i| (i % 5) as f32).collect();
    let mut out = init.clone();
    i8_gemm(
        kernel,
        QuantRows {
            data: &a_padded,
            rows: m,
            stride: kp,
            scales: &a_scales,
            offsets: &a_offsets,
            biased: kernel.wants_biased(),
        },
        PackedWeights { data: &packed, n, k, scales: &w_scales, sums: &sums },
        Some(&bias),
        &mut out,
        ldo,
        epilogue,
        Threads(threads),
    );
    for r in 0..m {
        for c in 0..ldo {
            let got = out[r * ldo + c];
            let expect = if c >= n {
                init[r * ldo + c]
            } else {
                let v = want[r * n + c] as f32;
                match epilogue {
                    Epilogue::Store => v,
                    Epilogue::Activate(act) => act.apply(v),
                    Epilogue::Accumulate => init[r * ldo + c] + v,
                }
            };
            // Exact integer sums; only the float epilogue rounds (the offset term is scaled by
            // up to 127 * K, so allow a few ulps of that).
            let tol = 1e-5 * expect.abs().max(1.0) + 2e-7 * (k as f32) * 0.3 * 127.0 * 0.02;
            assert!(
                (got - expect).abs() <= tol,
                "{} m={m} n={n} k={k} {epilogue:?} t={threads} [{r},{c}]: {got} vs {expect}",
                kernel.name()
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_reference_on_ragged_shapes() {
    let shapes = [
        (1, 1, 1),
        (1, 16, 4),
        (2, 17, 5),
        (3, 15, 3),
        (5, 33, 9),
        (8, 16, 8),
        (9, 48, 768),
        (13, 31, 66),
        (197, 40, 768),
        (7, 20, 3 * 16 * 16),
        (4, 1000, 192),
    ];
    let kernels = I8Kernel::available();
    eprintln!("testing {:?}", kernels.iter().map(|k| k.name()).collect::<Vec<_>>());
    for kernel in kernels {
        for &(m, n, k) in &shapes {
            run_case(kernel, m, n, k, Epilogue::Store, 1);
        }
        run_case(kernel, 37, 70, 130, Epilogue::Accumulate, 2);
        run_case(kernel, 11, 50, 64, Epilogue::Activate(Activation::Gelu), 2);
        run_case(kernel, 197, 192, 768, Epilogue::Store, 2);
    }
}

#[test]
fn extreme_values_stay_exact() {
    // Every product at +-127*127 with long K: the int16 pair sums of the NEON/AVX2 kernels
    // sit at their limit and the int32 sums are large.
    let (m, n, k) = (5, 18, 3072);
    for kernel in I8Kernel::available() {
        for sign in [1i8, -1] {
            let flip = if kernel.wants_biased() { -128i8 } else { 0 };
            let a = vec![(127i8 * sign) ^ flip; m * k];
            let q = vec![-127i8; n * k];
            let packed = pack_k4n16(&q, n, k);
            let sums = channel_sums(&q, n, k);
            let mut out = vec![0f32; m * n];
            let ones_m = vec![1f32; m];
            let zeros_m = vec![0f32; m];
            let ones_n = vec![1f32; n];
            i8_gemm(
                kernel,
                QuantRows {
                    data: &a,
                    rows: m,
                    stride: k,
                    scales: &ones_m,
                    offsets: &zeros_m,
                    biased: kernel.wants_biased(),
                },
                PackedWeights { data: &packed, n, k, scales: &ones_n, sums: &sums },
                None,
                &mut out,
                n,
                Epilogue::Store,
                Threads(1),
            );
            let expect = -(127 * 127 * k as i64) as f32 * sign as f32;
            assert!(out.iter().all(|&v| v == expect), "{}: {} vs {expect}", kernel.name(), out[0]);
        }
    }
}

#[test]
fn packing_layout_is_k4_groups_in_16_channel_panels() {
    // 17 channels x 5 k: two panels, two groups; w[n][k] = n * 8 + k.
    let q: Vec<i8> = (0..17).flat_map(|n| (0..5).map(move |k| (n * 8 + k) as i8)).collect();
    let p = pack_k4n16(&q, 17, 5);
    assert_eq!(p.len(), 2 * 16 * 8);
    assert_eq!(&p[0..8], &[0, 1, 2, 3, 8, 9, 10, 11]); // panel 0, group 0: channel 0 k0..3, channel 1 k0..3
    assert_eq!(&p[64..68], &[4, 0, 0, 0]); // panel 0, group 1: channel 0 k4 then zero padding
    assert_eq!(&p[128..132], &[(16 * 8) as i8, (16 * 8 + 1) as i8, (16 * 8 + 2) as i8, (16 * 8 + 3) as i8]); // panel 1 = channel 16
    assert!(p[132..192].iter().all(|&v| v == 0)); // padded channels 17..32
}

#[test]
fn activation_rows_use_their_whole_range() {
    let mut dst = [9i8; 5];
    let (s, z) = quantize_activation_row(&[-0.17, 1.0, 0.415, 0.2], &mut dst, false);
    assert!((z - 0.415).abs() < 1e-6 && (s - 1.17 / 254.0).abs() < 1e-7, "{s} {z}");
    assert_eq!(&dst[..2], &[-127, 127]);
    assert_eq!(dst[2], 0);
    assert_eq!(dst[4], 0);
    for (x, q) in [-0.17f32, 1.0, 0.415, 0.2].iter().zip(dst) {
        assert!((s * q as f32 + z - x).abs() <= s * 0.5 + 1e-6);
    }
    let mut c = [1i8; 3];
    assert_eq!(quantize_activation_row(&[2.5, 2.5], &mut c, false), (1.0, 2.5));
    assert_eq!(c, [0, 0, 0]);
    let mut b = [0i8; 5];
    quantize_activation_row(&[-0.17, 1.0, 0.415, 0.2], &mut b, true);
    assert_eq!(b.map(|v| v as u8), dst.map(|v| (v as i32 + 128) as u8));
}

#[test]
fn quantize_row_is_symmetric_and_pads() {
    let mut dst = [9i8; 6];
    let s = quantize_row(&[0.5, -1.0, 0.25, 0.0], &mut dst);
    assert_eq!(s, 1.0 / 127.0);
    assert_eq!(dst, [64, -127, 32, 0, 0, 0]);
    let mut z = [1i8; 2];
    assert_eq!(quantize_row(&[0.0, 0.0], &mut z), 1.0);
    assert_eq!(z, [0, 0]);
}
