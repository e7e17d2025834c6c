use crate::params::{Init, ParamPath};
use candle_core::{Result, Tensor};

/// Layer norm over the last dimension; the bias is optional (T5-style models and some GPTs drop it).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: &ParamPath, dim: usize, bias: bool, eps: f64) -> Result<Self> {
        let weight = p.get("weight", &[dim], Init::Ones)?;
        let bias = if bias {
            Some(p.get("bias", &[dim], Init::Zeros)?)
        } else {
            None
        };
        Ok(LayerNorm { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        lingo_kernels::layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)
    }
}

/// RMS norm over the last dimension (no centring, no bias).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(p: &ParamPath, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: p.get("weight", &[dim], Init::Ones)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        lingo_kernels::rms_norm(x, &self.weight, self.eps)
    }
}
