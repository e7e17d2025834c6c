//! Training a word-level language model from scratch — recurrent ([`RnnLm`]), or a Transformer
//! decoder ([`Gpt`]) over the same words for comparison — and reading it back.
//!
//! - From plain text (one sentence a line, words separated by spaces, as PTB and WikiText ship),
//!   the sentences become one stream — each sentence's words, then `</s>` — cut into `batch_size`
//!   columns and walked in windows of `bptt` steps, the state carried from window to window and
//!   reset at each epoch (Zaremba et al. 2014). The carried state is saved in the checkpoint, so a
//!   resumed run continues exactly. A Transformer reads the same windows without carried state,
//!   and is scored over sliding windows of its context.
//! - From labelled texts (`.tsv`/`.jsonl`, as the classifiers read), each sentence is generated
//!   from its label's vector (one-to-many): shuffled sentence batches, padded.
//!
//! The folder holds `config.json` (`model_type` `lingo-rnn-lm`, the architecture, the labels),
//! `vocab.json`, `model.safetensors` and `recipe.json`; [`RnnLmPipeline::load`] reads it back to
//! score text with the same perplexity code as the n-gram models ([`lingo_ngram::perplexity`]) and
//! to generate.

use crate::error::{bad_input, to_train, write_in, Result};
use crate::finetune::{mean_loss, EpochOrder};
use candle_core::{Device, Tensor, D};
use lingo_data::LabelledText;
use lingo_eval::classification::sorted_labels;
use lingo_models::config::read_json;
use lingo_models::{Gpt, GptConfig, LmState, RnnLm, RnnLmConfig};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::{TrainConfig, TrainTask};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const MODEL_TYPE: &str = "lingo-rnn-lm";

/// The end of a sentence, also the first input of the stream and of every generated sentence.
pub const EOS: u32 = 0;
pub const UNK: u32 = 1;
const EOS_WORD: &str = "</s>";
const UNK_WORD: &str = "<unk>";
/// The target of a padded position in a sentence batch: the loss skips it.
const PAD_TARGET: u32 = u32::MAX;

/// Everything that defines a recurrent language model's training run (the `--config` file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnLmRecipe {
    /// The network; `vocab_size` and `num_conditions` are filled in from the data.
    pub model: RnnLmConfig,
    /// Words kept, the most frequent first (the rest read as `<unk>`); 0 keeps every word.
    pub vocab_size: usize,
    /// Steps of truncated back-propagation through time.
    pub bptt: usize,
    /// Passes over the training data; when set, `train.steps` is computed from it, and evaluation
    /// and checkpoints come once an epoch.
    pub epochs: Option<usize>,
    /// Zaremba's decay: after `after_epochs` epochs, the rate is multiplied by `factor` at every
    /// epoch (needs `epochs`; sets `train.schedule`).
    pub lr_decay: Option<EpochDecay>,
    /// A Transformer decoder instead of the recurrent network (`model` is then unused):
    /// `vocab_size` is filled in, and `context_length` is `bptt` (the training windows).
    pub transformer: Option<GptConfig>,
    pub train: TrainConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochDecay {
    pub after_epochs: usize,
    pub factor: f32,
}

impl Default for RnnLmRecipe {
    fn default() -> Self {
        RnnLmRecipe {
            model: RnnLmConfig::default(),
            vocab_size: 0,
            bptt: 20,
            epochs: Some(13),
            lr_decay: Some(EpochDecay {
                after_epochs: 4,
                factor: 0.5,
            }),
            transformer: None,
            train: TrainConfig::default(),
        }
    }
}

impl RnnLmRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
}

