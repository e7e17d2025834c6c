//! `lingo prune` and `lingo distill` as a user runs them: heads scored on data and cut, the folder
//! loading in the task commands; magnitude pruning of any folder with no data; pruning while
//! fine-tuning; a student made from the teacher's layers and distilled.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

fn lingo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo")
}

fn ok(args: &[&str]) -> String {
    let out = lingo(args);
    assert!(
        out.status.success(),
        "lingo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Labelled sentences for the 3-label `bert-cls` fixture.
fn data(dir: &Path) -> PathBuf {
    let words = [
        "the cat",
        "a dog",
        "paris is",
        "alice and bob",
        "the model",
        "in paris",
    ];
    let mut text = String::from("sentence\tlabel\n");
    for i in 0..48 {
        text.push_str(&format!(
            "{} {}\tLABEL_{}\n",
            words[i % words.len()],
            words[(i / 2) % words.len()],
            i % 3
        ));
    }
    let path = dir.join("train.tsv");
    std::fs::write(&path, text).unwrap();
    path
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn heads_pruned_on_data_make_a_folder_the_commands_load() {
    let tmp = tempfile::tempdir().unwrap();
    let train = data(tmp.path());
    let out = tmp.path().join("pruned");
    let source = fixture("bert-cls");
    let report = ok(&[
        "prune",
        source.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--method",
        "heads",
        "--sparsity",
        "0.5",
        "--train",
        train.to_str().unwrap(),
        "--importance-batches",
        "2",
    ]);
    assert!(report.contains("heads 8 → 4"), "{report}");
    let pruned: usize = config(&out)["pruned_heads"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| h.as_array().unwrap().len())
        .sum();
    assert_eq!(pruned, 4);
    let scores = ok(&[
        "classify",
        "--model",
        out.to_str().unwrap(),
        "--json",
        "the cat",
    ]);
    assert!(scores.contains("LABEL_"), "{scores}");

    // Neurons: a plain folder with a narrower feed-forward.
    let narrow = tmp.path().join("narrow");
    let source = fixture("bert-cls");
    ok(&[
        "prune",
        source.to_str().unwrap(),
        "--out",
        narrow.to_str().unwrap(),
        "--method",
        "neurons",
        "--sparsity",
        "0.25",
        "--train",
        train.to_str().unwrap(),
        "--importance-batches",
        "1",
    ]);
    assert_eq!(config(&narrow)["intermediate_size"], 28);
    ok(&["classify", "--model", narrow.to_str().unwrap(), "the cat"]);
}

#[test]
fn magnitude_pruning_needs_no_data_and_fine_tuning_keeps_the_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sparse");
    let gpt2 = fixture("gpt2");
    let report = ok(&[
        "prune",
        gpt2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--sparsity",
        "0.5",
        "--scope",
        "global",
    ]);
    assert!(report.contains("50.00% zero"), "{report}");
    let inputs = tmp.path().join("inputs.json");
    std::fs::write(&inputs, r#"{"input_ids": [[5, 9, 17, 2]]}"#).unwrap();
    let npy = tmp.path().join("out.npy");
    ok(&[
        "forward",
        "--model",
        out.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--output",
        npy.to_str().unwrap(),
    ]);

    let train = data(tmp.path());
    let recipe = tmp.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{"max_length": 16, "train": {"steps": 6, "batch_size": 8, "eval_every": 0,
            "checkpoint_every": 0, "optimizer": {"type": "adamw", "lr": 0.001}}}"#,
    )
    .unwrap();
    let tuned = tmp.path().join("tuned");
    let source = fixture("bert-cls");
    let report = ok(&[
        "prune",
        source.to_str().unwrap(),
        "--out",
        tuned.to_str().unwrap(),
        "--sparsity",
        "0.4",
        "--finetune",
        recipe.to_str().unwrap(),
        "--gradual",
        "--gradual-end",
        "0.5",
        "--prune-every",
        "1",
        "--train",
        train.to_str().unwrap(),
        "--steps",
        "6",
        "--quiet",
    ]);
    // Each matrix rounds its own count: 40% to within a few weights.
    assert!(report.starts_with("6 steps"), "{report}");
    assert!(report.contains("sparsity 40.0"), "{report}");
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixture("bert-cls");
    let out = tmp.path().join("x");
    let err = |args: &[&str]| -> String {
        let o = lingo(args);
        assert!(!o.status.success(), "lingo {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let s = source.to_str().unwrap();
    let o = out.to_str().unwrap();
    let e = err(&[
        "prune",
        s,
        "--out",
        o,
        "--method",
        "heads",
        "--sparsity",
        "0.5",
    ]);
    assert!(e.contains("--train"), "{e}");
    let e = err(&["prune", s, "--out", o, "--sparsity", "1.5"]);
    assert!(e.contains("--sparsity 1.5"), "{e}");
    let e = err(&["prune", s, "--out", s, "--sparsity", "0.5"]);
    assert!(e.contains("model folder itself"), "{e}");
    let e = err(&["prune", s, "--out", o, "--sparsity", "0.5", "--gradual"]);
    assert!(e.contains("--finetune"), "{e}");
}

#[test]
fn a_student_is_made_from_the_teacher_and_distilled() {
    let tmp = tempfile::tempdir().unwrap();
    let train = data(tmp.path());
    let student = tmp.path().join("student.json");
    std::fs::write(&student, r#"{"num_hidden_layers": 1}"#).unwrap();
    let recipe = tmp.path().join("recipe.json");
    std::fs::write(&recipe, r#"{"max_length": 16, "train": {"batch_size": 8}}"#).unwrap();
    let out = tmp.path().join("distilled");
    let teacher = fixture("bert-cls");
    let report = ok(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--student",
        student.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "3",
        "--alpha-cos",
        "0.5",
        "--config",
        recipe.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(report.starts_with("3 steps"), "{report}");
    assert_eq!(config(&out)["num_hidden_layers"], 1);
    assert_eq!(config(&out.join("initial-student"))["num_hidden_layers"], 1);
    ok(&["classify", "--model", out.to_str().unwrap(), "the cat"]);
    let o = lingo(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--student",
        student.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
        "--temperature",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--temperature 0"));
}

#[test]
fn sequence_level_distillation_trains_on_the_teachers_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = [
        "cat alice",
        "dog bob",
        "the cat",
        "paris",
        "alice is",
        "bob in",
    ]
    .iter()
    .map(|s| format!("{}\n", serde_json::json!({"dialogue": s, "summary": "x"})))
    .collect();
    let data = tmp.path().join("pairs.jsonl");
    std::fs::write(&data, rows).unwrap();
    let recipe = tmp.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{"max_length": 16, "max_target_length": 8, "epochs": null,
            "source_field": "dialogue", "target_field": "summary",
            "train": {"steps": 2, "batch_size": 4, "eval_every": 0, "checkpoint_every": 0}}"#,
    )
    .unwrap();
    let t5 = fixture("t5");
    let out = tmp.path().join("student");
    let args = [
        "distill",
        "--task",
        "seq2seq",
        "--teacher",
        t5.to_str().unwrap(),
        "--student",
        t5.to_str().unwrap(),
        "--train",
        data.to_str().unwrap(),
        "--valid",
        data.to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    let report = ok(&args);
    assert!(report.starts_with("2 steps"), "{report}");
    // The targets are the teacher's, under the recipe's field names.
    let targets = std::fs::read_to_string(out.join("teacher-targets.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = targets
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    assert_eq!(records[0]["dialogue"], "cat alice");
    assert!(records
        .iter()
        .all(|r| r["summary"].is_string() && r["summary"] != "x"));
    // A second run decodes nothing again.
    let again = lingo(&args);
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing"));
}
