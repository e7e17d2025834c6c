//! Multi-head self-attention with a fused q/k/v projection, and the key/value cache that makes
//! generation cost one token's work per step.

use crate::attention_pattern::Pattern;
use crate::dropout::Dropout;
use crate::linear::Linear;
use crate::params::{ParamPath, SublayerInit};
use crate::Ctx;
use candle_core::{DType, Result, Tensor};
use lingo_kernels::window_attention::{window_attention, Window};
use lingo_kernels::AttentionMask;

/// Keys and values of the positions seen so far, for one layer: `[batch, capacity, heads, head_dim]`
/// buffers filled up to `len`, grown by doubling.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    buffers: Option<(Tensor, Tensor)>,
    len: usize,
    /// Positions dropped from the front (a sliding window's rolling cache).
    evicted: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions seen so far — the next token's position — counting any a rolling window dropped.
    pub fn position(&self) -> usize {
        self.evicted + self.len
    }

    /// Keeps only the first `sinks` positions and the last `n` (a sliding window's rolling cache
    /// with its global tokens: other keys are never attended to again).
    fn keep(&mut self, sinks: usize, n: usize) -> Result<()> {
        if self.len <= sinks + n {
            return Ok(());
        }
        if let Some((k, v)) = &self.buffers {
            let drop = self.len - sinks - n;
            for buf in [k, v] {
                let tail = buf.narrow(1, sinks + drop, n)?.contiguous()?;
                buf.slice_set(&tail, 1, sinks)?;
            }
            self.evicted += drop;
            self.len = sinks + n;
        }
        Ok(())
    }

    /// The cached keys and values `[batch, len, heads, head_dim]` (views), or `None` when empty.
    pub fn tensors(&self) -> Result<Option<(Tensor, Tensor)>> {
        match &self.buffers {
            Some((k, v)) if self.len > 0 => {
                Ok(Some((k.narrow(1, 0, self.len)?, v.narrow(1, 0, self.len)?)))
            }
            _ => Ok(None),
        }
    }

    /// A cache holding the keys `k` and values `v` (`[batch, len, heads, head_dim]`), e.g. the rows
    /// of another cache picked by a beam search.
    pub fn from_tensors(k: &Tensor, v: &Tensor) -> Result<Self> {
        if k.dims() != v.dims() || k.rank() != 4 {
            candle_core::bail!(
                "a key/value cache needs equal [batch, len, heads, head_dim] keys and values, got {:?} and {:?}",
                k.dims(),
                v.dims()
            );
        }
        Ok(KvCache {
            len: k.dim(1)?,
            buffers: Some((k.contiguous()?, v.contiguous()?)),
            evicted: 0,
        })
    }

    /// Appends `k`, `v` (`[batch, new, heads, head_dim]`) and returns views of every cached position.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, n, h, d) = k.dims4()?;
        let needed = self.len + n;
        let capacity = self
            .buffers
            .as_ref()
            .map_or(0, |(k, _)| k.dim(1).unwrap_or(0));
        if needed > capacity {
            let new_cap = needed.max(2 * capacity).max(16);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let t = Tensor::zeros((b, new_cap, h, d), DType::F32, k.device())?;
                if let Some(old) = old {
                    t.slice_set(&old.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                Ok(t)
            };
            let old = self.buffers.take();
            self.buffers = Some((
                grow(old.as_ref().map(|o| &o.0))?,
                grow(old.as_ref().map(|o| &o.1))?,
            ));
        }
        let (kb, vb) = self.buffers.as_ref().expect("buffers allocated above");
        kb.slice_set(&k.contiguous()?, 1, self.len)?;
        vb.slice_set(&v.contiguous()?, 1, self.len)?;
        self.len = needed;
        Ok((kb.narrow(1, 0, needed)?, vb.narrow(1, 0, needed)?))
    }
}

/// Self-attention: `out(attend(split_heads(x W_qkvᵀ)))`.
#[derive(Clone, Debug)]
pub struct MultiHeadSelfAttention {
    pub qkv: Linear,
    pub out: Linear,
    pub heads: usize,
    pub attn_dropout: Dropout,
    /// Which keys it attends over (dense, a sliding window, Linformer's projections).
    pub pattern: Pattern,
}

