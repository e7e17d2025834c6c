//! Sequence-to-sequence translation with the recurrent encoder–decoder: pairs of sentences in, a model
//! folder out, and a [`Translator`] that loads the folder and decodes with beam search.
//!
//! A model folder holds `config.json` (`"model_type": "lingo-rnn-seq2seq"`), `source_tokenizer.json`,
//! `target_tokenizer.json`, `model.safetensors`, `recipe.json`, `checkpoint.safetensors`,
//! `metrics.jsonl` and `loss.png`.

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use lingo_data::{Tokenizer, TokenizerKind};
use lingo_generate::{beam_search, BeamConfig};
use lingo_models::auto::AutoModel;
use lingo_models::bart::Bart;
use lingo_models::t5::T5;
use lingo_models::transformer::{Transformer, TransformerConfig};
use lingo_models::{config::read_json, ModelConfig, RnnSeq2Seq, RnnSeq2SeqConfig, Seq2SeqLm};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::{TrainConfig, TrainTask};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The special tokens every sequence-to-sequence tokenizer starts with, in id order.
pub const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];
const PAD: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;

/// The network a sequence-to-sequence recipe trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[default]
    Rnn,
    Transformer,
}

/// How training batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Batching {
    /// Every pair of the batch drawn independently.
    #[default]
    Random,
    /// A random run of consecutive pairs in length order (ties in a seeded random order), so the
    /// batch needs little padding: Multi30k batches of 128 carry about half as many padded
    /// positions. Every pair is still equally likely to be drawn (the order wraps around).
    ByLength,
}

/// Everything that defines a translation training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seq2SeqRecipe {
    /// Which network: `rnn` (the `model` section) or `transformer` (the `transformer` section).
    pub arch: Arch,
    /// The recurrent model; vocabulary sizes and special ids are filled in from the tokenizers.
    pub model: RnnSeq2SeqConfig,
    /// The Transformer, for `arch: transformer`.
    pub transformer: TransformerConfig,
    /// Label smoothing of the training loss (the Transformer paper uses 0.1).
    pub label_smoothing: f32,
    /// `random` or `by_length` (pairs of similar length together; much less padding).
    pub batching: Batching,
    pub source_tokenizer: TokenizerKind,
    pub target_tokenizer: TokenizerKind,
    pub train: TrainConfig,
    /// Probability of feeding the reference token (rather than the model's own prediction) at each step.
    pub teacher_forcing: f32,
    /// Training pairs with more tokens than this on either side are skipped.
    pub max_length: usize,
    /// Decoding settings used for evaluation and by `lingo translate`.
    pub beam: BeamConfig,
}

impl Default for Seq2SeqRecipe {
    fn default() -> Self {
        Seq2SeqRecipe {
            arch: Arch::Rnn,
            model: RnnSeq2SeqConfig::default(),
            transformer: TransformerConfig::default(),
            label_smoothing: 0.0,
            batching: Batching::Random,
            source_tokenizer: TokenizerKind::Char,
            target_tokenizer: TokenizerKind::Char,
            train: TrainConfig::default(),
            teacher_forcing: 1.0,
            max_length: 200,
            beam: BeamConfig::default(),
        }
    }
}

impl Seq2SeqRecipe {
    /// Reads a recipe file; errors name the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(read_json(path)?)
    }
}

type IdPair = (Vec<u32>, Vec<u32>);

/// A recurrent seq2seq model, its tokenizers and its tokenised data, ready for the trainer.
pub struct Seq2SeqTask {
    pub recipe: Seq2SeqRecipe,
    pub source_tokenizer: Tokenizer,
    pub target_tokenizer: Tokenizer,
    pub train: Vec<IdPair>,
    pub validation: Vec<IdPair>,
    pub model: Seq2SeqModel,
    params: ParamStore,
    /// Indices of `train` by (target length, source length), ties shuffled: for `by_length` batches.
    by_length: Vec<usize>,
}

