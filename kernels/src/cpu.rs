//! Which instruction sets the kernels may use: every one this CPU has, unless the
//! `EDGEVIT_ISA` environment variable caps them. A cap makes a machine run the kernels a
//! smaller CPU would (an AVX-512 workstation the AVX2 ones of an Intel N100, a Cortex-A76 the
//! Cortex-A72's), to reproduce that machine's results or time its code path, and `scalar`
//! runs the twins alone, to tell a suspected SIMD bug from a model problem.
//!
//! Every row and frame kernel gives its twin's bits, so a cap changes only which GEMM tiles
//! and attention arithmetic run: bf16 scores (AVX512-BF16) become f32, half-precision
//! arithmetic (FP16) becomes f32 accumulation. Tests still run every kernel the CPU has.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The environment variable that caps the instruction sets.
pub const VARIABLE: &str = "EDGEVIT_ISA";

/// How far up its architecture's instruction sets a kernel reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Portable Rust: the scalar twins.
    Scalar,
    /// x86-64: AVX2 with FMA (and F16C, AVX-VNNI); aarch64: baseline NEON (Cortex-A72).
    Base,
    /// x86-64: AVX-512 (with VNNI, BF16); aarch64: dot product, FP16 arithmetic and i8mm
    /// (Cortex-A76 and later).
    Extended,
}

/// The cap's values on this architecture, lowest first, with the tier each allows.
pub const CAPS: &[(&str, Tier)] = &[
    ("scalar", Tier::Scalar),
    #[cfg(target_arch = "x86_64")]
    ("avx2", Tier::Base),
    #[cfg(target_arch = "aarch64")]
    ("neon", Tier::Base),
    ("native", Tier::Extended),
];

/// The tier a value of [`VARIABLE`] allows (an empty value: no cap), or what is wrong with it.
pub fn parse(value: &str) -> Result<Tier, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Tier::Extended);
    }
    let lower = value.to_ascii_lowercase();
    CAPS.iter().find(|(name, _)| *name == lower).map(|&(_, tier)| tier).ok_or_else(|| {
        let names: Vec<&str> = CAPS.iter().map(|(n, _)| *n).collect();
        format!("{VARIABLE}={value} is not an instruction-set cap of this build: use one of {}", names.join(", "))
    })
}

/// The cap in force, read from the environment once per process. Reading it also puts it in
/// force for [`allows`]: opening a model does, and so does choosing a kernel (each family's
/// `best()`, [`crate::rows::RowIsa::best`]).
pub fn cap() -> Result<Tier, String> {
    let cap = read_cap();
    let top = cap.as_ref().map_or(Tier::Extended, |&c| c) as u8;
    ALLOWED.store(top + 1, Ordering::Relaxed);
    cap.clone()
}

fn read_cap() -> &'static Result<Tier, String> {
    static CAP: OnceLock<Result<Tier, String>> = OnceLock::new();
    CAP.get_or_init(|| match std::env::var(VARIABLE) {
        Ok(v) => parse(&v),
        Err(std::env::VarError::NotPresent) => Ok(Tier::Extended),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{VARIABLE}={v:?} is not valid text")),
    })
}

/// The name of a tier's cap on this architecture (`native` for no cap).
pub fn cap_name(tier: Tier) -> &'static str {
    CAPS.iter().find(|&&(_, t)| t == tier).map_or("native", |(n, _)| n)
}

/// Whether the cap in force lets a kernel of `tier` run: any, before [`cap`] has been read
/// (a value of [`VARIABLE`] that does not parse caps nothing either; opening a model reports
/// it, and `edgevit` stops with its message). The row kernels ask on every call, tens of
/// thousands a ViT-Ti inference, so this is one load and a compare, inlined, with no call that
/// would make its callers save registers.
#[inline]
pub fn allows(tier: Tier) -> bool {
    // 0 (not read yet) wraps to 255: no cap.
    tier as u8 <= ALLOWED.load(Ordering::Relaxed).wrapping_sub(1)
}

/// Whether this CPU has AVX2 and the cap allows it: the dispatch of the kernels that need
/// AVX2 alone (frame preparation, weight quantization).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2_allowed() -> bool {
    is_x86_feature_detected!("avx2") && allows(Tier::Base)
}

/// The highest tier allowed as `Tier as u8 + 1`; 0 until [`cap`] has been read.
static ALLOWED: AtomicU8 = AtomicU8::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_to_their_tiers_and_others_are_refused() {
        assert_eq!(parse(""), Ok(Tier::Extended));
        assert_eq!(parse("native"), Ok(Tier::Extended));
        assert_eq!(parse(" Scalar "), Ok(Tier::Scalar));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(parse("AVX2"), Ok(Tier::Base));
            assert!(parse("neon").is_err());
        }
        #[cfg(target_arch = "aarch64")]
        {
            assert_eq!(parse("neon"), Ok(Tier::Base));
            assert!(parse("avx2").is_err());
        }
        let e = parse("sse9").unwrap_err();
        assert!(e.contains("EDGEVIT_ISA=sse9") && e.contains("scalar") && e.contains("native"), "{e}");
        assert_eq!(cap_name(Tier::Scalar), "scalar");
        assert_eq!(cap_name(Tier::Extended), "native");
    }
}
