//! The training loop. A [`TrainTask`] supplies losses; the [`Trainer`] owns everything else: optimizer,
//! schedule, accumulation, clipping, evaluation, checkpoints, the metrics log, the plot and the
//! progress bar. A run resumed from its checkpoint continues exactly — same data order, same dropout
//! masks, same optimizer moments — so its loss curve equals that of an uninterrupted run.

use crate::checkpoint::{self, CheckpointMeta, CHECKPOINT_FILE};
use crate::data_parallel::{
    all_reduce_during, all_reduce_gradients, broadcast_params, share_from_root, sum_over_ranks,
    GradientSink,
};
use crate::grads::{clip_scale, Gradients};
use crate::metrics::{plot_losses, plot_metrics, MetricsLog, Record};
use crate::optim::{DecayPolicy, Optimizer, OptimizerConfig, ParamGroup};
use crate::precision::{Precision, PrecisionScope};
use crate::schedule::Schedule;
use crate::TrainError;
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lingo_dist::{Collective, SingleProcess};
use lingo_nn::pipeline::PipelineStage;
use lingo_nn::recompute::Recomputed;
use lingo_nn::{Ctx, LingoRng, ParamStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One part of a micro-batch (see [`TrainTask::train_shards`]), computed on any thread of any
/// rank. Its loss is its share of the whole micro-batch's: a loss that averages over `counts[k]`
/// terms of part `k` in this shard (tokens, masked tokens, sentences…) contributes
/// `mean_k · counts[k] / totals[k]`, where `totals` sums `counts` over every shard of the
/// micro-batch. The shares add up to the loss of the micro-batch in one piece.
pub struct Shard<'a> {
    /// Target tokens, for the run's throughput.
    pub tokens: usize,
    /// Terms each part of the loss averages over in this shard.
    pub counts: Vec<usize>,
    pub loss: ShardLoss<'a>,
}

/// Computes a shard's share of the loss with the given context (its own dropout stream) and the
/// micro-batch's totals of [`Shard::counts`].
pub type ShardLoss<'a> =
    Box<dyn FnOnce(&mut Ctx, &[usize]) -> candle_core::Result<Tensor> + Send + 'a>;

impl<'a> Shard<'a> {
    /// A shard whose loss is one mean over `count` terms, computed by `mean`.
    pub fn mean(
        tokens: usize,
        count: usize,
        mean: impl FnOnce(&mut Ctx) -> candle_core::Result<Tensor> + Send + 'a,
    ) -> Self {
        Shard::parts(tokens, vec![count], move |ctx: &mut Ctx| {
            Ok(vec![mean(ctx)?])
        })
    }

    /// A shard whose loss is a sum of means, part `k` over `counts[k]` terms, computed by
    /// `parts` in that order (masked LM and a sentence-pair loss; a distilled student's hard,
    /// soft and cosine losses).
    pub fn parts(
        tokens: usize,
        counts: Vec<usize>,
        parts: impl FnOnce(&mut Ctx) -> candle_core::Result<Vec<Tensor>> + Send + 'a,
    ) -> Self {
        let weights = counts.clone();
        Shard {
            tokens,
            counts,
            loss: Box::new(move |ctx: &mut Ctx, totals: &[usize]| {
                let parts = parts(ctx)?;
                let mut weighted = (parts.iter().zip(weights.iter().zip(totals)))
                    .map(|(part, (&count, &total))| part * share(count, total));
                let first = weighted
                    .next()
                    .ok_or_else(|| candle_core::Error::Msg("a loss of no parts".into()))??;
                weighted.try_fold(first, |sum, part| sum + part?)
            }),
        }
    }
}

/// `len` examples cut into at most `shards` runs of consecutive ones, all but the last of
/// `⌈len / shards⌉` (how every task cuts a micro-batch, so the cut depends only on the counts).
pub fn shard_ranges(len: usize, shards: usize) -> Vec<std::ops::Range<usize>> {
    let per = len.div_ceil(shards.max(1)).max(1);
    (0..len)
        .step_by(per)
        .map(|start| start..(start + per).min(len))
        .collect()
}

/// The micro-batch `items` cut into at most `shards` runs of consecutive items
/// ([`shard_ranges`]), each made a [`Shard`] by `shard`: what a task's
/// [`TrainTask::train_shards`] returns.
pub fn shards_of<'a, T>(
    items: &[T],
    shards: usize,
    mut shard: impl FnMut(&[T]) -> candle_core::Result<Shard<'a>>,
) -> candle_core::Result<Option<Vec<Shard<'a>>>> {
    let parts = shard_ranges(items.len(), shards).into_iter();
    parts
        .map(|r| shard(&items[r]))
        .collect::<candle_core::Result<_>>()
        .map(Some)
}

/// The weight of a part that averages `count` of a micro-batch's `total` terms.
pub fn share(count: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 / total as f64
    }
}

