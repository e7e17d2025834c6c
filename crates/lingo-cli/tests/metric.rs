//! `lingo metric` as a user runs it: files in, the reference packages' key names out, with the values
//! those packages computed (tests/fixtures/metrics, written by tools/make_metric_fixtures.py).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/metrics")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn lines(dir: &Path, name: &str, rows: impl IntoIterator<Item = String>) -> PathBuf {
    let path = dir.join(name);
    let text: String = rows.into_iter().map(|r| r + "\n").collect();
    std::fs::write(&path, text).expect("write");
    path
}

fn metric(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .arg("metric")
        .args(args)
        .arg("--json")
        .output()
        .expect("run lingo");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("JSON on stdout"))
}

fn near(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64().expect(what), want.as_f64().expect(what));
    assert!((g - w).abs() < 1e-9, "{what}: {g} vs {w}");
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn classification_and_seqeval_print_the_reference_values() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = fixture("classification.json");
    let case = &f["cases"][0];
    let p = lines(tmp.path(), "p.txt", strings(&case["predictions"]));
    let r = lines(tmp.path(), "r.txt", strings(&case["references"]));
    let probs: Vec<String> = case["probabilities"]
        .as_array()
        .expect("probabilities")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let probs = lines(tmp.path(), "probs.txt", probs);
    let (p, r, probs) = (p.to_str(), r.to_str(), probs.to_str());
    let got = metric(&[
        "classification",
        "--predictions",
        p.expect("path"),
        "--references",
        r.expect("path"),
        "--probabilities",
        probs.expect("path"),
    ])
    .expect("lingo metric classification");
    for key in [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "mcc",
        "roc_auc",
        "log_loss",
    ] {
        near(&got[key], &case[key], key);
    }

    let s = fixture("seqeval.json");
    let join = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("sentences")
            .iter()
            .map(|t| strings(t).join(" "))
            .collect()
    };
    let p = lines(tmp.path(), "tags_p.txt", join(&s["predictions"]));
    let r = lines(tmp.path(), "tags_r.txt", join(&s["references"]));
    let got = metric(&[
        "seqeval",
        "--predictions",
        p.to_str().expect("path"),
        "--references",
        r.to_str().expect("path"),
    ])
    .expect("lingo metric seqeval");
    near(&got["f1"], &s["default"]["f1"], "f1");
    near(&got["strict_f1"], &s["strict"]["f1"], "strict_f1");
    near(
        &got["PER"]["f1"],
        &s["default"]["per_type"]["PER"]["f1-score"],
        "PER f1",
    );
}

#[test]
fn mismatched_files_are_refused_with_their_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = lines(tmp.path(), "pred.txt", ["1".into(), "0".into()]);
    let r = lines(tmp.path(), "gold.txt", ["1".into()]);
    let err = metric(&[
        "classification",
        "--predictions",
        p.to_str().expect("path"),
        "--references",
        r.to_str().expect("path"),
    ])
    .unwrap_err();
    assert!(
        err.contains("pred.txt has 2 lines") && err.contains("gold.txt has 1"),
        "{err}"
    );
}
