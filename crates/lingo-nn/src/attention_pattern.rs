//! Which keys self-attention attends over — what a model config's `"attention"` chooses:
//!
//! - `dense`: every position (every earlier one if causal), `O(n²)`;
//! - `window`: the `attention_window` nearest positions (the earlier ones if causal, half either
//!   side otherwise), by the fused banded kernel of `lingo_kernels::window_attention`, `O(n·w)`;
//! - `linformer` (Wang et al., 2020): keys and values projected along the sequence to `k` rows by
//!   learned `E, F: [k, max_len]` (one pair per layer shared by its heads, or `E = F`, or one pair
//!   shared by every layer), then dense attention over those `k`: `O(n·k)`. Every projected row
//!   mixes every position, so Linformer cannot be causal.

use crate::params::ParamPath;
use crate::Init;
use candle_core::{bail, Result, Tensor};
use lingo_kernels::window_attention::{window_attention, Window};
use lingo_kernels::AttentionMask;
use serde::{Deserialize, Serialize};

/// The choice in a model config (`"attention"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    #[default]
    Dense,
    Window,
    Linformer,
}

/// How Linformer's projections are shared (`"linformer_sharing"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinformerSharing {
    /// One `E` and one `F` per layer, shared by its heads.
    #[default]
    Headwise,
    /// One projection per layer for keys and values alike (`E = F`).
    KeyValue,
    /// One `E` and one `F` for every layer.
    Layerwise,
}

/// Linformer's learned sequence projections.
#[derive(Clone, Debug)]
pub struct Linformer {
    /// `[k, max_len]` for the keys…
    pub e: Tensor,
    /// …and the values (the same tensor under key–value sharing).
    pub f: Tensor,
}

impl Linformer {
    /// Projections to `k` rows of sequences up to `max_len`, under `p` (`p.sub("linformer")` of
    /// a layer; the same path for every layer under layer-wise sharing).
    pub fn new(p: &ParamPath, k: usize, max_len: usize, sharing: LinformerSharing) -> Result<Self> {
        if k == 0 {
            bail!("linformer_k must be at least 1");
        }
        let init = Init::Normal(1.0 / (k as f32).sqrt());
        let e = p.get("e", &[k, max_len], init)?;
        let f = match sharing {
            LinformerSharing::KeyValue => e.clone(),
            _ => p.get("f", &[k, max_len], init)?,
        };
        Ok(Linformer { e, f })
    }

    /// `x: [B, T, H, D]` projected along the sequence by `proj[:, :T]` to `[B, k, H, D]`, padding
    /// positions (`key_padding` 0) left out.
    fn project(&self, proj: &Tensor, x: &Tensor, key_padding: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h, d) = x.dims4()?;
        let (k, max_len) = proj.dims2()?;
        if t > max_len {
            bail!("Linformer projects sequences of up to {max_len} positions, got {t}");
        }
        let mut x = x.reshape((b, t, h * d))?;
        if let Some(keep) = key_padding {
            let keep = keep.to_dtype(x.dtype())?.reshape((b, t, 1))?;
            x = x.broadcast_mul(&keep)?;
        }
        let proj = proj
            .narrow(1, 0, t)?
            .unsqueeze(0)?
            .broadcast_as((b, k, t))?;
        proj.contiguous()?
            .matmul(&x.contiguous()?)?
            .reshape((b, k, h, d))
    }
}

/// A self-attention layer's choice of keys with its learned parts.
#[derive(Clone, Debug, Default)]
pub enum Pattern {
    #[default]
    Dense,
    /// A sliding window of this many positions.
    Window(usize),
    Linformer(Linformer),
}

/// What a model config says about its self-attention (the fields every family shares).
#[derive(Clone, Copy, Debug)]
pub struct PatternConfig {
    pub kind: AttentionKind,
    pub window: usize,
    pub linformer_k: usize,
    pub linformer_sharing: LinformerSharing,
    /// The longest sequence (Linformer's projection width).
    pub max_len: usize,
}

impl Pattern {
    /// The pattern of a layer whose attention parameters live at `layer`; `shared` holds what
    /// every layer shares (layer-wise Linformer projections).
    pub fn build(c: &PatternConfig, layer: &ParamPath, shared: &ParamPath) -> Result<Pattern> {
        Ok(match c.kind {
            AttentionKind::Dense => Pattern::Dense,
            AttentionKind::Window => Pattern::Window(c.window.max(1)),
            AttentionKind::Linformer => {
                let path = match c.linformer_sharing {
                    LinformerSharing::Layerwise => shared.sub("linformer"),
                    _ => layer.sub("linformer"),
                };
                Pattern::Linformer(Linformer::new(
                    &path,
                    c.linformer_k,
                    c.max_len,
                    c.linformer_sharing,
                )?)
            }
        })
    }

