//! Which keys self-attention attends over — what a model config's `"attention"` chooses:
//!
//! - `dense`: every position (every earlier one if causal), `O(n²)`;
//! - `window`: the `attention_window` nearest positions (the earlier ones if causal, half either
//!   side otherwise) and the first `attention_global` positions (Longformer's global tokens), by
//!   the fused banded kernel of `lingo_kernels::window_attention`, `O(n·(w + g))`;
//! - `linformer` (Wang et al., 2020): keys and values projected along the sequence to `k` rows by
//!   learned `E, F: [k, max_len]` (one pair per layer shared by its heads, or `E = F`, or one pair
//!   shared by every layer), then dense attention over those `k`: `O(n·k)`. Every projected row
//!   mixes every position, so Linformer cannot be causal.
//! - `lsh` (Reformer, Kitaev et al., 2020): keys are the unit-length queries (shared QK); random
//!   rotations hash them into `lsh_buckets` buckets; positions sorted by bucket are cut into chunks
//!   of `lsh_chunk` that attend within themselves and the chunk before, `lsh_rounds` times with
//!   fresh hashes, the rounds combined by their softmax normalisers: `O(n·c)` per round. A query
//!   sees itself only when nothing else is visible; causal masking works as usual.

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
    Lsh,
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

/// Reformer's locality-sensitive-hashing attention: its sizes and fixed random rotations.
#[derive(Clone, Debug)]
pub struct Lsh {
    pub buckets: usize,
    pub rounds: usize,
    pub chunk: usize,
    /// `[head_dim, rounds · buckets/2]`, drawn once from a seed (not trained).
    rotations: Tensor,
}

/// Added to the score of a query with itself (Reformer's value: it counts only when nothing
/// else is visible) and to a hidden key.
const SELF_SCORE: f32 = -1e5;
const HIDDEN: f32 = -1e9;

impl Lsh {
    /// `buckets`: 1, or an even number; rotations drawn from `seed`.
    pub fn new(
        head_dim: usize,
        buckets: usize,
        rounds: usize,
        chunk: usize,
        seed: u64,
        device: &candle_core::Device,
    ) -> Result<Self> {
        if buckets == 0 || (buckets > 1 && buckets % 2 == 1) || rounds == 0 || chunk == 0 {
            bail!(
                "LSH attention needs lsh_buckets 1 or even, lsh_rounds ≥ 1 and lsh_chunk ≥ 1 (got {buckets}, {rounds}, {chunk})"
            );
        }
        let mut rng = crate::LingoRng::new(seed);
        let n = head_dim * rounds * (buckets / 2).max(1);
        let values: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let rotations =
            Tensor::from_vec(values, (head_dim, rounds * (buckets / 2).max(1)), device)?;
        Ok(Lsh {
            buckets,
            rounds,
            chunk,
            rotations,
        })
    }

    /// Each position's bucket in each round, `[rounds][B·H·T]`, from unit keys `[B, H, T, D]`.
    fn hash(&self, keys: &Tensor) -> Result<Vec<Vec<u32>>> {
        let (b, h, t, d) = keys.dims4()?;
        if self.buckets == 1 {
            return Ok(vec![vec![0; b * h * t]; self.rounds]);
        }
        let half = self.buckets / 2;
        let rotated = keys
            .detach()
            .reshape((b * h * t, d))?
            .matmul(&self.rotations)?
            .to_vec2::<f32>()?;
        Ok((0..self.rounds)
            .map(|r| {
                rotated
                    .iter()
                    .map(|row| {
                        // argmax over [x R, −x R]
                        let part = &row[r * half..(r + 1) * half];
                        let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                        for (i, &x) in part.iter().enumerate() {
                            if x > best {
                                (best, at) = (x, i);
                            }
                            if -x > best {
                                (best, at) = (-x, i + half);
                            }
                        }
                        at as u32
                    })
                    .collect()
            })
            .collect())
    }

