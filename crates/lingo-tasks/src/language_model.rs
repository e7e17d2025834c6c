//! Language modelling: a GPT trained on one text file to predict the next token.
//!
//! Training writes a model folder: `config.json` (architecture), `tokenizer.json`, `model.safetensors`,
//! `recipe.json` (how it was trained), `checkpoint.safetensors` (to resume), `metrics.jsonl` and
//! `loss.png`. [`LanguageModel::load`] reads the folder back for generation. [`LmTask::finetune`]
//! continues training a pretrained causal LM (a Hugging Face GPT-2 folder or a Lingo one) on new
//! text, and saves it in the layout it came in.

use crate::error::{bad_input, to_train, write_in, Result};
use crate::Pretrained;
use candle_core::{Device, Tensor};
use lingo_data::{Split, TextDataset, Tokenizer, TokenizerKind};
use lingo_generate::SamplingConfig;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::hf::StoredNames;
use lingo_models::{config::read_json, Gpt, GptConfig, ModelConfig};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::{Shard, TrainConfig, TrainTask};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything that defines a language-model training run (the `--config` file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmRecipe {
    /// The model; `vocab_size` is filled in from the tokenizer.
    pub model: GptConfig,
    pub tokenizer: TokenizerKind,
    pub train: TrainConfig,
    /// Share of the text (by characters, from the end) held out for validation.
    pub validation_fraction: f64,
}

impl Default for LmRecipe {
    fn default() -> Self {
        LmRecipe {
            model: GptConfig {
                context_length: 64,
                d_model: 128,
                n_heads: 4,
                n_layers: 4,
                ..Default::default()
            },
            tokenizer: TokenizerKind::Char,
            train: TrainConfig::default(),
            validation_fraction: 0.1,
        }
    }
}

impl LmRecipe {
    /// Reads a recipe file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
}

/// A GPT, its tokenizer and its data, ready for the trainer.
pub struct LmTask {
    pub recipe: LmRecipe,
    pub tokenizer: Tokenizer,
    pub data: TextDataset,
    pub model: Gpt,
    params: ParamStore,
    /// Tokens per training window (the model's context when training from scratch).
    block: usize,
    /// A fine-tuned model saves back in the layout it came in (a Hugging Face GPT-2 as
    /// `GPT2LMHeadModel`): its config and the parameters' names there.
    pretrained: Option<(serde_json::Value, StoredNames)>,
    source: Option<String>,
}

impl LmTask {
    /// Tokenises `text` (training a tokenizer on it unless one is given), splits it, and builds a
    /// freshly initialised model.
    pub fn new(mut recipe: LmRecipe, text: &str, tokenizer: Option<Tokenizer>) -> Result<Self> {
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => Tokenizer::train(recipe.tokenizer, text)?,
        };
        recipe.model.vocab_size = tokenizer.vocab_size();
        recipe
            .model
            .validate()
            .map_err(|e| bad_input!("model config: {e}"))?;
        recipe
            .train
            .validate()
            .map_err(|e| bad_input!("training config: {e}"))?;
        let data = TextDataset::new(text, &tokenizer, recipe.validation_fraction)?;
        data.check_context(recipe.model.context_length)?;
        let params = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let model = Gpt::new(recipe.model.clone(), &params.root())?;
        Ok(LmTask {
            block: recipe.model.context_length,
            recipe,
            tokenizer,
            data,
            model,
            params,
            pretrained: None,
            source: None,
        })
    }

    /// Continues training the causal LM in `model_dir` (a Hugging Face GPT-2 folder or one `lingo
    /// train lm` wrote) on `train` text, validating on `valid` (or the last 5% of `train`), in
    /// windows of `recipe.max_length` tokens; `recipe.epochs` passes over the training tokens set
    /// the steps. The output folder has the layout of the input.
    pub fn finetune(
        model_dir: &Path,
        train: &str,
        valid: Option<&str>,
        recipe: &mut crate::FinetuneRecipe,
    ) -> Result<Self> {
        let options = LoadOptions {
            dropout: recipe.dropout,
            seed: recipe.train.seed,
            random_init: recipe.random_init,
            ..LoadOptions::default()
        };
        let pretrained = Pretrained::open(model_dir, &options)?;
        let names = pretrained.names();
        let AutoModel::Gpt(model) = pretrained.model else {
            return Err(bad_input!(
                "{}: `finetune lm` needs a causal language model (GPT-2 or a Lingo GPT), not a {}",
                model_dir.display(),
                pretrained.model.family()
            ));
        };
        let (params, tokenizer) = (pretrained.store, pretrained.tokenizer);
        let model_config = model.config.clone();
        let block = recipe.max_length.min(model_config.context_length);
        let data = match valid {
            Some(valid) => TextDataset {
                train: tokenizer.encode(train)?,
                validation: tokenizer.encode(valid)?,
            },
            None => TextDataset::new(train, &tokenizer, 0.05)?,
        };
        data.check_context(block)?;
        let windows = data.train.len().saturating_sub(1) / block;
        recipe.resolve(windows.max(1));
        Ok(LmTask {
            recipe: LmRecipe {
                model: model_config,
                tokenizer: TokenizerKind::Char,
                train: recipe.train.clone(),
                validation_fraction: 0.05,
            },
            tokenizer,
            data,
            model,
            params,
            block,
            pretrained: Some((pretrained.config, names)),
            source: Some(model_dir.display().to_string()),
        })
    }

    /// `rows` random training windows drawn with `rng`: inputs and next-token targets.
    fn draw(&self, rows: usize, rng: &mut LingoRng) -> candle_core::Result<(Tensor, Tensor)> {
        let t = self.block;
        let (x, y) = self.data.random_batch(Split::Train, rows, t, rng);
        Ok((
            Tensor::from_vec(x, (rows, t), &Device::Cpu)?,
            Tensor::from_vec(y, (rows, t), &Device::Cpu)?,
        ))
    }
}

