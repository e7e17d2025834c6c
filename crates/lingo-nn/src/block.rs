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
        self.around_attention(x, ctx, |h, ctx| {
            self.attn.forward(h, mask, cache, want_weights, ctx)
        })
    }

    /// One new position for each of several sequences, each with its own cache (see
    /// [`MultiHeadSelfAttention::forward_rows`]); inference only.
    pub fn forward_rows(&self, x: &Tensor, caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let attend = |h: &Tensor, _: &mut Ctx| Ok((self.attn.forward_rows(h, caches)?, None));
        Ok(self.around_attention(x, &mut Ctx::eval(), attend)?.0)
    }

    /// The residual connections and norms around `attend` and the feed-forward sub-layer.
    fn around_attention(
        &self,
        x: &Tensor,
        ctx: &mut Ctx,
        attend: impl FnOnce(&Tensor, &mut Ctx) -> Result<(Tensor, Option<Tensor>)>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self.placement {
            NormPlacement::Pre => {
                let (a, w) = attend(&self.norm1.forward(x)?, ctx)?;
                let x = (x + self.dropout.forward(&a, ctx)?)?;
                let m = self.mlp.forward(&self.norm2.forward(&x)?)?;
                Ok(((&x + self.dropout.forward(&m, ctx)?)?, w))
            }
            NormPlacement::Post => {
                let (a, w) = attend(x, ctx)?;
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
