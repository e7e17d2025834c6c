//! The additive attention score of Bahdanau et al. (2015), `e[b, j] = Σₐ v[a] · tanh(k[b, j, a] + q[b, a])`,
//! fused: one pass over the `[batch, src, dim]` keys instead of a broadcast add, a tanh and a matrix
//! product that each allocate a keys-sized tensor at every decoder step. The backward recomputes the
//! tanh: with `g = de[b, j] · v[a] · (1 − t²)`, `dk = g`, `dq[b, a] = Σⱼ g`, `dv[a] = Σ_{b,j} de · t`.

use crate::shared_grad::{self, Reader, SharedGrad};
use crate::{cpu, math};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `dkeys`/`dv`: where those gradients are summed when the op runs at every decoder step.
#[derive(Default)]
struct AdditiveScores {
    dkeys: Option<Reader>,
    dv: Option<Reader>,
}

impl candle_core::CustomOp3 for AdditiveScores {
    fn name(&self) -> &'static str {
        "lingo-additive-attention"
    }

    fn cpu_fwd(
        &self,
        ks: &CpuStorage,
        kl: &Layout,
        qs: &CpuStorage,
        ql: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (k, q, v) = (
            cpu::slice(ks, kl, self.name())?,
            cpu::slice(qs, ql, self.name())?,
            cpu::slice(vs, vl, self.name())?,
        );
        let (b, s, a) = kl.shape().dims3()?;
        let mut e = vec![0f32; b * s];
        e.par_chunks_mut(s).enumerate().for_each(|(bi, row)| {
            let qb = &q[bi * a..(bi + 1) * a];
            for (j, out) in row.iter_mut().enumerate() {
                let kj = &k[(bi * s + j) * a..(bi * s + j + 1) * a];
                *out = score(kj, qb, v);
            }
        });
        Ok((CpuStorage::F32(e), Shape::from((b, s))))
    }

    fn bwd(
        &self,
        keys: &Tensor,
        query: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, s, a) = keys.dims3()?;
        let mut dq = vec![0f32; b * a];
        let mut dv_parts: Vec<Vec<f32>> = Vec::new();
        let dk = shared_grad::gradient(self.dkeys.as_ref(), keys, |dk| {
            cpu::with_data(keys, self.name(), |k| {
                cpu::with_data(query, self.name(), |q| {
                    cpu::with_data(v, self.name(), |v| {
                        cpu::with_data(grad, self.name(), |de| {
                            dv_parts = dk
                                .par_chunks_mut(s * a)
                                .zip(dq.par_chunks_mut(a))
                                .enumerate()
                                .map(|(bi, (dkb, dqb))| {
                                    let mut dv = vec![0f32; a];
                                    let qb = &q[bi * a..(bi + 1) * a];
                                    for j in 0..s {
                                        let kj = &k[(bi * s + j) * a..(bi * s + j + 1) * a];
                                        let g = de[bi * s + j];
                                        let dkj = &mut dkb[j * a..(j + 1) * a];
                                        backward_row(kj, qb, v, g, dkj, dqb, &mut dv);
                                    }
                                    dv
                                })
                                .collect()
                        })
                    })
                })
            })????;
            Ok(())
        })?;
        let dv = shared_grad::gradient(self.dv.as_ref(), v, |dv| {
            for part in &dv_parts {
                math::add_assign(dv, part);
            }
            Ok(())
        })?;
        Ok((dk, Some(cpu::tensor(dq, query.shape())?), dv))
    }
}

