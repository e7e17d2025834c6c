use crate::params::{Init, ParamPath};
use candle_core::{Result, Tensor};
use lingo_kernels::SharedGrad;

/// A lookup table of `rows` vectors of width `dim`.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(p: &ParamPath, rows: usize, dim: usize, init: Init) -> Result<Self> {
        Ok(Embedding {
            weight: p.get("weight", &[rows, dim], init)?,
        })
    }

    /// `ids` of any shape → `[ids..., dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        lingo_kernels::embedding(&self.weight, ids)
    }
}

/// An [`Embedding`] looked up at every step of a loop: the table gradients of all steps are summed in
/// place (see [`lingo_kernels::SharedGrad`]). Make one per forward pass; every step must feed the loss.
pub struct LoopEmbedding<'a> {
    table: &'a Embedding,
    dtable: SharedGrad,
}

impl Embedding {
    pub fn in_loop(&self) -> LoopEmbedding<'_> {
        LoopEmbedding {
            table: self,
            dtable: SharedGrad::new(&self.weight),
        }
    }
}

impl LoopEmbedding<'_> {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        lingo_kernels::embedding_shared(&self.table.weight, ids, &self.dtable)
    }
}
