//! A training run killed (SIGKILL) again and again at random moments — most of them while it is
//! writing a checkpoint, which it does after every step here — always leaves a checkpoint that
//! loads, and resuming after the last kill ends exactly where an uninterrupted run ends.

mod common;

use common::{corpus, write};
use lingo_nn::LingoRng;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RECIPE: &str = r#"{
  "model": { "context_length": 16, "d_model": 32, "n_heads": 2, "n_layers": 2, "dropout": 0.1 },
  "tokenizer": { "type": "char" },
  "train": { "steps": 300, "batch_size": 4, "seed": 5, "eval_every": 100, "eval_batches": 2,
             "checkpoint_every": 1,
             "optimizer": { "type": "adamw", "lr": 3e-3, "weight_decay": 0.1 } },
  "validation_fraction": 0.1
}"#;

fn train(config: &str, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lingo"));
    cmd.args([
        "--threads",
        "1",
        "train",
        "lm",
        "--data",
        &corpus(),
        "--config",
        config,
    ])
    .args(["--out", &out.display().to_string(), "--quiet"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

/// The losses of `metrics.jsonl`, without its wall-clock fields.
fn losses(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let o = v.as_object_mut().expect("an object");
            o.remove("elapsed_s");
            o.remove("tokens_per_sec");
            v.to_string()
        })
        .collect()
}

#[test]
fn killed_runs_leave_a_loadable_checkpoint_and_resume_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "recipe.json", RECIPE);
    let (whole, killed) = (dir.path().join("whole"), dir.path().join("killed"));

    let start = Instant::now();
    assert!(train(&config, &whole, false)
        .status()
        .expect("runs")
        .success());
    let full_run = start.elapsed();

    let kills: usize = std::env::var("LINGO_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let checkpoint = killed.join("checkpoint.safetensors");
    let mut rng = LingoRng::new(11);
    let (mut loaded, mut last_step, mut mid_run) = (0, 0, 0);
    for _ in 0..kills {
        let written = || {
            std::fs::metadata(&checkpoint)
                .and_then(|m| m.modified())
                .ok()
        };
        let before = written();
        let mut child = train(&config, &killed, checkpoint.exists())
            .spawn()
            .expect("starts");
        // Once this run has written a step of its own — its start-up (process, data, resuming)
        // takes a share of the run that varies with the machine's load — at a random moment of
        // the next 1/(2·kills) of a run: the kills together cover about half of it, so that
        // most stop training part-way; every step writes a checkpoint.
        let deadline = Instant::now() + full_run * 4 + Duration::from_secs(10);
        while written() == before
            && Instant::now() < deadline
            && matches!(child.try_wait(), Ok(None))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let wait = full_run.mul_f32(rng.uniform() / (2 * kills) as f32);
        std::thread::sleep(wait.max(Duration::from_millis(5)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if checkpoint.exists() {
            let meta = lingo_train::checkpoint::read_meta(&checkpoint)
                .unwrap_or_else(|e| panic!("after a kill the checkpoint does not load: {e}"));
            lingo_nn::params::read_safetensors(&checkpoint, &candle_core::Device::Cpu)
                .unwrap_or_else(|e| {
                    panic!("after a kill the checkpoint's tensors do not load: {e}")
                });
            assert!(meta.step >= last_step, "the checkpoint went back in time");
            mid_run += usize::from(meta.step > last_step && meta.step < 300);
            last_step = meta.step;
            loaded += 1;
        }
    }
    eprintln!(
        "{kills} kills over a {full_run:?} run: {loaded} left a checkpoint, {mid_run} stopped training part-way (last at step {last_step} of 300)"
    );
    assert!(
        mid_run >= kills / 2,
        "too few kills stopped the run part-way through"
    );

    let resume = checkpoint.exists();
    assert!(train(&config, &killed, resume)
        .status()
        .expect("runs")
        .success());
    assert_eq!(losses(&whole), losses(&killed));
    let litter: Vec<_> = std::fs::read_dir(&killed)
        .expect("output folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(litter.is_empty(), "killed writes left {litter:?}");
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).expect("weights"),
        std::fs::read(killed.join("model.safetensors")).expect("weights"),
        "the resumed run's weights differ from the uninterrupted run's"
    );
}
