//! Training recurrent models from scratch on the shared trainer, one shuffled pass over the data
//! per epoch:
//! - classifiers (many-to-one): a word tokenizer learnt from the training texts, a
//!   (bi)LSTM/GRU/RNN with pooling ([`RnnClassifier`]), accuracy and F1 at each evaluation; the
//!   folder holds `config.json` (`model_type` `lingo-rnn-classifier`, the architecture,
//!   `id2label`), `tokenizer.json`, `model.safetensors` and `recipe.json`, which
//!   [`RnnClassifierPipeline::load`] reads back;
//! - taggers (synchronous many-to-many): word and character vocabularies from the training
//!   sentences, a BiLSTM(-CRF) with character features ([`RnnTagger`]), accuracy (known and
//!   unknown words apart) and, for BIO tags, entity F1 at each evaluation; the folder holds
//!   `config.json` (`lingo-rnn-tagger`), `vocab.json`, `model.safetensors` and `recipe.json`,
//!   which [`RnnTaggerPipeline::load`] reads back.

use crate::error::{bad_input, to_candle, to_train, write_in, Result};
use crate::finetune::{mean_loss, EpochOrder};
use candle_core::{Device, Tensor};
use lingo_data::{LabelledText, TaggedSentence, Tokenizer, TokenizerKind};
use lingo_eval::classification::{classification_report, sorted_labels};
use lingo_models::config::read_json;
use lingo_models::{RnnClassifier, RnnClassifierConfig, RnnTagger, RnnTaggerConfig, TaggerBatch};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::trainer::shards_of;
use lingo_train::{Shard, TrainConfig, TrainTask};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything that defines a recurrent classifier's training run (the `--config` file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnClassifyRecipe {
    /// The network; `vocab_size`, `pad_id` and `num_labels` are filled in from the data.
    pub model: RnnClassifierConfig,
    /// The word vocabulary's size (the most frequent training words; the rest are `<unk>`).
    pub vocab_size: usize,
    /// Words per sentence kept (the rest cut).
    pub max_length: usize,
    /// Passes over the training data; when set, `train.steps` is computed from it.
    pub epochs: Option<usize>,
    pub pretrained_embeddings: Option<PretrainedEmbeddings>,
    pub train: TrainConfig,
}

impl Default for RnnClassifyRecipe {
    fn default() -> Self {
        RnnClassifyRecipe {
            model: RnnClassifierConfig::default(),
            vocab_size: 20_000,
            max_length: 128,
            epochs: Some(3),
            pretrained_embeddings: None,
            train: TrainConfig::default(),
        }
    }
}

impl RnnClassifyRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
}

/// Pretrained word vectors to start the word embeddings from (GloVe, word2vec or fastText text
/// files; see [`lingo_data::read_word_vectors`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedEmbeddings {
    pub path: std::path::PathBuf,
    /// Keep them as they are (the optimizer never updates the table).
    #[serde(default)]
    pub freeze: bool,
}

/// The parameter that holds a recurrent model's word embeddings.
const WORD_EMBEDDINGS: &str = "word_embed.weight";

