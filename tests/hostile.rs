//! The second reliability round: files that pass their checksums and still lie, inputs that
//! are big, slow or strange, and output that cannot be delivered. Each case ends in one clear
//! line and a non-zero exit (or, for a closed pipe, a quiet success), never a panic or a hang.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use edgevit::config::WeightDType;
use edgevit::Model;

fn edgevit(args: &[&str]) -> Output {
    common::exec::run(env!("CARGO_BIN_EXE_edgevit"), args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr should mention '{needle}': {err}");
}

fn demo_model(dtype: WeightDType) -> PathBuf {
    convert(&repo().join("demo/vit-mnist"), dtype)
}

fn digit() -> String {
    repo().join("demo/examples/digit-3.png").to_str().unwrap().to_string()
}

/// The file's JSON header with `from` replaced by `to`, checksums and lengths fixed.
fn patched(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[64..64 + json_len]).unwrap();
    assert!(json.contains(from), "header has no '{from}'");
    let new = json.replacen(from, to, 1);
    let old_data = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let new_data = (64 + new.len()).div_ceil(64) * 64;
    let mut out = bytes[..64].to_vec();
    out.extend_from_slice(new.as_bytes());
    out.resize(new_data, 0);
    out.extend_from_slice(&bytes[old_data..]);
    out[12..16].copy_from_slice(&crc32fast::hash(new.as_bytes()).to_le_bytes());
    out[16..24].copy_from_slice(&(new.len() as u64).to_le_bytes());
    out[24..32].copy_from_slice(&(new_data as u64).to_le_bytes());
    let pcrc = crc32fast::hash(&out[..60]);
    out[60..64].copy_from_slice(&pcrc.to_le_bytes());
    out
}

/// Overwrites tensor `name`'s element `i` (4 bytes) and fixes its checksum, so the file passes
/// `--verify`.
fn with_f32(path: &Path, name: &str, i: usize, value: f32) -> Vec<u8> {
    let model = Model::open(path).unwrap();
    let header = model.file().header().clone();
    let t = header.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
    let mut bytes = std::fs::read(path).unwrap();
    let data = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let at = data + t.offset as usize;
    bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&bytes[at..at + t.length as usize]);
    let old = format!("\"name\":\"{name}\"");
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[64..64 + json_len]).unwrap().to_string();
    let from = &json[json.find(&old).unwrap()..];
    let entry = &from[..from.find('}').unwrap()];
    let crc_at = entry.find("\"crc32\":").unwrap() + 8;
    let old_crc: String = entry[crc_at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let new_entry = entry.replacen(&format!("\"crc32\":{old_crc}"), &format!("\"crc32\":{crc}"), 1);
    patched(&bytes, entry, &new_entry)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn preprocessing_sizes_are_bounded_at_open_and_at_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(demo_model(WeightDType::F32)).unwrap();
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[64..64 + json_len]).unwrap().to_string();
    let resize_at = json.find("\"resize\":").unwrap();
    let resize = &json[resize_at..resize_at + json[resize_at..].find('}').unwrap() + 1];
    for hostile in [
        r#""resize":{"mode":"exact","height":28,"width":1000000000}"#,
        r#""resize":{"mode":"exact","height":4611686018427387904,"width":28}"#,
        r#""resize":{"mode":"shortest_edge","size":1000000}"#,
    ] {
        let p = write(dir.path(), "m.evit", &patched(&bytes, resize, hostile));
        assert_clean_failure(&edgevit(&["info", "-m", &p, "--verify"]), "outside 1..=2048");
        assert_clean_failure(&edgevit(&["classify", "-m", &p, &digit()]), "outside 1..=2048");
    }
    // The same in a snapshot's preprocessor_config.json is refused by quantize.
    let snap = dir.path().join("snap");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(repo().join("demo/vit-mnist").join(f), snap.join(f)).unwrap();
    }
    std::fs::write(
        snap.join("preprocessor_config.json"),
        r#"{"do_resize": true, "size": {"height": 28, "width": 1000000000}, "do_center_crop": true, "crop_size": 28}"#,
    )
    .unwrap();
    let e = edgevit_tools::hf::import(&snap).err().expect("refused at import");
    assert!(e.contains("resize width 1000000000 is outside 1..=2048"), "{e}");
}

