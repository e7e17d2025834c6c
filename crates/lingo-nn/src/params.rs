//! The parameters of a model: named candle `Var`s in creation order, created with seeded initialisers,
//! saved to and loaded from safetensors by name.
//!
//! A layer receives a [`ParamPath`] (like a directory in the name space: `h.0.attn.c_attn`) and asks it
//! for its tensors. Asking twice for the same name returns the same variable, which is how weights are
//! tied.

use crate::io::write_atomic;
use crate::linear::LinearWeight;
use crate::rng::LingoRng;
use candle_core::{bail, DType, Device, Result, Tensor, Var};
use lingo_kernels::{Bf16Matrix, Int8Matrix};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How a new parameter is filled.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Zeros,
    Ones,
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    /// Uniform in `[-a, a)`.
    Uniform(f32),
}

/// Initialisers of a sub-layer: `input` for projections out of the residual stream, `output` for the
/// projection that writes back into it (GPT-2 scales the latter down by `1/√(2·layers)`).
#[derive(Clone, Copy, Debug)]
pub struct SublayerInit {
    pub input: Init,
    pub output: Init,
}

impl SublayerInit {
    pub fn uniform(init: Init) -> Self {
        SublayerInit {
            input: init,
            output: init,
        }
    }
}

/// Supplies stored values for parameters while a model is built (a checkpoint's tensors, looked up
/// by parameter name and expected shape), so loading a model never initialises what it would then
/// overwrite. `Ok(None)`: the source has no such tensor, and the initialiser fills it.
pub type ParamSource = Box<dyn FnMut(&str, &[usize]) -> Result<Option<Tensor>> + Send>;

/// How a store holds the weights of the linear layers built in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LinearPrecision {
    /// f32 parameters (trainable).
    #[default]
    F32,
    /// Int8 per output channel, for dynamic int8 inference ([`Int8Matrix`]).
    Int8,
    /// bf16, packed for f32-accumulating products, for inference ([`Bf16Matrix`]).
    Bf16,
}

struct Inner {
    params: Vec<(String, Var)>,
    by_name: HashMap<String, usize>,
    /// Linear weights held as int8 or bf16 (see [`LinearPrecision`]), in creation order.
    packed: Vec<(String, LinearWeight)>,
    /// Int8 or bf16 copies derived from other parameters (a head tied to an embedding): held, not
    /// saved.
    derived: Vec<LinearWeight>,
    linear_precision: LinearPrecision,
    rng: LingoRng,
    device: Device,
    source: Option<ParamSource>,
}

/// A model's parameters. Cheap to clone (shared).
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