/// Copies the vectors of `words` (by id; the exact word, else its lower case) into the word
/// embedding table, and freezes it if asked. Returns how many words were found.
fn load_embeddings(
    store: &ParamStore,
    words: &[String],
    spec: &PretrainedEmbeddings,
    train: &mut TrainConfig,
) -> Result<usize> {
    let wanted: std::collections::HashSet<String> = words
        .iter()
        .flat_map(|w| [w.clone(), w.to_lowercase()])
        .collect();
    let found = lingo_data::read_word_vectors(&spec.path, |w| wanted.contains(w))?;
    let var = store
        .get(WORD_EMBEDDINGS)
        .ok_or_else(|| bad_input!("the model has no `{WORD_EMBEDDINGS}`"))?;
    let (rows, dim) = var.as_tensor().dims2()?;
    if found.dim != dim {
        return Err(bad_input!(
            "{}: vectors of width {}, but the model's embeddings are {dim} wide (set `embed_dim`)",
            spec.path.display(),
            found.dim
        ));
    }
    let mut table = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let mut covered = 0;
    // Ids 0 and 1 are `<pad>` and `<unk>`.
    for (id, w) in words.iter().enumerate().take(rows).skip(2) {
        if let Some(v) = found
            .vectors
            .get(w)
            .or_else(|| found.vectors.get(&w.to_lowercase()))
        {
            table[id * dim..(id + 1) * dim].copy_from_slice(v);
            covered += 1;
        }
    }
    lingo_nn::params::assign(&var, &Tensor::from_vec(table, (rows, dim), &Device::Cpu)?)?;
    if spec.freeze {
        train.param_groups.push(lingo_train::ParamGroup {
            pattern: "word_embed".into(),
            weight_decay: Some(0.0),
            lr_scale: Some(0.0),
            from_step: None,
        });
    }
    Ok(covered)
}

/// Optimizer steps for `epochs` passes over `examples` in the recipe's batches.
fn steps_for(epochs: usize, examples: usize, train: &TrainConfig) -> usize {
    let per_epoch = examples.div_ceil(train.batch_size.max(1));
    (per_epoch * epochs).div_ceil(train.grad_accum.max(1))
}

/// What `config.json` holds for a recurrent classifier.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedConfig {
    model_type: String,
    #[serde(flatten)]
    model: RnnClassifierConfig,
    id2label: BTreeMap<String, String>,
}

pub const MODEL_TYPE: &str = "lingo-rnn-classifier";

/// Words to ids, cut to `max_length`; a text with no words becomes one `<unk>`.
fn encode(tokenizer: &Tokenizer, text: &str, max_length: usize) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(text)?;
    ids.truncate(max_length.max(1));
    if ids.is_empty() {
        ids.push(
            tokenizer
                .token_to_id(lingo_data::tokenizer::UNK)
                .unwrap_or(0),
        );
    }
    Ok(ids)
}

pub struct RnnClassifyTask {
    pub recipe: RnnClassifyRecipe,
    /// Vocabulary words given a pretrained vector.
    pub embeddings_found: Option<usize>,
    pub tokenizer: Tokenizer,
    pub labels: Vec<String>,
    pub model: RnnClassifier,
    store: ParamStore,
    train: Vec<(Vec<u32>, u32)>,
    valid: Vec<(Vec<u32>, u32)>,
    order: EpochOrder,
    micro_batch: u64,
}