fn check_specials(tok: &Tokenizer, side: &str) -> anyhow::Result<()> {
    for (i, s) in SPECIALS.iter().enumerate() {
        if tok.token_to_id(s) != Some(i as u32) {
            bail!("the {side} tokenizer must have {s} at id {i}");
        }
    }
    Ok(())
}

impl Seq2SeqTask {
    /// Tokenises the pairs (training tokenizers on the training pairs unless given) and builds a
    /// freshly initialised model.
    pub fn new(
        mut recipe: Seq2SeqRecipe,
        train: &[(String, String)],
        validation: &[(String, String)],
        tokenizers: Option<(Tokenizer, Tokenizer)>,
    ) -> anyhow::Result<Self> {
        if train.is_empty() || validation.is_empty() {
            bail!(
                "need at least one training and one validation pair (got {} and {})",
                train.len(),
                validation.len()
            );
        }
        let (source_tokenizer, target_tokenizer) = match tokenizers {
            Some(t) => t,
            None => {
                let join = |side: fn(&(String, String)) -> &String| {
                    train
                        .iter()
                        .map(side)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                (
                    Tokenizer::train_with_specials(
                        recipe.source_tokenizer,
                        &join(|p| &p.0),
                        &SPECIALS,
                    )?,
                    Tokenizer::train_with_specials(
                        recipe.target_tokenizer,
                        &join(|p| &p.1),
                        &SPECIALS,
                    )?,
                )
            }
        };
        check_specials(&source_tokenizer, "source")?;
        check_specials(&target_tokenizer, "target")?;
        let (src_vocab, tgt_vocab) = (source_tokenizer.vocab_size(), target_tokenizer.vocab_size());
        let m = &mut recipe.model;
        (m.src_vocab_size, m.tgt_vocab_size) = (src_vocab, tgt_vocab);
        (m.pad_id, m.bos_id, m.eos_id) = (PAD, BOS, EOS);
        let t = &mut recipe.transformer;
        (t.src_vocab_size, t.tgt_vocab_size) = (src_vocab, tgt_vocab);
        (t.pad_id, t.bos_id, t.eos_id) = (PAD, BOS, EOS);
        match recipe.arch {
            Arch::Rnn => recipe.model.validate(),
            Arch::Transformer => recipe.transformer.validate(),
        }
        .map_err(|e| anyhow::anyhow!("model config: {e}"))?;
        recipe
            .train
            .validate()
            .map_err(|e| anyhow::anyhow!("training config: {e}"))?;
        let encode = |pairs: &[(String, String)]| -> anyhow::Result<Vec<IdPair>> {
            let mut out = Vec::with_capacity(pairs.len());
            for (i, (s, t)) in pairs.iter().enumerate() {
                let (s, t) = (source_tokenizer.encode(s)?, target_tokenizer.encode(t)?);
                if s.is_empty() {
                    bail!("pair {}: the source is empty", i + 1);
                }
                if s.len() <= recipe.max_length && t.len() < recipe.max_length {
                    out.push((s, t));
                }
            }
            Ok(out)
        };
        let train_ids = encode(train)?;
        let validation_ids = encode(validation)?;
        if train_ids.is_empty() {
            bail!(
                "every training pair is longer than max_length {}",
                recipe.max_length
            );
        }
        let mut tie_break = LingoRng::new(recipe.train.seed).fork(0xba7c);
        let mut by_length: Vec<(usize, usize, u64, usize)> = (train_ids.iter().enumerate())
            .map(|(i, (s, t))| (t.len(), s.len(), tie_break.next_u64(), i))
            .collect();
        by_length.sort_unstable();
        let by_length = by_length.into_iter().map(|k| k.3).collect();
        let params = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let model = match recipe.arch {
            Arch::Rnn => Seq2SeqModel::Rnn(RnnSeq2Seq::new(recipe.model.clone(), &params.root())?),
            Arch::Transformer => Seq2SeqModel::Transformer(Transformer::new(
                recipe.transformer.clone(),
                &params.root(),
            )?),
        };
        Ok(Seq2SeqTask {
            recipe,
            source_tokenizer,
            target_tokenizer,
            train: train_ids,
            validation: validation_ids,
            model,
            by_length,
            params,
        })
    }

    /// The training loss of a batch: teacher forcing (or scheduled sampling) for the RNN,
    /// label-smoothed cross-entropy for both.
    fn loss(
        &self,
        src: &Tensor,
        lengths: &[usize],
        tin: &Tensor,
        tout: &Tensor,
        ctx: &mut Ctx,
    ) -> candle_core::Result<Tensor> {
        let teacher_forcing = if ctx.train {
            self.recipe.teacher_forcing
        } else {
            1.0
        };
        let smoothing = if ctx.train {
            self.recipe.label_smoothing
        } else {
            0.0
        };
        match &self.model {
            Seq2SeqModel::Rnn(m) => m.loss(src, lengths, tin, tout, teacher_forcing, ctx),
            Seq2SeqModel::Transformer(m) => m.loss(src, lengths, tin, tout, smoothing, ctx),
            _ => candle_core::bail!("only Lingo's own seq2seq models train"),
        }
    }

    /// The training pairs of one batch, as the recipe's `batching` says.
    fn draw(&self, batch_size: usize, rng: &mut LingoRng) -> Vec<&IdPair> {
        let n = self.train.len();
        match self.recipe.batching {
            Batching::Random => (0..batch_size).map(|_| &self.train[rng.below(n)]).collect(),
            Batching::ByLength => {
                let start = rng.below(n);
                (0..batch_size)
                    .map(|i| &self.train[self.by_length[(start + i) % n]])
                    .collect()
            }
        }
    }

    /// Padded tensors for a batch: source, source lengths, target input (BOS first), target output
    /// (EOS last), and the number of target tokens.
    fn batch(
        &self,
        pairs: &[&IdPair],
    ) -> candle_core::Result<(Tensor, Vec<usize>, Tensor, Tensor, usize)> {
        let b = pairs.len();
        let s = pairs.iter().map(|p| p.0.len()).max().unwrap_or(1);
        let t = pairs.iter().map(|p| p.1.len() + 1).max().unwrap_or(1);
        let (mut src, mut tin, mut tout) = (vec![PAD; b * s], vec![PAD; b * t], vec![PAD; b * t]);
        for (r, (x, y)) in pairs.iter().map(|p| (&p.0, &p.1)).enumerate() {
            src[r * s..r * s + x.len()].copy_from_slice(x);
            tin[r * t] = BOS;
            tin[r * t + 1..r * t + 1 + y.len()].copy_from_slice(y);
            tout[r * t..r * t + y.len()].copy_from_slice(y);
            tout[r * t + y.len()] = EOS;
        }
        let lengths = pairs.iter().map(|p| p.0.len()).collect();
        let tokens = pairs.iter().map(|p| p.1.len() + 1).sum();
        let d = &Device::Cpu;
        Ok((
            Tensor::from_vec(src, (b, s), d)?,
            lengths,
            Tensor::from_vec(tin, (b, t), d)?,
            Tensor::from_vec(tout, (b, t), d)?,
            tokens,
        ))
    }
}

impl TrainTask for Seq2SeqTask {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let picks = self.draw(batch_size, &mut ctx.rng);
        let (src, lengths, tin, tout, tokens) = self.batch(&picks)?;
        let loss = self.loss(&src, &lengths, &tin, &tout, ctx)?;
        Ok((loss, tokens))
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let take = if max_batches == 0 {
            usize::MAX
        } else {
            max_batches
        };
        let (mut total, mut count) = (0.0, 0usize);
        let refs: Vec<&IdPair> = self.validation.iter().collect();
        for chunk in refs.chunks(batch_size).take(take) {
            let (src, lengths, tin, tout, tokens) = self.batch(chunk)?;
            let loss = self
                .loss(&src, &lengths, &tin, &tout, &mut Ctx::eval())?
                .to_scalar::<f32>()? as f64;
            total += loss * tokens as f64;
            count += tokens;
        }
        Ok(total / count.max(1) as f64)
    }

