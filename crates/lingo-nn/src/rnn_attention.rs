//! Attention for recurrent decoders: a query (the decoder state) scores every encoder output, the
//! scores are softmaxed over the real (non-padding) source positions, and the weighted sum of the
//! encoder outputs is the context vector.
//!
//! - additive (Bahdanau et al., 2015; Luong's "concat"): `vᵀ tanh(W₁h + W₂s)`
//! - dot (Luong et al., 2015): `sᵀh`; scaled dot: `sᵀh / √d`
//! - general (Luong): `sᵀ W h`

use crate::linear::{Linear, LoopLinear};
use crate::params::{Init, ParamPath};
use candle_core::{bail, Result, Tensor};
use lingo_kernels::SharedGrad;
use serde::{Deserialize, Serialize};

/// How a query is scored against each encoder output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    Additive,
    Dot,
    ScaledDot,
    General,
}

#[derive(Clone, Debug)]
pub struct RnnAttention {
    pub score: Score,
    /// Additive: `W₁` over the memory; general: `W` over the memory.
    memory_proj: Option<Linear>,
    /// Additive: `W₂` over the query.
    query_proj: Option<Linear>,
    /// Additive: `v`, `[attention_dim, 1]`.
    v: Option<Tensor>,
    query_dim: usize,
}

impl RnnAttention {
    /// `query_dim`: decoder state width; `memory_dim`: encoder output width; `attention_dim`: width of
    /// the additive score's hidden layer.
    pub fn new(
        p: &ParamPath,
        score: Score,
        query_dim: usize,
        memory_dim: usize,
        attention_dim: usize,
    ) -> Result<Self> {
        let init = Init::Uniform(1.0 / (memory_dim.max(query_dim) as f32).sqrt());
        let (mut memory_proj, mut query_proj, mut v) = (None, None, None);
        match score {
            Score::Additive => {
                memory_proj = Some(Linear::new(
                    &p.sub("memory_proj"),
                    memory_dim,
                    attention_dim,
                    false,
                    init,
                )?);
                query_proj = Some(Linear::new(
                    &p.sub("query_proj"),
                    query_dim,
                    attention_dim,
                    true,
                    init,
                )?);
                v = Some(p.get(
                    "v",
                    &[attention_dim, 1],
                    Init::Uniform(1.0 / (attention_dim as f32).sqrt()),
                )?);
            }
            Score::General => {
                memory_proj = Some(Linear::new(
                    &p.sub("memory_proj"),
                    memory_dim,
                    query_dim,
                    false,
                    init,
                )?);
            }
            Score::Dot | Score::ScaledDot => {
                if memory_dim != query_dim {
                    bail!("{score:?} attention needs the encoder output width ({memory_dim}) to equal the decoder state width ({query_dim}); use `general` or `additive`");
                }
            }
        }
        Ok(RnnAttention {
            score,
            memory_proj,
            query_proj,
            v,
            query_dim,
        })
    }

    /// What can be computed once per source sentence: the projected memory (`[batch, src, ·]`).
    pub fn keys(&self, memory: &Tensor) -> Result<Tensor> {
        match &self.memory_proj {
            Some(p) => p.forward(memory),
            None => Ok(memory.clone()),
        }
    }

    /// Context `[batch, memory_dim]` and weights `[batch, src]` for `query: [batch, query_dim]` over
    /// `memory: [batch, src, memory_dim]`; `keep: [batch, src]` is non-zero at real source tokens.
    pub fn attend(
        &self,
        query: &Tensor,
        memory: &Tensor,
        keys: &Tensor,
        keep: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        self.in_loop(memory, keys).attend(query, keep)
    }