impl RnnClassifyTask {
    /// Builds the vocabulary (or keeps `tokenizer`, on resume) and the network, and encodes the
    /// data. A validation label never seen in training is an error naming its line.
    pub fn new(
        mut recipe: RnnClassifyRecipe,
        train: &[LabelledText],
        valid: &[LabelledText],
        tokenizer: Option<Tokenizer>,
    ) -> Result<Self> {
        if train.is_empty() || valid.is_empty() {
            return Err(bad_input!(
                "the training and validation sets must not be empty"
            ));
        }
        if let Some(e) = train.iter().chain(valid).find(|e| e.text_pair.is_some()) {
            return Err(bad_input!(
                "line {}: a text pair; recurrent classifiers read one text",
                e.line
            ));
        }
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => {
                let text: String = train.iter().map(|e| format!("{}\n", e.text)).collect();
                Tokenizer::train_with_specials(
                    TokenizerKind::Word {
                        vocab_size: recipe.vocab_size,
                    },
                    &text,
                    &["<pad>", lingo_data::tokenizer::UNK],
                )?
            }
        };
        let labels = sorted_labels(train.iter().map(|e| e.label.as_str()));
        let encode_all = |data: &[LabelledText]| -> Result<Vec<(Vec<u32>, u32)>> {
            data.iter()
                .map(|e| {
                    let label = e.label_index(&labels).map_err(|m| bad_input!("{m}"))?;
                    Ok((encode(&tokenizer, &e.text, recipe.max_length)?, label))
                })
                .collect()
        };
        let (train, valid) = (encode_all(train)?, encode_all(valid)?);
        recipe.model.vocab_size = tokenizer.vocab_size();
        recipe.model.pad_id = tokenizer.pad_id();
        recipe.model.num_labels = labels.len();
        if let Some(epochs) = recipe.epochs {
            recipe.train.steps = steps_for(epochs, train.len(), &recipe.train);
        }
        let store = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let model = RnnClassifier::new(recipe.model.clone(), &store.root())?;
        let mut embeddings_found = None;
        if let Some(spec) = recipe.pretrained_embeddings.clone() {
            let words: Vec<String> = (0..tokenizer.vocab_size() as u32)
                .map(|i| tokenizer.inner().id_to_token(i).unwrap_or_default())
                .collect();
            embeddings_found = Some(load_embeddings(&store, &words, &spec, &mut recipe.train)?);
        }
        Ok(RnnClassifyTask {
            embeddings_found,
            order: EpochOrder::new(recipe.train.seed),
            recipe,
            tokenizer,
            labels,
            model,
            store,
            train,
            valid,
            micro_batch: 0,
        })
    }

    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.valid.len())
    }

    fn loss(&self, examples: &[&(Vec<u32>, u32)], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let sentences: Vec<&[u32]> = examples.iter().map(|e| e.0.as_slice()).collect();
        let labels: Vec<u32> = examples.iter().map(|e| e.1).collect();
        let (ids, lengths) = self.model.batch(&sentences, &Device::Cpu)?;
        self.model.loss(&ids, &lengths, &labels, ctx)
    }

    /// Accuracy, F1 and MCC on the validation set, and its sentences per second.
    pub fn scores(&self, batch_size: usize) -> Result<BTreeMap<String, f64>> {
        let start = std::time::Instant::now();
        let mut predicted = Vec::with_capacity(self.valid.len());
        for chunk in self.valid.chunks(batch_size.max(1)) {
            let sentences: Vec<&[u32]> = chunk.iter().map(|e| e.0.as_slice()).collect();
            predicted.extend(self.model.predict(&sentences)?.0);
        }
        let rate = self.valid.len() as f64 / start.elapsed().as_secs_f64();
        let name = |i: u32| self.labels[i as usize].clone();
        let p: Vec<String> = predicted.into_iter().map(name).collect();
        let r: Vec<String> = self.valid.iter().map(|e| name(e.1)).collect();
        let report = classification_report(&p, &r).map_err(|e| bad_input!("{e}"))?;
        let mut out = BTreeMap::from([
            ("accuracy".to_string(), report.accuracy),
            ("macro_f1".to_string(), report.macro_f1),
            ("mcc".to_string(), report.mcc),
            ("sentences_per_second".to_string(), rate),
        ]);
        if let Some(f1) = report.f1 {
            out.insert("f1".into(), f1);
        }
        Ok(out)
    }

    fn write_artifacts(&self, dir: &Path) -> Result<()> {
        let config = SavedConfig {
            model_type: MODEL_TYPE.into(),
            model: self.recipe.model.clone(),
            id2label: (self.labels.iter().enumerate())
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
        };
        write_in(dir, "config.json", serde_json::to_string_pretty(&config)?)?;
        write_in(
            dir,
            "recipe.json",
            serde_json::to_string_pretty(&self.recipe)?,
        )?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        Ok(())
    }
}

impl TrainTask for RnnClassifyTask {
    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn start_micro_batch(&mut self, index: u64) {
        self.micro_batch = index;
    }

