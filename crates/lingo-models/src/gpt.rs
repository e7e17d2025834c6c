//! A decoder-only Transformer language model in the style of GPT-2 (Radford et al., 2019) and
//! nanoGPT: token and position embeddings, a stack of causal self-attention blocks, a final layer norm
//! and a linear head over the vocabulary (optionally sharing the token embedding's weights).
//!
//! Parameter names follow nanoGPT / GPT-2 (`transformer.h.0.attn.c_attn.weight`, …) with PyTorch's
//! `[out, in]` linear layout.

use crate::auto::{AutoModel, LoadOptions, Loaded};
use crate::hf::{Checkpoint, LoadError, Lookup, StoredNames};
use crate::outputs::{ModelInputs, ModelOutput, Trace};
use crate::CausalLm;
use candle_core::{bail, DType, Result, Tensor};
use lingo_kernels::{AttentionMask, CrossEntropy};
use lingo_nn::pipeline::{split_layers, PipelineStage};
use lingo_nn::{
    Activation, AttentionKind, Ctx, Dropout, Embedding, FeedForward, Init, KvCache, LayerNorm,
    Linear, MultiHeadSelfAttention, NormPlacement, ParamPath, ParamStore, Pattern, PatternConfig,
    PositionalEncoding, SublayerInit, TransformerBlock,
};
use serde::{Deserialize, Serialize};

/// How positions are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    #[default]
    Learned,
    Sinusoidal,
}

/// The shape of a GPT. Every field has a default; unknown keys are rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest sequence the model attends over.
    pub context_length: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    /// Width of the feed-forward layer; 0 means `4 · d_model`.
    pub d_ff: usize,
    pub dropout: f32,
    pub norm_placement: NormPlacement,
    pub activation: Activation,
    pub positions: Positions,
    /// Share the token embedding with the output head.
    pub tied_embeddings: bool,
    /// Biases in the linear layers and layer norms.
    pub bias: bool,
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal weight init (residual projections get `/√(2·n_layers)`).
    pub init_std: f32,
    /// `dense`; `window`: each position attends over the `attention_window` latest positions
    /// and the first `attention_global` (global tokens: attention sinks);
    /// `lsh`: Reformer's hashed attention (`lsh_buckets` buckets, `lsh_rounds` hashes, chunks of
    /// `lsh_chunk`; keys are the unit queries, so the key third of `c_attn` goes unused).
    pub attention: AttentionKind,
    pub attention_window: usize,
    pub attention_global: usize,
    pub lsh_buckets: usize,
    pub lsh_rounds: usize,
    pub lsh_chunk: usize,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: 0,
            context_length: 256,
            d_model: 256,
            n_heads: 4,
            n_layers: 4,
            d_ff: 0,
            dropout: 0.0,
            norm_placement: NormPlacement::Pre,
            activation: Activation::Gelu,
            positions: Positions::Learned,
            tied_embeddings: false,
            bias: true,
            layer_norm_eps: 1e-5,
            init_std: 0.02,
            attention: AttentionKind::Dense,
            attention_window: 256,
            attention_global: 0,
            lsh_buckets: 8,
            lsh_rounds: 2,
            lsh_chunk: 64,
        }
    }
}

impl GptConfig {
    pub fn d_ff(&self) -> usize {
        if self.d_ff == 0 {
            4 * self.d_model
        } else {
            self.d_ff
        }
    }

