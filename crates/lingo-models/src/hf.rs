//! Hugging Face model folders: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), optionally `tokenizer.json` and `generation_config.json`.
//!
//! A model is built with a [`ParamStore`] whose parameter names are the checkpoint's own names, so
//! loading is a lookup by name, with the naming variants real checkpoints use: a head's checkpoint
//! holds the base model under a prefix (`bert.`, `transformer.`) that a bare model's checkpoint does
//! not, and tied weights are stored once. Every failure names the file and the tensor or field.

use candle_core::{DType, Device, Tensor};
use lingo_nn::params::MappedSafetensors;
use lingo_nn::{ParamPath, ParamStore};
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// An opened model folder: its parsed `config.json` and its weights, memory-mapped, from which a
/// model takes each tensor as it is built ([`Checkpoint::build`]).
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub device: Device,
    /// The tensors no parameter has taken yet.
    tensors: Arc<Mutex<HashMap<String, Pending>>>,
    /// Every stored name.
    stored: BTreeSet<String>,
    /// Parameter name → the stored name its value came from.
    taken: Arc<Mutex<HashMap<String, String>>>,
    /// The file the tensors came from, for error messages.
    weights_file: String,
    /// The dtype most of the stored floating-point tensors have.
    stored_dtype: DType,
    /// A new model: no weights, every parameter initialised from the seed.
    fresh: bool,
    /// Build the linear layers with int8 or bf16 weights ([`ParamStore::hold_linears_as`]): asked
    /// for at load time, or (int8) declared by a quantized folder.
    pub quantize: Option<crate::quantize::Quantization>,
}

/// A stored tensor no parameter has taken yet: still in its (mapped) file, or already read (the
/// dequantized weights of an int8 folder).
enum Pending {
    Mapped(Arc<MappedSafetensors>),
    Read(Tensor),
}

impl Pending {
    fn dtype(&self, name: &str) -> Option<DType> {
        match self {
            Pending::Mapped(file) => file.dtype(name),
            Pending::Read(t) => Some(t.dtype()),
        }
    }

    fn read(self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Pending::Mapped(file) => file.load(name, device),
            Pending::Read(t) => Ok(t),
        }
    }
}

/// A conversion of a stored tensor into Lingo's layout (GPT-2's `[in, out]` Conv1D weights).
pub type Convert = fn(&str, Tensor) -> candle_core::Result<Tensor>;

/// Stored tensors as they are.
pub fn as_stored(_: &str, t: Tensor) -> candle_core::Result<Tensor> {
    Ok(t)
}

/// How a family's parameters are found in a checkpoint.
pub struct Lookup<'a> {
    /// A parameter `p` is looked up as `p`, then with each prefix (e.g. `"bert."`) removed from its
    /// start or added to it: a head's checkpoint holds the base model under a prefix that a bare
    /// model's checkpoint does not.
    pub prefixes: &'a [&'a str],
    pub convert: Convert,
    /// Parameters that may be missing (a new head): they keep their seeded initialisation and are
    /// reported as newly initialised. Any other missing parameter is an error.
    pub may_be_new: &'a dyn Fn(&str) -> bool,
    /// What the caller also allows to be missing (substrings of parameter names), as
    /// [`crate::auto::LoadOptions::allow_missing`] says.
    pub allow_missing: &'a [String],
    /// The seed of those initialisations.
    pub seed: u64,
}

impl Default for Lookup<'_> {
    fn default() -> Self {
        Lookup {
            prefixes: &[],
            convert: as_stored,
            may_be_new: &|_| false,
            allow_missing: &[],
            seed: 0,
        }
    }
}

/// A model built from a checkpoint, with its parameters, their stored names and what loading left
/// out.
pub struct Built<M> {
    pub model: M,
    pub store: ParamStore,
    pub names: StoredNames,
    pub report: LoadReport,
}