impl MultiHeadSelfAttention {
    /// `names` are the parameter names of the q/k/v and output projections (they differ between
    /// model families).
    pub fn new(
        p: &ParamPath,
        names: (&str, &str),
        d_model: usize,
        heads: usize,
        bias: bool,
        init: SublayerInit,
    ) -> Result<Self> {
        if heads == 0 || !d_model.is_multiple_of(heads) {
            candle_core::bail!("d_model {d_model} is not divisible by the number of heads {heads}");
        }
        Ok(MultiHeadSelfAttention {
            qkv: Linear::new(&p.sub(names.0), d_model, 3 * d_model, bias, init.input)?,
            out: Linear::new(&p.sub(names.1), d_model, d_model, bias, init.output)?,
            heads,
            attn_dropout: Dropout::new(0.0),
            pattern: Pattern::Dense,
        })
    }

    /// The same layer dropping attention probabilities with probability `p` in training.
    pub fn with_attention_dropout(mut self, p: f32) -> Self {
        self.attn_dropout = Dropout::new(p);
        self
    }

    /// The same layer attending with `pattern` (see [`crate::attention_pattern`]).
    pub fn with_pattern(mut self, pattern: Pattern) -> Self {
        self.pattern = pattern;
        self
    }

    /// `qkv: [batch, time, 3·d_model]` as q, k, v `[batch, time, heads, head_dim]`.
    fn split_qkv(&self, qkv: &Tensor) -> Result<[Tensor; 3]> {
        let (b, t, c3) = qkv.dims3()?;
        let qkv = qkv.reshape((b, t, 3, self.heads, c3 / 3 / self.heads))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2);
        Ok([part(0)?, part(1)?, part(2)?])
    }

    /// `x: [batch, time, d_model]`. With a cache, `x` holds only the new positions and the cache
    /// supplies the earlier keys and values. Returns the output and, if asked, the attention weights.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let qkv = self.qkv.forward(x)?;
        let (y, weights) = match cache {
            None => {
                let mask = AttentionMask {
                    dropout: self.attn_dropout.attention(ctx),
                    ..mask.clone()
                };
                match &self.pattern {
                    Pattern::Dense => {
                        lingo_kernels::self_attention(&qkv, self.heads, &mask, want_weights)?
                    }
                    pattern => {
                        let [q, k, v] = self.split_qkv(&qkv)?;
                        let (y, w) = pattern.attend(&q, &k, &v, &mask, want_weights)?;
                        (y.flatten_from(2)?, w)
                    }
                }
            }
            Some(cache) => self.attend_cached(&qkv, mask, cache, want_weights)?,
        };
        Ok((self.out.forward(&y)?, weights))
    }

    /// Attention of the new positions projected in `qkv: [batch, new, 3·d_model]` over `cache`,
    /// which is extended with their keys and values; the output is `[batch, new, d_model]`.
    fn attend_cached(
        &self,
        qkv: &Tensor,
        mask: &AttentionMask,
        cache: &mut KvCache,
        want_weights: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, c3) = qkv.dims3()?;
        let [q, k, v] = self.split_qkv(qkv)?;
        let (window, sinks) = match self.pattern {
            Pattern::Window { size, global } => (size, global),
            Pattern::Linformer(_) => {
                candle_core::bail!("Linformer is not causal: it has no decoding cache")
            }
            Pattern::Lsh(_) => {
                candle_core::bail!(
                    "LSH attention has no decoding cache yet: score with full sequences"
                )
            }
            Pattern::Dense => (0, 0),
        };
        if window == 0 {
            let mask = AttentionMask {
                query_offset: cache.len(),
                ..mask.clone()
            };
            let (k, v) = cache.append(&k, &v)?;
            let (y, w) = lingo_kernels::attention_with_weights(&q, &k, &v, &mask, want_weights)?;
            return Ok((y.reshape((b, t, c3 / 3))?, w));
        }
        // A rolling cache keeps the global tokens and the window's last `window − 1` keys,
        // which is all the next query sees: each new position attends over them and itself.
        if !mask.causal || want_weights || mask.key_padding.is_some() {
            candle_core::bail!(
                "a sliding-window cache decodes causally, without padding or attention weights"
            );
        }
        let y = if cache.is_empty() && t > 1 {
            let y = window_attention(
                &q,
                &k,
                &v,
                Window::causal(window).with_global(sinks),
                &AttentionMask::default(),
            )?;
            cache.append(&k, &v)?;
            y
        } else {
            let mut ys = Vec::with_capacity(t);
            for i in 0..t {
                let one = |x: &Tensor| x.narrow(1, i, 1);
                let (keys, values) = cache.append(&one(&k)?, &one(&v)?)?;
                let causal = AttentionMask {
                    causal: true,
                    query_offset: keys.dim(1)? - 1,
                    ..Default::default()
                };
                ys.push(lingo_kernels::attention(
                    &one(&q)?,
                    &keys,
                    &values,
                    &causal,
                )?);
                cache.keep(sinks, window - 1)?;
            }
            Tensor::cat(&ys, 1)?
        };
        cache.keep(sinks, window - 1)?;
        Ok((y.reshape((b, t, c3 / 3))?, None))
    }

    /// One new position for each of several independent sequences (continuous batching):
    /// `x: [rows, 1, d_model]`, row `i` continuing the sequence whose keys and values are in
    /// `caches[i]`. The projections multiply every row at once — at decoding's row counts a weight
    /// is read once instead of once per sequence — and each row attends over its own cache.
    pub fn forward_rows(&self, x: &Tensor, caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let (rows, t, _) = qkv.dims3()?;
        if t != 1 || rows != caches.len() {
            candle_core::bail!(
                "forward_rows takes one position per cache: {rows} rows of {t} for {} caches",
                caches.len()
            );
        }
        let causal = AttentionMask {
            causal: true,
            ..Default::default()
        };
        let mut ys = Vec::with_capacity(rows);
        for (i, cache) in caches.iter_mut().enumerate() {
            ys.push(
                self.attend_cached(&qkv.narrow(0, i, 1)?, &causal, cache, false)?
                    .0,
            );
        }
        self.out.forward(&Tensor::cat(&ys, 0)?)
    }
}

