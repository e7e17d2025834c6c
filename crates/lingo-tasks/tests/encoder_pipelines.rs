//! The encoder pipelines against `transformers`' pipelines on tiny random-weight BERTs with a WordPiece
//! tokenizer (tools/make_hf_fixtures.py writes both and the reference outputs, pipelines.json).

use lingo_tasks::encoder::{EncoderPipeline, Pooling};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> (EncoderPipeline, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name);
    let pipeline = EncoderPipeline::load(&dir).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let text = std::fs::read_to_string(dir.join("pipelines.json")).unwrap();
    (pipeline, serde_json::from_str(&text).unwrap())
}

fn close(a: f32, b: &Value) -> bool {
    (a as f64 - b.as_f64().unwrap()).abs() < 1e-4
}

#[test]
fn fill_mask_matches() {
    let (p, expected) = fixture("bert-mlm");
    for (input, want) in expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["outputs"].as_array().unwrap())
    {
        let got = p.fill_mask(input.as_str().unwrap(), 5).unwrap();
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.token as u64, w["token"].as_u64().unwrap(), "{input}");
            assert!(
                close(g.score, &w["score"]),
                "{input}: {} vs {}",
                g.score,
                w["score"]
            );
            assert_eq!(g.token_str, w["token_str"].as_str().unwrap());
            assert_eq!(g.sequence, w["sequence"].as_str().unwrap());
        }
    }
}

#[test]
fn classification_matches() {
    let (p, expected) = fixture("bert-cls");
    for (input, want) in expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["outputs"].as_array().unwrap())
    {
        // transformers 5 nests a single input's label list one level deeper.
        let mut want = want;
        while want[0].is_array() {
            want = &want[0];
        }
        let got = p.classify(input.as_str().unwrap()).unwrap();
        assert_eq!(got.len(), want.as_array().unwrap().len());
        for (g, w) in got.iter().zip(want.as_array().unwrap()) {
            assert_eq!(g.label, w["label"].as_str().unwrap());
            assert!(
                close(g.score, &w["score"]),
                "{input}: {} {} vs {}",
                g.label,
                g.score,
                w["score"]
            );
        }
    }
}

/// A padded batch (a server groups concurrent requests into one) classifies each text as it is
/// classified alone.
#[test]
fn batched_classification_matches_one_at_a_time() {
    for name in ["bert-cls"] {
        let (p, expected) = fixture(name);
        let mut inputs: Vec<&str> = (expected["inputs"].as_array().unwrap().iter())
            .map(|v| v.as_str().unwrap())
            .collect();
        inputs.push("a");
        let batched = p.classify_batch(&inputs).unwrap();
        assert_eq!(batched.len(), inputs.len());
        for (text, got) in inputs.iter().zip(&batched) {
            let alone = p.classify(text).unwrap();
            for (g, a) in got.iter().zip(&alone) {
                assert_eq!(g.label, a.label, "{name}: {text}");
                assert!((g.score - a.score).abs() < 1e-5, "{name}: {text}");
            }
        }
    }
}

#[test]
fn entities_match() {
    let (p, expected) = fixture("bert-ner");
    for (input, want) in expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["outputs"].as_array().unwrap())
    {
        let got = p.ner(input.as_str().unwrap()).unwrap();
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{input}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.entity_group, w["entity_group"].as_str().unwrap());
            assert_eq!(g.word, w["word"].as_str().unwrap());
            assert_eq!(
                (g.start as u64, g.end as u64),
                (w["start"].as_u64().unwrap(), w["end"].as_u64().unwrap())
            );
            assert!(
                close(g.score, &w["score"]),
                "{input}: {} vs {}",
                g.score,
                w["score"]
            );
        }
    }
}

#[test]
fn answers_match() {
    let (p, expected) = fixture("bert-qa");
    for (input, want) in expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["outputs"].as_array().unwrap())
    {
        let got = p
            .answer(
                input["question"].as_str().unwrap(),
                input["context"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(got.answer, want["answer"].as_str().unwrap());
        assert_eq!(
            (got.start as u64, got.end as u64),
            (
                want["start"].as_u64().unwrap(),
                want["end"].as_u64().unwrap()
            )
        );
        assert!(
            close(got.score, &want["score"]),
            "{} vs {}",
            got.score,
            want["score"]
        );
    }
}

#[test]
fn embeddings_match() {
    let (p, expected) = fixture("bert");
    let inputs: Vec<&str> = expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (pooling, key) in [
        (Pooling::Mean, "mean"),
        (Pooling::Cls, "cls"),
        (Pooling::Max, "max"),
    ] {
        let got = p.embed(&inputs, pooling).unwrap();
        let want = expected["outputs"][key].as_array().unwrap();
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(w.as_array().unwrap()) {
                assert!(close(*a, b), "{key}: {a} vs {b}");
            }
        }
    }
}

