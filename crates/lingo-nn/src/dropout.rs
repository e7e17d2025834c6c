use crate::Ctx;
use candle_core::{Result, Tensor};

/// Zeroes each element with probability `p` while training and scales the rest by `1/(1-p)`;
/// the identity in evaluation. Each call draws one seed from the run's RNG, from which the fused
/// kernel derives the mask (and regenerates it in the backward), so training reproduces.
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
        lingo_kernels::dropout(x, self.p, ctx.rng.next_u64())
    }

    /// The attention-probability dropout of this layer for one call, in `ctx`'s mode: `None` in
    /// evaluation or when `p` is 0.
    pub fn attention(&self, ctx: &mut Ctx) -> Option<lingo_kernels::AttentionDropout> {
        (ctx.train && self.p > 0.0).then(|| lingo_kernels::AttentionDropout {
            p: self.p,
            seed: ctx.rng.next_u64(),
        })
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
