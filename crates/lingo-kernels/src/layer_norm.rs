//! Layer normalisation over the last dimension, `y = (x − μ)/σ ⊙ w (+ b)`.
//!
//! The forward keeps each row's mean and reciprocal standard deviation for the backward:
//! with `x̂ = (x − μ)/σ` and `g = dy ⊙ w`, `dx = (g − mean(g) − x̂·mean(g ⊙ x̂)) / σ`,
//! `dw = Σ_rows dy ⊙ x̂`, `db = Σ_rows dy`.

use crate::{cpu, math};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor, D};
use multiversion::multiversion;
use std::sync::Mutex;

struct LayerNormOp {
    eps: f32,
    /// `(mean, rstd)` of every row, written by the forward.
    stats: Mutex<Vec<f32>>,
}

// Every reduction here runs in 16 lanes: a single running sum is a chain of dependent adds the
// compiler may not reorder, which kept these rows scalar (a 128-wide row took ~500 cycles).

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_row(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, y: &mut [f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = math::sum(x) / n;
    let var = math::sum_squared_deviations(x, mean) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    match b {
        Some(b) => {
            for ((y, &x), (&w, &b)) in y.iter_mut().zip(x).zip(w.iter().zip(b)) {
                *y = (x - mean) * rstd * w + b;
            }
        }
        None => {
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = (x - mean) * rstd * w;
            }
        }
    }
    (mean, rstd)
}

/// Writes `dx` for one row and adds the row's contribution to `dw` (first half of `acc`) and `db`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mean: f32,
    rstd: f32,
    dx: &mut [f32],
    acc: &mut [f32],
) {
    const L: usize = 16;
    let c = x.len();
    let (dw, db) = acc.split_at_mut(c);
    let (mut lanes_g, mut lanes_gx) = ([0f32; L], [0f32; L]);
    let chunks = x
        .chunks_exact(L)
        .zip(w.chunks_exact(L))
        .zip(dy.chunks_exact(L))
        .zip(dw.chunks_exact_mut(L).zip(db.chunks_exact_mut(L)));
    for (((x, w), dy), (dw, db)) in chunks {
        for l in 0..L {
            let xhat = (x[l] - mean) * rstd;
            let g = dy[l] * w[l];
            lanes_g[l] += g;
            lanes_gx[l] += g * xhat;
            dw[l] += dy[l] * xhat;
            db[l] += dy[l];
        }
    }
    let (mut sum_g, mut sum_gx) = (0f32, 0f32);
    for i in c / L * L..c {
        let xhat = (x[i] - mean) * rstd;
        let g = dy[i] * w[i];
        sum_g += g;
        sum_gx += g * xhat;
        dw[i] += dy[i] * xhat;
        db[i] += dy[i];
    }
    let a = (sum_g + lanes_g.iter().sum::<f32>()) / c as f32;
    let b = (sum_gx + lanes_gx.iter().sum::<f32>()) / c as f32;
    for ((dx, &x), (&dy, &w)) in dx.iter_mut().zip(x).zip(dy.iter().zip(w)) {
        let xhat = (x - mean) * rstd;
        *dx = rstd * (dy * w - a - xhat * b);
    }
}

impl LayerNormOp {
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Result<Vec<f32>> {
        let c = w.len();
        if c == 0 || !x.len().is_multiple_of(c) {
            bail!("layer_norm: weight has {c} elements but the input's last dim does not match");
        }
        let rows = x.len() / c;
        let mut y = vec![0f32; x.len()];
        let mut stats = vec![0f32; 2 * rows];
        let stats_ptr = cpu::SendPtr(stats.as_mut_ptr());
        cpu::par_rows(&mut y, c, |row0, block| {
            for (r, yr) in block.chunks_mut(c).enumerate() {
                let row = row0 + r;
                let (mean, rstd) = forward_row(&x[row * c..(row + 1) * c], w, b, self.eps, yr);
                // SAFETY: each row's two stats are written by exactly one task.
                let p = stats_ptr;
                unsafe {
                    *p.0.add(2 * row) = mean;
                    *p.0.add(2 * row + 1) = rstd;
                }
            }
        });
        *self.stats.lock().expect("stats lock") = stats;
        Ok(y)
    }