/// A word vocabulary: `</s>`, `<unk>`, then the training words by falling frequency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WordVocab {
    pub words: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl WordVocab {
    /// The `size` most frequent words of `sentences` (ties by spelling); 0 keeps them all.
    pub fn count<'a>(sentences: impl IntoIterator<Item = &'a [String]>, size: usize) -> Self {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for s in sentences {
            for w in s {
                *counts.entry(w.as_str()).or_default() += 1;
            }
        }
        let mut ranked: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|(w, _)| *w != EOS_WORD && *w != UNK_WORD)
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if size > 0 {
            ranked.truncate(size.saturating_sub(2));
        }
        let words = [EOS_WORD, UNK_WORD]
            .into_iter()
            .chain(ranked.into_iter().map(|(w, _)| w))
            .map(String::from)
            .collect();
        Self::from_words(words)
    }

    fn from_words(words: Vec<String>) -> Self {
        let index = (words.iter().enumerate())
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        WordVocab { words, index }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The id of a word; `None` out of the vocabulary (and for `</s>` written as a word).
    pub fn get(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied().filter(|&i| i != EOS)
    }

    pub fn encode(&self, words: &[String]) -> Vec<u32> {
        words.iter().map(|w| self.get(w).unwrap_or(UNK)).collect()
    }

    /// Reads a `vocab.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let vocab: WordVocab = read_json(path)?;
        if vocab.words.get(..2) != Some(&[EOS_WORD.to_string(), UNK_WORD.to_string()]) {
            return Err(bad_input!(
                "{}: a language-model vocabulary starts with `{EOS_WORD}` and `{UNK_WORD}`",
                path.display()
            ));
        }
        Ok(Self::from_words(vocab.words))
    }
}

/// The words of each non-blank line of `text`.
pub fn sentences_of(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What the model learns from.
pub enum LmData {
    /// `[columns, length]` of the running text, row-major: row `b` is the `b`-th slice of the stream.
    Stream {
        train: Vec<u32>,
        columns: usize,
        valid: Vec<u32>,
    },
    /// Sentences, each with its label, for the one-to-many model.
    Labelled {
        train: Vec<(u32, Vec<u32>)>,
        valid: Vec<(u32, Vec<u32>)>,
    },
}

/// `</s>` and then every sentence followed by `</s>`: the stream a language model reads.
fn stream(vocab: &WordVocab, sentences: &[Vec<String>]) -> Vec<u32> {
    let mut ids = vec![EOS];
    for s in sentences {
        ids.extend(vocab.encode(s));
        ids.push(EOS);
    }
    ids
}

/// The stream cut into `columns` equal rows (the tail that does not fill a row is dropped).
fn columns_of(stream: &[u32], columns: usize) -> Vec<u32> {
    let length = stream.len() / columns.max(1);
    stream[..length * columns].to_vec()
}

/// Training windows (or sentence batches) in an epoch of `data`.
fn batches_per_epoch(data: &LmData, recipe: &RnnLmRecipe) -> usize {
    match data {
        LmData::Stream { train, columns, .. } => {
            (train.len() / columns).saturating_sub(1) / recipe.bptt.max(1)
        }
        LmData::Labelled { train, .. } => train.len().div_ceil(recipe.train.batch_size.max(1)),
    }
}

/// The network that predicts the next word.
pub enum Network {
    Recurrent(RnnLm),
    Transformer(Gpt),
}

impl Network {
    fn build(recipe: &RnnLmRecipe, store: &ParamStore) -> Result<Self> {
        Ok(match &recipe.transformer {
            Some(c) => Network::Transformer(Gpt::new(c.clone(), &store.root())?),
            None => Network::Recurrent(RnnLm::new(recipe.model.clone(), &store.root())?),
        })
    }

    fn recurrent(&self) -> candle_core::Result<&RnnLm> {
        match self {
            Network::Recurrent(m) => Ok(m),
            Network::Transformer(_) => {
                candle_core::bail!("a Transformer language model does not generate from labels")
            }
        }
    }

    /// Mean loss of predicting `targets` from `ids` (`[batch, time]`), starting from `state`
    /// (recurrent), and the state after.
    fn loss(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        state: Option<&LmState>,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, Option<LmState>)> {
        match self {
            Network::Recurrent(m) => {
                let (loss, state) = m.loss(ids, targets, None, state, None, ctx)?;
                Ok((loss, Some(state)))
            }
            Network::Transformer(m) => Ok((m.loss(ids, targets, ctx)?, None)),
        }
    }

    /// Natural-log probability of each of `ids[1..]` after the words before it: the recurrent
    /// state carried through (batch 1, as Zaremba et al. evaluate), or for a Transformer windows
    /// of its context sliding by half of it.
    fn stream_log_probs(&self, ids: &[u32]) -> candle_core::Result<Vec<f64>> {
        let mut flat = Vec::with_capacity(ids.len().saturating_sub(1));
        let input = |ids: &[u32]| Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu);
        match self {
            Network::Recurrent(m) => {
                let mut state: Option<LmState> = None;
                for a in (1..ids.len()).step_by(SCORE_CHUNK) {
                    let b = (a + SCORE_CHUNK).min(ids.len());
                    let x = input(&ids[a - 1..b - 1])?;
                    let (logits, next) = m.forward(&x, None, state.as_ref(), &mut Ctx::eval())?;
                    flat.extend(target_log_probs(&logits, 0, &ids[a..b])?);
                    // Without its history: a graph over the whole text would be dropped recursively.
                    state = Some(next.detach());
                }
            }
            Network::Transformer(m) => {
                let context = m.config.context_length;
                let stride = (context / 2).max(1);
                for a in (1..ids.len()).step_by(stride) {
                    let b = (a + stride).min(ids.len());
                    let start = (b - 1).saturating_sub(context);
                    let logits = m.logits(&input(&ids[start..b - 1])?, &mut Ctx::eval())?;
                    flat.extend(target_log_probs(&logits, a - 1 - start, &ids[a..b])?);
                }
            }
        }
        Ok(flat)
    }
}

