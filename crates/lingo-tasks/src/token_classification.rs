//! Fine-tuning a pretrained BERT-family encoder to tag words (named entities, CoNLL-2003), as
//! `transformers`' `*ForTokenClassification` with its token-classification example does: words are
//! split into sub-tokens by the checkpoint's tokenizer, the first sub-token of each word carries the
//! word's tag and the others (and the special tokens) are ignored by the loss; evaluation reads the
//! first sub-token's prediction for every word and scores entities with seqeval. Tags may be IOB1,
//! IOB2 or BIOES: they are labels to the model, and seqeval's default mode reads all three.

use crate::error::{bad_input, Result};
use crate::finetune::{hold_out, Encodable, Finetune, FinetuneRecipe, Objective, TaskModel};
use candle_core::{DType, Tensor, D};
use lingo_data::{read_tagged, Encoded, TaggedSentence, TaskTokenizer};
use lingo_eval::seqeval::Mode;
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::bert::Head;
use lingo_models::Quantization;
use std::collections::BTreeMap;
use std::path::Path;

/// Targets of sub-tokens the loss skips (PyTorch's `ignore_index`).
const IGNORE: i64 = -100;

pub struct Example {
    input: Encoded,
    /// Per sub-token: the tag id on each word's first sub-token, [`IGNORE`] elsewhere.
    targets: Vec<i64>,
    /// The reference tags of the words that survived truncation.
    tags: Vec<String>,
}

impl Encodable for Example {
    fn input(&self) -> &Encoded {
        &self.input
    }
}

/// Positions of each word's first sub-token (words cut off by truncation have none).
fn first_subtokens(input: &Encoded) -> Vec<usize> {
    let mut out = Vec::new();
    let mut previous = None;
    for (j, w) in input.word_ids.iter().enumerate() {
        if w.is_some() && *w != previous {
            out.push(j);
        }
        previous = *w;
    }
    out
}

fn encode(
    encoder: &TaskTokenizer,
    sentences: &[TaggedSentence],
    labels: &[String],
    path: &Path,
) -> Result<Vec<Example>> {
    sentences
        .iter()
        .map(|s| {
            let input = encoder.encode_words(&s.words)?;
            let mut targets = vec![IGNORE; input.ids.len()];
            let firsts = first_subtokens(&input);
            for &j in &firsts {
                let w = input.word_ids[j].unwrap_or(0) as usize;
                let tag = &s.tags[w];
                let Some(id) = labels.iter().position(|l| l == tag) else {
                    return Err(bad_input!(
                        "{}: sentence at line {}: tag `{tag}` is not among the training tags ({})",
                        path.display(),
                        s.line,
                        labels.join(", ")
                    ));
                };
                targets[j] = id as i64;
            }
            Ok(Example {
                tags: s.tags[..firsts.len()].to_vec(),
                input,
                targets,
            })
        })
        .collect()
}

/// Tagging: one label per word.
pub struct Tagging;

/// Fine-tuning for token classification.
pub type TokenClassifyTask = Finetune<Tagging>;

/// One sentence's tags.
type Tags = Vec<String>;

impl Finetune<Tagging> {
    /// Loads the checkpoint in `model_dir` with a token-classification head for the tags of
    /// `train_path` (sorted), and encodes the sentences of both files (without `valid_path`, 5% of
    /// the training sentences are held out).
    pub fn new(
        model_dir: &Path,
        train_path: &Path,
        valid_path: Option<&Path>,
        recipe: FinetuneRecipe,
    ) -> Result<Self> {
        let mut train_data = read_tagged(train_path)?;
        let valid_data = match valid_path {
            Some(path) => read_tagged(path)?,
            None => hold_out(&mut train_data, recipe.train.seed, train_path)?,
        };
        let valid_path = valid_path.unwrap_or(train_path);
        let mut labels: Vec<String> = train_data.iter().flat_map(|s| s.tags.clone()).collect();
        labels.sort();
        labels.dedup();
        let for_head = labels.clone();
        Finetune::load(
            model_dir,
            Head::TokenClassification,
            for_head,
            recipe,
            |enc| {
                let train = encode(enc, &train_data, &labels, train_path)?;
                let valid = encode(enc, &valid_data, &labels, valid_path)?;
                Ok((Tagging, train, valid))
            },
        )
    }
}

