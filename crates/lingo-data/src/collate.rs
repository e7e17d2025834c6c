//! From texts to model inputs for fine-tuning: a checkpoint's own tokenizer encodes single texts or
//! pairs (`[CLS] a [SEP] b [SEP]` with token type ids, as its post-processor says), truncated to the
//! model's length (longest-first, as `transformers` truncates pairs), keeping character offsets and
//! word ids; [`collate`] pads a batch to its longest member only (dynamic padding).

use crate::{DataError, Result, Tokenizer};
use candle_core::{Device, Tensor};
use tokenizers::{PostProcessor, TruncationDirection, TruncationParams, TruncationStrategy};

/// One encoded input.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Character span of each token in its text (`(0, 0)` for special tokens).
    pub offsets: Vec<(usize, usize)>,
    /// For each token, the index of the word it came from (`None` for special tokens).
    pub word_ids: Vec<Option<u32>>,
    /// For each token, which text it came from: 0 (first), 1 (pair), `None` for special tokens.
    pub sequence_ids: Vec<Option<usize>>,
}

impl From<&tokenizers::Encoding> for Encoded {
    fn from(enc: &tokenizers::Encoding) -> Self {
        Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
            word_ids: enc.get_word_ids().to_vec(),
            sequence_ids: enc.get_sequence_ids(),
        }
    }
}

/// A checkpoint's tokenizer set up for a task: special tokens added, truncation to `max_length`,
/// no padding (the collator pads).
#[derive(Clone)]
pub struct TaskTokenizer {
    inner: tokenizers::Tokenizer,
    pub max_length: usize,
    pub pad_id: u32,
}

fn tok_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

impl TaskTokenizer {
    pub fn new(tokenizer: &Tokenizer, max_length: usize) -> Result<Self> {
        if max_length < 4 {
            return Err(DataError::Invalid(format!(
                "max_length {max_length} leaves no room for text between the special tokens"
            )));
        }
        let mut inner = tokenizer.inner().clone();
        let pad_id = tokenizer.pad_id();
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(tok_err)?;
        Ok(TaskTokenizer {
            inner,
            max_length,
            pad_id,
        })
    }

    /// Encodes `text`, or the pair (`text`, `pair`), with the tokenizer's special tokens.
    pub fn encode(&self, text: &str, pair: Option<&str>) -> Result<Encoded> {
        let enc = match pair {
            Some(p) => self.inner.encode((text, p), true),
            None => self.inner.encode(text, true),
        }
        .map_err(tok_err)?;
        Ok(Encoded::from(&enc))
    }

    /// This tokenizer cutting only the second text of a pair into windows that overlap by `stride`
    /// tokens (the context of extractive QA; the question is kept whole).
    pub fn windows(&self, stride: usize) -> Result<Windows> {
        let mut plain = self.inner.clone();
        plain.with_truncation(None).map_err(tok_err)?;
        let added = plain
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        Ok(Windows {
            plain,
            max_length: self.max_length,
            stride,
            added,
        })
    }

    /// Encodes many inputs in parallel.
    pub fn encode_all(&self, inputs: &[(&str, Option<&str>)]) -> Result<Vec<Encoded>> {
        use rayon::prelude::*;
        inputs.par_iter().map(|(t, p)| self.encode(t, *p)).collect()
    }

    /// Encodes pre-split words (for token classification), one word id per word.
    pub fn encode_words(&self, words: &[String]) -> Result<Encoded> {
        let enc = self.inner.encode(words.to_vec(), true).map_err(tok_err)?;
        Ok(Encoded::from(&enc))
    }
}

/// A tokenizer cutting long contexts into overlapping windows, from [`TaskTokenizer::windows`].
///
/// The windows are cut here rather than by the `tokenizers` crate's own overflow handling, which
/// (in 0.23.2) keeps only the first two windows of a truncated pair; the cut is the crate's
/// `Encoding::truncate`, so windows equal what `transformers` returns.
pub struct Windows {
    plain: tokenizers::Tokenizer,
    max_length: usize,
    stride: usize,
    /// Special tokens a pair gains (`[CLS] a [SEP] b [SEP]`: 3).
    added: usize,
}

impl Windows {
    /// Every window of the pair (`question`, `context`), in order, as `transformers` returns them
    /// with `truncation="only_second"` and `return_overflowing_tokens=True`; offsets of context
    /// tokens are bytes of `context`.
    pub fn encode_windows(&self, question: &str, context: &str) -> Result<Vec<Encoded>> {
        let q = self.plain.encode(question, false).map_err(tok_err)?;
        let mut c = self.plain.encode(context, false).map_err(tok_err)?;
        let budget = self.max_length.saturating_sub(q.len() + self.added);
        if budget <= self.stride {
            return Err(DataError::Invalid(format!(
                "the question takes {} of the {} tokens, leaving {budget} for the context: \
                 not more than the stride of {}",
                q.len(),
                self.max_length,
                self.stride
            )));
        }
        c.truncate(budget, self.stride, TruncationDirection::Right);
        let rest = c.take_overflowing();
        std::iter::once(c)
            .chain(rest)
            .map(|window| {
                let enc = self
                    .plain
                    .post_process(q.clone(), Some(window), true)
                    .map_err(tok_err)?;
                Ok(Encoded::from(&enc))
            })
            .collect()
    }
}

/// A padded batch: `[batch, longest]` token ids, token type ids and attention mask (1 = token).
#[derive(Clone, Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
}

impl Batch {
    /// The batch as a model's inputs (ids, attention mask, token types).
    pub fn inputs(&self) -> lingo_models::ModelInputs {
        lingo_models::ModelInputs::new(self.input_ids.clone())
            .with_attention_mask(self.attention_mask.clone())
            .with_token_type_ids(self.token_type_ids.clone())
    }
}

/// Pads `examples` to the longest among them with `pad_id` (type 0, mask 0).
pub fn collate(examples: &[&Encoded], pad_id: u32, device: &Device) -> candle_core::Result<Batch> {
    let width = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let n = examples.len();
    let (mut ids, mut types, mut mask) = (
        Vec::with_capacity(n * width),
        Vec::with_capacity(n * width),
        Vec::with_capacity(n * width),
    );
    for e in examples {
        let pad = width - e.ids.len();
        ids.extend(
            e.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, pad)),
        );
        types.extend(
            e.type_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, pad)),
        );
        mask.extend(std::iter::repeat_n(1u32, e.ids.len()).chain(std::iter::repeat_n(0, pad)));
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (n, width), device)?,
        token_type_ids: Tensor::from_vec(types, (n, width), device)?,
        attention_mask: Tensor::from_vec(mask, (n, width), device)?,
    })
}
