//! `lingo train rnn-lm`, `lingo rnn-lm eval | generate` as a user runs them, on text the test
//! writes: running text and labelled sentences, and the errors on bad input.

use std::process::Command;

fn lingo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const RECIPE: &str = r#"{
  "model": { "embed_dim": 12, "hidden_size": 16, "num_layers": 1 },
  "bptt": 8, "epochs": 4, "lr_decay": { "after_epochs": 2, "factor": 0.5 },
  "train": { "batch_size": 4, "seed": 3, "optimizer": { "type": "sgd", "lr": 5.0 },
             "clip_norm": 1.0, "eval_batches": 0 }
}"#;

fn text(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "the {} sat on the {}\n",
                ["cat", "dog"][i % 2],
                ["mat", "rug", "sofa"][i % 3]
            )
        })
        .collect()
}

#[test]
fn train_eval_and_generate_running_text() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    std::fs::write(p("train.txt"), text(120)).unwrap();
    std::fs::write(p("valid.txt"), text(20)).unwrap();
    std::fs::write(p("recipe.json"), RECIPE).unwrap();
    let out = ok(&lingo(&[
        "train",
        "rnn-lm",
        "--train",
        &p("train.txt"),
        "--valid",
        &p("valid.txt"),
        "--config",
        &p("recipe.json"),
        "--out",
        &p("lm"),
        "--quiet",
    ]));
    assert!(out.contains("validation perplexity"), "{out}");
    // The Zaremba schedule: two epochs at the peak, then halved each epoch.
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("lm/recipe.json")).unwrap()).unwrap();
    assert_eq!(recipe["train"]["schedule"]["kind"], "step");

    std::fs::write(p("test.txt"), "the cat sat on the mat\nthe zebra sat\n").unwrap();
    let json: serde_json::Value = serde_json::from_str(&ok(&lingo(&[
        "rnn-lm",
        "eval",
        "--model",
        &p("lm"),
        "--corpus",
        &p("test.txt"),
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (json["words"].as_u64(), json["oovs"].as_u64()),
        (Some(9), Some(1))
    );
    let ppl = json["perplexity_excluding_oovs"].as_f64().unwrap();
    // Learnt: far below the 9 words of the vocabulary (and above 1).
    assert!(ppl > 1.0 && ppl < 3.0, "perplexity {ppl}");
    assert!(json["perplexity"].as_f64().unwrap() > ppl);

    let generated = ok(&lingo(&[
        "rnn-lm",
        "generate",
        "--model",
        &p("lm"),
        "--count",
        "3",
        "--temperature",
        "0",
    ]));
    assert_eq!(generated.lines().count(), 3);
    assert!(
        generated.lines().all(|l| l.starts_with("the ")),
        "{generated}"
    );
    let err = fails(&lingo(&[
        "rnn-lm",
        "generate",
        "--model",
        &p("lm"),
        "--label",
        "pos",
    ]));
    assert!(err.contains("no labels"), "{err}");
}

#[test]
fn a_model_trained_on_labels_generates_from_one() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let rows = |n: usize| -> String {
        let mut s = String::from("sentence\tlabel\n");
        for i in 0..n {
            let (w, l) = if i % 2 == 0 {
                ("great", "1")
            } else {
                ("awful", "0")
            };
            s.push_str(&format!(
                "a {w} {} indeed\t{l}\n",
                ["film", "show"][i % 4 / 2]
            ));
        }
        s
    };
    std::fs::write(p("train.tsv"), rows(80)).unwrap();
    std::fs::write(p("valid.tsv"), rows(12)).unwrap();
    std::fs::write(
        p("recipe.json"),
        RECIPE
            .replace(r#""epochs": 4"#, r#""epochs": 30"#)
            .replace(r#""after_epochs": 2"#, r#""after_epochs": 25"#)
            .replace(
                r#""type": "sgd", "lr": 5.0"#,
                r#""type": "adamw", "lr": 0.01, "weight_decay": 0.0"#,
            ),
    )
    .unwrap();
    ok(&lingo(&[
        "train",
        "rnn-lm",
        "--train",
        &p("train.tsv"),
        "--valid",
        &p("valid.tsv"),
        "--config",
        &p("recipe.json"),
        "--out",
        &p("lm"),
        "--quiet",
    ]));
    let json: serde_json::Value = serde_json::from_str(&ok(&lingo(&[
        "rnn-lm",
        "eval",
        "--model",
        &p("lm"),
        "--corpus",
        &p("valid.tsv"),
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["label_accuracy"].as_f64(), Some(1.0), "{json}");
    let generated = ok(&lingo(&[
        "rnn-lm",
        "generate",
        "--model",
        &p("lm"),
        "--label",
        "1",
        "--temperature",
        "0",
        "--count",
        "2",
    ]));
    assert!(
        generated.lines().all(|l| l.starts_with("a great")),
        "{generated}"
    );
    let err = fails(&lingo(&["rnn-lm", "generate", "--model", &p("lm")]));
    assert!(err.contains("--label"), "{err}");
    let err = fails(&lingo(&[
        "rnn-lm",
        "generate",
        "--model",
        &p("lm"),
        "--label",
        "2",
    ]));
    assert!(err.contains("`2`"), "{err}");

    // A malformed recipe names its field; an unknown label in the validation file its line.
    std::fs::write(p("bad.json"), r#"{"bptt": 8, "epochz": 3}"#).unwrap();
    let err = fails(&lingo(&[
        "train",
        "rnn-lm",
        "--train",
        &p("train.tsv"),
        "--valid",
        &p("valid.tsv"),
        "--config",
        &p("bad.json"),
        "--out",
        &p("bad"),
    ]));
    assert!(err.contains("bad.json") && err.contains("epochz"), "{err}");
    std::fs::write(
        p("odd.tsv"),
        "sentence\tlabel\na fine film\t1\na film\tmaybe\n",
    )
    .unwrap();
    let err = fails(&lingo(&[
        "rnn-lm",
        "eval",
        "--model",
        &p("lm"),
        "--corpus",
        &p("odd.tsv"),
    ]));
    assert!(err.contains("line 3") && err.contains("maybe"), "{err}");
}
