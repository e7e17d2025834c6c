//! Pre-training from scratch: a raw corpus in, a Hugging Face model folder out (`config.json`,
//! `model.safetensors`, the tokenizer files) that `lingo finetune` and `transformers` load.
//!
//! The corpus is tokenised once into a memory-mapped cache ([`TokenCache`]); the objective turns
//! its documents into examples:
//!
//! | objective | families | examples |
//! |---|---|---|
//! | `mlm` | BERT, RoBERTa, ALBERT, ELECTRA | blocks of the document stream (separator between documents), 15% masked, whole words optionally |
//! | `mlm_nsp` | BERT | `[CLS] A [SEP] B [SEP]` pairs, B half the time from another document, plus masked LM |
//! | `mlm_sop` | ALBERT | pairs in order or swapped, plus masked LM |
//! | `clm` | GPT-2 | blocks of the stream with `<|endoftext|>` between documents |
//! | `span_corruption` | T5 | blocks whose 15% noise spans become sentinels, the decoder predicting them |
//! | `replaced_token` | ELECTRA | masked blocks; a generator (¼ of the width, embeddings shared) fills the masks by sampling, the discriminator tells replaced tokens from originals (loss weight 50) |
//!
//! Masks are drawn per example from a stream of the seed, the example and — with dynamic masking,
//! RoBERTa's — the epoch, so a resumed run draws the same masks as an uninterrupted one.

use crate::error::{bad_input, io, to_train, Result};
use crate::finetune::EpochOrder;
use candle_core::{Device, Tensor};
use lingo_data::corpus::{Corpus, DocumentBreak, TokenCache};
use lingo_data::pretraining::{
    example_rng, pair_instances, segments::Documents, Masker, MaskingConfig, PairTask,
    SentencePair, SpanCorruption, IGNORE,
};
use lingo_data::tokenizer_training::{BpeStyle, Scheme, TokenizerSpec};
use lingo_data::Tokenizer;
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::auto::{AutoModel, LoadOptions, Loaded};
use lingo_models::bert::{BertConfig, BertModel, Family, Head};
use lingo_models::hf::StoredNames;
use lingo_models::hf::{Checkpoint, Lookup};
use lingo_models::presets::{self, Preset, SpecialIds, TokenizerScheme};
use lingo_models::{ModelInputs, Seq2SeqBatch, Seq2SeqLoss};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::{Shard, TrainConfig, TrainTask};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the model learns to predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Masked language modelling.
    Mlm,
    /// Masked LM and next-sentence prediction (BERT).
    MlmNsp,
    /// Masked LM and sentence-order prediction (ALBERT).
    MlmSop,
    /// Causal (next-token) language modelling.
    Clm,
    /// T5's span corruption.
    SpanCorruption,
    /// ELECTRA's replaced-token detection: a small generator trained as a masked LM fills the
    /// masks with its samples, and the discriminator learns which tokens were replaced.
    ReplacedToken,
}

impl Objective {
    fn name(self) -> &'static str {
        match self {
            Objective::Mlm => "masked LM",
            Objective::MlmNsp => "next-sentence prediction",
            Objective::MlmSop => "sentence-order prediction",
            Objective::Clm => "causal LM",
            Objective::SpanCorruption => "span corruption",
            Objective::ReplacedToken => "replaced-token detection",
        }
    }

    /// The objective a family is pre-trained with when none is named.
    pub fn default_for(model_type: &str) -> Objective {
        match model_type {
            "gpt2" => Objective::Clm,
            "t5" => Objective::SpanCorruption,
            "electra" => Objective::ReplacedToken,
            _ => Objective::Mlm,
        }
    }

    /// The architecture saved for `model_type` trained with this objective, or why it cannot be.
    fn architecture(self, model_type: &str) -> std::result::Result<&'static str, String> {
        Ok(match (self, model_type) {
            (Objective::Mlm, "bert") => "BertForMaskedLM",
            (Objective::Mlm, "roberta") => "RobertaForMaskedLM",
            (Objective::Mlm, "albert") => "AlbertForMaskedLM",
            (Objective::Mlm, "electra") => "ElectraForMaskedLM",
            (Objective::MlmNsp, "bert") => "BertForPreTraining",
            (Objective::MlmSop, "albert") => "AlbertForPreTraining",
            (Objective::Clm, "gpt2") => "GPT2LMHeadModel",
            (Objective::SpanCorruption, "t5") => "T5ForConditionalGeneration",
            (Objective::ReplacedToken, "electra") => "ElectraForPreTraining",
            (o, t) => {
                let fits = match o {
                    Objective::Mlm => "BERT, RoBERTa, ALBERT and ELECTRA",
                    Objective::MlmNsp => "BERT",
                    Objective::MlmSop => "ALBERT",
                    Objective::Clm => "GPT-2",
                    Objective::SpanCorruption => "T5",
                    Objective::ReplacedToken => "ELECTRA",
                };
                return Err(format!("{} is for {fits}; this model is a {t}", o.name()));
            }
        })
    }
}

/// Everything that defines a pre-training run (`lingo pretrain --config`, or built from flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainRecipe {
    /// A size preset (`bert-mini`, `gpt2-tiny`, `t5-tiny`, …; see `lingo_models::presets`).
    pub model: String,
    /// Default: the family's own (masked LM for encoders, causal LM for GPT-2, span corruption
    /// for T5).
    pub objective: Option<Objective>,
    /// Tokens per example (the encoder input for T5), special tokens included.
    pub max_length: usize,
    /// Vocabulary of the tokenizer trained on the corpus when none is given.
    pub vocab_size: usize,
    pub masking: MaskingConfig,
    /// Draw new masks every epoch (RoBERTa) rather than one mask per example for the whole run.
    pub dynamic_masking: bool,
    /// Sentence pairs: the share of examples packed to a shorter random length.
    pub short_seq_prob: f32,
    pub span_corruption: SpanCorruption,
    /// ELECTRA: the generator's width (hidden size, heads, feed-forward) as a share of the
    /// discriminator's (the paper finds ¼–½ best).
    pub generator_size: f32,
    /// ELECTRA: the weight of the discriminator's loss against the generator's (λ = 50).
    pub discriminator_weight: f32,
    /// How the corpus is cut into documents.
    pub documents: DocumentBreak,
    /// Share of the corpus's documents (from its end) kept for validation when no validation
    /// corpus is given.
    pub valid_fraction: f64,
    /// Fields that replace the preset's in `config.json` (e.g. `{"num_hidden_layers": 2}`).
    pub config: serde_json::Map<String, serde_json::Value>,
    pub train: TrainConfig,
}

