//! Tensor parallelism (Megatron-LM, Shoeybi et al. 2019) for inference: every rank holds the whole
//! model but computes a share of each layer — its share of the attention heads and of the
//! feed-forward neurons. The first projection of each pair is split by output features
//! (column-parallel: the q/k/v of the rank's heads, the up-projection's rank's neurons), the
//! second by input features (row-parallel), whose partial outputs are summed over the ranks
//! before the bias is added once: two all-reduces per layer, and no other exchange. Norms,
//! embeddings and the output layer are replicated.

use crate::attention::{MultiHeadAttention, MultiHeadSelfAttention};
use crate::feed_forward::FeedForward;
use crate::pipeline::split_layers;
use candle_core::{Result, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// A sum over the ranks of a tensor every rank holds (an all-reduce), same shape out.
pub type SumOverRanks = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;

/// How a row-parallel layer sums its partial outputs over the ranks.
#[derive(Clone)]
pub struct Reduce(pub Arc<SumOverRanks>);

impl Reduce {
    pub fn sum(&self, t: &Tensor) -> Result<Tensor> {
        (self.0)(t)
    }
}

impl std::fmt::Debug for Reduce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reduce")
    }
}

/// Rank `rank`'s share of the `heads` heads of `world` ranks (heads must divide evenly).
fn head_share(heads: usize, rank: usize, world: usize) -> Result<Range<usize>> {
    if world == 0 || !heads.is_multiple_of(world) {
        candle_core::bail!("{heads} attention heads do not split evenly over {world} ranks");
    }
    let per = heads / world;
    Ok(rank * per..(rank + 1) * per)
}

fn scaled(r: &Range<usize>, by: usize, offset: usize) -> Range<usize> {
    offset + r.start * by..offset + r.end * by
}

impl MultiHeadSelfAttention {
    /// Rank `rank` of `world`'s share: its heads' q, k and v, and the output projection's rows
    /// for them, summed over the ranks by `reduce`.
    pub fn tensor_parallel(&self, rank: usize, world: usize, reduce: &Reduce) -> Result<Self> {
        let (three_d, _) = self.qkv.dims()?;
        let d = three_d / 3;
        let hd = d / self.heads;
        let mine = head_share(self.heads, rank, world)?;
        let cols = [0, d, 2 * d].map(|offset| scaled(&mine, hd, offset));
        Ok(MultiHeadSelfAttention {
            qkv: self.qkv.keep_outputs(&cols)?,
            out: self
                .out
                .row_parallel(scaled(&mine, hd, 0), reduce.clone())?,
            heads: mine.len(),
            ..self.clone()
        })
    }
}

impl MultiHeadAttention {
    /// As [`MultiHeadSelfAttention::tensor_parallel`], for separate q, k and v projections.
    pub fn tensor_parallel(&self, rank: usize, world: usize, reduce: &Reduce) -> Result<Self> {
        let (inner, _) = self.q.dims()?;
        let hd = inner / self.heads;
        let mine = head_share(self.heads, rank, world)?;
        let cols = [scaled(&mine, hd, 0)];
        let k = match &self.k {
            Some(k) => Some(k.keep_outputs(&cols)?),
            None => {
                candle_core::bail!("shared-QK (LSH) attention is not split by tensor parallelism")
            }
        };
        Ok(MultiHeadAttention {
            q: self.q.keep_outputs(&cols)?,
            k,
            v: self.v.keep_outputs(&cols)?,
            out: self.out.row_parallel(cols[0].clone(), reduce.clone())?,
            heads: mine.len(),
            ..self.clone()
        })
    }
}

impl FeedForward {
    /// Rank `rank` of `world`'s share of the neurons (as even as they split): the up-projection's
    /// rows and the down-projection's columns, summed over the ranks by `reduce`.
    pub fn tensor_parallel(&self, rank: usize, world: usize, reduce: &Reduce) -> Result<Self> {
        let (d_ff, _) = self.up.dims()?;
        let (up, down) = split_pair(&self.up, &self.down, d_ff, rank, world, reduce)?;
        Ok(FeedForward {
            up,
            down,
            activation: self.activation,
        })
    }
}

/// A column-parallel `up` and row-parallel `down` over rank `rank`'s share of `width` features.
pub fn split_pair(
    up: &crate::Linear,
    down: &crate::Linear,
    width: usize,
    rank: usize,
    world: usize,
    reduce: &Reduce,
) -> Result<(crate::Linear, crate::Linear)> {
    let mine = split_layers(width, world)[rank].clone();
    Ok((
        up.keep_outputs(std::slice::from_ref(&mine))?,
        down.row_parallel(mine, reduce.clone())?,
    ))
}
