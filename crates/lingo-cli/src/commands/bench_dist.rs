//! `lingo bench distributed`: data parallelism measured on this machine, each part in a fresh
//! process (this binary; the ranks under `mpirun`):
//!
//! 1. all-reduce time and bandwidth for buffers of 1 KiB to 64 MiB, Lingo's exact rank-order sum
//!    beside the MPI library's own `MPI_Allreduce` on the same transport (an OSU-style loop:
//!    barrier, then back-to-back calls; the hidden `--allreduce-probe` runs it under `mpirun`);
//! 2. training steps of two GPT character models, one process with two threads (its two shards on
//!    two threads) beside two ranks of one thread each, and one process with one thread; tokens/s
//!    and the share of a step the gradient all-reduce takes;
//! 3. the scaling model of docs/distributed.md, fitted on (1) and the one-thread step, predicting
//!    the two-rank step (checked against (2)) and steps/s on N machines over named interconnects.

use super::bench::json_output;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Buffer sizes of the all-reduce probe, bytes.
const SIZES: [usize; 7] = [
    1 << 10,
    16 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];

/// One buffer size: the mean time of one all-reduce, µs.
#[derive(Serialize, Deserialize, Clone)]
pub struct AllReduceTime {
    pub bytes: usize,
    pub lingo_us: f64,
    pub mpi_us: f64,
}

#[derive(Serialize, Deserialize)]
pub struct ProbeReport {
    pub ranks: usize,
    pub sizes: Vec<AllReduceTime>,
}

