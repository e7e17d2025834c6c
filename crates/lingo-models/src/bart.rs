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

use crate::hf::{Checkpoint, LoadError, StoredNames};
use candle_core::{bail, DType, Device, Result, Tensor};
use lingo_kernels::AttentionMask;
use lingo_nn::{
    Activation, Ctx, DecoderLayerCache, Embedding, Init, LayerNorm, Linear, MultiHeadAttention,
    ParamPath, ParamStore,
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
}

fn gelu() -> String {
    "gelu".into()
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
}

impl Layer {
    fn new(p: &ParamPath, c: &BartConfig, decoder: bool) -> Result<Self> {
        let d = c.d_model;
        let (heads, ffn) = if decoder {
            (c.decoder_attention_heads, c.decoder_ffn_dim)
        } else {
            (c.encoder_attention_heads, c.encoder_ffn_dim)
        };
        let norm = |name: &str| LayerNorm::new(&p.sub(name), d, true, 1e-5);
        let attention = |name: &str| {
            let names = ["q_proj", "k_proj", "v_proj", "out_proj"];
            MultiHeadAttention::new(&p.sub(name), names, d, heads, Init::Normal(0.02))
        };
        let init = Init::Normal(0.02);
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
        })
    }

    /// The layer's output, recording its attention probabilities in `trace`.
    fn forward(
        &self,
        x: &Tensor,
        self_mask: &AttentionMask,
        memory: Option<(&Tensor, &AttentionMask)>,
        trace: &mut Trace,
    ) -> Result<Tensor> {
        let (attended, weights) =
            self.self_attn
                .forward(x, x, self_mask, true, &mut Ctx::eval())?;
        trace.self_attentions.extend(weights);
        let mut x = self.self_norm.forward(&(x + attended)?)?;
        if let (Some((attn, norm)), Some((memory, mask))) = (&self.cross, memory) {
            let (attended, weights) = attn.forward(&x, memory, mask, true, &mut Ctx::eval())?;
            trace.cross_attentions.extend(weights);
            x = norm.forward(&(&x + attended)?)?;
        }
        let x = self.feed_forward(&x)?;
        trace.states.push(x.clone());
        Ok(x)
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        let ffn = self.fc2.forward(&self.act.apply(&self.fc1.forward(x)?)?)?;
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
        Ok((self.feed_forward(&x)?, weights))
    }
}

/// Token embeddings (scaled), positions, and BART's norm over their sum.
struct Embed {
    scale: f64,
    /// BART's learned table (rows offset by 2) or Marian's sinusoidal one.
    positions: Tensor,
    offset: usize,
    norm: Option<LayerNorm>,
}

