//! The context vector of recurrent attention, `c[b] = Σⱼ w[b, j] · m[b, j, :]`, as one op. As a batched
//! `[1, src] × [src, dim]` matrix product it is a tiny `gemm` per batch row, three times over with the
//! backward; as plain loops it is one pass over the memory each way:
//! `dm[b, j, :] = w[b, j] · dc[b, :]`, `dw[b, j] = m[b, j, :] · dc[b, :]`.

use crate::shared_grad::{self, Reader, SharedGrad};
use crate::{cpu, math};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `dmemory`: where the memory gradient is summed when the op runs at every decoder step.
#[derive(Default)]
struct WeightedSum {
    dmemory: Option<Reader>,
}

impl candle_core::CustomOp2 for WeightedSum {
    fn name(&self) -> &'static str {
        "lingo-weighted-sum"
    }

    fn cpu_fwd(
        &self,
        ws: &CpuStorage,
        wl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (w, m) = (
            cpu::slice(ws, wl, self.name())?,
            cpu::slice(ms, ml, self.name())?,
        );
        let (b, s, d) = ml.shape().dims3()?;
        let mut c = vec![0f32; b * d];
        c.par_chunks_mut(d).enumerate().for_each(|(bi, cb)| {
            for j in 0..s {
                axpy(
                    cb,
                    w[bi * s + j],
                    &m[(bi * s + j) * d..(bi * s + j + 1) * d],
                );
            }
        });
        Ok((CpuStorage::F32(c), Shape::from((b, d))))
    }

    fn bwd(
        &self,
        w: &Tensor,
        m: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, s, d) = m.dims3()?;
        let mut dw = vec![0f32; b * s];
        let dm = shared_grad::gradient(self.dmemory.as_ref(), m, |dm| {
            cpu::with_data(w, self.name(), |w| {
                cpu::with_data(m, self.name(), |m| {
                    cpu::with_data(grad, self.name(), |dc| {
                        dw.par_chunks_mut(s)
                            .zip(dm.par_chunks_mut(s * d))
                            .enumerate()
                            .for_each(|(bi, (dwb, dmb))| {
                                let dcb = &dc[bi * d..(bi + 1) * d];
                                for j in 0..s {
                                    let row = (bi * s + j) * d;
                                    dwb[j] = math::dot(&m[row..row + d], dcb);
                                    let out = &mut dmb[j * d..(j + 1) * d];
                                    axpy(out, w[bi * s + j], dcb);
                                }
                            })
                    })
                })
            })???;
            Ok(())
        })?;
        Ok((Some(cpu::tensor(dw, w.shape())?), dm))
    }
}

/// `y += a · x`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `Σⱼ weights[b, j] · memory[b, j, :]` for `weights: [batch, src]`, `memory: [batch, src, dim]`.
pub fn weighted_sum(weights: &Tensor, memory: &Tensor) -> Result<Tensor> {
    apply(weights, memory, WeightedSum::default())
}

/// [`weighted_sum`] at every step of a decoder loop: the memory gradients of all steps are summed in
/// place into `dmemory` (see [`SharedGrad`]).
pub fn weighted_sum_shared(
    weights: &Tensor,
    memory: &Tensor,
    dmemory: &SharedGrad,
) -> Result<Tensor> {
    shared_grad::check_input(memory, "weighted_sum memory")?;
    let op = WeightedSum {
        dmemory: Some(dmemory.reader()),
    };
    apply(weights, memory, op)
}

fn apply(weights: &Tensor, memory: &Tensor, op: WeightedSum) -> Result<Tensor> {
    let (b, s, _) = memory.dims3()?;
    if weights.dims() != [b, s] {
        bail!(
            "weighted_sum: weights {:?} do not fit memory {:?}",
            weights.dims(),
            memory.dims()
        );
    }
    if !memory.device().is_cpu() || memory.dtype() != DType::F32 {
        return weighted_sum_composed(weights, memory);
    }
    weights.contiguous()?.apply_op2(&memory.contiguous()?, op)
}

/// The composed candle expression the fused op replaces.
pub fn weighted_sum_composed(weights: &Tensor, memory: &Tensor) -> Result<Tensor> {
    weights.unsqueeze(1)?.matmul(memory)?.squeeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};

    #[test]
    fn gradients_and_parity() -> Result<()> {
        let small = [random_tensor(&[2, 3], 1)?, random_tensor(&[2, 3, 4], 2)?];
        check_gradients(
            &|t| weighted_sum(&t[0], &t[1]),
            &small,
            GradCheck::default(),
        )?;
        let big = [random_tensor(&[9, 17], 3)?, random_tensor(&[9, 17, 37], 4)?];
        check_parity(
            &|t| weighted_sum(&t[0], &t[1]),
            &|t| weighted_sum_composed(&t[0], &t[1]),
            &big,
            2e-5,
        )
    }
}