/// The natural-log probabilities of `targets` under the logits `[1, time, vocab]` from position
/// `skip` on.
fn target_log_probs(
    logits: &Tensor,
    skip: usize,
    targets: &[u32],
) -> candle_core::Result<Vec<f64>> {
    let l = logits.squeeze(0)?.narrow(0, skip, targets.len())?;
    let t = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), &Device::Cpu)?;
    let lp = lingo_kernels::log_softmax(&l)?.gather(&t, D::Minus1)?;
    Ok(lp
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// What `config.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedConfig {
    model_type: String,
    #[serde(flatten)]
    model: RnnLmConfig,
    /// A Transformer language model's network (then `model` is unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transformer: Option<GptConfig>,
    /// The conditions of a one-to-many model, in id order.
    #[serde(default)]
    labels: Vec<String>,
}

pub struct RnnLmTask {
    pub recipe: RnnLmRecipe,
    pub vocab: WordVocab,
    pub labels: Vec<String>,
    pub net: Network,
    pub data: LmData,
    store: ParamStore,
    order: EpochOrder,
    micro_batch: u64,
    /// The state after the last training window, and the micro-batch it continues into.
    carried: Option<(u64, LmState)>,
    last_eval_loss: Option<f64>,
}

impl RnnLmTask {
    /// A language model over running text: `train` and `valid` are sentences of words.
    pub fn from_text(
        recipe: RnnLmRecipe,
        train: &[Vec<String>],
        valid: &[Vec<String>],
        vocab: Option<WordVocab>,
    ) -> Result<Self> {
        if train.is_empty() || valid.is_empty() {
            return Err(bad_input!(
                "the training and validation texts must not be empty"
            ));
        }
        let vocab = vocab.unwrap_or_else(|| {
            WordVocab::count(train.iter().map(Vec::as_slice), recipe.vocab_size)
        });
        let columns = recipe.train.batch_size.max(1);
        let train_ids = stream(&vocab, train);
        let data = LmData::Stream {
            train: columns_of(&train_ids, columns),
            columns,
            valid: stream(&vocab, valid),
        };
        if batches_per_epoch(&data, &recipe) == 0 {
            return Err(bad_input!(
                "{} training words are too few for {columns} columns of {} steps",
                train_ids.len(),
                recipe.bptt
            ));
        }
        Self::build(recipe, vocab, Vec::new(), data)
    }

