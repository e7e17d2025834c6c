//! Greedy generation with the KV cache, with and without a repetition penalty, gives the tokens
//! `transformers`' `generate` gives for the same GPT-2 checkpoint (tools/make_hf_fixtures.py).

use candle_core::Device;
use lingo_generate::{generate, SamplingConfig};
use lingo_models::hf::Checkpoint;
use lingo_models::Gpt;
use lingo_nn::LingoRng;
use std::path::PathBuf;

#[test]
fn greedy_generation_matches_transformers() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lingo-models/tests/fixtures/hf/gpt2");
    let checkpoint = Checkpoint::open(&dir, &Device::Cpu).unwrap();
    let (model, _, _) = Gpt::load_gpt2(&checkpoint, &Device::Cpu).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generate.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
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