impl ParamStore {
    /// An empty store whose initialisers draw from a stream seeded with `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        let inner = Inner {
            params: Vec::new(),
            by_name: HashMap::new(),
            packed: Vec::new(),
            derived: Vec::new(),
            linear_precision: LinearPrecision::F32,
            rng: LingoRng::new(seed),
            device: device.clone(),
            source: None,
        };
        ParamStore {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// A store whose parameters come from `source` where it has them, and from initialisers drawing
    /// on a stream seeded with `seed` where it does not (a new head). Call [`Self::end_source`] once
    /// the model is built.
    pub fn reading(seed: u64, device: &Device, source: ParamSource) -> Self {
        let store = Self::new(seed, device);
        store.lock().source = Some(source);
        store
    }

    /// From now on, every [`crate::Linear`] built in this store holds its weight as `precision`
    /// says: int8 (per output channel, [`Int8Matrix`]) for dynamic int8 inference, or bf16
    /// ([`Bf16Matrix`]) for bf16 inference, instead of an f32 parameter. The f32 values (from the
    /// source, or initialised) are converted as each layer asks for them and dropped.
    pub fn hold_linears_as(&self, precision: LinearPrecision) {
        self.lock().linear_precision = precision;
    }

    pub fn linear_precision(&self) -> LinearPrecision {
        self.lock().linear_precision
    }

    /// The int8 linear weights with their names, in creation order.
    pub fn quantized(&self) -> Vec<(String, Arc<Int8Matrix>)> {
        let inner = self.lock();
        let int8 = inner.packed.iter().filter_map(|(n, w)| match w {
            LinearWeight::Int8(q) => Some((n.clone(), q.clone())),
            _ => None,
        });
        int8.collect()
    }

    /// The bf16 linear weights with their names, in creation order.
    pub fn bf16_linears(&self) -> Vec<(String, Arc<Bf16Matrix>)> {
        let inner = self.lock();
        let bf16 = inner.packed.iter().filter_map(|(n, w)| match w {
            LinearWeight::Bf16(q) => Some((n.clone(), q.clone())),
            _ => None,
        });
        bf16.collect()
    }

    /// Every int8 or bf16 linear weight with its name and `(out, in)`, in creation order.
    pub fn packed_linears(&self) -> Vec<(String, (usize, usize))> {
        let inner = self.lock();
        let dims = inner.packed.iter().map(|(n, w)| (n.clone(), w.dims()));
        dims.collect()
    }

    /// Bytes the weights take in memory: each f32 parameter's, and the int8 or bf16 weights
    /// (derived copies too) as held.
    pub fn weight_bytes(&self) -> usize {
        let inner = self.lock();
        let dense: usize = (inner.params.iter())
            .map(|(_, v)| v.dtype().size_in_bytes() * v.elem_count())
            .sum();
        let packed = inner.packed.iter().map(|(_, w)| w).chain(&inner.derived);
        dense + packed.map(|w| w.bytes()).sum::<usize>()
    }

    /// Records an int8 or bf16 copy derived from a parameter, for [`Self::weight_bytes`].
    pub fn hold_derived(&self, weight: LinearWeight) {
        self.lock().derived.push(weight);
    }

    /// Stops reading from the source (and releases it).
    pub fn end_source(&self) {
        self.lock().source = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("parameter store lock poisoned")
    }

    pub fn root(&self) -> ParamPath {
        ParamPath {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    pub fn device(&self) -> Device {
        self.lock().device.clone()
    }

    /// Every parameter with its name, in creation order.
    pub fn named(&self) -> Vec<(String, Var)> {
        self.lock().params.clone()
    }

    pub fn get(&self, name: &str) -> Option<Var> {
        let inner = self.lock();
        inner.by_name.get(name).map(|&i| inner.params[i].1.clone())
    }

    /// Names of the parameters (in creation order) that `grads` gives no gradient or an all-zero one:
    /// those the loss does not reach — or a kernel that silently drops a path, which is why every
    /// model's tests ask this of a loss over its output.
    pub fn without_gradient(
        &self,
        grads: &candle_core::backprop::GradStore,
    ) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for (name, var) in self.named() {
            let reached = match grads.get(var.as_tensor()) {
                Some(g) => g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0,
                None => false,
            };
            if !reached {
                missing.push(name);
            }
        }
        Ok(missing)
    }

    /// Total number of scalar parameters (int8 and bf16 weights included).
    pub fn num_params(&self) -> usize {
        let inner = self.lock();
        let dense: usize = inner.params.iter().map(|(_, v)| v.elem_count()).sum();
        let packed = inner.packed.iter().map(|(_, w)| w.dims().0 * w.dims().1);
        dense + packed.sum::<usize>()
    }

    /// A linear weight `[out, in]`: an f32 parameter, or int8 or bf16 as the store's
    /// [`LinearPrecision`] says.
    fn linear_weight(
        &self,
        name: &str,
        out: usize,
        inp: usize,
        init: Init,
    ) -> Result<LinearWeight> {
        let precision = self.linear_precision();
        if precision == LinearPrecision::F32 {
            return Ok(LinearWeight::F32(self.create(name, &[out, inp], init)?));
        }
        let mut inner = self.lock();
        if let Some((_, w)) = inner.packed.iter().find(|(n, _)| n == name) {
            if w.dims() != (out, inp) {
                bail!(
                    "parameter {name} exists with shape {:?}, asked for {:?}",
                    w.dims(),
                    (out, inp)
                );
            }
            return Ok(w.clone());
        }
        if inner.by_name.contains_key(name) {
            bail!("parameter {name} is an f32 parameter; it cannot also be a {precision:?} linear weight");
        }
        let values = inner.produce(name, &[out, inp], init)?;
        let values = values
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let weight = LinearWeight::convert(&values, out, inp, precision)
            .map_err(|e| candle_core::Error::Msg(format!("parameter {name}: {e}")))?;
        inner.packed.push((name.to_string(), weight.clone()));
        Ok(weight)
    }

    fn create(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.create_as(name, shape, init, DType::F32)
    }

    /// [`Self::create`], the new parameter held in `dtype`.
    fn create_as(&self, name: &str, shape: &[usize], init: Init, dtype: DType) -> Result<Tensor> {
        let mut inner = self.lock();
        if inner.packed.iter().any(|(n, _)| n == name) {
            bail!("parameter {name} is an int8 or bf16 linear weight; it has no f32 tensor");
        }
        if let Some(&i) = inner.by_name.get(name) {
            let existing = &inner.params[i].1;
            if existing.dims() != shape {
                bail!(
                    "parameter {name} exists with shape {:?}, asked for {shape:?}",
                    existing.dims()
                );
            }
            return Ok(existing.as_tensor().clone());
        }
        let value = inner.produce(name, shape, init)?.to_dtype(dtype)?;
        let var = Var::from_owned_tensor(value)?;
        let index = inner.params.len();
        inner.params.push((name.to_string(), var.clone()));
        inner.by_name.insert(name.to_string(), index);
        Ok(var.as_tensor().clone())
    }

    /// Every parameter as a safetensors file (plus string metadata), ready to write.
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        let named = self.named();
        let tensors: Vec<(String, Tensor)> = named
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        tensors_to_safetensors(&tensors, metadata)
    }

    /// Writes every parameter to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors(None)?;
        write_atomic(path, &bytes)
            .map_err(|e| candle_core::Error::Msg(format!("writing {}: {e}", path.display())))
    }

    /// Loads every parameter from the safetensors file at `path`. Each parameter must be present with
    /// its exact shape; errors name the file and the tensor.
    pub fn load(&self, path: &Path) -> Result<()> {
        let tensors = read_safetensors(path, &self.device())?;
        self.load_from(&tensors, &path.display().to_string())
    }

    /// Sets every parameter from `tensors` (by name). `source` names where they came from, for errors.
    pub fn load_from(&self, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        for (name, var) in self.named() {
            let Some(t) = tensors.get(&name) else {
                bail!("{source}: tensor {name} is missing")
            };
            if t.dims() != var.dims() {
                bail!(
                    "{source}: tensor {name} has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            assign(&var, t)?;
        }
        Ok(())
    }
}

/// Overwrites a parameter in place (any dtype, converted to f32) and tells the copies derived from
/// weights that they are stale (see [`lingo_kernels::params_changed`]). Use this, not `Var::set`.
pub fn assign(var: &Var, value: &Tensor) -> Result<()> {
    lingo_kernels::params_changed();
    var.set(&value.to_dtype(DType::F32)?)
}

/// Serialises named tensors (f32) to safetensors bytes.
pub fn tensors_to_safetensors(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    tensors_to_safetensors_with_int8(tensors, &[], metadata)
}

/// An int8 tensor to store (candle has no i8 dtype): an int8 linear weight's values.
#[derive(Clone, Debug)]
pub struct Int8Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<i8>,
}

