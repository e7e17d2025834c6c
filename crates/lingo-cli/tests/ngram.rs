//! `lingo ngram train | eval | generate | classify` as a user runs them, on a corpus the test writes.

use std::process::Command;

fn lingo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo")
}

/// Sentences with rare words (the modified Kneser–Ney discounts need counts of 1–4).
fn corpus(n: usize, seed: u64) -> String {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 3 + next() % 8;
            let words: Vec<String> = (0..len)
                .map(|_| match next() % 4 {
                    0 => format!("r{}", next() % 3000),
                    _ => format!("w{}", 2000 / (1 + next() % 2000)),
                })
                .collect();
            words.join(" ") + "\n"
        })
        .collect()
}

#[test]
fn train_eval_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test, arpa) = (
        tmp.path().join("train.txt"),
        tmp.path().join("test.txt"),
        tmp.path().join("model.arpa"),
    );
    std::fs::write(&train, corpus(2000, 1)).unwrap();
    std::fs::write(&test, corpus(200, 2)).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = lingo(&[
        "ngram",
        "train",
        "--order",
        "3",
        "--smoothing",
        "mkn",
        "--corpus",
        &s(&train),
        "--out",
        &s(&arpa),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&arpa).unwrap();
    assert!(text.contains("\\data\\") && text.contains("\\3-grams:") && text.contains("\\end\\"));

    let out = lingo(&[
        "ngram",
        "eval",
        "--model",
        &s(&arpa),
        "--corpus",
        &s(&test),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ppl = v["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 3000.0, "{v}");
    assert!(
        v["oovs"].as_u64().unwrap() > 0,
        "unseen rare words count as OOVs"
    );

    let out = lingo(&[
        "ngram",
        "generate",
        "--model",
        &s(&arpa),
        "--count",
        "3",
        "--seed",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    // Bad input: a truncated ARPA file names the file and the line.
    std::fs::write(&arpa, &text[..text.len() / 3]).unwrap();
    let out = lingo(&["ngram", "eval", "--model", &s(&arpa), "--corpus", &s(&test)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.arpa") && err.contains("line"), "{err}");
}

#[test]
fn every_smoothing_trains_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (tmp.path().join("train.txt"), tmp.path().join("test.txt"));
    std::fs::write(&train, corpus(2000, 1)).unwrap();
    std::fs::write(&test, corpus(200, 2)).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let mut ppl = std::collections::BTreeMap::new();
    for smoothing in ["add-k", "witten-bell", "absolute", "kn", "mkn", "stupid"] {
        let arpa = tmp.path().join(format!("{smoothing}.arpa"));
        let out = lingo(&[
            "ngram",
            "train",
            "--order",
            "3",
            "--smoothing",
            smoothing,
            "--corpus",
            &s(&train),
            "--out",
            &s(&arpa),
        ]);
        assert!(
            out.status.success(),
            "{smoothing}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = lingo(&[
            "ngram",
            "eval",
            "--model",
            &s(&arpa),
            "--corpus",
            &s(&test),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{smoothing}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let p = v["perplexity"].as_f64().unwrap();
        assert!(p.is_finite() && p > 1.0, "{smoothing}: {p}");
        ppl.insert(smoothing, p);
    }
    assert!(
        ppl["mkn"] < ppl["add-k"] && ppl["kn"] < ppl["witten-bell"],
        "{ppl:?}"
    );
    let out = lingo(&[
        "ngram",
        "train",
        "--smoothing",
        "kn",
        "--discount",
        "1.5",
        "--corpus",
        &s(&train),
        "--out",
        &s(&tmp.path().join("x.arpa")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("discount"), "{err}");
}

/// One model per label: texts whose words lean to one label are classified by it.
#[test]
fn classify_with_a_model_per_label() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let rows = |n: usize, offset: usize| -> String {
        let mut s = String::from("sentence\tlabel\n");
        for i in offset..offset + n {
            let (w, l) = if i % 2 == 0 {
                (["good", "fine", "great"][i % 3], "pos")
            } else {
                (["bad", "dull", "weak"][i % 3], "neg")
            };
            s.push_str(&format!(
                "a {w} film with a {} cast\t{l}\n",
                ["young", "old"][i % 4 / 2]
            ));
        }
        s
    };
    std::fs::write(p("train.tsv"), rows(60, 0)).unwrap();
    std::fs::write(p("valid.tsv"), rows(20, 60)).unwrap();
    for (order, smoothing) in [("1", "add-k"), ("2", "witten-bell")] {
        let out = lingo(&[
            "ngram",
            "classify",
            "--train",
            &p("train.tsv"),
            "--valid",
            &p("valid.tsv"),
            "--order",
            order,
            "--smoothing",
            smoothing,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            json["accuracy"].as_f64(),
            Some(1.0),
            "{order} {smoothing}: {json}"
        );
    }
    std::fs::write(
        p("odd.tsv"),
        "sentence\tlabel\na good film\tpos\na film\tmeh\n",
    )
    .unwrap();
    let out = lingo(&[
        "ngram",
        "classify",
        "--train",
        &p("train.tsv"),
        "--valid",
        &p("odd.tsv"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 3") && err.contains("`meh`"),
        "{err}"
    );
}
