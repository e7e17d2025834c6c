use crate::params::{Init, ParamPath};
use candle_core::{Result, Tensor};

/// `y = x Wᵀ + b`, weight `[out, in]` as in PyTorch.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Weight drawn from `init`, bias (if any) zero.
    pub fn new(
        p: &ParamPath,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        let weight = p.get("weight", &[out_dim, in_dim], init)?;
        let bias = if bias {
            Some(p.get("bias", &[out_dim], Init::Zeros)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        lingo_kernels::linear(x, &self.weight, self.bias.as_ref())
    }
}
