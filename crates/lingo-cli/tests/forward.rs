//! `lingo forward` as a user runs it: a model folder and a JSON of ids in, a NumPy array out, equal to
//! what `transformers` computed for the same ids (tools/make_hf_fixtures.py).

use candle_core::{DType, Device, Tensor};
use lingo_nn::params::read_safetensors;
use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// The f32 data and shape of a `.npy` file written by `lingo forward`.
fn read_npy(bytes: &[u8]) -> (Vec<f32>, Vec<usize>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let shape = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let data = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (data, shape)
}

fn rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::U32).unwrap().to_vec2().unwrap()
}

#[test]
fn forward_writes_what_transformers_computes() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["bert-qa", "roberta-mlm", "gpt2"] {
        let expected =
            read_safetensors(&fixture(name).join("expected.safetensors"), &Device::Cpu).unwrap();
        let mut inputs = serde_json::json!({
            "input_ids": rows(&expected["batch.input_ids"]),
            "attention_mask": rows(&expected["batch.attention_mask"]),
        });
        if let Some(types) = expected.get("batch.token_type_ids") {
            inputs["token_type_ids"] = serde_json::json!(rows(types));
        }
        let (json, npy) = (
            tmp.path().join("in.json"),
            tmp.path().join(format!("{name}.npy")),
        );
        std::fs::write(&json, inputs.to_string()).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_lingo"))
            .args(["forward", "--model"])
            .arg(fixture(name))
            .arg("--inputs")
            .arg(&json)
            .arg("--output")
            .arg(&npy)
            .status()
            .unwrap();
        assert!(status.success(), "{name}: lingo forward failed");
        let (data, shape) = read_npy(&std::fs::read(&npy).unwrap());
        let want = &expected["batch.output"];
        assert_eq!(shape, want.dims(), "{name}");
        let got = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{name}: differs by {diff}");
    }
}

#[test]
fn ragged_rows_are_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("in.json");
    std::fs::write(&json, r#"{"input_ids": [[5, 6, 7], [5, 6]]}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(["forward", "--model"])
        .arg(fixture("bert"))
        .arg("--inputs")
        .arg(&json)
        .arg("--output")
        .arg(tmp.path().join("out.npy"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row 1") && err.contains("attention_mask"),
        "{err}"
    );
}
