//! Data-parallel training over ranks (threads of this process, `InProcess`): N ranks at B/N
//! examples each equal one process at B; ranks that disagree or fail stop every rank with an
//! error; a run resumes on another number of ranks with the same global batch.

use lingo_data::{Grammar, TokenizerKind};
use lingo_models::gpt::GptConfig;
use lingo_tasks::{LmRecipe, LmTask};
use lingo_train::data_parallel::train_in_process;
use lingo_train::{AdamWConfig, OptimizerConfig, TrainConfig, TrainReport, Trainer};
use std::path::Path;

mod runs;
use runs::{losses, relative_difference, weights};

fn recipe(steps: usize, dropout: f32) -> LmRecipe {
    LmRecipe {
        model: GptConfig {
            context_length: 16,
            d_model: 32,
            n_heads: 2,
            n_layers: 2,
            dropout,
            ..Default::default()
        },
        tokenizer: TokenizerKind::Char,
        train: TrainConfig {
            steps,
            batch_size: 8,
            grad_accum: 2,
            optimizer: OptimizerConfig::AdamW(AdamWConfig {
                lr: 3e-3,
                weight_decay: 0.1,
                ..Default::default()
            }),
            eval_every: 4,
            eval_batches: 2,
            checkpoint_every: 3,
            ..Default::default()
        },
        validation_fraction: 0.1,
    }
}

fn text() -> String {
    Grammar::corpus(300, 3)
}

fn trainer(recipe: &LmRecipe, out: &Path) -> Trainer {
    let mut t = Trainer::new(recipe.train.clone(), out);
    t.progress = false;
    t
}

/// One process, `recipe.train.data_parallel` shards on threads.
fn single(recipe: &LmRecipe, out: &Path, resume: bool) -> TrainReport {
    let mut task = LmTask::new(recipe.clone(), &text(), None).unwrap();
    trainer(recipe, out).run(&mut task, resume).unwrap()
}

/// `world` ranks; every rank must succeed.
fn ranks(world: usize, recipe: &LmRecipe, out: &Path, resume: bool) -> TrainReport {
    let results = train_in_process(world, &trainer(recipe, out), resume, |_| {
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    });
    let mut reports: Vec<TrainReport> = results.into_iter().map(|r| r.unwrap()).collect();
    reports.remove(0)
}

/// An error with its causes, as the command line prints it.
fn chain(e: lingo_train::TrainError) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

#[test]
fn two_ranks_at_half_the_batch_equal_one_process() {
    let recipe = recipe(6, 0.0);
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    single(&recipe, one.path(), false);
    let report = ranks(2, &recipe, two.path(), false);
    assert_eq!(report.steps, 6);
    let (a, b) = (losses(one.path()), losses(two.path()));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "losses {a:?} vs {b:?}");
    }
    let drift = relative_difference(&weights(one.path()), &weights(two.path()));
    assert!(drift <= 1e-6, "weights differ by {drift:e} (relative)");
    // Three ranks: 8 rows cut 3 + 3 + 2, weighted by their tokens.
    let three = tempfile::tempdir().unwrap();
    ranks(3, &recipe, three.path(), false);
    let drift = relative_difference(&weights(one.path()), &weights(three.path()));
    assert!(drift <= 1e-6, "three ranks: weights differ by {drift:e}");
}

#[test]
fn ranks_equal_one_process_with_as_many_shards_bit_for_bit() {
    // With dropout: shard s draws the same stream whichever rank or thread computes it, and the
    // sums run in the same order, so the runs are identical — logs, checkpoints and weights.
    // One micro-batch per step: with several, one process adds shards within each micro-batch
    // first, ranks add micro-batches first, and the sums differ in their last bits.
    let mut recipe = recipe(5, 0.1);
    recipe.train.grad_accum = 1;
    recipe.train.data_parallel = 2;
    let threads = tempfile::tempdir().unwrap();
    single(&recipe, threads.path(), false);
    recipe.train.data_parallel = 1;
    let distributed = tempfile::tempdir().unwrap();
    ranks(2, &recipe, distributed.path(), false);
    assert_eq!(losses(threads.path()), losses(distributed.path()));
    assert!(weights(threads.path()) == weights(distributed.path()));
    // Two ranks × two threads is four shards: another cut of the batch, but the same data.
    recipe.train.data_parallel = 2;
    let four = tempfile::tempdir().unwrap();
    ranks(2, &recipe, four.path(), false);
    let (a, b) = (losses(threads.path()), losses(four.path()));
    assert_eq!(a.len(), b.len());
    assert!((a[0] - b[0]).abs() < 1e-2 * a[0], "{a:?} vs {b:?}");
}

#[test]
fn the_all_reduce_during_backward_sums_what_it_sums_after() {
    // Two ranks of two shard threads, two micro-batches a step, dropout: each bucket summed
    // while backward runs (the default) and every gradient summed after it give the same bits.
    let mut recipe = recipe(4, 0.1);
    recipe.train.grad_accum = 2;
    recipe.train.data_parallel = 2;
    let (during, after) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ranks(2, &recipe, during.path(), false);
    let mut sequential = trainer(&recipe, after.path());
    sequential.overlap_allreduce = false;
    for r in train_in_process(2, &sequential, false, |_| {
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    }) {
        r.unwrap();
    }
    assert_eq!(losses(during.path()).len(), 4);
    assert_eq!(losses(during.path()), losses(after.path()));
    assert!(weights(during.path()) == weights(after.path()));
}

