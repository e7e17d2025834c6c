//! Pre-training every objective on a tiny corpus (tests/fixtures/tokenizers/corpus.txt): the loss
//! falls, the folder loads back (in the architecture the objective implies) and fine-tunes; a
//! resumed run equals an uninterrupted one; bad input is refused clearly.

use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::bert::Head;
use lingo_tasks::{Objective, PretrainRecipe, PretrainTask};
use lingo_train::Trainer;
use std::path::{Path, PathBuf};

mod common;
use common::{corpus, files, quiet, recipe, run};

#[test]
fn every_objective_learns_and_saves_a_loadable_folder() {
    let cases = [
        ("bert-tiny", Objective::Mlm, "BertForMaskedLM"),
        ("bert-tiny", Objective::MlmNsp, "BertForPreTraining"),
        ("roberta-mini", Objective::Mlm, "RobertaForMaskedLM"),
        ("albert-mini", Objective::MlmSop, "AlbertForPreTraining"),
        ("gpt2-tiny", Objective::Clm, "GPT2LMHeadModel"),
        (
            "t5-tiny",
            Objective::SpanCorruption,
            "T5ForConditionalGeneration",
        ),
    ];
    for (preset, objective, architecture) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model");
        // T5's decoder starts from nothing but sentinels: it takes longer to get going.
        let steps = if preset == "t5-tiny" { 120 } else { 40 };
        let report = run(recipe(preset, objective, steps), &out, false);
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(out.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let (start, end) = (first["loss"].as_f64().unwrap(), report.train_loss.unwrap());
        assert!(
            end < start - 0.5,
            "{preset} {objective:?}: training loss {start:.3} → {end:.3}"
        );
        let loaded = AutoModel::load(&out, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{preset}: {e}"));
        assert_eq!(loaded.config["architectures"][0], architecture);
        assert!(loaded.report.newly_initialized.is_empty(), "{preset}");
        for f in ["tokenizer.json", "tokenizer_config.json", "recipe.json"] {
            assert!(out.join(f).is_file(), "{preset}: {f}");
        }
        if objective == Objective::ReplacedToken {
            // The generator is saved beside the discriminator, a quarter as wide, with the
            // same (shared) embeddings.
            let generator = AutoModel::load(&out.join("generator"), &LoadOptions::default())
                .unwrap_or_else(|e| panic!("generator: {e}"));
            assert_eq!(generator.config["architectures"][0], "ElectraForMaskedLM");
            assert_eq!(generator.config["hidden_size"], 8);
            let table = |l: &lingo_models::auto::Loaded| {
                l.store
                    .get("electra.embeddings.word_embeddings.weight")
                    .unwrap()
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(table(&generator), table(&loaded), "shared embeddings");
            let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
            assert!(metrics.contains("replaced_accuracy"), "{metrics}");
        }
        if preset.starts_with("bert") {
            // The pre-trained encoder takes a new classification head, as fine-tuning loads it.
            let options = LoadOptions {
                head: Some(Head::SequenceClassification),
                ..LoadOptions::default()
            }
            .with_num_labels(2);
            let cls = AutoModel::load(&out, &options).unwrap();
            assert!(cls
                .report
                .newly_initialized
                .iter()
                .all(|n| n.starts_with("classifier") || n.contains("pooler")));
        }
    }
}

#[test]
fn a_resumed_run_draws_the_same_masks_and_ends_in_the_same_place() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let mut r = recipe("bert-tiny", Objective::Mlm, 8);
    r.masking.whole_word = true;
    r.train.eval_every = 4;
    r.train.checkpoint_every = 4;
    let tokenizer = tmp.path().join("tok");
    // One tokenizer for both runs: training one is not bit-reproducible (see tokenizer_training).
    let spec = r.tokenizer_spec().unwrap();
    let corpus_lines =
        lingo_data::Corpus::new(vec![corpus()], lingo_data::DocumentBreak::Line).unwrap();
    let tok = spec.train(corpus_lines.lines()).unwrap();
    spec.save(&tok, &tokenizer, 32).unwrap();
    let go = |out: &Path, steps: usize, stop: Option<usize>, resume: bool| {
        let mut task = PretrainTask::new(
            r.clone(),
            &files(tmp.path(), vec![corpus()]),
            Some(&tokenizer),
            out,
            &quiet,
        )
        .unwrap();
        let mut cfg = task.recipe.train.clone();
        cfg.steps = steps;
        let mut trainer = Trainer::new(cfg, out);
        trainer.progress = false;
        trainer.stop_after = stop;
        trainer.run(&mut task, resume).unwrap()
    };
    let a = go(&whole, 8, None, false);
    let interrupted = go(&split, 8, Some(4), false);
    assert!(interrupted.interrupted);
    let b = go(&split, 8, None, true);
    // Same masks, same order, same dropout: the same run. (Sums split across threads may round
    // in another order under load, so equal to float precision rather than bit for bit; other
    // masks would move the loss by far more.)
    let near = |x: Option<f64>, y: Option<f64>, what: &str| {
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!((x - y).abs() <= 1e-6 * x.abs(), "{what}: {x} vs {y}");
    };
    near(a.train_loss, b.train_loss, "train loss");
    near(a.val_loss, b.val_loss, "val loss");
    let weights = |dir: &Path| {
        let t = lingo_nn::params::read_safetensors(
            &dir.join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut named: Vec<(String, Vec<f32>)> = t
            .into_iter()
            .map(|(n, v)| (n, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    for ((n, x), (_, y)) in weights(&whole).iter().zip(&weights(&split)) {
        let diff = x.iter().zip(y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5, "{n} differs by {diff}");
    }
}

fn refused(recipe: PretrainRecipe, train: Vec<PathBuf>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    match PretrainTask::new(recipe, &files(tmp.path(), train), None, &out, &quiet) {
        Ok(_) => panic!("accepted"),
        Err(e) => {
            assert!(e.is_bad_input(), "{e}");
            e.to_string()
        }
    }
}

#[test]
fn bad_input_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let empty = write("empty.txt", "\n\n");
    let err = refused(recipe("bert-tiny", Objective::Mlm, 2), vec![empty]);
    assert!(err.contains("no text"), "{err}");

    let short = write("short.txt", "one two three.\n\nfour five six.\n\nseven.\n");
    let mut r = recipe("bert-tiny", Objective::Mlm, 2);
    r.vocab_size = 60;
    r.valid_fraction = 0.34;
    let err = refused(r, vec![short]);
    assert!(err.contains("shorter than one example"), "{err}");

    let mut r = recipe("bert-tiny", Objective::Mlm, 2);
    r.vocab_size = 3;
    let err = refused(r, vec![corpus()]);
    assert!(err.contains("vocab_size 3"), "{err}");

    let err = refused(recipe("gpt2-tiny", Objective::MlmNsp, 2), vec![corpus()]);
    assert!(
        err.contains("next-sentence prediction is for BERT") && err.contains("gpt2"),
        "{err}"
    );

    let mut r = recipe("bert-tiny", Objective::MlmNsp, 2);
    r.documents = lingo_data::DocumentBreak::Line;
    let err = refused(r, vec![corpus()]);
    assert!(err.contains("several sentences"), "{err}");

    let err = refused(recipe("bert-huge", Objective::Mlm, 2), vec![corpus()]);
    assert!(err.contains("no model preset `bert-huge`"), "{err}");
}
