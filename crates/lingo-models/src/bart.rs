//! BART (Lewis et al., 2020) and Marian (Junczys-Dowmunt et al., 2018): post-norm Transformer
//! encoder–decoders as `transformers` implements them, loaded under the checkpoints' own names.
//!
//! Both embed tokens with one table shared by the encoder, the decoder and the output layer
//! (`model.shared`), add positions, and run post-norm layers: self-attention → add & norm → (decoder:
//! cross-attention over the encoder → add & norm) → feed-forward → add & norm. The logits add
//! `final_logits_bias`. They differ in details:
//!
//! | | BART | Marian |
//! |---|---|---|
//! | positions | learned, offset by 2 | sinusoidal, computed, not stored (sines then cosines) |
//! | embedding scale | 1 (`scale_embedding: false`) | √d_model |
//! | norm after the embeddings | `layernorm_embedding` | none |
//! | activation | GELU | swish |
//!
//! In training, dropout falls where `transformers` puts it: `dropout` after the embeddings and on
//! every sub-layer's output before its residual sum, `attention_dropout` on the attention
//! probabilities, `activation_dropout` inside the feed-forward; `encoder_layerdrop` /
//! `decoder_layerdrop` skip whole layers (LayerDrop, Fan et al. 2019).

use crate::auto::{AutoModel, LoadOptions, Loaded};
use crate::contracts::{seq2seq_cross_entropy, Seq2SeqBatch, Seq2SeqLoss, Seq2SeqTrain};
use crate::hf::{Checkpoint, LoadError, Lookup};
use crate::outputs::{ModelInputs, ModelOutput, Trace};
use candle_core::{bail, DType, Device, Result, Tensor};
use lingo_kernels::AttentionMask;
use lingo_nn::{
    Activation, Ctx, DecoderLayerCache, Dropout, Embedding, Init, LayerNorm, Linear,
    MultiHeadAttention, ParamPath,
};
use serde::Deserialize;

/// The fields of a BART or Marian `config.json` that shape the network.
#[derive(Clone, Debug, Deserialize)]
pub struct BartConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "gelu")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub normalize_before: bool,
    /// Dropout after the embeddings and on each sub-layer's output.
    #[serde(default = "tenth")]
    pub dropout: f32,
    /// Dropout on the attention probabilities.
    #[serde(default)]
    pub attention_dropout: f32,
    /// Dropout after the feed-forward activation.
    #[serde(default)]
    pub activation_dropout: f32,
    /// The probability of skipping a whole encoder (decoder) layer in training.
    #[serde(default)]
    pub encoder_layerdrop: f32,
    #[serde(default)]
    pub decoder_layerdrop: f32,
    /// The standard deviation of new weights.
    #[serde(default = "init_std")]
    pub init_std: f32,
}

fn gelu() -> String {
    "gelu".into()
}
fn tenth() -> f32 {
    0.1
}
fn init_std() -> f32 {
    0.02
}

impl BartConfig {
    /// Sets every dropout probability (hidden, attention, activation) to `p`; LayerDrop is kept.
    pub fn set_dropout(&mut self, p: f32) {
        self.dropout = p;
        self.attention_dropout = p;
        self.activation_dropout = p;
    }
}

/// Which of the two flavours a checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Bart,
    Marian,
}

fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu" => Activation::Gelu,
        "gelu_new" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "swish" | "silu" => Activation::Silu,
        other => {
            bail!("activation_function `{other}` is not supported (gelu, gelu_new, relu, swish)")
        }
    })
}

/// One post-norm layer; `cross` is present in decoder layers.
struct Layer {
    self_attn: MultiHeadAttention,
    self_norm: LayerNorm,
    cross: Option<(MultiHeadAttention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
    act: Activation,
    /// `dropout` on each sub-layer's output, `activation_dropout` inside the feed-forward.
    dropout: Dropout,
    act_dropout: Dropout,
}

impl Layer {
    fn new(p: &ParamPath, c: &BartConfig, decoder: bool) -> Result<Self> {
        let d = c.d_model;
        let (heads, ffn) = if decoder {
            (c.decoder_attention_heads, c.decoder_ffn_dim)
        } else {
            (c.encoder_attention_heads, c.encoder_ffn_dim)
        };
        let init = Init::Normal(c.init_std);
        let norm = |name: &str| LayerNorm::new(&p.sub(name), d, true, 1e-5);
        let attention = |name: &str| -> Result<MultiHeadAttention> {
            let names = ["q_proj", "k_proj", "v_proj", "out_proj"];
            let mut a = MultiHeadAttention::new(&p.sub(name), names, d, heads, init)?;
            a.dropout = Dropout::new(c.attention_dropout);
            Ok(a)
        };
        Ok(Layer {
            self_attn: attention("self_attn")?,
            self_norm: norm("self_attn_layer_norm")?,
            cross: if decoder {
                Some((attention("encoder_attn")?, norm("encoder_attn_layer_norm")?))
            } else {
                None
            },
            fc1: Linear::new(&p.sub("fc1"), d, ffn, true, init)?,
            fc2: Linear::new(&p.sub("fc2"), ffn, d, true, init)?,
            final_norm: norm("final_layer_norm")?,
            act: activation(&c.activation_function)?,
            dropout: Dropout::new(c.dropout),
            act_dropout: Dropout::new(c.activation_dropout),
        })
    }

