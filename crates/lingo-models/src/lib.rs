//! Lingo's models, one file per family, each reading top to bottom like its paper.
//!
//! - [`bert`]: the BERT family of encoders (BERT, RoBERTa, ELECTRA, ALBERT, DistilBERT) with heads,
//!   loaded from Hugging Face checkpoints ([`hf`]).
//! - [`bart`]: BART and Marian encoder–decoders, loaded from Hugging Face checkpoints.
//! - [`gpt`]: decoder-only Transformer language model (GPT-2 style).
//! - [`transformer`]: the original encoder–decoder Transformer, trained from scratch.
//! - [`t5`]: T5 v1.0 and v1.1, loaded from Hugging Face checkpoints.
//! - [`rnn_lm`]: recurrent language model (Zaremba et al.), and sentences generated from a label.
//! - [`rnn_seq2seq`]: recurrent encoder–decoder with Bahdanau or Luong attention.
//!
//! Any of them loads with int8 linear layers for inference ([`quantize`]).

pub mod auto;
pub mod bart;
pub mod bert;
pub mod cached_decoding;
pub mod config;
pub mod contracts;
pub mod gpt;
pub mod hf;
pub mod hub;
pub mod outputs;
pub mod presets;
pub mod quantize;
pub mod rnn;
pub mod rnn_lm;
pub mod rnn_seq2seq;
pub mod t5;
pub mod transformer;

pub use config::{ConfigError, ModelConfig};
pub use contracts::{Batched, CausalLm, Seq2SeqBatch, Seq2SeqLm, Seq2SeqLoss, Seq2SeqTrain};
pub use gpt::{Gpt, GptConfig};
pub use outputs::{ModelInputs, ModelOutput, Trace};
pub use quantize::Quantization;
pub use rnn::{
    Pooling, RnnClassifier, RnnClassifierConfig, RnnTagger, RnnTaggerConfig, TaggerBatch,
};
pub use rnn_lm::{LmState, RnnLm, RnnLmConfig};
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
/// A padded toy batch for the seq2seq models' tests: sources of lengths 5 and 2, targets of 3
/// and 1 tokens (then EOS 2), start token 1, pad 0, tokens below 9.
#[cfg(test)]
pub(crate) fn toy_seq2seq_batch() -> Seq2SeqBatch {
    let pairs: [(&[u32], &[u32]); 2] = [(&[3, 4, 5, 6, 7], &[3, 4, 5, 2]), (&[8, 3], &[6, 2])];
    Seq2SeqBatch::new(&pairs, 0, 1, &candle_core::Device::Cpu).expect("a valid toy batch")
}