    /// A one-to-many model: each sentence is generated from its label.
    pub fn from_labelled(
        recipe: RnnLmRecipe,
        train: &[LabelledText],
        valid: &[LabelledText],
        vocab: Option<WordVocab>,
    ) -> Result<Self> {
        if train.is_empty() || valid.is_empty() {
            return Err(bad_input!(
                "the training and validation sets must not be empty"
            ));
        }
        let words = |e: &LabelledText| -> Vec<String> {
            e.text.split_whitespace().map(String::from).collect()
        };
        let train_words: Vec<Vec<String>> = train.iter().map(words).collect();
        let vocab = vocab.unwrap_or_else(|| {
            WordVocab::count(train_words.iter().map(Vec::as_slice), recipe.vocab_size)
        });
        let labels = sorted_labels(train.iter().map(|e| e.label.as_str()));
        let encode = |data: &[LabelledText]| -> Result<Vec<(u32, Vec<u32>)>> {
            data.iter()
                .map(|e| {
                    let label = e.label_index(&labels).map_err(|m| bad_input!("{m}"))?;
                    Ok((label, vocab.encode(&words(e))))
                })
                .collect()
        };
        let data = LmData::Labelled {
            train: encode(train)?,
            valid: encode(valid)?,
        };
        Self::build(recipe, vocab, labels, data)
    }

    fn build(
        mut recipe: RnnLmRecipe,
        vocab: WordVocab,
        labels: Vec<String>,
        data: LmData,
    ) -> Result<Self> {
        recipe.model.vocab_size = vocab.len();
        recipe.model.num_conditions = labels.len();
        if let Some(t) = &mut recipe.transformer {
            t.vocab_size = vocab.len();
            if !labels.is_empty() {
                return Err(bad_input!(
                    "a Transformer language model does not generate from labels; train on running text"
                ));
            }
            // It learns positions only as far as its training windows reach.
            t.context_length = recipe.bptt;
            t.validate()
                .map_err(|e| bad_input!("transformer config: {e}"))?;
        }
        if let Some(epochs) = recipe.epochs {
            let batches = batches_per_epoch(&data, &recipe);
            let t = &mut recipe.train;
            let per_epoch = batches.div_ceil(t.grad_accum.max(1));
            t.steps = per_epoch * epochs;
            t.eval_every = per_epoch;
            t.checkpoint_every = per_epoch;
            if let Some(decay) = &recipe.lr_decay {
                t.schedule.kind = lingo_train::ScheduleKind::Step;
                t.schedule.gamma = decay.factor;
                t.schedule.step_size = per_epoch;
                t.schedule.hold_steps = per_epoch * decay.after_epochs;
            }
        } else if recipe.lr_decay.is_some() {
            return Err(bad_input!("field `lr_decay` needs `epochs`"));
        }
        recipe
            .model
            .validate()
            .map_err(|e| bad_input!("model config: {e}"))?;
        let store = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let net = Network::build(&recipe, &store)?;
        Ok(RnnLmTask {
            order: EpochOrder::new(recipe.train.seed),
            recipe,
            vocab,
            labels,
            net,
            data,
            store,
            micro_batch: 0,
            carried: None,
            last_eval_loss: None,
        })
    }

    /// Training and validation tokens (or sentences).
    pub fn sizes(&self) -> (usize, usize) {
        match &self.data {
            LmData::Stream { train, valid, .. } => (train.len(), valid.len()),
            LmData::Labelled { train, valid } => (train.len(), valid.len()),
        }
    }

    /// Loss over a window of `[rows, length]` ids at `start`, predicting the next column.
    fn window_loss(
        &self,
        rows: &[u32],
        columns: usize,
        start: usize,
        len: usize,
        state: Option<&LmState>,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, Option<LmState>)> {
        let length = rows.len() / columns;
        let take = |offset: usize| -> candle_core::Result<Tensor> {
            let ids: Vec<u32> = (0..columns)
                .flat_map(|b| {
                    let at = b * length + start + offset;
                    rows[at..at + len].iter().copied()
                })
                .collect();
            Tensor::from_vec(ids, (columns, len), &Device::Cpu)
        };
        self.net.loss(&take(0)?, &take(1)?, state, ctx)
    }

