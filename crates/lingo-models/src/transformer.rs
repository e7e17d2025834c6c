//! The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), trained from scratch.
//!
//! Source and target tokens are embedded (scaled by `√d_model`) and added to sinusoidal positions.
//! The encoder stacks `N` post-norm layers of self-attention and a ReLU feed-forward network, each
//! sub-layer wrapped as `LayerNorm(x + Dropout(Sublayer(x)))`. The decoder's layers add, between the
//! two, attention over the encoder output; its self-attention is causal. The output layer shares its
//! weight with the target embedding, and with the source embedding too when both sides use one
//! vocabulary (`share_embeddings`), as in the paper.

use crate::cached_decoding::CachedDecoder;
use crate::config::{check_dropout, check_heads, check_positive};
use crate::contracts::{seq2seq_cross_entropy, Seq2SeqBatch, Seq2SeqLoss, Seq2SeqTrain};
use crate::outputs::{ModelInputs, ModelOutput, Trace};
use candle_core::{bail, DType, Result, Tensor};
use lingo_kernels::AttentionMask;
use lingo_nn::{
    sinusoidal_table, Ctx, DecoderLayerCache, Dropout, Embedding, Init, LayerNorm, Linear,
    MultiHeadAttention, ParamPath,
};
use lingo_nn::{AttentionKind, LinformerSharing, Pattern, PatternConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerConfig {
    pub src_vocab_size: usize,
    pub tgt_vocab_size: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub d_ff: usize,
    pub dropout: f32,
    /// Longest source or target sequence (the sinusoid table's length).
    pub max_len: usize,
    /// One embedding for source, target and output (needs one vocabulary for both sides).
    pub share_embeddings: bool,
    pub pad_id: u32,
    pub bos_id: u32,
    pub eos_id: u32,
    /// The encoder's self-attention: `dense`, `window` (over `attention_window` positions, half
    /// either side), `linformer` (keys and values projected to `linformer_k` rows) or `lsh`
    /// (Reformer's hashed shared-QK attention: `lsh_buckets`, `lsh_rounds`, `lsh_chunk`; no key
    /// projection). The decoder stays dense: it decodes with a cache of everything before.
    pub attention: AttentionKind,
    pub attention_window: usize,
    /// Leading global tokens of a `window` (Longformer): they see and are seen by every position.
    pub attention_global: usize,
    pub linformer_k: usize,
    pub linformer_sharing: LinformerSharing,
    pub lsh_buckets: usize,
    pub lsh_rounds: usize,
    pub lsh_chunk: usize,
}

impl Default for TransformerConfig {
    /// A small Transformer for Multi30k-sized data (the paper's base model is 512/8/6/2048).
    fn default() -> Self {
        TransformerConfig {
            src_vocab_size: 0,
            tgt_vocab_size: 0,
            d_model: 256,
            n_heads: 4,
            encoder_layers: 3,
            decoder_layers: 3,
            d_ff: 1024,
            dropout: 0.1,
            max_len: 256,
            share_embeddings: false,
            pad_id: 0,
            bos_id: 1,
            eos_id: 2,
            attention: AttentionKind::Dense,
            attention_window: 64,
            attention_global: 0,
            linformer_k: 64,
            linformer_sharing: LinformerSharing::Headwise,
            lsh_buckets: 8,
            lsh_rounds: 2,
            lsh_chunk: 64,
        }
    }
}

impl TransformerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_positive(&[
            ("src_vocab_size", self.src_vocab_size),
            ("tgt_vocab_size", self.tgt_vocab_size),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("d_ff", self.d_ff),
            ("max_len", self.max_len),
        ])?;
        check_heads(self.d_model, self.n_heads)?;
        crate::config::check_layers("encoder_layers", self.encoder_layers)?;
        crate::config::check_layers("decoder_layers", self.decoder_layers)?;
        crate::config::check_positions("max_len", self.max_len)?;
        if self.share_embeddings && self.src_vocab_size != self.tgt_vocab_size {
            return Err(format!(
                "field `share_embeddings` needs one vocabulary, got {} source and {} target tokens",
                self.src_vocab_size, self.tgt_vocab_size
            ));
        }
        check_dropout(self.dropout)
    }
}

