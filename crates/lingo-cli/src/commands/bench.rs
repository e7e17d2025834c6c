//! `lingo bench`: a benchmark model trained and run by Lingo and by PyTorch on this machine, in the
//! same run, one after the other (never concurrently), with the same thread count.
//!
//! - `gpt`: the decoder-only Transformer of tools/bench_gpt.py;
//! - `seq2seq`: the attention LSTM encoder–decoder of tools/bench_seq2seq.py (Multi30k sizes).

use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use lingo_models::{Gpt, GptConfig, RnnSeq2Seq, RnnSeq2SeqConfig, Seq2SeqAttention};
use lingo_nn::{CellKind, Ctx, LingoRng, ParamStore};
use lingo_train::grads::{clip_scale, Gradients};
use lingo_train::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const GPT_SCRIPT: &str = include_str!("../../../../tools/bench_gpt.py");
const SEQ2SEQ_SCRIPT: &str = include_str!("../../../../tools/bench_seq2seq.py");

#[derive(Clone, Copy, ValueEnum)]
enum Model {
    /// GPT: vocab 8192, context 128, batch 8, d_model 256, 4 heads, 4 layers, d_ff 1024.
    Gpt,
    /// Attention LSTM seq2seq: vocab 8000/8000, embed 256, hidden 256, bidirectional encoder,
    /// Bahdanau attention, dropout 0.3, batch 64 of 8–24-token sentences.
    Seq2seq,
}

#[derive(Args)]
pub struct Bench {
    /// Which benchmark model to time.
    #[arg(value_enum, default_value = "gpt")]
    model: Model,
    /// Python interpreter with torch installed, for the reference side.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Timed iterations per measurement (after warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Measure Lingo only.
    #[arg(long)]
    no_python: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Deserialize)]
struct PyResult {
    torch: String,
    threads: usize,
    train_ms: Vec<f64>,
    forward_ms: Vec<f64>,
}

