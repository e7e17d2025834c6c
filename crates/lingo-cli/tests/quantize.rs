//! `lingo quantize` and `--int8` / `--dtype bf16` as a user runs them: the quantized folder holds
//! every file of the original, loads in the task commands as int8, and answers as `--int8` on the
//! f32 folder does; a bf16 folder is a plain bfloat16 one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

fn lingo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("run lingo");
    assert!(
        out.status.success(),
        "lingo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One JSON array of label scores per text.
fn classify(model: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let model = model.to_str().unwrap();
    let mut args = vec![
        "classify",
        "--model",
        model,
        "--json",
        "the cat sat",
        "a dog ran",
    ];
    args.extend_from_slice(extra);
    serde_json::Deserializer::from_str(&lingo(&args))
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn quantized_folder_answers_as_int8_loading_does() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bert-cls-int8");
    let source = fixture("bert-cls");
    let report = lingo(&[
        "quantize",
        source.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(report.contains("linear layers"), "{report}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["quant_method"], "lingo-int8");
    let smaller = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .len();
    let original = std::fs::metadata(source.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(smaller < original, "{smaller} >= {original}");

    let from_folder = classify(&out, &[]);
    let at_load = classify(&source, &["--int8"]);
    assert_eq!(from_folder, at_load);
    let f32_answer = classify(&source, &[]);
    assert_ne!(from_folder, f32_answer, "int8 gave the f32 scores exactly");
    assert_eq!(from_folder.len(), 2);
    let labels = |v: &[serde_json::Value]| -> Vec<String> {
        (v.iter())
            .map(|r| r[0]["label"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(labels(&from_folder), labels(&f32_answer));
}

#[test]
fn quantize_refuses_to_overwrite_its_source_and_unknown_schemes() {
    let source = fixture("bert-cls");
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(["quantize", source.to_str().unwrap(), "--out"])
        .arg(&source)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the model folder itself"));
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args([
            "quantize",
            source.to_str().unwrap(),
            "--scheme",
            "int4",
            "--out",
        ])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown quantization scheme `int4`"));
}

#[test]
fn bf16_folder_and_dtype_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bert-cls-bf16");
    let source = fixture("bert-cls");
    let s = source.to_str().unwrap();
    lingo(&[
        "quantize",
        s,
        "--scheme",
        "bf16",
        "--out",
        out.to_str().unwrap(),
    ]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none());
    assert_eq!(config["dtype"], "bfloat16");
    let size = |dir: &Path| {
        std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        size(&out) * 10 < size(&source) * 6,
        "{} vs {}",
        size(&out),
        size(&source)
    );

    let scores = |v: &[serde_json::Value]| -> Vec<f64> {
        (v.iter().flat_map(|r| r.as_array().unwrap()))
            .map(|x| x["score"].as_f64().unwrap())
            .collect()
    };
    let f32_answer = scores(&classify(&source, &[]));
    for answer in [
        classify(&source, &["--dtype", "bf16"]),
        classify(&out, &["--dtype", "bf16"]),
        classify(&out, &[]),
    ] {
        let answer = scores(&answer);
        assert_eq!(answer.len(), f32_answer.len());
        let off = (answer.iter().zip(&f32_answer))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(off < 1e-2, "bf16 scores {answer:?} vs f32 {f32_answer:?}");
    }
    let both = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(["classify", "--model", s, "--int8", "--dtype", "bf16", "x"])
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}
