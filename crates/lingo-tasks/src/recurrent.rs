//! Training recurrent classifiers from scratch: a word tokenizer learnt from the training texts,
//! a (bi)LSTM/GRU/RNN with pooling ([`RnnClassifier`]), one shuffled pass over the data per epoch,
//! accuracy and F1 at each evaluation. The output folder holds `config.json` (`model_type`
//! `lingo-rnn-classifier`, the architecture and `id2label`), `tokenizer.json`,
//! `model.safetensors` and `recipe.json`; [`RnnClassifierPipeline::load`] reads it back.

use crate::error::{bad_input, io, to_candle, to_train, Result};
use crate::finetune::EpochOrder;
use candle_core::{Device, Tensor};
use lingo_data::{LabelledText, Tokenizer, TokenizerKind};
use lingo_eval::classification::{classification_report, sorted_labels};
use lingo_models::config::read_json;
use lingo_models::{RnnClassifier, RnnClassifierConfig};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::{TrainConfig, TrainTask};
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
    pub train: TrainConfig,
}

impl Default for RnnClassifyRecipe {
    fn default() -> Self {
        RnnClassifyRecipe {
            model: RnnClassifierConfig::default(),
            vocab_size: 20_000,
            max_length: 128,
            epochs: Some(3),
            train: TrainConfig::default(),
        }
    }
}

impl RnnClassifyRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
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
        let index: BTreeMap<&str, u32> = (labels.iter())
            .enumerate()
            .map(|(i, l)| (l.as_str(), i as u32))
            .collect();
        let encode_all = |data: &[LabelledText]| -> Result<Vec<(Vec<u32>, u32)>> {
            data.iter()
                .map(|e| {
                    let label = *index.get(e.label.as_str()).ok_or_else(|| {
                        bad_input!(
                            "line {}: label `{}` is not among the training labels ({})",
                            e.line,
                            e.label,
                            labels.join(", ")
                        )
                    })?;
                    Ok((encode(&tokenizer, &e.text, recipe.max_length)?, label))
                })
                .collect()
        };
        let (train, valid) = (encode_all(train)?, encode_all(valid)?);
        recipe.model.vocab_size = tokenizer.vocab_size();
        recipe.model.pad_id = tokenizer.pad_id();
        recipe.model.num_labels = labels.len();
        if let Some(epochs) = recipe.epochs {
            let per_epoch = train.len().div_ceil(recipe.train.batch_size.max(1));
            recipe.train.steps = (per_epoch * epochs).div_ceil(recipe.train.grad_accum.max(1));
        }
        let store = ParamStore::new(recipe.train.seed, &Device::Cpu);
        let model = RnnClassifier::new(recipe.model.clone(), &store.root())?;
        Ok(RnnClassifyTask {
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
        let write = |file: &str, text: String| {
            let path = dir.join(file);
            lingo_nn::io::write_atomic(&path, text.as_bytes()).map_err(io(&path))
        };
        let config = SavedConfig {
            model_type: MODEL_TYPE.into(),
            model: self.recipe.model.clone(),
            id2label: (self.labels.iter().enumerate())
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
        };
        write("config.json", serde_json::to_string_pretty(&config)?)?;
        write("recipe.json", serde_json::to_string_pretty(&self.recipe)?)?;
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

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let take = if max_batches == 0 {
            usize::MAX
        } else {
            max_batches
        };
        let all: Vec<&(Vec<u32>, u32)> = self.valid.iter().collect();
        let (mut total, mut count) = (0.0, 0usize);
        for chunk in all.chunks(batch_size.max(1)).take(take) {
            let loss = self.loss(chunk, &mut Ctx::eval())?;
            total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            count += chunk.len();
        }
        Ok(total / count.max(1) as f64)
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

    /// The label of each text and its probability.
    pub fn classify(&self, texts: &[&str], batch_size: usize) -> Result<Vec<(String, f32)>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size.max(1)) {
            let ids = chunk
                .iter()
                .map(|t| encode(&self.tokenizer, t, self.max_length))
                .collect::<Result<Vec<_>>>()?;
            let sentences: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
            let (best, logits) = self.model.predict(&sentences)?;
            let probs = lingo_kernels::softmax(&logits)?.to_vec2::<f32>()?;
            for (b, p) in best.iter().zip(probs) {
                out.push((self.labels[*b as usize].clone(), p[*b as usize]));
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