    /// Checks the numbers fit together; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use crate::config::{check_dropout, check_heads, check_positive};
        check_positive(&[
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
        ])?;
        check_heads(self.d_model, self.n_heads)?;
        crate::config::check_layers("n_layers", self.n_layers)?;
        crate::config::check_positions("context_length", self.context_length)?;
        match self.attention {
            AttentionKind::Window => check_positive(&[("attention_window", self.attention_window)])?,
            AttentionKind::Linformer => {
                return Err("field `attention`: Linformer mixes every position into each projected key, so a causal GPT cannot use it (dense or window)".into())
            }
            AttentionKind::Lsh => check_positive(&[
                ("lsh_buckets", self.lsh_buckets),
                ("lsh_rounds", self.lsh_rounds),
                ("lsh_chunk", self.lsh_chunk),
            ])?,
            AttentionKind::Dense => {}
        }
        check_dropout(self.dropout)
    }

    /// The same model with dense attention.
    pub fn with_dense(self) -> Self {
        GptConfig {
            attention: AttentionKind::Dense,
            ..self
        }
    }

    /// What the attention layers need to know about the `attention` choice.
    fn pattern(&self, layer: usize) -> PatternConfig {
        PatternConfig {
            kind: self.attention,
            window: self.attention_window,
            global: self.attention_global,
            linformer_k: 0,
            linformer_sharing: Default::default(),
            max_len: self.context_length,
            lsh_buckets: self.lsh_buckets,
            lsh_rounds: self.lsh_rounds,
            lsh_chunk: self.lsh_chunk,
            head_dim: self.d_model / self.n_heads.max(1),
            seed: layer as u64,
        }
    }
}

/// The model.
pub struct Gpt {
    pub config: GptConfig,
    wte: Embedding,
    wpe: PositionalEncoding,
    drop: Dropout,
    blocks: Vec<TransformerBlock>,
    /// Pre-norm stacks end with a norm; post-norm blocks already end in one.
    ln_f: Option<LayerNorm>,
    lm_head: Linear,
}

impl Gpt {
    pub fn new(config: GptConfig, p: &ParamPath) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let init = Init::Normal(c.init_std);
        // GPT-2: scale the init of the projections that write into the residual stream by 1/√(2L).
        let sublayer = SublayerInit {
            input: init,
            output: Init::Normal(c.init_std / (2.0 * c.n_layers as f32).sqrt()),
        };
        let t = p.sub("transformer");
        let wte = Embedding::new(&t.sub("wte"), c.vocab_size, c.d_model, init)?;
        let wpe = match c.positions {
            Positions::Learned => {
                PositionalEncoding::learned(&t.sub("wpe"), c.context_length, c.d_model, init)?
            }
            Positions::Sinusoidal => {
                PositionalEncoding::sinusoidal(c.context_length, c.d_model, &p.store().device())?
            }
        };
        // Grown block by block, not reserved: `n_layers` comes from a config file, and a corrupt
        // one (found by fuzzing: 2^64 − 1) must meet the missing-weights error, not a
        // capacity overflow.
        let mut blocks = Vec::new();
        for i in 0..c.n_layers {
            let b = t.sub("h").sub(i);
            let attn = MultiHeadSelfAttention::new(
                &b.sub("attn"),
                ("c_attn", "c_proj"),
                c.d_model,
                c.n_heads,
                c.bias,
                sublayer,
            )?
            .with_attention_dropout(c.dropout)
            .with_pattern(Pattern::build(&c.pattern(i), &b.sub("attn"), &t)?);
            blocks.push(TransformerBlock {
                norm1: LayerNorm::new(&b.sub("ln_1"), c.d_model, c.bias, c.layer_norm_eps)?,
                attn,
                norm2: LayerNorm::new(&b.sub("ln_2"), c.d_model, c.bias, c.layer_norm_eps)?,
                mlp: FeedForward::new(
                    &b.sub("mlp"),
                    ("c_fc", "c_proj"),
                    c.d_model,
                    c.d_ff(),
                    c.activation,
                    c.bias,
                    sublayer,
                )?,
                dropout: Dropout::new(c.dropout),
                placement: c.norm_placement,
            });
        }
        let ln_f = match c.norm_placement {
            NormPlacement::Pre => Some(LayerNorm::new(
                &t.sub("ln_f"),
                c.d_model,
                c.bias,
                c.layer_norm_eps,
            )?),
            NormPlacement::Post => None,
        };
        let lm_head = if c.tied_embeddings {
            Linear::tied(p, &wte.weight, None)?
        } else {
            Linear::new(&p.sub("lm_head"), c.d_model, c.vocab_size, false, init)?
        };
        Ok(Gpt {
            drop: Dropout::new(c.dropout),
            config,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }

    /// Hidden states `[batch, time, d_model]` after the final norm, and each layer's attention weights
    /// if asked. `offset` is the position of the first token (non-zero only with a cache).
    /// `key_padding` (`[batch, time]`, 1 = real token) hides padding; `layers`, if given, receives the
    /// embeddings and every block's output (the last one after the final norm, as `transformers`
    /// reports them).
    fn hidden(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut [KvCache]>,
        want_weights: bool,
        key_padding: Option<&Tensor>,
        mut layers: Option<&mut Vec<Tensor>>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let offset = cache
            .as_ref()
            .map_or(0, |c| c.first().map_or(0, |c| c.position()));
        let mut x = self.embed(ids, offset, ctx)?;
        let mask = AttentionMask {
            causal: true,
            key_padding: key_padding.map(|m| m.to_dtype(DType::U8)).transpose()?,
            ..Default::default()
        };
        let mut weights = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            if let Some(layers) = layers.as_deref_mut() {
                layers.push(x.clone());
            }
            if ctx.recompute.is_some() && cache.is_none() && !want_weights {
                // Gradient checkpointing: the block runs again in the backward pass.
                let (block, mask) = (block.clone(), mask.clone());
                x = lingo_nn::recompute::checkpointed(&x, ctx, move |x, ctx| {
                    Ok(block.forward(x, &mask, None, false, ctx)?.0)
                })?;
                continue;
            }
            let layer_cache = cache.as_deref_mut().map(|c| &mut c[i]);
            let (y, w) = block.forward(&x, &mask, layer_cache, want_weights, ctx)?;
            x = y;
            weights.extend(w);
        }
        if let Some(ln_f) = &self.ln_f {
            x = ln_f.forward(&x)?;
        }
        if let Some(layers) = layers {
            layers.push(x.clone());
        }
        Ok((x, weights))
    }