    /// Loss over labelled sentences, each from its label's state.
    fn sentence_loss(
        &self,
        batch: &[&(u32, Vec<u32>)],
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let (ids, targets, lengths) = sentence_batch(batch.iter().map(|e| e.1.as_slice()))?;
        let labels: Vec<u32> = batch.iter().map(|e| e.0).collect();
        let model = self.net.recurrent()?;
        let state = model.condition_state(&labels, &Device::Cpu)?;
        let (loss, _) = model.loss(
            &ids,
            &targets,
            Some(&lengths),
            Some(&state),
            Some(PAD_TARGET),
            ctx,
        )?;
        Ok((loss, lengths.iter().sum()))
    }

    fn write_artifacts(&self, dir: &Path) -> Result<()> {
        let config = SavedConfig {
            model_type: MODEL_TYPE.into(),
            model: self.recipe.model.clone(),
            transformer: self.recipe.transformer.clone(),
            labels: self.labels.clone(),
        };
        write_in(dir, "config.json", serde_json::to_string_pretty(&config)?)?;
        write_in(dir, "vocab.json", serde_json::to_string(&self.vocab)?)?;
        write_in(
            dir,
            "recipe.json",
            serde_json::to_string_pretty(&self.recipe)?,
        )
    }
}

/// `[</s> w₁ … wₙ]` → `[w₁ … wₙ </s>]` for each sentence, padded: inputs, targets (padding is
/// [`PAD_TARGET`]) and lengths.
fn sentence_batch<'a>(
    sentences: impl Iterator<Item = &'a [u32]>,
) -> candle_core::Result<(Tensor, Tensor, Vec<usize>)> {
    let sentences: Vec<&[u32]> = sentences.collect();
    let lengths: Vec<usize> = sentences.iter().map(|s| s.len() + 1).collect();
    let width = lengths.iter().copied().max().unwrap_or(1);
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    for s in &sentences {
        let pad = width - s.len() - 1;
        ids.push(EOS);
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(EOS, pad));
        targets.extend_from_slice(s);
        targets.push(EOS);
        targets.extend(std::iter::repeat_n(PAD_TARGET, pad));
    }
    let b = sentences.len();
    Ok((
        Tensor::from_vec(ids, (b, width), &Device::Cpu)?,
        Tensor::from_vec(targets, (b, width), &Device::Cpu)?,
        lengths,
    ))
}

impl TrainTask for RnnLmTask {
    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn start_micro_batch(&mut self, index: u64) {
        self.micro_batch = index;
    }

