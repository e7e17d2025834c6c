//! Fine-tuning a pretrained BERT-family encoder to tag words (named entities, CoNLL-2003), as
//! `transformers`' `*ForTokenClassification` with its token-classification example does: words are
//! split into sub-tokens by the checkpoint's tokenizer, the first sub-token of each word carries the
//! word's tag and the others (and the special tokens) are ignored by the loss; evaluation reads the
//! first sub-token's prediction for every word and scores entities with seqeval. Tags may be IOB1,
//! IOB2 or BIOES: they are labels to the model, and seqeval's default mode reads all three.

use crate::finetune::{hold_out, id2label, EpochOrder, FinetuneRecipe};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, D};
use lingo_data::{collate, read_tagged, Encoded, TaggedSentence, TaskTokenizer, Tokenizer};
use lingo_eval::seqeval::Mode;
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::bert::{BertModel, Head, LoadOptions};
use lingo_models::hf::{Checkpoint, LoadReport};
use lingo_nn::{Ctx, ParamStore};
use lingo_train::TrainTask;
use std::collections::BTreeMap;
use std::path::Path;

/// Targets of sub-tokens the loss skips (PyTorch's `ignore_index`).
const IGNORE: i64 = -100;

struct Example {
    input: Encoded,
    /// Per sub-token: the tag id on each word's first sub-token, [`IGNORE`] elsewhere.
    targets: Vec<i64>,
    /// The reference tags of the words that survived truncation.
    tags: Vec<String>,
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
) -> anyhow::Result<Vec<Example>> {
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
                    bail!(
                        "{}: sentence at line {}: tag `{tag}` is not among the training tags ({})",
                        path.display(),
                        s.line,
                        labels.join(", ")
                    );
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

/// A model, its tokenizer and its encoded sentences, ready for the trainer.
pub struct TokenClassifyTask {
    pub recipe: FinetuneRecipe,
    model: BertModel,
    store: ParamStore,
    config: serde_json::Value,
    tokenizer: Tokenizer,
    encoder: TaskTokenizer,
    labels: Vec<String>,
    train: Vec<Example>,
    valid: Vec<Example>,
    micro_batch: u64,
    order: EpochOrder,
    pub report: LoadReport,
    source: String,
}

impl TokenClassifyTask {
    /// Loads the checkpoint in `model_dir` with a token-classification head for the tags of
    /// `train_path` (sorted), and encodes the sentences of both files.
    pub fn new(
        model_dir: &Path,
        train_path: &Path,
        valid_path: Option<&Path>,
        mut recipe: FinetuneRecipe,
    ) -> anyhow::Result<Self> {
        let mut train_data = read_tagged(train_path)?;
        let valid_data = match valid_path {
            Some(path) => read_tagged(path)?,
            None => hold_out(&mut train_data, recipe.train.seed, train_path)?,
        };
        let valid_path = valid_path.unwrap_or(train_path);
        let mut labels: Vec<String> = train_data.iter().flat_map(|s| s.tags.clone()).collect();
        labels.sort();
        labels.dedup();
        let checkpoint = Checkpoint::open(model_dir, &Device::Cpu)?;
        let loaded = BertModel::load_with(
            &checkpoint,
            &Device::Cpu,
            &LoadOptions {
                head: Some(Head::TokenClassification),
                labels: Some(labels.clone()),
                seed: recipe.train.seed,
                dropout: recipe.dropout,
            },
        )?;
        let positions = loaded.model.config.max_position_embeddings;
        if recipe.max_length > positions {
            bail!(
                "max_length {} is longer than the model's {positions} positions",
                recipe.max_length
            );
        }
        let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json")).with_context(|| {
            format!(
                "{}: the model folder needs tokenizer.json",
                model_dir.display()
            )
        })?;
        let encoder = TaskTokenizer::new(&tokenizer, recipe.max_length)?;
        let train = encode(&encoder, &train_data, &labels, train_path)?;
        let valid = encode(&encoder, &valid_data, &labels, valid_path)?;
        recipe.resolve(train.len());
        let seed = recipe.train.seed;
        Ok(TokenClassifyTask {
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
            order: EpochOrder::new(seed),
            report: loaded.report,
            source: model_dir.display().to_string(),
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    fn loss(&self, examples: &[&Example], ctx: &mut Ctx) -> candle_core::Result<Tensor> {
        let logits = tag_logits(&self.model, &self.encoder, examples, ctx)?;
        let (b, t, _) = logits.dims3()?;
        let mut targets = vec![IGNORE; b * t];
        for (i, e) in examples.iter().enumerate() {
            targets[i * t..i * t + e.targets.len()].copy_from_slice(&e.targets);
        }
        let targets = Tensor::from_vec(targets, (b, t), logits.device())?;
        let opts = CrossEntropy {
            ignore_index: Some(IGNORE),
            label_smoothing: self.recipe.label_smoothing,
            ..CrossEntropy::default()
        };
        cross_entropy(&logits, &targets, opts)
    }
}

/// Logits `[batch, longest, tags]` of a padded batch.
fn tag_logits(
    model: &BertModel,
    encoder: &TaskTokenizer,
    examples: &[&Example],
    ctx: &mut Ctx,
) -> candle_core::Result<Tensor> {
    let inputs: Vec<&Encoded> = examples.iter().map(|e| &e.input).collect();
    let batch = collate(&inputs, encoder.pad_id, &Device::Cpu)?;
    Ok(model
        .forward_in(
            &batch.input_ids,
            Some(&batch.attention_mask),
            Some(&batch.token_type_ids),
            ctx,
        )?
        .output)
}

/// One sentence's tags.
type Tags = Vec<String>;

/// Each example's predicted tags (one per word that survived truncation) and its reference tags.
fn predict(
    model: &BertModel,
    encoder: &TaskTokenizer,
    labels: &[String],
    examples: &[Example],
    batch_size: usize,
) -> candle_core::Result<(Vec<Tags>, Vec<Tags>)> {
    let (mut predicted, mut references) = (Vec::new(), Vec::new());
    let all: Vec<&Example> = examples.iter().collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let best = tag_logits(model, encoder, chunk, &mut Ctx::eval())?
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec2::<u32>()?;
        for (e, row) in chunk.iter().zip(best) {
            let tags = first_subtokens(&e.input)
                .into_iter()
                .map(|j| labels[row[j] as usize].clone())
                .collect();
            predicted.push(tags);
            references.push(e.tags.clone());
        }
    }
    Ok((predicted, references))
}

/// Entity scores as `lingo metric seqeval` names them: `precision`, `recall`, `f1` (default mode),
/// `strict_f1` (strict IOB2, when the tags are IOB2) and each type's `f1` as `<TYPE>_f1`.
pub fn entity_metrics(
    predicted: &[Vec<String>],
    references: &[Vec<String>],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let rep = lingo_eval::seqeval(predicted, references, Mode::Default)?;
    let mut m = BTreeMap::from([
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

impl TrainTask for TokenClassifyTask {
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
        Ok((self.loss(&examples, ctx)?, tokens))
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
        let (p, r) = predict(
            &self.model,
            &self.encoder,
            &self.labels,
            &self.valid,
            batch_size,
        )?;
        entity_metrics(&p, &r).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "task": "ner",
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

/// Scores a fine-tuned tagger folder on a tagged file: `lingo metric seqeval`'s keys.
pub fn evaluate_tagger(
    model_dir: &Path,
    data_path: &Path,
    max_length: usize,
    batch_size: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let checkpoint = Checkpoint::open(model_dir, &Device::Cpu)?;
    let loaded = BertModel::load_with(&checkpoint, &Device::Cpu, &LoadOptions::default())?;
    if loaded.model.head != Head::TokenClassification {
        bail!(
            "{}: not a token-classification model (its head is {:?})",
            model_dir.display(),
            loaded.model.head
        );
    }
    let labels = id2label(&loaded.config);
    let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json"))?;
    let max_length = max_length.min(loaded.model.config.max_position_embeddings);
    let encoder = TaskTokenizer::new(&tokenizer, max_length)?;
    let examples = encode(&encoder, &read_tagged(data_path)?, &labels, data_path)?;
    let (p, r) = predict(&loaded.model, &encoder, &labels, &examples, batch_size)?;
    entity_metrics(&p, &r)
}
