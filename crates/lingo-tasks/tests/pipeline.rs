//! Pipeline parallelism (GPipe) over ranks that are threads of this process: a GPT cut into 2 and
//! 3 stages computes the loss and every parameter's gradient that the whole model computes in one
//! process, to 1e-5 — with tied and untied embeddings, over several micro-batches.

use candle_core::{Device, Tensor};
use lingo_dist::{Collective, InProcess};
use lingo_models::{Gpt, GptConfig};
use lingo_nn::pipeline::PipelineStage;
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::grads::Gradients;
use lingo_train::pipeline::gpipe_step;
use std::collections::HashMap;

mod runs;
use runs::relative_difference;

fn config(tied: bool) -> GptConfig {
    GptConfig {
        vocab_size: 40,
        context_length: 12,
        d_model: 32,
        n_heads: 2,
        n_layers: 5,
        dropout: 0.0,
        tied_embeddings: tied,
        ..Default::default()
    }
}

fn model(config: &GptConfig) -> (Gpt, ParamStore) {
    let store = ParamStore::new(7, &Device::Cpu);
    let gpt = Gpt::new(config.clone(), &store.root()).unwrap();
    (gpt, store)
}

/// Four micro-batches of 3 × 12 token ids and their next-token targets.
fn micro_batches() -> Vec<Vec<Tensor>> {
    let mut rng = LingoRng::new(3);
    (0..4)
        .map(|_| {
            let ids: Vec<u32> = (0..3 * 13).map(|_| rng.below(40) as u32).collect();
            let all = Tensor::from_vec(ids, (3, 13), &Device::Cpu).unwrap();
            vec![all.narrow(1, 0, 12).unwrap(), all.narrow(1, 1, 12).unwrap()]
        })
        .collect()
}