/// A tensor as safetensors stores it: candle's, or int8.
enum Stored<'a> {
    Candle(&'a Tensor),
    Int8(&'a Int8Tensor),
}

impl safetensors::View for Stored<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            Stored::Candle(t) => safetensors::View::dtype(t),
            Stored::Int8(_) => safetensors::Dtype::I8,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Stored::Candle(t) => t.dims(),
            Stored::Int8(t) => &t.shape,
        }
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Stored::Candle(t) => safetensors::View::data(t),
            Stored::Int8(t) => t.data.iter().map(|&v| v as u8).collect(),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Stored::Candle(t) => safetensors::View::data_len(t),
            Stored::Int8(t) => t.data.len(),
        }
    }
}

/// Serialises named candle tensors and int8 tensors to safetensors bytes.
pub fn tensors_to_safetensors_with_int8(
    tensors: &[(String, Tensor)],
    int8: &[(String, Int8Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    // A BTreeMap keeps the file's layout independent of hash order.
    let mut map: BTreeMap<&str, Stored> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), Stored::Candle(t)))
        .collect();
    for (n, t) in int8 {
        if map.insert(n.as_str(), Stored::Int8(t)).is_some() {
            bail!("serialising safetensors: tensor {n} given twice");
        }
    }
    safetensors::serialize(map, metadata)
        .map_err(|e| candle_core::Error::Msg(format!("serialising safetensors: {e}")))
}

