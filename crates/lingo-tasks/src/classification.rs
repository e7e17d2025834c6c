//! Fine-tuning a pretrained BERT-family encoder to classify texts or text pairs (SST-2, MNLI, …),
//! or to score them (a float label: regression with a mean squared error, STS-B style), as
//! `transformers`' `*ForSequenceClassification` with its `Trainer` does: the checkpoint's own
//! tokenizer, a new head initialised from the run's seed, dropout as the checkpoint sets it, one
//! shuffled pass over the data per epoch, dynamic padding. The output folder is a Hugging Face
//! folder (`config.json` with `id2label`, `model.safetensors`, `tokenizer.json`).

use crate::finetune::{hold_out, id2label, EpochOrder, FinetuneRecipe};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, D};
use lingo_data::{collate, read_labelled, Encoded, LabelledText, TaskTokenizer, Tokenizer};
use lingo_eval::classification::sorted_labels;
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::bert::{BertModel, Head, LoadOptions};
use lingo_models::hf::{Checkpoint, LoadReport};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::TrainTask;
use std::collections::BTreeMap;
use std::path::Path;

/// What a model predicts: a class among `labels`, or a score (one label: regression).
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Class(u32),
    Score(f32),
}

struct Example {
    input: Encoded,
    target: Target,
}

/// A model, its tokenizer and its encoded data, ready for the trainer.
pub struct ClassifyTask {
    pub recipe: FinetuneRecipe,
    model: BertModel,
    store: ParamStore,
    config: serde_json::Value,
    tokenizer: Tokenizer,
    encoder: TaskTokenizer,
    labels: Vec<String>,
    train: Vec<Example>,
    valid: Vec<Example>,
    /// Index of the next micro-batch in the run, set by the trainer.
    micro_batch: u64,
    order: EpochOrder,
    /// The load report (new head weights, unused checkpoint tensors).
    pub report: LoadReport,
    source: String,
}

/// Whether the labels are scores: every one a number and at least one with a fraction.
fn is_regression(labels: &[&str]) -> bool {
    labels.iter().all(|l| l.parse::<f64>().is_ok()) && labels.iter().any(|l| l.contains('.'))
}

fn targets(
    data: &[LabelledText],
    labels: &[String],
    regression: bool,
    path: &Path,
) -> anyhow::Result<Vec<Target>> {
    data.iter()
        .map(|x| {
            if regression {
                let v = x.label.parse::<f32>().with_context(|| {
                    format!(
                        "{}:{}: label `{}` is not a number",
                        path.display(),
                        x.line,
                        x.label
                    )
                })?;
                return Ok(Target::Score(v));
            }
            match labels.iter().position(|l| *l == x.label) {
                Some(i) => Ok(Target::Class(i as u32)),
                None => bail!(
                    "{}:{}: label `{}` is not among the training labels ({})",
                    path.display(),
                    x.line,
                    x.label,
                    labels.join(", ")
                ),
            }
        })
        .collect()
}

