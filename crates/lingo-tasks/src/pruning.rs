//! Pruning: removing weights a model can do without.
//!
//! - **Magnitude** (unstructured): the smallest `|w|` of the body's linear weights become zero, to
//!   a target sparsity in each matrix (`layer`) or over all of them at once (`global`). Over
//!   fine-tuning it can be gradual: the sparsity follows the cubic schedule of Zhu & Gupta (2017),
//!   `s_t = S·(1 − (1 − t/T)³)`, and the masks are re-applied after every optimizer step, so a
//!   pruned weight stays zero whatever the optimizer's moments say.
//! - **Heads** (structured, Michel et al. 2019): a gate `ξ_h` on each head's output has importance
//!   `I_h = E_batch |∂L/∂ξ_h|`. Since a layer's output is `W_o (ξ ⊙ context) + b`,
//!   `∂L/∂ξ_h = Σ W_o ⊙ ∂L/∂W_o` over the output projection's columns of head `h` — read off
//!   the ordinary parameter gradients. Scores are normalised per layer (ℓ2), the least important
//!   heads go first, every layer keeps one. The folder is saved with the smaller shapes and
//!   `pruned_heads` in `config.json`, as `transformers` records `prune_heads`.
//! - **Neurons** (structured): the same first-order importance for each feed-forward neuron (a
//!   column of the down projection); the same number go from every layer, so the folder is a
//!   plain checkpoint with a smaller `intermediate_size` that any BERT loader reads.

use crate::error::{bad_input, to_candle, Result};
use crate::finetune::{Finetune, Objective};
use candle_core::{Tensor, Var, D};
use lingo_models::bert::{BertModel, LayerParams};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::TrainTask;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which weights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The smallest weights of every linear layer of the body (unstructured).
    Magnitude,
    /// Whole attention heads, by importance.
    Heads,
    /// Whole feed-forward neurons, by importance.
    Neurons,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "magnitude" => Ok(Method::Magnitude),
            "heads" => Ok(Method::Heads),
            "neurons" => Ok(Method::Neurons),
            other => Err(format!(
                "unknown pruning method `{other}` (magnitude, heads, neurons)"
            )),
        }
    }
}

/// Over what magnitude pruning ranks weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each weight matrix loses the same fraction.
    Layer,
    /// One threshold for all of them: matrices with smaller weights lose more.
    Global,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "layer" => Ok(Scope::Layer),
            "global" => Ok(Scope::Global),
            other => Err(format!("unknown pruning scope `{other}` (layer, global)")),
        }
    }
}

/// A sparsity must be a fraction in [0, 1).
pub fn check_sparsity(sparsity: f64) -> Result<()> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(bad_input!(
            "--sparsity {sparsity}: expected a fraction from 0 up to (not including) 1"
        ));
    }
    Ok(())
}

/// Parts of a name that mark a weight outside the body's linear layers: embedding tables and
/// their tied output layers, poolers and task heads — which pruning leaves dense, as the
/// literature does.
const NOT_BODY: [&str; 11] = [
    "emb",
    "wte",
    "wpe",
    "shared",
    "pooler",
    "classifier",
    "qa_outputs",
    "lm_head",
    "cls.",
    "predictions",
    "relative_attention",
];

/// The linear weights magnitude pruning works on: every matrix of the model body.
pub fn prunable_weights(store: &ParamStore) -> Vec<(String, Var)> {
    store
        .named()
        .into_iter()
        .filter(|(name, var)| {
            var.rank() == 2
                && name.ends_with("weight")
                && !NOT_BODY.iter().any(|part| name.contains(part))
        })
        .collect()
}

/// 0/1 masks over some weights; applying them zeroes the pruned entries.
pub struct Masks {
    entries: Vec<(Var, Tensor)>,
}

