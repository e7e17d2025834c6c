//! Checkpoints: one safetensors file holding the weights (`model.*`), the optimizer state (`optim.*`)
//! and, in its metadata, the step, the RNG position and the configs. One file written by rename is
//! atomic: a crash leaves either the old checkpoint or the new one, never a mix.

use crate::optim::Optimizer;
use crate::TrainError;
use candle_core::{Device, Tensor};
use lingo_nn::params::{read_safetensors, read_safetensors_metadata, tensors_to_safetensors};
use lingo_nn::{ParamStore, RngState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const META_KEY: &str = "lingo";
const FORMAT: u32 = 1;

/// Everything about a run except the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's RNG (data order, dropout) after `step` steps.
    pub rng: RngState,
    pub optimizer_steps: HashMap<String, u64>,
    pub tokens_seen: u64,
    pub elapsed_secs: f64,
    pub best_val_loss: Option<f64>,
    /// Early stopping: the best value of its metric so far, at which step, and the evaluations
    /// since then.
    #[serde(default)]
    pub best_metric: Option<f64>,
    #[serde(default)]
    pub best_step: Option<usize>,
    #[serde(default)]
    pub evals_since_best: usize,
    pub train_config: serde_json::Value,
    /// The task's own description (model config, tokenizer, …).
    pub task: serde_json::Value,
}

impl CheckpointMeta {
    pub fn new(
        step: usize,
        rng: RngState,
        train_config: serde_json::Value,
        task: serde_json::Value,
    ) -> Self {
        CheckpointMeta {
            format: FORMAT,
            step,
            rng,
            optimizer_steps: HashMap::new(),
            tokens_seen: 0,
            elapsed_secs: 0.0,
            best_val_loss: None,
            best_metric: None,
            best_step: None,
            evals_since_best: 0,
            train_config,
            task,
        }
    }
}

/// Writes the checkpoint atomically: the parameters, the optimizer's state, and the tensors the
/// task carries between steps.
pub fn save(
    path: &Path,
    params: &ParamStore,
    optimizer: &Optimizer,
    carried: Vec<(String, Tensor)>,
    meta: &CheckpointMeta,
) -> crate::Result<()> {
    let state = optimizer.state()?;
    let mut meta = meta.clone();
    meta.optimizer_steps = state.steps;
    let mut tensors: Vec<(String, Tensor)> = params
        .named()
        .into_iter()
        .map(|(n, v)| (format!("model.{n}"), v.as_tensor().clone()))
        .collect();
    tensors.extend(
        state
            .tensors
            .into_iter()
            .map(|(n, t)| (format!("optim.{n}"), t)),
    );
    tensors.extend(carried.into_iter().map(|(n, t)| (format!("task.{n}"), t)));
    let metadata = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&meta)?)]);
    let bytes = tensors_to_safetensors(&tensors, Some(metadata))?;
    lingo_nn::io::write_atomic(path, &bytes).map_err(crate::io(path))
}

/// Reads only the metadata of a checkpoint.
pub fn read_meta(path: &Path) -> crate::Result<CheckpointMeta> {
    parse_meta(&read_safetensors_metadata(path)?, path)
}

/// The metadata of a checkpoint held in memory (read from `path`, which errors name).
pub fn meta_of(bytes: &[u8], path: &Path) -> crate::Result<CheckpointMeta> {
    parse_meta(&safetensors_bytes(bytes, path)?.1, path)
}

/// The tensors and metadata of safetensors bytes read from `path`.
fn safetensors_bytes(
    bytes: &[u8],
    path: &Path,
) -> crate::Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let invalid = |e: &dyn std::fmt::Display| {
        TrainError::Input(format!("{}: not a valid checkpoint ({e})", path.display()))
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| invalid(&e))?;
    let tensors =
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| invalid(&e))?;
    Ok((tensors, header.metadata().clone().unwrap_or_default()))
}

fn parse_meta(meta: &HashMap<String, String>, path: &Path) -> crate::Result<CheckpointMeta> {
    let text = meta.get(META_KEY).ok_or_else(|| {
        TrainError::Input(format!(
            "{}: not a Lingo checkpoint (no `{META_KEY}` metadata)",
            path.display()
        ))
    })?;
    let meta: CheckpointMeta = serde_json::from_str(text).map_err(|e| {
        TrainError::Input(format!(
            "{}: malformed checkpoint metadata ({e})",
            path.display()
        ))
    })?;
    if meta.format != FORMAT {
        return Err(TrainError::Input(format!(
            "{}: checkpoint format {} is not supported (expected {FORMAT})",
            path.display(),
            meta.format
        )));
    }
    Ok(meta)
}

/// Restores weights and optimizer state from a checkpoint; returns its metadata and the tensors
/// the task carried.
pub fn load(
    path: &Path,
    params: &ParamStore,
    optimizer: &mut Optimizer,
) -> crate::Result<(CheckpointMeta, HashMap<String, Tensor>)> {
    let meta = read_meta(path)?;
    let tensors = read_safetensors(path, &Device::Cpu)?;
    restore(meta, tensors, path, params, optimizer)
}

/// [`load`] from the checkpoint's bytes, read from `path` (by another rank, say).
pub fn load_bytes(
    bytes: &[u8],
    path: &Path,
    params: &ParamStore,
    optimizer: &mut Optimizer,
) -> crate::Result<(CheckpointMeta, HashMap<String, Tensor>)> {
    let (tensors, meta) = safetensors_bytes(bytes, path)?;
    restore(parse_meta(&meta, path)?, tensors, path, params, optimizer)
}

/// Puts a checkpoint's tensors into the parameters and the optimizer; returns its metadata and
/// the tensors the task carried.
fn restore(
    meta: CheckpointMeta,
    tensors: HashMap<String, Tensor>,
    path: &Path,
    params: &ParamStore,
    optimizer: &mut Optimizer,
) -> crate::Result<(CheckpointMeta, HashMap<String, Tensor>)> {
    let source = path.display().to_string();
    let (model, rest): (HashMap<_, _>, HashMap<_, _>) = tensors
        .into_iter()
        .partition(|(k, _)| k.starts_with("model."));
    let (carried, optim): (HashMap<_, _>, HashMap<_, _>) =
        rest.into_iter().partition(|(k, _)| k.starts_with("task."));
    let strip = |m: HashMap<String, Tensor>, prefix: &str| -> HashMap<String, Tensor> {
        m.into_iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
            .collect()
    };
    params.load_from(&strip(model, "model."), &source)?;
    optimizer.load_state(&strip(optim, "optim."), &meta.optimizer_steps, &source)?;
    Ok((meta, strip(carried, "task.")))
}
