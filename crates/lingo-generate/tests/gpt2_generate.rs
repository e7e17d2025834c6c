//! Greedy generation with the KV cache (with and without a repetition penalty) and beam search give
//! the tokens `transformers`' `generate` gives for the same GPT-2 checkpoint
//! (tools/make_hf_fixtures.py).

use lingo_generate::{beam_search_lm, generate, BeamConfig, SamplingConfig};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::Gpt;
use lingo_nn::LingoRng;
use std::path::PathBuf;

/// The tiny GPT-2 checkpoint and what `transformers` generated with it.
fn fixture() -> (Gpt, serde_json::Value) {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lingo-models/tests/fixtures/hf/gpt2");
    let AutoModel::Gpt(model) = AutoModel::load(&dir, &LoadOptions::default())
        .unwrap()
        .model
    else {
        panic!("gpt2 is a GPT");
    };
    let generated = std::fs::read_to_string(dir.join("generate.json")).unwrap();
    (model, serde_json::from_str(&generated).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    let values = v.as_array().unwrap().iter();
    values.map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_generation_matches_transformers() {
    let (model, expected) = fixture();
    let prompt = ids(&expected["prompt"]);
    for (key, penalty) in [("greedy", 1.0), ("penalty_1.5", 1.5)] {
        let cfg = SamplingConfig {
            repetition_penalty: penalty,
            ..SamplingConfig::greedy(20)
        };
        let got = generate(&model, &prompt, &cfg, &mut LingoRng::new(0), |_| {}).unwrap();
        assert_eq!(got, ids(&expected[key]), "{key}");
    }
}

/// Beam search over the KV cache picks transformers' `generate(num_beams=3)` continuation, both when
/// no beam reaches EOS (12 tokens) and when EOS is the model's favourite next token.
#[test]
fn gpt2_beam_search_matches_transformers() {
    let (model, expected) = fixture();
    let prompt = ids(&expected["prompt"]);
    let cfg = BeamConfig {
        beam_size: 3,
        max_length: 12,
        length_penalty: 1.0,
        early_stopping: true,
        ..Default::default()
    };
    for (key, eos) in [("beam3", 98), ("beam3_eos78", 78)] {
        let best = beam_search_lm(&model, &prompt, Some(eos), &cfg).unwrap();
        assert_eq!(best.len(), 3, "{key}: three finished hypotheses");
        assert_eq!(best[0].tokens, ids(&expected[key]), "{key}");
        assert!(best.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // A prompt of one token (nothing cached before the first step) works too.
    let one = beam_search_lm(&model, &prompt[..1], None, &cfg).unwrap();
    assert_eq!(one[0].tokens.len(), 12);
    // Asking for more positions than the model has is an error, not a panic.
    let long = BeamConfig {
        max_length: 100,
        ..cfg
    };
    assert!(beam_search_lm(&model, &prompt, None, &long).is_err());
}
