//! `lingo tokenizer train` and `lingo tokenize` as a user runs them: a folder with the three files
//! `AutoTokenizer` reads, ids and tokens printed as JSON lines, and bad input refused clearly.

mod common;

use common::{corpus, lingo};
use serde_json::Value;

#[test]
fn train_then_tokenize() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("wp");
    let out_s = out.display().to_string();
    lingo(&[
        "tokenizer",
        "train",
        "--kind",
        "wordpiece",
        "--vocab-size",
        "300",
        "--corpus",
        &corpus(),
        "--out",
        &out_s,
    ])
    .expect("trains");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["tokenizer_class"], "BertTokenizer");
    assert_eq!(config["mask_token"], "[MASK]");

    let printed = lingo(&[
        "tokenize",
        "--tokenizer",
        &out_s,
        "--json",
        "The model learns.",
        "Zoë",
    ])
    .expect("tokenizes");
    let lines: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one JSON object per text");
    assert_eq!(lines[0]["text"], "The model learns.");
    let tokens: Vec<&str> = lines[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.first(), Some(&"[CLS]"));
    assert_eq!(tokens.last(), Some(&"[SEP]"));
    assert!(tokens.contains(&"model"), "{tokens:?}");
    assert_eq!(lines[0]["ids"][0], 2, "[CLS] is id 2");
    // The tokenizer.json file itself works too, and --no-special-tokens drops [CLS]/[SEP].
    let bare = lingo(&[
        "tokenize",
        "--tokenizer",
        &out.join("tokenizer.json").display().to_string(),
        "--json",
        "--no-special-tokens",
        "The model learns.",
    ])
    .expect("tokenizes");
    let bare: Value = serde_json::from_str(bare.trim()).unwrap();
    assert_eq!(
        bare["ids"].as_array().unwrap().len() + 2,
        lines[0]["ids"].as_array().unwrap().len()
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("t").display().to_string();
    let err = lingo(&[
        "tokenizer",
        "train",
        "--kind",
        "bpe",
        "--vocab-size",
        "100",
        "--corpus",
        &corpus(),
        "--out",
        &out,
    ])
    .unwrap_err();
    assert!(
        err.contains("vocab_size 100") && err.contains("256 bytes"),
        "{err}"
    );
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let err = lingo(&[
        "tokenizer",
        "train",
        "--kind",
        "unigram",
        "--vocab-size",
        "200",
        "--corpus",
        &empty.display().to_string(),
        "--out",
        &out,
    ])
    .unwrap_err();
    assert!(err.contains("no text"), "{err}");
    let err = lingo(&[
        "tokenizer",
        "train",
        "--kind",
        "wordpiece",
        "--vocab-size",
        "200",
        "--corpus",
        "/no/such/corpus.txt",
        "--out",
        &out,
    ])
    .unwrap_err();
    assert!(err.contains("/no/such/corpus.txt"), "{err}");
    let err = lingo(&["tokenize", "--tokenizer", &corpus(), "hello"]).unwrap_err();
    assert!(err.contains("corpus.txt"), "{err}");
}
