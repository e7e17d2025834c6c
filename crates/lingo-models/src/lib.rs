//! Lingo's models, one file per family, each reading top to bottom like its paper.
//!
//! - [`gpt`]: decoder-only Transformer language model (GPT-2 style).

pub mod config;
pub mod gpt;

pub use config::ConfigError;
pub use gpt::{Gpt, GptConfig};

use candle_core::{Result, Tensor};
use lingo_nn::KvCache;
use serde::{Deserialize, Serialize};

/// The `config.json` of a Lingo model folder: the architecture named by `model_type`, then its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model_type")]
pub enum ModelConfig {
    #[serde(rename = "lingo-gpt")]
    Gpt(GptConfig),
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
