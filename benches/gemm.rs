//! `cargo bench --bench gemm`: int8 GEMM kernels against the gemm crate's f32 GEMM at ViT-B/16
//! shapes (M = 197 tokens), one thread and all threads, in one run. Prints medians of GOP/s
//! (int8: multiply-adds x 2 per second, epilogue included) and the int8/f32 ratio.

mod common;

use common::baseline::gemm_crate;
use common::{median_secs, noise};
use edgevit_kernels::gemm::i8::{i8_gemm, I8Kernel, PackedI8, QuantRows};
use edgevit_kernels::gemm::pack::{channel_sums, pack_k4n16, padded_k, quantize_per_row};
use edgevit_kernels::gemm::Epilogue;
use edgevit_kernels::rows::quantize::quantize_row;
use edgevit_kernels::Threads;

fn main() {
    let all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let m = 197;
    println!("int8 GEMM vs f32 GEMM (gemm crate), M = {m}; medians; {} cores", all);
    println!(
        "{:<28} {:>5} {:>5} {:>7} {:>12} {:>12} {:>7}",
        "kernel", "K", "N", "threads", "int8 GOP/s", "f32 GFLOP/s", "ratio"
    );
    for (k, n) in [(768, 768), (768, 2304), (768, 3072), (3072, 768)] {
        let x = noise(1, m * k);
        let w = noise(2, n * k);
        let bias = noise(3, n);
        let (q, scales) = quantize_per_row(&w, n, k);
        let packed = pack_k4n16(&q, n, k);
        let sums = channel_sums(&q, n, k);
        let kp = padded_k(k);
        let mut qa = vec![0i8; m * kp];
        let (mut sa, mut za) = (vec![0f32; m], vec![0f32; m]);
        let mut out = vec![0f32; m * n];
        for threads in [1, all].into_iter().collect::<std::collections::BTreeSet<_>>() {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            pool.install(|| {
                let f32_s = median_secs(|| {
                    gemm_crate(&mut out, &x, &w, m, n, k, threads);
                });
                let flops = 2.0 * (m * n * k) as f64;
                for kernel in I8Kernel::available().into_iter().filter(|k| *k != I8Kernel::Scalar) {
                    // Includes quantizing the activations per row, as the forward pass does.
                    let s = median_secs(|| {
                        for r in 0..m {
                            (sa[r], za[r]) = quantize_row(
                                &x[r * k..(r + 1) * k],
                                &mut qa[r * kp..(r + 1) * kp],
                                kernel.wants_biased(),
                            );
                        }
                        i8_gemm(
                            kernel,
                            QuantRows {
                                data: &qa,
                                rows: m,
                                stride: kp,
                                scales: &sa,
                                offsets: &za,
                                biased: kernel.wants_biased(),
                            },
                            PackedI8 { data: &packed, n, k, scales: &scales, sums: &sums },
                            Some(&bias),
                            &mut out,
                            n,
                            Epilogue::Store,
                            Threads(threads),
                        );
                    });
                    println!(
                        "{:<28} {:>5} {:>5} {:>7} {:>12.1} {:>12.1} {:>6.2}x",
                        kernel.name(),
                        k,
                        n,
                        threads,
                        flops / s / 1e9,
                        flops / f32_s / 1e9,
                        f32_s / s
                    );
                }
            });
        }
    }
}
