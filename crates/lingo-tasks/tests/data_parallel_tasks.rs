//! Every task family trains data-parallel: on two ranks (threads of this process) exactly as one
//! process computing the same two shards on two threads — bit for bit, with dropout — and, without
//! dropout, as one process taking each batch whole. The second check is what the shards' loss
//! weights are for: a shard averages over its own tokens, masked positions or sentence pairs, and
//! the shares must add up to the whole batch's mean.

mod common;
mod runs;
mod toy;

use runs::{losses, weights};

use lingo_tasks::translation::Arch;
use lingo_tasks::{
    ClassifyTask, FinetuneRecipe, Objective, PretrainTask, QaTask, Seq2SeqFinetune, Seq2SeqRecipe,
    Seq2SeqTask, TokenClassifyTask,
};
use lingo_train::data_parallel::train_in_process;
use lingo_train::{TrainConfig, TrainError, TrainTask, Trainer};
use std::path::{Path, PathBuf};

const STEPS: usize = 3;

/// How closely the runs must agree.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Two ranks and two shard threads bit for bit; with dropout, so no whole-batch run.
    Bits,
    /// Also (no dropout) whole batches to rounding.
    BitsAndWhole,
}

/// Trains the task `make` builds from the data in `data` three ways — two ranks; one process with
/// two shard threads; one process, whole batches — and compares them.
fn check<T: TrainTask>(
    family: &str,
    config: &TrainConfig,
    data: &Path,
    make: impl Fn(&Path) -> T + Sync,
    expect: Expect,
) {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name);
    let mut config = config.clone();
    config.steps = STEPS;
    config.grad_accum = 1;
    config.eval_every = 0;
    config.checkpoint_every = 0;
    let trainer = |config: &TrainConfig, dir: &Path| {
        let mut t = Trainer::new(config.clone(), dir);
        t.progress = false;
        t
    };
    let results = train_in_process(2, &trainer(&config, &out("ranks")), false, |_| {
        Ok::<_, TrainError>(make(data))
    });
    for r in results {
        r.unwrap_or_else(|e| panic!("{family}: {e:#}"));
    }
    let mut threads = config.clone();
    threads.data_parallel = 2;
    trainer(&threads, &out("threads"))
        .run(&mut make(data), false)
        .unwrap();
    let (ranks, shards) = (losses(&out("ranks")), losses(&out("threads")));
    assert_eq!(ranks.len(), STEPS, "{family}");
    let (a, b) = (weights(&out("ranks")), weights(&out("threads")));
    assert_eq!(
        ranks, shards,
        "{family}: two ranks against two shard threads"
    );
    assert!(a == b, "{family}: the weights differ");
    if expect != Expect::Bits {
        trainer(&config, &out("whole"))
            .run(&mut make(data), false)
            .unwrap();
        close(&losses(&out("whole")), &ranks, family);
    }
}

/// Losses equal to 1e-6 (relative).
fn close(a: &[f64], b: &[f64], family: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "{family}: {a:?} vs {b:?}");
    }
}

fn finetune_recipe(dropout: Option<f32>) -> FinetuneRecipe {
    let mut r = toy::recipe(STEPS);
    r.train.batch_size = 8;
    r.dropout = dropout;
    r
}

/// CoNLL sentences of 2–6 words (some split into several sub-tokens): the shards hold
/// different numbers of tagged tokens.
fn toy_conll(dir: &Path) -> PathBuf {
    let words = [
        ("alice", "B-PER"),
        ("alices", "B-PER"),
        ("cat", "B-ANI"),
        ("the", "O"),
        ("paris", "O"),
    ];
    let mut rng = lingo_nn::LingoRng::new(4);
    let mut text = String::new();
    for _ in 0..64 {
        for _ in 0..2 + rng.below(5) {
            let (w, t) = words[rng.below(words.len())];
            text.push_str(&format!("{w} X {t}\n"));
        }
        text.push('\n');
    }
    let path = dir.join("ner.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn toy_squad(dir: &Path) -> PathBuf {
    let filler = ["the", "is", "in", "alice", "model", "la"];
    let mut rng = lingo_nn::LingoRng::new(6);
    let paragraphs: Vec<_> = (0..48)
        .map(|i| {
            let mut words: Vec<&str> = (0..4 + rng.below(10))
                .map(|_| filler[rng.below(6)])
                .collect();
            let at = rng.below(words.len());
            words.splice(at..at, ["at", "paris"]);
            let context = words.join(" ");
            let start = context.find("at paris").unwrap() + 3;
            serde_json::json!({"context": context, "qas": [{"id": format!("q{i}"),
                "question": "where ?", "answers": [{"text": "paris", "answer_start": start}]}]})
        })
        .collect();
    let path = dir.join("squad.json");
    let data =
        serde_json::json!({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]});
    std::fs::write(&path, data.to_string()).unwrap();
    path
}