/// Multi-head attention with separate query, key, value and output projections (the layout of
/// BERT, BART and the original Transformer): self-attention when the keys come from the queries'
/// own input, cross-attention when they come from an encoder.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    pub q: Linear,
    /// `None` in a shared-QK layer (Reformer's LSH attention: the keys are the queries).
    pub k: Option<Linear>,
    pub v: Linear,
    pub out: Linear,
    pub heads: usize,
    /// Dropout on the attention probabilities while training (BERT's `attention_probs_dropout_prob`).
    pub dropout: Dropout,
    /// Which keys self-attention attends over (cross-attention is always dense).
    pub pattern: Pattern,
}

impl MultiHeadAttention {
    /// `names`: the four projections' parameter names under `p` (query, key, value, output).
    pub fn new(
        p: &ParamPath,
        names: [&str; 4],
        d_model: usize,
        heads: usize,
        init: crate::Init,
    ) -> Result<Self> {
        if heads == 0 || !d_model.is_multiple_of(heads) {
            candle_core::bail!("d_model {d_model} is not divisible by the number of heads {heads}");
        }
        Self::with_head_dim(p, names, d_model, heads, d_model / heads, init)
    }

    /// As [`Self::new`] with `heads` heads of `head_dim` each, whatever `d_model` is: what is left
    /// of a layer after some of its heads were pruned.
    pub fn with_head_dim(
        p: &ParamPath,
        names: [&str; 4],
        d_model: usize,
        heads: usize,
        head_dim: usize,
        init: crate::Init,
    ) -> Result<Self> {
        Self::build(p, names, d_model, heads, head_dim, init, false)
    }

    /// A self-attention layer whose keys are its queries (no key projection), for
    /// [`Pattern::Lsh`]: Reformer's shared-QK attention.
    pub fn shared_qk(
        p: &ParamPath,
        names: [&str; 4],
        d_model: usize,
        heads: usize,
        head_dim: usize,
        init: crate::Init,
    ) -> Result<Self> {
        Self::build(p, names, d_model, heads, head_dim, init, true)
    }

