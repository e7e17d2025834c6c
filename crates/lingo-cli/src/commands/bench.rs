//! `lingo bench`: a benchmark model trained and run by Lingo and by PyTorch on this machine, in the
//! same run, one after the other (never concurrently), with the same thread count. With no
//! argument every one of the following runs, and a summary table (and `--json`) gathers them:
//!
//! - `gpt`: the decoder-only Transformer of tools/bench_gpt.py;
//! - `char`: the nanoGPT character recipe's model, its step as the recipe trains it (two shards);
//! - `seq2seq`: the attention LSTM encoder–decoder of tools/bench_seq2seq.py (Multi30k sizes);
//! - `bert`, `gpt2`: BERT-base forward and GPT-2 small generation against `transformers`
//!   (tools/bench_hf.py);
//! - `finetune`: a fine-tuning step of a MiniLM-shaped BERT classifier against `transformers`;
//! - `pretrain`: a masked-LM pre-training step of `bert-mini` against `transformers`'
//!   `BertForMaskedLM` (which scores every position; Lingo runs the vocabulary projection on the
//!   masked 15% only, as BERT's own pre-training code does).

use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use lingo_generate::SamplingConfig;
use lingo_models::bert::{BertConfig, BertModel, Family, Head};
use lingo_models::gpt::Gpt2Config;
use lingo_models::{Gpt, GptConfig, RnnSeq2Seq, RnnSeq2SeqConfig, Seq2SeqAttention};
use lingo_models::{ModelInputs, Seq2SeqBatch, Seq2SeqLoss, Seq2SeqTrain};
use lingo_nn::{CellKind, Ctx, LinearPrecision, LingoRng, ParamStore};
use lingo_train::grads::{clip_scale, Gradients};
use lingo_train::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const GPT_SCRIPT: &str = include_str!("../../../../tools/bench_gpt.py");
const SEQ2SEQ_SCRIPT: &str = include_str!("../../../../tools/bench_seq2seq.py");
const HF_SCRIPT: &str = include_str!("../../../../tools/bench_hf.py");

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Model {
    /// Every row below that runs beside PyTorch (gpt, char, seq2seq, bert, gpt2, finetune,
    /// pretrain), then one summary table.
    All,
    /// GPT: vocab 8192, context 128, batch 8, d_model 256, 4 heads, 4 layers, d_ff 1024.
    Gpt,
    /// The nanoGPT character recipe's model (configs/shakespeare-char.json): vocab 65, context
    /// 64, batch 12, d_model 128, 4 heads, 4 layers, tied embeddings; its training step as the
    /// recipe runs it (two shards on two threads).
    Char,
    /// Attention LSTM seq2seq: vocab 8000/8000, embed 256, hidden 256, bidirectional encoder,
    /// Bahdanau attention, dropout 0.3, batch 64 of 8–24-token sentences.
    Seq2seq,
    /// BERT-base (random weights, default config): forward of 1 × 128 tokens.
    Bert,
    /// GPT-2 small (124M, random weights): greedy generation of 128 tokens after 32, KV-cached.
    Gpt2,
    /// Fine-tuning step of a MiniLM-shaped BERT classifier (6 layers, 384 wide): batch 32 × 64
    /// tokens, dropout 0.1, AdamW.
    Finetune,
    /// Masked-LM pre-training step of bert-mini (4 layers, 256 wide, vocabulary 16,000): batch
    /// 32 × 128 tokens, 15% masked, dropout 0.1, AdamW.
    Pretrain,
    /// Reduced-precision inference: BERT-base forward and GPT-2 decoding in f32, int8 and bf16
    /// beside PyTorch (quantize_dynamic, bf16 weights) and ONNX Runtime's int8, and the int8 and
    /// bf16 products per layer shape beside candle's Q8_0.
    #[value(alias = "bf16")]
    Int8,
    /// Causal self-attention at 512 to 16,384 tokens: Lingo's dense and sliding-window kernels
    /// beside PyTorch's SDPA (dense and band-masked): time, peak memory, a log–log plot.
    Attention,
    /// `lingo serve` under load (GPT-2-small-shaped generation, MiniLM embeddings) beside
    /// transformers behind FastAPI/uvicorn: requests/s, TTFT, time per token, p50/p99, memory.
    Serve,
}

