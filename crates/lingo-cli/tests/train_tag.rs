//! `lingo train tag` (a recurrent many-to-many tagger, with and without a CRF) as a user runs it,
//! on tagged sentences the test writes, and its errors on bad input.

use std::process::Command;

fn lingo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo")
}

/// CoNLL-style sentences: a first name is B-PER, a surname after it I-PER, a place after "in"
/// B-LOC, everything else O.
fn corpus(n: usize, seed: u64) -> String {
    let surnames = ["Ivanova", "Okafor", "Tanaka"];
    let (names, places, words) = (
        ["Anna", "Boris", "Chen", "Dara", "Emil"],
        ["Paris", "Lima", "Oslo", "Quito"],
        [
            "met", "saw", "the", "a", "friend", "today", "and", "visited",
        ],
    );
    let mut state = seed;
    let mut next = move |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    let mut out = String::from("-DOCSTART- -X- -X- O\n\n");
    for _ in 0..n {
        let mut lines = Vec::new();
        for _ in 0..2 + next(3) {
            match next(3) {
                0 => {
                    lines.push(format!("{} B-PER", names[next(5)]));
                    if next(2) == 0 {
                        lines.push(format!("{} I-PER", surnames[next(3)]));
                    }
                }
                1 => {
                    lines.push("in O".into());
                    lines.push(format!("{} B-LOC", places[next(4)]));
                }
                _ => lines.push(format!("{} O", words[next(8)])),
            }
        }
        out.push_str(&lines.join("\n"));
        out.push_str("\n\n");
    }
    out
}

fn value(stdout: &str, key: &str) -> f64 {
    stdout
        .split(key)
        .nth(1)
        .and_then(|r| r.trim_start().split(['%', ' ', ',', ';']).next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` in {stdout}"))
}

#[test]
fn trains_taggers_with_and_without_a_crf() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = (tmp.path().join("train.txt"), tmp.path().join("valid.txt"));
    std::fs::write(&train, corpus(300, 1)).unwrap();
    std::fs::write(&valid, corpus(60, 2)).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let config = tmp.path().join("recipe.json");
    let recipe = r#"{"model": {"hidden_size": 32, "dropout": 0.1},
        "train": {"batch_size": 16, "optimizer": {"type": "adam", "lr": 0.005}}}"#;
    std::fs::write(&config, recipe).unwrap();
    for crf in [false, true] {
        let out = s(&tmp.path().join(format!("run-{crf}")));
        let mut args = vec![
            "train".to_string(),
            "tag".into(),
            "--train".into(),
            s(&train),
            "--valid".into(),
            s(&valid),
            "--out".into(),
            out.clone(),
            "--steps".into(),
            "150".into(),
            "--quiet".into(),
            "--config".into(),
            s(&config),
        ];
        if crf {
            args.push("--crf".into());
        }
        let o = lingo(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            value(&stdout, "validation accuracy") > 95.0,
            "crf {crf}: {stdout}"
        );
        assert!(value(&stdout, "entity F1") > 90.0, "crf {crf}: {stdout}");
        for name in [
            "config.json",
            "vocab.json",
            "model.safetensors",
            "recipe.json",
        ] {
            assert!(std::path::Path::new(&out).join(name).exists(), "{name}");
        }
    }
}

#[test]
fn unknown_tags_and_malformed_lines_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (train, valid) = (tmp.path().join("train.txt"), tmp.path().join("valid.txt"));
    std::fs::write(&train, corpus(20, 1)).unwrap();
    std::fs::write(&valid, "Anna B-PER\nsang B-SONG\n").unwrap();
    let out = s(&tmp.path().join("run"));
    let o = lingo(&[
        "train",
        "tag",
        "--train",
        &s(&train),
        "--valid",
        &s(&valid),
        "--out",
        &out,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("line 1") && err.contains("B-SONG"),
        "{err}"
    );
    std::fs::write(&valid, "Anna B-PER\nsang\n").unwrap();
    let o = lingo(&[
        "train",
        "tag",
        "--train",
        &s(&train),
        "--valid",
        &s(&valid),
        "--out",
        &out,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("valid.txt") && err.contains("line 2"),
        "{err}"
    );
}