/// Reads a safetensors file, with errors that name it (missing, truncated, malformed). Int8
/// tensors (quantized weights; candle has no i8 dtype) are read as their values in f32.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let file = MappedSafetensors::open(path)?;
    let mut tensors = HashMap::new();
    for name in file.names() {
        tensors.insert(name.to_string(), file.load(name, device)?);
    }
    Ok(tensors)
}

/// A safetensors file whose header is validated when it is opened, each tensor read only when
/// [`MappedSafetensors::load`] asks for it: an f32 tensor is read from the file straight into the
/// parameter's own buffer, so loading a model holds its parameters and nothing else — not the
/// file's bytes beside them. (The file is memory-mapped to validate the header against its
/// length; the tensors' pages are never touched through the mapping.)
pub struct MappedSafetensors {
    path: std::path::PathBuf,
    file: std::fs::File,
    map: memmap2::Mmap,
    /// Name → (dtype, shape, byte range in the file).
    entries: HashMap<String, (safetensors::Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

impl MappedSafetensors {
    pub fn open(path: &Path) -> Result<Self> {
        let io =
            |e: std::io::Error| candle_core::Error::Msg(format!("reading {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private. Like every reader that maps weights
        // (safetensors' own, transformers'), it assumes the file is not truncated while open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let parsed =
            safetensors::SafeTensors::deserialize(&map).map_err(|e| not_safetensors(path, &e))?;
        let base = map.as_ptr() as usize;
        let entries = (parsed.tensors().into_iter())
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                let range = start..start + view.data().len();
                (name, (view.dtype(), view.shape().to_vec(), range))
            })
            .collect();
        Ok(MappedSafetensors {
            path: path.into(),
            file,
            map,
            entries,
        })
    }

    /// Every tensor name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The dtype a tensor is stored in, when candle has it (int8 reads as f32).
    pub fn dtype(&self, name: &str) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match self.entries.get(name)?.0 {
            S::F64 => DType::F64,
            S::F32 | S::I8 => DType::F32,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::U8 => DType::U8,
            S::U32 => DType::U32,
            S::I64 => DType::I64,
            _ => return None,
        })
    }

    /// Reads the tensor `name` from the file onto `device`.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        use candle_core::safetensors::Load;
        use std::os::unix::fs::FileExt;
        let invalid =
            |e: &dyn std::fmt::Display| not_safetensors(&self.path, &format!("tensor {name}: {e}"));
        let Some((dtype, shape, range)) = self.entries.get(name) else {
            bail!("{}: no tensor {name}", self.path.display());
        };
        let read = |buffer: &mut [u8]| {
            self.file
                .read_exact_at(buffer, range.start as u64)
                .map_err(|e| invalid(&e))
        };
        match dtype {
            safetensors::Dtype::F32 => {
                let mut values = vec![0f32; range.len() / 4];
                // SAFETY: any bytes are a valid f32; the slice covers exactly `values`' memory.
                read(unsafe {
                    std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), range.len())
                })?;
                if cfg!(target_endian = "big") {
                    values
                        .iter_mut()
                        .for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
                }
                Tensor::from_vec(values, shape.as_slice(), device)
            }
            safetensors::Dtype::I8 => {
                let mut bytes = vec![0u8; range.len()];
                read(&mut bytes)?;
                let values: Vec<f32> = bytes.iter().map(|&b| b as i8 as f32).collect();
                Tensor::from_vec(values, shape.as_slice(), device)
            }
            _ => {
                let mut bytes = vec![0u8; range.len()];
                read(&mut bytes)?;
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), &bytes)
                    .map_err(|e| invalid(&e))?
                    .load(device)
            }
        }
        .map_err(|e| invalid(&e))
    }
}

fn not_safetensors(path: &Path, e: &dyn std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{}: not a valid safetensors file ({e})",
        path.display()
    ))
}

