//! bf16 mixed precision: the same pre-training run in f32 and in bf16 follows the same loss curve
//! (within bf16's rounding, not bit for bit: the bf16 products really ran), and with bf16 switched
//! off (`LINGO_NO_BF16`, as on a CPU without AVX-512 BF16) a bf16 recipe trains exactly as f32.
//! Its own test binary: the precision is process-wide.

use lingo_tasks::Objective;
use lingo_train::Precision;
use serde_json::json;
use std::path::Path;

mod common;
use common::{recipe, run_with};

/// The training losses of a run; all runs share `tokenizer` (training one is not deterministic).
fn losses(precision: Precision, tokenizer: &Path, out: &Path) -> Vec<f64> {
    let mut r = recipe("bert-tiny", Objective::Mlm, 30);
    // Wide enough that the linear layers' products take the bf16 path.
    r.config = json!({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
                      "intermediate_size": 256})
    .as_object()
    .unwrap()
    .clone();
    r.train.precision = precision;
    run_with(r, Some(tokenizer), out, false);
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

#[test]
fn bf16_follows_the_f32_loss_curve_and_falls_back_to_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = tmp.path().join("tokenizer");
    common::run(recipe("bert-tiny", Objective::Mlm, 1), &tokenizer, false);
    let f32_run = losses(Precision::F32, &tokenizer, &tmp.path().join("f32"));
    assert_eq!(f32_run.len(), 30);
    assert!(f32_run[29] < f32_run[0] - 0.5, "{f32_run:?}");

    if lingo_kernels::mixed_precision::bf16_supported() {
        let bf16_run = losses(Precision::Bf16, &tokenizer, &tmp.path().join("bf16"));
        assert_ne!(bf16_run, f32_run, "the bf16 run computed exactly as f32");
        for (step, (a, b)) in f32_run.iter().zip(&bf16_run).enumerate() {
            assert!(
                (a - b).abs() < 0.02 * a.abs(),
                "step {}: f32 loss {a:.4}, bf16 {b:.4}",
                step + 1
            );
        }
    } else {
        eprintln!("this CPU has no AVX-512 BF16: only the fallback is tested");
    }
    assert_eq!(
        lingo_kernels::mixed_precision::precision(),
        lingo_kernels::mixed_precision::Precision::F32,
        "the run left bf16 switched on"
    );

    std::env::set_var("LINGO_NO_BF16", "1");
    let fallback = losses(Precision::Bf16, &tokenizer, &tmp.path().join("fallback"));
    assert_eq!(
        fallback, f32_run,
        "bf16 without the CPU support must train as f32"
    );

    let mut f16 = recipe("bert-tiny", Objective::Mlm, 2);
    f16.train.precision = Precision::F16;
    let files = common::files(tmp.path(), vec![common::corpus()]);
    let out = tmp.path().join("f16");
    let mut task = lingo_tasks::PretrainTask::new(f16, &files, None, &out, &common::quiet).unwrap();
    let mut trainer = lingo_train::Trainer::new(task.recipe.train.clone(), &out);
    trainer.progress = false;
    let err = trainer.run(&mut task, false).unwrap_err().to_string();
    assert!(err.contains("f16") && err.contains("bf16"), "{err}");
}
