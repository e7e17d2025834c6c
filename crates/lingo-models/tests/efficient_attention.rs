//! Efficient attention in the BERT family: a window covering the sequence and Linformer with
//! identity projections at k = n are dense attention; LSH (shared-QK, no key projection) masks
//! padding; all train every parameter.

use candle_core::{DType, Device, Tensor};
use lingo_kernels::gradcheck::assert_close;
use lingo_models::auto::{AutoModel, LoadOptions, Loaded};
use lingo_models::ModelInputs;
use lingo_nn::params::assign;
use lingo_nn::Ctx;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// The `bert-cls` fixture with `changes` made to its config, loaded.
fn variant(tmp: &Path, name: &str, changes: serde_json::Value) -> Loaded {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("bert-cls");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    AutoModel::load(&dir, &LoadOptions::default()).unwrap()
}

/// Two sequences of `t` tokens, the second padded after `t − 5`.
fn inputs(t: usize, padded: bool) -> ModelInputs {
    let ids: Vec<u32> = (0..2 * t as u32).map(|i| 2 + (i * 7) % 90).collect();
    let mask: Vec<u32> = (0..2 * t)
        .map(|i| u32::from(!padded || i < t || i % t < t - 5))
        .collect();
    ModelInputs {
        input_ids: Tensor::from_vec(ids, (2, t), &Device::Cpu).unwrap(),
        attention_mask: Some(Tensor::from_vec(mask, (2, t), &Device::Cpu).unwrap()),
        token_type_ids: None,
        decoder_input_ids: None,
        output_attentions: false,
        predict_positions: None,
    }
}

fn logits(m: &Loaded, inputs: &ModelInputs) -> Tensor {
    m.model.forward(inputs, &mut Ctx::eval()).unwrap().output
}

#[test]
fn a_window_over_the_sequence_and_identity_linformer_are_dense() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = variant(tmp.path(), "dense", serde_json::json!({}));
    let window = variant(
        tmp.path(),
        "window",
        serde_json::json!({"attention": "window", "attention_window": 128}),
    );
    let x = inputs(40, true);
    assert_close(&logits(&window, &x), &logits(&dense, &x), 1e-5, "window").unwrap();
    // A narrow window is something else.
    let narrow = variant(
        tmp.path(),
        "narrow",
        serde_json::json!({"attention": "window", "attention_window": 4}),
    );
    let last = |m: &Loaded| {
        let out = m.model.forward(&x, &mut Ctx::eval()).unwrap();
        out.hidden_states.last().unwrap().clone()
    };
    let d = (last(&narrow) - last(&dense)).unwrap().abs().unwrap();
    let d = d.max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 1e-2, "a 4-token window changes the states by {d} only");

    // Every position global: dense whatever the window; one global token ([CLS]) changes things.
    let all_global = variant(
        tmp.path(),
        "all-global",
        serde_json::json!({"attention": "window", "attention_window": 4, "attention_global": 40}),
    );
    assert_close(
        &logits(&all_global, &x),
        &logits(&dense, &x),
        1e-5,
        "all global",
    )
    .unwrap();
    let cls = variant(
        tmp.path(),
        "cls-global",
        serde_json::json!({"attention": "window", "attention_window": 4, "attention_global": 1}),
    );
    let d = (last(&cls) - last(&narrow)).unwrap().abs().unwrap();
    let d = d.max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 1e-3, "a global [CLS] changes the states by {d} only");

    // Linformer at k = n = 64 positions: the dense checkpoint loads, its projections new…
    let linformer = variant(
        tmp.path(),
        "linformer",
        serde_json::json!({"attention": "linformer", "linformer_k": 64}),
    );
    let eye = Tensor::eye(64, DType::F32, &Device::Cpu).unwrap();
    let projections: Vec<_> = linformer
        .store
        .named()
        .into_iter()
        .filter(|(n, _)| n.contains(".linformer."))
        .collect();
    assert_eq!(projections.len(), 4, "e and f in each of 2 layers");
    // …and identity projections give dense attention.
    for (_, var) in &projections {
        assign(var, &eye).unwrap();
    }
    let full = inputs(64, false);
    assert_close(
        &logits(&linformer, &full),
        &logits(&dense, &full),
        1e-4,
        "linformer",
    )
    .unwrap();
}

