//! Running the project's binaries from tests, also when they are aarch64 builds tested on an
//! x86 machine: if the kernel cannot execute the binary itself (no binfmt_misc handler for
//! qemu), it is run through `qemu-aarch64-static`, which inherits `QEMU_CPU`.

use std::process::{Command, Output};

pub fn run(bin: &str, args: &[&str]) -> Output {
    command(bin, args).output().unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// [`run`] with `input` written to the program's stdin (from another thread, so a program
/// that stops reading early cannot deadlock the test).
pub fn run_with_input(bin: &str, args: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write;
    let mut child = spawn(bin, args);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        // The program may exit before reading everything (that is what some tests check).
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for the program");
    writer.join().expect("stdin writer");
    out
}

/// [`run`] with extra environment variables.
pub fn run_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(bin, args).envs(env.iter().copied()).output().unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// Starts `bin` with piped stdin, stdout and stderr (through qemu when needed, as [`run`]).
pub fn spawn(bin: &str, args: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    let mut cmd = command(bin, args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// A command that runs `bin`: directly, or through `qemu-aarch64-static` when this aarch64
/// test runs under qemu-user without a binfmt handler (where a direct exec fails, either with
/// ENOEXEC or as a child that exits 127 having printed nothing, so it is probed once).
pub fn command(bin: &str, args: &[&str]) -> Command {
    if cfg!(target_arch = "aarch64") && needs_qemu(bin) {
        let mut cmd = Command::new("qemu-aarch64-static");
        cmd.args(["-L", "/usr/aarch64-linux-gnu", bin]).args(args);
        return cmd;
    }
    let mut cmd = Command::new(bin);
    cmd.args(args);
    cmd
}

fn needs_qemu(bin: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static PROBED: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let mut probed = PROBED.get_or_init(Default::default).lock().unwrap();
    *probed.entry(bin.to_string()).or_insert_with(|| match Command::new(bin).arg("--help").output() {
        Err(e) => e.raw_os_error() == Some(8),
        Ok(out) => out.status.code() == Some(127) && out.stdout.is_empty() && out.stderr.is_empty(),
    })
}
