//! The Transformer block: attention and feed-forward sub-layers, each wrapped in a residual connection
//! with layer norm either before the sub-layer (pre-norm, GPT-2) or after the residual sum (post-norm,
//! the original Transformer and BERT).

use crate::attention::{KvCache, MultiHeadSelfAttention};
use crate::dropout::Dropout;
use crate::feed_forward::FeedForward;
use crate::norm::LayerNorm;
use crate::Ctx;
use candle_core::{Result, Tensor};
use lingo_kernels::AttentionMask;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// `x + f(norm(x))`: stable without warm-up tricks, used by GPT-2 and most modern models.
    #[default]
    Pre,
    /// `norm(x + f(x))`: the original Transformer and BERT.
    Post,
}

#[derive(Clone, Debug)]
pub struct TransformerBlock {
    pub norm1: LayerNorm,
    pub attn: MultiHeadSelfAttention,
    pub norm2: LayerNorm,
    pub mlp: FeedForward,
    pub dropout: Dropout,
    pub placement: NormPlacement,
}

impl TransformerBlock {
    /// Returns the block's output and, if asked, its attention weights.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self.placement {
            NormPlacement::Pre => {
                let (a, w) =
                    self.attn
                        .forward(&self.norm1.forward(x)?, mask, cache, want_weights, ctx)?;
                let x = (x + self.dropout.forward(&a, ctx)?)?;
                let m = self.mlp.forward(&self.norm2.forward(&x)?)?;
                Ok(((&x + self.dropout.forward(&m, ctx)?)?, w))
            }
            NormPlacement::Post => {
                let (a, w) = self.attn.forward(x, mask, cache, want_weights, ctx)?;
                let x = self.norm1.forward(&(x + self.dropout.forward(&a, ctx)?)?)?;
                let m = self.mlp.forward(&x)?;
                Ok((
                    self.norm2
                        .forward(&(&x + self.dropout.forward(&m, ctx)?)?)?,
                    w,
                ))
            }
        }
    }
}
