//! Softmax and log-softmax over the last dimension, with an optional boolean mask.
//!
//! Forward: one pass for the max, one for `exp` and the sum, one to normalise, per row, rows in parallel.
//! Backward from the saved output `y`: `dx = y ⊙ (dy − Σ dy⊙y)` for softmax and
//! `dx = dy − exp(y) Σ dy` for log-softmax. Masked positions get probability exactly 0, and a row with
//! every position masked is all zeros rather than NaN.

use crate::{cpu, math};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor, D};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Softmax,
    LogSoftmax,
}

struct SoftmaxOp {
    kind: Kind,
}

fn softmax_row(kind: Kind, x: &[f32], keep: Option<&[u8]>, y: &mut [f32]) {
    let m = match keep {
        None => math::max(x),
        Some(keep) => x
            .iter()
            .zip(keep)
            .filter(|(_, &k)| k != 0)
            .map(|(&v, _)| v)
            .fold(f32::NEG_INFINITY, f32::max),
    };
    if m == f32::NEG_INFINITY {
        // Every position masked (or -inf): no distribution to speak of.
        y.fill(if kind == Kind::Softmax {
            0.0
        } else {
            f32::NEG_INFINITY
        });
        return;
    }
    let s = match keep {
        None => math::exp_shifted(y, x, m),
        // Masked scores take no part at all: one far above the kept maximum would overflow
        // `exp` and turn the sum into inf − inf = NaN (padding keys of a trained model do that).
        Some(keep) => {
            let mut s = 0.0;
            for ((v, &xi), &k) in y.iter_mut().zip(x).zip(keep) {
                *v = if k != 0 { math::exp(xi - m) } else { 0.0 };
                s += *v;
            }
            s
        }
    };
    match kind {
        Kind::Softmax => math::scale(y, 1.0 / s),
        Kind::LogSoftmax => {
            let lse = m + s.ln();
            for (v, &xi) in y.iter_mut().zip(x) {
                *v = xi - lse;
            }
            if let Some(keep) = keep {
                for (v, &k) in y.iter_mut().zip(keep) {
                    if k == 0 {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
}

fn forward(kind: Kind, x: &[f32], keep: Option<&[u8]>, cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    cpu::par_rows(&mut y, cols, |row0, block| {
        for (r, yr) in block.chunks_mut(cols).enumerate() {
            let row = row0 + r;
            let xr = &x[row * cols..(row + 1) * cols];
            let kr = keep.map(|k| &k[row * cols..(row + 1) * cols]);
            softmax_row(kind, xr, kr, yr);
        }
    });
    y
}

fn backward(kind: Kind, y: &[f32], dy: &[f32], cols: usize) -> Vec<f32> {
    let mut dx = vec![0f32; y.len()];
    cpu::par_rows(&mut dx, cols, |row0, block| {
        for (r, dxr) in block.chunks_mut(cols).enumerate() {
            let row = row0 + r;
            let yr = &y[row * cols..(row + 1) * cols];
            let gr = &dy[row * cols..(row + 1) * cols];
            match kind {
                Kind::Softmax => {
                    let s = math::dot(yr, gr);
                    for ((d, &yi), &gi) in dxr.iter_mut().zip(yr).zip(gr) {
                        *d = yi * (gi - s);
                    }
                }
                Kind::LogSoftmax => {
                    // Masked positions have y = -inf and dy there contributes nothing.
                    let s: f32 = yr
                        .iter()
                        .zip(gr)
                        .filter(|(&yi, _)| yi > f32::NEG_INFINITY)
                        .map(|(_, &g)| g)
                        .sum();
                    for ((d, &yi), &gi) in dxr.iter_mut().zip(yr).zip(gr) {
                        *d = if yi > f32::NEG_INFINITY {
                            gi - math::exp(yi) * s
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    });
    dx
}

fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

impl candle_core::CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "lingo-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, self.name())?;
        Ok((
            CpuStorage::F32(forward(self.kind, x, None, last_dim(l))),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let cols = res.dim(D::Minus1)?;
        let dx = cpu::with_data(res, self.name(), |y| {
            cpu::with_data(grad, self.name(), |dy| backward(self.kind, y, dy, cols))
        })??;
        Ok(Some(cpu::tensor(dx, res.shape())?))
    }
}

impl candle_core::CustomOp2 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "lingo-softmax-masked"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, "lingo-softmax-masked")?;
        let keep = match ms {
            CpuStorage::U8(m) => match ml.contiguous_offsets() {
                Some((a, b)) => &m[a..b],
                None => bail!("softmax mask must be contiguous"),
            },
            other => bail!("softmax mask must be u8, got {:?}", other.dtype()),
        };
        Ok((
            CpuStorage::F32(forward(self.kind, x, Some(keep), last_dim(l))),
            l.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _m: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = candle_core::CustomOp1::bwd(self, res, res, grad)?;
        Ok((dx, None))
    }
}

fn check(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        bail!("softmax: expected f32, got {:?}", x.dtype());
    }
    x.contiguous()
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return softmax_composed(x);
    }
    check(x)?.apply_op1(SoftmaxOp {
        kind: Kind::Softmax,
    })
}

/// Log-softmax over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return log_softmax_composed(x);
    }
    check(x)?.apply_op1(SoftmaxOp {
        kind: Kind::LogSoftmax,
    })
}

/// Softmax over the last dimension where `keep` (any dtype, broadcastable to `x`, non-zero = keep)
/// selects the positions that take part; the others get probability 0.
pub fn softmax_masked(x: &Tensor, keep: &Tensor) -> Result<Tensor> {
    let keep = keep.ne(0.0)?.broadcast_as(x.shape())?.contiguous()?;
    if !x.device().is_cpu() {
        let neg = Tensor::full(f32::NEG_INFINITY, x.shape(), x.device())?;
        let y = softmax_composed(&keep.where_cond(x, &neg)?)?;
        return keep.where_cond(&y, &y.zeros_like()?);
    }
    check(x)?.apply_op2(
        &keep,
        SoftmaxOp {
            kind: Kind::Softmax,
        },
    )
}

/// The composed candle expression the fused softmax replaces (differentiable everywhere).
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// The composed candle expression the fused log-softmax replaces.
pub fn log_softmax_composed(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked score far above every kept one must not reach `exp` (it overflowed to inf and the
    /// row became NaN).
    #[test]
    fn masked_scores_of_any_size_are_ignored() -> Result<()> {
        let d = &candle_core::Device::Cpu;
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 500.0, -3.0], (1, 4), d)?;
        let keep = Tensor::from_vec(vec![1u8, 1, 0, 1], (1, 4), d)?;
        let y = softmax_masked(&x, &keep)?.to_vec2::<f32>()?;
        let e = [1f32.exp(), 2f32.exp(), (-3f32).exp()];
        let z: f32 = e.iter().sum();
        let want = [e[0] / z, e[1] / z, 0.0, e[2] / z];
        for (g, w) in y[0].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{:?}", y);
        }
        Ok(())
    }
    use crate::gradcheck::{check_gradients, check_parity, random_tensor, GradCheck};
    use candle_core::Device;

    #[test]
    fn softmax_gradients() -> Result<()> {
        let x = (random_tensor(&[5, 7], 1)? * 3.0)?;
        check_gradients(
            &|t| softmax(&t[0]),
            std::slice::from_ref(&x),
            GradCheck::default(),
        )?;
        check_gradients(&|t| log_softmax(&t[0]), &[x], GradCheck::default())
    }

    #[test]
    fn softmax_parity_with_composed() -> Result<()> {
        let x = (random_tensor(&[3, 4, 67], 2)? * 4.0)?;
        check_parity(
            &|t| softmax(&t[0]),
            &|t| softmax_composed(&t[0]),
            std::slice::from_ref(&x),
            1e-5,
        )?;
        check_parity(
            &|t| log_softmax(&t[0]),
            &|t| log_softmax_composed(&t[0]),
            &[x],
            1e-5,
        )
    }

    #[test]
    fn masked_softmax_matches_minus_infinity_and_gradchecks() -> Result<()> {
        let x = (random_tensor(&[4, 9], 3)? * 2.0)?;
        let keep_data: Vec<u8> = (0..36).map(|i| u8::from(i % 3 != 1)).collect();
        let keep = Tensor::from_vec(keep_data, (4, 9), &Device::Cpu)?;
        let neg = Tensor::full(f32::NEG_INFINITY, (4, 9), &Device::Cpu)?;
        let reference = softmax_composed(&keep.where_cond(&x, &neg)?)?;
        crate::gradcheck::assert_close(&softmax_masked(&x, &keep)?, &reference, 1e-6, "masked")?;
        let k = keep.clone();
        check_gradients(
            &move |t| softmax_masked(&t[0], &k),
            &[x],
            GradCheck::default(),
        )
    }

    #[test]
    fn fully_masked_row_is_zero_not_nan() -> Result<()> {
        let x = random_tensor(&[2, 5], 4)?;
        let keep = Tensor::from_vec(vec![1u8, 1, 0, 1, 1, 0, 0, 0, 0, 0], (2, 5), &Device::Cpu)?;
        let y = softmax_masked(&x, &keep)?.to_vec2::<f32>()?;
        assert_eq!(y[1], vec![0.0; 5]);
        assert!((y[0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(y[0][2], 0.0);
        Ok(())
    }
}