    /// Token and position embeddings of `ids` (`[batch, time]`), the first starting at position
    /// `offset`, after dropout: the first block's input.
    fn embed(&self, ids: &Tensor, offset: usize, ctx: &mut Ctx) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let pos = self.wpe.forward(offset, t)?;
        self.drop
            .forward(&self.wte.forward(ids)?.broadcast_add(&pos)?, ctx)
    }

    /// The model cut for pipeline stage `stage` of `stages`: the embeddings on the first, an even
    /// share of the blocks on each, and the final norm, the output layer and the loss on the last
    /// (GPipe). `store` is the one the model was built in.
    pub fn stage<'a>(&'a self, store: &ParamStore, stage: usize, stages: usize) -> GptStage<'a> {
        let layers = split_layers(self.blocks.len(), stages)[stage.min(stages - 1)].clone();
        let (first, last) = (stage == 0, stage + 1 == stages);
        let tied = self.config.tied_embeddings;
        let mine = |name: &str| {
            let block = name
                .strip_prefix("transformer.h.")
                .and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
            match block {
                Some(i) => layers.contains(&i),
                None if name.starts_with("transformer.wte.") => first || (last && tied),
                None if name.starts_with("transformer.wpe.") => first,
                None => last,
            }
        };
        let params = store.named().into_iter().filter(|(n, _)| mine(n)).collect();
        GptStage {
            gpt: self,
            layers,
            first,
            last,
            params,
        }
    }

    /// Rank `rank` of `world`'s share of every block, for tensor-parallel inference (see
    /// [`lingo_nn::tensor_parallel`]): its attention heads and feed-forward neurons, the partial
    /// outputs summed over the ranks by `reduce`. Embeddings, norms and the output layer stay
    /// whole.
    pub fn tensor_parallel(
        &mut self,
        rank: usize,
        world: usize,
        reduce: &lingo_nn::tensor_parallel::Reduce,
    ) -> Result<()> {
        for block in &mut self.blocks {
            block.attn = block.attn.tensor_parallel(rank, world, reduce)?;
            block.mlp = block.mlp.tensor_parallel(rank, world, reduce)?;
        }
        Ok(())
    }

    /// Next-token logits `[batch, time, vocab]` for `ids: [batch, time]`: what training needs.
    pub fn logits(&self, ids: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.check_ids(ids)?;
        let (h, _) = self.hidden(ids, None, false, None, None, ctx)?;
        self.lm_head.forward(&h)
    }

    /// Logits for a padded batch (`attention_mask`: 1 = real token), the hidden states after the
    /// embeddings and after every block (the last one after the final norm), and, if asked, every
    /// block's attention probabilities `[batch, heads, time, time]`.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        if inputs.token_type_ids.is_some() || inputs.decoder_input_ids.is_some() {
            bail!("a GPT takes `input_ids` and `attention_mask` only");
        }
        let ids = &inputs.input_ids;
        self.check_ids(ids)?;
        let mut states = Vec::new();
        let (h, attentions) = self.hidden(
            ids,
            None,
            inputs.output_attentions,
            inputs.attention_mask.as_ref(),
            Some(&mut states),
            ctx,
        )?;
        let trace = Trace {
            states,
            self_attentions: attentions,
            cross_attentions: Vec::new(),
        };
        Ok(ModelOutput::new(self.lm_head.forward(&h)?, trace))
    }

    /// Mean cross-entropy of predicting `targets` (`[batch, time]`) from `ids`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let logits = self.logits(ids, ctx)?;
        lingo_kernels::cross_entropy(&logits, targets, CrossEntropy::default())
    }

    fn check_ids(&self, ids: &Tensor) -> Result<()> {
        let (_, t) = ids.dims2()?;
        if t > self.config.context_length {
            bail!(
                "sequence of {t} tokens is longer than the model's context of {}",
                self.config.context_length
            );
        }
        if ids.dtype() != DType::U32 {
            bail!("token ids must be u32, got {:?}", ids.dtype());
        }
        Ok(())
    }
}