/// Under `mpirun`: times both all-reduces at every size; rank 0 prints the report as JSON.
pub fn probe(iters: usize) -> anyhow::Result<()> {
    let c = super::collective()?;
    anyhow::ensure!(
        c.world_size() > 1,
        "the all-reduce probe runs under mpirun -np N (N ≥ 2)"
    );
    let mut sizes = Vec::new();
    for bytes in SIZES {
        let mut buf = vec![1e-3f32; bytes / 4];
        // Enough calls to take a measurable time at small sizes.
        let calls = iters.max((256 << 20) / bytes).min(2000);
        let mut time = |native: bool| -> anyhow::Result<f64> {
            let call = |buf: &mut [f32]| match native {
                true => c.native_all_reduce_sum(buf),
                false => c.all_reduce_sum(buf),
            };
            call(&mut buf)?;
            c.barrier()?;
            let start = Instant::now();
            for _ in 0..calls {
                call(&mut buf)?;
            }
            Ok(start.elapsed().as_secs_f64() * 1e6 / calls as f64)
        };
        let lingo_us = time(false)?;
        let mpi_us = time(true)?;
        sizes.push(AllReduceTime {
            bytes,
            lingo_us,
            mpi_us,
        });
    }
    if c.is_root() {
        let report = ProbeReport {
            ranks: c.world_size(),
            sizes,
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// A character model to train, and how many steps to time.
struct Model {
    name: &'static str,
    config: serde_json::Value,
    steps: usize,
}

fn models() -> Vec<Model> {
    let recipe: serde_json::Value =
        serde_json::from_str(include_str!("../../../../configs/shakespeare-char.json"))
            .expect("a valid recipe");
    let mut full = recipe.clone();
    // nanoGPT's own shakespeare-char model (10.7M parameters), at batch 16.
    full["model"]["context_length"] = 256.into();
    full["model"]["d_model"] = 384.into();
    full["model"]["n_heads"] = 6.into();
    full["model"]["n_layers"] = 6.into();
    full["train"]["batch_size"] = 16.into();
    vec![
        Model {
            name: "char recipe (4 × 128, batch 12 × 64)",
            config: recipe,
            steps: 160,
        },
        Model {
            name: "nanoGPT char (6 × 384, batch 16 × 256)",
            config: full,
            steps: 24,
        },
    ]
}

/// One model's training runs.
struct Measured {
    model: Model,
    /// One process, two threads (two shards).
    threads: Steps,
    /// Two ranks of one thread, the all-reduce overlapped with backward.
    ranks: Steps,
    /// One process, one thread: the compute of the scaling model.
    one: Steps,
    /// Two ranks of one thread, the all-reduce after backward.
    after: Steps,
    /// The gradient (the model file's size).
    bytes: f64,
}

/// What a training run's log says about its steps.
#[derive(Serialize, Clone, Copy)]
struct Steps {
    /// Seconds per step after the first quarter (warm-up).
    step_s: f64,
    tokens_per_s: f64,
    /// Seconds of each step in the gradient all-reduce (ranks only).
    allreduce_s: f64,
}

fn read_steps(dir: &Path) -> anyhow::Result<Steps> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .with_context(|| format!("{}: no metrics", dir.display()))?;
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r.get("loss").is_some())
        .collect();
    anyhow::ensure!(records.len() >= 8, "{}: too few steps", dir.display());
    let from = records.len() / 4;
    let (a, b) = (&records[from], &records[records.len() - 1]);
    let elapsed = |r: &serde_json::Value| r["elapsed_s"].as_f64().unwrap_or(0.0);
    let step_s = (elapsed(b) - elapsed(a)) / (records.len() - 1 - from) as f64;
    let allreduce = records[from..]
        .iter()
        .filter_map(|r| r["allreduce_s"].as_f64())
        .sum::<f64>()
        / (records.len() - from) as f64;
    Ok(Steps {
        step_s,
        tokens_per_s: b["tokens_per_sec"].as_f64().unwrap_or(0.0),
        allreduce_s: allreduce,
    })
}

/// A latency–bandwidth fit of the exact all-reduce on 2 ranks, `t = α + bytes / β`, through the
/// smallest size and the trainer's bucket size (what a gradient is reduced in).
#[derive(Serialize, Clone, Copy)]
struct Fit {
    alpha_us: f64,
    /// Algorithm bandwidth: buffer bytes per second of all-reduce.
    beta_gb_s: f64,
}

fn fit(sizes: &[AllReduceTime], pick: impl Fn(&AllReduceTime) -> f64) -> Fit {
    let bucket = lingo_train::data_parallel::BUCKET_VALUES * 4;
    let small = &sizes[0];
    let large = (sizes.iter().rev().find(|s| s.bytes <= bucket)).unwrap_or(small);
    let alpha_us = pick(small);
    let beta = large.bytes as f64 / ((pick(large) - alpha_us).max(1e-3) * 1e-6);
    Fit {
        alpha_us,
        beta_gb_s: beta / 1e9,
    }
}

/// An interconnect of the scaling model: a ring all-reduce over N machines moves 2(N−1)/N of the
/// gradient through each link and takes 2(N−1) latency-bound steps.
struct Link {
    name: &'static str,
    gb_s: f64,
    latency_us: f64,
}

const LINKS: [Link; 3] = [
    Link {
        name: "10 GbE",
        gb_s: 1.25,
        latency_us: 30.0,
    },
    Link {
        name: "25 GbE",
        gb_s: 3.1,
        latency_us: 15.0,
    },
    Link {
        name: "InfiniBand EDR 100 Gb/s",
        gb_s: 12.0,
        latency_us: 2.0,
    },
];

/// Seconds of a ring all-reduce of `bytes` over `n` machines on `link`.
fn ring_seconds(bytes: f64, n: usize, link: &Link) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let steps = 2.0 * (n as f64 - 1.0);
    steps / n as f64 * bytes / (link.gb_s * 1e9) + steps * link.latency_us * 1e-6
}

/// The scaling model: a step on `n` machines with the global batch held fixed is the one-machine
/// compute divided by `n`, plus the all-reduce of the gradients (not overlapped).
fn predicted_step(one_machine_s: f64, bytes: f64, n: usize, link: &Link) -> f64 {
    one_machine_s / n as f64 + ring_seconds(bytes, n, link)
}

