//! What every fine-tuning task shares: the recipe, the pretrained encoder with its new head and
//! tokenizer, the epoch-wise data order, the trainer's side of the loop and the output folder.
//! A task ([`crate::classification`], [`crate::token_classification`]) adds only its
//! [`Objective`]: how its examples are scored.

use crate::error::{bad_input, io, to_candle, to_train, Result};
use crate::Pretrained;
use candle_core::{Device, Tensor};
use lingo_data::{collate, Batch, Encoded, TaskTokenizer, Tokenizer};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::bert::{BertModel, Head};
use lingo_models::hf::LoadReport;
use lingo_models::{ModelOutput, Quantization};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::{ParamGroup, ScheduleKind, Shard, TrainConfig, TrainTask};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The recipe of `lingo finetune classify|ner` (`configs/sst2-minilm.json`, `configs/conll2003-minilm.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneRecipe {
    /// Tokens per input, special tokens included; longer inputs are truncated (longest text first).
    pub max_length: usize,
    /// Passes over the training data; when set, `train.steps` is derived from it.
    pub epochs: Option<usize>,
    /// Evaluate (and early-stop) at the end of every epoch instead of every `train.eval_every`
    /// steps (`transformers`' `eval_strategy="epoch"`).
    pub evaluate_each_epoch: bool,
    /// Linear warm-up over this fraction of the steps (`transformers`' `warmup_ratio`); overrides
    /// `train.schedule.warmup_steps`.
    pub warmup_ratio: Option<f32>,
    /// Replaces every dropout probability of the checkpoint (hidden, attention, head) when set.
    pub dropout: Option<f32>,
    /// Ignore the checkpoint's weights: its architecture and tokenizer, every parameter newly
    /// initialised from the seed (the from-scratch baseline of a pre-trained model).
    pub random_init: bool,
    /// Label smoothing of the cross-entropy (not for regression).
    pub label_smoothing: f32,
    /// Extractive QA: context tokens shared by consecutive windows of a long context.
    pub doc_stride: usize,
    /// Extractive QA: the longest answer decoded, in tokens.
    pub max_answer_length: usize,
    /// Layer-wise learning-rate decay (ELECTRA, Clark et al. 2020): the head trains at the full
    /// rate, encoder layer `i` of `n` at `decay^(n − i)`, the embeddings at `decay^(n + 1)`.
    pub layer_lr_decay: Option<f32>,
    /// Parts of the pretrained model that never train.
    pub freeze: Vec<Freeze>,
    /// Gradual unfreezing (ULMFiT, Howard & Ruder 2018): at first only the head trains; every
    /// this many steps one more encoder layer, from the top, joins it, then the embeddings.
    pub unfreeze_every: Option<usize>,
    /// Sequence to sequence: target tokens (the end token included); longer targets are cut.
    pub max_target_length: usize,
    /// Sequence to sequence: text put before every source (T5's task prefixes, such as
    /// `"summarize: "` or `"translate English to German: "`).
    pub source_prefix: String,
    /// Sequence to sequence, JSON data: the fields holding the source and the target.
    pub source_field: String,
    pub target_field: String,
    /// Sequence to sequence: beam search for validation (default: the model's own generation
    /// settings, at most `max_target_length` tokens).
    pub beam: Option<lingo_generate::BeamConfig>,
    pub train: TrainConfig,
}

/// What `freeze` can name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Freeze {
    /// The token, position and type embeddings (and ALBERT/ELECTRA's projection out of them).
    Embeddings,
    /// The first N encoder layers.
    FirstLayers(usize),
    /// The whole pretrained encoder: only the task head trains (feature extraction).
    AllButHead,
}

/// Where a parameter sits in a BERT-family model, by its checkpoint name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Depth {
    Embeddings,
    Layer(usize),
    /// The pooler, ALBERT's shared layer and anything else of the encoder.
    Encoder,
    Head,
}

/// The base-model prefixes of `*For*` checkpoints; what lies outside them is the task head.
const BASE_PREFIXES: [&str; 5] = ["bert.", "roberta.", "distilbert.", "albert.", "electra."];

fn depth(name: &str) -> Depth {
    if !BASE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Depth::Head;
    }
    if let Some(at) = name.find(".layer.") {
        let digits: String = name[at + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(i) = digits.parse() {
            return Depth::Layer(i);
        }
    }
    if name.contains("embedding") {
        Depth::Embeddings
    } else {
        Depth::Encoder
    }
}

impl Default for FinetuneRecipe {
    fn default() -> Self {
        let mut train = TrainConfig {
            batch_size: 32,
            eval_every: 500,
            checkpoint_every: 500,
            ..TrainConfig::default()
        };
        train.schedule.kind = ScheduleKind::Linear;
        FinetuneRecipe {
            max_length: 128,
            epochs: Some(3),
            evaluate_each_epoch: false,
            warmup_ratio: Some(0.06),
            dropout: None,
            random_init: false,
            label_smoothing: 0.0,
            doc_stride: 128,
            max_answer_length: 30,
            layer_lr_decay: None,
            freeze: Vec::new(),
            unfreeze_every: None,
            max_target_length: 128,
            source_prefix: String::new(),
            source_field: "source".into(),
            target_field: "target".into(),
            beam: None,
            train,
        }
    }
}

impl FinetuneRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(lingo_models::config::read_json(path)?)
    }

    /// Fills in the steps and warm-up that follow from `epochs` and `warmup_ratio` for
    /// `examples` training examples.
    pub fn resolve(&mut self, examples: usize) {
        let per_step = self.train.batch_size * self.train.grad_accum;
        let per_epoch = examples.div_ceil(per_step.max(1)).max(1);
        if let Some(epochs) = self.epochs {
            self.train.steps = epochs * per_epoch;
        }
        if self.evaluate_each_epoch {
            self.train.eval_every = per_epoch;
        }
        if let Some(ratio) = self.warmup_ratio {
            self.train.schedule.warmup_steps = (ratio * self.train.steps as f32).ceil() as usize;
        }
    }
}

impl FinetuneRecipe {
    /// The optimizer rules that layer-wise decay, freezing and gradual unfreezing give the
    /// parameters `names` of an encoder of `layers` layers, one rule per affected parameter.
    pub fn layer_rules(&self, names: &[String], layers: usize) -> Result<Vec<ParamGroup>> {
        for f in &self.freeze {
            if let Freeze::FirstLayers(k) = f {
                if *k > layers {
                    return Err(bad_input!(
                        "freeze: first_layers {k} but the model has {layers} layers"
                    ));
                }
            }
        }
        let mut rules = Vec::new();
        for name in names {
            let d = depth(name);
            let decay = self.layer_lr_decay.map(|rate| match d {
                Depth::Embeddings => rate.powi(layers as i32 + 1),
                Depth::Layer(i) => rate.powi(layers.saturating_sub(i) as i32),
                Depth::Encoder | Depth::Head => 1.0,
            });
            let frozen = self.freeze.iter().any(|f| match (f, d) {
                (_, Depth::Head) => false,
                (Freeze::AllButHead, _) | (Freeze::Embeddings, Depth::Embeddings) => true,
                (Freeze::FirstLayers(k), Depth::Layer(i)) => i < *k,
                _ => false,
            });
            let from_step = self.unfreeze_every.map(|every| {
                every
                    * match d {
                        Depth::Head | Depth::Encoder => 0,
                        Depth::Layer(i) => layers.saturating_sub(i),
                        Depth::Embeddings => layers + 1,
                    }
            });
            let lr_scale = if frozen {
                Some(0.0)
            } else {
                decay.filter(|&d| d != 1.0)
            };
            if lr_scale.is_some() || from_step.is_some_and(|s| s > 0) {
                rules.push(ParamGroup {
                    pattern: name.clone(),
                    weight_decay: None,
                    lr_scale,
                    from_step: from_step.filter(|&s| s > 0),
                });
            }
        }
        Ok(rules)
    }
}

/// An example: its encoded input and whatever its objective scores it against.
pub trait Encodable {
    fn input(&self) -> &Encoded;
}

/// What one kind of fine-tuning adds to [`Finetune`].
pub trait Objective: Sync {
    type Example: Encodable + Sync;
    /// One example's prediction (a label, a score, a tag per word).
    type Prediction;
    /// The task's name in checkpoints (`classify`, `ner`).
    const TASK: &'static str;
    /// The mean loss of `examples` from the head's output for their padded batch.
    fn loss(
        &self,
        output: &Tensor,
        examples: &[&Self::Example],
        recipe: &FinetuneRecipe,
    ) -> candle_core::Result<Tensor>;
    /// How many terms [`Objective::loss`] averages over for `examples`: the examples, unless the
    /// loss is per token. A micro-batch cut into shards weights each shard by it, exactly.
    fn loss_terms(&self, examples: &[&Self::Example]) -> usize {
        examples.len()
    }
    /// Each example's prediction from the head's output for their padded batch.
    fn predict(
        &self,
        output: &Tensor,
        examples: &[&Self::Example],
        labels: &[String],
    ) -> candle_core::Result<Vec<Self::Prediction>>;
    /// The validation metrics (the keys of `lingo metric`).
    fn score(
        &self,
        predictions: &[Self::Prediction],
        examples: &[Self::Example],
        labels: &[String],
    ) -> Result<BTreeMap<String, f64>>;
}

/// A pretrained encoder with a new head, its tokenizer and encoded data, ready for the trainer.
pub struct Finetune<O: Objective> {
    pub recipe: FinetuneRecipe,
    /// What loading left out: the new head's weights, unused checkpoint tensors.
    pub report: LoadReport,
    objective: O,
    encoder: TaskModel,
    config: serde_json::Value,
    store: ParamStore,
    labels: Vec<String>,
    train: Vec<O::Example>,
    valid: Vec<O::Example>,
    order: EpochOrder,
    micro_batch: u64,
    /// The pretrained folder.
    source: PathBuf,
}

/// A BERT-family model with the tokenizer set up for its task.
pub struct TaskModel {
    pub model: BertModel,
    pub tokenizer: Tokenizer,
    pub encoder: TaskTokenizer,
}

impl TaskModel {
    /// The head's output for `inputs`, padded into one batch, in `ctx`'s mode.
    pub fn output(&self, inputs: &[&Encoded], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        Ok(self.forward(inputs, ctx)?.1.output)
    }

    /// The padded batch of `inputs` and the model's whole output on it (every hidden state).
    pub fn forward(
        &self,
        inputs: &[&Encoded],
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Batch, ModelOutput)> {
        let batch = collate(inputs, self.encoder.pad_id, &Device::Cpu)?;
        let output = self.model.forward(&batch.inputs(), ctx)?;
        Ok((batch, output))
    }

    /// A folder `lingo finetune` wrote (or any checkpoint with `head`), with its labels.
    pub fn load_trained(
        dir: &Path,
        head: Head,
        max_length: usize,
        quantize: Option<Quantization>,
    ) -> Result<(TaskModel, Vec<String>)> {
        let options = LoadOptions {
            quantize,
            ..LoadOptions::default()
        };
        let pretrained = Pretrained::open(dir, &options)?;
        let labels = id2label(&pretrained.config);
        let model = TaskModel::new(pretrained, max_length, true)?;
        if model.model.head != head {
            return Err(bad_input!(
                "{}: a {head:?} model is needed; this one has a {:?} head",
                dir.display(),
                model.model.head
            ));
        }
        Ok((model, labels))
    }

    /// The encoder of `pretrained` with its tokenizer set to `max_length` tokens (cut to the
    /// model's positions when `fit`, refused beyond them otherwise).
    fn new(pretrained: Pretrained, max_length: usize, fit: bool) -> Result<TaskModel> {
        let AutoModel::Encoder(model) = pretrained.model else {
            return Err(bad_input!(
                "{}: fine-tuning this task needs a BERT-family encoder, not a {}",
                pretrained.dir.display(),
                pretrained.model.family()
            ));
        };
        let positions = model.config.max_position_embeddings;
        let max_length = if fit {
            max_length.min(positions)
        } else {
            max_length
        };
        if max_length > positions {
            return Err(bad_input!(
                "max_length {max_length} is longer than the model's {positions} positions"
            ));
        }
        let encoder = TaskTokenizer::new(&pretrained.tokenizer, max_length)?;
        Ok(TaskModel {
            model,
            tokenizer: pretrained.tokenizer,
            encoder,
        })
    }

    /// Predictions for `examples`, in batches, in evaluation mode.
    pub fn predict<O: Objective>(
        &self,
        objective: &O,
        examples: &[O::Example],
        labels: &[String],
        batch_size: usize,
    ) -> candle_core::Result<Vec<O::Prediction>> {
        let all: Vec<&O::Example> = examples.iter().collect();
        let mut out = Vec::with_capacity(all.len());
        for chunk in all.chunks(batch_size.max(1)) {
            let inputs: Vec<&Encoded> = chunk.iter().map(|e| e.input()).collect();
            let output = self.output(&inputs, &mut Ctx::eval())?;
            out.extend(objective.predict(&output, chunk, labels)?);
        }
        Ok(out)
    }
}

impl<O: Objective> Finetune<O> {
    /// Loads `model_dir` with a new `head` for `labels` (none for a span head); `prepare` encodes the data with the
    /// task tokenizer and returns the objective with the training and validation examples.
    pub fn load(
        model_dir: &Path,
        head: Head,
        labels: Vec<String>,
        mut recipe: FinetuneRecipe,
        prepare: impl FnOnce(&TaskTokenizer) -> Result<(O, Vec<O::Example>, Vec<O::Example>)>,
    ) -> Result<Self> {
        let options = LoadOptions {
            head: Some(head),
            labels: (!labels.is_empty()).then(|| labels.clone()),
            seed: recipe.train.seed,
            dropout: recipe.dropout,
            random_init: recipe.random_init,
            ..LoadOptions::default()
        };
        let pretrained = Pretrained::open(model_dir, &options)?;
        let (config, store, report) = (
            pretrained.config.clone(),
            pretrained.store.clone(),
            pretrained.report.clone(),
        );
        let encoder = TaskModel::new(pretrained, recipe.max_length, false)?;
        let (objective, train, valid) = prepare(&encoder.encoder)?;
        if train.is_empty() {
            return Err(bad_input!("{}: no training examples", model_dir.display()));
        }
        recipe.resolve(train.len());
        let names: Vec<String> = store.named().into_iter().map(|(n, _)| n).collect();
        let rules = recipe.layer_rules(&names, encoder.model.config.num_hidden_layers)?;
        recipe.train.param_groups.extend(rules);
        Ok(Finetune {
            order: EpochOrder::new(recipe.train.seed),
            recipe,
            report,
            objective,
            encoder,
            config,
            store,
            labels,
            train,
            valid,
            micro_batch: 0,
            source: model_dir.into(),
        })
    }

    /// The label names in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The encoder with its task head.
    pub fn model(&self) -> &BertModel {
        &self.encoder.model
    }

    /// `config.json` as the model now is (its head's architecture and labels).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The training examples.
    pub fn train_examples(&self) -> &[O::Example] {
        &self.train
    }

    /// Which training examples the current micro-batch (see `start_micro_batch`) takes.
    pub fn micro_batch_indices(&mut self, batch_size: usize) -> Vec<usize> {
        self.order
            .batch(self.micro_batch, batch_size, self.train.len())
    }

    /// The encoder, its tokenizer and its task encoding.
    pub fn task_model(&self) -> &TaskModel {
        &self.encoder
    }

    /// The task's own loss of the head's `output` on `examples`.
    pub fn objective_loss(
        &self,
        output: &Tensor,
        examples: &[&O::Example],
    ) -> candle_core::Result<Tensor> {
        self.objective.loss(output, examples, &self.recipe)
    }

    /// How many terms [`Finetune::objective_loss`] averages over for `examples`.
    pub fn loss_terms(&self, examples: &[&O::Example]) -> usize {
        self.objective.loss_terms(examples)
    }

    fn loss(&self, examples: &[&O::Example], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let inputs: Vec<&Encoded> = examples.iter().map(|e| e.input()).collect();
        let output = self.encoder.output(&inputs, ctx)?;
        self.objective.loss(&output, examples, &self.recipe)
    }
}

impl<O: Objective> TrainTask for Finetune<O> {
    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn start_micro_batch(&mut self, index: u64) {
        self.micro_batch = index;
    }

    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let picks = self.micro_batch_indices(batch_size);
        let examples: Vec<&O::Example> = picks.iter().map(|&i| &self.train[i]).collect();
        let tokens = examples.iter().map(|e| e.input().ids.len()).sum();
        Ok((self.loss(&examples, ctx)?, tokens))
    }

    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let picks = self.micro_batch_indices(batch_size);
        let this = &*self;
        lingo_train::trainer::shards_of(&picks, shards, |part| {
            let examples: Vec<&O::Example> = part.iter().map(|&i| &this.train[i]).collect();
            let tokens = examples.iter().map(|e| e.input().ids.len()).sum();
            let terms = this.objective.loss_terms(&examples);
            let loss = move |ctx: &mut Ctx| this.loss(&examples, ctx);
            Ok(Shard::mean(tokens, terms, loss))
        })
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let all: Vec<&O::Example> = self.valid.iter().collect();
        mean_loss(&all, batch_size, max_batches, |chunk| {
            Ok((self.loss(chunk, &mut Ctx::eval())?, chunk.len()))
        })
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        let predictions =
            self.encoder
                .predict(&self.objective, &self.valid, &self.labels, batch_size)?;
        self.objective
            .score(&predictions, &self.valid, &self.labels)
            .map_err(to_candle)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": O::TASK,
            "model": self.source.display().to_string(),
            "labels": self.labels,
            "max_length": self.recipe.max_length,
            "train_examples": self.train.len(),
        })
    }

    /// The Hugging Face folder's config (new architecture and labels) and tokenizer; the trainer
    /// writes `model.safetensors`.
    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        let json = serde_json::to_string_pretty(&self.config)?;
        let path = dir.join("config.json");
        lingo_nn::io::write_atomic(&path, json.as_bytes()).map_err(|e| to_train(io(&path)(e)))?;
        (self.encoder.tokenizer.save(&dir.join("tokenizer.json")))
            .map_err(|e| to_train(e.into()))?;
        crate::pretrained::copy_tokenizer_files(&self.source, dir).map_err(to_train)
    }
}

/// The order in which a task walks its training examples: epoch `e` is a permutation drawn from
/// `(seed, e)`, so the examples of micro-batch `i` depend only on `i` — a resumed run continues
/// mid-epoch exactly. The last batch of an epoch may be short, as a PyTorch `DataLoader`'s is.
pub struct EpochOrder {
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    pub fn new(seed: u64) -> Self {
        EpochOrder { seed, epoch: None }
    }

    /// The epoch micro-batch `index` falls in, over `n` examples in batches of `batch_size`, and
    /// its place within that epoch.
    pub fn position(index: u64, batch_size: usize, n: usize) -> (u64, usize) {
        let per_epoch = n.div_ceil(batch_size.max(1)).max(1) as u64;
        (index / per_epoch, (index % per_epoch) as usize)
    }

    /// The example indices of micro-batch `index` over `n` examples in batches of `batch_size`.
    pub fn batch(&mut self, index: u64, batch_size: usize, n: usize) -> Vec<usize> {
        let (epoch, within) = Self::position(index, batch_size, n);
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..n).collect();
            LingoRng::new(self.seed)
                .fork(0x5EED_0000 + epoch)
                .shuffle(&mut order);
            self.epoch = Some((epoch, order));
        }
        let order = &self.epoch.as_ref().expect("drawn above").1;
        let start = (within * batch_size).min(n);
        order[start..(start + batch_size).min(n)].to_vec()
    }
}

/// The validation loss as the trainer reports it: `loss` over `examples` in batches of
/// `batch_size` (at most `max_batches` of them; 0 = all), each batch's mean weighted by the count
/// it reports covering (examples or target tokens).
pub fn mean_loss<T>(
    examples: &[T],
    batch_size: usize,
    max_batches: usize,
    mut loss: impl FnMut(&[T]) -> candle_core::Result<(Tensor, usize)>,
) -> candle_core::Result<f64> {
    let take = if max_batches == 0 {
        usize::MAX
    } else {
        max_batches
    };
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)).take(take) {
        let (l, n) = loss(chunk)?;
        total += l.to_scalar::<f32>()? as f64 * n as f64;
        count += n;
    }
    Ok(total / count.max(1) as f64)
}

/// Moves 5% of `data` (at least one example), drawn with `seed`, into a validation split.
pub fn hold_out<T>(data: &mut Vec<T>, seed: u64, path: &Path) -> Result<Vec<T>> {
    let n = data.len().div_ceil(20);
    if n >= data.len() {
        return Err(bad_input!(
            "{}: {} examples are too few to hold out a validation part; give --valid",
            path.display(),
            data.len()
        ));
    }
    LingoRng::new(seed).fork(0x7A11D).shuffle(data);
    Ok(data.split_off(data.len() - n))
}

/// `id2label` of a config in id order.
pub fn id2label(config: &serde_json::Value) -> Vec<String> {
    let mut labels: Vec<(usize, String)> = config["id2label"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
        .collect();
    labels.sort();
    labels.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recipes the README's results use parse, and say what the issue's recipe says.
    #[test]
    fn shipped_recipes_parse() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut sst2 = FinetuneRecipe::load(&dir.join("sst2-minilm.json"))?;
        sst2.resolve(64_000);
        assert_eq!((sst2.max_length, sst2.train.batch_size), (64, 32));
        assert_eq!(
            (sst2.train.steps, sst2.train.schedule.warmup_steps),
            (2000, 120)
        );
        assert_eq!(sst2.train.optimizer.lr(), 5e-5);
        let mut conll = FinetuneRecipe::load(&dir.join("conll2003-minilm.json"))?;
        assert_eq!((conll.max_length, conll.epochs), (128, Some(3)));
        // Evaluating each epoch: every ⌈examples / batch⌉ steps.
        conll.evaluate_each_epoch = true;
        conll.resolve(100);
        assert_eq!((conll.train.steps, conll.train.eval_every), (12, 4));
        let bart = FinetuneRecipe::load(&dir.join("multi30k-bart.json"))?;
        assert_eq!(bart.beam.map(|b| b.beam_size), Some(5));
        Ok(())
    }

    #[test]
    fn every_epoch_visits_every_example_once_in_a_new_order() {
        let mut order = EpochOrder::new(3);
        let epoch = |order: &mut EpochOrder, e: u64| -> Vec<usize> {
            (e * 4..e * 4 + 4)
                .flat_map(|i| order.batch(i, 3, 10))
                .collect()
        };
        let (first, second) = (epoch(&mut order, 0), epoch(&mut order, 1));
        for e in [&first, &second] {
            let mut sorted = e.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(first, second);
        // A fresh order (a resumed run) gives the same batch for the same index.
        assert_eq!(EpochOrder::new(3).batch(5, 3, 10), order.batch(5, 3, 10));
    }

    #[test]
    fn layer_decay_freezing_and_unfreezing_become_rules() -> anyhow::Result<()> {
        let names: Vec<String> = [
            "bert.embeddings.word_embeddings.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.output.LayerNorm.weight",
            "bert.pooler.dense.weight",
            "classifier.weight",
        ]
        .map(String::from)
        .to_vec();
        let scale = |rules: &[ParamGroup], n: &str| {
            rules
                .iter()
                .find(|r| r.pattern == n)
                .and_then(|r| r.lr_scale)
        };
        let recipe = FinetuneRecipe {
            layer_lr_decay: Some(0.5),
            ..FinetuneRecipe::default()
        };
        let rules = recipe.layer_rules(&names, 2)?;
        let scales: Vec<Option<f32>> = names.iter().map(|n| scale(&rules, n)).collect();
        assert_eq!(
            scales,
            [Some(0.125), Some(0.25), Some(0.5), None, None],
            "embeddings deepest, the head at the full rate"
        );
        let frozen = FinetuneRecipe {
            freeze: vec![Freeze::Embeddings, Freeze::FirstLayers(1)],
            unfreeze_every: Some(10),
            ..FinetuneRecipe::default()
        };
        let rules = frozen.layer_rules(&names, 2)?;
        assert_eq!(scale(&rules, &names[0]), Some(0.0));
        assert_eq!(scale(&rules, &names[1]), Some(0.0));
        let from: Vec<Option<usize>> = names
            .iter()
            .map(|n| {
                rules
                    .iter()
                    .find(|r| &r.pattern == n)
                    .and_then(|r| r.from_step)
            })
            .collect();
        assert_eq!(from, [Some(30), Some(20), Some(10), None, None]);
        let parsed: FinetuneRecipe = serde_json::from_str(
            r#"{"freeze": ["all_but_head", {"first_layers": 3}], "layer_lr_decay": 0.9}"#,
        )?;
        assert_eq!(parsed.freeze, [Freeze::AllButHead, Freeze::FirstLayers(3)]);
        assert!(parsed.layer_rules(&names, 2).is_err(), "3 of 2 layers");
        Ok(())
    }
}