    /// Self-attention of `q, k, v: [B, T, H, D]` under this pattern; the probabilities too, if
    /// asked (dense only: the others never form them whole).
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &AttentionMask,
        want_weights: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            Pattern::Dense => lingo_kernels::attention_with_weights(q, k, v, mask, want_weights),
            _ if want_weights => {
                bail!("only dense attention can return its attention weights")
            }
            Pattern::Window(size) => {
                let window = match mask.causal {
                    true => Window::causal(*size),
                    false => Window::centred(*size),
                };
                let mask = AttentionMask {
                    causal: false,
                    ..mask.clone()
                };
                Ok((window_attention(q, k, v, window, &mask)?, None))
            }
            Pattern::Linformer(l) => {
                if mask.causal {
                    bail!(
                        "Linformer mixes every position into each projected key: it cannot attend causally"
                    );
                }
                let padding = mask.key_padding.as_ref();
                let keys = l.project(&l.e, k, padding)?;
                let values = l.project(&l.f, v, padding)?;
                let mask = AttentionMask {
                    key_padding: None,
                    ..mask.clone()
                };
                Ok((lingo_kernels::attention(q, &keys, &values, &mask)?, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::Device;
    use lingo_kernels::gradcheck::{assert_close, check_gradients, random_tensor, GradCheck};

    #[test]
    fn linformer_with_identity_projections_at_k_equal_n_is_dense() -> Result<()> {
        let (b, t, h, d) = (2, 12, 2, 4);
        let [q, k, v] = [1, 2, 3].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        let eye = Tensor::eye(t, candle_core::DType::F32, &Device::Cpu)?;
        let l = Pattern::Linformer(Linformer {
            e: eye.clone(),
            f: eye,
        });
        let mask = AttentionMask::default();
        let (a, _) = l.attend(&q, &k, &v, &mask, false)?;
        let (want, _) = Pattern::Dense.attend(&q, &k, &v, &mask, false)?;
        assert_close(&a, &want, 1e-5, "identity Linformer vs dense")?;
        let causal = AttentionMask {
            causal: true,
            ..Default::default()
        };
        assert!(l.attend(&q, &k, &v, &causal, false).is_err());
        Ok(())
    }

    #[test]
    fn linformer_is_trainable_and_leaves_padding_out() -> Result<()> {
        let (b, t, h, d) = (2, 10, 2, 3);
        let store = ParamStore::new(0, &Device::Cpu);
        let l = Linformer::new(
            &store.root().sub("linformer"),
            4,
            16,
            LinformerSharing::Headwise,
        )?;
        let [q, k, v] = [4, 5, 6].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        let padding = Tensor::from_vec(
            (0..b * t)
                .map(|i| u8::from(i % t < 7 || i < t))
                .collect::<Vec<_>>(),
            (b, t),
            &Device::Cpu,
        )?;
        let mask = AttentionMask {
            key_padding: Some(padding.clone()),
            ..Default::default()
        };
        let pattern = Pattern::Linformer(l.clone());
        // Gradients of q, k, v and of the projections themselves match finite differences.
        check_gradients(
            &|x| {
                let p = Pattern::Linformer(Linformer {
                    e: x[3].clone(),
                    f: x[4].clone(),
                });
                Ok(p.attend(&x[0], &x[1], &x[2], &mask, false)?.0)
            },
            &[q.clone(), k.clone(), v.clone(), l.e.clone(), l.f.clone()],
            GradCheck::default(),
        )?;
        // What sits at a padding position does not matter.
        let noisy = (k.clone()
            + random_tensor(&[b, t, h, d], 9)?.broadcast_mul(
                &(1.0 - padding.to_dtype(candle_core::DType::F32)?)?.reshape((b, t, 1, 1))?,
            )?)?;
        let (a, _) = pattern.attend(&q, &k, &v, &mask, false)?;
        let (c, _) = pattern.attend(&q, &noisy, &v, &mask, false)?;
        assert_close(&a, &c, 1e-6, "padding keys")
    }
}
