//! `lingo finetune seq2seq` end to end: the tiny random-weight T5 checkpoint learns a toy
//! "translation" (each word to its partner) with a task prefix, its folder saves in `transformers`'
//! layout and decodes as the task did, a resumed run equals an uninterrupted one, and bad data or
//! recipes are refused clearly; a Lingo Transformer folder fine-tunes through the same path.

use lingo_tasks::seq2seq::{evaluate_seq2seq, PairFile};
use lingo_tasks::{FinetuneRecipe, Seq2SeqFinetune, Translator};
use lingo_train::{TrainTask, Trainer};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lingo-models/tests/fixtures/hf")
        .join(name)
}

/// Word pairs of the fixture tokenizer's whole-word vocabulary: the "translation" of a sentence
/// swaps each word for its partner.
const PARTNERS: [(&str, &str); 6] = [
    ("cat", "dog"),
    ("alice", "bob"),
    ("paris", "model"),
    ("the", "at"),
    ("in", "is"),
    ("la", "le"),
];

fn translate(word: &str) -> &'static str {
    PARTNERS
        .iter()
        .find_map(|&(a, b)| (a == word).then_some(b).or((b == word).then_some(a)))
        .expect("a known word")
}

/// `n` pairs of one or two words as JSON lines with the fields `en` and `xx` (the tiny T5's 8
/// relative-position buckets put distances 2 to 10 in one bucket: it cannot learn longer word
/// orders).
fn toy_pairs(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let words: Vec<&str> = PARTNERS.iter().flat_map(|&(a, b)| [a, b]).collect();
    let mut rng = lingo_nn::LingoRng::new(seed);
    let mut text = String::new();
    for _ in 0..n {
        let source: Vec<&str> = (0..1 + rng.below(2))
            .map(|_| words[rng.below(words.len())])
            .collect();
        let target: Vec<&str> = source.iter().map(|w| translate(w)).collect();
        let line = serde_json::json!({"en": source.join(" "), "xx": target.join(" ")});
        text.push_str(&format!("{line}\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write data");
    path
}

fn recipe(steps: usize) -> FinetuneRecipe {
    let mut r = FinetuneRecipe {
        max_length: 16,
        max_target_length: 8,
        epochs: None,
        warmup_ratio: Some(0.05),
        source_prefix: "la ".into(),
        source_field: "en".into(),
        target_field: "xx".into(),
        dropout: Some(0.0),
        ..FinetuneRecipe::default()
    };
    r.beam = Some(lingo_generate::BeamConfig {
        beam_size: 2,
        max_length: 8,
        ..Default::default()
    });
    r.train.steps = steps;
    r.train.batch_size = 16;
    r.train.eval_every = 0;
    r.train.checkpoint_every = 0;
    r.train.seed = 3;
    r.train.optimizer = serde_json::from_value(
        serde_json::json!({"type": "adamw", "lr": 3e-3, "weight_decay": 0.0}),
    )
    .expect("optimizer");
    r
}

fn quiet(recipe: &FinetuneRecipe, out: &Path) -> Trainer {
    let mut t = Trainer::new(recipe.train.clone(), out);
    t.progress = false;
    t
}

#[test]
fn t5_learns_a_toy_translation_and_its_folder_decodes_the_same() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let train = PairFile::new(&toy_pairs(tmp.path(), "train.jsonl", 600, 1), None);
    let valid = PairFile::new(&toy_pairs(tmp.path(), "valid.jsonl", 40, 2), None);
    let out = tmp.path().join("out");
    let r = recipe(1200);
    let mut task = Seq2SeqFinetune::new(&fixture("t5"), &train, Some(&valid), r.clone())?;
    assert!(task.report.newly_initialized.is_empty());
    let before = task.scores(16)?;
    quiet(&task.recipe, &out).run(&mut task, false)?;
    let after = task.scores(16)?;
    assert!(
        after["rougeL"] > 0.95 && after["rougeL"] > before["rougeL"] + 0.5,
        "ROUGE-L {} before, {} after",
        before["rougeL"],
        after["rougeL"]
    );
    // The folder has the checkpoint's tensors under the same names and shapes, its tokenizer and
    // generation settings, and the recipe; it decodes what the task decoded.
    let names = |dir: &Path| -> anyhow::Result<Vec<(String, Vec<usize>)>> {
        let t = lingo_nn::params::read_safetensors(
            &dir.join("model.safetensors"),
            &candle_core::Device::Cpu,
        )?;
        let mut v: Vec<_> = t
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        v.sort();
        Ok(v)
    };
    assert_eq!(names(&fixture("t5"))?, names(&out)?);
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "finetune.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let (scores, predictions) = evaluate_seq2seq(
        &out,
        &valid,
        &FinetuneRecipe::load(&out.join("finetune.json"))?,
        16,
        None,
    )?;
    assert_eq!(scores, after);
    assert_eq!(predictions.len(), 40);
    let translator = Translator::load(&out)?;
    // The folder remembers its task prefix.
    assert_eq!(translator.source_prefix, "la ");
    let one = translator.translate(&["cat alice".into()], r.beam.as_ref().expect("set"), 1)?;
    assert_eq!(one[0].text, "dog bob");
    Ok(())
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let train = PairFile::new(&toy_pairs(tmp.path(), "train.jsonl", 100, 4), None);
    let mut r = recipe(6);
    r.dropout = None; // the checkpoint's 0.1: masks must resume exactly too
    r.train.checkpoint_every = 3;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut task = Seq2SeqFinetune::new(&fixture("t5"), &train, None, r.clone())?;
    quiet(&r, &a).run(&mut task, false)?;
    let mut task = Seq2SeqFinetune::new(&fixture("t5"), &train, None, r.clone())?;
    let mut first = quiet(&r, &b);
    first.stop_after = Some(3);
    first.run(&mut task, false)?;
    let mut task = Seq2SeqFinetune::new(&fixture("t5"), &train, None, r.clone())?;
    quiet(&r, &b).run(&mut task, true)?;
    assert_eq!(
        std::fs::read(a.join("model.safetensors"))?,
        std::fs::read(b.join("model.safetensors"))?
    );
    Ok(())
}