#[test]
fn a_run_resumes_on_another_number_of_ranks_with_the_same_global_batch() {
    let mut recipe = recipe(7, 0.1);
    recipe.train.grad_accum = 1;
    // Uninterrupted: two ranks.
    let whole = tempfile::tempdir().unwrap();
    ranks(2, &recipe, whole.path(), false);
    // Interrupted after 3 steps on two ranks, resumed in one process with two shard threads:
    // the same computation, so the same bits.
    let resumed = tempfile::tempdir().unwrap();
    let mut stopped = trainer(&recipe, resumed.path());
    stopped.stop_after = Some(3);
    let results = train_in_process(2, &stopped, false, |_| {
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    });
    for r in results {
        assert!(r.unwrap().interrupted);
    }
    recipe.train.data_parallel = 2;
    let report = single(&recipe, resumed.path(), true);
    assert_eq!(report.steps, 7);
    assert_eq!(losses(whole.path()), losses(resumed.path()));
    assert!(weights(whole.path()) == weights(resumed.path()));
    // Resumed on three ranks instead (rank 0 reads the checkpoint and sends it to the others):
    // the same batches, cut differently, without dropout equal to a tolerance.
    let mut recipe = self::recipe(7, 0.0);
    let whole = tempfile::tempdir().unwrap();
    single(&recipe, whole.path(), false);
    let resumed = tempfile::tempdir().unwrap();
    let mut stopped = trainer(&recipe, resumed.path());
    stopped.stop_after = Some(3);
    let mut task = LmTask::new(recipe.clone(), &text(), None).unwrap();
    stopped.run(&mut task, false).unwrap();
    recipe.train.data_parallel = 1;
    ranks(3, &recipe, resumed.path(), true);
    let (a, b) = (losses(whole.path()), losses(resumed.path()));
    assert_eq!(a.len(), 7);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "losses {a:?} vs {b:?}");
    }
}

#[test]
fn ranks_that_disagree_or_fail_stop_every_rank() {
    let recipe = recipe(3, 0.0);
    // A different model config on rank 1: detected before the first step, on both ranks.
    let out = tempfile::tempdir().unwrap();
    let results = train_in_process(2, &trainer(&recipe, out.path()), false, |rank| {
        let mut r = recipe.clone();
        r.model.dropout += rank as f32 / 10.0;
        LmTask::new(r, &text(), None).map_err(lingo_train::TrainError::task)
    });
    for r in results {
        let e = chain(r.unwrap_err());
        assert!(e.contains("different runs") && e.contains("[1]"), "{e}");
    }
    // Rank 1 fails to build its task: rank 0 reports that rank 1 left, instead of waiting.
    let results = train_in_process(2, &trainer(&recipe, out.path()), false, |rank| {
        if rank == 1 {
            return Err(lingo_train::TrainError::Input(
                "no data on this machine".into(),
            ));
        }
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    });
    let e = chain(results.into_iter().next().unwrap().unwrap_err());
    assert!(e.contains("rank 1 left"), "{e}");
    // Resuming without a checkpoint: rank 0's error, on every rank.
    let empty = tempfile::tempdir().unwrap();
    let results = train_in_process(2, &trainer(&recipe, empty.path()), true, |_| {
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    });
    for r in results {
        let e = chain(r.unwrap_err());
        assert!(e.contains("no checkpoint"), "{e}");
    }
    // Only rank 0 wrote the folder.
    assert!(!empty.path().join("metrics.jsonl").exists());
}

#[test]
fn pipeline_stages_train_as_one_process_and_resume() {
    // Two stages over the step's micro-batches (grad_accum 2), no dropout: one process's losses
    // to 1e-6, and its weights after 6 steps.
    let mut recipe = recipe(6, 0.0);
    let (one, staged) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    single(&recipe, one.path(), false);
    recipe.train.pipeline_stages = 2;
    ranks(2, &recipe, staged.path(), false);
    let (a, b) = (losses(one.path()), losses(staged.path()));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "losses {a:?} vs {b:?}");
    }
    let drift = relative_difference(&weights(one.path()), &weights(staged.path()));
    assert!(drift <= 1e-5, "weights differ by {drift:e}");
    // With dropout, interrupted after 3 steps and resumed: the uninterrupted staged run, bit for
    // bit (rank 0's checkpoint holds every stage's weights and optimizer state).
    let mut recipe = self::recipe(6, 0.1);
    recipe.train.pipeline_stages = 2;
    let (whole, resumed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ranks(2, &recipe, whole.path(), false);
    let mut stopped = trainer(&recipe, resumed.path());
    stopped.stop_after = Some(3);
    for r in train_in_process(2, &stopped, false, |_| {
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    }) {
        assert!(r.unwrap().interrupted);
    }
    ranks(2, &recipe, resumed.path(), true);
    assert_eq!(losses(whole.path()), losses(resumed.path()));
    assert!(weights(whole.path()) == weights(resumed.path()));
    // Stages need as many ranks.
    let results = train_in_process(3, &trainer(&recipe, resumed.path()), false, |_| {
        LmTask::new(recipe.clone(), &text(), None).map_err(lingo_train::TrainError::task)
    });
    let e = chain(results.into_iter().next().unwrap().unwrap_err());
    assert!(e.contains("pipeline_stages 2 needs exactly 2 ranks"), "{e}");
}
