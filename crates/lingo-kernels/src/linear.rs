//! Affine map `y = x Wᵀ + b` with PyTorch's weight layout `W: [out, in]`.
//!
//! The bias is written into the output first and the matrix product accumulated onto it, so the forward
//! is one `gemm` and no separate broadcast add; the backward is two `gemm`s (`dx = dy W`, `dW = dyᵀ x`)
//! and a column sum for `db`.

use crate::cpu::{self, Mat};
use crate::math;
use crate::shared_grad::{self, Reader, SharedGrad};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor, D};

/// `dw`/`db`: where the parameter gradients are summed when the weights are read in a loop.
#[derive(Default)]
struct LinearOp {
    dw: Option<Reader>,
    db: Option<Reader>,
}

fn out_shape(x: &Layout, out: usize) -> Shape {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = out;
    Shape::from(dims)
}

fn forward(x: &[f32], w: &[f32], w_dims: &[usize], b: Option<&[f32]>) -> Vec<f32> {
    let (out, inp) = (w_dims[0], w_dims[1]);
    let n = x.len() / inp;
    let mut y = match b {
        Some(b) => b.repeat(n),
        None => vec![0f32; n * out],
    };
    // SAFETY: the sizes match the buffers by construction.
    unsafe {
        cpu::gemm(
            n,
            out,
            inp,
            y.as_mut_ptr(),
            out,
            b.is_some(),
            Mat::rows(x.as_ptr(), inp),
            Mat::rows_t(w.as_ptr(), inp),
            true,
        )
    };
    y
}

/// `dx = dy W`.
fn grad_input(dy: &Tensor, w: &Tensor, x_shape: &Shape) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let dx = cpu::with_data(w, "linear", |w| {
        cpu::with_data(dy, "linear", |dy| {
            let n = dy.len() / out;
            let mut dx = vec![0f32; n * inp];
            // SAFETY: the sizes match the buffers by construction.
            unsafe {
                cpu::gemm(
                    n,
                    inp,
                    out,
                    dx.as_mut_ptr(),
                    inp,
                    false,
                    Mat::rows(dy.as_ptr(), out),
                    Mat::rows(w.as_ptr(), inp),
                    true,
                )
            };
            dx
        })
    })??;
    cpu::tensor(dx, x_shape.clone())
}

/// `dW += dyᵀ x` and `db += Σ dy` into `dw: [out, in]` and `db: [out]` (either may be skipped).
fn add_param_grads(
    x: &Tensor,
    dy: &Tensor,
    out: usize,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    let inp = x.dim(D::Minus1)?;
    cpu::with_data(x, "linear", |x| {
        cpu::with_data(dy, "linear", |dy| {
            if let Some(dw) = dw {
                // SAFETY: the sizes match the buffers by construction.
                unsafe {
                    cpu::gemm(
                        out,
                        inp,
                        x.len() / inp,
                        dw.as_mut_ptr(),
                        inp,
                        true,
                        Mat::rows_t(dy.as_ptr(), out),
                        Mat::rows(x.as_ptr(), inp),
                        true,
                    )
                };
            }
            if let Some(db) = db {
                for row in dy.chunks_exact(out) {
                    math::add_assign(db, row);
                }
            }
        })
    })??;
    Ok(())
}

impl LinearOp {
    fn bwd_all(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let out = w.dim(0)?;
        let dx = grad_input(dy, w, x.shape())?;
        let dw = shared_grad::gradient(self.dw.as_ref(), w, |buf| {
            add_param_grads(x, dy, out, Some(buf), None)
        })?;
        let db = match b {
            Some(b) => shared_grad::gradient(self.db.as_ref(), b, |buf| {
                add_param_grads(x, dy, out, None, Some(buf))
            })?,
            None => None,
        };
        Ok((Some(dx), dw, db))
    }
}

impl candle_core::CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "lingo-linear"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = forward(
            cpu::slice(xs, xl, "linear")?,
            cpu::slice(ws, wl, "linear")?,
            wl.dims(),
            None,
        );
        Ok((CpuStorage::F32(y), out_shape(xl, wl.dims()[0])))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.bwd_all(x, w, None, grad)?;
        Ok((dx, dw))
    }
}

impl candle_core::CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "lingo-linear"
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
        let b = cpu::slice(bs, bl, "linear")?;
        let y = forward(
            cpu::slice(xs, xl, "linear")?,
            cpu::slice(ws, wl, "linear")?,
            wl.dims(),
            Some(b),
        );
        Ok((CpuStorage::F32(y), out_shape(xl, wl.dims()[0])))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.bwd_all(x, w, Some(b), grad)
    }
}

/// `x Wᵀ + b` for `x: [..., in]`, `w: [out, in]`, `b: [out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    apply(x, w, b, LinearOp::default())
}

/// [`linear`] for weights read at every step of a loop: the weight and bias gradients of all steps
/// are summed in place into `dw` and `db` (see [`SharedGrad`]).
pub fn linear_shared(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dw: &SharedGrad,
    db: Option<&SharedGrad>,
) -> Result<Tensor> {
    shared_grad::check_input(w, "linear weight")?;
    if let Some(b) = b {
        shared_grad::check_input(b, "linear bias")?;
    }
    let op = LinearOp {
        dw: Some(dw.reader()),
        db: db.map(SharedGrad::reader),
    };
    apply(x, w, b, op)
}

fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>, op: LinearOp) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if x.dim(D::Minus1)? != inp || b.is_some_and(|b| b.dims() != [out]) {
        bail!(
            "linear: input {:?} does not fit weight [{out}, {inp}] and bias {:?}",
            x.dims(),
            b.map(|b| b.dims().to_vec())
        );
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return linear_composed(x, w, b);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// The composed candle expression the fused linear replaces.
pub fn linear_composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.broadcast_matmul(&w.t()?)?;
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
    fn gradients() -> Result<()> {
        let x = random_tensor(&[2, 3, 5], 1)?;
        let w = random_tensor(&[4, 5], 2)?;
        let b = random_tensor(&[4], 3)?;
        check_gradients(
            &|t| linear(&t[0], &t[1], Some(&t[2])),
            &[x.clone(), w.clone(), b],
            GradCheck::default(),
        )?;
        check_gradients(
            &|t| linear(&t[0], &t[1], None),
            &[x, w],
            GradCheck::default(),
        )
    }

    #[test]
    fn parity_with_composed() -> Result<()> {
        let x = random_tensor(&[3, 41, 67], 4)?;
        let w = random_tensor(&[129, 67], 5)?;
        let b = random_tensor(&[129], 6)?;
        check_parity(
            &|t| linear(&t[0], &t[1], Some(&t[2])),
            &|t| linear_composed(&t[0], &t[1], Some(&t[2])),
            &[x, w, b],
            1e-4,
        )
    }
}
