//! Running the project's binaries from tests, also when they are aarch64 builds tested on an
//! x86 machine: if the kernel cannot execute the binary itself (no binfmt_misc handler for
//! qemu), it is run through `qemu-aarch64-static`, which inherits `QEMU_CPU`.

use std::process::{Command, Output};

pub fn run(bin: &str, args: &[&str]) -> Output {
    let direct = Command::new(bin).args(args).output();
    // Under qemu-user the failed exec shows up either as ENOEXEC ("Exec format error") or as
    // a child that exits 127 having printed nothing.
    let exec_failed = match &direct {
        Err(e) => e.raw_os_error() == Some(8),
        Ok(out) => out.status.code() == Some(127) && out.stdout.is_empty() && out.stderr.is_empty(),
    };
    if exec_failed && cfg!(target_arch = "aarch64") {
        return Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu", bin])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {bin} under qemu-aarch64-static: {e}"));
    }
    direct.unwrap_or_else(|e| panic!("run {bin}: {e}"))
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
    let direct = Command::new(bin).args(args).envs(env.iter().copied()).output();
    let exec_failed = match &direct {
        Err(e) => e.raw_os_error() == Some(8),
        Ok(out) => out.status.code() == Some(127) && out.stdout.is_empty() && out.stderr.is_empty(),
    };
    if exec_failed && cfg!(target_arch = "aarch64") {
        return Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu", bin])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("run {bin} under qemu-aarch64-static: {e}"));
    }
    direct.unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// Starts `bin` with piped stdin, stdout and stderr (through qemu when needed, as [`run`]).
pub fn spawn(bin: &str, args: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    let start = |cmd: &mut Command| cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    match start(Command::new(bin).args(args)) {
        Err(e) if e.raw_os_error() == Some(8) && cfg!(target_arch = "aarch64") => {
            start(Command::new("qemu-aarch64-static").args(["-L", "/usr/aarch64-linux-gnu", bin]).args(args))
                .unwrap_or_else(|e| panic!("run {bin} under qemu-aarch64-static: {e}"))
        }
        other => other.unwrap_or_else(|e| panic!("run {bin}: {e}")),
    }
}
