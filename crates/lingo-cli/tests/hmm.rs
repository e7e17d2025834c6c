//! `lingo hmm train | tag | eval | baum-welch` as a user runs them, on a CoNLL-U file the test
//! writes, and their errors on bad input.

use std::process::Command;

fn lingo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo")
}

/// A small treebank: determiners, nouns, verbs and adverbs in a few patterns.
fn treebank(sentences: usize) -> String {
    let (dets, nouns, verbs, advs) = (
        ["the", "a", "this"],
        ["dog", "cat", "bird", "run", "walk"],
        ["runs", "sleeps", "walks", "eats"],
        ["quickly", "quietly", "happily"],
    );
    let mut out = String::new();
    for i in 0..sentences {
        out.push_str(&format!("# sent_id = {i}\n"));
        let words = [
            (dets[i % 3], "DET", "DT"),
            (nouns[(i / 3) % 5], "NOUN", "NN"),
            (verbs[(i / 2) % 4], "VERB", "VBZ"),
            (advs[(i / 5) % 3], "ADV", "RB"),
        ];
        for (j, (w, upos, xpos)) in words.iter().enumerate() {
            out.push_str(&format!(
                "{}\t{w}\t{w}\t{upos}\t{xpos}\t_\t0\tdep\t_\t_\n",
                j + 1
            ));
        }
        out.push('\n');
    }
    out
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn train_tag_eval_and_baum_welch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("train.conllu");
    std::fs::write(&data, treebank(60)).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for (order, column) in [("2", "upos"), ("1", "xpos")] {
        let model = tmp.path().join(format!("model-{order}"));
        ok(&lingo(&[
            "hmm",
            "train",
            "--data",
            &s(&data),
            "--column",
            column,
            "--order",
            order,
            "--out",
            &s(&model),
        ]));
        let out = ok(&lingo(&[
            "hmm",
            "eval",
            "--model",
            &s(&model),
            "--data",
            &s(&data),
            "--json",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["accuracy"].as_f64(), Some(1.0), "{out}");
        assert_eq!(v["words"].as_u64(), Some(240));
        let text = tmp.path().join("text.txt");
        std::fs::write(&text, "the run walks happily\na bird eats\n").unwrap();
        let out = ok(&lingo(&[
            "hmm",
            "tag",
            "--model",
            &s(&model),
            "--input",
            &s(&text),
        ]));
        let want = if column == "upos" {
            "the/DET run/NOUN walks/VERB happily/ADV\na/DET bird/NOUN eats/VERB\n"
        } else {
            "the/DT run/NN walks/VBZ happily/RB\na/DT bird/NN eats/VBZ\n"
        };
        assert_eq!(out, want);
    }
    let out = ok(&lingo(&[
        "hmm",
        "baum-welch",
        "--data",
        &s(&data),
        "--iterations",
        "5",
    ]));
    assert!(
        out.contains("iteration   5") && out.contains("many-to-one UPOS accuracy"),
        "{out}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let data = tmp.path().join("train.conllu");
    std::fs::write(&data, treebank(20)).unwrap();
    let model = tmp.path().join("model");
    ok(&lingo(&[
        "hmm",
        "train",
        "--data",
        &s(&data),
        "--out",
        &s(&model),
    ]));
    let fail = |args: &[&str], want: &str| {
        let out = lingo(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    };
    // A malformed line: the file and line are named.
    let bad = tmp.path().join("bad.conllu");
    std::fs::write(&bad, treebank(2).replace("2\tdog", "2 dog")).unwrap();
    fail(
        &["hmm", "train", "--data", &s(&bad), "--out", &s(&model)],
        "bad.conllu: line 3: 9 tab-separated columns",
    );
    // Tags the model has never seen: XPOS data against a UPOS model.
    let xpos = tmp.path().join("xpos.conllu");
    std::fs::write(&xpos, treebank(2).replace("\tDET\t", "\tDT\t")).unwrap();
    fail(
        &["hmm", "eval", "--model", &s(&model), "--data", &s(&xpos)],
        "not in the model's tag set",
    );
    fail(
        &[
            "hmm",
            "train",
            "--data",
            &s(&data),
            "--order",
            "0",
            "--out",
            &s(&model),
        ],
        "--order 0",
    );
    fail(
        &[
            "hmm",
            "eval",
            "--model",
            &s(&tmp.path().join("none")),
            "--data",
            &s(&data),
        ],
        "tagger.json",
    );
}

/// CoNLL column files (CoNLL-2003's layout) train and score too; BIO tags add entity scores.
#[test]
fn conll_named_entities_get_entity_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("train.txt");
    let mut text = String::from("-DOCSTART- -X- -X- O\n\n");
    for i in 0..80 {
        let (first, last, city) = (
            ["John", "Mary", "Ann"][i % 3],
            ["Smith", "Jones"][i % 2],
            ["Paris", "Rome"][i % 2],
        );
        text.push_str(&format!(
            "{first} NNP B-NP B-PER\n{last} NNP I-NP I-PER\nvisited VBD B-VP O\n{city} NNP B-NP B-LOC\n. . O O\n\n"
        ));
    }
    std::fs::write(&data, text).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let model = tmp.path().join("ner");
    let out = ok(&lingo(&[
        "hmm",
        "train",
        "--data",
        &s(&data),
        "--out",
        &s(&model),
    ]));
    assert!(out.contains("4 CoNLL tags"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&lingo(&[
        "hmm",
        "eval",
        "--model",
        &s(&model),
        "--data",
        &s(&data),
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["accuracy"].as_f64(), Some(1.0), "{json}");
    assert_eq!(json["f1"].as_f64(), Some(1.0), "{json}");
}
