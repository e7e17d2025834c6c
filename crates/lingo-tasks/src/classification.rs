//! Fine-tuning a pretrained BERT-family encoder to classify texts or text pairs (SST-2, MNLI, …),
//! or to score them (a float label: regression with a mean squared error, STS-B style), as
//! `transformers`' `*ForSequenceClassification` with its `Trainer` does: the checkpoint's own
//! tokenizer, a new head initialised from the run's seed, dropout as the checkpoint sets it, one
//! shuffled pass over the data per epoch, dynamic padding. The output folder is a Hugging Face
//! folder (`config.json` with `id2label`, `model.safetensors`, `tokenizer.json`).

use crate::error::{bad_input, Result};
use crate::finetune::{hold_out, Encodable, Finetune, FinetuneRecipe, Objective, TaskModel};
use candle_core::{DType, Tensor, D};
use lingo_data::{read_labelled, Encoded, LabelledText, TaskTokenizer};
use lingo_eval::classification::sorted_labels;
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::bert::Head;
use lingo_models::Quantization;
use std::collections::BTreeMap;
use std::path::Path;

/// What a model predicts: a class among `labels`, or a score (one label: regression).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Class(u32),
    Score(f32),
}

pub struct Example {
    input: Encoded,
    target: Target,
}

impl Encodable for Example {
    fn input(&self) -> &Encoded {
        &self.input
    }
}

/// Sequence classification, or regression when there is one label.
pub struct Classification {
    regression: bool,
}

/// Fine-tuning for sequence classification.
pub type ClassifyTask = Finetune<Classification>;

/// Whether the labels are scores: every one a number and at least one with a fraction.
fn is_regression(labels: &[&str]) -> bool {
    labels.iter().all(|l| l.parse::<f64>().is_ok()) && labels.iter().any(|l| l.contains('.'))
}

fn target(x: &LabelledText, labels: &[String], regression: bool, path: &Path) -> Result<Target> {
    if regression {
        let v = x.label.parse::<f32>().map_err(|_| {
            bad_input!(
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
        None => Err(bad_input!(
            "{}:{}: label `{}` is not among the training labels ({})",
            path.display(),
            x.line,
            x.label,
            labels.join(", ")
        )),
    }
}

/// Encodes `data` with its targets; an unknown label names the file and line.
fn encode(
    encoder: &TaskTokenizer,
    data: &[LabelledText],
    labels: &[String],
    regression: bool,
    path: &Path,
) -> Result<Vec<Example>> {
    let targets = data
        .iter()
        .map(|x| target(x, labels, regression, path))
        .collect::<Result<Vec<_>>>()?;
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
}

impl Finetune<Classification> {
    /// Loads the checkpoint in `model_dir` with a sequence-classification head for the labels of
    /// `train_path` and encodes both files (without `valid_path`, 5% of the training data is held
    /// out). The recipe's steps are resolved from its epochs.
    pub fn new(
        model_dir: &Path,
        train_path: &Path,
        valid_path: Option<&Path>,
        recipe: FinetuneRecipe,
    ) -> Result<Self> {
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
            return Err(bad_input!(
                "{}: every example has the label `{}`; classification needs two or more",
                train_path.display(),
                labels[0]
            ));
        }
        let for_head = labels.clone();
        Finetune::load(
            model_dir,
            Head::SequenceClassification,
            for_head,
            recipe,
            |enc| {
                let train = encode(enc, &train_data, &labels, regression, train_path)?;
                let valid = encode(enc, &valid_data, &labels, regression, valid_path)?;
                Ok((Classification { regression }, train, valid))
            },
        )
    }
}

impl Objective for Classification {
    type Example = Example;
    /// The predicted label, or the score as text for regression.
    type Prediction = String;
    const TASK: &'static str = "classify";

    fn loss(
        &self,
        logits: &Tensor,
        examples: &[&Example],
        recipe: &FinetuneRecipe,
    ) -> candle_core::Result<Tensor> {
        let device = logits.device();
        if self.regression {
            let scores: Vec<f32> = examples
                .iter()
                .map(|e| match e.target {
                    Target::Score(s) => s,
                    Target::Class(c) => c as f32,
                })
                .collect();
            let want = Tensor::from_vec(scores, examples.len(), device)?;
            return (logits.squeeze(1)? - want)?.sqr()?.mean_all();
        }
        let classes: Vec<u32> = examples
            .iter()
            .map(|e| match e.target {
                Target::Class(c) => c,
                Target::Score(s) => s as u32,
            })
            .collect();
        let want = Tensor::from_vec(classes, examples.len(), device)?;
        let opts = CrossEntropy {
            label_smoothing: recipe.label_smoothing,
            ..CrossEntropy::default()
        };
        cross_entropy(logits, &want, opts)
    }

    fn predict(
        &self,
        logits: &Tensor,
        _examples: &[&Example],
        labels: &[String],
    ) -> candle_core::Result<Vec<String>> {
        if self.regression {
            return Ok(logits
                .squeeze(1)?
                .to_vec1::<f32>()?
                .iter()
                .map(|s| s.to_string())
                .collect());
        }
        let best = logits
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?;
        Ok(best.iter().map(|&i| labels[i as usize].clone()).collect())
    }

    fn score(
        &self,
        predictions: &[String],
        examples: &[Example],
        labels: &[String],
    ) -> Result<BTreeMap<String, f64>> {
        let references = references(examples, labels);
        let mut m = BTreeMap::new();
        if self.regression {
            let r = lingo_eval::regression_report(&floats(predictions), &floats(&references))?;
            m.insert("mse".into(), r.mse);
            m.insert("rmse".into(), r.rmse);
            m.insert("r2".into(), r.r2);
            return Ok(m);
        }
        let r = lingo_eval::classification_report(predictions, &references)?;
        m.insert("accuracy".into(), r.accuracy);
        m.insert("macro_f1".into(), r.macro_f1);
        if let Some(f1) = r.f1 {
            m.insert("f1".into(), f1);
        }
        Ok(m)
    }
}

fn references(examples: &[Example], labels: &[String]) -> Vec<String> {
    examples
        .iter()
        .map(|e| match e.target {
            Target::Class(c) => labels[c as usize].clone(),
            Target::Score(s) => s.to_string(),
        })
        .collect()
}

fn floats(v: &[String]) -> Vec<f64> {
    v.iter()
        .map(|s| s.parse::<f64>().unwrap_or(f64::NAN))
        .collect()
}

/// Scores a fine-tuned classifier folder on a labelled file: the metrics of
/// `lingo metric classification` (accuracy, precision/recall/F1 in every averaging, MCC, …;
/// MSE, MAE, RMSE, R² for a regression head).
pub fn evaluate_classifier(
    model_dir: &Path,
    data_path: &Path,
    max_length: usize,
    batch_size: usize,
    quantize: Option<Quantization>,
) -> Result<serde_json::Value> {
    let (model, labels) = TaskModel::load_trained(
        model_dir,
        Head::SequenceClassification,
        max_length,
        quantize,
    )?;
    let regression = labels.len() == 1;
    let examples = encode(
        &model.encoder,
        &read_labelled(data_path)?,
        &labels,
        regression,
        data_path,
    )?;
    let objective = Classification { regression };
    let predictions = model.predict(&objective, &examples, &labels, batch_size)?;
    let references = references(&examples, &labels);
    Ok(if regression {
        serde_json::to_value(lingo_eval::regression_report(
            &floats(&predictions),
            &floats(&references),
        )?)?
    } else {
        serde_json::to_value(lingo_eval::classification_report(
            &predictions,
            &references,
        )?)?
    })
}