/// Per-iteration milliseconds of a training step and of a forward pass.
struct Timings {
    train_ms: Vec<f64>,
    forward_ms: Vec<f64>,
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn time_ms(
    iters: usize,
    warmup: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// Times `loss` as a training step (forward, backward, clipping at 1.0, AdamW) and as a forward pass.
fn time_training(
    iters: usize,
    store: &ParamStore,
    adamw: AdamWConfig,
    mut loss: impl FnMut(bool) -> candle_core::Result<Tensor>,
) -> anyhow::Result<Timings> {
    let lr = adamw.lr;
    let mut opt = Optimizer::new(
        OptimizerConfig::AdamW(adamw),
        store,
        DecayPolicy::Matrices,
        &[],
    );
    let named = store.named();
    let train_ms = time_ms(iters, 3, || {
        let loss = loss(true)?;
        let grads = Gradients::from_store(&named, &loss.backward()?);
        let scale = clip_scale(grads.global_norm()?, Some(1.0));
        opt.step(&grads, lr, scale)?;
        loss.to_scalar::<f32>()?;
        Ok(())
    })?;
    let forward_ms = time_ms(iters, 3, || {
        loss(false)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok(Timings {
        train_ms,
        forward_ms,
    })
}

/// The benchmark GPT: pre-norm, GELU, untied head, f32, batch 8.
const GPT_BATCH: usize = 8;

fn gpt_config() -> GptConfig {
    GptConfig {
        vocab_size: 8192,
        context_length: 128,
        d_model: 256,
        n_heads: 4,
        n_layers: 4,
        d_ff: 1024,
        ..Default::default()
    }
}

fn bench_gpt(iters: usize) -> anyhow::Result<Timings> {
    let cfg = gpt_config();
    let store = ParamStore::new(0, &Device::Cpu);
    let model = Gpt::new(cfg.clone(), &store.root())?;
    let mut rng = LingoRng::new(0);
    let shape = (GPT_BATCH, cfg.context_length);
    let mut ids = || -> candle_core::Result<Tensor> {
        let v = (0..GPT_BATCH * cfg.context_length)
            .map(|_| rng.below(cfg.vocab_size) as u32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    };
    let (x, y) = (ids()?, ids()?);
    let adamw = AdamWConfig {
        lr: 1e-3,
        beta2: 0.99,
        weight_decay: 0.1,
        ..Default::default()
    };
    time_training(iters, &store, adamw, |_| {
        model.loss(&x, &y, &mut Ctx::eval())
    })
}

/// The Multi30k recipe's model (configs/multi30k-lstm.json) on a fixed batch of 64 pairs.
const SEQ2SEQ_BATCH: usize = 64;

fn seq2seq_config() -> RnnSeq2SeqConfig {
    RnnSeq2SeqConfig {
        src_vocab_size: 8000,
        tgt_vocab_size: 8000,
        embed_dim: 256,
        hidden_size: 256,
        cell: CellKind::Lstm,
        bidirectional_encoder: true,
        attention: Seq2SeqAttention::Bahdanau,
        dropout: 0.3,
        ..Default::default()
    }
}

/// The batch of tools/bench_seq2seq.py: lengths `8 + (7i mod 17)` (source) and `8 + (11i mod 17)`
/// (target); returns (source, source lengths, target input, target output, target tokens).
fn seq2seq_batch(
    cfg: &RnnSeq2SeqConfig,
) -> candle_core::Result<(Tensor, Vec<usize>, Tensor, Tensor, usize)> {
    let n = SEQ2SEQ_BATCH;
    let src_len: Vec<usize> = (0..n).map(|i| 8 + (7 * i) % 17).collect();
    let tgt_len: Vec<usize> = (0..n).map(|i| 8 + (11 * i) % 17).collect();
    let (s, t) = (
        src_len.iter().max().unwrap_or(&1),
        tgt_len.iter().max().unwrap_or(&1) + 1,
    );
    let mut rng = LingoRng::new(0);
    let mut word = |vocab: usize| 3 + rng.below(vocab - 3) as u32;
    let (mut src, mut tgt_in, mut tgt_out) =
        (vec![0u32; n * s], vec![0u32; n * t], vec![0u32; n * t]);
    for i in 0..n {
        for j in 0..src_len[i] {
            src[i * s + j] = word(cfg.src_vocab_size);
        }
        tgt_in[i * t] = cfg.bos_id;
        for j in 0..tgt_len[i] {
            let w = word(cfg.tgt_vocab_size);
            tgt_in[i * t + j + 1] = w;
            tgt_out[i * t + j] = w;
        }
        tgt_out[i * t + tgt_len[i]] = cfg.eos_id;
    }
    let dev = &Device::Cpu;
    Ok((
        Tensor::from_vec(src, (n, *s), dev)?,
        src_len,
        Tensor::from_vec(tgt_in, (n, t), dev)?,
        Tensor::from_vec(tgt_out, (n, t), dev)?,
        tgt_len.iter().sum::<usize>() + n,
    ))
}

fn bench_seq2seq(iters: usize) -> anyhow::Result<Timings> {
    let cfg = seq2seq_config();
    let store = ParamStore::new(0, &Device::Cpu);
    let model = RnnSeq2Seq::new(cfg.clone(), &store.root())?;
    let (src, lengths, tgt_in, tgt_out, _) = seq2seq_batch(&cfg)?;
    let adamw = AdamWConfig {
        lr: 1e-3,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut steps = 0;
    time_training(iters, &store, adamw, |train| {
        steps += 1;
        let mut ctx = if train {
            Ctx::train(LingoRng::new(steps))
        } else {
            Ctx::eval()
        };
        model.loss(&src, &lengths, &tgt_in, &tgt_out, 1.0, &mut ctx)
    })
}

fn bench_pytorch(
    python: &str,
    script: &str,
    iters: usize,
    threads: usize,
) -> anyhow::Result<PyResult> {
    let dir = std::env::temp_dir().join(format!("lingo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.py");
    std::fs::write(&path, script)?;
    let out = Command::new(python)
        .arg(&path)
        .args([
            "--threads",
            &threads.to_string(),
            "--iters",
            &iters.to_string(),
        ])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| anyhow::anyhow!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "{}",
            err.lines().last().unwrap_or("the PyTorch benchmark failed")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("unexpected output from the PyTorch benchmark ({e}): {line}"))
}

impl Bench {
    pub fn run(self) -> anyhow::Result<()> {
        let threads = rayon::current_num_threads();
        // Target tokens per step turn milliseconds into the throughput the issue asks for.
        let (lingo, script, tokens) = match self.model {
            Model::Gpt => {
                let c = gpt_config();
                println!(
                    "GPT benchmark: vocab {}, context {}, batch {GPT_BATCH}, d_model {}, {} heads, {} layers, d_ff {}, pre-norm, GELU, untied head, f32, {threads} threads",
                    c.vocab_size, c.context_length, c.d_model, c.n_heads, c.n_layers, c.d_ff()
                );
                println!(
                    "timing Lingo ({} iterations after 3 warm-up) ...",
                    self.iters
                );
                (
                    bench_gpt(self.iters)?,
                    GPT_SCRIPT,
                    GPT_BATCH * c.context_length,
                )
            }
            Model::Seq2seq => {
                let c = seq2seq_config();
                let tokens = seq2seq_batch(&c)?.4;
                println!(
                    "Seq2seq benchmark: LSTM, vocab {}/{}, embed {}, hidden {}, bidirectional encoder, Bahdanau attention, dropout {}, batch {SEQ2SEQ_BATCH} ({tokens} target tokens), f32, {threads} threads",
                    c.src_vocab_size, c.tgt_vocab_size, c.embed_dim, c.hidden_size, c.dropout
                );
                println!(
                    "timing Lingo ({} iterations after 3 warm-up) ...",
                    self.iters
                );
                (bench_seq2seq(self.iters)?, SEQ2SEQ_SCRIPT, tokens)
            }
        };
        let torch = if self.no_python {
            None
        } else {
            println!("timing PyTorch with {} ...", self.python);
            match bench_pytorch(&self.python, script, self.iters, threads) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("PyTorch side unavailable ({e}); showing Lingo's figures only");
                    None
                }
            }
        };
        let rows = [
            (
                "train step (fwd+bwd+clip+AdamW)",
                &lingo.train_ms,
                torch.as_ref().map(|t| &t.train_ms),
            ),
            (
                "forward (logits + loss)",
                &lingo.forward_ms,
                torch.as_ref().map(|t| &t.forward_ms),
            ),
        ];
        println!();
        let torch_name = torch.as_ref().map(|t| format!("PyTorch {}", t.torch));
        println!(
            "{:<34} {:>10} {:>16} {:>14}",
            "median ms (target tokens/s)",
            "Lingo",
            torch_name.as_deref().unwrap_or(""),
            if torch.is_some() { "PyTorch/Lingo" } else { "" }
        );
        let rate = |ms: f64| tokens as f64 / ms * 1e3;
        for (label, ours, theirs) in rows {
            let ours = median(ours);
            let lingo_cell = format!("{ours:.1} ({:.0})", rate(ours));
            match theirs.map(|t| median(t)) {
                Some(t) => println!(
                    "{label:<34} {lingo_cell:>10} {:>16} {:>13.2}×",
                    format!("{t:.1} ({:.0})", rate(t)),
                    t / ours
                ),
                None => println!("{label:<34} {lingo_cell:>10}"),
            }
        }
        if let Some(t) = &torch {
            println!(
                "(ratio > 1 means Lingo is faster; PyTorch ran with {} threads)",
                t.threads
            );
        }
        if let Some(path) = &self.json {
            let value = serde_json::json!({
                "threads": threads,
                "tokens_per_step": tokens,
                "lingo": { "train_ms": lingo.train_ms, "forward_ms": lingo.forward_ms },
                "pytorch": torch.as_ref().map(|t| serde_json::json!({ "version": t.torch, "train_ms": t.train_ms, "forward_ms": t.forward_ms })),
            });
            std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
        }
        Ok(())
    }
}
