//! Knowledge distillation (Hinton et al. 2015), with DistilBERT's loss (Sanh et al. 2019): a small
//! student learns a fine-tuned teacher's task from
//!
//! - the teacher's temperature-softened output distribution: `T² · KL(p_teacher^T ‖ p_student^T)`
//!   (the `T²` keeps its gradients on the hard loss's scale as `T` grows),
//! - the labels themselves: the task's own loss,
//! - optionally the direction of the last hidden states: `1 − cos(h_student, h_teacher)` per token,
//!
//! weighted and summed. A student described by a config is initialised from the teacher: its
//! embeddings, pooler and head, and every other layer (DistilBERT's recipe) — which
//! [`student_from_teacher`] writes as a folder of its own, so the same student can also be trained
//! without the teacher for comparison.
//!
//! An encoder–decoder learns by sequence-level distillation instead (Kim & Rush, 2016):
//! [`teacher_targets`] replaces every training target by the teacher's beam-search output, and the
//! student is fine-tuned on those pairs.

use crate::error::{bad_input, io, to_candle, Result};
use crate::finetune::{Encodable, Finetune, FinetuneRecipe, Objective, TaskModel};
use crate::Translator;
use candle_core::{DType, Tensor, D};
use lingo_data::Encoded;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::bert::Head;
use lingo_nn::{Ctx, ParamStore};
use lingo_train::{Shard, TrainTask};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The weights of the three terms and the softmax temperature.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillLoss {
    pub temperature: f64,
    /// Weight of `T² · KL` between the softened distributions.
    pub soft: f64,
    /// Weight of the task's loss on the labels.
    pub hard: f64,
    /// Weight of `1 − cos` between the last hidden states.
    pub cosine: f64,
}

impl Default for DistillLoss {
    fn default() -> Self {
        DistillLoss {
            temperature: 2.0,
            soft: 0.5,
            hard: 0.5,
            cosine: 0.0,
        }
    }
}

impl DistillLoss {
    /// The temperature must be positive and the weights non-negative, not all zero.
    pub fn check(&self) -> Result<()> {
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(bad_input!(
                "--temperature {}: expected a positive number",
                self.temperature
            ));
        }
        for (name, w) in [
            ("--alpha-soft", self.soft),
            ("--alpha-hard", self.hard),
            ("--alpha-cos", self.cosine),
        ] {
            if w.is_nan() || w < 0.0 {
                return Err(bad_input!("{name} {w}: expected a weight ≥ 0"));
            }
        }
        if self.soft + self.hard + self.cosine == 0.0 {
            return Err(bad_input!("every loss weight is 0: nothing to learn from"));
        }
        Ok(())
    }

    /// Whether the teacher is needed at all (a baseline with only the hard loss skips it).
    fn uses_teacher(&self) -> bool {
        self.soft > 0.0 || self.cosine > 0.0
    }
}