    fn describe(&self) -> serde_json::Value {
        let model = match self.recipe.arch {
            Arch::Rnn => serde_json::json!(self.recipe.model),
            Arch::Transformer => serde_json::json!(self.recipe.transformer),
        };
        serde_json::json!({
            "task": "seq2seq",
            "arch": self.recipe.arch,
            "model": model,
            "source_tokenizer": self.recipe.source_tokenizer,
            "target_tokenizer": self.recipe.target_tokenizer,
        })
    }

    fn save_artifacts(&self, dir: &Path) -> anyhow::Result<()> {
        let config = serde_json::to_string_pretty(&match self.recipe.arch {
            Arch::Rnn => ModelConfig::RnnSeq2Seq(self.recipe.model.clone()),
            Arch::Transformer => ModelConfig::Transformer(self.recipe.transformer.clone()),
        })?;
        lingo_nn::io::write_atomic(&dir.join("config.json"), config.as_bytes())?;
        lingo_nn::io::write_atomic(
            &dir.join("recipe.json"),
            serde_json::to_string_pretty(&self.recipe)?.as_bytes(),
        )?;
        self.source_tokenizer
            .save(&dir.join("source_tokenizer.json"))?;
        self.target_tokenizer
            .save(&dir.join("target_tokenizer.json"))?;
        Ok(())
    }
}