/// An encoder layer, or with `cross` a decoder layer.
struct Layer {
    self_attn: MultiHeadAttention,
    self_norm: LayerNorm,
    cross: Option<(MultiHeadAttention, LayerNorm)>,
    up: Linear,
    down: Linear,
    ffn_norm: LayerNorm,
    drop: Dropout,
}

impl Layer {
    fn new(p: &ParamPath, c: &TransformerConfig, decoder: bool) -> Result<Self> {
        let d = c.d_model;
        let norm = |name: &str| LayerNorm::new(&p.sub(name), d, true, 1e-5);
        // Glorot-uniform initialisation, as the reference implementation.
        let glorot = |i: usize, o: usize| Init::Uniform((6.0 / (i + o) as f32).sqrt());
        let names = ["q", "k", "v", "out"];
        let attention =
            |name: &str| MultiHeadAttention::new(&p.sub(name), names, d, c.n_heads, glorot(d, d));
        // The encoder's LSH layers attend with keys that are their queries.
        let shared_qk = !decoder && c.attention == AttentionKind::Lsh;
        let self_attn = match shared_qk {
            true => {
                let (heads, init) = (c.n_heads, glorot(d, d));
                MultiHeadAttention::shared_qk(
                    &p.sub("self_attn"),
                    names,
                    d,
                    heads,
                    d / heads,
                    init,
                )?
            }
            false => attention("self_attn")?,
        };
        Ok(Layer {
            self_attn,
            self_norm: norm("self_attn_norm")?,
            cross: if decoder {
                Some((attention("cross_attn")?, norm("cross_attn_norm")?))
            } else {
                None
            },
            up: Linear::new(&p.sub("ffn.up"), d, c.d_ff, true, glorot(d, c.d_ff))?,
            down: Linear::new(&p.sub("ffn.down"), c.d_ff, d, true, glorot(c.d_ff, d))?,
            ffn_norm: norm("ffn_norm")?,
            drop: Dropout::new(c.dropout),
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
        let (a, w) = self.self_attn.forward(x, x, self_mask, want_weights, ctx)?;
        trace.self_attentions.extend(w);
        let mut x = self
            .self_norm
            .forward(&(x + self.drop.forward(&a, ctx)?)?)?;
        if let (Some((attn, norm)), Some((memory, mask))) = (&self.cross, memory) {
            let (a, w) = attn.forward(&x, memory, mask, want_weights, ctx)?;
            trace.cross_attentions.extend(w);
            x = norm.forward(&(&x + self.drop.forward(&a, ctx)?)?)?;
        }
        self.feed_forward(&x, ctx)
    }

    /// `x` after the feed-forward sub-layer.
    fn feed_forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let ffn = self.down.forward(&self.up.forward(x)?.relu()?)?;
        self.ffn_norm.forward(&(x + self.drop.forward(&ffn, ctx)?)?)
    }

    /// A decoder layer on the next target positions `x` alone (inference): the cache supplies the
    /// earlier positions' and the source's keys and values, and gains the new positions'.
    fn step(
        &self,
        x: &Tensor,
        cross_mask: &AttentionMask,
        cache: &mut DecoderLayerCache,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let a = self.self_attn.attend_cached(x, &mut cache.own)?;
        let x = self.self_norm.forward(&(x + a)?)?;
        let (attn, norm) = self.cross.as_ref().expect("a decoder layer");
        let (source_k, source_v) = &cache.source;
        let (a, weights) =
            attn.attend(&x, source_k, source_v, cross_mask, true, &mut Ctx::eval())?;
        let x = norm.forward(&(&x + a)?)?;
        Ok((self.feed_forward(&x, &mut Ctx::eval())?, weights))
    }
}

pub struct Transformer {
    pub config: TransformerConfig,
    src_embed: Embedding,
    tgt_embed: Embedding,
    positions: Tensor,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    /// The output layer: the target embedding, transposed, plus a bias.
    head: Linear,
    drop: Dropout,
}

impl Transformer {
    pub fn new(config: TransformerConfig, p: &ParamPath) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let init = Init::Normal((c.d_model as f32).powf(-0.5));
        let tgt_embed = Embedding::new(&p.sub("tgt_embed"), c.tgt_vocab_size, c.d_model, init)?;
        let src_embed = if c.share_embeddings {
            tgt_embed.clone()
        } else {
            Embedding::new(&p.sub("src_embed"), c.src_vocab_size, c.d_model, init)?
        };
        let layers = |name: &str, n: usize, decoder: bool| -> Result<Vec<Layer>> {
            (0..n)
                .map(|i| {
                    let lp = p.sub(name).sub(i);
                    let mut layer = Layer::new(&lp, c, decoder)?;
                    if !decoder {
                        let pattern = PatternConfig {
                            kind: c.attention,
                            window: c.attention_window,
                            global: c.attention_global,
                            linformer_k: c.linformer_k,
                            linformer_sharing: c.linformer_sharing,
                            max_len: c.max_len,
                            lsh_buckets: c.lsh_buckets,
                            lsh_rounds: c.lsh_rounds,
                            lsh_chunk: c.lsh_chunk,
                            head_dim: c.d_model / c.n_heads.max(1),
                            seed: i as u64,
                        };
                        layer.self_attn.pattern =
                            Pattern::build(&pattern, &lp.sub("self_attn"), &p.sub(name))?;
                    }
                    Ok(layer)
                })
                .collect()
        };
        Ok(Transformer {
            positions: sinusoidal_table(c.max_len, c.d_model, &p.store().device())?,
            encoder: layers("encoder", c.encoder_layers, false)?,
            decoder: layers("decoder", c.decoder_layers, true)?,
            head: Linear::tied(
                p,
                &tgt_embed.weight,
                Some(p.get("out_bias", &[c.tgt_vocab_size], Init::Zeros)?),
            )?,
            drop: Dropout::new(c.dropout),
            src_embed,
            tgt_embed,
            config,
        })
    }

