//! `lingo finetune classify` end to end on a tiny random-weight `BertModel` checkpoint (no head):
//! a new classifier grows on it, learns a toy task, saves a folder the pipelines load, resumes
//! exactly, and refuses bad data with the file and line.

mod toy;

use lingo_data::Tokenizer;
use lingo_tasks::classification::evaluate_classifier;
use lingo_tasks::encoder::EncoderPipeline;
use lingo_tasks::ClassifyTask;
use std::path::Path;
use toy::{fixture, quiet, recipe, toy_data};

#[test]
fn a_new_head_learns_and_saves_a_folder_the_pipelines_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let train = toy_data(tmp.path(), "train.tsv", 400, 1);
    let valid = toy_data(tmp.path(), "valid.tsv", 100, 2);
    let mut task =
        ClassifyTask::new(&fixture("bert"), &train, Some(&valid), recipe(120)).expect("task");
    assert_eq!(
        task.report.newly_initialized,
        vec![
            "classifier.weight".to_string(),
            "classifier.bias".to_string()
        ]
    );
    assert_eq!(task.labels(), ["0".to_string(), "1".to_string()]);
    let out = tmp.path().join("out");
    let report = quiet(&task.recipe, &out)
        .run(&mut task, false)
        .expect("training");
    assert_eq!(report.steps, 120);

    // The metrics log holds the validation accuracy; the task learned the toy rule.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value = log
        .lines()
        .rfind(|l| l.contains("accuracy"))
        .map(|l| serde_json::from_str(l).expect("record"))
        .expect("an evaluation record");
    let accuracy = last["metrics"]["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy >= 0.95, "validation accuracy {accuracy}");

    // The folder is a Hugging Face sequence-classification folder.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "1");
    assert_eq!(config["label2id"]["0"], 0);

    // `lingo evaluate` and the classify pipeline load it and agree with the training run.
    let scored = evaluate_classifier(&out, &valid, 16, 32, None).expect("evaluate");
    assert!((scored["accuracy"].as_f64().expect("accuracy") - accuracy).abs() < 1e-9);
    let pipeline = EncoderPipeline::load(&out).expect("pipeline");
    let top = &pipeline.classify("alice is at the cat").expect("classify")[0];
    assert_eq!(top.label, "1");
    let top = &pipeline.classify("bob is in dog paris").expect("classify")[0];
    assert_eq!(top.label, "0");
}

#[test]
fn an_interrupted_fine_tune_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // 70 examples in batches of 16: epochs end mid-run, so the resumed order must carry across.
    let train = toy_data(tmp.path(), "train.tsv", 70, 3);
    let valid = toy_data(tmp.path(), "valid.tsv", 20, 4);
    let run = |out: &Path, stop: Option<usize>, resume: bool| {
        let mut task =
            ClassifyTask::new(&fixture("bert"), &train, Some(&valid), recipe(12)).expect("task");
        let mut trainer = quiet(&task.recipe, out);
        trainer.stop_after = stop;
        trainer.run(&mut task, resume).expect("training");
    };
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    run(&whole, None, false);
    run(&parts, Some(7), false);
    run(&parts, None, true);
    let a = std::fs::read(whole.join("model.safetensors")).expect("weights");
    let b = std::fs::read(parts.join("model.safetensors")).expect("weights");
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
}

#[test]
fn bad_data_names_the_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let train = toy_data(tmp.path(), "train.tsv", 30, 5);
    let valid = tmp.path().join("valid.tsv");
    std::fs::write(&valid, "sentence\tlabel\nthe cat\t1\nthe dog\tneutral\n").expect("write");
    let err = ClassifyTask::new(&fixture("bert"), &train, Some(&valid), recipe(1))
        .err()
        .expect("an unknown label is an error")
        .to_string();
    assert!(
        err.contains("valid.tsv:3") && err.contains("`neutral`"),
        "{err}"
    );

    // A classifier with three labels cannot take two-label data without a new head.
    let err = ClassifyTask::new(&fixture("bert-cls"), &train, Some(&train), recipe(1))
        .err()
        .expect("a label count the head contradicts is an error")
        .to_string();
    assert!(
        err.contains("id2label") && err.contains("3 labels"),
        "{err}"
    );

    let mut long = recipe(1);
    long.max_length = 1000;
    let err = ClassifyTask::new(&fixture("bert"), &train, Some(&train), long)
        .err()
        .expect("too long")
        .to_string();
    assert!(err.contains("max_length 1000"), "{err}");
}

