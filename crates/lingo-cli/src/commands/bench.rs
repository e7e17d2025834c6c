//! `lingo bench`: the benchmark GPT trained and run by Lingo and by PyTorch on this machine, in the same
//! run, one after the other (never concurrently), with the same thread count.

use candle_core::{Device, Tensor};
use clap::Args;
use lingo_models::{Gpt, GptConfig};
use lingo_nn::{Ctx, LingoRng, ParamStore};
use lingo_train::grads::{clip_scale, Gradients};
use lingo_train::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const PYTORCH_SCRIPT: &str = include_str!("../../../../tools/bench_gpt.py");

#[derive(Args)]
pub struct Bench {
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

/// The benchmark model: vocab 8192, context 128, batch 8, d_model 256, 4 heads, 4 layers,
/// d_ff 1024, pre-norm, GELU, untied head, f32.
const BATCH: usize = 8;

fn bench_config() -> GptConfig {
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

#[derive(Deserialize)]
struct PyResult {
    torch: String,
    threads: usize,
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

/// Milliseconds per training step (forward, backward, clipping, AdamW) and per forward pass.
fn bench_lingo(iters: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let cfg = bench_config();
    let store = ParamStore::new(0, &Device::Cpu);
    let model = Gpt::new(cfg.clone(), &store.root())?;
    let adamw = AdamWConfig {
        lr: 1e-3,
        beta2: 0.99,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = Optimizer::new(
        OptimizerConfig::AdamW(adamw),
        &store,
        DecayPolicy::Matrices,
        &[],
    );
    let mut rng = LingoRng::new(0);
    let n = BATCH * cfg.context_length;
    let ids = |rng: &mut LingoRng| -> Vec<u32> {
        (0..n).map(|_| rng.below(cfg.vocab_size) as u32).collect()
    };
    let x = Tensor::from_vec(ids(&mut rng), (BATCH, cfg.context_length), &Device::Cpu)?;
    let y = Tensor::from_vec(ids(&mut rng), (BATCH, cfg.context_length), &Device::Cpu)?;
    let named = store.named();
    let train = time_ms(iters, 3, || {
        let loss = model.loss(&x, &y, &mut Ctx::eval())?;
        let grads = Gradients::from_store(&named, &loss.backward()?);
        let scale = clip_scale(grads.global_norm()?, Some(1.0));
        opt.step(&grads, 1e-3, scale)?;
        loss.to_scalar::<f32>()?;
        Ok(())
    })?;
    let forward = time_ms(iters, 3, || {
        model.loss(&x, &y, &mut Ctx::eval())?.to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok((train, forward))
}

fn bench_pytorch(python: &str, iters: usize, threads: usize) -> anyhow::Result<PyResult> {
    let dir = std::env::temp_dir().join(format!("lingo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench_gpt.py");
    std::fs::write(&script, PYTORCH_SCRIPT)?;
    let out = Command::new(python)
        .arg(&script)
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
        let c = bench_config();
        println!(
            "GPT benchmark: vocab {}, context {}, batch {BATCH}, d_model {}, {} heads, {} layers, d_ff {}, pre-norm, GELU, untied head, f32, {threads} threads",
            c.vocab_size, c.context_length, c.d_model, c.n_heads, c.n_layers, c.d_ff()
        );
        println!(
            "timing Lingo ({} iterations after 3 warm-up) ...",
            self.iters
        );
        let (train, forward) = bench_lingo(self.iters)?;
        let lingo = (median(&train), median(&forward));
        let torch = if self.no_python {
            None
        } else {
            println!("timing PyTorch with {} ...", self.python);
            match bench_pytorch(&self.python, self.iters, threads) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("PyTorch side unavailable ({e}); showing Lingo's figures only");
                    None
                }
            }
        };
        println!();
        match &torch {
            Some(t) => {
                let (pt_train, pt_fwd) = (median(&t.train_ms), median(&t.forward_ms));
                println!(
                    "{:<34} {:>10} {:>14} {:>22}",
                    "median ms",
                    "Lingo",
                    format!("PyTorch {}", t.torch),
                    "ratio (PyTorch/Lingo)"
                );
                println!(
                    "{:<34} {:>10.1} {:>14.1} {:>21.2}×",
                    "train step (fwd+bwd+clip+AdamW)",
                    lingo.0,
                    pt_train,
                    pt_train / lingo.0
                );
                println!(
                    "{:<34} {:>10.1} {:>14.1} {:>21.2}×",
                    "forward (logits + loss)",
                    lingo.1,
                    pt_fwd,
                    pt_fwd / lingo.1
                );
                println!(
                    "(ratio > 1 means Lingo is faster; PyTorch ran with {} threads)",
                    t.threads
                );
            }
            None => {
                println!("{:<34} {:>10}", "median ms", "Lingo");
                println!(
                    "{:<34} {:>10.1}",
                    "train step (fwd+bwd+clip+AdamW)", lingo.0
                );
                println!("{:<34} {:>10.1}", "forward (logits + loss)", lingo.1);
            }
        }
        if let Some(path) = &self.json {
            let value = serde_json::json!({
                "threads": threads,
                "lingo": { "train_ms": train, "forward_ms": forward },
                "pytorch": torch.as_ref().map(|t| serde_json::json!({ "version": t.torch, "train_ms": t.train_ms, "forward_ms": t.forward_ms })),
            });
            std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
        }
        Ok(())
    }
}
