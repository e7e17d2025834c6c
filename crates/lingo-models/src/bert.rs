//! The BERT family of bidirectional encoders (Devlin et al., 2019) and its descendants, loaded from
//! Hugging Face checkpoints under their own parameter names:
//!
//! - **BERT**: token + position + segment embeddings, LayerNorm; post-norm Transformer layers
//!   (self-attention → add & norm → GELU feed-forward → add & norm); a `tanh` pooler over `[CLS]`.
//! - **RoBERTa** (Liu et al., 2019): BERT without segment pre-training; positions count real tokens
//!   from `pad_token_id + 1`, so padding does not shift them.
//! - **ELECTRA** (Clark et al., 2020): smaller embeddings projected up to the hidden width; a
//!   replaced-token discriminator head and a masked-LM generator head.
//! - **ALBERT** (Lan et al., 2020): factorised embeddings (`E < H`) and one set of layer weights
//!   shared by all layers.
//! - **DistilBERT** (Sanh et al., 2019): BERT's layers under other names, no segment embeddings.
//!
//! Heads: masked LM, sequence classification, token classification, extractive QA, and ELECTRA's
//! discriminator. Every layer's output is returned, as `transformers` does with
//! `output_hidden_states=True`.

use crate::auto::{AutoModel, LoadOptions, Loaded};
use crate::hf::{Checkpoint, LoadError, Lookup, StoredNames};
use crate::outputs::{ModelInputs, ModelOutput, Trace};
use candle_core::{bail, DType, Result, Tensor, D};
use lingo_kernels::AttentionMask;
use lingo_nn::pipeline::{split_layers, PipelineStage};
use lingo_nn::{
    Activation, AttentionKind, Ctx, Dropout, Embedding, Init, LayerNorm, Linear, LinformerSharing,
    MultiHeadAttention, ParamPath, Pattern, PatternConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Which member of the family a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
    Electra,
    Albert,
    DistilBert,
}

impl Family {
    fn from_model_type(t: &str) -> Option<Family> {
        Some(match t {
            "bert" => Family::Bert,
            "roberta" | "xlm-roberta" => Family::Roberta,
            "electra" => Family::Electra,
            "albert" => Family::Albert,
            "distilbert" => Family::DistilBert,
            _ => return None,
        })
    }

    /// The `transformers` class of this family with `head` (`BertForSequenceClassification`).
    fn architecture(self, head: Head) -> String {
        let class = match self {
            Family::Bert => "Bert",
            Family::Roberta => "Roberta",
            Family::Electra => "Electra",
            Family::Albert => "Albert",
            Family::DistilBert => "DistilBert",
        };
        format!("{class}{}", head.suffix())
    }

    /// The name the base model's parameters sit under in a checkpoint with a head.
    fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::Electra => "electra",
            Family::Albert => "albert",
            Family::DistilBert => "distilbert",
        }
    }
}

/// What sits on top of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// None: the output is the last hidden state.
    Base,
    MaskedLm,
    SequenceClassification,
    TokenClassification,
    QuestionAnswering,
    /// ELECTRA's discriminator: one logit per token, "was this token replaced?".
    ReplacedToken,
    /// BERT's pre-training heads (masked LM and next-sentence prediction over the pooled
    /// `[CLS]`), ALBERT's (masked LM and sentence-order prediction).
    PreTraining,
}

impl Head {
    fn from_architecture(arch: &str) -> Option<Head> {
        let suffix = arch
            .strip_prefix("Bert")
            .or_else(|| arch.strip_prefix("XLMRoberta"))
            .or_else(|| arch.strip_prefix("Roberta"))
            .or_else(|| arch.strip_prefix("Electra"))
            .or_else(|| arch.strip_prefix("Albert"))
            .or_else(|| arch.strip_prefix("DistilBert"))?;
        Some(match suffix {
            "Model" => Head::Base,
            "ForMaskedLM" => Head::MaskedLm,
            "ForSequenceClassification" => Head::SequenceClassification,
            "ForTokenClassification" => Head::TokenClassification,
            "ForQuestionAnswering" => Head::QuestionAnswering,
            // ELECTRA's pre-training head is the discriminator; BERT's and ALBERT's are a masked
            // LM and a sentence-pair classifier. RoBERTa and DistilBERT have none.
            "ForPreTraining" if arch.starts_with("Electra") => Head::ReplacedToken,
            "ForPreTraining" if arch.starts_with("Bert") || arch.starts_with("Albert") => {
                Head::PreTraining
            }
            _ => return None,
        })
    }

    /// The `transformers` class-name suffix of this head.
    fn suffix(self) -> &'static str {
        match self {
            Head::Base => "Model",
            Head::MaskedLm => "ForMaskedLM",
            Head::SequenceClassification => "ForSequenceClassification",
            Head::TokenClassification => "ForTokenClassification",
            Head::QuestionAnswering => "ForQuestionAnswering",
            Head::ReplacedToken | Head::PreTraining => "ForPreTraining",
        }
    }
}