/// What the trainer needs from a model and its data.
pub trait TrainTask {
    fn params(&self) -> &ParamStore;
    /// Mean loss of one micro-batch of `batch_size` examples drawn with `ctx.rng`, and the number of
    /// target tokens it covered.
    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)>;
    /// Draws a micro-batch exactly as [`TrainTask::train_loss`] does and cuts it into at most
    /// `shards` parts, whose losses the trainer computes at the same time on different threads
    /// (`data_parallel` in the recipe) or ranks (a [`Collective`] of several). `None`: the task
    /// computes a micro-batch as one piece, on one rank.
    fn train_shards(
        &mut self,
        _batch_size: usize,
        _shards: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        Ok(None)
    }
    /// Pipeline parallelism (`pipeline_stages` in the recipe): the model cut for stage `stage` of
    /// `stages`; `None` when the task's model cannot be cut.
    fn pipeline_stage(
        &self,
        _stage: usize,
        _stages: usize,
    ) -> candle_core::Result<Option<Box<dyn PipelineStage + '_>>> {
        Ok(None)
    }
    /// The inputs of one micro-batch (ids, targets, …: what [`PipelineStage::forward`] takes),
    /// drawn exactly as [`TrainTask::train_loss`] draws it; the first input's elements are the
    /// tokens it covers.
    fn pipeline_inputs(
        &mut self,
        _batch_size: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Tensor>>> {
        Ok(None)
    }
    /// Mean validation loss over at most `max_batches` batches (0 = the whole split).
    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64>;
    /// The task's own validation metrics (accuracy, F1, …), computed after each evaluation.
    fn evaluate(&mut self, _batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
    /// Called before each micro-batch with its index in the whole run (`step · grad_accum +
    /// micro-batch`), so a task that walks its data in epochs knows where it is — also after a resume.
    fn start_micro_batch(&mut self, _index: u64) {}
    /// Called after the optimizer's update of step `step` (counted from 1), before evaluation and
    /// checkpointing: e.g. to re-apply pruning masks so pruned weights stay zero.
    fn after_step(&mut self, _step: usize) -> candle_core::Result<()> {
        Ok(())
    }
    /// Tensors the task carries from one step to the next (a recurrent language model's state
    /// between windows), saved in the checkpoint so that a resumed run continues exactly.
    fn carried_state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Takes back what [`TrainTask::carried_state`] saved (nothing from an older checkpoint).
    fn restore_carried_state(
        &mut self,
        _state: std::collections::HashMap<String, Tensor>,
    ) -> candle_core::Result<()> {
        Ok(())
    }
    /// The task's description for the checkpoint (model config, tokenizer, …).
    fn describe(&self) -> serde_json::Value;
    /// Writes what a user needs to run the model (e.g. `config.json`, `tokenizer.json`) into `dir`.
    fn save_artifacts(&self, dir: &Path) -> crate::Result<()>;
    /// Writes the weights a user loads (`model.safetensors`); by default under the parameters' own
    /// names. A task whose checkpoint layout differs (GPT-2's) converts here.
    fn save_weights(&self, path: &Path) -> crate::Result<()> {
        Ok(self.params().save(path)?)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub seed: u64,
    pub optimizer: OptimizerConfig,
    pub decay: DecayPolicy,
    pub param_groups: Vec<ParamGroup>,
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value.
    pub clip_norm: Option<f32>,
    /// Evaluate every this many steps (and after the last).
    pub eval_every: usize,
    /// Validation batches per evaluation (0 = the whole validation split).
    pub eval_batches: usize,
    /// Write a checkpoint every this many steps (and after the last).
    pub checkpoint_every: usize,
    /// Stop when a validation metric stops improving, and keep the best weights.
    pub early_stopping: Option<EarlyStopping>,
    /// Keep only each layer's input for the backward pass and recompute the layer there (models
    /// whose layers support it: the BERT family and GPT); less memory, about a third more time.
    pub gradient_checkpointing: bool,
    /// `f32`, or `bf16` mixed precision (bf16 products, f32 accumulation and master weights).
    pub precision: Precision,
    /// Cut each micro-batch into this many shards, computed at the same time on different threads,
    /// each single-threaded, and sum their gradients in shard order. For small models, where one
    /// step's matrix products are too small to split well across cores; results do not depend on
    /// the number of threads (each shard's dropout draws from its own stream of the run's RNG).
    pub data_parallel: usize,
    /// Cut the model into this many pipeline stages, one per rank (GPipe; the run needs exactly
    /// this many ranks): the `grad_accum` micro-batches of a step fill the pipeline.
    pub pipeline_stages: usize,
}

/// Early stopping as `transformers`' `EarlyStoppingCallback` with `load_best_model_at_end`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// `val_loss`, or a key of the task's metrics (`accuracy`, `f1`, `exact_match`, …).
    pub metric: String,
    /// Whether larger is better; by default false for losses, true for anything else.
    #[serde(default)]
    pub greater_is_better: Option<bool>,
    /// Evaluations without improvement before the run stops.
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// The least change that counts as an improvement.
    #[serde(default)]
    pub threshold: f64,
    /// At the end, `model.safetensors` holds the best evaluation's weights (kept meanwhile in
    /// `best.safetensors`).
    #[serde(default = "default_true")]
    pub restore_best: bool,
}

fn default_patience() -> usize {
    3
}

fn default_true() -> bool {
    true
}

impl EarlyStopping {
    fn greater_is_better(&self) -> bool {
        self.greater_is_better
            .unwrap_or(!self.metric.contains("loss"))
    }

    fn improves(&self, value: f64, best: Option<f64>) -> bool {
        match best {
            None => true,
            Some(b) if self.greater_is_better() => value > b + self.threshold,
            Some(b) => value < b - self.threshold,
        }
    }

    /// Records one evaluation (`val` and the task's `metrics`) in the run's counters; true when it
    /// is the best so far.
    fn observe(
        &self,
        val: f64,
        metrics: &BTreeMap<String, f64>,
        meta: &mut CheckpointMeta,
    ) -> crate::Result<bool> {
        let value = if self.metric == "val_loss" {
            val
        } else {
            *metrics.get(&self.metric).ok_or_else(|| {
                TrainError::Input(format!(
                    "early_stopping: metric `{}` is not among the evaluation's (val_loss, {})",
                    self.metric,
                    metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?
        };
        if self.improves(value, meta.best_metric) {
            meta.best_metric = Some(value);
            meta.best_step = Some(meta.step);
            meta.evals_since_best = 0;
            Ok(true)
        } else {
            meta.evals_since_best += 1;
            Ok(false)
        }
    }
}

/// Where early stopping keeps the best weights.
pub const BEST_FILE: &str = "best.safetensors";

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 16,
            grad_accum: 1,
            seed: 1337,
            optimizer: OptimizerConfig::default(),
            decay: DecayPolicy::Matrices,
            param_groups: Vec::new(),
            schedule: Schedule::default(),
            clip_norm: Some(1.0),
            eval_every: 250,
            eval_batches: 0,
            checkpoint_every: 500,
            early_stopping: None,
            gradient_checkpointing: false,
            precision: Precision::F32,
            data_parallel: 1,
            pipeline_stages: 1,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("data_parallel", self.data_parallel),
            ("pipeline_stages", self.pipeline_stages),
        ] {
            if v == 0 {
                return Err(format!("field `{name}` must be positive"));
            }
        }
        if self.optimizer.lr() <= 0.0 || !self.optimizer.lr().is_finite() {
            return Err(format!(
                "field `lr` must be positive, got {}",
                self.optimizer.lr()
            ));
        }
        Ok(())
    }
}

/// How a run ended.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub steps: usize,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub elapsed_secs: f64,
    pub tokens_per_sec: f64,
    /// The share of the training steps' time spent all-reducing gradients (0 on one rank).
    pub allreduce_share: f64,
    /// True when the run stopped early (interrupt or `stop_after`) and can be resumed.
    pub interrupted: bool,
    /// Early stopping: the step whose weights the run ended with, if it stopped or restored them.
    pub best_step: Option<usize>,
    pub stopped_early: bool,
}

#[derive(Clone)]
pub struct Trainer {
    pub config: TrainConfig,
    pub out_dir: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted.
    pub stop_after: Option<usize>,
    /// Set from outside (e.g. a Ctrl-C handler) to stop after the current step, with a checkpoint.
    pub interrupt: Arc<AtomicBool>,
    /// The ranks training together (data parallelism): each computes its shards of every
    /// micro-batch, and rank 0 alone logs, evaluates and writes the output folder. A world of one
    /// by default.
    pub collective: Arc<dyn Collective>,
    /// Sum each bucket of gradients over the ranks while backward computes the next (default);
    /// off, the all-reduce starts after backward — the same sums, for measuring what overlap
    /// gains.
    pub overlap_allreduce: bool,
}

/// The stream of data order and dropout, independent of the initialisation stream.
const RUN_RNG_SALT: u64 = 0xDA7A;

impl Trainer {
    pub fn new(config: TrainConfig, out_dir: impl Into<PathBuf>) -> Self {
        Trainer {
            config,
            out_dir: out_dir.into(),
            progress: true,
            stop_after: None,
            interrupt: Arc::new(AtomicBool::new(false)),
            collective: Arc::new(SingleProcess),
            overlap_allreduce: true,
        }
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.out_dir.join(CHECKPOINT_FILE)
    }

    /// Trains `task`, from its checkpoint in `out_dir` if `resume`.
    pub fn run(&self, task: &mut dyn TrainTask, resume: bool) -> crate::Result<TrainReport> {
        let cfg = &self.config;
        cfg.validate()
            .map_err(|e| TrainError::Input(format!("training config: {e}")))?;
        let dist = &*self.collective;
        let (world, root) = (dist.world_size(), dist.is_root());
        if root {
            std::fs::create_dir_all(&self.out_dir).map_err(crate::io(&self.out_dir))?;
            lingo_nn::io::remove_stale_temporaries(&self.out_dir);
        }
        let params = task.params().clone();
        let mut optimizer =
            Optimizer::new(cfg.optimizer.clone(), &params, cfg.decay, &cfg.param_groups);
        let train_json = serde_json::to_value(cfg)?;
        let task_json = task.describe();
        if world > 1 {
            let run = serde_json::json!({ "train": train_json, "task": task_json,
                "resume": resume, "parameters": params.num_params() });
            dist.agree(
                "runs (recipe, task, data or --resume)",
                run.to_string().as_bytes(),
            )?;
        }

        let owners = match cfg.pipeline_stages {
            1 => None,
            stages => Some(pipeline_owners(task, &params, stages, world)?),
        };

        let ckpt_path = self.checkpoint_path();
        let mut meta = if resume {
            let exists = || {
                if ckpt_path.exists() {
                    Ok(())
                } else {
                    Err(TrainError::Input(format!(
                        "cannot resume: no checkpoint at {}",
                        ckpt_path.display()
                    )))
                }
            };
            // Several ranks resume from rank 0's copy: the others need no shared file system.
            let bytes = match world {
                1 => exists().map(|()| None)?,
                _ => Some(share_from_root(dist, || {
                    exists()?;
                    std::fs::read(&ckpt_path).map_err(crate::io(&ckpt_path))
                })?),
            };
            let saved = match &bytes {
                None => checkpoint::read_meta(&ckpt_path)?,
                Some(bytes) => checkpoint::meta_of(bytes, &ckpt_path)?,
            };
            if saved.task != task_json {
                return Err(TrainError::Input(format!(
                    "cannot resume from {}: it was trained for a different model/task\n  checkpoint: {}\n  now:        {}",
                    ckpt_path.display(),
                    saved.task,
                    task_json
                )));
            }
            if saved.train_config != train_json && root {
                eprintln!("warning: the training config differs from the checkpoint's; continuing with the new one");
            }
            let (meta, carried) = match &bytes {
                None => checkpoint::load(&ckpt_path, &params, &mut optimizer)?,
                Some(bytes) => checkpoint::load_bytes(bytes, &ckpt_path, &params, &mut optimizer)?,
            };
            task.restore_carried_state(carried)
                .map_err(|e| TrainError::Input(format!("{}: {e}", ckpt_path.display())))?;
            meta
        } else {
            if world > 1 {
                broadcast_params(dist, &params)?;
            }
            CheckpointMeta::new(
                0,
                LingoRng::new(cfg.seed).fork(RUN_RNG_SALT).state(),
                train_json.clone(),
                task_json.clone(),
            )
        };
        meta.train_config = train_json;
        let rng = LingoRng::from_state(&meta.rng)
            .map_err(|e| TrainError::Input(format!("{}: {e}", ckpt_path.display())))?;
        let precision = PrecisionScope::enter(cfg.precision)?;
        if cfg.precision == Precision::Bf16
            && root
            && precision.effective != lingo_kernels::mixed_precision::Precision::Bf16
        {
            eprintln!(
                "warning: this CPU has no AVX-512 BF16 (or LINGO_NO_BF16 is set): training in f32"
            );
        }
        let mut ctx = Ctx::train(rng);
        if cfg.gradient_checkpointing {
            ctx.recompute = Some(Recomputed::for_params(&params));
        }
        // Rank 0 writes the output folder; the others only compute.
        let mut log = match root {
            true => Some(MetricsLog::open(
                &self.out_dir.join("metrics.jsonl"),
                resume.then_some(meta.step),
            )?),
            false => None,
        };
        if root {
            task.save_artifacts(&self.out_dir)?;
        }

        let bar = self.progress_bar(meta.step, root);
        let start = Instant::now();
        let elapsed_before = meta.elapsed_secs;
        let (mut run_tokens, mut train_secs, mut allreduce_secs) = (0u64, 0f64, 0f64);
        let (mut last_loss, mut last_val) = (None, None);
        let mut interrupted = false;
        let mut stopped_early = false;
        let mut last_shown = String::new();

        while meta.step < cfg.steps {
            let step_start = Instant::now();
            let mut out_of_patience = false;
            let lr = cfg.schedule.lr(cfg.optimizer.lr(), meta.step, cfg.steps);
            let (loss, tokens, grads, allreduce) = match &owners {
                None => self.accumulate(task, &params, meta.step, &mut ctx)?,
                Some(_) => self.pipeline_step(task, &params, meta.step, &mut ctx)?,
            };
            allreduce_secs += allreduce;
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    step: meta.step + 1,
                    loss,
                });
            }
            let (norm, scale) = match &owners {
                // Gradients were summed over micro-batches: their mean is grads / grad_accum.
                None => {
                    let norm = grads.global_norm()? / cfg.grad_accum as f64;
                    let scale = clip_scale(norm, cfg.clip_norm) / cfg.grad_accum as f32;
                    (norm, scale)
                }
                // Each stage holds the mean gradients of its parameters; the norm is over all.
                Some(owners) => {
                    let norm = pipeline_norm(dist, &grads, &params.named(), owners)?;
                    (norm, clip_scale(norm, cfg.clip_norm))
                }
            };
            optimizer.step(meta.step, &grads, lr, scale)?;
            drop(grads);
            meta.step += 1;
            task.after_step(meta.step)?;
            meta.tokens_seen += tokens as u64;
            run_tokens += tokens as u64;
            train_secs += step_start.elapsed().as_secs_f64();
            let tps = run_tokens as f64 / train_secs.max(1e-9);
            last_loss = Some(loss);
            let elapsed = elapsed_before + start.elapsed().as_secs_f64();
            let last = meta.step == cfg.steps;
            let mut stopping = self.stop_after.is_some_and(|s| meta.step >= s)
                || self.interrupt.load(Ordering::SeqCst);
            if world > 1 {
                // Rank 0 decides for everyone: an interrupt may reach the ranks at different steps.
                let mut decided = [stopping as u8 as f32];
                dist.broadcast(&mut decided, 0)?;
                stopping = decided[0] > 0.0;
            }
            if let Some(log) = log.as_mut() {
                log.append(Record {
                    step: meta.step,
                    loss: Some(loss),
                    lr: Some(lr),
                    grad_norm: Some(norm),
                    tokens_per_sec: Some(tps),
                    allreduce_s: (world > 1).then_some(allreduce),
                    elapsed_s: elapsed,
                    ..Default::default()
                })?;
                bar.set_position(meta.step as u64);
                bar.set_message(format!("loss {loss:.4}{last_shown} | {} tok/s", human(tps)));
            }
            let evaluating = (cfg.eval_every > 0 && meta.step % cfg.eval_every == 0) || last;
            let checkpointing = (cfg.checkpoint_every > 0 && meta.step % cfg.checkpoint_every == 0)
                || last
                || stopping;
            if let (Some(owners), true) = (&owners, evaluating || checkpointing) {
                // Rank 0 evaluates and saves the whole model: every stage's weights and optimizer
                // state, from the stage that updated them.
                self.sync_stages(owners, &params, &mut optimizer)?;
            }
            if let (true, Some(log)) = (evaluating, log.as_mut()) {
                let val = task.eval_loss(cfg.batch_size, cfg.eval_batches)?;
                let metrics = task.evaluate(cfg.batch_size)?;
                if let Some(es) = &cfg.early_stopping {
                    let improved = es.observe(val, &metrics, &mut meta)?;
                    if improved && es.restore_best {
                        params.save(&self.out_dir.join(BEST_FILE))?;
                    }
                    out_of_patience = !improved && meta.evals_since_best >= es.patience;
                }
                last_val = Some(val);
                meta.best_val_loss = Some(meta.best_val_loss.map_or(val, |b: f64| b.min(val)));
                let shown: String = metrics
                    .iter()
                    .map(|(k, v)| format!(", {k} {v:.4}"))
                    .collect();
                log.append(Record {
                    step: meta.step,
                    val_loss: Some(val),
                    elapsed_s: elapsed,
                    metrics,
                    ..Default::default()
                })?;
                self.say(
                    &bar,
                    format!(
                        "step {:>6}/{}: train loss {loss:.4}, val loss {val:.4}{shown}, {} tok/s, {:.0}s",
                        meta.step,
                        cfg.steps,
                        human(tps),
                        elapsed
                    ),
                );
                last_shown = shown;
                plot_losses(
                    log.records(),
                    &self.out_dir.join("loss.png"),
                    "Lingo training",
                )?;
                plot_metrics(
                    log.records(),
                    &self.out_dir.join("metrics.png"),
                    "Validation metrics",
                )?;
            }
            if root && (checkpointing || out_of_patience) {
                meta.rng = ctx.rng.state();
                meta.elapsed_secs = elapsed_before + start.elapsed().as_secs_f64();
                checkpoint::save(&ckpt_path, &params, &optimizer, task.carried_state(), &meta)?;
                task.save_weights(&self.out_dir.join("model.safetensors"))?;
            }
            if world > 1 && evaluating {
                // Rank 0 alone evaluated (early stopping decides only after an evaluation).
                let mut decided = [out_of_patience as u8 as f32];
                dist.broadcast(&mut decided, 0)?;
                out_of_patience = decided[0] > 0.0;
            }
            if out_of_patience && !last {
                stopped_early = true;
                self.say(
                    &bar,
                    format!(
                        "early stopping after step {}: {} has not improved for {} evaluations",
                        meta.step,
                        cfg.early_stopping
                            .as_ref()
                            .map_or("", |e| e.metric.as_str()),
                        meta.evals_since_best
                    ),
                );
                break;
            }
            if stopping && !last {
                interrupted = true;
                self.say(
                    &bar,
                    format!("stopped after step {}; resume with --resume", meta.step),
                );
                break;
            }
        }
        bar.finish_and_clear();
        let mut best_step = None;
        if let (Some(es), Some(step), false) = (&cfg.early_stopping, meta.best_step, interrupted) {
            if es.restore_best && step != meta.step && root {
                params.load(&self.out_dir.join(BEST_FILE))?;
                task.save_weights(&self.out_dir.join("model.safetensors"))?;
                eprintln!(
                    "kept the weights of step {step} ({} {:.4}) in model.safetensors",
                    es.metric,
                    meta.best_metric.unwrap_or(f64::NAN)
                );
            }
            best_step = Some(step);
        }
        // A completed run plotted at its last evaluation; a stopped one still shows its latest steps.
        if let (true, Some(log)) = (interrupted, &log) {
            plot_losses(
                log.records(),
                &self.out_dir.join("loss.png"),
                "Lingo training",
            )?;
        }
        Ok(TrainReport {
            steps: meta.step,
            train_loss: last_loss,
            val_loss: last_val,
            best_val_loss: meta.best_val_loss,
            elapsed_secs: elapsed_before + start.elapsed().as_secs_f64(),
            tokens_per_sec: run_tokens as f64 / train_secs.max(1e-9),
            allreduce_share: allreduce_secs / train_secs.max(1e-9),
            interrupted,
            best_step,
            stopped_early,
        })
    }

    /// Runs `grad_accum` micro-batches: their mean loss, token count and summed gradients — over
    /// every rank: each computes its shards, and the sums are all-reduced once per step, bucket by
    /// bucket during the last micro-batch's backward passes (the seconds the all-reduce ran on
    /// after them are the last value).
    fn accumulate(
        &self,
        task: &mut dyn TrainTask,
        params: &ParamStore,
        step: usize,
        ctx: &mut Ctx,
    ) -> crate::Result<(f64, usize, Gradients, f64)> {
        let (world, rank) = (self.collective.world_size(), self.collective.rank());
        let threads = self.config.data_parallel;
        let named = params.named();
        let mut total: Option<Gradients> = None;
        let (mut loss_sum, mut tokens) = (0.0, 0);
        let mut exposed = 0.0;
        for micro in 0..self.config.grad_accum {
            let index = (step * self.config.grad_accum + micro) as u64;
            task.start_micro_batch(index);
            let batch = self.config.batch_size;
            // Rank r computes shards r·threads … (r+1)·threads − 1 of the micro-batch.
            let mine = rank * threads..(rank + 1) * threads;
            let last = micro + 1 == self.config.grad_accum;
            let sharded = match world * threads {
                1 => None,
                n => task
                    .train_shards(batch, n, ctx)?
                    .map(|shards| {
                        if world == 1 || !last || !self.overlap_allreduce {
                            let (loss, n, grads) = sharded_micro_batch(
                                shards, mine, index, ctx, params, &named, None,
                            )?;
                            if let Some(grads) = grads {
                                Gradients::sum_into(&mut total, grads)?;
                            }
                            return Ok((loss, n));
                        }
                        // The step's last backward passes: each bucket of gradients is summed
                        // over the ranks as soon as it is final, while they go on.
                        let earlier = total.take();
                        let ((loss, n, _), reduced, waited) = all_reduce_during(
                            &*self.collective,
                            &named,
                            earlier,
                            threads,
                            |sink| {
                                let sink = Some(sink);
                                sharded_micro_batch(shards, mine, index, ctx, params, &named, sink)
                            },
                        )?;
                        total = Some(reduced);
                        exposed = waited;
                        Ok::<_, TrainError>((loss, n))
                    })
                    .transpose()?,
            };
            let (loss, n) = match sharded {
                Some(done) => done,
                None if world > 1 => {
                    return Err(TrainError::Input(format!(
                        "data-parallel training over {world} ranks needs a task that cuts its batches into shards, and {} does not",
                        task.describe().get("task").cloned().unwrap_or_default()
                    )));
                }
                None => {
                    let (loss, n, grads) = whole_micro_batch(task, batch, ctx, &named)?;
                    Gradients::sum_into(&mut total, grads)?;
                    (loss, n)
                }
            };
            loss_sum += loss;
            tokens += n;
        }
        let mut total = total.unwrap_or_else(|| Gradients {
            grads: vec![None; named.len()],
        });
        if world > 1 {
            let start = Instant::now();
            if !self.overlap_allreduce {
                total = all_reduce_gradients(&*self.collective, total, &named)?;
            }
            loss_sum = sum_over_ranks(&*self.collective, loss_sum)?;
            exposed += start.elapsed().as_secs_f64();
        }
        Ok((
            loss_sum / self.config.grad_accum as f64,
            tokens,
            total,
            exposed,
        ))
    }

    /// One step of this rank's pipeline stage over the step's `grad_accum` micro-batches (every
    /// rank draws all of them): the mean loss, the tokens, and the mean gradients of the stage's
    /// parameters (the others' are `None`).
    fn pipeline_step(
        &self,
        task: &mut dyn TrainTask,
        params: &ParamStore,
        step: usize,
        ctx: &mut Ctx,
    ) -> crate::Result<(f64, usize, Gradients, f64)> {
        let (rank, stages) = (self.collective.rank(), self.config.pipeline_stages);
        let mut micro_batches = Vec::with_capacity(self.config.grad_accum);
        let mut tokens = 0;
        for micro in 0..self.config.grad_accum {
            task.start_micro_batch((step * self.config.grad_accum + micro) as u64);
            let inputs = task
                .pipeline_inputs(self.config.batch_size, ctx)?
                .ok_or_else(|| TrainError::Input("this task cannot feed pipeline stages".into()))?;
            tokens += inputs.first().map_or(0, Tensor::elem_count);
            micro_batches.push(inputs);
        }
        // Dropout from a stream of its own: the run's stream (the data order) stays the same on
        // every rank, whatever each stage draws.
        let mut stage_ctx = Ctx::train(ctx.rng.fork(PIPELINE_STREAMS ^ step as u64));
        let stage = task
            .pipeline_stage(rank, stages)?
            .ok_or_else(|| TrainError::Input("this task cannot be cut into stages".into()))?;
        let (loss, stage_grads) = crate::pipeline::gpipe_step(
            &*self.collective,
            &*stage,
            &micro_batches,
            &mut stage_ctx,
        )?;
        let named = params.named();
        let mut grads = Gradients {
            grads: vec![None; named.len()],
        };
        for ((name, _), g) in stage.params().iter().zip(stage_grads.grads) {
            if let Some(i) = named.iter().position(|(n, _)| n == name) {
                grads.grads[i] = g;
            }
        }
        Ok((loss, tokens, grads, 0.0))
    }

    /// Every parameter and its optimizer state copied from the stage that owns it to all ranks.
    fn sync_stages(
        &self,
        owners: &std::collections::HashMap<String, usize>,
        params: &ParamStore,
        optimizer: &mut Optimizer,
    ) -> crate::Result<()> {
        let dist = &*self.collective;
        for (name, var) in params.named() {
            let owner = owners.get(&name).copied().unwrap_or(0);
            let mut values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            dist.broadcast(&mut values, owner)?;
            if dist.rank() != owner {
                let t = Tensor::from_vec(values, var.dims(), &var.device().clone())?;
                lingo_nn::params::assign(&var, &t)?;
            }
        }
        optimizer.sync_state(|name, values| {
            let owner = owners.get(name).copied().unwrap_or(0);
            dist.broadcast(values, owner)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        Ok(())
    }

    /// A line above the progress bar, or on stderr when there is no bar.
    fn say(&self, bar: &ProgressBar, line: String) {
        if !self.collective.is_root() {
            return;
        }
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    }

    fn progress_bar(&self, position: usize, root: bool) -> ProgressBar {
        let bar = ProgressBar::new(self.config.steps as u64);
        if !self.progress || !root {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar:.cyan/blue}] {pos}/{len} {per_sec} ETA {eta} | {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(position as u64);
        bar.reset_eta();
        bar
    }
}

/// Tags the dropout streams of shards apart from other forks of the run's seed.
const SHARD_STREAMS: u64 = 0x5348_4152_4453_0000;

/// Tags the dropout streams of pipeline steps.
const PIPELINE_STREAMS: u64 = 0x5049_5045_0000_0000;

/// Which stage owns each parameter (the first stage that holds it), for a run of `stages`
/// pipeline stages on `world` ranks.
fn pipeline_owners(
    task: &dyn TrainTask,
    params: &ParamStore,
    stages: usize,
    world: usize,
) -> crate::Result<std::collections::HashMap<String, usize>> {
    if world != stages {
        return Err(TrainError::Input(format!(
            "pipeline_stages {stages} needs exactly {stages} ranks (mpirun -np {stages}); this run has {world}"
        )));
    }
    let mut owners = std::collections::HashMap::new();
    for stage in (0..stages).rev() {
        let cut = task.pipeline_stage(stage, stages)?.ok_or_else(|| {
            TrainError::Input(format!(
                "{} cannot be cut into pipeline stages",
                task.describe().get("task").cloned().unwrap_or_default()
            ))
        })?;
        for (name, _) in cut.params() {
            owners.insert(name, stage);
        }
    }
    // Parameters no stage computes with stay with rank 0.
    for (name, _) in params.named() {
        owners.entry(name).or_insert(0);
    }
    Ok(owners)
}

/// The global gradient norm over every stage's parameters, each counted once (a tied weight by
/// its owner).
fn pipeline_norm(
    dist: &dyn Collective,
    grads: &Gradients,
    named: &[(String, candle_core::Var)],
    owners: &std::collections::HashMap<String, usize>,
) -> crate::Result<f64> {
    let owned = Gradients {
        grads: (grads.grads.iter().zip(named))
            .map(|(g, (n, _))| g.clone().filter(|_| owners.get(n) == Some(&dist.rank())))
            .collect(),
    };
    let local = owned.global_norm()?.powi(2);
    Ok(sum_over_ranks(dist, local)?.sqrt())
}

/// One micro-batch in one piece: its mean loss, tokens and gradients.
fn whole_micro_batch(
    task: &mut dyn TrainTask,
    batch_size: usize,
    ctx: &mut Ctx,
    named: &[(String, candle_core::Var)],
) -> crate::Result<(f64, usize, Gradients)> {
    let (loss, n) = task.train_loss(batch_size, ctx)?;
    let value = loss.to_scalar::<f32>()? as f64;
    Ok((value, n, gradients(loss, ctx, named, None)?))
}

/// The parameters' gradients of `loss`, with those of the layers `ctx` recomputed. With a
/// `sink`, each is reported as shard `shard`'s as soon as it is final (after the whole pass when
/// layers are recomputed, which add to the gradients afterwards).
fn gradients(
    loss: Tensor,
    ctx: &Ctx,
    named: &[(String, candle_core::Var)],
    sink: Option<(&GradientSink, usize)>,
) -> candle_core::Result<Gradients> {
    let mut store = match sink {
        Some((sink, shard)) if ctx.recompute.is_none() => {
            loss.backward_with(&mut |var, grad| {
                sink.report(shard, var, grad);
                Ok(())
            })?
        }
        _ => loss.backward()?,
    };
    drop(loss);
    if let Some(recomputed) = &ctx.recompute {
        store.extend(recomputed.take())?;
    }
    let grads = Gradients::from_store(named, &store);
    if let Some((sink, shard)) = sink {
        sink.finish(shard, &grads);
    }
    Ok(grads)
}

/// The shards `mine` of one micro-batch, each forward and backward on its own thread: the sum of
/// their shares of the micro-batch's loss, the micro-batch's target tokens (all shards'), and the
/// sum of their gradients in shard order (so the result does not depend on which thread finished
/// first; `None` when `mine` is empty, or when the shards report their gradients to `sink`
/// instead, as shards `0..mine.len()`). Shard `s` of micro-batch `index` draws its dropout from
/// a stream forked from the run's seed, leaving the run's own stream (the data order) as without
/// shards — and the same whichever thread or rank computes it.
pub fn sharded_micro_batch(
    shards: Vec<Shard<'_>>,
    mine: std::ops::Range<usize>,
    index: u64,
    ctx: &Ctx,
    params: &ParamStore,
    named: &[(String, candle_core::Var)],
    sink: Option<&GradientSink>,
) -> crate::Result<(f64, usize, Option<Gradients>)> {
    use rayon::prelude::*;
    let tokens: usize = shards.iter().map(|s| s.tokens).sum();
    if tokens == 0 {
        return Err(TrainError::Input(
            "a training batch has no target tokens".into(),
        ));
    }
    let mut totals = vec![0; shards.iter().map(|s| s.counts.len()).max().unwrap_or(0)];
    for shard in &shards {
        totals
            .iter_mut()
            .zip(&shard.counts)
            .for_each(|(t, c)| *t += c);
    }
    if let Some(sink) = sink {
        // A share of the ranks' shards that the batch is too small to fill has no gradients.
        let nothing = Gradients {
            grads: vec![None; named.len()],
        };
        (shards.len().max(mine.start)..mine.end)
            .for_each(|s| sink.finish(s - mine.start, &nothing));
    }
    let jobs: Vec<(usize, Shard, Ctx)> = shards
        .into_iter()
        .enumerate()
        .filter(|(s, _)| mine.contains(s))
        .map(|(s, shard)| {
            let salt = SHARD_STREAMS ^ (index << 16) ^ s as u64;
            let mut shard_ctx = Ctx::train(ctx.rng.fork(salt));
            if ctx.recompute.is_some() {
                shard_ctx.recompute = Some(Recomputed::for_params(params));
            }
            (s - mine.start, shard, shard_ctx)
        })
        .collect();
    let results: Vec<candle_core::Result<(f64, Gradients)>> = jobs
        .into_par_iter()
        .map(|(s, shard, mut shard_ctx)| {
            let loss =
                lingo_nn::linear::without_weight_copies(|| (shard.loss)(&mut shard_ctx, &totals))?;
            let value = loss.to_scalar::<f32>()? as f64;
            let sink = sink.map(|sink| (sink, s));
            Ok((value, gradients(loss, &shard_ctx, named, sink)?))
        })
        .collect();
    let mut loss = 0.0;
    let mut sum: Option<Gradients> = None;
    for result in results {
        let (value, grads) = result?;
        loss += value;
        if sink.is_none() {
            Gradients::sum_into(&mut sum, grads)?;
        }
    }
    Ok((loss, tokens, sum))
}

/// `12345.6` → `"12.3k"`.
fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
