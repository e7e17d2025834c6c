//! The additive attention score of Bahdanau et al. (2015), `e[b, j] = Σₐ v[a] · tanh(k[b, j, a] + q[b, a])`,
//! fused: one pass over the `[batch, src, dim]` keys instead of a broadcast add, a tanh and a matrix
//! product that each allocate a keys-sized tensor at every decoder step. The backward recomputes the
//! tanh: with `g = de[b, j] · v[a] · (1 − t²)`, `dk = g`, `dq[b, a] = Σⱼ g`, `dv[a] = Σ_{b,j} de · t`.

use crate::{cpu, math};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct AdditiveScores;

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
        let mut dk = vec![0f32; b * s * a];
        let mut dq = vec![0f32; b * a];
        let dv_parts: Vec<Vec<f32>> = cpu::with_data(keys, self.name(), |k| {
            cpu::with_data(query, self.name(), |q| {
                cpu::with_data(v, self.name(), |v| {
                    cpu::with_data(grad, self.name(), |de| {
                        dk.par_chunks_mut(s * a)
                            .zip(dq.par_chunks_mut(a))
                            .enumerate()
                            .map(|(bi, (dkb, dqb))| {
                                let mut dv = vec![0f32; a];
                                let qb = &q[bi * a..(bi + 1) * a];
                                for j in 0..s {
                                    let kj = &k[(bi * s + j) * a..(bi * s + j + 1) * a];
                                    let g = de[bi * s + j];
                                    backward_row(
                                        kj,
                                        qb,
                                        v,
                                        g,
                                        &mut dkb[j * a..(j + 1) * a],
                                        dqb,
                                        &mut dv,
                                    );
                                }
                                dv
                            })
                            .collect()
                    })
                })
            })
        })????;
        let mut dv = vec![0f32; a];
        for part in &dv_parts {
            math::add_assign(&mut dv, part);
        }
        Ok((
            Some(cpu::tensor(dk, keys.shape())?),
            Some(cpu::tensor(dq, query.shape())?),
            Some(cpu::tensor(dv, v.shape())?),
        ))
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn score(k: &[f32], q: &[f32], v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let n = k.len();
    let full = n / 16 * 16;
    for c in (0..full).step_by(16) {
        for i in 0..16 {
            lanes[i] += v[c + i] * math::tanh(k[c + i] + q[c + i]);
        }
    }
    let mut tail = 0.0;
    for i in full..n {
        tail += v[i] * math::tanh(k[i] + q[i]);
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
    for i in 0..k.len() {
        let t = math::tanh(k[i] + q[i]);
        let d = g * v[i] * (1.0 - t * t);
        dk[i] = d;
        dq[i] += d;
        dv[i] += g * t;
    }
}

/// `e[b, j] = Σₐ v[a] tanh(keys[b, j, a] + query[b, a])` for `keys: [batch, src, dim]`,
/// `query: [batch, dim]` and `v: [dim]` (or `[dim, 1]`); returns `[batch, src]`.
pub fn additive_scores(keys: &Tensor, query: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, _, a) = keys.dims3()?;
    let v = v.flatten_all()?;
    if query.dims() != [b, a] || v.dims() != [a] {
        bail!(
            "additive attention: keys {:?}, query {:?} and v {:?} do not fit",
            keys.dims(),
            query.dims(),
            v.dims()
        );
    }
    if !keys.device().is_cpu() || keys.dtype() != DType::F32 {
        return additive_scores_composed(keys, query, &v);
    }
    keys.contiguous()?
        .apply_op3(&query.contiguous()?, &v.contiguous()?, AdditiveScores)
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
