//! The `edgevit` binary end to end: outputs, and what happens with bad inputs and flags.

mod common;

use std::process::Output;

use common::*;
use edgevit::config::WeightDType;
use edgevit::npy::npy_f32_bytes;

fn edgevit(args: &[&str]) -> Output {
    common::exec::run(env!("CARGO_BIN_EXE_edgevit"), args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr should mention '{needle}': {err}");
}

#[test]
fn json_logits_from_npy_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_f32().to_str().unwrap().to_string();
    let entries = reference_entries();
    let picks = [0usize, 20];
    let mut paths = Vec::new();
    for (k, &i) in picks.iter().enumerate() {
        let (_, pixels, _) = &entries[i];
        // One file in each accepted shape: [1,3,224,224] and [3,224,224].
        let shape: &[usize] = if k == 0 { &[1, 3, 224, 224] } else { &[3, 224, 224] };
        let p = dir.path().join(format!("input{k}.npy"));
        std::fs::write(&p, npy_f32_bytes(shape, pixels)).unwrap();
        paths.push(p.to_str().unwrap().to_string());
    }
    let mut args = vec!["classify", "-m", &model, "--json", "--logits", "--top-k", "3"];
    args.extend(paths.iter().map(String::as_str));
    let out = edgevit(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 2);
    for ((line, &i), path) in lines.iter().zip(&picks).zip(&paths) {
        let (name, _, want) = &entries[i];
        assert_eq!(line["input"], path.as_str());
        let logits: Vec<f32> = line["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert!(rel_max_diff(&logits, want) <= 1e-3, "{name}");
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["index"].as_u64().unwrap() as usize, argmax(want), "{name}");
        assert!(top[0]["label"].as_str().is_some_and(|l| !l.is_empty()));
        let p0 = top[0]["prob"].as_f64().unwrap();
        assert!(p0 > 0.0 && p0 <= 1.0 && p0 >= top[1]["prob"].as_f64().unwrap());
        assert!(line["ms"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn bad_inputs_fail_alone_and_the_rest_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let demo = convert(&repo().join("demo/vit-mnist"), WeightDType::F32);
    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"this is not a JPEG").unwrap();
    let truncated = dir.path().join("truncated.png");
    let png = std::fs::read(repo().join("demo/examples/digit-3.png")).unwrap();
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let wrong_shape = dir.path().join("wrong.npy");
    std::fs::write(&wrong_shape, npy_f32_bytes(&[3, 27, 28], &vec![0.0; 3 * 27 * 28])).unwrap();
    let good = repo().join("demo/examples/digit-7.png");
    let args: Vec<&str> = vec![
        "classify",
        "-m",
        demo.to_str().unwrap(),
        "--json",
        garbage.to_str().unwrap(),
        "/no/such/image.png",
        truncated.to_str().unwrap(),
        wrong_shape.to_str().unwrap(),
        good.to_str().unwrap(),
    ];
    let out = edgevit(&args);
    assert_clean_failure(&out, "4 of 5 inputs failed");
    let err = text(&out.stderr);
    for needle in ["garbage.jpg", "/no/such/image.png", "truncated.png", "wrong.npy: tensor shape [3, 27, 28]"] {
        assert!(err.contains(needle), "stderr should name {needle}: {err}");
    }
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "the good input is still classified");
    assert_eq!(lines[0]["top"][0]["label"], "7");
}

#[test]
fn readable_output_names_each_digit() {
    let demo = convert(&repo().join("demo/vit-mnist"), WeightDType::F32);
    let examples: Vec<String> =
        (0..10).map(|d| repo().join(format!("demo/examples/digit-{d}.png")).to_str().unwrap().to_string()).collect();
    let mut args = vec!["classify", "-m", demo.to_str().unwrap(), "--top-k", "2"];
    args.extend(examples.iter().map(String::as_str));
    let out = edgevit(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let blocks: Vec<&str> = stdout.split("digit-").skip(1).collect();
    assert_eq!(blocks.len(), 10);
    for (d, block) in blocks.iter().enumerate() {
        let first = block.lines().nth(1).expect("a ranked line");
        assert!(first.trim_end().ends_with(&format!("{d} [{d}]")), "digit {d}: {block}");
        assert_eq!(block.lines().filter(|l| l.contains('%')).count(), 2);
    }
}

#[test]
fn nonsense_flags_and_damaged_models_are_clear_errors() {
    let demo = convert(&repo().join("demo/vit-mnist"), WeightDType::F32);
    let m = demo.to_str().unwrap();
    let img = repo().join("demo/examples/digit-1.png");
    let img = img.to_str().unwrap();
    assert_clean_failure(&edgevit(&["classify", "-m", m, "--top-k", "0", img]), "--top-k must be at least 1");
    assert_clean_failure(&edgevit(&["classify", "-m", m, "--logits", img]), "--logits needs --json");
    assert_clean_failure(&edgevit(&["classify", "-m", m, "--threads", "0", img]), "--threads must be at least 1");
    assert_clean_failure(&edgevit(&["classify", "-m", m]), "no inputs given");
    let unknown = edgevit(&["classify", "-m", m, "--frobnicate", img]);
    assert_clean_failure(&unknown, "edgevit: Unrecognized argument: --frobnicate (see `edgevit classify --help`)");
    assert_eq!(text(&unknown.stderr).lines().count(), 1, "{}", text(&unknown.stderr));
    assert_clean_failure(&edgevit(&["frobnicate"]), "(see `edgevit --help`)");
    assert_clean_failure(&edgevit(&["frobnicate", "--x"]), "frobnicate (see `edgevit --help`)");
    // `-` is stdin for inputs only; as a model it is a file name like any other.
    assert_clean_failure(&edgevit(&["classify", "-m", "-", img]), "edgevit: -: ");
    assert_clean_failure(&edgevit(&["classify", "-m", "/no/such/model.evit", img]), "/no/such/model.evit");

    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&demo).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "shorter than the 64-byte prefix"),
        ("truncated", bytes[..bytes.len() - 100].to_vec(), "truncated"),
        ("magic", [b"PK\x03\x04".as_slice(), &bytes[4..]].concat(), "wrong magic number"),
        ("header", flip(&bytes, 200), "JSON header is damaged"),
        ("version", with_version(&bytes, 9), "format version 9 is newer"),
    ];
    for (name, data, needle) in cases {
        let p = dir.path().join(format!("{name}.evit"));
        std::fs::write(&p, data).unwrap();
        let out = edgevit(&["classify", "-m", p.to_str().unwrap(), img]);
        assert_clean_failure(&out, needle);
    }
    // Damage in tensor data is found by --verify.
    let p = dir.path().join("data.evit");
    std::fs::write(&p, flip(&bytes, bytes.len() - 10)).unwrap();
    assert!(edgevit(&["info", "-m", p.to_str().unwrap()]).status.success());
    assert_clean_failure(&edgevit(&["info", "-m", p.to_str().unwrap(), "--verify"]), "is damaged: checksum");
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x20;
    b
}