    /// The layer's output; records its attention probabilities in `trace` when `want_weights`.
    fn forward(
        &self,
        x: &Tensor,
        self_mask: &AttentionMask,
        memory: Option<(&Tensor, &AttentionMask)>,
        want_weights: bool,
        trace: &mut Trace,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let (attended, weights) = self.self_attn.forward(x, x, self_mask, want_weights, ctx)?;
        trace.self_attentions.extend(weights);
        let attended = self.dropout.forward(&attended, ctx)?;
        let mut x = self.self_norm.forward(&(x + attended)?)?;
        if let (Some((attn, norm)), Some((memory, mask))) = (&self.cross, memory) {
            let (attended, weights) = attn.forward(&x, memory, mask, want_weights, ctx)?;
            trace.cross_attentions.extend(weights);
            let attended = self.dropout.forward(&attended, ctx)?;
            x = norm.forward(&(&x + attended)?)?;
        }
        self.feed_forward(&x, ctx)
    }

    fn feed_forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.act.apply(&self.fc1.forward(x)?)?;
        let h = self.act_dropout.forward(&h, ctx)?;
        let ffn = self.dropout.forward(&self.fc2.forward(&h)?, ctx)?;
        self.final_norm.forward(&(x + ffn)?)
    }

    /// A decoder layer on the next target positions `x` alone: the cache supplies the earlier
    /// positions' and the source's keys and values, and gains the new positions'.
    fn step(
        &self,
        x: &Tensor,
        cross_mask: &AttentionMask,
        cache: &mut DecoderLayerCache,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let attended = self.self_attn.attend_cached(x, &mut cache.own)?;
        let x = self.self_norm.forward(&(x + attended)?)?;
        let (attn, norm) = self.cross.as_ref().expect("a decoder layer");
        let (source_k, source_v) = &cache.source;
        let (attended, weights) =
            attn.attend(&x, source_k, source_v, cross_mask, true, &mut Ctx::eval())?;
        let x = norm.forward(&(&x + attended)?)?;
        Ok((self.feed_forward(&x, &mut Ctx::eval())?, weights))
    }
}

/// Token embeddings (scaled), positions, and BART's norm over their sum.
struct Embed {
    scale: f64,
    /// BART's learned table (rows offset by 2) or Marian's sinusoidal one.
    positions: Tensor,
    offset: usize,
    norm: Option<LayerNorm>,
    dropout: Dropout,
}

impl Embed {
    fn new(p: &ParamPath, flavour: Flavour, c: &BartConfig, device: &Device) -> Result<Self> {
        let d = c.d_model;
        let (positions, offset, norm) = match flavour {
            Flavour::Bart => (
                p.get(
                    "embed_positions.weight",
                    &[c.max_position_embeddings + 2, d],
                    Init::Normal(c.init_std),
                )?,
                2,
                Some(LayerNorm::new(
                    &p.sub("layernorm_embedding"),
                    d,
                    true,
                    1e-5,
                )?),
            ),
            Flavour::Marian => (
                marian_positions(c.max_position_embeddings, d, device)?,
                0,
                None,
            ),
        };
        Ok(Embed {
            scale: if c.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            positions,
            offset,
            norm,
            dropout: Dropout::new(c.dropout),
        })
    }

    /// The embeddings of `ids: [batch, len]` at positions `start..`.
    fn forward(
        &self,
        tokens: &Embedding,
        ids: &Tensor,
        start: usize,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let t = ids.dim(1)?;
        if self.offset + start + t > self.positions.dim(0)? {
            bail!(
                "{} tokens do not fit the model's {} positions",
                start + t,
                self.positions.dim(0)? - self.offset
            );
        }
        let pos = self.positions.narrow(0, self.offset + start, t)?;
        let x = (tokens.forward(ids)? * self.scale)?.broadcast_add(&pos)?;
        let x = match &self.norm {
            Some(n) => n.forward(&x)?,
            None => x,
        };
        self.dropout.forward(&x, ctx)
    }
}