pub fn run(iters: usize, data: Option<&Path>, json: Option<&Path>) -> anyhow::Result<()> {
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("skipping `lingo bench distributed`: no mpirun (apt-get install openmpi-bin libopenmpi-dev, and build with --features mpi)");
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mpirun = |ranks: usize| {
        let mut c = Command::new("mpirun");
        c.args(["-np", &ranks.to_string(), "--oversubscribe"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg(&exe);
        c
    };

    // 1. All-reduce.
    let mut probe = mpirun(2);
    probe.args([
        "--threads",
        "1",
        "bench",
        "distributed",
        "--allreduce-probe",
    ]);
    probe.args(["--iters", &iters.to_string()]);
    let report: ProbeReport = json_output(
        &mut probe,
        "the all-reduce probe (needs a lingo built with --features mpi)",
    )?;
    println!("All-reduce of f32 buffers, 2 ranks on this machine (shared memory), mean of back-to-back calls");
    println!(
        "{:>9} {:>11} {:>10} {:>15} {:>10} {:>8}",
        "size", "Lingo µs", "GB/s", "MPI_Allreduce µs", "GB/s", "ratio"
    );
    for s in &report.sizes {
        let gb = |us: f64| s.bytes as f64 / (us * 1e-6) / 1e9;
        println!(
            "{:>9} {:>11.1} {:>10.2} {:>15.1} {:>10.2} {:>7.2}×",
            human_bytes(s.bytes),
            s.lingo_us,
            gb(s.lingo_us),
            s.mpi_us,
            gb(s.mpi_us),
            s.mpi_us / s.lingo_us
        );
    }
    println!("(GB/s: buffer bytes per second, \"algorithm bandwidth\"; each rank sends and receives 2(N−1)/N of that; ratio: MPI's time / Lingo's)");
    let lingo_fit = fit(&report.sizes, |s| s.lingo_us);

    // 2. Training steps.
    let tmp = tempfile::tempdir()?;
    let text = match data {
        Some(path) => path.to_path_buf(),
        None => {
            let path = tmp.path().join("text.txt");
            std::fs::write(&path, lingo_data::Grammar::corpus(20_000, 7))?;
            path
        }
    };
    let mut results = Vec::new();
    for model in models() {
        let config = tmp.path().join(format!("{}.json", results.len()));
        let mut recipe = model.config.clone();
        recipe["train"]["eval_every"] = 0.into();
        recipe["train"]["eval_batches"] = 1.into();
        recipe["train"]["checkpoint_every"] = 0.into();
        std::fs::write(&config, serde_json::to_string(&recipe)?)?;
        let train = |c: &mut Command, threads: usize, shards: usize, out: &str| {
            c.args(["--threads", &threads.to_string(), "train", "lm", "--quiet"])
                .arg("--data")
                .arg(&text)
                .arg("--config")
                .arg(&config)
                .arg("--out")
                .arg(tmp.path().join(out))
                .args(["--steps", &model.steps.to_string()])
                .args(["--data-parallel", &shards.to_string()]);
        };
        let run = |mut c: Command, who: &str, out: &str| -> anyhow::Result<Steps> {
            let status = c.output().with_context(|| format!("running {who}"))?;
            anyhow::ensure!(
                status.status.success(),
                "{who}: {}",
                String::from_utf8_lossy(&status.stderr)
                    .lines()
                    .last()
                    .unwrap_or("failed")
            );
            read_steps(&tmp.path().join(out))
        };
        let mut threads = Command::new(&exe);
        train(&mut threads, 2, 2, "threads");
        let threads = run(threads, "one process, two threads", "threads")?;
        let mut ranks = mpirun(2);
        train(&mut ranks, 1, 1, "ranks");
        let ranks = run(ranks, "two ranks", "ranks")?;
        let mut after = mpirun(2);
        train(&mut after, 1, 1, "after");
        after.arg("--allreduce-after-backward");
        let after = run(after, "two ranks, all-reduce after backward", "after")?;
        let mut one = Command::new(&exe);
        train(&mut one, 1, 2, "one");
        let one = run(one, "one process, one thread", "one")?;
        let bytes = std::fs::metadata(tmp.path().join("ranks/model.safetensors"))?.len() as f64;
        results.push(Measured {
            model,
            threads,
            ranks,
            one,
            after,
            bytes,
        });
    }
    println!();
    println!(
        "Training steps (GPT, character tokens): one process × 2 threads beside 2 ranks × 1 thread"
    );
    println!(
        "{:<40} {:>10} {:>11} {:>11} {:>7} {:>14} {:>18}",
        "model", "gradient", "1×2 tok/s", "2×1 tok/s", "ratio", "all-reduce", "after backward"
    );
    for m in &results {
        println!(
            "{:<40} {:>10} {:>11.0} {:>11.0} {:>6.2}× {:>6.1} ms {:>3.0}% {:>11.0} tok/s",
            m.model.name,
            human_bytes(m.bytes as usize),
            m.threads.tokens_per_s,
            m.ranks.tokens_per_s,
            m.ranks.tokens_per_s / m.threads.tokens_per_s,
            m.ranks.allreduce_s * 1e3,
            100.0 * m.ranks.allreduce_s / m.ranks.step_s,
            m.after.tokens_per_s,
        );
    }
    println!("(ratio: 2 ranks' tokens/s over one process's; all-reduce: per step on the ranks, the part not hidden behind backward, and its share of the step, waiting for the slower rank included; after backward: 2 ranks that start the all-reduce once backward is over)");

    // 3. The scaling model, checked on this machine: a "machine" here is one core.
    println!();
    println!("Scaling model: step(N) = step(1 machine) / N + ring all-reduce of the gradient");
    println!(
        "  fitted here at 1 KiB and {} (the trainer's bucket): all-reduce α = {:.1} µs, β = {:.2} GB/s (2 ranks, shared memory)",
        human_bytes(lingo_train::data_parallel::BUCKET_VALUES * 4),
        lingo_fit.alpha_us,
        lingo_fit.beta_gb_s
    );
    let here = Link {
        name: "this machine",
        gb_s: lingo_fit.beta_gb_s,
        latency_us: lingo_fit.alpha_us / 2.0,
    };
    let mut checks = Vec::new();
    // The model adds the all-reduce after the compute: it is checked against the ranks that do
    // that, and bounds the overlapped ones from above.
    for m in &results {
        let predicted = predicted_step(m.one.step_s, m.bytes, 2, &here);
        println!(
            "  {}: one core {:.1} ms/step → predicted on 2 ranks {:.1} ms, measured {:.1} ms ({:+.0}%) after backward, {:.1} ms overlapped",
            m.model.name,
            m.one.step_s * 1e3,
            predicted * 1e3,
            m.after.step_s * 1e3,
            100.0 * (m.after.step_s / predicted - 1.0),
            m.ranks.step_s * 1e3,
        );
        checks.push(
            serde_json::json!({"model": m.model.name, "one_core_step_s": m.one.step_s,
            "predicted_two_rank_step_s": predicted,
            "measured_two_rank_step_s_after_backward": m.after.step_s,
            "measured_two_rank_step_s_overlapped": m.ranks.step_s}),
        );
    }
    println!();
    println!("Predicted steps/s on N machines like this one (2 cores each), global batch fixed:");
    let mut predictions = Vec::new();
    for m in &results {
        println!(
            "  {} (gradient {})",
            m.model.name,
            human_bytes(m.bytes as usize)
        );
        for link in &LINKS {
            let line: Vec<String> = [1, 2, 4, 8, 16, 32]
                .iter()
                .map(|&n| {
                    let steps = 1.0 / predicted_step(m.threads.step_s, m.bytes, n, link);
                    predictions.push(serde_json::json!({"model": m.model.name, "link": link.name,
                        "machines": n, "steps_per_s": steps}));
                    format!("N={n}: {steps:.1}")
                })
                .collect();
            println!("    {:<24} {}", link.name, line.join("  "));
        }
    }
    if let Some(path) = json {
        let steps: Vec<_> = results
            .iter()
            .map(|m| {
                serde_json::json!({"model": m.model.name, "gradient_bytes": m.bytes,
                    "one_process_two_threads": m.threads, "two_ranks_one_thread": m.ranks,
                    "two_ranks_allreduce_after_backward": m.after,
                    "one_process_one_thread": m.one})
            })
            .collect();
        let value = serde_json::json!({"allreduce": report.sizes, "allreduce_fit": lingo_fit,
            "steps": steps, "scaling_checks": checks, "predictions": predictions});
        lingo_nn::io::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    }
    Ok(())
}

fn human_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// What the model-parallel probe found on every rank (the worst over the ranks), as relative
/// differences from the whole model in one process: pipeline stages' loss and gradients, and
/// tensor-parallel logits, per model.
#[derive(Serialize, Deserialize, Debug)]
pub struct ModelParallelReport {
    pub stages: usize,
    pub gpt_loss: f64,
    pub gpt_gradients: f64,
    pub bert_loss: f64,
    pub bert_gradients: f64,
    pub gpt_tensor_parallel: f64,
    pub bert_tensor_parallel: f64,
}

/// Under `mpirun -np S`: a GPT (tied embeddings) and a BERT masked LM (12 heads each), each cut
/// into S pipeline stages for one GPipe step of 4 micro-batches, then split S ways by tensor
/// parallelism for a forward pass, over MPI, against the whole model on every rank; rank 0
/// prints the worst differences over all ranks as JSON.
pub fn pipeline_probe() -> anyhow::Result<()> {
    use candle_core::{Device, Tensor};
    use lingo_models::bert::{BertConfig, BertModel, Family, Head};
    use lingo_models::{Gpt, GptConfig, ModelInputs};
    use lingo_nn::pipeline::PipelineStage;
    use lingo_nn::{Ctx, LingoRng, ParamStore};
    use lingo_train::grads::Gradients;

    let c = super::collective()?;
    let (rank, stages) = (c.rank(), c.world_size());
    anyhow::ensure!(
        stages > 1,
        "the pipeline probe runs under mpirun -np N (N ≥ 2)"
    );
    let mut rng = LingoRng::new(3);
    let mut ids = |b: usize, t: usize, vocab: usize| -> candle_core::Result<Tensor> {
        let v: Vec<u32> = (0..b * t)
            .map(|_| 1 + rng.below(vocab - 1) as u32)
            .collect();
        Tensor::from_vec(v, (b, t), &Device::Cpu)
    };
    let ce = lingo_kernels::CrossEntropy {
        ignore_index: Some(-100),
        ..Default::default()
    };
    // The whole model's mean loss and gradients, and this rank's stage's, compared.
    let compare = |stage: &dyn PipelineStage,
                   store: &ParamStore,
                   batches: &[Vec<Tensor>],
                   whole: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>|
     -> anyhow::Result<(f64, f64)> {
        let mut ctx = Ctx::train(LingoRng::new(0));
        let (loss, grads) = lingo_train::pipeline::gpipe_step(&*c, stage, batches, &mut ctx)?;
        let named = store.named();
        let (mut want_loss, mut total) = (0.0, None);
        for b in batches {
            let l = whole(b)?;
            want_loss += l.to_scalar::<f32>()? as f64 / batches.len() as f64;
            let g = Gradients::from_store(&named, &(l / batches.len() as f64)?.backward()?);
            Gradients::sum_into(&mut total, g)?;
        }
        let total = total.expect("micro-batches");
        let mut worst = 0f64;
        for ((name, _), g) in stage.params().iter().zip(&grads.grads) {
            let at = named
                .iter()
                .position(|(n, _)| n == name)
                .expect("a model parameter");
            if let (Some(g), Some(w)) = (g, &total.grads[at]) {
                let d = ((g - w)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64).sqrt();
                let n = (w.sqr()?.sum_all()?.to_scalar::<f32>()? as f64).sqrt();
                worst = worst.max(d / n.max(1e-30));
            }
        }
        Ok(((loss - want_loss).abs() / want_loss, worst))
    };

    let reduce = lingo_train::data_parallel::tensor_sum(c.clone());
    let drift = |want: &Tensor, got: &Tensor| -> candle_core::Result<f64> {
        let d = (want - got)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let n = want.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        Ok((d / n.max(1e-30)).sqrt())
    };

    let gpt_config = GptConfig {
        vocab_size: 65,
        context_length: 32,
        d_model: 96,
        n_heads: 12,
        n_layers: 4,
        dropout: 0.0,
        tied_embeddings: true,
        ..Default::default()
    };
    let store = ParamStore::new(7, &Device::Cpu);
    let mut gpt = Gpt::new(gpt_config, &store.root())?;
    let batches: Vec<Vec<Tensor>> = (0..4)
        .map(|_| {
            let all = ids(4, 33, 65)?;
            Ok(vec![all.narrow(1, 0, 32)?, all.narrow(1, 1, 32)?])
        })
        .collect::<candle_core::Result<_>>()?;
    let stage = gpt.stage(&store, rank, stages);
    let whole = |b: &[Tensor]| gpt.loss(&b[0], &b[1], &mut Ctx::train(LingoRng::new(0)));
    let (gpt_loss, gpt_gradients) = compare(&stage, &store, &batches, &whole)?;
    let tokens = &batches[0][0];
    let want = gpt.logits(tokens, &mut Ctx::eval())?;
    gpt.tensor_parallel(rank, stages, &reduce)?;
    let gpt_tensor_parallel = drift(&want, &gpt.logits(tokens, &mut Ctx::eval())?)?;

    let bert_config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 100, "hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 12,
        "intermediate_size": 128, "hidden_act": "gelu", "max_position_embeddings": 32,
        "type_vocab_size": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0
    }))?;
    let store = ParamStore::new(11, &Device::Cpu);
    let mut bert = BertModel::new(
        Family::Bert,
        Head::MaskedLm,
        bert_config,
        true,
        &store.root(),
    )?;
    let batches: Vec<Vec<Tensor>> = (0..4)
        .map(|k| {
            let x = ids(4, 24, 100)?;
            let mask: Vec<u32> = (0..96).map(|i| u32::from(i % 24 < 20 + k)).collect();
            let labels: Vec<i64> = x
                .flatten_all()?
                .to_vec1::<u32>()?
                .iter()
                .enumerate()
                .map(|(i, &id)| {
                    if i % 5 == k && mask[i] == 1 {
                        id as i64
                    } else {
                        -100
                    }
                })
                .collect();
            Ok(vec![
                x,
                Tensor::from_vec(mask, (4, 24), &Device::Cpu)?,
                Tensor::from_vec(labels, (4, 24), &Device::Cpu)?,
            ])
        })
        .collect::<candle_core::Result<_>>()?;
    let stage = bert.stage(&store, rank, stages)?;
    let whole = |b: &[Tensor]| {
        // The head at the labelled positions only, as masked-LM pre-training runs it.
        let (at, labels) = lingo_models::contracts::labelled_positions(&b[2])?;
        let inputs = ModelInputs::new(b[0].clone())
            .with_attention_mask(b[1].clone())
            .with_predict_positions(at);
        let logits = bert
            .forward(&inputs, &mut Ctx::train(LingoRng::new(0)))?
            .output;
        lingo_kernels::cross_entropy(&logits, &labels, ce)
    };
    let (bert_loss, bert_gradients) = compare(&stage, &store, &batches, &whole)?;
    let inputs = ModelInputs::new(batches[0][0].clone()).with_attention_mask(batches[0][1].clone());
    let want = bert.forward(&inputs, &mut Ctx::eval())?.output;
    bert.tensor_parallel(rank, stages, &reduce)?;
    let bert_tensor_parallel = drift(&want, &bert.forward(&inputs, &mut Ctx::eval())?.output)?;

    // The worst over the ranks.
    let mine = [
        gpt_loss,
        gpt_gradients,
        bert_loss,
        bert_gradients,
        gpt_tensor_parallel,
        bert_tensor_parallel,
    ]
    .map(|x| x as f32);
    let mut all = vec![0f32; mine.len() * stages];
    c.all_gather(&mine, &mut all)?;
    let worst = |k: usize| {
        all.chunks(mine.len())
            .map(|r| r[k] as f64)
            .fold(0.0, f64::max)
    };
    if c.is_root() {
        let report = ModelParallelReport {
            stages,
            gpt_loss: worst(0),
            gpt_gradients: worst(1),
            bert_loss: worst(2),
            bert_gradients: worst(3),
            gpt_tensor_parallel: worst(4),
            bert_tensor_parallel: worst(5),
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
