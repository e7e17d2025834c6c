use crate::params::{Init, ParamPath};
use candle_core::{Result, Tensor};
use lingo_kernels::SharedGrad;

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

/// A [`Linear`] applied at every step of a loop: the gradients of all steps are summed in place (see
/// [`lingo_kernels::SharedGrad`]). Make one per forward pass; every step must feed the loss.
pub struct LoopLinear<'a> {
    layer: &'a Linear,
    dw: SharedGrad,
    db: Option<SharedGrad>,
}

impl Linear {
    pub fn in_loop(&self) -> LoopLinear<'_> {
        LoopLinear {
            layer: self,
            dw: SharedGrad::new(&self.weight),
            db: self.bias.as_ref().map(SharedGrad::new),
        }
    }
}

impl LoopLinear<'_> {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let l = self.layer;
        lingo_kernels::linear_shared(x, &l.weight, l.bias.as_ref(), &self.dw, self.db.as_ref())
    }
}