impl Masks {
    /// Keeps all but the `sparsity` fraction of smallest-magnitude entries (exact counts; ties
    /// broken by position).
    pub fn magnitude(weights: &[(String, Var)], sparsity: f64, scope: Scope) -> Result<Masks> {
        check_sparsity(sparsity)?;
        let values = weights
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<Vec<Vec<f32>>>>()?;
        let keep: Vec<Vec<bool>> = match scope {
            Scope::Layer => values.iter().map(|w| keep_largest(w, sparsity)).collect(),
            Scope::Global => {
                let all: Vec<f32> = values.iter().flatten().copied().collect();
                let mut flags = keep_largest(&all, sparsity).into_iter();
                values
                    .iter()
                    .map(|w| flags.by_ref().take(w.len()).collect())
                    .collect()
            }
        };
        let entries = weights
            .iter()
            .zip(keep)
            .map(|((_, var), keep)| {
                let mask: Vec<f32> = keep.into_iter().map(|k| f32::from(u8::from(k))).collect();
                let mask = Tensor::from_vec(mask, var.shape(), var.device())?;
                Ok((var.clone(), mask))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Masks { entries })
    }

    /// Masks keeping the non-zero entries: what a resumed run recovers from its pruned weights.
    pub fn from_zeros(weights: &[(String, Var)]) -> Result<Masks> {
        let entries = weights
            .iter()
            .map(|(_, var)| {
                let mask = var
                    .as_tensor()
                    .ne(0f32)?
                    .to_dtype(candle_core::DType::F32)?;
                Ok((var.clone(), mask))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Masks { entries })
    }

    /// Zeroes the pruned weights.
    pub fn apply(&self) -> Result<()> {
        for (var, mask) in &self.entries {
            lingo_nn::params::assign(var, &(var.as_tensor() * mask)?)?;
        }
        Ok(())
    }

    /// The fraction of masked entries.
    pub fn sparsity(&self) -> Result<f64> {
        let (mut zeros, mut total) = (0f64, 0f64);
        for (_, mask) in &self.entries {
            total += mask.elem_count() as f64;
            zeros += mask.elem_count() as f64 - mask.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(zeros / total.max(1.0))
    }
}

/// Flags keeping all but the `sparsity · n` entries of smallest magnitude.
fn keep_largest(w: &[f32], sparsity: f64) -> Vec<bool> {
    let prune = ((sparsity * w.len() as f64).round() as usize).min(w.len());
    let mut order: Vec<u32> = (0..w.len() as u32).collect();
    if prune > 0 && prune < w.len() {
        order.select_nth_unstable_by(prune, |&a, &b| {
            (w[a as usize].abs(), a)
                .partial_cmp(&(w[b as usize].abs(), b))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let mut keep = vec![true; w.len()];
    for &i in &order[..prune] {
        keep[i as usize] = false;
    }
    keep
}

/// The sparsity at `step` of a run pruning gradually from step `begin` to step `end` towards
/// `target` (Zhu & Gupta 2017): fast at first, while the network can recover, slow at the end.
pub fn cubic_sparsity(step: usize, begin: usize, end: usize, target: f64) -> f64 {
    if step <= begin {
        return 0.0;
    }
    if step >= end {
        return target;
    }
    let progress = (step - begin) as f64 / (end - begin) as f64;
    target * (1.0 - (1.0 - progress).powi(3))
}

/// When and how far [`GradualPruning`] prunes.
#[derive(Clone, Debug, Serialize)]
pub struct PruningSchedule {
    pub sparsity: f64,
    pub scope: Scope,
    /// Pruning starts after this step (0: from the start)…
    pub begin: usize,
    /// …reaches `sparsity` at this one (equal to `begin`: all at once)…
    pub end: usize,
    /// …and raises the sparsity every `every` steps in between.
    pub every: usize,
}

/// A fine-tuning task whose body's weights are magnitude-pruned as it trains: the masks are
/// recomputed on the schedule and re-applied after every optimizer step, so pruned weights stay
/// zero. A resumed run recovers its masks from the zeros of the saved weights.
pub struct GradualPruning<T: TrainTask> {
    pub task: T,
    schedule: PruningSchedule,
    weights: Vec<(String, Var)>,
    masks: Option<Masks>,
    /// The index of the current micro-batch in the run.
    micro_batch: u64,
}

impl<T: TrainTask> GradualPruning<T> {
    pub fn new(task: T, schedule: PruningSchedule) -> Result<Self> {
        check_sparsity(schedule.sparsity)?;
        let weights = prunable_weights(task.params());
        if weights.is_empty() {
            return Err(bad_input!("the model has no linear weights to prune"));
        }
        Ok(GradualPruning {
            task,
            schedule,
            weights,
            masks: None,
            micro_batch: 0,
        })
    }

    /// The sparsity of the pruned weights now.
    pub fn sparsity(&self) -> Result<f64> {
        Masks::from_zeros(&self.weights)?.sparsity()
    }

    fn prune_to(&mut self, sparsity: f64) -> Result<()> {
        let masks = Masks::magnitude(&self.weights, sparsity, self.schedule.scope)?;
        masks.apply()?;
        self.masks = Some(masks);
        Ok(())
    }
}

impl<T: TrainTask> GradualPruning<T> {
    /// The masks, from the first micro-batch on. At the start of a run the weights are dense
    /// (pruned at once if the schedule says so); on a resume, their zeros are the masks.
    fn hold_masks(&mut self) -> candle_core::Result<()> {
        if self.masks.is_none() {
            let s = &self.schedule;
            if self.micro_batch == 0 && s.begin == 0 && s.end == 0 {
                self.prune_to(s.sparsity).map_err(to_candle)?;
            } else {
                self.masks = Some(Masks::from_zeros(&self.weights).map_err(to_candle)?);
            }
        }
        Ok(())
    }
}

impl<T: TrainTask> TrainTask for GradualPruning<T> {
    fn params(&self) -> &ParamStore {
        self.task.params()
    }

    fn start_micro_batch(&mut self, index: u64) {
        self.micro_batch = index;
        self.task.start_micro_batch(index)
    }

    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        self.hold_masks()?;
        self.task.train_loss(batch_size, ctx)
    }

    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<lingo_train::Shard<'_>>>> {
        self.hold_masks()?;
        self.task.train_shards(batch_size, shards, ctx)
    }

    fn after_step(&mut self, step: usize) -> candle_core::Result<()> {
        let s = self.schedule.clone();
        let on_schedule = step > s.begin
            && step <= s.end
            && ((step - s.begin).is_multiple_of(s.every.max(1)) || step == s.end);
        if on_schedule {
            self.prune_to(cubic_sparsity(step, s.begin, s.end, s.sparsity))
                .map_err(to_candle)?;
        } else if let Some(masks) = &self.masks {
            masks.apply().map_err(to_candle)?;
        }
        self.task.after_step(step)
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        self.task.eval_loss(batch_size, max_batches)
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        let mut metrics = self.task.evaluate(batch_size)?;
        metrics.insert("sparsity".into(), self.sparsity().map_err(to_candle)?);
        Ok(metrics)
    }

    fn describe(&self) -> serde_json::Value {
        let mut d = self.task.describe();
        d["pruning"] = serde_json::to_value(&self.schedule).unwrap_or_default();
        d
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.task.save_artifacts(dir)
    }

    fn save_weights(&self, path: &Path) -> lingo_train::Result<()> {
        self.task.save_weights(path)
    }
}

/// First-order importance of every head and feed-forward neuron of each encoder layer (the
/// layer's kept heads in order; its neurons in order).
#[derive(Clone, Debug)]
pub struct Importance {
    pub heads: Vec<Vec<f64>>,
    pub neurons: Vec<Vec<f64>>,
}

/// Accumulates `|Σ W ⊙ ∂L/∂W|` over the output projection's columns of each head and the down
/// projection's column of each neuron, for `batches` training batches of `batch_size` (no
/// dropout), as Michel et al. (2019) score heads.
pub fn importance<O: Objective>(
    task: &mut Finetune<O>,
    batches: usize,
    batch_size: usize,
) -> Result<Importance> {
    let layers = task.model().layer_params();
    let store = task.params().clone();
    let weight = |prefix: &str| {
        let name = format!("{prefix}.weight");
        store
            .get(&name)
            .ok_or_else(|| bad_input!("the model has no parameter `{name}`"))
    };
    let outputs = layers
        .iter()
        .map(|l| weight(&l.output))
        .collect::<Result<Vec<_>>>()?;
    let downs = layers
        .iter()
        .map(|l| weight(&l.down))
        .collect::<Result<Vec<_>>>()?;
    let mut result = Importance {
        heads: layers.iter().map(|l| vec![0.0; l.heads.len()]).collect(),
        neurons: downs
            .iter()
            .map(|d| vec![0.0; d.dim(1).unwrap_or(0)])
            .collect(),
    };
    // Column sums of W ⊙ ∂L/∂W: each input unit's gate derivative.
    let gate_grads = |w: &Var, grads: &candle_core::backprop::GradStore| -> Result<Vec<f32>> {
        let g = grads
            .get(w.as_tensor())
            .ok_or_else(|| bad_input!("no gradient reached a pruned layer"))?;
        Ok((w.as_tensor() * g)?.sum(0)?.to_vec1::<f32>()?)
    };
    for batch in 0..batches.max(1) {
        task.start_micro_batch(batch as u64);
        let (loss, _) = task.train_loss(batch_size, &mut Ctx::eval())?;
        let grads = loss.backward()?;
        for (l, layer) in layers.iter().enumerate() {
            let per_column = gate_grads(&outputs[l], &grads)?;
            let head_dim = per_column.len() / layer.heads.len().max(1);
            for (h, score) in result.heads[l].iter_mut().enumerate() {
                let s: f32 = per_column[h * head_dim..(h + 1) * head_dim].iter().sum();
                *score += s.abs() as f64;
            }
            let per_neuron = gate_grads(&downs[l], &grads)?;
            for (score, s) in result.neurons[l].iter_mut().zip(per_neuron) {
                *score += s.abs() as f64;
            }
        }
    }
    Ok(result)
}

/// The heads to remove from each layer (positions among the layer's kept heads): the
/// `sparsity` fraction of all heads with the least layer-normalised importance, every layer
/// keeping at least one.
pub fn heads_to_prune(importance: &[Vec<f64>], sparsity: f64) -> Result<Vec<Vec<usize>>> {
    check_sparsity(sparsity)?;
    let mut ranked = Vec::new();
    for (l, scores) in importance.iter().enumerate() {
        let norm = scores.iter().map(|s| s * s).sum::<f64>().sqrt().max(1e-30);
        ranked.extend(scores.iter().enumerate().map(|(h, s)| (s / norm, l, h)));
    }
    ranked.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let total: usize = importance.iter().map(Vec::len).sum();
    let mut goal = (sparsity * total as f64).round() as usize;
    let mut left: Vec<usize> = importance.iter().map(Vec::len).collect();
    let mut prune = vec![Vec::new(); importance.len()];
    for (_, l, h) in ranked {
        if goal == 0 {
            break;
        }
        if left[l] > 1 {
            prune[l].push(h);
            left[l] -= 1;
            goal -= 1;
        }
    }
    for p in &mut prune {
        p.sort_unstable();
    }
    Ok(prune)
}

/// The neurons each layer keeps (in order): all but its `sparsity` fraction of least important.
pub fn neurons_to_keep(importance: &[Vec<f64>], sparsity: f64) -> Result<Vec<Vec<usize>>> {
    check_sparsity(sparsity)?;
    Ok(importance
        .iter()
        .map(|scores| {
            let keep = scores.len() - (sparsity * scores.len() as f64).round() as usize;
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| {
                scores[b]
                    .partial_cmp(&scores[a])
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut kept = order[..keep.max(1)].to_vec();
            kept.sort_unstable();
            kept
        })
        .collect())
}

/// What structured pruning cuts.
#[derive(Clone, Debug, Default)]
pub struct Cut {
    /// Per layer, positions among its kept heads to remove.
    pub heads: Vec<Vec<usize>>,
    /// Per layer, the feed-forward neurons to keep (all when `None`).
    pub neurons: Option<Vec<Vec<usize>>>,
}

/// The model's config and weights after `cut`: the layers' projections sliced to their remaining
/// heads and neurons, `pruned_heads` extended (original head numbers), `intermediate_size` the
/// neurons kept.
pub fn cut(
    model: &BertModel,
    config: &serde_json::Value,
    store: &ParamStore,
    cut: &Cut,
) -> Result<(serde_json::Value, Vec<(String, Tensor)>)> {
    if model.family == lingo_models::bert::Family::Albert {
        return Err(bad_input!(
            "ALBERT shares one set of weights among its layers: structured pruning would cut them all alike"
        ));
    }
    let layers = model.layer_params();
    let head_dim = model.config.head_dim();
    let mut replaced: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut config = config.clone();
    let tensor = |name: &str| -> Result<Tensor> {
        Ok(store
            .get(name)
            .ok_or_else(|| bad_input!("the model has no parameter `{name}`"))?
            .as_tensor()
            .clone())
    };
    let mut pruned_heads: BTreeMap<usize, BTreeSet<usize>> = model
        .config
        .pruned_heads
        .iter()
        .map(|(&l, h)| (l, h.iter().copied().collect()))
        .collect();
    for (l, layer) in layers.iter().enumerate() {
        let drop = cut.heads.get(l).map_or(&[][..], |d| d.as_slice());
        if !drop.is_empty() {
            if drop.len() >= layer.heads.len() || drop.iter().any(|&h| h >= layer.heads.len()) {
                return Err(bad_input!(
                    "layer {l}: cannot remove heads {drop:?} of its {}",
                    layer.heads.len()
                ));
            }
            let rows: Vec<u32> = (0..layer.heads.len())
                .filter(|h| !drop.contains(h))
                .flat_map(|h| (h * head_dim) as u32..((h + 1) * head_dim) as u32)
                .collect();
            let rows = Tensor::new(rows.as_slice(), &store.device())?;
            for prefix in [&layer.query, &layer.key, &layer.value] {
                for part in ["weight", "bias"] {
                    let name = format!("{prefix}.{part}");
                    replaced.insert(name.clone(), tensor(&name)?.index_select(&rows, 0)?);
                }
            }
            let name = format!("{}.weight", layer.output);
            replaced.insert(name.clone(), tensor(&name)?.index_select(&rows, 1)?);
            pruned_heads
                .entry(l)
                .or_default()
                .extend(drop.iter().map(|&h| layer.heads[h]));
        }
        if let Some(keep) = cut.neurons.as_ref().and_then(|n| n.get(l)) {
            let keep: Vec<u32> = keep.iter().map(|&n| n as u32).collect();
            let keep = Tensor::new(keep.as_slice(), &store.device())?;
            for name in [format!("{}.weight", layer.up), format!("{}.bias", layer.up)] {
                replaced.insert(name.clone(), tensor(&name)?.index_select(&keep, 0)?);
            }
            let name = format!("{}.weight", layer.down);
            replaced.insert(name.clone(), tensor(&name)?.index_select(&keep, 1)?);
        }
    }
    if let Some(kept) = &cut.neurons {
        let widths: BTreeSet<usize> = kept.iter().map(Vec::len).collect();
        let [width] = widths.into_iter().collect::<Vec<_>>()[..] else {
            return Err(bad_input!(
                "neuron pruning must keep as many neurons in every layer"
            ));
        };
        let key = if config.get("hidden_dim").is_some() {
            "hidden_dim" // DistilBERT's name
        } else {
            "intermediate_size"
        };
        config[key] = width.into();
    }
    if !pruned_heads.is_empty() {
        config["pruned_heads"] = serde_json::to_value(
            pruned_heads
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(l, h)| (l.to_string(), h.iter().copied().collect::<Vec<_>>()))
                .collect::<BTreeMap<_, _>>(),
        )?;
    }
    let tensors = store
        .named()
        .into_iter()
        .map(|(name, var)| {
            let t = replaced
                .remove(&name)
                .unwrap_or_else(|| var.as_tensor().clone());
            (name, t)
        })
        .collect();
    Ok((config, tensors))
}

/// Total heads per layer and feed-forward width, for reports.
pub fn shape_summary(layers: &[LayerParams], store: &ParamStore) -> (usize, usize) {
    let heads = layers.iter().map(|l| l.heads.len()).sum();
    let neurons = layers
        .iter()
        .filter_map(|l| store.get(&format!("{}.weight", l.down)))
        .map(|w| w.dim(D::Minus1).unwrap_or(0))
        .sum();
    (heads, neurons)
}
