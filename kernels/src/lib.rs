//! Numeric kernels for edgevit. No I/O and no knowledge of model files: every function takes
//! slices and shapes, checks them, and computes.
//!
//! Where things are:
//!
//! - [`gemm`]: the Linear layers. One driver ([`gemm::driver`]) and one epilogue
//!   ([`gemm::epilogue`]) serve three families of register-tile microkernels, one file per
//!   variant, named as `edgevit info` prints them: [`gemm::i8`](mod@gemm::i8) (`i8_gemm_4x16c4_neondot.rs`,
//!   ...), [`gemm::f16`](mod@gemm::f16) and [`gemm::f32`](mod@gemm::f32). The f32 microkernels also run attention's two
//!   products. [`gemm::pack`] holds the weight layouts the tools write.
//! - [`attention`]: fused multi-head attention on the f32 microkernels.
//! - [`buffer`]: buffers that start on a cache line, for outputs that threads share.
//! - [`cpu`]: the `EDGEVIT_ISA` cap on the instruction sets the kernels may use.
//! - [`rows`]: the row kernels (LayerNorm, softmax, GELU and the other activations, int8
//!   quantization of activation rows), each in one file with its scalar twin beside the NEON,
//!   AVX2 and AVX-512 versions.
//! - [`resample`]: frame preparation's horizontal resampling pass (PIL's fixed-point taps),
//!   NEON and SSE4.1 beside the scalar twin.
//! - [`yuv`]: frame preparation's colour conversion (YUV 4:2:0 rows to RGB), NEON and AVX2
//!   beside the scalar twin.
//!
//! Every SIMD kernel has a scalar twin that is its oracle: the tests assert bit-identical
//! results. A new instruction set is a new file per microkernel plus one line in its family's
//! table; a new weight dtype is a new family under [`gemm`].

/// Declares a family of microkernels: an enum whose variants each name the module (file) that
/// implements them, so the name a kernel reports is where its code is. Each module exports
/// `run` with the family's signature; a variant whose `cfg` is off for this target, or whose
/// CPU test fails, is not available; its `tier` is what an `EDGEVIT_ISA` cap compares.
macro_rules! kernel_family {
    (
        $(#[$meta:meta])*
        pub enum $family:ident: $ukernel:ty {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $module:ident { mr: $mr:expr, nr: $nr:expr }
                    where cfg($cfg:meta), cpu($cpu:expr), tier($tier:ident)
            ),* $(,)?
        }
    ) => {
        $( #[cfg($cfg)] mod $module; )*

        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $family {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $family {
            /// Every variant of the family, in table order (best last).
            pub const ALL: &'static [$family] = &[$($family::$variant),*];

            /// The kernel's name: the name of the file that holds its code.
            pub fn name(self) -> &'static str {
                match self {
                    $( $family::$variant => stringify!($module), )*
                }
            }

            /// Rows and columns of the variant's register tile.
            pub fn tile(self) -> (usize, usize) {
                match self {
                    $( $family::$variant => ($mr, $nr), )*
                }
            }

            /// Whether this build and this CPU can run the variant.
            pub fn supported(self) -> bool {
                match self {
                    $(
                        $family::$variant => {
                            #[cfg($cfg)]
                            return $cpu;
                            #[cfg(not($cfg))]
                            return false;
                        }
                    )*
                }
            }

            /// Every variant this CPU can run, in table order (best last).
            pub fn available() -> Vec<$family> {
                Self::ALL.iter().copied().filter(|k| k.supported()).collect()
            }

            /// How far up the instruction sets the variant reaches.
            pub fn tier(self) -> $crate::cpu::Tier {
                match self {
                    $( $family::$variant => $crate::cpu::Tier::$tier, )*
                }
            }

            /// The variants this CPU can run and the `EDGEVIT_ISA` cap allows ([`crate::cpu`]),
            /// in table order: what a model chooses from.
            pub fn allowed() -> Vec<$family> {
                let cap = $crate::cpu::cap().unwrap_or($crate::cpu::Tier::Extended);
                Self::available().into_iter().filter(|k| k.tier() <= cap).collect()
            }

            /// The variant's entry point, if this build has it.
            fn ukernel(self) -> Option<$ukernel> {
                match self {
                    $(
                        $family::$variant => {
                            #[cfg($cfg)]
                            return Some($module::run);
                            #[cfg(not($cfg))]
                            return None;
                        }
                    )*
                }
            }
        }
    };
}

pub mod attention;
pub mod buffer;
pub mod cpu;
pub mod gemm;
pub mod resample;
pub mod rows;
pub mod yuv;

#[cfg(test)]
pub(crate) mod testing;

/// Every kernel variant this build has, by name, and whether this CPU can run it: the GEMM
/// families' microkernels, the row kernels of each instruction set and frame preparation's.
pub fn kernel_variants() -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = Vec::new();
    v.extend(gemm::i8::I8Kernel::ALL.iter().map(|k| (k.name().to_string(), k.supported())));
    v.extend(gemm::f16::F16Kernel::ALL.iter().map(|k| (k.name().to_string(), k.supported())));
    v.extend(gemm::f32::F32Kernel::ALL.iter().map(|k| (k.name().to_string(), k.supported())));
    v.extend(gemm::bf16::Bf16Kernel::ALL.iter().map(|k| (k.name().to_string(), k.supported())));
    for isa in [rows::RowIsa::Scalar, rows::RowIsa::Avx2, rows::RowIsa::Avx512, rows::RowIsa::Neon] {
        v.extend(isa.kernel_names().into_iter().map(|n| (n, isa.supported())));
    }
    v.extend(resample::variants().into_iter().chain(yuv::variants()).map(|(n, ok)| (n.to_string(), ok)));
    v
}

#[cfg(test)]
mod tests {
    /// CI names the variants the machine must run (`EDGEVIT_EXPECT_KERNELS`); each must exist
    /// and run here, so a detection bug or a CPU model without the feature fails the build
    /// instead of silently skipping a kernel's tests.
    #[test]
    fn every_expected_kernel_exists_and_runs_here() {
        let variants = super::kernel_variants();
        for name in crate::testing::expected_kernels() {
            match variants.iter().find(|(n, _)| *n == name) {
                None => panic!("EDGEVIT_EXPECT_KERNELS names {name}, which is not a kernel of this build"),
                Some((_, supported)) => assert!(supported, "{name} is expected to run on this CPU but does not"),
            }
        }
    }
}

/// How many threads a kernel may use. `1` keeps the work on the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Threads {
    /// The thread count, at least 1.
    pub fn get(self) -> usize {
        self.0.max(1)
    }
}

/// An output pointer shared by the tasks of one parallel kernel, each of which writes its own
/// disjoint part of the output (columns of a GEMM, blocks of attention).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: only the GEMM and attention kernels make one, from an output slice their caller has
// borrowed exclusively for the call, and their tasks write disjoint ranges of it.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not field access) so closures capture the whole Send + Sync wrapper.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Asks the CPU to bring the cache line that holds `p` into L1 ahead of a read: a hint that
/// changes nothing else. x86-64 only (PREFETCHT0); elsewhere it does nothing, since no ARM
/// measurement (the qemu counts see no caches) could tell whether it pays there.
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is SSE (baseline on x86-64); it never faults, whatever the address,
    // and writes nothing.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
