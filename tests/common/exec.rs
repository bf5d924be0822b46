//! Running the project's binaries from tests, also when they are aarch64 builds tested on an
//! x86 machine: if the kernel cannot execute the binary itself (no binfmt_misc handler for
//! qemu), it is run through `qemu-aarch64-static`, which inherits `QEMU_CPU`.

use std::process::{Command, Output};

pub fn run(bin: &str, args: &[&str]) -> Output {
    match Command::new(bin).args(args).output() {
        Ok(out) => out,
        // ENOEXEC: "Exec format error".
        Err(e) if e.raw_os_error() == Some(8) => Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu", bin])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {bin} under qemu-aarch64-static: {e}")),
        Err(e) => panic!("run {bin}: {e}"),
    }
}