/// One pipeline stage of a [`Gpt`] (see [`Gpt::stage`]). Its inputs are `[ids, targets]`.
pub struct GptStage<'a> {
    gpt: &'a Gpt,
    layers: std::ops::Range<usize>,
    first: bool,
    last: bool,
    params: Vec<(String, candle_core::Var)>,
}

impl PipelineStage for GptStage<'_> {
    fn params(&self) -> Vec<(String, candle_core::Var)> {
        self.params.clone()
    }

    fn forward(&self, inputs: &[Tensor], x: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let [ids, targets] = inputs else {
            bail!("a GPT stage takes [ids, targets]");
        };
        let gpt = self.gpt;
        let mut x = match (self.first, x) {
            (true, _) => {
                gpt.check_ids(ids)?;
                gpt.embed(ids, 0, ctx)?
            }
            (false, Some(x)) => x.clone(),
            (false, None) => {
                bail!("a GPT stage after the first needs the previous one's activations")
            }
        };
        let mask = AttentionMask {
            causal: true,
            ..Default::default()
        };
        for block in &gpt.blocks[self.layers.clone()] {
            x = block.forward(&x, &mask, None, false, ctx)?.0;
        }
        if !self.last {
            return Ok(x);
        }
        if let Some(ln_f) = &gpt.ln_f {
            x = ln_f.forward(&x)?;
        }
        let logits = gpt.lm_head.forward(&x)?;
        lingo_kernels::cross_entropy(&logits, targets, CrossEntropy::default())
    }

    fn tied(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.gpt.config;
        match c.tied_embeddings {
            true => vec![(
                "transformer.wte.weight".into(),
                vec![c.vocab_size, c.d_model],
            )],
            false => Vec::new(),
        }
    }
}

/// The fields of a Hugging Face GPT-2 `config.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "gelu_new")]
    pub activation_function: String,
    #[serde(default = "gpt2_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// Dropout after each sub-layer, on the embeddings and on the attention probabilities; Lingo's
    /// GPT applies one probability everywhere, so the three must agree (they do in every GPT-2
    /// release: 0.1).
    #[serde(default = "gpt2_dropout")]
    pub resid_pdrop: f32,
    #[serde(default = "gpt2_dropout")]
    pub embd_pdrop: f32,
    #[serde(default = "gpt2_dropout")]
    pub attn_pdrop: f32,
}

fn gpt2_dropout() -> f32 {
    0.1
}