#[test]
fn bad_data_and_recipes_are_clear_errors() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"en\": \"cat\", \"xx\": \"dog\"}\n{\"en\": \"cat\"}\n",
    )?;
    let err = Seq2SeqFinetune::new(&fixture("t5"), &PairFile::new(&bad, None), None, recipe(1))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("bad.jsonl") && err.contains("record 2") && err.contains("`xx`"),
        "{err}"
    );
    let train = PairFile::new(&toy_pairs(tmp.path(), "t.jsonl", 40, 5), None);
    let mut r = recipe(1);
    r.layer_lr_decay = Some(0.9);
    let err = Seq2SeqFinetune::new(&fixture("t5"), &train, None, r)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("layer_lr_decay"), "{err}");
    // An encoder is not an encoder-decoder.
    let err = Seq2SeqFinetune::new(&fixture("bert"), &train, None, recipe(1))
        .err()
        .expect("refused");
    assert!(err.is_bad_input(), "{err}");
    Ok(())
}

/// Lingo's own Transformer and recurrent model, trained from scratch for two steps, fine-tune
/// through the same task from aligned files, and their folders stay Lingo folders.
#[test]
fn lingo_models_fine_tune_from_aligned_files() -> anyhow::Result<()> {
    use lingo_tasks::translation::{Arch, Seq2SeqRecipe, Seq2SeqTask};
    let tmp = tempfile::tempdir()?;
    let (train, valid) = lingo_data::DateTask::split(400, 20, 7);
    let (src, tgt) = (tmp.path().join("src.txt"), tmp.path().join("tgt.txt"));
    let lines = |side: fn(&(String, String)) -> &String| {
        valid
            .iter()
            .map(side)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(&src, lines(|p| &p.0))?;
    std::fs::write(&tgt, lines(|p| &p.1))?;
    for (arch, model_type) in [
        (Arch::Transformer, "lingo-transformer"),
        (Arch::Rnn, "lingo-rnn-seq2seq"),
    ] {
        let base = tmp.path().join(model_type);
        let mut scratch = Seq2SeqRecipe {
            arch,
            ..Default::default()
        };
        scratch.transformer.d_model = 16;
        scratch.transformer.n_heads = 2;
        scratch.transformer.encoder_layers = 1;
        scratch.transformer.decoder_layers = 1;
        scratch.transformer.d_ff = 32;
        scratch.transformer.max_len = 64;
        scratch.model.embed_dim = 16;
        scratch.model.hidden_size = 16;
        scratch.train.steps = 2;
        scratch.train.batch_size = 8;
        let mut task = Seq2SeqTask::new(scratch, &train, &valid, None)?;
        let mut t = Trainer::new(task.recipe.train.clone(), &base);
        t.progress = false;
        t.run(&mut task, false)?;
        let mut r = recipe(3);
        r.source_prefix.clear();
        r.max_length = 64;
        r.max_target_length = 16;
        let out = tmp.path().join(format!("{model_type}-out"));
        let pairs = PairFile::new(&src, Some(&tgt));
        let mut task = Seq2SeqFinetune::new(&base, &pairs, None, r.clone())?;
        let loss_before = task.eval_loss(8, 0)?;
        quiet(&task.recipe, &out).run(&mut task, false)?;
        assert!(
            task.eval_loss(8, 0)? < loss_before,
            "{model_type}: no progress"
        );
        let config = std::fs::read_to_string(out.join("config.json"))?;
        assert!(config.contains(model_type), "{config}");
        assert!(
            Translator::load(&out).is_ok(),
            "{model_type}: the folder does not load"
        );
    }
    Ok(())
}

/// BART and Marian (with the fixture T5's WordPiece tokenizer lent to them): a few steps train
/// every weight but `final_logits_bias` (a buffer in transformers), and the folder keeps the
/// checkpoint's names and shapes.
#[test]
fn bart_and_marian_keep_their_bias_and_their_layout() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let train = PairFile::new(&toy_pairs(tmp.path(), "train.jsonl", 40, 6), None);
    for name in ["bart", "marian"] {
        let model = tmp.path().join(name);
        std::fs::create_dir(&model)?;
        for file in ["config.json", "model.safetensors", "generation_config.json"] {
            std::fs::copy(fixture(name).join(file), model.join(file))?;
        }
        std::fs::copy(
            fixture("t5").join("tokenizer.json"),
            model.join("tokenizer.json"),
        )?;
        let out = tmp.path().join(format!("{name}-out"));
        let r = recipe(3);
        let mut task = Seq2SeqFinetune::new(&model, &train, None, r)?;
        quiet(&task.recipe, &out).run(&mut task, false)?;
        let read = |dir: &Path| {
            lingo_nn::params::read_safetensors(
                &dir.join("model.safetensors"),
                &candle_core::Device::Cpu,
            )
        };
        let (before, after) = (read(&model)?, read(&out)?);
        let mut names: Vec<&String> = before.keys().collect();
        names.sort();
        let mut saved: Vec<&String> = after.keys().collect();
        saved.sort();
        assert_eq!(names, saved, "{name}: saved names differ");
        let same = |k: &str| -> anyhow::Result<bool> {
            let d = (&before[k] - &after[k])?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            Ok(d == 0.0)
        };
        assert!(
            same("final_logits_bias")?,
            "{name}: final_logits_bias trained"
        );
        assert!(
            !same("model.decoder.layers.0.fc1.weight")?,
            "{name}: the decoder did not train"
        );
    }
    Ok(())
}

/// Long sources are cut to the limit with the end token kept last; labels likewise.
#[test]
fn truncation_keeps_the_end_token() -> anyhow::Result<()> {
    let mut translator = Translator::load(&fixture("t5"))?;
    translator.max_source_length = Some(3);
    let ids = translator.encode_source("the cat alice bob paris")?;
    assert_eq!((ids.len(), ids[2]), (3, 1), "{ids:?}");
    let labels = translator.encode_target("the cat alice bob paris", 4)?;
    assert_eq!((labels.len(), labels[3]), (4, 1), "{labels:?}");
    Ok(())
}