    /// The mean loss of a batch, and its number of words (the rate the trainer reports).
    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let picks = self
            .order
            .batch(self.micro_batch, batch_size, self.train.len());
        let examples: Vec<&(Vec<u32>, u32)> = picks.iter().map(|&i| &self.train[i]).collect();
        let words = examples.iter().map(|e| e.0.len()).sum();
        Ok((self.loss(&examples, ctx)?, words))
    }

    /// Shards of sentences; each shard's mean is weighted by its share of the sentences.
    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let picks = self
            .order
            .batch(self.micro_batch, batch_size, self.train.len());
        let this = &*self;
        shards_of(&picks, shards, |part| {
            let examples: Vec<&(Vec<u32>, u32)> = part.iter().map(|&i| &this.train[i]).collect();
            let (words, count) = (examples.iter().map(|e| e.0.len()).sum(), examples.len());
            Ok(Shard::mean(words, count, move |ctx: &mut Ctx| {
                this.loss(&examples, ctx)
            }))
        })
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let all: Vec<&(Vec<u32>, u32)> = self.valid.iter().collect();
        mean_loss(&all, batch_size, max_batches, |chunk| {
            Ok((self.loss(chunk, &mut Ctx::eval())?, chunk.len()))
        })
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        self.scores(batch_size).map_err(to_candle)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": "rnn_classify",
            "model": self.recipe.model,
            "labels": self.labels,
            "train_examples": self.train.len(),
        })
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.write_artifacts(dir).map_err(to_train)
    }
}

/// A trained recurrent classifier read back from its folder.
pub struct RnnClassifierPipeline {
    pub model: RnnClassifier,
    pub tokenizer: Tokenizer,
    pub labels: Vec<String>,
    max_length: usize,
    _store: ParamStore,
}

impl RnnClassifierPipeline {
    /// Whether `dir` holds a recurrent classifier (its `config.json` says so).
    pub fn is_one(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["model_type"] == MODEL_TYPE)
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let config: SavedConfig = read_json(&dir.join("config.json"))?;
        if config.model_type != MODEL_TYPE {
            return Err(bad_input!(
                "{}: model_type `{}`, not `{MODEL_TYPE}`",
                dir.join("config.json").display(),
                config.model_type
            ));
        }
        let labels: Vec<String> = (0..config.model.num_labels)
            .map(|i| {
                config.id2label.get(&i.to_string()).cloned().ok_or_else(|| {
                    bad_input!("{}: id2label lacks {i}", dir.join("config.json").display())
                })
            })
            .collect::<Result<_>>()?;
        let max_length = std::fs::read_to_string(dir.join("recipe.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<RnnClassifyRecipe>(&t).ok())
            .map_or(RnnClassifyRecipe::default().max_length, |r| r.max_length);
        let store = ParamStore::new(0, &Device::Cpu);
        let model = RnnClassifier::new(config.model, &store.root())?;
        store.load(&dir.join("model.safetensors"))?;
        Ok(RnnClassifierPipeline {
            model,
            tokenizer: Tokenizer::load(&dir.join("tokenizer.json"))?,
            labels,
            max_length,
            _store: store,
        })
    }

    /// Every label's probability for `text`, most probable first.
    pub fn scores(&self, text: &str) -> Result<Vec<(String, f32)>> {
        let ids = encode(&self.tokenizer, text, self.max_length)?;
        let (_, logits) = self.model.predict(&[&ids])?;
        let probs = lingo_kernels::softmax(&logits)?.to_vec2::<f32>()?.remove(0);
        let mut out: Vec<(String, f32)> = self.labels.iter().cloned().zip(probs).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}

/// Everything that defines a recurrent tagger's training run (the `--config` file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnTagRecipe {
    /// The network; `vocab_size`, `char_vocab_size`, `num_tags` and `pad_id` are filled in.
    pub model: RnnTaggerConfig,
    /// Feed each word's characters through a BiLSTM beside its embedding.
    pub char_features: bool,
    /// Words seen fewer times in training are `<unk>`.
    pub min_word_count: usize,
    /// While training, a word seen once is replaced by `<unk>` with this probability, so the
    /// `<unk>` embedding learns what rare words look like (Lample et al. 2016).
    pub word_dropout: f32,
    pub epochs: Option<usize>,
    pub pretrained_embeddings: Option<PretrainedEmbeddings>,
    pub train: TrainConfig,
}

impl Default for RnnTagRecipe {
    fn default() -> Self {
        RnnTagRecipe {
            model: RnnTaggerConfig::default(),
            char_features: true,
            min_word_count: 1,
            word_dropout: 0.5,
            epochs: Some(10),
            pretrained_embeddings: None,
            train: TrainConfig::default(),
        }
    }
}

impl RnnTagRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
}