    /// Attention of `q` (its unit vectors the keys) over `v`, both `[B, T, H, D]`.
    fn attend(&self, q: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
        let (b, t, h, d) = q.dims4()?;
        let dev = q.device().clone();
        let c = self.chunk.min(t);
        let tp = t.div_ceil(c) * c;
        let chunks = tp / c;
        let pad = |x: &Tensor| -> Result<Tensor> {
            let x = x.transpose(1, 2)?.contiguous()?;
            if tp == t {
                return Ok(x);
            }
            x.pad_with_zeros(2, 0, tp - t)
        };
        let (qh, vh) = (pad(q)?, pad(v)?);
        let norm = qh.sqr()?.sum_keepdim(3)?.sqrt()?;
        let keys = qh.broadcast_div(&(norm + 1e-6)?)?;
        let scale = mask.scale.unwrap_or(1.0 / (d as f64).sqrt());
        // Which positions may be keys at all: real (not padding, not the chunk padding).
        let real: Vec<bool> = match &mask.key_padding {
            Some(kp) => {
                let kp = kp.ne(0.0)?.to_vec2::<u8>()?;
                (0..b * tp)
                    .map(|i| i % tp < t && kp[i / tp][i % tp] == 1)
                    .collect()
            }
            None => (0..b * tp).map(|i| i % tp < t).collect(),
        };
        let look_back = chunks > 1;
        let kc = if look_back { 2 * c } else { c };
        let mut outs = Vec::with_capacity(self.rounds);
        let mut norms = Vec::with_capacity(self.rounds);
        for buckets in self.hash(&keys)? {
            // Sort each (batch, head) row by (bucket, position).
            let mut order = vec![0u32; b * h * tp];
            let mut inverse = vec![0u32; b * h * tp];
            for row in 0..b * h {
                let slot = &mut order[row * tp..(row + 1) * tp];
                for (i, s) in slot.iter_mut().enumerate() {
                    *s = i as u32;
                }
                slot.sort_by_key(|&i| (buckets[row * tp + i as usize], i));
                for (j, &i) in slot.iter().enumerate() {
                    inverse[row * tp + i as usize] = j as u32;
                }
            }
            let index = |ix: &[u32]| -> Result<Tensor> {
                Tensor::from_slice(ix, (b, h, tp, 1), &dev)?
                    .broadcast_as((b, h, tp, d))?
                    .contiguous()
            };
            let (by_bucket, back) = (index(&order)?, index(&inverse)?);
            let chunked = |x: &Tensor| x.gather(&by_bucket, 2)?.reshape((b, h, chunks, c, d));
            let (sq, sk, sv) = (chunked(&qh)?, chunked(&keys)?, chunked(&vh)?);
            let with_previous = |x: Tensor| -> Result<Tensor> {
                if !look_back {
                    return Ok(x);
                }
                let previous = Tensor::cat(
                    &[x.narrow(2, chunks - 1, 1)?, x.narrow(2, 0, chunks - 1)?],
                    2,
                )?;
                Tensor::cat(&[x, previous], 3)
            };
            let (sk, sv) = (with_previous(sk)?, with_previous(sv)?);
            // Positions of each chunk's queries and keys, for the masks.
            let mut bias = vec![0f32; b * h * chunks * c * kc];
            for row in 0..b * h {
                let pos = &order[row * tp..(row + 1) * tp];
                let batch = row / h;
                for n in 0..chunks {
                    let prev = (n + chunks - 1) % chunks;
                    for i in 0..c {
                        let qp = pos[n * c + i] as usize;
                        for j in 0..kc {
                            let kp = if j < c {
                                pos[n * c + j]
                            } else {
                                pos[prev * c + j - c]
                            } as usize;
                            let at = ((row * chunks + n) * c + i) * kc + j;
                            bias[at] = if !real[batch * tp + kp] || (mask.causal && kp > qp) {
                                HIDDEN
                            } else if kp == qp {
                                SELF_SCORE
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
            let n = b * h * chunks;
            let flat = |x: Tensor, rows: usize| x.contiguous()?.reshape((n, rows, d));
            let (sq, sk, sv) = (flat(sq, c)?, flat(sk, kc)?, flat(sv, kc)?);
            let bias = Tensor::from_vec(bias, (n, c, kc), &dev)?;
            let scores = ((sq.matmul(&sk.transpose(1, 2)?.contiguous()?)? * scale)? + bias)?;
            let top = scores.max_keepdim(2)?.detach();
            let lse = (scores.broadcast_sub(&top)?.exp()?.sum_keepdim(2)?.log()? + &top)?;
            let p = scores.broadcast_sub(&lse)?.exp()?;
            let out = p.matmul(&sv)?.reshape((b, h, tp, d))?;
            outs.push(out.gather(&back, 2)?);
            let lse = lse.reshape((b, h, tp, 1))?.contiguous()?;
            norms.push(lse.gather(&back.narrow(3, 0, 1)?.contiguous()?, 2)?);
        }
        // Rounds weighed by how much probability mass each found: softmax of their normalisers.
        let out = if self.rounds == 1 {
            outs.remove(0)
        } else {
            let norms = Tensor::stack(&norms, 0)?;
            let top = norms.max_keepdim(0)?.detach();
            let w = norms.broadcast_sub(&top)?.exp()?;
            let w = w.broadcast_div(&w.sum_keepdim(0)?)?;
            Tensor::stack(&outs, 0)?.broadcast_mul(&w)?.sum(0)?
        };
        out.narrow(2, 0, t)?.transpose(1, 2)?.contiguous()
    }
}

/// Dense attention with Reformer's conventions (keys the unit queries, a query's score with
/// itself pushed down), `O(n²)`: what LSH attention with one bucket and one chunk computes.
pub fn shared_qk_reference(q: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    let (b, t, _, d) = q.dims4()?;
    let qh = q.transpose(1, 2)?.contiguous()?;
    let vh = v.transpose(1, 2)?.contiguous()?;
    let keys = qh.broadcast_div(&(qh.sqr()?.sum_keepdim(3)?.sqrt()? + 1e-6)?)?;
    let scale = mask.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let scores = (qh.matmul(&keys.transpose(2, 3)?.contiguous()?)? * scale)?;
    let real = match &mask.key_padding {
        Some(kp) => kp.ne(0.0)?.to_vec2::<u8>()?,
        None => vec![vec![1; t]; b],
    };
    let bias: Vec<f32> = (0..b * t * t)
        .map(|i| {
            let (batch, qp, kp) = (i / (t * t), i / t % t, i % t);
            if real[batch][kp] == 0 || (mask.causal && kp > qp) {
                HIDDEN
            } else if kp == qp {
                SELF_SCORE
            } else {
                0.0
            }
        })
        .collect();
    let bias = Tensor::from_vec(bias, (b, 1, t, t), q.device())?;
    let p = lingo_kernels::softmax::softmax(&scores.broadcast_add(&bias)?)?;
    p.matmul(&vh)?.transpose(1, 2)?.contiguous()
}

/// A self-attention layer's choice of keys with its learned parts.
#[derive(Clone, Debug, Default)]
pub enum Pattern {
    #[default]
    Dense,
    /// A sliding window of `size` positions, the first `global` positions global (Longformer).
    Window {
        size: usize,
        global: usize,
    },
    Linformer(Linformer),
    Lsh(Lsh),
}

/// What a model config says about its self-attention (the fields every family shares).
#[derive(Clone, Copy, Debug)]
pub struct PatternConfig {
    pub kind: AttentionKind,
    pub window: usize,
    /// Leading global tokens of a window (see [`Window::global`]).
    pub global: usize,
    pub linformer_k: usize,
    pub linformer_sharing: LinformerSharing,
    /// The longest sequence (Linformer's projection width).
    pub max_len: usize,
    pub lsh_buckets: usize,
    pub lsh_rounds: usize,
    pub lsh_chunk: usize,
    /// Width of a head (LSH's rotations) and the seed of the layer's random rotations.
    pub head_dim: usize,
    pub seed: u64,
}

impl Pattern {
    /// The pattern of a layer whose attention parameters live at `layer`; `shared` holds what
    /// every layer shares (layer-wise Linformer projections).
    pub fn build(c: &PatternConfig, layer: &ParamPath, shared: &ParamPath) -> Result<Pattern> {
        Ok(match c.kind {
            AttentionKind::Dense => Pattern::Dense,
            AttentionKind::Window => Pattern::Window {
                size: c.window.max(1),
                global: c.global,
            },
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
            AttentionKind::Lsh => Pattern::Lsh(Lsh::new(
                c.head_dim,
                c.lsh_buckets,
                c.lsh_rounds,
                c.lsh_chunk,
                c.seed,
                &layer.store().device(),
            )?),
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
            Pattern::Window { size, global } => {
                let window = match mask.causal {
                    true => Window::causal(*size),
                    false => Window::centred(*size),
                }
                .with_global(*global);
                let mask = AttentionMask {
                    causal: false,
                    ..mask.clone()
                };
                Ok((window_attention(q, k, v, window, &mask)?, None))
            }
            Pattern::Lsh(l) => Ok((l.attend(q, v, mask)?, None)),
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
    fn lsh_with_one_bucket_and_chunk_is_shared_qk_attention() -> Result<()> {
        let (b, t, h, d) = (2, 11, 2, 4);
        let [q, v] = [1, 2].map(|s| random_tensor(&[b, t, h, d], s).unwrap());
        let padding = Tensor::from_vec(
            (0..b * t)
                .map(|i| u8::from(i < t || i % t < 8))
                .collect::<Vec<_>>(),
            (b, t),
            &Device::Cpu,
        )?;
        for causal in [false, true] {
            let mask = AttentionMask {
                causal,
                key_padding: Some(padding.clone()),
                ..Default::default()
            };
            for (rounds, chunk) in [(1, 64), (3, 11)] {
                let lsh = Lsh::new(d, 1, rounds, chunk, 5, &Device::Cpu)?;
                let got = lsh.attend(&q, &v, &mask)?;
                let want = shared_qk_reference(&q, &v, &mask)?;
                assert_close(&got, &want, 1e-5, "one bucket")?;
            }
            // Gradients through the composed graph: q with one bucket (hashing is flat), v with
            // several (sorting, chunks and the look-back in play).
            let one = Lsh::new(d, 1, 2, 4, 5, &Device::Cpu)?;
            let m = mask.clone();
            check_gradients(
                &move |x| one.attend(&x[0], &x[1], &m),
                &[q.clone(), v.clone()],
                GradCheck::default(),
            )?;
            let many = Lsh::new(d, 4, 2, 4, 5, &Device::Cpu)?;
            let (m, q2) = (mask.clone(), q.clone());
            check_gradients(
                &move |x| many.attend(&q2, &x[0], &m),
                std::slice::from_ref(&v),
                GradCheck::default(),
            )?;
        }
        Ok(())
    }

    #[test]
    fn lsh_finds_the_keys_that_matter() -> Result<()> {
        // Queries in a few tight clusters: hashing puts each cluster in one bucket, so chunked
        // LSH attention comes close to full shared-QK attention although each query sees at most
        // two chunks of 8 of the 64 positions.
        let (t, h, d) = (64, 1, 16);
        let centres = random_tensor(&[4, d], 3)?;
        let ids: Vec<u32> = (0..t as u32).map(|i| (i * 7) % 4).collect();
        let noise = (random_tensor(&[t, d], 4)? * 0.05)?;
        let q = (centres.index_select(&Tensor::new(ids.as_slice(), &Device::Cpu)?, 0)? * 4.0)?;
        let q = (q + noise)?.reshape((1, t, h, d))?;
        let v = random_tensor(&[1, t, h, d], 5)?;
        let mask = AttentionMask::default();
        let want = shared_qk_reference(&q, &v, &mask)?;
        let error = |buckets: usize| -> Result<f32> {
            let got = Lsh::new(d, buckets, 4, 16, 7, &Device::Cpu)?.attend(&q, &v, &mask)?;
            (&got - &want)?.abs()?.mean_all()?.to_scalar::<f32>()
        };
        // One bucket is chunks of neighbouring positions, which mix the interleaved clusters.
        let (hashed, positional) = (error(8)?, error(1)?);
        assert!(
            hashed < 0.5 * positional,
            "LSH error {hashed} against positional chunks' {positional}"
        );
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