#[derive(Args)]
pub struct Bench {
    /// Which benchmark to run (default: all of them, and a summary).
    #[arg(value_enum, default_value = "all")]
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
    /// `bf16`: mixed precision on both sides (Lingo's bf16 products; PyTorch's `autocast`), for
    /// the transformers benchmarks (bert, gpt2, finetune, pretrain).
    #[arg(long, default_value = "f32")]
    precision: lingo_train::Precision,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    serve: super::bench_serve::ServeLoad,
    #[command(flatten)]
    attention: super::bench_attention::AttentionBench,
}

/// The reference side's output: its versions and per-iteration milliseconds under named keys.
#[derive(Deserialize)]
pub(super) struct PyResult {
    pub torch: String,
    pub threads: usize,
    #[serde(flatten)]
    pub timings: std::collections::HashMap<String, serde_json::Value>,
}

impl PyResult {
    pub fn ms(&self, key: &str) -> Option<Vec<f64>> {
        serde_json::from_value(self.timings.get(key)?.clone()).ok()
    }
}

/// Per-iteration milliseconds of a training step and of a forward pass.
struct Timings {
    train_ms: Vec<f64>,
    forward_ms: Vec<f64>,
}

pub(super) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub(super) fn time_ms(
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

/// A step's batch as shards computed at once, as the trainer's `data_parallel` runs them.
type MakeShards<'s, 'a> = &'s dyn Fn() -> candle_core::Result<Vec<lingo_train::Shard<'a>>>;

/// Times `loss` as a training step (forward in training mode with a fresh seed each step,
/// backward, clipping at 1.0, AdamW) — the step's batch in `shards` when given — and as a forward
/// pass in evaluation mode.
fn time_training(
    iters: usize,
    store: &ParamStore,
    adamw: AdamWConfig,
    mut loss: impl FnMut(&mut Ctx) -> candle_core::Result<Tensor>,
    shards: Option<MakeShards>,
) -> anyhow::Result<Timings> {
    let lr = adamw.lr;
    let mut opt = Optimizer::new(
        OptimizerConfig::AdamW(adamw),
        store,
        DecayPolicy::Matrices,
        &[],
    );
    let named = store.named();
    let mut steps = 0;
    let train_ms = time_ms(iters, 3, || {
        steps += 1;
        let mut ctx = Ctx::train(LingoRng::new(steps));
        let grads = match shards {
            Some(shards) => {
                let parts = shards()?;
                lingo_train::trainer::sharded_micro_batch(parts, steps, &ctx, store, &named)?.2
            }
            None => {
                let loss = loss(&mut ctx)?;
                loss.to_scalar::<f32>()?;
                Gradients::from_store(&named, &loss.backward()?)
            }
        };
        let scale = clip_scale(grads.global_norm()?, Some(1.0));
        opt.step(0, &grads, lr, scale)?;
        Ok(())
    })?;
    let forward_ms = time_ms(iters, 3, || {
        loss(&mut Ctx::eval())?.to_scalar::<f32>()?;
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

/// A GPT of shape `cfg` on a fixed random batch of `batch` windows, its training step computed
/// in `shards` shards (1: in one piece). Neither benchmark GPT has dropout, so training mode
/// computes what evaluation does.
fn bench_gpt(
    cfg: &GptConfig,
    batch: usize,
    shards: usize,
    iters: usize,
) -> anyhow::Result<Timings> {
    let store = ParamStore::new(0, &Device::Cpu);
    let model = Gpt::new(cfg.clone(), &store.root())?;
    let mut rng = LingoRng::new(0);
    let shape = (batch, cfg.context_length);
    let mut ids = || -> candle_core::Result<Tensor> {
        let v = (0..batch * cfg.context_length)
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
    let make_shards = || lingo_tasks::language_model::shards(&model, &x, &y, shards);
    let sharded = (shards > 1).then_some(&make_shards as MakeShards);
    time_training(iters, &store, adamw, |ctx| model.loss(&x, &y, ctx), sharded)
}

/// The nanoGPT character recipe (configs/shakespeare-char.json): batch 12, two shards.
const CHAR_BATCH: usize = 12;
const CHAR_SHARDS: usize = 2;

fn char_config() -> GptConfig {
    GptConfig {
        vocab_size: 65,
        context_length: 64,
        d_model: 128,
        n_heads: 4,
        n_layers: 4,
        tied_embeddings: true,
        ..Default::default()
    }
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
/// (target, then the end token).
fn seq2seq_batch(cfg: &RnnSeq2SeqConfig) -> candle_core::Result<Seq2SeqBatch> {
    let n = SEQ2SEQ_BATCH;
    let mut rng = LingoRng::new(0);
    let mut word = |vocab: usize| 3 + rng.below(vocab - 3) as u32;
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..n)
        .map(|i| {
            let src = (0..8 + (7 * i) % 17)
                .map(|_| word(cfg.src_vocab_size))
                .collect();
            let mut labels: Vec<u32> = (0..8 + (11 * i) % 17)
                .map(|_| word(cfg.tgt_vocab_size))
                .collect();
            labels.push(cfg.eos_id);
            (src, labels)
        })
        .collect();
    let refs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(s, t)| (&s[..], &t[..])).collect();
    Seq2SeqBatch::new(&refs, cfg.pad_id, cfg.bos_id, &Device::Cpu)
}

fn bench_seq2seq(iters: usize) -> anyhow::Result<Timings> {
    let cfg = seq2seq_config();
    let store = ParamStore::new(0, &Device::Cpu);
    let model = RnnSeq2Seq::new(cfg.clone(), &store.root())?;
    let batch = seq2seq_batch(&cfg)?;
    let adamw = AdamWConfig {
        lr: 1e-3,
        weight_decay: 0.0,
        ..Default::default()
    };
    time_training(
        iters,
        &store,
        adamw,
        |ctx| model.loss(&batch, &Seq2SeqLoss::default(), ctx),
        None,
    )
}

fn training_rows(t: Timings, tokens: usize) -> Vec<Row> {
    vec![
        Row {
            label: "train step (fwd+bwd+clip+AdamW)",
            lingo_ms: t.train_ms,
            key: "train_ms",
            per_iter: tokens,
        },
        Row {
            label: "forward (logits + loss)",
            lingo_ms: t.forward_ms,
            key: "forward_ms",
            per_iter: tokens,
        },
    ]
}

const BERT_TOKENS: usize = 128;

/// BERT-base forward passes of one 128-token sequence (linear weights held as `precision` says),
/// and the bytes its weights hold.
pub(super) fn bench_bert(
    iters: usize,
    precision: LinearPrecision,
) -> anyhow::Result<(Vec<f64>, usize)> {
    // BertConfig()'s defaults, as tools/bench_hf.py builds them.
    let config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
        "type_vocab_size": 2, "pad_token_id": 0,
    }))?;
    let store = ParamStore::new(0, &Device::Cpu);
    store.hold_linears_as(precision);
    let model = BertModel::new(Family::Bert, Head::Base, config, true, &store.root())?;
    let mut rng = LingoRng::new(0);
    let ids: Vec<u32> = (0..BERT_TOKENS)
        .map(|_| 1000 + rng.below(29000) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (1, BERT_TOKENS), &Device::Cpu)?;
    let times = time_ms(iters, 2, || {
        model
            .forward(&ModelInputs::new(ids.clone()), &mut Ctx::eval())?
            .output
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok((times, store.weight_bytes()))
}

const FINETUNE_BATCH: (usize, usize) = (32, 64);

/// A MiniLM-shaped BertForSequenceClassification: training steps (dropout on) and forward passes.
fn bench_finetune(iters: usize) -> anyhow::Result<Timings> {
    let config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
        "type_vocab_size": 2, "pad_token_id": 0,
    }))?;
    let store = ParamStore::new(0, &Device::Cpu);
    let model = BertModel::new(
        Family::Bert,
        Head::SequenceClassification,
        config,
        true,
        &store.root(),
    )?;
    let (b, t) = FINETUNE_BATCH;
    let mut rng = LingoRng::new(0);
    let ids: Vec<u32> = (0..b * t).map(|_| 1000 + rng.below(29000) as u32).collect();
    let labels: Vec<u32> = (0..b).map(|_| rng.below(2) as u32).collect();
    let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
    let labels = Tensor::from_vec(labels, b, &Device::Cpu)?;
    let adamw = AdamWConfig {
        lr: 5e-5,
        weight_decay: 0.01,
        ..Default::default()
    };
    time_training(
        iters,
        &store,
        adamw,
        |ctx| {
            let logits = model.forward(&ModelInputs::new(ids.clone()), ctx)?.output;
            lingo_kernels::cross_entropy(&logits, &labels, Default::default())
        },
        None,
    )
}

