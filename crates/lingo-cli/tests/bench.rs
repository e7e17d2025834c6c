//! `lingo bench` runs a benchmark end to end and writes its JSON summary (Lingo's side only: CI
//! has no PyTorch; speed itself is measured, never asserted).

mod common;

use common::lingo;

#[test]
fn char_benchmark_prints_its_rows_and_writes_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = lingo(&[
        "bench",
        "char",
        "--no-python",
        "--iters",
        "1",
        "--json",
        &json.display().to_string(),
    ])
    .expect("lingo bench char runs");
    assert!(
        out.contains("train step") && out.contains("forward"),
        "{out}"
    );
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("bench.json")).expect("JSON");
    let bench = &value["benchmarks"][0];
    assert_eq!(bench["benchmark"], "char");
    let rows = bench["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row["lingo_median_ms"].as_f64().is_some_and(|ms| ms > 0.0));
        assert!(row["pytorch_ms"].is_null() && row["ratio"].is_null());
    }
    let err = lingo(&["bench", "char", "--precision", "bf16", "--no-python"]).unwrap_err();
    assert!(err.contains("bf16"), "{err}");
}

/// `lingo bench load` writes real folders, loads each in a fresh process and reports its peak
/// memory. Loading reads each tensor straight into its parameter, so the peak stays well under
/// twice the weights (before, the file's bytes, a copy of each tensor and the parameters were
/// held together: 2.2× the file for BERT-base).
#[test]
fn load_benchmark_reports_peak_memory_below_twice_the_weights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("load.json");
    let out = lingo(&[
        "bench",
        "load",
        "--no-python",
        "--json",
        &json.display().to_string(),
    ])
    .expect("lingo bench load runs");
    assert!(out.contains("BERT-base") && out.contains("GPT-2"), "{out}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("load.json")).expect("JSON");
    let rows = value["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        let file = row["file_mib"].as_f64().expect("file size");
        let lingo = &row["lingo"];
        let added = lingo["peak_mib"].as_f64().unwrap() - lingo["before_mib"].as_f64().unwrap();
        assert!(
            file > 300.0 && added > 0.5 * file && added < 2.0 * file,
            "{row}"
        );
        assert!(row["transformers"].is_null());
    }
}