/// The fields of the family's `config.json` files that shape the network (DistilBERT's names are
/// accepted as aliases).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    #[serde(alias = "dim")]
    pub hidden_size: usize,
    #[serde(alias = "n_layers")]
    pub num_hidden_layers: usize,
    #[serde(alias = "n_heads")]
    pub num_attention_heads: usize,
    #[serde(alias = "hidden_dim")]
    pub intermediate_size: usize,
    #[serde(alias = "activation", default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// ELECTRA and ALBERT: the embedding width, projected to `hidden_size`.
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// ALBERT: how many distinct layers the `num_hidden_layers` share.
    #[serde(default = "one")]
    pub num_hidden_groups: usize,
    #[serde(default)]
    pub id2label: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    /// Dropout on embeddings and sub-layer outputs (DistilBERT: `dropout`).
    #[serde(alias = "dropout", default = "tenth")]
    pub hidden_dropout_prob: f32,
    /// Dropout on attention probabilities (DistilBERT: `attention_dropout`).
    #[serde(alias = "attention_dropout", default = "tenth")]
    pub attention_probs_dropout_prob: f32,
    /// Dropout before a classification head; `None` means `hidden_dropout_prob` (ALBERT:
    /// `classifier_dropout_prob`, DistilBERT: `seq_classif_dropout`).
    #[serde(
        alias = "classifier_dropout_prob",
        alias = "seq_classif_dropout",
        default
    )]
    pub classifier_dropout: Option<f32>,
    /// DistilBERT: dropout before the QA head.
    #[serde(default)]
    pub qa_dropout: Option<f32>,
    /// The standard deviation of new weights (a newly added head).
    #[serde(default = "default_init_range")]
    pub initializer_range: f32,
    /// Heads removed from each layer (`{"layer": [head, …]}`, original head numbers), as
    /// `transformers` records them after `prune_heads`: those layers' attention is narrower.
    #[serde(default)]
    pub pruned_heads: BTreeMap<usize, Vec<usize>>,
    /// Lingo's efficient self-attention (absent from Hugging Face configs: `dense`): `window`
    /// over `attention_window` positions (half either side), `linformer` projecting keys and
    /// values to `linformer_k` rows (`linformer_sharing`: `headwise`, `key_value`, `layerwise`),
    /// or `lsh`, Reformer's hashed shared-QK attention (`lsh_buckets` buckets, `lsh_rounds`
    /// hashes, chunks of `lsh_chunk`; the layers have no key projection).
    #[serde(default)]
    pub attention: AttentionKind,
    #[serde(default = "default_window")]
    pub attention_window: usize,
    /// Leading global tokens of a `window` (Longformer): they see and are seen by every position.
    #[serde(default)]
    pub attention_global: usize,
    #[serde(default = "default_window")]
    pub linformer_k: usize,
    #[serde(default)]
    pub linformer_sharing: LinformerSharing,
    #[serde(default = "default_lsh_buckets")]
    pub lsh_buckets: usize,
    #[serde(default = "default_lsh_rounds")]
    pub lsh_rounds: usize,
    #[serde(default = "default_lsh_chunk")]
    pub lsh_chunk: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn one() -> usize {
    1
}
fn tenth() -> f32 {
    0.1
}
fn default_init_range() -> f32 {
    0.02
}
fn yes() -> bool {
    true
}
fn default_window() -> usize {
    256
}
fn default_lsh_buckets() -> usize {
    8
}
fn default_lsh_rounds() -> usize {
    2
}
fn default_lsh_chunk() -> usize {
    64
}

impl BertConfig {
    fn embedding_width(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }
    fn num_labels(&self) -> usize {
        self.id2label.as_ref().map_or(2, |m| m.len())
    }
    fn init(&self) -> Init {
        Init::Normal(self.initializer_range)
    }
    fn classifier_dropout(&self) -> Dropout {
        Dropout::new(self.classifier_dropout.unwrap_or(self.hidden_dropout_prob))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The keys layer `index` at `layer` (its parameters' path) attends over; `base` holds what
    /// every layer shares. LSH draws the layer's rotations from its index.
    fn pattern(&self, layer: &ParamPath, base: &ParamPath, index: usize) -> Result<Pattern> {
        let c = PatternConfig {
            kind: self.attention,
            window: self.attention_window,
            global: self.attention_global,
            linformer_k: self.linformer_k,
            linformer_sharing: self.linformer_sharing,
            max_len: self.max_position_embeddings,
            lsh_buckets: self.lsh_buckets,
            lsh_rounds: self.lsh_rounds,
            lsh_chunk: self.lsh_chunk,
            head_dim: self.head_dim(),
            seed: index as u64,
        };
        Pattern::build(&c, &layer.sub("attention"), &base.sub("encoder"))
    }

    /// The heads layer `layer` still has, in their original numbers.
    pub fn kept_heads(&self, layer: usize) -> Vec<usize> {
        let pruned = self.pruned_heads.get(&layer);
        (0..self.num_attention_heads)
            .filter(|h| pruned.is_none_or(|p| !p.contains(h)))
            .collect()
    }

    /// `pruned_heads` must name existing layers and heads and leave each layer a head.
    fn check_pruned_heads(&self) -> std::result::Result<(), String> {
        for (&layer, heads) in &self.pruned_heads {
            if layer >= self.num_hidden_layers {
                return Err(format!(
                    "field `pruned_heads`: layer {layer} does not exist ({} layers)",
                    self.num_hidden_layers
                ));
            }
            if let Some(h) = heads.iter().find(|&&h| h >= self.num_attention_heads) {
                return Err(format!(
                    "field `pruned_heads`: layer {layer} has no head {h} ({} heads)",
                    self.num_attention_heads
                ));
            }
            if self.kept_heads(layer).is_empty() {
                return Err(format!(
                    "field `pruned_heads`: every head of layer {layer} is pruned"
                ));
            }
        }
        Ok(())
    }
}

/// Every id in `ids` must be below `limit` (the config field `what`).
fn check_ids(ids: &Tensor, name: &str, limit: usize, what: &str) -> Result<()> {
    let max = ids
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if max >= limit as f64 {
        bail!("{name} holds {max}, but the model's {what} is {limit}");
    }
    Ok(())
}

/// The activations `transformers` names in `hidden_act`.
fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => bail!("hidden_act `{other}` is not supported (gelu, gelu_new, relu)"),
    })
}

/// Parameter names of one post-norm layer, relative to the layer.
struct LayerNames {
    q: &'static str,
    k: &'static str,
    v: &'static str,
    out: &'static str,
    attn_norm: &'static str,
    up: &'static str,
    down: &'static str,
    ffn_norm: &'static str,
}