/// Writes into `out` a student made from the teacher folder `teacher`: its config with
/// `overrides` applied (e.g. `{"num_hidden_layers": 3}`), its embeddings, pooler and head, and
/// teacher layers `0, k, 2k, …` (`k` = teacher layers / student layers) as layers `0, 1, 2, …`.
/// Returns the teacher layers taken.
pub fn student_from_teacher(
    teacher: &Path,
    overrides: &serde_json::Value,
    out: &Path,
) -> Result<Vec<usize>> {
    let loaded = AutoModel::load(teacher, &LoadOptions::default())?;
    let AutoModel::Encoder(model) = &loaded.model else {
        return Err(bad_input!(
            "{}: distillation needs a BERT-family teacher, not a {}",
            teacher.display(),
            loaded.model.family()
        ));
    };
    let Some(overrides) = overrides.as_object() else {
        return Err(bad_input!(
            "the student config must be a JSON object of config.json fields"
        ));
    };
    let mut config = loaded.config.clone();
    for (key, value) in overrides {
        config[key] = value.clone();
    }
    let field = |c: &serde_json::Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| c.get(*k).and_then(|v| v.as_u64()))
            .unwrap_or(0) as usize
    };
    let layer_keys = ["num_hidden_layers", "n_layers"];
    let width_keys = ["hidden_size", "dim"];
    let (teacher_layers, layers) = (
        field(&loaded.config, &layer_keys),
        field(&config, &layer_keys),
    );
    if layers == 0 || layers > teacher_layers {
        return Err(bad_input!(
            "the student's num_hidden_layers {layers} must be from 1 to the teacher's {teacher_layers}"
        ));
    }
    if field(&config, &width_keys) != field(&loaded.config, &width_keys) {
        return Err(bad_input!(
            "a student initialised from the teacher's layers keeps its hidden size; give a model folder as the student to start from other weights"
        ));
    }
    if model.family == lingo_models::bert::Family::Albert {
        return Err(bad_input!(
            "ALBERT shares one layer among all: make the student by setting num_hidden_layers"
        ));
    }
    let step = teacher_layers / layers;
    let taken: Vec<usize> = (0..layers).map(|i| i * step).collect();
    let renamed = rename_layers(&loaded.store, &taken);
    if let Some(pruned) = config
        .get_mut("pruned_heads")
        .and_then(|p| p.as_object_mut())
    {
        // Heads pruned from a teacher layer stay pruned in the student layer made from it.
        let moved: serde_json::Map<String, serde_json::Value> = taken
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                pruned
                    .get(&t.to_string())
                    .map(|h| (i.to_string(), h.clone()))
            })
            .collect();
        *pruned = moved;
    }
    lingo_models::hf::save_tensors(out, &config, renamed)?;
    let tokenizer = teacher.join("tokenizer.json");
    if tokenizer.is_file() {
        // Atomically: every rank of a run under mpirun writes the same initial student.
        let target = out.join("tokenizer.json");
        let bytes = std::fs::read(&tokenizer).map_err(io(&tokenizer))?;
        lingo_nn::io::write_atomic(&target, &bytes).map_err(io(&target))?;
    }
    crate::pretrained::copy_tokenizer_files(teacher, out)?;
    Ok(taken)
}

/// The store's tensors with teacher layer `taken[i]` renamed layer `i` and the other layers left
/// out (`….layer.{n}.…` in BERT's and DistilBERT's names).
fn rename_layers(store: &ParamStore, taken: &[usize]) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (name, var) in store.named() {
        let Some(at) = name.find(".layer.") else {
            out.push((name, var.as_tensor().clone()));
            continue;
        };
        let rest = &name[at + ".layer.".len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let Ok(index) = digits.parse::<usize>() else {
            out.push((name, var.as_tensor().clone()));
            continue;
        };
        if let Some(i) = taken.iter().position(|&t| t == index) {
            let renamed = format!("{}.layer.{i}{}", &name[..at], &rest[digits.len()..]);
            out.push((renamed, var.as_tensor().clone()));
        }
    }
    out
}

/// A student fine-tuning task that also learns from a teacher's outputs.
pub struct Distillation<O: Objective> {
    pub student: Finetune<O>,
    teacher: Option<TaskModel>,
    loss: DistillLoss,
    teacher_dir: String,
}

impl<O: Objective> Distillation<O> {
    /// `teacher`: a fine-tuned folder with the student's head and tokenizer vocabulary.
    pub fn new(student: Finetune<O>, teacher: &Path, loss: DistillLoss) -> Result<Self> {
        loss.check()?;
        let head = student.model().head;
        if head == Head::QuestionAnswering {
            return Err(bad_input!(
                "distillation covers classification and token classification heads"
            ));
        }
        let max_length = student.recipe.max_length;
        let teacher_model = if loss.uses_teacher() {
            let (model, labels) = TaskModel::load_trained(teacher, head, max_length, None)?;
            if labels != student.labels() {
                return Err(bad_input!(
                    "{}: the teacher's labels ({}) are not the student's ({})",
                    teacher.display(),
                    labels.join(", "),
                    student.labels().join(", ")
                ));
            }
            let (tv, sv) = (
                model.model.config.vocab_size,
                student.model().config.vocab_size,
            );
            if tv != sv {
                return Err(bad_input!(
                    "{}: the teacher's vocabulary has {tv} tokens, the student's {sv}: they must share a tokenizer",
                    teacher.display()
                ));
            }
            Some(model)
        } else {
            None
        };
        Ok(Distillation {
            student,
            teacher: teacher_model,
            loss,
            teacher_dir: teacher.display().to_string(),
        })
    }