/// The batch `x → y` (`[rows, t]` token ids) cut into at most `shards` runs of rows, each a
/// [`Shard`] computing `model`'s mean loss over its rows.
pub fn shards<'a>(
    model: &'a Gpt,
    x: &Tensor,
    y: &Tensor,
    shards: usize,
) -> candle_core::Result<Vec<Shard<'a>>> {
    let (b, t) = x.dims2()?;
    let mut parts = Vec::with_capacity(shards);
    for rows in lingo_train::trainer::shard_ranges(b, shards) {
        let len = rows.len();
        let (x, y) = (x.narrow(0, rows.start, len)?, y.narrow(0, rows.start, len)?);
        parts.push(Shard::mean(len * t, len * t, move |ctx: &mut Ctx| {
            model.loss(&x, &y, ctx)
        }));
    }
    Ok(parts)
}

impl TrainTask for LmTask {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let (x, y) = self.draw(batch_size, &mut ctx.rng)?;
        Ok((self.model.loss(&x, &y, ctx)?, batch_size * self.block))
    }

    fn train_shards(
        &mut self,
        batch_size: usize,
        n: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let (x, y) = self.draw(batch_size, &mut ctx.rng)?;
        Ok(Some(shards(&self.model, &x, &y, n)?))
    }

    fn pipeline_stage(
        &self,
        stage: usize,
        stages: usize,
    ) -> candle_core::Result<Option<Box<dyn lingo_nn::pipeline::PipelineStage + '_>>> {
        Ok(Some(Box::new(self.model.stage(
            &self.params,
            stage,
            stages,
        ))))
    }

    fn pipeline_inputs(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Tensor>>> {
        let (x, y) = self.draw(batch_size, &mut ctx.rng)?;
        Ok(Some(vec![x, y]))
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let take = if max_batches == 0 {
            usize::MAX
        } else {
            max_batches
        };
        let (loss, _) = validation_loss(&self.model, &self.data, self.block, batch_size, take)?;
        Ok(loss)
    }

    fn describe(&self) -> serde_json::Value {
        match &self.source {
            Some(source) => serde_json::json!({ "task": "lm_finetune", "model": source,
                "config": self.recipe.model, "block": self.block }),
            None => serde_json::json!({ "task": "language_model", "model": self.recipe.model,
                "tokenizer": self.recipe.tokenizer }),
        }
    }

    /// A fine-tuned model is written in the layout it came in (a GPT-2 as transformers'
    /// `GPT2LMHeadModel`: names, `[in, out]` Conv1D weights), with its config.
    fn save_weights(&self, path: &Path) -> lingo_train::Result<()> {
        match &self.pretrained {
            Some((config, names)) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                lingo_models::hf::save_folder(dir, config, &self.params, names)
                    .map_err(|e| to_train(e.into()))
            }
            None => Ok(self.params.save(path)?),
        }
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.write_artifacts(dir).map_err(to_train)
    }
}

