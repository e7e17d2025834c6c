//! Where a model argument points: a local folder, or a Hugging Face Hub repository (`org/name`,
//! optionally `org/name@revision`) in the standard cache, `$HF_HOME/hub` (by default
//! `~/.cache/huggingface/hub`, the cache Python's `huggingface_hub` uses, so models it downloaded are
//! found). Missing files are downloaded into the cache unless offline (`--offline` or
//! `HF_HUB_OFFLINE=1`), or unless Lingo was built without the `download` feature.

use crate::hf::LoadError;
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// Files a model folder may hold besides its weights; fetched when present.
const OPTIONAL: [&str; 3] = [
    "tokenizer.json",
    "generation_config.json",
    "tokenizer_config.json",
];

/// Whether the environment asks for offline operation (`HF_HUB_OFFLINE=1`, as in Python).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// [`resolve`] in the default cache, offline if `offline` or the environment says so: what a command's
/// `--model` and `--offline` arguments mean.
pub fn resolve_model(model: &str, offline: bool) -> Result<PathBuf, LoadError> {
    resolve(model, None, offline || offline_from_env())
}

/// The local folder holding `model`: the path itself if it is a directory, else the Hub repository's
/// snapshot in `cache` (the default cache if `None`), downloading what is missing unless `offline`.
pub fn resolve(model: &str, cache: Option<&Path>, offline: bool) -> Result<PathBuf, LoadError> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.into());
    }
    let (id, revision) = match model.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (model, "main"),
    };
    // `org/name`, or a legacy canonical name (`gpt2`, `t5-small`) as transformers accepts.
    let part = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| part(p)) {
        return Err(LoadError::Invalid {
            path: path.into(),
            message:
                "neither a folder nor a Hub repository id (`org/name`, or a name such as `gpt2`)"
                    .into(),
        });
    }
    let cache = cache.map_or_else(Cache::from_env, |c| Cache::new(c.into()));
    let repo = Repo::with_revision(id.into(), RepoType::Model, revision.into());
    if let Some(dir) = cached(&cache, &repo) {
        return Ok(dir);
    }
    if offline {
        return Err(LoadError::Invalid {
            path: cache.path().clone(),
            message: format!("{model} is not in the cache (offline: not downloading)"),
        });
    }
    download(&cache, repo, model)
}

/// The snapshot folder if the cache holds the config and all the weights of `repo`.
fn cached(cache: &Cache, repo: &Repo) -> Option<PathBuf> {
    let local = cache.repo(repo.clone());
    let config = local.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    if local.get("model.safetensors").is_some() {
        return Some(dir);
    }
    let index = local.get("model.safetensors.index.json")?;
    let shards = shard_names(&index).ok()?;
    shards.iter().all(|s| local.get(s).is_some()).then_some(dir)
}

/// The shard files an index lists.
fn shard_names(index: &Path) -> Result<Vec<String>, LoadError> {
    let text = std::fs::read_to_string(index).map_err(|e| LoadError::Io(index.into(), e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::Invalid {
        path: index.into(),
        message: format!("not valid JSON ({e})"),
    })?;
    let mut names: Vec<String> = json["weight_map"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(feature = "download")]
fn download(cache: &Cache, repo: Repo, model: &str) -> Result<PathBuf, LoadError> {
    let failed = |file: &str, e: hf_hub::api::sync::ApiError| LoadError::Invalid {
        path: PathBuf::from(model),
        message: format!("downloading {file}: {e}"),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| failed("(connecting)", e))?;
    let remote = api.repo(repo);
    let config = remote
        .get("config.json")
        .map_err(|e| failed("config.json", e))?;
    if remote.get("model.safetensors").is_err() {
        let index = remote
            .get("model.safetensors.index.json")
            .map_err(|e| failed("model.safetensors(.index.json)", e))?;
        for shard in shard_names(&index)? {
            remote.get(&shard).map_err(|e| failed(&shard, e))?;
        }
    }
    for file in OPTIONAL {
        let _ = remote.get(file);
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(not(feature = "download"))]
fn download(cache: &Cache, _repo: Repo, model: &str) -> Result<PathBuf, LoadError> {
    let _ = OPTIONAL;
    Err(LoadError::Invalid {
        path: cache.path().clone(),
        message: format!("{model} is not in the cache, and this build of Lingo cannot download (feature `download`)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache laid out as `huggingface_hub` writes it, holding one snapshot.
    fn fake_cache(files: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--tiny");
        let snapshot = repo.join("snapshots").join("0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
        for f in files {
            std::fs::write(snapshot.join(f), "{}").unwrap();
        }
        tmp
    }

    #[test]
    fn finds_a_cached_snapshot_offline() {
        let cache = fake_cache(&["config.json", "model.safetensors"]);
        let dir = resolve("org/tiny", Some(cache.path()), true).unwrap();
        assert!(
            dir.ends_with("models--org--tiny/snapshots/0123abcd"),
            "{dir:?}"
        );
    }

    #[test]
    fn offline_without_the_weights_is_a_clear_error() {
        let cache = fake_cache(&["config.json"]);
        let err = resolve("org/tiny", Some(cache.path()), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("org/tiny") && err.contains("offline"), "{err}");
        for bad in ["not a repo", "a/b/c", "../up"] {
            let err = resolve(bad, Some(cache.path()), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("neither a folder"), "{bad}: {err}");
        }
        // A canonical name is looked up like any id.
        let err = resolve("gpt2", Some(cache.path()), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in the cache"), "{err}");
    }

    #[test]
    fn a_local_folder_is_used_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let got = resolve(tmp.path().to_str().unwrap(), None, true).unwrap();
        assert_eq!(got, tmp.path());
    }
}