    /// Prepares attention over one memory for a decoder loop: the gradients of the memory, the keys
    /// and the score weights are summed in place across the steps (see
    /// [`lingo_kernels::SharedGrad`]). Every step must feed the loss.
    pub fn in_loop(&self, memory: &Tensor, keys: &Tensor) -> AttentionLoop<'_> {
        AttentionLoop {
            attention: self,
            dmemory: SharedGrad::new(memory),
            dkeys: SharedGrad::new(keys),
            dv: self.v.as_ref().map(SharedGrad::new),
            query_proj: self.query_proj.as_ref().map(Linear::in_loop),
            memory: memory.clone(),
            keys: keys.clone(),
        }
    }
}

/// [`RnnAttention`] over one memory, queried at every step of a decoder ([`RnnAttention::in_loop`]).
pub struct AttentionLoop<'a> {
    attention: &'a RnnAttention,
    memory: Tensor,
    keys: Tensor,
    dmemory: SharedGrad,
    dkeys: SharedGrad,
    dv: Option<SharedGrad>,
    query_proj: Option<LoopLinear<'a>>,
}

impl AttentionLoop<'_> {
    /// Context `[batch, memory_dim]` and weights `[batch, src]` for `query: [batch, query_dim]`;
    /// `keep: [batch, src]` is non-zero at real source tokens.
    pub fn attend(&self, query: &Tensor, keep: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = self.attention;
        let keys = &self.keys;
        let scores = match a.score {
            Score::Additive => {
                let (Some(qp), Some(v), Some(dv)) = (&self.query_proj, &a.v, &self.dv) else {
                    bail!("additive attention without its weights")
                };
                lingo_kernels::additive_scores_shared(
                    keys,
                    &qp.forward(query)?,
                    v,
                    &self.dkeys,
                    dv,
                )?
            }
            Score::Dot | Score::General | Score::ScaledDot => {
                let s = keys
                    .matmul(&query.unsqueeze(2)?.contiguous()?)?
                    .squeeze(2)?;
                if a.score == Score::ScaledDot {
                    (s / (a.query_dim as f64).sqrt())?
                } else {
                    s
                }
            }
        };
        let weights = lingo_kernels::softmax_masked(&scores, keep)?;
        let context = lingo_kernels::weighted_sum_shared(&weights, &self.memory, &self.dmemory)?;
        Ok((context, weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::Device;
    use lingo_kernels::gradcheck::random_tensor;

    #[test]
    fn weights_ignore_padding_and_sum_to_one_for_every_score() -> Result<()> {
        let memory = random_tensor(&[2, 5, 6], 1)?;
        let query = random_tensor(&[2, 6], 2)?;
        let keep = Tensor::from_vec(vec![1u8, 1, 1, 1, 1, 1, 1, 0, 0, 0], (2, 5), &Device::Cpu)?;
        for score in [
            Score::Additive,
            Score::Dot,
            Score::ScaledDot,
            Score::General,
        ] {
            let store = ParamStore::new(0, &Device::Cpu);
            let att = RnnAttention::new(&store.root(), score, 6, 6, 4)?;
            let keys = att.keys(&memory)?;
            let (ctx, w) = att.attend(&query, &memory, &keys, &keep)?;
            assert_eq!(ctx.dims(), [2, 6]);
            let w = w.to_vec2::<f32>()?;
            assert!(
                w.iter().all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5),
                "{score:?}"
            );
            assert_eq!(&w[1][2..], &[0.0, 0.0, 0.0], "{score:?}");
            // The context of sequence 1 must not depend on its padding.
            let changed = memory.slice_assign(
                &[1..2, 2..5, 0..6],
                &(random_tensor(&[1, 3, 6], 9)? * 10.0)?,
            )?;
            let (ctx2, _) = att.attend(&query, &changed, &att.keys(&changed)?, &keep)?;
            let d = (ctx.get(1)? - ctx2.get(1)?)?
                .abs()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(d < 1e-6, "{score:?}: padding leaked ({d})");
        }
        Ok(())
    }

    #[test]
    fn dot_attention_rejects_mismatched_widths() {
        let store = ParamStore::new(0, &Device::Cpu);
        let err = RnnAttention::new(&store.root(), Score::Dot, 4, 8, 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use `general`"), "{err}");
    }
}
