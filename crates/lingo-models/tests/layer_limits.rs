//! A config.json asking for an absurd number of layers or positions is refused before anything is
//! built, for every family — also when a new model is initialised from it (no weights to run out
//! of first).

use lingo_models::auto::{AutoModel, LoadOptions};
use std::path::Path;

#[test]
fn every_family_refuses_absurd_layer_counts_before_building() {
    let huge = 1u64 << 40;
    let configs = [
        (
            "num_hidden_layers",
            serde_json::json!({"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 8, "num_hidden_layers": huge}),
        ),
        (
            "n_layer",
            serde_json::json!({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_head": 2, "n_positions": 8, "n_layer": huge}),
        ),
        (
            "num_layers",
            serde_json::json!({"model_type": "t5", "vocab_size": 10, "d_model": 8, "d_kv": 4, "d_ff": 8, "num_heads": 2, "num_layers": huge}),
        ),
        (
            "num_decoder_layers",
            serde_json::json!({"model_type": "t5", "vocab_size": 10, "d_model": 8, "d_kv": 4, "d_ff": 8, "num_heads": 2, "num_layers": 1, "num_decoder_layers": huge}),
        ),
        (
            "encoder_layers",
            serde_json::json!({"model_type": "bart", "vocab_size": 10, "d_model": 8, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8, "encoder_layers": huge, "decoder_layers": 1, "max_position_embeddings": 8}),
        ),
        (
            "decoder_layers",
            serde_json::json!({"model_type": "marian", "vocab_size": 10, "d_model": 8, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8, "encoder_layers": 1, "decoder_layers": huge, "max_position_embeddings": 8}),
        ),
    ];
    for (field, config) in configs {
        let err = match AutoModel::init(Path::new("huge"), config.clone(), &LoadOptions::default())
        {
            Ok(_) => panic!("{config} was built"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(field) && err.contains("layers"),
            "{config}: {err}"
        );
    }
}

/// Marian's sinusoidal positions are computed from `max_position_embeddings`, not read: a fuzzed
/// config asked for 2^33 of them (a 550 GB table).
#[test]
fn absurd_position_tables_are_refused_before_allocating() {
    let huge = 1u64 << 33;
    let configs = [
        serde_json::json!({"model_type": "marian", "vocab_size": 10, "d_model": 16, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8, "encoder_layers": 1, "decoder_layers": 1, "max_position_embeddings": huge}),
        serde_json::json!({"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 8, "num_hidden_layers": 1, "max_position_embeddings": huge}),
        serde_json::json!({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_head": 2, "n_positions": huge, "n_layer": 1}),
    ];
    for config in configs {
        let err = match AutoModel::init(Path::new("huge"), config.clone(), &LoadOptions::default())
        {
            Ok(_) => panic!("{config} was built"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("positions"), "{config}: {err}");
    }
}
