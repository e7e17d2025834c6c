//! Training a sequence-to-sequence model from scratch — Lingo's recurrent encoder–decoder or the
//! original Transformer — on pairs of sentences, with tokenizers trained on them: pairs in, a model
//! folder out, which [`crate::Translator`] loads and decodes with beam search.
//!
//! A model folder holds `config.json` (`"model_type": "lingo-rnn-seq2seq"` or
//! `"lingo-transformer"`), `source_tokenizer.json`, `target_tokenizer.json`, `model.safetensors`,
//! `recipe.json`, `checkpoint.safetensors`, `metrics.jsonl` and `loss.png`.

use crate::error::{bad_input, to_train, write_in, Result};
use candle_core::{Device, Tensor};
use lingo_data::{Tokenizer, TokenizerKind};
use lingo_generate::BeamConfig;
use lingo_models::auto::AutoModel;
use lingo_models::transformer::{Transformer, TransformerConfig};
use lingo_models::{config::read_json, ModelConfig, RnnSeq2Seq, RnnSeq2SeqConfig};
use lingo_models::{Seq2SeqBatch, Seq2SeqLoss};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::{Shard, TrainConfig, TrainTask};
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
    /// Training pairs with more tokens than this on either side (the target with its end token)
    /// are skipped.
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
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
}

/// Source ids, and the target's ids followed by the end token (the labels).
type IdPair = (Vec<u32>, Vec<u32>);

/// A seq2seq model, its tokenizers and its tokenised data, ready for the trainer.
pub struct Seq2SeqTask {
    pub recipe: Seq2SeqRecipe,
    pub source_tokenizer: Tokenizer,
    pub target_tokenizer: Tokenizer,
    pub train: Vec<IdPair>,
    pub validation: Vec<IdPair>,
    /// The recurrent model or the Transformer.
    pub model: AutoModel,
    params: ParamStore,
    /// Indices of `train` by (target length, source length), ties shuffled: for `by_length` batches.
    by_length: Vec<usize>,
}

fn check_specials(tok: &Tokenizer, side: &str) -> Result<()> {
    for (i, s) in SPECIALS.iter().enumerate() {
        if tok.token_to_id(s) != Some(i as u32) {
            return Err(bad_input!("the {side} tokenizer must have {s} at id {i}"));
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
    ) -> Result<Self> {
        if train.is_empty() || validation.is_empty() {
            return Err(bad_input!(
                "need at least one training and one validation pair (got {} and {})",
                train.len(),
                validation.len()
            ));
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
        .map_err(|e| bad_input!("model config: {e}"))?;
        recipe
            .train
            .validate()
            .map_err(|e| bad_input!("training config: {e}"))?;
        let encode = |pairs: &[(String, String)]| -> Result<Vec<IdPair>> {
            let mut out = Vec::with_capacity(pairs.len());
            for (i, (s, t)) in pairs.iter().enumerate() {
                let (s, mut t) = (source_tokenizer.encode(s)?, target_tokenizer.encode(t)?);
                if s.is_empty() {
                    return Err(bad_input!("pair {}: the source is empty", i + 1));
                }
                t.push(EOS);
                if s.len() <= recipe.max_length && t.len() <= recipe.max_length {
                    out.push((s, t));
                }
            }
            Ok(out)
        };
        let train_ids = encode(train)?;
        let validation_ids = encode(validation)?;
        if train_ids.is_empty() {
            return Err(bad_input!(
                "every training pair is longer than max_length {}",
                recipe.max_length
            ));
        }
        let mut tie_break = LingoRng::new(recipe.train.seed).fork(0xba7c);
        let mut by_length: Vec<(usize, usize, u64, usize)> = (train_ids.iter().enumerate())
            .map(|(i, (s, t))| (t.len(), s.len(), tie_break.next_u64(), i))
            .collect();
        by_length.sort_unstable();
        let by_length = by_length.into_iter().map(|k| k.3).collect();
        let params = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let model = match recipe.arch {
            Arch::Rnn => AutoModel::Rnn(RnnSeq2Seq::new(recipe.model.clone(), &params.root())?),
            Arch::Transformer => AutoModel::Transformer(Transformer::new(
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

    /// The loss of a batch: teacher forcing (or scheduled sampling) for the RNN, label-smoothed
    /// cross-entropy for both — in training; plain cross-entropy with the reference fed in
    /// evaluation.
    fn loss(&self, batch: &Seq2SeqBatch, ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let options = match ctx.train {
            true => Seq2SeqLoss {
                label_smoothing: self.recipe.label_smoothing,
                teacher_forcing: self.recipe.teacher_forcing,
            },
            false => Seq2SeqLoss::default(),
        };
        let model = self
            .model
            .as_seq2seq()
            .expect("built as an encoder-decoder");
        model.loss(batch, &options, ctx)
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

    /// A padded batch of `pairs`.
    fn batch(&self, pairs: &[&IdPair]) -> candle_core::Result<Seq2SeqBatch> {
        let pairs: Vec<(&[u32], &[u32])> = pairs.iter().map(|p| (&p.0[..], &p.1[..])).collect();
        Seq2SeqBatch::new(&pairs, PAD, BOS, &Device::Cpu)
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
        let batch = self.batch(&picks)?;
        Ok((self.loss(&batch, ctx)?, batch.target_tokens))
    }

    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let picks = self.draw(batch_size, &mut ctx.rng);
        let this = &*self;
        lingo_train::trainer::shards_of(&picks, shards, |part| {
            let batch = this.batch(part)?;
            let tokens = batch.target_tokens;
            let loss = move |ctx: &mut Ctx| this.loss(&batch, ctx);
            Ok(Shard::mean(tokens, tokens, loss))
        })
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let refs: Vec<&IdPair> = self.validation.iter().collect();
        crate::finetune::mean_loss(&refs, batch_size, max_batches, |chunk| {
            let batch = self.batch(chunk)?;
            Ok((self.loss(&batch, &mut Ctx::eval())?, batch.target_tokens))
        })
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

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.write_artifacts(dir).map_err(to_train)
    }
}

impl Seq2SeqTask {
    fn write_artifacts(&self, dir: &Path) -> Result<()> {
        let config = match self.recipe.arch {
            Arch::Rnn => ModelConfig::RnnSeq2Seq(self.recipe.model.clone()),
            Arch::Transformer => ModelConfig::Transformer(self.recipe.transformer.clone()),
        };
        write_in(dir, "config.json", serde_json::to_string_pretty(&config)?)?;
        write_in(
            dir,
            "recipe.json",
            serde_json::to_string_pretty(&self.recipe)?,
        )?;
        self.source_tokenizer
            .save(&dir.join("source_tokenizer.json"))?;
        self.target_tokenizer
            .save(&dir.join("target_tokenizer.json"))?;
        Ok(())
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
    use crate::{Translation, Translator};
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
        assert!(matches!(translator.model, AutoModel::Transformer(_)));
        assert!(acc > 0.8, "exact match {acc}: {:?}", texts(&out[..4]));
        Ok(())
    }
}
