//! RMS normalisation over the last dimension, `y = x / rms(x) ⊙ w` (T5, LLaMA): no mean, no bias.
//!
//! With `x̂ = x·r`, `r = 1/√(mean(x²)+ε)` and `g = dy ⊙ w`: `dx = r (g − x̂·mean(g ⊙ x̂))`, `dw = Σ dy ⊙ x̂`.

use crate::{cpu, math};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor, D};
use multiversion::multiversion;
use std::sync::Mutex;

struct RmsNormOp {
    eps: f32,
    rstd: Mutex<Vec<f32>>,
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_row(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> f32 {
    let r = 1.0 / (math::dot(x, x) / x.len() as f32 + eps).sqrt();
    for i in 0..x.len() {
        y[i] = x[i] * r * w[i];
    }
    r
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(x: &[f32], w: &[f32], dy: &[f32], r: f32, dx: &mut [f32], dw: &mut [f32]) {
    let c = x.len();
    let mut sum_gx = 0f32;
    for i in 0..c {
        let xhat = x[i] * r;
        sum_gx += dy[i] * w[i] * xhat;
        dw[i] += dy[i] * xhat;
    }
    let b = sum_gx / c as f32;
    for i in 0..c {
        dx[i] = r * (dy[i] * w[i] - x[i] * r * b);
    }
}

impl candle_core::CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "lingo-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(xs, xl, "rms_norm")?;
        let w = cpu::slice(ws, wl, "rms_norm")?;
        let c = w.len();
        let mut y = vec![0f32; x.len()];
        let mut rstd = vec![0f32; x.len() / c.max(1)];
        let rp = cpu::SendPtr(rstd.as_mut_ptr());
        cpu::par_rows(&mut y, c, |row0, block| {
            for (r, yr) in block.chunks_mut(c).enumerate() {
                let row = row0 + r;
                let v = forward_row(&x[row * c..(row + 1) * c], w, self.eps, yr);
                let p = rp;
                // SAFETY: one writer per row.
                unsafe { *p.0.add(row) = v };
            }
        });
        *self.rstd.lock().expect("rstd lock") = rstd;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let rstd = self.rstd.lock().expect("rstd lock");
        let c = w.elem_count();
        let (dx, dw) = cpu::with_data(x, "rms_norm", |x| {
            cpu::with_data(w, "rms_norm", |w| {
                cpu::with_data(grad, "rms_norm", |dy| {
                    let mut dx = vec![0f32; x.len()];
                    let dw = cpu::par_rows_reduce(&mut dx, c, c, |row0, block, dw| {
                        for (r, dxr) in block.chunks_mut(c).enumerate() {
                            let row = row0 + r;
                            let span = row * c..(row + 1) * c;
                            backward_row(&x[span.clone()], w, &dy[span], rstd[row], dxr, dw);
                        }
                    });
                    (dx, dw)
                })
            })
        })???;
        Ok((
            Some(cpu::tensor(dx, x.shape())?),
            Some(cpu::tensor(dw, w.shape())?),
        ))
    }
}

/// RMS norm over the last dimension of `x` with weight `w` (`[C]`).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    if w.dims() != [c] {
        bail!("rms_norm: input last dim {c}, weight {:?}", w.dims());
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return rms_norm_composed(x, w, eps);
    }
    x.contiguous()?.apply_op2(
        &w.contiguous()?,
        RmsNormOp {
            eps: eps as f32,
            rstd: Mutex::new(Vec::new()),
        },
    )
}

/// The composed candle expression the fused RMS norm replaces.
pub fn rms_norm_composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};

    #[test]
    fn gradients() -> Result<()> {
        let x = (random_tensor(&[3, 8], 1)? * 2.0)?;
        let w = (random_tensor(&[8], 2)? + 1.0)?;
        check_gradients(
            &|t| rms_norm(&t[0], &t[1], 1e-6),
            &[x, w],
            GradCheck::default(),
        )
    }

    #[test]
    fn parity_with_composed() -> Result<()> {
        let x = (random_tensor(&[67, 129], 3)? * 3.0)?;
        let w = (random_tensor(&[129], 4)? + 1.0)?;
        check_parity(
            &|t| rms_norm(&t[0], &t[1], 1e-6),
            &|t| rms_norm_composed(&t[0], &t[1], 1e-6),
            &[x, w],
            2e-4,
        )
    }
}
