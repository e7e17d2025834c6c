//! `lingo pretrain` as a user runs it: a tiny BERT pre-trained on a small corpus, then used by
//! `fill-mask` and fine-tuned (from its weights and, as the baseline, from random weights).

mod common;

use common::{corpus, lingo, write};

#[test]
fn pretrain_then_fill_mask_and_finetune() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write(
        tmp.path(),
        "tiny.json",
        r#"{"config": {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                       "intermediate_size": 64},
            "train": {"eval_every": 5, "eval_batches": 2, "checkpoint_every": 5}}"#,
    );
    let out = tmp.path().join("bert");
    let out_s = out.display().to_string();
    let cache = tmp.path().join("cache").display().to_string();
    let printed = lingo(&[
        "pretrain",
        "--model",
        "bert-tiny",
        "--objective",
        "mlm-nsp",
        "--whole-word-mask",
        "--corpus",
        &corpus(),
        "--valid-fraction",
        "0.1",
        "--vocab-size",
        "300",
        "--max-length",
        "32",
        "--batch-size",
        "8",
        "--steps",
        "10",
        "--config",
        &recipe,
        "--cache-dir",
        &cache,
        "--out",
        &out_s,
        "--quiet",
    ])
    .expect("pre-trains");
    assert!(printed.contains("done after 10 steps"), "{printed}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForPreTraining");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("mlm_accuracy"), "{metrics}");
    // The token cache is kept for the next run.
    assert!(std::fs::read_dir(tmp.path().join("cache")).unwrap().count() >= 1);

    let filled = lingo(&[
        "fill-mask",
        "--model",
        &out_s,
        "the model [MASK] the words .",
    ])
    .expect("fill-mask runs on the pre-trained folder");
    assert!(!filled.trim().is_empty());

    let rows: String = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                "the model learns the words .\t1\n"
            } else {
                "a student misunderstood e-mails !\t0\n"
            }
        })
        .collect();
    let train = write(tmp.path(), "train.tsv", &format!("sentence\tlabel\n{rows}"));
    let ft_recipe = write(tmp.path(), "ft.json", r#"{"max_length": 32}"#);
    for (name, extra) in [("pretrained", None), ("scratch", Some("--random-init"))] {
        let ft = tmp.path().join(name).display().to_string();
        let mut args = vec![
            "finetune", "classify", "--model", &out_s, "--train", &train, "--steps", "4",
            "--config", &ft_recipe, "--out", &ft, "--quiet",
        ];
        args.extend(extra);
        lingo(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let weights =
        |name: &str| std::fs::read(tmp.path().join(name).join("model.safetensors")).unwrap();
    assert_ne!(weights("pretrained"), weights("scratch"));
}

#[test]
fn an_objective_the_family_cannot_do_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m").display().to_string();
    let err = lingo(&[
        "pretrain",
        "--model",
        "gpt2-tiny",
        "--objective",
        "mlm-nsp",
        "--corpus",
        &corpus(),
        "--out",
        &out,
        "--quiet",
    ])
    .unwrap_err();
    assert!(
        err.contains("next-sentence prediction is for BERT"),
        "{err}"
    );
    assert!(!tmp.path().join("m").join("model.safetensors").exists());
}
