//! Lingo's fused CPU kernels.
//!
//! candle's own fused `softmax_last_dim`, `layer_norm`, `rms_norm` and `sdpa` have no backward pass, so
//! a model trained through them silently stops learning upstream. Every op here is a candle custom op with
//! a vectorised, row-parallel CPU forward *and* a backward, proven by a finite-difference gradient check
//! and by parity with the composed candle expression it replaces.
//!
//! Each public function takes and returns ordinary [`candle_core::Tensor`]s. On a non-CPU device it
//! falls back to the composed candle expression (slower, but differentiable), so models written against
//! these functions run everywhere.
//!
//! | file | op |
//! |---|---|
//! | [`linear`] | `x Wᵀ + b` with the bias folded into the matrix multiply |
//! | [`embedding`] | row lookup whose backward scatters into the table |
//! | [`layer_norm`], [`rms_norm`] | normalisation with and without bias |
//! | [`softmax`] | softmax / log-softmax over the last dim, optional boolean mask |
//! | [`cross_entropy`] | log-softmax + NLL with `ignore_index` and label smoothing |
//! | [`gelu`] | GELU, erf and tanh forms |
//! | [`attention`] | scaled dot-product attention, causal/padding masks, weights on request |
//! | [`amx`] | AMX tile products for bf16 weights (Sapphire Rapids and later) |
//! | [`bf16`] | bf16 linear weights for inference, packed once, f32 accumulation |
//! | [`int8`] | dynamic int8 linear layers: VNNI, AVX2 and portable integer kernels |
//! | [`mixed_precision`] | bf16 matrix products with f32 accumulation (AVX-512 BF16) |
//! | [`optim`] | in-place AdamW / SGD updates and gradient norms |
//! | [`shared_grad`] | one in-place gradient sum for a tensor read at every step of a loop |

pub mod additive_attention;
pub mod amx;
pub mod attention;
pub mod bf16;
mod cpu;
pub mod cross_entropy;
pub mod denormals;
pub mod dropout;
pub mod embedding;
mod few_rows;
pub mod gelu;
pub mod gradcheck;
pub mod int8;
pub mod layer_norm;
pub mod linear;
pub mod math;
pub mod mixed_precision;
pub mod optim;
pub mod recurrent;
pub mod rms_norm;
pub mod shared_grad;
pub mod softmax;
pub mod weighted_sum;
pub mod window_attention;

pub use additive_attention::{additive_scores, additive_scores_shared};
pub use attention::{
    attention, attention_with_weights, self_attention, AttentionDropout, AttentionMask,
};
pub use bf16::{linear_bf16, Bf16Matrix};
pub use cross_entropy::{cross_entropy, CrossEntropy};
pub use denormals::flush_denormals;
pub use dropout::dropout;
pub use embedding::{embedding, embedding_padded, embedding_shared};
pub use gelu::{gelu, GeluForm};
pub use int8::{linear_int8, linear_int8_many, Int8Kernel, Int8Matrix};
pub use layer_norm::layer_norm;
pub use linear::{linear, linear_shared, linear_transposed, params_changed, params_version};
pub use recurrent::{recurrent_step, recurrent_step_at, Cell};
pub use rms_norm::rms_norm;
pub use shared_grad::SharedGrad;
pub use softmax::{log_softmax, softmax, softmax_masked};
pub use weighted_sum::{weighted_sum, weighted_sum_shared};
