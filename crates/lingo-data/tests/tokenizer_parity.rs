//! Tokenizers `lingo tokenizer train` wrote encode held-out text exactly as `transformers`'
//! `AutoTokenizer` encodes it after loading the same folder (tests/fixtures/tokenizers, made by
//! tools/make_tokenizer_fixtures.py), and training again from the fixture corpus gives a tokenizer
//! with the same special tokens and size.

use lingo_data::corpus::{Corpus, DocumentBreak};
use lingo_data::{BpeStyle, Scheme, Tokenizer, TokenizerSpec};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers")
}

fn spec(name: &str) -> TokenizerSpec {
    let (scheme, vocab_size) = match name {
        "wordpiece" => (Scheme::WordPiece { lowercase: true }, 400),
        "wordpiece-cased" => (Scheme::WordPiece { lowercase: false }, 400),
        "bpe-gpt2" => (
            Scheme::Bpe {
                style: BpeStyle::Gpt2,
            },
            400,
        ),
        "bpe-roberta" => (
            Scheme::Bpe {
                style: BpeStyle::Roberta,
            },
            400,
        ),
        "unigram" => (Scheme::Unigram { sentinels: 10 }, 300),
        other => panic!("unknown fixture {other}"),
    };
    TokenizerSpec {
        scheme,
        vocab_size,
        min_frequency: 1,
    }
}

#[test]
fn trained_tokenizers_encode_as_autotokenizer_does() -> anyhow::Result<()> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json"))?)?;
    let expected = expected.as_object().expect("an object per scheme");
    assert_eq!(expected.len(), 5);
    for (name, want) in expected {
        let tok = Tokenizer::load(&fixtures().join(name).join("tokenizer.json"))?;
        assert_eq!(
            tok.vocab_size() as u64,
            want["vocab_size"].as_u64().unwrap(),
            "{name}"
        );
        for case in want["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let enc = match case["pair"].as_str() {
                Some(pair) => tok.inner().encode((text, pair), true),
                None => tok.inner().encode(text, true),
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let ids: Vec<u64> = enc.get_ids().iter().map(|&i| i as u64).collect();
            let want_ids: Vec<u64> = serde_json::from_value(case["ids"].clone())?;
            assert_eq!(ids, want_ids, "{name}: {text:?}");
            let want_tokens: Vec<String> = serde_json::from_value(case["tokens"].clone())?;
            // Vocabulary entries, as `convert_ids_to_tokens` gives them.
            assert_eq!(tok.tokens(enc.get_ids()), want_tokens, "{name}: {text:?}");
            if let Some(types) = case["token_type_ids"].as_array() {
                let got: Vec<u64> = enc.get_type_ids().iter().map(|&i| i as u64).collect();
                let want: Vec<u64> = types.iter().map(|v| v.as_u64().unwrap()).collect();
                assert_eq!(got, want, "{name}: segment ids of {text:?}");
            }
        }
        // The same training again: the tokenizers crate breaks ties between equally frequent
        // merges in hash order (as in Python), so the pieces may differ; the layout may not.
        let corpus = Corpus::new(vec![fixtures().join("corpus.txt")], DocumentBreak::Line)?;
        let spec = spec(name);
        let again = spec.train(corpus.lines())?;
        assert_eq!(again.vocab_size(), tok.vocab_size(), "{name}");
        for s in spec.specials() {
            assert_eq!(again.token_to_id(s), tok.token_to_id(s), "{name}: {s}");
        }
    }
    Ok(())
}