const PRETRAIN_BATCH: (usize, usize) = (32, 128);

fn bench_pretrain(iters: usize) -> anyhow::Result<Timings> {
    let config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 16000, "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": 1024, "max_position_embeddings": 128,
        "type_vocab_size": 2, "pad_token_id": 0,
    }))?;
    let store = ParamStore::new(0, &Device::Cpu);
    let model = BertModel::new(Family::Bert, Head::MaskedLm, config, false, &store.root())?;
    let (b, t) = PRETRAIN_BATCH;
    let mut rng = LingoRng::new(0);
    let ids: Vec<u32> = (0..b * t).map(|_| 5 + rng.below(15995) as u32).collect();
    let positions: Vec<u32> = (0..(b * t) as u32)
        .filter(|_| rng.uniform() < 0.15)
        .collect();
    let targets: Vec<u32> = positions.iter().map(|&p| ids[p as usize]).collect();
    let inputs = ModelInputs::new(Tensor::from_vec(ids, (b, t), &Device::Cpu)?)
        .with_predict_positions(Tensor::new(positions.as_slice(), &Device::Cpu)?);
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
    let adamw = AdamWConfig {
        lr: 5e-4,
        weight_decay: 0.01,
        ..Default::default()
    };
    time_training(
        iters,
        &store,
        adamw,
        |ctx| {
            let logits = model.forward(&inputs, ctx)?.output;
            lingo_kernels::cross_entropy(&logits, &targets, Default::default())
        },
        None,
    )
}

