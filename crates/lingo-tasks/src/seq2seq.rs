//! Fine-tuning an encoder–decoder for summarisation or translation, as `transformers`'
//! `run_summarization.py` / `run_translation.py` do with `Seq2SeqTrainer`: any sequence-to-sequence
//! folder Lingo loads — a Hugging Face T5, BART or Marian, or Lingo's own Transformer or recurrent
//! model — with its own tokenizer(s); sources get the recipe's prefix (T5's task prefixes) and are
//! cut to `max_length` tokens, targets become labels ending in the end token, cut to
//! `max_target_length`; the decoder is fed the labels shifted right behind its start token. Each
//! evaluation decodes the validation sources by beam search and scores them with ROUGE
//! (rouge-score's) and BLEU (sacreBLEU's). The output folder has the layout of the input, so
//! `lingo translate`/`summarize` and `transformers` load it.

use crate::error::{bad_input, to_candle, to_train, write_in, Result};
use crate::finetune::{hold_out, EpochOrder, FinetuneRecipe};
use crate::{Pretrained, Translator};
use candle_core::{Device, Tensor};
use lingo_generate::BeamConfig;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::hf::{LoadReport, StoredNames};
use lingo_models::Quantization;
use lingo_models::{Seq2SeqBatch, Seq2SeqLoss};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::{ParamGroup, Shard, TrainTask};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One encoded pair: source ids, labels (target ids ending in the end token), the target text.
pub struct Example {
    source: Vec<u32>,
    labels: Vec<u32>,
    reference: String,
}

/// Where a split's pairs come from: a JSON file (lines or an array) with the recipe's fields, a
/// `.tsv` file, or a source file with its line-aligned target file.
#[derive(Clone, Debug)]
pub struct PairFile {
    pub path: PathBuf,
    pub target: Option<PathBuf>,
}

impl PairFile {
    pub fn new(path: &Path, target: Option<&Path>) -> Self {
        PairFile {
            path: path.into(),
            target: target.map(Into::into),
        }
    }

    /// The (source, target) pairs and how many records were left out for an empty side.
    pub fn read(&self, recipe: &FinetuneRecipe) -> Result<(Vec<(String, String)>, usize)> {
        if self.target.is_none() && lingo_data::is_json(&self.path) {
            let fields = (recipe.source_field.as_str(), recipe.target_field.as_str());
            let (pairs, empty) = lingo_data::read_json_pairs(&self.path, fields)?;
            return Ok((pairs, empty.len()));
        }
        Ok((
            lingo_data::read_pairs(&self.path, self.target.as_deref())?,
            0,
        ))
    }
}

/// An encoder–decoder, its tokenizers and its encoded pairs, ready for the trainer.
pub struct Seq2SeqFinetune {
    pub recipe: FinetuneRecipe,
    /// What loading left out.
    pub report: LoadReport,
    /// Records of the training and validation files left out for an empty source or target.
    pub skipped: usize,
    translator: Translator,
    store: ParamStore,
    config: serde_json::Value,
    names: StoredNames,
    generation: Option<serde_json::Value>,
    /// The input folder, whose `recipe.json` (a Lingo model's decoding settings) is kept.
    model_dir: PathBuf,
    beam: BeamConfig,
    train: Vec<Example>,
    valid: Vec<Example>,
    order: EpochOrder,
    micro_batch: u64,
}

