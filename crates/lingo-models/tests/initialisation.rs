//! A model built from scratch starts where its `transformers` class starts: the standard deviation
//! of every fresh weight follows the family's initialisation rule. T5's rule matters most: its tied
//! output layer scales the decoder output by `d_model^-0.5`, so embeddings initialised like BERT's
//! (0.02) would start every logit near zero and a from-scratch model would not learn.

use lingo_models::auto::{AutoModel, LoadOptions};
use serde_json::json;
use std::path::Path;

fn std_of(loaded: &lingo_models::auto::Loaded, name: &str) -> f32 {
    let var = loaded
        .store
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    let values: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt()
}

#[test]
fn a_fresh_t5_is_initialised_as_transformers_does() {
    let (d_model, d_kv, heads, d_ff, factor) = (64usize, 16usize, 4usize, 128usize, 2.0f32);
    let config = json!({
        "model_type": "t5", "vocab_size": 1000, "d_model": d_model, "d_kv": d_kv,
        "num_heads": heads, "d_ff": d_ff, "num_layers": 1, "num_decoder_layers": 1,
        "initializer_factor": factor, "tie_word_embeddings": true, "decoder_start_token_id": 0,
    });
    let loaded = AutoModel::init(Path::new("t5-fresh"), config, &LoadOptions::default()).unwrap();
    let fan_in = |n: usize| factor / (n as f32).sqrt();
    let attention = "encoder.block.0.layer.0.SelfAttention";
    for (name, expected) in [
        ("shared.weight".to_string(), factor),
        (format!("{attention}.q.weight"), fan_in(d_model * d_kv)),
        (format!("{attention}.k.weight"), fan_in(d_model)),
        (format!("{attention}.v.weight"), fan_in(d_model)),
        (format!("{attention}.o.weight"), fan_in(heads * d_kv)),
        (
            format!("{attention}.relative_attention_bias.weight"),
            fan_in(d_model),
        ),
        (
            "decoder.block.0.layer.1.EncDecAttention.q.weight".to_string(),
            fan_in(d_model * d_kv),
        ),
        (
            "encoder.block.0.layer.1.DenseReluDense.wi.weight".to_string(),
            fan_in(d_model),
        ),
        (
            "decoder.block.0.layer.2.DenseReluDense.wo.weight".to_string(),
            fan_in(d_ff),
        ),
    ] {
        let got = std_of(&loaded, &name);
        // 128 values (the relative bias) at the least: a 20% band is > 3 standard errors.
        assert!(
            (got / expected - 1.0).abs() < 0.2,
            "{name}: std {got}, transformers initialises it with {expected}"
        );
    }
}
