//! Fine-tuning a pretrained BERT-family encoder for extractive question answering (SQuAD v1.1), as
//! `transformers`' `*ForQuestionAnswering` with its `run_qa.py` example does: each (question,
//! context) pair is cut into windows of `max_length` tokens whose contexts overlap by `doc_stride`
//! tokens; a training window is labelled with the tokens where its answer starts and ends, or with
//! the `[CLS]` token when the answer is not inside it; the loss is the mean of the start and end
//! cross-entropies. An answer is decoded as the span of at most `max_answer_length` context tokens
//! with the best start + end logit over the 20 best starts and ends of every window of its question.

use crate::error::{bad_input, Result};
use crate::finetune::{hold_out, Encodable, Finetune, FinetuneRecipe, Objective, TaskModel};
use candle_core::{IndexOp, Tensor};
use lingo_data::{read_squad, Encoded, SquadQuestion, TaskTokenizer};
use lingo_kernels::{cross_entropy, CrossEntropy};
use lingo_models::bert::Head;
use lingo_models::Quantization;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Starts and ends considered per window when decoding (`run_qa.py`'s `n_best_size`).
const N_BEST: usize = 20;

/// One window of a question's context.
pub struct Window {
    input: Encoded,
    /// Token positions of the answer's first and last token, 0 (`[CLS]`) when it is not inside.
    start: i64,
    end: i64,
    question: Arc<SquadQuestion>,
    /// The question's index in its split (the windows of one question are consecutive).
    index: usize,
}

impl Encodable for Window {
    fn input(&self) -> &Encoded {
        &self.input
    }
}

/// The best span of one window: start + end logit and its bytes in the context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub score: f32,
    pub start: usize,
    pub end: usize,
}

/// The tokens where the first answer starts and ends in `input`, or (0, 0) when the window's
/// context does not hold the whole answer.
fn answer_tokens(input: &Encoded, question: &SquadQuestion) -> (i64, i64) {
    let Some(answer) = question.answers.first() else {
        return (0, 0);
    };
    let context: Vec<usize> = (0..input.ids.len())
        .filter(|&i| input.sequence_ids[i] == Some(1))
        .collect();
    let (Some(&first), Some(&last)) = (context.first(), context.last()) else {
        return (0, 0);
    };
    let (start_byte, end_byte) = (answer.start, answer.end());
    if input.offsets[first].0 > start_byte || input.offsets[last].1 < end_byte {
        return (0, 0);
    }
    let start = context
        .iter()
        .rev()
        .find(|&&i| input.offsets[i].0 <= start_byte)
        .copied()
        .unwrap_or(first);
    let end = context
        .iter()
        .find(|&&i| input.offsets[i].1 >= end_byte)
        .copied()
        .unwrap_or(last);
    (start as i64, end as i64)
}

/// Every window of every question, labelled for training.
pub fn encode_windows(
    encoder: &TaskTokenizer,
    questions: &[Arc<SquadQuestion>],
    stride: usize,
    path: &Path,
) -> Result<Vec<Window>> {
    let windows = encoder.windows(stride)?;
    let mut out = Vec::new();
    for (index, q) in questions.iter().enumerate() {
        let inputs = windows
            .encode_windows(&q.question, &q.context)
            .map_err(|e| {
                bad_input!(
                    "{}: question {}: cannot cut windows of {} tokens with a stride of {stride} \
                     (is the question longer than the window?): {e}",
                    path.display(),
                    q.id,
                    encoder.max_length
                )
            })?;
        for input in inputs {
            let (start, end) = answer_tokens(&input, q);
            out.push(Window {
                input,
                start,
                end,
                question: q.clone(),
                index,
            });
        }
    }
    Ok(out)
}

/// The best span of a window from its start and end logits (`run_qa.py`'s post-processing).
fn best_span(
    input: &Encoded,
    starts: &[f32],
    ends: &[f32],
    max_answer_length: usize,
) -> Option<Span> {
    let top = |logits: &[f32]| -> Vec<usize> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(N_BEST);
        order
    };
    let in_context = |i: usize| input.sequence_ids.get(i) == Some(&Some(1));
    let mut best: Option<Span> = None;
    for s in top(starts) {
        for e in top(ends) {
            if !in_context(s) || !in_context(e) || e < s || e - s + 1 > max_answer_length {
                continue;
            }
            let score = starts[s] + ends[e];
            if best.is_none_or(|b| score > b.score) {
                best = Some(Span {
                    score,
                    start: input.offsets[s].0,
                    end: input.offsets[e].1,
                });
            }
        }
    }
    best
}