impl LmTask {
    fn write_artifacts(&self, dir: &Path) -> Result<()> {
        if let Some((config, _)) = &self.pretrained {
            write_in(dir, "config.json", serde_json::to_string_pretty(config)?)?;
        } else {
            write_in(
                dir,
                "config.json",
                serde_json::to_string_pretty(&ModelConfig::Gpt(self.recipe.model.clone()))?,
            )?;
            write_in(
                dir,
                "recipe.json",
                serde_json::to_string_pretty(&self.recipe)?,
            )?;
        }
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        match &self.source {
            Some(source) => crate::pretrained::copy_tokenizer_files(Path::new(source), dir),
            None => Ok(()),
        }
    }
}

/// A trained language model loaded from its folder.
pub struct LanguageModel {
    pub model: Gpt,
    pub tokenizer: Tokenizer,
    /// The end-of-text token of a Hugging Face checkpoint (`eos_token_id`), where generation stops.
    pub eos: Option<u32>,
}

/// Mean next-token loss over the first `max_batches` batches of `batch_size` non-overlapping
/// `t`-token windows of the validation split, and how many windows it covered.
fn validation_loss(
    model: &Gpt,
    data: &TextDataset,
    t: usize,
    batch_size: usize,
    max_batches: usize,
) -> candle_core::Result<(f64, usize)> {
    use rayon::prelude::*;
    let starts = data.window_starts(Split::Validation, t);
    let chunks: Vec<&[usize]> = starts.chunks(batch_size.max(1)).take(max_batches).collect();
    // Batches on different threads at once (a small model's products are too small to split
    // well), summed in order so the result does not depend on the thread count.
    let losses = chunks
        .par_iter()
        .map(|chunk| {
            let (x, y) = data.windows(Split::Validation, chunk, t);
            let x = Tensor::from_vec(x, (chunk.len(), t), &Device::Cpu)?;
            let y = Tensor::from_vec(y, (chunk.len(), t), &Device::Cpu)?;
            let loss = model.loss(&x, &y, &mut Ctx::eval())?.to_scalar::<f32>()? as f64;
            Ok(loss * chunk.len() as f64)
        })
        .collect::<candle_core::Result<Vec<f64>>>()?;
    let total: f64 = losses.iter().sum();
    let count: usize = chunks.iter().map(|c| c.len()).sum();
    Ok((total / count.max(1) as f64, count))
}

/// A language model's score on a text: mean next-token cross-entropy over every non-overlapping
/// window of the model's context, as `lingo train lm` validates.
#[derive(Clone, Debug, Serialize)]
pub struct LmScore {
    /// Nats per token.
    pub loss: f64,
    pub perplexity: f64,
    pub windows: usize,
    pub tokens: usize,
}

