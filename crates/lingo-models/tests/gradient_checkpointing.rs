//! Gradient checkpointing changes memory, not mathematics: with dropout on, the gradients of every
//! parameter equal those of the ordinary backward pass (the recomputation replays the same
//! dropout masks), for the BERT family and GPT-2.

use candle_core::{DType, Device, Tensor};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::ModelInputs;
use lingo_nn::params::read_safetensors;
use lingo_nn::recompute::Recomputed;
use lingo_nn::{Ctx, LingoRng};
use std::path::PathBuf;

fn gradients(name: &str, checkpointing: bool) -> Vec<(String, Vec<f32>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name);
    let options = LoadOptions {
        dropout: Some(0.2),
        ..LoadOptions::default()
    };
    let loaded = AutoModel::load(&dir, &options).unwrap();
    let expected = read_safetensors(&dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let input = |k: &str| {
        expected
            .get(&format!("batch.{k}"))
            .map(|t| t.to_dtype(DType::U32).unwrap())
    };
    let mut inputs = ModelInputs::new(input("input_ids").unwrap());
    inputs.attention_mask = input("attention_mask");
    let mut ctx = Ctx::train(LingoRng::new(7));
    if checkpointing {
        ctx.recompute = Some(Recomputed::for_params(&loaded.store));
    }
    let out = loaded.model.forward(&inputs, &mut ctx).unwrap().output;
    // The same fixed direction in both runs, so no gradient cancels by symmetry.
    let direction = Tensor::arange(0u32, out.elem_count() as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(0.37, 0.0)
        .unwrap()
        .sin()
        .unwrap()
        .reshape(out.shape())
        .unwrap();
    let loss = (out * direction).unwrap().sum_all().unwrap();
    let mut grads = loss.backward().unwrap();
    if let Some(r) = ctx.recompute.take() {
        grads.extend(r.take()).unwrap();
    }
    loaded
        .store
        .named()
        .into_iter()
        .map(|(n, v)| {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {n}"));
            (n, g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn recomputed_gradients_equal_the_ordinary_ones() {
    for name in ["bert-mlm", "albert-mlm", "gpt2"] {
        let (plain, recomputed) = (gradients(name, false), gradients(name, true));
        assert_eq!(plain.len(), recomputed.len());
        for ((n, a), (_, b)) in plain.iter().zip(&recomputed) {
            let scale = a.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                diff / scale < 1e-5,
                "{name}: {n} differs by {diff} (scale {scale})"
            );
        }
    }
}