impl Checkpoint {
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let config = read_config(dir)?;
        let (mut tensors, weights_file) = read_weights(dir)?;
        let quantize = crate::quantize::declared(&config)
            .map_err(|e| LoadError::invalid(&dir.join("config.json"), e))?;
        if quantize.is_some() {
            // Dequantizing pairs each int8 weight with its scale: read everything first.
            let mut read = HashMap::new();
            for (name, pending) in tensors.drain() {
                let t = pending.read(&name, device)?;
                read.insert(name, t);
            }
            crate::quantize::dequantize_stored(&mut read)
                .map_err(|e| LoadError::invalid(Path::new(&weights_file), e))?;
            tensors = (read.into_iter())
                .map(|(n, t)| (n, Pending::Read(t)))
                .collect();
        }
        let stored_dtype = most_common_float_dtype(tensors.iter().filter_map(|(n, p)| p.dtype(n)));
        Ok(Checkpoint {
            dir: dir.into(),
            config,
            device: device.clone(),
            stored: tensors.keys().cloned().collect(),
            tensors: Arc::new(Mutex::new(tensors)),
            taken: Arc::default(),
            weights_file,
            stored_dtype,
            fresh: false,
            quantize,
        })
    }

    /// A model folder that has only its `config.json` so far: building from it initialises every
    /// parameter from the seed (as `transformers`' `from_config`). `dir` is where the model will
    /// live, for messages.
    pub fn fresh(dir: &Path, config: serde_json::Value, device: &Device) -> Self {
        Checkpoint {
            dir: dir.into(),
            device: device.clone(),
            tensors: Arc::default(),
            stored: BTreeSet::new(),
            taken: Arc::default(),
            weights_file: "(new model)".into(),
            stored_dtype: DType::F32,
            fresh: true,
            quantize: crate::quantize::declared(&config).ok().flatten(),
            config,
        }
    }

    /// The dtype the weights are saved back in: `dtype` (or the older `torch_dtype`) of
    /// `config.json` when it names one, else the dtype most stored tensors have — as
    /// `transformers`' `dtype="auto"` chooses. Lingo computes in f32 whatever it is.
    pub fn saved_dtype(&self) -> Result<DType> {
        let path = self.dir.join("config.json");
        match declared_dtype(&self.config).map_err(|e| LoadError::invalid(&path, e))? {
            Some(dtype) => Ok(dtype),
            None => Ok(self.stored_dtype),
        }
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
        self.parse(self.config.clone())
    }

    /// `config` (this folder's `config.json`, edited) parsed as `T`; errors name the file.
    pub fn parse<T: DeserializeOwned>(&self, config: serde_json::Value) -> Result<T> {
        serde_json::from_value(config)
            .map_err(|e| LoadError::invalid(&self.dir.join("config.json"), e.to_string()))
    }

    /// An error about `config.json`.
    pub fn invalid_config(&self, message: impl Into<String>) -> LoadError {
        LoadError::invalid(&self.dir.join("config.json"), message)
    }

    /// Whether the weights hold a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.stored.contains(name)
    }

    /// Builds a model with `make`, each parameter taking its value from the tensor `lookup` finds
    /// for it (which must have the parameter's shape) — nothing is initialised only to be
    /// overwritten, and each stored tensor leaves the checkpoint as its parameter takes it. A
    /// parameter with no tensor is an error unless `lookup.may_be_new` allows it.
    pub fn build<M>(
        &self,
        lookup: &Lookup,
        make: impl FnOnce(&ParamPath) -> candle_core::Result<M>,
    ) -> Result<Built<M>> {
        let source = self.source(lookup);
        let store = ParamStore::reading(lookup.seed, &self.device, source);
        if let Some(q) = self.quantize {
            store.hold_linears_as(q.linear_precision());
        }
        let model = make(&store.root());
        store.end_source();
        let model = model?;
        let mut names = StoredNames::default();
        let mut report = LoadReport::default();
        let taken = self.taken.lock().expect("checkpoint lock poisoned").clone();
        let params = store
            .named()
            .into_iter()
            .map(|(n, v)| (n, v.dims().to_vec()));
        let packed = (store.packed_linears().into_iter()).map(|(n, (o, i))| (n, vec![o, i]));
        for (name, dims) in params.chain(packed) {
            match taken.get(&name) {
                Some(stored) => {
                    names.0.insert(name, stored.clone());
                }
                None if self.fresh => {}
                None if (lookup.may_be_new)(&name)
                    || lookup
                        .allow_missing
                        .iter()
                        .any(|p| name.contains(p.as_str())) =>
                {
                    report.newly_initialized.push(name)
                }
                None => {
                    return Err(LoadError::invalid(
                        Path::new(&self.weights_file),
                        format!("tensor `{name}` (shape {dims:?}) is missing"),
                    ))
                }
            }
        }
        let read: HashSet<&String> = taken.values().collect();
        report.unused = (self.stored.iter())
            .filter(|k| !read.contains(k) && !is_buffer(k))
            .cloned()
            .collect();
        Ok(Built {
            model,
            store,
            names,
            report,
        })
    }

    /// What a [`ParamStore`] reads from while `build` runs.
    fn source(&self, lookup: &Lookup) -> lingo_nn::ParamSource {
        let tensors = self.tensors.clone();
        let taken = self.taken.clone();
        let prefixes: Vec<String> = lookup.prefixes.iter().map(|p| p.to_string()).collect();
        let convert = lookup.convert;
        let file = self.weights_file.clone();
        let device = self.device.clone();
        // A config that describes far more than the weights hold (a layer count of 4 billion in
        // a small file) would otherwise initialise every missing parameter before `build` could
        // name the first: new parameters (a head) are few, so past as many as the stored tensors
        // (and at least 64) the build stops.
        let (fresh, mut missing) = (self.fresh, 0usize);
        let most_missing = self.stored.len().max(64);
        Box::new(move |name: &str, shape: &[usize]| {
            let mut tensors = tensors.lock().expect("checkpoint lock poisoned");
            let Some(stored) = candidates(name, &prefixes).find(|n| tensors.contains_key(n)) else {
                missing += 1;
                if !fresh && missing > most_missing {
                    candle_core::bail!(
                        "{file}: tensor `{name}` (shape {shape:?}) is missing, and {} more before it: config.json describes a larger model than these weights",
                        missing - 1
                    );
                }
                return Ok(None);
            };
            let pending = tensors.remove(&stored).expect("found above");
            let t = convert(name, pending.read(&stored, &device)?)?;
            if t.dims() != shape {
                candle_core::bail!(
                    "{file}: tensor `{name}` has shape {:?}, the model expects {shape:?}",
                    t.dims()
                );
            }
            taken
                .lock()
                .expect("checkpoint lock poisoned")
                .insert(name.to_string(), stored);
            Ok(Some(t))
        })
    }
}

