//! Helpers shared by the pre-training tests: the tiny corpus and very small models of each family.
#![allow(dead_code)]

use lingo_tasks::{CorpusFiles, Objective, PretrainRecipe, PretrainTask};
use lingo_train::Trainer;
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers/corpus.txt")
}

pub fn files(dir: &Path, train: Vec<PathBuf>) -> CorpusFiles {
    CorpusFiles {
        train,
        valid: Vec::new(),
        cache_root: dir.join("cache"),
    }
}

/// A recipe for a very small model of `preset`'s family.
pub fn recipe(preset: &str, objective: Objective, steps: usize) -> PretrainRecipe {
    let small = match preset {
        "gpt2-tiny" => json!({"n_layer": 1, "n_embd": 32, "n_head": 2, "n_inner": 64}),
        "t5-tiny" => json!({"num_layers": 1, "num_decoder_layers": 1, "d_model": 32,
                            "d_kv": 16, "num_heads": 2, "d_ff": 64}),
        "electra-small" => json!({"num_hidden_layers": 2, "hidden_size": 32,
                                  "num_attention_heads": 4, "intermediate_size": 64,
                                  "embedding_size": 16}),
        "albert-mini" => json!({"num_hidden_layers": 2, "hidden_size": 32,
                                "num_attention_heads": 2, "intermediate_size": 64,
                                "embedding_size": 16}),
        _ => json!({"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                    "intermediate_size": 64}),
    };
    let mut r = PretrainRecipe {
        model: preset.into(),
        objective: Some(objective),
        max_length: 32,
        vocab_size: 300,
        valid_fraction: 0.1,
        config: small.as_object().unwrap().clone(),
        ..PretrainRecipe::default()
    };
    r.train.steps = steps;
    r.train.batch_size = 8;
    r.train.eval_every = steps;
    r.train.eval_batches = 4;
    r.train.checkpoint_every = steps;
    r.train.schedule.warmup_steps = 2;
    if let lingo_train::OptimizerConfig::AdamW(c) = &mut r.train.optimizer {
        c.lr = 3e-3;
    }
    r
}

pub fn quiet(_: &str) {}

pub fn run(recipe: PretrainRecipe, out: &Path, resume: bool) -> lingo_train::TrainReport {
    run_with(recipe, None, out, resume)
}

/// [`run`] with a given tokenizer (a folder or `tokenizer.json`) instead of one trained for the run.
pub fn run_with(
    recipe: PretrainRecipe,
    tokenizer: Option<&Path>,
    out: &Path,
    resume: bool,
) -> lingo_train::TrainReport {
    let tmp = out.parent().unwrap();
    let mut task = PretrainTask::new(recipe, &files(tmp, vec![corpus()]), tokenizer, out, &quiet)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut trainer = Trainer::new(task.recipe.train.clone(), out);
    trainer.progress = false;
    trainer.run(&mut task, resume).unwrap()
}