impl ClassifyTask {
    /// Loads the checkpoint in `model_dir` with a sequence-classification head for the labels of
    /// `train_path`, and encodes both files. The recipe's steps are resolved from its epochs.
    pub fn new(
        model_dir: &Path,
        train_path: &Path,
        valid_path: Option<&Path>,
        mut recipe: FinetuneRecipe,
    ) -> anyhow::Result<Self> {
        let mut train_data = read_labelled(train_path)?;
        let valid_data = match valid_path {
            Some(path) => read_labelled(path)?,
            None => hold_out(&mut train_data, recipe.train.seed, train_path)?,
        };
        let valid_path = valid_path.unwrap_or(train_path);
        let raw: Vec<&str> = train_data.iter().map(|x| x.label.as_str()).collect();
        let regression = is_regression(&raw);
        let labels = if regression {
            vec!["LABEL_0".to_string()]
        } else {
            sorted_labels(raw.iter().copied())
        };
        if !regression && labels.len() < 2 {
            bail!(
                "{}: every example has the label `{}`; classification needs two or more",
                train_path.display(),
                labels[0]
            );
        }
        let train_targets = targets(&train_data, &labels, regression, train_path)?;
        let valid_targets = targets(&valid_data, &labels, regression, valid_path)?;

        let checkpoint = Checkpoint::open(model_dir, &Device::Cpu)?;
        let options = LoadOptions {
            head: Some(Head::SequenceClassification),
            labels: Some(labels.clone()),
            seed: recipe.train.seed,
            dropout: recipe.dropout,
        };
        let loaded = BertModel::load_with(&checkpoint, &Device::Cpu, &options)?;
        let tokenizer_path = model_dir.join("tokenizer.json");
        if !tokenizer_path.exists() {
            bail!(
                "{}: the model folder has no tokenizer.json",
                model_dir.display()
            );
        }
        let tokenizer = Tokenizer::load(&tokenizer_path)?;
        let positions = loaded.model.config.max_position_embeddings;
        if recipe.max_length > positions {
            bail!(
                "max_length {} is longer than the model's {positions} positions",
                recipe.max_length
            );
        }
        let encoder = TaskTokenizer::new(&tokenizer, recipe.max_length)?;
        let encode =
            |data: &[LabelledText], targets: Vec<Target>| -> anyhow::Result<Vec<Example>> {
                let inputs: Vec<(&str, Option<&str>)> = data
                    .iter()
                    .map(|x| (x.text.as_str(), x.text_pair.as_deref()))
                    .collect();
                Ok(encoder
                    .encode_all(&inputs)?
                    .into_iter()
                    .zip(targets)
                    .map(|(input, target)| Example { input, target })
                    .collect())
            };
        let train = encode(&train_data, train_targets)?;
        let valid = encode(&valid_data, valid_targets)?;
        recipe.resolve(train.len());
        let recipe_seed = recipe.train.seed;
        Ok(ClassifyTask {
            recipe,
            model: loaded.model,
            store: loaded.store,
            config: loaded.config,
            tokenizer,
            encoder,
            labels,
            train,
            valid,
            micro_batch: 0,
            order: EpochOrder::new(recipe_seed),
            report: loaded.report,
            source: model_dir.display().to_string(),
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    fn regression(&self) -> bool {
        self.labels.len() == 1
    }

    /// The model's outputs for `examples`: `[batch, labels]`.
    fn logits(&self, examples: &[&Example], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let inputs: Vec<&Encoded> = examples.iter().map(|e| &e.input).collect();
        let batch = collate(&inputs, self.encoder.pad_id, &Device::Cpu)?;
        Ok(self
            .model
            .forward_in(
                &batch.input_ids,
                Some(&batch.attention_mask),
                Some(&batch.token_type_ids),
                ctx,
            )?
            .output)
    }

    fn loss(&self, examples: &[&Example], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let logits = self.logits(examples, ctx)?;
        let device = logits.device().clone();
        if self.regression() {
            let scores: Vec<f32> = examples
                .iter()
                .map(|e| match e.target {
                    Target::Score(s) => s,
                    Target::Class(c) => c as f32,
                })
                .collect();
            let want = Tensor::from_vec(scores, examples.len(), &device)?;
            return (logits.squeeze(1)? - want)?.sqr()?.mean_all();
        }
        let classes: Vec<u32> = examples
            .iter()
            .map(|e| match e.target {
                Target::Class(c) => c,
                Target::Score(s) => s as u32,
            })
            .collect();
        let want = Tensor::from_vec(classes, examples.len(), &device)?;
        let opts = CrossEntropy {
            label_smoothing: self.recipe.label_smoothing,
            ..CrossEntropy::default()
        };
        cross_entropy(&logits, &want, opts)
    }

    /// Predicted labels (or scores) of the validation set, in order.
    pub fn predict_validation(&self, batch_size: usize) -> candle_core::Result<Vec<String>> {
        let examples: Vec<&Example> = self.valid.iter().collect();
        predict(&self.labels, &examples, batch_size, |ex, ctx| {
            self.logits(ex, ctx)
        })
    }
}

/// Predictions for `examples` in batches: the likeliest label, or the score for regression.
fn predict<'a>(
    labels: &[String],
    examples: &[&'a Example],
    batch_size: usize,
    logits: impl Fn(&[&'a Example], &mut Ctx) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Vec<String>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let l = logits(chunk, &mut Ctx::eval())?;
        if labels.len() == 1 {
            out.extend(
                l.squeeze(1)?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|s| s.to_string()),
            );
        } else {
            let best = l
                .argmax(D::Minus1)?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?;
            out.extend(best.iter().map(|&i| labels[i as usize].clone()));
        }
    }
    Ok(out)
}

fn reference(e: &Example, labels: &[String]) -> String {
    match e.target {
        Target::Class(c) => labels[c as usize].clone(),
        Target::Score(s) => s.to_string(),
    }
}

/// The metrics `lingo metric classification` prints, for predictions against references.
pub fn classification_metrics(
    predictions: &[String],
    references: &[String],
    regression: bool,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut m = BTreeMap::new();
    if regression {
        let floats = |v: &[String]| {
            v.iter()
                .map(|s| s.parse::<f64>().unwrap_or(f64::NAN))
                .collect::<Vec<_>>()
        };
        let r = lingo_eval::regression_report(&floats(predictions), &floats(references))?;
        m.insert("mse".into(), r.mse);
        m.insert("rmse".into(), r.rmse);
        m.insert("r2".into(), r.r2);
        return Ok(m);
    }
    let r = lingo_eval::classification_report(predictions, references)?;
    m.insert("accuracy".into(), r.accuracy);
    m.insert("macro_f1".into(), r.macro_f1);
    if let Some(f1) = r.f1 {
        m.insert("f1".into(), f1);
    }
    Ok(m)
}

impl TrainTask for ClassifyTask {
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
        let tokens = examples.iter().map(|e| e.input.ids.len()).sum();
        let loss = self.loss(&examples, ctx)?;
        Ok((loss, tokens))
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        let take = if max_batches == 0 {
            usize::MAX
        } else {
            max_batches
        };
        let all: Vec<&Example> = self.valid.iter().collect();
        let (mut total, mut count) = (0.0, 0usize);
        for chunk in all.chunks(batch_size).take(take) {
            let loss = self.loss(chunk, &mut Ctx::eval())?.to_scalar::<f32>()? as f64;
            total += loss * chunk.len() as f64;
            count += chunk.len();
        }
        Ok(total / count.max(1) as f64)
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        let predictions = self.predict_validation(batch_size)?;
        let references: Vec<String> = self
            .valid
            .iter()
            .map(|e| reference(e, &self.labels))
            .collect();
        classification_metrics(&predictions, &references, self.regression())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": "classify",
            "model": self.source,
            "labels": self.labels,
            "max_length": self.recipe.max_length,
            "train_examples": self.train.len(),
        })
    }