    /// The mean loss of a window (or of a sentence batch) and its number of predicted words.
    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let index = self.micro_batch;
        match &self.data {
            LmData::Stream { train, columns, .. } => {
                if batch_size != *columns {
                    candle_core::bail!(
                        "the stream was cut into {columns} columns, not {batch_size}"
                    );
                }
                let within = (index % batches_per_epoch(&self.data, &self.recipe) as u64) as usize;
                // Each epoch starts from the zero state; every later window from the last one's.
                let state = match &self.carried {
                    Some((next, s)) if *next == index && within > 0 => Some(s.clone()),
                    _ => None,
                };
                let bptt = self.recipe.bptt;
                let (loss, state) =
                    self.window_loss(train, *columns, within * bptt, bptt, state.as_ref(), ctx)?;
                self.carried = state.map(|s| (index + 1, s.detach()));
                Ok((loss, columns * bptt))
            }
            LmData::Labelled { train, .. } => {
                let picks = self.order.batch(index, batch_size, train.len());
                let batch: Vec<&(u32, Vec<u32>)> = picks.iter().map(|&i| &train[i]).collect();
                self.sentence_loss(&batch, ctx)
            }
        }
    }

    /// Mean loss per word over the validation text: a stream in `batch_size` columns with its
    /// state carried through (or the labelled sentences).
    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let loss = match &self.data {
            LmData::Stream { valid, .. } => {
                let columns = batch_size.max(1).min(valid.len() / 2).max(1);
                let rows = columns_of(valid, columns);
                let length = rows.len() / columns;
                let bptt = self.recipe.bptt.max(1);
                let (mut total, mut count, mut state) = (0f64, 0usize, None);
                let mut start = 0;
                let mut windows = 0;
                while start + 1 < length && (max_batches == 0 || windows < max_batches) {
                    let len = bptt.min(length - 1 - start);
                    let (l, s) = self.window_loss(
                        &rows,
                        columns,
                        start,
                        len,
                        state.as_ref(),
                        &mut Ctx::eval(),
                    )?;
                    total += l.to_scalar::<f32>()? as f64 * (len * columns) as f64;
                    count += len * columns;
                    state = s.map(|s| s.detach());
                    start += len;
                    windows += 1;
                }
                total / count.max(1) as f64
            }
            LmData::Labelled { valid, .. } => {
                let all: Vec<&(u32, Vec<u32>)> = valid.iter().collect();
                mean_loss(&all, batch_size, max_batches, |chunk| {
                    self.sentence_loss(chunk, &mut Ctx::eval())
                })?
            }
        };
        self.last_eval_loss = Some(loss);
        Ok(loss)
    }

    fn evaluate(&mut self, _batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        Ok(self
            .last_eval_loss
            .map(|l| BTreeMap::from([("perplexity".to_string(), l.exp())]))
            .unwrap_or_default())
    }

    fn carried_state(&self) -> Vec<(String, Tensor)> {
        let Some((next, state)) = &self.carried else {
            return Vec::new();
        };
        let mut out = vec![
            (
                "next".to_string(),
                Tensor::new(&[*next as i64], &Device::Cpu).expect("a scalar"),
            ),
            ("h".to_string(), state.h.clone()),
        ];
        out.extend(state.c.clone().map(|c| ("c".to_string(), c)));
        out
    }

    fn restore_carried_state(
        &mut self,
        mut saved: HashMap<String, Tensor>,
    ) -> candle_core::Result<()> {
        let (Some(next), Some(h)) = (saved.remove("next"), saved.remove("h")) else {
            return Ok(());
        };
        let next = next.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64;
        let c = saved.remove("c");
        self.carried = Some((next, LmState { h, c }));
        Ok(())
    }

    fn describe(&self) -> serde_json::Value {
        let (train, _) = self.sizes();
        let mut task = serde_json::json!({
            "task": "rnn_lm",
            "model": self.recipe.model,
            "bptt": self.recipe.bptt,
            "labels": self.labels,
            "train_size": train,
        });
        // Only when there is one, so a recurrent run's description stays what it was.
        if let Some(t) = &self.recipe.transformer {
            task["transformer"] = serde_json::json!(t);
        }
        task
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.write_artifacts(dir).map_err(to_train)
    }
}

/// A trained recurrent language model read back from its folder.
pub struct RnnLmPipeline {
    pub net: Network,
    pub vocab: WordVocab,
    /// The conditions of a one-to-many model.
    pub labels: Vec<String>,
    _store: ParamStore,
}

/// Tokens per forward pass when scoring a stream.
const SCORE_CHUNK: usize = 64;

