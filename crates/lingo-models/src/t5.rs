//! T5 (Raffel et al., 2020): a text-to-text encoder–decoder, as `transformers` implements it.
//!
//! - No position embeddings: the first layer's self-attention learns a scalar bias per head for each
//!   bucket of relative distance (exact for near tokens, logarithmic up to `max_distance`), and every
//!   layer of the stack adds that same bias to its scores. The encoder's buckets are bidirectional,
//!   the decoder's only look back.
//! - Pre-norm layers with RMS norm (a weight, no bias, no mean subtraction); attention scores are not
//!   scaled by `1/√d` (the initialisation absorbs it).
//! - Feed-forward: ReLU (v1.0) or a gated GELU, `gelu(x W₀) ⊙ (x W₁)` (v1.1, `feed_forward_proj:
//!   "gated-gelu"`).
//! - The output layer is the shared embedding or (v1.1) a weight of its own; the decoder output is
//!   first scaled by `d_model^-0.5` where the config says so (`scale_decoder_outputs`, or, in older
//!   configs, a tied head).
//! - In training, `dropout_rate` applies after the embeddings, on the attention probabilities,
//!   after the feed-forward activation, on every sub-layer's output before its residual sum, and
//!   after each stack's final norm.

use crate::auto::{AutoModel, LoadOptions, Loaded};
use crate::contracts::{seq2seq_cross_entropy, Seq2SeqBatch, Seq2SeqLoss, Seq2SeqTrain};
use crate::hf::{Checkpoint, LoadError, Lookup};
use crate::outputs::{ModelInputs, ModelOutput, Trace};
use candle_core::{bail, DType, Device, Result, Tensor};
use lingo_nn::{
    Activation, Ctx, DecoderLayerCache, Dropout, Embedding, Init, Linear, ParamPath, RmsNorm,
};
use serde::Deserialize;

/// The fields of a T5 `config.json` that shape the network.
#[derive(Clone, Debug, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "relu")]
    pub feed_forward_proj: String,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Multiply the decoder output by `d_model^-0.5` before the output layer. Written by
    /// `transformers` 5; older configs imply it by `tie_word_embeddings`.
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Dropout everywhere it applies in training.
    #[serde(default = "tenth")]
    pub dropout_rate: f32,
    /// Scales every initial standard deviation (`transformers`' `initializer_factor`).
    #[serde(default = "one")]
    pub initializer_factor: f32,
}

fn one() -> f32 {
    1.0
}

fn tenth() -> f32 {
    0.1
}
fn buckets() -> usize {
    32
}
fn max_distance() -> usize {
    128
}
fn eps() -> f64 {
    1e-6
}
fn relu() -> String {
    "relu".into()
}
fn yes() -> bool {
    true
}

impl T5Config {
    /// `transformers`' initialisation of a projection reading `fan_in` inputs: normal with
    /// standard deviation `initializer_factor / √fan_in`.
    fn init_normal(&self, fan_in: usize) -> Init {
        Init::Normal(self.initializer_factor / (fan_in as f32).sqrt())
    }

    /// The feed-forward activation and whether it is gated.
    fn feed_forward(&self) -> Result<(Activation, bool)> {
        let (gated, act) = match self.feed_forward_proj.strip_prefix("gated-") {
            Some(act) => (true, act),
            None => (false, self.feed_forward_proj.as_str()),
        };
        let act = match act {
            "relu" => Activation::Relu,
            // `transformers` maps T5's "gated-gelu" to the tanh approximation.
            "gelu" | "gelu_new" => Activation::GeluTanh,
            other => bail!("feed_forward_proj `{other}` is not supported (relu, gated-gelu)"),
        };
        Ok((act, gated))
    }
}

