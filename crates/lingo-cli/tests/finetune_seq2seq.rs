//! `lingo finetune seq2seq` and `lingo evaluate seq2seq` as a user runs them: a JSON-lines file
//! in, a folder out that `evaluate` scores with `lingo metric`'s ROUGE and BLEU keys, and a bad
//! file refused with its name and record.

mod common;

use common::{lingo, write};
use serde_json::Value;
use std::path::PathBuf;

fn t5() -> String {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lingo-models/tests/fixtures/hf/t5");
    dir.display().to_string()
}

#[test]
fn finetune_then_evaluate_seq2seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rows: String = [
        "cat alice",
        "dog bob",
        "the cat",
        "paris",
        "alice is",
        "bob in",
    ]
    .iter()
    .map(|s| format!("{}\n", serde_json::json!({"dialogue": s, "summary": s})))
    .collect();
    let data = write(tmp.path(), "pairs.jsonl", &rows);
    let recipe = write(
        tmp.path(),
        "recipe.json",
        r#"{"max_length": 16, "max_target_length": 8, "epochs": null, "source_prefix": "summarize: ",
            "source_field": "dialogue", "target_field": "summary",
            "train": {"steps": 2, "batch_size": 4, "eval_every": 0, "checkpoint_every": 0}}"#,
    );
    let out = tmp.path().join("out").display().to_string();
    lingo(&[
        "finetune",
        "seq2seq",
        "--model",
        &t5(),
        "--train",
        &data,
        "--valid",
        &data,
        "--config",
        &recipe,
        "--out",
        &out,
        "--quiet",
    ])
    .expect("finetune seq2seq");
    let json: Value = serde_json::from_str(
        &lingo(&[
            "evaluate", "seq2seq", "--model", &out, "--data", &data, "--json",
        ])
        .expect("evaluate seq2seq"),
    )
    .expect("JSON");
    for key in ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"] {
        assert!(json[key].is_number(), "{key} missing: {json}");
    }
    let bad = write(tmp.path(), "bad.jsonl", "{\"dialogue\": \"cat\"}\n");
    let err = lingo(&[
        "finetune",
        "seq2seq",
        "--model",
        &t5(),
        "--train",
        &bad,
        "--config",
        &recipe,
        "--out",
        &out,
    ])
    .expect_err("a record without a summary");
    assert!(
        err.contains("bad.jsonl") && err.contains("`summary`"),
        "{err}"
    );
}
