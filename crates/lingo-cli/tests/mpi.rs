//! `mpirun -np N lingo train …` on loopback (cargo feature `mpi`): two ranks at half the batch
//! train as one process does; a run resumes on another number of ranks; ranks started with
//! different configs, or a rank that fails, end the job with a message. Skips, saying so, when
//! `mpirun` is not installed.
#![cfg(feature = "mpi")]

mod common;

use common::{corpus, write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn recipe(dropout: f32, grad_accum: usize) -> String {
    format!(
        r#"{{
  "model": {{ "context_length": 16, "d_model": 32, "n_heads": 2, "n_layers": 2, "dropout": {dropout} }},
  "tokenizer": {{ "type": "char" }},
  "train": {{ "steps": 12, "batch_size": 8, "grad_accum": {grad_accum}, "seed": 5,
             "eval_every": 6, "eval_batches": 2, "checkpoint_every": 3,
             "schedule": {{ "kind": "constant" }},
             "optimizer": {{ "type": "adamw", "lr": 3e-3, "weight_decay": 0.1 }} }},
  "validation_fraction": 0.1
}}"#
    )
}

/// `lingo train lm` arguments.
fn train_lm(config: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "lm", "--data", &corpus(), "--config", config]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--out".into(), out.display().to_string(), "--quiet".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn single(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mpirun` with one `-np K lingo ARGS` section per entry (MPI's MPMD form); `None` when there
/// is no `mpirun`.
fn mpirun(sections: &[(usize, &[String])]) -> Option<Output> {
    let mut command = Command::new("mpirun");
    command.arg("--oversubscribe");
    for (i, (ranks, args)) in sections.iter().enumerate() {
        if i > 0 {
            command.arg(":");
        }
        command
            .args(["-np", &ranks.to_string(), env!("CARGO_BIN_EXE_lingo")])
            .args(args.iter());
    }
    // CI runs as root, which Open MPI refuses unless told.
    command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    match command.output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("skipping the MPI tests: cannot run mpirun ({e}); install openmpi-bin");
            None
        }
    }
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect()
}

fn weights(dir: &Path) -> Vec<f32> {
    let path = dir.join("model.safetensors");
    let tensors = lingo_nn::params::read_safetensors(&path, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<_> = tensors.keys().cloned().collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| tensors[n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

#[test]
fn two_ranks_at_half_the_batch_train_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "recipe.json", &recipe(0.0, 2));
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    // After K steps. The gradients differ only in the order of fp32 additions (64 + 64 rows
    // against 128), but Adam divides by their running RMS, so the weights drift apart slowly:
    // measured 2.9e-7 (relative) after 3 steps, 5.8e-7 after 6, 1.1e-6 after 12, 1.4e-5 after
    // 48, while the losses stay within 5e-8.
    let steps = ["--steps", "6"];
    single(&train_lm(&config, &one, &steps));
    let Some(out) = mpirun(&[(2, &train_lm(&config, &two, &steps))]) else {
        return;
    };
    succeeded(&out);
    // Rank 0 alone reported.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("done after 6 steps").count(), 1, "{stdout}");
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "losses {a:?} vs {b:?}");
    }
    let drift = relative_difference(&weights(&one), &weights(&two));
    assert!(drift <= 1e-6, "weights differ by {drift:e} (relative)");
    // Two pipeline stages instead, over the step's two micro-batches: the same losses.
    let staged = dir.path().join("staged");
    let stages = ["--steps", "6", "--pipeline-stages", "2"];
    succeeded(&mpirun(&[(2, &train_lm(&config, &staged, &stages))]).unwrap());
    let b = losses(&staged);
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-6 * x.abs(),
            "staged: losses {a:?} vs {b:?}"
        );
    }
    let drift = relative_difference(&weights(&one), &weights(&staged));
    assert!(
        drift <= 1e-5,
        "staged: weights differ by {drift:e} (relative)"
    );
}

#[test]
fn a_run_of_two_ranks_resumes_in_one_process_and_three_ranks() {
    // With dropout and one micro-batch per step, two ranks compute what one process with two
    // shard threads computes, bit for bit: it can take the run over.
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "recipe.json", &recipe(0.1, 1));
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));
    let Some(out) = mpirun(&[(2, &train_lm(&config, &whole, &[]))]) else {
        return;
    };
    succeeded(&out);
    let first = train_lm(&config, &resumed, &["--steps", "6"]);
    succeeded(&mpirun(&[(2, &first)]).unwrap());
    single(&train_lm(
        &config,
        &resumed,
        &["--resume", "--data-parallel", "2"],
    ));
    assert_eq!(losses(&whole), losses(&resumed));
    assert!(weights(&whole) == weights(&resumed));

    // Without dropout, three ranks resume a single process's run with the same global batch.
    let config = write(dir.path(), "plain.json", &recipe(0.0, 2));
    let (whole, resumed) = (dir.path().join("whole3"), dir.path().join("resumed3"));
    single(&train_lm(&config, &whole, &[]));
    single(&train_lm(&config, &resumed, &["--steps", "6"]));
    let again = train_lm(&config, &resumed, &["--resume"]);
    succeeded(&mpirun(&[(3, &again)]).unwrap());
    let (a, b) = (losses(&whole), losses(&resumed));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "losses {a:?} vs {b:?}");
    }
}

