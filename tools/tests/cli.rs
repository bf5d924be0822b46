//! `edgevit-tools quantize` end to end: a good snapshot, and every kind of bad one gives a
//! one-line error naming the problem and exit code 1.

use std::path::{Path, PathBuf};
use std::process::Output;

#[path = "../../tests/common/exec.rs"]
#[allow(dead_code)]
mod exec;

fn tools(args: &[&str]) -> Output {
    exec::run(env!("CARGO_BIN_EXE_edgevit-tools"), args)
}

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../demo/vit-mnist")
}

/// A writable copy of the demo snapshot.
fn copy_demo(dir: &Path) -> PathBuf {
    let snap = dir.join("snap");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(demo().join(f), snap.join(f)).unwrap();
    }
    snap
}

fn quantize(snapshot: &Path, out: &Path) -> Output {
    tools(&["quantize", snapshot.to_str().unwrap(), "--dtype", "f32", "-o", out.to_str().unwrap()])
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("edgevit-tools: ") && err.contains(needle), "stderr should mention '{needle}': {err}");
}

#[test]
fn quantizes_the_demo_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.evit");
    let run = quantize(&demo(), &out);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let model = edgevit::Model::open(&out).unwrap();
    assert_eq!(model.architecture().num_layers, 4);
    assert_eq!(model.labels().len(), 10);
    model.file().verify().unwrap();
    assert!(!dir.path().join("demo.evit.partial").exists());
}

#[test]
fn bad_snapshots_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.evit");

    assert_one_line_error(&quantize(Path::new("/no/such/snapshot"), &out), "no such snapshot folder");

    let snap = copy_demo(dir.path());
    let config = std::fs::read_to_string(snap.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(snap.join("config.json"), v.to_string()).unwrap();
    assert_one_line_error(&quantize(&snap, &out), "required field 'hidden_size' is missing");

    // A config that contradicts the tensors: one layer more than the checkpoint has.
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["num_hidden_layers"] = 5.into();
    std::fs::write(snap.join("config.json"), v.to_string()).unwrap();
    assert_one_line_error(
        &quantize(&snap, &out),
        "tensor 'vit.encoder.layer.4.attention.attention.query.weight' (expected shape [64, 64]) is missing",
    );

    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["num_hidden_layers"] = 3.into();
    std::fs::write(snap.join("config.json"), v.to_string()).unwrap();
    assert_one_line_error(&quantize(&snap, &out), "unexpected tensor 'vit.encoder.layer.3.");

    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["intermediate_size"] = 96.into();
    std::fs::write(snap.join("config.json"), v.to_string()).unwrap();
    assert_one_line_error(
        &quantize(&snap, &out),
        "tensor 'vit.encoder.layer.0.intermediate.dense.weight' has shape [128, 64]; config.json implies [96, 64]",
    );

    std::fs::write(snap.join("config.json"), "{ not json").unwrap();
    assert_one_line_error(&quantize(&snap, &out), "config.json: invalid JSON");
    std::fs::write(snap.join("config.json"), &config).unwrap();

    let weights = std::fs::read(snap.join("model.safetensors")).unwrap();
    std::fs::write(snap.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    assert_one_line_error(&quantize(&snap, &out), "not a readable safetensors file");
    std::fs::write(snap.join("model.safetensors"), &weights[..5]).unwrap();
    assert_one_line_error(&quantize(&snap, &out), "not a readable safetensors file");

    // A checkpoint whose patch embedding has the wrong shape.
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec())).collect();
    let pe = tensors.iter_mut().find(|t| t.0 == "vit.embeddings.patch_embeddings.projection.weight").unwrap();
    pe.1 = vec![64, 3, 49];
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    std::fs::write(snap.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    assert_one_line_error(&quantize(&snap, &out), "tensor 'vit.embeddings.patch_embeddings.projection.weight' has shape [64, 3, 49]; config.json implies [64, 3, 7, 7]");

    std::fs::write(snap.join("model.safetensors"), &weights).unwrap();
    // Lenient spellings that would silently change the model are refused.
    for (edit, needle) in [
        (serde_json::json!({"id2label": {"0": "a", "1": "b", "007": "c"}}), "id2label key '007' is not a plain index"),
        (serde_json::json!({"id2label": {"+8": "a"}}), "id2label key '+8' is not a plain index"),
        (serde_json::json!({"hidden_act": 3}), "'hidden_act' must be a string"),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
        for (k, val) in edit.as_object().unwrap() {
            v[k] = val.clone();
        }
        std::fs::write(snap.join("config.json"), v.to_string()).unwrap();
        assert_one_line_error(&quantize(&snap, &out), needle);
    }
    std::fs::write(snap.join("config.json"), &config).unwrap();
    // A safetensors header that names a tensor twice.
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&weights[8..8 + header_len]).unwrap();
    let first_entry_end = header.find('}').unwrap() + 1;
    let dup = format!("{{{},{}", &header[1..first_entry_end], &header[1..]);
    let mut dup_bytes = (dup.len() as u64).to_le_bytes().to_vec();
    dup_bytes.extend_from_slice(dup.as_bytes());
    dup_bytes.extend_from_slice(&weights[8 + header_len..]);
    std::fs::write(snap.join("model.safetensors"), &dup_bytes).unwrap();
    assert_one_line_error(&quantize(&snap, &out), "twice");
    // Non-finite weights, and f16 storage of values half precision cannot hold.
    for (value, dtype, needle) in
        [(f32::NAN, "f32", "refusing to convert non-finite weights"), (1e6, "f16", "beyond half precision's 65504")]
    {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
            st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec())).collect();
        let w = tensors.iter_mut().find(|t| t.0 == "vit.encoder.layer.1.output.dense.weight").unwrap();
        w.2[8..12].copy_from_slice(&value.to_le_bytes());
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s, d)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
            })
            .collect();
        std::fs::write(snap.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
        let o = tools(&["quantize", snap.to_str().unwrap(), "--dtype", dtype, "-o", out.to_str().unwrap()]);
        assert_one_line_error(&o, needle);
    }
    std::fs::write(snap.join("model.safetensors"), &weights).unwrap();
    // A file where the snapshot folder belongs.
    assert_one_line_error(
        &quantize(&snap.join("model.safetensors"), &out),
        "is a file; pass the snapshot folder that holds it",
    );
    // Flag errors come from argh: the message, then a pointer to --help.
    let bad_flag = tools(&["quantize", snap.to_str().unwrap(), "--dtype", "int4", "-o", "x.evit"]);
    assert_eq!(bad_flag.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_flag.stderr)
        .contains("'--dtype' with value 'int4': 'int4' is not one of: int8, f16, f32"));
    assert!(!out.exists(), "no output file after failures");
}