const BERT_LAYER: LayerNames = LayerNames {
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    ffn_norm: "output.LayerNorm",
};

const ALBERT_LAYER: LayerNames = LayerNames {
    q: "attention.query",
    k: "attention.key",
    v: "attention.value",
    out: "attention.dense",
    attn_norm: "attention.LayerNorm",
    up: "ffn",
    down: "ffn_output",
    ffn_norm: "full_layer_layer_norm",
};

const DISTILBERT_LAYER: LayerNames = LayerNames {
    q: "attention.q_lin",
    k: "attention.k_lin",
    v: "attention.v_lin",
    out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    up: "ffn.lin1",
    down: "ffn.lin2",
    ffn_norm: "output_layer_norm",
};

/// Where one encoder layer's parameters are: the prefixes (`….attention.self.query`) of its
/// attention projections and feed-forward layers, which head and neuron pruning cut.
#[derive(Clone, Debug)]
pub struct LayerParams {
    pub query: String,
    pub key: String,
    pub value: String,
    pub output: String,
    pub up: String,
    pub down: String,
    /// The heads the layer has, in the config's original numbering (see `pruned_heads`).
    pub heads: Vec<usize>,
}

/// One post-norm Transformer encoder layer.
#[derive(Clone)]
struct EncoderLayer {
    /// Where the layer's parameters are (`bert.encoder.layer.3`), and their names under it.
    prefix: String,
    names: &'static LayerNames,
    /// Which of the configured heads the layer still has (original numbers).
    heads: Vec<usize>,
    attention: MultiHeadAttention,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    ffn_norm: LayerNorm,
    act: Activation,
    /// Dropout on the attention and feed-forward outputs before each residual sum (DistilBERT
    /// drops only the feed-forward output, ALBERT only the attention output).
    attn_dropout: Dropout,
    ffn_dropout: Dropout,
}

impl EncoderLayer {
    fn new(
        p: &ParamPath,
        names: &'static LayerNames,
        family: Family,
        c: &BertConfig,
        index: usize,
        pattern: Pattern,
    ) -> Result<Self> {
        let (h, f, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let init = c.init();
        let linear = |name: &str, i, o| Linear::new(&p.sub(name), i, o, true, init);
        let build = match pattern {
            Pattern::Lsh(_) => MultiHeadAttention::shared_qk,
            _ => MultiHeadAttention::with_head_dim,
        };
        let mut attention = build(
            p,
            [names.q, names.k, names.v, names.out],
            h,
            c.kept_heads(index).len(),
            c.head_dim(),
            init,
        )?;
        attention.dropout = Dropout::new(c.attention_probs_dropout_prob);
        attention.pattern = pattern;
        let hidden = Dropout::new(c.hidden_dropout_prob);
        let none = Dropout::new(0.0);
        Ok(EncoderLayer {
            prefix: p.prefix().to_string(),
            names,
            heads: c.kept_heads(index),
            attention,
            attn_norm: LayerNorm::new(&p.sub(names.attn_norm), h, true, eps)?,
            up: linear(names.up, h, f)?,
            down: linear(names.down, f, h)?,
            ffn_norm: LayerNorm::new(&p.sub(names.ffn_norm), h, true, eps)?,
            act: activation(&c.hidden_act)?,
            attn_dropout: if family == Family::DistilBert {
                none
            } else {
                hidden
            },
            ffn_dropout: if family == Family::Albert {
                none
            } else {
                hidden
            },
        })
    }

    /// `x: [batch, time, hidden]`; `mask` hides the padding keys. Also returns the attention
    /// probabilities `[batch, heads, time, time]` if asked.
    fn forward(
        &self,
        x: &Tensor,
        mask: &AttentionMask,
        want_weights: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (attended, weights) = self.attention.forward(x, x, mask, want_weights, ctx)?;
        let attended = self.attn_dropout.forward(&attended, ctx)?;
        let x = self.attn_norm.forward(&(x + attended)?)?;
        let ffn = self.down.forward(&self.act.apply(&self.up.forward(&x)?)?)?;
        let ffn = self.ffn_dropout.forward(&ffn, ctx)?;
        Ok((self.ffn_norm.forward(&(x + ffn)?)?, weights))
    }
}

/// Token, position and (optionally) segment embeddings, normalised, projected to the hidden width
/// where the embeddings are narrower.
struct Embeddings {
    words: Embedding,
    positions: Embedding,
    segments: Option<Embedding>,
    norm: LayerNorm,
    project: Option<Linear>,
    /// RoBERTa: positions start after the padding id and skip padding.
    roberta_pad: Option<u32>,
    dropout: Dropout,
}

impl Embeddings {
    /// The tables under `tables` (`bert.embeddings.…`), the projection to the hidden width
    /// under the model's own base path `p`.
    fn new(p: &ParamPath, tables: &ParamPath, family: Family, c: &BertConfig) -> Result<Self> {
        let e = c.embedding_width();
        let init = c.init();
        let emb = tables.sub("embeddings");
        let segments = if family != Family::DistilBert && c.type_vocab_size > 0 {
            Some(Embedding::new(
                &emb.sub("token_type_embeddings"),
                c.type_vocab_size,
                e,
                init,
            )?)
        } else {
            None
        };
        let project = match family {
            Family::Electra if e != c.hidden_size => Some(Linear::new(
                &p.sub("embeddings_project"),
                e,
                c.hidden_size,
                true,
                init,
            )?),
            Family::Albert => Some(Linear::new(
                &p.sub("encoder.embedding_hidden_mapping_in"),
                e,
                c.hidden_size,
                true,
                init,
            )?),
            _ => None,
        };
        if family == Family::DistilBert && c.sinusoidal_pos_embds {
            bail!("DistilBERT with sinusoidal_pos_embds is not supported");
        }
        // transformers builds these tables with `padding_idx = pad_token_id`: the padding row
        // never trains (RoBERTa's position table likewise).
        let pad = c
            .pad_token_id
            .unwrap_or(u32::from(family == Family::Roberta)) as usize;
        let positions = Embedding::new(
            &emb.sub("position_embeddings"),
            c.max_position_embeddings,
            e,
            init,
        )?;
        Ok(Embeddings {
            words: Embedding::new(&emb.sub("word_embeddings"), c.vocab_size, e, init)?
                .with_padding_idx(pad),
            positions: match family {
                Family::Roberta => positions.with_padding_idx(pad),
                _ => positions,
            },
            segments,
            norm: LayerNorm::new(&emb.sub("LayerNorm"), e, true, c.layer_norm_eps)?,
            project,
            roberta_pad: match family {
                Family::Roberta => Some(c.pad_token_id.unwrap_or(1)),
                _ => None,
            },
            dropout: Dropout::new(c.hidden_dropout_prob),
        })
    }

