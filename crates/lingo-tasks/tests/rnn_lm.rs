//! The recurrent language model end to end: it learns a dependency a trigram cannot see (both
//! scored by the one perplexity function), resumes exactly mid-epoch with its carried state,
//! generates from a label, and refuses bad input.

use lingo_data::LabelledText;
use lingo_ngram::{estimate, perplexity, Counts, Smoothing};
use lingo_nn::LingoRng;
use lingo_tasks::rnn_lm::{sentences_of, RnnLmPipeline, RnnLmRecipe, RnnLmTask};
use lingo_train::{OptimizerConfig, Trainer};
use std::path::Path;

/// Sentences `oᵢ f f … f cᵢ`: the closing word repeats the opening one's index across 3–6 random
/// fillers, past any trigram's reach.
fn bracketed(n: usize, seed: u64) -> String {
    let mut rng = LingoRng::new(seed);
    let mut pick = |k: usize| ((rng.uniform() * k as f32) as usize).min(k - 1);
    (0..n)
        .map(|_| {
            let i = pick(4);
            let fillers: Vec<String> = (0..3 + pick(4)).map(|_| format!("f{}", pick(5))).collect();
            format!("o{i} {} c{i}\n", fillers.join(" "))
        })
        .collect()
}

fn as_words(s: &[String]) -> Vec<&str> {
    s.iter().map(String::as_str).collect()
}

fn recipe(epochs: usize) -> RnnLmRecipe {
    let mut r = RnnLmRecipe {
        bptt: 10,
        epochs: Some(epochs),
        lr_decay: None,
        ..Default::default()
    };
    r.model.embed_dim = 16;
    r.model.hidden_size = 32;
    r.model.num_layers = 1;
    r.train.batch_size = 8;
    r.train.seed = 7;
    r.train.optimizer = OptimizerConfig::AdamW(lingo_train::AdamWConfig {
        lr: 0.01,
        weight_decay: 0.0,
        ..Default::default()
    });
    r.train.schedule.kind = lingo_train::ScheduleKind::Constant;
    r.train.clip_norm = Some(1.0);
    r
}

fn train(task: &mut RnnLmTask, out: &Path, stop: Option<usize>, resume: bool) {
    let mut trainer = Trainer::new(task.recipe.train.clone(), out);
    trainer.progress = false;
    trainer.stop_after = stop;
    trainer.run(task, resume).expect("training");
}

#[test]
fn the_lstm_remembers_what_a_trigram_cannot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (train_text, test_text) = (bracketed(600, 1), bracketed(150, 2));
    let (train_s, test_s) = (sentences_of(&train_text), sentences_of(&test_text));
    let mut task = RnnLmTask::from_text(recipe(12), &train_s, &test_s, None).expect("task");
    let out = tmp.path().join("lm");
    train(&mut task, &out, None, false);
    let lm = RnnLmPipeline::load(&out).expect("the folder loads");
    let lstm = perplexity(&mut lm.scorer(None), &test_s).expect("scores");

    let counts = Counts::count(3, train_s.iter().map(|s| as_words(s))).expect("counts");
    let trigram = estimate(&counts, Smoothing::WittenBell).expect("estimate");
    let ngram = trigram.evaluate(test_s.iter().map(|s| as_words(s)));
    assert_eq!((lstm.words, lstm.sentences), (ngram.words, ngram.sentences));
    // Each closing word costs the trigram a guess among four; the LSTM knows it.
    assert!(
        lstm.perplexity < 0.85 * ngram.perplexity,
        "LSTM {:.3} vs trigram {:.3}",
        lstm.perplexity,
        ngram.perplexity
    );
}

#[test]
fn an_interrupted_run_resumes_exactly_mid_epoch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = sentences_of(&bracketed(60, 3));
    let valid = sentences_of(&bracketed(10, 4));
    let run = |out: &Path, stop: Option<usize>, resume: bool| {
        let mut r = recipe(3);
        r.train.checkpoint_every = 1;
        let mut task = RnnLmTask::from_text(r, &text, &valid, None).expect("task");
        train(&mut task, out, stop, resume);
    };
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    run(&whole, None, false);
    // Six windows an epoch: stopping after 8 leaves the carried state mid-epoch.
    run(&parts, Some(8), false);
    run(&parts, None, true);
    let a = std::fs::read(whole.join("model.safetensors")).expect("weights");
    let b = std::fs::read(parts.join("model.safetensors")).expect("weights");
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
}