impl LanguageModel {
    /// Scores the model on `text` — on its last `validation_fraction` of characters, the split
    /// `lingo train lm` validated on, or on all of it with 0 — in batches of `batch_size`
    /// context-length windows.
    pub fn evaluate(
        &self,
        text: &str,
        validation_fraction: f64,
        batch_size: usize,
    ) -> Result<LmScore> {
        let t = self.model.config.context_length;
        let data = if validation_fraction == 0.0 {
            TextDataset {
                train: Vec::new(),
                validation: self.tokenizer.encode(text)?,
            }
        } else {
            TextDataset::new(text, &self.tokenizer, validation_fraction)?
        };
        let (loss, windows) = validation_loss(&self.model, &data, t, batch_size, usize::MAX)?;
        if windows == 0 {
            return Err(bad_input!(
                "the text gives {} tokens to score, fewer than one window of {} (the model's context plus one)",
                data.validation.len(),
                t + 1
            ));
        }
        Ok(LmScore {
            loss,
            perplexity: loss.exp(),
            windows,
            tokens: windows * t,
        })
    }

    /// Loads a folder written by `lingo train lm` (or `lingo finetune lm`), or a Hugging Face
    /// GPT-2 folder with its tokenizer.json.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_pretrained(Pretrained::open(dir, &LoadOptions::default())?)
    }

    /// The causal LM of a loaded model folder.
    pub fn from_pretrained(pretrained: Pretrained) -> Result<Self> {
        let eos = pretrained
            .generation_setting("eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|e| e as u32);
        match pretrained.model {
            AutoModel::Gpt(model) => Ok(LanguageModel {
                model,
                tokenizer: pretrained.tokenizer,
                eos,
            }),
            other => Err(bad_input!(
                "{}: not a causal language model but a {}",
                pretrained.dir.display(),
                other.family()
            )),
        }
    }

    /// The most likely continuation of `prompt` by beam search (`cfg.max_length` new tokens at
    /// most), stopping at the model's end-of-text token unless `ignore_eos`.
    pub fn generate_beam(
        &self,
        prompt: &str,
        cfg: &lingo_generate::BeamConfig,
        ignore_eos: bool,
    ) -> Result<String> {
        let ids = self.tokenizer.encode(prompt)?;
        let eos = self.eos.filter(|_| !ignore_eos);
        let best = lingo_generate::beam_search_lm(&self.model, &ids, eos, cfg)?;
        let mut tokens = best
            .into_iter()
            .next()
            .map(|h| h.tokens)
            .unwrap_or_default();
        if tokens.last().is_some_and(|&t| Some(t) == eos) {
            tokens.pop();
        }
        Ok(self.tokenizer.decode(&tokens)?)
    }

    /// Continues `prompt`, passing each new piece of text to `on_text` as soon as it is decoded.
    pub fn generate(
        &self,
        prompt: &str,
        cfg: &SamplingConfig,
        rng: &mut LingoRng,
        mut on_text: impl FnMut(&str),
    ) -> Result<String> {
        let ids = self.tokenizer.encode(prompt)?;
        if ids.is_empty() {
            return Err(bad_input!(
                "the prompt is empty: give at least one character"
            ));
        }
        let mut generated: Vec<u32> = Vec::new();
        let mut shown = 0;
        let mut decode_error = None;
        lingo_generate::generate(&self.model, &ids, cfg, rng, |id| {
            generated.push(id);
            // Decode everything so far and show the new suffix: a byte-level token may complete a
            // character only together with the next one.
            match self.tokenizer.decode(&generated) {
                Ok(text)
                    if text.len() > shown
                        && text.is_char_boundary(shown)
                        && !text.ends_with('\u{FFFD}') =>
                {
                    on_text(&text[shown..]);
                    shown = text.len();
                }
                Ok(_) => {}
                Err(e) => decode_error = Some(e),
            }
        })?;
        if let Some(e) = decode_error {
            return Err(e.into());
        }
        Ok(self.tokenizer.decode(&generated)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingo_data::Grammar;
    use lingo_train::{AdamWConfig, OptimizerConfig, Schedule, ScheduleKind, Trainer};

    fn recipe(steps: usize) -> LmRecipe {
        LmRecipe {
            model: GptConfig {
                context_length: 16,
                d_model: 32,
                n_heads: 2,
                n_layers: 2,
                dropout: 0.1,
                ..Default::default()
            },
            tokenizer: TokenizerKind::Char,
            train: TrainConfig {
                steps,
                batch_size: 4,
                grad_accum: 2,
                optimizer: OptimizerConfig::AdamW(AdamWConfig {
                    lr: 3e-3,
                    weight_decay: 0.1,
                    ..Default::default()
                }),
                schedule: Schedule {
                    kind: ScheduleKind::Cosine,
                    warmup_steps: 2,
                    min_lr: 1e-4,
                    ..Default::default()
                },
                eval_every: 3,
                eval_batches: 2,
                checkpoint_every: 100,
                ..Default::default()
            },
            validation_fraction: 0.1,
        }
    }

    fn losses(dir: &Path) -> Vec<String> {
        // Everything but wall-clock fields must match.
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("elapsed_s");
                o.remove("tokens_per_sec");
                v.to_string()
            })
            .collect()
    }

    #[test]
    fn interrupted_and_resumed_run_equals_uninterrupted_run() -> anyhow::Result<()> {
        let text = Grammar::corpus(300, 3);
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));

        let mut task = LmTask::new(recipe(8), &text, None)?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), &a);
        trainer.progress = false;
        let full = trainer.run(&mut task, false)?;
        assert_eq!(full.steps, 8);

        let mut task = LmTask::new(recipe(8), &text, None)?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), &b);
        trainer.progress = false;
        trainer.stop_after = Some(5);
        let first = trainer.run(&mut task, false)?;
        assert!(first.interrupted && first.steps == 5);
        // A fresh process: new task, new trainer, weights and state only from the checkpoint.
        let tok = Tokenizer::load(&b.join("tokenizer.json"))?;
        let mut task = LmTask::new(recipe(8), &text, Some(tok))?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), &b);
        trainer.progress = false;
        let resumed = trainer.run(&mut task, true)?;
        assert_eq!(resumed.steps, 8);

        assert_eq!(losses(&a), losses(&b));
        assert_eq!(
            std::fs::read(a.join("model.safetensors"))?,
            std::fs::read(b.join("model.safetensors"))?
        );

        // The folder loads for generation, and sampling is reproducible by seed.
        let lm = LanguageModel::load(&b)?;
        let cfg = SamplingConfig {
            max_new_tokens: 20,
            ..Default::default()
        };
        let one = lm.generate("the ", &cfg, &mut LingoRng::new(5), |_| {})?;
        let two = lm.generate("the ", &cfg, &mut LingoRng::new(5), |_| {})?;
        assert_eq!(one, two);
        assert!(!one.is_empty());
        // Beam search of one beam is greedy decoding.
        let beam = lingo_generate::BeamConfig {
            beam_size: 1,
            max_length: 10,
            ..Default::default()
        };
        let greedy = lm.generate(
            "the ",
            &SamplingConfig::greedy(10),
            &mut LingoRng::new(0),
            |_| {},
        )?;
        assert_eq!(lm.generate_beam("the ", &beam, false)?, greedy);
        let wide = lingo_generate::BeamConfig {
            beam_size: 4,
            ..beam
        };
        assert_eq!(lm.generate_beam("the ", &wide, false)?.chars().count(), 10);
        Ok(())
    }

    /// Trains `recipe` in a pool of `threads` threads: the metrics (no wall-clock fields) and
    /// the weights.
    fn train_in_pool(recipe: LmRecipe, threads: usize) -> anyhow::Result<(Vec<String>, Vec<u8>)> {
        let text = Grammar::corpus(300, 3);
        let dir = tempfile::tempdir()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        pool.install(|| -> anyhow::Result<()> {
            let mut task = LmTask::new(recipe, &text, None)?;
            let mut trainer = Trainer::new(task.recipe.train.clone(), dir.path());
            trainer.progress = false;
            trainer.run(&mut task, false)?;
            Ok(())
        })?;
        let weights = std::fs::read(dir.path().join("model.safetensors"))?;
        Ok((losses(dir.path()), weights))
    }

    fn train_losses(metrics: &[String]) -> Vec<f64> {
        metrics
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
            .collect()
    }

    #[test]
    fn data_parallel_shards_match_one_piece_and_not_the_thread_count() -> anyhow::Result<()> {
        // Without dropout, shards compute the same losses as the whole micro-batch, on the same
        // data (the shards' dropout streams do not draw from the run's RNG).
        let mut r = recipe(6);
        r.model.dropout = 0.0;
        let (whole, _) = train_in_pool(r.clone(), 2)?;
        r.train.data_parallel = 3;
        let (sharded, _) = train_in_pool(r, 2)?;
        let (a, b) = (train_losses(&whole), train_losses(&sharded));
        assert_eq!(a.len(), 6);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5 * x.abs(), "{a:?} vs {b:?}");
        }
        // With dropout, each shard draws its own stream: one thread or two, the same run, bit
        // for bit.
        let mut r = recipe(6);
        r.train.data_parallel = 2;
        let one = train_in_pool(r.clone(), 1)?;
        let two = train_in_pool(r.clone(), 2)?;
        assert_eq!(one, two);
        r.train.data_parallel = 0;
        assert!(r.train.validate().unwrap_err().contains("data_parallel"));
        Ok(())
    }

    #[test]
    fn training_learns_the_grammar() -> anyhow::Result<()> {
        let text = Grammar::corpus(2000, 4);
        let mut r = recipe(400);
        r.model.dropout = 0.0;
        r.model.d_model = 48;
        r.train.batch_size = 16;
        r.train.grad_accum = 1;
        r.train.eval_every = 400;
        r.model.context_length = 32;
        r.train.eval_batches = 0;
        let mut task = LmTask::new(r, &text, None)?;
        let dir = tempfile::tempdir()?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), dir.path());
        trainer.progress = false;
        let report = trainer.run(&mut task, false)?;
        // Uniform over ~30 characters is ln(30) ≈ 3.4 nats; the grammar's entropy is far lower.
        let val = report.val_loss.unwrap();
        assert!(val < 0.9, "validation loss {val}");
        // The saved folder scores what training validated, and close to it in int8.
        let lm = LanguageModel::load(dir.path())?;
        let score = lm.evaluate(&text, 0.1, 16)?;
        assert!((score.loss - val).abs() < 1e-5, "{} vs {val}", score.loss);
        assert!((score.perplexity - val.exp()).abs() < 1e-4);
        let options = LoadOptions {
            quantize: Some(lingo_models::Quantization::Int8Dynamic),
            ..LoadOptions::default()
        };
        let int8 = LanguageModel::from_pretrained(Pretrained::open(dir.path(), &options)?)?;
        let int8_loss = int8.evaluate(&text, 0.1, 16)?.loss;
        assert!(int8_loss != score.loss && (int8_loss / score.loss - 1.0).abs() < 0.02);
        assert!(lm.evaluate("too short", 0.0, 16).is_err());
        Ok(())
    }

    #[test]
    fn resume_without_checkpoint_and_mismatched_model_are_errors() -> anyhow::Result<()> {
        let text = Grammar::corpus(300, 3);
        let dir = tempfile::tempdir()?;
        let mut task = LmTask::new(recipe(2), &text, None)?;
        let mut trainer = Trainer::new(task.recipe.train.clone(), dir.path());
        trainer.progress = false;
        let err = trainer.run(&mut task, true).unwrap_err().to_string();
        assert!(err.contains("no checkpoint"), "{err}");
        trainer.run(&mut task, false)?;
        let mut other = recipe(2);
        other.model.d_model = 64;
        let mut task = LmTask::new(other, &text, None)?;
        let err = trainer.run(&mut task, true).unwrap_err().to_string();
        assert!(err.contains("different model"), "{err}");
        Ok(())
    }

    #[test]
    fn short_corpus_and_bad_recipe_are_clear_errors() {
        let err = LmTask::new(recipe(1), "tiny text", None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("fewer than the context length"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipe.json");
        std::fs::write(&path, r#"{"model": {"d_model": 64, "n_head": 4}}"#).unwrap();
        let err = LmRecipe::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("recipe.json") && err.contains("unknown field `n_head`"),
            "{err}"
        );
    }
}
