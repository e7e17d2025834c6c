//! Hugging Face model folders: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), optionally `tokenizer.json` and `generation_config.json`.
//!
//! A model is built with a [`ParamStore`] whose parameter names are the checkpoint's own names, so
//! loading is a lookup by name, with the naming variants real checkpoints use: a head's checkpoint
//! holds the base model under a prefix (`bert.`, `transformer.`) that a bare model's checkpoint does
//! not, and tied weights are stored once. Every failure names the file and the tensor or field.

use candle_core::{Device, Tensor};
use lingo_nn::params::read_safetensors;
use lingo_nn::ParamStore;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
}

impl LoadError {
    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        LoadError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, LoadError>;

/// An opened model folder: its parsed `config.json` and every tensor of its weights.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    tensors: HashMap<String, Tensor>,
    /// The file each tensor came from, for error messages.
    weights_file: String,
}

impl Checkpoint {
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| LoadError::Io(config_path.clone(), e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LoadError::invalid(&config_path, format!("not valid JSON ({e})")))?;
        let (tensors, weights_file) = read_weights(dir, device)?;
        Ok(Checkpoint {
            dir: dir.into(),
            config,
            tensors,
            weights_file,
        })
    }

    /// `model_type` from `config.json`.
    pub fn model_type(&self) -> Result<&str> {
        self.config["model_type"].as_str().ok_or_else(|| {
            LoadError::invalid(
                &self.dir.join("config.json"),
                "field `model_type` is missing (cannot tell the architecture)",
            )
        })
    }

    /// The first entry of `architectures` (e.g. `BertForMaskedLM`), if any.
    pub fn architecture(&self) -> Option<&str> {
        self.config["architectures"].get(0)?.as_str()
    }

    /// `config.json` parsed as `T`; errors name the file and the field.
    pub fn parse_config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| LoadError::invalid(&self.dir.join("config.json"), e.to_string()))
    }

    /// Whether the weights hold a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Sets every parameter of `store` from the weights. A parameter `p` is looked up as `p`, then
    /// with each of `prefixes` (e.g. `"bert."`) removed from its start or added to it. Each parameter
    /// must be found with its exact shape; a mismatch names the tensor and both shapes.
    pub fn load_into(&self, store: &ParamStore, prefixes: &[&str]) -> Result<StoredNames> {
        Ok(self
            .load_into_with(store, prefixes, |_, t| Ok(t), &|_| false)?
            .0)
    }

    /// [`Checkpoint::load_into`], passing each stored tensor through `convert(name, tensor)` first
    /// (e.g. to transpose a layout that differs from Lingo's). A parameter for which `may_be_new`
    /// holds (a head the checkpoint does not have) keeps its fresh initialisation when it is
    /// missing; the report lists those and the stored tensors no parameter read.
    pub fn load_into_with(
        &self,
        store: &ParamStore,
        prefixes: &[&str],
        convert: impl Fn(&str, Tensor) -> candle_core::Result<Tensor>,
        may_be_new: &dyn Fn(&str) -> bool,
    ) -> Result<(StoredNames, LoadReport)> {
        let mut names = StoredNames::default();
        let mut report = LoadReport::default();
        for (name, var) in store.named() {
            let found = self.find(&name, prefixes);
            let Some((stored, t)) = found else {
                if may_be_new(&name) {
                    report.newly_initialized.push(name);
                    continue;
                }
                return Err(LoadError::invalid(
                    Path::new(&self.weights_file),
                    format!("tensor `{name}` (shape {:?}) is missing", var.dims()),
                ));
            };
            let t = convert(&name, t.clone())?;
            if t.dims() != var.dims() {
                return Err(LoadError::invalid(
                    Path::new(&self.weights_file),
                    format!(
                        "tensor `{name}` has shape {:?}, the model expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            lingo_nn::params::assign(&var, &t)?;
            names.0.insert(name.clone(), stored);
        }
        let read: std::collections::HashSet<&String> = names.0.values().collect();
        report.unused = self
            .tensors
            .keys()
            .filter(|k| !read.contains(k) && !k.ends_with("position_ids"))
            .cloned()
            .collect();
        report.unused.sort();
        Ok((names, report))
    }

    /// The stored name and tensor for parameter `name` (see [`Checkpoint::load_into`]).
    fn find(&self, name: &str, prefixes: &[&str]) -> Option<(String, &Tensor)> {
        let candidates = std::iter::once(name.to_string()).chain(prefixes.iter().flat_map(|p| {
            let bare = name.strip_prefix(p).map(str::to_string);
            bare.into_iter()
                .chain(std::iter::once(format!("{p}{name}")))
        }));
        candidates
            .into_iter()
            .find_map(|n| self.tensors.get(&n).map(|t| (n, t)))
    }
}

/// Every tensor of the folder's safetensors weights (one file, or the shards of an index).
fn read_weights(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, String)> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        let t = read_safetensors(&single, device)?;
        return Ok((t, single.display().to_string()));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| LoadError::Io(index.clone(), e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LoadError::invalid(&index, format!("not valid JSON ({e})")))?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| LoadError::invalid(&index, "field `weight_map` is missing"))?;
        let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut tensors = HashMap::new();
        for shard in shards {
            tensors.extend(read_safetensors(&dir.join(shard), device)?);
        }
        for (name, shard) in map {
            if !tensors.contains_key(name) {
                return Err(LoadError::invalid(
                    &index,
                    format!("tensor `{name}` is listed in shard {shard} but not stored there"),
                ));
            }
        }
        return Ok((tensors, index.display().to_string()));
    }
    for pickle in ["pytorch_model.bin", "pytorch_model.bin.index.json"] {
        if dir.join(pickle).exists() {
            return Err(LoadError::invalid(
                &dir.join(pickle),
                "only PyTorch pickle weights here; Lingo reads safetensors (convert with \
                 `model.save_pretrained(dir, safe_serialization=True)` in transformers)",
            ));
        }
    }
    Err(LoadError::invalid(
        dir,
        "no model.safetensors or model.safetensors.index.json in this folder",
    ))
}

