//! Embedding lookup `table[ids]`. The backward adds each output row's gradient into the row of the
//! table it came from, in token order (deterministic), instead of candle's generic `index_add` path;
//! the row of a padding id gets no gradient, as PyTorch's `nn.Embedding(padding_idx=…)` gives it none.

use crate::shared_grad::{self, Reader, SharedGrad};
use crate::{cpu, math};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};

/// `dtable`: where the table gradient is summed when the table is read in a loop.
#[derive(Default)]
struct EmbeddingOp {
    dtable: Option<Reader>,
    padding_idx: Option<usize>,
}

fn ids_of(s: &CpuStorage, l: &Layout, rows: usize) -> Result<Vec<usize>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("embedding: ids must be contiguous")
    };
    let ids: Vec<i64> = match s {
        CpuStorage::U32(t) => t[a..b].iter().map(|&v| v as i64).collect(),
        CpuStorage::I64(t) => t[a..b].to_vec(),
        CpuStorage::U8(t) => t[a..b].iter().map(|&v| v as i64).collect(),
        other => bail!("embedding: ids must be integers, got {:?}", other.dtype()),
    };
    if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= rows) {
        bail!("embedding: id {bad} is out of range for a table of {rows} rows");
    }
    Ok(ids.into_iter().map(|i| i as usize).collect())
}

impl candle_core::CustomOp2 for EmbeddingOp {
    fn name(&self) -> &'static str {
        "lingo-embedding"
    }

    fn cpu_fwd(
        &self,
        ts: &CpuStorage,
        tl: &Layout,
        is: &CpuStorage,
        il: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let table = cpu::slice(ts, tl, "embedding")?;
        let (rows, dim) = tl.shape().dims2()?;
        let ids = ids_of(is, il, rows)?;
        let mut out = vec![0f32; ids.len() * dim];
        cpu::par_rows(&mut out, dim, |row0, block| {
            for (r, o) in block.chunks_mut(dim).enumerate() {
                let id = ids[row0 + r];
                o.copy_from_slice(&table[id * dim..(id + 1) * dim]);
            }
        });
        let mut dims = il.dims().to_vec();
        dims.push(dim);
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dim = table.dim(1)?;
        let ids = ids.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let dt = shared_grad::gradient(self.dtable.as_ref(), table, |dt| {
            cpu::with_data(grad, "embedding", |g| {
                for (k, &id) in ids.iter().enumerate() {
                    let id = id as usize;
                    if Some(id) == self.padding_idx {
                        continue;
                    }
                    math::add_assign(
                        &mut dt[id * dim..(id + 1) * dim],
                        &g[k * dim..(k + 1) * dim],
                    );
                }
            })
        })?;
        Ok((dt, None))
    }
}

/// Rows of `table` (`[rows, dim]`) picked by integer `ids` of any shape; the result is `[ids..., dim]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    apply(table, ids, EmbeddingOp::default())
}

/// [`embedding`] whose `padding_idx` row receives no gradient (it stays as loaded or initialised).
pub fn embedding_padded(
    table: &Tensor,
    ids: &Tensor,
    padding_idx: Option<usize>,
) -> Result<Tensor> {
    apply(
        table,
        ids,
        EmbeddingOp {
            dtable: None,
            padding_idx,
        },
    )
}

/// [`embedding`] for a table looked up at every step of a loop: the table gradients of all steps are
/// summed in place into `dtable` (see [`SharedGrad`]).
pub fn embedding_shared(table: &Tensor, ids: &Tensor, dtable: &SharedGrad) -> Result<Tensor> {
    shared_grad::check_input(table, "embedding table")?;
    let op = EmbeddingOp {
        dtable: Some(dtable.reader()),
        padding_idx: None,
    };
    apply(table, ids, op)
}

fn apply(table: &Tensor, ids: &Tensor, op: EmbeddingOp) -> Result<Tensor> {
    let (rows, _) = table.dims2()?;
    if !table.device().is_cpu() || table.dtype() != DType::F32 {
        let flat = ids.flatten_all()?;
        let max = flat.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if max >= rows as f64 {
            bail!("embedding: id {max} is out of range for a table of {rows} rows");
        }
        let mut dims = ids.dims().to_vec();
        dims.push(table.dim(1)?);
        return table.index_select(&flat, 0)?.reshape(dims);
    }
    table.contiguous()?.apply_op2(&ids.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};
    use candle_core::Device;

    fn ids() -> Tensor {
        Tensor::from_vec(vec![1u32, 4, 1, 0, 4, 4], (2, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn gradients_accumulate_repeated_ids() -> Result<()> {
        let table = random_tensor(&[5, 3], 1)?;
        let i = ids();
        check_gradients(
            &move |t| embedding(&t[0], &i),
            &[table],
            GradCheck::default(),
        )
    }

    #[test]
    fn the_padding_row_gets_no_gradient() -> Result<()> {
        let table = candle_core::Var::from_tensor(&random_tensor(&[5, 3], 1)?)?;
        let out = embedding_padded(table.as_tensor(), &ids(), Some(4))?;
        let grads = out.sum_all()?.backward()?;
        let g = grads
            .get(table.as_tensor())
            .expect("gradient")
            .to_vec2::<f32>()?;
        // Ids 1, 4, 1, 0, 4, 4: row 1 twice, row 0 once, row 4 (padding) never.
        assert_eq!((g[1][0], g[0][0], g[4][0], g[2][0]), (2.0, 1.0, 0.0, 0.0));
        Ok(())
    }

    #[test]
    fn parity_with_index_select() -> Result<()> {
        let table = random_tensor(&[5, 3], 1)?;
        let (i, j) = (ids(), ids());
        check_parity(
            &move |t| embedding(&t[0], &i),
            &move |t| t[0].index_select(&j.flatten_all()?, 0)?.reshape((2, 3, 3)),
            &[table],
            1e-6,
        )
    }

    #[test]
    fn out_of_range_id_is_an_error() {
        let table = random_tensor(&[5, 3], 1).unwrap();
        let ids = Tensor::from_vec(vec![5u32], 1, &Device::Cpu).unwrap();
        assert!(embedding(&table, &ids)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }
}