#[test]
fn efficient_attention_trains_every_parameter() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, changes) in [
        (
            "window",
            serde_json::json!({"attention": "window", "attention_window": 6}),
        ),
        (
            "linformer",
            serde_json::json!({"attention": "linformer", "linformer_k": 8}),
        ),
        (
            "linformer-kv",
            serde_json::json!({"attention": "linformer", "linformer_k": 8, "linformer_sharing": "key_value"}),
        ),
        (
            "linformer-layerwise",
            serde_json::json!({"attention": "linformer", "linformer_k": 8, "linformer_sharing": "layerwise"}),
        ),
        (
            "lsh",
            serde_json::json!({"attention": "lsh", "lsh_buckets": 2, "lsh_rounds": 2, "lsh_chunk": 4}),
        ),
        (
            "window-global",
            serde_json::json!({"attention": "window", "attention_window": 4, "attention_global": 2}),
        ),
    ] {
        let m = variant(tmp.path(), name, changes);
        let out = logits(&m, &inputs(20, true));
        let direction = Tensor::randn(0f32, 1.0, out.shape(), &Device::Cpu).unwrap();
        let loss = (out * direction).unwrap().sum_all().unwrap();
        let missing = m.store.without_gradient(&loss.backward().unwrap()).unwrap();
        assert!(missing.is_empty(), "{name}: no gradient for {missing:?}");
        let shared = m
            .store
            .named()
            .iter()
            .filter(|(n, _)| n.contains("linformer"))
            .count();
        let keys = (m.store.named().iter())
            .filter(|(n, _)| n.contains("attention.self.key"))
            .count();
        assert_eq!(
            keys,
            if name == "lsh" { 0 } else { 4 },
            "{name}: key tensors"
        );
        let want = match name {
            "window" | "window-global" | "lsh" => 0,
            "linformer-kv" => 2,
            "linformer-layerwise" => 2,
            _ => 4,
        };
        assert_eq!(shared, want, "{name}: projection tensors");
    }
}

/// LSH with one bucket in one chunk sees every key: a padded sequence's states equal the same
/// sequence's alone; with several buckets it is not dense attention.
#[test]
fn lsh_masks_padding_and_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let one = variant(
        tmp.path(),
        "lsh1",
        serde_json::json!({"attention": "lsh", "lsh_buckets": 1, "lsh_rounds": 1, "lsh_chunk": 64}),
    );
    let t = 24;
    let batch = inputs(t, true);
    let both = logits(&one, &batch);
    let alone = ModelInputs::new(
        batch
            .input_ids
            .narrow(0, 1, 1)
            .unwrap()
            .narrow(1, 0, t - 5)
            .unwrap(),
    );
    assert_close(
        &logits(&one, &alone),
        &both.narrow(0, 1, 1).unwrap(),
        1e-5,
        "padded vs alone",
    )
    .unwrap();
    let hashed = variant(
        tmp.path(),
        "lsh8",
        serde_json::json!({"attention": "lsh", "lsh_buckets": 8, "lsh_rounds": 1, "lsh_chunk": 4}),
    );
    let last = |m: &Loaded| {
        let out = m.model.forward(&batch, &mut Ctx::eval()).unwrap();
        out.hidden_states.last().unwrap().clone()
    };
    let d = (last(&hashed) - last(&one)).unwrap().abs().unwrap();
    let d = d.max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(
        d > 1e-2,
        "8 buckets in chunks of 4 gave one bucket's states (off by {d})"
    );
}
