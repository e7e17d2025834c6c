//! Pipelines over a pretrained BERT-family encoder and its own `tokenizer.json`: masked-word filling,
//! text classification, named entities, extractive question answering and sentence embeddings. Each
//! follows what the `transformers` pipeline of the same name returns (checked on fixtures).

use crate::error::{bad_input, Result};
use crate::finetune::id2label;
use crate::Pretrained;
use candle_core::{DType, Device, Tensor, D};
use lingo_data::{Encoded, TaskTokenizer, Tokenizer};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::bert::{BertModel, Head};
use lingo_models::ModelInputs;
use lingo_nn::Ctx;
use serde::Serialize;
use std::path::Path;

/// A loaded encoder with its tokenizer and label names.
pub struct EncoderPipeline {
    pub model: BertModel,
    tokenizer: Tokenizer,
    /// `id2label` in id order (`LABEL_i` where the config has none).
    labels: Vec<String>,
}

/// One candidate for a masked position.
#[derive(Clone, Debug, Serialize)]
pub struct MaskFill {
    pub token: u32,
    pub token_str: String,
    pub score: f32,
    /// The input with the mask replaced by this token.
    pub sequence: String,
}

/// Attention probabilities `[layer][head][query][key]`.
pub type AttentionMaps = Vec<Vec<Vec<Vec<f32>>>>;

/// A class and its probability.
#[derive(Clone, Debug, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// A named entity: consecutive tokens of one type, merged as `aggregation_strategy="simple"` does.
#[derive(Clone, Debug, Serialize)]
pub struct Entity {
    pub entity_group: String,
    /// The mean of the tokens' probabilities for their label.
    pub score: f32,
    pub word: String,
    /// Character offsets into the input.
    pub start: usize,
    pub end: usize,
}

/// The best answer span of extractive QA.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub answer: String,
    /// `P(start) · P(end)`, each a softmax over the context tokens of the window.
    pub score: f32,
    /// Byte offsets into the context.
    pub start: usize,
    pub end: usize,
}

/// How token states become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the real (non-padding) tokens.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The element-wise maximum over the real tokens.
    Max,
}

/// One token's likeliest label, split into its `B-`/`I-` part and entity type.
struct TokenLabel {
    begins: bool,
    kind: String,
    score: f32,
    token: String,
    start: usize,
    end: usize,
}

/// Longest answer, in tokens, that extractive QA considers (as `transformers`' `max_answer_len`).
pub const MAX_ANSWER_TOKENS: usize = 15;

/// The QA pipeline's window over long contexts and the overlap of consecutive windows (the
/// `transformers` pipeline's `max_seq_len` and `doc_stride`).
pub const QA_WINDOW: usize = 384;
pub const QA_STRIDE: usize = 128;

fn softmax(xs: &[f32]) -> Vec<f32> {
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = xs.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn row(ids: &[u32]) -> candle_core::Result<Tensor> {
    Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu)
}