fn toy_pairs(dir: &Path) -> Vec<(String, String)> {
    let words = ["cat", "dog", "alice", "bob", "the", "at", "in", "is"];
    let mut rng = lingo_nn::LingoRng::new(8);
    let pairs: Vec<(String, String)> = (0..64)
        .map(|_| {
            let source: Vec<&str> = (0..1 + rng.below(4)).map(|_| words[rng.below(8)]).collect();
            let target: Vec<&str> = source.iter().rev().copied().collect();
            (source.join(" "), target.join(" "))
        })
        .collect();
    let lines: String = pairs
        .iter()
        .map(|(s, t)| format!("{}\n", serde_json::json!({"en": s, "xx": t})))
        .collect();
    std::fs::write(dir.join("pairs.jsonl"), lines).unwrap();
    pairs
}

#[test]
fn fine_tuning_shards_on_ranks_as_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (classes, tags, squad) = (
        toy::toy_data(dir, "cls.tsv", 64, 1),
        toy_conll(dir),
        toy_squad(dir),
    );
    toy_pairs(dir);
    for dropout in [Some(0.0), None] {
        let recipe = finetune_recipe(dropout);
        let exact = match dropout {
            Some(_) => Expect::BitsAndWhole,
            None => Expect::Bits,
        };
        check(
            "classify",
            &recipe.train,
            dir,
            |_| ClassifyTask::new(&toy::fixture("bert"), &classes, None, recipe.clone()).unwrap(),
            exact,
        );
        check(
            "ner",
            &recipe.train,
            dir,
            |_| TokenClassifyTask::new(&toy::fixture("bert"), &tags, None, recipe.clone()).unwrap(),
            exact,
        );
        let qa = FinetuneRecipe {
            max_length: 12,
            doc_stride: 4,
            ..recipe.clone()
        };
        check(
            "qa",
            &qa.train,
            dir,
            |_| QaTask::new(&toy::fixture("bert"), &squad, None, qa.clone()).unwrap(),
            exact,
        );
        let t5 = FinetuneRecipe {
            max_target_length: 8,
            source_field: "en".into(),
            target_field: "xx".into(),
            ..recipe.clone()
        };
        check(
            "seq2seq",
            &t5.train,
            dir,
            |dir| {
                let pairs = lingo_tasks::seq2seq::PairFile::new(&dir.join("pairs.jsonl"), None);
                Seq2SeqFinetune::new(&toy::fixture("t5"), &pairs, None, t5.clone()).unwrap()
            },
            exact,
        );
    }
}

#[test]
fn translation_shards_on_ranks_as_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pairs = toy_pairs(dir);
    for (arch, dropout) in [
        (Arch::Transformer, 0.0),
        (Arch::Transformer, 0.1),
        (Arch::Rnn, 0.0),
    ] {
        let mut recipe = Seq2SeqRecipe {
            arch,
            ..Seq2SeqRecipe::default()
        };
        let t = &mut recipe.transformer;
        (
            t.d_model,
            t.n_heads,
            t.d_ff,
            t.encoder_layers,
            t.decoder_layers,
        ) = (32, 2, 64, 1, 1);
        t.dropout = dropout;
        let m = &mut recipe.model;
        (m.embed_dim, m.hidden_size, m.dropout) = (16, 32, dropout);
        recipe.teacher_forcing = 1.0;
        recipe.train.batch_size = 8;
        let expect = match (arch, dropout) {
            (_, 0.0) => Expect::BitsAndWhole,
            _ => Expect::Bits,
        };
        check(
            &format!("{arch:?} dropout {dropout}"),
            &recipe.train,
            dir,
            |_| Seq2SeqTask::new(recipe.clone(), &pairs[..56], &pairs[56..], None).unwrap(),
            expect,
        );
    }
}

/// A small pre-training recipe without dropout.
fn pretrain_recipe(preset: &str, objective: Objective) -> lingo_tasks::PretrainRecipe {
    let mut recipe = common::recipe(preset, objective, STEPS);
    for key in [
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "dropout_rate",
    ] {
        recipe.config.insert(key.into(), 0.0.into());
    }
    recipe
}