pub const TAGGER_MODEL_TYPE: &str = "lingo-rnn-tagger";
const PAD: u32 = 0;
const UNK: u32 = 1;

/// The words and characters a tagger knows (`<pad>` and `<unk>` first).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaggerVocab {
    pub words: Vec<String>,
    pub chars: Vec<String>,
    #[serde(skip)]
    word_ids: std::collections::HashMap<String, u32>,
    #[serde(skip)]
    char_ids: std::collections::HashMap<char, u32>,
}

impl TaggerVocab {
    fn build(sentences: &[TaggedSentence], min_count: usize) -> TaggerVocab {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut chars = std::collections::BTreeSet::new();
        for s in sentences {
            for w in &s.words {
                *counts.entry(w).or_default() += 1;
                chars.extend(w.chars());
            }
        }
        let mut by_count: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|&(_, n)| n >= min_count.max(1))
            .collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let specials = ["<pad>".to_string(), "<unk>".to_string()];
        let words = specials
            .iter()
            .cloned()
            .chain(by_count.into_iter().map(|(w, _)| w.to_string()))
            .collect();
        let chars = specials
            .iter()
            .cloned()
            .chain(chars.into_iter().map(String::from))
            .collect();
        TaggerVocab {
            words,
            chars,
            word_ids: Default::default(),
            char_ids: Default::default(),
        }
        .indexed()
    }

    fn indexed(mut self) -> Self {
        self.word_ids = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        self.char_ids = (self.chars.iter().enumerate().skip(2))
            .filter_map(|(i, c)| Some((c.chars().next()?, i as u32)))
            .collect();
        self
    }

    pub fn word(&self, w: &str) -> u32 {
        self.word_ids.get(w).copied().unwrap_or(UNK)
    }

    pub fn knows(&self, w: &str) -> bool {
        self.word_ids.contains_key(w)
    }

    fn chars_of(&self, w: &str) -> Vec<u32> {
        let ids: Vec<u32> = w
            .chars()
            .map(|c| self.char_ids.get(&c).copied().unwrap_or(UNK))
            .collect();
        if ids.is_empty() {
            vec![UNK]
        } else {
            ids
        }
    }
}

/// One encoded sentence: word ids, each word's character ids, tag ids, and which words are seen
/// once in training (the ones word dropout may hide).
struct TaggedExample {
    words: Vec<u32>,
    chars: Vec<Vec<u32>>,
    tags: Vec<u32>,
    known: Vec<bool>,
}

pub struct RnnTagTask {
    pub recipe: RnnTagRecipe,
    /// Vocabulary words given a pretrained vector.
    pub embeddings_found: Option<usize>,
    pub vocab: TaggerVocab,
    pub tags: Vec<String>,
    pub model: RnnTagger,
    store: ParamStore,
    train: Vec<TaggedExample>,
    valid: Vec<TaggedExample>,
    singletons: std::collections::HashSet<u32>,
    order: EpochOrder,
    micro_batch: u64,
}

