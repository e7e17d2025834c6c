//! `lingo finetune qa` end to end on a tiny random-weight `BertModel` checkpoint: a new span head
//! learns a toy reading rule over contexts longer than one window (so answers must be found across
//! windows), saves a folder the QA pipeline loads, and scores it as the official SQuAD script does.

use lingo_tasks::encoder::EncoderPipeline;
use lingo_tasks::question_answering::evaluate_qa;
use lingo_tasks::{FinetuneRecipe, QaTask};
use lingo_train::Trainer;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// SQuAD JSON whose answer to "where ?" is the word after the one `at` of each context.
fn toy_squad(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let (places, filler) = (
        ["paris", "cat", "dog", "bob"],
        ["the", "is", "in", "alice", "model", "go", "la", "fa"],
    );
    let mut rng = lingo_nn::LingoRng::new(seed);
    let mut paragraphs = Vec::new();
    for i in 0..n {
        let mut words: Vec<&str> = (0..6 + rng.below(20))
            .map(|_| filler[rng.below(filler.len())])
            .collect();
        let at = rng.below(words.len());
        let place = places[rng.below(places.len())];
        words.splice(at..at, ["at", place]);
        let context = words.join(" ");
        let start = context.find(&format!("at {place}")).expect("placed") + 3;
        paragraphs.push(
            serde_json::json!({"context": context, "qas": [{"id": format!("q{i}"),
            "question": "where ?", "answers": [{"text": place, "answer_start": start}]}]}),
        );
    }
    let path = dir.join(name);
    let data =
        serde_json::json!({"version": "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]});
    std::fs::write(&path, data.to_string()).expect("write");
    path
}

#[test]
fn a_new_span_head_learns_across_windows_and_the_qa_pipeline_loads_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let train = toy_squad(tmp.path(), "train.json", 400, 1);
    let valid = toy_squad(tmp.path(), "valid.json", 60, 2);
    let mut recipe = FinetuneRecipe {
        max_length: 20,
        doc_stride: 6,
        max_answer_length: 4,
        epochs: None,
        ..FinetuneRecipe::default()
    };
    recipe.train.steps = 150;
    recipe.train.batch_size = 16;
    recipe.train.eval_every = 0;
    recipe.train.checkpoint_every = 0;
    recipe.train.optimizer =
        serde_json::from_value(serde_json::json!({"type": "adamw", "lr": 3e-3}))
            .expect("optimizer");
    let mut task =
        QaTask::new(&fixture("bert"), &train, Some(&valid), recipe.clone()).expect("task");
    assert!(
        task.report
            .newly_initialized
            .iter()
            .any(|n| n.contains("qa_outputs")),
        "{:?}",
        task.report
    );
    let out = tmp.path().join("out");
    let mut trainer = Trainer::new(task.recipe.train.clone(), &out);
    trainer.progress = false;
    trainer.run(&mut task, false).expect("training");

    let (scores, answers) = evaluate_qa(&out, &valid, &recipe, 32, None).expect("evaluate");
    assert!(
        scores["exact_match"] > 85.0 && scores["f1"] >= scores["exact_match"],
        "{scores:?}"
    );
    assert_eq!(answers.len(), 60);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert!(log.contains("\"exact_match\":"), "the run logs exact match");

    let pipeline = EncoderPipeline::load(&out).expect("qa pipeline");
    let answer = pipeline
        .answer("where ?", "the model is at dog in la")
        .expect("answer");
    assert_eq!(answer.answer, "dog", "{answer:?}");

    // An answer whose offset does not match its text is refused, naming the file and question.
    let bad = tmp.path().join("bad.json");
    let data = serde_json::json!({"data": [{"title": "t", "paragraphs": [{"context": "go at paris",
        "qas": [{"id": "odd", "question": "where ?", "answers": [{"text": "paris", "answer_start": 2}]}]}]}]});
    std::fs::write(&bad, data.to_string()).expect("write");
    let err = evaluate_qa(&out, &bad, &recipe, 32, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.json") && err.contains("id odd") && err.contains("does not match"),
        "{err}"
    );
}