/// The bucket of a relative distance `key − query` (T5's `_relative_position_bucket`, in f32 as
/// `transformers` computes it, so the boundaries fall in the same places).
fn bucket(relative: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut n = num_buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        n /= 2;
        if relative > 0 {
            bucket += n;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = n / 2;
    if distance < max_exact {
        return (bucket + distance) as usize;
    }
    let log_ratio = (distance as f32 / max_exact as f32).ln()
        / (max_distance as f32 / max_exact as f32).ln()
        * (n - max_exact) as f32;
    (bucket + (max_exact + log_ratio as i64).min(n - 1)) as usize
}

/// T5 attention: no score scaling, an additive bias (relative positions and masking).
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    d_kv: usize,
    /// `[num_buckets, heads]`, in the first layer of each stack's self-attention only.
    relative_bias: Option<Embedding>,
    /// On the attention probabilities.
    dropout: Dropout,
}

impl Attention {
    fn new(p: &ParamPath, c: &T5Config, relative_bias: bool) -> Result<Self> {
        let inner = c.num_heads * c.d_kv;
        // Scores are not divided by √d_kv: the query's smaller initial scale does it instead.
        let init = |fan_in: usize| c.init_normal(fan_in);
        Ok(Attention {
            q: Linear::new(
                &p.sub("q"),
                c.d_model,
                inner,
                false,
                init(c.d_model * c.d_kv),
            )?,
            k: Linear::new(&p.sub("k"), c.d_model, inner, false, init(c.d_model))?,
            v: Linear::new(&p.sub("v"), c.d_model, inner, false, init(c.d_model))?,
            o: Linear::new(&p.sub("o"), inner, c.d_model, false, init(inner))?,
            heads: c.num_heads,
            d_kv: c.d_kv,
            relative_bias: if relative_bias {
                Some(Embedding::new(
                    &p.sub("relative_attention_bias"),
                    c.relative_attention_num_buckets,
                    c.num_heads,
                    init(c.d_model),
                )?)
            } else {
                None
            },
            dropout: Dropout::new(c.dropout_rate),
        })
    }

    /// The relative-position bias `[1, heads, q_len, k_len]` of queries at positions
    /// `q_start..q_start + q_len` over keys at `0..k_len`.
    fn position_bias(
        &self,
        q_start: usize,
        q_len: usize,
        k_len: usize,
        bidirectional: bool,
        c: &T5Config,
    ) -> Result<Tensor> {
        let Some(table) = &self.relative_bias else {
            bail!("this attention layer has no relative position table");
        };
        let queries = q_start as i64..(q_start + q_len) as i64;
        let ids: Vec<u32> = queries
            .flat_map(|i| {
                (0..k_len as i64).map(move |j| {
                    bucket(
                        j - i,
                        bidirectional,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance,
                    ) as u32
                })
            })
            .collect();
        let ids = Tensor::from_vec(ids, (q_len, k_len), table.weight.device())?;
        table.forward(&ids)?.permute((2, 0, 1))?.unsqueeze(0)
    }

    /// `x: [batch, q_len, d_model]` attending over `kv: [batch, k_len, d_model]`; `bias` broadcasts to
    /// `[batch, heads, q_len, k_len]`.
    /// The attended output and the attention probabilities `[batch, heads, q_len, k_len]`.
    fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        bias: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Tensor)> {
        let (k, v) = self.keys_values(kv)?;
        self.attend(x, &k, &v, bias, ctx)
    }

    /// The keys and values `[batch, len, heads, d_kv]` of `kv: [batch, len, d_model]`.
    fn keys_values(&self, kv: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s, _) = kv.dims3()?;
        let split = |y: Tensor| y.reshape((b, s, self.heads, self.d_kv));
        Ok((split(self.k.forward(kv)?)?, split(self.v.forward(kv)?)?))
    }

    /// Self-attention of the next positions `x` over the cached keys and values of the earlier
    /// ones (extended with the new), `bias` covering all of them.
    fn attend_cached(
        &self,
        x: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let (k, v) = self.keys_values(x)?;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            None => (k.contiguous()?, v.contiguous()?),
        };
        let (y, _) = self.attend(x, &k, &v, bias, &mut Ctx::eval())?;
        *cache = Some((k, v));
        Ok(y)
    }

    /// `x` attending over keys and values from [`Self::keys_values`].
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let heads_first = |y: &Tensor| y.transpose(1, 2)?.contiguous();
        let q = heads_first(&self.q.forward(x)?.reshape((b, t, self.heads, self.d_kv))?)?;
        let (k, v) = (heads_first(k)?, heads_first(v)?);
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(bias)?;
        let weights = lingo_kernels::softmax(&scores)?;
        let context = self
            .dropout
            .forward(&weights, ctx)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.d_kv))?;
        Ok((self.o.forward(&context)?, weights))
    }
}