/// The corpus files in `dir`, and a tokenizer trained on them once, as a run's first rank
/// would make it (with the token cache); every task then reads both.
fn pretrain_data(
    dir: &Path,
    recipe: &lingo_tasks::PretrainRecipe,
) -> (lingo_tasks::CorpusFiles, PathBuf) {
    let files = common::files(dir, vec![common::corpus()]);
    let first = PretrainTask::new(
        recipe.clone(),
        &files,
        None,
        &dir.join("tok"),
        &common::quiet,
    )
    .unwrap();
    first.tokenizer.save(&dir.join("tokenizer.json")).unwrap();
    (files, dir.join("tokenizer.json"))
}

#[test]
fn pre_training_shards_on_ranks_as_in_one_process() {
    let cases = [
        ("bert-tiny", Objective::MlmNsp),
        ("electra-small", Objective::ReplacedToken),
        ("gpt2-tiny", Objective::Clm),
        ("t5-tiny", Objective::SpanCorruption),
    ];
    for (preset, objective) in cases {
        let recipe = pretrain_recipe(preset, objective);
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (files, tokenizer) = pretrain_data(dir, &recipe);
        check(
            &format!("{preset} {objective:?}"),
            &recipe.train,
            dir,
            |dir| {
                PretrainTask::new(
                    recipe.clone(),
                    &files,
                    Some(&tokenizer),
                    &dir.join("tok"),
                    &common::quiet,
                )
                .unwrap()
            },
            Expect::BitsAndWhole,
        );
    }
}

#[test]
fn pre_training_in_pipeline_stages_equals_one_process() {
    // Masked LM (BERT) and causal LM (GPT-2), each cut into two stages on two ranks over the
    // step's two micro-batches, against one process: the losses to 1e-6, the weights to 1e-5.
    for (preset, objective) in [("bert-tiny", Objective::Mlm), ("gpt2-tiny", Objective::Clm)] {
        let mut recipe = pretrain_recipe(preset, objective);
        recipe.config.insert("n_layer".into(), 2.into());
        recipe.train.grad_accum = 2;
        recipe.train.eval_every = 0;
        recipe.train.checkpoint_every = 0;
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (files, tokenizer) = pretrain_data(dir, &recipe);
        let task = |recipe: &lingo_tasks::PretrainRecipe| {
            PretrainTask::new(
                recipe.clone(),
                &files,
                Some(&tokenizer),
                &dir.join("tok"),
                &common::quiet,
            )
            .map_err(TrainError::task)
        };
        let trainer = |recipe: &lingo_tasks::PretrainRecipe, out: &str| {
            let mut t = Trainer::new(recipe.train.clone(), dir.join(out));
            t.progress = false;
            t
        };
        trainer(&recipe, "one")
            .run(&mut task(&recipe).unwrap(), false)
            .unwrap();
        let mut staged = recipe.clone();
        staged.train.pipeline_stages = 2;
        for r in train_in_process(2, &trainer(&staged, "staged"), false, |_| task(&staged)) {
            r.unwrap_or_else(|e| panic!("{preset}: {e:#}"));
        }
        let (one, staged) = (dir.join("one"), dir.join("staged"));
        assert_eq!(losses(&one).len(), STEPS);
        close(&losses(&one), &losses(&staged), preset);
        let drift = runs::relative_difference(&weights(&one), &weights(&staged));
        assert!(drift <= 1e-5, "{preset}: weights differ by {drift:e}");
    }
}

/// Toy sentences over eight words, `(words, index)`.
fn toy_sentences(n: usize) -> Vec<Vec<&'static str>> {
    const WORDS: [&str; 8] = [
        "good", "bad", "film", "plot", "actor", "great", "dull", "story",
    ];
    (0..n)
        .map(|i| {
            (0..5 + i % 4)
                .map(|k| WORDS[(i * 7 + k * 3 + k * k) % 8])
                .collect()
        })
        .collect()
}