/// Token accuracy (known and unknown words apart) and, for BIO tags, seqeval's entity scores.
pub fn tagging_scores(
    predicted: &[Vec<String>],
    gold: &[Vec<String>],
    known: &[Vec<bool>],
) -> Result<BTreeMap<String, f64>> {
    let (mut n, mut right, mut k, mut k_right) = (0usize, 0usize, 0usize, 0usize);
    for ((p, g), kn) in predicted.iter().zip(gold).zip(known) {
        for ((a, b), &is_known) in p.iter().zip(g).zip(kn) {
            n += 1;
            right += usize::from(a == b);
            if is_known {
                k += 1;
                k_right += usize::from(a == b);
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut out = BTreeMap::from([
        ("accuracy".to_string(), ratio(right, n)),
        ("known_accuracy".to_string(), ratio(k_right, k)),
        (
            "unknown_accuracy".to_string(),
            ratio(right - k_right, n - k),
        ),
    ]);
    if gold
        .iter()
        .flatten()
        .any(|t| t.starts_with("B-") || t.starts_with("I-"))
    {
        let r = lingo_eval::seqeval::seqeval(predicted, gold, lingo_eval::seqeval::Mode::Default)
            .map_err(|e| bad_input!("{e}"))?;
        out.insert("precision".into(), r.precision);
        out.insert("recall".into(), r.recall);
        out.insert("f1".into(), r.f1);
    }
    Ok(out)
}

impl RnnTagTask {
    /// Builds the vocabularies (or keeps `vocab`, on resume), the tag set and the network, and
    /// encodes the data. A validation tag never seen in training is an error naming its line.
    pub fn new(
        mut recipe: RnnTagRecipe,
        train: &[TaggedSentence],
        valid: &[TaggedSentence],
        vocab: Option<TaggerVocab>,
    ) -> Result<Self> {
        if train.is_empty() || valid.is_empty() {
            return Err(bad_input!(
                "the training and validation sets must not be empty"
            ));
        }
        let vocab = match vocab {
            Some(v) => v.indexed(),
            None => TaggerVocab::build(train, recipe.min_word_count),
        };
        let tags = sorted_labels(train.iter().flat_map(|s| s.tags.iter().map(|t| t.as_str())));
        let index: BTreeMap<&str, u32> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let mut counts: std::collections::HashMap<&str, usize> = Default::default();
        for w in train.iter().flat_map(|s| &s.words) {
            *counts.entry(w).or_default() += 1;
        }
        let encode_all = |data: &[TaggedSentence]| -> Result<Vec<TaggedExample>> {
            data.iter()
                .map(|s| {
                    let tag_ids = (s.tags.iter())
                        .map(|t| {
                            index.get(t.as_str()).copied().ok_or_else(|| {
                                bad_input!(
                                    "the sentence at line {}: tag `{t}` is not among the training tags ({})",
                                    s.line,
                                    tags.join(" ")
                                )
                            })
                        })
                        .collect::<Result<Vec<u32>>>()?;
                    Ok(TaggedExample {
                        words: s.words.iter().map(|w| vocab.word(w)).collect(),
                        chars: s.words.iter().map(|w| vocab.chars_of(w)).collect(),
                        tags: tag_ids,
                        known: s.words.iter().map(|w| counts.contains_key(w.as_str())).collect(),
                    })
                })
                .collect()
        };
        let (train_examples, valid_examples) = (encode_all(train)?, encode_all(valid)?);
        let singletons = (counts.iter())
            .filter(|&(_, &n)| n == 1)
            .map(|(w, _)| vocab.word(w))
            .filter(|&id| id != UNK)
            .collect();
        recipe.model.vocab_size = vocab.words.len();
        recipe.model.char_vocab_size = if recipe.char_features {
            vocab.chars.len()
        } else {
            0
        };
        recipe.model.num_tags = tags.len();
        recipe.model.pad_id = PAD;
        if let Some(epochs) = recipe.epochs {
            recipe.train.steps = steps_for(epochs, train_examples.len(), &recipe.train);
        }
        let store = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let model = RnnTagger::new(recipe.model.clone(), &store.root())?;
        let mut embeddings_found = None;
        if let Some(spec) = recipe.pretrained_embeddings.clone() {
            embeddings_found = Some(load_embeddings(
                &store,
                &vocab.words,
                &spec,
                &mut recipe.train,
            )?);
        }
        Ok(RnnTagTask {
            embeddings_found,
            order: EpochOrder::new(recipe.train.seed),
            recipe,
            vocab,
            tags,
            model,
            store,
            train: train_examples,
            valid: valid_examples,
            singletons,
            micro_batch: 0,
        })
    }

    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.valid.len())
    }

    /// The mean loss of `examples`, rare words dropped to UNK with `ctx`'s stream (word dropout).
    fn loss(&self, examples: &[&TaggedExample], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let p = self.recipe.word_dropout;
        let words: Vec<Vec<u32>> = (examples.iter())
            .map(|e| {
                (e.words.iter())
                    .map(|&w| {
                        if p > 0.0 && self.singletons.contains(&w) && ctx.rng.uniform() < p {
                            UNK
                        } else {
                            w
                        }
                    })
                    .collect()
            })
            .collect();
        let batch = self.batch(examples, Some(words))?;
        let tags: Vec<Vec<u32>> = examples.iter().map(|e| e.tags.clone()).collect();
        self.model.loss(&batch, &tags, ctx)
    }

    fn batch(
        &self,
        examples: &[&TaggedExample],
        words: Option<Vec<Vec<u32>>>,
    ) -> candle_core::Result<TaggerBatch> {
        let words = words.unwrap_or_else(|| examples.iter().map(|e| e.words.clone()).collect());
        let refs: Vec<&[u32]> = words.iter().map(|w| w.as_slice()).collect();
        let chars: Vec<Vec<Vec<u32>>> = examples.iter().map(|e| e.chars.clone()).collect();
        let chars = self.recipe.char_features.then_some(chars.as_slice());
        self.model.batch(&refs, chars, &Device::Cpu)
    }

    /// Accuracy and entity scores on the validation set, and its words per second.
    pub fn scores(&self, batch_size: usize) -> Result<BTreeMap<String, f64>> {
        let start = std::time::Instant::now();
        let mut predicted = Vec::with_capacity(self.valid.len());
        for chunk in self.valid.chunks(batch_size.max(1)) {
            let refs: Vec<&TaggedExample> = chunk.iter().collect();
            predicted.extend(self.model.decode(&self.batch(&refs, None)?)?);
        }
        let words: usize = self.valid.iter().map(|e| e.words.len()).sum();
        let rate = words as f64 / start.elapsed().as_secs_f64();
        let name = |ids: &[u32]| -> Vec<String> {
            ids.iter().map(|&i| self.tags[i as usize].clone()).collect()
        };
        let p: Vec<Vec<String>> = predicted.iter().map(|x| name(x)).collect();
        let g: Vec<Vec<String>> = self.valid.iter().map(|e| name(&e.tags)).collect();
        let known: Vec<Vec<bool>> = self.valid.iter().map(|e| e.known.clone()).collect();
        let mut out = tagging_scores(&p, &g, &known)?;
        out.insert("words_per_second".into(), rate);
        Ok(out)
    }

    fn write_artifacts(&self, dir: &Path) -> Result<()> {
        let config = serde_json::json!({
            "model_type": TAGGER_MODEL_TYPE,
            "model": self.recipe.model,
            "id2label": self.tags.iter().enumerate().map(|(i, t)| (i.to_string(), t.clone())).collect::<BTreeMap<_, _>>(),
        });
        write_in(dir, "config.json", serde_json::to_string_pretty(&config)?)?;
        write_in(dir, "vocab.json", serde_json::to_string(&self.vocab)?)?;
        write_in(
            dir,
            "recipe.json",
            serde_json::to_string_pretty(&self.recipe)?,
        )?;
        Ok(())
    }
}

impl TrainTask for RnnTagTask {
    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn start_micro_batch(&mut self, index: u64) {
        self.micro_batch = index;
    }

    /// The mean loss of a batch (per sentence with a CRF, per word without), and its words.
    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let picks = self
            .order
            .batch(self.micro_batch, batch_size, self.train.len());
        let examples: Vec<&TaggedExample> = picks.iter().map(|&i| &self.train[i]).collect();
        let n = examples.iter().map(|e| e.words.len()).sum();
        Ok((self.loss(&examples, ctx)?, n))
    }

    /// Shards of sentences; each shard's mean is weighted by its share of what the loss averages
    /// over: sentences with a CRF, words without.
    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let picks = self
            .order
            .batch(self.micro_batch, batch_size, self.train.len());
        let this = &*self;
        shards_of(&picks, shards, |part| {
            let examples: Vec<&TaggedExample> = part.iter().map(|&i| &this.train[i]).collect();
            let words = examples.iter().map(|e| e.words.len()).sum();
            let count = match this.recipe.model.crf {
                true => examples.len(),
                false => words,
            };
            Ok(Shard::mean(words, count, move |ctx: &mut Ctx| {
                this.loss(&examples, ctx)
            }))
        })
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        mean_loss(&self.valid, batch_size, max_batches, |chunk| {
            let refs: Vec<&TaggedExample> = chunk.iter().collect();
            let tags: Vec<Vec<u32>> = chunk.iter().map(|e| e.tags.clone()).collect();
            let batch = self.batch(&refs, None)?;
            Ok((
                self.model.loss(&batch, &tags, &mut Ctx::eval())?,
                chunk.len(),
            ))
        })
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        self.scores(batch_size).map_err(to_candle)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": "rnn_tag",
            "model": self.recipe.model,
            "tags": self.tags,
            "train_examples": self.train.len(),
        })
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.write_artifacts(dir).map_err(to_train)
    }
}