/// Each question's answer: the best span over its windows ("" when no window has one).
pub fn answers(windows: &[Window], spans: &[Option<Span>]) -> Vec<(Arc<SquadQuestion>, String)> {
    let mut out: Vec<(Arc<SquadQuestion>, Option<Span>)> = Vec::new();
    let mut last = None;
    for (w, span) in windows.iter().zip(spans) {
        if last != Some(w.index) {
            out.push((w.question.clone(), None));
            last = Some(w.index);
        }
        let best = &mut out.last_mut().expect("pushed above").1;
        if let Some(s) = span {
            if best.is_none_or(|b| s.score > b.score) {
                *best = Some(*s);
            }
        }
    }
    out.into_iter()
        .map(|(q, span)| {
            let text = span
                .and_then(|s| q.context.get(s.start..s.end))
                .unwrap_or_default()
                .to_string();
            (q, text)
        })
        .collect()
}

/// Extractive QA: a start and an end logit per token.
pub struct SpanExtraction {
    pub max_answer_length: usize,
}

/// Fine-tuning for extractive question answering.
pub type QaTask = Finetune<SpanExtraction>;

/// Questions grouped by paragraph, so a held-out part shares no context with training.
fn by_paragraph(questions: Vec<SquadQuestion>) -> Vec<Vec<Arc<SquadQuestion>>> {
    let mut groups: Vec<Vec<Arc<SquadQuestion>>> = Vec::new();
    for q in questions {
        match groups.last_mut() {
            Some(g) if Arc::ptr_eq(&g[0].context, &q.context) => g.push(Arc::new(q)),
            _ => groups.push(vec![Arc::new(q)]),
        }
    }
    groups
}

impl Finetune<SpanExtraction> {
    /// Loads the checkpoint in `model_dir` with a span head and cuts the questions of both SQuAD
    /// files into windows (without `valid_path`, 5% of the training paragraphs are held out).
    pub fn new(
        model_dir: &Path,
        train_path: &Path,
        valid_path: Option<&Path>,
        recipe: FinetuneRecipe,
    ) -> Result<Self> {
        let mut train_data = by_paragraph(read_squad(train_path, true)?);
        let valid_data: Vec<Arc<SquadQuestion>> = match valid_path {
            Some(path) => read_squad(path, false)?.into_iter().map(Arc::new).collect(),
            // Whole paragraphs, so no held-out context is trained on.
            None => hold_out(&mut train_data, recipe.train.seed, train_path)?
                .into_iter()
                .flatten()
                .collect(),
        };
        let train_data: Vec<Arc<SquadQuestion>> = train_data.into_iter().flatten().collect();
        let valid_path = valid_path.unwrap_or(train_path);
        let (stride, max_answer_length) = (recipe.doc_stride, recipe.max_answer_length);
        Finetune::load(
            model_dir,
            Head::QuestionAnswering,
            Vec::new(),
            recipe,
            |enc| {
                let train = encode_windows(enc, &train_data, stride, train_path)?;
                let valid = encode_windows(enc, &valid_data, stride, valid_path)?;
                Ok((SpanExtraction { max_answer_length }, train, valid))
            },
        )
    }
}

impl Objective for SpanExtraction {
    type Example = Window;
    type Prediction = Option<Span>;
    const TASK: &'static str = "qa";

    fn loss(
        &self,
        output: &Tensor,
        examples: &[&Window],
        recipe: &FinetuneRecipe,
    ) -> candle_core::Result<Tensor> {
        let device = output.device();
        let opts = CrossEntropy {
            label_smoothing: recipe.label_smoothing,
            ..CrossEntropy::default()
        };
        let starts: Vec<i64> = examples.iter().map(|w| w.start).collect();
        let ends: Vec<i64> = examples.iter().map(|w| w.end).collect();
        let n = examples.len();
        let start = cross_entropy(
            &output.i((.., .., 0))?.contiguous()?,
            &Tensor::from_vec(starts, n, device)?,
            opts,
        )?;
        let end = cross_entropy(
            &output.i((.., .., 1))?.contiguous()?,
            &Tensor::from_vec(ends, n, device)?,
            opts,
        )?;
        (start + end)? / 2.0
    }

    fn predict(
        &self,
        output: &Tensor,
        examples: &[&Window],
        _labels: &[String],
    ) -> candle_core::Result<Vec<Option<Span>>> {
        let starts = output.i((.., .., 0))?.to_vec2::<f32>()?;
        let ends = output.i((.., .., 1))?.to_vec2::<f32>()?;
        Ok(examples
            .iter()
            .zip(starts.iter().zip(&ends))
            .map(|(w, (s, e))| {
                let n = w.input.ids.len();
                best_span(&w.input, &s[..n], &e[..n], self.max_answer_length)
            })
            .collect())
    }

    fn score(
        &self,
        predictions: &[Option<Span>],
        examples: &[Window],
        _labels: &[String],
    ) -> Result<BTreeMap<String, f64>> {
        let (predicted, references): (Vec<String>, Vec<Vec<String>>) =
            answers(examples, predictions)
                .into_iter()
                .map(|(q, text)| {
                    let truths = q.answers.iter().map(|a| a.text.clone()).collect();
                    (text, truths)
                })
                .unzip();
        let s = lingo_eval::squad::squad(&predicted, &references)?;
        Ok(BTreeMap::from([
            ("exact_match".to_string(), s.exact_match),
            ("f1".to_string(), s.f1),
        ]))
    }
}