#[test]
fn recurrent_tasks_shard_on_ranks_as_in_one_process() {
    use lingo_data::{LabelledText, TaggedSentence};
    use lingo_models::{RnnClassifierConfig, RnnTaggerConfig};
    use lingo_tasks::{RnnClassifyRecipe, RnnClassifyTask, RnnTagRecipe, RnnTagTask};
    let dir = tempfile::tempdir().unwrap();
    let mut config = TrainConfig {
        batch_size: 8,
        ..TrainConfig::default()
    };
    config.seed = 4;

    // The BiLSTM classifier: a mean over sentences.
    let texts: Vec<LabelledText> = (toy_sentences(40).into_iter().enumerate())
        .map(|(i, words)| LabelledText {
            label: if words.contains(&"good") {
                "pos"
            } else {
                "neg"
            }
            .into(),
            text: words.join(" "),
            text_pair: None,
            line: i + 1,
        })
        .collect();
    let (train, valid) = texts.split_at(32);
    let recipe = RnnClassifyRecipe {
        model: RnnClassifierConfig {
            embed_dim: 12,
            hidden_size: 10,
            dropout: 0.0,
            ..Default::default()
        },
        vocab_size: 50,
        epochs: None,
        train: config.clone(),
        ..Default::default()
    };
    // One tokenizer for every run, as rank 0 would send it.
    let tokenizer = RnnClassifyTask::new(recipe.clone(), train, valid, None)
        .unwrap()
        .tokenizer;
    check(
        "BiLSTM classifier",
        &recipe.train,
        dir.path(),
        |_| RnnClassifyTask::new(recipe.clone(), train, valid, Some(tokenizer.clone())).unwrap(),
        Expect::BitsAndWhole,
    );

    // The BiLSTM tagger: a mean over words, or over sentences with a CRF; with word dropout,
    // shards draw it from their own streams.
    let sentences: Vec<TaggedSentence> = (toy_sentences(40).into_iter().enumerate())
        .map(|(i, words)| TaggedSentence {
            tags: (words.iter())
                .map(|w| if w.len() > 4 { "LONG" } else { "SHORT" }.to_string())
                .collect(),
            words: words.iter().map(|w| w.to_string()).collect(),
            line: i + 1,
        })
        .collect();
    let (train, valid) = sentences.split_at(32);
    for (crf, word_dropout, expect) in [
        (false, 0.0, Expect::BitsAndWhole),
        (true, 0.0, Expect::BitsAndWhole),
        (true, 0.5, Expect::Bits),
    ] {
        let recipe = RnnTagRecipe {
            model: RnnTaggerConfig {
                embed_dim: 12,
                char_embed_dim: 6,
                char_hidden_size: 5,
                hidden_size: 10,
                dropout: 0.0,
                crf,
                ..Default::default()
            },
            word_dropout,
            epochs: None,
            train: config.clone(),
            ..Default::default()
        };
        let vocab = RnnTagTask::new(recipe.clone(), train, valid, None)
            .unwrap()
            .vocab;
        check(
            &format!("BiLSTM tagger, crf {crf}, word dropout {word_dropout}"),
            &recipe.train,
            dir.path(),
            |_| RnnTagTask::new(recipe.clone(), train, valid, Some(vocab.clone())).unwrap(),
            expect,
        );
    }
}

#[test]
fn distillation_shards_on_ranks_as_in_one_process() {
    // Hard, soft and cosine losses: three means over examples or tokens, each weighted by its
    // own count. Teachers: the fixture fine-tuned for two steps.
    use lingo_tasks::distillation::{DistillLoss, Distillation};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (classes, tags) = (toy::toy_data(dir, "cls.tsv", 64, 1), toy_conll(dir));
    let loss = DistillLoss {
        cosine: 0.5,
        ..DistillLoss::default()
    };
    let bert = toy::fixture("bert");
    for dropout in [Some(0.0), None] {
        let recipe = finetune_recipe(dropout);
        let exact = match dropout {
            Some(_) => Expect::BitsAndWhole,
            None => Expect::Bits,
        };
        let teacher = dir.join("classify-teacher");
        let mut task = ClassifyTask::new(&bert, &classes, None, toy::recipe(2)).unwrap();
        toy::quiet(&task.recipe, &teacher)
            .run(&mut task, false)
            .unwrap();
        check(
            "distilled classifier",
            &recipe.train,
            dir,
            |_| {
                let student = ClassifyTask::new(&bert, &classes, None, recipe.clone()).unwrap();
                Distillation::new(student, &teacher, loss.clone()).unwrap()
            },
            exact,
        );
        let teacher = dir.join("ner-teacher");
        let mut task = TokenClassifyTask::new(&bert, &tags, None, toy::recipe(2)).unwrap();
        toy::quiet(&task.recipe, &teacher)
            .run(&mut task, false)
            .unwrap();
        check(
            "distilled tagger",
            &recipe.train,
            dir,
            |_| {
                let student = TokenClassifyTask::new(&bert, &tags, None, recipe.clone()).unwrap();
                Distillation::new(student, &teacher, loss.clone()).unwrap()
            },
            exact,
        );
    }
}
