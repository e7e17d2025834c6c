//! Greedy and beam-search decoding of Hugging Face encoder–decoders (T5, BART, Marian) give the tokens
//! `transformers`' `generate` gives (tools/make_hf_fixtures.py, generate.json).

use candle_core::{Device, Tensor};
use lingo_generate::{beam_search, BeamConfig};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::Seq2SeqLm;
use std::path::PathBuf;

fn rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

#[test]
fn encoder_decoders_decode_like_transformers() {
    for name in ["t5", "t5-v1_1", "bart", "marian"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../lingo-models/tests/fixtures/hf")
            .join(name);
        let loaded = AutoModel::load(&dir, &LoadOptions::default()).unwrap();
        let model: &dyn Seq2SeqLm = match &loaded.model {
            AutoModel::T5(m) => m,
            AutoModel::Bart(m) => m,
            _ => panic!("{name}: not an encoder-decoder"),
        };
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("generate.json")).unwrap())
                .unwrap();
        let ids = rows(&expected["input_ids"]);
        let lengths: Vec<usize> = rows(&expected["attention_mask"])
            .iter()
            .map(|m| m.iter().sum::<u32>() as usize)
            .collect();
        let src = Tensor::from_vec(ids.concat(), (ids.len(), ids[0].len()), &Device::Cpu).unwrap();
        let eos = expected["eos"].as_u64().unwrap() as u32;
        let constrained =
            BeamConfig::from_generation_config(|key| expected["constraints"].get(key).cloned())
                .unwrap();
        assert_eq!(constrained.min_length, 5);
        for (key, beams) in [("greedy", 1), ("beam3", 3), ("constrained", 3)] {
            let cfg = match key {
                "constrained" => constrained.clone(),
                _ => BeamConfig {
                    beam_size: beams,
                    max_length: 12,
                    length_penalty: 1.0,
                    early_stopping: true,
                    ..Default::default()
                },
            };
            let got = beam_search(model, &src, &lengths, &cfg).unwrap();
            for (row, want) in rows(&expected[key]).iter().enumerate() {
                // transformers pads a finished row after its end token; Lingo's output stops there.
                let end = want
                    .iter()
                    .position(|&t| t == eos)
                    .map_or(want.len(), |i| i + 1);
                assert_eq!(got[row][0].tokens, want[..end], "{name} {key} row {row}");
            }
        }
    }
}
