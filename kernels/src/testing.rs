//! Test helpers shared by every kernel's tests: deterministic noise, and the rule for variants
//! this CPU cannot run (a visible skip, or a failure where CI expects the variant to run).

/// A deterministic stream of 64-bit states (xorshift), so a failure reproduces.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::repeat_with(move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    })
}

/// Deterministic values in [-1, 1).
pub(crate) fn noise(seed: u64, n: usize) -> Vec<f32> {
    xorshift(seed).take(n).map(|s| ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0).collect()
}

/// Deterministic bytes.
pub(crate) fn noise_bytes(seed: u64, n: usize) -> Vec<u8> {
    xorshift(seed).take(n).map(|s| (s >> 24) as u8).collect()
}

/// Deterministic int8 values in [-127, 127] (xorshift), with both extremes mixed in.
pub(crate) fn qnoise(seed: u64, n: usize) -> Vec<i8> {
    xorshift(seed)
        .take(n)
        .enumerate()
        .map(|(i, s)| match i % 11 {
            0 => 127,
            1 => -127,
            _ => (((s >> 33) % 255) as i32 - 127) as i8,
        })
        .collect()
}

/// Kernel names that must run here, from `EDGEVIT_EXPECT_KERNELS` (comma-separated; CI sets
/// it from the CPU it runs on).
pub(crate) fn expected_kernels() -> Vec<String> {
    std::env::var("EDGEVIT_EXPECT_KERNELS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether a variant's test should run: true if the CPU can run it; otherwise prints a skip
/// naming it, and fails if CI expects it to run.
pub(crate) fn runs_here(name: &str, supported: bool) -> bool {
    if supported {
        return true;
    }
    assert!(
        !expected_kernels().iter().any(|e| e == name),
        "{name} is expected to run on this CPU (EDGEVIT_EXPECT_KERNELS) but is not available"
    );
    // Once per variant, straight to stderr past libtest's capture, so the skip shows in every
    // test run.
    static SHOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    if !shown.iter().any(|s| s == name) {
        shown.push(name.to_string());
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {name}: this CPU cannot run it");
    }
    false
}
