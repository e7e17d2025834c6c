use crate::linear::Linear;
use crate::params::{ParamPath, SublayerInit};
use candle_core::{Result, Tensor};
use lingo_kernels::GeluForm;
use serde::{Deserialize, Serialize};

/// The non-linearity of a feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    /// Exact GELU (erf form).
    #[default]
    Gelu,
    /// The tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// `tanh` (classification heads).
    Tanh,
    /// `x·σ(x)` (swish), Marian's.
    Silu,
}

impl Activation {
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => lingo_kernels::gelu(x, GeluForm::Erf),
            Activation::GeluTanh => lingo_kernels::gelu(x, GeluForm::Tanh),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x.silu(),
        }
    }
}

/// Position-wise feed-forward network, `W₂ act(W₁ x + b₁) + b₂`.
#[derive(Clone, Debug)]
pub struct FeedForward {
    pub up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

impl FeedForward {
    pub fn new(
        p: &ParamPath,
        names: (&str, &str),
        d_model: usize,
        d_ff: usize,
        activation: Activation,
        bias: bool,
        init: SublayerInit,
    ) -> Result<Self> {
        Ok(FeedForward {
            up: Linear::new(&p.sub(names.0), d_model, d_ff, bias, init.input)?,
            down: Linear::new(&p.sub(names.1), d_ff, d_model, bias, init.output)?,
            activation,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down
            .forward(&self.activation.apply(&self.up.forward(x)?)?)
    }
}
