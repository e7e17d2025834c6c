//! `lingo train classify` (a recurrent many-to-one classifier) as a user runs it, on labelled
//! sentences the test writes, then `lingo classify` on the folder it leaves.

use std::process::Command;

fn lingo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo")
}

/// Sentences whose label is whether "good" or "bad" words dominate, with neutral filler.
fn sentiment(n: usize, seed: u64) -> String {
    let (good, bad, filler) = (
        ["great", "fine", "lovely", "superb"],
        ["awful", "dull", "poor", "tedious"],
        ["the", "film", "a", "plot", "was", "and", "very", "acting"],
    );
    let mut state = seed;
    let mut next = move |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    let mut out = String::from("sentence\tlabel\n");
    for _ in 0..n {
        let label = next(2);
        let len = 4 + next(6);
        let words: Vec<&str> = (0..len)
            .map(|i| match (i % 3, label) {
                (0, 1) => good[next(4)],
                (0, _) => bad[next(4)],
                _ => filler[next(8)],
            })
            .collect();
        out.push_str(&format!("{}\t{label}\n", words.join(" ")));
    }
    out
}

#[test]
fn trains_a_bilstm_and_classifies_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid, out) = (
        tmp.path().join("train.tsv"),
        tmp.path().join("valid.tsv"),
        tmp.path().join("run"),
    );
    std::fs::write(&train, sentiment(400, 1)).unwrap();
    std::fs::write(&valid, sentiment(100, 2)).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for (arch, pooling) in [("lstm", "max"), ("gru", "attention")] {
        let o = lingo(&[
            "train",
            "classify",
            "--arch",
            arch,
            "--pooling",
            pooling,
            "--train",
            &s(&train),
            "--valid",
            &s(&valid),
            "--out",
            &s(&out),
            "--steps",
            "60",
            "--quiet",
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let acc: f64 = stdout
            .split("validation accuracy ")
            .nth(1)
            .and_then(|r| r.split('%').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no accuracy in {stdout}"));
        assert!(acc > 90.0, "{arch}/{pooling}: {stdout}");
    }
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "recipe.json",
    ] {
        assert!(out.join(name).exists(), "{name} missing");
    }
    let o = lingo(&[
        "classify",
        "--model",
        &s(&out),
        "--json",
        "great lovely film",
        "awful dull plot",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let first: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(first[0][0]["label"], "1", "{text}");
    assert_eq!(first[1][0]["label"], "0", "{text}");
}

#[test]
fn unknown_validation_labels_and_bad_flags_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = (tmp.path().join("train.tsv"), tmp.path().join("valid.tsv"));
    std::fs::write(&train, sentiment(50, 1)).unwrap();
    std::fs::write(
        &valid,
        "sentence\tlabel\ngreat film\t1\nodd film\tneutral\n",
    )
    .unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = s(&tmp.path().join("run"));
    let o = lingo(&[
        "train",
        "classify",
        "--train",
        &s(&train),
        "--valid",
        &s(&valid),
        "--out",
        &out,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("line 3") && err.contains("neutral"),
        "{err}"
    );
    let o = lingo(&[
        "train",
        "classify",
        "--train",
        &s(&train),
        "--arch",
        "transformer",
        "--out",
        &out,
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected lstm, gru"));
}

#[test]
fn pretrained_vectors_start_the_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, vec) = (tmp.path().join("train.tsv"), tmp.path().join("w.vec"));
    std::fs::write(&train, sentiment(200, 3)).unwrap();
    let row = |w: &str, x: f32| format!("{w} {}\n", vec![x.to_string(); 100].join(" "));
    std::fs::write(
        &vec,
        format!(
            "3 100\n{}{}{}",
            row("great", 0.5),
            row("awful", -0.5),
            row("zebra", 0.1)
        ),
    )
    .unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = s(&tmp.path().join("run"));
    let o = lingo(&[
        "train",
        "classify",
        "--train",
        &s(&train),
        "--embeddings",
        &s(&vec),
        "--freeze-embeddings",
        "--out",
        &out,
        "--steps",
        "5",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("pretrained vectors for 2 of"),
        "{err}"
    );
    // A width other than the model's is an error that says so.
    std::fs::write(&vec, "great 1 2\n").unwrap();
    let o = lingo(&[
        "train",
        "classify",
        "--train",
        &s(&train),
        "--embeddings",
        &s(&vec),
        "--out",
        &out,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("width 2") && err.contains("embed_dim"),
        "{err}"
    );
}
