use crate::params::{Init, ParamPath};
use candle_core::{Result, Tensor};

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