/// Reads the string metadata of a safetensors file.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let file = MappedSafetensors::open(path)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&file.map)
        .map_err(|e| not_safetensors(path, &e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

impl Inner {
    /// The value of a new parameter: the source's tensor (f32, on the store's device) if it has
    /// one, else drawn from `init`.
    fn produce(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let stored = match self.source.as_mut() {
            Some(source) => source(name, shape)?,
            None => None,
        };
        if let Some(t) = stored {
            if t.dims() != shape {
                bail!(
                    "parameter {name}: the source gives shape {:?}, the model expects {shape:?}",
                    t.dims()
                );
            }
            return t.to_dtype(DType::F32)?.to_device(&self.device);
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n).map(|_| self.rng.normal() * std).collect(),
            Init::Uniform(a) => (0..n)
                .map(|_| (self.rng.uniform() * 2.0 - 1.0) * a)
                .collect(),
        };
        Tensor::from_vec(data, shape, &self.device)
    }
}

/// A position in a [`ParamStore`]'s name space.
#[derive(Clone)]
pub struct ParamPath {
    store: ParamStore,
    prefix: String,
}

impl ParamPath {
    /// The path one level down, `prefix.name`.
    pub fn sub(&self, name: impl std::fmt::Display) -> ParamPath {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        ParamPath {
            store: self.store.clone(),
            prefix,
        }
    }

    /// The parameter `prefix.name`, created with `init` the first time it is asked for.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.store.create(&self.sub(name).prefix, shape, init)
    }

    /// The lookup table `prefix.name` of an embedding: f32, or bf16 in a store holding linear
    /// weights in bf16 (inference: the lookup converts the rows it reads to f32).
    pub fn table(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let dtype = match self.store.linear_precision() {
            LinearPrecision::Bf16 => DType::BF16,
            LinearPrecision::F32 | LinearPrecision::Int8 => DType::F32,
        };
        self.store
            .create_as(&self.sub(name).prefix, shape, init, dtype)
    }

    /// The weight `prefix.name` of a linear layer, `[out, in]`: int8 or bf16 if the store holds
    /// linear weights so ([`LinearPrecision`]).
    pub fn linear_weight(
        &self,
        name: &str,
        out: usize,
        inp: usize,
        init: Init,
    ) -> Result<LinearWeight> {
        self.store
            .linear_weight(&self.sub(name).prefix, out, inp, init)
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_sharing_by_name() -> Result<()> {
        let a = ParamStore::new(3, &Device::Cpu);
        let b = ParamStore::new(3, &Device::Cpu);
        let wa = a
            .root()
            .sub("layer")
            .get("w", &[4, 4], Init::Normal(0.02))?;
        let wb = b
            .root()
            .sub("layer")
            .get("w", &[4, 4], Init::Normal(0.02))?;
        assert_eq!(wa.to_vec2::<f32>()?, wb.to_vec2::<f32>()?);
        let again = a.root().sub("layer").get("w", &[4, 4], Init::Zeros)?;
        assert_eq!(again.id(), wa.id());
        assert!(a
            .root()
            .sub("layer")
            .get("w", &[2, 8], Init::Zeros)
            .is_err());
        assert_eq!(a.named()[0].0, "layer.w");
        Ok(())
    }

    #[test]
    fn save_load_round_trip_and_errors_name_the_tensor() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let path = dir.path().join("w.safetensors");
        let a = ParamStore::new(1, &Device::Cpu);
        a.root().get("x", &[3], Init::Normal(1.0))?;
        a.save(&path)?;
        let b = ParamStore::new(2, &Device::Cpu);
        b.root().get("x", &[3], Init::Zeros)?;
        b.load(&path)?;
        assert_eq!(
            a.get("x").unwrap().to_vec1::<f32>()?,
            b.get("x").unwrap().to_vec1::<f32>()?
        );

        let c = ParamStore::new(2, &Device::Cpu);
        c.root().get("x", &[4], Init::Zeros)?;
        let err = c.load(&path).unwrap_err().to_string();
        assert!(err.contains("tensor x has shape [3]"), "{err}");
        let d = ParamStore::new(2, &Device::Cpu);
        d.root().get("y", &[3], Init::Zeros)?;
        assert!(d
            .load(&path)
            .unwrap_err()
            .to_string()
            .contains("tensor y is missing"));

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = b.load(&path).unwrap_err().to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");
        Ok(())
    }

    #[test]
    fn mapped_safetensors_reads_each_dtype_as_stored() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let path = dir.path().join("mixed.safetensors");
        let dev = Device::Cpu;
        let f32s = Tensor::new(&[[1.5f32, -2.0, 3.25], [0.0, 1e-8, -7.0]], &dev)?;
        let halves = f32s.to_dtype(DType::F16)?;
        let bf16s = f32s.to_dtype(DType::BF16)?;
        let ids = Tensor::new(&[7u32, 0, 4_000_000_000], &dev)?;
        let tensors = [("a", &f32s), ("h", &halves), ("b", &bf16s), ("ids", &ids)];
        let tensors = tensors.map(|(n, t)| (n, t.clone()));
        candle_core::safetensors::save(&HashMap::from(tensors), &path)?;
        // One int8 tensor, as quantized folders store them.
        let mut bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let end = bytes.len() - 8 - header_len;
        header["q"] =
            serde_json::json!({"dtype": "I8", "shape": [3], "data_offsets": [end, end + 3]});
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(&header);
        file.extend(&bytes.split_off(8 + header_len));
        file.extend([0xFFu8, 0x01, 0x80]);
        std::fs::write(&path, &file).unwrap();

        let mapped = MappedSafetensors::open(&path)?;
        let mut names: Vec<&str> = mapped.names().collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b", "h", "ids", "q"]);
        assert_eq!(mapped.dtype("h"), Some(DType::F16));
        assert_eq!(mapped.dtype("q"), Some(DType::F32));
        assert_eq!(
            mapped.load("a", &dev)?.to_vec2::<f32>()?,
            f32s.to_vec2::<f32>()?
        );
        let h = mapped.load("h", &dev)?;
        assert_eq!(h.dtype(), DType::F16);
        let as_f32 = |t: &Tensor| t.to_dtype(DType::F32)?.to_vec2::<f32>();
        assert_eq!(as_f32(&h)?, as_f32(&halves)?);
        assert_eq!(as_f32(&mapped.load("b", &dev)?)?, as_f32(&bf16s)?);
        assert_eq!(
            mapped.load("ids", &dev)?.to_vec1::<u32>()?,
            [7, 0, 4_000_000_000]
        );
        assert_eq!(
            mapped.load("q", &dev)?.to_vec1::<f32>()?,
            [-1.0, 1.0, -128.0]
        );
        let err = mapped.load("nothing", &dev).unwrap_err().to_string();
        assert!(
            err.contains("mixed.safetensors") && err.contains("nothing"),
            "{err}"
        );
        // read_safetensors reads the same through the same reader.
        assert_eq!(read_safetensors(&path, &dev)?.len(), 5);

        std::fs::write(&path, &file[..file.len() - 1]).unwrap();
        let err = MappedSafetensors::open(&path)
            .err()
            .expect("truncated")
            .to_string();
        assert!(
            err.contains("mixed.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
        std::fs::write(&path, b"").unwrap();
        assert!(MappedSafetensors::open(&path).is_err());
        let err = MappedSafetensors::open(&dir.path().join("absent.safetensors"))
            .err()
            .expect("missing")
            .to_string();
        assert!(err.contains("absent.safetensors"), "{err}");
        Ok(())
    }

    /// A parameter takes over a tensor nobody else holds, and copies one that is shared: a
    /// variable must never write into a tensor the caller still reads.
    #[test]
    fn parameters_take_owned_values_and_copy_shared_ones() -> Result<()> {
        let dev = Device::Cpu;
        let owned = Tensor::new(&[1f32, 2.0, 3.0], &dev)?;
        let var = Var::from_owned_tensor(owned)?;
        assert!(var.as_tensor().is_variable());
        assert_eq!(var.to_vec1::<f32>()?, [1.0, 2.0, 3.0]);

        let shared = Tensor::new(&[1f32, 2.0, 3.0], &dev)?;
        let var = Var::from_owned_tensor(shared.clone())?;
        var.set(&Tensor::new(&[9f32, 9.0, 9.0], &dev)?)?;
        assert_eq!(shared.to_vec1::<f32>()?, [1.0, 2.0, 3.0]);
        let view = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)?.t()?;
        let var = Var::from_owned_tensor(view)?;
        assert_eq!(var.to_vec2::<f32>()?, [[1.0, 3.0], [2.0, 4.0]]);
        // A store built from a source keeps the values it was given.
        let store = ParamStore::reading(
            0,
            &dev,
            Box::new(|_, shape| Ok(Some(Tensor::ones(shape, DType::F32, &Device::Cpu)?))),
        );
        let w = store.root().get("w", &[2, 2], Init::Zeros)?;
        store.end_source();
        assert_eq!(w.to_vec2::<f32>()?, [[1.0, 1.0], [1.0, 1.0]]);
        Ok(())
    }
}
