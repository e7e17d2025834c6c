//! Every parameter of every architecture Lingo loads from Hugging Face folders receives a non-zero
//! gradient through its main output (the logits of its head, or the last hidden state; a
//! pre-training head's sentence-pair logits too), so
//! fine-tuning trains all of it — the fused kernels must not drop a path (candle's own fused
//! softmax and norms would, silently).

use candle_core::{DType, Device, Tensor};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::ModelInputs;
use lingo_nn::params::read_safetensors;
use lingo_nn::Ctx;
use std::path::PathBuf;

/// Parameters a checkpoint holds that its main output does not read, with why.
fn unused(model: &str, param: &str) -> bool {
    // A bare BERT-style encoder's main output is the last hidden state; the pooler (kept so the
    // folder saves back whole) feeds only `pooler_output`.
    let bare_encoder = ["bert", "roberta", "albert"].contains(&model);
    // This T5 folder stores its own encoder and decoder embeddings and head, with values unlike
    // `shared`, so (as `transformers` does then) nothing reads `shared`.
    let untied_t5 = model == "t5-v1_1" && param == "shared.weight";
    bare_encoder && param.contains("pooler") || untied_t5
}

#[test]
fn every_parameter_receives_a_gradient() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 25, "fixtures missing: {dirs:?}");
    let dev = Device::Cpu;
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = AutoModel::load(&dir, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = read_safetensors(&dir.join("expected.safetensors"), &dev).unwrap();
        let input = |key: &str| {
            (expected.get(&format!("batch.{key}"))).map(|t| t.to_dtype(DType::U32).unwrap())
        };
        let inputs = ModelInputs {
            input_ids: input("input_ids").unwrap(),
            attention_mask: input("attention_mask"),
            token_type_ids: input("token_type_ids"),
            decoder_input_ids: input("decoder_input_ids"),
            output_attentions: false,
            predict_positions: None,
        };
        let out = model.model.forward(&inputs, &mut Ctx::eval()).unwrap();
        // A random projection of the output (and of a pre-training head's sentence-pair
        // logits), so no gradient cancels by symmetry.
        let project = |t: &Tensor| {
            let direction = Tensor::randn(0f32, 1.0, t.shape(), &dev).unwrap();
            (t * direction).unwrap().sum_all().unwrap()
        };
        let mut loss = project(&out.output);
        if let Some(pair) = &out.pair_logits {
            loss = (loss + project(pair)).unwrap();
        }
        let missing = model
            .store
            .without_gradient(&loss.backward().unwrap())
            .unwrap();
        let missing: Vec<&String> = missing.iter().filter(|p| !unused(&name, p)).collect();
        assert!(missing.is_empty(), "{name}: no gradient for {missing:?}");
        let named = model.store.named();
        let checked = named.iter().filter(|(p, _)| !unused(&name, p)).count();
        assert!(checked > 10, "{name}: only {checked} parameters");
    }
}