/// What loading left out: parameters the checkpoint had no tensor for (a new head, freshly
/// initialised) and stored tensors no parameter read (the checkpoint's old head).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    pub newly_initialized: Vec<String>,
    pub unused: Vec<String>,
}

impl LoadReport {
    /// The warning `transformers` prints, in Lingo's words; `None` when everything matched.
    pub fn warning(&self) -> Option<String> {
        let mut lines = Vec::new();
        if !self.newly_initialized.is_empty() {
            lines.push(format!(
                "newly initialised (not in the checkpoint; train before use): {}",
                self.newly_initialized.join(", ")
            ));
        }
        if !self.unused.is_empty() {
            lines.push(format!(
                "checkpoint tensors not used by this architecture: {}",
                self.unused.join(", ")
            ));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// For each parameter, the name its tensor had in the checkpoint it was loaded from, so saving writes
/// the layout `transformers` expects for that architecture (a bare `BertModel` without `bert.`).
#[derive(Clone, Debug, Default)]
pub struct StoredNames(HashMap<String, String>);

impl StoredNames {
    /// The checkpoint's name of parameter `name`.
    pub fn stored<'a>(&'a self, name: &'a str) -> &'a str {
        self.0.get(name).map_or(name, String::as_str)
    }

    /// Names given as (parameter, checkpoint name) pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        StoredNames(pairs.into_iter().collect())
    }
}

/// Writes a model folder `transformers` can load: `config.json` and `model.safetensors`, each
/// parameter under its stored name, passed through `convert(name, tensor)` (e.g. back to GPT-2's
/// `[in, out]` layout). Tied parameters are one tensor in `store`, so they are written once. Both
/// files are written atomically.
pub fn save_pretrained(
    dir: &Path,
    config: &serde_json::Value,
    store: &ParamStore,
    names: &StoredNames,
    convert: impl Fn(&str, Tensor) -> candle_core::Result<Tensor>,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, var) in store.named() {
        let stored = names.0.get(&name).cloned().unwrap_or(name.clone());
        tensors.push((
            stored,
            convert(&name, var.as_tensor().clone())?.contiguous()?,
        ));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = lingo_nn::params::tensors_to_safetensors(&tensors, Some(metadata))?;
    let write = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        lingo_nn::io::write_atomic(&path, bytes).map_err(|e| LoadError::Io(path, e))
    };
    write("model.safetensors", &bytes)?;
    let json =
        serde_json::to_string_pretty(config).map_err(|e| LoadError::invalid(dir, e.to_string()))?;
    write("config.json", json.as_bytes())
}
