//! `cargo bench --bench kernels`: every kernel variant this CPU can run, one thread, medians:
//! the GEMM microkernels at a ViT-B/16 and a ViT-Ti/16 shape (GOP/s, two operations per
//! multiply-add, epilogue included), attention at ViT-B/16 and ViT-Ti/16 shapes (ms per call, every precision this
//! CPU has), and the row kernels on one layer's rows (ns per element). Names are the kernels'
//! own (their files and functions).

mod common;

use common::{median_secs, noise};
use edgevit_kernels::attention::{attention, AttentionKernels, AttentionScratch, AttentionShape, Scores, Values};
use edgevit_kernels::gemm::bf16::Bf16Kernel;
use edgevit_kernels::gemm::f16::{f16_gemm, F16Kernel, PackedF16};
use edgevit_kernels::gemm::f32::{f32_gemm, F32Kernel, PackedF32};
use edgevit_kernels::gemm::i8::{i8_gemm, I8Kernel, PackedI8, QuantRows};
use edgevit_kernels::gemm::pack::{
    channel_sums, pack_k1n16_f16, pack_k1n16_f32, pack_k4n16, padded_k, quantize_per_row,
};
use edgevit_kernels::gemm::Epilogue;
use edgevit_kernels::rows::quantize::quantize_row;
use edgevit_kernels::rows::RowIsa;
use edgevit_kernels::Threads;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("thread pool");
    pool.install(|| {
        gemms();
        attentions();
        row_kernels();
    });
}

/// ViT-B/16's fc1-sized layer and ViT-Ti/16's fc1 (K = 192: rows short enough that the f16
/// kernels widen whole panels once).
const GEMM_SHAPES: [(usize, usize, usize); 2] = [(197, 768, 768), (197, 192, 768)];

fn gemms() {
    println!("GEMM microkernels, 1 thread, bias epilogue, GOP/s at M x K x N =");
    println!("{:<30} {:>14} {:>14}", "kernel", "197x768x768", "197x192x768");
    let [vit_b, vit_ti] = GEMM_SHAPES.map(|(m, k, n)| gemm_gops(m, k, n));
    for ((name, b), (_, t)) in vit_b.iter().zip(&vit_ti) {
        println!("{name:<30} {b:>14.1} {t:>14.1}");
    }
}

/// Every kernel's GOP/s at one shape, in the order int8, f16, f32.
fn gemm_gops(m: usize, k: usize, n: usize) -> Vec<(&'static str, f64)> {
    let x = noise(1, m * k);
    let w = noise(2, n * k);
    let bias = noise(3, n);
    let ops = 2.0 * (m * n * k) as f64;
    let mut out = vec![0f32; m * n];
    let mut result = Vec::new();
    let (q, scales) = quantize_per_row(&w, n, k);
    let (packed, sums) = (pack_k4n16(&q, n, k), channel_sums(&q, n, k));
    let kp = padded_k(k);
    for kernel in I8Kernel::available() {
        let mut qa = vec![0i8; m * kp];
        let (mut sa, mut za) = (vec![0f32; m], vec![0f32; m]);
        for r in 0..m {
            (sa[r], za[r]) = quantize_row(&x[r * k..(r + 1) * k], &mut qa[r * kp..(r + 1) * kp], kernel.wants_biased());
        }
        let s = median_secs(|| {
            let a =
                QuantRows { data: &qa, rows: m, stride: kp, scales: &sa, offsets: &za, biased: kernel.wants_biased() };
            let w = PackedI8 { data: &packed, n, k, scales: &scales, sums: &sums };
            i8_gemm(kernel, a, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(1));
        });
        result.push((kernel.name(), ops / s / 1e9));
    }
    let p16 = pack_k1n16_f16(&w, n, k);
    for kernel in F16Kernel::available() {
        let s = median_secs(|| {
            let w = PackedF16 { data: &p16, n, k };
            f16_gemm(kernel, &x, k, m, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(1));
        });
        result.push((kernel.name(), ops / s / 1e9));
    }
    let p32 = pack_k1n16_f32(&w, n, k);
    for kernel in F32Kernel::available() {
        let s = median_secs(|| {
            let w = PackedF32 { data: &p32, n, k };
            f32_gemm(kernel, &x, k, m, w, Some(&bias), &mut out, n, Epilogue::Store, Threads(1));
        });
        result.push((kernel.name(), ops / s / 1e9));
    }
    result
}

