//! Cross-entropy of logits against integer targets: log-softmax and negative log-likelihood in one pass,
//! with `ignore_index` and label smoothing, as `torch.nn.functional.cross_entropy` defines them.
//!
//! Row loss with smoothing ε over V classes: `(1−ε)(lse − x_t) + ε(lse − mean(x))`.
//! Backward: `dx = g·(softmax(x) − (1−ε)·onehot(t) − ε/V)`, zero on ignored rows. The forward keeps only
//! each row's log-sum-exp; the probabilities are recomputed in the backward, which is cheaper than
//! storing a second logits-sized tensor.

use crate::{cpu, math};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::Mutex;

/// How per-row losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over the rows that are not ignored (0 when every row is ignored).
    #[default]
    Mean,
    Sum,
    /// One loss per row (0 for ignored rows).
    None,
}

/// Options of [`cross_entropy`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropy {
    /// Rows whose target equals this contribute nothing (PyTorch's default is -100).
    pub ignore_index: Option<i64>,
    pub label_smoothing: f32,
    pub reduction: Reduction,
}

struct CrossEntropyOp {
    opts: CrossEntropy,
    /// Per-row log-sum-exp, NaN for ignored rows.
    lse: Mutex<Vec<f32>>,
    count: Mutex<usize>,
}

fn targets_of(s: &CpuStorage, l: &Layout) -> Result<Vec<i64>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("cross_entropy: targets must be contiguous")
    };
    Ok(match s {
        CpuStorage::U32(t) => t[a..b].iter().map(|&v| v as i64).collect(),
        CpuStorage::I64(t) => t[a..b].to_vec(),
        CpuStorage::U8(t) => t[a..b].iter().map(|&v| v as i64).collect(),
        other => bail!(
            "cross_entropy: targets must be integers, got {:?}",
            other.dtype()
        ),
    })
}

impl CrossEntropyOp {
    fn ignored(&self, t: i64) -> bool {
        self.opts.ignore_index == Some(t)
    }
}

impl candle_core::CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "lingo-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(xs, xl, "cross_entropy")?;
        let targets = targets_of(ts, tl)?;
        let v = *xl.dims().last().unwrap_or(&1);
        let rows = targets.len();
        if rows * v != x.len() {
            bail!(
                "cross_entropy: {} targets for logits of shape {:?}",
                rows,
                xl.dims()
            );
        }
        if let Some(&bad) = targets
            .iter()
            .find(|&&t| !self.ignored(t) && (t < 0 || t as usize >= v))
        {
            bail!("cross_entropy: target {bad} is out of range for {v} classes");
        }
        let eps = self.opts.label_smoothing;
        let per_row: Vec<(f32, f32)> = (0..rows)
            .into_par_iter()
            .with_min_len(64)
            .map(|r| {
                let t = targets[r];
                if self.ignored(t) {
                    return (f32::NAN, 0.0);
                }
                let xr = &x[r * v..(r + 1) * v];
                let m = math::max(xr);
                let lse = m + math::sum_exp_shifted(xr, m).ln();
                let nll = lse - xr[t as usize];
                let loss = if eps > 0.0 {
                    (1.0 - eps) * nll + eps * (lse - math::sum(xr) / v as f32)
                } else {
                    nll
                };
                (lse, loss)
            })
            .collect();
        let count = targets.iter().filter(|&&t| !self.ignored(t)).count();
        *self.count.lock().expect("lock") = count;
        *self.lse.lock().expect("lock") = per_row.iter().map(|p| p.0).collect();
        let (out, shape): (Vec<f32>, Shape) = match self.opts.reduction {
            Reduction::None => (per_row.iter().map(|p| p.1).collect(), Shape::from(rows)),
            Reduction::Sum | Reduction::Mean => {
                let total: f64 = per_row.iter().map(|p| p.1 as f64).sum();
                let k = if self.opts.reduction == Reduction::Mean {
                    1.0 / count.max(1) as f64
                } else {
                    1.0
                };
                (vec![(total * k) as f32], Shape::from(()))
            }
        };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.lock().expect("lock");
        let count = *self.count.lock().expect("lock");
        let targets = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let v = x.dim(D::Minus1)?;
        let row_grad: Vec<f32> = match self.opts.reduction {
            Reduction::None => grad.flatten_all()?.to_vec1::<f32>()?,
            Reduction::Sum => vec![grad.to_scalar::<f32>()?; targets.len()],
            Reduction::Mean => vec![grad.to_scalar::<f32>()? / count.max(1) as f32; targets.len()],
        };
        let eps = self.opts.label_smoothing;
        let dx = cpu::with_data(x, "cross_entropy", |x| {
            let mut dx = vec![0f32; x.len()];
            cpu::par_rows(&mut dx, v, |row0, block| {
                for (r, dr) in block.chunks_mut(v).enumerate() {
                    let row = row0 + r;
                    if self.ignored(targets[row]) {
                        continue; // already zero
                    }
                    let g = row_grad[row];
                    let xr = &x[row * v..(row + 1) * v];
                    math::exp_shifted(dr, xr, lse[row]);
                    let smooth = eps / v as f32;
                    for d in dr.iter_mut() {
                        *d = g * (*d - smooth);
                    }
                    dr[targets[row] as usize] -= g * (1.0 - eps);
                }
            });
            dx
        })?;
        Ok((Some(cpu::tensor(dx, x.shape())?), None))
    }
}