const GPT2_PROMPT: usize = 32;
const GPT2_NEW: usize = 128;

/// GPT-2 small: greedy generation of 128 tokens after a 32-token prompt, with the KV cache (linear
/// weights held as `precision` says). Also the bytes of linear weights one decoding step reads,
/// and the bytes all its weights hold.
pub(super) fn bench_gpt2(
    iters: usize,
    precision: LinearPrecision,
) -> anyhow::Result<(Vec<f64>, usize, usize)> {
    let hf = Gpt2Config {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        n_inner: None,
        activation_function: "gelu_new".into(),
        layer_norm_epsilon: 1e-5,
        tie_word_embeddings: true,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        reorder_and_upcast_attn: false,
        resid_pdrop: 0.1,
        embd_pdrop: 0.1,
        attn_pdrop: 0.1,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    store.hold_linears_as(precision);
    let model = Gpt::new(hf.to_gpt().map_err(anyhow::Error::msg)?, &store.root())?;
    // Each step reads every linear weight once: 12·d² per block (attention 4·d², MLP 8·d²) and
    // the tied head, vocabulary × d; 4 bytes each in f32, 2 in bf16, 1 in int8.
    let (d, vocab) = (hf.n_embd, hf.vocab_size);
    let bytes = match precision {
        LinearPrecision::F32 => 4,
        LinearPrecision::Bf16 => 2,
        LinearPrecision::Int8 => 1,
    };
    let linear_bytes = (hf.n_layer * 12 * d * d + vocab * d) * bytes;
    let mut rng = LingoRng::new(0);
    let prompt: Vec<u32> = (0..GPT2_PROMPT)
        .map(|_| 1000 + rng.below(49000) as u32)
        .collect();
    let cfg = SamplingConfig::greedy(GPT2_NEW);
    let times = time_ms(iters, 2, || {
        let out = lingo_generate::generate(&model, &prompt, &cfg, &mut rng, |_| {})?;
        anyhow::ensure!(out.len() == GPT2_NEW, "generation stopped early");
        Ok(())
    })?;
    Ok((times, linear_bytes, store.weight_bytes()))
}

pub(super) fn bench_pytorch(
    python: &str,
    script: &str,
    args: &[&str],
    iters: usize,
    threads: usize,
) -> anyhow::Result<PyResult> {
    let dir = std::env::temp_dir().join(format!("lingo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.py");
    std::fs::write(&path, script)?;
    let out = Command::new(python)
        .arg(&path)
        .args(args)
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

/// One line of the report: what was timed, Lingo's milliseconds, the reference script's key for the
/// same measurement, and the units of work per iteration for a rate column.
struct Row {
    label: &'static str,
    lingo_ms: Vec<f64>,
    key: &'static str,
    per_iter: usize,
}

impl Bench {
    /// Switches Lingo to bf16 when asked (and the PyTorch side will autocast): whether it did.
    fn mixed_precision(&self) -> anyhow::Result<bool> {
        use lingo_kernels::mixed_precision::{set_precision, Precision};
        match self.precision {
            lingo_train::Precision::F32 => Ok(false),
            lingo_train::Precision::F16 => {
                anyhow::bail!("f16 is a GPU precision; on the CPU compare --precision bf16")
            }
            lingo_train::Precision::Bf16 => {
                anyhow::ensure!(
                    !matches!(
                        self.model,
                        Model::All | Model::Gpt | Model::Char | Model::Seq2seq
                    ),
                    "--precision bf16 is for the transformers benchmarks: bert, gpt2, finetune, pretrain"
                );
                anyhow::ensure!(
                    set_precision(Precision::Bf16) == Precision::Bf16,
                    "this CPU has no AVX-512 BF16 (or LINGO_NO_BF16 is set): nothing to compare"
                );
                Ok(true)
            }
        }
    }

    pub fn run(self) -> anyhow::Result<()> {
        let python = (!self.no_python).then_some(self.python.as_str());
        match self.model {
            Model::Attention => {
                return self.attention.run(self.iters, python, self.json.as_deref())
            }
            Model::Int8 => return super::bench_int8::run(self.iters, python, self.json.as_deref()),
            Model::Serve => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                return runtime.block_on(self.serve.run(python, self.json.as_deref()));
            }
            _ => {}
        }
        let bf16 = self.mixed_precision()?;
        let models = match self.model {
            Model::All => vec![
                Model::Gpt,
                Model::Char,
                Model::Seq2seq,
                Model::Bert,
                Model::Gpt2,
                Model::Finetune,
                Model::Pretrain,
            ],
            one => vec![one],
        };
        let mut measured = Vec::new();
        for model in models {
            let m = self.measure(model, bf16)?;
            m.print();
            measured.push(m);
        }
        if measured.len() > 1 {
            print_summary(&measured);
        }
        if let Some(path) = &self.json {
            let value = serde_json::json!({
                "threads": rayon::current_num_threads(),
                "benchmarks": measured.iter().map(Measured::to_json).collect::<Vec<_>>(),
            });
            lingo_nn::io::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
        }
        Ok(())
    }

    /// Times one benchmark in Lingo, then (unless `--no-python`) in PyTorch.
    fn measure(&self, model: Model, bf16: bool) -> anyhow::Result<Measured> {
        let threads = rayon::current_num_threads();
        let iters = self.iters;
        let dtype = if bf16 { "bf16 mixed precision" } else { "f32" };
        let timing = || println!("timing Lingo ({iters} iterations after warm-up) ...");
        let gpt_args = |c: &GptConfig, batch: usize| {
            let mut args = vec![
                "--vocab".to_string(),
                c.vocab_size.to_string(),
                "--context".into(),
                c.context_length.to_string(),
                "--batch".into(),
                batch.to_string(),
                "--d-model".into(),
                c.d_model.to_string(),
                "--heads".into(),
                c.n_heads.to_string(),
                "--layers".into(),
                c.n_layers.to_string(),
                "--d-ff".into(),
                c.d_ff().to_string(),
            ];
            if c.tied_embeddings {
                args.push("--tied".into());
            }
            args
        };
        let (name, rows, script, args, unit): (&str, Vec<Row>, &str, Vec<String>, &str) =
            match model {
                Model::Gpt => {
                    let c = gpt_config();
                    println!(
                        "GPT benchmark: vocab {}, context {}, batch {GPT_BATCH}, d_model {}, {} heads, {} layers, d_ff {}, pre-norm, GELU, untied head, {dtype}, {threads} threads",
                        c.vocab_size, c.context_length, c.d_model, c.n_heads, c.n_layers, c.d_ff()
                    );
                    timing();
                    let t = bench_gpt(&c, GPT_BATCH, 1, iters)?;
                    let tokens = GPT_BATCH * c.context_length;
                    (
                        "gpt",
                        training_rows(t, tokens),
                        GPT_SCRIPT,
                        gpt_args(&c, GPT_BATCH),
                        "tokens/s",
                    )
                }
                Model::Char => {
                    let c = char_config();
                    println!(
                        "nanoGPT character recipe: vocab {}, context {}, batch {CHAR_BATCH} in {CHAR_SHARDS} shards, d_model {}, {} heads, {} layers, tied embeddings, {threads} threads",
                        c.vocab_size, c.context_length, c.d_model, c.n_heads, c.n_layers
                    );
                    timing();
                    let t = bench_gpt(&c, CHAR_BATCH, CHAR_SHARDS, iters)?;
                    let tokens = CHAR_BATCH * c.context_length;
                    (
                        "char",
                        training_rows(t, tokens),
                        GPT_SCRIPT,
                        gpt_args(&c, CHAR_BATCH),
                        "tokens/s",
                    )
                }
                Model::Seq2seq => {
                    let c = seq2seq_config();
                    let tokens = seq2seq_batch(&c)?.target_tokens;
                    println!(
                        "Seq2seq benchmark: LSTM, vocab {}/{}, embed {}, hidden {}, bidirectional encoder, Bahdanau attention, dropout {}, batch {SEQ2SEQ_BATCH} ({tokens} target tokens), {dtype}, {threads} threads",
                        c.src_vocab_size, c.tgt_vocab_size, c.embed_dim, c.hidden_size, c.dropout
                    );
                    timing();
                    let t = bench_seq2seq(iters)?;
                    (
                        "seq2seq",
                        training_rows(t, tokens),
                        SEQ2SEQ_SCRIPT,
                        vec![],
                        "target tokens/s",
                    )
                }
                Model::Bert => {
                    println!("BERT-base forward: random weights, batch 1 × {BERT_TOKENS} tokens, f32, {threads} threads");
                    timing();
                    let row = Row {
                        label: "forward, 1 × 128 tokens",
                        lingo_ms: bench_bert(iters, LinearPrecision::F32)?.0,
                        key: "ms",
                        per_iter: BERT_TOKENS,
                    };
                    (
                        "bert",
                        vec![row],
                        HF_SCRIPT,
                        vec!["bert".into()],
                        "tokens/s",
                    )
                }
                Model::Finetune => {
                    let (b, t) = FINETUNE_BATCH;
                    println!("Fine-tuning step: MiniLM-shaped BERT classifier (6 layers, 384 wide, 12 heads), random weights, batch {b} × {t} tokens, dropout 0.1, AdamW, f32, {threads} threads");
                    timing();
                    let timings = bench_finetune(iters)?;
                    let rows = training_rows(timings, b * t);
                    (
                        "finetune",
                        rows,
                        HF_SCRIPT,
                        vec!["finetune".into()],
                        "tokens/s",
                    )
                }
                Model::Pretrain => {
                    let (b, t) = PRETRAIN_BATCH;
                    println!("Pre-training step: bert-mini masked LM (4 layers, 256 wide, 4 heads, vocabulary 16,000), random weights, batch {b} × {t} tokens, 15% masked, dropout 0.1, AdamW, {dtype}, {threads} threads");
                    timing();
                    let timings = bench_pretrain(iters)?;
                    let rows = training_rows(timings, b * t);
                    (
                        "pretrain",
                        rows,
                        HF_SCRIPT,
                        vec!["pretrain".into()],
                        "tokens/s",
                    )
                }
                Model::Gpt2 => {
                    println!("GPT-2 small greedy generation: random weights, {GPT2_NEW} new tokens after {GPT2_PROMPT}, KV cache, {dtype}, {threads} threads");
                    timing();
                    let row = Row {
                        label: "generate 128 tokens",
                        lingo_ms: bench_gpt2(iters, LinearPrecision::F32)?.0,
                        key: "ms",
                        per_iter: GPT2_NEW,
                    };
                    (
                        "gpt2",
                        vec![row],
                        HF_SCRIPT,
                        vec!["gpt2".into()],
                        "new tokens/s",
                    )
                }
                Model::All | Model::Serve | Model::Int8 | Model::Attention => {
                    unreachable!("run above")
                }
            };
        let torch = if self.no_python {
            None
        } else {
            println!("timing PyTorch with {} ...", self.python);
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            if bf16 {
                args.push("--bf16");
            }
            match bench_pytorch(&self.python, script, &args, iters, threads) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("PyTorch side unavailable ({e}); showing Lingo's figures only");
                    None
                }
            }
        };
        Ok(Measured {
            name,
            unit,
            rows,
            torch,
        })
    }
}