#[test]
fn synth_writes_the_same_random_model_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    for (name, seed) in [("a.evit", "3"), ("b.evit", "3"), ("c.evit", "4")] {
        let out = tools(&["synth", "--arch", "vit-ti16", "--dtype", "int8", "--seed", seed, "-o", &path(name)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let read = |n: &str| std::fs::read(path(n)).unwrap();
    assert_eq!(read("a.evit"), read("b.evit"));
    assert_ne!(read("a.evit"), read("c.evit"));
    let model = edgevit::Model::open(path("a.evit")).unwrap();
    model.file().verify().unwrap();
    assert_eq!(model.architecture().hidden_size, 192);
    assert_eq!(model.config().weights.keep_f32, ["patch_embed", "head"]);

    assert_one_line_error(&tools(&["synth", "--arch", "vit-ti16", "--dtype", "f8", "-o", &path("x")]), "not one of");
    let out = tools(&["synth", "--arch", "resnet50", "-o", &path("x")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("vit-b16"));
}

#[path = "../../tests/common/timm_layout.rs"]
mod timm_layout;

#[test]
fn quantizes_a_timm_folder_with_heads_and_labels_given() {
    let dir = tempfile::tempdir().unwrap();
    let timm = dir.path().join("timm");
    timm_layout::write_timm_folder(&demo(), &timm, "vit_mnist_patch7_28", 1.0, None);
    let out = dir.path().join("m.evit");
    let (t, o) = (timm.to_str().unwrap(), out.to_str().unwrap());
    assert_one_line_error(&tools(&["quantize", t, "-o", o]), "--heads");
    let labels = dir.path().join("labels.txt");
    let names: Vec<String> = (0..10).map(|d| format!("digit {d}")).collect();
    std::fs::write(&labels, names.join("\n") + "\n").unwrap();
    let res = tools(&["quantize", t, "--heads", "4", "--labels", labels.to_str().unwrap(), "-o", o]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let model = edgevit::Model::open(&out).unwrap();
    assert_eq!(model.labels(), &names[..]);
    assert_eq!(model.architecture().num_heads, 4);
    std::fs::write(&labels, "a\nb\n").unwrap();
    assert_one_line_error(
        &tools(&["quantize", t, "--heads", "4", "--labels", labels.to_str().unwrap(), "-o", o]),
        "2 names",
    );
}

#[test]
fn version_and_flag_errors_name_the_program_and_the_subcommand_help() {
    let v = tools(&["--version"]);
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout)
        .starts_with(&format!("edgevit-tools {} (commit ", env!("CARGO_PKG_VERSION"))));
    let bad = tools(&["quantize", "snap", "--frobnicate"]);
    assert_one_line_error(&bad, "Unrecognized argument: --frobnicate (see `edgevit-tools quantize --help`)");
}

#[test]
fn every_subcommand_help_shows_examples() {
    for sub in ["quantize", "compare", "synth"] {
        let out = tools(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && help.contains("Examples:\n") && help.contains(&format!("edgevit-tools {sub} ")),
            "{sub}: {help}"
        );
    }
}