/// ReLU, or gated GELU, feed-forward.
struct FeedForward {
    wi: Linear,
    /// The gate's second projection (`wi_1`) for gated variants.
    wi_1: Option<Linear>,
    wo: Linear,
    act: Activation,
    /// After the activation (and the gate).
    dropout: Dropout,
}

impl FeedForward {
    fn new(p: &ParamPath, c: &T5Config) -> Result<Self> {
        let (act, gated) = c.feed_forward()?;
        let (d, f) = (c.d_model, c.d_ff);
        let init = c.init_normal(d);
        let (wi, wi_1) = if gated {
            (
                Linear::new(&p.sub("wi_0"), d, f, false, init)?,
                Some(Linear::new(&p.sub("wi_1"), d, f, false, init)?),
            )
        } else {
            (Linear::new(&p.sub("wi"), d, f, false, init)?, None)
        };
        Ok(FeedForward {
            wi,
            wi_1,
            wo: Linear::new(&p.sub("wo"), f, d, false, c.init_normal(f))?,
            act,
            dropout: Dropout::new(c.dropout_rate),
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut h = self.act.apply(&self.wi.forward(x)?)?;
        if let Some(wi_1) = &self.wi_1 {
            h = (h * wi_1.forward(x)?)?;
        }
        self.wo.forward(&self.dropout.forward(&h, ctx)?)
    }
}

/// One block: self-attention, (decoder) cross-attention, feed-forward, each pre-normed and residual.
struct Block {
    self_attn: Attention,
    self_norm: RmsNorm,
    cross: Option<(Attention, RmsNorm)>,
    ff: FeedForward,
    ff_norm: RmsNorm,
    /// On each sub-layer's output before its residual sum.
    dropout: Dropout,
}

impl Block {
    fn new(p: &ParamPath, c: &T5Config, decoder: bool, first: bool) -> Result<Self> {
        let layer = |i: usize| p.sub(format!("layer.{i}"));
        let norm =
            |i: usize| RmsNorm::new(&layer(i).sub("layer_norm"), c.d_model, c.layer_norm_epsilon);
        let ff_index = if decoder { 2 } else { 1 };
        Ok(Block {
            self_attn: Attention::new(&layer(0).sub("SelfAttention"), c, first)?,
            self_norm: norm(0)?,
            cross: if decoder {
                Some((
                    Attention::new(&layer(1).sub("EncDecAttention"), c, false)?,
                    norm(1)?,
                ))
            } else {
                None
            },
            ff: FeedForward::new(&layer(ff_index).sub("DenseReluDense"), c)?,
            ff_norm: norm(ff_index)?,
            dropout: Dropout::new(c.dropout_rate),
        })
    }

    /// The block's output; records its attention probabilities in `trace` when `want_weights`.
    fn forward(
        &self,
        x: &Tensor,
        self_bias: &Tensor,
        memory: Option<(&Tensor, &Tensor)>,
        want_weights: bool,
        trace: &mut Trace,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let h = self.self_norm.forward(x)?;
        let (attended, weights) = self.self_attn.forward(&h, &h, self_bias, ctx)?;
        if want_weights {
            trace.self_attentions.push(weights);
        }
        let mut x = (x + self.dropout.forward(&attended, ctx)?)?;
        if let (Some((attn, norm)), Some((memory, bias))) = (&self.cross, memory) {
            let (attended, weights) = attn.forward(&norm.forward(&x)?, memory, bias, ctx)?;
            if want_weights {
                trace.cross_attentions.push(weights);
            }
            x = (&x + self.dropout.forward(&attended, ctx)?)?;
        }
        let ff = self.ff.forward(&self.ff_norm.forward(&x)?, ctx)?;
        &x + self.dropout.forward(&ff, ctx)?
    }

    /// A decoder block on the next target positions `x` alone: the cache supplies the earlier
    /// positions' and the source's keys and values, and gains the new positions'.
    fn step(
        &self,
        x: &Tensor,
        self_bias: &Tensor,
        cross_bias: &Tensor,
        cache: &mut DecoderLayerCache,
    ) -> Result<(Tensor, Tensor)> {
        let h = self.self_norm.forward(x)?;
        let mut x = (x + self
            .self_attn
            .attend_cached(&h, &mut cache.own, self_bias)?)?;
        let (attn, norm) = self.cross.as_ref().expect("a decoder block");
        let (source_k, source_v) = &cache.source;
        let eval = &mut Ctx::eval();
        let (attended, weights) =
            attn.attend(&norm.forward(&x)?, source_k, source_v, cross_bias, eval)?;
        x = (&x + attended)?;
        Ok((
            (&x + self.ff.forward(&self.ff_norm.forward(&x)?, eval)?)?,
            weights,
        ))
    }
}

/// An additive mask `[batch, 1, 1, k_len]`: 0 at real tokens, a large negative value at padding.
fn padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    ((mask.to_dtype(DType::F32)? - 1.0)? * f32::MAX as f64)?.reshape((b, 1, 1, s))
}

/// `[1, 1, t, t]`: 0 on and below the diagonal, a large negative value above it.
fn causal_bias(t: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (1, 1, t, t), device)
}