impl Objective for Tagging {
    type Example = Example;
    /// A tag for every word that survived truncation.
    type Prediction = Tags;
    const TASK: &'static str = "ner";

    fn loss(
        &self,
        logits: &Tensor,
        examples: &[&Example],
        recipe: &FinetuneRecipe,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = logits.dims3()?;
        let mut targets = vec![IGNORE; b * t];
        for (i, e) in examples.iter().enumerate() {
            targets[i * t..i * t + e.targets.len()].copy_from_slice(&e.targets);
        }
        let targets = Tensor::from_vec(targets, (b, t), logits.device())?;
        let opts = CrossEntropy {
            ignore_index: Some(IGNORE),
            label_smoothing: recipe.label_smoothing,
            ..CrossEntropy::default()
        };
        cross_entropy(logits, &targets, opts)
    }

    /// The loss averages over the tagged tokens (a word's first sub-token), not the sentences.
    fn loss_terms(&self, examples: &[&Example]) -> usize {
        let tagged = |e: &&Example| e.targets.iter().filter(|&&t| t != IGNORE).count();
        examples.iter().map(tagged).sum()
    }

    fn predict(
        &self,
        logits: &Tensor,
        examples: &[&Example],
        labels: &[String],
    ) -> candle_core::Result<Vec<Tags>> {
        let best = logits
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec2::<u32>()?;
        Ok(examples
            .iter()
            .zip(best)
            .map(|(e, row)| {
                first_subtokens(&e.input)
                    .into_iter()
                    .map(|j| labels[row[j] as usize].clone())
                    .collect()
            })
            .collect())
    }

    fn score(
        &self,
        predictions: &[Tags],
        examples: &[Example],
        _labels: &[String],
    ) -> Result<BTreeMap<String, f64>> {
        let references: Vec<Tags> = examples.iter().map(|e| e.tags.clone()).collect();
        entity_metrics(predictions, &references)
    }
}

/// Entity scores as `lingo metric seqeval` names them: `precision`, `recall`, `f1` (default mode),
/// `strict_f1` (strict IOB2, when the tags are IOB2) and each type's `f1` as `<TYPE>_f1`; and
/// `accuracy`, the share of words tagged right (the score of part-of-speech tags).
pub fn entity_metrics(
    predicted: &[Vec<String>],
    references: &[Vec<String>],
) -> Result<BTreeMap<String, f64>> {
    let rep = lingo_eval::seqeval(predicted, references, Mode::Default)?;
    let (right, words) = (predicted.iter().zip(references)).fold((0, 0), |(r, n), (p, t)| {
        let same = p.iter().zip(t).filter(|(a, b)| a == b).count();
        (r + same, n + t.len())
    });
    let mut m = BTreeMap::from([
        ("accuracy".to_string(), right as f64 / words.max(1) as f64),
        ("precision".to_string(), rep.precision),
        ("recall".to_string(), rep.recall),
        ("f1".to_string(), rep.f1),
    ]);
    if let Ok(strict) = lingo_eval::seqeval(predicted, references, Mode::Strict) {
        m.insert("strict_f1".into(), strict.f1);
    }
    for (kind, s) in rep.per_type {
        m.insert(format!("{kind}_f1"), s.f1);
    }
    Ok(m)
}

/// Scores a fine-tuned tagger folder on a tagged file: `lingo metric seqeval`'s keys.
pub fn evaluate_tagger(
    model_dir: &Path,
    data_path: &Path,
    max_length: usize,
    batch_size: usize,
    quantize: Option<Quantization>,
) -> Result<BTreeMap<String, f64>> {
    let (model, labels) =
        TaskModel::load_trained(model_dir, Head::TokenClassification, max_length, quantize)?;
    let examples = encode(&model.encoder, &read_tagged(data_path)?, &labels, data_path)?;
    let predictions = model.predict(&Tagging, &examples, &labels, batch_size)?;
    Tagging.score(&predictions, &examples, &labels)
}
