//! Gradients of a model's parameters, gathered from candle's `GradStore`, summed over accumulation
//! micro-batches, and measured for clipping.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// One optional gradient per parameter, in the parameter store's order.
pub struct Gradients {
    pub grads: Vec<Option<Tensor>>,
}

impl Gradients {
    pub fn from_store(params: &[(String, Var)], store: &GradStore) -> Self {
        Gradients {
            grads: params
                .iter()
                .map(|(_, v)| store.get(v.as_tensor()).cloned())
                .collect(),
        }
    }

    /// Adds another micro-batch's gradients.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        for (mine, theirs) in self.grads.iter_mut().zip(other.grads) {
            *mine = add(mine.take(), theirs)?;
        }
        Ok(())
    }

    /// Adds `grads` to a running sum that has no term before the first.
    pub fn sum_into(total: &mut Option<Gradients>, grads: Gradients) -> Result<()> {
        match total {
            None => *total = Some(grads),
            Some(t) => t.accumulate(grads)?,
        }
        Ok(())
    }

    /// `√Σ‖g‖²` over every gradient.
    pub fn global_norm(&self) -> Result<f64> {
        let mut total = 0.0;
        for g in self.grads.iter().flatten() {
            total += if g.device().is_cpu() {
                lingo_kernels::optim::sum_squares(g)?
            } else {
                g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64
            };
        }
        Ok(total.sqrt())
    }
}

/// `a + b` where both are gradients; the one there is where only one is.
pub fn add(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some((a + b)?),
        (a, b) => a.or(b),
    })
}

/// The factor that brings a gradient of norm `norm` down to `max_norm` (1 if it is already below), as
/// `torch.nn.utils.clip_grad_norm_` computes it.
pub fn clip_scale(norm: f64, max_norm: Option<f32>) -> f32 {
    match max_norm {
        Some(max) if norm > max as f64 => (max as f64 / (norm + 1e-6)) as f32,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn accumulation_sums_and_norm_and_clip() -> Result<()> {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu);
        let mut a = Gradients {
            grads: vec![Some(t(&[1.0, 2.0])?), None, Some(t(&[3.0])?)],
        };
        let b = Gradients {
            grads: vec![Some(t(&[0.5, 0.5])?), Some(t(&[4.0])?), None],
        };
        a.accumulate(b)?;
        assert_eq!(
            a.grads[0].as_ref().unwrap().to_vec1::<f32>()?,
            vec![1.5, 2.5]
        );
        assert_eq!(a.grads[1].as_ref().unwrap().to_vec1::<f32>()?, vec![4.0]);
        assert_eq!(a.grads[2].as_ref().unwrap().to_vec1::<f32>()?, vec![3.0]);
        let norm = a.global_norm()?;
        assert!((norm - (1.5f64 * 1.5 + 2.5 * 2.5 + 16.0 + 9.0).sqrt()).abs() < 1e-6);
        assert_eq!(clip_scale(0.5, Some(1.0)), 1.0);
        assert!((clip_scale(4.0, Some(1.0)) - 0.25).abs() < 1e-6);
        assert_eq!(clip_scale(4.0, None), 1.0);
        Ok(())
    }
}