/// One decoded sentence.
#[derive(Clone, Debug)]
pub struct Translation {
    pub text: String,
    pub source_tokens: Vec<String>,
    pub target_tokens: Vec<String>,
    /// `attention[i][j]`: weight of source token `j` when producing target token `i`.
    pub attention: Vec<Vec<f32>>,
    pub score: f32,
}

/// A sequence-to-sequence model Lingo can translate (or summarise) with.
pub enum Seq2SeqModel {
    /// Trained by `lingo train seq2seq`.
    Rnn(RnnSeq2Seq),
    /// Trained by `lingo train seq2seq --arch transformer`.
    Transformer(Transformer),
    /// Hugging Face BART or Marian.
    Bart(Bart),
    /// Hugging Face T5.
    T5(T5),
}

impl Seq2SeqModel {
    pub fn as_lm(&self) -> &dyn Seq2SeqLm {
        match self {
            Seq2SeqModel::Rnn(m) => m,
            Seq2SeqModel::Transformer(m) => m,
            Seq2SeqModel::Bart(m) => m,
            Seq2SeqModel::T5(m) => m,
        }
    }
}

/// A seq2seq model loaded from its folder, with its tokenizers and decoding settings.
pub struct Translator {
    pub model: Seq2SeqModel,
    pub source_tokenizer: Tokenizer,
    pub target_tokenizer: Tokenizer,
    pub beam: BeamConfig,
    /// Padding id of the source side.
    pad: u32,
    /// Hugging Face tokenizers add the model's special tokens (T5's `</s>`) themselves.
    add_special_tokens: bool,
}