#[test]
fn files_that_pass_verify_but_hold_nan_or_wrong_sums_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f32m = demo_model(WeightDType::F32);
    let int8 = demo_model(WeightDType::Int8);
    for (path, name, value) in [
        (&f32m, "head.bias", f32::NAN),
        (&f32m, "layers.0.ln1.weight", f32::INFINITY),
        (&int8, "layers.1.fc2.scale", f32::NAN),
    ] {
        let p = write(dir.path(), "m.evit", &with_f32(path, name, 2, value));
        let out = edgevit(&["classify", "-m", &p, "--verify", &digit()]);
        assert_clean_failure(&out, &format!("tensor '{name}' holds NaN or infinity"));
        assert!(out.stdout.is_empty(), "nothing is reported for a refused model");
    }
    // Finite but enormous weights overflow: an error, not probabilities of null.
    let p = write(dir.path(), "m.evit", &with_f32(&f32m, "head.bias", 1, 3.0e38));
    let huge = with_f32(Path::new(&p), "head.bias", 2, 3.0e38);
    let p = write(dir.path(), "m2.evit", &huge);
    let model = Model::open(&p).unwrap();
    let mut session = model.session();
    let pixels = vec![0.1f32; model.architecture().input_len()];
    let logits_ok = model.forward(&pixels, &mut session).map(|l| l.iter().all(|v| v.is_finite()));
    // Either every logit is finite (the two biases did not overflow the softmax input), or the
    // forward pass says it is not.
    if let Ok(ok) = logits_ok {
        assert!(ok);
    }
}

#[test]
fn trailing_bytes_and_non_zero_padding_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(demo_model(WeightDType::Int8)).unwrap();
    // Non-zero padding between the JSON and the data section.
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let data = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    if 64 + json_len < data {
        let mut b = bytes.clone();
        b[64 + json_len] = b'x';
        let p = write(dir.path(), "pad.evit", &b);
        assert_clean_failure(
            &edgevit(&["info", "-m", &p]),
            "non-zero bytes between the JSON header and the data section",
        );
    }
    // Bytes after the last tensor that the data section claims.
    let mut b = bytes.clone();
    b.extend_from_slice(&[0u8; 64]);
    let len = u64::from_le_bytes(b[32..40].try_into().unwrap()) + 64;
    b[32..40].copy_from_slice(&len.to_le_bytes());
    let pcrc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&pcrc.to_le_bytes());
    let p = write(dir.path(), "tail.evit", &b);
    assert_clean_failure(&edgevit(&["info", "-m", &p]), "belong to no tensor");
}

#[test]
fn fifos_devices_and_folders_are_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(WeightDType::F32);
    let fifo = dir.path().join("in.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let mut inputs: Vec<String> = vec!["/dev/zero".into(), dir.path().to_str().unwrap().into()];
    if made {
        inputs.push(fifo.to_str().unwrap().into());
    }
    for input in &inputs {
        let out = edgevit(&["classify", "-m", model.to_str().unwrap(), input, &digit()]);
        assert_clean_failure(&out, input);
        // The good input is still classified.
        assert!(String::from_utf8_lossy(&out.stdout).contains("digit-3.png"), "{input}");
    }
    let out = edgevit(&["classify", "-m", dir.path().to_str().unwrap(), &digit()]);
    assert_clean_failure(&out, "is a folder; pass the model file itself");
    if made {
        // A FIFO as model.safetensors: quantize refuses it at once.
        let snap = dir.path().join("snap");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::copy(repo().join("demo/vit-mnist/config.json"), snap.join("config.json")).unwrap();
        std::process::Command::new("mkfifo").arg(snap.join("model.safetensors")).status().unwrap();
        let e = edgevit_tools::hf::import(&snap).err().expect("a FIFO is refused");
        assert!(e.contains("not a regular file"), "{e}");
    }
}

#[test]
fn truncated_jpegs_are_errors_and_the_rest_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(WeightDType::F32);
    let photo = std::fs::read_dir(shared().join("images/imagenet-samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpeg")))
        .unwrap();
    let bytes = std::fs::read(&photo).unwrap();
    for cut in [1000, 5000, bytes.len() / 2, bytes.len() - 3] {
        let p = write(dir.path(), "cut.jpg", &bytes[..cut]);
        let out = edgevit(&["classify", "-m", model.to_str().unwrap(), &p, &digit()]);
        assert_clean_failure(&out, "damaged or truncated");
        assert!(String::from_utf8_lossy(&out.stdout).contains("digit-3.png"), "cut at {cut}");
    }
}

