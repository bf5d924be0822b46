//! Downloading a checkpoint from the Hugging Face Hub into the standard cache, so that
//! `edgevit-tools quantize google/vit-base-patch16-224` works like `from_pretrained`.
//!
//! Honours `HF_HOME` (cache at `$HF_HOME/hub`), `HF_ENDPOINT` (another hub or a mirror) and
//! `HF_TOKEN` (else the token file `huggingface-cli login` writes), and `HF_HUB_OFFLINE=1`
//! (cache only). Files already in the cache are not downloaded again.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// Files a snapshot needs, and those it may have.
const REQUIRED: [&str; 2] = ["config.json", "model.safetensors"];
const OPTIONAL: [&str; 1] = ["preprocessor_config.json"];

/// True if `arg` names a hub repository (`owner/name`, optionally `@revision`) rather than a
/// local folder: it does not exist on disk and has the shape of a repository id.
pub fn looks_like_repo_id(arg: &str) -> bool {
    if Path::new(arg).exists() {
        return false;
    }
    let id = arg.split_once('@').map_or(arg, |(id, _)| id);
    let mut parts = id.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Downloads (or finds in the cache) the snapshot of `repo_id[@revision]` and returns its
/// folder in the cache. `progress` shows a bar per file (on a terminal).
pub fn fetch(arg: &str, progress: bool) -> Result<PathBuf, String> {
    let (id, revision) = match arg.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (arg.to_string(), "main".to_string()),
    };
    let repo = Repo::with_revision(id.clone(), RepoType::Model, revision.clone());
    let cache = Cache::from_env();
    let cached = cache.repo(repo.clone());
    if let (Some(config), Some(_)) = (cached.get(REQUIRED[0]), cached.get(REQUIRED[1])) {
        return Ok(config.parent().expect("a cached file is in a snapshot folder").to_path_buf());
    }
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if offline {
        return Err(format!(
            "{arg}: not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set",
            cache.path().display()
        ));
    }
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| cache.token());
    let api = ApiBuilder::from_env()
        .with_token(token)
        .with_progress(progress)
        .with_retries(2)
        .build()
        .map_err(|e| format!("cannot set up the hub client: {e}"))?;
    let remote = api.repo(repo);
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let info = remote.info().map_err(|e| {
        format!("{id}: cannot read the repository from {endpoint} at revision '{revision}': {e} (private or gated repositories need HF_TOKEN)")
    })?;
    let has = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    if !has("model.safetensors") {
        let why = if has("model.safetensors.index.json") {
            "its weights are sharded (model.safetensors.index.json), which is not supported"
        } else {
            "it has no model.safetensors (only safetensors weights are read)"
        };
        return Err(format!("{id}: {why}"));
    }
    if !has("config.json") {
        return Err(format!("{id}: the repository has no config.json"));
    }
    let mut folder = None;
    for file in REQUIRED.iter().chain(OPTIONAL.iter().filter(|f| has(f))) {
        let path = remote.get(file).map_err(|e| format!("{id}: downloading {file} failed: {e}"))?;
        folder = path.parent().map(Path::to_path_buf);
    }
    folder.ok_or_else(|| format!("{id}: nothing was downloaded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_folders() {
        assert!(looks_like_repo_id("google/vit-base-patch16-224"));
        assert!(looks_like_repo_id("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k@main"));
        assert!(!looks_like_repo_id("vit-base"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("./models"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id(env!("CARGO_MANIFEST_DIR")));
    }
}