impl Default for PretrainRecipe {
    fn default() -> Self {
        let mut train = TrainConfig {
            steps: 10_000,
            batch_size: 32,
            eval_every: 500,
            eval_batches: 50,
            checkpoint_every: 500,
            ..TrainConfig::default()
        };
        // BERT's pre-training optimiser: AdamW, β₂ 0.999, weight decay 0.01, linear decay after
        // warm-up; a small model takes a larger rate than BERT-base's 1e-4.
        train.optimizer = lingo_train::OptimizerConfig::AdamW(lingo_train::AdamWConfig {
            lr: 5e-4,
            ..Default::default()
        });
        train.schedule.kind = lingo_train::ScheduleKind::Linear;
        train.schedule.warmup_steps = 500;
        PretrainRecipe {
            model: "bert-mini".into(),
            objective: None,
            max_length: 128,
            vocab_size: 16_000,
            masking: MaskingConfig::default(),
            dynamic_masking: true,
            short_seq_prob: 0.1,
            span_corruption: SpanCorruption::default(),
            generator_size: 0.25,
            discriminator_weight: 50.0,
            documents: DocumentBreak::BlankLine,
            valid_fraction: 0.01,
            config: serde_json::Map::new(),
            train,
        }
    }
}

impl PretrainRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(lingo_models::config::read_json(path)?)
    }

    fn preset(&self) -> Result<&'static Preset> {
        presets::find(&self.model).map_err(|e| bad_input!("{e}"))
    }

    pub fn objective(&self) -> Result<Objective> {
        Ok(self
            .objective
            .unwrap_or(Objective::default_for(self.preset()?.model_type)))
    }

    /// The tokenizer a run trains when none is given.
    pub fn tokenizer_spec(&self) -> Result<TokenizerSpec> {
        let scheme = match self.preset()?.tokenizer_scheme() {
            TokenizerScheme::WordPiece => Scheme::WordPiece { lowercase: true },
            TokenizerScheme::ByteBpeGpt2 => Scheme::Bpe {
                style: BpeStyle::Gpt2,
            },
            TokenizerScheme::ByteBpeRoberta => Scheme::Bpe {
                style: BpeStyle::Roberta,
            },
            TokenizerScheme::Unigram => Scheme::Unigram { sentinels: 100 },
        };
        Ok(TokenizerSpec {
            scheme,
            vocab_size: self.vocab_size,
            min_frequency: 2,
        })
    }
}

/// Where the corpus is and where its caches go.
#[derive(Clone, Debug)]
pub struct CorpusFiles {
    pub train: Vec<PathBuf>,
    /// A validation corpus; else `valid_fraction` of the training documents.
    pub valid: Vec<PathBuf>,
    /// The root of the token caches (one folder per corpus and tokenizer).
    pub cache_root: PathBuf,
}

/// A run of documents of a cache, seen as one stream with an optional separator after each.
struct Stream {
    cache: Arc<TokenCache>,
    docs: Range<usize>,
    separator: Option<u32>,
    /// Where each document starts in the stream, and the stream's end.
    starts: Vec<u64>,
}

impl Stream {
    fn new(cache: Arc<TokenCache>, docs: Range<usize>, separator: Option<u32>) -> Self {
        let mut starts = Vec::with_capacity(docs.len() + 1);
        let mut at = 0u64;
        for d in docs.clone() {
            starts.push(at);
            let r = cache.span(d..d + 1);
            at += (r.end - r.start) as u64 + separator.is_some() as u64;
        }
        starts.push(at);
        Stream {
            cache,
            docs,
            separator,
            starts,
        }
    }

    fn len(&self) -> u64 {
        *self.starts.last().expect("ends with the length")
    }

    /// `len` tokens of the stream from `from`.
    fn read(&self, from: u64, len: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(len);
        let mut d = self.starts.partition_point(|&s| s <= from) - 1;
        let mut offset = (from - self.starts[d]) as usize;
        let tokens = self.cache.tokens();
        while out.len() < len && d + 1 < self.starts.len() {
            let r = self
                .cache
                .span(self.docs.start + d..self.docs.start + d + 1);
            let doc = &tokens[r];
            if offset < doc.len() {
                let take = (doc.len() - offset).min(len - out.len());
                out.extend_from_slice(&doc[offset..offset + take]);
                offset += take;
            }
            if out.len() < len && offset >= doc.len() {
                if let Some(sep) = self.separator {
                    out.push(sep);
                }
                d += 1;
                offset = 0;
            }
        }
        out
    }
}

/// The documents of a stream, for sentence-pair packing.
struct StreamDocuments<'a>(&'a Stream);

impl Documents for StreamDocuments<'_> {
    fn len(&self) -> usize {
        self.0.docs.len()
    }
    fn document(&self, d: usize) -> Vec<&[u32]> {
        self.0.cache.document(self.0.docs.start + d)
    }
}

/// The examples of one split.
enum Examples {
    /// Consecutive blocks of `length` tokens of the stream.
    Blocks { stream: Stream, length: usize },
    /// Sentence pairs, packed once from the seed.
    Pairs(Vec<SentencePair>),
}