    /// `Dropout(√d · embedding + positions)` for `ids: [batch, len]` at positions `start..`.
    fn embed(
        &self,
        table: &Embedding,
        ids: &Tensor,
        start: usize,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let t = ids.dim(1)?;
        if start + t > self.config.max_len {
            bail!(
                "{} tokens exceed the model's max_len of {}",
                start + t,
                self.config.max_len
            );
        }
        let scale = (self.config.d_model as f64).sqrt();
        let positions = self.positions.narrow(0, start, t)?;
        let x = (table.forward(ids)? * scale)?.broadcast_add(&positions)?;
        self.drop.forward(&x, ctx)
    }

    /// The encoder on `src: [batch, src]`; `keep: [batch, src]` (u8) marks real tokens. Its last
    /// state is the memory the decoder reads.
    pub fn encode(
        &self,
        src: &Tensor,
        keep: &Tensor,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<Trace> {
        let mask = AttentionMask {
            key_padding: Some(keep.clone()),
            ..Default::default()
        };
        let mut x = self.embed(&self.src_embed, src, 0, ctx)?;
        let mut trace = Trace::starting(&x);
        for layer in &self.encoder {
            x = layer.forward(&x, &mask, None, want_weights, &mut trace, ctx)?;
            trace.states.push(x.clone());
        }
        Ok(trace)
    }

    /// The decoder on the target prefix `tgt_in` over the encoder output `memory`: its trace and
    /// the logits `[batch, tgt, vocab]`.
    pub fn decode(
        &self,
        tgt_in: &Tensor,
        memory: &Tensor,
        keep: &Tensor,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Trace, Tensor)> {
        let self_mask = AttentionMask {
            causal: true,
            ..Default::default()
        };
        let cross_mask = AttentionMask {
            key_padding: Some(keep.clone()),
            ..Default::default()
        };
        let mut x = self.embed(&self.tgt_embed, tgt_in, 0, ctx)?;
        let mut trace = Trace::starting(&x);
        for layer in &self.decoder {
            let memory = Some((memory, &cross_mask));
            x = layer.forward(&x, &self_mask, memory, want_weights, &mut trace, ctx)?;
            trace.states.push(x.clone());
        }
        Ok((trace, self.head.forward(&x)?))
    }

    /// Logits `[batch, tgt, vocab]` for `input_ids` (the source, `attention_mask` marking its real
    /// tokens) and `decoder_input_ids`, with every state.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        crate::auto::refuse(
            "token_type_ids",
            inputs.token_type_ids.is_some(),
            "Transformer",
        )?;
        let Some(tgt_in) = &inputs.decoder_input_ids else {
            bail!("an encoder-decoder model needs `decoder_input_ids`");
        };
        let src = &inputs.input_ids;
        let keep = match &inputs.attention_mask {
            Some(m) => m.to_dtype(DType::U8)?,
            None => Tensor::ones(src.dims(), DType::U8, src.device())?,
        };
        let want = inputs.output_attentions;
        let encoder = self.encode(src, &keep, want, ctx)?;
        let memory = encoder.states.last().expect("embeddings at least");
        let (decoder, logits) = self.decode(tgt_in, memory, &keep, want, ctx)?;
        Ok(ModelOutput::seq2seq(encoder, decoder, logits))
    }

    /// `[batch, src]` u8 mask of the real tokens, from the padded batch.
    pub fn keep_mask(&self, src: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, s) = src.dims2()?;
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > s) {
            bail!("source lengths {lengths:?} do not fit a batch of {b} sequences of at most {s} tokens");
        }
        crate::length_mask(lengths, s, DType::U8, src.device())
    }
}