/// The mean loss and its gradients, whole model, one process.
/// The whole model's mean loss over `batches` (`loss` of each) and its gradients, by name.
fn whole_model(
    store: &ParamStore,
    batches: &[Vec<Tensor>],
    loss: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> (f64, HashMap<String, Vec<f32>>) {
    let named = store.named();
    let (mut mean, mut total) = (0.0, None);
    for b in batches {
        let l = loss(b).unwrap();
        mean += l.to_scalar::<f32>().unwrap() as f64 / batches.len() as f64;
        let scaled = (l / batches.len() as f64).unwrap();
        let grads = Gradients::from_store(&named, &scaled.backward().unwrap());
        Gradients::sum_into(&mut total, grads).unwrap();
    }
    let grads = named
        .iter()
        .zip(total.unwrap().grads)
        .filter_map(|((n, _), g)| Some((n.clone(), g?.flatten_all().ok()?.to_vec1().ok()?)))
        .collect();
    (mean, grads)
}

fn reference(config: &GptConfig) -> (f64, HashMap<String, Vec<f32>>) {
    let (gpt, store) = model(config);
    whole_model(&store, &micro_batches(), |b| {
        gpt.loss(&b[0], &b[1], &mut Ctx::train(LingoRng::new(0)))
    })
}

/// A rank's mean loss and its stage's gradients, by parameter name.
type StageResult = (f64, Vec<(String, Vec<f32>)>);

/// Runs one GPipe step on `stages` ranks (threads): `stage` builds the rank's model, cuts its
/// stage and hands it to `step`, which runs it.
fn on_stages(
    stages: usize,
    stage: impl Fn(&InProcess, &dyn Fn(&dyn PipelineStage) -> StageResult) -> StageResult + Sync,
    batches: &[Vec<Tensor>],
) -> Vec<StageResult> {
    std::thread::scope(|s| {
        let handles: Vec<_> = InProcess::group(stages)
            .into_iter()
            .map(|c| {
                let stage = &stage;
                s.spawn(move || {
                    let step = |st: &dyn PipelineStage| -> StageResult {
                        let mut ctx = Ctx::train(LingoRng::new(0));
                        let (loss, grads) = gpipe_step(&c, st, batches, &mut ctx).unwrap();
                        let grads = (st.params().iter().zip(grads.grads))
                            .filter_map(|((n, _), g)| {
                                Some((n.clone(), g?.flatten_all().ok()?.to_vec1().ok()?))
                            })
                            .collect();
                        (loss, grads)
                    };
                    stage(&c, &step)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Checks every rank's loss and gradients against the whole model's; how many gradients there were.
fn compare(results: &[StageResult], want: &(f64, HashMap<String, Vec<f32>>), label: &str) -> usize {
    let mut seen = 0;
    for (loss, grads) in results {
        assert!(
            (loss - want.0).abs() <= 1e-5 * want.0,
            "{label}: {loss} vs {}",
            want.0
        );
        for (name, g) in grads {
            let drift = relative_difference(&want.1[name], g);
            assert!(drift <= 1e-5, "{label}, {name}: {drift:e}");
            seen += 1;
        }
    }
    seen
}

#[test]
fn a_gpt_in_stages_computes_what_the_whole_model_computes() {
    for tied in [false, true] {
        let config = config(tied);
        let want = reference(&config);
        for stages in [2, 3] {
            let label = format!("tied {tied}, {stages} stages");
            let results = on_stages(
                stages,
                |c, step| {
                    let (gpt, store) = model(&config);
                    step(&gpt.stage(&store, c.rank(), stages))
                },
                &micro_batches(),
            );
            compare(&results, &want, &label);
            let mut seen = HashMap::new();
            for (name, _) in results.iter().flat_map(|r| &r.1) {
                *seen.entry(name.clone()).or_insert(0) += 1;
            }
            // Every parameter is some stage's; the tied embedding is the first's and the last's.
            assert_eq!(seen.len(), want.1.len(), "{label}");
            let wte = seen["transformer.wte.weight"];
            assert_eq!(wte, if tied { 2 } else { 1 });
        }
    }
}

mod encoder {
    use super::*;
    use lingo_models::bert::{BertConfig, BertModel, Family, Head};
    use lingo_models::ModelInputs;

    fn config() -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 4,
            "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
            "max_position_embeddings": 16, "type_vocab_size": 2,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "id2label": {"0": "a", "1": "b", "2": "c"}
        }))
        .unwrap()
    }

    fn model(head: Head) -> (BertModel, ParamStore) {
        let store = ParamStore::new(11, &Device::Cpu);
        let bert = BertModel::new(Family::Bert, head, config(), true, &store.root()).unwrap();
        (bert, store)
    }

    /// Three micro-batches of 2 × 10 ids with padding, and labels for `head`.
    fn micro_batches(head: Head) -> Vec<Vec<Tensor>> {
        let mut rng = LingoRng::new(5);
        (0..3)
            .map(|_| {
                let ids: Vec<u32> = (0..20).map(|_| 1 + rng.below(49) as u32).collect();
                let mask: Vec<u32> = (0..20).map(|i| u32::from(i % 10 < 7 + i / 10)).collect();
                let labels = match head {
                    Head::MaskedLm => {
                        let l: Vec<i64> = (0..20)
                            .map(|i| match rng.below(3) {
                                0 if mask[i] == 1 => ids[i] as i64,
                                _ => -100,
                            })
                            .collect();
                        Tensor::from_vec(l, (2, 10), &Device::Cpu).unwrap()
                    }
                    _ => Tensor::new(&[rng.below(3) as i64, rng.below(3) as i64], &Device::Cpu)
                        .unwrap(),
                };
                vec![
                    Tensor::from_vec(ids, (2, 10), &Device::Cpu).unwrap(),
                    Tensor::from_vec(mask, (2, 10), &Device::Cpu).unwrap(),
                    labels,
                ]
            })
            .collect()
    }

    fn reference(head: Head) -> (f64, HashMap<String, Vec<f32>>) {
        let (bert, store) = model(head);
        whole_model(&store, &micro_batches(head), |b| {
            let mut inputs = ModelInputs::new(b[0].clone()).with_attention_mask(b[1].clone());
            let mut labels = b[2].clone();
            if head == Head::MaskedLm {
                // As masked-LM pre-training runs the whole model: the head at the labels only.
                let (at, kept) = lingo_models::contracts::labelled_positions(&labels)?;
                inputs = inputs.with_predict_positions(at);
                labels = kept;
            }
            let ctx = &mut Ctx::train(LingoRng::new(0));
            let logits = bert.forward(&inputs, ctx)?.output;
            let options = lingo_kernels::CrossEntropy {
                ignore_index: Some(-100),
                ..Default::default()
            };
            lingo_kernels::cross_entropy(&logits, &labels, options)
        })
    }

    #[test]
    fn an_encoder_in_stages_computes_what_the_whole_model_computes() {
        for head in [Head::MaskedLm, Head::SequenceClassification] {
            let want = reference(head);
            for stages in [2, 3] {
                let label = format!("{head:?}, {stages} stages");
                let results = on_stages(
                    stages,
                    |c, step| {
                        let (bert, store) = model(head);
                        step(&bert.stage(&store, c.rank(), stages).unwrap())
                    },
                    &micro_batches(head),
                );
                let seen = compare(&results, &want, &label);
                // Every parameter with a gradient is some stage's (the tied word embedding
                // the first's and the last's).
                let tied = usize::from(head == Head::MaskedLm);
                assert_eq!(seen, want.1.len() + tied, "{label}");
            }
        }
    }
}