impl EncoderPipeline {
    /// Loads a model folder (config.json, safetensors weights, tokenizer.json).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_pretrained(Pretrained::open(dir, &LoadOptions::default())?)
    }

    /// The pipelines over a loaded BERT-family model.
    pub fn from_pretrained(pretrained: Pretrained) -> Result<Self> {
        let labels = id2label(&pretrained.config);
        match pretrained.model {
            AutoModel::Encoder(model) => Ok(EncoderPipeline {
                labels,
                model,
                tokenizer: pretrained.tokenizer,
            }),
            other => Err(bad_input!(
                "{}: these pipelines need a BERT-family encoder, not a {}",
                pretrained.dir.display(),
                other.family()
            )),
        }
    }

    fn label(&self, i: usize) -> String {
        self.labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{i}"))
    }

    fn require(&self, head: Head, task: &str) -> Result<()> {
        if self.model.head != head {
            return Err(bad_input!(
                "{task} needs a model with a {head:?} head; this one has {:?}",
                self.model.head
            ));
        }
        Ok(())
    }

    fn encode(&self, text: &str) -> Result<tokenizers::Encoding> {
        let enc = self
            .tokenizer
            .inner()
            .encode(text, true)
            .map_err(|e| bad_input!("tokenizing: {e}"))?;
        self.check_length(enc.get_ids().len())?;
        Ok(enc)
    }

    fn check_length(&self, n: usize) -> Result<()> {
        let max = self.model.config.max_position_embeddings;
        if n > max {
            return Err(bad_input!(
                "the input is {n} tokens long; the model takes at most {max}"
            ));
        }
        Ok(())
    }

    /// Logits `[time, width]` for one encoded input.
    fn logits(&self, ids: &[u32], types: &[u32]) -> Result<Vec<Vec<f32>>> {
        let inputs = ModelInputs::new(row(ids)?).with_token_type_ids(row(types)?);
        let out = self.model.forward(&inputs, &mut Ctx::eval())?.output;
        Ok(out.squeeze(0)?.to_dtype(DType::F32)?.to_vec2()?)
    }

    /// The `top_k` likeliest tokens for each mask token in `text` (the first mask only if several).
    pub fn fill_mask(&self, text: &str, top_k: usize) -> Result<Vec<MaskFill>> {
        // A pre-training head (BERT's MLM + NSP) fills masks with its masked-LM part.
        if self.model.head != Head::PreTraining {
            self.require(Head::MaskedLm, "fill-mask")?;
        }
        let (_, mask) = self
            .tokenizer
            .mask_token()
            .ok_or_else(|| bad_input!("the tokenizer has no mask token ([MASK] or <mask>)"))?;
        let enc = self.encode(text)?;
        let ids = enc.get_ids();
        let Some(at) = ids.iter().position(|&id| id == mask) else {
            return Err(bad_input!(
                "the input has no mask token; write [MASK] (or <mask>) where a word is missing"
            ));
        };
        let probs = softmax(&self.logits(enc.get_ids(), enc.get_type_ids())?[at]);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        order
            .into_iter()
            .take(top_k)
            .map(|t| {
                let mut filled = ids.to_vec();
                filled[at] = t as u32;
                Ok(MaskFill {
                    token: t as u32,
                    token_str: self.tokenizer.decode(&[t as u32])?,
                    score: probs[t],
                    sequence: self.tokenizer.decode_text(&filled)?,
                })
            })
            .collect()
    }

    /// Every label with its probability, likeliest first.
    pub fn classify(&self, text: &str) -> Result<Vec<LabelScore>> {
        Ok(self.classify_batch(&[text])?.pop().unwrap_or_default())
    }

    /// [`Self::classify`] for several texts, run as one padded batch.
    pub fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Vec<LabelScore>>> {
        self.require(Head::SequenceClassification, "classification")?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (out, _) = self.forward_padded(texts, false)?;
        let logits: Vec<Vec<f32>> = out.output.to_dtype(DType::F32)?.to_vec2()?;
        Ok(logits
            .iter()
            .map(|row| {
                let mut scores: Vec<LabelScore> = softmax(row)
                    .into_iter()
                    .enumerate()
                    .map(|(i, score)| LabelScore {
                        label: self.label(i),
                        score,
                    })
                    .collect();
                scores.sort_by(|a, b| b.score.total_cmp(&a.score));
                scores
            })
            .collect())
    }

    /// Named entities: each token's likeliest label, consecutive tokens of one type merged (a `B-`
    /// label starts a new entity), `O` dropped.
    pub fn ner(&self, text: &str) -> Result<Vec<Entity>> {
        self.require(Head::TokenClassification, "named-entity recognition")?;
        let enc = self.encode(text)?;
        let logits = self.logits(enc.get_ids(), enc.get_type_ids())?;
        let mut tokens: Vec<TokenLabel> = Vec::new();
        for (i, l) in logits.iter().enumerate() {
            if enc.get_special_tokens_mask()[i] == 1 {
                continue;
            }
            let probs = softmax(l);
            let best = (0..probs.len())
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap_or(0);
            let label = self.label(best);
            let (bio, kind) = match label.split_once('-') {
                Some(("B", k)) => ('B', k.to_string()),
                Some(("I", k)) => ('I', k.to_string()),
                _ => ('I', label.clone()),
            };
            let (start, end) = enc.get_offsets()[i];
            tokens.push(TokenLabel {
                begins: bio == 'B',
                kind,
                score: probs[best],
                token: enc.get_tokens()[i].clone(),
                start,
                end,
            });
        }
        let mut groups: Vec<Vec<TokenLabel>> = Vec::new();
        for t in tokens {
            match groups.last_mut() {
                Some(g) if g[0].kind == t.kind && !t.begins => g.push(t),
                _ => groups.push(vec![t]),
            }
        }
        Ok(groups
            .into_iter()
            .filter(|g| g[0].kind != "O")
            .map(|g| {
                let words: Vec<&str> = g.iter().map(|t| t.token.as_str()).collect();
                Entity {
                    entity_group: g[0].kind.clone(),
                    score: g.iter().map(|t| t.score).sum::<f32>() / g.len() as f32,
                    // WordPiece tokens back to text, as `convert_tokens_to_string` does.
                    word: words.join(" ").replace(" ##", "").trim().to_string(),
                    start: g[0].start,
                    end: g[g.len() - 1].end,
                }
            })
            .collect())
    }

    /// The best answer to `question` in `context`: the span of at most [`MAX_ANSWER_TOKENS`] context
    /// tokens maximising `P(start) · P(end)`. A context too long for the model is cut into windows
    /// (overlapping by [`QA_STRIDE`] tokens) and the best span of any window wins, as the
    /// `transformers` pipeline does.
    pub fn answer(&self, question: &str, context: &str) -> Result<Answer> {
        self.require(Head::QuestionAnswering, "question answering")?;
        if context.trim().is_empty() {
            return Err(bad_input!("the context is empty"));
        }
        let window = self.model.config.max_position_embeddings.min(QA_WINDOW);
        let windows = TaskTokenizer::new(&self.tokenizer, window)?
            .windows(QA_STRIDE.min(window / 2))?
            .encode_windows(question.trim_start(), context)
            .map_err(|e| {
                bad_input!(
                    "the question leaves no room for the context in the model's window ({e})"
                )
            })?;
        let mut best = (f32::NEG_INFINITY, 0, 0);
        for enc in &windows {
            let logits = self.logits(&enc.ids, &enc.type_ids)?;
            let in_context: Vec<usize> = (0..enc.ids.len())
                .filter(|&i| enc.sequence_ids[i] == Some(1))
                .collect();
            let starts = softmax(&in_context.iter().map(|&i| logits[i][0]).collect::<Vec<_>>());
            let ends = softmax(&in_context.iter().map(|&i| logits[i][1]).collect::<Vec<_>>());
            for (a, p_start) in starts.iter().enumerate() {
                for (b, p_end) in ends.iter().enumerate().skip(a).take(MAX_ANSWER_TOKENS) {
                    if p_start * p_end > best.0 {
                        best = (
                            p_start * p_end,
                            enc.offsets[in_context[a]].0,
                            enc.offsets[in_context[b]].1,
                        );
                    }
                }
            }
        }
        let (score, start, end) = best;
        Ok(Answer {
            answer: context.get(start..end).unwrap_or_default().to_string(),
            score,
            start,
            end,
        })
    }

    /// One vector per text from the encoder's last hidden states.
    pub fn embed(&self, texts: &[&str], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (out, mask) = self.forward_padded(texts, false)?;
        let h = out.last_hidden_state()?.clone();
        let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
        let pooled = match pooling {
            Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => h.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?,
            Pooling::Max => {
                // Padding set far below any real value so it never wins the maximum.
                let hidden = ((m.ones_like()? - &m)? * -1e30)?;
                h.broadcast_add(&hidden)?.max(1)?
            }
        };
        Ok(pooled.to_vec2()?)
    }

    /// The tokens of `text` as the model sees them and every layer's attention probabilities
    /// `[layer][head][query][key]`, for attention maps.
    pub fn attention(&self, text: &str) -> Result<(Vec<String>, AttentionMaps)> {
        let enc = self.encode(text)?;
        let (out, _) = self.forward_encoded(&[Encoded::from(&enc)], true)?;
        let mut layers = Vec::with_capacity(out.attentions.len());
        for a in &out.attentions {
            layers.push(a.squeeze(0)?.to_dtype(DType::F32)?.to_vec3()?);
        }
        Ok((enc.get_tokens().to_vec(), layers))
    }

    /// The model's output for `texts` padded to the longest (and the attention mask `[batch,
    /// time]`), each text encoded with its special tokens.
    fn forward_padded(
        &self,
        texts: &[&str],
        output_attentions: bool,
    ) -> Result<(lingo_models::ModelOutput, Tensor)> {
        let encodings: Vec<Encoded> = texts
            .iter()
            .map(|t| Ok(Encoded::from(&self.encode(t)?)))
            .collect::<Result<_>>()?;
        self.forward_encoded(&encodings, output_attentions)
    }

    /// [`Self::forward_padded`] for texts already encoded.
    fn forward_encoded(
        &self,
        encodings: &[Encoded],
        output_attentions: bool,
    ) -> Result<(lingo_models::ModelOutput, Tensor)> {
        let refs: Vec<&Encoded> = encodings.iter().collect();
        let batch = lingo_data::collate(&refs, self.tokenizer.pad_id(), &Device::Cpu)?;
        let mut inputs = batch.inputs();
        inputs.output_attentions = output_attentions;
        let out = self.model.forward(&inputs, &mut Ctx::eval())?;
        Ok((out, batch.attention_mask))
    }
}
