//! Optimizer arithmetic done in place on the parameter's own storage: one fused, parallel pass per
//! tensor instead of a dozen whole-tensor candle ops (each of which allocates a fresh buffer).
//!
//! The moments live in plain `Vec<f32>`s owned by the optimizer; gradient clipping is folded in as a
//! `grad_scale` so the gradient is never rewritten.

use crate::cpu;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Result, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;
use std::sync::Mutex;

const CHUNK: usize = 1 << 15;

/// Hyper-parameters of one AdamW update (PyTorch's `torch.optim.AdamW` semantics).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step number, for bias correction.
    pub step: u64,
    /// Multiplies the gradient first (gradient clipping, accumulation averaging).
    pub grad_scale: f32,
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamWStep) {
    let bc1 = 1.0 - k.beta1.powi(k.step.min(i32::MAX as u64) as i32);
    let bc2_sqrt = (1.0 - k.beta2.powi(k.step.min(i32::MAX as u64) as i32)).sqrt();
    let step_size = k.lr / bc1;
    let decay = 1.0 - k.lr * k.weight_decay;
    for i in 0..p.len() {
        let gi = g[i] * k.grad_scale;
        m[i] = k.beta1 * m[i] + (1.0 - k.beta1) * gi;
        v[i] = k.beta2 * v[i] + (1.0 - k.beta2) * gi * gi;
        let denom = v[i].sqrt() / bc2_sqrt + k.eps;
        p[i] = p[i] * decay - step_size * m[i] / denom;
    }
}

/// Hyper-parameters of one SGD update (PyTorch's `torch.optim.SGD` semantics).
#[derive(Clone, Copy, Debug)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub nesterov: bool,
    /// L2 penalty added to the gradient (not decoupled), as in PyTorch.
    pub weight_decay: f32,
    /// The first step initialises the momentum buffer with the gradient.
    pub first: bool,
    pub grad_scale: f32,
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn sgd_chunk(p: &mut [f32], g: &[f32], buf: &mut [f32], k: &SgdStep) {
    for i in 0..p.len() {
        let mut d = g[i] * k.grad_scale + k.weight_decay * p[i];
        if k.momentum != 0.0 {
            buf[i] = if k.first {
                d
            } else {
                k.momentum * buf[i] + (1.0 - k.dampening) * d
            };
            d = if k.nesterov {
                d + k.momentum * buf[i]
            } else {
                buf[i]
            };
        }
        p[i] -= k.lr * d;
    }
}

enum Rule<'a> {
    AdamW {
        m: Mutex<&'a mut [f32]>,
        v: Mutex<&'a mut [f32]>,
        k: AdamWStep,
    },
    Sgd {
        buf: Mutex<&'a mut [f32]>,
        k: SgdStep,
    },
    /// Any other rule, given the whole parameter and gradient once.
    Custom(Mutex<Option<CustomUpdate<'a>>>),
}

/// An update rule written as plain code over the parameter's values and its gradient.
pub type CustomUpdate<'a> = Box<dyn FnOnce(&mut [f32], &[f32]) -> Result<()> + Send + 'a>;

impl InplaceOp2 for Rule<'_> {
    fn name(&self) -> &'static str {
        "lingo-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        ps: &mut CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let g = cpu::slice(gs, gl, "optimizer")?;
        let Some((a, b)) = pl.contiguous_offsets() else {
            bail!("optimizer: parameter must be contiguous")
        };
        let p = match ps {
            CpuStorage::F32(p) => &mut p[a..b],
            other => bail!("optimizer: parameter must be f32, got {:?}", other.dtype()),
        };
        if p.len() != g.len() {
            bail!(
                "optimizer: parameter has {} elements, gradient {}",
                p.len(),
                g.len()
            );
        }
        match self {
            Rule::AdamW { m, v, k } => {
                let mut m = m.lock().expect("lock");
                let mut v = v.lock().expect("lock");
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                    .for_each(|((p, g), (m, v))| adamw_chunk(p, g, m, v, k));
            }
            Rule::Sgd { buf, k } => {
                let mut buf = buf.lock().expect("lock");
                if buf.is_empty() {
                    // No momentum, so no buffer to walk beside the parameter.
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(p, g)| sgd_chunk(p, g, &mut [], k));
                } else {
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(buf.par_chunks_mut(CHUNK))
                        .for_each(|((p, g), b)| sgd_chunk(p, g, b, k));
                }
            }
            Rule::Custom(update) => match update.lock().expect("lock").take() {
                Some(update) => update(p, g)?,
                None => bail!("optimizer: a custom update ran twice"),
            },
        }
        Ok(())
    }
}

fn check_state(param: &Tensor, states: &[usize]) -> Result<()> {
    if !param.device().is_cpu() {
        bail!("optimizer: in-place updates run on the CPU only");
    }
    if states.iter().any(|&n| n != param.elem_count()) {
        bail!(
            "optimizer: state has {states:?} elements for a parameter of {}",
            param.elem_count()
        );
    }
    Ok(())
}