pub struct T5 {
    pub config: T5Config,
    /// The encoder's and the decoder's token embeddings: `shared` itself, unless the checkpoint stores
    /// `encoder.embed_tokens` / `decoder.embed_tokens` as tensors of their own.
    encoder_embed: Embedding,
    decoder_embed: Embedding,
    encoder: Vec<Block>,
    encoder_norm: RmsNorm,
    decoder: Vec<Block>,
    decoder_norm: RmsNorm,
    /// `lm_head`, or the shared embedding table.
    lm_head: Linear,
    /// After the embeddings and after each stack's final norm.
    dropout: Dropout,
}

impl T5 {
    /// `own_embeddings`: whether the encoder and the decoder have token embeddings apart from
    /// `shared`; `own_head`: whether the output layer has its own weight (`lm_head`).
    pub fn new(
        config: T5Config,
        own_embeddings: (bool, bool),
        own_head: bool,
        p: &ParamPath,
    ) -> Result<Self> {
        let c = &config;
        let decoder_layers = c.num_decoder_layers.unwrap_or(c.num_layers);
        for (name, n) in [
            ("num_layers", c.num_layers),
            ("num_decoder_layers", decoder_layers),
        ] {
            if let Err(e) = crate::config::check_layers(name, n) {
                bail!("{e}");
            }
        }
        let stack = |name: &str, n: usize, decoder: bool| -> Result<Vec<Block>> {
            (0..n)
                .map(|i| Block::new(&p.sub(name).sub(format!("block.{i}")), c, decoder, i == 0))
                .collect()
        };
        // Unit-variance embeddings (and head): with a tied head the decoder output is scaled by
        // d_model^-0.5, so smaller embeddings would start every logit near zero and starve the
        // network of gradient (a from-scratch T5 then stalls at unigram statistics).
        let init = Init::Normal(c.initializer_factor);
        let shared = Embedding::new(&p.sub("shared"), c.vocab_size, c.d_model, init)?;
        let lm_head = if own_head {
            Linear::new(&p.sub("lm_head"), c.d_model, c.vocab_size, false, init)?
        } else {
            Linear::tied(p, &shared.weight, None)?
        };
        let embed = |own: bool, name: &str| -> Result<Embedding> {
            if own {
                Embedding::new(
                    &p.sub(name).sub("embed_tokens"),
                    c.vocab_size,
                    c.d_model,
                    init,
                )
            } else {
                Ok(shared.clone())
            }
        };
        Ok(T5 {
            encoder_embed: embed(own_embeddings.0, "encoder")?,
            decoder_embed: embed(own_embeddings.1, "decoder")?,
            encoder: stack("encoder", c.num_layers, false)?,
            encoder_norm: RmsNorm::new(
                &p.sub("encoder.final_layer_norm"),
                c.d_model,
                c.layer_norm_epsilon,
            )?,
            decoder: stack("decoder", decoder_layers, true)?,
            decoder_norm: RmsNorm::new(
                &p.sub("decoder.final_layer_norm"),
                c.d_model,
                c.layer_norm_epsilon,
            )?,
            lm_head,
            dropout: Dropout::new(c.dropout_rate),
            config,
        })
    }