fn gelu_new() -> String {
    "gelu_new".into()
}
fn gpt2_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl Gpt2Config {
    /// The same network as a Lingo GPT: pre-norm, learned positions, biases, tied head.
    pub fn to_gpt(&self) -> std::result::Result<GptConfig, String> {
        let activation = match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => {
                return Err(format!(
                    "field `activation_function`: `{other}` is not supported"
                ))
            }
        };
        if self.embd_pdrop != self.resid_pdrop || self.attn_pdrop != self.resid_pdrop {
            return Err(format!(
                "fields `resid_pdrop` ({}), `embd_pdrop` ({}), `attn_pdrop` ({}): Lingo's GPT applies one dropout probability everywhere",
                self.resid_pdrop, self.embd_pdrop, self.attn_pdrop
            ));
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return Err("fields `scale_attn_weights` / `scale_attn_by_inverse_layer_idx`: only the standard 1/√d scaling is supported".into());
        }
        Ok(GptConfig {
            vocab_size: self.vocab_size,
            context_length: self.n_positions,
            d_model: self.n_embd,
            n_heads: self.n_head,
            n_layers: self.n_layer,
            d_ff: self.n_inner.unwrap_or(4 * self.n_embd),
            activation,
            tied_embeddings: self.tie_word_embeddings,
            layer_norm_eps: self.layer_norm_epsilon,
            dropout: self.resid_pdrop,
            ..Default::default()
        })
    }
}

/// GPT-2 stores its projections as `Conv1D` weights, `[in, out]`: the transpose of a linear layer's.
pub fn is_gpt2_conv1d(name: &str) -> bool {
    name.ends_with(".weight")
        && ["attn.c_attn.", "attn.c_proj.", "mlp.c_fc.", "mlp.c_proj."]
            .iter()
            .any(|k| name.contains(k))
}

/// Converts a parameter between GPT-2's stored layout and Lingo's (a transpose, either way).
pub fn gpt2_layout(name: &str, t: Tensor) -> Result<Tensor> {
    if is_gpt2_conv1d(name) {
        t.t()?.contiguous()
    } else {
        Ok(t)
    }
}

impl Gpt {
    /// Loads a Hugging Face GPT-2 folder (`GPT2LMHeadModel` or `GPT2Model` weights, with or without
    /// the `transformer.` prefix); it saves back as `GPT2LMHeadModel`, every parameter under
    /// `transformer.` but the tied head.
    pub fn load_gpt2(
        checkpoint: &Checkpoint,
        options: &LoadOptions,
    ) -> std::result::Result<Loaded, LoadError> {
        let mut json = checkpoint.config.clone();
        if let Some(p) = options.dropout {
            for key in ["resid_pdrop", "embd_pdrop", "attn_pdrop"] {
                json[key] = p.into();
            }
        }
        json["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        let hf: Gpt2Config = checkpoint.parse(json.clone())?;
        let config = hf.to_gpt().map_err(|m| checkpoint.invalid_config(m))?;
        let lookup = Lookup {
            prefixes: &["transformer."],
            convert: gpt2_layout,
            seed: options.seed,
            allow_missing: &options.allow_missing,
            ..Lookup::default()
        };
        let built = checkpoint.build(&lookup, |p| Gpt::new(config, p))?;
        let names = StoredNames::from_pairs(built.store.named().into_iter().map(|(n, _)| {
            let stored = built.names.stored(&n);
            let name = if stored.starts_with("transformer.") || stored == "lm_head.weight" {
                stored.to_string()
            } else {
                format!("transformer.{stored}")
            };
            (n, name)
        }));
        Ok(Loaded {
            model: AutoModel::Gpt(built.model),
            store: built.store,
            config: json,
            report: built.report,
            names,
        })
    }
}

impl CausalLm for Gpt {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context_length(&self) -> usize {
        self.config.context_length
    }

    fn new_cache(&self) -> Vec<KvCache> {
        vec![KvCache::new(); self.blocks.len()]
    }

    fn forward_cached(&self, ids: &Tensor, cache: &mut [KvCache]) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let seen = cache.first().map_or(0, |c| c.position());
        if seen + t > self.config.context_length {
            bail!(
                "{} tokens exceed the model's context of {}",
                seen + t,
                self.config.context_length
            );
        }
        let (h, _) = self.hidden(ids, Some(cache), false, None, None, &mut Ctx::eval())?;
        self.lm_head.forward(&h)
    }