#[test]
fn command_line_limits_fail_at_once() {
    let model = demo_model(WeightDType::F32);
    let m = model.to_str().unwrap();
    let start = std::time::Instant::now();
    assert_clean_failure(&edgevit(&["classify", "-m", m, "--threads", "100000", &digit()]), "more than the 256");
    assert!(start.elapsed().as_secs() < 20, "--threads fails at once");
    for t in ["1e300", "1e-300", "-1", "0", "NaN"] {
        let out = edgevit(&[
            "classify",
            "-m",
            m,
            "--stream",
            "--frame-format",
            "gray8",
            "--frame-size",
            "28x28",
            "--frame-timeout",
            t,
        ]);
        assert_clean_failure(&out, "--frame-timeout");
    }
    // Options after the inputs, and `--` before a file named like an option.
    let out = edgevit(&["classify", "-m", m, &digit(), "--json", "--top-k", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["top"].as_array().unwrap().len(), 1);
}

#[test]
fn text_output_escapes_control_characters_and_non_utf8_names_are_classified() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(WeightDType::F32);
    // A file name with a newline and an escape sequence, and one that is not UTF-8.
    let forged = dir.path().join("a\n   99.99%  FORGED [0]\x1b[31m.png");
    std::fs::copy(digit(), &forged).unwrap();
    let out = edgevit(&["classify", "-m", model.to_str().unwrap(), forged.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\x1b') && !text.lines().any(|l| l.trim_start().starts_with("99.99%")), "{text}");
    assert!(text.contains("\\n") && text.contains("\\u{1b}"), "{text}");
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"\xff\xfe.png"));
    std::fs::copy(digit(), &odd).unwrap();
    let bin = env!("CARGO_BIN_EXE_edgevit");
    let mut cmd = common::exec::command(bin, &["classify", "-m", model.to_str().unwrap(), "--json"]);
    cmd.arg(&odd).arg(digit());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["input"].as_str().unwrap().ends_with("\u{fffd}\u{fffd}.png"), "{}", lines[0]);
}

#[test]
fn write_errors_fail_and_a_closed_pipe_ends_quietly_in_both_modes() {
    let model = demo_model(WeightDType::F32);
    let m = model.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_edgevit");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if let Ok(full) = full {
        let out = common::exec::command(bin, &["classify", "-m", m, &digit()]).stdout(full).output().unwrap();
        assert_clean_failure(&out, "cannot write the results");
    }
    // A reader that closes the pipe after one line: exit 0, nothing on stderr.
    let frames = vec![100u8; 28 * 28 * 40];
    for args in [
        vec!["classify", "-m", m, "--json", &digit(), &digit(), &digit()],
        vec!["classify", "-m", m, "--stream", "--frame-format", "gray8", "--frame-size", "28x28"],
    ] {
        use std::io::{BufRead, Write};
        let mut child = common::exec::spawn(bin, &args);
        let mut stdin = child.stdin.take().unwrap();
        let input = frames.clone();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        drop(out);
        let status = child.wait().unwrap();
        writer.join().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!first.is_empty());
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn a_killed_writer_leaves_no_partial_file_behind_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.evit");
    let bytes = std::fs::read(demo_model(WeightDType::Int8)).unwrap();
    // Partial files from a process that no longer runs (pid 2147483647 cannot exist).
    let stale = [dir.path().join("m.evit.partial-2147483647-0"), dir.path().join("m.evit.partial")];
    for s in &stale {
        std::fs::write(s, [1u8; 100]).unwrap();
    }
    let other = dir.path().join("other.evit.partial-2147483647-0");
    std::fs::write(&other, [1u8; 10]).unwrap();
    edgevit::format::write_bytes(&target, &bytes).unwrap();
    assert!(Model::open(&target).is_ok());
    assert!(stale.iter().all(|s| !s.exists()), "stale partial files of m.evit are removed");
    assert!(other.exists(), "another target's files are left alone");
    // Writers at once all succeed: each has its own temporary file.
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4).map(|_| scope.spawn(|| edgevit::format::write_bytes(&target, &bytes))).collect();
        for w in writers {
            w.join().unwrap().unwrap();
        }
    });
    assert!(Model::open(&target).is_ok());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the model and the other target's file: {left:?}");
}

#[test]
fn huge_frame_sizes_cost_memory_only_as_frames_arrive() {
    let model = demo_model(WeightDType::F32);
    let bin = env!("CARGO_BIN_EXE_edgevit");
    // 16384 x 16384 RGBA frames would be 1 GiB each: while none arrives, none is allocated.
    let args = [
        "classify",
        "-m",
        model.to_str().unwrap(),
        "--stream",
        "--frame-format",
        "rgba",
        "--frame-size",
        "16384x16384",
    ];
    let mut child = common::exec::spawn(bin, &args);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_clean_failure(&out, "held no frames");
    assert!(peak_kb < 300_000, "peak RSS {peak_kb} kB while waiting for the first frame");
}
