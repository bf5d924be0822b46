//! Does this CPU's AVX512-BF16 compute what the bf16 attention kernel's scalar twin does
//! (`gemm::bf16::dot_pair`, `rows::convert::bf16_from_f32`)? A check, not a speed test:
//!
//!     cargo bench --bench bf16_semantics
//!
//! `vdpbf16ps` against the Intel SDM's pseudo-code (per lane, the odd pair's product added
//! first by a fused multiply-add, then the even pair's; denormal inputs read as zero, denormal
//! results flushed), and `vcvtne2ps2bf16` against round-to-nearest-even of the upper 16 bits
//! (denormals to signed zero, NaNs quieted). Random inputs with denormals, infinities, NaNs
//! and extreme exponents; the counts of lanes that differ from each rule and from a
//! plausible wrong one (even product first; plain rounding of denormals), so that a zero
//! means something.

#[cfg(target_arch = "x86_64")]
mod check {
    use std::arch::x86_64::*;

    use edgevit_kernels::gemm::bf16::dot_pair;
    use edgevit_kernels::rows::convert::bf16_from_f32;

    /// Round to nearest even without flushing denormals: the plausible wrong rule.
    fn plain_rne(x: f32) -> u16 {
        let b = x.to_bits();
        if x.is_nan() {
            ((b >> 16) as u16) | 0x40
        } else {
            (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dpbf16(acc: &[f32; 16], a: &[u16; 32], b: &[u16; 32]) -> [f32; 16] {
        // SAFETY: the loads read 64 bytes of each array; a __m512bh is 32 bf16 bit patterns.
        unsafe {
            let va: __m512bh = std::mem::transmute(_mm512_loadu_si512(a.as_ptr().cast()));
            let vb: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.as_ptr().cast()));
            std::mem::transmute(_mm512_dpbf16_ps(_mm512_loadu_ps(acc.as_ptr()), va, vb))
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn cvtne2ps(x: &[f32; 32]) -> [u16; 32] {
        // SAFETY: the loads read 32 floats of `x`; the result holds b's 16 values, then a's.
        unsafe {
            std::mem::transmute(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x.as_ptr().add(16)), _mm512_loadu_ps(x.as_ptr())))
        }
    }

    /// A bf16 with the sign and mantissa from `r` and an exponent that is zero (denormal or
    /// zero) one time in 16, tiny or huge now and then, and near 1 otherwise.
    fn bf16_from(r: u64, huge: bool) -> u16 {
        let e: u16 = match r % 16 {
            0 => 0,
            1 => 1 + (r >> 8) as u16 % 20,
            2 if huge => 230 + (r >> 8) as u16 % 24,
            _ => 110 + (r >> 8) as u16 % 34,
        };
        ((r >> 20) as u16 & 0x8000) | (e << 7) | ((r >> 32) as u16 & 0x7f)
    }

    /// A xorshift64 stream from `seed`: the same inputs on every run.
    fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    pub fn run() {
        if !is_x86_feature_detected!("avx512bf16") {
            println!("bf16_semantics: this CPU has no AVX512-BF16; nothing to check");
            return;
        }
        let mut rnd = xorshift(0x1234_5678_9abc_def1);
        let (mut lanes, mut off_sdm, mut off_even_first) = (0u64, 0u64, 0u64);
        for iter in 0..2_000_000u64 {
            let (mut a, mut b, mut acc) = ([0u16; 32], [0u16; 32], [0f32; 16]);
            for i in 0..32 {
                a[i] = bf16_from(rnd(), true);
                b[i] = bf16_from(rnd(), false);
            }
            for v in acc.iter_mut() {
                let r = rnd();
                *v = if iter % 7 == 0 { f32::from_bits(r as u32 & 0x807f_ffff) } else { r as i32 as f32 * 1e-9 };
            }
            // SAFETY: AVX512-BF16 is present (checked above).
            let got = unsafe { dpbf16(&acc, &a, &b) };
            for j in 0..16 {
                lanes += 1;
                let (pa, pb) = ([a[2 * j], a[2 * j + 1]], [b[2 * j], b[2 * j + 1]]);
                let same = |want: f32| got[j].to_bits() == want.to_bits() || (got[j].is_nan() && want.is_nan());
                off_sdm += !same(dot_pair(acc[j], pa, pb)) as u64;
                // The pairs swapped: the even product first.
                off_even_first += !same(dot_pair(acc[j], [pa[1], pa[0]], [pb[1], pb[0]])) as u64;
            }
        }
        println!("vdpbf16ps: {lanes} lanes, {off_sdm} differ from the SDM (odd product first), {off_even_first} from even first");

        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut values, mut off_rne, mut off_plain) = (0u64, 0u64, 0u64);
        for _ in 0..2_000_000u64 {
            let mut x = [0f32; 32];
            for v in x.iter_mut() {
                let r = rnd();
                let bits = (r >> 8) as u32;
                *v = f32::from_bits(match r % 8 {
                    0 => bits & 0x807f_ffff,                 // denormal or zero
                    1 => bits | 0x7f80_0000,                 // infinity or NaN
                    2 => (bits & 0x8000_ffff) | 0x3f80_8000, // a tie near 1
                    _ => (r >> 16) as u32,
                });
            }
            // SAFETY: AVX512-BF16 is present (checked above).
            let got = unsafe { cvtne2ps(&x) };
            for (g, &v) in got.iter().zip(&x) {
                values += 1;
                off_rne += (*g != bf16_from_f32(v)) as u64;
                off_plain += (*g != plain_rne(v)) as u64;
            }
        }
        println!("vcvtne2ps2bf16: {values} values, {off_rne} differ from RNE with denormals to zero, {off_plain} from plain RNE");
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    check::run();
    #[cfg(not(target_arch = "x86_64"))]
    println!("bf16_semantics: x86-64 only");
}
