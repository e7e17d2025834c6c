//! Reading what training runs wrote, for the tests that compare runs: data-parallel, pipeline.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The training losses a run logged, by step.
pub fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect()
}

/// Every weight file a run wrote (`.safetensors` but the checkpoint), values in name order.
pub fn weights(dir: &Path) -> Vec<f32> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && !p.ends_with("checkpoint.safetensors")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no weights in {}", dir.display());
    let mut values = Vec::new();
    for file in files {
        let tensors = lingo_nn::params::read_safetensors(&file, &candle_core::Device::Cpu).unwrap();
        let mut names: Vec<_> = tensors.keys().cloned().collect();
        names.sort();
        for n in names {
            values.extend(tensors[&n].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    values
}

/// `‖a − b‖ / ‖a‖`.
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}