fn labelled(n: usize, seed: u64) -> Vec<LabelledText> {
    let mut rng = LingoRng::new(seed);
    (0..n)
        .map(|i| {
            let positive = i % 2 == 0;
            let w = |rng: &mut LingoRng| {
                ["film", "plot", "cast", "story"][(rng.uniform() * 4.0) as usize % 4]
            };
            let (a, b) = (w(&mut rng), w(&mut rng));
            LabelledText {
                text: if positive {
                    format!("a great {a} and a fine {b}")
                } else {
                    format!("a dull {a} and a weak {b}")
                },
                text_pair: None,
                label: if positive { "pos" } else { "neg" }.into(),
                line: i + 2,
            }
        })
        .collect()
}

#[test]
fn sentences_are_generated_from_a_label() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut r = recipe(30);
    r.train.batch_size = 16;
    let mut task =
        RnnLmTask::from_labelled(r, &labelled(160, 5), &labelled(40, 6), None).expect("task");
    let out = tmp.path().join("lm");
    train(&mut task, &out, None, false);
    let lm = RnnLmPipeline::load(&out).expect("the folder loads");
    assert_eq!(lm.labels, ["neg", "pos"]);
    for (label, word) in [("pos", "great"), ("neg", "dull")] {
        let id = lm.label_id(label).expect("label");
        for sentence in lm.generate(Some(id), 4, 20, 0.0, 1).expect("generate") {
            assert!(
                sentence.starts_with(&format!("a {word} ")),
                "{label}: {sentence}"
            );
        }
        // Sampled sentences end, within the limit, and keep the label's word.
        for sentence in lm.generate(Some(id), 8, 20, 1.0, 2).expect("sample") {
            assert!(sentence.contains(word), "{label}: {sentence}");
        }
    }
    // As a generative classifier, it tells the labels apart.
    let valid = labelled(40, 6);
    let ids: Vec<Vec<u32>> = (valid.iter())
        .map(|e| lm.vocab.encode(&sentences_of(&e.text)[0]))
        .collect();
    let right = (lm.classify(&ids).expect("classify").iter().zip(&valid))
        .filter(|((p, _), e)| lm.labels[*p as usize] == e.label)
        .count();
    assert_eq!(right, valid.len());
    assert!(lm
        .label_id("neutral")
        .unwrap_err()
        .to_string()
        .contains("pos"));
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let text = sentences_of(&bracketed(60, 3));
    let err = |r: Result<RnnLmTask, lingo_tasks::TaskError>| r.err().expect("an error").to_string();
    let e = err(RnnLmTask::from_text(recipe(1), &[], &text, None));
    assert!(e.contains("must not be empty"), "{e}");
    let mut r = recipe(1);
    r.epochs = None;
    r.lr_decay = Some(lingo_tasks::rnn_lm::EpochDecay {
        after_epochs: 1,
        factor: 0.5,
    });
    let e = err(RnnLmTask::from_text(r, &text, &text, None));
    assert!(e.contains("lr_decay"), "{e}");
    let mut r = recipe(1);
    r.bptt = 1000;
    let e = err(RnnLmTask::from_text(r, &text, &text, None));
    assert!(e.contains("too few"), "{e}");
    let mut valid = labelled(4, 1);
    valid[3].label = "neutral".into();
    let e = err(RnnLmTask::from_labelled(
        recipe(1),
        &labelled(10, 1),
        &valid,
        None,
    ));
    assert!(e.contains("line 5") && e.contains("`neutral`"), "{e}");

    // A folder whose vocabulary does not match its model is refused, naming the file.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("lm");
    let mut task = RnnLmTask::from_text(recipe(1), &text, &text, None).expect("task");
    train(&mut task, &out, None, false);
    std::fs::write(
        out.join("vocab.json"),
        r#"{"words": ["</s>", "<unk>", "x"]}"#,
    )
    .expect("write");
    let e = RnnLmPipeline::load(&out)
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("vocab.json") && e.contains("vocab_size"), "{e}");
    std::fs::write(out.join("vocab.json"), r#"{"words": ["x"]}"#).expect("write");
    let e = RnnLmPipeline::load(&out)
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("vocab.json"), "{e}");
}