/// One AdamW update of `param` in place; `m` and `v` are its first and second moments.
pub fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    k: AdamWStep,
) -> Result<()> {
    check_state(param, &[m.len(), v.len()])?;
    crate::params_changed();
    param.inplace_op2(
        &grad.contiguous()?,
        &Rule::AdamW {
            m: Mutex::new(m),
            v: Mutex::new(v),
            k,
        },
    )
}

/// One SGD update of `param` in place; `buf` is its momentum buffer.
pub fn sgd_update(param: &Tensor, grad: &Tensor, buf: &mut [f32], k: SgdStep) -> Result<()> {
    check_state(
        param,
        &[if k.momentum != 0.0 {
            buf.len()
        } else {
            param.elem_count()
        }],
    )?;
    crate::params_changed();
    param.inplace_op2(
        &grad.contiguous()?,
        &Rule::Sgd {
            buf: Mutex::new(buf),
            k,
        },
    )
}

/// Runs `update` on `param`'s values in place with `grad`'s (for rules without a fused kernel:
/// Adam with L2, AdaGrad, RMSProp, Adafactor).
pub fn custom_update(param: &Tensor, grad: &Tensor, update: CustomUpdate<'_>) -> Result<()> {
    check_state(param, &[])?;
    crate::params_changed();
    param.inplace_op2(&grad.contiguous()?, &Rule::Custom(Mutex::new(Some(update))))
}

/// `Σ x²` over a tensor, in f64, summed in a fixed order.
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    cpu::with_data(t, "sum_squares", |x| {
        let partial: Vec<f64> = x
            .par_chunks(CHUNK)
            .map(|c| crate::math::dot(c, c) as f64)
            .collect();
        partial.iter().sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn adamw_matches_the_textbook_update() -> Result<()> {
        let p0 = vec![0.5f32, -1.0, 2.0];
        let g = vec![0.1f32, -0.2, 0.3];
        let var = Var::from_vec(p0.clone(), 3, &Device::Cpu)?;
        let grad = Tensor::from_vec(g.clone(), 3, &Device::Cpu)?;
        let (mut m, mut v) = (vec![0f32; 3], vec![0f32; 3]);
        let k = AdamWStep {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            step: 1,
            grad_scale: 1.0,
        };
        adamw_update(var.as_tensor(), &grad, &mut m, &mut v, k)?;
        let got = var.as_tensor().to_vec1::<f32>()?;
        for i in 0..3 {
            // After one step m̂ = g and v̂ = g², so the step is lr·g/(|g|+eps) = lr·sign(g).
            let expect = p0[i] * (1.0 - 0.01 * 0.1) - 0.01 * g[i] / (g[i].abs() + 1e-8);
            assert!(
                (got[i] - expect).abs() < 1e-6,
                "{i}: {} vs {expect}",
                got[i]
            );
        }
        Ok(())
    }

    /// Plain SGD has no momentum buffer; every element still moves (a run of more than one chunk).
    #[test]
    fn plain_sgd_updates_every_element() -> Result<()> {
        let n = 3 * CHUNK + 5;
        let var = Var::from_vec(vec![1.0f32; n], n, &Device::Cpu)?;
        let grad = Tensor::from_vec(vec![0.5f32; n], n, &Device::Cpu)?;
        let k = SgdStep {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            first: true,
            grad_scale: 2.0,
        };
        sgd_update(var.as_tensor(), &grad, &mut [], k)?;
        let p = var.as_tensor().to_vec1::<f32>()?;
        assert!(p.iter().all(|&v| (v - 0.9).abs() < 1e-6), "{:?}", &p[..4]);
        Ok(())
    }

    #[test]
    fn sgd_nesterov_matches_pytorch_formula() -> Result<()> {
        let var = Var::from_vec(vec![1.0f32], 1, &Device::Cpu)?;
        let grad = Tensor::from_vec(vec![0.5f32], 1, &Device::Cpu)?;
        let mut buf = vec![0f32];
        let mut k = SgdStep {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
            first: true,
            grad_scale: 1.0,
        };
        sgd_update(var.as_tensor(), &grad, &mut buf, k)?;
        // buf = 0.5, step = g + 0.9·buf = 0.95
        assert!((var.as_tensor().to_vec1::<f32>()?[0] - (1.0 - 0.095)).abs() < 1e-6);
        k.first = false;
        sgd_update(var.as_tensor(), &grad, &mut buf, k)?;
        // buf = 0.9·0.5 + 0.5 = 0.95, step = 0.5 + 0.9·0.95 = 1.355
        assert!((var.as_tensor().to_vec1::<f32>()?[0] - (0.905 - 0.1355)).abs() < 1e-6);
        Ok(())
    }
}
