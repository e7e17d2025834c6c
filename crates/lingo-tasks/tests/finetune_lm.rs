//! `lingo finetune lm` end to end on the tiny random-weight GPT-2 checkpoint: it learns a
//! repetitive text, saves a folder in transformers' GPT-2 layout (names, `[in, out]` Conv1D
//! weights, config), and that folder loads back for generation.

use lingo_data::{Tokenizer, TokenizerKind};
use lingo_tasks::language_model::LanguageModel;
use lingo_tasks::{FinetuneRecipe, LmTask};
use lingo_train::Trainer;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

#[test]
fn gpt2_fine_tunes_and_saves_back_as_gpt2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The fixture GPT-2 has 99 ids and no tokenizer: give it a character tokenizer of its text.
    let model = tmp.path().join("gpt2");
    std::fs::create_dir(&model).expect("mkdir");
    for file in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixture("gpt2").join(file), model.join(file)).expect("copy");
    }
    let text = "the cat sat on the mat. ".repeat(200);
    let tokenizer = Tokenizer::train(TokenizerKind::Char, &text).expect("tokenizer");
    assert!(tokenizer.vocab_size() < 99);
    tokenizer.save(&model.join("tokenizer.json")).expect("save");

    let mut recipe = FinetuneRecipe {
        max_length: 32,
        epochs: None,
        warmup_ratio: None,
        ..FinetuneRecipe::default()
    };
    recipe.train.steps = 200;
    recipe.train.batch_size = 8;
    recipe.train.eval_every = 0;
    recipe.train.checkpoint_every = 0;
    recipe.train.optimizer =
        serde_json::from_value(serde_json::json!({"type": "adamw", "lr": 5e-3})).expect("adamw");
    let mut task = LmTask::finetune(&model, &text, None, &mut recipe).expect("task");
    assert_eq!(task.model.config.dropout, 0.1, "GPT-2's resid_pdrop");
    let out = tmp.path().join("out");
    let mut trainer = Trainer::new(task.recipe.train.clone(), &out);
    trainer.progress = false;
    let report = trainer.run(&mut task, false).expect("train");
    let val = report.val_loss.expect("validated");
    assert!(
        val < 1.0,
        "val loss {val} (a random model is at ln 99 = 4.6)"
    );

    let saved = lingo_nn::params::read_safetensors(
        &out.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("weights");
    let c_attn = &saved["transformer.h.0.attn.c_attn.weight"];
    assert_eq!(
        c_attn.dims(),
        [32, 96],
        "GPT-2's Conv1D layout is [in, out]"
    );
    assert!(saved.contains_key("transformer.wte.weight"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["model_type"], "gpt2");

    let lm = LanguageModel::load(&out).expect("load the fine-tuned folder");
    let cfg = lingo_generate::SamplingConfig {
        max_new_tokens: 12,
        temperature: 0.0,
        ..Default::default()
    };
    let mut rng = lingo_nn::LingoRng::new(0);
    let text = lm
        .generate("the cat s", &cfg, &mut rng, |_| {})
        .expect("generate");
    assert!(
        text.starts_with("at on the m"),
        "the continuation of \"the cat s\": {text:?}"
    );
}