/// One benchmark's rows, both sides.
struct Measured {
    name: &'static str,
    unit: &'static str,
    rows: Vec<Row>,
    torch: Option<PyResult>,
}

impl Measured {
    /// PyTorch's per-iteration milliseconds for `row`, if it ran.
    fn torch_ms(&self, row: &Row) -> Option<Vec<f64>> {
        self.torch.as_ref().and_then(|t| t.ms(row.key))
    }

    /// The median milliseconds of `row`: Lingo's, and PyTorch's if it ran.
    fn medians(&self, row: &Row) -> (f64, Option<f64>) {
        (
            median(&row.lingo_ms),
            self.torch_ms(row).map(|t| median(&t)),
        )
    }

    fn print(&self) {
        println!();
        let torch_name = self.torch.as_ref().map(|t| format!("PyTorch {}", t.torch));
        println!(
            "{:<34} {:>16} {:>20} {:>14}",
            format!("median ms ({})", self.unit),
            "Lingo",
            torch_name.as_deref().unwrap_or(""),
            if self.torch.is_some() {
                "PyTorch/Lingo"
            } else {
                ""
            }
        );
        for row in &self.rows {
            let (ours, theirs) = self.medians(row);
            let rate = |ms: f64| row.per_iter as f64 / ms * 1e3;
            let lingo_cell = format!("{ours:.1} ({:.0})", rate(ours));
            match theirs {
                Some(t) => {
                    println!(
                        "{:<34} {lingo_cell:>16} {:>20} {:>13.2}×",
                        row.label,
                        format!("{t:.1} ({:.0})", rate(t)),
                        t / ours
                    )
                }
                None => println!("{:<34} {lingo_cell:>16}", row.label),
            }
        }
        if let Some(t) = &self.torch {
            println!(
                "(ratio > 1 means Lingo is faster; PyTorch ran with {} threads)",
                t.threads
            );
        }
        println!();
    }

    fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let (ours, theirs) = self.medians(r);
                serde_json::json!({
                    "measure": r.key,
                    "label": r.label,
                    "lingo_ms": r.lingo_ms,
                    "lingo_median_ms": ours,
                    "pytorch_ms": self.torch_ms(r),
                    "pytorch_median_ms": theirs,
                    "ratio": theirs.map(|t| t / ours),
                })
            })
            .collect();
        serde_json::json!({
            "benchmark": self.name,
            "pytorch": self.torch.as_ref().map(|t| t.torch.clone()),
            "rows": rows,
        })
    }
}

/// Every row of every benchmark in one table.
fn print_summary(measured: &[Measured]) {
    println!("summary (median ms; ratio > 1 means Lingo is faster)");
    println!(
        "{:<10} {:<34} {:>12} {:>12} {:>8}",
        "benchmark", "measure", "Lingo", "PyTorch", "ratio"
    );
    for m in measured {
        for row in &m.rows {
            let (ours, theirs) = m.medians(row);
            println!(
                "{:<10} {:<34} {:>12.1} {:>12} {:>8}",
                m.name,
                row.label,
                ours,
                theirs.map_or("-".into(), |t| format!("{t:.1}")),
                theirs.map_or("-".into(), |t| format!("{:.2}×", t / ours)),
            );
        }
    }
}