impl Translator {
    /// Loads a folder written by `lingo train seq2seq`, or a Hugging Face T5, BART or Marian folder
    /// with its `tokenizer.json` (and `generation_config.json` for the beam settings, if present).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{}: no such model folder", dir.display());
        }
        let config_path = dir.join("config.json");
        let raw: serde_json::Value = read_json(&config_path)?;
        if matches!(raw["model_type"].as_str(), Some("t5" | "bart" | "marian")) {
            return Self::load_pretrained(dir, &raw);
        }
        let config = read_json::<ModelConfig>(&config_path)?;
        let (src_vocab, tgt_vocab) = match &config {
            ModelConfig::RnnSeq2Seq(c) => (c.src_vocab_size, c.tgt_vocab_size),
            ModelConfig::Transformer(c) => (c.src_vocab_size, c.tgt_vocab_size),
            other => bail!(
                "{}: not a sequence-to-sequence model ({other:?})",
                config_path.display()
            ),
        };
        let source_tokenizer = Tokenizer::load(&dir.join("source_tokenizer.json"))?;
        let target_tokenizer = Tokenizer::load(&dir.join("target_tokenizer.json"))?;
        for (tok, size, side) in [
            (&source_tokenizer, src_vocab, "source"),
            (&target_tokenizer, tgt_vocab, "target"),
        ] {
            if tok.vocab_size() != size {
                bail!(
                    "{}: {side} tokenizer has {} tokens but config.json says {size}",
                    dir.display(),
                    tok.vocab_size()
                );
            }
        }
        let beam = match read_json::<Seq2SeqRecipe>(&dir.join("recipe.json")) {
            Ok(r) => r.beam,
            Err(_) => BeamConfig::default(),
        };
        let params = ParamStore::new(0, &Device::Cpu);
        let model = match config {
            ModelConfig::RnnSeq2Seq(c) => Seq2SeqModel::Rnn(RnnSeq2Seq::new(c, &params.root())?),
            ModelConfig::Transformer(c) => {
                Seq2SeqModel::Transformer(Transformer::new(c, &params.root())?)
            }
            _ => unreachable!("checked above"),
        };
        params
            .load(&dir.join("model.safetensors"))
            .context("loading the model weights")?;
        Ok(Translator {
            model,
            source_tokenizer,
            target_tokenizer,
            beam,
            pad: PAD,
            add_special_tokens: false,
        })
    }

    fn load_pretrained(dir: &Path, config: &serde_json::Value) -> anyhow::Result<Self> {
        let loaded = AutoModel::load(dir, &Device::Cpu)?;
        let model = match loaded.model {
            AutoModel::T5(m) => Seq2SeqModel::T5(m),
            AutoModel::EncoderDecoder(m) => Seq2SeqModel::Bart(m),
            _ => bail!("{}: not an encoder-decoder", dir.display()),
        };
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json")).with_context(|| {
            format!("{}: the model folder needs a tokenizer.json", dir.display())
        })?;
        // generation_config.json's settings, else config.json's, else transformers' defaults.
        let generation: serde_json::Value =
            read_json(&dir.join("generation_config.json")).unwrap_or_default();
        let beam = BeamConfig::from_generation_config(|key| {
            let value = generation.get(key).or_else(|| config.get(key));
            value.filter(|v| !v.is_null()).cloned()
        })
        .with_context(|| format!("{}: generation settings", dir.display()))?;
        Ok(Translator {
            pad: config["pad_token_id"].as_u64().unwrap_or(0) as u32,
            model,
            source_tokenizer: tokenizer.clone(),
            target_tokenizer: tokenizer,
            beam,
            add_special_tokens: true,
        })
    }

    fn encode_source(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        if self.add_special_tokens {
            let enc = self
                .source_tokenizer
                .inner()
                .encode(text, true)
                .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
            Ok(enc.get_ids().to_vec())
        } else {
            Ok(self.source_tokenizer.encode(text)?)
        }
    }

    /// Translates `sentences` in batches of `batch_size` with beam search.
    pub fn translate(
        &self,
        sentences: &[String],
        beam: &BeamConfig,
        batch_size: usize,
    ) -> anyhow::Result<Vec<Translation>> {
        let mut out = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(batch_size.max(1)) {
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|s| self.encode_source(s))
                .collect::<anyhow::Result<_>>()?;
            if let Some(i) = ids.iter().position(|x| x.is_empty()) {
                bail!("sentence {:?} has no tokens", chunk[i]);
            }
            let s = ids.iter().map(Vec::len).max().unwrap_or(1);
            let mut flat = vec![self.pad; ids.len() * s];
            for (r, x) in ids.iter().enumerate() {
                flat[r * s..r * s + x.len()].copy_from_slice(x);
            }
            let src = Tensor::from_vec(flat, (ids.len(), s), &Device::Cpu)?;
            let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
            let model = self.model.as_lm();
            let hyps = beam_search(model, &src, &lengths, beam)?;
            for (x, mut h) in ids.iter().zip(hyps) {
                let best = h.remove(0);
                let eos = model.eos_id();
                let target: Vec<u32> = best.tokens.iter().copied().filter(|&t| t != eos).collect();
                out.push(Translation {
                    text: self.target_tokenizer.decode_text(&target)?,
                    source_tokens: self.source_tokenizer.tokens(x),
                    target_tokens: self.target_tokenizer.tokens(&best.tokens),
                    attention: best.attention,
                    score: best.score,
                });
            }
        }
        Ok(out)
    }
}