impl Seq2SeqFinetune {
    /// Loads the encoder–decoder in `model_dir` (the recipe's `dropout` replacing its own) and
    /// encodes the pairs of `train` and `valid` (without `valid`, 5% of `train`, drawn with the
    /// seed). The recipe's steps are resolved from its epochs.
    pub fn new(
        model_dir: &Path,
        train: &PairFile,
        valid: Option<&PairFile>,
        mut recipe: FinetuneRecipe,
    ) -> Result<Self> {
        if recipe.layer_lr_decay.is_some()
            || !recipe.freeze.is_empty()
            || recipe.unfreeze_every.is_some()
        {
            return Err(bad_input!(
                "layer_lr_decay, freeze and unfreeze_every apply to encoder fine-tuning; for an encoder-decoder use train.param_groups (patterns on parameter names)"
            ));
        }
        let options = LoadOptions {
            seed: recipe.train.seed,
            dropout: recipe.dropout,
            random_init: recipe.random_init,
            ..LoadOptions::default()
        };
        let pretrained = Pretrained::open(model_dir, &options)?;
        let (store, config, names, report, generation) = (
            pretrained.store.clone(),
            pretrained.config.clone(),
            pretrained.names(),
            pretrained.report.clone(),
            pretrained.generation.clone(),
        );
        let mut translator = Translator::from_pretrained(pretrained)?;
        translator.max_source_length = Some(source_limit(&translator, &recipe));
        let (mut train_pairs, mut skipped) = train.read(&recipe)?;
        let valid_pairs = match valid {
            Some(v) => {
                let (pairs, empty) = v.read(&recipe)?;
                skipped += empty;
                pairs
            }
            None => hold_out(&mut train_pairs, recipe.train.seed, &train.path)?,
        };
        let encode = |pairs: &[(String, String)]| -> Result<Vec<Example>> {
            pairs
                .iter()
                .map(|(s, t)| {
                    Ok(Example {
                        source: translator
                            .encode_source(&format!("{}{s}", recipe.source_prefix))?,
                        labels: translator.encode_target(t, recipe.max_target_length)?,
                        reference: t.clone(),
                    })
                })
                .collect()
        };
        let (train_examples, valid_examples) = (encode(&train_pairs)?, encode(&valid_pairs)?);
        recipe.resolve(train_examples.len());
        if matches!(translator.model, AutoModel::Bart(_)) {
            // transformers keeps BART's and Marian's `final_logits_bias` as a buffer: it never trains.
            recipe.train.param_groups.push(ParamGroup {
                pattern: "final_logits_bias".into(),
                weight_decay: None,
                lr_scale: Some(0.0),
                from_step: None,
            });
        }
        let mut beam = recipe.beam.clone().unwrap_or_else(|| BeamConfig {
            max_length: recipe.max_target_length,
            ..translator.beam.clone()
        });
        beam.max_length = beam.max_length.max(1);
        Ok(Seq2SeqFinetune {
            order: EpochOrder::new(recipe.train.seed),
            recipe,
            report,
            skipped,
            translator,
            store,
            config,
            names,
            generation,
            model_dir: model_dir.into(),
            beam,
            train: train_examples,
            valid: valid_examples,
            micro_batch: 0,
        })
    }

    /// Training and validation examples.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.valid.len())
    }

    fn batch(&self, examples: &[&Example]) -> candle_core::Result<Seq2SeqBatch> {
        let model = self.translator.seq2seq();
        let pairs: Vec<(&[u32], &[u32])> = examples
            .iter()
            .map(|e| (&e.source[..], &e.labels[..]))
            .collect();
        Seq2SeqBatch::new(&pairs, model.pad_id(), model.bos_id(), &Device::Cpu)
    }

    fn loss(&self, examples: &[&Example], ctx: &mut Ctx) -> candle_core::Result<(Tensor, usize)> {
        let batch = self.batch(examples)?;
        Ok((self.batch_loss(&batch, ctx)?, batch.target_tokens))
    }

    /// The mean loss per label token of a padded batch.
    fn batch_loss(&self, batch: &Seq2SeqBatch, ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let options = Seq2SeqLoss {
            label_smoothing: if ctx.train {
                self.recipe.label_smoothing
            } else {
                0.0
            },
            teacher_forcing: 1.0,
        };
        self.translator.seq2seq().loss(batch, &options, ctx)
    }

    /// ROUGE and BLEU of the validation sources decoded by beam search.
    pub fn scores(&self, batch_size: usize) -> Result<BTreeMap<String, f64>> {
        let sources: Vec<Vec<u32>> = self.valid.iter().map(|e| e.source.clone()).collect();
        let out = self
            .translator
            .translate_ids(&sources, &self.beam, batch_size)?;
        let predictions: Vec<String> = out.into_iter().map(|t| t.text).collect();
        let references: Vec<String> = self.valid.iter().map(|e| e.reference.clone()).collect();
        generation_metrics(&predictions, &references)
    }

    fn write_artifacts(&self, dir: &Path) -> Result<()> {
        write_in(
            dir,
            "config.json",
            serde_json::to_string_pretty(&self.config)?,
        )?;
        let t = &self.translator;
        if matches!(t.model, AutoModel::Transformer(_) | AutoModel::Rnn(_)) {
            t.source_tokenizer
                .save(&dir.join("source_tokenizer.json"))?;
            t.target_tokenizer
                .save(&dir.join("target_tokenizer.json"))?;
            let recipe = self.model_dir.join("recipe.json");
            if let Ok(text) = std::fs::read_to_string(&recipe) {
                write_in(dir, "recipe.json", text)?;
            }
        } else {
            t.source_tokenizer.save(&dir.join("tokenizer.json"))?;
        }
        if let Some(generation) = &self.generation {
            write_in(
                dir,
                "generation_config.json",
                serde_json::to_string_pretty(generation)?,
            )?;
        }
        write_in(
            dir,
            "finetune.json",
            serde_json::to_string_pretty(&self.recipe)?,
        )?;
        crate::pretrained::copy_tokenizer_files(&self.model_dir, dir)
    }
}