fn attentions() {
    println!("\nattention, 1 thread (scores kernel / values kernel)");
    println!("{:<62} {:>12} {:>12}", "kernels", "ViT-B ms", "ViT-Ti ms");
    let shapes = [
        AttentionShape { tokens: 197, heads: 12, head_dim: 64 },
        AttentionShape { tokens: 197, heads: 3, head_dim: 64 },
    ];
    let mut plans: Vec<AttentionKernels> = F32Kernel::available().into_iter().map(AttentionKernels::f32).collect();
    for i8k in I8Kernel::available() {
        plans.push(AttentionKernels { scores: Scores::Int8(i8k), values: Values::F32(F32Kernel::best()) });
        for f16k in F16Kernel::available().into_iter().filter(|k| k.half_arithmetic() && *k != F16Kernel::Fp16Scalar) {
            plans.push(AttentionKernels { scores: Scores::Int8(i8k), values: Values::F16(f16k) });
        }
    }
    for k in Bf16Kernel::available() {
        plans.push(AttentionKernels { scores: Scores::Bf16(k), values: Values::F32(F32Kernel::best()) });
    }
    for plan in plans {
        let [scores, values] = plan.names();
        let ms: Vec<f64> = shapes
            .iter()
            .map(|&shape| {
                let qkv: Vec<f32> = noise(4, shape.tokens * 3 * shape.dim()).iter().map(|v| v * 3.0).collect();
                let mut out = vec![0f32; shape.tokens * shape.dim()];
                let mut scratch = AttentionScratch::new(shape, 1);
                median_secs(|| attention(plan, &qkv, &mut out, &mut scratch, shape, Threads(1))) * 1e3
            })
            .collect();
        println!("{:<62} {:>12.3} {:>12.3}", format!("{scores} / {values}"), ms[0], ms[1]);
    }
}

fn row_kernels() {
    use edgevit_kernels::rows::{activation, layernorm, quantize, softmax};
    println!("\nrow kernels, 1 thread, ns per element");
    println!("{:<28} {:>12}", "kernel", "ns/element");
    let (rows, d, inter) = (197, 768, 3072);
    let x: Vec<f32> = noise(5, rows * inter).iter().map(|v| v * 4.0).collect();
    let gamma = noise(6, d);
    let beta = noise(7, d);
    let mut y = vec![0f32; rows * inter];
    let mut q = vec![0i8; rows * inter];
    let report = |name: String, elements: usize, s: f64| println!("{:<28} {:>12.3}", name, s * 1e9 / elements as f64);
    for isa in RowIsa::available() {
        let [ln, sm, gelu, quant] = isa.kernel_names();
        type Ln = fn(&[f32], &mut [f32], &[f32], &[f32], f32);
        type Sm = fn(&mut [f32], f32) -> f32;
        type Gelu = fn(&mut [f32]);
        type Quant = fn(&[f32], &mut [i8], bool) -> (f32, f32);
        let (lnf, smf, gf, qf): (Ln, Sm, Gelu, Quant) = match isa {
            #[cfg(target_arch = "x86_64")]
            RowIsa::Avx512 => (
                layernorm::layernorm_avx512,
                softmax::softmax_avx512,
                activation::gelu_avx512,
                quantize::quantize_row_avx512,
            ),
            #[cfg(target_arch = "x86_64")]
            RowIsa::Avx2 => {
                (layernorm::layernorm_avx2, softmax::softmax_avx2, activation::gelu_avx2, quantize::quantize_row_avx2)
            }
            #[cfg(target_arch = "aarch64")]
            RowIsa::Neon => {
                (layernorm::layernorm_neon, softmax::softmax_neon, activation::gelu_neon, quantize::quantize_row_neon)
            }
            _ => (
                layernorm::layernorm_scalar,
                softmax::softmax_exp_scalar,
                activation::gelu_scalar,
                quantize::quantize_row_scalar,
            ),
        };
        let s = median_secs(|| {
            for r in 0..rows {
                lnf(&x[r * d..(r + 1) * d], &mut y[r * d..(r + 1) * d], &gamma, &beta, 1e-6);
            }
        });
        report(ln, rows * d, s);
        let s = median_secs(|| {
            y[..rows * rows].copy_from_slice(&x[..rows * rows]);
            for r in 0..rows {
                smf(&mut y[r * rows..(r + 1) * rows], 0.125);
            }
        });
        report(sm, rows * rows, s);
        let s = median_secs(|| {
            y.copy_from_slice(&x);
            gf(&mut y);
        });
        report(gelu, rows * inter, s);
        let s = median_secs(|| {
            for r in 0..rows {
                qf(&x[r * d..(r + 1) * d], &mut q[r * d..(r + 1) * d], false);
            }
        });
        report(quant, rows * d, s);
    }
}