    /// Runs a stack: the input embeddings, then the input of every block after the first, then the
    /// final norm of the last block's output — the states `transformers` reports.
    fn run(
        &self,
        decoder: bool,
        embedded: Tensor,
        self_bias: &Tensor,
        memory: Option<(&Tensor, &Tensor)>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<Trace> {
        let (blocks, norm) = match decoder {
            true => (&self.decoder, &self.decoder_norm),
            false => (&self.encoder, &self.encoder_norm),
        };
        let mut trace = Trace::starting(&embedded);
        let mut x = self.dropout.forward(&embedded, ctx)?;
        for (i, block) in blocks.iter().enumerate() {
            x = block.forward(&x, self_bias, memory, want_weights, &mut trace, ctx)?;
            if i + 1 < blocks.len() {
                trace.states.push(x.clone());
            }
        }
        let last = self.dropout.forward(&norm.forward(&x)?, ctx)?;
        trace.states.push(last);
        Ok(trace)
    }

    /// The encoder on `ids: [batch, src]` (`attention_mask`: 1 = real token); its last state is the
    /// memory the decoder reads.
    pub fn encode(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<Trace> {
        let t = ids.dim(1)?;
        let mut bias = self.encoder[0]
            .self_attn
            .position_bias(0, t, t, true, &self.config)?;
        if let Some(m) = attention_mask {
            bias = bias.broadcast_add(&padding_bias(m)?)?;
        }
        let embedded = self.encoder_embed.forward(ids)?;
        self.run(false, embedded, &bias, None, want_weights, ctx)
    }

    /// The decoder on `decoder_ids` over the encoder output `memory`: its trace and the logits.
    pub fn decode(
        &self,
        decoder_ids: &Tensor,
        memory: &Tensor,
        attention_mask: Option<&Tensor>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Trace, Tensor)> {
        let t = decoder_ids.dim(1)?;
        let self_bias = self.decoder[0]
            .self_attn
            .position_bias(0, t, t, false, &self.config)?
            .broadcast_add(&causal_bias(t, decoder_ids.device())?)?;
        let cross_bias = match attention_mask {
            Some(m) => padding_bias(m)?,
            None => Tensor::zeros((1, 1, 1, 1), DType::F32, memory.device())?,
        };
        let trace = self.run(
            true,
            self.decoder_embed.forward(decoder_ids)?,
            &self_bias,
            Some((memory, &cross_bias)),
            want_weights,
            ctx,
        )?;
        let logits = self.logits(trace.states.last().expect("final state"))?;
        Ok((trace, logits))
    }

    /// The output layer on the decoder's final (normed) states, rescaled by `d_model^-0.5` first
    /// when the head is tied.
    fn logits(&self, last: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let last = if c.scale_decoder_outputs.unwrap_or(c.tie_word_embeddings) {
            (last * (c.d_model as f64).powf(-0.5))?
        } else {
            last.clone()
        };
        self.lm_head.forward(&last)
    }

    /// Logits `[batch, tgt, vocab]` for `input_ids` and `decoder_input_ids`, with every state.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        let Some(decoder_ids) = &inputs.decoder_input_ids else {
            bail!("an encoder-decoder model needs `decoder_input_ids`");
        };
        let (mask, want) = (inputs.attention_mask.as_ref(), inputs.output_attentions);
        let encoder = self.encode(&inputs.input_ids, mask, want, ctx)?;
        let memory = encoder.states.last().expect("final state");
        let (decoder, logits) = self.decode(decoder_ids, memory, mask, want, ctx)?;
        Ok(ModelOutput::seq2seq(encoder, decoder, logits))
    }

