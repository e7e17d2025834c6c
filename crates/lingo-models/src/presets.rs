//! Named model sizes for pre-training from scratch, so a user picks `bert-mini` instead of writing
//! a `config.json`. Each preset is the `config.json` `transformers` would write for that
//! architecture (the BERT sizes are those of Turc et al. 2019's compact BERTs, `bert-small` their
//! L-4/H-512; `electra-small` is ELECTRA-Small's discriminator); the vocabulary size and special
//! ids come from the tokenizer.

use serde_json::{json, Value};

/// The special-token ids a config records.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecialIds {
    pub pad: Option<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

/// The tokenizer scheme a family is pre-trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerScheme {
    WordPiece,
    ByteBpeGpt2,
    ByteBpeRoberta,
    Unigram,
}

/// A preset: its name, the model type, and its shape.
pub struct Preset {
    pub name: &'static str,
    pub model_type: &'static str,
    /// layers, hidden width, heads, feed-forward width
    pub shape: (usize, usize, usize, usize),
    /// ALBERT / ELECTRA: the factorised embedding width.
    pub embedding_size: Option<usize>,
}

pub const PRESETS: &[Preset] = &[
    preset("bert-tiny", "bert", (2, 128, 2, 512), None),
    preset("bert-mini", "bert", (4, 256, 4, 1024), None),
    preset("bert-small", "bert", (4, 512, 8, 2048), None),
    preset("bert-medium", "bert", (8, 512, 8, 2048), None),
    preset("roberta-mini", "roberta", (4, 256, 4, 1024), None),
    preset("albert-mini", "albert", (4, 256, 4, 1024), Some(128)),
    preset("electra-small", "electra", (12, 256, 4, 1024), Some(128)),
    preset("gpt2-tiny", "gpt2", (4, 256, 4, 1024), None),
    preset("gpt2-mini", "gpt2", (6, 384, 6, 1536), None),
    preset("t5-tiny", "t5", (4, 256, 4, 1024), None),
    preset("t5-mini", "t5", (6, 384, 6, 1536), None),
];

const fn preset(
    name: &'static str,
    model_type: &'static str,
    shape: (usize, usize, usize, usize),
    embedding_size: Option<usize>,
) -> Preset {
    Preset {
        name,
        model_type,
        shape,
        embedding_size,
    }
}

/// The preset called `name`.
pub fn find(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        format!(
            "no model preset `{name}` (presets: {})",
            PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

impl Preset {
    /// The tokenizer scheme the family's checkpoints use.
    pub fn tokenizer_scheme(&self) -> TokenizerScheme {
        match self.model_type {
            "gpt2" => TokenizerScheme::ByteBpeGpt2,
            "roberta" => TokenizerScheme::ByteBpeRoberta,
            "t5" => TokenizerScheme::Unigram,
            _ => TokenizerScheme::WordPiece,
        }
    }

    /// The `config.json` of this size for a vocabulary of `vocab_size` and inputs of at most
    /// `max_length` tokens, with `architecture` (e.g. `BertForPreTraining`) and the dropout
    /// the family's checkpoints use (0.1).
    pub fn config(
        &self,
        architecture: &str,
        vocab_size: usize,
        max_length: usize,
        ids: SpecialIds,
    ) -> Value {
        let (layers, hidden, heads, ff) = self.shape;
        let mut c = match self.model_type {
            "gpt2" => json!({
                "model_type": "gpt2",
                "n_layer": layers, "n_embd": hidden, "n_head": heads, "n_inner": ff,
                "n_positions": max_length, "n_ctx": max_length,
                "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1,
                "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
                "tie_word_embeddings": true,
            }),
            "t5" => json!({
                "model_type": "t5",
                "num_layers": layers, "num_decoder_layers": layers, "d_model": hidden,
                "num_heads": heads, "d_kv": hidden / heads, "d_ff": ff,
                "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
                "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
                "feed_forward_proj": "relu", "tie_word_embeddings": true,
                "is_encoder_decoder": true, "decoder_start_token_id": ids.pad.unwrap_or(0),
            }),
            family => {
                // RoBERTa's positions start after the padding id, so it needs two more.
                let positions = if family == "roberta" {
                    max_length + 2
                } else {
                    max_length
                };
                let mut c = json!({
                    "model_type": family,
                    "num_hidden_layers": layers, "hidden_size": hidden,
                    "num_attention_heads": heads, "intermediate_size": ff,
                    "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                    "attention_probs_dropout_prob": 0.1,
                    "max_position_embeddings": positions,
                    "type_vocab_size": if family == "roberta" { 1 } else { 2 },
                    "layer_norm_eps": if family == "roberta" { 1e-5 } else { 1e-12 },
                    "initializer_range": 0.02,
                });
                if let Some(e) = self.embedding_size {
                    c["embedding_size"] = e.into();
                }
                if family == "albert" {
                    c["num_hidden_groups"] = 1.into();
                    c["inner_group_num"] = 1.into();
                    c["hidden_act"] = "gelu_new".into();
                    c["classifier_dropout_prob"] = 0.1.into();
                }
                c
            }
        };
        c["architectures"] = json!([architecture]);
        c["vocab_size"] = vocab_size.into();
        for (key, id) in [
            ("pad_token_id", ids.pad),
            ("bos_token_id", ids.bos),
            ("eos_token_id", ids.eos),
        ] {
            if let Some(id) = id {
                c[key] = id.into();
            }
        }
        c
    }
}