impl Seq2SeqTrain for Transformer {
    fn pad_id(&self) -> u32 {
        self.config.pad_id
    }

    /// Cross-entropy over the real target positions, label-smoothed as `options` says (0.1 in the
    /// paper).
    fn loss(&self, batch: &Seq2SeqBatch, options: &Seq2SeqLoss, ctx: &mut Ctx) -> Result<Tensor> {
        let keep = self.keep_mask(&batch.source, &batch.source_lengths)?;
        let encoder = self.encode(&batch.source, &keep, false, ctx)?;
        let memory = encoder.states.last().expect("embeddings at least");
        let (_, logits) = self.decode(&batch.decoder_input, memory, &keep, false, ctx)?;
        seq2seq_cross_entropy(&logits, batch, options)
    }
}

impl CachedDecoder for Transformer {
    fn start_id(&self) -> u32 {
        self.config.bos_id
    }
    fn end_id(&self) -> u32 {
        self.config.eos_id
    }
    fn vocab_size(&self) -> usize {
        self.config.tgt_vocab_size
    }
    fn memory(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let keep = mask.to_dtype(DType::U8)?;
        let mut trace = self.encode(ids, &keep, false, &mut Ctx::eval())?;
        Ok(trace.states.pop().expect("embeddings at least"))
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
        let mut x = self.embed(&self.tgt_embed, tokens, position, &mut Ctx::eval())?;
        let mut cross = None;
        for (layer, cache) in self.decoder.iter().zip(caches) {
            let (y, w) = layer.step(&x, &cross_mask, cache)?;
            x = y;
            cross = w;
        }
        Ok((
            self.head.forward(&x)?,
            cross.expect("at least one decoder layer"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Seq2SeqLm;
    use candle_core::Device;
    use lingo_nn::ParamStore;

    fn config(share: bool) -> TransformerConfig {
        TransformerConfig {
            src_vocab_size: 11,
            tgt_vocab_size: if share { 11 } else { 9 },
            d_model: 8,
            n_heads: 2,
            encoder_layers: 2,
            decoder_layers: 2,
            d_ff: 12,
            max_len: 16,
            share_embeddings: share,
            ..Default::default()
        }
    }

    #[test]
    fn every_parameter_receives_a_gradient() -> Result<()> {
        let efficient = |kind| TransformerConfig {
            attention: kind,
            attention_window: 3,
            linformer_k: 4,
            lsh_buckets: 2,
            lsh_rounds: 2,
            lsh_chunk: 2,
            ..config(false)
        };
        let configs = [
            config(false),
            config(true),
            efficient(AttentionKind::Window),
            efficient(AttentionKind::Linformer),
            efficient(AttentionKind::Lsh),
        ];
        for (i, c) in configs.into_iter().enumerate() {
            let share = i == 1;
            let store = ParamStore::new(0, &Device::Cpu);
            let model = Transformer::new(c, &store.root())?;
            let batch = crate::toy_seq2seq_batch();
            let mut ctx = Ctx::train(lingo_nn::LingoRng::new(1));
            let smoothed = Seq2SeqLoss {
                label_smoothing: 0.1,
                ..Default::default()
            };
            let loss = model.loss(&batch, &smoothed, &mut ctx)?;
            let missing = store.without_gradient(&loss.backward()?)?;
            assert!(
                missing.is_empty(),
                "config {i} (share {share}): no gradient for {missing:?}"
            );
            // Shared-QK: the encoder's LSH layers have no key projection.
            let encoder_keys = (store.named().iter())
                .filter(|(n, _)| n.starts_with("encoder.") && n.contains("self_attn.k."))
                .count();
            assert_eq!(encoder_keys, if i == 4 { 0 } else { 4 }, "config {i}");
        }
        Ok(())
    }

    /// Decoding one token at a time gives the full forward pass's log-probabilities, and source
    /// padding does not change a sentence's result.
    #[test]
    fn stepping_equals_the_full_pass_and_padding_is_ignored() -> Result<()> {
        // Dense, and LSH with one bucket in one chunk (every key visible, padding masked).
        let lsh = TransformerConfig {
            attention: AttentionKind::Lsh,
            lsh_buckets: 1,
            lsh_rounds: 1,
            lsh_chunk: 16,
            ..config(false)
        };
        for c in [config(false), lsh] {
            stepping_and_padding(c)?;
        }
        Ok(())
    }

    fn stepping_and_padding(c: TransformerConfig) -> Result<()> {
        let store = ParamStore::new(3, &Device::Cpu);
        let model = Transformer::new(c, &store.root())?;
        let batch = crate::toy_seq2seq_batch();
        let (src, lengths, tgt_in) = (&batch.source, &batch.source_lengths, &batch.decoder_input);
        let keep = model.keep_mask(src, lengths)?;
        let run = |src: &Tensor, keep: &Tensor, tgt_in: &Tensor| -> Result<Tensor> {
            let inputs = ModelInputs::new(src.clone())
                .with_attention_mask(keep.clone())
                .with_decoder_input_ids(tgt_in.clone());
            Ok(model.forward(&inputs, &mut Ctx::eval())?.output)
        };
        let full = lingo_kernels::log_softmax(&run(src, &keep, tgt_in)?)?;
        let mem = Seq2SeqLm::encode(&model, src, lengths)?;
        let mut state = model.initial_state(&mem)?;
        for t in 0..tgt_in.dim(1)? {
            let last = tgt_in.narrow(1, t, 1)?.squeeze(1)?;
            let (lp, next, _) = model.decode_step(&mem, &state, &last)?;
            state = next;
            let want = full.narrow(1, t, 1)?.squeeze(1)?;
            let d = (lp - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "step {t} differs by {d}");
        }
        // Row 1 alone, unpadded, equals row 1 of the padded batch.
        let alone = src.narrow(0, 1, 1)?.narrow(1, 0, 2)?;
        let keep1 = model.keep_mask(&alone, &[2])?;
        let one = run(&alone, &keep1, &tgt_in.narrow(0, 1, 1)?)?;
        let both = run(src, &keep, tgt_in)?;
        let d = (one - both.narrow(0, 1, 1)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "padding changed the result by {d}");
        Ok(())
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut c = config(true);
        c.tgt_vocab_size = 10;
        assert!(c.validate().unwrap_err().contains("share_embeddings"));
        let mut c = config(false);
        c.n_heads = 3;
        assert!(c.validate().unwrap_err().contains("n_heads"));
    }
}
