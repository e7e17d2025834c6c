use crate::params::{Init, ParamPath};
use candle_core::{DType, Result, Tensor};
use lingo_kernels::SharedGrad;

/// A lookup table of `rows` vectors of width `dim`: f32, or bf16 in a store that holds linear
/// weights in bf16 (inference), whose lookups convert the rows they read to f32.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub weight: Tensor,
    /// The row of this id gets no gradient (PyTorch's `padding_idx`).
    pub padding_idx: Option<usize>,
}

impl Embedding {
    pub fn new(p: &ParamPath, rows: usize, dim: usize, init: Init) -> Result<Self> {
        Ok(Embedding {
            weight: p.table("weight", &[rows, dim], init)?,
            padding_idx: None,
        })
    }

    /// This table with `padding_idx`'s row kept out of training.
    pub fn with_padding_idx(self, padding_idx: usize) -> Self {
        Embedding {
            padding_idx: Some(padding_idx),
            ..self
        }
    }

    /// `ids` of any shape → `[ids..., dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if self.weight.dtype() == DType::BF16 {
            let mut dims = ids.dims().to_vec();
            dims.push(self.weight.dim(1)?);
            let rows = self.weight.index_select(&ids.flatten_all()?, 0)?;
            return rows.to_dtype(DType::F32)?.reshape(dims);
        }
        lingo_kernels::embedding_padded(&self.weight, ids, self.padding_idx)
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
        if self.table.weight.dtype() == DType::BF16 {
            return self.table.forward(ids); // inference: nothing to share
        }
        lingo_kernels::embedding_shared(&self.table.weight, ids, &self.dtable)
    }
}
