//! `lingo finetune ner` end to end on a tiny random-weight `BertModel` checkpoint: a new
//! token-classification head learns a toy tagging rule (with words split into several sub-tokens),
//! saves a folder the NER pipeline loads, and scores it with seqeval.

use lingo_tasks::encoder::EncoderPipeline;
use lingo_tasks::token_classification::evaluate_tagger;
use lingo_tasks::{FinetuneRecipe, TokenClassifyTask};
use lingo_train::Trainer;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// CoNLL-style sentences: names are PER ("alices" splits into `alice ##s`), animals ANI, the rest O.
fn toy_conll(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let (names, animals, filler) = (
        ["alice", "bob", "alices"],
        ["cat", "dog"],
        ["the", "is", "in", "at", "paris", "model"],
    );
    let mut rng = lingo_nn::LingoRng::new(seed);
    let mut text = String::from("-DOCSTART- -X- O\n\n");
    for _ in 0..n {
        for _ in 0..3 + rng.below(5) {
            let (word, tag) = match rng.below(4) {
                0 => (names[rng.below(3)], "B-PER"),
                1 => (animals[rng.below(2)], "B-ANI"),
                _ => (filler[rng.below(filler.len())], "O"),
            };
            text.push_str(&format!("{word} X {tag}\n"));
        }
        text.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn a_new_tagging_head_learns_and_the_ner_pipeline_loads_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let train = toy_conll(tmp.path(), "train.txt", 300, 1);
    let valid = toy_conll(tmp.path(), "valid.txt", 60, 2);
    let mut recipe = FinetuneRecipe {
        max_length: 24,
        epochs: None,
        ..FinetuneRecipe::default()
    };
    recipe.train.steps = 100;
    recipe.train.batch_size = 16;
    recipe.train.eval_every = 0;
    recipe.train.checkpoint_every = 0;
    recipe.train.optimizer =
        serde_json::from_value(serde_json::json!({"type": "adamw", "lr": 3e-3}))
            .expect("optimizer");
    let mut task =
        TokenClassifyTask::new(&fixture("bert"), &train, Some(&valid), recipe).expect("task");
    assert_eq!(task.labels(), ["B-ANI", "B-PER", "O"]);
    let out = tmp.path().join("out");
    let mut trainer = Trainer::new(task.recipe.train.clone(), &out);
    trainer.progress = false;
    trainer.run(&mut task, false).expect("training");

    let scores = evaluate_tagger(&out, &valid, 24, 16, None).expect("evaluate");
    assert!(scores["f1"] > 0.95, "{scores:?}");
    assert!(
        scores["PER_f1"] > 0.9 && scores["strict_f1"] > 0.95,
        "{scores:?}"
    );
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert!(log.contains("\"f1\":"), "the run logs entity F1");

    let pipeline = EncoderPipeline::load(&out).expect("ner pipeline");
    let entities = pipeline.ner("the dog is at alices").expect("ner");
    let found: Vec<(&str, &str)> = entities
        .iter()
        .map(|e| (e.entity_group.as_str(), e.word.as_str()))
        .collect();
    // The pipeline tags sub-tokens; `##s` was never trained (only first sub-tokens are), so only the
    // word's start is asserted.
    assert_eq!(found[0], ("ANI", "dog"), "{found:?}");
    assert!(
        found[1..]
            .iter()
            .any(|(g, w)| *g == "PER" && w.starts_with("alice")),
        "{found:?}"
    );

    // A tag the training data never had is refused, naming the file and sentence.
    let odd = tmp.path().join("odd.txt");
    std::fs::write(&odd, "bob X B-PER\n\ncat X B-LOC\n").expect("write");
    let err = evaluate_tagger(&out, &odd, 24, 16, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("odd.txt") && err.contains("line 3") && err.contains("`B-LOC`"),
        "{err}"
    );
}