    /// Loads a T5 folder (`T5ForConditionalGeneration` weights).
    pub fn load(
        checkpoint: &Checkpoint,
        options: &LoadOptions,
    ) -> std::result::Result<Loaded, LoadError> {
        let mut json = checkpoint.config.clone();
        if let Some(p) = options.dropout {
            json["dropout_rate"] = p.into();
        }
        let config: T5Config = checkpoint.parse(json.clone())?;
        let own = (
            checkpoint.has("encoder.embed_tokens.weight"),
            checkpoint.has("decoder.embed_tokens.weight"),
        );
        let own_head = checkpoint.has("lm_head.weight");
        let lookup = Lookup {
            seed: options.seed,
            allow_missing: &options.allow_missing,
            ..Lookup::default()
        };
        let built = checkpoint.build(&lookup, |p| T5::new(config, own, own_head, p))?;
        Ok(Loaded {
            model: AutoModel::T5(built.model),
            store: built.store,
            config: json,
            report: built.report,
            names: built.names,
        })
    }
}

impl crate::cached_decoding::CachedDecoder for T5 {
    fn start_id(&self) -> u32 {
        self.config.decoder_start_token_id.unwrap_or(0)
    }
    fn end_id(&self) -> u32 {
        self.config.eos_token_id.unwrap_or(1)
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn memory(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(self
            .encode(ids, Some(mask), false, &mut Ctx::eval())?
            .states
            .pop()
            .expect("final state"))
    }
    fn source_keys_values(&self, memory: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        (self.decoder.iter())
            .map(|b| match &b.cross {
                Some((attention, _)) => attention.keys_values(memory),
                None => bail!("a decoder block without cross-attention"),
            })
            .collect()
    }
    fn step(
        &self,
        tokens: &Tensor,
        position: usize,
        mask: &Tensor,
        caches: &mut [DecoderLayerCache],
    ) -> Result<(Tensor, Tensor)> {
        if tokens.dim(1)? != 1 {
            bail!("T5 decodes one token per step, got {:?}", tokens.dims());
        }
        // The new token sees every cached position and itself.
        let self_bias = self.decoder[0].self_attn.position_bias(
            position,
            1,
            position + 1,
            false,
            &self.config,
        )?;
        let cross_bias = padding_bias(mask)?;
        let mut x = self.decoder_embed.forward(tokens)?;
        let mut cross = None;
        for (block, cache) in self.decoder.iter().zip(caches) {
            let (y, w) = block.step(&x, &self_bias, &cross_bias, cache)?;
            x = y;
            cross = Some(w);
        }
        let logits = self.logits(&self.decoder_norm.forward(&x)?)?;
        Ok((logits, cross.expect("at least one decoder block")))
    }
}

impl Seq2SeqTrain for T5 {
    fn pad_id(&self) -> u32 {
        self.config.pad_token_id.unwrap_or(0)
    }

    fn loss(&self, batch: &Seq2SeqBatch, options: &Seq2SeqLoss, ctx: &mut Ctx) -> Result<Tensor> {
        let logits = self.forward(&batch.inputs()?, ctx)?.output;
        seq2seq_cross_entropy(&logits, batch, options)
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_follow_t5() {
        // Bidirectional, 32 buckets, max distance 128 (T5's defaults): 16 per direction, 8 exact.
        assert_eq!(bucket(0, true, 32, 128), 0);
        assert_eq!(bucket(-7, true, 32, 128), 7);
        assert_eq!(bucket(7, true, 32, 128), 16 + 7);
        assert_eq!(bucket(-8, true, 32, 128), 8);
        assert_eq!(bucket(-1000, true, 32, 128), 15);
        // Causal: only the past counts.
        assert_eq!(bucket(5, false, 32, 128), 0);
        assert_eq!(bucket(-5, false, 32, 128), 5);
        assert_eq!(bucket(-1000, false, 32, 128), 31);
    }
}