/// Marian's positions: `sin(p / 10000^(2k/d))` in the first half of the vector, `cos` in the second
/// (not interleaved), computed in f64 as `transformers` does.
fn marian_positions(n: usize, d: usize, device: &Device) -> Result<Tensor> {
    let half = d.div_ceil(2);
    let mut table = vec![0f32; n * d];
    for pos in 0..n {
        for j in 0..d {
            let k = if j < half { j } else { j - half };
            let angle = pos as f64 / 10000f64.powf(2.0 * k as f64 / d as f64);
            table[pos * d + j] = if j < half { angle.sin() } else { angle.cos() } as f32;
        }
    }
    Tensor::from_vec(table, (n, d), device)
}

pub struct Bart {
    pub flavour: Flavour,
    pub config: BartConfig,
    shared: Embedding,
    encoder_embed: Embed,
    decoder_embed: Embed,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    final_logits_bias: Tensor,
    /// The output layer's product: the shared table, transposed.
    head: Linear,
}

impl Bart {
    pub fn new(flavour: Flavour, config: BartConfig, p: &ParamPath) -> Result<Self> {
        let c = &config;
        if c.normalize_before {
            bail!("pre-norm (mBART-style) models are not supported");
        }
        for (name, n) in [
            ("encoder_layers", c.encoder_layers),
            ("decoder_layers", c.decoder_layers),
        ] {
            if let Err(e) = crate::config::check_layers(name, n) {
                bail!("{e}");
            }
        }
        if let Err(e) =
            crate::config::check_positions("max_position_embeddings", c.max_position_embeddings)
        {
            bail!("{e}");
        }
        for (what, heads) in [
            ("encoder_attention_heads", c.encoder_attention_heads),
            ("decoder_attention_heads", c.decoder_attention_heads),
        ] {
            if heads == 0 || !c.d_model.is_multiple_of(heads) {
                bail!("d_model {} is not a multiple of {what} {heads}", c.d_model);
            }
        }
        let device = p.store().device();
        let m = p.sub("model");
        // `nn.Embedding(vocab, d, padding_idx=pad_token_id)`: the padding row never trains — it
        // matters for Marian, whose decoder starts from the padding id.
        let shared = Embedding::new(
            &m.sub("shared"),
            c.vocab_size,
            c.d_model,
            Init::Normal(c.init_std),
        )?
        .with_padding_idx(c.pad_token_id.unwrap_or(1) as usize);
        let (enc, dec) = (m.sub("encoder"), m.sub("decoder"));
        Ok(Bart {
            flavour,
            encoder_embed: Embed::new(&enc, flavour, c, &device)?,
            decoder_embed: Embed::new(&dec, flavour, c, &device)?,
            encoder: (0..c.encoder_layers)
                .map(|i| Layer::new(&enc.sub(format!("layers.{i}")), c, false))
                .collect::<Result<_>>()?,
            decoder: (0..c.decoder_layers)
                .map(|i| Layer::new(&dec.sub(format!("layers.{i}")), c, true))
                .collect::<Result<_>>()?,
            final_logits_bias: p.get("final_logits_bias", &[1, c.vocab_size], Init::Zeros)?,
            head: Linear::tied(p, &shared.weight, None)?,
            shared,
            config,
        })
    }

    /// The encoder on `ids: [batch, src]` with `attention_mask` (1 = real token): the embeddings,
    /// every layer's output (the last is the memory the decoder reads) and, when `want_weights`,
    /// attention probabilities.
    pub fn encode(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<Trace> {
        let mask = AttentionMask {
            key_padding: attention_mask.map(|m| m.to_dtype(DType::U8)).transpose()?,
            ..Default::default()
        };
        let mut x = self.encoder_embed.forward(&self.shared, ids, 0, ctx)?;
        let mut trace = Trace::starting(&x);
        for layer in &self.encoder {
            if !skipped(self.config.encoder_layerdrop, ctx) {
                x = layer.forward(&x, &mask, None, want_weights, &mut trace, ctx)?;
            }
            trace.states.push(x.clone());
        }
        Ok(trace)
    }

    /// The decoder on `decoder_ids: [batch, tgt]` over the encoder output `memory` (whose padding
    /// `attention_mask` marks): its trace and the logits.
    pub fn decode(
        &self,
        decoder_ids: &Tensor,
        memory: &Tensor,
        attention_mask: Option<&Tensor>,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Trace, Tensor)> {
        let self_mask = AttentionMask {
            causal: true,
            ..Default::default()
        };
        let cross_mask = AttentionMask {
            key_padding: attention_mask.map(|m| m.to_dtype(DType::U8)).transpose()?,
            ..Default::default()
        };
        let mut x = self
            .decoder_embed
            .forward(&self.shared, decoder_ids, 0, ctx)?;
        let mut trace = Trace::starting(&x);
        for layer in &self.decoder {
            if !skipped(self.config.decoder_layerdrop, ctx) {
                let memory = Some((memory, &cross_mask));
                x = layer.forward(&x, &self_mask, memory, want_weights, &mut trace, ctx)?;
            }
            trace.states.push(x.clone());
        }
        Ok((trace, self.logits(&x)?))
    }

    /// The output layer: the shared embedding table, plus `final_logits_bias`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(x)?.broadcast_add(&self.final_logits_bias)
    }