/// all-MiniLM-L6-v2's tokenizer.json pads every text to 128 tokens and truncates there; as in
/// `transformers`, that setting must change neither what a pipeline computes nor the saved file.
#[test]
fn a_tokenizer_files_padding_and_truncation_are_not_applied() {
    let src =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lingo-models/tests/fixtures/hf/bert");
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let path = tmp.path().join("tokenizer.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 24}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 6,
        "strategy": "LongestFirst", "stride": 0});
    std::fs::write(&path, json.to_string()).unwrap();
    let padded = EncoderPipeline::load(tmp.path()).unwrap();
    let (plain, expected) = fixture("bert");
    let text = expected["inputs"][0].as_str().unwrap();
    assert_eq!(
        padded.embed(&[text], Pooling::Mean).unwrap(),
        plain.embed(&[text], Pooling::Mean).unwrap()
    );
    let tokenizer = lingo_data::Tokenizer::load(&path).unwrap();
    assert!(tokenizer.encode_input(text).unwrap().ids.len() > 6);
    tokenizer.save(&tmp.path().join("saved.json")).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("saved.json")).unwrap())
            .unwrap();
    assert_eq!(saved["padding"], json["padding"]);
    assert_eq!(saved["truncation"], json["truncation"]);
}

#[test]
fn wrong_head_and_missing_mask_are_clear_errors() {
    let (p, _) = fixture("bert-cls");
    let err = p.fill_mask("the [MASK] sat", 5).unwrap_err().to_string();
    assert!(
        err.contains("fill-mask") && err.contains("MaskedLm"),
        "{err}"
    );
    let (p, _) = fixture("bert-mlm");
    let err = p.fill_mask("no mask here", 5).unwrap_err().to_string();
    assert!(err.contains("mask"), "{err}");
    let long = "word ".repeat(100);
    let err = p
        .fill_mask(&format!("{long} [MASK]"), 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 64"), "{err}");
}

/// A Hugging Face GPT-2 folder loads as a language model (weights, tokenizer.json, eos from
/// generation_config.json) and generates; generation stops at the end-of-text token.
#[test]
fn gpt2_folders_generate() {
    use lingo_data::{Tokenizer, TokenizerKind};
    use lingo_generate::SamplingConfig;
    use lingo_nn::LingoRng;
    let src =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lingo-models/tests/fixtures/hf/gpt2");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let alphabet: String = (0..90u8).map(|i| char::from(b'!' + i)).collect();
    Tokenizer::train(TokenizerKind::Char, &alphabet)
        .unwrap()
        .save(&tmp.path().join("tokenizer.json"))
        .unwrap();
    // Make the first token of the fixture's greedy continuation the end-of-text token.
    let generated: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("generate.json")).unwrap()).unwrap();
    let first = generated["greedy"][0].as_u64().unwrap() as u32;
    let prompt: String = generated["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| char::from(b'!' + i.as_u64().unwrap() as u8))
        .collect();
    let generation = format!(r#"{{"eos_token_id": {first}}}"#);
    std::fs::write(tmp.path().join("generation_config.json"), generation).unwrap();
    let lm = lingo_tasks::LanguageModel::load(tmp.path()).unwrap();
    assert_eq!(lm.eos, Some(first));
    let cfg = SamplingConfig {
        stop_tokens: vec![first],
        ..SamplingConfig::greedy(20)
    };
    let text = lm
        .generate(&prompt, &cfg, &mut LingoRng::new(0), |_| {})
        .unwrap();
    assert!(
        text.chars().count() <= 1,
        "stopped at the end-of-text token: {text:?}"
    );
}

/// `lingo translate` on a Hugging Face T5 folder: tokenizer.json in, beam search, text out, as
/// `transformers` (generate + batch_decode) gives.
#[test]
fn t5_folders_translate() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lingo-models/tests/fixtures/hf/t5");
    let translator = lingo_tasks::Translator::load(&dir).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("translate.json")).unwrap())
            .unwrap();
    let inputs: Vec<String> = expected["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let beam = lingo_generate::BeamConfig {
        beam_size: 3,
        max_length: 12,
        length_penalty: 1.0,
        early_stopping: true,
        ..Default::default()
    };
    let got = translator.translate(&inputs, &beam, 8).unwrap();
    for (g, w) in got.iter().zip(expected["outputs"].as_array().unwrap()) {
        assert_eq!(g.text, w.as_str().unwrap());
    }
}

/// Attention maps for the playground: one `[head][query][key]` block per layer over the input's
/// tokens, each row a probability distribution.
#[test]
fn attention_maps_cover_every_layer_and_token() {
    let (p, _) = fixture("bert");
    let (tokens, layers) = p.attention("the cat sat").unwrap();
    assert_eq!(layers.len(), p.model.config.num_hidden_layers);
    assert_eq!(tokens.first().map(String::as_str), Some("[CLS]"));
    for heads in &layers {
        assert_eq!(heads.len(), p.model.config.num_attention_heads);
        for rows in heads {
            assert_eq!(rows.len(), tokens.len());
            for row in rows {
                assert_eq!(row.len(), tokens.len());
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            }
        }
    }
}