    fn position_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let positions: Vec<u32> = match self.roberta_pad {
            None => (0..b).flat_map(|_| 0..t as u32).collect(),
            Some(pad) => {
                let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
                rows.iter()
                    .flat_map(|row| {
                        let mut seen = 0;
                        row.iter()
                            .map(|&id| {
                                if id == pad {
                                    pad
                                } else {
                                    seen += 1;
                                    pad + seen
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            }
        };
        Tensor::from_vec(positions, (b, t), ids.device())
    }

    fn forward(&self, ids: &Tensor, token_types: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let mut x =
            (self.words.forward(ids)? + self.positions.forward(&self.position_ids(ids)?)?)?;
        if let Some(segments) = &self.segments {
            let types = match token_types {
                Some(t) => t.clone(),
                None => ids.zeros_like()?,
            };
            x = (x + segments.forward(&types)?)?;
        }
        let x = self.dropout.forward(&self.norm.forward(&x)?, ctx)?;
        match &self.project {
            Some(p) => p.forward(&x),
            None => Ok(x),
        }
    }
}

/// The head's layers.
enum HeadLayers {
    Base,
    /// `transform` (dense + activation + norm) then the decoder (tied to the word embeddings unless
    /// the checkpoint stores its own) plus a bias.
    MaskedLm {
        dense: Linear,
        act: Activation,
        norm: LayerNorm,
        decoder: Linear,
    },
    /// Classification over the first token: an optional dense + activation, then the projection;
    /// dropout before each (RoBERTa, ELECTRA), or before the projection only (BERT, ALBERT,
    /// DistilBERT).
    Sequence {
        pre: Option<(Linear, Activation)>,
        out: Linear,
        dropout: Dropout,
        /// Dropout before `pre` too.
        drop_first: bool,
    },
    Token(Linear, Dropout),
    Span(Linear, Dropout),
    ReplacedToken {
        dense: Linear,
        act: Activation,
        out: Linear,
    },
    /// The masked LM over every token and a sentence-pair classifier over the pooled `[CLS]`
    /// (ALBERT drops out before it).
    PreTraining {
        lm: Box<HeadLayers>,
        pair: Linear,
        dropout: Dropout,
    },
}

/// A BERT-family model with its head, built to load a checkpoint.
pub struct BertModel {
    pub family: Family,
    pub head: Head,
    pub config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    /// Which of `layers` runs at depth `i` (ALBERT shares them).
    schedule: Vec<usize>,
    pooler: Option<Linear>,
    head_layers: HeadLayers,
}

impl BertModel {
    /// Builds the architecture with parameter names matching a checkpoint of this family and head.
    pub fn new(
        family: Family,
        head: Head,
        config: BertConfig,
        with_pooler: bool,
        p: &ParamPath,
    ) -> Result<Self> {
        let tables = p.sub(family.prefix());
        Self::sharing_embeddings(family, head, config, with_pooler, p, &tables)
    }

    /// As [`BertModel::new`], with the embedding tables (words, positions, segments and their
    /// norm) taken from `tables` — another model's base path, so the two share them, as
    /// ELECTRA's generator shares the discriminator's.
    pub fn sharing_embeddings(
        family: Family,
        head: Head,
        config: BertConfig,
        with_pooler: bool,
        p: &ParamPath,
        tables: &ParamPath,
    ) -> Result<Self> {
        let c = &config;
        if let Err(e) = crate::config::check_layers("num_hidden_layers", c.num_hidden_layers) {
            bail!("{e}");
        }
        if let Err(e) =
            crate::config::check_positions("max_position_embeddings", c.max_position_embeddings)
        {
            bail!("{e}");
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        if let Err(e) = c.check_pruned_heads() {
            bail!("{e}");
        }
        if family == Family::Albert && !c.pruned_heads.is_empty() {
            bail!("field `pruned_heads`: ALBERT's layers share their weights, so heads cannot be pruned per layer");
        }
        let base = p.sub(family.prefix());
        let embeddings = Embeddings::new(&base, tables, family, c)?;
        let (layers, schedule) = match family {
            Family::Albert => {
                let groups = c.num_hidden_groups.max(1);
                let layers = (0..groups)
                    .map(|g| {
                        let lp =
                            base.sub(format!("encoder.albert_layer_groups.{g}.albert_layers.0"));
                        EncoderLayer::new(
                            &lp,
                            &ALBERT_LAYER,
                            family,
                            c,
                            g,
                            c.pattern(&lp, &base, g)?,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let per_group = c.num_hidden_layers.div_ceil(groups);
                let schedule = (0..c.num_hidden_layers).map(|i| i / per_group).collect();
                (layers, schedule)
            }
            Family::DistilBert => {
                let layers = (0..c.num_hidden_layers)
                    .map(|i| {
                        let lp = base.sub(format!("transformer.layer.{i}"));
                        let pattern = c.pattern(&lp, &base, i)?;
                        EncoderLayer::new(&lp, &DISTILBERT_LAYER, family, c, i, pattern)
                    })
                    .collect::<Result<Vec<_>>>()?;
                (layers, (0..c.num_hidden_layers).collect())
            }
            _ => {
                let layers = (0..c.num_hidden_layers)
                    .map(|i| {
                        let lp = base.sub(format!("encoder.layer.{i}"));
                        let pattern = c.pattern(&lp, &base, i)?;
                        EncoderLayer::new(&lp, &BERT_LAYER, family, c, i, pattern)
                    })
                    .collect::<Result<Vec<_>>>()?;
                (layers, (0..c.num_hidden_layers).collect())
            }
        };
        let (h, init) = (c.hidden_size, c.init());
        let pooler = match (with_pooler, family) {
            (false, _) => None,
            (true, Family::Albert) => Some(Linear::new(&base.sub("pooler"), h, h, true, init)?),
            (true, _) => Some(Linear::new(&base.sub("pooler.dense"), h, h, true, init)?),
        };
        let head_layers = Self::head_layers(family, head, c, p, &embeddings)?;
        Ok(BertModel {
            family,
            head,
            config,
            embeddings,
            layers,
            schedule,
            pooler,
            head_layers,
        })
    }

    /// Each distinct encoder layer's parameter names (ALBERT's shared layers once per group).
    pub fn layer_params(&self) -> Vec<LayerParams> {
        self.layers
            .iter()
            .map(|l| {
                let name = |n: &str| format!("{}.{n}", l.prefix);
                LayerParams {
                    query: name(l.names.q),
                    key: name(l.names.k),
                    value: name(l.names.v),
                    output: name(l.names.out),
                    up: name(l.names.up),
                    down: name(l.names.down),
                    heads: l.heads.clone(),
                }
            })
            .collect()
    }

    fn head_layers(
        family: Family,
        head: Head,
        c: &BertConfig,
        p: &ParamPath,
        embeddings: &Embeddings,
    ) -> Result<HeadLayers> {
        let (h, init) = (c.hidden_size, c.init());
        let linear = |name: &str, i, o| Linear::new(&p.sub(name), i, o, true, init);
        let act = activation(&c.hidden_act)?;
        Ok(match head {
            Head::Base => HeadLayers::Base,
            Head::MaskedLm => Self::masked_lm_head(family, c, p, embeddings)?,
            Head::PreTraining => {
                let (pair, dropout) = match family {
                    Family::Bert => ("cls.seq_relationship", Dropout::new(0.0)),
                    Family::Albert => ("sop_classifier.classifier", c.classifier_dropout()),
                    _ => bail!(
                        "a pre-training head with a sentence-pair task is BERT's or ALBERT's, not {family:?}'s"
                    ),
                };
                HeadLayers::PreTraining {
                    lm: Box::new(Self::masked_lm_head(family, c, p, embeddings)?),
                    pair: linear(pair, h, 2)?,
                    dropout,
                }
            }
            Head::SequenceClassification => {
                let labels = c.num_labels();
                let dropout = c.classifier_dropout();
                match family {
                    Family::Bert | Family::Albert => HeadLayers::Sequence {
                        pre: None,
                        out: linear("classifier", h, labels)?,
                        dropout,
                        drop_first: false,
                    },
                    Family::Roberta | Family::Electra => HeadLayers::Sequence {
                        pre: Some((
                            linear("classifier.dense", h, h)?,
                            if family == Family::Roberta {
                                Activation::Tanh
                            } else {
                                Activation::Gelu
                            },
                        )),
                        out: linear("classifier.out_proj", h, labels)?,
                        dropout,
                        drop_first: true,
                    },
                    Family::DistilBert => HeadLayers::Sequence {
                        pre: Some((linear("pre_classifier", h, h)?, Activation::Relu)),
                        out: linear("classifier", h, labels)?,
                        dropout,
                        drop_first: false,
                    },
                }
            }
            Head::TokenClassification => {
                let dropout = match family {
                    Family::DistilBert => Dropout::new(c.hidden_dropout_prob),
                    _ => c.classifier_dropout(),
                };
                HeadLayers::Token(linear("classifier", h, c.num_labels())?, dropout)
            }
            Head::QuestionAnswering => {
                let dropout = match family {
                    Family::DistilBert => Dropout::new(c.qa_dropout.unwrap_or(0.1)),
                    _ => Dropout::new(0.0),
                };
                HeadLayers::Span(linear("qa_outputs", h, 2)?, dropout)
            }
            Head::ReplacedToken => {
                if family != Family::Electra {
                    bail!("the replaced-token head belongs to ELECTRA");
                }
                HeadLayers::ReplacedToken {
                    dense: linear("discriminator_predictions.dense", h, h)?,
                    act,
                    out: linear("discriminator_predictions.dense_prediction", h, 1)?,
                }
            }
        })
    }

    /// The masked-LM head under each family's names: `transform` (dense, activation, norm) then
    /// the decoder, tied to the word embeddings unless the config unties them, plus a bias.
    fn masked_lm_head(
        family: Family,
        c: &BertConfig,
        p: &ParamPath,
        embeddings: &Embeddings,
    ) -> Result<HeadLayers> {
        let (h, e, init) = (c.hidden_size, c.embedding_width(), c.init());
        let linear = |name: &str, i, o| Linear::new(&p.sub(name), i, o, true, init);
        let act = activation(&c.hidden_act)?;
        // (dense, norm, bias, decoder weight) names and the transform's width and activation.
        let (dense, norm, bias, decoder, width, act) = match family {
            Family::Bert => (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.bias",
                "cls.predictions.decoder.weight",
                h,
                act,
            ),
            Family::Roberta => (
                "lm_head.dense",
                "lm_head.layer_norm",
                "lm_head.bias",
                "lm_head.decoder.weight",
                h,
                Activation::Gelu,
            ),
            Family::Albert => (
                "predictions.dense",
                "predictions.LayerNorm",
                "predictions.bias",
                "predictions.decoder.weight",
                e,
                act,
            ),
            Family::Electra => (
                "generator_predictions.dense",
                "generator_predictions.LayerNorm",
                "generator_lm_head.bias",
                "generator_lm_head.weight",
                e,
                Activation::Gelu,
            ),
            Family::DistilBert => (
                "vocab_transform",
                "vocab_layer_norm",
                "vocab_projector.bias",
                "vocab_projector.weight",
                h,
                act,
            ),
        };
        if width != e {
            bail!("masked-LM head of width {width} cannot tie to embeddings of width {e}");
        }
        let own_weight = match c.tie_word_embeddings {
            true => None,
            false => Some(p.linear_weight(decoder, c.vocab_size, e, init)?),
        };
        let bias = Some(p.get(bias, &[c.vocab_size], Init::Zeros)?);
        let decoder = match own_weight {
            None => Linear::tied(p, &embeddings.words.weight, bias)?,
            Some(weight) => Linear::with_weight(weight, bias),
        };
        Ok(HeadLayers::MaskedLm {
            dense: linear(dense, h, width)?,
            act,
            norm: LayerNorm::new(&p.sub(norm), width, true, c.layer_norm_eps)?,
            decoder,
        })
    }

    /// The head's output for `input_ids` (with `attention_mask` and `token_type_ids` where given),
    /// every layer's output and, if asked, attention probabilities. In training (`ctx`), dropout
    /// as the checkpoint's config sets it: embeddings, attention probabilities, sub-layer outputs,
    /// before the head.
    pub fn forward(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        if inputs.decoder_input_ids.is_some() {
            bail!("`decoder_input_ids` given, but this model has no decoder");
        }
        self.run(inputs, ctx)
    }

    fn run(&self, inputs: &ModelInputs, ctx: &mut Ctx) -> Result<ModelOutput> {
        let ids = &inputs.input_ids;
        let attention_mask = inputs.attention_mask.as_ref();
        let token_types = inputs.token_type_ids.as_ref();
        let want_attentions = inputs.output_attentions;
        let (b, t) = ids.dims2()?;
        if t > self.config.max_position_embeddings {
            bail!(
                "{t} tokens do not fit the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        check_ids(ids, "input_ids", self.config.vocab_size, "vocab_size")?;
        if let Some(types) = token_types {
            if types.dims() != ids.dims() {
                bail!(
                    "token_type_ids {:?} and input_ids {:?} differ in shape",
                    types.dims(),
                    ids.dims()
                );
            }
            let segments = self
                .embeddings
                .segments
                .as_ref()
                .map_or(0, |s| s.weight.dim(0).unwrap_or(0));
            check_ids(types, "token_type_ids", segments, "type_vocab_size")?;
        }
        if let Some(m) = attention_mask {
            if m.dims() != ids.dims() {
                bail!(
                    "attention_mask {:?} and input_ids {:?} differ in shape",
                    m.dims(),
                    ids.dims()
                );
            }
        }
        let mask = AttentionMask {
            key_padding: attention_mask.map(|m| m.to_dtype(DType::U8)).transpose()?,
            ..Default::default()
        };
        let mut x = self.embeddings.forward(ids, token_types, ctx)?;
        let mut trace = Trace::starting(&x);
        for &layer in &self.schedule {
            if ctx.recompute.is_some() && !want_attentions {
                // Gradient checkpointing: the layer runs again in the backward pass.
                let (layer, mask) = (self.layers[layer].clone(), mask.clone());
                x = lingo_nn::recompute::checkpointed(&x, ctx, move |x, ctx| {
                    Ok(layer.forward(x, &mask, false, ctx)?.0)
                })?;
            } else {
                let (y, w) = self.layers[layer].forward(&x, &mask, want_attentions, ctx)?;
                x = y;
                trace.self_attentions.extend(w);
            }
            trace.states.push(x.clone());
        }
        let tokens = match &inputs.predict_positions {
            None => x.clone(),
            Some(positions) => {
                let lm = matches!(
                    self.head_layers,
                    HeadLayers::MaskedLm { .. } | HeadLayers::PreTraining { .. }
                );
                if !lm {
                    bail!(
                        "`predict_positions` is for a masked-LM head, not {:?}",
                        self.head
                    );
                }
                let h = x.dim(2)?;
                x.reshape((b * t, h))?.index_select(positions, 0)?
            }
        };
        let mut output = ModelOutput::new(self.apply_head(&self.head_layers, &tokens, ctx)?, trace);
        if let HeadLayers::PreTraining { pair, dropout, .. } = &self.head_layers {
            let pooled = self.pooled(&x)?.ok_or_else(|| {
                candle_core::Error::Msg("the pre-training head needs the pooler".into())
            })?;
            output.pair_logits = Some(pair.forward(&dropout.forward(&pooled, ctx)?)?);
        }
        Ok(output)
    }

    /// The output of `head` (the per-token part, for a pre-training head) over the last states.
    fn apply_head(&self, head: &HeadLayers, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(match head {
            HeadLayers::Base => x.clone(),
            HeadLayers::MaskedLm {
                dense,
                act,
                norm,
                decoder,
            } => decoder.forward(&norm.forward(&act.apply(&dense.forward(x)?)?)?)?,
            HeadLayers::Sequence {
                pre,
                out,
                dropout,
                drop_first,
            } => {
                let mut first = x.narrow(1, 0, 1)?.squeeze(1)?;
                if *drop_first {
                    first = dropout.forward(&first, ctx)?;
                }
                let features = match (&self.pooler, pre) {
                    (_, Some((dense, act))) => act.apply(&dense.forward(&first)?)?,
                    (Some(pooler), None) => pooler.forward(&first)?.tanh()?,
                    (None, None) => bail!("sequence classification needs the pooler's weights"),
                };
                out.forward(&dropout.forward(&features, ctx)?)?
            }
            HeadLayers::Token(classifier, dropout) => {
                classifier.forward(&dropout.forward(x, ctx)?)?
            }
            HeadLayers::Span(qa, dropout) => qa.forward(&dropout.forward(x, ctx)?)?,
            HeadLayers::ReplacedToken { dense, act, out } => out
                .forward(&act.apply(&dense.forward(x)?)?)?
                .squeeze(D::Minus1)?,
            HeadLayers::PreTraining { lm, .. } => self.apply_head(lm, x, ctx)?,
        })
    }

    /// The model cut for pipeline stage `stage` of `stages` (GPipe): the embeddings on the first,
    /// an even share of the layers on each, the head and its loss on the last. `store` is the one
    /// the model was built in. ALBERT, whose layers share their weights across depths, cannot be
    /// cut.
    pub fn stage<'a>(
        &'a self,
        store: &lingo_nn::ParamStore,
        stage: usize,
        stages: usize,
    ) -> Result<BertStage<'a>> {
        if self.family == Family::Albert {
            bail!("ALBERT's layers share their weights across depths: it cannot be cut into pipeline stages");
        }
        if stage >= stages {
            bail!("stage {stage} of {stages}");
        }
        let layers = split_layers(self.schedule.len(), stages)[stage].clone();
        let (first, last) = (stage == 0, stage + 1 == stages);
        let lm = matches!(
            self.head_layers,
            HeadLayers::MaskedLm { .. } | HeadLayers::PreTraining { .. }
        );
        let tied = (lm && self.config.tie_word_embeddings)
            .then(|| {
                let words = self.embeddings.words.weight.dims().to_vec();
                let name = store
                    .named()
                    .into_iter()
                    .map(|(n, _)| n)
                    .find(|n| n.ends_with("embeddings.word_embeddings.weight"))?;
                Some((name, words))
            })
            .flatten();
        let mine = |name: &str| {
            let layer = [".encoder.layer.", ".transformer.layer."]
                .iter()
                .find_map(|m| {
                    let (_, rest) = name.split_once(m)?;
                    rest.split('.').next()?.parse::<usize>().ok()
                });
            match layer {
                Some(i) => layers.contains(&i),
                None if tied.as_ref().is_some_and(|(n, _)| n == name) => first || last,
                None if name.contains("embedding") => first,
                None => last,
            }
        };
        let params = store.named().into_iter().filter(|(n, _)| mine(n)).collect();
        Ok(BertStage {
            model: self,
            layers,
            first,
            last,
            params,
            tied,
        })
    }

    /// Rank `rank` of `world`'s share of every layer, for tensor-parallel inference (see
    /// [`lingo_nn::tensor_parallel`]): its attention heads and feed-forward neurons, the partial
    /// outputs summed over the ranks by `reduce`. Embeddings, norms and the head stay whole.
    pub fn tensor_parallel(
        &mut self,
        rank: usize,
        world: usize,
        reduce: &lingo_nn::tensor_parallel::Reduce,
    ) -> Result<()> {
        for layer in &mut self.layers {
            let d_ff = layer.up.dims()?.0;
            let (up, down) = lingo_nn::tensor_parallel::split_pair(
                &layer.up,
                &layer.down,
                d_ff,
                rank,
                world,
                reduce,
            )?;
            layer.attention = layer.attention.tensor_parallel(rank, world, reduce)?;
            (layer.up, layer.down) = (up, down);
        }
        Ok(())
    }

    /// The pooled `[CLS]` representation (`tanh(W h₀ + b)`), for models that have a pooler.
    pub fn pooled(&self, last_hidden: &Tensor) -> Result<Option<Tensor>> {
        match &self.pooler {
            Some(p) => Ok(Some(
                p.forward(&last_hidden.narrow(1, 0, 1)?.squeeze(1)?)?
                    .tanh()?,
            )),
            None => Ok(None),
        }
    }

    /// Loads a BERT-family folder with `options`: the head `architectures` names or another
    /// (newly initialised from `options.seed` with the config's `initializer_range`, as
    /// `transformers` does), new labels, a dropout override. The returned config names the
    /// architecture and labels the model now has.
    pub fn load(
        checkpoint: &Checkpoint,
        options: &LoadOptions,
    ) -> std::result::Result<Loaded, LoadError> {
        let model_type = checkpoint.model_type()?;
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            checkpoint.invalid_config(format!(
                "model_type `{model_type}` is not in the BERT family"
            ))
        })?;
        let arch = checkpoint.architecture().unwrap_or("BertModel");
        let stored_head = Head::from_architecture(arch).ok_or_else(|| {
            checkpoint.invalid_config(format!("architecture `{arch}` is not supported"))
        })?;
        let head = options.head.unwrap_or(stored_head);
        let mut config_json = checkpoint.config.clone();
        if head != stored_head {
            config_json["architectures"] = serde_json::json!([family.architecture(head)]);
        }
        if let Some(labels) = &options.labels {
            if labels.is_empty() {
                return Err(
                    checkpoint.invalid_config("a classification head needs at least one label")
                );
            }
            let stored = checkpoint.config["id2label"]
                .as_object()
                .map_or(0, |m| m.len());
            let has_classifier = matches!(
                head,
                Head::SequenceClassification | Head::TokenClassification
            );
            if head == stored_head && has_classifier && stored > 0 && stored != labels.len() {
                return Err(checkpoint.invalid_config(format!(
                    "field `id2label`: the checkpoint's classifier has {stored} labels, the data has {} ({}); fine-tune from the base model to get a new head",
                    labels.len(),
                    labels.join(", ")
                )));
            }
            set_labels(&mut config_json, labels);
        }
        if let Some(p) = options.dropout {
            // Each family's own names (serde reads the others as aliases of the same fields).
            let keys: &[&str] = match family {
                Family::DistilBert => &[
                    "dropout",
                    "attention_dropout",
                    "seq_classif_dropout",
                    "qa_dropout",
                ],
                Family::Albert => &[
                    "hidden_dropout_prob",
                    "attention_probs_dropout_prob",
                    "classifier_dropout_prob",
                ],
                _ => &[
                    "hidden_dropout_prob",
                    "attention_probs_dropout_prob",
                    "classifier_dropout",
                ],
            };
            for key in keys {
                config_json[*key] = p.into();
            }
        }
        let config: BertConfig = checkpoint.parse(config_json.clone())?;
        let prefix = family.prefix();
        // transformers builds the pooler for the bare model and for BERT's and ALBERT's
        // classifiers (which read it); the other heads leave it out, so a checkpoint's pooler is
        // reported unused there.
        let with_pooler = match head {
            Head::Base => [
                format!("{prefix}.pooler.dense.weight"),
                "pooler.dense.weight".into(),
                format!("{prefix}.pooler.weight"),
                "pooler.weight".into(),
            ]
            .iter()
            .any(|n| checkpoint.has(n)),
            Head::SequenceClassification | Head::PreTraining => {
                matches!(family, Family::Bert | Family::Albert)
            }
            _ => false,
        };
        let base = format!("{prefix}.");
        let pooler = format!("{prefix}.pooler");
        let new_head = head != stored_head;
        let may_be_new =
            |name: &str| new_head && (!name.starts_with(&base) || name.starts_with(&pooler));
        // A dense checkpoint fine-tuned with Linformer attention starts its projections afresh.
        let mut allow_missing = options.allow_missing.clone();
        if config.attention == AttentionKind::Linformer {
            allow_missing.push(".linformer.".into());
        }
        let lookup = Lookup {
            prefixes: &[&base],
            may_be_new: &may_be_new,
            seed: options.seed,
            allow_missing: &allow_missing,
            ..Lookup::default()
        };
        let built = checkpoint.build(&lookup, |p| {
            BertModel::new(family, head, config, with_pooler, p)
        })?;
        Ok(Loaded {
            model: AutoModel::Encoder(built.model),
            store: built.store,
            // A new head saves in its own architecture's layout (base under `bert.`), not the
            // checkpoint's.
            names: if new_head {
                StoredNames::default()
            } else {
                built.names
            },
            config: config_json,
            report: built.report,
        })
    }
}

/// Whether `model_type` names a member of the BERT family.
/// One pipeline stage of a [`BertModel`] (see [`BertModel::stage`]). Its inputs are `[ids,
/// attention_mask, labels]`; the last stage's loss is the head's cross-entropy against `labels`
/// (`[batch, time]` for masked-LM and token heads, [`crate::contracts::IGNORE`] where there is nothing to
/// predict; `[batch]` for sequence classification).
pub struct BertStage<'a> {
    model: &'a BertModel,
    layers: std::ops::Range<usize>,
    first: bool,
    last: bool,
    params: Vec<(String, candle_core::Var)>,
    tied: Option<(String, Vec<usize>)>,
}

impl PipelineStage for BertStage<'_> {
    fn params(&self) -> Vec<(String, candle_core::Var)> {
        self.params.clone()
    }

    fn forward(&self, inputs: &[Tensor], x: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let [ids, attention_mask, labels] = inputs else {
            bail!("an encoder stage takes [ids, attention_mask, labels]");
        };
        let m = self.model;
        let mut x = match (self.first, x) {
            (true, _) => {
                check_ids(ids, "input_ids", m.config.vocab_size, "vocab_size")?;
                m.embeddings.forward(ids, None, ctx)?
            }
            (false, Some(x)) => x.clone(),
            (false, None) => {
                bail!("an encoder stage after the first needs the previous one's activations")
            }
        };
        let mask = AttentionMask {
            key_padding: Some(attention_mask.to_dtype(DType::U8)?),
            ..Default::default()
        };
        for depth in self.layers.clone() {
            x = m.layers[m.schedule[depth]]
                .forward(&x, &mask, false, ctx)?
                .0;
        }
        if !self.last {
            return Ok(x);
        }
        let options = lingo_kernels::CrossEntropy {
            ignore_index: Some(crate::contracts::IGNORE),
            ..Default::default()
        };
        if !matches!(m.head_layers, HeadLayers::MaskedLm { .. }) {
            let logits = m.apply_head(&m.head_layers, &x, ctx)?;
            return lingo_kernels::cross_entropy(&logits, labels, options);
        }
        // The vocabulary projection only where a label is, as the whole model's
        // `predict_positions` does: the same mean, without the other ~85% of a masked-LM batch.
        let (positions, targets) = crate::contracts::labelled_positions(labels)?;
        let (b, t, h) = x.dims3()?;
        let tokens = x.reshape((b * t, h))?.index_select(&positions, 0)?;
        let logits = m.apply_head(&m.head_layers, &tokens, ctx)?;
        lingo_kernels::cross_entropy(&logits, &targets, options)
    }

    fn tied(&self) -> Vec<(String, Vec<usize>)> {
        self.tied.clone().into_iter().collect()
    }
}

pub fn is_bert_family(model_type: &str) -> bool {
    Family::from_model_type(model_type).is_some()
}

/// Writes `labels` into a `config.json` as transformers keeps them: `id2label`, `label2id`, and
/// `problem_type: regression` for a single label.
pub fn set_labels(config: &mut serde_json::Value, labels: &[String]) {
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone().into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i.into()))
        .collect();
    config["id2label"] = id2label.into();
    config["label2id"] = label2id.into();
    if labels.len() == 1 {
        config["problem_type"] = "regression".into();
    }
}