/// `dir/config.json`, parsed.
pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let config_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| LoadError::Io(config_path.clone(), e))?;
    serde_json::from_str(&text)
        .map_err(|e| LoadError::invalid(&config_path, format!("not valid JSON ({e})")))
}

/// Buffers some checkpoints store that are no parameters (and that `transformers` ignores too):
/// position ids, GPT-2's causal mask.
fn is_buffer(name: &str) -> bool {
    name.ends_with("position_ids")
        || name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
}

/// The names parameter `name` may be stored under (see [`Lookup::prefixes`]), most likely first.
fn candidates<'a>(name: &'a str, prefixes: &'a [String]) -> impl Iterator<Item = String> + 'a {
    std::iter::once(name.to_string()).chain(prefixes.iter().flat_map(move |p| {
        let bare = name.strip_prefix(p.as_str()).map(str::to_string);
        bare.into_iter()
            .chain(std::iter::once(format!("{p}{name}")))
    }))
}

/// The floating-point dtypes a folder's weights may be saved in, by their `config.json` names.
const SAVED_DTYPES: [(&str, DType); 3] = [
    ("float32", DType::F32),
    ("float16", DType::F16),
    ("bfloat16", DType::BF16),
];

/// The `config.json` name of a weights dtype (`float32`, `float16`, `bfloat16`).
pub fn dtype_name(dtype: DType) -> Option<&'static str> {
    SAVED_DTYPES
        .iter()
        .find(|(_, d)| *d == dtype)
        .map(|(n, _)| *n)
}

/// The dtype `config.json` declares in `dtype` (or `torch_dtype`), if any; `"auto"` declares none.
fn declared_dtype(config: &serde_json::Value) -> std::result::Result<Option<DType>, String> {
    let Some((field, value)) = ["dtype", "torch_dtype"]
        .iter()
        .find_map(|f| Some((*f, config.get(*f)?)).filter(|(_, v)| !v.is_null()))
    else {
        return Ok(None);
    };
    let name = value.as_str().unwrap_or_default();
    if name == "auto" {
        return Ok(None);
    }
    let found = SAVED_DTYPES.iter().find(|(n, _)| *n == name);
    match found {
        Some((_, dtype)) => Ok(Some(*dtype)),
        None => Err(format!(
            "field `{field}` is {value}; expected one of \"float32\", \"float16\", \"bfloat16\""
        )),
    }
}

/// Records in `config` that the weights are saved as `dtype`, under `dtype` (as transformers 5
/// writes it) and under `torch_dtype` when the config already has that older key.
pub fn set_saved_dtype(config: &mut serde_json::Value, dtype: DType) {
    let Some(name) = dtype_name(dtype) else {
        return;
    };
    if let Some(map) = config.as_object_mut() {
        map.insert("dtype".into(), name.into());
        if map.contains_key("torch_dtype") {
            map.insert("torch_dtype".into(), name.into());
        }
    }
}

