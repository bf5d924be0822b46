//! `cargo bench --bench float_gemm`: our packed f32 and f16-weight GEMMs against the gemm
//! crate's f32 GEMM at ViT-B/16 shapes (M = 197 tokens), one thread and all threads, in one
//! run. Prints medians of GFLOP/s and each kernel's speed relative to the gemm crate.

mod common;

use common::baseline::gemm_crate;
use common::{median_secs, noise};
use edgevit_kernels::gemm::f16::{f16_gemm, F16Kernel, PackedF16};
use edgevit_kernels::gemm::f32::{f32_gemm, F32Kernel, PackedF32};
use edgevit_kernels::gemm::pack::{pack_k1n16_f16, pack_k1n16_f32};
use edgevit_kernels::gemm::Epilogue;
use edgevit_kernels::Threads;

fn main() {
    let all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let m = 197;
    let (f32k, f16k) = (F32Kernel::best(), F16Kernel::best());
    println!(
        "packed f32 ({}) and f16 ({}) GEMMs vs the gemm crate, M = {m}; medians; {all} cores",
        f32k.name(),
        f16k.name()
    );
    println!(
        "{:>5} {:>5} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "K", "N", "threads", "gemm", "f32", "f16", "f32/gemm", "f16/gemm"
    );
    for (k, n) in [(768, 768), (768, 2304), (768, 3072), (3072, 768)] {
        let x = noise(1, m * k);
        let w = noise(2, n * k);
        let bias = noise(3, n);
        let p32 = pack_k1n16_f32(&w, n, k);
        let p16 = pack_k1n16_f16(&w, n, k);
        let mut out = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        for threads in [1, all].into_iter().collect::<std::collections::BTreeSet<_>>() {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            pool.install(|| {
                let base = median_secs(|| gemm_crate(&mut out, &x, &w, m, n, k, threads));
                let s32 = median_secs(|| {
                    let w = PackedF32 { data: &p32, n, k };
                    f32_gemm(f32k, &x, k, m, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(threads))
                });
                let s16 = median_secs(|| {
                    let w = PackedF16 { data: &p16, n, k };
                    f16_gemm(f16k, &x, k, m, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(threads))
                });
                let g = |s: f64| flops / s / 1e9;
                println!(
                    "{:>5} {:>5} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>8.2}x {:>8.2}x",
                    k,
                    n,
                    threads,
                    g(base),
                    g(s32),
                    g(s16),
                    base / s32,
                    base / s16
                );
            });
        }
    }
}