impl Embed {
    fn new(p: &ParamPath, flavour: Flavour, c: &BartConfig, device: &Device) -> Result<Self> {
        let d = c.d_model;
        let (positions, offset, norm) = match flavour {
            Flavour::Bart => (
                p.get(
                    "embed_positions.weight",
                    &[c.max_position_embeddings + 2, d],
                    Init::Normal(0.02),
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
        })
    }

    /// The embeddings of `ids: [batch, len]` at positions `start..`.
    fn forward(&self, tokens: &Embedding, ids: &Tensor, start: usize) -> Result<Tensor> {
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
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
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

/// What one stack (encoder or decoder) produced: the embeddings then every layer's output, and every
/// layer's attention probabilities `[batch, heads, q, k]` (cross-attention in the decoder).
#[derive(Default)]
pub struct Trace {
    pub states: Vec<Tensor>,
    pub self_attentions: Vec<Tensor>,
    pub cross_attentions: Vec<Tensor>,
}

/// What a forward pass returns.
pub struct Seq2SeqOutput {
    /// The embeddings then every encoder layer's output, `[batch, src, d_model]`.
    pub encoder_hidden_states: Vec<Tensor>,
    /// The same for the decoder, `[batch, tgt, d_model]`.
    pub decoder_hidden_states: Vec<Tensor>,
    /// Every layer's attention probabilities: the encoder's, the decoder's own, the decoder's over
    /// the encoder.
    pub encoder_attentions: Vec<Tensor>,
    pub decoder_attentions: Vec<Tensor>,
    pub cross_attentions: Vec<Tensor>,
    /// `[batch, tgt, vocab]`.
    pub logits: Tensor,
}

impl Seq2SeqOutput {
    pub fn from_traces(encoder: Trace, decoder: Trace, logits: Tensor) -> Self {
        Seq2SeqOutput {
            encoder_hidden_states: encoder.states,
            encoder_attentions: encoder.self_attentions,
            decoder_hidden_states: decoder.states,
            decoder_attentions: decoder.self_attentions,
            cross_attentions: decoder.cross_attentions,
            logits,
        }
    }
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
        for (what, heads) in [
            ("encoder_attention_heads", c.encoder_attention_heads),
            ("decoder_attention_heads", c.decoder_attention_heads),
        ] {
            if heads == 0 || c.d_model % heads != 0 {
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
            Init::Normal(0.02),
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
            head: Linear::from_parts(shared.weight.clone(), None),
            shared,
            config,
        })
    }

    /// The encoder on `ids: [batch, src]` with `attention_mask` (1 = real token): the embeddings, every
    /// layer's output (the last is the memory the decoder reads) and attention probabilities.
    pub fn encode(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Trace> {
        let mask = AttentionMask {
            key_padding: attention_mask.map(|m| m.to_dtype(DType::U8)).transpose()?,
            ..Default::default()
        };
        let mut x = self.encoder_embed.forward(&self.shared, ids, 0)?;
        let mut trace = Trace {
            states: vec![x.clone()],
            ..Default::default()
        };
        for layer in &self.encoder {
            x = layer.forward(&x, &mask, None, &mut trace)?;
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
    ) -> Result<(Trace, Tensor)> {
        let self_mask = AttentionMask {
            causal: true,
            ..Default::default()
        };
        let cross_mask = AttentionMask {
            key_padding: attention_mask.map(|m| m.to_dtype(DType::U8)).transpose()?,
            ..Default::default()
        };
        let mut x = self.decoder_embed.forward(&self.shared, decoder_ids, 0)?;
        let mut trace = Trace {
            states: vec![x.clone()],
            ..Default::default()
        };
        for layer in &self.decoder {
            x = layer.forward(&x, &self_mask, Some((memory, &cross_mask)), &mut trace)?;
        }
        Ok((trace, self.logits(&x)?))
    }

    /// The output layer: the shared embedding table, plus `final_logits_bias`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(x)?.broadcast_add(&self.final_logits_bias)
    }

    pub fn forward(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        decoder_ids: &Tensor,
    ) -> Result<Seq2SeqOutput> {
        let encoder = self.encode(ids, attention_mask)?;
        let memory = encoder.states.last().expect("embeddings at least");
        let (decoder, logits) = self.decode(decoder_ids, memory, attention_mask)?;
        Ok(Seq2SeqOutput::from_traces(encoder, decoder, logits))
    }

    /// Loads a BART (`model_type` bart) or Marian (`marian`) folder.
    pub fn load(
        checkpoint: &Checkpoint,
        device: &Device,
    ) -> std::result::Result<(Bart, ParamStore, StoredNames), LoadError> {
        let flavour = match checkpoint.model_type()? {
            "bart" => Flavour::Bart,
            "marian" => Flavour::Marian,
            other => {
                return Err(LoadError::Invalid {
                    path: checkpoint.dir.join("config.json"),
                    message: format!("model_type `{other}` is neither bart nor marian"),
                })
            }
        };
        let config: BartConfig = checkpoint.parse_config()?;
        let store = ParamStore::new(0, device);
        let model = Bart::new(flavour, config, &store.root())?;
        // `BartModel` checkpoints hold the same tensors without the `model.` prefix.
        let names = checkpoint.load_into(&store, &["model."])?;
        Ok((model, store, names))
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
            .encode(ids, Some(mask))?
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
        let mut x = self.decoder_embed.forward(&self.shared, tokens, position)?;
        let mut cross = None;
        for (layer, cache) in self.decoder.iter().zip(caches) {
            let (y, w) = layer.step(&x, &cross_mask, cache)?;
            x = y;
            cross = w;
        }
        Ok((self.logits(&x)?, cross.expect("at least one decoder layer")))
    }
}
