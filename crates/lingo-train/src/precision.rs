//! The `precision` of a training run: which arithmetic the matrix products use.

use crate::TrainError;
use lingo_kernels::mixed_precision::{self as kernels, set_precision};
use serde::{Deserialize, Serialize};

/// `f32` everywhere, or mixed precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// bf16 operands with f32 accumulation in the linear layers' products, f32 master weights,
    /// gradients and optimizer state (AVX-512 BF16 CPUs; f32 elsewhere, with a warning).
    Bf16,
    /// f16 with dynamic loss scaling: a GPU recipe; Lingo trains on the CPU, so it is refused.
    F16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            other => Err(format!(
                "unknown precision `{other}`: expected f32, bf16 or f16"
            )),
        }
    }
}

/// Switches the kernels to a run's precision and back to the previous one when dropped.
pub(crate) struct PrecisionScope {
    previous: kernels::Precision,
    /// What the run computes in (f32 when bf16 was asked for on a CPU without it).
    pub effective: kernels::Precision,
}

impl PrecisionScope {
    pub fn enter(requested: Precision) -> crate::Result<Self> {
        let wanted = match requested {
            Precision::F32 => kernels::Precision::F32,
            Precision::Bf16 => kernels::Precision::Bf16,
            Precision::F16 => {
                return Err(TrainError::Input(
                    "precision `f16` (with dynamic loss scaling) is for CUDA devices, and Lingo \
                     trains on the CPU: use `bf16`, which keeps f32's range and needs no loss scaling"
                        .into(),
                ))
            }
        };
        let previous = kernels::precision();
        let effective = set_precision(wanted);
        Ok(PrecisionScope {
            previous,
            effective,
        })
    }
}

impl Drop for PrecisionScope {
    fn drop(&mut self) {
        set_precision(self.previous);
    }
}