#[test]
fn pair_inputs_get_segment_ids() {
    let tokenizer = Tokenizer::load(&fixture("bert").join("tokenizer.json")).expect("tokenizer");
    let enc = lingo_data::TaskTokenizer::new(&tokenizer, 8).expect("task tokenizer");
    let e = enc
        .encode("the cat is in paris", Some("alice"))
        .expect("encode");
    // [CLS] a… [SEP] b [SEP], truncated longest-first to 8 tokens.
    assert_eq!(e.ids.len(), 8);
    assert_eq!(e.ids[0], tokenizer.token_to_id("[CLS]").expect("cls"));
    assert_eq!(
        *e.ids.last().expect("last"),
        tokenizer.token_to_id("[SEP]").expect("sep")
    );
    let second: Vec<u32> = e
        .type_ids
        .iter()
        .rev()
        .take_while(|&&t| t == 1)
        .copied()
        .collect();
    assert!(!second.is_empty() && e.type_ids[0] == 0, "{:?}", e.type_ids);
    assert_eq!(e.sequence_ids[0], None);
    assert_eq!(e.sequence_ids[1], Some(0));
}

/// Early stopping ends the run once accuracy stops improving and leaves the best evaluation's
/// weights in `model.safetensors`; frozen parameters never move; another optimizer and a layer-wise
/// schedule train too.
#[test]
fn early_stopping_keeps_the_best_weights_and_frozen_layers_stay_put() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let train = toy_data(tmp.path(), "train.tsv", 256, 1);
    let valid = toy_data(tmp.path(), "valid.tsv", 64, 2);
    let mut r = recipe(400);
    r.train.eval_every = 10;
    // No later evaluation can beat the first by 2 accuracy points of 1: it stops at the second.
    r.train.early_stopping = Some(
        serde_json::from_value(
            serde_json::json!({"metric": "accuracy", "patience": 1, "threshold": 2.0}),
        )
        .expect("early stopping"),
    );
    r.freeze = vec![lingo_tasks::finetune::Freeze::Embeddings];
    r.layer_lr_decay = Some(0.8);
    let mut task =
        ClassifyTask::new(&fixture("bert"), &train, Some(&valid), r.clone()).expect("task");
    let out = tmp.path().join("out");
    let report = quiet(&task.recipe, &out)
        .run(&mut task, false)
        .expect("train");
    assert!(report.stopped_early, "{report:?}");
    assert_eq!((report.steps, report.best_step), (20, Some(10)));
    let saved = lingo_nn::params::read_safetensors(
        &out.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("model");
    let best = lingo_nn::params::read_safetensors(
        &out.join("best.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("best");
    let initial = lingo_nn::params::read_safetensors(
        &fixture("bert").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("initial");
    let same = |a: &candle_core::Tensor, b: &candle_core::Tensor| {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    for (name, t) in &saved {
        assert!(
            same(t, &best[name]),
            "{name}: model.safetensors is not the best step's"
        );
    }
    let embedding = "bert.embeddings.word_embeddings.weight";
    let original = initial
        .get(embedding)
        .or_else(|| initial.get("embeddings.word_embeddings.weight"))
        .expect("embedding in the fixture");
    assert!(same(&saved[embedding], original), "frozen embeddings moved");
    let layer = saved
        .keys()
        .find(|k| k.contains("layer.0.attention"))
        .expect("a layer");
    let base_name = layer.trim_start_matches("bert.");
    let before = initial
        .get(layer)
        .or_else(|| initial.get(base_name))
        .expect("layer in the fixture");
    assert!(
        !same(&saved[layer], before),
        "layer 0 trains at a decayed rate"
    );

    // Adafactor as transformers recommends it for fine-tuning (a scheduled rate, no parameter
    // scaling) learns the task as well.
    let mut r = recipe(60);
    r.train.optimizer = serde_json::from_value(
        serde_json::json!({"type": "adafactor", "lr": 3e-3, "scale_parameter": false}),
    )
    .expect("adafactor");
    let mut task = ClassifyTask::new(&fixture("bert"), &train, Some(&valid), r).expect("task");
    let out = tmp.path().join("adafactor");
    quiet(&task.recipe, &out)
        .run(&mut task, false)
        .expect("train");
    let scores = evaluate_classifier(&out, &valid, 16, 32, None).expect("evaluate");
    assert!(
        scores["accuracy"].as_f64().expect("accuracy") > 0.9,
        "{scores}"
    );
}