/// Cross-entropy of `logits` (`[..., V]`) against integer `targets` (the leading dims, u32 or i64).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, opts: CrossEntropy) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let targets = targets.flatten_all()?;
    if logits.dim(0)? != targets.dim(0)? {
        bail!(
            "cross_entropy: {} rows of logits but {} targets",
            logits.dim(0)?,
            targets.dim(0)?
        );
    }
    if !(0.0..1.0).contains(&opts.label_smoothing) {
        bail!(
            "cross_entropy: label_smoothing must be in [0, 1), got {}",
            opts.label_smoothing
        );
    }
    if !logits.device().is_cpu() || logits.dtype() != DType::F32 {
        return cross_entropy_composed(&logits, &targets, opts);
    }
    let op = CrossEntropyOp {
        opts,
        lse: Mutex::new(Vec::new()),
        count: Mutex::new(0),
    };
    logits.contiguous()?.apply_op2(&targets.contiguous()?, op)
}

/// The composed candle expression the fused cross-entropy replaces.
pub fn cross_entropy_composed(
    logits: &Tensor,
    targets: &Tensor,
    opts: CrossEntropy,
) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let logp = crate::softmax::log_softmax_composed(logits)?;
    let t = targets.to_dtype(DType::I64)?;
    let keep = match opts.ignore_index {
        Some(i) => t.ne(i)?,
        None => t.ones_like()?.to_dtype(DType::U8)?,
    };
    let safe_t = keep
        .where_cond(&t, &t.zeros_like()?)?
        .to_dtype(DType::U32)?;
    let nll = logp.gather(&safe_t.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let eps = opts.label_smoothing as f64;
    let smooth = (logp.sum(1)?.neg()? / v as f64)?;
    let row = ((nll * (1.0 - eps))? + (smooth * eps)?)?;
    let keep_f = keep.to_dtype(DType::F32)?;
    let row = (row * &keep_f)?;
    match opts.reduction {
        Reduction::None => Ok(row),
        Reduction::Sum => row.sum_all(),
        Reduction::Mean => row.sum_all()? / keep_f.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};
    use candle_core::Device;

    fn targets() -> Tensor {
        Tensor::from_vec(vec![3i64, 0, -100, 6, 2, 6], 6, &Device::Cpu).unwrap()
    }

    #[test]
    fn gradients_for_every_reduction() -> Result<()> {
        let x = (random_tensor(&[6, 7], 1)? * 3.0)?;
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            for label_smoothing in [0.0, 0.1] {
                let opts = CrossEntropy {
                    ignore_index: Some(-100),
                    label_smoothing,
                    reduction,
                };
                let t = targets();
                check_gradients(
                    &move |xs| cross_entropy(&xs[0], &t, opts),
                    std::slice::from_ref(&x),
                    GradCheck::default(),
                )?;
            }
        }
        Ok(())
    }

    #[test]
    fn parity_with_composed() -> Result<()> {
        let x = (random_tensor(&[6, 1031], 2)? * 5.0)?;
        for label_smoothing in [0.0, 0.2] {
            for reduction in [Reduction::Mean, Reduction::None] {
                let opts = CrossEntropy {
                    ignore_index: Some(-100),
                    label_smoothing,
                    reduction,
                };
                let t = targets();
                let t2 = t.clone();
                check_parity(
                    &move |xs| cross_entropy(&xs[0], &t, opts),
                    &move |xs| cross_entropy_composed(&xs[0], &t2, opts),
                    std::slice::from_ref(&x),
                    1e-4,
                )?;
            }
        }
        Ok(())
    }

    #[test]
    fn out_of_range_target_is_an_error() {
        let x = random_tensor(&[2, 4], 1).unwrap();
        let t = Tensor::from_vec(vec![1u32, 4], 2, &Device::Cpu).unwrap();
        let err = cross_entropy(&x, &t, CrossEntropy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn all_ignored_gives_zero_loss() -> Result<()> {
        let x = random_tensor(&[2, 4], 1)?;
        let t = Tensor::from_vec(vec![-100i64, -100], 2, &Device::Cpu)?;
        let opts = CrossEntropy {
            ignore_index: Some(-100),
            ..Default::default()
        };
        assert_eq!(cross_entropy(&x, &t, opts)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }
}