    /// The loss of `examples` in its weighted parts, each a mean: the task's own (hard) loss, then
    /// the soft loss and the cosine loss when they are used.
    fn loss_parts(
        &self,
        examples: &[&O::Example],
        ctx: &mut Ctx,
    ) -> candle_core::Result<Vec<Tensor>> {
        let inputs: Vec<&Encoded> = examples.iter().map(|e| e.input()).collect();
        let (batch, student) = self.student.task_model().forward(&inputs, ctx)?;
        let l = &self.loss;
        let mut parts = vec![(self.student.objective_loss(&student.output, examples)? * l.hard)?];
        let Some(teacher) = &self.teacher else {
            return Ok(parts);
        };
        let (_, taught) = teacher.forward(&inputs, &mut Ctx::eval())?;
        let mask = batch.attention_mask.to_dtype(DType::F32)?;
        let rows = |t: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            // A classifier's [batch, classes] has a row per example; a tagger's
            // [batch, time, tags] one per real token.
            Ok(match t.rank() {
                2 => (t.clone(), Tensor::ones(t.dim(0)?, DType::F32, t.device())?),
                _ => (t.flatten_to(1)?, mask.flatten_all()?),
            })
        };
        if l.soft > 0.0 {
            let (s, w) = rows(&student.output)?;
            let (t, _) = rows(&taught.output)?;
            let soft = soft_loss(&s, &t, &w, l.temperature).map_err(to_candle)?;
            parts.push((soft * l.soft)?);
        }
        if l.cosine > 0.0 {
            let last = |o: &lingo_models::ModelOutput| -> candle_core::Result<Tensor> {
                o.hidden_states
                    .last()
                    .ok_or_else(|| candle_core::Error::Msg("no hidden states".into()))?
                    .flatten_to(1)
            };
            let cos = cosine_loss(&last(&student)?, &last(&taught)?, &mask.flatten_all()?)
                .map_err(to_candle)?;
            parts.push((cos * l.cosine)?);
        }
        Ok(parts)
    }

    /// What each of [`Distillation::loss_parts`] averages over for `examples`: the task's terms;
    /// the soft loss's rows (examples for a classifier, real tokens for a tagger); the cosine
    /// loss's real tokens.
    fn part_counts(&self, examples: &[&O::Example]) -> Vec<usize> {
        let tokens = examples.iter().map(|e| e.input().ids.len()).sum();
        let mut counts = vec![self.student.loss_terms(examples)];
        if self.teacher.is_some() {
            if self.loss.soft > 0.0 {
                let per_token = self.student.model().head == Head::TokenClassification;
                counts.push(if per_token { tokens } else { examples.len() });
            }
            if self.loss.cosine > 0.0 {
                counts.push(tokens);
            }
        }
        counts
    }
}

/// `T² · KL(softmax(t/T) ‖ softmax(s/T))` averaged over the rows `weights` (1 real, 0 padding)
/// selects; logits `[rows, classes]`.
pub fn soft_loss(student: &Tensor, teacher: &Tensor, weights: &Tensor, t: f64) -> Result<Tensor> {
    let log_p_student = lingo_kernels::softmax::log_softmax(&(student / t)?)?;
    let log_p_teacher = lingo_kernels::softmax::log_softmax(&(teacher.detach() / t)?)?.detach();
    let p_teacher = log_p_teacher.exp()?;
    let kl = (&p_teacher * (&log_p_teacher - &log_p_student)?)?.sum(D::Minus1)?;
    let total = (kl * weights)?.sum_all()?;
    let count = weights.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok(((total / count as f64)? * (t * t))?)
}

/// `1 − cos(h_s, h_t)` per row of `[rows, hidden]`, averaged over the rows `weights` selects.
pub fn cosine_loss(student: &Tensor, teacher: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let teacher = teacher.detach();
    let dot = (student * &teacher)?.sum(D::Minus1)?;
    let norms =
        (student.sqr()?.sum(D::Minus1)?.sqrt()? * teacher.sqr()?.sum(D::Minus1)?.sqrt()?)?;
    let cos = (dot / (norms + 1e-8)?)?;
    let loss = ((cos.ones_like()? - cos)? * weights)?.sum_all()?;
    let count = weights.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok((loss / count as f64)?)
}