/// Share of predictions equal to their reference.
pub fn exact_match(predictions: &[String], references: &[String]) -> f64 {
    let hits = predictions
        .iter()
        .zip(references)
        .filter(|(p, r)| p == r)
        .count();
    hits as f64 / references.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingo_data::DateTask;
    use lingo_models::Seq2SeqAttention;
    use lingo_train::{AdamWConfig, OptimizerConfig, Schedule, ScheduleKind, Trainer};

    /// `by_length` batches need far less padding than random ones, and still reach every pair.
    #[test]
    fn length_grouped_batches_pad_less_and_cover_the_data() -> anyhow::Result<()> {
        let (train, valid) = DateTask::split(2000, 10, 3);
        let task = |batching| {
            let recipe = Seq2SeqRecipe {
                batching,
                ..Default::default()
            };
            Seq2SeqTask::new(recipe, &train, &valid, None)
        };
        let (random, grouped) = (task(Batching::Random)?, task(Batching::ByLength)?);
        // Padded positions over real ones, summed over 200 batches of 32 (the dates' targets all
        // have one length; their sources, in twelve formats, do not).
        let padding = |t: &Seq2SeqTask| {
            let mut rng = LingoRng::new(1);
            let (mut padded, mut real) = (0, 0);
            for _ in 0..200 {
                let batch = t.draw(32, &mut rng);
                for side in [|p: &IdPair| p.0.len(), |p: &IdPair| p.1.len()] {
                    let longest = batch.iter().map(|p| side(p)).max().unwrap_or(0);
                    padded += longest * batch.len();
                    real += batch.iter().map(|p| side(p)).sum::<usize>();
                }
            }
            padded as f64 / real as f64 - 1.0
        };
        let (r, g) = (padding(&random), padding(&grouped));
        assert!(g < 0.1 * r, "padding: random {r:.3}, by length {g:.3}");
        let mut seen = vec![false; grouped.train.len()];
        let mut rng = LingoRng::new(2);
        for _ in 0..1000 {
            for p in grouped.draw(32, &mut rng) {
                let i = grouped
                    .train
                    .iter()
                    .position(|q| std::ptr::eq(q, p))
                    .unwrap_or(0);
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "some pairs were never drawn");
        Ok(())
    }

    type Pairs = Vec<(String, String)>;

    /// A quick task for a test: dates in the ISO-like format only, which is nearly a copy.
    fn copy_task(seed: u64) -> (Pairs, Pairs) {
        let (train, test) = DateTask::split(3000, 40, seed);
        let iso = |pairs: Pairs| -> Pairs {
            pairs
                .into_iter()
                .map(|(_, t)| (t.replace('-', "/"), t))
                .collect()
        };
        (iso(train), iso(test))
    }

    /// `steps` of AdamW at a constant `lr`, batch 32, evaluated once at the end.
    fn quick_training(steps: usize, lr: f32) -> TrainConfig {
        TrainConfig {
            steps,
            batch_size: 32,
            optimizer: OptimizerConfig::AdamW(AdamWConfig {
                lr,
                weight_decay: 0.0,
                ..Default::default()
            }),
            schedule: Schedule {
                kind: ScheduleKind::Constant,
                ..Default::default()
            },
            eval_every: steps,
            ..Default::default()
        }
    }

    /// Trains `recipe` on `train`, loads the folder it wrote, and translates the sources of `test`:
    /// the translator, its translations and their exact-match rate.
    fn train_and_translate(
        recipe: Seq2SeqRecipe,
        train: &[(String, String)],
        test: &[(String, String)],
    ) -> anyhow::Result<(Translator, Vec<Translation>, f64)> {
        let mut task = Seq2SeqTask::new(recipe, train, test, None)?;
        let dir = tempfile::tempdir()?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), dir.path());
        trainer.progress = false;
        trainer.run(&mut task, false)?;
        let translator = Translator::load(dir.path())?;
        let sources: Vec<String> = test.iter().map(|p| p.0.clone()).collect();
        let refs: Vec<String> = test.iter().map(|p| p.1.clone()).collect();
        let out = translator.translate(&sources, &translator.beam.clone(), 16)?;
        let preds: Vec<String> = out.iter().map(|t| t.text.clone()).collect();
        let acc = exact_match(&preds, &refs);
        Ok((translator, out, acc))
    }

    fn texts(out: &[Translation]) -> Vec<&str> {
        out.iter().map(|t| t.text.as_str()).collect()
    }

    #[test]
    fn learns_to_copy_dates_and_the_folder_translates() -> anyhow::Result<()> {
        let (train, test) = copy_task(5);
        let recipe = Seq2SeqRecipe {
            model: RnnSeq2SeqConfig {
                embed_dim: 16,
                hidden_size: 32,
                attention: Seq2SeqAttention::Bahdanau,
                ..Default::default()
            },
            train: quick_training(400, 1e-2),
            beam: BeamConfig {
                beam_size: 3,
                max_length: 14,
                ..Default::default()
            },
            ..Default::default()
        };
        let (_, out, acc) = train_and_translate(recipe, &train, &test)?;
        assert!(acc > 0.8, "exact match {acc}: {:?}", texts(&out[..4]));
        let t = &out[0];
        assert_eq!(t.attention.len(), t.target_tokens.len());
        assert_eq!(t.attention[0].len(), t.source_tokens.len());
        Ok(())
    }

    #[test]
    fn empty_data_is_a_clear_error() {
        let err = Seq2SeqTask::new(
            Seq2SeqRecipe::default(),
            &[],
            &[("a".into(), "b".into())],
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("at least one training"), "{err}");
    }

    #[test]
    fn unknown_recipe_keys_are_named() {
        let nested = r#"{ "model": { "hiden_size": 256 } }"#;
        let err = lingo_models::config::parse_json::<Seq2SeqRecipe>(nested).unwrap_err();
        assert!(err.contains("hiden_size"), "{err}");
        let top = r#"{ "teacher_forcin": 0.5 }"#;
        let err = lingo_models::config::parse_json::<Seq2SeqRecipe>(top).unwrap_err();
        assert!(err.contains("teacher_forcin"), "{err}");
    }

    #[test]
    fn shipped_recipes_parse() -> anyhow::Result<()> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/");
        let read = |name: &str| -> anyhow::Result<Seq2SeqRecipe> {
            Ok(lingo_models::config::read_json(
                &std::path::Path::new(dir).join(name),
            )?)
        };
        let lstm = read("multi30k-lstm.json")?;
        assert_eq!(lstm.model.attention, Seq2SeqAttention::Bahdanau);
        assert_eq!(read("multi30k-transformer.json")?.arch, Arch::Transformer);
        Ok(())
    }

    #[test]
    fn a_transformer_learns_to_copy_and_its_folder_translates() -> anyhow::Result<()> {
        let (train, test) = copy_task(6);
        let recipe = Seq2SeqRecipe {
            arch: Arch::Transformer,
            transformer: TransformerConfig {
                d_model: 32,
                n_heads: 4,
                encoder_layers: 2,
                decoder_layers: 2,
                d_ff: 64,
                dropout: 0.0,
                max_len: 32,
                ..Default::default()
            },
            label_smoothing: 0.1,
            train: quick_training(300, 3e-3),
            beam: BeamConfig {
                beam_size: 2,
                max_length: 14,
                ..Default::default()
            },
            ..Default::default()
        };
        let (translator, out, acc) = train_and_translate(recipe, &train, &test)?;
        assert!(matches!(translator.model, Seq2SeqModel::Transformer(_)));
        assert!(acc > 0.8, "exact match {acc}: {:?}", texts(&out[..4]));
        Ok(())
    }
}
