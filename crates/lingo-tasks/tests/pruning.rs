//! Pruning on tiny checkpoints: head cuts equal `transformers`' `prune_heads`, removing a head or
//! a neuron changes nothing but what zeroing its output would, magnitude masks hit their sparsity
//! exactly, head importance is the derivative of the loss by a head's gate, and pruning while
//! fine-tuning keeps its zeros and resumes exactly.

mod toy;

use candle_core::{DType, Device, Tensor};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::bert::BertModel;
use lingo_models::ModelInputs;
use lingo_nn::params::{assign, read_safetensors};
use lingo_nn::{Ctx, ParamStore};
use lingo_tasks::pruning::{
    self, cubic_sparsity, Cut, GradualPruning, Masks, PruningSchedule, Scope,
};
use lingo_tasks::ClassifyTask;
use lingo_train::TrainTask;
use std::path::Path;
use toy::{fixture, quiet, recipe, toy_data};

fn open(dir: &Path) -> (BertModel, ParamStore, serde_json::Value) {
    let p = AutoModel::load(dir, &LoadOptions::default()).expect("load");
    let AutoModel::Encoder(model) = p.model else {
        panic!("not an encoder")
    };
    (model, p.store, p.config)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The logits of a padded batch of two.
fn logits(model: &BertModel) -> Tensor {
    let ids = Tensor::new(
        &[[2u32, 17, 40, 9, 63, 3], [2, 51, 8, 3, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
    let inputs = ModelInputs {
        input_ids: ids,
        attention_mask: Some(mask),
        token_type_ids: None,
        decoder_input_ids: None,
        output_attentions: false,
        predict_positions: None,
    };
    model.forward(&inputs, &mut Ctx::eval()).unwrap().output
}

#[test]
fn cutting_heads_writes_what_transformers_prune_heads_writes() {
    for name in ["bert-cls", "distilbert-cls"] {
        let (model, store, config) = open(&fixture(name));
        // tools/make_pruning_fixtures.py removes heads {0: [1, 3], 1: [2]}.
        let cut = Cut {
            heads: vec![vec![1, 3], vec![2]],
            neurons: None,
        };
        let (config, tensors) = pruning::cut(&model, &config, &store, &cut).unwrap();
        assert_eq!(
            config["pruned_heads"],
            serde_json::json!({"0": [1, 3], "1": [2]}),
            "{name}"
        );
        let reference = read_safetensors(
            &fixture(&format!("{name}-pruned")).join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        for (n, t) in &tensors {
            let want = &reference[n];
            assert_eq!(t.dims(), want.dims(), "{name}: {n}");
            assert_eq!(max_diff(t, want), 0.0, "{name}: {n}");
        }
    }
}

#[test]
fn a_second_cut_numbers_heads_as_the_first_left_them() {
    let (model, store, config) = open(&fixture("bert-cls-pruned"));
    // Layer 0 kept heads [0, 2]; removing its second leaves [0] and records 2 as pruned.
    let cut = Cut {
        heads: vec![vec![1], vec![]],
        neurons: None,
    };
    let (config, _) = pruning::cut(&model, &config, &store, &cut).unwrap();
    assert_eq!(
        config["pruned_heads"],
        serde_json::json!({"0": [1, 2, 3], "1": [2]})
    );
    let all = Cut {
        heads: vec![vec![0, 1], vec![]],
        neurons: None,
    };
    let err = pruning::cut(&model, &config, &store, &all).unwrap_err();
    assert!(err.to_string().contains("layer 0"), "{err}");
}

/// Zeroes the output-projection columns of `heads` (positions) in `layer`, and the
/// down-projection columns of `neurons`.
fn zero_columns(store: &ParamStore, name: &str, columns: &[usize]) {
    let var = store.get(name).unwrap();
    let width = var.dim(1).unwrap();
    let mask: Vec<f32> = (0..width)
        .map(|c| if columns.contains(&c) { 0.0 } else { 1.0 })
        .collect();
    let mask = Tensor::new(mask.as_slice(), &Device::Cpu).unwrap();
    assign(&var, &var.as_tensor().broadcast_mul(&mask).unwrap()).unwrap();
}

#[test]
fn removing_heads_and_neurons_is_zeroing_their_outputs() {
    let dir = fixture("bert-cls");
    let (model, store, config) = open(&dir);
    let layers = model.layer_params();
    let cut = Cut {
        heads: vec![vec![0], vec![1, 2]],
        neurons: Some(vec![
            (0..37).filter(|n| n % 3 != 0).collect(),
            (0..37).filter(|n| n % 3 != 1).take(24).collect(),
        ]),
    };
    let (new_config, tensors) = pruning::cut(&model, &config, &store, &cut).unwrap();
    assert_eq!(new_config["intermediate_size"], 24);
    let tmp = tempfile::tempdir().unwrap();
    lingo_models::hf::save_tensors(tmp.path(), &new_config, tensors).unwrap();
    let (pruned, pruned_store, _) = open(tmp.path());
    assert!(pruned_store.num_params() < store.num_params());

    // The reference: the unpruned model with those heads' and neurons' outputs zeroed.
    let head_dim = 8;
    for (l, layer) in layers.iter().enumerate() {
        let columns: Vec<usize> = cut.heads[l]
            .iter()
            .flat_map(|h| h * head_dim..(h + 1) * head_dim)
            .collect();
        zero_columns(&store, &format!("{}.weight", layer.output), &columns);
        let kept = &cut.neurons.as_ref().unwrap()[l];
        let dropped: Vec<usize> = (0..37).filter(|n| !kept.contains(n)).collect();
        zero_columns(&store, &format!("{}.weight", layer.down), &dropped);
    }
    let d = max_diff(&logits(&pruned), &logits(&model));
    assert!(d < 1e-5, "pruned and zeroed models differ by {d}");
}

#[test]
fn magnitude_masks_hit_the_sparsity_exactly() {
    let (_, store, _) = open(&fixture("bert-cls"));
    let weights = pruning::prunable_weights(&store);
    // q, k, v, output, up, down in each of 2 layers; not the embeddings, pooler or classifier.
    assert_eq!(weights.len(), 12);
    assert!(weights
        .iter()
        .all(|(n, _)| n.contains(".layer.") && n.ends_with(".weight")));
    let zeros = |t: &Tensor| -> usize {
        t.eq(0f32)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as usize
    };
    let before: Vec<Tensor> = weights
        .iter()
        .map(|(_, v)| v.as_tensor().copy().unwrap())
        .collect();

    let masks = Masks::magnitude(&weights, 0.7, Scope::Layer).unwrap();
    masks.apply().unwrap();
    for ((name, var), old) in weights.iter().zip(&before) {
        let n = var.elem_count();
        assert_eq!(
            zeros(var.as_tensor()),
            (0.7 * n as f64).round() as usize,
            "{name}"
        );
        // What was kept is larger than what went.
        let w = old.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let now = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kept_min = w
            .iter()
            .zip(&now)
            .filter(|(_, &x)| x != 0.0)
            .map(|(a, _)| a.abs())
            .fold(f32::MAX, f32::min);
        let gone_max = w
            .iter()
            .zip(&now)
            .filter(|(_, &x)| x == 0.0)
            .map(|(a, _)| a.abs())
            .fold(0.0, f32::max);
        assert!(
            kept_min >= gone_max,
            "{name}: kept {kept_min} < pruned {gone_max}"
        );
    }
    assert!((masks.sparsity().unwrap() - 0.7).abs() < 1e-3);

    // Global: one threshold, the total exact, matrices pruned unevenly.
    for ((_, var), old) in weights.iter().zip(&before) {
        assign(var, old).unwrap();
    }
    let masks = Masks::magnitude(&weights, 0.5, Scope::Global).unwrap();
    masks.apply().unwrap();
    let total: usize = weights.iter().map(|(_, v)| v.elem_count()).sum();
    let pruned: usize = weights.iter().map(|(_, v)| zeros(v.as_tensor())).sum();
    assert_eq!(pruned, (0.5 * total as f64).round() as usize);
    let fractions: Vec<f64> = weights
        .iter()
        .map(|(_, v)| zeros(v.as_tensor()) as f64 / v.elem_count() as f64)
        .collect();
    assert!(
        fractions.iter().any(|&f| (f - 0.5).abs() > 0.01),
        "{fractions:?}"
    );
    assert!(Masks::magnitude(&weights, 1.0, Scope::Layer).is_err());
}

#[test]
fn the_cubic_schedule_prunes_fast_then_slow() {
    assert_eq!(cubic_sparsity(0, 0, 100, 0.8), 0.0);
    assert_eq!(cubic_sparsity(100, 0, 100, 0.8), 0.8);
    assert_eq!(cubic_sparsity(150, 0, 100, 0.8), 0.8);
    // Half way, 7/8 of the target: 0.8 · (1 − 0.5³).
    assert!((cubic_sparsity(50, 0, 100, 0.8) - 0.7).abs() < 1e-12);
    assert_eq!(cubic_sparsity(10, 10, 20, 0.5), 0.0);
}

#[test]
fn head_importance_is_the_loss_derivative_by_the_head_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let train = toy_data(tmp.path(), "train.tsv", 64, 1);
    let mut task = ClassifyTask::new(&fixture("bert"), &train, Some(&train), recipe(1)).unwrap();
    let importance = pruning::importance(&mut task, 1, 16).unwrap();
    assert_eq!(importance.heads.len(), 2);
    assert_eq!(importance.neurons[0].len(), 37);
    let layer = &task.model().layer_params()[1];
    let w = task
        .params()
        .get(&format!("{}.weight", layer.output))
        .unwrap();
    let original = w.as_tensor().copy().unwrap();
    // Scaling head 2's columns of the output projection by 1 ± ε gates its output.
    let loss_with_gate = |task: &mut ClassifyTask, gate: f32| -> f64 {
        let scale: Vec<f32> = (0..32)
            .map(|c| if (16..24).contains(&c) { gate } else { 1.0 })
            .collect();
        let scale = Tensor::new(scale.as_slice(), &Device::Cpu).unwrap();
        assign(&w, &original.broadcast_mul(&scale).unwrap()).unwrap();
        task.start_micro_batch(0);
        let (loss, _) = task.train_loss(16, &mut Ctx::eval()).unwrap();
        loss.to_scalar::<f32>().unwrap() as f64
    };
    let eps = 1e-2;
    let derivative = (loss_with_gate(&mut task, 1.0 + eps as f32)
        - loss_with_gate(&mut task, 1.0 - eps as f32))
        / (2.0 * eps);
    let score = importance.heads[1][2];
    assert!(score > 1e-6, "importance {score}");
    assert!(
        (derivative.abs() - score).abs() < 0.05 * score + 1e-5,
        "finite difference {derivative} vs importance {score}"
    );
    // Ranking: the least important heads go, every layer keeping one.
    let prune = pruning::heads_to_prune(&importance.heads, 0.75).unwrap();
    assert_eq!(prune.iter().map(Vec::len).sum::<usize>(), 6);
    assert!(prune.iter().all(|p| p.len() <= 3));
}

#[test]
fn gradual_pruning_keeps_its_zeros_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let train = toy_data(tmp.path(), "train.tsv", 70, 3);
    let valid = toy_data(tmp.path(), "valid.tsv", 20, 4);
    let schedule = PruningSchedule {
        sparsity: 0.6,
        scope: Scope::Layer,
        begin: 0,
        end: 8,
        every: 2,
    };
    let run = |out: &Path, stop: Option<usize>, resume: bool| -> f64 {
        let task = ClassifyTask::new(&fixture("bert"), &train, Some(&valid), recipe(12)).unwrap();
        let mut task = GradualPruning::new(task, schedule.clone()).unwrap();
        let mut trainer = quiet(&task.task.recipe, out);
        trainer.stop_after = stop;
        trainer.run(&mut task, resume).unwrap();
        task.sparsity().unwrap()
    };
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    let sparsity = run(&whole, None, false);
    assert!((sparsity - 0.6).abs() < 1e-3, "sparsity {sparsity}");
    // Stopped mid-schedule (step 5) and resumed: the same weights, zeros and all.
    run(&parts, Some(5), false);
    run(&parts, None, true);
    let a = std::fs::read(whole.join("model.safetensors")).unwrap();
    let b = std::fs::read(parts.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
    // The saved model holds the zeros.
    let saved = read_safetensors(&whole.join("model.safetensors"), &Device::Cpu).unwrap();
    let q = &saved["bert.encoder.layer.1.attention.self.query.weight"];
    let zero = q
        .eq(0f32)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .mean_all()
        .unwrap();
    assert!((zero.to_scalar::<f32>().unwrap() - 0.6).abs() < 0.01);
}