impl<O: Objective> TrainTask for Distillation<O> {
    fn params(&self) -> &ParamStore {
        self.student.params()
    }

    fn start_micro_batch(&mut self, index: u64) {
        self.student.start_micro_batch(index)
    }

    fn train_loss(
        &mut self,
        batch_size: usize,
        ctx: &mut Ctx,
    ) -> candle_core::Result<(Tensor, usize)> {
        let picks = self.student.micro_batch_indices(batch_size);
        let all = self.student.train_examples();
        let examples: Vec<&O::Example> = picks.iter().map(|&i| &all[i]).collect();
        let tokens = examples.iter().map(|e| e.input().ids.len()).sum();
        let mut parts = self.loss_parts(&examples, ctx)?.into_iter();
        let first = parts.next().expect("the hard loss");
        Ok((parts.try_fold(first, |sum, part| sum + part)?, tokens))
    }

    /// Shards of examples; each part of the loss is weighted by the shard's share of what that
    /// part averages over (see [`Distillation::part_counts`]).
    fn train_shards(
        &mut self,
        batch_size: usize,
        shards: usize,
        _ctx: &mut Ctx,
    ) -> candle_core::Result<Option<Vec<Shard<'_>>>> {
        let picks = self.student.micro_batch_indices(batch_size);
        let this = &*self;
        lingo_train::trainer::shards_of(&picks, shards, |part| {
            let all = this.student.train_examples();
            let examples: Vec<&O::Example> = part.iter().map(|&i| &all[i]).collect();
            let tokens = examples.iter().map(|e| e.input().ids.len()).sum();
            let counts = this.part_counts(&examples);
            Ok(Shard::parts(tokens, counts, move |ctx: &mut Ctx| {
                this.loss_parts(&examples, ctx)
            }))
        })
    }

    fn eval_loss(&mut self, batch_size: usize, max_batches: usize) -> candle_core::Result<f64> {
        self.student.eval_loss(batch_size, max_batches)
    }

    fn evaluate(&mut self, batch_size: usize) -> candle_core::Result<BTreeMap<String, f64>> {
        self.student.evaluate(batch_size)
    }

    fn describe(&self) -> serde_json::Value {
        let mut d = self.student.describe();
        d["distillation"] = serde_json::json!({
            "teacher": self.teacher_dir,
            "loss": self.loss,
        });
        d
    }

    fn save_artifacts(&self, dir: &Path) -> lingo_train::Result<()> {
        self.student.save_artifacts(dir)
    }

    fn save_weights(&self, path: &Path) -> lingo_train::Result<()> {
        self.student.save_weights(path)
    }
}

/// The training pairs with each target replaced by the teacher's beam-search translation of the
/// source (its own decoding settings and source prefix), decoded `batch_size` at a time;
/// `progress` hears how many are done.
pub fn teacher_targets(
    teacher: &Path,
    pairs: &[(String, String)],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<(String, String)>> {
    let translator = Translator::load(teacher)?;
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1) * 8) {
        let sources: Vec<String> = chunk.iter().map(|(s, _)| s.clone()).collect();
        let decoded = translator.translate(&sources, &translator.beam, batch_size)?;
        out.extend(sources.into_iter().zip(decoded.into_iter().map(|t| t.text)));
        progress(out.len());
    }
    Ok(out)
}

/// Writes `pairs` as JSON lines under the recipe's source and target field names, which
/// `PairFile` reads back.
pub fn write_pairs(path: &Path, pairs: &[(String, String)], recipe: &FinetuneRecipe) -> Result<()> {
    let mut text = String::new();
    for (source, target) in pairs {
        let mut record = serde_json::Map::new();
        record.insert(recipe.source_field.clone(), source.clone().into());
        record.insert(recipe.target_field.clone(), target.clone().into());
        text.push_str(&serde_json::Value::Object(record).to_string());
        text.push('\n');
    }
    lingo_nn::io::write_atomic(path, text.as_bytes()).map_err(io(path))
}