impl Examples {
    fn len(&self) -> usize {
        match self {
            Examples::Blocks { stream, length } => (stream.len() / *length as u64) as usize,
            Examples::Pairs(p) => p.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ids the objectives put around and between the text.
#[derive(Clone, Copy, Debug)]
struct Specials {
    /// `[CLS]` / `<s>`.
    cls: Option<u32>,
    /// `[SEP]` / `</s>` / `<|endoftext|>`.
    sep: Option<u32>,
    pad: u32,
    /// T5: `<extra_id_0>`.
    first_sentinel: Option<u32>,
}

impl Specials {
    fn of(tokenizer: &Tokenizer) -> Self {
        let find = |names: &[&str]| names.iter().find_map(|n| tokenizer.token_to_id(n));
        Specials {
            cls: find(&["[CLS]", "<s>"]),
            sep: find(&["[SEP]", "</s>", "<|endoftext|>"]),
            pad: tokenizer.pad_id(),
            first_sentinel: find(&["<extra_id_0>"]),
        }
    }
}

/// Salt of the validation masks, so they differ from any training example's.
const VALID_SALT: u64 = 0x7A11_D000;
/// Salt of ELECTRA's generator samples.
const SAMPLE_SALT: u64 = 0x5A3F_1E00;

/// A masked batch, padded.
struct MaskedBatch {
    /// The masked ids with attention mask, segments and the positions to predict.
    inputs: ModelInputs,
    attention: Tensor,
    /// The original ids at `positions` (flat `row · width + column`).
    targets: Tensor,
    target_ids: Vec<u32>,
    positions: Vec<u32>,
    /// The unmasked ids, padded, row-major.
    original: Vec<u32>,
    /// Sentence-pair labels (pairs only).
    pair_labels: Vec<u32>,
    rows: usize,
    width: usize,
    /// Real (non-padding) tokens.
    tokens: usize,
}

/// Causal LM blocks `[rows, length]` as inputs and the tokens that follow them, both
/// `[rows, length − 1]`.
fn next_tokens(rows: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let length = rows.dim(1)?;
    Ok((
        rows.narrow(1, 0, length - 1)?,
        rows.narrow(1, 1, length - 1)?,
    ))
}

/// A batch of the objective, ready for the model.
enum Prepared {
    /// Masked LM, with or without a sentence-pair task, and ELECTRA: the batch, and the examples
    /// its rows are.
    Masked(MaskedBatch, Vec<usize>),
    /// Causal LM: `[rows, length]` blocks of token ids.
    Blocks(Tensor),
    /// Span corruption: the encoder–decoder batch, and the tokens it holds.
    Spans(Seq2SeqBatch, usize),
}

impl Prepared {
    /// The tokens the batch holds, for the run's throughput.
    fn tokens(&self) -> usize {
        match self {
            Prepared::Masked(b, _) => b.tokens,
            Prepared::Blocks(rows) => {
                rows.dim(0).unwrap_or(0) * rows.dim(1).unwrap_or(1).saturating_sub(1)
            }
            Prepared::Spans(_, tokens) => *tokens,
        }
    }
}

/// A model being pre-trained, its tokenizer and data, ready for the trainer.
pub struct PretrainTask {
    pub recipe: PretrainRecipe,
    pub objective: Objective,
    pub tokenizer: Tokenizer,
    /// The tokenizer's own files, when it was trained here.
    tokenizer_spec: Option<TokenizerSpec>,
    tokenizer_source: Option<PathBuf>,
    model: AutoModel,
    /// ELECTRA's generator (in the same parameter store, under `generator.`, sharing the
    /// discriminator's embeddings) and its `config.json`.
    generator: Option<(BertModel, serde_json::Value)>,
    store: ParamStore,
    config: serde_json::Value,
    names: StoredNames,
    masker: Option<Masker>,
    specials: Specials,
    train: Examples,
    valid: Examples,
    order: EpochOrder,
    micro_batch: u64,
    /// The metrics of the last validation pass (MLM/NSP accuracy, perplexity).
    last_metrics: BTreeMap<String, f64>,
    out_dir: PathBuf,
}

impl PretrainTask {
    /// Prepares a run into `out_dir`: the tokenizer (`tokenizer`, a `tokenizer.json` or a folder
    /// holding one; or the one in `out_dir` when resuming; else trained on the corpus), the token
    /// caches, the examples, and a new model initialised from the seed. `progress` is told about
    /// long preparation steps.
    pub fn new(
        recipe: PretrainRecipe,
        corpus: &CorpusFiles,
        tokenizer: Option<&Path>,
        out_dir: &Path,
        progress: &dyn Fn(&str),
    ) -> Result<Self> {
        recipe
            .train
            .validate()
            .map_err(|e| bad_input!("training config: {e}"))?;
        recipe.masking.validate().map_err(|e| bad_input!("{e}"))?;
        recipe
            .span_corruption
            .validate()
            .map_err(|e| bad_input!("{e}"))?;
        let preset = recipe.preset()?;
        let objective = recipe.objective()?;
        let architecture = objective
            .architecture(preset.model_type)
            .map_err(|e| bad_input!("{}: {e}", recipe.model))?;
        if recipe.max_length < 8 {
            return Err(bad_input!(
                "max_length {} is too short to pre-train on",
                recipe.max_length
            ));
        }
        let train_corpus = Corpus::new(corpus.train.clone(), recipe.documents)?;

        // The tokenizer: given, kept from the run being resumed, or trained on the corpus.
        let resumed = out_dir.join("tokenizer.json");
        let (tokenizer, tokenizer_spec, tokenizer_source) = match tokenizer {
            Some(path) => {
                let file = if path.is_dir() {
                    path.join("tokenizer.json")
                } else {
                    path.to_path_buf()
                };
                let dir = file.parent().map(Path::to_path_buf);
                (Tokenizer::load(&file)?, None, dir)
            }
            None if resumed.is_file() => (
                Tokenizer::load(&resumed)?,
                Some(recipe.tokenizer_spec()?),
                None,
            ),
            None => {
                let spec = recipe.tokenizer_spec()?;
                progress(&format!(
                    "training a {}-token tokenizer on the corpus",
                    spec.vocab_size
                ));
                let tok = spec.train(train_corpus.lines())?;
                (tok, Some(spec), None)
            }
        };
        let specials = Specials::of(&tokenizer);
        let masker = match objective {
            Objective::Mlm | Objective::MlmNsp | Objective::MlmSop | Objective::ReplacedToken => {
                Some(Masker::new(&tokenizer, recipe.masking.clone())?)
            }
            _ => None,
        };
        if objective == Objective::SpanCorruption && specials.first_sentinel.is_none() {
            return Err(bad_input!(
                "span corruption needs a tokenizer with sentinels <extra_id_0> …; train one with `lingo tokenizer train --kind unigram`"
            ));
        }

        // The token caches and the split.
        let cache_of = |c: &Corpus| -> Result<Arc<TokenCache>> {
            let report = |docs: usize| progress(&format!("tokenised {docs} documents"));
            Ok(Arc::new(TokenCache::in_root(
                &corpus.cache_root,
                c,
                &tokenizer,
                &report,
            )?))
        };
        let train_cache = cache_of(&train_corpus)?;
        let n_docs = train_cache.num_documents();
        let (train_docs, valid_source) = if corpus.valid.is_empty() {
            if !(0.0..1.0).contains(&recipe.valid_fraction) || recipe.valid_fraction == 0.0 {
                return Err(bad_input!(
                    "valid_fraction must be in (0, 1) when no validation corpus is given, got {}",
                    recipe.valid_fraction
                ));
            }
            let held = ((n_docs as f64 * recipe.valid_fraction).ceil() as usize).max(1);
            if held >= n_docs {
                return Err(bad_input!(
                    "the corpus has {n_docs} document(s): too few to hold out a validation part; give a validation corpus or more text (documents are {})",
                    match recipe.documents {
                        DocumentBreak::BlankLine => "blank-line-separated blocks",
                        DocumentBreak::Line => "lines",
                    }
                ));
            }
            (
                0..n_docs - held,
                (train_cache.clone(), n_docs - held..n_docs),
            )
        } else {
            let valid_corpus = Corpus::new(corpus.valid.clone(), recipe.documents)?;
            let c = cache_of(&valid_corpus)?;
            let n = c.num_documents();
            ((0..n_docs), (c, 0..n))
        };

        let make = |cache: Arc<TokenCache>, docs: Range<usize>, what: &str| -> Result<Examples> {
            examples(&recipe, objective, cache, docs, specials, what)
        };
        let train = make(train_cache, train_docs, "training")?;
        let valid = make(valid_source.0, valid_source.1, "validation")?;

        // A new model of the preset's size.
        let ids = SpecialIds {
            pad: Some(specials.pad),
            bos: specials.cls.or(specials.sep),
            eos: specials.sep,
        };
        let mut config =
            preset.config(architecture, tokenizer.vocab_size(), recipe.max_length, ids);
        for (k, v) in &recipe.config {
            config[k] = v.clone();
        }
        let options = LoadOptions {
            seed: recipe.train.seed,
            ..LoadOptions::default()
        };
        let (loaded, generator) = if objective == Objective::ReplacedToken {
            let (discriminator, generator) = electra(config, &recipe, out_dir)?;
            (discriminator, Some(generator))
        } else {
            (AutoModel::init(out_dir, config, &options)?, None)
        };
        let Loaded {
            model,
            store,
            config,
            names,
            ..
        } = loaded;
        Ok(PretrainTask {
            order: EpochOrder::new(recipe.train.seed),
            recipe,
            objective,
            tokenizer,
            tokenizer_spec,
            tokenizer_source,
            model,
            generator,
            store,
            config,
            names,
            masker,
            specials,
            train,
            valid,
            micro_batch: 0,
            last_metrics: BTreeMap::new(),
            out_dir: out_dir.into(),
        })
    }

    /// Training examples, validation examples.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.valid.len())
    }

    /// The model's `config.json`.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The training examples of the current micro-batch, and the epoch their masking is drawn
    /// for (always 0 with static masking).
    fn micro_batch_picks(&mut self, batch_size: usize) -> (Vec<usize>, u64) {
        let n = self.train.len();
        let picks = self.order.batch(self.micro_batch, batch_size, n);
        let epoch = match self.recipe.dynamic_masking {
            true => EpochOrder::position(self.micro_batch, batch_size, n).0,
            false => 0,
        };
        (picks, epoch)
    }

    /// The seed of every example's random streams in the training or validation split.
    fn seed(&self, valid: bool) -> u64 {
        self.recipe.train.seed ^ if valid { VALID_SALT } else { 0 }
    }

    /// The loss of `picks` of `split` (and the tokens they hold), each example's random stream
    /// drawn from (`salt`, `epoch`, its index); also, in `stats`, correct and total predictions.
    fn loss(
        &self,
        valid: bool,
        picks: &[usize],
        epoch: u64,
        ctx: &mut Ctx,
        stats: Option<&mut Stats>,
    ) -> candle_core::Result<(Tensor, usize)> {
        let batch = self.prepare(valid, picks, epoch)?;
        let mut parts = self
            .loss_parts(&batch, valid, epoch, ctx, stats)?
            .into_iter();
        let first = parts.next().expect("every objective has a loss");
        Ok((
            parts.try_fold(first, |sum, part| sum + part)?,
            batch.tokens(),
        ))
    }

    /// `picks` of the training or validation split as the objective's batch: masked, cut into
    /// blocks, or corrupted into spans, each example from its own random stream.
    fn prepare(&self, valid: bool, picks: &[usize], epoch: u64) -> candle_core::Result<Prepared> {
        let split = if valid { &self.valid } else { &self.train };
        let seed = self.seed(valid);
        let rng_of = |i: usize| example_rng(seed, epoch, i as u64);
        let dev = Device::Cpu;
        Ok(match self.objective {
            Objective::Mlm | Objective::MlmNsp | Objective::MlmSop | Objective::ReplacedToken => {
                Prepared::Masked(self.masked_batch(split, picks, &rng_of)?, picks.to_vec())
            }
            Objective::Clm => {
                let Examples::Blocks { stream, length } = split else {
                    unreachable!("causal LM reads blocks")
                };
                let rows: Vec<u32> = picks
                    .iter()
                    .flat_map(|&i| stream.read((i * length) as u64, *length))
                    .collect();
                Prepared::Blocks(Tensor::from_vec(rows, (picks.len(), *length), &dev)?)
            }
            Objective::SpanCorruption => {
                let Examples::Blocks { stream, length } = split else {
                    unreachable!("span corruption reads blocks")
                };
                let sc = &self.recipe.span_corruption;
                let first = self.specials.first_sentinel.expect("checked when built");
                let eos = self.specials.sep.unwrap_or(1);
                let pairs: Vec<(Vec<u32>, Vec<u32>)> = picks
                    .iter()
                    .map(|&i| {
                        let block = stream.read((i * length) as u64, *length);
                        let mask = sc.noise_mask(block.len(), &mut rng_of(i));
                        sc.corrupt(&block, &mask, first, eos)
                    })
                    .collect();
                let refs: Vec<(&[u32], &[u32])> = pairs
                    .iter()
                    .map(|(a, b)| (a.as_slice(), b.as_slice()))
                    .collect();
                let batch = Seq2SeqBatch::new(&refs, self.specials.pad, self.specials.pad, &dev)?;
                let tokens = pairs.iter().map(|(a, b)| a.len() + b.len()).sum();
                Prepared::Spans(batch, tokens)
            }
        })
    }

    /// How many terms each of [`PretrainTask::loss_parts`] averages over.
    fn loss_counts(&self, batch: &Prepared) -> Vec<usize> {
        match batch {
            Prepared::Masked(b, _) => match self.objective {
                Objective::ReplacedToken => vec![b.target_ids.len(), b.tokens],
                _ if !b.pair_labels.is_empty() => vec![b.target_ids.len(), b.rows],
                _ => vec![b.target_ids.len()],
            },
            Prepared::Blocks(rows) => vec![rows.elem_count() - rows.dim(0).unwrap_or(0)],
            Prepared::Spans(b, _) => vec![b.target_tokens],
        }
    }

    /// The objective's loss in parts, each a mean (weighted as the objective adds them): masked
    /// LM, then the sentence-pair loss; the generator, then the weighted discriminator; or one.
    fn loss_parts(
        &self,
        batch: &Prepared,
        valid: bool,
        epoch: u64,
        ctx: &mut Ctx,
        stats: Option<&mut Stats>,
    ) -> candle_core::Result<Vec<Tensor>> {
        let dev = Device::Cpu;
        match (batch, self.objective) {
            (Prepared::Masked(batch, picks), Objective::ReplacedToken) => {
                let (generator, _) = self.generator.as_ref().expect("built for ELECTRA");
                // The generator: a masked LM on the masked input.
                let gen_logits = generator.forward(&batch.inputs, ctx)?.output;
                let gen_loss = cross_entropy(&gen_logits, &batch.targets, CrossEntropy::default())?;
                // Its samples (no gradient flows through sampling) replace the masked tokens;
                // each example samples from its own stream.
                let seed = self.seed(valid) ^ SAMPLE_SALT;
                let example_of = |k: usize| picks[batch.positions[k] as usize / batch.width];
                let samples = sample_rows(&gen_logits, example_of, |example| {
                    example_rng(seed, epoch, example as u64)
                })?;
                let mut corrupted = batch.original.clone();
                let mut replaced = vec![0f32; corrupted.len()];
                for ((&at, &sample), &target) in
                    batch.positions.iter().zip(&samples).zip(&batch.target_ids)
                {
                    corrupted[at as usize] = sample;
                    replaced[at as usize] = (sample != target) as u32 as f32;
                }
                let shape = (batch.rows, batch.width);
                let mut inputs = ModelInputs::new(Tensor::from_vec(corrupted, shape, &dev)?)
                    .with_attention_mask(batch.attention.clone());
                inputs.token_type_ids = batch.inputs.token_type_ids.clone();
                let disc_logits = self.model.forward(&inputs, ctx)?.output;
                let labels = Tensor::from_vec(replaced, shape, &dev)?;
                let mask = batch.attention.to_dtype(candle_core::DType::F32)?;
                let disc_loss = masked_bce(&disc_logits, &labels, &mask)?;
                if let Some(stats) = stats {
                    stats.add("mlm", &gen_logits, &batch.targets)?;
                    stats.add_binary("replaced", &disc_logits, &labels, &mask)?;
                }
                let weight = self.recipe.discriminator_weight as f64;
                Ok(vec![gen_loss, (disc_loss * weight)?])
            }
            (Prepared::Masked(batch, _), _) => {
                let out = self.model.forward(&batch.inputs, ctx)?;
                let mlm = cross_entropy(&out.output, &batch.targets, CrossEntropy::default())?;
                if let Some(stats) = stats {
                    stats.add("mlm", &out.output, &batch.targets)?;
                }
                let mut parts = vec![mlm];
                if let Some(pair) = &out.pair_logits {
                    let labels = Tensor::new(batch.pair_labels.as_slice(), &dev)?;
                    parts.push(cross_entropy(pair, &labels, CrossEntropy::default())?);
                }
                Ok(parts)
            }
            (Prepared::Blocks(rows), _) => {
                let (ids, targets) = next_tokens(rows)?;
                let AutoModel::Gpt(gpt) = &self.model else {
                    unreachable!("causal LM trains a GPT")
                };
                Ok(vec![gpt.loss(&ids, &targets, ctx)?])
            }
            (Prepared::Spans(batch, _), _) => {
                let model = self.model.as_seq2seq().expect("T5 is an encoder–decoder");
                Ok(vec![model.loss(batch, &Seq2SeqLoss::default(), ctx)?])
            }
        }
    }

    /// A masked batch of `picks`: inputs (padded, with the positions to predict) and targets.
    fn masked_batch(
        &self,
        split: &Examples,
        picks: &[usize],
        rng_of: &dyn Fn(usize) -> lingo_nn::LingoRng,
    ) -> candle_core::Result<MaskedBatch> {
        let dev = Device::Cpu;
        let masker = self.masker.as_ref().expect("built for masked LM");
        let rows: Vec<(Vec<u32>, Vec<u32>)> = picks
            .iter()
            .map(|&i| self.encoder_input(split, i))
            .collect();
        let pair_labels = match split {
            Examples::Pairs(p) => picks.iter().map(|&i| p[i].label).collect(),
            Examples::Blocks { .. } => Vec::new(),
        };
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let b = rows.len();
        let (mut ids, mut original, mut types, mut mask) = (
            Vec::with_capacity(b * width),
            Vec::with_capacity(b * width),
            Vec::with_capacity(b * width),
            Vec::with_capacity(b * width),
        );
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        for (r, (&i, (row, row_types))) in picks.iter().zip(&rows).enumerate() {
            let masked = masker.mask(row, &mut rng_of(i));
            for (c, &label) in masked.labels.iter().enumerate() {
                if label != IGNORE {
                    positions.push((r * width + c) as u32);
                    targets.push(label as u32);
                }
            }
            let pad = width - row.len();
            ids.extend(masked.input_ids);
            ids.extend(std::iter::repeat_n(self.specials.pad, pad));
            original.extend(row);
            original.extend(std::iter::repeat_n(self.specials.pad, pad));
            types.extend(row_types);
            types.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        if positions.is_empty() {
            // Nothing was chosen (a tiny batch): predict the first text token anyway.
            positions.push(1);
            targets.push(rows[0].0[1]);
        }
        let tokens = mask.iter().filter(|&&m| m == 1).count();
        let attention = Tensor::from_vec(mask, (b, width), &dev)?;
        let mut inputs = ModelInputs::new(Tensor::from_vec(ids, (b, width), &dev)?)
            .with_attention_mask(attention.clone())
            .with_predict_positions(Tensor::new(positions.as_slice(), &dev)?);
        if self.config["type_vocab_size"].as_u64().unwrap_or(0) > 1 {
            inputs = inputs.with_token_type_ids(Tensor::from_vec(types, (b, width), &dev)?);
        }
        Ok(MaskedBatch {
            inputs,
            attention,
            targets: Tensor::new(targets.as_slice(), &dev)?,
            target_ids: targets,
            positions,
            original,
            pair_labels,
            rows: b,
            width,
            tokens,
        })
    }

    /// Example `i` of `split` as encoder input ids and segment ids, with special tokens.
    fn encoder_input(&self, split: &Examples, i: usize) -> (Vec<u32>, Vec<u32>) {
        let (cls, sep) = (self.specials.cls, self.specials.sep);
        match split {
            Examples::Blocks { stream, length } => {
                let mut ids = Vec::with_capacity(length + 2);
                ids.extend(cls);
                ids.extend(stream.read((i * length) as u64, *length));
                ids.extend(sep);
                let n = ids.len();
                (ids, vec![0; n])
            }
            Examples::Pairs(pairs) => {
                let p = &pairs[i];
                let mut ids = Vec::with_capacity(p.a.len() + p.b.len() + 3);
                ids.extend(cls);
                ids.extend(&p.a);
                ids.extend(sep);
                let first = ids.len();
                ids.extend(&p.b);
                ids.extend(sep);
                let mut types = vec![0; first];
                types.resize(ids.len(), 1);
                (ids, types)
            }
        }
    }
}

/// ELECTRA's discriminator (the preset's config) and generator (`generator_size` of its width,
/// same depth and embedding width) in one parameter store, the generator's word, position and
/// segment tables being the discriminator's.
fn electra(
    config: serde_json::Value,
    recipe: &PretrainRecipe,
    out_dir: &Path,
) -> Result<(Loaded, (BertModel, serde_json::Value))> {
    let size = recipe.generator_size;
    if !(size > 0.0 && size <= 1.0) {
        return Err(bad_input!("generator_size must be in (0, 1], got {size}"));
    }
    let scale = |key: &str| -> Result<usize> {
        let v = config[key]
            .as_u64()
            .ok_or_else(|| bad_input!("config: `{key}` is missing"))?;
        Ok(((v as f32 * size).round() as usize).max(1))
    };
    let mut gen_config = config.clone();
    let heads = scale("num_attention_heads")?;
    let hidden = scale("hidden_size")?;
    gen_config["hidden_size"] = (hidden.div_ceil(heads) * heads).into();
    gen_config["num_attention_heads"] = heads.into();
    gen_config["intermediate_size"] = scale("intermediate_size")?.into();
    gen_config["architectures"] = serde_json::json!(["ElectraForMaskedLM"]);
    if gen_config["embedding_size"].is_null() {
        gen_config["embedding_size"] = config["hidden_size"].clone();
    }
    let parse =
        |c: &serde_json::Value| -> Result<BertConfig> { Ok(serde_json::from_value(c.clone())?) };
    let (disc_cfg, gen_cfg) = (parse(&config)?, parse(&gen_config)?);
    let checkpoint = Checkpoint::fresh(out_dir, config.clone(), &Device::Cpu);
    let lookup = Lookup {
        seed: recipe.train.seed,
        ..Lookup::default()
    };
    let built = checkpoint.build(&lookup, |p| {
        let disc = BertModel::new(Family::Electra, Head::ReplacedToken, disc_cfg, false, p)?;
        let generator = BertModel::sharing_embeddings(
            Family::Electra,
            Head::MaskedLm,
            gen_cfg,
            false,
            &p.sub(GENERATOR),
            &p.sub("electra"),
        )?;
        Ok((disc, generator))
    })?;
    let (disc, generator) = built.model;
    let discriminator = Loaded {
        model: AutoModel::Encoder(disc),
        store: built.store,
        config,
        report: built.report,
        names: built.names,
    };
    Ok((discriminator, (generator, gen_config)))
}

/// Where ELECTRA's generator lives in the parameter store, and the folder it is saved in.
const GENERATOR: &str = "generator";

/// `n` draws, one per row of `logits` `[n, vocab]`, from their softmax; row `k` draws from the
/// stream of its example, `rng_of(example_of(k))` (rows of an example are consecutive), so a
/// batch cut into shards samples what it samples whole.
fn sample_rows(
    logits: &Tensor,
    example_of: impl Fn(usize) -> usize,
    rng_of: impl Fn(usize) -> lingo_nn::LingoRng,
) -> candle_core::Result<Vec<u32>> {
    let probs = lingo_kernels::softmax(&logits.detach())?;
    let rows = probs.to_vec2::<f32>()?;
    let mut current: Option<(usize, lingo_nn::LingoRng)> = None;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let example = example_of(k);
            let rng = match &mut current {
                Some((e, rng)) if *e == example => rng,
                slot => &mut slot.insert((example, rng_of(example))).1,
            };
            let mut u = rng.uniform() * p.iter().sum::<f32>();
            for (i, &q) in p.iter().enumerate() {
                if u < q {
                    return i as u32;
                }
                u -= q;
            }
            (p.len() - 1) as u32
        })
        .collect())
}

