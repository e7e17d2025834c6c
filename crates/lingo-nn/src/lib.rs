//! Layers for Lingo's models: parameters with seeded initialisation, and the building blocks of
//! Transformers (linear, embedding, norms, positions, dropout, attention, feed-forward, residual blocks).
//! Every layer computes through [`lingo_kernels`], so gradients reach every parameter.

pub mod attention;
pub mod attention_pattern;
pub mod block;
pub mod crf;
pub mod dropout;
pub mod embedding;
pub mod feed_forward;
pub mod io;
pub mod linear;
pub mod norm;
pub mod params;
pub mod pipeline;
pub mod position;
pub mod recompute;
pub mod recurrent;
pub mod rng;
pub mod rnn_attention;
pub mod tensor_parallel;

pub use attention::{DecoderLayerCache, KvCache, MultiHeadAttention, MultiHeadSelfAttention};
pub use attention_pattern::{
    AttentionKind, Linformer, LinformerSharing, Lsh, Pattern, PatternConfig,
};
pub use block::{NormPlacement, TransformerBlock};
pub use crf::Crf;
pub use dropout::Dropout;
pub use embedding::{Embedding, LoopEmbedding};
pub use feed_forward::{Activation, FeedForward};
pub use linear::{Linear, LinearWeight, LoopLinear};
pub use norm::{LayerNorm, RmsNorm};
pub use params::{Init, LinearPrecision, ParamPath, ParamSource, ParamStore, SublayerInit};
pub use position::{sinusoidal_table, PositionalEncoding};
pub use recurrent::{CellKind, Recurrent, RecurrentConfig, RecurrentOutput, Stepper};
pub use rng::{LingoRng, RngState};
pub use rnn_attention::{AttentionLoop, RnnAttention, Score};

/// What a forward pass is for: training (dropout on, drawing from the run's RNG) or evaluation.
pub struct Ctx {
    pub train: bool,
    pub rng: LingoRng,
    /// Gradient checkpointing: blocks keep only their inputs and are recomputed in the backward
    /// pass, their parameters' gradients gathered here (see [`recompute`]).
    pub recompute: Option<recompute::Recomputed>,
}

impl Ctx {
    pub fn eval() -> Self {
        Ctx {
            train: false,
            rng: LingoRng::new(0),
            recompute: None,
        }
    }
    pub fn train(rng: LingoRng) -> Self {
        Ctx {
            train: true,
            rng,
            recompute: None,
        }
    }
}