/// Scores a fine-tuned QA folder on a SQuAD file: `exact_match` and `f1` (0–100), and each
/// question's answer by id (the official script's predictions file).
pub fn evaluate_qa(
    model_dir: &Path,
    data_path: &Path,
    recipe: &FinetuneRecipe,
    batch_size: usize,
    quantize: Option<Quantization>,
) -> Result<(BTreeMap<String, f64>, BTreeMap<String, String>)> {
    let (model, labels) = TaskModel::load_trained(
        model_dir,
        Head::QuestionAnswering,
        recipe.max_length,
        quantize,
    )?;
    let questions: Vec<Arc<SquadQuestion>> = read_squad(data_path, false)?
        .into_iter()
        .map(Arc::new)
        .collect();
    let windows = encode_windows(&model.encoder, &questions, recipe.doc_stride, data_path)?;
    let objective = SpanExtraction {
        max_answer_length: recipe.max_answer_length,
    };
    let spans = model.predict(&objective, &windows, &labels, batch_size)?;
    let scores = objective.score(&spans, &windows, &labels)?;
    let predictions = answers(&windows, &spans)
        .into_iter()
        .map(|(q, text)| (q.id.clone(), text))
        .collect();
    Ok((scores, predictions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingo_data::Tokenizer;

    fn fixture() -> Option<serde_json::Value> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qa/windows.json");
        Some(serde_json::from_str(&std::fs::read_to_string(path).ok()?).expect("fixture json"))
    }

    /// Windows, answer tokens and decoded answers agree with transformers' tokenizer and
    /// `run_qa.py` (fixture by `tools/make_qa_fixtures.py`).
    #[test]
    fn windows_labels_and_answers_match_run_qa() -> anyhow::Result<()> {
        let f = fixture().expect("tests/fixtures/qa/windows.json");
        let tok = Tokenizer::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../lingo-models/tests/fixtures/hf/bert/tokenizer.json"),
        )?;
        let dir = tempfile::tempdir()?;
        let data = serde_json::json!({"data": [{"title": "fixture", "paragraphs":
            f["rows"].as_array().expect("rows").iter().map(|r| serde_json::json!({
                "context": r["context"], "qas": [{"id": r["id"], "question": r["question"],
                "answers": r["answers"]}]})).collect::<Vec<_>>()}]});
        let path = dir.path().join("squad.json");
        std::fs::write(&path, data.to_string())?;
        let questions: Vec<Arc<SquadQuestion>> =
            read_squad(&path, true)?.into_iter().map(Arc::new).collect();
        for case in f["cases"].as_array().expect("cases") {
            let max_length = case["max_length"].as_u64().expect("max_length") as usize;
            let stride = case["stride"].as_u64().expect("stride") as usize;
            let encoder = TaskTokenizer::new(&tok, max_length)?;
            let windows = encode_windows(&encoder, &questions, stride, &path)?;
            let expected = case["windows"].as_array().expect("windows");
            assert_eq!(windows.len(), expected.len(), "windows at {max_length}");
            let mut spans = Vec::new();
            for (w, x) in windows.iter().zip(expected) {
                let ids: Vec<u32> = serde_json::from_value(x["input_ids"].clone())?;
                let types: Vec<u32> = serde_json::from_value(x["token_type_ids"].clone())?;
                let offsets: Vec<(usize, usize)> = serde_json::from_value(x["offsets"].clone())?;
                let context_offsets: Vec<(usize, usize)> = w
                    .input
                    .offsets
                    .iter()
                    .zip(&w.input.sequence_ids)
                    .map(|(&o, s)| if *s == Some(1) { o } else { (0, 0) })
                    .collect();
                assert_eq!(w.index as u64, x["question"].as_u64().expect("question"));
                assert_eq!(
                    (&w.input.ids, &w.input.type_ids, &context_offsets),
                    (&ids, &types, &offsets)
                );
                assert_eq!(
                    (w.start, w.end),
                    (
                        x["start_position"].as_i64().expect("start"),
                        x["end_position"].as_i64().expect("end")
                    ),
                    "answer tokens of window {ids:?}"
                );
                let starts: Vec<f32> = serde_json::from_value(x["start_logits"].clone())?;
                let ends: Vec<f32> = serde_json::from_value(x["end_logits"].clone())?;
                let n = ids.len();
                spans.push(best_span(&w.input, &starts[..n], &ends[..n], 5));
            }
            for (q, text) in answers(&windows, &spans) {
                assert_eq!(
                    text,
                    case["answers"][&q.id].as_str().expect("answer"),
                    "{}",
                    q.id
                );
            }
        }
        Ok(())
    }
}
