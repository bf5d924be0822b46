//! Helpers shared by the kernel benchmarks (`mod common;` in each).

#![allow(dead_code)] // each benchmark uses some of them

pub mod baseline;

use std::time::Instant;

/// Deterministic values in [-1, 1) (xorshift), so every run times the same data.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Median seconds of `f` over enough runs to fill about 0.4 s (at least 5).
pub fn median_secs(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let runs = ((0.4 / once) as usize).clamp(5, 200);
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}