    /// `(dx, dw, db)`.
    fn backward(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let stats = self.stats.lock().expect("stats lock");
        let c = w.elem_count();
        let (dx, acc) = cpu::with_data(x, "layer_norm", |x| {
            cpu::with_data(w, "layer_norm", |w| {
                cpu::with_data(dy, "layer_norm", |dy| {
                    let mut dx = vec![0f32; x.len()];
                    let acc = cpu::par_rows_reduce(&mut dx, c, 2 * c, |row0, block, acc| {
                        for (r, dxr) in block.chunks_mut(c).enumerate() {
                            let row = row0 + r;
                            let span = row * c..(row + 1) * c;
                            let (mean, rstd) = (stats[2 * row], stats[2 * row + 1]);
                            backward_row(&x[span.clone()], w, &dy[span], mean, rstd, dxr, acc);
                        }
                    });
                    (dx, acc)
                })
            })
        })???;
        let db = cpu::tensor(acc[c..].to_vec(), w.shape())?;
        let dw = cpu::tensor(acc[..c].to_vec(), w.shape())?;
        Ok((cpu::tensor(dx, x.shape())?, dw, db))
    }
}

impl candle_core::CustomOp2 for LayerNormOp {
    fn name(&self) -> &'static str {
        "lingo-layer-norm"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self.forward(
            cpu::slice(xs, xl, "layer_norm")?,
            cpu::slice(ws, wl, "layer_norm")?,
            None,
        )?;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl candle_core::CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "lingo-layer-norm"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let b = cpu::slice(bs, bl, "layer_norm")?;
        let y = self.forward(
            cpu::slice(xs, xl, "layer_norm")?,
            cpu::slice(ws, wl, "layer_norm")?,
            Some(b),
        )?;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Layer norm over the last dimension of `x` with weight `w` and optional bias `b` (both `[C]`).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    if w.dims() != [c] || b.is_some_and(|b| b.dims() != [c]) {
        bail!(
            "layer_norm: input last dim {c}, weight {:?}, bias {:?}",
            w.dims(),
            b.map(|b| b.dims().to_vec())
        );
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return layer_norm_composed(x, w, b, eps);
    }
    let op = LayerNormOp {
        eps: eps as f32,
        stats: Mutex::new(Vec::new()),
    };
    let x = x.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, op),
        None => x.apply_op2(&w.contiguous()?, op),
    }
}

/// The composed candle expression the fused layer norm replaces.
pub fn layer_norm_composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let y = centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(w)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};

    #[test]
    fn gradients_with_and_without_bias() -> Result<()> {
        let x = (random_tensor(&[2, 3, 8], 1)? * 2.0)?;
        let w = (random_tensor(&[8], 2)? + 1.0)?;
        let b = random_tensor(&[8], 3)?;
        check_gradients(
            &|t| layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5),
            &[x.clone(), w.clone(), b],
            GradCheck::default(),
        )?;
        check_gradients(
            &|t| layer_norm(&t[0], &t[1], None, 1e-5),
            &[x, w],
            GradCheck::default(),
        )
    }

    #[test]
    fn parity_with_composed() -> Result<()> {
        // 70 rows exceed one reduction block, 131 columns exercise the vector tails.
        let x = ((random_tensor(&[70, 131], 4)? * 3.0)? + 0.5)?;
        let w = (random_tensor(&[131], 5)? + 1.0)?;
        let b = random_tensor(&[131], 6)?;
        check_parity(
            &|t| layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5),
            &|t| layer_norm_composed(&t[0], &t[1], Some(&t[2]), 1e-5),
            &[x.clone(), w.clone(), b],
            2e-4,
        )?;
        check_parity(
            &|t| layer_norm(&t[0], &t[1], None, 1e-5),
            &|t| layer_norm_composed(&t[0], &t[1], None, 1e-5),
            &[x, w],
            2e-4,
        )
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let x = random_tensor(&[2, 4], 1).unwrap();
        let w = random_tensor(&[5], 1).unwrap();
        assert!(layer_norm(&x, &w, None, 1e-5).is_err());
    }
}
