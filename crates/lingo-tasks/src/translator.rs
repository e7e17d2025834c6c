//! Decoding with any encoder–decoder Lingo loads — its own recurrent model and Transformer, or a
//! Hugging Face T5, BART or Marian — by batched beam search, with the folder's own tokenizers and
//! generation settings: what `lingo translate`, `lingo summarize` and sequence-to-sequence
//! evaluation run.

use crate::error::{bad_input, Result};
use crate::Pretrained;
use candle_core::{Device, Tensor};
use lingo_data::Tokenizer;
use lingo_generate::{beam_search, BeamConfig};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::Seq2SeqTrain;
use std::path::Path;

/// One decoded sentence.
#[derive(Clone, Debug)]
pub struct Translation {
    pub text: String,
    pub source_tokens: Vec<String>,
    pub target_tokens: Vec<String>,
    /// `attention[i][j]`: weight of source token `j` when producing target token `i`.
    pub attention: Vec<Vec<f32>>,
    pub score: f32,
}

/// An encoder–decoder with its tokenizers and decoding settings.
pub struct Translator {
    /// A Lingo recurrent model or Transformer, or a Hugging Face T5, BART or Marian.
    pub model: AutoModel,
    pub source_tokenizer: Tokenizer,
    pub target_tokenizer: Tokenizer,
    pub beam: BeamConfig,
    /// Hugging Face tokenizers add the model's special tokens (T5's and Marian's `</s>`, BART's
    /// `<s> … </s>`) themselves; Lingo's tokenizers add none and the end token is appended.
    hugging_face: bool,
    /// Sources are cut to this many tokens (the model's positions, or a recipe's limit).
    pub max_source_length: Option<usize>,
    /// Put before every sentence [`Self::translate`] is given: a fine-tuned folder's
    /// `source_prefix` (T5's task prefixes), from its `finetune.json`.
    pub source_prefix: String,
}

impl Translator {
    /// Loads a folder written by `lingo train seq2seq` or `lingo finetune seq2seq`, or a Hugging
    /// Face T5, BART or Marian folder with its `tokenizer.json` (and `generation_config.json`).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_pretrained(Pretrained::open(dir, &LoadOptions::default())?)
    }

    /// The encoder–decoder of a loaded model folder.
    pub fn from_pretrained(pretrained: Pretrained) -> Result<Self> {
        if pretrained.model.as_seq2seq().is_none() {
            return Err(bad_input!(
                "{}: not a sequence-to-sequence model but a {}",
                pretrained.dir.display(),
                pretrained.model.family()
            ));
        }
        let beam = pretrained.beam_config()?;
        let target_tokenizer = pretrained.target_tokenizer().clone();
        let hugging_face = !matches!(
            pretrained.model,
            AutoModel::Transformer(_) | AutoModel::Rnn(_)
        );
        let mut max_source_length = source_positions(&pretrained.model);
        let mut source_prefix = String::new();
        let recipe = pretrained.dir.join("finetune.json");
        if recipe.is_file() {
            let recipe = crate::FinetuneRecipe::load(&recipe)?;
            source_prefix = recipe.source_prefix;
            max_source_length =
                Some(max_source_length.map_or(recipe.max_length, |m| m.min(recipe.max_length)));
        }
        Ok(Translator {
            model: pretrained.model,
            source_tokenizer: pretrained.tokenizer,
            target_tokenizer,
            beam,
            hugging_face,
            max_source_length,
            source_prefix,
        })
    }

    /// The model as an encoder–decoder.
    pub fn seq2seq(&self) -> &dyn Seq2SeqTrain {
        self.model
            .as_seq2seq()
            .expect("checked to be an encoder-decoder when loaded")
    }

    /// `text` as source ids (with the model's special tokens), cut to `max_source_length` — the
    /// end token a Hugging Face tokenizer appends kept last, as its truncation keeps it.
    pub fn encode_source(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = if self.hugging_face {
            self.source_tokenizer.encode_input(text)?.ids
        } else {
            self.source_tokenizer.encode(text)?
        };
        if ids.is_empty() {
            return Err(bad_input!("{text:?} has no tokens"));
        }
        if let Some(max) = self.max_source_length.filter(|&m| ids.len() > m && m > 0) {
            let last = ids[ids.len() - 1];
            ids.truncate(max);
            if self.hugging_face && last == self.seq2seq().eos_id() {
                ids[max - 1] = last;
            }
        }
        Ok(ids)
    }

    /// `text` as training labels: its target ids ending in the end token, cut to `max_length`
    /// (the end token kept).
    pub fn encode_target(&self, text: &str, max_length: usize) -> Result<Vec<u32>> {
        let eos = self.seq2seq().eos_id();
        let mut ids = if self.hugging_face {
            self.target_tokenizer.encode_input(text)?.ids
        } else {
            self.target_tokenizer.encode(text)?
        };
        if ids.last() != Some(&eos) {
            ids.push(eos);
        }
        if ids.len() > max_length.max(1) {
            ids.truncate(max_length.max(1) - 1);
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Translates `sentences` (each after [`Self::source_prefix`]) in batches of `batch_size` with
    /// beam search.
    pub fn translate(
        &self,
        sentences: &[String],
        beam: &BeamConfig,
        batch_size: usize,
    ) -> Result<Vec<Translation>> {
        let ids = sentences
            .iter()
            .map(|s| self.encode_source(&format!("{}{s}", self.source_prefix)))
            .collect::<Result<Vec<_>>>()?;
        self.translate_ids(&ids, beam, batch_size)
    }

    /// Decodes already encoded sources (from [`Self::encode_source`]).
    pub fn translate_ids(
        &self,
        sources: &[Vec<u32>],
        beam: &BeamConfig,
        batch_size: usize,
    ) -> Result<Vec<Translation>> {
        let model = self.seq2seq();
        let pad = model.pad_id();
        let mut out = Vec::with_capacity(sources.len());
        for chunk in sources.chunks(batch_size.max(1)) {
            if let Some(i) = chunk.iter().position(|x| x.is_empty()) {
                return Err(bad_input!("source {i} of the batch has no tokens"));
            }
            let s = chunk.iter().map(Vec::len).max().unwrap_or(1);
            let mut flat = vec![pad; chunk.len() * s];
            for (r, x) in chunk.iter().enumerate() {
                flat[r * s..r * s + x.len()].copy_from_slice(x);
            }
            let src = Tensor::from_vec(flat, (chunk.len(), s), &Device::Cpu)?;
            let lengths: Vec<usize> = chunk.iter().map(Vec::len).collect();
            let hyps = beam_search(model, &src, &lengths, beam)?;
            for (x, mut h) in chunk.iter().zip(hyps) {
                let best = h.remove(0);
                let eos = model.eos_id();
                let target: Vec<u32> = best.tokens.iter().copied().filter(|&t| t != eos).collect();
                out.push(Translation {
                    text: self.target_tokenizer.decode_text(&target)?,
                    source_tokens: self.source_tokenizer.tokens(x),
                    target_tokens: self.target_tokenizer.tokens(&best.tokens),
                    attention: best.attention,
                    score: best.score,
                });
            }
        }
        Ok(out)
    }
}

/// The longest source the model's positions take (T5's relative positions and recurrent models
/// have no limit).
pub(crate) fn source_positions(model: &AutoModel) -> Option<usize> {
    match model {
        AutoModel::Bart(m) => Some(m.config.max_position_embeddings),
        AutoModel::Transformer(m) => Some(m.config.max_len),
        _ => None,
    }
}