    fn save_artifacts(&self, dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&self.config)?;
        lingo_nn::io::write_atomic(&dir.join("config.json"), json.as_bytes())?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        Ok(())
    }
}

/// Scores a fine-tuned classifier folder on a labelled file: the metrics of
/// `lingo metric classification` (accuracy, precision/recall/F1 in every averaging, MCC, …).
pub fn evaluate_classifier(
    model_dir: &Path,
    data_path: &Path,
    max_length: usize,
    batch_size: usize,
) -> anyhow::Result<serde_json::Value> {
    let checkpoint = Checkpoint::open(model_dir, &Device::Cpu)?;
    let loaded = BertModel::load_with(&checkpoint, &Device::Cpu, &LoadOptions::default())?;
    if loaded.model.head != Head::SequenceClassification {
        bail!(
            "{}: not a sequence-classification model (its head is {:?})",
            model_dir.display(),
            loaded.model.head
        );
    }
    let labels = id2label(&loaded.config);
    let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json"))?;
    let max_length = max_length.min(loaded.model.config.max_position_embeddings);
    let encoder = TaskTokenizer::new(&tokenizer, max_length)?;
    let data = read_labelled(data_path)?;
    let regression = labels.len() == 1;
    let targets = targets(&data, &labels, regression, data_path)?;
    let inputs: Vec<(&str, Option<&str>)> = data
        .iter()
        .map(|x| (x.text.as_str(), x.text_pair.as_deref()))
        .collect();
    let examples: Vec<Example> = encoder
        .encode_all(&inputs)?
        .into_iter()
        .zip(targets)
        .map(|(input, target)| Example { input, target })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let model = &loaded.model;
    let predictions = predict(&labels, &refs, batch_size, |ex, ctx| {
        let inputs: Vec<&Encoded> = ex.iter().map(|e| &e.input).collect();
        let batch = collate(&inputs, encoder.pad_id, &Device::Cpu)?;
        Ok(model
            .forward_in(
                &batch.input_ids,
                Some(&batch.attention_mask),
                Some(&batch.token_type_ids),
                ctx,
            )?
            .output)
    })?;
    let references: Vec<String> = examples.iter().map(|e| reference(e, &labels)).collect();
    if regression {
        return Ok(serde_json::to_value(classification_metrics(
            &predictions,
            &references,
            true,
        )?)?);
    }
    Ok(serde_json::to_value(lingo_eval::classification_report(
        &predictions,
        &references,
    )?)?)
}