// Both loops are written over zipped iterators and fixed-size chunks: indexing three slices of
// unrelated lengths keeps bounds checks in the loop, and those stop it from vectorising.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn score(k: &[f32], q: &[f32], v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (k16, q16, v16) = (k.chunks_exact(16), q.chunks_exact(16), v.chunks_exact(16));
    let tail: f32 = (k16.remainder().iter().zip(q16.remainder()))
        .zip(v16.remainder())
        .map(|((k, q), v)| v * math::tanh(k + q))
        .sum();
    for ((k, q), v) in k16.zip(q16).zip(v16) {
        for (((lane, k), q), v) in lanes.iter_mut().zip(k).zip(q).zip(v) {
            *lane += v * math::tanh(k + q);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(
    k: &[f32],
    q: &[f32],
    v: &[f32],
    g: f32,
    dk: &mut [f32],
    dq: &mut [f32],
    dv: &mut [f32],
) {
    let inputs = k.iter().zip(q).zip(v);
    let outputs = dk.iter_mut().zip(dq.iter_mut()).zip(dv.iter_mut());
    for (((k, q), v), ((dk, dq), dv)) in inputs.zip(outputs) {
        let t = math::tanh(k + q);
        let d = g * v * (1.0 - t * t);
        *dk += d;
        *dq += d;
        *dv += g * t;
    }
}

/// `e[b, j] = Σₐ v[a] tanh(keys[b, j, a] + query[b, a])` for `keys: [batch, src, dim]`,
/// `query: [batch, dim]` and `v: [dim]` (or `[dim, 1]`); returns `[batch, src]`.
pub fn additive_scores(keys: &Tensor, query: &Tensor, v: &Tensor) -> Result<Tensor> {
    apply(keys, query, v, AdditiveScores::default())
}

/// [`additive_scores`] at every step of a decoder loop: the gradients of the keys and of `v` are
/// summed in place into `dkeys` and `dv` (see [`SharedGrad`]).
pub fn additive_scores_shared(
    keys: &Tensor,
    query: &Tensor,
    v: &Tensor,
    dkeys: &SharedGrad,
    dv: &SharedGrad,
) -> Result<Tensor> {
    shared_grad::check_input(keys, "additive attention keys")?;
    shared_grad::check_input(v, "additive attention v")?;
    let op = AdditiveScores {
        dkeys: Some(dkeys.reader()),
        dv: Some(dv.reader()),
    };
    apply(keys, query, v, op)
}

fn apply(keys: &Tensor, query: &Tensor, v: &Tensor, op: AdditiveScores) -> Result<Tensor> {
    let (b, _, a) = keys.dims3()?;
    // `v` is used as it is, not flattened: a reshaped copy made at every step would be a new graph
    // node whose gradient a shared sum never fills.
    if query.dims() != [b, a] || (v.dims() != [a] && v.dims() != [a, 1]) {
        bail!(
            "additive attention: keys {:?}, query {:?} and v {:?} do not fit",
            keys.dims(),
            query.dims(),
            v.dims()
        );
    }
    if !keys.device().is_cpu() || keys.dtype() != DType::F32 {
        return additive_scores_composed(keys, query, v);
    }
    keys.contiguous()?
        .apply_op3(&query.contiguous()?, &v.contiguous()?, op)
}

/// The composed candle expression the fused score replaces.
pub fn additive_scores_composed(keys: &Tensor, query: &Tensor, v: &Tensor) -> Result<Tensor> {
    let a = v.elem_count();
    keys.broadcast_add(&query.unsqueeze(1)?)?
        .tanh()?
        .broadcast_matmul(&v.reshape((a, 1))?)?
        .squeeze(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};

    #[test]
    fn gradients() -> Result<()> {
        let inputs = [
            random_tensor(&[2, 3, 5], 1)?,
            random_tensor(&[2, 5], 2)?,
            random_tensor(&[5], 3)?,
        ];
        check_gradients(
            &|t| additive_scores(&t[0], &t[1], &t[2]),
            &inputs,
            GradCheck::default(),
        )
    }

    #[test]
    fn parity_with_composed() -> Result<()> {
        let inputs = [
            (random_tensor(&[7, 13, 37], 4)? * 2.0)?,
            random_tensor(&[7, 37], 5)?,
            random_tensor(&[37], 6)?,
        ];
        check_parity(
            &|t| additive_scores(&t[0], &t[1], &t[2]),
            &|t| additive_scores_composed(&t[0], &t[1], &t[2]),
            &inputs,
            2e-5,
        )
    }
}