    fn build(
        p: &ParamPath,
        names: [&str; 4],
        d_model: usize,
        heads: usize,
        head_dim: usize,
        init: crate::Init,
        shared_qk: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let linear = |name: &str, i, o| Linear::new(&p.sub(name), i, o, true, init);
        Ok(MultiHeadAttention {
            q: linear(names[0], d_model, inner)?,
            k: match shared_qk {
                true => None,
                false => Some(linear(names[1], d_model, inner)?),
            },
            v: linear(names[2], d_model, inner)?,
            out: linear(names[3], inner, d_model)?,
            heads,
            dropout: Dropout::new(0.0),
            pattern: Pattern::Dense,
        })
    }

    /// `y: [batch, len, heads·head_dim]` as `[batch, len, heads, head_dim]`.
    fn split_heads(&self, y: &Tensor) -> Result<Tensor> {
        let (b, t, width) = y.dims3()?;
        y.reshape((b, t, self.heads, width / self.heads))
    }

    /// `x: [batch, q_len, d_model]` attending over `kv: [batch, k_len, d_model]`; also returns the
    /// attention probabilities `[batch, heads, q_len, k_len]` if asked.
    pub fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        mask: &AttentionMask,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if x.id() == kv.id() {
            // Self-attention: the projections read one input (quantized once if int8).
            let Some(k) = &self.k else {
                let qv = Linear::forward_each(&[&self.q, &self.v], x)?;
                let [q, v] = [0, 1].map(|i| self.split_heads(&qv[i]));
                let q = q?;
                return self.attend_projected(&q, &q, &v?, mask, want_weights, &self.pattern, ctx);
            };
            let qkv = Linear::forward_each(&[&self.q, k, &self.v], x)?;
            let [q, k, v] = [0, 1, 2].map(|i| self.split_heads(&qkv[i]));
            return self.attend_projected(&q?, &k?, &v?, mask, want_weights, &self.pattern, ctx);
        }
        let (k, v) = self.keys_values(kv)?;
        self.attend(x, &k, &v, mask, want_weights, ctx)
    }

    /// The keys and values `[batch, len, heads, head_dim]` of `kv: [batch, len, d_model]`: what
    /// a decoder computes once per source for its cross-attention.
    pub fn keys_values(&self, kv: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some(k) = &self.k else {
            candle_core::bail!("a shared-QK (LSH) layer attends only over its own input");
        };
        Ok((
            self.split_heads(&k.forward(kv)?)?,
            self.split_heads(&self.v.forward(kv)?)?,
        ))
    }

    /// `x: [batch, q_len, d_model]` attending over keys and values from [`Self::keys_values`].
    pub fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &AttentionMask,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let q = self.split_heads(&self.q.forward(x)?)?;
        self.attend_projected(&q, k, v, mask, want_weights, &Pattern::Dense, ctx)
    }

    /// Attention of projected queries `q: [batch, q_len, heads, head_dim]` under `pattern`, then
    /// the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attend_projected(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &AttentionMask,
        want_weights: bool,
        pattern: &Pattern,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, heads, head_dim) = q.dims4()?;
        let mask = AttentionMask {
            dropout: self.dropout.attention(ctx),
            ..mask.clone()
        };
        let (context, weights) = pattern.attend(q, k, v, &mask, want_weights)?;
        let context = context.reshape((b, t, heads * head_dim))?;
        Ok((self.out.forward(&context)?, weights))
    }

    /// Causal self-attention of new positions `x: [batch, new, d_model]` that follow the positions
    /// whose keys and values `cache` holds (`[batch, len, heads, head_dim]`, `None` at the start),
    /// which it extends: a decoder step costs the new positions' work only.
    pub fn attend_cached(
        &self,
        x: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (k, v) = self.keys_values(x)?;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            None => (k.contiguous()?, v.contiguous()?),
        };
        let mask = AttentionMask {
            causal: true,
            query_offset: k.dim(1)? - x.dim(1)?,
            ..Default::default()
        };
        let (y, _) = self.attend(x, &k, &v, &mask, false, &mut Ctx::eval())?;
        *cache = Some((k, v));
        Ok(y)
    }
}

/// What a decoder layer keeps between steps: its self-attention's keys and values of the positions
/// decoded so far, and its cross-attention's keys and values of the source.
#[derive(Clone, Debug)]
pub struct DecoderLayerCache {
    pub own: Option<(Tensor, Tensor)>,
    pub source: (Tensor, Tensor),
}
