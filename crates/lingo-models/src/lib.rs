//! Lingo's models, one file per family, each reading top to bottom like its paper.
//!
//! - [`bert`]: the BERT family of encoders (BERT, RoBERTa, ELECTRA, ALBERT, DistilBERT) with heads,
//!   loaded from Hugging Face checkpoints ([`hf`]).
//! - [`bart`]: BART and Marian encoder–decoders, loaded from Hugging Face checkpoints.
//! - [`gpt`]: decoder-only Transformer language model (GPT-2 style).
//! - [`transformer`]: the original encoder–decoder Transformer, trained from scratch.
//! - [`t5`]: T5 v1.0 and v1.1, loaded from Hugging Face checkpoints.
//! - [`rnn_seq2seq`]: recurrent encoder–decoder with Bahdanau or Luong attention.

pub mod auto;
pub mod bart;
pub mod bert;
pub mod cached_decoding;
pub mod config;
pub mod gpt;
pub mod hf;
pub mod hub;
pub mod rnn_seq2seq;
pub mod t5;
pub mod transformer;

pub use config::ConfigError;
pub use gpt::{Gpt, GptConfig};
pub use rnn_seq2seq::{RnnSeq2Seq, RnnSeq2SeqConfig, Seq2SeqAttention};

use candle_core::{DType, Result, Tensor};

/// The padding mask of a padded batch: `[batch, width]` of `dtype`, 1 at the first `lengths[i]`
/// positions of row `i`, 0 after.
pub fn length_mask(
    lengths: &[usize],
    width: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let keep: Vec<u8> = lengths
        .iter()
        .flat_map(|&l| (0..width).map(move |j| u8::from(j < l)))
        .collect();
    Tensor::from_vec(keep, (lengths.len(), width), device)?.to_dtype(dtype)
}
use lingo_nn::KvCache;
use serde::{Deserialize, Serialize};

/// Tensors that travel together through decoding, each with the batch as its first dimension, so a
/// beam search can reorder or replicate them without knowing what they mean.
#[derive(Clone, Debug)]
pub struct Batched(pub Vec<Tensor>);

impl Batched {
    /// The rows `rows` (u32 indices, repeats allowed) of every tensor.
    pub fn select(&self, rows: &Tensor) -> Result<Batched> {
        Ok(Batched(
            self.0
                .iter()
                .map(|t| t.index_select(rows, 0))
                .collect::<Result<_>>()?,
        ))
    }
}

/// An encoder–decoder that produces one target token at a time, for greedy and beam search.
pub trait Seq2SeqLm {
    fn bos_id(&self) -> u32;
    fn eos_id(&self) -> u32;
    fn target_vocab_size(&self) -> usize;
    /// Encodes a padded source batch `[batch, src]` with its real lengths.
    fn encode(&self, src: &Tensor, lengths: &[usize]) -> Result<Batched>;
    /// The decoder state before the first target token.
    fn initial_state(&self, memory: &Batched) -> Result<Batched>;
    /// Log-probabilities of the next token `[rows, vocab]` after `last` (`[rows]`), the new state, and
    /// the attention weights over the source `[rows, src]` if the model attends.
    fn decode_step(
        &self,
        memory: &Batched,
        state: &Batched,
        last: &Tensor,
    ) -> Result<(Tensor, Batched, Option<Tensor>)>;
}

/// The `config.json` of a Lingo model folder: the architecture named by `model_type`, then its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model_type")]
pub enum ModelConfig {
    #[serde(rename = "lingo-gpt")]
    Gpt(GptConfig),
    #[serde(rename = "lingo-rnn-seq2seq")]
    RnnSeq2Seq(RnnSeq2SeqConfig),
    #[serde(rename = "lingo-transformer")]
    Transformer(transformer::TransformerConfig),
}

/// A model that predicts the next token, for the decoding strategies in `lingo-generate`.
pub trait CausalLm {
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt plus generated tokens) the model can attend over.
    fn context_length(&self) -> usize;
    /// A fresh, empty cache for every layer.
    fn new_cache(&self) -> Vec<KvCache>;
    /// Logits `[batch, new, vocab]` for `ids: [batch, new]`, the positions after those in `cache`,
    /// which is extended with them.
    fn forward_cached(&self, ids: &Tensor, cache: &mut [KvCache]) -> Result<Tensor>;
}

/// A padded toy batch for the seq2seq models' tests: source `[2, 5]` (lengths 5 and 2), target
/// input (BOS first) and output (EOS last) `[2, 4]`, pad 0, tokens below 9.
#[cfg(test)]
pub(crate) fn toy_seq2seq_batch() -> (Tensor, Vec<usize>, Tensor, Tensor) {
    let d = &candle_core::Device::Cpu;
    let src = Tensor::from_vec(vec![3u32, 4, 5, 6, 7, 8, 3, 0, 0, 0], (2, 5), d).unwrap();
    let tgt_in = Tensor::from_vec(vec![1u32, 3, 4, 5, 1, 6, 0, 0], (2, 4), d).unwrap();
    let tgt_out = Tensor::from_vec(vec![3u32, 4, 5, 2, 6, 2, 0, 0], (2, 4), d).unwrap();
    (src, vec![5, 2], tgt_in, tgt_out)
}