/// A file claiming another version, with the prefix checksum recomputed so only the version
/// is wrong.
fn with_version(bytes: &[u8], version: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Bitwise CRC-32 (IEEE), written out here so the test does not trust the code it checks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn info_describes_the_model() {
    let out = edgevit(&["info", "-m", tiny_f32().to_str().unwrap(), "--verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "12 layers, hidden 192, 3 heads of 64",
        "224x224",
        "197 tokens",
        "1000 (tench",
        "all 152 tensor checksums match",
    ] {
        assert!(s.contains(needle), "info should say '{needle}':\n{s}");
    }
}

#[test]
fn info_reports_int8_storage_and_the_kernel_that_will_run() {
    let out = edgevit(&["info", "-m", tiny_int8().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let kernel = edgevit_kernels::gemm::i8::I8Kernel::best().name();
    for needle in ["int8 (per-channel, k4n16 packed); patch_embed, head in f32", kernel] {
        assert!(s.contains(needle), "info should say '{needle}':\n{s}");
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim()).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn bench_reports_latency_memory_compute_and_op_shares() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ti.evit");
    let bytes = edgevit::synth::build(edgevit::synth::Preset::Tiny, edgevit::config::WeightDType::Int8, 1).unwrap();
    edgevit::format::write_bytes(&path, &bytes).unwrap();
    let model = path.to_str().unwrap();
    for args in [
        vec!["bench", "-m", model, "--runs", "4", "--warmup", "1", "--json"],
        vec!["bench", "-m", model, "--runs", "4", "--warmup", "0", "--json", "--no-mmap", "--threads", "1"],
        vec!["bench", "--arch", "vit-ti16", "--dtype", "f32", "--runs", "3", "--warmup", "0", "--json"],
    ] {
        let r = json(&edgevit(&args));
        assert_eq!(r["runs"].as_u64(), Some(if args.contains(&"f32") { 3 } else { 4 }), "{r}");
        let p = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
        assert!(p("min_ms") > 0.0 && p("min_ms") <= p("p50_ms") && p("p50_ms") <= p("p90_ms"));
        assert!(p("p90_ms") <= p("p99_ms") && p("open_ms") >= 0.0 && p("first_inference_ms") > 0.0);
        // ViT-Ti/16 by hand: 196 patches x 768 x 192, then per layer 197 tokens through
        // 192x576, 192x192, 192x768 and 768x192, plus 2 x 197^2 x 192 in attention; 192x1000.
        let macs = 196.0 * 768.0 * 192.0
            + 12.0 * (197.0 * 192.0 * (576.0 + 192.0 + 768.0 + 768.0) + 2.0 * 197.0 * 197.0 * 192.0)
            + 192.0 * 1000.0;
        assert!((p("gops_per_inference") - 2.0 * macs / 1e9).abs() < 1e-6, "{r}");
        let shares: f64 = r["op_share"].as_array().unwrap().iter().map(|o| o["share"].as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-6, "{r}");
        assert!(r["op_share"].as_array().unwrap().iter().any(|o| o["op"] == "attention"));
        assert!(!r["kernels"].as_array().unwrap().is_empty());
        let machine = &r["machine"];
        assert_eq!(machine["edgevit"], env!("CARGO_PKG_VERSION"), "{r}");
        assert_eq!(machine["target"], edgevit::version::TARGET, "{r}");
        assert!(machine["cores"].as_u64().is_some_and(|n| n >= 1) && machine["commit"].is_string(), "{r}");
        assert!(machine["date"].as_str().is_some_and(|d| d.len() == 10 && d.starts_with("20")), "{r}");
        if cfg!(target_os = "linux") {
            assert!(p("peak_rss_mb") > 1.0);
        }
    }
    let text_out = edgevit(&["bench", "-m", model, "--runs", "2", "--warmup", "0"]);
    assert!(text_out.status.success());
    for needle in ["p50", "images/s", "peak RSS", "GOP/s", "attention"] {
        assert!(text(&text_out.stdout).contains(needle), "{needle}: {}", text(&text_out.stdout));
    }
    for (args, needle) in [
        (vec!["bench"], "--arch"),
        (vec!["bench", "--arch", "vit-b16", "--dtype", "bf16"], "not one of"),
        (vec!["bench", "--arch", "vit-b16", "-m", model], "not both"),
        (vec!["bench", "-m", model, "--dtype", "int8"], "--dtype goes with --arch"),
        (vec!["bench", "-m", model, "--runs", "0"], "--runs"),
        (vec!["bench", "-m", model, "--seconds", "-1"], "--seconds"),
        (vec!["bench", "-m", model, "--threads", "1,x"], "--threads 1,x: 'x'"),
        (vec!["bench", "-m", model, "--threads", "0"], "at least 1"),
        (vec!["bench", "--arch", "vit-ti16,vit-x", "--runs", "1"], "--arch vit-ti16,vit-x"),
        (vec!["bench", "-m", model, "-m", model, "--json"], "--format json"),
        (vec!["bench", "-m", model, "--format", "xml"], "md, csv, json"),
    ] {
        assert_clean_failure(&edgevit(&args), needle);
    }
}

#[test]
fn bench_profile_has_every_layer_and_shares_that_sum_to_one() {
    let args = ["bench", "--arch", "vit-ti16", "--threads", "1", "--runs", "2", "--warmup", "0", "--json", "--profile"];
    let r = json(&edgevit(&args));
    let rows = r["profile"].as_array().unwrap();
    // Patch embedding, 12 layers x (layernorm, qkv, attention, projection, mlp), the final
    // layernorm and the classifier.
    assert_eq!(rows.len(), 1 + 12 * 5 + 2, "{r}");
    let shares: f64 = rows.iter().map(|row| row["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    for (i, row) in rows[1..61].iter().enumerate() {
        assert_eq!(row["layer"], i / 5, "{row}");
        assert!(row["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{row}");
        assert!(row["gops"].as_f64().is_some() != (row["op"] == "layernorm"), "{row}");
    }
    // The per-layer rows add up to the op shares the report already had.
    let mlp: f64 = rows.iter().filter(|row| row["op"] == "mlp").map(|row| row["share"].as_f64().unwrap()).sum();
    let op = r["op_share"].as_array().unwrap().iter().find(|o| o["op"] == "mlp").unwrap()["share"].as_f64().unwrap();
    assert!((mlp - op).abs() < 1e-9, "{mlp} vs {op}");
    let out = edgevit(&["bench", "--arch", "vit-ti16", "--threads", "1", "--runs", "1", "--warmup", "0", "--profile"]);
    let table = text(&out.stdout);
    assert!(table.contains("layer  op") && table.contains("   11  mlp") && table.contains("total"), "{table}");
}

#[test]
fn bench_sweeps_every_combination_into_one_table() {
    // Two dtypes natively; one under qemu, where each ViT-Ti inference takes seconds.
    let dtypes: &[&str] = if cfg!(target_arch = "aarch64") { &["int8"] } else { &["int8", "f32"] };
    let dtype_list = dtypes.join(",");
    let base =
        ["bench", "--arch", "vit-ti16", "--dtype", &dtype_list, "--threads", "1,2", "--runs", "1", "--warmup", "0"];
    let rows = 2 * dtypes.len();
    let md = edgevit(&base);
    assert!(md.status.success(), "{}", text(&md.stderr));
    let md = text(&md.stdout);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines.len(), 2 + rows, "{md}");
    assert!(lines[0].starts_with("| model | storage | threads | mean ms | stddev ms | p50 ms | p99 ms"), "{md}");
    let cells = |l: &str| l.trim_matches('|').split(" | ").map(str::trim).map(str::to_string).collect::<Vec<_>>();
    let configs: Vec<(String, String)> =
        lines[2..].iter().map(|l| (cells(l)[0].clone(), cells(l)[2].clone())).collect();
    let want: Vec<(String, String)> =
        dtypes.iter().flat_map(|d| ["1", "2"].map(|n| (format!("random vit-ti16 {d}"), n.to_string()))).collect();
    assert_eq!(configs, want, "{md}");
    let mut args = base.to_vec();
    args.extend(["--format", "json"]);
    let all = json(&edgevit(&args));
    let threads: Vec<u64> = all.as_array().unwrap().iter().map(|r| r["threads"].as_u64().unwrap()).collect();
    assert_eq!(threads, [1, 2].repeat(dtypes.len()));
    assert!(all[0]["stddev_ms"].as_f64().is_some_and(|s| s >= 0.0));
    args.truncate(base.len());
    args.extend(["--format", "csv"]);
    let csv = text(&edgevit(&args).stdout);
    assert_eq!(csv.lines().count(), 1 + rows, "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains("\"int8 (patch_embed, head in f32)\""), "{csv}");
}

#[test]
fn info_describes_groups_and_no_mmap_classifies_the_same() {
    let model = tiny_int8().to_str().unwrap().to_string();
    let out = edgevit(&["info", "-m", &model, "--no-mmap"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in
        ["read into memory", "attention    int8 k4n16", "mlp          int8 k4n16", "patch_embed  f32", "tench"]
    {
        assert!(s.contains(needle), "{needle}: {s}");
    }
    let photo = shared().join("images/photos/coffee.png");
    let photo = photo.to_str().unwrap();
    let mapped = edgevit(&["classify", "-m", &model, "--json", "--logits", photo]);
    let read = edgevit(&["classify", "-m", &model, "--json", "--logits", "--no-mmap", "--verify", photo]);
    let strip = |o: &Output| {
        let mut v = json(o);
        v.as_object_mut().unwrap().remove("ms");
        v
    };
    assert_eq!(strip(&mapped), strip(&read));
}

#[test]
fn version_names_the_build_and_the_cpu() {
    let out = edgevit(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let first = format!("edgevit {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(s.starts_with(&first) && s.contains(edgevit::version::TARGET), "{s}");
    assert!(s.contains("cores; features:") && s.contains(edgevit_kernels::gemm::i8::I8Kernel::best().name()), "{s}");
}

#[test]
fn info_labels_prints_every_label_in_order() {
    let out = edgevit(&["info", "-m", tiny_int8().to_str().unwrap(), "--labels"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = edgevit::Model::open(tiny_int8()).unwrap();
    let printed: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(printed.len(), 1000);
    assert_eq!(printed, model.labels());
}

#[test]
fn folders_and_stdin_are_inputs() {
    use std::io::Write;
    let demo = convert(&repo().join("demo/vit-mnist"), WeightDType::F32);
    let m = demo.to_str().unwrap();
    let examples = repo().join("demo/examples");
    let mut pngs: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    pngs.sort();
    // A folder gives its images in sorted order, the same results as naming each file.
    let folder = edgevit(&["classify", "-m", m, "--json", examples.to_str().unwrap()]);
    let files =
        edgevit(&[&["classify", "-m", m, "--json"][..], &pngs.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    assert!(folder.status.success() && files.status.success(), "{}", text(&folder.stderr));
    let tops = |o: &Output| -> Vec<(String, serde_json::Value)> {
        text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["input"].as_str().unwrap().to_string(), v["top"].clone()))
            .collect()
    };
    let (from_folder, from_files) = (tops(&folder), tops(&files));
    assert_eq!(
        from_folder.iter().map(|t| &t.1).collect::<Vec<_>>(),
        from_files.iter().map(|t| &t.1).collect::<Vec<_>>()
    );
    assert_eq!(from_folder.iter().map(|t| t.0.clone()).collect::<Vec<_>>(), pngs);

    // One image on stdin, named "-", classified as the file is.
    let mut child = common::exec::spawn(env!("CARGO_BIN_EXE_edgevit"), &["classify", "-m", m, "--json", "-"]);
    child.stdin.take().unwrap().write_all(&std::fs::read(&pngs[0]).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdin_top = tops(&out);
    assert_eq!((stdin_top[0].0.as_str(), &stdin_top[0].1), ("-", &from_files[0].1));

    // An empty folder is an error in its place; the other inputs are still classified.
    let empty = tempfile::tempdir().unwrap();
    let mixed = edgevit(&["classify", "-m", m, "--json", empty.path().to_str().unwrap(), &pngs[0]]);
    assert_eq!(mixed.status.code(), Some(1));
    assert_eq!(tops(&mixed).len(), 1);
    assert!(
        text(&mixed.stderr).contains(
            "the folder holds no jpg, jpeg, png, webp, bmp, npy files (its subfolders were not searched); \
             add --recursive to search them"
        ),
        "{}",
        text(&mixed.stderr)
    );
}

#[test]
fn every_subcommand_help_shows_examples() {
    for sub in ["classify", "eval", "bench", "info"] {
        let out = edgevit(&[sub, "--help"]);
        let help = text(&out.stdout);
        assert!(
            out.status.success() && help.contains("Examples:\n") && help.contains(&format!("edgevit {sub} ")),
            "{sub}: {help}"
        );
    }
}

/// `EDGEVIT_ISA` caps the kernels a model uses (`edgevit_kernels::cpu`): under each cap of this
/// build `info` names that tier's kernels, and the real ViT-Tiny int8 gives the same top class
/// on a reference input. Below the native tier every kernel matches its scalar twin bit for
/// bit, and attention runs the same arithmetic (int8 or f32 scores, f32 values), so the scalar
/// cap and the `avx2` / `neon` cap print the same logits. A value the build does not know is
/// refused with the ones it does.
#[test]
fn an_isa_cap_runs_that_tiers_kernels_with_the_same_answer() {
    use edgevit_kernels::cpu::{parse, Tier, CAPS};
    use edgevit_kernels::rows::RowIsa;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_int8().to_str().unwrap().to_string();
    let entries = reference_entries();
    let (name, pixels, want) = &entries[3];
    let input = dir.path().join("input.npy");
    std::fs::write(&input, npy_f32_bytes(&[3, 224, 224], pixels)).unwrap();
    let run = |cap: &str, args: &[&str]| {
        let out = common::exec::run_with_env(env!("CARGO_BIN_EXE_edgevit"), args, &[("EDGEVIT_ISA", cap)]);
        assert!(out.status.success(), "EDGEVIT_ISA={cap}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let mut base_logits: Vec<(Tier, Vec<f64>)> = Vec::new();
    for &(cap, tier) in CAPS {
        assert_eq!(parse(cap), Ok(tier));
        let info = run(cap, &["info", "-m", &model]);
        let kernels = info.lines().find(|l| l.starts_with("kernels:")).expect("info names its kernels");
        let want_rows = match tier {
            Tier::Scalar => Some("layernorm_scalar"),
            Tier::Base if RowIsa::Neon.supported() => Some("layernorm_neon"),
            Tier::Base if RowIsa::Avx2.supported() => Some("layernorm_avx2"),
            _ => None,
        };
        if let Some(rows) = want_rows {
            assert!(kernels.contains(rows), "EDGEVIT_ISA={cap}: {kernels}");
        }
        if tier == Tier::Scalar {
            assert!(kernels.contains("i8_gemm_4x16c4_scalar") && !kernels.contains("avx") && !kernels.contains("neon"));
        }
        let line = run(cap, &["classify", "-m", &model, "--json", "--logits", input.to_str().unwrap()]);
        let json: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        let logits: Vec<f64> = json["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let as_f32: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
        assert_eq!(argmax(&as_f32), argmax(want), "EDGEVIT_ISA={cap}, {name}");
        if tier < Tier::Extended {
            base_logits.push((tier, logits));
        }
    }
    let (first, rest) = base_logits.split_first().unwrap();
    for (tier, logits) in rest {
        assert_eq!(logits, &first.1, "{tier:?} and {:?} caps differ", first.0);
    }
    let out = common::exec::run_with_env(
        env!("CARGO_BIN_EXE_edgevit"),
        &["classify", "-m", &model, input.to_str().unwrap()],
        &[("EDGEVIT_ISA", "sse9")],
    );
    assert_clean_failure(&out, "EDGEVIT_ISA=sse9 is not an instruction-set cap of this build: use one of scalar");
}
