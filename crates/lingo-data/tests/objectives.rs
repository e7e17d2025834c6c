//! The pre-training objectives against what `transformers`' collators do
//! (tests/fixtures/pretraining/objectives.json, made by tools/make_pretraining_fixtures.py):
//! T5 span corruption exactly where the reference is deterministic (lengths, noise and span
//! counts, sentinel placement), masked LM by its rates.

use lingo_data::pretraining::{example_rng, Masker, MaskingConfig, SpanCorruption, IGNORE};
use lingo_data::Tokenizer;
use lingo_nn::LingoRng;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture() -> Value {
    let path = fixtures().join("pretraining/objectives.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn span_corruption_is_the_reference_collators() {
    let f = &fixture()["span_corruption"];
    for case in f["lengths"].as_array().unwrap() {
        let sc = SpanCorruption {
            noise_density: case["noise_density"].as_f64().unwrap(),
            mean_noise_span_length: case["mean_noise_span_length"].as_f64().unwrap(),
        };
        let n = case["input_length"].as_u64().unwrap() as usize;
        let want = (
            case["tokens"].as_u64().unwrap() as usize,
            case["targets"].as_u64().unwrap() as usize,
        );
        assert_eq!(sc.block_lengths(n), want, "{case}");
    }
    let sc = SpanCorruption::default();
    let mut rng = LingoRng::new(0);
    for row in f["noise_counts"].as_array().unwrap() {
        let [length, noise, spans] = [0, 1, 2].map(|i| row[i].as_u64().unwrap() as usize);
        let mask = sc.noise_mask(length, &mut rng);
        assert_eq!(mask.len(), length);
        let got_spans = (0..length)
            .filter(|&i| mask[i] && (i == 0 || !mask[i - 1]))
            .count();
        assert_eq!(
            (mask.iter().filter(|&&m| m).count(), got_spans),
            (noise, spans),
            "length {length}"
        );
        assert!(!mask[0], "the reference always starts with kept tokens");
    }
    let (vocab, eos) = (
        f["vocab_len"].as_u64().unwrap() as u32,
        f["eos"].as_u64().unwrap() as u32,
    );
    for case in f["cases"].as_array().unwrap() {
        let mask: Vec<bool> = serde_json::from_value(case["mask"].clone()).unwrap();
        let (input, target) = sc.corrupt(&ids(&case["ids"]), &mask, vocab - 1, eos);
        assert_eq!(input, ids(&case["input"]), "{case}");
        assert_eq!(target, ids(&case["labels"]), "{case}");
    }
}

#[test]
fn noise_spans_have_the_mean_length_asked_for() {
    let sc = SpanCorruption::default();
    let (tokens, _) = sc.block_lengths(512);
    let mut rng = example_rng(7, 0, 0);
    let (mut noise, mut spans) = (0, 0);
    for _ in 0..200 {
        let mask = sc.noise_mask(tokens, &mut rng);
        noise += mask.iter().filter(|&&m| m).count();
        spans += (1..tokens).filter(|&i| mask[i] && !mask[i - 1]).count();
    }
    let density = noise as f64 / (200 * tokens) as f64;
    let mean = noise as f64 / spans as f64;
    assert!((density - 0.15).abs() < 0.002, "{density}");
    assert!((mean - 3.0).abs() < 0.1, "{mean}");
}

/// Lingo's masking rates on the fixture's sentence, over as many draws as the reference made.
fn lingo_rates(config: MaskingConfig, want: &Value) -> (f64, f64, f64) {
    let tok = Tokenizer::load(&fixtures().join("tokenizers/wordpiece/tokenizer.json")).unwrap();
    let ids = tok
        .encode_input(want["text"].as_str().unwrap())
        .unwrap()
        .ids;
    assert_eq!(
        ids,
        self::ids(&want["ids"]),
        "same encoding as transformers"
    );
    let masker = Masker::new(&tok, config).unwrap();
    let specials = tok.special_ids();
    let draws = want["draws"].as_u64().unwrap();
    let (mut chosen, mut masked, mut kept) = (0u64, 0u64, 0u64);
    for d in 0..draws {
        let m = masker.mask(&ids, &mut example_rng(1, 0, d));
        for (i, &label) in m.labels.iter().enumerate() {
            if label == IGNORE {
                continue;
            }
            assert!(!specials.contains(&ids[i]), "a special token was chosen");
            chosen += 1;
            masked += (m.input_ids[i] == masker.mask_id) as u64;
            kept += (m.input_ids[i] == ids[i]) as u64;
        }
    }
    let candidates = ids.iter().filter(|i| !specials.contains(i)).count() as u64;
    (
        chosen as f64 / (draws * candidates) as f64,
        masked as f64 / chosen as f64,
        kept as f64 / chosen as f64,
    )
}

#[test]
fn masking_rates_match_the_reference_collator() {
    let f = fixture();
    let want = &f["mlm"];
    assert_eq!(want["special_chosen"], 0);
    let (rate, mask, kept) = lingo_rates(MaskingConfig::default(), want);
    let near = |got: f64, key: &str, tol: f64| {
        let w = want[key].as_f64().unwrap();
        assert!(
            (got - w).abs() < tol,
            "{key}: Lingo {got}, transformers {w}"
        );
    };
    near(rate, "chosen_rate", 0.005);
    near(mask, "mask_share", 0.015);
    // A random replacement may draw the original token: both count it as kept.
    near(kept, "kept_share", 0.015);

    // Whole words: the same share of tokens chosen (transformers' collator then always writes
    // [MASK] — it drops random replacement with whole words — while Lingo keeps 80/10/10 as
    // Google's whole-word BERT did; with mask_fraction 1 the two agree).
    let want = &f["mlm_whole_word"];
    let config = MaskingConfig {
        whole_word: true,
        mask_fraction: 1.0,
        random_fraction: 0.0,
        ..Default::default()
    };
    let (rate, mask, kept) = lingo_rates(config, want);
    let w = want["chosen_rate"].as_f64().unwrap();
    assert!(
        (rate - w).abs() < 0.01,
        "whole-word rate: Lingo {rate}, transformers {w}"
    );
    assert_eq!((mask, kept), (1.0, 0.0));
}