    /// Every row's embedding, projections and feed-forward run as one batch; only attention runs
    /// per row, over that row's cache.
    fn forward_rows(&self, tokens: &[u32], caches: &mut [&mut [KvCache]]) -> Result<Tensor> {
        crate::contracts::check_rows(tokens.len(), caches.len())?;
        let ids = Tensor::from_slice(tokens, (tokens.len(), 1), self.wte.weight.device())?;
        self.check_ids(&ids)?;
        let mut positions = Vec::with_capacity(tokens.len());
        for cache in caches.iter() {
            if cache.len() != self.blocks.len() {
                bail!(
                    "a cache of {} layers for a model of {}",
                    cache.len(),
                    self.blocks.len()
                );
            }
            positions.push(self.wpe.forward(cache[0].position(), 1)?);
        }
        let mut x = self
            .wte
            .forward(&ids)?
            .broadcast_add(&Tensor::stack(&positions, 0)?)?;
        for (l, block) in self.blocks.iter().enumerate() {
            let mut layer: Vec<&mut KvCache> = caches.iter_mut().map(|c| &mut c[l]).collect();
            x = block.forward_rows(&x, &mut layer)?;
        }
        if let Some(ln_f) = &self.ln_f {
            x = ln_f.forward(&x)?;
        }
        self.lm_head.forward(&x)?.squeeze(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use lingo_kernels::gradcheck::assert_close;
    use lingo_nn::{LingoRng, ParamStore};

    fn tiny(placement: NormPlacement, tied: bool) -> GptConfig {
        GptConfig {
            vocab_size: 11,
            context_length: 8,
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            d_ff: 24,
            norm_placement: placement,
            tied_embeddings: tied,
            ..Default::default()
        }
    }

    fn ids(b: usize, t: usize, seed: u32) -> Tensor {
        let v: Vec<u32> = (0..b * t).map(|i| (i as u32 * 7 + seed) % 11).collect();
        Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap()
    }

    #[test]
    fn every_parameter_receives_a_nonzero_gradient() -> Result<()> {
        let variants = [
            (NormPlacement::Pre, false),
            (NormPlacement::Pre, true),
            (NormPlacement::Post, false),
            (NormPlacement::Post, true),
        ];
        for (i, (placement, tied)) in variants.into_iter().enumerate() {
            let mut config = tiny(placement, tied);
            // Cover the other options too: sinusoidal positions, ReLU, no biases.
            if i == 3 {
                config.positions = Positions::Sinusoidal;
                config.activation = Activation::Relu;
                config.bias = false;
            }
            let store = ParamStore::new(0, &Device::Cpu);
            let model = Gpt::new(config, &store.root())?;
            let loss = model.loss(&ids(2, 8, 1), &ids(2, 8, 3), &mut Ctx::eval())?;
            let missing = store.without_gradient(&loss.backward()?)?;
            assert!(
                missing.is_empty(),
                "{placement:?}, tied {tied}: no gradient for {missing:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn cached_decoding_matches_full_forward() -> Result<()> {
        let store = ParamStore::new(0, &Device::Cpu);
        // Long enough that the cache has to grow past its first allocation.
        let config = GptConfig {
            context_length: 40,
            ..tiny(NormPlacement::Pre, false)
        };
        let model = Gpt::new(config, &store.root())?;
        let x = ids(2, 37, 5);
        let full = model.logits(&x, &mut Ctx::eval())?;
        let mut cache = model.new_cache();
        let first = model.forward_cached(&x.narrow(1, 0, 4)?, &mut cache)?;
        let mut steps = vec![first];
        for t in 4..37 {
            steps.push(model.forward_cached(&x.narrow(1, t, 1)?, &mut cache)?);
        }
        assert_close(&Tensor::cat(&steps, 1)?, &full, 1e-5, "cached logits")
    }

    /// Continuous batching: one step over sequences of different lengths, each with its own cache,
    /// gives each the logits it gets alone — for both norm placements.
    #[test]
    fn batched_rows_match_each_sequence_alone() -> Result<()> {
        for placement in [NormPlacement::Pre, NormPlacement::Post] {
            let store = ParamStore::new(1, &Device::Cpu);
            let config = GptConfig {
                context_length: 40,
                ..tiny(placement, true)
            };
            let model = Gpt::new(config, &store.root())?;
            let prompts = [ids(1, 3, 1), ids(1, 17, 2), ids(1, 1, 4)];
            let mut caches: Vec<Vec<KvCache>> = Vec::new();
            for p in &prompts {
                let mut cache = model.new_cache();
                model.forward_cached(p, &mut cache)?;
                caches.push(cache);
            }
            let mut alone = caches.clone();
            for step in 0..3u32 {
                let tokens = [step + 2, 5, 10 - step];
                let mut rows: Vec<&mut [KvCache]> =
                    caches.iter_mut().map(|c| c.as_mut_slice()).collect();
                let batched = model.forward_rows(&tokens, &mut rows)?;
                for (i, &token) in tokens.iter().enumerate() {
                    let input = Tensor::new(&[[token]], &Device::Cpu)?;
                    let one = model.forward_cached(&input, &mut alone[i])?.flatten_to(1)?;
                    let label = format!("{placement:?} row {i} step {step}");
                    assert_close(&batched.narrow(0, i, 1)?, &one, 1e-5, &label)?;
                }
            }
            assert_eq!(caches[1][0].len(), 20);
        }
        Ok(())
    }

    fn windowed(window: usize, context: usize) -> GptConfig {
        GptConfig {
            context_length: context,
            attention: AttentionKind::Window,
            attention_window: window,
            dropout: 0.1,
            ..tiny(NormPlacement::Pre, false)
        }
    }

    #[test]
    fn a_window_over_the_whole_context_is_dense_attention() -> Result<()> {
        let dense_store = ParamStore::new(3, &Device::Cpu);
        let window_store = ParamStore::new(3, &Device::Cpu);
        let dense = Gpt::new(
            GptConfig {
                dropout: 0.1,
                ..windowed(70, 70)
            }
            .with_dense(),
            &dense_store.root(),
        )?;
        let window = Gpt::new(windowed(70, 70), &window_store.root())?;
        let x = ids(2, 70, 3);
        // Training mode: the same dropout masks on the probabilities too.
        let a = dense.logits(&x, &mut Ctx::train(LingoRng::new(9)))?;
        let b = window.logits(&x, &mut Ctx::train(LingoRng::new(9)))?;
        assert_close(&a, &b, 1e-5, "window over everything vs dense")
    }

    /// Attention sinks: a narrow window whose every position is global is dense attention; a
    /// few global tokens train every parameter, and decoding keeps them in the rolling cache
    /// beside the window's last keys, agreeing with the full forward.
    #[test]
    fn global_tokens_in_a_causal_window() -> Result<()> {
        let x = ids(2, 40, 3);
        let all_global = GptConfig {
            attention_global: 40,
            ..windowed(3, 40)
        };
        let store = |seed| ParamStore::new(seed, &Device::Cpu);
        let (s1, s2) = (store(6), store(6));
        let dense = Gpt::new(all_global.clone().with_dense(), &s1.root())?;
        let sinks = Gpt::new(all_global, &s2.root())?;
        let a = dense.logits(&x, &mut Ctx::eval())?;
        let b = sinks.logits(&x, &mut Ctx::eval())?;
        assert_close(&a, &b, 1e-5, "all-global window vs dense")?;
        let s3 = store(7);
        let model = Gpt::new(
            GptConfig {
                attention_global: 2,
                ..windowed(4, 40)
            },
            &s3.root(),
        )?;
        let loss = model.loss(&x, &ids(2, 40, 1), &mut Ctx::eval())?;
        let missing = s3.without_gradient(&loss.backward()?)?;
        assert!(missing.is_empty(), "no gradient for {missing:?}");
        let full = model.logits(&x, &mut Ctx::eval())?;
        let mut cache = model.new_cache();
        let mut steps = vec![model.forward_cached(&x.narrow(1, 0, 7)?, &mut cache)?];
        assert_eq!((cache[0].len(), cache[0].position()), (2 + 3, 7));
        for t in 7..36 {
            steps.push(model.forward_cached(&x.narrow(1, t, 1)?, &mut cache)?);
        }
        steps.push(model.forward_cached(&x.narrow(1, 36, 4)?, &mut cache)?);
        assert_eq!((cache[0].len(), cache[0].position()), (2 + 3, 40));
        assert_close(&Tensor::cat(&steps, 1)?, &full, 1e-5, "sink-cache logits")?;
        // Token by token from the first, the global ones included.
        let mut cache = model.new_cache();
        let steps = (0..12)
            .map(|t| model.forward_cached(&x.narrow(1, t, 1)?, &mut cache))
            .collect::<Result<Vec<_>>>()?;
        let head = full.narrow(1, 0, 12)?;
        assert_close(
            &Tensor::cat(&steps, 1)?,
            &head,
            1e-5,
            "token-by-token sinks",
        )
    }

    #[test]
    fn windowed_model_trains_and_decodes_with_a_rolling_cache() -> Result<()> {
        let store = ParamStore::new(4, &Device::Cpu);
        let model = Gpt::new(windowed(5, 40), &store.root())?;
        let loss = model.loss(&ids(2, 40, 1), &ids(2, 40, 3), &mut Ctx::eval())?;
        let missing = store.without_gradient(&loss.backward()?)?;
        assert!(missing.is_empty(), "no gradient for {missing:?}");

        // Decoding keeps only the last window − 1 keys and agrees with the full forward.
        let x = ids(2, 37, 5);
        let full = model.logits(&x, &mut Ctx::eval())?;
        let mut cache = model.new_cache();
        let mut steps = vec![model.forward_cached(&x.narrow(1, 0, 9)?, &mut cache)?];
        assert_eq!((cache[0].len(), cache[0].position()), (4, 9));
        for t in 9..33 {
            steps.push(model.forward_cached(&x.narrow(1, t, 1)?, &mut cache)?);
        }
        // A chunk of several tokens after the prompt goes one position at a time.
        steps.push(model.forward_cached(&x.narrow(1, 33, 4)?, &mut cache)?);
        assert_eq!((cache[0].len(), cache[0].position()), (4, 37));
        assert_close(
            &Tensor::cat(&steps, 1)?,
            &full,
            1e-5,
            "rolling-cache logits",
        )
    }

    #[test]
    fn lsh_attention_trains_and_linformer_is_refused() -> Result<()> {
        let store = ParamStore::new(5, &Device::Cpu);
        let config = GptConfig {
            context_length: 40,
            attention: AttentionKind::Lsh,
            lsh_buckets: 4,
            lsh_rounds: 2,
            lsh_chunk: 8,
            ..tiny(NormPlacement::Pre, false)
        };
        let model = Gpt::new(config.clone(), &store.root())?;
        let loss = model.loss(&ids(2, 40, 1), &ids(2, 40, 3), &mut Ctx::eval())?;
        let missing = store.without_gradient(&loss.backward()?)?;
        assert!(missing.is_empty(), "no gradient for {missing:?}");
        let mut cache = model.new_cache();
        let err = model.forward_cached(&ids(1, 3, 0), &mut cache).unwrap_err();
        assert!(err.to_string().contains("no decoding cache"), "{err}");
        let linformer = GptConfig {
            attention: AttentionKind::Linformer,
            ..config
        };
        assert!(linformer.validate().unwrap_err().contains("causal"));
        Ok(())
    }

    #[test]
    fn too_long_input_is_an_error() {
        let store = ParamStore::new(0, &Device::Cpu);
        let model = Gpt::new(tiny(NormPlacement::Pre, false), &store.root()).unwrap();
        let err = model
            .logits(&ids(1, 9, 0), &mut Ctx::eval())
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than the model's context"), "{err}");
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_values() {
        let err = crate::config::parse_json::<GptConfig>(r#"{"vocab_size": 5, "n_layer": 2}"#)
            .unwrap_err();
        assert!(err.contains("unknown field `n_layer`"), "{err}");
        let bad = GptConfig {
            vocab_size: 10,
            d_model: 30,
            n_heads: 4,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("d_model"));
    }
}