    /// Logits `[batch, tgt, vocab]` for `input_ids` and `decoder_input_ids`, with every state.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        let Some(decoder_ids) = &inputs.decoder_input_ids else {
            bail!("an encoder-decoder model needs `decoder_input_ids`");
        };
        let (mask, want) = (inputs.attention_mask.as_ref(), inputs.output_attentions);
        let encoder = self.encode(&inputs.input_ids, mask, want, ctx)?;
        let memory = encoder.states.last().expect("embeddings at least");
        let (decoder, logits) = self.decode(decoder_ids, memory, mask, want, ctx)?;
        Ok(ModelOutput::seq2seq(encoder, decoder, logits))
    }

    /// Loads a BART (`model_type` bart) or Marian (`marian`) folder (`*ForConditionalGeneration`
    /// weights, or a bare `BartModel`'s without the `model.` prefix).
    pub fn load(
        checkpoint: &Checkpoint,
        options: &LoadOptions,
    ) -> std::result::Result<Loaded, LoadError> {
        let flavour = match checkpoint.model_type()? {
            "bart" => Flavour::Bart,
            "marian" => Flavour::Marian,
            other => {
                return Err(checkpoint
                    .invalid_config(format!("model_type `{other}` is neither bart nor marian")))
            }
        };
        let mut json = checkpoint.config.clone();
        if let Some(p) = options.dropout {
            for key in ["dropout", "attention_dropout", "activation_dropout"] {
                json[key] = p.into();
            }
        }
        let config: BartConfig = checkpoint.parse(json.clone())?;
        let lookup = Lookup {
            prefixes: &["model."],
            // transformers keeps `final_logits_bias` as a buffer: a checkpoint may leave it out.
            may_be_new: &|name| name == "final_logits_bias",
            seed: options.seed,
            allow_missing: &options.allow_missing,
            ..Lookup::default()
        };
        let built = checkpoint.build(&lookup, |p| Bart::new(flavour, config, p))?;
        Ok(Loaded {
            model: AutoModel::Bart(built.model),
            store: built.store,
            config: json,
            report: built.report,
            names: built.names,
        })
    }
}

impl crate::cached_decoding::CachedDecoder for Bart {
    fn start_id(&self) -> u32 {
        self.config.decoder_start_token_id.unwrap_or(2)
    }
    fn end_id(&self) -> u32 {
        self.config.eos_token_id.unwrap_or(2)
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn memory(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(self
            .encode(ids, Some(mask), false, &mut Ctx::eval())?
            .states
            .pop()
            .expect("embeddings at least"))
    }
    fn source_keys_values(&self, memory: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        (self.decoder.iter())
            .map(|l| match &l.cross {
                Some((attention, _)) => attention.keys_values(memory),
                None => bail!("a decoder layer without cross-attention"),
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
        let cross_mask = AttentionMask {
            key_padding: Some(mask.to_dtype(DType::U8)?),
            ..Default::default()
        };
        let mut x = self
            .decoder_embed
            .forward(&self.shared, tokens, position, &mut Ctx::eval())?;
        let mut cross = None;
        for (layer, cache) in self.decoder.iter().zip(caches) {
            let (y, w) = layer.step(&x, &cross_mask, cache)?;
            x = y;
            cross = w;
        }
        Ok((self.logits(&x)?, cross.expect("at least one decoder layer")))
    }
}

impl Seq2SeqTrain for Bart {
    fn pad_id(&self) -> u32 {
        self.config.pad_token_id.unwrap_or(1)
    }

    fn loss(&self, batch: &Seq2SeqBatch, options: &Seq2SeqLoss, ctx: &mut Ctx) -> Result<Tensor> {
        let logits = self.forward(&batch.inputs()?, ctx)?.output;
        seq2seq_cross_entropy(&logits, batch, options)
    }
}

/// LayerDrop: whether training skips this layer (one draw per layer, as `transformers`).
fn skipped(p: f32, ctx: &mut Ctx) -> bool {
    ctx.train && p > 0.0 && ctx.rng.uniform() < p
}
