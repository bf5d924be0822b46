//! `edgevit-tools quantize owner/name`: downloads through hf-hub from a local HTTP server that
//! answers the way the Hugging Face Hub does, into the cache `HF_HOME` names, sending
//! `HF_TOKEN`; a second run works offline from the cache. No network is used.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[path = "../../tests/common/exec.rs"]
#[allow(dead_code)]
mod exec;

const REPO: &str = "edgevit-test/vit-mnist";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Requests the server saw: (path, Authorization header).
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serves `files` for repository `REPO` at revision main: the model info API, and
/// `resolve/main/FILE` with ETag, X-Repo-Commit and byte ranges.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let files = Arc::new(files);
    let server_log = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (files, log) = (files.clone(), server_log.clone());
            std::thread::spawn(move || handle(stream, &files, &log));
        }
    });
    (endpoint, log)
}

fn handle(stream: TcpStream, files: &HashMap<String, Vec<u8>>, log: &Log) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push((path.clone(), headers.get("authorization").cloned()));
    let mut out = stream;
    let reply = |out: &mut TcpStream, status: &str, extra: &[(&str, String)], body: &[u8]| {
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(body);
    };
    if path == format!("/api/models/{REPO}/revision/main") {
        let siblings: Vec<_> = files.keys().map(|f| serde_json::json!({ "rfilename": f })).collect();
        let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string();
        return reply(&mut out, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes());
    }
    let Some(file) = path.strip_prefix(&format!("/{REPO}/resolve/main/")) else {
        return reply(&mut out, "404 Not Found", &[("X-Error-Code", "RepoNotFound".into())], b"Repository not found");
    };
    let Some(data) = files.get(file) else {
        return reply(&mut out, "404 Not Found", &[("X-Error-Code", "EntryNotFound".into())], b"Entry not found");
    };
    let etag = format!("\"{:08x}{}\"", crc(data), data.len());
    let common = [("ETag", etag), ("X-Repo-Commit", COMMIT.to_string())];
    match headers.get("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((start, end)) => {
            let start: usize = start.parse().unwrap();
            let end: usize = if end.is_empty() { data.len() - 1 } else { end.parse().unwrap() };
            let range = ("Content-Range", format!("bytes {start}-{end}/{}", data.len()));
            let extra = [common[0].clone(), common[1].clone(), range];
            reply(&mut out, "206 Partial Content", &extra, &data[start..=end]);
        }
        None => reply(&mut out, "200 OK", &common, data),
    }
}

fn crc(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |h, &b| h.rotate_left(5) ^ b as u32)
}

fn demo_files() -> HashMap<String, Vec<u8>> {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../demo/vit-mnist");
    ["config.json", "model.safetensors", "preprocessor_config.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(demo.join(f)).unwrap()))
        .collect()
}

fn quantize(repo: &str, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let args = ["quantize", repo, "--dtype", "f32", "-o", out.to_str().unwrap()];
    exec::run_with_env(env!("CARGO_BIN_EXE_edgevit-tools"), &args, env)
}

#[test]
fn downloads_into_hf_home_with_the_token_then_works_offline() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    let (endpoint, log) = serve(demo_files());
    let home = hf_home.to_str().unwrap();
    let env = [("HF_HOME", home), ("HF_ENDPOINT", endpoint.as_str()), ("HF_TOKEN", "test-token")];
    let out = dir.path().join("m.evit");
    let res = quantize(REPO, &out, &env);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    // Quiet when not on a terminal: no progress bar.
    assert!(!stderr.contains('\r') && !stderr.contains("MB/s"), "{stderr}");
    let model = edgevit::Model::open(&out).unwrap();
    assert_eq!(model.labels().len(), 10);

    // The standard cache layout under $HF_HOME/hub.
    let snap = hf_home.join(format!("hub/models--edgevit-test--vit-mnist/snapshots/{COMMIT}"));
    for f in ["config.json", "model.safetensors", "preprocessor_config.json"] {
        assert!(snap.join(f).exists(), "{} missing", snap.join(f).display());
    }
    let requests = log.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|(_, auth)| auth.as_deref() == Some("Bearer test-token")), "{requests:?}");

    // Offline, with a dead endpoint: served from the cache.
    let before = log.lock().unwrap().len();
    let offline = [("HF_HOME", home), ("HF_ENDPOINT", "http://127.0.0.1:9"), ("HF_HUB_OFFLINE", "1")];
    let res = quantize(REPO, &out, &offline);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(log.lock().unwrap().len(), before);
}

#[test]
fn missing_repositories_and_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let home = home.to_str().unwrap();
    let out = dir.path().join("m.evit");
    let mut files = demo_files();
    files.remove("model.safetensors");
    files.insert("pytorch_model.bin".into(), vec![0; 10]);
    let (endpoint, _) = serve(files);
    let env = [("HF_HOME", home), ("HF_ENDPOINT", endpoint.as_str())];
    for (repo, needle) in [(REPO, "no model.safetensors"), ("edgevit-test/absent", "cannot read the repository")] {
        let res = quantize(repo, &out, &env);
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && err.contains(needle) && !err.contains("panicked"), "{repo}: {err}");
    }
    let res = quantize(REPO, &out, &[("HF_HOME", home), ("HF_HUB_OFFLINE", "1")]);
    assert!(String::from_utf8_lossy(&res.stderr).contains("HF_HUB_OFFLINE"));
    // A mistyped local folder is reported as such before the hub's answer.
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(
        err.contains(&format!("there is no folder '{REPO}' here, so it was tried as a Hugging Face hub id")),
        "{err}"
    );
    assert!(!out.exists());
}
