//! The toy classification task the fine-tuning, pruning and distillation tests share: sentences
//! from the fixture tokenizer's words, labelled by whether "cat" or "dog" is in them.
#![allow(dead_code)]

use lingo_tasks::FinetuneRecipe;
use lingo_train::Trainer;
use std::path::{Path, PathBuf};

/// A tiny random-weight checkpoint of the model tests.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// `n` labelled sentences (TSV) drawn with `seed`, written to `dir/name`.
pub fn toy_data(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let filler = ["the", "is", "in", "at", "paris", "alice", "bob", "model"];
    let mut rng = lingo_nn::LingoRng::new(seed);
    let mut text = String::from("sentence\tlabel\n");
    for _ in 0..n {
        let positive = rng.below(2) == 1;
        let mut words: Vec<&str> = (0..3 + rng.below(4))
            .map(|_| filler[rng.below(filler.len())])
            .collect();
        let at = rng.below(words.len() + 1);
        words.insert(at, if positive { "cat" } else { "dog" });
        text.push_str(&format!("{}\t{}\n", words.join(" "), u8::from(positive)));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write data");
    path
}

/// A recipe for `steps` steps of 16 examples of at most 16 tokens, AdamW at 3e-3.
pub fn recipe(steps: usize) -> FinetuneRecipe {
    let mut r = FinetuneRecipe {
        max_length: 16,
        epochs: None,
        warmup_ratio: Some(0.1),
        ..FinetuneRecipe::default()
    };
    r.train.steps = steps;
    r.train.batch_size = 16;
    r.train.eval_every = 0;
    r.train.checkpoint_every = 0;
    r.train.seed = 5;
    r.train.optimizer = serde_json::from_value(
        serde_json::json!({"type": "adamw", "lr": 3e-3, "weight_decay": 0.01}),
    )
    .expect("optimizer");
    r
}

/// A trainer with no progress bar.
pub fn quiet(recipe: &FinetuneRecipe, out: &Path) -> Trainer {
    let mut t = Trainer::new(recipe.train.clone(), out);
    t.progress = false;
    t
}