/// Mean binary cross-entropy of `logits` against 0/1 `labels` over the positions `mask` marks
/// (all `[batch, time]`): `softplus(x) − x·y`, written so large |x| stays finite.
fn masked_bce(logits: &Tensor, labels: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let per_token = (softplus - (logits * labels)?)?;
    (per_token * mask)?.sum_all()? / mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64
}

/// Correct and total predictions per kind, from a validation pass.
#[derive(Default)]
struct Stats(BTreeMap<&'static str, (u64, u64)>);

impl Stats {
    /// Binary predictions (`logits > 0`) against 0/1 `labels` where `mask` is 1.
    fn add_binary(
        &mut self,
        what: &'static str,
        logits: &Tensor,
        labels: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<()> {
        let (x, y, m) = (
            logits.flatten_all()?.to_vec1::<f32>()?,
            labels.flatten_all()?.to_vec1::<f32>()?,
            mask.flatten_all()?.to_vec1::<f32>()?,
        );
        let e = self.0.entry(what).or_default();
        for ((x, y), m) in x.iter().zip(&y).zip(&m) {
            if *m > 0.0 {
                e.0 += ((*x > 0.0) == (*y > 0.5)) as u64;
                e.1 += 1;
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        what: &'static str,
        logits: &Tensor,
        targets: &Tensor,
    ) -> candle_core::Result<()> {
        let predicted = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
        let want = targets.to_vec1::<u32>()?;
        let e = self.0.entry(what).or_default();
        e.0 += predicted.iter().zip(&want).filter(|(a, b)| a == b).count() as u64;
        e.1 += want.len() as u64;
        Ok(())
    }
}

/// The examples of documents `docs` of `cache` for `objective`.
fn examples(
    recipe: &PretrainRecipe,
    objective: Objective,
    cache: Arc<TokenCache>,
    docs: Range<usize>,
    specials: Specials,
    what: &str,
) -> Result<Examples> {
    let n_tokens = {
        let r = cache.span(docs.clone());
        r.end - r.start
    };
    let ex = match objective {
        Objective::Mlm | Objective::ReplacedToken => Examples::Blocks {
            length: recipe.max_length - 2,
            stream: Stream::new(cache, docs, specials.sep),
        },
        Objective::Clm => Examples::Blocks {
            length: recipe.max_length + 1,
            stream: Stream::new(cache, docs, specials.sep),
        },
        Objective::SpanCorruption => Examples::Blocks {
            length: recipe.span_corruption.block_lengths(recipe.max_length).0 - 1,
            stream: Stream::new(cache, docs, specials.sep),
        },
        Objective::MlmNsp | Objective::MlmSop => {
            let stream = Stream::new(cache, docs, None);
            let view = StreamDocuments(&stream);
            if (0..view.len()).all(|d| view.document(d).len() < 2) {
                return Err(bad_input!(
                    "{} needs documents of several sentences, but every {what} document has one: put one sentence per line and a blank line between documents",
                    objective.name()
                ));
            }
            let task = match objective {
                Objective::MlmNsp => PairTask::NextSentence,
                _ => PairTask::SentenceOrder,
            };
            let mut pairs = Vec::new();
            for d in 0..view.len() {
                let mut rng = example_rng(recipe.train.seed, u64::MAX, d as u64);
                pairs.extend(pair_instances(
                    &view,
                    d,
                    task,
                    recipe.max_length,
                    recipe.short_seq_prob,
                    &mut rng,
                ));
            }
            Examples::Pairs(pairs)
        }
    };
    if ex.is_empty() {
        return Err(bad_input!(
            "the {what} corpus ({n_tokens} tokens) is shorter than one example of {} tokens",
            recipe.max_length
        ));
    }
    Ok(ex)
}

impl TrainTask for PretrainTask {
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
        let (picks, epoch) = self.micro_batch_picks(batch_size);
        self.loss(false, &picks, epoch, ctx, None)
    }

    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let (picks, epoch) = self.micro_batch_picks(batch_size);
        let this = &*self;
        lingo_train::trainer::shards_of(&picks, shards, |part| {
            let batch = this.prepare(false, part, epoch)?;
            let (counts, tokens) = (this.loss_counts(&batch), batch.tokens());
            Ok(Shard::parts(tokens, counts, move |ctx: &mut Ctx| {
                this.loss_parts(&batch, false, epoch, ctx, None)
            }))
        })
    }

    /// Masked LM of the BERT family (not ALBERT, whose layers are shared) and GPT-2's causal LM
    /// cut into stages; the other objectives' extra heads and models do not split.
    fn pipeline_stage(
        &self,
        stage: usize,
        stages: usize,
    ) -> candle_core::Result<Option<Box<dyn lingo_nn::pipeline::PipelineStage + '_>>> {
        Ok(match (&self.model, self.objective) {
            (AutoModel::Encoder(m), Objective::Mlm) => {
                Some(Box::new(m.stage(&self.store, stage, stages)?))
            }
            (AutoModel::Gpt(m), Objective::Clm) => {
                Some(Box::new(m.stage(&self.store, stage, stages)))
            }
            _ => None,
        })
    }

    /// The micro-batch `train_loss` would draw: masked ids, attention mask and labels (the
    /// original token at each masked position, ignored elsewhere); or token blocks and their
    /// next tokens.
    fn pipeline_inputs(
        &mut self,
        batch_size: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Tensor>>> {
        if !matches!(self.objective, Objective::Mlm | Objective::Clm) {
            return Ok(None);
        }
        let (picks, epoch) = self.micro_batch_picks(batch_size);
        Ok(match self.prepare(false, &picks, epoch)? {
            Prepared::Masked(b, _) => {
                let mut labels = vec![lingo_models::contracts::IGNORE; b.rows * b.width];
                for (&at, &id) in b.positions.iter().zip(&b.target_ids) {
                    labels[at as usize] = id as i64;
                }
                let labels = Tensor::from_vec(labels, (b.rows, b.width), &Device::Cpu)?;
                Some(vec![
                    b.inputs.input_ids.clone(),
                    b.attention.clone(),
                    labels,
                ])
            }
            Prepared::Blocks(rows) => {
                let (ids, targets) = next_tokens(&rows)?;
                Some(vec![ids, targets])
            }
            Prepared::Spans(..) => None,
        })
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let n = self.valid.len();
        let batches = n.div_ceil(batch_size.max(1));
        let take = if max_batches == 0 {
            batches
        } else {
            batches.min(max_batches)
        };
        let mut stats = Stats::default();
        let (mut total, mut count) = (0.0, 0usize);
        for b in 0..take {
            let picks: Vec<usize> = (b * batch_size..((b + 1) * batch_size).min(n)).collect();
            let (loss, _) = self.loss(true, &picks, 0, &mut Ctx::eval(), Some(&mut stats))?;
            total += loss.to_scalar::<f32>()? as f64 * picks.len() as f64;
            count += picks.len();
        }
        let val = total / count.max(1) as f64;
        self.last_metrics.clear();
        for (what, (right, all)) in stats.0 {
            self.last_metrics
                .insert(format!("{what}_accuracy"), right as f64 / all.max(1) as f64);
        }
        if matches!(self.objective, Objective::Mlm | Objective::Clm) {
            self.last_metrics.insert("perplexity".into(), val.exp());
        }
        Ok(val)
    }

    fn evaluate(&mut self, _batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        Ok(self.last_metrics.clone())
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": "pretrain",
            "model": self.recipe.model,
            "objective": self.objective,
            "max_length": self.recipe.max_length,
            "vocab_size": self.tokenizer.vocab_size(),
            "train_examples": self.train.len(),
        })
    }

    /// `config.json` (through `save_weights`), the tokenizer files and `recipe.json`.
    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        let tokenizer = || -> Result<()> {
            match (&self.tokenizer_spec, &self.tokenizer_source) {
                (Some(spec), _) => spec.save(&self.tokenizer, dir, self.recipe.max_length)?,
                (None, Some(src)) => {
                    self.tokenizer.save(&dir.join("tokenizer.json"))?;
                    crate::pretrained::copy_tokenizer_files(src, dir)?;
                }
                (None, None) => self.tokenizer.save(&dir.join("tokenizer.json"))?,
            }
            let recipe = serde_json::to_string_pretty(&self.recipe)?;
            let path = dir.join("recipe.json");
            lingo_nn::io::write_atomic(&path, recipe.as_bytes()).map_err(io(&path))?;
            Ok(())
        };
        tokenizer().map_err(to_train)
    }

    /// The Hugging Face folder: `config.json` and `model.safetensors` under the checkpoint names
    /// `transformers` expects (GPT-2's Conv1D weights in their layout).
    fn save_weights(&self, path: &Path) -> lingo_train::Result<()> {
        let dir = path.parent().unwrap_or(&self.out_dir);
        if let Some((_, gen_config)) = &self.generator {
            // ELECTRA: the discriminator here, the generator in `generator/`, each a whole
            // folder (the generator with its copy of the shared embeddings).
            let prefix = format!("{GENERATOR}.");
            let (mut disc, mut generator) = (Vec::new(), Vec::new());
            for (name, var) in self.store.named() {
                let t = var.as_tensor().clone();
                match name.strip_prefix(&prefix) {
                    Some(own) => generator.push((own.to_string(), t)),
                    None => {
                        if name.starts_with("electra.embeddings.") {
                            generator.push((name.clone(), t.clone()));
                        }
                        disc.push((name, t));
                    }
                }
            }
            let save = |dir: &Path, config: &serde_json::Value, tensors| {
                lingo_models::hf::save_tensors(dir, config, tensors).map_err(|e| to_train(e.into()))
            };
            save(dir, &self.config, disc)?;
            let gen_dir = dir.join(GENERATOR);
            save(&gen_dir, gen_config, generator)?;
            return crate::pretrained::copy_tokenizer_files(dir, &gen_dir).map_err(to_train);
        }
        lingo_models::hf::save_folder(dir, &self.config, &self.store, &self.names)
            .map_err(|e| to_train(e.into()))
    }
}
