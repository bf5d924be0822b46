//! What a binary is and what it runs on: for `--version` and bench's JSON, so that results
//! collected from many boards say where they came from.

use edgevit_kernels::gemm::{f16::F16Kernel, f32::F32Kernel, i8::I8Kernel};
use edgevit_kernels::rows::RowIsa;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`-modified` when the tree had changes), or
/// "unknown".
pub const COMMIT: &str = env!("EDGEVIT_COMMIT");
/// The target triple the binary was built for.
pub const TARGET: &str = env!("EDGEVIT_TARGET");

/// The CPU features the kernels choose by, that this CPU has.
pub fn cpu_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! x86 {
            ($($f:tt),*) => { $(if std::arch::is_x86_feature_detected!($f) { v.push($f); })* };
        }
        x86!("avx2", "fma", "f16c", "avxvnni", "avx512f", "avx512bw", "avx512vnni", "avx512fp16");
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push("neon");
        macro_rules! arm {
            ($($f:tt),*) => { $(if std::arch::is_aarch64_feature_detected!($f) { v.push($f); })* };
        }
        arm!("dotprod", "fp16", "i8mm");
    }
    v
}

/// The CPU's model name, where the system says it (Linux: /proc/cpuinfo).
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // x86 names the model; ARM boards give the part number (0xd08 is a Cortex-A72, 0xd0b an A76).
    field("model name").or_else(|| {
        let part = field("CPU part")?;
        let name = match part.as_str() {
            "0xd03" => "Cortex-A53",
            "0xd08" => "Cortex-A72",
            "0xd0b" => "Cortex-A76",
            "0xd0c" => "Neoverse-N1",
            "0xd40" => "Neoverse-V1",
            "0xd49" => "Neoverse-N2",
            _ => return Some(format!("ARM part {part}")),
        };
        Some(name.to_string())
    })
}

/// The microkernels this CPU runs for each GEMM family, and the row kernels' instruction set.
pub fn best_kernels() -> Vec<String> {
    vec![
        I8Kernel::best().name().to_string(),
        F16Kernel::best().name().to_string(),
        F32Kernel::best().name().to_string(),
        format!("row kernels {}", RowIsa::best().suffix()),
    ]
}

/// `--version`'s text for `program`.
pub fn describe(program: &str) -> String {
    format!(
        "{program} {VERSION} (commit {COMMIT}, {TARGET})\ncpu: {}, {} cores; features: {}\nkernels: {}\n",
        cpu_model().unwrap_or_else(|| "unknown".into()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_features().join(" "),
        best_kernels().join(", ") + &cap_note()
    )
}

/// What `EDGEVIT_ISA` does to the kernels above: nothing (empty), a cap, or why it is refused.
fn cap_note() -> String {
    use edgevit_kernels::cpu::{cap, cap_name, Tier, VARIABLE};
    match cap() {
        Ok(Tier::Extended) => String::new(),
        Ok(t) => format!(" (capped by {VARIABLE}={})", cap_name(t)),
        Err(e) => format!(" ({e}; models will not open)"),
    }
}

/// Today's date in UTC, `YYYY-MM-DD` (the civil calendar from days since 1970, as in Howard
/// Hinnant's `civil_from_days`).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}")
}
