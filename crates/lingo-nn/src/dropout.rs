use crate::Ctx;
use candle_core::{Result, Tensor};

/// Zeroes each element with probability `p` while training and scales the rest by `1/(1-p)`;
/// the identity in evaluation. Masks come from the run's seeded RNG, so training reproduces.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    pub p: f32,
}

impl Dropout {
    pub fn new(p: f32) -> Self {
        Dropout { p }
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if !ctx.train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if ctx.rng.uniform() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LingoRng;
    use candle_core::Device;

    #[test]
    fn identity_in_eval_and_scaled_mask_in_training() -> Result<()> {
        let x = Tensor::ones(10_000, candle_core::DType::F32, &Device::Cpu)?;
        let d = Dropout::new(0.25);
        assert_eq!(
            d.forward(&x, &mut Ctx::eval())?.to_vec1::<f32>()?,
            x.to_vec1::<f32>()?
        );
        let y = d
            .forward(&x, &mut Ctx::train(LingoRng::new(1)))?
            .to_vec1::<f32>()?;
        let zeros = y.iter().filter(|&&v| v == 0.0).count();
        assert!((2300..2700).contains(&zeros), "{zeros}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        // Same RNG state, same mask.
        let again = d
            .forward(&x, &mut Ctx::train(LingoRng::new(1)))?
            .to_vec1::<f32>()?;
        assert_eq!(y, again);
        Ok(())
    }
}