impl RnnLmPipeline {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let config: SavedConfig = read_json(&path)?;
        if config.model_type != MODEL_TYPE {
            return Err(bad_input!(
                "{}: model_type `{}`, not `{MODEL_TYPE}`",
                path.display(),
                config.model_type
            ));
        }
        if config.labels.len() != config.model.num_conditions {
            return Err(bad_input!(
                "{}: {} labels for `num_conditions` {}",
                path.display(),
                config.labels.len(),
                config.model.num_conditions
            ));
        }
        let vocab = WordVocab::load(&dir.join("vocab.json"))?;
        let vocab_size = config
            .transformer
            .as_ref()
            .map_or(config.model.vocab_size, |t| t.vocab_size);
        if vocab.len() != vocab_size {
            return Err(bad_input!(
                "{}: {} words, but the model's `vocab_size` is {}",
                dir.join("vocab.json").display(),
                vocab.len(),
                vocab_size
            ));
        }
        let store = ParamStore::new(0, &Device::Cpu);
        let net = match config.transformer {
            Some(t) => Network::Transformer(Gpt::new(t, &store.root())?),
            None => Network::Recurrent(RnnLm::new(config.model, &store.root())?),
        };
        store.load(&dir.join("model.safetensors"))?;
        Ok(RnnLmPipeline {
            net,
            vocab,
            labels: config.labels,
            _store: store,
        })
    }

    /// The id of a label of a one-to-many model.
    pub fn label_id(&self, label: &str) -> Result<u32> {
        (self.labels.iter().position(|l| l == label))
            .map(|i| i as u32)
            .ok_or_else(|| {
                if self.labels.is_empty() {
                    bad_input!("this language model has no labels to generate from")
                } else {
                    bad_input!(
                        "label `{label}` is not one of the model's ({})",
                        self.labels.join(", ")
                    )
                }
            })
    }

    /// Natural-log probabilities of each sentence's words and end, in running text.
    fn stream_log_probs(&self, sentences: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f64>>> {
        let mut ids = vec![EOS];
        for s in sentences {
            ids.extend_from_slice(s);
            ids.push(EOS);
        }
        let flat = self.net.stream_log_probs(&ids)?;
        let mut at = 0;
        Ok(sentences
            .iter()
            .map(|s| {
                let out = flat[at..at + s.len() + 1].to_vec();
                at += s.len() + 1;
                out
            })
            .collect())
    }

    /// Natural-log probabilities of each sentence's words and end, generated from `labels`.
    fn conditional_log_probs(
        &self,
        sentences: &[Vec<u32>],
        labels: &[u32],
    ) -> candle_core::Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(sentences.len());
        for (chunk, labels) in sentences.chunks(64).zip(labels.chunks(64)) {
            let (ids, targets, lengths) = sentence_batch(chunk.iter().map(Vec::as_slice))?;
            let model = self.net.recurrent()?;
            let state = model.condition_state(labels, &Device::Cpu)?;
            let (logits, _) =
                model.forward(&ids, Some(&lengths), Some(&state), &mut Ctx::eval())?;
            // Padding targets read position 0; those values are dropped below.
            let targets = targets.to_vec2::<u32>()?;
            let safe: Vec<u32> = (targets.iter().flatten())
                .map(|&t| if t == PAD_TARGET { EOS } else { t })
                .collect();
            let (b, width) = (chunk.len(), targets[0].len());
            let gathered = lingo_kernels::log_softmax(&logits)?
                .gather(
                    &Tensor::from_vec(safe, (b, width, 1), &Device::Cpu)?,
                    D::Minus1,
                )?
                .squeeze(2)?
                .to_vec2::<f32>()?;
            out.extend(
                gathered
                    .into_iter()
                    .zip(&lengths)
                    .map(|(row, &n)| row[..n].iter().map(|&v| f64::from(v)).collect()),
            );
        }
        Ok(out)
    }

    /// A [`lingo_ngram::WordLm`] view for [`lingo_ngram::perplexity`]: running text for a plain
    /// model; for a one-to-many model, each sentence from its label in `labels`.
    pub fn scorer<'a>(&'a self, labels: Option<&'a [u32]>) -> Scorer<'a> {
        Scorer {
            pipeline: self,
            labels,
        }
    }

    /// For each sentence, the label under which it is most probable (a generative classifier),
    /// with every label's total log-probability.
    pub fn classify(&self, sentences: &[Vec<u32>]) -> Result<Vec<(u32, Vec<f64>)>> {
        let n = self.labels.len() as u32;
        if n == 0 {
            return Err(bad_input!("this language model has no labels"));
        }
        let totals: Vec<Vec<f64>> = (0..n)
            .map(|label| {
                let labels = vec![label; sentences.len()];
                Ok(self
                    .conditional_log_probs(sentences, &labels)?
                    .iter()
                    .map(|lp| lp.iter().sum())
                    .collect())
            })
            .collect::<candle_core::Result<_>>()?;
        Ok((0..sentences.len())
            .map(|i| {
                let scores: Vec<f64> = totals.iter().map(|t| t[i]).collect();
                let best = (0..n as usize)
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                    .unwrap_or(0);
                (best as u32, scores)
            })
            .collect())
    }

    /// `count` sentences sampled word by word at `temperature` (0: the most probable word), each
    /// from `label`'s vector for a one-to-many model, else from the start of a text.
    pub fn generate(
        &self,
        label: Option<u32>,
        count: usize,
        max_words: usize,
        temperature: f32,
        seed: u64,
    ) -> Result<Vec<String>> {
        let mut rng = LingoRng::new(seed);
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); count];
        let mut done = vec![false; count];
        let mut pick = |out: &mut Vec<Vec<u32>>, done: &mut Vec<bool>, rows: Vec<Vec<f32>>| {
            for (i, row) in rows.into_iter().enumerate() {
                if !done[i] {
                    match sample(&row, temperature, &mut rng) {
                        EOS => done[i] = true,
                        w => out[i].push(w),
                    }
                }
            }
        };
        match &self.net {
            Network::Recurrent(m) => {
                let mut state = match label {
                    Some(l) => m.condition_state(&vec![l; count], &Device::Cpu)?,
                    None => m.zero_state(count, &Device::Cpu)?,
                };
                let mut words = vec![EOS; count];
                for _ in 0..max_words {
                    if done.iter().all(|&d| d) {
                        break;
                    }
                    let (log_probs, next) = m.step(&words, Some(&state))?;
                    state = next.detach();
                    pick(&mut out, &mut done, log_probs.to_vec2::<f32>()?);
                    for (w, o) in words.iter_mut().zip(&out) {
                        *w = o.last().copied().unwrap_or(EOS);
                    }
                }
            }
            Network::Transformer(m) => {
                if label.is_some() {
                    return Err(bad_input!("a Transformer language model has no labels"));
                }
                let context = m.config.context_length;
                for _ in 0..max_words {
                    if done.iter().all(|&d| d) {
                        break;
                    }
                    // Every sequence is as long as the longest (finished ones are not read).
                    let len = out.iter().map(Vec::len).max().unwrap_or(0);
                    let rows: Vec<u32> = (out.iter())
                        .flat_map(|o| {
                            let mut r = vec![EOS];
                            r.extend_from_slice(o);
                            r.resize(len + 1, EOS);
                            r[r.len().saturating_sub(context)..].to_vec()
                        })
                        .collect();
                    let width = rows.len() / count;
                    let x = Tensor::from_vec(rows, (count, width), &Device::Cpu)?;
                    let last = m.logits(&x, &mut Ctx::eval())?.narrow(1, width - 1, 1)?;
                    let lp = lingo_kernels::log_softmax(&last.squeeze(1)?)?;
                    pick(&mut out, &mut done, lp.to_vec2::<f32>()?);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|ids| {
                (ids.iter())
                    .map(|&i| self.vocab.words[i as usize].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect())
    }
}

/// A word drawn from log-probabilities sharpened or flattened by `temperature` (0: the argmax).
fn sample(log_probs: &[f32], temperature: f32, rng: &mut LingoRng) -> u32 {
    let argmax = || {
        (0..log_probs.len())
            .max_by(|&a, &b| log_probs[a].total_cmp(&log_probs[b]))
            .unwrap_or(0) as u32
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let top = log_probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = (log_probs.iter())
        .map(|&lp| (((lp - top) / temperature) as f64).exp())
        .collect();
    let mut u = rng.uniform() as f64 * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    argmax()
}

/// A recurrent language model seen by [`lingo_ngram::perplexity`].
pub struct Scorer<'a> {
    pipeline: &'a RnnLmPipeline,
    labels: Option<&'a [u32]>,
}

impl lingo_ngram::WordLm for Scorer<'_> {
    fn word_id(&self, word: &str) -> Option<u32> {
        self.pipeline.vocab.get(word)
    }

    fn unk_id(&self) -> u32 {
        UNK
    }

    fn log10_probs(
        &mut self,
        sentences: &[Vec<u32>],
    ) -> std::result::Result<Vec<Vec<f64>>, String> {
        let p = self.pipeline;
        let ln = match (self.labels, p.labels.is_empty()) {
            (None, true) => p.stream_log_probs(sentences),
            (Some(labels), false) if labels.len() == sentences.len() => {
                p.conditional_log_probs(sentences, labels)
            }
            (Some(_), true) => return Err("this language model has no labels".into()),
            _ => return Err("a one-to-many model scores each sentence with its label".into()),
        }
        .map_err(|e| e.to_string())?;
        let to_log10 = std::f64::consts::LOG10_E;
        Ok(ln
            .into_iter()
            .map(|s| s.into_iter().map(|v| v * to_log10).collect())
            .collect())
    }
}