/// The recipe's `max_length`, or the model's positions where fewer.
fn source_limit(translator: &Translator, recipe: &FinetuneRecipe) -> usize {
    crate::translator::source_positions(&translator.model)
        .map_or(recipe.max_length, |m| m.min(recipe.max_length))
}

/// ROUGE-1/2/L/Lsum F-measures (rouge-score's, no stemming) and sacreBLEU's BLEU, under the keys
/// of `lingo metric rouge` and `lingo metric bleu`, and the mean prediction length in words.
pub fn generation_metrics(
    predictions: &[String],
    references: &[String],
) -> Result<BTreeMap<String, f64>> {
    let rouge = lingo_eval::corpus_rouge(predictions, references, false)?;
    let bleu = lingo_eval::corpus_bleu(predictions, &[references.to_vec()])
        .map_err(|e| bad_input!("bleu: {e}"))?;
    let words: usize = predictions
        .iter()
        .map(|p| p.split_whitespace().count())
        .sum();
    Ok(BTreeMap::from([
        ("rouge1".to_string(), rouge.rouge1),
        ("rouge2".to_string(), rouge.rouge2),
        ("rougeL".to_string(), rouge.rouge_l),
        ("rougeLsum".to_string(), rouge.rouge_lsum),
        ("bleu".to_string(), bleu.score),
        (
            "gen_len".to_string(),
            words as f64 / predictions.len().max(1) as f64,
        ),
    ]))
}

/// The metrics of `lingo evaluate seq2seq`: the model in `dir` decodes the sources of `data`
/// (with the recipe's prefix, fields and lengths) and is scored against their targets. Also
/// returns the predictions.
pub fn evaluate_seq2seq(
    dir: &Path,
    data: &PairFile,
    recipe: &FinetuneRecipe,
    batch_size: usize,
    quantize: Option<Quantization>,
) -> Result<(BTreeMap<String, f64>, Vec<String>)> {
    let options = LoadOptions {
        quantize,
        ..LoadOptions::default()
    };
    let mut translator = Translator::from_pretrained(Pretrained::open(dir, &options)?)?;
    translator.max_source_length = Some(source_limit(&translator, recipe));
    let (pairs, _) = data.read(recipe)?;
    let sources = pairs
        .iter()
        .map(|(s, _)| translator.encode_source(&format!("{}{s}", recipe.source_prefix)))
        .collect::<Result<Vec<_>>>()?;
    let beam = recipe.beam.clone().unwrap_or_else(|| BeamConfig {
        max_length: recipe.max_target_length.max(1),
        ..translator.beam.clone()
    });
    let out = translator.translate_ids(&sources, &beam, batch_size)?;
    let predictions: Vec<String> = out.into_iter().map(|t| t.text).collect();
    let references: Vec<String> = pairs.into_iter().map(|(_, t)| t).collect();
    Ok((generation_metrics(&predictions, &references)?, predictions))
}

impl TrainTask for Seq2SeqFinetune {
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
        let picks = self
            .order
            .batch(self.micro_batch, batch_size, self.train.len());
        let examples: Vec<&Example> = picks.iter().map(|&i| &self.train[i]).collect();
        self.loss(&examples, ctx)
    }

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
        lingo_train::trainer::shards_of(&picks, shards, |part| {
            let examples: Vec<&Example> = part.iter().map(|&i| &this.train[i]).collect();
            let batch = this.batch(&examples)?;
            let tokens = batch.target_tokens;
            let loss = move |ctx: &mut Ctx| this.batch_loss(&batch, ctx);
            Ok(Shard::mean(tokens, tokens, loss))
        })
    }

    /// The mean loss per target token over the validation pairs.
    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let all: Vec<&Example> = self.valid.iter().collect();
        crate::finetune::mean_loss(&all, batch_size, max_batches, |chunk| {
            self.loss(chunk, &mut Ctx::eval())
        })
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        self.scores(batch_size).map_err(to_candle)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": "seq2seq",
            "model": self.model_dir.display().to_string(),
            "max_length": self.recipe.max_length,
            "max_target_length": self.recipe.max_target_length,
            "source_prefix": self.recipe.source_prefix,
            "train_examples": self.train.len(),
        })
    }

    /// The weights in the input's layout (Hugging Face names), with its config.
    fn save_weights(&self, path: &Path) -> lingo_train::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        lingo_models::hf::save_folder(dir, &self.config, &self.store, &self.names)
            .map_err(|e| to_train(e.into()))
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.write_artifacts(dir).map_err(to_train)
    }
}
