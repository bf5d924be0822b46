//! Records the git commit the binaries are built from (for `--version` and bench's JSON), or
//! "unknown" outside a git checkout.

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    println!("cargo:rustc-env=EDGEVIT_COMMIT={commit}{}", if dirty { "-modified" } else { "" });
    println!("cargo:rustc-env=EDGEVIT_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    // Rebuild when HEAD moves: HEAD itself, and the branch file it points to.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            if Path::new(".git").join(branch).exists() {
                println!("cargo:rerun-if-changed=.git/{branch}");
            }
        }
    }
}
