//! Tensor parallelism (Megatron) for inference over ranks that are threads of this process: the
//! GPT-2 and BERT checkpoints of the model tests, each layer's heads and feed-forward neurons
//! split over 2 and 4 ranks, give the logits the whole model gives, to 1e-5.

use candle_core::{Device, Tensor};
use lingo_dist::{Collective, InProcess};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::ModelInputs;
use lingo_nn::tensor_parallel::Reduce;
use lingo_nn::Ctx;
use lingo_train::data_parallel::tensor_sum;
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

fn load(name: &str) -> AutoModel {
    AutoModel::load(&fixture(name), &LoadOptions::default())
        .unwrap()
        .model
}

/// Two sequences of 9 tokens, the second padded after 6.
fn inputs(vocab: u32) -> ModelInputs {
    let ids: Vec<u32> = (0..18).map(|i| (i * 7 + 3) % vocab).collect();
    let mask: Vec<u32> = (0..18).map(|i| u32::from(i < 15)).collect();
    ModelInputs::new(Tensor::from_vec(ids, (2, 9), &Device::Cpu).unwrap())
        .with_attention_mask(Tensor::from_vec(mask, (2, 9), &Device::Cpu).unwrap())
}

fn logits(model: &AutoModel, inputs: &ModelInputs) -> Vec<f32> {
    let out = model.forward(inputs, &mut Ctx::eval()).unwrap().output;
    out.flatten_all().unwrap().to_vec1().unwrap()
}

fn split(
    model: &mut AutoModel,
    rank: usize,
    world: usize,
    reduce: &Reduce,
) -> candle_core::Result<()> {
    match model {
        AutoModel::Gpt(gpt) => gpt.tensor_parallel(rank, world, reduce),
        AutoModel::Encoder(bert) => bert.tensor_parallel(rank, world, reduce),
        _ => candle_core::bail!("not a GPT or BERT"),
    }
}

#[test]
fn split_layers_give_the_whole_models_logits() {
    for (name, vocab) in [("gpt2", 99), ("bert-mlm", 99), ("bert", 99)] {
        let inputs = inputs(vocab);
        let want = logits(&load(name), &inputs);
        for world in [2, 4] {
            let got: Vec<Vec<f32>> = std::thread::scope(|s| {
                let handles: Vec<_> = InProcess::group(world)
                    .into_iter()
                    .map(|c| {
                        let inputs = &inputs;
                        s.spawn(move || {
                            let c: Arc<dyn Collective> = Arc::new(c);
                            let mut model = load(name);
                            split(&mut model, c.rank(), world, &tensor_sum(c.clone())).unwrap();
                            logits(&model, inputs)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for rank in got {
                let diff: f64 = (want.iter().zip(&rank))
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                let norm: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum();
                let drift = (diff / norm).sqrt();
                assert!(drift <= 1e-5, "{name} on {world} ranks: {drift:e}");
            }
        }
    }
    // Heads that do not split evenly are refused.
    let mut model = load("gpt2");
    let one: Arc<dyn Collective> = Arc::new(InProcess::group(1).pop().unwrap());
    let e = split(&mut model, 0, 3, &tensor_sum(one))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("4 attention heads do not split evenly over 3 ranks"),
        "{e}"
    );
}