fn most_common_float_dtype(dtypes: impl Iterator<Item = DType>) -> DType {
    let mut counts: HashMap<DType, usize> = HashMap::new();
    for d in dtypes.filter(|d| d.is_float()) {
        *counts.entry(d).or_default() += 1;
    }
    // Ties go to the wider dtype, so nothing is narrowed on a guess.
    let width = |d: &DType| {
        SAVED_DTYPES
            .iter()
            .position(|(_, s)| s == d)
            .map_or(9, |i| 9 - i)
    };
    (counts.into_iter())
        .max_by_key(|(d, n)| (*n, width(d)))
        .map_or(DType::F32, |(d, _)| d)
}

/// Every tensor of the folder's safetensors weights (one file, or the shards of an index), still
/// in their mapped files.
fn read_weights(dir: &Path) -> Result<(HashMap<String, Pending>, String)> {
    let mapped = |path: &Path| -> Result<HashMap<String, Pending>> {
        let file = Arc::new(MappedSafetensors::open(path)?);
        Ok((file.names())
            .map(|n| (n.to_string(), Pending::Mapped(file.clone())))
            .collect())
    };
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok((mapped(&single)?, single.display().to_string()));
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
            tensors.extend(mapped(&dir.join(shard))?);
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
pub struct StoredNames(pub(crate) HashMap<String, String>);

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

/// Writes a model's `config.json` and `model.safetensors` into `dir` (created if need be), each
/// parameter under its stored name — GPT-2's Conv1D weights back in their `[in, out]` layout.
pub fn save_folder(
    dir: &Path,
    config: &serde_json::Value,
    store: &ParamStore,
    names: &StoredNames,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::Io(dir.into(), e))?;
    let gpt2 = config["model_type"] == "gpt2";
    let convert = |name: &str, t: Tensor| match gpt2 {
        true => crate::gpt::gpt2_layout(names.stored(name), t),
        false => Ok(t),
    };
    save_pretrained(dir, config, store, names, convert)
}

/// Writes a model folder `transformers` can load: `config.json` and `model.safetensors`, each
/// parameter under its stored name, passed through `convert(name, tensor)` (e.g. back to GPT-2's
/// `[in, out]` layout) and stored in the dtype `config.json` declares (f32 when it declares none).
/// Tied parameters are one tensor in `store`, so they are written once. Both files are written
/// atomically.
pub fn save_pretrained(
    dir: &Path,
    config: &serde_json::Value,
    store: &ParamStore,
    names: &StoredNames,
    convert: impl Fn(&str, Tensor) -> candle_core::Result<Tensor>,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, var) in store.named() {
        tensors.push((
            names.stored(&name).to_string(),
            convert(&name, var.as_tensor().clone())?,
        ));
    }
    // bf16 weights are saved by value (exact in any float dtype; the folder's is bfloat16).
    for (name, matrix) in store.bf16_linears() {
        let value = Tensor::from_vec(matrix.to_f32(), matrix.dims(), &candle_core::Device::Cpu)?;
        tensors.push((names.stored(&name).to_string(), convert(&name, value)?));
    }
    let int8 =
        crate::quantize::stored_int8(store, |name| names.stored(name).to_string(), &convert)?;
    // The scales are f32 whatever dtype the rest is saved in.
    save_tensors_with_int8(dir, config, tensors, int8.weights, int8.scales)
}

/// Writes `config.json` and `model.safetensors` holding `tensors` under their names, in the
/// dtype `config.json` declares (f32 when it declares none); both atomically.
pub fn save_tensors(
    dir: &Path,
    config: &serde_json::Value,
    tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    save_tensors_with_int8(dir, config, tensors, Vec::new(), Vec::new())
}

/// [`save_tensors`] plus int8 tensors and f32 tensors kept f32 (their scales).
fn save_tensors_with_int8(
    dir: &Path,
    config: &serde_json::Value,
    tensors: Vec<(String, Tensor)>,
    int8: Vec<(String, lingo_nn::params::Int8Tensor)>,
    f32_tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::Io(dir.into(), e))?;
    let dtype = declared_dtype(config)
        .map_err(|e| LoadError::invalid(&dir.join("config.json"), e))?
        .unwrap_or(DType::F32);
    let tensors = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?.contiguous()?)))
        .chain(
            f32_tensors
                .into_iter()
                .map(|(n, t)| Ok((n, t.contiguous()?))),
        )
        .collect::<candle_core::Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        lingo_nn::params::tensors_to_safetensors_with_int8(&tensors, &int8, Some(metadata))?;
    let write = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        lingo_nn::io::write_atomic(&path, bytes).map_err(|e| LoadError::Io(path, e))
    };
    write("model.safetensors", &bytes)?;
    let json =
        serde_json::to_string_pretty(config).map_err(|e| LoadError::invalid(dir, e.to_string()))?;
    write("config.json", json.as_bytes())
}