#[test]
fn the_shipped_recipes_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let small = RnnLmRecipe::load(&root.join("ptb-lstm-small.json")).expect("ptb-lstm-small");
    // Zaremba et al.'s small model: 2×200 LSTM, 20 steps, batch 20, 13 epochs, halved after 4.
    assert_eq!(
        (
            small.model.num_layers,
            small.model.hidden_size,
            small.bptt,
            small.epochs
        ),
        (2, 200, 20, Some(13))
    );
    assert_eq!(small.train.batch_size, 20);
    RnnLmRecipe::load(&root.join("sst2-conditional-lstm.json")).expect("sst2-conditional-lstm");
    let gpt = RnnLmRecipe::load(&root.join("ptb-transformer.json")).expect("ptb-transformer");
    assert_eq!(gpt.transformer.map(|t| t.n_layers), Some(4));
}

#[test]
fn a_transformer_learns_the_stream_and_scores_it_in_sliding_windows() {
    use lingo_tasks::rnn_lm::Network;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (train_s, test_s) = (
        sentences_of(&bracketed(600, 1)),
        sentences_of(&bracketed(150, 2)),
    );
    // 20 epochs: past ~30 this small Transformer overfits the 600 sentences, and at 30 the
    // margin over the trigram was 1% — within what a change of float summation order moves.
    let mut r = recipe(20);
    r.train.optimizer = OptimizerConfig::AdamW(lingo_train::AdamWConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        ..Default::default()
    });
    r.bptt = 16;
    r.transformer = Some(lingo_models::GptConfig {
        d_model: 32,
        n_heads: 2,
        n_layers: 2,
        ..Default::default()
    });
    let mut task = RnnLmTask::from_text(r, &train_s, &test_s, None).expect("task");
    let out = tmp.path().join("gpt");
    train(&mut task, &out, None, false);
    let lm = RnnLmPipeline::load(&out).expect("the folder loads");
    let gpt = perplexity(&mut lm.scorer(None), &test_s).expect("scores");
    let counts = Counts::count(3, train_s.iter().map(|s| as_words(s))).expect("counts");
    let trigram = estimate(&counts, Smoothing::WittenBell).expect("estimate");
    let ngram = trigram.evaluate(test_s.iter().map(|s| as_words(s)));
    assert!(
        gpt.perplexity < 0.85 * ngram.perplexity,
        "Transformer {:.3} vs trigram {:.3}",
        gpt.perplexity,
        ngram.perplexity
    );

    // A text shorter than the context: every sliding window starts at its beginning, so the
    // scores are those of one pass over the whole text.
    let Network::Transformer(m) = &lm.net else {
        panic!("a Transformer folder")
    };
    let short = &test_s[..2];
    let ids: Vec<u32> = std::iter::once(0)
        .chain(
            short
                .iter()
                .flat_map(|s| lm.vocab.encode(s).into_iter().chain([0])),
        )
        .collect();
    assert!(ids.len() <= 16, "{} tokens", ids.len());
    let x = candle_core::Tensor::new(&ids[..ids.len() - 1], &candle_core::Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids");
    let logits = m.logits(&x, &mut lingo_nn::Ctx::eval()).expect("logits");
    let lp = lingo_kernels::log_softmax(&logits.squeeze(0).expect("squeeze"))
        .and_then(|l| l.to_vec2::<f32>())
        .expect("log-probs");
    let direct: f64 = (1..ids.len())
        .map(|p| lp[p - 1][ids[p] as usize] as f64 * std::f64::consts::LOG10_E)
        .sum();
    let sliding = perplexity(&mut lm.scorer(None), short).expect("scores");
    assert!(
        (sliding.logprob - direct).abs() < 1e-4,
        "{} vs {direct}",
        sliding.logprob
    );
    assert!(lm.generate(None, 2, 12, 1.0, 3).expect("generate").len() == 2);
}