/// A trained recurrent tagger read back from its folder.
pub struct RnnTaggerPipeline {
    pub model: RnnTagger,
    pub vocab: TaggerVocab,
    pub tags: Vec<String>,
    _store: ParamStore,
}

impl RnnTaggerPipeline {
    pub fn load(dir: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Saved {
            model_type: String,
            model: RnnTaggerConfig,
            id2label: BTreeMap<String, String>,
        }
        let path = dir.join("config.json");
        let saved: Saved = read_json(&path)?;
        if saved.model_type != TAGGER_MODEL_TYPE {
            return Err(bad_input!(
                "{}: model_type `{}`, not `{TAGGER_MODEL_TYPE}`",
                path.display(),
                saved.model_type
            ));
        }
        let tags = (0..saved.model.num_tags)
            .map(|i| {
                saved
                    .id2label
                    .get(&i.to_string())
                    .cloned()
                    .ok_or_else(|| bad_input!("{}: id2label lacks {i}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: TaggerVocab = read_json(&dir.join("vocab.json"))?;
        let vocab = vocab.indexed();
        let store = ParamStore::new(0, &Device::Cpu);
        let model = RnnTagger::new(saved.model, &store.root())?;
        store.load(&dir.join("model.safetensors"))?;
        Ok(RnnTaggerPipeline {
            model,
            vocab,
            tags,
            _store: store,
        })
    }

    /// Tags sentences of words.
    pub fn tag(&self, sentences: &[Vec<String>], batch_size: usize) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(batch_size.max(1)) {
            let words: Vec<Vec<u32>> = chunk
                .iter()
                .map(|s| s.iter().map(|w| self.vocab.word(w)).collect())
                .collect();
            let chars: Vec<Vec<Vec<u32>>> = chunk
                .iter()
                .map(|s| s.iter().map(|w| self.vocab.chars_of(w)).collect())
                .collect();
            let refs: Vec<&[u32]> = words.iter().map(|w| w.as_slice()).collect();
            let chars = (self.model.config.char_vocab_size > 0).then_some(chars.as_slice());
            let batch = self.model.batch(&refs, chars, &Device::Cpu)?;
            for ids in self.model.decode(&batch)? {
                out.push(ids.iter().map(|&i| self.tags[i as usize].clone()).collect());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_recipe_parses() -> Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/sst2-bilstm.json");
        let r = RnnClassifyRecipe::load(&path)?;
        assert_eq!(
            (r.model.hidden_size, r.epochs, r.train.batch_size),
            (128, Some(3), 64)
        );
        assert_eq!(r.model.pooling, lingo_models::Pooling::Max);
        Ok(())
    }
}