#[test]
fn ranks_with_different_configs_or_a_failing_rank_end_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "recipe.json", &recipe(0.0, 1));
    let out_dir = dir.path().join("out");
    // Rank 1 started with another seed: both ranks refuse before the first step.
    let (a, b) = (
        train_lm(&config, &out_dir, &[]),
        train_lm(&config, &out_dir, &["--seed", "6"]),
    );
    let start = Instant::now();
    let Some(out) = mpirun(&[(1, &a), (1, &b)]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("started with different runs"), "{stderr}");
    assert!(!out_dir.join("model.safetensors").exists());
    // Rank 1 cannot read its data: its error is shown and the job ends, instead of rank 0
    // waiting for it.
    let missing = dir.path().join("missing.txt").display().to_string();
    let mut broken = train_lm(&config, &out_dir, &[]);
    broken[3] = missing.clone();
    let out = mpirun(&[(1, &a), (1, &broken)]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing.txt"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn ranks_pre_train_with_rank_0s_tokenizer_as_one_process_does() {
    // The tokenizer trained for the run is rank 0's on every rank (a trainer's ties fall in
    // hash-map order, so each process would train its own): the ranks then compute what one
    // process with that tokenizer and two shard threads computes, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let (ranks, one) = (dir.path().join("ranks"), dir.path().join("one"));
    let args = |out: &Path| -> Vec<String> {
        let out = out.display().to_string();
        [
            "pretrain",
            "--model",
            "bert-tiny",
            "--corpus",
            &corpus(),
            "--max-length",
            "32",
            "--steps",
            "4",
            "--quiet",
            "--out",
            &out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let Some(out) = mpirun(&[(2, &args(&ranks))]) else {
        return;
    };
    succeeded(&out);
    let mut single_args = args(&one);
    let tokenizer = ranks.join("tokenizer.json").display().to_string();
    single_args.extend([
        "--tokenizer".into(),
        tokenizer,
        "--data-parallel".into(),
        "2".into(),
    ]);
    single(&single_args);
    assert_eq!(losses(&ranks), losses(&one));
    assert!(weights(&ranks) == weights(&one));
}

#[test]
fn models_in_pipeline_stages_or_split_by_tensor_parallelism_compute_what_whole_models_do() {
    // A GPT (tied embeddings) and a BERT masked LM cut into 2 and 3 stages for one GPipe step of
    // 4 micro-batches, and split 2 and 3 ways by tensor parallelism for a forward pass, over MPI,
    // against the whole model on every rank.
    for ranks in [2, 3] {
        let args: Vec<String> = ["--threads", "1", "bench", "distributed", "--pipeline-probe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Some(out) = mpirun(&[(ranks, &args)]) else {
            return;
        };
        succeeded(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
        assert_eq!(report["stages"], ranks);
        for key in [
            "gpt_loss",
            "gpt_gradients",
            "bert_loss",
            "bert_gradients",
            "gpt_tensor_parallel",
            "bert_tensor_parallel",
        ] {
            let worst = report[key].as_f64().unwrap();
            assert!(worst <= 1e-5, "{ranks} stages, {key}: {worst:e}");
        }
    }
}

#[test]
fn tensor_parallel_generation_writes_what_one_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "recipe.json", &recipe(0.0, 1));
    let model = dir.path().join("model");
    single(&train_lm(&config, &model, &["--steps", "3"]));
    let generate = |extra: &[&str]| -> Vec<String> {
        let model = model.display().to_string();
        [
            "generate", "--model", &model, "--prompt", "the ", "--greedy",
        ]
        .iter()
        .chain(["--max-new-tokens", "24"].iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let one = Command::new(env!("CARGO_BIN_EXE_lingo"))
        .args(generate(&[]))
        .output()
        .unwrap();
    assert!(one.status.success());
    let Some(two) = mpirun(&[(2, &generate(&["--tensor-parallel"]))]) else {
        return;
    };
    succeeded(&two);
    // Rank 0 alone prints, and prints what the whole model wrote.
    assert_eq!(
        String::from_utf8_lossy(&two.stdout),
        String::from_utf8_lossy(&one.stdout)
    );
}

#[test]
fn tensor_parallel_encoder_pipelines_print_what_one_process_prints() {
    // A BERT classifier's scores and mean-pooled embeddings (4 decimals), 2 ranks against 1.
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lingo-models/tests/fixtures/hf/bert-cls"
    );
    let text = "the quick brown fox jumps over the lazy dog";
    for command in ["classify", "embed"] {
        let args = |extra: &[&str]| -> Vec<String> {
            [command, "--model", model, text]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let one = Command::new(env!("CARGO_BIN_EXE_lingo"))
            .args(args(&[]))
            .output()
            .unwrap();
        assert!(
            one.status.success(),
            "{}",
            String::from_utf8_lossy(&one.stderr)
        );
        let Some(two) = mpirun(&[(2, &args(&["--tensor-parallel"]))]) else {
            return;
        };
        succeeded(&two);
        assert_eq!(
            String::from_utf8_lossy(&two.stdout),
            String::from_utf8_lossy(&one.stdout),
            "{command}"
        );
    }
}
